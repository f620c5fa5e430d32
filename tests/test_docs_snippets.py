"""The documentation's Python code is either run by the docs build or marked as not run.

Runnable examples in the docs are Sphinx ``testcode`` blocks, executed (and their
output checked) by the doctest build in CI. Code that cannot run there says so in a
caption: a fragment (lines from inside an ``async def``) or code that needs a package
or a network the build does not have. Each of those must still compile, top-level
``await`` allowed, and every happydial name it uses must exist. A bare ```python fence,
which a reader could not tell apart from a tested example, is not allowed.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import zlib
from pathlib import Path

import pytest

import happydial

ROOT = Path(__file__).parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md"))
_BARE = re.compile(r"^```python$", re.MULTILINE)
_CAPTIONED = re.compile(
    r"^```\{code-block\} python\n:caption: (?P<caption>[^\n]*)\n\n(?P<source>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
SNIPPETS = [
    (f"{path.relative_to(ROOT)}#{i}", match["caption"], match["source"])
    for path in PAGES
    for i, match in enumerate(_CAPTIONED.finditer(path.read_text(encoding="utf-8")))
]


def test_there_are_snippets() -> None:
    assert SNIPPETS


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_no_unmarked_python(page: Path) -> None:
    assert not _BARE.findall(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("where", "caption", "source"), SNIPPETS, ids=[w for w, _, _ in SNIPPETS])
def test_snippet_is_marked_compiles_and_names_exist(where: str, caption: str, source: str) -> None:
    assert caption.startswith(("A fragment: ", "Not run when these docs are built: "))
    tree = compile(source, where, "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    assert isinstance(tree, ast.Module)
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "happydial":
            used.update(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "happydial"
        ):
            used.add(node.attr)
    missing = sorted(name for name in used if not hasattr(happydial, name))
    assert not missing, f"{where} uses happydial names that do not exist: {missing}"


def test_python_inventory_points_to_the_right_pages(tmp_path: Path) -> None:
    # docs/conf.py writes this inventory at every build, for offline intersphinx.
    sys.path.insert(0, str(ROOT / "docs" / "_scripts"))
    try:
        python_inventory = importlib.import_module("python_inventory")
    finally:
        sys.path.remove(str(ROOT / "docs" / "_scripts"))
    entries = {(name, role): uri for name, role, uri in python_inventory.entries()}
    assert entries[("asyncio.loop.create_connection", "py:method")] == (
        "library/asyncio-eventloop.html#asyncio.loop.create_connection"
    )
    assert entries[("asyncio.open_connection", "py:function")] == (
        "library/asyncio-stream.html#asyncio.open_connection"
    )
    assert entries[("asyncio.events.AbstractEventLoop", "py:class")] == (
        "library/asyncio-eventloop.html#asyncio.AbstractEventLoop"
    )
    assert entries[("socket.gaierror", "py:exception")] == "library/socket.html#socket.gaierror"
    assert entries[("ssl.SSLContext", "py:class")] == "library/ssl.html#ssl.SSLContext"
    assert entries[("tuple", "py:class")] == "library/stdtypes.html#tuple"
    assert entries[("int", "py:class")] == "library/functions.html#int"
    assert entries[("OSError", "py:exception")] == "library/exceptions.html#OSError"
    assert entries[("None", "py:data")] == "library/constants.html#None"
    data = python_inventory.write_inventory(tmp_path / "objects.inv").read_bytes()
    header = b"# Sphinx inventory version 2\n# Project: Python\n"
    assert data.startswith(header)
    body = zlib.decompress(data.split(b"zlib.\n", 1)[1]).decode().splitlines()
    assert "socket.socket py:class 1 library/socket.html#socket.socket -" in body


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_image_alt_texts_are_on_one_line(page: Path) -> None:
    # MyST joins the lines of an alt text without a space ("anduvloop").
    assert not re.findall(r"!\[[^\]]*\n", page.read_text(encoding="utf-8"))
