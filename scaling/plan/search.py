"""Search a plan space: refuse, prune on the analytic network, simulate the best on the flow
network, rank.

Per system and node count: enumerate the space (:mod:`scaling.plan.space`); load each candidate
as an experiment (the config layer refuses what it cannot run, naming the rule) and check its
memory (:func:`scaling.model.simulation.check_feasible`); simulate every feasible candidate with
``simulation.network: analytic`` — the same tuner and algorithms as the flow network, without
contention, so an upper bound on throughput — and simulate candidates on the flow network in
that order until none left could beat the best found (branch and bound); rank them.
Every refusal is counted by its reason. Evaluations run on the sweep executors and are appended
to ``plan_evaluations.jsonl`` in the output folder as they finish, so an interrupted plan resumes
without redoing them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling.io.config import LoadedExperiment, experiment_from_dict
from scaling.io.errors import ConfigError
from scaling.io.journal import Journal
from scaling.model.errors import InfeasibleJobError
from scaling.model.hardware.moe import MoEShape
from scaling.model.simulation import check_feasible, run_job
from scaling.plan.space import (
    Candidate,
    PlanSpace,
    configured_candidate,
    enumerate_candidates,
)
from scaling.sweep.executors import SerialExecutor, SweepExecutor

#: metrics kept for every evaluated candidate
METRICS = (
    "step_time_s",
    "tokens_per_s_per_device",
    "mfu",
    "peak_mem_GiB",
    "exposed_comm_share",
    "compute_time_s",
)
#: the ranking metric: at a fixed global batch, higher tokens/s per device is a faster step
RANK_BY = "tokens_per_s_per_device"
EVALUATIONS = "plan_evaluations.jsonl"


def base_config(exp: LoadedExperiment) -> dict[str, Any]:
    """The experiment as a mapping whose strategy, batch split, systems and nodes a candidate
    replaces."""
    data = exp.config.model_dump(mode="json")
    data.pop("strategies", None)
    return data


def candidate_config(base: dict[str, Any], cand: Candidate, network: str) -> dict[str, Any]:
    """The experiment one candidate runs as: one system, one node count, its strategy and batch
    split, on the ``network`` mode. ``scaling run`` takes it back as a file."""
    data = copy.deepcopy(base)
    vals = cand.values()
    data["name"] = f"{base.get('name', 'plan')}-{cand.system}-n{cand.nodes}"
    data["systems"] = [cand.system]
    data["nodes"] = [cand.nodes]
    data["strategy"] = vals["strategy"]
    data["training"] = {**data.get("training", {}), **vals["training"]}
    data["simulation"] = {**data.get("simulation", {}), "network": network}
    return data


def _key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:20]


def _refusal(exc: Exception) -> tuple[str, str]:
    """(category, one-line reason) of a refused candidate."""
    msg = " ".join(str(exc).split())
    if isinstance(exc, InfeasibleJobError):
        cat = "does not fit in memory" if "needs" in msg and "GiB" in msg else "cannot run"
        return cat, msg
    # a config rule: '<where>: <field>: got …; expected …' -> the field names the rule
    parts = [p.strip() for p in msg.split(": ")]
    field_name = next((p for p in parts[1:] if p and " " not in p), "config")
    return f"config rule ({field_name})", msg


def check(config: dict[str, Any]) -> tuple[str, str] | None:
    """None if the candidate's experiment loads and fits in memory, else (category, reason)."""
    try:
        job = experiment_from_dict(config).jobs()[0]
        check_feasible(job)
    except (ConfigError, InfeasibleJobError, ValueError) as e:
        return _refusal(e)
    return None


def evaluate(config: dict[str, Any]) -> dict[str, Any]:
    """Simulate one candidate's experiment (module-level: it travels to executor workers)."""
    job = experiment_from_dict(config).jobs()[0]
    res = run_job(job)
    sc = res.scalars()
    return {m: float(sc[m]) for m in METRICS}


@dataclass
class Evaluation:
    """One candidate's outcome on one network mode."""

    candidate: Candidate
    network: str
    status: str  # ok | refused | failed
    category: str = ""
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """A flat table row."""
        c = self.candidate
        return {
            "system": c.system,
            "nodes": c.nodes,
            "kind": c.kind,
            "label": c.label,
            "network": self.network,
            "status": self.status,
            "category": self.category,
            "reason": self.reason,
            **{m: self.metrics.get(m, float("nan")) for m in METRICS},
            "fields": json.dumps(c.values(), sort_keys=True),
        }


@dataclass
class PointPlan:
    """The plan of one system at one node count."""

    system: str
    nodes: int
    global_batch: int
    candidates: int
    refused: Counter[str]
    analytic: list[Evaluation]
    flow: list[Evaluation]

    @property
    def best(self) -> Evaluation | None:
        """The fastest candidate on the flow network (None if none could run)."""
        return self.flow[0] if self.flow else None


