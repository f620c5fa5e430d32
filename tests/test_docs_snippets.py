"""The documentation's illustrative snippets stay valid.

Runnable examples in the docs are Sphinx ``testcode`` blocks, executed by the doctest
build in CI. The plain ```python fences are fragments (a loop body, a zeroconf call
that needs a network): each must still compile, top-level ``await`` allowed, and every
happydial name it uses must exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import happydial

ROOT = Path(__file__).parent.parent
_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
SNIPPETS = [
    (f"{path.relative_to(ROOT)}#{i}", source)
    for path in sorted((ROOT / "docs").rglob("*.md"))
    for i, source in enumerate(_FENCE.findall(path.read_text(encoding="utf-8")))
]


def test_there_are_snippets() -> None:
    assert SNIPPETS


@pytest.mark.parametrize(("where", "source"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_snippet_compiles_and_names_exist(where: str, source: str) -> None:
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
