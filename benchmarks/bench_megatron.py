"""Simulation-speed benchmark of a Megatron TP x PP x DP step (prints figures; asserts nothing).

Target (issue #17): one step of GPT-3 175B at TP 8 x PP 8 x DP 64 (4,096 DGX A100 GPUs, 512
nodes; micro-batch 1, 24 micro-batches per pipeline: global batch 1,536; full recomputation) in
<= 30 s CPU (wall printed next to it) on the flow network. One representative rank per pipeline stage is simulated
(8 processes); its collectives span their whole groups. Median of 3 runs, one measured step, no
warm-up.
"""

from __future__ import annotations

from timing import line, measure

from scaling.app.api import simulate

CFG = {
    "model": "gpt3-175b",
    "systems": ["dgx-a100"],
    "nodes": [512],
    "strategy": {"kind": "megatron", "parallelism": {"tensor": 8, "pipeline": 8}},
    "training": {"micro_batch_size": 1, "grad_accum_steps": 24, "activation_checkpointing": "full"},
    "simulation": {"steps": 1, "warmup_steps": 0},
}


def main() -> None:
    t = measure(lambda: simulate(CFG))
    print(line("GPT-3 175B TP8 x PP8 x DP64 (4,096 GPUs), one step, flow network", t, 30.0))


if __name__ == "__main__":
    main()