@dataclass
class PlanResult:
    """Every system × node count's plan, plus the experiment they came from."""

    base: dict[str, Any]
    points: list[PointPlan]

    def rows(self) -> list[dict[str, Any]]:
        """Every evaluation (analytic and flow) as table rows."""
        out = []
        for p in self.points:
            for e in [*p.analytic, *p.flow]:
                out.append({**e.row(), "global_batch": p.global_batch})
        return out

    def best_rows(self, top: int) -> list[dict[str, Any]]:
        """The ``top`` fastest flow-network candidates per system and node count, ranked."""
        out = []
        for p in self.points:
            for rank, e in enumerate(p.flow[:top], start=1):
                out.append({"rank": rank, **e.row(), "global_batch": p.global_batch})
        return out


def _simulate(
    configs: Sequence[dict[str, Any]],
    executor: SweepExecutor,
    store: Journal,
    tick: Callable[[int], None],
) -> list[dict[str, Any]]:
    """Simulate every config (those in the store are reused); ``{"ok": bool, ...}`` each."""
    keys = [_key(c) for c in configs]
    todo = [i for i, k in enumerate(keys) if k not in store.done]
    tick(len(configs) - len(todo))
    for j, ok, value in executor.imap_unordered(evaluate, [configs[i] for i in todo]):
        i = todo[j]
        rec = {"ok": True, "metrics": value} if ok else {"ok": False, "error": str(value)}
        store.put(keys[i], rec)
        tick(1)
    return [store.done[k] for k in keys]


