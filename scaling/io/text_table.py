"""The project's plain-text tables and the ``--format`` names: light (no numpy, pandas or
model imports), so a command that prints a table it built itself (``scaling collective``)
imports only this (issue 29: :mod:`scaling.io.results` pulls in the job model, ~30 ms CPU)."""

from __future__ import annotations

from collections.abc import Sequence

#: what ``--format`` accepts on every command that prints a table
FORMATS = ("table", "csv", "json", "markdown")


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "", style: str = "text"
) -> str:
    """The one plain-text table of the project: columns two spaces apart, a rule of dashes under
    the header, trailing blanks stripped. ``align`` gives each column ``l`` (left) or ``r``
    (right); columns past its end are right-aligned (numbers). ``style="markdown"``: the same
    cells as a GitHub Markdown pipe table."""
    allrows = [list(header), *(list(r) for r in rows)]
    just = [(align[i] if i < len(align) else "r") for i in range(len(header))]
    if style == "markdown":
        cells = [[v.replace("|", "\\|") for v in r] for r in allrows]
        rule = ["---:" if j == "r" else "---" for j in just]
        return "\n".join("| " + " | ".join(r) + " |" for r in [cells[0], rule, *cells[1:]])
    widths = [max(len(r[i]) for r in allrows) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if j == "l" else v.rjust(w) for v, w, j in zip(r, widths, just, strict=True)
        ).rstrip()

    return "\n".join(
        [line(allrows[0]), "  ".join("-" * w for w in widths), *map(line, allrows[1:])]
    )
