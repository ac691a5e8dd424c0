"""``scaling schedule --step all`` / ``--compare`` simulate one process for a job of identical
ranks (issue 27's benchmark: GPT-3 175B FSDP on 512 GPUs in ~1 s CPU instead of ~30 s). The
schedule is a rank's program, so every iteration's calls of any rank must be what simulating
every rank gives (benchmarks/bench_commands.py shows the speed)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from scaling.app.schedule_compare import simulate_steps
from scaling.io.config import experiment_from_dict
from scaling.model.job import Job
from scaling.model.simulation import one_process_stands_for_all


def _job(strategy: dict[str, Any], network: str, all_ranks: bool) -> Job:
    cfg = {
        "model": "gpt3-125m",
        "systems": ["dgx-a100"],
        "nodes": [2],
        "strategy": strategy,
        "training": {"seq_len": 512},
        "simulation": {"network": network},
    }
    job = experiment_from_dict(cfg).jobs()[0]
    return dataclasses.replace(job, sim=dataclasses.replace(job.sim, simulate_all_ranks=all_ranks))


@pytest.mark.parametrize(
    ("strategy", "network"),
    [
        ({"kind": "ddp"}, "flow"),
        ({"kind": "fsdp", "sharding": "full_shard"}, "flow"),
        ({"kind": "fsdp", "sharding": "hybrid_shard"}, "analytic"),
    ],
)
@pytest.mark.parametrize("rank", [0, 11])
def test_one_process_gives_every_ranks_schedule(
    strategy: dict[str, Any], network: str, rank: int
) -> None:
    one = _job(strategy, network, all_ranks=False)
    assert one_process_stands_for_all(one)
    every = _job(strategy, network, all_ranks=True)
    got = simulate_steps(one, 2, rank)
    want = simulate_steps(every, 2, rank)
    assert got == want
    assert sum(len(v) for v in got.values()) > 0
    # and the rank's own groups: rank 11 is on node 1
    if rank:
        assert all(rank in c["group"] for calls in got.values() for c in calls)


def test_a_job_whose_ranks_differ_is_still_simulated_rank_by_rank() -> None:
    job = _job({"kind": "ddp"}, "analytic", all_ranks=False)
    noisy = dataclasses.replace(job, sim=dataclasses.replace(job.sim, compute_jitter_cv=0.05))
    assert not one_process_stands_for_all(noisy)
