"""``--format`` on every command that prints a table: one option, one way to print.

In ``table`` format a command prints as it always did: prose and aligned tables on stdout. In a
machine format (``csv``, ``json``, ``markdown``) stdout carries only the table, rendered by
:func:`scaling.io.results.render`, and every other line goes to stderr, so
``scaling run X --format json | jq .`` works.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from scaling.io.results import FORMATS

Cells = tuple[Sequence[str], Sequence[Sequence[str]], str]


def format_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--format`` option (parameter ``fmt``)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="table: aligned text with notes; csv, json (an array of row objects), markdown: "
        "only the table on stdout, notes on stderr.",
    )(fn)


class Printer:
    """Where a command's lines go for its ``--format``."""

    def __init__(self, fmt: str = "table", stdout_taken: bool = False) -> None:
        self.fmt = fmt
        #: a machine format, or stdout already carries a file (``--out -``): notes to stderr
        self.quiet = fmt != "table" or stdout_taken

    def say(self, msg: str = "") -> None:
        """A note (header, summary, 'wrote …'): stdout in table format, else stderr."""
        click.echo(msg, err=self.quiet)

    def table(self, df: Any, cells: Cells | None = None, text: str | None = None) -> None:
        """The command's table: ``text`` (or ``cells``) in table format, else ``df`` rendered."""
        from scaling.io.results import render

        if self.fmt == "table":
            click.echo(text if text is not None else render(df, "table", cells), err=self.quiet)
        else:
            click.echo(render(df, self.fmt, cells))


def is_stdout(path: Any) -> bool:
    """``--out -``: the file option names stdout."""
    return path is not None and str(path) == "-"
