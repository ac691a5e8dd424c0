"""Intervals for a plan: the winning configurations re-run over the catalog's assumption ranges.

For each system, the same ``n`` samples of its uncertain inputs (``scaling.sweep.uncertainty``:
scrambled Sobol or Latin hypercube, seeded; each sample with its own run seed) are applied to
every one of its top configurations at every node count. Per sample, the best of those is the
system's best; across samples that gives the best's median and 5–95 % interval, and how often the
nominal winner is still the winner. Best-vs-best efficiency and throughput ratios are taken per
sample (the same sample's inputs at every node count of a system; systems sampled independently).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scaling.io.config import experiment_from_dict
from scaling.model.job import Job
from scaling.plan.search import RANK_BY, PlanResult, candidate_config
from scaling.sweep.executors import SweepExecutor
from scaling.sweep.runner import execute_run
from scaling.sweep.uncertainty import (
    P_HI,
    P_LO,
    run_seeds,
    sample_jobs,
    uncertain_inputs,
    unit_design,
)


@dataclass
class PointInterval:
    """One system at one node count over the samples."""

    system: str
    nodes: int
    labels: list[str]  # the top configurations, nominal rank order
    values: np.ndarray  # samples x configurations: tokens/s per device (NaN = refused)

    @property
    def best(self) -> np.ndarray:
        """Per sample, the best configuration's tokens/s per device (NaN if none ran)."""
        ok = np.isfinite(self.values).any(axis=1)
        out = np.full(len(self.values), np.nan)
        out[ok] = np.nanmax(self.values[ok], axis=1)
        return out

    @property
    def winner_share(self) -> float:
        """Share of the samples (that ran) in which the nominal winner is still the best."""
        ok = np.isfinite(self.values).any(axis=1)
        if not ok.any():
            return float("nan")
        filled = np.where(np.isfinite(self.values[ok]), self.values[ok], -np.inf)
        return float(np.mean(np.argmax(filled, axis=1) == 0))


def _interval(x: np.ndarray) -> tuple[float, float, float]:
    x = x[np.isfinite(x)]
    if not len(x):
        return float("nan"), float("nan"), float("nan")
    return float(np.median(x)), float(np.percentile(x, P_LO)), float(np.percentile(x, P_HI))


def plan_intervals(
    result: PlanResult, top: int, n: int, seed: int, executor: SweepExecutor
) -> list[PointInterval]:
    """Re-run each system's ``top`` configurations per node count over ``n`` samples."""
    out: list[PointInterval] = []
    systems = list(dict.fromkeys(p.system for p in result.points))
    for s_index, system in enumerate(systems):
        # one design per system (independent across systems: its own seed stream)
        sys_seed = int(np.random.SeedSequence(seed, spawn_key=(s_index,)).generate_state(1)[0])
        jobs: list[Job] = []
        shape: list[tuple[int, int, list[str]]] = []
        for p in (q for q in result.points if q.system == system):
            winners = [e for e in p.flow if e.status == "ok"][:top]
            first = len(jobs)
            for e in winners:
                exp = experiment_from_dict(candidate_config(result.base, e.candidate, "flow"))
                inputs = uncertain_inputs(exp)
                design = unit_design(n, len(inputs), sys_seed)
                sampled, _ = sample_jobs(exp, inputs, design, run_seeds(n, sys_seed))
                jobs += sampled
            shape.append((p.nodes, first, [e.candidate.label for e in winners]))
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        for i, ok, value in executor.imap_unordered(execute_run, jobs):
            results[i] = value if ok else {"status": "failed"}
        for nodes, first, labels in shape:
            vals = np.full((n, len(labels)), np.nan)
            for k in range(len(labels)):
                for i in range(n):
                    r = results[first + k * n + i]
                    if r is not None and r.get("status") == "ok":
                        vals[i, k] = float(r[RANK_BY])
            out.append(PointInterval(system, nodes, labels, vals))
    return out


def interval_rows(points: list[PointInterval]) -> list[dict[str, Any]]:
    """Per system and node count: the best's median and interval, the nominal winner's share of
    the samples, best-vs-best scaling efficiency and the throughput ratio to the first system,
    each as median (p5, p95) over the samples."""
    by = {(p.system, p.nodes): p for p in points}
    systems = list(dict.fromkeys(p.system for p in points))
    rows = []
    for p in points:
        fewest = min(q.nodes for q in points if q.system == p.system)
        eff = p.best / by[(p.system, fewest)].best
        ref = by.get((systems[0], p.nodes))
        ratio = p.best / ref.best if ref is not None else np.full(len(p.best), np.nan)
        b, e, r = _interval(p.best), _interval(eff), _interval(ratio)
        rows.append(
            {
                "system": p.system,
                "nodes": p.nodes,
                "winner": p.labels[0] if p.labels else "",
                "winner_share": p.winner_share,
                "samples_ok": int(np.isfinite(p.best).sum()),
                "best_median": b[0],
                "best_p5": b[1],
                "best_p95": b[2],
                "efficiency_median": e[0],
                "efficiency_p5": e[1],
                "efficiency_p95": e[2],
                f"ratio_to_{systems[0]}_median": r[0],
                f"ratio_to_{systems[0]}_p5": r[1],
                f"ratio_to_{systems[0]}_p95": r[2],
            }
        )
    return rows
