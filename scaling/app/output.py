"""``--format`` on every command that prints a table: one option, one way to print.

In ``table`` format a command prints as it always did: prose and aligned tables on stdout. In a
machine format (``csv``, ``json``, ``markdown``) stdout carries only the table, rendered by
:func:`scaling.io.results.render`, and every other line goes to stderr, so
``scaling run X --format json | jq .`` works.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from scaling.io.text_table import FORMATS

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


def progress_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--progress/--no-progress`` option (parameter ``progress``: ``None`` = default)."""
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bar with ETA on stderr (default: when stderr is a terminal and not -q).",
    )(fn)


def out_file_option(
    help: str, default: str | None = None, required: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--out FILE`` option of commands that write one file (parameter ``out_file``;
    ``-`` = stdout)."""
    return click.option(
        "--out",
        "out_file",
        type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
        default=default,
        show_default=default is not None,
        required=required,
        help=help,
    )


def set_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The repeatable ``--set PATH=VALUE`` config override (parameter ``overrides``)."""
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="PATH=VALUE",
        help="Override a config field, e.g. --set nodes=[1,8,64] --set training.micro_batch_size=2.",
    )(fn)


def jobs_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--jobs/-j N`` option of commands that run simulations on the sweep executors
    (parameter ``n_jobs``; ``None`` = one process per CPU, 1 = in process)."""
    return click.option(
        "--jobs", "-j", "n_jobs", type=click.IntRange(min=1), default=None, help=help
    )


def verbosity() -> int:
    """The group's ``-q``/``-v`` level (-1 quiet, 0 default, 1 ``-v``, 2 ``-vv``); 0 outside a
    command."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:  # outside a command (the Python API): nothing imports the entry point
        return 0
    from scaling.app.entry import VERBOSITY

    return int(ctx.find_root().meta.get(VERBOSITY, 0))


def want_progress(flag: bool | None) -> bool:
    """Whether to draw a progress bar: ``--progress``/``--no-progress`` if given, else when
    stderr is a terminal and the group was not given ``-q``."""
    if flag is not None:
        return flag
    return verbosity() >= 0 and sys.stderr.isatty()


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "run",
    enabled: bool = True,
) -> Any:
    """The one progress bar of the commands: :mod:`tqdm.auto` (a widget in Jupyter, text on a
    terminal) on stderr, removed when done; a do-nothing pass-through when not ``enabled``.
    Wraps ``iterable``, or counts ``total`` steps with ``.update(n)``."""
    if not enabled:
        # tqdm.auto pulls in asyncio and a multiprocessing lock (~0.1 s CPU of start-up)
        return _NoBar(iterable, total)
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        disable=not enabled,
    )


class _NoBar:
    """The disabled bar: what a ``tqdm(disable=True)`` does (iterates ``iterable``; counts,
    postfixes and refreshes change nothing), without importing tqdm."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None) -> None:
        self.iterable = iterable
        self.total = total
        self.n = 0

    def __iter__(self) -> Any:
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float = 1) -> None:
        """Nothing (a disabled tqdm does not count)."""

    def refresh(self) -> None:
        """Nothing."""

    def close(self) -> None:
        """Nothing."""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Nothing."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Nothing."""


class Printer:
    """Where a command's lines go for its ``--format``."""

    def __init__(self, fmt: str = "table", stdout_taken: bool = False) -> None:
        self.fmt = fmt
        #: a machine format, or stdout already carries a file (``--out -``): notes to stderr
        self.quiet = fmt != "table" or stdout_taken

    def say(self, msg: str = "") -> None:
        """A note (header, summary, 'wrote …'): stdout in table format, else stderr — where
        the group's ``-q`` drops it."""
        if self.quiet and verbosity() < 0:
            return
        click.echo(msg, err=self.quiet)

    def table(self, df: Any, cells: Cells | None = None, text: str | None = None) -> None:
        """The command's table: ``text`` (or ``cells``) in table format, else ``df`` rendered."""
        if self.fmt == "table" and text is not None:  # as given: no table module to import
            click.echo(text, err=self.quiet)
            return
        from scaling.io.results import render

        if self.fmt == "table":
            click.echo(render(df, "table", cells), err=self.quiet)
        else:
            click.echo(render(df, self.fmt, cells))


def is_stdout(path: Any) -> bool:
    """``--out -``: the file option names stdout."""
    return path is not None and str(path) == "-"


def _owner(folder: Any) -> tuple[str, str] | None:
    """What a results folder holds: ("experiment" or "sweep", its name), None if it holds no
    results; ("unknown", "") for results without a readable name."""
    from scaling.io.errors import read_yaml  # the one YAML reader (size and alias limits)

    folder = Path(folder)
    for kind, name in (("experiment", "resolved_config.yaml"), ("sweep", "sweep.yaml")):
        f = folder / name
        if f.is_file():
            try:
                doc, _ = read_yaml(f, "results metadata")
                got = doc["experiment"]["name"] if kind == "experiment" else doc["name"]
            except Exception:  # unreadable or not ours: still another run's folder
                return "unknown", ""
            return kind, str(got)
    if any((folder / n).exists() for n in ("results.csv", "results.parquet", "runs")):
        return "unknown", ""
    return None


def check_out_dir(folder: Any, kind: str, name: str, force: bool) -> None:
    """Refuse (one line, exit 2) to write ``kind`` ``name``'s results into a folder that holds
    another experiment's or sweep's results, unless ``force``. The same experiment (or sweep:
    its resume) may rewrite its own folder."""
    from scaling.io.errors import ConfigError

    if force:  # nothing to check: the folder's metadata is not even read
        return
    owner = _owner(folder)
    if owner is None or owner == (kind, name):
        return
    what = f"{owner[0]} {owner[1]!r}" if owner[1] else "other results"
    raise ConfigError(
        f"--out {folder}: holds the results of {what}; this is {kind} {name!r}; give another "
        "--out, or --force to overwrite"
    )


def short_reason(msg: str, limit: int = 160) -> str:
    """The head of a refusal for a one-line note: its first clause (up to ``; ``), without
    parenthetical detail when that is too long, cut at ``limit`` characters."""
    import re

    head = msg.split("; ")[0]
    if len(head) > limit:
        head = re.sub(r" \((?:[^()]|\([^()]*\))*\)", "", head)
    return head if len(head) <= limit else head[: limit - 3] + "..."


def config_argument(ctx: Any, param: Any, value: Any) -> Any:
    """Click callback of a CONFIG/SPEC argument: a bundled example's name (``mlu-vs-gpu``,
    ``sweeps/ddp-buckets``; ``scaling examples`` lists them) stands for its file."""
    from scaling.io.examples import resolve_config

    return None if value is None else resolve_config(value)
