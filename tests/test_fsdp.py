"""FSDP schedules: communication volume rules, limits, prefetch, memory, sharding variants."""

from __future__ import annotations

import dataclasses

import pytest

from scaling.app.api import simulate
from scaling.io.config import experiment_from_dict
from scaling.model.comm.collectives import CollectiveCost
from scaling.model.comm.uncontended import AnalyticCostModel
from scaling.model.hardware.workload import get_preset
from scaling.model.job import InfeasibleJobError
from scaling.model.simulation import run_job
from scaling.model.strategies.fsdp import unit_params

BF16 = 2.0  # the volume tests run FSDP with MixedPrecision(param_dtype=bf16, reduce_dtype=bf16)


def job(model="gpt3-350m", system="dgx-a100", nodes=4, training=None, **strategy):
    cfg = {
        "model": model,
        "systems": [system],
        "nodes": [nodes],
        "strategy": {"kind": "fsdp", **strategy},
        "training": training or {},
    }
    return experiment_from_dict(cfg).jobs()[0]


@pytest.mark.parametrize(
    ("sharding", "expected_units_of_psi"),
    [
        # FULL_SHARD: all-gather in forward (every unit), again in backward (every unit but the
        # root, which PyTorch never reshards after forward), reduce-scatter of every unit.
        ("full_shard", lambda psi, root: 3 * psi - root),
        # SHARD_GRAD_OP: one all-gather per unit, one reduce-scatter.
        ("shard_grad_op", lambda psi, root: 2 * psi),
        # NO_SHARD: all-reduce of the gradients (2(p−1)/p), like DDP.
        ("no_shard", lambda psi, root: 2 * psi),
    ],
)
def test_bytes_per_rank_follow_the_standard_result(sharding, expected_units_of_psi) -> None:
    j = job(sharding=sharding, reduce_dtype="bf16")
    res = run_job(j)
    p = j.devices
    shape = j.shape
    psi = shape.params() * BF16
    root = unit_params(shape)[0] * BF16
    expected = expected_units_of_psi(psi, root) * (p - 1) / p
    print(f"\n{sharding}: {res.comm_bytes_per_rank / psi:.4f} Ψ per rank (p={p})")
    assert res.comm_bytes_per_rank == pytest.approx(expected, rel=1e-9)


def test_full_shard_over_ddp_volume_is_the_closed_form_with_matching_dtypes() -> None:
    # ZeRO-3 vs DDP, both in bf16 on the wire: (3Ψ − root) / (2Ψ), the root unit (embeddings,
    # final norm) being gathered once per step
    fsdp_job = job(sharding="full_shard", reduce_dtype="bf16")
    ring = _Ring(fsdp_job.system)  # ring-equivalent volume: price every call as a ring
    fsdp = run_job(fsdp_job, cost_model=ring)
    ddp_job = experiment_from_dict(
        {"model": "gpt3-350m", "systems": ["dgx-a100"], "nodes": [4]}
        | {"strategy": {"comm_hook": "bf16_compress"}}
    ).jobs()[0]
    ddp = run_job(ddp_job, cost_model=ring)
    shape = get_preset("gpt3-350m")
    psi, root = shape.params(), unit_params(shape)[0]
    ratio = fsdp.comm_bytes_per_rank / ddp.comm_bytes_per_rank
    print(f"\nFULL_SHARD / DDP bytes per rank: {ratio:.4f}")
    assert ratio == pytest.approx((3 * psi - root) / (2 * psi), rel=1e-12)
    # with the default MixedPrecision (reduce in fp32) the reduce-scatters double
    default = run_job(job(sharding="full_shard"), cost_model=ring)
    p = fsdp_job.devices
    grads = psi * (4.0 - BF16) * (p - 1) / p
    assert default.comm_bytes_per_rank == pytest.approx(fsdp.comm_bytes_per_rank + grads, rel=1e-12)


class _Ring:
    """Every collective priced as an uncontended ring (its bytes are the ring's)."""

    def __init__(self, system) -> None:
        self.model = AnalyticCostModel(system)

    def cost(self, op, nbytes, group) -> CollectiveCost:
        return self.model.price(op, nbytes, group, "ring")


class _Free:
    def cost(self, op, nbytes, group):
        return CollectiveCost(0.0, 0.0, float("inf"), None, "free", 0.0)


class _Fixed:
    def __init__(self, t: float) -> None:
        self.t = t

    def cost(self, op, nbytes, group):
        return CollectiveCost(self.t, self.t, 1.0, None, "fixed", nbytes)


