"""The notebooks use only the public API (``from scaling import ...``) and each has a
``parameters`` cell (papermill's tag: the values CI runs, edited to ask another question)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import scaling

BOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _cells(book: Path) -> list[dict]:
    return json.loads(book.read_text())["cells"]


def private_imports(source: str) -> list[str]:
    """The imports of ``source`` that reach past the public API: any ``scaling.<module>``, or a
    name ``from scaling import`` that :data:`scaling.__all__` does not list."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.startswith("scaling.")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("scaling."):
                bad.append(node.module)
            elif node.module == "scaling":
                bad += [f"scaling.{a.name}" for a in node.names if a.name not in scaling.__all__]
    return bad


def test_the_check_catches_private_imports():
    assert private_imports("import scaling.io.plots") == ["scaling.io.plots"]
    assert private_imports("from scaling.app.api import run_experiment") == ["scaling.app.api"]
    assert private_imports("from scaling import io") == ["scaling.io"]
    assert private_imports("if True:\n    from scaling.sweep import x") == ["scaling.sweep"]
    assert private_imports("import scaling\nfrom scaling import run_experiment, explain") == []


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.name)
def test_notebook_imports_only_the_public_api(book):
    assert len(BOOKS) >= 6
    for cell in _cells(book):
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            assert private_imports(src) == [], f"{book.name}: {src[:200]}"


@pytest.mark.parametrize("book", BOOKS, ids=lambda p: p.name)
def test_notebook_has_a_parameters_cell(book):
    tagged = [
        c
        for c in _cells(book)
        if c["cell_type"] == "code" and "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    assert len(tagged) == 1, book.name