def plan(
    exp: LoadedExperiment,
    space: PlanSpace,
    *,
    global_batch: int | None = None,
    keep: int = 6,
    executor: SweepExecutor | None = None,
    out_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> PlanResult:
    """Each system's fastest feasible configurations at each of the experiment's node counts.

    ``global_batch`` (sequences per step) is the same for every candidate at a node count; None
    takes the experiment's own at each node count (weak scaling, as its first strategy runs
    it). At least ``keep`` candidates per point go from the analytic prune to the flow network,
    and more while one could still beat the best (:func:`_bound`), so the best is the one an
    exhaustive flow search finds; ``keep`` ≥ the number of feasible candidates is exhaustive.
    Raises :class:`ConfigError` naming the constraint when a point has no feasible candidate.
    """
    if keep < 1:
        raise ConfigError(f"keep: got {keep}; expected at least 1")
    ex = executor or SerialExecutor()
    tick = progress or (lambda n: None)
    store = Journal(out_dir / EVALUATIONS if out_dir else None)
    base = base_config(exp)
    reference: dict[tuple[str, int], int] = {}  # the experiment's own global batch per point
    jobs = exp.jobs()
    for job in jobs:  # systems x strategies x nodes: the first strategy's job per point
        reference.setdefault((job.system.name, job.nodes), job.global_batch)
    shape = jobs[0].shape  # one model per experiment
    experts = shape.moe.experts if isinstance(shape, MoEShape) else 0
    if not experts and space.expert_parallel not in (None, (1,)):
        raise ConfigError(
            f"expert_parallel: got {list(space.expert_parallel or ())} with the dense model "
            f"{shape.name!r}; expected 1 (expert parallelism needs a MoE model)"
        )
    points: list[PointPlan] = []
    for name, loaded in exp.systems.items():
        dpn = loaded.spec.devices_per_node
        for nodes in sorted(set(exp.config.nodes)):
            gb = global_batch
            if gb is None:
                gb = reference[(loaded.spec.name, nodes)]
            cands, refused = enumerate_candidates(name, dpn, nodes, gb, space, experts)
            feasible = _feasible(base, cands, refused)
            if not feasible:
                raise ConfigError(_empty_message(name, nodes, gb, len(cands), refused, space))
            for strat in exp.config.all_strategies():  # the experiment's own, to compare
                own = configured_candidate(
                    name, dpn, nodes, gb, strat.model_dump(mode="json"), base["training"]
                )
                if isinstance(own, Candidate) and own not in feasible:
                    feasible += _feasible(base, [own], refused)
            analytic = _rank(
                feasible,
                "analytic",
                _simulate(
                    [candidate_config(base, c, "analytic") for c in feasible], ex, store, tick
                ),
            )
            flow = _bound(base, analytic, keep, ex, store, tick)
            points.append(PointPlan(name, nodes, gb, len(cands), refused, analytic, flow))
    return PlanResult(base, points)


def _feasible(
    base: dict[str, Any], cands: list[Candidate], refused: Counter[str]
) -> list[Candidate]:
    """The candidates that load and fit, counting the others by reason. A candidate with full
    activation checkpointing is dominated (counted, not simulated) when the same configuration
    without it fits: recomputation only adds forward compute, the communication is the same."""
    fits: dict[Candidate, bool] = {}
    out = []
    for c in cands:
        why = check(candidate_config(base, c, "analytic"))
        fits[c] = why is None
        if why is not None:
            refused[why[0]] += 1
    for c in cands:
        if not fits[c]:
            continue
        lighter = c.with_checkpointing("none")
        if lighter != c and fits.get(lighter, False) and not c.configured:
            refused["dominated (fits without activation checkpointing)"] += 1
            continue
        out.append(c)
    return out


#: how much faster than its analytic price a candidate may run on the flow network: the analytic
#: mode prices the same algorithms uncontended (agreeing with the flow network within 1 % on an
#: uncontended call), and contention only slows a step, so the analytic price is an upper bound
#: on throughput up to this margin
BOUND_MARGIN = 0.02


def _bound(
    base: dict[str, Any],
    analytic: list[Evaluation],
    keep: int,
    ex: SweepExecutor,
    store: Journal,
    tick: Callable[[int], None],
) -> list[Evaluation]:
    """Branch and bound on the flow network: simulate candidates in analytic order (at least
    ``keep``) until the next one's analytic throughput, raised by :data:`BOUND_MARGIN`, cannot
    beat the best flow result; the experiment's own strategy is always simulated, to compare."""
    ok = [e.candidate for e in analytic if e.status == "ok"]
    price = {e.candidate: e.metrics.get(RANK_BY, 0.0) for e in analytic}
    chunk = max(ex.workers, 1)
    done: list[Candidate] = []
    recs: list[dict[str, Any]] = []
    best = float("-inf")
    i = 0
    while i < len(ok):
        if len(done) >= keep and price[ok[i]] * (1 + BOUND_MARGIN) < best:
            break
        batch = ok[i : i + chunk]
        got = _simulate([candidate_config(base, c, "flow") for c in batch], ex, store, tick)
        for r in got:
            if r["ok"]:
                best = max(best, r["metrics"][RANK_BY])
        done += batch
        recs += got
        i += len(batch)
    own = [c for c in ok if c.configured and c not in done]
    if own:
        recs += _simulate([candidate_config(base, c, "flow") for c in own], ex, store, tick)
        done += own
    return _rank(done, "flow", recs)


def _rank(cands: list[Candidate], network: str, recs: list[dict[str, Any]]) -> list[Evaluation]:
    evals = []
    for c, rec in zip(cands, recs, strict=True):
        if rec["ok"]:
            evals.append(Evaluation(c, network, "ok", metrics=rec["metrics"]))
        else:
            evals.append(Evaluation(c, network, "failed", "simulation failed", rec["error"]))
    # fastest first; ties broken by the label so the order is deterministic
    evals.sort(key=lambda e: (e.status != "ok", -e.metrics.get(RANK_BY, 0.0), e.candidate.label))
    return evals


def _empty_message(
    system: str, nodes: int, gb: int, n: int, refused: Counter[str], space: PlanSpace
) -> str:
    if n == 0:
        return (
            f"plan: {system} at {nodes} nodes: no configuration of the space keeps the global "
            f"batch of {gb} sequences (micro-batches {list(space.micro_batches)}, "
            f"strategies {list(space.strategies)}); widen --micro-batches or set --global-batch"
        )
    worst, count = refused.most_common(1)[0]
    detail = ", ".join(f"{k}: {v}" for k, v in refused.most_common())
    return (
        f"plan: {system} at {nodes} nodes: all {n} candidates refused ({detail}); the constraint "
        f"that emptied it: {worst} ({count}) — widen the space (e.g. --strategies, --tp, --pp, "
        "--micro-batches, --checkpointing)"
    )


def best_vs_best(result: PlanResult) -> list[dict[str, Any]]:
    """Per system and node count: its best tokens/s per device, its best-vs-best scaling
    efficiency (against its own best at the fewest nodes) and, against the first system, the
    throughput ratio of the two bests."""
    best = {(p.system, p.nodes): p.best for p in result.points if p.best is not None}
    systems = list(dict.fromkeys(p.system for p in result.points))
    rows = []
    for s in systems:
        mine = sorted(n for (sys_, n) in best if sys_ == s)
        if not mine:
            continue
        first = best[(s, mine[0])].metrics[RANK_BY]
        for n in mine:
            e = best[(s, n)]
            ref = best.get((systems[0], n))
            rows.append(
                {
                    "system": s,
                    "nodes": n,
                    "best": e.candidate.label,
                    RANK_BY: e.metrics[RANK_BY],
                    "best_scaling_efficiency": e.metrics[RANK_BY] / first,
                    f"ratio_to_{systems[0]}": (
                        e.metrics[RANK_BY] / ref.metrics[RANK_BY] if ref else float("nan")
                    ),
                }
            )
    return rows
