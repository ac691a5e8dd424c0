"""Public API, analysis part: the step breakdown (``explain``), Monte-Carlo replicas,
uncertainty samples, the planner (``run_plan``) and the catalog's systems — each what a CLI command does, as a
function for notebooks (``from scaling import explain, run_replicas, ...``).

Every function takes an experiment as :func:`scaling.run_experiment` does: a bundled example
name, a YAML path, a mapping or a loaded experiment, with ``--set``-style ``overrides`` and
in-memory ``systems`` (topology documents by name, validated as ``topologies/*.yaml``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from scaling.app.api import Overrides, override_strings
from scaling.io.config import LoadedExperiment, as_experiment

if TYPE_CHECKING:
    from scaling.model.hardware.system import SystemSpec
    from scaling.plan import PlanResult, PlanSpace
    from scaling.sweep.uncertainty import UncertaintyResult

#: in-memory systems: topology documents (as ``topologies/*.yaml``) by the name experiments use
Systems = Mapping[str, Mapping[str, Any]] | None
#: an experiment as the API takes it
Config = LoadedExperiment | dict[str, Any] | str | Path


def load_experiment(
    config: Config, overrides: Overrides = None, systems: Systems = None
) -> LoadedExperiment:
    """The experiment ``config`` (example name, YAML path, mapping or loaded) with ``overrides``
    and in-memory ``systems`` applied and validated; ``.jobs()`` gives one job per point (each
    runs with :func:`scaling.simulate`). Raises :class:`~scaling.ConfigError` (one line)."""
    return as_experiment(config, override_strings(overrides), systems)


def explain_rows(
    exp: LoadedExperiment, top: int = 5, progress: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows and text lines of ``scaling explain``: for each point, its last step's parts
    (``kind`` ``step``: compute, exposed communication by collective and tier, bubble, idle;
    they add up to ``step_time_s``), compute by kernel kind (``kernel``), exposed seconds per
    parallel dimension where the strategy declares them (``parallel``: Megatron's TP, PP, DP),
    a MoE model's drawn routing (``routing``: the ``moe_*`` result columns in ``value``, a
    ratio or share) and the ``top`` most exposed collectives (``exposed collective``); times in
    seconds."""
    from scaling.app.api import feasibility_errors
    from scaling.app.output import progress_bar
    from scaling.model.analysis.explain import explain_step
    from scaling.model.hardware.breakdown import step_compute_breakdown
    from scaling.model.job import InfeasibleJobError
    from scaling.model.simulation import run_job_detailed

    errs = feasibility_errors(exp)
    if errs:
        raise InfeasibleJobError("; ".join(errs))
    lines: list[str] = []
    rows: list[dict[str, Any]] = []
    for job in progress_bar(exp.jobs(), desc="explain", enabled=progress):
        res, tl = run_job_detailed(job, trace=True)
        b = explain_step(tl, len(res.steps) - 1)
        point = {"system": res.system, "nodes": res.nodes, "devices": res.devices}
        point |= {"model": res.model, "strategy": res.strategy, "step_time_s": b.step_s}

        def row(kind: str, label: str, t: float, point: dict[str, Any] = point) -> None:
            rows.append(point | {"kind": kind, "label": label, "time_s": t})

        lines.append(
            f"{res.system} x{res.nodes} nodes ({res.devices} accel), {res.model}, {res.strategy}: "
            f"step {b.step_s * 1e3:.2f} ms"
        )
        for label, t in b.parts():
            lines.append(f"  {label:<40} {t * 1e3:10.2f} ms  {t / b.step_s:6.1%}")
            row("step", label, t)
        total = sum(t for _, t in b.parts())
        lines.append(f"  {'total':<40} {total * 1e3:10.2f} ms")
        lines.append("  compute by kernel kind (forward + backward, device time):")
        for lab, t in step_compute_breakdown(job):
            lines.append(f"    {lab:<38} {t * 1e3:10.2f} ms")
            row("kernel", lab, t)
        if b.exposed_by_parallel:
            lines.append("  exposed communication by parallel dimension:")
            for dim, t in b.exposed_by_parallel.items():
                lines.append(f"    {dim:<38} {t * 1e3:10.2f} ms")
                row("parallel", dim, t)
        if res.moe_expert_load != 1.0 or res.moe_dropped_share != 0.0:  # a drawn routing
            lines.append(
                f"  MoE routing (this seed; `--replicas N` for its interval): busiest EP rank "
                f"{res.moe_rank_load:.3f}x the mean (worst layer {res.moe_rank_load_max:.3f}x), "
                f"busiest expert {res.moe_expert_load:.3f}x, dropped {res.moe_dropped_share:.2%}"
            )
            sc = res.scalars()
            for name in ("moe_rank_load", "moe_rank_load_max", "moe_expert_load",
                         "moe_dropped_share"):  # fmt: skip
                rows.append(point | {"kind": "routing", "label": name, "value": sc[name]})
        if top and b.exposed_by_collective:
            lines.append("  most exposed collectives:")
            for lab, t in sorted(b.exposed_by_collective.items(), key=lambda kv: -kv[1])[:top]:
                lines.append(f"    {lab:<46} {t * 1e3:8.2f} ms")
                row("exposed collective", lab, t)
    return rows, lines


