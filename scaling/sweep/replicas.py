"""Monte-Carlo replicas of an experiment's points, run through the sweep executors.

Each point (system, strategy, nodes) runs ``n`` times with the seeds of
:func:`~scaling.model.analysis.replica_stats.replica_seed`; the table of replicas and the summary
per point (median, its 95 % confidence interval, the central 95 % of the replicas) of the
metrics that vary between them come back as DataFrames.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from scaling.io.config import LoadedExperiment
from scaling.io.errors import ConfigError
from scaling.io.results import KEY_COLUMNS
from scaling.model.analysis.replica_stats import replica_seed, summarize
from scaling.sweep.executors import SweepExecutor
from scaling.sweep.runner import OK, execute_run

#: metrics summarised across replicas
REPLICA_METRICS = (
    "step_time_s",
    "tokens_per_s",
    "mfu",
    "goodput",
    "time_to_train_h",
    "effective_time_to_train_h",
)

#: summarised too for the points whose routing is drawn (a MoE model with expert parallelism
#: or a capacity factor): each replica's seed draws its own token-to-expert routing
#: (``model.routing``), so their spread is the interval the routing skew implies
ROUTING_METRICS = ("moe_rank_load", "moe_expert_load", "moe_dropped_share")


def _routed(grp: pd.DataFrame) -> bool:
    """Whether a point's replicas drew a routing (a dense model reports a perfect balance)."""
    return bool(((grp["moe_expert_load"] != 1.0) | (grp["moe_dropped_share"] != 0.0)).any())


def run_replicas(
    exp: LoadedExperiment, n: int, executor: SweepExecutor, done: list[dict[str, Any]] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run ``n`` replicas of every point of ``exp`` on ``executor``; return (one row per
    replica, one row per point and metric). ``done``: replica 0 of each point already run (the
    plain run's scalars, in ``exp.jobs()`` order), not run again."""
    if n < 1:
        raise ConfigError(f"--replicas {n}: expected at least 1")
    jobs = exp.jobs()
    todo: list[tuple[int, int]] = [
        (p, i) for p in range(len(jobs)) for i in range(n) if not (done and i == 0)
    ]
    args = [
        dataclasses.replace(
            jobs[p], sim=dataclasses.replace(jobs[p].sim, seed=replica_seed(jobs[p].sim.seed, i))
        )
        for p, i in todo
    ]
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    if done:
        for p, r in enumerate(done):
            rows[(p, 0)] = {"status": OK, **r}
    for k, ok, value in executor.imap_unordered(execute_run, args):
        if not ok:
            raise RuntimeError(f"replica {todo[k][1]} of point {todo[k][0]}: {value}")
        rows[todo[k]] = value
    table = pd.DataFrame(
        [
            {"replica": i, "seed": replica_seed(jobs[p].sim.seed, i), **rows[(p, i)]}
            for p in range(len(jobs))
            for i in range(n)
        ]
    )
    summary = []
    for key, grp in table.groupby(list(KEY_COLUMNS), sort=False):
        for m in REPLICA_METRICS + (ROUTING_METRICS if _routed(grp) else ()):
            s = summarize(grp[m].to_numpy())
            summary.append(
                {
                    **dict(zip(KEY_COLUMNS, key, strict=True)),
                    "metric": m,
                    "replicas": s.n,
                    "median": s.median,
                    "median_ci95_lo": s.median_lo,
                    "median_ci95_hi": s.median_hi,
                    "p2.5": s.p_lo,
                    "p97.5": s.p_hi,
                }
            )
    return table, pd.DataFrame(summary)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a fixed-width text table."""
    lines = [
        f"{'system':<12} {'strategy':<18} {'nodes':>5} {'metric':<26} {'median':>12} "
        f"{'95% CI of median':>27} {'central 95%':>27}"
    ]
    for d in summary.to_dict("records"):
        lines.append(
            f"{d['system']:<12} {d['strategy']:<18} {d['nodes']:>5} {d['metric']:<26} "
            f"{d['median']:>12.6g} [{d['median_ci95_lo']:>11.6g}, {d['median_ci95_hi']:>11.6g}]"
            f" [{d['p2.5']:>11.6g}, {d['p97.5']:>11.6g}]"
        )
    return "\n".join(lines)
