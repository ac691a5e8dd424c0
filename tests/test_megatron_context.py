"""Megatron context parallelism, uneven pipeline stages and selective recomputation (issue 25).

Closed forms: the ring's K/V volume per block (derived in ``megatron/context.py`` from
Transformer Engine's ``AttnFuncWithCPAndKVP2P``), its time on a free network and the exposure of
each exchange beyond the attention step it overlaps; the 1F1B flush with uneven stages;
Korthikanti et al.'s selective-recompute FLOPs overhead. Then the memory model on a Llama 3
405B-shaped TP8 × PP16 run, config validation, and every new field changing a result.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from scaling.io.config import experiment_from_dict
from scaling.io.errors import ConfigError
from scaling.io.topology import load_system
from scaling.model.comm.collectives import CollectiveCost
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import ZERO, ComputeModel
from scaling.model.hardware.workload import Checkpointing, TransformerShape, get_preset
from scaling.model.job import InfeasibleJobError, Job, SimSpec, TrainingSpec
from scaling.model.simulation import run_job, run_job_detailed
from scaling.model.strategies.megatron import (
    MegatronSpec,
    MegatronWork,
    layer_activation_bytes,
    stage_order,
)
from scaling.model.strategies.megatron.context import ring_bytes_per_layer
from scaling.model.strategies.megatron.experts import stage_blocks
from scaling.model.strategies.megatron.placement import cp_ranks, dp_ranks, rank_of

GiB = 2.0**30


class FixedExchange:
    """Point-to-point sends (the CP ring's exchanges when there is one stage) cost ``x`` s; every
    other collective nothing."""

    def __init__(self, x: float) -> None:
        self.x = x

    def cost(self, op: CollectiveOp, nbytes: float, group: Group) -> CollectiveCost:
        t = self.x if op is CollectiveOp.BROADCAST else 0.0
        return CollectiveCost(t, 0.0, math.inf, None, "fixed", 0.0)


def _gqa(layers: int = 4) -> TransformerShape:
    # 16 heads, 4 key/value heads: K and V are 1/4 of Q
    return TransformerShape("toy-gqa", layers, 1024, 16, 4096, 128, 0, 4)


def _job(spec: MegatronSpec, nodes: int, m: int, shape: Any, seq: int = 4096, **kw: Any) -> Job:
    system = load_system("dgx-a100").spec
    lib = replace(system.library, compute_interference=0.0)
    return Job(
        replace(system, library=lib),
        shape,
        nodes,
        TrainingSpec(1, m, seq, **kw),
        spec,
        SimSpec(steps=1, warmup_steps=0, network="analytic"),
    )


class NoHead(MegatronSpec):
    """Megatron without embedding and head compute (closed forms on blocks alone)."""

    def plan(self, job: Job, compute: ComputeModel, mb: object) -> MegatronWork:
        w = MegatronWork.build(job, self, compute)
        return replace(w, emb_fwd=ZERO, emb_bwd=ZERO, head_fwd=ZERO, head_bwd=ZERO)


def test_cp_rank_order_is_tp_cp_then_pp_dp_and_dp_spans_context() -> None:
    """parallel_state.py's tp-cp-ep-dp-pp: CP ranks are t apart; gradients reduce over d·c."""
    spec = MegatronSpec(2, 2, context=2, order="tp-dp-pp")
    d = 2  # 16 devices / (2·2·2)
    assert cp_ranks(spec, d, 0) == [0, 2]
    assert rank_of(spec, d, 1, 1, 1, 1) == 1 + 2 * 1 + 4 * (1 + 2 * 1)
    assert sorted(dp_ranks(spec, d, 0)) == [0, 2, 4, 6]
    every = sorted(rank_of(spec, d, j, k, r, q) for j in range(2) for k in range(2)
                   for r in range(2) for q in range(2))  # fmt: skip
    assert every == list(range(16))
    assert spec.model_parallel == 8 and spec.data_parallel(16) == 2


def test_cp_ring_volume_per_layer_closed_form() -> None:
    """Per block and micro-batch each rank sends 2·(c−1)/c·b·s·kv_dim/t·e forward (c − 1 K/V
    chunks) and twice that backward (K/V and dK/dV), in c − 1 exchanges each way."""
    t, c, m, layers, s, e = 2, 4, 2, 4, 4096, 2
    shape = _gqa(layers)
    spec = MegatronSpec(t, 1, context=c)
    job = _job(spec, 1, m, shape, seq=s, checkpointing=Checkpointing.NONE)
    fwd, bwd = ring_bytes_per_layer(shape, 1, s, c, t, e)
    assert fwd == pytest.approx(2 * (c - 1) / c * 1 * s * shape.kv_dim / t * e)
    assert bwd == 2 * fwd
    _, tl = run_job_detailed(job, FixedExchange(0.0), trace=True)
    cp = [r for r in tl.collectives if r.key.kind == "cp"]
    by_phase = {ph: [r for r in cp if r.key.phase == ph] for ph in ("forward", "backward")}
    assert len(by_phase["forward"]) == len(by_phase["backward"]) == layers * m * (c - 1)
    assert sum(r.nbytes for r in by_phase["forward"]) == pytest.approx(layers * m * fwd)
    assert sum(r.nbytes for r in by_phase["backward"]) == pytest.approx(layers * m * bwd)
    # the ring (ranks 0, 2, 4, 6 of one node) priced as a send between neighbours, t lanes
    assert all(r.group.nodes == 1 and r.group.size == 2 for r in cp)


def test_cp_ring_time_free_and_exposed_beyond_the_attention_step() -> None:
    """Free network: the step is the compute, with the ring's other c − 1 attention steps per
    block each way. Each exchange costing x: it hides behind one attention step, so the step
    grows by layers·m·(c−1)·(max(0, x − attn_fwd) + max(0, x − attn_bwd))."""
    t, c, m, layers = 2, 4, 2, 4
    spec = NoHead(t, 1, context=c)
    job = _job(spec, 1, m, _gqa(layers), checkpointing=Checkpointing.NONE)
    work = spec.plan(job, ComputeModel(job.system.device, "bf16"), None)
    ring = work.ring
    assert ring is not None and ring.attn_fwd_s > 0 and ring.attn_bwd_s > ring.attn_fwd_s
    fwd, bwd = work.chunk_compute_s()
    extra = layers * (c - 1) * (ring.attn_fwd_s + ring.attn_bwd_s)
    free = run_job(job, FixedExchange(0.0)).step_time_s
    assert free - work.optimizer.time_s == pytest.approx(m * (fwd + bwd + extra), rel=1e-9)
    for x in (0.5 * ring.attn_fwd_s, 1.5 * ring.attn_bwd_s, 4 * ring.attn_bwd_s):
        got = run_job(job, FixedExchange(x)).step_time_s - free
        want = layers * m * (c - 1) * (max(0, x - ring.attn_fwd_s) + max(0, x - ring.attn_bwd_s))
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_cp_ring_runs_under_tp_comm_overlap() -> None:
    """Transformer Engine's userbuffers hold a CP rank's s/c tokens (Megatron-LM
    ``initialize_tp_communicators``: ``input_shape = [seq_length · micro_batch_size //
    context_parallel_size, hidden]``), so ``--tp-comm-overlap`` and the ring run together: the
    same c − 1 exchanges per block each way as without the overlap, each exposed beyond the
    attention step it overlaps by the same closed form."""
    t, c, m, layers = 2, 4, 2, 4
    spec = NoHead(t, 1, context=c, sequence_parallel=True, tp_comm_overlap=True)
    job = _job(spec, 1, m, _gqa(layers), checkpointing=Checkpointing.NONE)
    assert spec.model_error(job.shape, job.training) == ""
    ring = spec.plan(job, ComputeModel(job.system.device, "bf16"), None).ring
    assert ring is not None
    res, tl = run_job_detailed(job, FixedExchange(0.0), trace=True)
    cp = [r for r in tl.collectives if r.key.kind == "cp"]
    assert len(cp) == 2 * layers * m * (c - 1)
    for x in (0.5 * ring.attn_fwd_s, 4 * ring.attn_bwd_s):
        got = run_job(job, FixedExchange(x)).step_time_s - res.step_time_s
        want = layers * m * (c - 1) * (max(0, x - ring.attn_fwd_s) + max(0, x - ring.attn_bwd_s))
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_cp_splits_activations_and_shows_exposed_cp_in_explain() -> None:
    from scaling.model.analysis.explain import explain_step

    shape = _gqa(8)
    one = MegatronSpec(8, 2, sequence_parallel=True)
    two = MegatronSpec(8, 2, sequence_parallel=True, context=2)
    a = one.memory(_job(one, 2, 4, shape))
    b = two.memory(_job(two, 4, 4, shape))
    # same replicas (d = 1): the activations halve with the sequence
    assert b.activations == pytest.approx(a.activations / 2, rel=0.02)
    job = replace(_job(two, 4, 4, shape), sim=SimSpec(steps=1, warmup_steps=0, network="flow"))
    _, tl = run_job_detailed(job, trace=True)
    br = explain_step(tl, 0)
    assert sum(v for _, v in br.parts()) == pytest.approx(br.step_s, rel=1e-9)
    # CP ring crosses nodes (t = 8 fills a node): exposed CP apart from TP, PP, DP
    assert {"TP", "CP", "PP"} <= set(br.exposed_by_parallel)
    assert br.bubble_s > 0
    assert any(k.startswith("exposed CP") for k, _ in br.parts())
    # the kernel-kind breakdown (rank 0's 1/c of the tokens, plus the ring's other steps) is
    # what the timeline ran
    from scaling.model.hardware.breakdown import step_compute_breakdown

    kinds = sum(v for _, v in step_compute_breakdown(job))
    assert kinds == pytest.approx(br.forward_s + br.backward_s, rel=1e-2)


def _flush_1f1b(fwd: list[float], bwd: list[float], m: int) -> list[float]:
    """Each stage's end of its last backward under 1F1B (an oracle independent of the SimPy
    process: the longest path through the schedule's DAG, free communication): an op starts
    when its stage is free and, for F(i) on stage k, F(i) on k − 1 has ended; for B(i), B(i) on
    k + 1 (SC'21 §2.2.1; warm-up ``p − k − 1`` forwards, then one forward one backward)."""
    p = len(fwd)
    end: dict[tuple[str, int, int], float] = {}
    order = [stage_order(p, 1, m, k) for k in range(p)]
    pos, free = [0] * p, [0.0] * p
    while any(pos[k] < len(order[k]) for k in range(p)):
        for k in range(p):
            while pos[k] < len(order[k]):
                kind, i, _ = order[k][pos[k]]
                dep = (kind, i, k - 1) if kind == "F" else (kind, i, k + 1)
                if 0 <= dep[2] < p and dep not in end:
                    break
                t0 = max(free[k], end.get(dep, 0.0))
                free[k] = end[(kind, i, k)] = t0 + (fwd[k] if kind == "F" else bwd[k])
                pos[k] += 1
    return free


@pytest.mark.parametrize(("layers", "m"), [([1, 2, 2, 1], 6), ([3, 2, 2, 2, 3], 8), ([2, 4], 4)])
def test_uneven_stage_flush_follows_the_largest_stage(layers: list[int], m: int) -> None:
    """Free network: the step is the 1F1B schedule's longest path with stage k's forward and
    backward L_k times one layer's; it lies between m·max_k L_k·(f+b) (the largest stage's
    work: the bubble follows it) and Σ_k L_k·(f+b) + (m − 1)·max_k L_k·(f+b); with equal
    stages both are SC'21's (m + p − 1) stage-times."""
    p = len(layers)
    spec = NoHead(1, p, first_stage_layers=layers[0], last_stage_layers=layers[-1])
    # untied: the closed form is the pipeline's alone (tied embeddings add the first and last
    # stage's embedding-gradient all-reduce before the optimizer, finalize_model_grads.py)
    shape = TransformerShape(
        "toy", sum(layers), 1024, 16, 4096, 128, 2048, 16, tied_embeddings=False
    )
    job = _job(spec, 1, m, shape, seq=2048)
    assert spec.stage_layers(shape.n_layers) == layers
    work = spec.plan(job, ComputeModel(job.system.device, "bf16"), None)
    f, b = (x / work.layers_per_chunk for x in work.chunk_compute_s())  # one layer
    ends = _flush_1f1b([n * f for n in layers], [n * b for n in layers], m)
    want = max(e + o.time_s for e, o in zip(ends, work.optimizer_per_stage, strict=True))
    res = run_job(job, FixedExchange(0.0))
    assert res.step_time_s == pytest.approx(want, rel=1e-9)
    u, big = f + b, max(layers)
    assert m * big * u < ends[0] <= (sum(layers) + (m - 1) * big) * u * (1 + 1e-12)


def test_selective_recompute_adds_the_attention_core_forward() -> None:
    """Korthikanti et al. 2022 §5 (Megatron-LM ``--recompute-granularity selective``, module
    ``core_attn``): the backward re-runs the attention core's forward — QKᵀ and AV, 4·b·s²·h/t
    GEMM FLOPs, plus softmax (5) and dropout (1) per score — and nothing else; full recompute
    re-runs the whole forward; memory drops the 5as/h term (Table 2)."""
    shape = get_preset("gpt3-175b")
    s, h, t, a = 2048, shape.hidden, 8, shape.n_heads
    cm = ComputeModel(load_system("dgx-a100").spec.device, "bf16")
    from scaling.model.strategies.megatron.ops import block_cost

    def flops(ck: Checkpointing) -> tuple[float, float]:
        bc = block_cost(cm, shape, 1, s, t, True, ck, False)
        segs = [bc.f1, bc.f2, bc.b2, bc.b2w, bc.b1, bc.b1w, bc.b0]
        total = sum(x.flops for x in segs) + (bc.f1.flops + bc.f2.flops if bc.recompute else 0)
        return total, bc.f1.flops + bc.f2.flops

    (none, fwd), (sel, _), (full, _) = (
        flops(c) for c in (Checkpointing.NONE, Checkpointing.SELECTIVE, Checkpointing.FULL)
    )
    scores = a / t * s * s
    assert sel - none == pytest.approx(4 * s * s * h / t + 6 * scores, rel=1e-12)
    assert full - none == pytest.approx(fwd, rel=1e-12)
    # a few per cent of the step for GPT-3 175B against a third for full recomputation
    assert 0.005 < sel / none - 1 < 0.03 and full / none - 1 > 0.3
    # with a fused (flash) kernel there is no core to recompute: nothing changes
    fused = [block_cost(cm, shape, 1, s, t, True, c, True) for c in (Checkpointing.NONE,
                                                                      Checkpointing.SELECTIVE)]  # fmt: skip
    assert fused[0] == fused[1]
    a = shape.n_heads
    sbh = s * h
    kw: dict[str, Any] = {"shape": shape, "b": 1, "s": s, "t": 8, "sp": True, "flash": False}
    assert layer_activation_bytes(checkpointing=Checkpointing.NONE, **kw) == pytest.approx(
        sbh / 8 * (34 + 5 * a * s / h)
    )
    assert layer_activation_bytes(checkpointing=Checkpointing.SELECTIVE, **kw) == pytest.approx(
        sbh / 8 * 34
    )


def _llama405b() -> TransformerShape:
    # Llama 3 405B (Meta model card, arXiv:2407.21783 Table 3): 126 layers, h 16384, 128 heads,
    # 8 key/value heads, SwiGLU 53248, vocabulary 128256
    return replace(
        get_preset("llama3-70b"),
        name="llama3-405b",
        n_layers=126,
        hidden=16384,
        n_heads=128,
        ffn_hidden=53248,
    )


def _405b(context: int, first: int | None = 7, **kw: Any) -> Job:
    spec = MegatronSpec(8, 16, 1, True, "tp-dp-pp", True, True, None, context, first, first)
    nodes = 16 * context * 8  # 8 replicas of TP8 x CP x PP16 on 8-GPU nodes
    system = load_system("dgx-h100").spec
    tr = TrainingSpec(1, 16, 8192, **kw)
    return Job(system, _llama405b(), nodes, tr, spec, SimSpec(steps=1, warmup_steps=0))


def test_405b_tp8_pp16_fits_with_context_parallelism_and_is_refused_without() -> None:
    """TP8 × PP16, 7 layers on the first and last stage (Llama 3 §3.3.2 takes one layer off
    each), sequence parallel, distributed optimizer, no recomputation, seq 8192, 16
    micro-batches: CP 2 fits an 80 GB H100 (the busiest stage is a middle one with 8 layers and
    15 micro-batches in flight); CP 1 does not, and the refusal names the numbers and the
    remedy."""
    job = _405b(2)
    mem = job.strategy.memory(job)
    cap = job.system.device.mem_bytes
    assert mem.total < 0.75 * cap
    # the activations: 8 layers x 15 in flight x Korthikanti's sbh/(t·c)·(10 + shaped 24)
    shape = job.shape
    per = layer_activation_bytes(shape, 1, 4096, 8, True, Checkpointing.NONE, True)
    assert mem.activations == pytest.approx(8 * 15 * per, rel=1e-9)
    no_cp = _405b(1)
    assert no_cp.strategy.memory(no_cp).total > cap
    with pytest.raises(InfeasibleJobError, match=r"GiB per rank.*parallelism\.context"):
        run_job(no_cp)
    # 126 layers do not split over 16 stages evenly: without the uneven stages it is refused
    even = _405b(2, None)
    msg = even.strategy.model_error(even.shape, even.training)
    assert "expected a divisor of the model's 126 layers" in msg


def _cfg(strategy: dict[str, Any], **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "t",
        "model": "gpt3-1.3b",
        "systems": ["dgx-a100"],
        "nodes": [2],
        "strategy": {"kind": "megatron", **strategy},
        "training": {"grad_accum_steps": 4, "seq_len": 512},
        "simulation": {"steps": 1, "warmup_steps": 0, "network": "analytic"},
    }
    cfg.update(over)
    return cfg


@pytest.mark.parametrize(
    ("par", "train", "needle"),
    [
        ({"tensor": 2, "context": 3}, {"seq_len": 768},
         "parallelism: got tensor 2 x context 3 x pipeline 1 = 6 on 16 devices"),
        ({"context": 4}, {"seq_len": 500}, "training.seq_len: got 500; expected a multiple of 2 x"),
        ({"tensor": 2, "context": 2, "data": 8}, {}, "parallelism.data: got 8; expected"),
        ({"tensor": 2, "context": 3, "nodes": 3}, {"seq_len": 768},
         "parallelism.context: got 3 with tensor 2 = 6 devices per context-parallel block"),
        ({"pipeline": 4, "first_stage_layers": 4}, {}, "parallelism.first_stage_layers: got 4"),
        ({"pipeline": 2, "first_stage_layers": 10, "last_stage_layers": 10}, {}, "expected the"),
        ({"pipeline": 4, "virtual_stages": 2, "last_stage_layers": 6}, {"grad_accum_steps": 8},
         "expected pipeline >= 2 without interleaving"),
        ({"pipeline": 5}, {}, "(or parallelism.first_stage_layers / last_stage_layers)"),
        ({"pipeline": 4, "account_for_embedding": True}, {},
         "parallelism.account_for_embedding: got true with pipeline 4 x virtual_stages 1 = 4; "
         "expected pipeline >= 2 and 4 dividing the 24 layers + 1 accounted"),
        ({"pipeline": 2, "virtual_stages": 4, "account_for_embedding": True}, {},
         "parallelism.account_for_embedding: got true with pipeline 2 x virtual_stages 4 = 8; "
         "expected pipeline >= 2 and 8 dividing the 24 layers + 1 accounted"),
        ({"pipeline": 2, "account_for_loss": True, "first_stage_layers": 12}, {},
         "expected one of the two ways"),
    ],
)  # fmt: skip
def test_bad_context_or_stages_is_one_line_naming_file_and_field(
    par: dict[str, Any], train: dict[str, Any], needle: str
) -> None:
    training = {"grad_accum_steps": 4, "seq_len": 512, **train}
    par = dict(par)
    nodes = par.pop("nodes", 2)
    with pytest.raises(ConfigError) as e:
        experiment_from_dict(_cfg({"parallelism": par}, training=training, nodes=[nodes])).jobs()
    msg = str(e.value)
    assert "\n" not in msg
    assert needle in msg


def test_context_and_stage_fields_change_results() -> None:
    def step(par: dict[str, Any]) -> tuple[float, float, float]:
        (job,) = experiment_from_dict(_cfg({"parallelism": par})).jobs()
        r = run_job(job)
        return r.step_time_s, r.peak_mem_GiB, r.comm_bytes_per_rank

    base = step({"tensor": 2, "pipeline": 4})
    assert step({"tensor": 2, "pipeline": 4, "context": 2}) != base
    assert step({"tensor": 2, "pipeline": 4, "first_stage_layers": 3}) != base
    assert step({"tensor": 2, "pipeline": 4, "last_stage_layers": 9}) != base
    # the even split given explicitly is the default
    assert step({"tensor": 2, "pipeline": 4, "first_stage_layers": 6}) == base


def test_405b_config_explains_bubble_and_each_dimension_apart() -> None:
    """configs/llama3-405b-tp-cp-pp.yaml (TP8 x CP2 x PP16, 7/8…8/7 layers): explain's parts
    sum to the step, with the bubble, TP, PP and DP apart; the CP ring is issued (K/V one node
    away, 2 MiB per exchange) and hides behind the attention steps."""
    from pathlib import Path

    from scaling.io.config import load_experiment
    from scaling.model.analysis.explain import explain_step

    path = Path(__file__).parent.parent / "configs" / "llama3-405b-tp-cp-pp.yaml"
    (job,) = load_experiment(path).jobs()
    assert job.strategy.label.startswith("megatron-t8-p16-c2-l7-7")
    res, tl = run_job_detailed(job, trace=True)
    br = explain_step(tl, 0)
    assert sum(v for _, v in br.parts()) == pytest.approx(br.step_s, rel=1e-9)
    assert br.bubble_s > 0.3 * br.step_s  # 16 micro-batches over 16 stages
    assert {"TP", "PP", "DP"} <= set(br.exposed_by_parallel)
    cp = [r for r in tl.collectives if r.key.kind == "cp"]
    assert cp and {r.nbytes for r in cp} >= {2.0 * 4096 * 1024 / 8 * 2}
    assert all(r.group.nodes == 2 for r in cp)
    assert 50 < res.peak_mem_GiB < 74.5  # 59.9 GiB: fits an 80 GB H100


def test_embedding_and_loss_accounting_is_the_same_split_as_given_layers() -> None:
    """--account-for-embedding/loss-in-pipeline-split: (126 + 2)/16 = 8 per stage, the first
    and last one block fewer: Llama 3's 7, 8 x 14, 7."""
    acc = MegatronSpec(8, 16, account_for_embedding=True, account_for_loss=True)
    assert acc.stage_layers(126) == [7] + [8] * 14 + [7]
    assert MegatronSpec(1, 5, account_for_embedding=True).stage_layers(24) == [4, 5, 5, 5, 5]
    assert acc.label.endswith("-acc-emb-acc-loss")

    def step(par: dict[str, Any], nodes: int = 2, order: str = "tp-dp-pp") -> tuple[float, float]:
        train = {"grad_accum_steps": 8, "seq_len": 512}
        (job,) = experiment_from_dict(
            _cfg({"parallelism": par, "order": order}, training=train, nodes=[nodes])
        ).jobs()
        r = run_job(job)
        return r.step_time_s, r.peak_mem_GiB

    # 24 layers + 2 over 2 stages: 12 and 12, as the even split
    given = step({"tensor": 2, "pipeline": 2, "first_stage_layers": 12, "last_stage_layers": 12})
    both = {"account_for_embedding": True, "account_for_loss": True}
    assert step({"tensor": 2, "pipeline": 2, **both}) == given
    assert step({"tensor": 2, "pipeline": 2}) == given
    # 24 + 1 over 5 stages (40 devices): 4 on the first, as first_stage_layers 4
    five = {"tensor": 1, "pipeline": 5}
    acc5 = step({**five, "account_for_embedding": True}, nodes=5)
    assert acc5 == step({**five, "first_stage_layers": 4}, nodes=5)
    assert acc5 != step({**five, "first_stage_layers": 8}, nodes=5)


def test_every_rank_simulated_gives_the_representative_result_with_context() -> None:
    spec = MegatronSpec(2, 2, context=2, first_stage_layers=1, last_stage_layers=3)
    job = replace(_job(spec, 1, 4, _gqa(4)), sim=SimSpec(steps=1, warmup_steps=0, network="flow"))
    one = run_job(job)
    every = run_job(replace(job, sim=replace(job.sim, simulate_all_ranks=True)))
    assert every.step_time_s == pytest.approx(one.step_time_s, rel=1e-12)


def test_interleaved_accounting_takes_a_block_from_the_first_and_last_chunk() -> None:
    """Megatron-Core ``get_num_layers_to_build`` with ``vp_size``: (126 + 2)/(8 x 8) = 2 blocks
    per chunk, one on the first stage's first chunk and on the last stage's last chunk (Llama
    3.1 405B's recipe, PP8 x VP8); virtual stage ``c·p + k`` holds the blocks after every
    earlier virtual stage's."""
    acc = MegatronSpec(8, 8, virtual_stages=8, account_for_embedding=True, account_for_loss=True)
    per = acc.chunk_layers(126)
    assert per[0] == [1] + [2] * 7 and per[7] == [2] * 7 + [1]
    assert all(row == [2] * 8 for row in per[1:7])
    assert acc.stage_layers(126) == [15] + [16] * 6 + [15]
    blocks = [stage_blocks(acc, 126, k) for k in range(8)]
    assert sorted(b for st in blocks for ch in st for b in ch) == list(range(126))
    assert blocks[0][0] == [0] and blocks[1][0] == [1, 2] and blocks[0][1] == [15, 16]
    assert MegatronSpec(1, 2, virtual_stages=2).chunk_layers(8) == [[2, 2], [2, 2]]


def test_interleaved_accounting_step_lies_between_the_even_splits_around_it() -> None:
    """6 blocks + embedding + loss over 2 stages x 2 chunks: chunks of [1, 2] and [2, 1] blocks,
    so the step is longer than 4 blocks' even split ([1, 1] each) and shorter than 8 blocks'
    ([2, 2] each): every chunk's blocks run (embedding and head left out)."""

    def step(layers: int, **acc: bool) -> float:
        spec = NoHead(1, 2, virtual_stages=2, **acc)
        return run_job(_job(spec, 1, 4, _gqa(layers), seq=1024)).step_time_s

    both = step(6, account_for_embedding=True, account_for_loss=True)
    assert step(4) < both < step(8)
