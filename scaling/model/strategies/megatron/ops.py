"""One TP rank's kernels of a block, the embedding and the output layer, and the segments
between the block's TP communication points (Megatron-LM ``megatron/core/tensor_parallel/
layers.py``; Korthikanti et al. 2022 for sequence parallelism)."""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model.hardware.compute import (
    ComputeModel,
    FlashShape,
    GemmShape,
    Op,
    PhaseCost,
)
from scaling.model.hardware.workload import Checkpointing, TransformerShape

#: Transformer Engine userbuffer overlap (``--tp-comm-overlap``; TE ``module/base.py``
#: ``initialize_ub``, NeMo ``collections/llm/recipes/tp_overlap_configs/userbuffers.py``, the H100
#: configurations): the all-gather before a column-parallel GEMM (QKV, MLP-in forward; projection,
#: MLP-out dgrad) is a ring exchange of the ``t`` sequence shards, one shard per GEMM chunk; the
#: reduce-scatter after a row-parallel GEMM (projection, MLP-out forward) is pipelined over
#: ``UB_PIPELINE_SPLITS`` chunks (TE's ``num_splits`` = 4); the backward of a column-parallel
#: linear overlaps the re-gather of its input with the dgrad GEMM and the reduce-scatter of the
#: input gradient with the wgrad GEMM (``bulk``).
UB_PIPELINE_SPLITS = 4
#: SMs the userbuffer communication kernels take from the GEMM they overlap, by method (TE
#: launches the GEMM on ``sm_count − num_sm`` SMs with ``set_sm_margin``; NeMo's H100 configs in
#: ``tp_overlap_configs/userbuffers.py``): 1 for the ring exchange (copy-engine peer writes;
#: range 0–2), 24 for the pipelined reduce-scatter (range 16–24), 4 for bulk (range 2–24). Over the
#: device's ``compute_units`` the overlapped GEMM chunk runs ``1 / (1 − num_sm / units)`` longer
#: (:func:`ub_slowdown`).
UB_NUM_SM = {"ring_exchange": 1, "pipeline": 24, "bulk": 4}


def ub_error(compute_units: int) -> str:
    """Why Transformer Engine's userbuffer overlap cannot run on a device of ``compute_units``
    ("" when it can): every method must leave the overlapped GEMM at least one unit."""
    method, need = max(UB_NUM_SM.items(), key=lambda kv: kv[1])
    if need < compute_units:
        return ""
    return (
        f"tp_comm_overlap: got true on a device of {compute_units} compute units; expected false"
        f" (Transformer Engine's {method} overlap takes {need} of them, ops.UB_NUM_SM, and the"
        " overlapped GEMM needs the rest)"
    )


def ub_slowdown(compute_units: int) -> dict[str, float]:
    """How much longer a GEMM chunk takes while each userbuffer method overlaps it (× time)."""
    return {k: 1.0 / (1.0 - n / compute_units) for k, n in UB_NUM_SM.items()}


def _mm(name: str, m: int, k: int, n: int, e: int, bias: bool = False, fp8: bool = True) -> Op:
    """A GEMM; ``fp8``: a Transformer Engine linear of the block (FP8 under an FP8 recipe; the
    output layer is Megatron-Core's own ColumnParallelLinear, BF16: model.hardware.precision)."""
    g = GemmShape(m, k, n)
    nbytes = float(e * (m * k + k * n + m * n))
    return Op(name, 2.0 * m * k * n, nbytes, True, gemm=g, bias=bias, fp8=fp8)


