"""Simulation-speed benchmark of training steps (prints figures and ratios; asserts nothing).

Targets (issue #5): one DDP step of GPT-3 1.3B at 512 nodes (4,096 accelerators) in <= 5 s of
wall time, FSDP in <= 10 s, with contention modelled (flow network); wall time growing no faster
than linearly in accelerators from 128 to 4,096. Medians of 3 runs of one measured step (no
warm-up), identical ranks simulated once.
"""

from __future__ import annotations

import statistics
import time

from scaling.app.api import simulate


def wall(kind: str, nodes: int, system: str = "dgx-a100") -> float:
    cfg = {
        "model": "gpt3-1.3b",
        "systems": [system],
        "nodes": [nodes],
        "strategy": {"kind": kind},
        "training": {"micro_batch_size": 4},
        "simulation": {"steps": 1, "warmup_steps": 0},
    }
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        simulate(cfg)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    print("GPT-3 1.3B, one step, flow network; wall seconds (median of 3)")
    for system in ("dgx-a100", "mlu370-x8"):
        for kind in ("ddp", "fsdp"):
            base = None
            for nodes in (16, 64, 256, 512):
                w = wall(kind, nodes, system)
                base = base or (w, nodes)
                growth = (w / base[0]) / (nodes / base[1])
                print(
                    f"{system:10} {kind:5} {nodes:4d} nodes ({nodes * 8:5d} accel): {w:6.3f} s  "
                    f"wall growth / accelerator growth vs 16 nodes: {growth:.2f}"
                )


if __name__ == "__main__":
    main()
