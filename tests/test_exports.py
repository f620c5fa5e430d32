"""Keep the facade honest: ``__all__`` and the public names must not drift apart."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
import types
from pathlib import Path

import happydial


def _public_names(module: types.ModuleType) -> set[str]:
    """The module's public names, those it loads on first use (``_LAZY``) included."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } | set(getattr(module, "_LAZY", ()))


def test_all_matches_public_names() -> None:
    assert set(happydial.__all__) - {"__version__"} == _public_names(happydial)


def test_all_is_sorted_and_unique() -> None:
    assert list(happydial.__all__) == sorted(set(happydial.__all__))


def test_every_name_in_all_exists() -> None:
    for name in happydial.__all__:
        assert hasattr(happydial, name), name


def test_implementation_modules_are_private() -> None:
    public_submodules = {"testing", "sync"}
    for info in pkgutil.iter_modules(happydial.__path__):
        assert info.name.startswith("_") or info.name in public_submodules, info.name
        importlib.import_module(f"happydial.{info.name}")


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from happydial import *", namespace)  # noqa: S102 - the star import is what is tested
    namespace.pop("__builtins__")
    assert set(namespace) == set(happydial.__all__)


_DIRECTIVE = re.compile(
    r"^\.\. (?:auto(?:function|class|data|exception)|py:(?:data|class|function)):: "
    r"(?:happydial\.)?(?P<name>\w+)",
    re.MULTILINE,
)


def test_every_public_name_is_documented() -> None:
    # The API reference, or for the NAT64 names for now their guide, describes each name.
    docs = Path(__file__).parent.parent / "docs"
    pages = [docs / "api.md", *sorted((docs / "guides").glob("*.md"))]
    documented = {m["name"] for page in pages for m in _DIRECTIVE.finditer(page.read_text())}
    assert set(happydial.__all__) - documented == set()


def _defined_public_names(module: types.ModuleType) -> set[str]:
    """The public names a module's own source defines (not those it imports)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def test_sync_all_is_what_it_defines() -> None:
    from happydial import sync

    assert list(sync.__all__) == sorted(set(sync.__all__))
    assert set(sync.__all__) == _defined_public_names(sync)
    namespace: dict[str, object] = {}
    exec("from happydial.sync import *", namespace)  # noqa: S102 - the star import is what is tested
    namespace.pop("__builtins__")
    assert set(namespace) == set(sync.__all__)


def test_every_sync_name_is_documented() -> None:
    from happydial import sync

    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    directive = re.compile(
        r"^\.\. auto(?:function|class|data):: happydial\.sync\.(\w+)", re.MULTILINE
    )
    assert set(sync.__all__) == set(directive.findall(text))


def test_reports_tls_and_back_ends_load_only_when_used() -> None:
    # A fresh interpreter: this one has loaded everything already.
    code = (
        "import sys, happydial\n"
        "lazy = ('happydial._report', 'happydial._tls', 'happydial._backends')\n"
        "print(sorted(m for m in lazy if m in sys.modules))\n"
        "recording = happydial.recording\n"
        "print('happydial._report' in sys.modules, recording is happydial.recording)\n"
        "from happydial import ConnectionReport\n"
        "print(ConnectionReport.__module__)\n"
        "try:\n"
        "    happydial.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(  # noqa: S603 - this interpreter, running the code above
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines() == [
        "[]",
        "True True",
        "happydial._report",
        "module 'happydial' has no attribute 'no_such_name'",
    ]
