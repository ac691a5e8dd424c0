"""``scaling run``: every point of an experiment, its table, plot and the optional replicas and
uncertainty samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from scaling.app.exits import fail, user_errors
from scaling.app.output import (
    Printer,
    check_out_dir,
    config_argument,
    format_option,
    jobs_option,
    progress_option,
    set_option,
    short_reason,
    want_progress,
)
from scaling.io.results import results_cells
from scaling.model.errors import InfeasibleJobError


def _gap_summary(ok: list[dict[str, Any]]) -> list[str]:
    """At the largest node count: each system's efficiency vs the best, per strategy. ``ok``:
    the rows that ran (dicts, as ``DataFrame.to_dict("records")``), in table order."""
    if not ok:
        return []
    top = max(r["nodes"] for r in ok)
    groups: dict[Any, list[dict[str, Any]]] = {}  # by strategy, in first-seen order
    for r in ok:
        if r["nodes"] == top:
            groups.setdefault(r["strategy"], []).append(r)
    out: list[str] = []
    for strategy, g in groups.items():
        if len(g) < 2:
            continue
        last = [g[i] for i in _descending(np.array([r["scaling_efficiency"] for r in g]))]
        best = last[0]
        out.append(
            f"At {top} nodes with {strategy}, scaling efficiency (1.000 = perfect weak scaling):"
        )
        for r in last:
            gap = (r["scaling_efficiency"] - best["scaling_efficiency"]) * 100
            rel = (
                ""
                if r["system"] == best["system"]
                else f"  ({gap:+.1f} points vs {best['system']})"
            )
            out.append(f"  {r['system']:<12} {r['scaling_efficiency']:.3f}{rel}")
    return out


def _descending(values: Any) -> list[int]:
    """The order ``Series.sort_values(ascending=False)`` gives ``values`` (pandas'
    ``nargsort``: reversed, numpy quicksort, reversed back; NaN last), ties included."""
    mask = np.isnan(values)
    idx = np.arange(len(values))
    non_nans, non_nan_idx = values[~mask][::-1], idx[~mask][::-1]
    order = non_nan_idx[non_nans.argsort(kind="quicksort")][::-1]
    return [int(i) for i in np.concatenate([order, np.nonzero(mask)[0]])]


def _refuse_points(exp: Any, strict: bool) -> None:
    """Before simulating: when every point (or, ``strict``, any) cannot run, a short note per
    refused point and one error line (exit 2)."""
    from scaling.app.api import refusals

    reasons = refusals(exp)
    jobs = exp.jobs()
    if not reasons or (len(reasons) < len(jobs) and not strict):
        return
    for i, why in reasons.items():
        j = jobs[i]
        short = short_reason(why.removeprefix(f"{j.system.name}: "))
        click.echo(
            f"refused: {j.system.name} x{j.nodes} nodes ({j.strategy.label}): {short}", err=True
        )
    first = next(iter(reasons.values()))
    which = "every point" if len(reasons) == len(jobs) else "--strict"
    fail(f"{which}: {len(reasons)} of {len(jobs)} point(s) refused, nothing simulated; {first}")


@click.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder (default: results/<experiment name>).",
)
@set_option
@click.option("--no-plot", is_flag=True, help="Skip the PNG plot.")
@click.option(
    "--replicas",
    type=click.IntRange(min=1, max=10_000),
    default=1,
    show_default=True,
    help="Monte-Carlo replicas per point (fresh seeds: jitter, slow ranks, failures); writes "
    "replicas.csv and replica_summary.csv (medians and 95 % intervals).",
)
@jobs_option(
    "With --replicas or --uncertainty: processes to run them on (default: one per CPU; "
    "1 = in process)."
)
@click.option(
    "--check",
    is_flag=True,
    help="Only check CONFIG: validate it, refuse what cannot run, print each point's size "
    "(ranks, simulated micro-batches, network memory, estimated CPU-s and GiB); simulate "
    "nothing, write nothing.",
)
@click.option(
    "--budget",
    metavar="CPU_S[,GiB]",
    help="Most one point may cost, estimated before simulating (default 60,1); more is refused.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse the whole run (exit 2, nothing simulated) if any point cannot run; by default "
    "such points are 'refused' rows with their reason and the others run.",
)
@click.option(
    "--force", is_flag=True, help="Overwrite an --out folder holding another experiment's results."
)
@click.option(
    "--uncertainty",
    type=click.IntRange(min=0, max=4096),
    default=0,
    help="N samples of the systems' assumption/secondary numbers (their low-high ranges) and "
    "run seeds: median and 5-95 % interval per metric, uncertainty_*.csv and a band plot.",
)
@click.option(
    "--seed",
    "sample_seed",
    type=click.IntRange(min=0),
    default=0,
    help="With --uncertainty: the sampling seed.",
)
@progress_option
@format_option
@user_errors
def run(
    config: Path,
    out_dir: Path | None,
    overrides: tuple[str, ...],
    no_plot: bool,
    replicas: int,
    n_jobs: int | None,
    strict: bool,
    force: bool,
    check: bool,
    fmt: str,
    progress: bool | None,
    uncertainty: int = 0,
    sample_seed: int = 0,
    budget: str | None = None,
) -> None:
    """Run every (system, nodes) point of an experiment CONFIG; print and save the table.

    A point that cannot run (out of memory, a device that cannot train) is a 'refused' row with
    its reason and a one-line note; the exit code is 2 only if every point is refused (or any,
    with --strict). CONFIG is a YAML file or the name of a bundled example (scaling run --list).

    \b
    Example: scaling run configs/mlu-vs-gpu.yaml --set nodes=[1,8] --out results/x --format json
    """
    from scaling.app.api import feasibility_errors, run_experiment
    from scaling.io.config import load_experiment
    from scaling.io.files import atomic_write, make_dir, results_lock
    from scaling.io.results import write_outputs
    from scaling.sweep.budget import check_budget, describe, parse_budget

    if n_jobs is not None and replicas == 1 and not uncertainty:
        fail(f"--jobs {n_jobs}: only used with --replicas N (N > 1); a plain run is one process")
    if not uncertainty:
        from scaling.app.uncertainty_cmd import option_given

        if option_given("sample_seed"):
            fail(f"--seed {sample_seed}: only used with --uncertainty N (the sampling seed)")
    loaded = load_experiment(config, list(overrides))
    check_budget(loaded.jobs(), parse_budget(budget), str(config))  # estimated CPU and memory
    if check:
        errs = feasibility_errors(loaded)
        if errs:
            raise InfeasibleJobError("; ".join(errs))
        for job in loaded.jobs():
            click.echo(describe(job))
        click.echo(f"{config}: ok ({len(loaded.jobs())} run(s))")
        return
    name = loaded.config.name
    check_out_dir(out_dir or Path("results") / name, "experiment", name, force)
    _refuse_points(loaded, strict)
    # the output folder before simulating: a bad --out fails now, not after the whole run
    make_dir(out_dir or Path("results") / loaded.config.name)
    click.get_current_context().with_resource(results_lock(out_dir or Path("results") / name))
    res = run_experiment(loaded, progress=want_progress(progress), strict=strict)
    exp = res.experiment
    out = out_dir or Path("results") / exp.config.name
    h = exp.config_hash()
    rows = res.rows
    # the table without pandas when it can be mirrored exactly (io/rows.py), else pandas
    table: Any = rows if rows.exact else res.table
    paths = write_outputs(out, table, exp.resolved(), h)
    p = Printer(fmt)
    p.say(
        f"{exp.config.name}: {exp.config.model_name}, "
        f"{'/'.join(sorted({st.kind.upper() for st in exp.config.all_strategies()}))}, "
        f"micro-batch {exp.config.training.micro_batch_size} x seq {exp.config.training.seq_len}"
        f" per accelerator (weak scaling); config hash {h}"
    )
    if fmt == "table":
        p.table(None, results_cells(table), text=None)
    else:  # csv/json render every column through pandas
        p.table(res.table, results_cells(table))
    records = table.row_dicts() if rows.exact else res.table.to_dict("records")
    refused = [r for r in records if r["status"] == "refused"]
    for r in refused:
        why = short_reason(str(r["error"]).removeprefix(f"{r['system']}: "))
        p.say(f"refused: {r['system']} x{r['nodes']} nodes ({r['strategy']}): {why}")
    if refused:
        p.say(f"({len(refused)} of {len(records)} points refused; reasons in results.csv)")
    for line in _gap_summary([r for r in records if r["status"] == "ok"]):
        p.say(line)
    if exp.config.report is not None:
        from scaling.app import seed

        if exp.config.report == "seed-table1":
            t = seed.table1(res.ok)
            p.say(seed.format_table1(t))
        else:
            t = seed.table2(res.ok)
            p.say(seed.format_table2(t))
        atomic_write(out / f"{exp.config.report}.csv", lambda f: t.to_csv(f, index=False))
    if not no_plot:
        from scaling.io.plots import plot_headline  # matplotlib: only when plotting

        paths["plot"] = plot_headline(
            res.table, out / "scaling_efficiency.png", f"{exp.config.name}: {exp.config.model_name}"
        )
    if replicas > 1 and len(res.refused):
        fail(
            f"--replicas {replicas}: {len(res.refused)} point(s) are refused; narrow the experiment"
        )
    if replicas > 1:
        from scaling.sweep.executors import make_executor
        from scaling.sweep.replicas import format_summary, run_replicas

        with make_executor(jobs=n_jobs) as ex:
            table, summary = run_replicas(exp, replicas, ex, [r.scalars() for r in res.runs])
        p.say(f"{replicas} replicas per point:")
        p.say(format_summary(summary))
        for name, df in (("replicas", table), ("replica_summary", summary)):

            def write(f: Path, df: Any = df) -> None:
                df.to_csv(f, index=False)

            atomic_write(out / f"{name}.csv", write)
            paths[name] = out / f"{name}.csv"
    if uncertainty:
        from scaling.app.uncertainty_cmd import run_uncertainty_cli

        paths |= run_uncertainty_cli(
            exp, res, uncertainty, sample_seed, n_jobs, out, p, no_plot, progress
        )
    p.say("wrote " + ", ".join(str(f) for f in paths.values()))
