"""Generated blocks in README.md and docs/: each is the output of a command, kept equal by a test.

A block is delimited by ``<!-- gen:NAME -->`` and ``<!-- /gen:NAME -->``; NAME is a key of
``GENERATORS`` below, whose function returns the block's text (the exact command that produces it
is printed above each block as ``<!-- cmd: ... -->`` for a reader). ``tests/test_docs.py`` checks
the cheap blocks in the default run and the expensive ones (a full experiment) under ``-m slow``.

    python tools/docs_blocks.py            # rewrite every block from its command
    python tools/docs_blocks.py --check    # exit 1 and name the blocks that differ
    python tools/docs_blocks.py --only metrics-table,cli-reference
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]
BLOCK = re.compile(
    r"(<!-- gen:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /gen:(?P=name) -->)", re.S
)


@dataclass(frozen=True)
class Generator:
    """One generated block: the command a reader can run, and a function producing its text."""

    command: str
    produce: Callable[[], str]
    slow: bool = False  # a full experiment: checked under ``pytest -m slow`` only


def _invoke(args: list[str]) -> str:
    from click.testing import CliRunner

    from scaling.app.cli import main

    res = CliRunner().invoke(main, args, catch_exceptions=False)
    if res.exit_code != 0:
        raise RuntimeError(f"scaling {' '.join(args)} exited {res.exit_code}: {res.output[-400:]}")
    return res.stdout if hasattr(res, "stdout") else res.output


def _metrics_table() -> str:
    from scaling.model.analysis.metrics import METRICS

    rows = ["| metric | unit | definition |", "|---|---|---|"]
    rows += [f"| `{m.name}` | {m.unit} | {m.definition} |" for m in METRICS.values()]
    return "\n".join(rows) + "\n"


def _fenced(text: str) -> str:
    return "```\n" + text.rstrip("\n") + "\n```\n"


def _cli_reference() -> str:
    from scaling.app.cli import main

    out = []
    for name in sorted(main.list_commands(None)):  # type: ignore[arg-type]
        text = _invoke([name, "--help"])
        out.append(f"## `scaling {name}`\n\n" + _fenced(text))
    return "\n".join(out)


def _validation_table() -> str:
    return _invoke(["validate", "--table"])


def _package_map() -> str:
    """Every package under scaling/ with the first sentence of its docstring: its one job."""
    import ast

    rows = ["| package | its job |", "|---|---|"]
    for init in sorted((REPO / "scaling").rglob("__init__.py")):
        pkg = ".".join(init.parent.relative_to(REPO).parts)
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        if not first:
            raise ValueError(
                f"{init.relative_to(REPO)}: a package needs a docstring saying its job"
            )
        rows.append(f"| `{pkg}` | {first} |")
    return "\n".join(rows) + "\n"


def _headline_nominal() -> str:
    """The README's nominal answer: scaling efficiency and tokens/s per accelerator at 512
    nodes, with each system's one-node throughput (``scaling run`` of the main config)."""
    from scaling import run_experiment

    t = run_experiment(REPO / "configs" / "mlu-vs-gpu.yaml", {"nodes": [1, 512]}).table
    top, one = int(t["nodes"].max()), int(t["nodes"].min())
    strategies = list(dict.fromkeys(t["strategy"]))
    head = ["system"]
    for st in strategies:
        name = st.split("-")[0].upper()
        head += [f"{name}: efficiency", f"{name}: tokens/s per accelerator ({one} node)"]
    devices = int(t[t["nodes"] == top]["devices"].iloc[0])
    rows = [
        f"Nominal, {top} nodes ({devices:,} accelerators):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for system in dict.fromkeys(t["system"]):
        cells = [system]
        for st in strategies:
            g = t[(t["system"] == system) & (t["strategy"] == st)].set_index("nodes")
            cells += [
                f"{g.loc[top, 'scaling_efficiency']:.3f}",
                f"{g.loc[top, 'tokens_per_s_per_device']:,.0f} "
                f"({g.loc[one, 'tokens_per_s_per_device']:,.0f})",
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


GENERATORS: dict[str, Generator] = {
    "package-map": Generator("python tools/docs_blocks.py --only package-map", _package_map),
    "metrics-table": Generator("scaling metrics --format markdown", _metrics_table),
    "systems": Generator("scaling systems", lambda: _fenced(_invoke(["systems"]))),
    "examples": Generator("scaling examples", lambda: _fenced(_invoke(["examples"]))),
    "cli-reference": Generator("scaling COMMAND --help", _cli_reference),
    "validation-table": Generator("scaling validate --table", _validation_table, slow=True),
    "headline-nominal": Generator(
        "scaling run configs/mlu-vs-gpu.yaml --set nodes=[1,512]", _headline_nominal, slow=True
    ),
}


def blocks(text: str) -> list[tuple[str, str]]:
    """(name, body) of every generated block in a document's text."""
    return [(m["name"], m["body"]) for m in BLOCK.finditer(text)]


def render(text: str, only: set[str] | None = None) -> str:
    """The document's text with every (or every ``only``) generated block produced afresh."""

    def sub(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in GENERATORS:
            raise KeyError(f"unknown generated block {name!r} (known: {', '.join(GENERATORS)})")
        if only is not None and name not in only:
            return m.group(0)
        return m.group(1) + GENERATORS[name].produce() + m.group(4)

    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check compare) the generated blocks of README.md and docs/."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    ap.add_argument("--only", default="", help="comma-separated block names")
    ns = ap.parse_args(argv)
    only = {s for s in ns.only.split(",") if s} or None
    bad = []
    for rel in DOC_FILES:
        path = REPO / rel
        text = path.read_text()
        new = render(text, only)
        if new != text:
            if ns.check:
                bad.append(rel)
            else:
                path.write_text(new)
                print(f"updated {rel}", file=sys.stderr)
    if bad:
        print("out of date: " + ", ".join(bad) + " (python tools/docs_blocks.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
