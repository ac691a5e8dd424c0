"""Expert parallelism in the Megatron strategy: the dispatch / combine all-to-alls (closed form),
EP = 1 without all-to-alls, the expert groups of Megatron-Core's rank order, memory sharded over
EP, routing imbalance (more skew never faster; seeded), shared-expert overlap, bad input."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from scaling.io.config import experiment_from_dict
from scaling.io.errors import ConfigError
from scaling.io.topology import load_system
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.comm.uncontended import AnalyticCostModel
from scaling.model.hardware.compute import ComputeModel
from scaling.model.hardware.moe import MoEShape, MoESpec
from scaling.model.hardware.workload import Norm
from scaling.model.job import Job, SimSpec, TrainingSpec
from scaling.model.routing import RoutingKind, RoutingSpec, layer_loads
from scaling.model.simulation import run_job, run_job_detailed
from scaling.model.strategies.megatron import MegatronSpec, MegatronWork, megatron_memory
from scaling.model.strategies.megatron.experts import dispatch_bytes, expert_ranks

SEQ = 2048


def _shape(experts: int = 16, top_k: int = 2, shared: int = 1, dense: int = 1) -> MoEShape:
    return MoEShape(
        "toy-moe", 4, 1024, 16, 4096, 32000, 0, 16, gated_mlp=True, bias=False,
        tied_embeddings=False, norm=Norm.RMSNORM,
        moe=MoESpec(experts, top_k, 512, shared, None, dense),
    )  # fmt: skip


def _job(spec: MegatronSpec, nodes: int = 1, shape: MoEShape | None = None, seed: int = 0,
         m: int = 2) -> Job:  # fmt: skip
    return Job(
        load_system("dgx-h100").spec,
        shape or _shape(),
        nodes,
        TrainingSpec(1, m, SEQ),
        spec,
        SimSpec(steps=1, warmup_steps=0, seed=seed, network="analytic"),
    )


def _spec(**kw: Any) -> MegatronSpec:
    return MegatronSpec(order="tp-dp-pp", **kw)


def test_dispatch_bytes_closed_form() -> None:
    """Per MoE block and micro-batch, forward: a dispatch and a combine all-to-all of
    nccl-tests size tokens·top_k·h·bytes, of which (EP−1)/EP leaves each rank; the backward
    the same two again."""
    shape, ep = _shape(), 8
    job = _job(_spec(expert_parallel=ep))
    _, tl = run_job_detailed(job, trace=True)
    a2a = [r for r in tl.collectives if r.key.kind == "ep"]
    tokens, k, h, e = SEQ, shape.moe.top_k, shape.hidden, 2
    assert {r.op for r in a2a} == {CollectiveOp.ALL_TO_ALL}
    assert {r.nbytes for r in a2a} == {tokens * k * h * e} == {dispatch_bytes(tokens, k, h, e)}
    assert all(r.group == Group(1, 8) for r in a2a)
    moe_blocks = shape.n_layers - shape.moe.dense_layers
    assert len(a2a) == 4 * moe_blocks * job.training.grad_accum
    cost = AnalyticCostModel(job.system).cost(CollectiveOp.ALL_TO_ALL, a2a[0].nbytes, Group(1, 8))
    assert cost.bytes_sent_per_rank == pytest.approx(tokens * k * h * e * (ep - 1) / ep)


def test_ep1_has_no_all_to_all_and_tensor_parallel_splits_tokens() -> None:
    _, tl = run_job_detailed(_job(_spec()), trace=True)
    assert not [r for r in tl.collectives if r.op is CollectiveOp.ALL_TO_ALL]
    # with TP (sequence parallel), each rank routes its 1/t of the tokens
    spec = _spec(tensor=2, sequence_parallel=True, expert_parallel=4, expert_tensor_parallel=1)
    _, tl = run_job_detailed(_job(spec), trace=True)
    a2a = {r.nbytes for r in tl.collectives if r.key.kind == "ep"}
    assert a2a == {SEQ // 2 * 2 * 1024 * 2}


def test_expert_groups_follow_megatron_core_rank_order() -> None:
    """etp-ep-edp-pp over a stage's t·c·d ranks (parallel_state.py): EP ranks ETP apart, the
    expert-data-parallel group EP·ETP apart, of size t·c·d/(EP·ETP)."""
    spec = _spec(tensor=2, pipeline=2, sequence_parallel=True, expert_parallel=4,
                 expert_tensor_parallel=2)  # fmt: skip
    d = 32 // 4  # 4 nodes of 8, t·p = 4
    ep, etp, edp = expert_ranks(spec, d, 1)
    base = 2 * d  # stage 1's block under tp-dp-pp
    assert ep == [base + 2 * j for j in range(4)]
    assert etp == [base, base + 1]
    assert edp == [base + 8 * j for j in range(2 * d // 8)]
    work = MegatronWork.build(
        _job(spec, 4), spec, ComputeModel(load_system("dgx-h100").spec.device, "bf16")
    )
    assert work.experts is not None and work.experts.edp_groups[0].size == 2 * d // (4 * 2)


def test_expert_memory_sharded_over_ep() -> None:
    shape = _shape()
    one = megatron_memory(_job(_spec()), _spec())
    eight = megatron_memory(_job(_spec(expert_parallel=8)), _spec(expert_parallel=8))
    routed = (shape.n_layers - 1) * shape.routed_expert_params()
    # bf16 weights + fp32 main gradients + 12 B of Adam state, 7/8 of the routed experts gone
    assert one.weights - eight.weights == pytest.approx(routed * 7 / 8 * 2)
    assert one.gradients - eight.gradients == pytest.approx(routed * 7 / 8 * 4)
    assert one.optimizer - eight.optimizer == pytest.approx(routed * 7 / 8 * 12)
    # the distributed optimizer shards the experts' states over EDP = 8/8 = 1 ... and 8 at EP=1
    zero = megatron_memory(_job(_spec(distributed_optimizer=True)),
                           _spec(distributed_optimizer=True))  # fmt: skip
    assert zero.optimizer < one.optimizer / 7
    assert eight.comm_buffers == 2 * SEQ * 2 * 1024 * 2 and one.comm_buffers == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_more_skew_never_makes_a_step_faster(seed: int) -> None:
    times = []
    for s in (0.0, 0.5, 1.0, 1.5, 2.0):
        spec = _spec(expert_parallel=8, routing=RoutingSpec(RoutingKind.ZIPF, s))
        times.append(run_job(_job(spec, seed=seed)).step_time_s)
    assert times == sorted(times) and times[-1] > times[0] * 1.05, times


def test_routing_is_seeded_per_run() -> None:
    spec = _spec(expert_parallel=8, routing=RoutingSpec(RoutingKind.ZIPF, 1.0))
    a, b, c = (run_job(_job(spec, seed=s)).step_time_s for s in (3, 3, 4))
    assert a == b and a != c
    loads = layer_loads(RoutingSpec(), 16, 2, 8, 8 * SEQ, 3, seed=0)
    assert all(1.0 <= ld.busiest < 1.1 and ld.dropped == 0 for ld in loads)  # near balance


def test_capacity_factor_drops_tokens_and_caps_the_busiest() -> None:
    zipf = RoutingSpec(RoutingKind.ZIPF, 1.5)
    capped = replace(zipf, capacity_factor=1.0)
    free = layer_loads(zipf, 64, 4, 8, 8 * 4096, 4, seed=0)
    cut = layer_loads(capped, 64, 4, 8, 8 * 4096, 4, seed=0)
    for f, c in zip(free, cut, strict=True):
        assert c.busiest <= 1.0 + 1e-9 < f.busiest and c.dropped > 0.2
    t_free = run_job(_job(_spec(expert_parallel=8, routing=zipf))).step_time_s
    t_cut = run_job(_job(_spec(expert_parallel=8, routing=capped))).step_time_s
    assert t_cut < t_free


def test_shared_expert_overlap_never_slower_and_hides_compute() -> None:
    base = run_job(_job(_spec(expert_parallel=8), nodes=2)).step_time_s
    seo = run_job(_job(_spec(expert_parallel=8, moe_shared_expert_overlap=True), nodes=2))
    assert seo.step_time_s < base


def test_expert_gradients_reduced_over_the_expert_data_parallel_group() -> None:
    spec = _spec(expert_parallel=4)
    job = _job(spec, nodes=2)
    _, tl = run_job_detailed(job, trace=True)
    edp = [r for r in tl.collectives if r.key.kind == "edp"]
    shape = job.shape
    assert isinstance(shape, MoEShape)
    assert len(edp) == 1 and edp[0].group.size == 16 // 4
    assert edp[0].nbytes == pytest.approx(3 * shape.routed_expert_params() / 4 * 4)  # fp32


# ---- config ------------------------------------------------------------------------------------

MODEL = {"name": "tiny-moe", "vocab": 32000, "hidden": 1024, "layers": 4, "heads": 16,
         "ffn": 4096, "gated_mlp": True, "bias": False, "tied_embeddings": False,
         "norm": "rmsnorm", "moe": {"experts": 16, "top_k": 2, "expert_ffn": 512}}  # fmt: skip


def _cfg(nodes: int = 1, moe: dict | None = None, **par: Any) -> dict:
    return {
        "model": MODEL,
        "systems": ["dgx-h100"],
        "nodes": [nodes],
        "strategy": {
            "kind": "megatron",
            "order": "tp-dp-pp",
            "parallelism": par,
            "moe": moe or {},
        },
        "training": {"grad_accum_steps": 2},
        "simulation": {"steps": 1, "warmup_steps": 0},
    }


@pytest.mark.parametrize(
    ("cfg", "fragment"),
    [
        (_cfg(expert_parallel=3), "parallelism.expert_parallel: got 3; expected a divisor of the model's 16 routed experts"),
        (_cfg(nodes=1, expert_parallel=16), "expected a divisor of tensor x context x data = 8"),
        (_cfg(nodes=2, pipeline=2, expert_parallel=16), "expected a divisor of tensor x context x data = 8"),
        (_cfg(moe={"capacity_factor": 0}), "capacity_factor"),
        (_cfg(moe={"capacity_factor": -1.5}), "capacity_factor"),
        (_cfg(moe={"routing": "histogram", "histogram": [1, 2]}), "moe.histogram: got 2 weights; expected one per routed expert (16)"),
        (_cfg(moe={"zipf_s": 2}), "routing: zipf with zipf_s"),
        (_cfg(moe={"routing": "uniform", "zipf_s": 1.0}), "OK"),
        (_cfg(tensor=2, expert_parallel=4), "sequence_parallel: got false with parallelism.tensor 2 on a MoE model"),
    ],
)  # fmt: skip
def test_bad_expert_config_is_one_line(cfg: dict, fragment: str) -> None:
    if fragment == "OK":  # the default zipf_s of a dumped config is not refused
        experiment_from_dict(cfg).jobs()
        return
    with pytest.raises(ConfigError) as info:
        experiment_from_dict(cfg, where="moe.yaml").jobs()
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg.strip(), msg


def test_dense_model_refuses_expert_parallel() -> None:
    cfg = _cfg(expert_parallel=2)
    cfg["model"] = "gpt3-125m"
    with pytest.raises(
        ConfigError,
        match=r"parallelism\.expert_parallel: got 2 with the dense model 'gpt3-125m'; expected 1",
    ):
        experiment_from_dict(cfg, where="moe.yaml")


def test_histogram_file(tmp_path: Any) -> None:
    f = tmp_path / "h.csv"
    f.write_text("\n".join(["10"] + ["1"] * 15))
    cfg = _cfg(expert_parallel=8, moe={"routing": "histogram", "histogram_file": str(f)})
    job = experiment_from_dict(cfg).jobs()[0]
    assert isinstance(job.strategy, MegatronSpec)
    assert job.strategy.routing.histogram == (10.0,) + (1.0,) * 15
    bad = _cfg(moe={"routing": "histogram", "histogram_file": str(tmp_path / "none.csv")})
    with pytest.raises(ConfigError, match=r"moe\.histogram_file: expected a readable file"):
        experiment_from_dict(bad, where="moe.yaml")


def _result(cfg: dict) -> tuple[float, float, float, float]:
    (job,) = experiment_from_dict(cfg).jobs()
    r = run_job(job)
    return r.step_time_s, r.peak_mem_GiB, r.comm_bytes_per_rank, r.mfu


def test_every_moe_field_changes_a_result() -> None:
    """No dead knobs: each MoE model field and strategy option moves a result."""
    base = _cfg(nodes=1, expert_parallel=4)
    base["simulation"]["network"] = "analytic"
    ref = _result(base)
    model_variants = [
        {"router": "sigmoid"},
        {"shared_experts": 1},
        {"shared_experts": 1, "shared_ffn": 1024},
        {"dense_layers": 1},
        {"top_k": 4},
        {"expert_ffn": 1024},
        {"experts": 32},
    ]
    for v in model_variants:
        cfg = {**base, "model": {**MODEL, "moe": {**MODEL["moe"], **v}}}
        assert _result(cfg) != ref, v
    for v in [{"head_dim": 128}, {"qk_norm": True},
              {"mla": {"kv_lora_rank": 256, "qk_nope_dim": 64, "qk_rope_dim": 32, "v_dim": 64}}]:  # fmt: skip
        assert _result({**base, "model": {**MODEL, **v}}) != ref, v
    strat = base["strategy"]
    shared = {**base, "model": {**MODEL, "moe": {**MODEL["moe"], "shared_experts": 1}}}
    for moe in [{"shared_expert_overlap": True}, {"capacity_factor": 0.5},
                {"routing": "zipf", "zipf_s": 1.0},
                {"routing": "histogram", "histogram": [5] + [1] * 15}]:  # fmt: skip
        src = shared if "shared_expert_overlap" in moe else base
        cfg = {**src, "strategy": {**strat, "moe": moe}}
        assert _result(cfg) != _result(src), moe
    for par in [{"expert_parallel": 2}, {"expert_parallel": 4, "expert_tensor_parallel": 2}]:
        cfg = {**base, "strategy": {**strat, "parallelism": par}}
        assert _result(cfg) != ref, par
