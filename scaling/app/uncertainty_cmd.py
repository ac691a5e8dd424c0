"""``scaling run --uncertainty N`` (the part after the plain run) and ``scaling sensitivity``:
intervals over the catalog's assumptions and which assumptions decide a metric
(:mod:`scaling.sweep.uncertainty`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from scaling.app.exits import fail, user_errors
from scaling.app.output import (
    Printer,
    config_argument,
    format_option,
    jobs_option,
    progress_bar,
    progress_option,
    want_progress,
)
from scaling.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")


def option_given(param: str) -> bool:
    """Whether the current command's option ``param`` was given (not its default)."""
    from click.core import ParameterSource

    src = click.get_current_context().get_parameter_source(param)
    return src not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    from scaling.io.files import atomic_write

    atomic_write(path, lambda f: df.to_csv(f, index=False))
    return path


def write_uncertainty_tables(u: Any, out: Path) -> dict[str, Path]:
    """``uncertainty_{samples,runs,summary,branches}.csv`` of the
    :class:`~scaling.sweep.uncertainty.UncertaintyResult` ``u`` in folder ``out``."""
    return {
        "uncertainty_samples": _write_csv(out / "uncertainty_samples.csv", u.samples),
        "uncertainty_runs": _write_csv(out / "uncertainty_runs.csv", u.runs),
        "uncertainty_summary": _write_csv(out / "uncertainty_summary.csv", u.shaped),
        "uncertainty_branches": _write_csv(out / "uncertainty_branches.csv", u.branches),
    }


def run_uncertainty_cli(
    exp: Any,
    res: Any,
    n: int,
    seed: int,
    n_jobs: int | None,
    out: Path,
    printer: Printer,
    no_plot: bool,
    progress: bool | None = None,
) -> dict[str, Path]:
    """After a plain ``scaling run``: ``n`` samples of the uncertain inputs (seed ``seed``), the
    interval table printed (a point a structural alternative splits: per branch, the deciding
    assumption named), ``uncertainty_{samples,runs,summary,branches}.csv`` and (unless
    ``no_plot``) ``uncertainty_scaling_efficiency.png`` written to ``out``, and the main plot
    ``scaling_efficiency.png`` drawn again with a band per branch. ``res``: the plain run's
    :class:`~scaling.app.api.ExperimentResult` (its scalars are the nominal values). Every
    finished sample run is appended to ``out/uncertainty_journal.jsonl`` as it finishes: the
    same command after a kill reuses them (the caller holds ``out``'s lock)."""
    from scaling.io.plots import plot_headline
    from scaling.io.uncertainty_plot import plot_bands
    from scaling.sweep.branches import split_lines
    from scaling.sweep.executors import make_executor
    from scaling.sweep.uncertainty import (
        JOURNAL_FILE,
        format_summary,
        run_uncertainty,
        uncertain_inputs,
    )

    if len(res.refused):
        fail(f"--uncertainty {n}: {len(res.refused)} point(s) are refused; narrow the experiment")
    nominal = [{"status": "ok", **r.scalars()} for r in res.runs]
    inputs = uncertain_inputs(exp)
    per_sys = {s: sum(i.system == s for i in inputs) for s in dict.fromkeys(exp.config.systems)}
    printer.say(
        f"uncertainty: {n} samples (seed {seed}) of "
        + ", ".join(f"{k} inputs of {s}" for s, k in per_sys.items())
        + "; each sample also draws its run seed (ECMP hash salt)"
    )
    t0 = time.perf_counter()
    total = n * len(nominal) + len(nominal)
    with (
        make_executor(jobs=n_jobs).start() as ex,  # workers forked before the bar's thread
        progress_bar(total=total, desc="sampling", enabled=want_progress(progress)) as bar,
    ):
        u = run_uncertainty(
            exp,
            n,
            seed,
            ex,
            nominal,
            res.ok,
            on_done=lambda: bar.update(1),
            journal=out / JOURNAL_FILE,
            note=printer.say,
        )
    took = time.perf_counter() - t0
    short = sum(p is not None for p in u.plans)
    printer.say(
        f"{n} samples x {len(nominal)} points in {took:.0f} s; {short} of {len(u.plans)} points "
        "noise-free and simulated with the fewest steps that reproduce the configured steady "
        f"state (checked on sample 0: largest step-time deviation {u.check_max_rel:.1e})"
    )
    printer.say(format_summary(u.shaped))
    lines = split_lines(u.branches)
    for line in lines:
        printer.say(line)
    if not lines:
        printer.say(
            "no structural alternative splits scaling efficiency at the largest node count "
            "(the samples' groups overlap): one interval per point"
        )
    paths = write_uncertainty_tables(u, out)
    if not no_plot:
        title = f"{exp.config.name}: {n} samples of the catalog's assumptions (seed {seed})"
        per_node = {j.system.name: j.system.devices_per_node for j in exp.jobs()}
        paths["uncertainty_plot"] = plot_bands(  # on the main plot's x axis: accelerators
            u.branches, out / "uncertainty_scaling_efficiency.png", title, per_node=per_node
        )
        paths["plot"] = plot_headline(
            res.table,
            out / "scaling_efficiency.png",
            f"{exp.config.name}: {exp.config.model_name}; bands: {n} samples, 5-95 % per branch",
            u.branches,
        )
    return paths


