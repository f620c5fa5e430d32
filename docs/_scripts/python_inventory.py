# ruff: noqa: INP001 - a standalone script, not part of a package
"""Write an intersphinx inventory of the standard library, from the running Python.

The docs link standard-library names (``socket.socket``, ``asyncio.AbstractEventLoop``,
``ssl.SSLContext``) to docs.python.org. intersphinx would download Python's own
``objects.inv`` for that, but the build machines have no network. So ``docs/conf.py``
calls :func:`write_inventory` at every build: it lists the public names of the modules
below by introspecting the interpreter that builds the docs, works out the page of
docs.python.org that documents each one (by the module that defines it), and writes
them in intersphinx's format. The links then point to the docs of the same Python
version that built these pages.

Run it by hand to look at the result::

    python docs/_scripts/python_inventory.py /tmp/python-objects.inv
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import sys
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

URL = f"https://docs.python.org/{sys.version_info[0]}.{sys.version_info[1]}/"

#: The modules whose names the docs (and the signatures autodoc renders) use.
MODULES = [
    "asyncio",
    "collections.abc",
    "concurrent.futures",
    "contextlib",
    "dataclasses",
    "errno",
    "ipaddress",
    "os",
    "selectors",
    "socket",
    "ssl",
    "threading",
    "time",
    "types",
    "typing",
]

#: Documented names a module's ``__all__`` leaves out.
NOT_IN_ALL = {"os": ("PathLike",)}

#: asyncio is documented on one page per topic; a name's page follows the submodule
#: that defines it.
ASYNCIO_PAGES = {
    "base_events": "asyncio-eventloop",
    "events": "asyncio-eventloop",
    "exceptions": "asyncio-exceptions",
    "futures": "asyncio-future",
    "locks": "asyncio-sync",
    "protocols": "asyncio-protocol",
    "queues": "asyncio-queue",
    "runners": "asyncio-runner",
    "streams": "asyncio-stream",
    "subprocess": "asyncio-subprocess",
    "taskgroups": "asyncio-task",
    "tasks": "asyncio-task",
    "timeouts": "asyncio-task",
    "transports": "asyncio-protocol",
    "unix_events": "asyncio-policy",
    "windows_events": "asyncio-policy",
}

#: Built-in classes documented in "Built-in Types" rather than "Built-in Functions".
STDTYPES = {"bytearray", "bytes", "dict", "frozenset", "list", "memoryview", "range", "set"}
STDTYPES |= {"str", "tuple"}
CONSTANTS = ["None", "True", "False", "Ellipsis", "NotImplemented"]

Entry = tuple[str, str, str]  # (name, "py:role", uri relative to URL)


def _page(module: str, obj: object) -> str:
    """The docs.python.org page (without .html) that documents *obj* of *module*."""
    if module == "asyncio":
        defined_in = getattr(obj, "__module__", "") or ""
        return "library/" + ASYNCIO_PAGES.get(defined_in.rpartition(".")[2], "asyncio")
    return f"library/{module}"


def _role(obj: object) -> str:
    if inspect.isclass(obj):
        return "py:exception" if issubclass(obj, BaseException) else "py:class"
    if inspect.isroutine(obj):
        return "py:function"
    if inspect.ismodule(obj):
        return "py:module"
    return "py:data"


def _members(name: str, cls: type, page: str) -> Iterator[Entry]:
    """Methods and attributes of a class, as ``name.member``."""
    for member, value in vars(cls).items():
        if member.startswith("_"):
            continue
        role = "py:method" if inspect.isroutine(value) else "py:attribute"
        yield f"{name}.{member}", role, f"{page}.html#{name}.{member}"


def _builtins() -> Iterator[Entry]:
    for name, obj in vars(builtins).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            yield name, "py:exception", f"library/exceptions.html#{name}"
        elif inspect.isclass(obj):
            page = "stdtypes" if name in STDTYPES else "functions"
            yield name, "py:class", f"library/{page}.html#{name}"
        elif inspect.isroutine(obj):
            yield name, "py:function", f"library/functions.html#{name}"
    for name in CONSTANTS:
        yield name, "py:data", f"library/constants.html#{name}"


def _module(module: str) -> Iterator[Entry]:
    mod = importlib.import_module(module)
    yield module, "py:module", f"library/{module}.html#module-{module}"
    public = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    public = [*public, *NOT_IN_ALL.get(module, ())]
    for attr in public:
        with warnings.catch_warnings():  # deprecated names (typing.ByteString) still link
            warnings.simplefilter("ignore", DeprecationWarning)
            obj = getattr(mod, attr, None)
        if obj is None or inspect.ismodule(obj):
            continue
        page = _page(module, obj)
        name = f"{module}.{attr}"
        role = _role(obj)
        yield name, role, f"{page}.html#{name}"
        if module == "typing" and role == "py:data":
            # Annotations refer to special forms (Any, Literal) as classes.
            yield name, "py:class", f"{page}.html#{name}"
        if inspect.isclass(obj):
            yield from _members(name, obj, page)
            # The same class under the module that defines it, which is how
            # autodoc sometimes spells it (asyncio.events.AbstractEventLoop).
            home = f"{obj.__module__}.{obj.__qualname__}"
            if home != name and obj.__module__.startswith(module):
                yield home, role, f"{page}.html#{name}"
    if module == "asyncio":
        # The event loop's methods are documented as asyncio.loop.<method>.
        for method in vars(mod.AbstractEventLoop):
            if not method.startswith("_"):
                loop_name = f"asyncio.loop.{method}"
                yield loop_name, "py:method", f"library/asyncio-eventloop.html#{loop_name}"


def entries() -> list[Entry]:
    """Every inventory entry, sorted, without duplicates."""
    found = set(_builtins())
    for module in MODULES:
        found.update(_module(module))
    return sorted(found)


def write_inventory(path: Path) -> Path:
    """Write the inventory to *path* (a Sphinx version 2 ``objects.inv``); return it."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    header = (
        "# Sphinx inventory version 2\n"
        "# Project: Python\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in entries())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + zlib.compress(body.encode()))
    return path


if __name__ == "__main__":
    written = write_inventory(Path(sys.argv[1]))
    print(f"{len(entries())} names written to {written}")  # noqa: T201 - a script's report
