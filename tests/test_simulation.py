"""End-to-end DDP simulation: properties, determinism, limits and the headline comparison."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scaling.app.api import run_experiment, simulate
from scaling.io.config import experiment_from_dict
from scaling.model.comm.collectives import CollectiveCost
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import ComputeModel, micro_batch_compute
from scaling.model.hardware.workload import get_preset
from scaling.model.job import InfeasibleJobError
from scaling.model.simulation import run_job
from scaling.model.strategies.ddp import DDPSpec, ddp_buckets, param_tensors_with_stage
from scaling.units import MiB

FP32 = 4.0  # AMP: fp32 gradients, so DDP buckets hold 4-byte elements


@pytest.mark.parametrize(
    "system",
    [
        "dgx-a100",
        "mlu370-x8",
    ],
)
def test_efficiency_at_most_one_and_non_increasing(small_exp, system: str) -> None:
    df = run_experiment({**small_exp, "systems": [system]}).table
    for _system, g in df.groupby("system"):
        eff = g.sort_values("nodes")["scaling_efficiency"].to_numpy()
        assert eff[0] == 1.0
        assert np.all(eff <= 1.0 + 1e-12)
        assert np.all(np.diff(eff) <= 1e-12), eff


def test_two_runs_are_identical(small_exp) -> None:
    a = run_experiment(small_exp).table
    b = run_experiment(small_exp).table
    assert a.equals(b)


def test_seeded_noise_is_reproducible_and_seed_dependent() -> None:
    cfg = {
        "model": "gpt3-125m",
        "systems": ["dgx-a100"],
        "nodes": [2],
        "simulation": {"steps": 2, "compute_jitter_cv": 0.05, "seed": 7},
    }
    r1, r2 = simulate(cfg), simulate(cfg)
    assert r1 == r2
    cfg["simulation"]["seed"] = 8
    assert simulate(cfg).step_time_s != r1.step_time_s
    # the slowest of 16 noisy ranks sets the pace: slower than the noiseless run
    cfg["simulation"]["compute_jitter_cv"] = 0.0
    assert simulate(cfg).step_time_s < r1.step_time_s


def test_identical_ranks_simulated_once_equal_all_ranks() -> None:
    exp = experiment_from_dict(
        {
            "model": "gpt3-350m",
            "systems": ["mlu370-x8"],
            "nodes": [4],
            "training": {"micro_batch_size": 2},
        }
    )
    job = exp.jobs()[0]
    once = run_job(job)
    every = run_job(
        dataclasses.replace(job, sim=dataclasses.replace(job.sim, simulate_all_ranks=True))
    )
    a, b = once.scalars(), every.scalars()
    for k, v in a.items():
        # equal up to rounding of the mean over 32 identical ranks
        assert b[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), k


class _Free:
    """A network with infinite bandwidth and zero latency."""

    def cost(self, op: CollectiveOp, nbytes: float, group: Group) -> CollectiveCost:
        return CollectiveCost(0.0, 0.0, float("inf"), None, "free", 0.0)


class _Serial:
    """Every collective takes a fixed time."""

    def __init__(self, t: float) -> None:
        self.t = t

    def cost(self, op: CollectiveOp, nbytes: float, group: Group) -> CollectiveCost:
        return CollectiveCost(self.t, self.t, 1.0, None, "fixed", nbytes)


def _job(model="gpt3-350m", system="dgx-a100", nodes=4, **strategy):
    exp = experiment_from_dict(
        {"model": model, "systems": [system], "nodes": [nodes], "strategy": strategy}
    )
    return exp.jobs()[0]


def test_free_network_step_equals_compute() -> None:
    job = _job()
    res = run_job(job, cost_model=_Free())
    assert res.exposed_comm_s == pytest.approx(0.0, abs=1e-12)
    assert res.step_time_s == pytest.approx(res.compute_time_s, rel=1e-12)
    # and equals the hand-summed compute of one step
    cm = ComputeModel(job.system.device, job.training.dtype)
    t = job.training
    mb = micro_batch_compute(
        cm, job.shape, t.micro_batch, t.seq_len, t.checkpointing, t.flash_attention
    )
    hand = (
        mb.head_fwd.time_s
        + mb.head_bwd.time_s
        + job.shape.n_layers * (mb.block_fwd.time_s + mb.block_bwd.time_s)
        + cm.optimizer_cost(job.shape.params()).time_s
    )
    assert res.step_time_s == pytest.approx(hand, rel=1e-12)


def test_without_overlap_communication_is_fully_exposed() -> None:
    job = _job(overlap=False)
    t = 0.01
    res = run_job(job, cost_model=_Serial(t))
    n_buckets = len(ddp_buckets(job.shape, job.strategy, FP32))
    assert res.n_collectives_per_step == n_buckets
    assert res.exposed_comm_s == pytest.approx(n_buckets * t, rel=1e-9)


def test_overlap_hides_communication_behind_backward() -> None:
    t = 0.0005  # 16 buckets × 0.5 ms = 8 ms of communication against ~20 ms of backward
    overlapped = run_job(_job(overlap=True), cost_model=_Serial(t))
    serial = run_job(_job(overlap=False), cost_model=_Serial(t))
    assert overlapped.step_time_s < serial.step_time_s
    assert overlapped.overlap_fraction > 0.5


def test_buckets_follow_pytorch_rules() -> None:
    shape = get_preset("gpt3-1.3b")
    spec = DDPSpec()
    buckets = ddp_buckets(shape, spec, FP32)
    total = sum(b.nbytes for b in buckets)
    assert total == pytest.approx(shape.params() * FP32)
    assert sum(b.n_tensors for b in buckets) == len(param_tensors_with_stage(shape))
    # first bucket reaches 1 MiB with its last tensor; the others reach the 25 MiB cap
    largest = max(n for _, n, _ in param_tensors_with_stage(shape)) * FP32
    assert buckets[0].nbytes >= 1 * MiB
    for b in buckets[1:-1]:
        assert 25 * MiB <= b.nbytes < 25 * MiB + largest
    # reverse order: readiness never goes backwards except for the tied embedding at the end
    stages = [b.ready_stage for b in buckets]
    assert stages == sorted(stages)


def test_grad_accumulation_communicates_once_per_step() -> None:
    exp = experiment_from_dict(
        {
            "model": "gpt3-125m",
            "systems": ["dgx-a100"],
            "nodes": [2],
            "training": {"grad_accum_steps": 4},
        }
    )
    res = run_job(exp.jobs()[0])
    one = run_job(
        experiment_from_dict({"model": "gpt3-125m", "systems": ["dgx-a100"], "nodes": [2]}).jobs()[
            0
        ]
    )
    assert res.n_collectives_per_step == one.n_collectives_per_step
    assert res.tokens_per_step == 4 * one.tokens_per_step


def test_out_of_memory_is_refused_with_numbers() -> None:
    cfg = {"model": "gpt3-175b", "systems": ["dgx-a100"], "nodes": [64]}
    with pytest.raises(
        InfeasibleJobError, match=r"needs \d+\.\d GiB per rank but .* has 74\.5 GiB"
    ):
        simulate(cfg)


def test_headline_mlu_scales_worse_than_a100_at_128_nodes() -> None:
    df = run_experiment(
        {
            "model": "gpt3-1.3b",
            "systems": ["dgx-a100", "mlu370-x8"],
            "nodes": [1, 128],
            "training": {"micro_batch_size": 4},
            "simulation": {"steps": 1},
        }
    ).table
    eff = df[df.nodes == 128].set_index("system")["scaling_efficiency"]
    print(f"\nscaling efficiency at 128 nodes: {eff.to_dict()}")
    assert eff["mlu370-x8"] < eff["dgx-a100"]


# ---- PyTorch DDP rules (distributed.py / reducer.cpp) -----------------------------------------


def _schedule(cfg: dict, step: int) -> list[dict]:
    from scaling.model.analysis.schedule import rank_schedule
    from scaling.model.simulation import run_job_detailed

    job = experiment_from_dict(cfg).jobs()[0]
    job = dataclasses.replace(job, sim=dataclasses.replace(job.sim, warmup_steps=0, steps=3))
    return rank_schedule(run_job_detailed(job, trace=True)[1], step)


TINY = {
    "model": {"vocab": 512, "hidden": 64, "layers": 2, "heads": 4, "max_positions": 32},
    "systems": ["dgx-a100"],
    "nodes": [1],
    "training": {"seq_len": 32},
}


def test_fp32_gradients_double_ddp_bytes() -> None:
    # one node: every all-reduce is a ring whatever its size, so bytes on the wire are the
    # buffer's × 2(p−1)/p (across nodes the tuner's tree/ring choice depends on bucket size)
    base = {"model": "gpt3-350m", "systems": ["dgx-a100"], "nodes": [1]}
    amp = simulate(base)  # default: fp32 parameters and gradients (AMP)
    bf16 = simulate(base | {"training": {"param_dtype": "bf16"}})
    hook = simulate(base | {"strategy": {"comm_hook": "bf16_compress"}})
    assert amp.comm_bytes_per_rank == pytest.approx(2 * bf16.comm_bytes_per_rank, rel=1e-12)
    assert hook.comm_bytes_per_rank == pytest.approx(bf16.comm_bytes_per_rank, rel=1e-12)
    assert amp.peak_mem_GiB > bf16.peak_mem_GiB  # fp32 weights, grads, Adam moments, buckets


def test_first_bucket_is_small_only_when_bucket_cap_is_not_passed() -> None:
    shape = get_preset("gpt3-125m")
    default = ddp_buckets(shape, DDPSpec(), FP32)
    explicit = ddp_buckets(shape, DDPSpec(bucket_cap_bytes=25 * MiB), FP32)
    assert 1 * MiB <= default[0].nbytes < 25 * MiB  # closes at dist._DEFAULT_FIRST_BUCKET_BYTES
    assert explicit[0].nbytes >= 25 * MiB  # bucket_cap_mb passed: the first cap is the cap
    with pytest.raises(Exception, match="first_bucket_MB only applies"):
        experiment_from_dict(TINY | {"strategy": {"bucket_cap_MB": 25, "first_bucket_MB": 2}})


def test_iteration_zero_is_one_bucket_then_rebuilt_with_index_broadcasts() -> None:
    cfg = TINY | {"strategy": {"bucket_cap_MB": 0.05}}
    it0, it1, it2 = (_schedule(cfg, k) for k in range(3))
    n_tensors = len(param_tensors_with_stage(experiment_from_dict(cfg).jobs()[0].shape))
    total = sum(
        n for _, n, _ in param_tensors_with_stage(experiment_from_dict(cfg).jobs()[0].shape)
    )
    assert [c["op"] for c in it0] == ["all_reduce"]
    assert it0[0]["bytes"] == 4 * total and len(it0[0]["bucket"]["params"]) == n_tensors
    # iteration 1: sync_bucket_indices broadcasts (int32: tensors + 1, then one per bucket)
    assert [c["op"] for c in it1[:2]] == ["broadcast", "broadcast"]
    n_buckets = len(it2)
    assert [c["bytes"] for c in it1[:2]] == [4 * (n_tensors + 1), 4 * n_buckets]
    assert it1[2:] == it2 and n_buckets > 1
    assert sum(c["bytes"] for c in it2) == 4 * total
    assert (
        it2[0]["bucket"]["params"][0] == "lm_head.weight" or "ln_f" in it2[0]["bucket"]["params"][0]
    )


def test_find_unused_parameters_keeps_registration_order_buckets_and_adds_the_bitmap() -> None:
    cfg = TINY | {"strategy": {"bucket_cap_MB": 0.05, "find_unused_parameters": True}}
    shape = experiment_from_dict(cfg).jobs()[0].shape
    n_tensors = len(param_tensors_with_stage(shape))
    it0, it2 = _schedule(cfg, 0), _schedule(cfg, 2)
    assert it0 == it2  # never rebuilt
    assert it2[-1]["op"] == "all_reduce" and it2[-1]["dtype"] == "int32"
    assert it2[-1]["bytes"] == 4 * n_tensors  # local_used_map: one int32 per parameter tensor
    # formed in registration order, then reversed: the bucket holding wte is launched last
    assert it2[-2]["bucket"]["params"][0] == "wte.weight"
    static = _schedule(TINY | {"strategy": {"bucket_cap_MB": 0.05, "static_graph": True}}, 0)
    assert [c["op"] for c in static] == ["all_reduce", "all_reduce"]  # one bucket + bitmap
