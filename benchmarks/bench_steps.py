"""Simulation-speed benchmark of training steps (prints figures and ratios; asserts nothing).

Targets (issue #5, in CPU seconds; wall printed next to it): one DDP step of GPT-3 1.3B at 512
nodes (4,096 accelerators) in <= 5 s CPU, FSDP in <= 10 s CPU, with contention modelled (flow
network); CPU time growing no faster than linearly in accelerators from 128 to 4,096. Medians of 3
runs of one measured step (no warm-up), identical ranks simulated once.
"""

from __future__ import annotations

from timing import Timing, line, measure

from scaling.app.api import simulate

TARGET_CPU_S = {"ddp": 5.0, "fsdp": 10.0}  # at 512 nodes


def timed(kind: str, nodes: int, system: str = "dgx-a100") -> Timing:
    cfg = {
        "model": "gpt3-1.3b",
        "systems": [system],
        "nodes": [nodes],
        "strategy": {"kind": kind},
        "training": {"micro_batch_size": 4},
        "simulation": {"steps": 1, "warmup_steps": 0},
    }
    return measure(lambda: simulate(cfg))


def main() -> None:
    print("GPT-3 1.3B, one step, flow network")
    for system in ("dgx-a100", "mlu370-x8"):
        for kind in ("ddp", "fsdp"):
            base = None
            for nodes in (16, 64, 256, 512):
                t = timed(kind, nodes, system)
                base = base or (t.cpu_s, nodes)
                growth = (t.cpu_s / base[0]) / (nodes / base[1])
                target = TARGET_CPU_S[kind] if nodes == 512 else None
                label = f"{system:10} {kind:5} {nodes:4d} nodes ({nodes * 8:5d} accel)"
                print(f"{line(label, t, target)}; CPU growth / accel growth vs 16: {growth:.2f}")


if __name__ == "__main__":
    main()