def _parse_at(at: str) -> int:
    key, _, val = at.partition("=")
    if key.strip() != "nodes" or not val.strip().isdigit():
        fail(f"--at {at!r}: expected nodes=N, e.g. --at nodes=512")
    return int(val)


@click.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@click.option(
    "--at",
    "at",
    default=None,
    help="The point to explain: nodes=N (default: the experiment's largest node count).",
)
@click.option(
    "--metric",
    default="scaling_efficiency",
    show_default=True,
    help="Metric to explain: scaling_efficiency, tokens_per_s_per_device, step_time_s, mfu, …",
)
@click.option(
    "--samples",
    type=click.IntRange(min=0, max=4096),
    default=0,
    show_default=True,
    help="Also Sobol first-order/total indices from N x (inputs + 2) runs per system and "
    "strategy (0 = one-at-a-time only).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --samples: seed of the Sobol design.",
)
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a config field, e.g. --set nodes=[1,64].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder (default: results/<experiment name>/sensitivity).",
)
@jobs_option("Processes to run on (default: one per CPU; 1 = in process).")
@click.option(
    "--only",
    multiple=True,
    metavar="TEXT",
    help="Only the inputs whose name contains TEXT (repeatable), e.g. --only nics --only cncl.",
)
@click.option("--no-plot", is_flag=True, help="Skip the tornado chart.")
@progress_option
@format_option
@user_errors
def sensitivity(
    config: Path,
    at: str | None,
    metric: str,
    samples: int,
    seed: int,
    top: int,
    overrides: tuple[str, ...],
    out_dir: Path | None,
    n_jobs: int | None,
    only: tuple[str, ...],
    no_plot: bool,
    progress: bool | None,
    fmt: str,
) -> None:
    """Which uncertain inputs decide a metric: one-at-a-time elasticities and a tornado chart.

    Each assumption and secondary number of the experiment's systems (topologies/*.yaml and
    their libraries) is set to its low and its high (a structural assumption: to each
    alternative), the others nominal; the metric at --at nodes (scaling efficiency: against the
    fewest nodes) per system and strategy, ranked by swing (metric at high - at low), with
    the elasticity (relative metric change per relative input change). --samples N adds
    variance-based Sobol indices. Writes sensitivity.csv (and sobol.csv, tornado.png).
    With --format csv/json/markdown stdout carries the one-at-a-time table (every input, every
    column of sensitivity.csv); the Sobol lines and notes go to stderr.

    \b
    Example: scaling sensitivity configs/mlu-vs-gpu.yaml --at nodes=512 --set nodes=[1,512]
    """
    from scaling.io.config import load_experiment
    from scaling.io.files import make_dir
    from scaling.io.uncertainty_plot import plot_tornado
    from scaling.sweep.executors import CountingExecutor, make_executor
    from scaling.sweep.sensitivity import NoUncertainInput, check_metric, run_sensitivity

    if not samples and option_given("seed"):
        fail(f"--seed {seed}: only used with --samples N (the seed of the Sobol design)")
    check_metric(metric)
    exp = load_experiment(config, list(overrides))
    nodes = _parse_at(at) if at else max(exp.config.nodes)
    out = out_dir or Path("results") / exp.config.name / "sensitivity"
    make_dir(out)
    p = Printer(fmt)
    oat_csv, sobol_csv = out / "sensitivity.csv", out / "sobol.csv"
    sobol_csv.unlink(missing_ok=True)  # one from an earlier run would pass for this run's
    with (
        make_executor(jobs=n_jobs).start() as pool,  # workers forked before the bar's thread
        progress_bar(total=0, desc="sensitivity", enabled=want_progress(progress)) as bar,
        CountingExecutor(pool, bar_progress(bar)) as ex,
    ):
        # partial results: each table is on disk as soon as its loop ends (a long Sobol
        # design stopped midway keeps the one-at-a-time table and the finished indices)
        def write(name: str, frame: pd.DataFrame) -> None:
            _write_csv(oat_csv if name == "sensitivity" else sobol_csv, frame)

        try:
            oat, sobol = run_sensitivity(
                exp, nodes, metric, ex, samples, seed, list(only) or None, write
            )
        except NoUncertainInput:
            fail(f"{config}: no uncertain input (every range is a point)")
    groups = [] if sobol is None else sobol.groupby(["system", "strategy"], sort=False)
    tables = [g for _, g in groups]
    # printed once the bar is gone (it would tear the lines)
    p.say(f"{exp.config.name}: {metric} at {nodes} nodes, one input at a time")
    p.table(oat, text=format_oat(oat, top))
    paths = [oat_csv]
    for idx in tables:
        system, strat = idx["system"].iloc[0], idx["strategy"].iloc[0]
        p.say(
            f"Sobol indices, {system} {strat} ({samples} x {len(idx) + 2} runs; "
            f"sum of first-order {idx['S1'].sum():.2f}):"
        )
        for r in idx.head(top).itertuples():
            p.say(f"  {r.input:<56} S1 {r.S1:6.3f}  ST {r.ST:6.3f}")
    if tables:
        paths.append(sobol_csv)
    if not no_plot:
        paths.append(
            plot_tornado(oat, out / "tornado.png", f"{exp.config.name}: {metric} at {nodes} nodes")
        )
    p.say("wrote " + ", ".join(str(x) for x in paths))


