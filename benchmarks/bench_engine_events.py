"""Per-event cost of the flow engine (prints figures; asserts nothing).

One simulated step of ``configs/mlu-vs-gpu.yaml`` (GPT-3 1.3B, its default strategy) per system
and node count, in process: CPU seconds of the whole run, the number of flow-engine events
(``FlowNetwork._step``: a flush or a live wake-up; each advances the flows, retires the finished
ones and re-solves) and the CPU microseconds spent per event. The live flow set is 8 to ~15,000
entries at these sizes, so the figure mixes numpy's per-call overhead (small sets) and per-entry
work (large ones). Target (issue 29): ``explain --vs`` <= 10 CPU-s, where these events are ~60 %
of the run. Median of 3 runs after one warm-up.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from timing import ROOT

from scaling.app.api import simulate
from scaling.engine.network import FlowNetwork

CONFIG = str(ROOT / "configs" / "mlu-vs-gpu.yaml")


def _run(system: str, nodes: int, clock: list[int]) -> tuple[float, float, int]:
    """(CPU s of the run, CPU s inside FlowNetwork._step, events) of one simulate()."""
    over: dict[str, Any] = {"nodes": [nodes], "systems": [system], "strategies": None}
    clock[:] = [0, 0]
    c0 = time.process_time()
    simulate(CONFIG, over)
    return time.process_time() - c0, clock[0] / 1e9, clock[1]


def main() -> None:
    step = FlowNetwork._step
    clock = [0, 0]
    tick = time.process_time_ns

    def timed_step(self: FlowNetwork) -> None:
        t0 = tick()
        step(self)
        clock[0] += tick() - t0
        clock[1] += 1

    FlowNetwork._step = timed_step  # type: ignore[method-assign]
    print("flow-engine events, one step of configs/mlu-vs-gpu.yaml (median of 3, CPU)")
    total_ev = total_s = 0.0
    for system in ("dgx-a100", "mlu370-x8"):
        for nodes in (8, 64, 256, 512):
            _run(system, nodes, clock)  # warm-up: memo-free first run, imports
            runs = [_run(system, nodes, clock) for _ in range(3)]
            cpu = statistics.median(r[0] for r in runs)
            eng = statistics.median(r[1] for r in runs)
            events = runs[0][2]
            total_ev += events
            total_s += eng
            print(
                f"{system:10} {nodes:4d} nodes: run {cpu * 1e3:7.1f} ms CPU, "
                f"{events:5d} events, {eng * 1e3:6.1f} ms in events = "
                f"{eng / events * 1e6:5.1f} us/event"
            )
    print(f"all: {total_s / total_ev * 1e6:.1f} us/event over {total_ev:.0f} events")
    FlowNetwork._step = step  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
