"""Per-GPU throughput of a FULL_SHARD 13B decoder from 8 to 512 DGX A100 GPUs, with and without
a persistent device speed spread (docs/guides/fsdp-at-scale.md). Prints the table the guide
shows and the CPU seconds it took.

Run: ``python tools/fsdp_at_scale.py``
"""

from __future__ import annotations

import statistics
import time

from scaling.io.config import experiment_from_dict
from scaling.model.job import Job
from scaling.model.simulation import run_job
from scaling.model.variability import expected_max_normal_factor

SEEDS = 5


def job(nodes: int, cv: float, seed: int) -> Job:
    """The guide's job: gpt3-13b, FULL_SHARD, micro-batch 8 x 512, full checkpointing."""
    cfg: dict[str, object] = {
        "model": "gpt3-13b",
        "systems": ["dgx-a100"],
        "nodes": [nodes],
        "strategy": {"kind": "fsdp", "sharding": "full_shard", "reduce_dtype": "bf16"},
        "training": {
            "seq_len": 512,
            "micro_batch_size": 8,
            "activation_checkpointing": "full",
            "flash_attention": True,
        },
        "simulation": {"steps": 1, "warmup_steps": 1, "seed": seed},
    }
    if cv:
        cfg["variability"] = {"device_speed_cv": cv}
    return experiment_from_dict(cfg).jobs()[0]


def main() -> None:
    """Print tokens/s per GPU at 8 and 512 GPUs for each spread."""
    t0 = time.process_time()
    for cv in (0.0, 0.005, 0.012, 0.03):
        seeds = range(SEEDS if cv else 1)
        tps = {
            n: statistics.mean(run_job(job(n, cv, s)).tokens_per_s / (8 * n) for s in seeds)
            for n in (1, 64)
        }
        closed = expected_max_normal_factor(8, cv) / expected_max_normal_factor(512, cv) - 1
        print(
            f"cv {cv:.3f}: tok/s/GPU at 8 {tps[1]:8.1f}, at 512 {tps[64]:8.1f}, "
            f"change {100 * (tps[64] / tps[1] - 1):+5.2f} %, closed form {100 * closed:+5.2f} %"
        )
    print(f"CPU {time.process_time() - t0:.1f} s")


if __name__ == "__main__":
    main()
