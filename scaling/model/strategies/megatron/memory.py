"""Peak memory of a Megatron rank (Korthikanti et al. 2022; Megatron-LM
``docs/source/distrib_optimizer.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaling.model.hardware.compute import DTYPE_BYTES
from scaling.model.hardware.memory import MemoryBreakdown
from scaling.model.hardware.moe import MoEShape
from scaling.model.hardware.workload import Checkpointing, TransformerShape
from scaling.model.strategies.megatron.experts import dense_block_params, stage_blocks

if TYPE_CHECKING:
    from scaling.model.job import Job
    from scaling.model.strategies.megatron.spec import MegatronSpec

#: Bytes per parameter Megatron's Adam keeps beyond the model weights and gradients under mixed
#: precision: fp32 master weight + two fp32 moments (``docs/source/distrib_optimizer.md``).
MASTER_AND_MOMENTS_BYTES = 12.0
#: Adam's two moments alone (an fp32 model is its own master copy).
MOMENTS_BYTES = 8.0


def layer_activation_bytes(
    shape: TransformerShape,
    b: int,
    s: int,
    t: int,
    sp: bool,
    checkpointing: Checkpointing,
    flash: bool,
) -> float:
    """Activation bytes one block stores for one micro-batch on one TP rank (16-bit activations).

    Korthikanti et al. 2022, §4.1 and Table 2: no recompute ``sbh(10 + 24/t + 5as/(ht))``; with
    sequence parallelism ``sbh/t · (34 + 5as/h)``; selective recompute drops the ``5as/h``
    attention term; full recompute keeps the block input, ``2sbh`` (``/t`` with sequence
    parallelism). A fused (flash) attention kernel never stores the ``a·s²`` tensors either.

    The ``24/t`` is their tensor-by-tensor sum for multi-head attention and a 4h GeLU MLP: Q
    and K (4), V (2), the projection's input (2), the MLP's first output (8) and the GeLU's
    output (8), in units of ``sbh`` bytes. Here the same tensors take the model's shape:
    K and V ``kv_dim/h`` of Q's size (grouped-query attention), the MLP's first output
    ``n_in·f/h`` (gated: gate and up) and the activation's output ``f/h`` — which gives back
    24 for their shape. The unsharded 10 (two norms' inputs 4, the QKV and MLP inputs 4, two
    dropout masks 2) does not depend on the shape.
    """
    sbh, a, h = float(s * b * shape.hidden), shape.n_heads, shape.hidden
    if checkpointing is Checkpointing.FULL:
        return 2.0 * sbh / (t if sp else 1)
    attn = 0.0 if (flash or checkpointing is Checkpointing.SELECTIVE) else 5.0 * a * s / h
    g, f = shape.kv_dim / h, shape.ffn_hidden / h
    n_in = 2 if shape.gated_mlp else 1
    sharded = (2.0 + 2.0 * g) + 2.0 * g + 2.0 + 2.0 * f * (n_in + 1)
    if sp:
        return sbh / t * (10.0 + sharded + attn)
    return sbh * (10.0 + sharded / t + attn / t)


def in_flight_micro_batches(p: int, v: int, m: int, stage: int) -> float:
    """Micro-batches whose activations stage ``stage`` holds at its peak (in units of the stage's
    layers): 1F1B ``min(p − stage, m)`` (SC'21 §2.2.1); interleaved (Korthikanti et al. §4.2.3)
    ``× (1 + (p − 1)/(p·v))`` on the first stage."""
    base = float(min(p - stage, m))
    if v > 1:
        base *= 1.0 + (p - 1) / (p * v)
    return base


def megatron_memory(job: Job, spec: MegatronSpec) -> MemoryBreakdown:
    """Peak memory of one Megatron rank, bytes: weights, gradients and optimizer states of the
    rank's ``1/t`` of its stage's layers (plus the embedding on the first and the output layer
    on the last stage), activations of the schedule's in-flight micro-batches on its ``1/c`` of
    the sequence (context parallelism); the largest over the stages (uneven stages: a middle
    stage with more layers may hold more). The distributed optimizer shards over the ``d·c``
    ranks of the data-parallel group with context parallelism (Megatron-Core
    ``DistributedOptimizer`` on ``get_data_parallel_group(with_context_parallel=True)``)."""
    shape, tr = job.shape, job.training
    t, p, v, c = spec.tensor, spec.pipeline, spec.virtual_stages, spec.context
    d = max(spec.data_parallel(job.devices), 1) * c
    seq = tr.seq_len // c
    e = DTYPE_BYTES[tr.dtype]
    g = DTYPE_BYTES[tr.param_dtype]
    state = MASTER_AND_MOMENTS_BYTES if e < 4 else MOMENTS_BYTES
    if spec.distributed_optimizer:
        state /= d
    per_layer = layer_activation_bytes(
        shape,
        tr.micro_batch,
        seq,
        t,
        spec.sequence_parallel,
        tr.checkpointing,
        tr.flash_attention,
    )
    even = [shape.n_layers // p] * p
    per_stage = spec.stage_layers(shape.n_layers) if spec.uneven_stages else even
    sbh = float(seq * tr.micro_batch * shape.hidden)
    best: MemoryBreakdown | None = None
    # the first and last stage, and (uneven) the fullest middle stage nearest the front
    stages = {0, p - 1}
    if p > 2:
        stages.add(max(range(1, p - 1), key=lambda k: (per_stage[k], -k)))
    for stage in sorted(stages):
        layers = per_stage[stage]
        n = layers * shape.layer_params() / t
        moe_acts = n_exp = 0.0
        if isinstance(shape, MoEShape):  # megatron.experts: the routed experts apart
            n, n_exp, moe_acts = moe_stage_terms(job, spec, stage, per_layer)
        if stage == 0:
            n += shape.embedding_params() / t
        if stage == p - 1:
            n += (shape.head_params() + (shape.embedding_params() if p > 1 else 0)) / t
        in_flight = in_flight_micro_batches(p, v, tr.grad_accum, stage)
        acts = (layers * per_layer + moe_acts) * in_flight
        if tr.checkpointing is Checkpointing.FULL:
            # one block's working set while it is recomputed
            acts += layer_activation_bytes(
                shape,
                tr.micro_batch,
                seq,
                t,
                spec.sequence_parallel,
                Checkpointing.NONE,
                tr.flash_attention,
            )
        if stage == 0:
            acts += in_flight * sbh * e  # embedding output (dropout input), Korthikanti §4.3
        if stage == p - 1:
            # 16-bit logits and their fp32 copy for the vocabulary-parallel loss
            acts += seq * tr.micro_batch * shape.vocab / t * (e + 4.0)
        edp = d * t // (spec.expert_parallel * spec.etp)
        exp_state = (MASTER_AND_MOMENTS_BYTES if e < 4 else MOMENTS_BYTES) / (
            edp if spec.distributed_optimizer else 1
        )
        mem = MemoryBreakdown(
            weights=(n + n_exp) * (e if e < 4 else 4),
            gradients=(n + n_exp) * g,
            optimizer=n * state + n_exp * exp_state,
            activations=acts,
            # a MoE block's dispatch all-to-all send and receive buffers
            comm_buffers=moe_comm_buffers(job, spec),
            reserved=job.system.device.reserved_mem_bytes,
        )
        if best is None or mem.total > best.total:
            best = mem
    assert best is not None
    return best


def moe_stage_terms(job: Job, spec: MegatronSpec, stage: int, per_layer: float) -> tuple[
    float, float, float]:  # fmt: skip
    """A MoE model's stage on one rank: (parameters outside the routed experts, ``1/t`` of
    them; the routed experts' parameters, ``1/(EP·ETP)``; activation bytes per in-flight
    micro-batch that its MoE blocks hold beyond ``per_layer`` each, which counts the dense
    MLP). A MoE block holds, instead of the dense MLP's inputs and outputs, the routed
    token-copies (``k`` per token, the busiest rank's share at the mean) through the expert
    MLP and the permuted dispatch input and combine output (``2·k·h`` per token), and the
    shared experts' MLP; full recomputation keeps only the block input (no change)."""
    shape, tr = job.shape, job.training
    assert isinstance(shape, MoEShape)
    t, m = spec.tensor, shape.moe
    blocks = [i for ch in stage_blocks(spec, shape.n_layers, stage) for i in ch]
    n_moe = sum(map(shape.is_moe_layer, blocks))
    dense = sum(dense_block_params(shape, i) for i in blocks) / t
    experts = n_moe * shape.routed_expert_params() / (spec.expert_parallel * spec.etp)
    if tr.checkpointing is Checkpointing.FULL or n_moe == 0:
        return dense, experts, 0.0
    e = DTYPE_BYTES[tr.dtype]
    h = shape.hidden
    tok = tr.micro_batch * tr.seq_len / spec.context
    tl = tok / t if spec.sequence_parallel else tok
    n_in = 2 if shape.gated_mlp else 1
    # the dense MLP's share of per_layer: its first output and activation output (per token)
    dense_mlp = e * tl * (n_in + 1) * shape.ffn_hidden * (1 if spec.sequence_parallel else 1 / t)
    routed = e * tl * m.top_k * ((n_in + 1) * m.expert_ffn + 2 * h)
    shared = e * tok * (n_in + 1) * m.shared_width / t
    return dense, experts, n_moe * (routed + shared - dense_mlp)


def moe_comm_buffers(job: Job, spec: MegatronSpec) -> float:
    """A MoE block's dispatch all-to-all send and receive buffers of one rank, bytes (0 for a
    dense model or without expert parallelism)."""
    shape, tr = job.shape, job.training
    if not isinstance(shape, MoEShape) or spec.expert_parallel == 1:
        return 0.0
    tok = tr.micro_batch * tr.seq_len / spec.context
    tl = tok / spec.tensor if spec.sequence_parallel else tok
    return 2.0 * tl * shape.moe.top_k * shape.hidden * DTYPE_BYTES[tr.dtype]
