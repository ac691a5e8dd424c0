"""Issue order is a property of the rank, under every network mode (issue 27).

Each rank's collective schedule (``rank_schedule``) must list its calls in the order that rank
issued them, whatever the timing: a node that runs ahead in simulated time must not reorder
another node's calls. The recorded HSDP fixture (real PyTorch, every rank recorded) is compared
rank by rank while compute jitter makes the nodes run at different speeds, under both the
``analytic`` and the ``flow`` network.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from scaling.model.analysis.schedule import rank_schedule
from scaling.model.simulation import run_job_detailed
from tests.test_torch_schedules import FIXTURES, _job, _load

NETWORKS = ["analytic", "flow"]


def _order(calls: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(c["op"], c.get("unit"), c["phase"], c["group_size"], c["bytes"]) for c in calls]


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize(
    "fixture",
    ["fsdp1_hybrid_shard_2x2", "fsdp1_hybrid_shard_strided_2x2", "fsdp2_hsdp_strided_2x4"],
)
def test_hsdp_every_rank_keeps_its_own_issue_order(network: str, seed: int, fixture: str) -> None:
    # strided meshes too: shard groups {0, 2} / {0, 2, 4, 6} across two nodes
    doc = _load(FIXTURES / f"{fixture}.json")
    job = _job(doc)
    # every rank simulated, each with its own compute noise: nodes reach a unit at other times
    sim = dataclasses.replace(
        job.sim, network=network, simulate_all_ranks=True, compute_jitter_cv=0.3, seed=seed
    )
    _, timeline = run_job_detailed(dataclasses.replace(job, sim=sim), trace=True)
    for rec in doc["ranks"]:
        for step, calls in enumerate(rec["steps"]):
            want = [(e["op"], e["unit"], e["phase"], e["group_size"], e["bytes"]) for e in calls]
            got = _order(rank_schedule(timeline, step, rec["rank"]))
            assert got == want, f"rank {rec['rank']} step {step} ({network})"