@pytest.mark.parametrize("sharding", ["full_shard", "shard_grad_op", "hybrid_shard", "no_shard"])
def test_free_network_gives_compute_time(sharding) -> None:
    res = run_job(job(sharding=sharding), cost_model=_Free())
    assert res.step_time_s == pytest.approx(res.compute_time_s, rel=1e-12)


def _zero_compute(j):
    launch = {
        f.name: 0.0 for f in dataclasses.fields(j.system.device) if f.name.endswith("launch_s")
    }
    dev = dataclasses.replace(
        j.system.device,
        peak_flops={k: 1e30 for k in j.system.device.peak_flops},
        mem_bw_Bps=1e30,
        **launch,
    )
    return dataclasses.replace(j, system=dataclasses.replace(j.system, device=dev))


@pytest.mark.parametrize("sharding", ["full_shard", "shard_grad_op", "no_shard"])
def test_zero_compute_gives_serialized_communication(sharding) -> None:
    t = 1e-3
    j = _zero_compute(job(sharding=sharding))
    res = run_job(j, cost_model=_Fixed(t))
    assert res.compute_time_s < 1e-9
    # one process group, one queue: every collective of the step back to back
    assert res.step_time_s == pytest.approx(res.n_collectives_per_step * t, rel=1e-6)


def test_ddp_zero_compute_gives_serialized_communication() -> None:
    t = 1e-3
    j = _zero_compute(
        experiment_from_dict({"model": "gpt3-350m", "systems": ["dgx-a100"], "nodes": [4]}).jobs()[
            0
        ]
    )
    res = run_job(j, cost_model=_Fixed(t))
    assert res.step_time_s == pytest.approx(res.n_collectives_per_step * t, rel=1e-6)


def test_backward_prefetch_speeds_up_gpt3_175b() -> None:
    times = {}
    for pf in ("backward_pre", "none"):
        r = run_job(
            job(
                "gpt3-175b",
                nodes=64,
                training={"micro_batch_size": 1, "activation_checkpointing": "full"},
                backward_prefetch=pf,
            )
        )
        times[pf] = r.step_time_s
    speedup = times["none"] / times["backward_pre"] - 1
    print(
        f"\nGPT-3 175B FULL_SHARD on 512 A100: BACKWARD_PRE {times['backward_pre']:.2f} s, "
        f"none {times['none']:.2f} s, speed-up {speedup:.1%} (FSDP paper: ~18%)"
    )
    assert speedup > 0.05


def test_gpt3_175b_fits_with_full_shard_and_checkpointing_only() -> None:
    ddp = {"model": "gpt3-175b", "systems": ["dgx-a100"], "nodes": [64]}
    with pytest.raises(InfeasibleJobError, match="needs"):
        simulate(ddp)
    ok = run_job(
        job(
            "gpt3-175b",
            nodes=64,
            training={"micro_batch_size": 1, "activation_checkpointing": "full"},
        )
    )
    assert ok.peak_mem_GiB < ok.mem_capacity_GiB
    with pytest.raises(InfeasibleJobError, match=r"fsdp-full_shard on 512 devices needs"):
        run_job(job("gpt3-175b", nodes=64, training={"micro_batch_size": 1}))


def test_hybrid_shard_volume_keeps_gathers_inside_the_node() -> None:
    # HSDP: FULL_SHARD inside the node (g ranks), then an all-reduce of each rank's 1/g gradient
    # shard across the N nodes — only that all-reduce crosses nodes.
    nodes, g = 8, 8
    res = run_job(
        job(system="mlu370-x8", nodes=nodes, sharding="hybrid_shard", reduce_dtype="bf16")
    )
    shape = get_preset("gpt3-350m")
    psi = shape.params() * BF16
    root = unit_params(shape)[0] * BF16
    intra = (3 * psi - root) * (g - 1) / g
    inter = 2 * (nodes - 1) / nodes * psi / g
    assert res.comm_bytes_per_rank == pytest.approx(intra + inter, rel=1e-9)


def test_fsdp_runs_are_deterministic_and_noise_reproducible() -> None:
    j = job(sharding="hybrid_shard", nodes=2)
    assert run_job(j) == run_job(j)
    noisy = dataclasses.replace(j, sim=dataclasses.replace(j.sim, compute_jitter_cv=0.05, seed=3))
    assert run_job(noisy) == run_job(noisy)
    assert run_job(noisy).step_time_s > run_job(j).step_time_s


