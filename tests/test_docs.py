"""The README and docs/: generated blocks equal their commands' output, links resolve, the README
stays short, and the architecture page names every package."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("docs_blocks", REPO / "tools" / "docs_blocks.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["docs_blocks"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


DOCS = _tool()


def _all_blocks() -> list[tuple[str, str, str]]:
    out = []
    for rel in DOCS.DOC_FILES:
        for name, body in DOCS.blocks((REPO / rel).read_text()):
            out.append((rel, name, body))
    return out


def test_every_block_names_a_known_generator() -> None:
    blocks = _all_blocks()
    assert {"metrics-table", "cli-reference", "package-map"} <= {n for _, n, _ in blocks}
    for rel, name, _ in blocks:
        assert name in DOCS.GENERATORS, f"{rel}: unknown generated block {name}"


@pytest.mark.parametrize("name", sorted(n for n, g in DOCS.GENERATORS.items() if not g.slow))
def test_generated_block_equals_its_command(name: str) -> None:
    expected = DOCS.GENERATORS[name].produce()
    found = [(rel, body) for rel, n, body in _all_blocks() if n == name]
    assert found, f"no block {name} in README.md or docs/"
    for rel, body in found:
        assert body == expected, f"{rel}: block {name} is stale: run python tools/docs_blocks.py"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, g in DOCS.GENERATORS.items() if g.slow))
def test_slow_generated_block_equals_its_command(name: str) -> None:
    expected = DOCS.GENERATORS[name].produce()
    for rel, n, body in _all_blocks():
        if n == name:
            assert body == expected, f"{rel}: block {name} is stale"


def test_render_replaces_only_the_block_body() -> None:
    text = "a\n<!-- gen:metrics-table -->\nold\n<!-- /gen:metrics-table -->\nb\n"
    new = DOCS.render(text)
    assert new.startswith("a\n<!-- gen:metrics-table -->\n| metric |")
    assert new.endswith("<!-- /gen:metrics-table -->\nb\n") and "old" not in new
    with pytest.raises(KeyError, match="unknown generated block"):
        DOCS.render("<!-- gen:nope -->\n<!-- /gen:nope -->")


def test_readme_is_short_and_links_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for rel in DOCS.DOC_FILES:
        path = REPO / rel
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (path.parent / target).exists(), f"{rel}: broken link {target}"


def test_architecture_names_every_package() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    for init in (REPO / "scaling").rglob("__init__.py"):
        pkg = ".".join(init.parent.relative_to(REPO).parts)
        assert f"| `{pkg}` |" in text, pkg
