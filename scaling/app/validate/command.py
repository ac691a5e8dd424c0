"""``scaling validate``: run the studies, print the report, write validation.md and .csv."""

from __future__ import annotations

from pathlib import Path

import click

from scaling.app.exits import user_errors
from scaling.app.output import Printer, format_option, progress_option, want_progress
from scaling.app.validate import (
    format_text,
    points_frame,
    run_validation,
    summary_table,
    write_report,
)


@click.command("validate")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for validation.md and validation.csv.",
)
@click.option(
    "--study",
    "studies",
    multiple=True,
    metavar="PREFIX",
    help="Run only the studies whose name starts with PREFIX (repeatable).",
)
@click.option("--table", is_flag=True, help="Print only the README's summary table.")
@progress_option
@format_option
@user_errors
def validate(
    out_dir: Path | None,
    studies: tuple[str, ...],
    table: bool,
    fmt: str,
    progress: bool | None,
) -> None:
    """Compare the model with every published measurement the package holds.

    Per study: each point's measured and modelled value, its error and whether it was used for
    fitting (calibration) or held out (validation), the two MAPEs apart, and the study's
    tolerance. Exits 1 when a study misses its tolerance.

    \b
    Example: scaling validate --study nccl --format csv > validation.csv
    """
    if any(not s.strip() for s in studies):
        # an empty prefix matches every study: the whole validation, not the one asked for
        raise click.UsageError("--study: got an empty name; expected a study name or its prefix")
    rep = run_validation(prefixes=studies, progress=want_progress(progress))
    if not rep.studies:
        raise click.UsageError(f"--study {', '.join(studies)}: no study matches")
    p = Printer(fmt)
    if table and fmt != "table":
        raise click.UsageError(f"--table and --format {fmt}: --table is the text summary; give one")
    text = summary_table(rep) if table else format_text(rep)
    p.table(points_frame(rep), text=text)
    if out_dir is not None:
        paths = write_report(rep, out_dir)
        p.say("wrote " + ", ".join(str(f) for f in paths))
    if not rep.ok:
        raise SystemExit(1)
