"""The point-cost estimate (``scaling.sweep.budget``) against measured CPU time and events.

Run with ``python benchmarks/bench_budget.py``; prints, per point, the estimated and measured
SimPy events, CPU seconds (``time.process_time``, median of 3) beside wall seconds, and the
ratio estimate / measured (>= 1: the estimate is an upper bound). Asserts nothing about time.
The rates in ``scaling/sweep/budget.py`` were read off this table.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import simpy

try:
    from scaling.io.config import experiment_from_dict
except ModuleNotFoundError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scaling.io.config import experiment_from_dict
from scaling.model.simulation import run_job
from scaling.sweep.budget import estimate

MEGATRON = {
    "kind": "megatron",
    "parallelism": {"tensor": 8, "pipeline": 8, "data": "auto"},
    "distributed_optimizer": True,
}
POINTS: list[tuple[str, dict[str, Any]]] = [
    ("ddp 1.3b 8 nodes flow, 22 steps", {"strategy": {"kind": "ddp"}, "nodes": [8],
                                         "simulation": {"steps": 20}}),
    ("fsdp 1.3b 8 nodes flow, 22 steps", {"strategy": {"kind": "fsdp"}, "nodes": [8],
                                          "simulation": {"steps": 20}}),
    ("ddp 1.3b 256 nodes flow", {"strategy": {"kind": "ddp"}, "nodes": [256]}),
    ("ddp 1.3b 1024 nodes flow", {"strategy": {"kind": "ddp"}, "nodes": [1024]}),
    ("ddp 1.3b 64 nodes analytic, accum 16", {"strategy": {"kind": "ddp"}, "nodes": [64],
                                               "training": {"grad_accum_steps": 16},
                                               "simulation": {"network": "analytic"}}),
    ("megatron 175b 64 nodes flow, 128 mb", {"model": "gpt3-175b", "strategy": MEGATRON,
                                             "nodes": [64],
                                             "training": {"grad_accum_steps": 128,
                                                          "activation_checkpointing": "full"},
                                             "simulation": {"steps": 1, "warmup_steps": 0}}),
]  # fmt: skip


def measure(cfg: dict[str, Any]) -> tuple[int, float, float]:
    """Events, median CPU s and median wall s of simulating the point ``cfg``."""
    job = experiment_from_dict(cfg).jobs()[0]
    events = 0
    schedule = simpy.Environment.schedule

    def counting(self: simpy.Environment, *a: Any, **k: Any) -> Any:
        nonlocal events
        events += 1
        return schedule(self, *a, **k)

    cpu, wall = [], []
    simpy.Environment.schedule = counting  # type: ignore[method-assign]
    try:
        for _ in range(3):
            events = 0
            t0, w0 = time.process_time(), time.perf_counter()
            run_job(job)
            cpu.append(time.process_time() - t0)
            wall.append(time.perf_counter() - w0)
    finally:
        simpy.Environment.schedule = schedule  # type: ignore[method-assign]
    return events, statistics.median(cpu), statistics.median(wall)


def main() -> None:
    base = {
        "model": "gpt3-1.3b",
        "systems": ["dgx-a100"],
        "training": {"seq_len": 2048, "micro_batch_size": 1},
    }
    print(f"{'point':40s} {'events':>10s} {'est':>10s} {'CPU s':>8s} {'wall s':>8s} "
          f"{'est CPU s':>9s} {'est/CPU':>7s}")  # fmt: skip
    for label, extra in POINTS:
        cfg = {**base, **extra}
        cfg["training"] = {**base["training"], **extra.get("training", {})}
        job = experiment_from_dict(cfg).jobs()[0]
        est = estimate(job)
        events, cpu, wall = measure(cfg)
        print(
            f"{label:40s} {events:10,d} {est.events:10,.0f} {cpu:8.2f} {wall:8.2f} "
            f"{est.cpu_s:9.2f} {est.cpu_s / cpu:7.1f}"
        )


if __name__ == "__main__":
    main()
