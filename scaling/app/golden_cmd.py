"""``scaling baseline update`` and ``scaling compare``: golden scaling curves on the command line,
a thin layer over :mod:`scaling.golden` (which runs, stores, compares and checks them).

Exit codes: 0 all within tolerance (or baselines written), 1 a difference beyond tolerance (or an
invariant violated: nothing written), 2 bad input (one line, like every ``scaling`` command).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from scaling.app.exits import user_errors
from scaling.app.output import (
    Printer,
    format_option,
    progress_bar,
    progress_option,
    verbosity,
    want_progress,
)

EXIT_DIFFERENT = 1
_user_errors = user_errors


@click.group()
def baseline() -> None:
    """Golden scaling curves (regression baselines): regenerate them with `update`.

    \b
    Example: scaling baseline update --only mlu-vs-gpu
    """


@baseline.command()
@click.option(
    "--dir",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("tests/golden"),
    show_default=True,
    help="Folder of the baselines (one sub-folder per experiment).",
)
@click.option(
    "--configs",
    "config_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("configs/golden"),
    show_default=True,
    help="Folder of the golden experiment configs (every *.yaml is one baseline).",
)
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Update only this baseline (config file stem); repeatable.",
)
@progress_option
@_user_errors
def update(out_dir: Path, config_dir: Path, only: tuple[str, ...], progress: bool | None) -> None:
    """Run every golden experiment, check the invariants (CONFIGS/invariants.yaml), and
    (re)write the baselines.

    A baseline whose inputs and values did not change is left untouched (date included), so
    regenerating gives no diff; a changed one shows what moved. If any invariant is violated
    nothing is written and the exit code is 1.

    \b
    Example: scaling baseline update --only mlu-vs-gpu
    """
    from scaling.golden import golden_configs, update_baselines

    show = want_progress(progress)
    total = len([f for f in golden_configs(config_dir) if not only or f.stem in only])
    started = 0

    with progress_bar(total=total, desc="baseline update", unit="experiment", enabled=show) as bar:

        def on_run(name: str) -> None:
            nonlocal started
            if started:
                bar.update(1)
            started += 1
            if show:
                bar.set_postfix_str(name)
            elif verbosity() >= 0:
                click.echo(f"running {name} ...", err=True)

        rep = update_baselines(config_dir, out_dir, only, on_run=on_run)
        bar.update(started - bar.n)
    if rep.violations:
        click.echo("invariants violated; no baseline written:")
        for name, bad in rep.violations.items():
            for b in bad:
                click.echo(f"  {name}: {b}")
        sys.exit(EXIT_DIFFERENT)
    for run in rep.runs:
        status = rep.status[run.name]
        refused = "".join(
            f"; refused {r.system} {r.strategy} at nodes {list(r.nodes)}" for r in run.refused
        )
        click.echo(
            f"{run.name}: {len(run.table)} points{refused}; invariants hold; "
            f"{status} ({out_dir / run.name}, config hash {run.config_hash})"
        )
        cmp = rep.changes.get(run.name)
        if cmp is not None:
            click.echo(f"  changes vs the previous baseline: {cmp.summary()}")
            click.echo("  " + cmp.failure_table(limit=20).replace("\n", "\n  "))
    for name in rep.stale:
        click.echo(
            f"warning: {out_dir / name} has no config in {config_dir} (delete it if it is obsolete)"
        )


@click.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.argument("baseline_path", metavar="BASELINE", type=click.Path(path_type=Path))
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=None,
    help="Relative tolerance (default 1e-06: the simulator is deterministic).",
)
@click.option(
    "--atol", type=click.FloatRange(min=0), default=None, help="Absolute tolerance (default 1e-09)."
)
@click.option(
    "--metrics",
    default=None,
    metavar="M1,M2",
    help="Metrics to compare (default: step_time_s, tokens_per_s_per_device, scaling_efficiency, "
    "exposed_comm_share, mfu, peak_mem_GiB).",
)
@click.option(
    "--common-only", is_flag=True, help="Compare the points both files have; ignore the others."
)
@click.option("--failures-only", is_flag=True, help="Print only the values beyond tolerance.")
@format_option
@_user_errors
def compare(
    results: Path,
    baseline_path: Path,
    rtol: float | None,
    atol: float | None,
    metrics: str | None,
    common_only: bool,
    failures_only: bool,
    fmt: str,
) -> None:
    """Compare RESULTS with BASELINE point by point (system, strategy, model, nodes).

    Both are results files written by `scaling run` (CSV or Parquet) or folders holding
    results.csv (a run folder, or a baseline such as tests/golden/mlu-vs-gpu). Prints the
    relative difference of each metric per point; exit code 0 when all are within tolerance,
    1 when not (the values are listed), 2 for bad input.

    \b
    Example: scaling compare results/mlu-vs-gpu tests/golden/mlu-vs-gpu --format json
    """
    from scaling.golden import DEFAULT_ATOL, DEFAULT_RTOL, compare_frames, curve_names
    from scaling.io.results import read_results

    res = read_results(results, "RESULTS")
    base = read_results(baseline_path, "BASELINE")
    cmp = compare_frames(
        res,
        base,
        metrics,
        DEFAULT_RTOL if rtol is None else rtol,
        DEFAULT_ATOL if atol is None else atol,
        allow_missing=common_only,
    )
    p = Printer(fmt)
    p.say(f"compare {results} against baseline {baseline_path}")
    if fmt != "table":  # the machine formats carry every value, one row per point and metric
        p.table(cmp.failures if failures_only else cmp.values)
    if not failures_only and fmt == "table":
        p.say(
            "relative difference (result - baseline) / |baseline| per point and metric; "
            "* = beyond tolerance"
        )
        p.say(cmp.point_table())
    if len(cmp.failures) and fmt == "table":
        p.say("beyond tolerance:")
        p.say(cmp.failure_table(limit=None))
    for label, keys in (
        ("only in BASELINE (missing from RESULTS)", cmp.only_in_baseline),
        ("only in RESULTS (not in BASELINE)", cmp.only_in_results),
    ):
        if keys:
            p.say(f"{label}:")
            for curve in curve_names(keys):
                p.say(f"  {curve}")
    verdict = "OK" if cmp.ok else "DIFFERENT"
    p.say(f"{verdict}: {cmp.summary()}")
    if not cmp.ok:
        sys.exit(EXIT_DIFFERENT)
