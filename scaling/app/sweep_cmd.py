"""``scaling sweep`` and ``scaling plot``: parameter sweeps and the plots of any results table.

The commands are registered in :data:`scaling.app.entry.REGISTRY`; this module also runs
standalone: ``python -m scaling.app.sweep_cmd sweep SPEC --out DIR``. Bad input exits with
code 2 and one line (as every ``scaling`` command); a sweep with failed runs exits with 1 and an
interrupted one with 130, its finished runs saved for ``--resume``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from scaling.app.exits import EXIT_BAD_INPUT, fail, user_errors
from scaling.app.output import (
    Printer,
    check_out_dir,
    config_argument,
    format_option,
    jobs_option,
    progress_option,
    want_progress,
)
from scaling.io.errors import ConfigError
from scaling.io.results import format_results_table, results_cells

EXIT_FAILED_RUNS = 1
EXIT_INTERRUPTED = 130
#: the summary lists every run up to this many rows, else only each line's ends
MAX_TABLE_ROWS = 60
#: what `scaling plot` needs of a results table: a line per system and strategy, accelerators
#: on x, throughput on y
PLOT_COLUMNS = ("system", "strategy", "devices", "tokens_per_s_per_device")


def _fail(msg: str, code: int = EXIT_BAD_INPUT) -> None:
    if code == EXIT_BAD_INPUT:
        fail(msg)
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


_user_errors = user_errors


def _table_rows(df: Any) -> Any:
    """All rows of a small table; of a large one, each line's smallest and largest run."""
    if len(df) <= MAX_TABLE_ROWS:
        return df
    keys = [k for k in ("point", "system", "strategy") if k in df.columns]
    g = df.groupby(keys, sort=False)["nodes"]
    keep = (df["nodes"] == g.transform("min")) | (df["nodes"] == g.transform("max"))
    return df[keep]


def _problems(df: Any, status: str, limit: int = 5) -> list[str]:
    bad = df[df["status"] == status]
    if bad.empty:
        return []
    reasons: dict[str, int] = {}
    for msg in bad["error"].astype(str):
        reasons[msg] = reasons.get(msg, 0) + 1
    out = [f"{len(bad)} run(s) {status}:"]
    for msg, n in list(reasons.items())[:limit]:
        short = msg if len(msg) <= 300 else msg[:297] + "..."
        out.append(f"  {short}" + (f"  (x{n})" if n > 1 else ""))
    if len(reasons) > limit:
        out.append(f"  ... and {len(reasons) - limit} more (see the error column)")
    return out


@click.command("sweep")
@click.argument("spec", type=click.Path(path_type=Path), callback=config_argument)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder (default: results/<sweep name>); holds runs/, results.parquet, sweep.yaml.",
)
@jobs_option("Local worker processes (default: one per CPU; 1 = in this process).")
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Run on a Dask cluster, e.g. tcp://host:8786 (needs the 'dask' extra here, and this "
    "package at this version on its scheduler and workers: checked before submitting).",
)
@click.option(
    "--dask-local",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Start a local Dask cluster of N worker processes (1 thread each) and run on it.",
)
@click.option(
    "--oversubscribe",
    is_flag=True,
    help="Allow --jobs above the CPU count (else capped at it: runs are CPU-bound).",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Reuse finished runs in OUT/runs (failed runs are retried); --no-resume reruns all.",
)
@click.option("--csv", "write_csv", is_flag=True, help="Also write results.csv.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a field of the base experiment, e.g. --set nodes=[1,8,64].",
)
@progress_option
@click.option("--no-plot", is_flag=True, help="Skip the plots.")
@click.option(
    "--force", is_flag=True, help="Write into an --out folder holding another run's results."
)
@click.option("--budget", metavar="CPU_S[,GiB]", help="Most one run may cost (default 60,1).")
@format_option
@_user_errors
def sweep(
    spec: Path,
    out_dir: Path | None,
    n_jobs: int | None,
    scheduler: str | None,
    dask_local: int | None,
    oversubscribe: bool,
    resume: bool,
    write_csv: bool,
    overrides: tuple[str, ...],
    progress: bool | None,
    no_plot: bool,
    force: bool,
    fmt: str,
    budget: str | None = None,
) -> None:
    """Run a parameter sweep SPEC (or a plain experiment: one point) point by point.

    Each finished run is saved at once in OUT/runs/<run key>.parquet, so an interrupted
    sweep resumes where it stopped; then every run is gathered into OUT/results.parquet with
    scaling efficiency, and the plots are drawn.

    \b
    Example: scaling sweep sweeps/ddp-buckets --out results/ddp -j 2 --format csv
    """
    from scaling.sweep import expand, load_sweep, make_executor, run_sweep
    from scaling.sweep.budget import parse_budget

    executor = make_executor(n_jobs, scheduler, dask_local, oversubscribe)
    loaded = load_sweep(spec, list(overrides))
    out = out_dir or Path("results") / loaded.name
    check_out_dir(out, "sweep", loaded.name, force)
    n_points, n_runs = len(loaded.points()), len({r.key for r in expand(loaded)})
    p = Printer(fmt)
    p.say(
        f"sweep {loaded.name}: {n_points} point(s), {n_runs} run(s), on {executor.describe()}"
        f"; writing {out}"
    )
    finished = 0

    def count(_run: Any, _row: Any) -> None:
        nonlocal finished
        finished += 1

    t0 = time.perf_counter()
    try:
        with executor:
            df = run_sweep(
                loaded,
                out,
                executor,
                resume=resume,
                progress=want_progress(progress),
                csv=write_csv,
                on_run=count,
                budget=parse_budget(budget),
            )
    except KeyboardInterrupt:
        _fail(
            f"interrupted: {finished} run(s) finished now are saved in {out / 'runs'}; "
            "run the same command again to resume",
            EXIT_INTERRUPTED,
        )
        return
    wall = time.perf_counter() - t0
    axes = df.attrs.get("axis_columns", [])
    counts = df["status"].value_counts().to_dict()
    p.say(
        f"{df.attrs.get('ran', 0)} run(s) simulated, {df.attrs.get('reused', 0)} reused; "
        + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "refused", "failed"))
        + f"; {wall:.1f} s"
    )
    shown = _table_rows(df) if fmt == "table" else df
    p.table(df, results_cells(df, axes), text=format_results_table(shown, axes))
    if len(shown) < len(df):
        p.say(f"(the smallest and largest run of each line: {len(shown)} of {len(df)} rows)")
    for line in _problems(df, "refused") + _problems(df, "failed"):
        p.say(line)
    written = [out / "results.parquet"] + ([out / "results.csv"] if write_csv else [])
    written.append(out / "sweep.yaml")
    if not no_plot and (df["status"] == "ok").any():
        from scaling.io.plots import plot_sweep

        models = "/".join(dict.fromkeys(df.loc[df["status"] == "ok", "model"]))
        written += plot_sweep(df, out, f"{loaded.name}: {models}", axes=axes)
    p.say("wrote " + ", ".join(str(f) for f in written))
    if counts.get("failed", 0):
        _fail(
            f"{counts['failed']} run(s) failed; run the same command again to retry them",
            EXIT_FAILED_RUNS,
        )