def explain(
    config: Config,
    overrides: Overrides = None,
    systems: Systems = None,
    top: int = 5,
    progress: bool = False,
) -> pd.DataFrame:
    """Where each point's step went, as ``scaling explain`` prints it: one row per (point,
    ``kind``, ``label``) with ``time_s`` in seconds of the point's last simulated step (rank 0).

    ``kind`` is ``step`` (parts that add up to ``step_time_s``: compute forward/backward/
    optimizer, ``exposed <op> (<tier> bound)``, ``pipeline bubble``, ``waiting for other
    ranks``, ``idle``), ``kernel`` (compute by kernel kind), ``parallel`` (exposed seconds per
    parallel dimension: Megatron's ``TP``/``PP``/``DP``), ``routing`` (a MoE model's routing
    draw: the ``moe_*`` result columns, in ``value`` instead of ``time_s``) or ``exposed
    collective`` (the ``top`` most exposed). Identity columns: system, nodes, devices, model, strategy, step_time_s (s).
    """
    rows, _ = explain_rows(load_experiment(config, overrides, systems), top, progress)
    return pd.DataFrame(rows)


def _executor(jobs: int | None) -> Any:
    from scaling.sweep.executors import make_executor

    return make_executor(jobs=jobs)


def run_replicas(
    config: Config,
    replicas: int,
    overrides: Overrides = None,
    systems: Systems = None,
    jobs: int | None = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``replicas`` Monte-Carlo replicas of every point (fresh seeds for every random stream:
    jitter, slow ranks, failures), as ``scaling run --replicas N``. Returns (one row per
    replica and point, one row per point and metric with ``median``, the median's 95 %
    confidence interval ``median_ci95_lo``/``_hi`` and the central 95 % ``p2.5``/``p97.5``).
    ``jobs``: worker processes (1 = in this process; None = one per CPU)."""
    from scaling.sweep.replicas import run_replicas as _run

    exp = load_experiment(config, overrides, systems)
    with _executor(jobs) as ex:
        return _run(exp, replicas, ex)


def run_uncertainty(
    config: Config,
    samples: int,
    overrides: Overrides = None,
    systems: Systems = None,
    seed: int = 0,
    jobs: int | None = 1,
    progress: bool = False,
    out: str | Path | None = None,
) -> UncertaintyResult:
    """``samples`` samples of every ranged number and structural alternative of the
    experiment's systems (as ``scaling run --uncertainty N``): ``.summary`` (per point and
    metric: nominal, median, p5, p95), ``.branches`` (per branch of the structural
    alternative that splits a point) and ``.runs`` (one row per sample and point).
    Deterministic for a given ``seed``; ``jobs`` as :func:`run_replicas`. The nominal run
    of every point goes first (the tables' ``nominal`` column), as the CLI does; a point that
    is refused there is a :class:`~scaling.ConfigError`.

    ``out``: a results folder (held with a lock while this runs) where every finished sample
    run is appended to ``uncertainty_journal.jsonl`` as it finishes and the
    ``uncertainty_{samples,runs,summary,branches}.csv`` tables are written at the end, as
    ``scaling run --uncertainty`` does; the same call after an interruption reuses the
    journalled runs (notes on stderr say so) and gives the same tables."""
    import sys

    from scaling.app.api import run_experiment
    from scaling.app.output import progress_bar
    from scaling.app.uncertainty_cmd import write_uncertainty_tables
    from scaling.io.errors import ConfigError
    from scaling.io.files import results_lock
    from scaling.sweep.uncertainty import JOURNAL_FILE
    from scaling.sweep.uncertainty import run_uncertainty as _run

    exp = load_experiment(config, overrides, systems)
    res = run_experiment(exp, progress=progress)
    if len(res.refused):
        why = res.refused["error"].iloc[0]
        raise ConfigError(
            f"run_uncertainty: {len(res.refused)} point(s) are refused ({why}); narrow the "
            "experiment"
        )
    nominal = [{"status": "ok", **r.scalars()} for r in res.runs]
    folder = None if out is None else Path(out)

    def note(msg: str) -> None:
        print(msg, file=sys.stderr)

    with contextlib.ExitStack() as stack:
        if folder is not None:
            stack.enter_context(results_lock(folder))
        ex = stack.enter_context(_executor(jobs).start())  # forked before the bar's thread
        bar = stack.enter_context(progress_bar(desc="samples", enabled=progress))
        u = _run(
            exp,
            samples,
            seed,
            ex,
            nominal,
            res.ok,
            on_done=lambda: bar.update(1),
            journal=None if folder is None else folder / JOURNAL_FILE,
            note=note,
        )
        if folder is not None:
            write_uncertainty_tables(u, folder)
    return u


def format_uncertainty(summary: pd.DataFrame, metrics: Iterable[str] | None = None) -> str:
    """An uncertainty summary (``.summary`` or ``.shaped`` of :func:`run_uncertainty`) as the
    fixed-width text ``scaling run --uncertainty`` prints: nominal, median and [p5, p95] per
    point, one line per branch where a structural alternative splits it."""
    from scaling.sweep.uncertainty import format_summary

    return format_summary(summary, list(metrics) if metrics is not None else None)


def run_plan(
    config: Config,
    overrides: Overrides = None,
    space: PlanSpace | None = None,
    systems: Systems = None,
    global_batch: int | None = None,
    keep: int = 6,
    jobs: int | None = 1,
    progress: bool = False,
) -> PlanResult:
    """Each system's fastest feasible configurations at each node count (``scaling plan``;
    not named ``plan``: that is the :mod:`scaling.plan` package):
    enumerates ``space`` (:class:`~scaling.PlanSpace`; default every strategy), refuses what
    does not fit, prunes on the analytic network and simulates at least ``keep`` per point on
    the flow network. ``global_batch``: sequences per step (None: the experiment's own).
    ``.best_rows(top)`` and ``.rows()`` give the tables."""
    from scaling.app.output import progress_bar
    from scaling.plan import PlanSpace
    from scaling.plan import plan as _plan

    exp = load_experiment(config, overrides, systems)
    with (
        _executor(jobs).start() as ex,  # workers forked before the bar's thread
        progress_bar(desc="planning", unit="sim", enabled=progress) as bar,
    ):
        return _plan(
            exp,
            space or PlanSpace(),
            global_batch=global_batch,
            keep=keep,
            executor=ex,
            progress=bar.update,
        )


def system_spec(name: str, alternative: str | None = None) -> SystemSpec:
    """Catalog system ``name``'s model parameters (SI units: bytes, seconds, bytes/s, FLOP/s),
    with one of its structural ``alternatives`` applied when named (an option of the topology's
    or its collective library's ``alternatives``, e.g. ``cncl-1.x-ring-only``). A
    :class:`~dataclasses.dataclass`: ``dataclasses.replace`` gives a variant to put in a job."""
    from scaling.io.errors import ConfigError
    from scaling.io.topology import load_system
    from scaling.sweep.uncertainty import perturbed_system

    ls = load_system(name)
    if alternative is None:
        return ls.spec
    for doc, model in (("topology", ls.schema), (ls.library.name, ls.library)):
        if any(a.name == alternative for a in model.alternatives or ()):
            spec: SystemSpec = perturbed_system(ls, {(doc, "alternatives"): alternative})
            return spec
    known = [a.name for m in (ls.schema, ls.library) for a in m.alternatives or ()]
    raise ConfigError(
        f"system {name!r}: alternative {alternative!r} unknown; expected one of "
        f"{', '.join(known) or '(none)'}"
    )


def run_collective(
    system: str | SystemSpec,
    nodes: int,
    op: str = "all_reduce",
    sizes: str | Iterable[int] = "1M:1G",
    algorithm: str | None = None,
    protocol: str | None = None,
    per_node: int | None = None,
    network: str = "flow",
    max_ranks: int | None = None,
) -> pd.DataFrame:
    """What ``scaling collective`` prints, as a table: one collective ``op`` (``all_reduce``,
    ``all_gather``, ``reduce_scatter``, ``broadcast``, ``all_to_all``) of each size, alone on
    ``nodes`` nodes of ``system`` (a catalog name, or a :class:`SystemSpec` such as a
    ``dataclasses.replace`` variant of :func:`system_spec`), as nccl-tests runs it. ``sizes``:
    bytes per rank, a list or nccl-tests' ``"MIN:MAX"`` range (factor 2; ``K``/``M``/``G``
    suffixes). ``algorithm``/``protocol``: force them (default: the library's tuner picks);
    ``network="analytic"``: the tuner's uncontended prediction instead of the flow network;
    a group above ``max_ranks`` (default: ``simulation.max_ranks``'s) is refused, as the CLI's
    ``--max-ranks``. Columns: size_bytes, count, type, redop, root, ranks, time_us, algbw_GBps, busbw_GBps,
    algorithm, protocol."""
    from scaling.app.collective import collective_table, parse_size, size_range
    from scaling.io.errors import ConfigError
    from scaling.model.comm.ops import CollectiveOp

    try:
        coll_op = CollectiveOp(op)
    except ValueError:
        raise ConfigError(
            f"op={op!r}: expected one of {', '.join(o.value for o in CollectiveOp)}"
        ) from None
    if network not in ("flow", "analytic"):
        raise ConfigError(f"network={network!r}: expected 'flow' or 'analytic'")
    from scaling.io.config import DEFAULT_MAX_RANKS, run_size_error

    spec = system_spec(system) if isinstance(system, str) else system
    too_big = run_size_error(
        nodes, per_node or spec.devices_per_node, max_ranks or DEFAULT_MAX_RANKS, "max_ranks="
    )
    if too_big:
        raise ConfigError(f"nodes={nodes}: got {too_big}")
    if isinstance(sizes, str):
        size_list = size_range(sizes)
    else:  # each checked as the CLI checks one size (1 B to 1 TiB)
        size_list = [parse_size(str(int(s)), "sizes") for s in sizes]
    return collective_table(
        spec, nodes, coll_op, size_list, algorithm, protocol, per_node, network=network
    )


def run_sensitivity(
    config: Config,
    nodes: int | None = None,
    metric: str = "scaling_efficiency",
    samples: int = 0,
    seed: int = 0,
    overrides: Overrides = None,
    systems: Systems = None,
    only: Iterable[str] | None = None,
    jobs: int | None = 1,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Which uncertain inputs decide ``metric`` at ``nodes`` (default: the experiment's largest
    node count), as ``scaling sensitivity``: (the one-at-a-time table of ``sensitivity.csv``:
    each input at its low and high, the others nominal, ranked by swing per system and strategy;
    with ``samples`` > 0 the Sobol first-order ``S1`` and total ``ST`` indices of ``sobol.csv``
    from ``samples`` x (inputs + 2) runs per system and strategy, else None). ``only``: inputs
    whose name contains one of these texts; ``jobs`` as :func:`run_replicas`; ``progress``: a
    bar counting the runs. Raises :class:`~scaling.ConfigError` when no input is uncertain."""
    from scaling.app.output import progress_bar
    from scaling.app.uncertainty_cmd import bar_progress
    from scaling.sweep.executors import CountingExecutor
    from scaling.sweep.sensitivity import check_metric
    from scaling.sweep.sensitivity import run_sensitivity as _run

    check_metric(metric)
    exp = load_experiment(config, overrides, systems)
    at = max(exp.config.nodes) if nodes is None else nodes
    with (
        _executor(jobs).start() as pool,  # workers forked before the bar's thread
        progress_bar(total=0, desc="sensitivity", enabled=progress) as bar,
        CountingExecutor(pool, bar_progress(bar)) as ex,
    ):
        return _run(exp, at, metric, ex, samples, seed, list(only) if only else None)


def attribution_frame(results: Iterable[Any], a: str, b: str) -> pd.DataFrame:
    """The table of ``scaling explain --vs A B --format csv``: per node count and component,
    both systems' tokens/s per device, the gap, the component's Shapley part of it (tokens/s
    per device) and its share of the gap."""
    from scaling.model.analysis.attribution import COMPONENTS

    return pd.DataFrame(
        [
            {
                "nodes": r.nodes,
                "system_a": a,
                "system_b": b,
                "tokens_per_s_per_device_a": r.value_a,
                "tokens_per_s_per_device_b": r.value_b,
                "gap_tokens_per_s_per_device": r.gap,
                "component": comp,
                "part_tokens_per_s_per_device": r.parts[comp],
                "share": r.shares().get(comp, 0.0),
            }
            for r in results
            for comp in COMPONENTS
        ]
    )


def attribute_gap(
    config: Config,
    a: str,
    b: str,
    nodes: Iterable[int] | None = None,
    overrides: Overrides = None,
    jobs: int | None = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Why system ``b`` trails ``a`` (``scaling explain --vs A B``): the per-device throughput
    gap at each of ``nodes`` (default: the experiment's) split by Shapley values over swapping
    peak compute, memory bandwidth, memory capacity, scale-up link, scale-out network and
    collective library between the systems (:func:`attribution_frame`'s table). The
    experiment's first point (model, strategy, training) is the job; ``jobs`` as
    :func:`run_replicas`; ``progress``: a bar counting the simulations. Raises
    :class:`~scaling.ConfigError` for an unknown system or a node count over the run limits."""
    from scaling.app.output import progress_bar
    from scaling.io.config import run_size_error
    from scaling.io.errors import ConfigError
    from scaling.io.topology import load_system
    from scaling.model.analysis.attribution_plan import (
        HybridRunError,
        attribute_many,
        hybrid_plan,
    )

    exp = load_experiment(config, [*override_strings(overrides), f"systems=[{a}]"])
    base = exp.jobs()[0]
    sa, sb = load_system(a).spec, load_system(b).spec
    counts = sorted(set(exp.config.nodes)) if nodes is None else [int(c) for c in nodes]
    for c in counts:
        too_big = run_size_error(c, base.system.devices_per_node, exp.config.simulation.max_ranks)
        if c < 1 or too_big:
            raise ConfigError(f"attribute_gap: nodes {c}: {too_big or 'expected >= 1'}")
    n_sims = len(hybrid_plan(base, sa, sb, counts)[0])
    with (
        _executor(jobs).start() as ex,  # workers forked before the bar's thread
        progress_bar(total=n_sims, desc=f"{b} vs {a}", unit="sim", enabled=progress) as bar,
    ):
        try:
            results = attribute_many(base, sa, sb, counts, ex, bar)
        except HybridRunError as e:
            raise ConfigError(f"attribute_gap: {e}") from None
    return attribution_frame(results, a, b)