def test_bucket_size_curve_is_u_shaped_on_mlu() -> None:
    caps = [0.25, 25, 200, 4000]
    steps = []
    for cap in caps:
        r = simulate(
            {
                "model": "gpt3-1.3b",
                "systems": ["mlu370-x8"],
                "nodes": [64],
                "strategy": {"kind": "ddp", "bucket_cap_MB": cap},
                "training": {"micro_batch_size": 4},
                "simulation": {"steps": 1},
            }
        )
        steps.append(r.step_time_s)
    print("\nGPT-3 1.3B DDP, 64 mlu370-x8 nodes: bucket_cap_MB -> step (s)")
    for c, s in zip(caps, steps, strict=True):
        print(f"  {c:>7} MB  {s:.4f}")
    best = min(steps)
    assert steps[0] > best and steps[-1] > best
    assert steps.index(best) not in (0, len(steps) - 1)


def test_unit_parameters_sum_to_the_model() -> None:
    shape = get_preset("gpt3-1.3b")
    assert sum(unit_params(shape)) == shape.params()


def _fsdp_schedule(step: int = 2, training=None, **strategy) -> list[dict]:
    from scaling.model.analysis.schedule import rank_schedule
    from scaling.model.simulation import run_job_detailed

    j = job(model="gpt3-125m", nodes=1, training=training, **strategy)
    j = dataclasses.replace(j, sim=dataclasses.replace(j.sim, warmup_steps=0, steps=step + 1))
    return rank_schedule(run_job_detailed(j, trace=True)[1], step)


def test_root_unit_gradients_are_reduced_last_and_clip_adds_one_all_reduce() -> None:
    calls = _fsdp_schedule()
    grads = [c["unit"] for c in calls if c["op"] == "reduce_scatter"]
    n_blocks = get_preset("gpt3-125m").n_layers
    # blocks last to first, then the root
    assert grads == [*(f"h{i}" for i in range(n_blocks - 1, -1, -1)), "root"]
    clipped = _fsdp_schedule(clip_grad_norm=True)
    assert clipped[:-1] == calls
    assert (clipped[-1]["op"], clipped[-1]["bytes"], clipped[-1]["phase"]) == (
        "all_reduce",
        4,
        "optimizer",
    )


def test_gradient_accumulation_with_and_without_no_sync() -> None:
    ga = {"grad_accum_steps": 2}
    with_no_sync = _fsdp_schedule(training=ga)
    without = _fsdp_schedule(training=ga, no_sync=False)
    n_units = get_preset("gpt3-125m").n_layers + 1
    count = lambda calls, op: sum(c["op"] == op for c in calls)  # noqa: E731
    # FULL_SHARD re-gathers every micro-batch either way (forward: every unit; backward: blocks)
    assert (
        count(with_no_sync, "all_gather") == count(without, "all_gather") == 2 * (2 * n_units - 1)
    )
    assert count(with_no_sync, "reduce_scatter") == n_units  # once per step
    assert count(without, "reduce_scatter") == 2 * n_units  # every micro-batch
    # no_sync holds the unsharded gradients between micro-batches
    mem = lambda **kw: run_job(job(training=ga, **kw)).peak_mem_GiB  # noqa: E731
    assert mem() > mem(no_sync=False)


def test_fsdp2_reshard_after_forward_to_an_intra_node_group() -> None:
    from scaling.model.analysis.schedule import rank_schedule
    from scaling.model.simulation import run_job_detailed

    def bwd(calls):
        return [c for c in calls if c["op"] == "all_gather" and c["phase"] == "backward"]

    def sched(**kw):
        j = job(model="gpt3-125m", nodes=2, **kw)
        j = dataclasses.replace(j, sim=dataclasses.replace(j.sim, warmup_steps=0, steps=3))
        return rank_schedule(run_job_detailed(j, trace=True)[1], 2), run_job(j)

    full, r_full = sched(api="fsdp2")
    part, r_part = sched(api="fsdp2", reshard_after_forward=4)
    zero2, _ = sched(api="fsdp2", reshard_after_forward=False)
    every, _ = sched(api="fsdp2", reshard_after_forward=True)
    assert [c["unit"] for c in bwd(every)][:2] == ["root", "h11"]  # the root is gathered again
    assert [c["group_size"] for c in bwd(full)] == [16] * 12
    # gathered inside groups of 4, the root too (an int applies to the root as True does)
    assert [c["group_size"] for c in bwd(part)] == [4] * 13
    assert [c["unit"] for c in bwd(part)][:2] == ["root", "h11"]
    assert [c["bytes"] for c in bwd(part)] == [c["bytes"] for c in bwd(every)]
    assert bwd(zero2) == []  # never resharded: ZeRO-2 / SHARD_GRAD_OP
    assert r_part.peak_mem_GiB > r_full.peak_mem_GiB  # keeps 1/4 of every block
    with pytest.raises(InfeasibleJobError, match="divides the node's 8 devices"):
        run_job(job(model="gpt3-125m", nodes=2, api="fsdp2", reshard_after_forward=3))
