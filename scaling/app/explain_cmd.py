"""``scaling explain``: where each point's step went, and with ``--vs A B`` the Shapley attribution
of the throughput gap between two systems (:mod:`scaling.model.analysis.attribution_plan`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scaling.app.exits import fail, user_errors
from scaling.app.output import (
    Printer,
    config_argument,
    format_option,
    jobs_option,
    progress_bar,
    progress_option,
    set_option,
    want_progress,
)
from scaling.model.errors import InfeasibleJobError


def _explain_vs(
    config: Path,
    overrides: tuple[str, ...],
    vs: tuple[str, str],
    nodes: str | None,
    out: Path | None,
    p: Printer,
    jobs: int | None,
    progress: bool | None,
) -> None:
    """Shapley attribution of the throughput gap between two systems (see model.attribution)."""
    import logging
    import time

    from scaling.app.api_analysis import attribution_frame
    from scaling.io.attribution_plot import plot_attribution
    from scaling.io.config import load_experiment, run_size_error
    from scaling.io.topology import load_system
    from scaling.model.analysis.attribution import COMPONENTS
    from scaling.model.analysis.attribution_plan import (
        HybridRunError,
        attribute_many,
        hybrid_plan,
    )
    from scaling.sweep.executors import make_executor

    a_name, b_name = vs
    exp = load_experiment(config, [*overrides, f"systems=[{a_name}]"])
    base = exp.jobs()[0]
    a, b = load_system(a_name).spec, load_system(b_name).spec
    try:
        counts = [int(x) for x in nodes.split(",")] if nodes else sorted(set(exp.config.nodes))
    except ValueError:
        fail(f"--nodes {nodes!r}: expected a comma list of node counts, e.g. 1,8,64,256")
    if any(c < 1 for c in counts):
        fail(f"--nodes {nodes!r}: node counts must be >= 1")
    for c in counts:  # before any network is built (the config's own nodes are checked)
        too_big = run_size_error(c, base.system.devices_per_node, exp.config.simulation.max_ranks)
        if too_big:
            fail(f"--nodes {nodes}: got {c} nodes: {too_big}")
    n_sims = len(hybrid_plan(base, a, b, counts)[0])
    t0 = time.perf_counter()
    with (
        make_executor(jobs=jobs).start() as ex,  # workers forked before the bar's thread
        progress_bar(
            total=n_sims, desc=f"{b_name} vs {a_name}", unit="sim", enabled=want_progress(progress)
        ) as bar,
    ):
        logging.getLogger(__name__).info(
            "explain --vs: %d simulations for %d node count(s) x %d hybrids (the others differ "
            "only in a memory capacity that fits the same micro-batches) on %s",
            n_sims,
            len(counts),
            2 ** len(COMPONENTS),
            ex.describe(),
        )
        try:
            results = attribute_many(base, a, b, counts, ex, bar)
        except HybridRunError as e:
            fail(f"--vs: {e}")
    logging.getLogger(__name__).info("explain --vs: %.1f s", time.perf_counter() - t0)
    p.say(
        f"{b_name} vs {a_name}: {base.shape.name}, {base.strategy.label}; per-device "
        "throughput (tokens/s) and each component's Shapley part of the gap (share)"
    )
    head = f"{'component':<22}" + "".join(f"{str(r.nodes) + ' nodes':>17}" for r in results)
    lines = [head, "-" * len(head)]
    lines.append(f"{a_name:<22}" + "".join(f"{r.value_a:>17,.0f}" for r in results))
    lines.append(f"{b_name:<22}" + "".join(f"{r.value_b:>17,.0f}" for r in results))
    lines.append(f"{'gap':<22}" + "".join(f"{r.gap:>17,.0f}" for r in results))
    for comp in COMPONENTS:
        cells = "".join(f"{r.parts[comp]:>10,.0f} {r.shares().get(comp, 0):>6.1%}" for r in results)
        lines.append(f"{comp:<22}{cells}")
    net = ("scale-up link", "scale-out network", "collective library")
    inter = [sum(r.shares().get(c, 0) for c in net) for r in results]
    lines.append(f"{'interconnect+library':<22}" + "".join(f"{x:>17.1%}" for x in inter))
    frame = attribution_frame(results, a_name, b_name)
    p.table(frame, text="\n".join(lines))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        png = plot_attribution(results, out / f"attribution_{a_name}_vs_{b_name}.png")
        p.say(f"wrote {png}")


@click.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@set_option
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=None,
    help="Most exposed collectives to list [default: 5]; with --links: busiest links [10].",
)
@click.option(
    "--links",
    is_flag=True,
    help="Instead: the busiest links of the last (steady-state) step: class, where, bytes, busy "
    "time and utilisation = bytes / (capacity x step time) (flow network only).",
)
@click.option(
    "--vs", nargs=2, default=None, metavar="A B", help="Attribute the gap between systems A and B."
)
@click.option("--nodes", default=None, help="With --vs: node counts, e.g. 1,8,64,256.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="With --vs: folder for the bar chart.",
)
@jobs_option(
    "With --vs: processes for its 64 simulations per node count (default: one per CPU; "
    "1 = in process)."
)
@progress_option
@format_option
@user_errors
def explain(
    config: Path,
    overrides: tuple[str, ...],
    top: int | None,
    links: bool,
    vs: tuple[str, str] | None,
    nodes: str | None,
    out_dir: Path | None,
    n_jobs: int | None,
    progress: bool | None,
    fmt: str,
) -> None:
    """Where each point's step went (compute, exposed communication by collective and tier).

    With --vs A B: why B trails A — the per-device throughput gap split into peak compute,
    memory bandwidth, memory capacity, scale-up link, scale-out network and collective library by
    Shapley values over swapping those components between the systems.

    With --links: per point, the links that carried the last step's traffic, busiest first:
    link class (scale-up switch port, mesh or bridge link, PCIe, NIC tx/rx, leaf-spine),
    where it is, bytes, busy time and utilisation over the step.

    \b
    Example: scaling explain configs/mlu-vs-gpu.yaml --set nodes=[64] --vs dgx-a100 mlu370-x8
    \b
    Example: scaling explain fsdp-mlu-16 --links --top 8
    """
    p = Printer(fmt)
    if links and vs:
        fail("--links and --vs: give one of them (--links explains each point's own step)")
    if links:
        _explain_links(config, overrides, 10 if top is None else top, p, progress)
        return
    top = 5 if top is None else top
    if vs:
        _explain_vs(config, overrides, vs, nodes, out_dir, p, n_jobs, progress)
        return
    for flag, given in (
        ("--out", out_dir is not None),
        ("--nodes", nodes is not None),
        ("--jobs", n_jobs is not None),
    ):
        if given:
            fail(f"{flag}: only used with --vs A B (the attribution between two systems)")
    from scaling.app.api_analysis import explain_rows
    from scaling.io.config import load_experiment

    exp = load_experiment(config, list(overrides))
    rows, lines = explain_rows(exp, top, want_progress(progress))
    import pandas as pd

    p.table(pd.DataFrame(rows), text="\n".join(lines))


def _explain_links(
    config: Path, overrides: tuple[str, ...], top: int, p: Printer, progress: bool | None
) -> None:
    """``explain --links``: the ``top`` busiest links of each point's last step."""
    import pandas as pd

    from scaling.app.api import feasibility_errors
    from scaling.io.config import load_experiment
    from scaling.io.results import format_table
    from scaling.model.simulation import run_job_detailed

    exp = load_experiment(config, list(overrides))
    if exp.config.simulation.network != "flow":
        fail(
            f"--links: {config} prices communication with the {exp.config.simulation.network} "
            "network, which has no links; use --set simulation.network=flow"
        )
    errs = feasibility_errors(exp)
    if errs:
        raise InfeasibleJobError("; ".join(errs))
    lines: list[str] = []
    rows: list[dict[str, Any]] = []
    for job in progress_bar(exp.jobs(), desc="explain --links", enabled=want_progress(progress)):
        res, tl = run_job_detailed(job, links=True)
        step = len(res.steps) - 1
        t0, t1 = tl.step_window(step)
        assert tl.links is not None  # the flow network, checked above
        used = tl.links.usage(t0, t1)
        point = {"system": res.system, "nodes": res.nodes, "devices": res.devices}
        point |= {"model": res.model, "strategy": res.strategy, "step": step}
        point |= {"step_time_s": t1 - t0}
        lines.append(
            f"{res.system} x{res.nodes} nodes ({res.devices} accel), {res.model}, {res.strategy}: "
            f"step {step}, {(t1 - t0) * 1e3:.2f} ms; {len(used)} links carried traffic, "
            f"the {min(top, len(used))} busiest:"
        )
        cells = []
        for u in used[:top]:
            rows.append(
                point
                | {
                    "link_class": u.cls,
                    "where": u.place,
                    "bytes": u.bytes,
                    "busy_s": u.busy_s,
                    "capacity_GBps": u.capacity_Bps / 1e9,
                    "busy_fraction": u.busy_fraction,
                    "utilisation": u.utilisation,
                }
            )
            cells.append(
                [
                    u.cls,
                    u.place,
                    f"{u.bytes / 1e6:,.1f}",
                    f"{u.capacity_Bps / 1e9:.1f}",
                    f"{u.busy_s * 1e3:.2f}",
                    f"{u.busy_fraction:.1%}",
                    f"{u.utilisation:.1%}",
                ]
            )
        header = ["link class", "where", "MB", "GB/s", "busy ms", "busy", "utilisation"]
        table = format_table(header, cells, align="llrrrrr")
        lines += ["  " + ln for ln in table.splitlines()]
    p.table(pd.DataFrame(rows), text="\n".join(lines))
