"""Simulation-speed benchmark of distinct ranks (prints figures and ratios; asserts nothing).

Target (issue #16, in CPU seconds; wall printed next to it): one DDP step of GPT-3 1.3B at 16,384
ranks with compute jitter on in <= 30 s CPU (median of 3), CPU time growing no faster than
linearly from 1,024 to 16,384 ranks. Same step as ``bench_steps.py`` (one measured step, no warm-up, micro-batch 4),
on the flow network and on the analytic one; with jitter every rank is distinct and the ranks
run as one rank ensemble (``scaling.model.strategies.ensemble``). For scale, the same step with
one SimPy process per rank (``simulate_all_ranks``) at 512 and 1,024 ranks.

    python benchmarks/bench_variability.py            # both networks
    python benchmarks/bench_variability.py analytic   # one
"""

from __future__ import annotations

import dataclasses
import sys

from timing import Timing, measure

from scaling.io.config import experiment_from_dict
from scaling.model.simulation import run_job


def timed(
    nodes: int, network: str, cv: float, every: bool = False, repeats: int = 3, warmup: int = 0
) -> Timing:
    job = experiment_from_dict(
        {
            "model": "gpt3-1.3b",
            "systems": ["dgx-a100"],
            "nodes": [nodes],
            "training": {"micro_batch_size": 4},
            "simulation": {
                "steps": 1,
                "warmup_steps": warmup,
                "network": network,
                "compute_jitter_cv": cv,
            },
        }
    ).jobs()[0]
    job = dataclasses.replace(job, sim=dataclasses.replace(job.sim, simulate_all_ranks=every))
    return measure(lambda: run_job(job), repeats)


def main() -> None:
    networks = sys.argv[1:] or ["analytic", "flow"]
    print("GPT-3 1.3B DDP on DGX A100, one step; CPU seconds (wall), median of 3")
    for network in networks:
        print(f"{network} network:")
        print(f"  {'ranks':>6} {'no jitter':>17} {'jitter 5%':>17} {'ratio':>6} {'vs 1,024':>9}")
        base = None
        for nodes in (128, 512, 2048):
            t0, t1 = timed(nodes, network, 0.0), timed(nodes, network, 0.05)
            base = base or t1.cpu_s
            print(
                f"  {nodes * 8:>6} {fmt(t0)} {fmt(t1)} {t1.cpu_s / t0.cpu_s:>6.2f} "
                f"{t1.cpu_s / base:>8.2f}x  (ranks x{nodes // 128}; target <= 30 s CPU at 16,384)"
            )
        # iteration 0 of DDP is one bucket; the steady state (after 2 warm-up steps) has ~200
        print(f"  steady state (2 warm-up steps + 1, 25 MiB buckets), {network}, one repeat:")
        for nodes in (128, 2048):
            t0 = timed(nodes, network, 0.0, repeats=1, warmup=2)
            t1 = timed(nodes, network, 0.05, repeats=1, warmup=2)
            print(
                f"  {nodes * 8:>6} {fmt(t0)} {fmt(t1)} {t1.cpu_s / t0.cpu_s:>6.2f}"
                "  (3 steps simulated)"
            )
    print("one SimPy process per rank (simulate_all_ranks), jitter 5 %, analytic network:")
    for nodes in (64, 128):
        ens = timed(nodes, "analytic", 0.05)
        exp = timed(nodes, "analytic", 0.05, every=True, repeats=1)
        print(
            f"  {nodes * 8:>6} ranks: explicit {fmt(exp)}, ensemble {fmt(ens)} "
            f"(x{exp.cpu_s / ens.cpu_s:.0f} CPU)"
        )


def fmt(t: Timing) -> str:
    """``  1.234 (  2.345)``: CPU seconds, wall in parentheses."""
    return f"{t.cpu_s:>7.3f} ({t.wall_s:>7.3f})"


if __name__ == "__main__":
    main()