def bar_progress(bar: Any) -> Any:
    """A :class:`~scaling.sweep.executors.CountingExecutor` callback moving ``bar``: the runs
    done out of those submitted so far (the total grows as each loop submits its batch)."""

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update


def format_oat(oat: pd.DataFrame, top: int = 10) -> str:
    """The ``top`` inputs per system and strategy by swing, as text."""
    lines = []
    for (system, strat), g in oat.groupby(["system", "strategy"], sort=False):
        m0 = g["at_nominal"].iloc[0]
        lines.append(f"{system} {strat} (nominal {m0:.4g}):")
        lines.append(
            f"  {'#':>2} {'input':<52} {'low':>9} {'high':>9} {'at low':>8} {'at high':>8} "
            f"{'swing':>8} {'elast.':>7}"
        )
        for k, r in enumerate(g.head(top).itertuples(), 1):
            lo = r.low_value if isinstance(r.low_value, str) else f"{r.low_value:.4g}"
            hi = r.high_value if isinstance(r.high_value, str) else f"{r.high_value:.4g}"
            el = "" if pd.isna(r.elasticity) else f"{r.elasticity:+.3f}"
            name = r.input.split(": ", 1)[-1]
            lines.append(
                f"  {k:>2} {name:<52} {lo:>9} {hi:>9} {r.at_low:>8.4g} {r.at_high:>8.4g} "
                f"{r.swing:>+8.4f} {el:>7}"
            )
    return "\n".join(lines)