#: what ``scaling plot --image-format`` writes
IMAGE_FORMATS = ("png", "svg", "pdf")


def _refuse_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``plot --format X``: refused in one line (``--format`` is the table format of every
    other command), naming ``--image-format`` when X is an image format."""
    if value is None:
        return
    hint = (
        f"use --image-format {value}"
        if value in IMAGE_FORMATS
        else f"expected --image-format {'|'.join(IMAGE_FORMATS)}"
    )
    raise click.UsageError(
        f"--format {value}: plot writes images, and --format is the table format of the other "
        f"commands; {hint}",
        ctx,
    )


@click.command("plot")
@click.argument("results", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for the plots (default: the results' folder).",
)
@click.option(
    "--image-format",
    "formats",
    type=click.Choice(IMAGE_FORMATS),
    multiple=True,
    default=("png", "svg"),
    show_default=True,
    help="Image formats (repeat for several).",
)
@click.option(
    "--format",
    "table_format",
    hidden=True,
    expose_value=False,
    callback=_refuse_format,
    help="Refused: --format is every other command's table format; plot writes images.",
)
@click.option("--title", default=None, help="Plot title (default: the model).")
@_user_errors
def plot(results: Path, out_dir: Path | None, formats: tuple[str, ...], title: str | None) -> None:
    """Plot a results table: RESULTS is a results.parquet/.csv file or a run/sweep folder.

    Draws scaling efficiency, tokens/s per accelerator and exposed-communication share against
    accelerators, one line per system and strategy (and per sweep-axis value).

    \b
    Example: scaling plot results/ddp --image-format pdf
    """
    from scaling.io.plots import axis_columns, plot_sweep
    from scaling.io.results import read_results

    df = read_results(results, "RESULTS", PLOT_COLUMNS)
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    if ok.empty:
        _fail(f"{results}: no successful runs to plot")
    out = out_dir or (results if results.is_dir() else results.parent)
    if title is None:
        title = "/".join(str(m) for m in dict.fromkeys(ok["model"])) if "model" in ok else ""
    try:
        written = plot_sweep(df, out, title, formats)
    except OSError as e:
        raise ConfigError(f"{out}: cannot write plots: {e.strerror or e}") from None
    axes = axis_columns(df)
    lines = ok.groupby(["system", "strategy", *axes], dropna=False).ngroups
    click.echo(f"{lines} line(s) per plot; wrote " + ", ".join(str(p) for p in written))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def _standalone() -> None:
    """scaling sweep / plot (standalone entry point)."""


_standalone.add_command(sweep)
_standalone.add_command(plot)

if __name__ == "__main__":  # pragma: no cover
    _standalone()