def tp_block_ops(
    shape: TransformerShape, b: int, s: int, e: int, flash: bool, t: int, sp: bool
) -> tuple[list[Op], list[Op]]:
    """One TP rank's kernels of one block's forward, split at the two TP communication points:
    (attention half: norm, QKV, attention, projection; MLP half: residual, norm, MLP in,
    activation, MLP out, residual). GEMMs are ``1/t`` along the split dimension; element-wise
    ops see all tokens, or ``1/t`` of them with sequence parallelism."""
    tok = b * s
    h, f, kv = shape.hidden, shape.ffn_hidden, shape.kv_dim
    tl = tok // t if sp else tok
    n_in = 2 if shape.gated_mlp else 1
    attn_flops = 4.0 * tok * s * h / t
    first = [
        Op("residual2", float(tl * h), 3.0 * e * tl * h, False),  # the previous block's
        Op("ln1", 5.0 * tl * h, 2.0 * e * tl * h, False),
        _mm("qkv", tok, h, (h + 2 * kv) // t, e, shape.bias),
    ]
    if flash:
        first.append(
            Op(
                "attention",
                attn_flops,
                float(e * tok * (2 * h + 2 * kv) / t),
                True,
                flash=FlashShape(s, causal=True),
            )
        )
    else:
        bh, dh = b * shape.n_heads // t, shape.head_dim
        scores = float(bh * s * s)
        drop = (2.0 * e + 1.0) * scores
        first += [
            Op(
                "attn.scores",
                attn_flops / 2,
                e * tok * (h + kv) / t + e * scores,
                True,
                gemm=GemmShape(s, dh, s, bh),
            ),
            Op(
                "attn.softmax", 5.0 * scores, 2.0 * e * scores, False, backward_bytes=3 * e * scores
            ),
            Op("attn.dropout", scores, drop, False, backward_bytes=drop),
            Op(
                "attn.av",
                attn_flops / 2,
                e * scores + e * tok * (kv + h) / t,
                True,
                gemm=GemmShape(s, s, dh, bh),
            ),
        ]
    first.append(_mm("proj", tok, h // t, h, e, shape.bias))
    second = [
        Op("residual1", float(tl * h), 3.0 * e * tl * h, False),
        Op("ln2", 5.0 * tl * h, 2.0 * e * tl * h, False),
        _mm("fc_in", tok, h, n_in * f // t, e, shape.bias),
        Op("act", 8.0 * tok * f / t, float(e * tok * (n_in + 1) * f / t), False),
        _mm("fc_out", tok, f // t, h, e, shape.bias),
    ]
    return first, second


def tp_head_ops(
    shape: TransformerShape, b: int, s: int, e: int, t: int, sp: bool
) -> tuple[list[Op], list[Op]]:
    """(first stage: vocabulary-parallel embedding; last stage: final norm, the ``1/t`` logits
    GEMM and the vocabulary-parallel cross-entropy, ``megatron/core/tensor_parallel/
    cross_entropy.py``)."""
    tok = b * s
    h, vt = shape.hidden, shape.vocab // t
    tl = tok // t if sp else tok
    tv = float(tok * vt)
    emb = [Op("embedding", float(tok * h), 2.0 * e * tok * h, False)]
    head = [
        Op("ln_f", 5.0 * tl * h, 2.0 * e * tl * h, False),
        _mm("logits", tok, h, vt, e, fp8=False),
        Op("cross_entropy", 5.0 * tv, tv * (e + 12.0), False, backward_bytes=tv * (e + 20.0)),
    ]
    return emb, head


def phase_cost(cm: ComputeModel, kernels: list[Op]) -> PhaseCost:
    """Kernels issued back to back (``ComputeModel.cost``'s rule, for any list of kernels)."""
    time = sum(cm.op_time(k) for k in kernels)
    return PhaseCost(
        max(time, len(kernels) * cm.device.host_launch_s),
        sum(k.flops for k in kernels),
        sum(k.bytes for k in kernels),
        len(kernels),
    )


@dataclass(frozen=True, slots=True)
class BlockCost:
    """One TP rank's block, in the segments between its TP communication points (PhaseCosts).

    Forward: ``f1`` → comm → ``f2`` → comm. Backward: ``b2`` → comm ∥ ``b2w`` (wgrad of MLP in)
    → ``b1`` → comm ∥ ``b1w`` (wgrad of QKV) → ``b0`` (first norm). ``recompute``: full
    activation checkpointing re-runs the forward (and its communication) before the backward;
    ``extra_bwd``: selective recompute's attention core, added to ``b1``.
    """

    f1: PhaseCost
    f2: PhaseCost
    b2: PhaseCost
    b2w: PhaseCost
    b1: PhaseCost
    b1w: PhaseCost
    b0: PhaseCost
    recompute: bool
    parts: BlockParts | None = None


def block_cost(
    cm: ComputeModel,
    shape: TransformerShape,
    b: int,
    s: int,
    t: int,
    sp: bool,
    checkpointing: Checkpointing,
    flash: bool,
) -> BlockCost:
    """Segments of one block on one TP rank (see :class:`BlockCost`)."""
    first, second = tp_block_ops(shape, b, s, cm.dtype_bytes, flash, t, sp)
    bk1 = cm.kernels(first, backward=True)
    bk2 = cm.kernels(second, backward=True)
    b2w = [k for k in bk2 if k.name.startswith("fc_in.") and k.name != "fc_in.dgrad"]
    b2 = [k for k in bk2 if k not in b2w]
    b1w = [k for k in bk1 if k.name.startswith("qkv.") and k.name != "qkv.dgrad"]
    b0 = [k for k in bk1 if k.name in ("ln1", "residual2")]
    b1 = [k for k in bk1 if k not in b1w and k not in b0]
    extra: list[Op] = []
    if checkpointing is Checkpointing.SELECTIVE:
        extra = [op for op in first if op.name.startswith("attn.")]
    return BlockCost(
        phase_cost(cm, first),
        phase_cost(cm, second),
        phase_cost(cm, b2),
        phase_cost(cm, b2w),
        phase_cost(cm, b1 + extra),
        phase_cost(cm, b1w),
        phase_cost(cm, b0),
        checkpointing is Checkpointing.FULL,
        block_parts(cm, first, second, bk1, bk2, extra),
    )


@dataclass(frozen=True, slots=True)
class BlockParts:
    """One TP rank's block split at every linear (s), for the sequence-parallel schedules whose
    communication sits between single GEMMs: the backward's re-gather of the linear's input for
    its weight gradient, and Transformer Engine's userbuffer overlap (``--tp-comm-overlap``).

    Forward: ``a_pre`` (residual, first norm) → ``qkv`` → ``attn`` → ``proj`` → ``m_pre``
    (residual, second norm) → ``fc1`` → ``act`` → ``fc2``. Backward: ``fc2_d``, ``fc2_w`` (MLP-out
    dgrad, wgrad + bias grad), ``act_b``, ``fc1_d``, ``fc1_w``, ``m_post`` (second norm and
    residual), ``proj_d``, ``proj_w``, ``attn_b`` (with selective recompute's attention
    forward), ``qkv_d``, ``qkv_w``, ``a_post`` (first norm and residual).
    """

    a_pre: float
    qkv: float
    attn: float
    proj: float
    m_pre: float
    fc1: float
    act: float
    fc2: float
    fc2_d: float
    fc2_w: float
    act_b: float
    fc1_d: float
    fc1_w: float
    m_post: float
    proj_d: float
    proj_w: float
    attn_b: float
    qkv_d: float
    qkv_w: float
    a_post: float


def block_parts(
    cm: ComputeModel,
    first: list[Op],
    second: list[Op],
    bk1: list[Op],
    bk2: list[Op],
    extra: list[Op],
) -> BlockParts:
    """Price the parts of :class:`BlockParts` from one block's forward halves and their
    backward kernels (``extra``: selective recompute's attention forward)."""
    fwd_attn = [k for k in first if k.name == "attention" or k.name.startswith("attn.")]
    bwd_attn = [k for k in bk1 if k.name == "attention" or k.name.startswith("attn.")]
    return BlockParts(
        phase_cost(cm, first[:2]).time_s,
        phase_cost(cm, [k for k in first if k.name == "qkv"]).time_s,
        phase_cost(cm, fwd_attn).time_s,
        phase_cost(cm, [k for k in first if k.name == "proj"]).time_s,
        phase_cost(cm, second[:2]).time_s,
        phase_cost(cm, [k for k in second if k.name == "fc_in"]).time_s,
        phase_cost(cm, [k for k in second if k.name == "act"]).time_s,
        phase_cost(cm, [k for k in second if k.name == "fc_out"]).time_s,
        _pick(cm, bk2, ("fc_out.dgrad",)),
        _pick(cm, bk2, ("fc_out.wgrad", "fc_out.bgrad")),
        _pick(cm, bk2, ("act",)),
        _pick(cm, bk2, ("fc_in.dgrad",)),
        _pick(cm, bk2, ("fc_in.wgrad", "fc_in.bgrad")),
        _pick(cm, bk2, ("residual1", "ln2")),
        _pick(cm, bk1, ("proj.dgrad",)),
        _pick(cm, bk1, ("proj.wgrad", "proj.bgrad")),
        phase_cost(cm, bwd_attn + extra).time_s,
        _pick(cm, bk1, ("qkv.dgrad",)),
        _pick(cm, bk1, ("qkv.wgrad", "qkv.bgrad")),
        _pick(cm, bk1, ("residual2", "ln1")),
    )


def _pick(cm: ComputeModel, kernels: list[Op], names: tuple[str, ...]) -> float:
    """Time of the kernels of ``kernels`` named ``names``, back to back (s)."""
    return phase_cost(cm, [k for k in kernels if k.name in names]).time_s
