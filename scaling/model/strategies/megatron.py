"""Megatron-LM tensor + pipeline + data parallelism as SimPy processes (one per pipeline stage).

What is modelled, with the rule's source:

* **Tensor parallelism** (Shoeybi et al. 2019 §3; Megatron-LM ``megatron/core/tensor_parallel/
  layers.py``): per block, the QKV and MLP-in linears are column-parallel, the attention
  projection and MLP-out row-parallel, the heads split ``t`` ways; every rank computes ``1/t``
  of each GEMM. Without sequence parallelism each block's forward ends each of its two halves
  with an all-reduce of the ``b·s·h`` activation (the ``g`` operator) and its backward issues two
  all-reduces of the same size (the ``f`` operator's backward), each overlapped with the
  weight-gradient GEMM of the column-parallel linear it follows
  (``LinearWithGradAccumulationAndAsyncCommunication``: the all-reduce is launched before the
  wgrad GEMM and waited for after it). With **sequence parallelism** (Korthikanti et al. 2022
  §4.2.2) each all-reduce becomes a reduce-scatter and an all-gather of the same total volume:
  forward all-gather before QKV / MLP-in and reduce-scatter after the projection / MLP-out;
  backward the reverse; layer norms, dropout and residuals run on ``1/t`` of the tokens. The
  backward's re-all-gather of the sequence-sharded input for the wgrad GEMM (overlapped with the
  dgrad GEMM) is not modelled.
* **Pipeline parallelism** (Narayanan et al. SC'21 §2.2; ``megatron/core/pipeline_parallel/
  schedules.py``): ``forward_backward_pipelining_without_interleaving`` (1F1B: stage ``k`` runs
  ``min(p−k−1, m)`` warm-up forwards, then one forward / one backward, then the cool-down
  backwards) and ``forward_backward_pipelining_with_interleaving`` (``v`` model chunks per stage;
  warm-up ``2(p−k−1) + (v−1)p`` micro-steps; micro-step ``i`` runs chunk ``(i mod pv) // p``
  forward, ``v−1−`` that backward, micro-batch ``(i // pv)·p + i mod p``). Activations (and
  their gradients) are sent point to point to the next (previous) virtual stage as soon as they
  are computed and waited for by the receiver only (the ``overlap_p2p_comm`` behaviour); each
  TP rank sends ``1/t`` of the ``b·s·h`` tensor (SC'21 §4.1 scatter/gather optimisation; with
  sequence parallelism the tensor is already sharded). The all-gather that re-assembles a
  scattered tensor on the receiver is not modelled.
* **Data parallelism** (``megatron/core/distributed``): after the pipeline flush each stage
  all-reduces its gradients (one buffer per model chunk, in the parameter dtype: fp32 main
  gradients under mixed precision) over the ``d`` replicas of the stage, the ``t`` TP ranks'
  groups running side by side; with the **distributed optimizer** (ZeRO-1, ``docs/source/
  distrib_optimizer.md``) a reduce-scatter of the gradients and, after the optimizer step on the
  ``1/d`` shard, an all-gather of the updated 16-bit parameters. The optimizer step updates the
  rank's parameters (``1/d`` of them with the distributed optimizer).
* **Placement**: rank ``r`` has coordinates (tp, pp, dp) with TP innermost; ``order`` chooses
  whether PP (``tp-pp-dp``, the default here: consecutive stages on neighbouring devices) or DP
  (``tp-dp-pp``, Megatron-LM's ``initialize_model_parallel`` order ``tp-cp-ep-dp-pp``) comes
  next. Each collective runs on the devices it spans (``_group_of``); groups whose ranks are
  not consecutive (a DP group strided over nodes) are priced as the same number of consecutive
  nodes with the same ranks per node, which crosses the same link classes; the stand-ins of
  stages whose groups share nodes take disjoint local devices there, as the real groups do.
  A placement whose DP groups would straddle nodes unevenly (the inner block, ``t·p`` under
  ``tp-pp-dp``, a DP group's stride, or ``t·d`` under ``tp-dp-pp``, a DP group's span, neither
  a divisor nor a multiple of the devices per node) is refused by the config
  (``megatron_size_error``).

Symmetry: every TP rank and every DP replica of a stage does the same work, so one
representative rank per pipeline stage is simulated (``p`` processes); its collectives span their
whole groups, as DDP's and FSDP's single simulated rank does. Rank 0 (stage 0) carries the
step's log; the step ends when every stage has finished its optimizer step.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy

from scaling.model.comm.collectives import CollectiveKey, Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import (
    DTYPE_BYTES,
    ComputeModel,
    FlashShape,
    GemmShape,
    MicroBatchCompute,
    Op,
    PhaseCost,
    op_category,
)
from scaling.model.hardware.memory import MemoryBreakdown
from scaling.model.hardware.workload import Checkpointing, TransformerShape
from scaling.model.strategies.rank import ComputeStream, RankLog

if TYPE_CHECKING:
    from scaling.model.job import Job

#: Trace tracks of the three kinds of communication (the trace writer's known streams: TP and PP
#: on the node's communication stream, DP on the replicate stream as HSDP's replication); the
#: parallel dimension itself is the key's ``kind`` (``tp``, ``pp``, ``dp``).
STREAMS = {"tp": "comm", "pp": "comm", "dp": "comm:replicate"}
#: Placements: the order of the parallel dimensions from innermost (consecutive ranks) out.
ORDERS = ("tp-pp-dp", "tp-dp-pp")
#: Bytes per parameter Megatron's Adam keeps beyond the model weights and gradients under mixed
#: precision: fp32 master weight + two fp32 moments (``docs/source/distrib_optimizer.md``).
MASTER_AND_MOMENTS_BYTES = 12.0
#: Adam's two moments alone (an fp32 model is its own master copy).
MOMENTS_BYTES = 8.0


@dataclass(frozen=True, slots=True)
class MegatronSpec:
    """Megatron-LM parallelism knobs (names as Megatron-LM's arguments).

    Attributes:
        tensor: tensor-parallel size ``t`` (``--tensor-model-parallel-size``).
        pipeline: pipeline stages ``p`` (``--pipeline-model-parallel-size``).
        virtual_stages: model chunks per stage ``v`` (``--num-virtual-stages-per-pipeline-rank``;
            1 = the non-interleaved 1F1B schedule).
        sequence_parallel: Korthikanti et al.'s sequence parallelism (``--sequence-parallel``).
        order: rank placement, innermost first (:data:`ORDERS`).
        distributed_optimizer: ZeRO-1 sharding of the optimizer over DP
            (``--use-distributed-optimizer``).
        overlap_grad_reduce: reduce each layer's gradients (one bucket per block) as soon as
            the last micro-batch's backward has produced them, overlapping the rest of the
            backward (``--overlap-grad-reduce``); else every gradient after the flush.
    """

    tensor: int = 1
    pipeline: int = 1
    virtual_stages: int = 1
    sequence_parallel: bool = False
    order: str = "tp-pp-dp"
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False

    @property
    def model_parallel(self) -> int:
        """Ranks one model replica spans (``t·p``)."""
        return self.tensor * self.pipeline

    @property
    def label(self) -> str:
        """``megatron-tT-pP[-vV][-sp][-zero1][-overlap][-ORDER]``: the order (e.g.
        ``-tp-dp-pp``) only when it is not the default ``tp-pp-dp``, so that strategies differing
        only in placement have different labels (the results' ``strategy`` key)."""
        out = f"megatron-t{self.tensor}-p{self.pipeline}"
        if self.virtual_stages > 1:
            out += f"-v{self.virtual_stages}"
        if self.sequence_parallel:
            out += "-sp"
        if self.distributed_optimizer:
            out += "-zero1"
        if self.overlap_grad_reduce:
            out += "-overlap"
        if self.order != ORDERS[0]:
            out += f"-{self.order}"
        return out

    def data_parallel(self, devices: int) -> int:
        """Replicas ``d = devices / (t·p)``."""
        return devices // self.model_parallel

    def memory(self, job: Job) -> MemoryBreakdown:
        """Peak memory of the busiest rank (the larger of the first and the last stage)."""
        return megatron_memory(job, self)

    def compute_breakdown(self, job: Job) -> list[tuple[str, float]]:
        """Rank 0's (stage 0, first TP rank) forward + backward device time in one step, s, by
        kind of kernel (``op_category``), largest first: its ``1/t`` of the kernels of its
        stage's blocks (and recomputation) and the embedding, and with one stage (``p == 1``,
        rank 0 is also the last stage) the output layer and loss, × the micro-batches."""
        tr = job.training
        cm = ComputeModel(job.system.device, tr.dtype, sparse=tr.sparsity)
        e, t = cm.dtype_bytes, self.tensor
        first, second = tp_block_ops(
            job.shape, tr.micro_batch, tr.seq_len, e, tr.flash_attention, t, self.sequence_parallel
        )
        emb, head = tp_head_ops(job.shape, tr.micro_batch, tr.seq_len, e, t, self.sequence_parallel)
        fwd = first + second
        recompute: list[Op] = []
        if tr.checkpointing is Checkpointing.FULL:
            recompute = fwd
        elif tr.checkpointing is Checkpointing.SELECTIVE:
            recompute = [op for op in first if op.name.startswith("attn.")]
        layers = job.shape.n_layers // self.pipeline
        phases = [
            (cm.kernels(fwd), layers),
            (cm.kernels(fwd, backward=True), layers),
            (cm.kernels(recompute), layers),
            (cm.kernels(emb), 1),
            (cm.kernels(emb, backward=True), 1),
        ]
        if self.pipeline == 1:  # rank 0 runs the last (virtual) stage's head too
            phases += [(cm.kernels(head), 1), (cm.kernels(head, backward=True), 1)]
        out: dict[str, float] = {}
        gap = cm.device.kernel_launch_s
        for kernels, reps in phases:
            for k in kernels:
                label = op_category(k.name)
                out[label] = out.get(label, 0.0) + reps * (cm.op_time(k) - gap) * tr.grad_accum
                out["kernel gaps"] = out.get("kernel gaps", 0.0) + reps * gap * tr.grad_accum
        return sorted(out.items(), key=lambda kv: -kv[1])

    def plan(self, job: Job, compute: ComputeModel, mb: MicroBatchCompute) -> MegatronWork:
        """Per-stage compute segments, groups and the pipeline order of every stage."""
        return MegatronWork.build(job, self, compute)


# ---- memory -------------------------------------------------------------------------------------


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

    Korthikanti et al. 2022, Table 2: no recompute ``sbh(10 + 24/t + 5as/(ht))``; with sequence
    parallelism ``sbh/t · (34 + 5as/h)``; selective recompute drops the ``5as/h`` attention
    term; full recompute keeps the block input, ``2sbh`` (``/t`` with sequence parallelism).
    A fused (flash) attention kernel never stores the ``a·s²`` tensors either.
    """
    sbh, a, h = float(s * b * shape.hidden), shape.n_heads, shape.hidden
    if checkpointing is Checkpointing.FULL:
        return 2.0 * sbh / (t if sp else 1)
    attn = 0.0 if (flash or checkpointing is Checkpointing.SELECTIVE) else 5.0 * a * s / h
    if sp:
        return sbh / t * (34.0 + attn)
    return sbh * (10.0 + 24.0 / t + attn / t)


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
    on the last stage), activations of the schedule's in-flight micro-batches; the larger of the
    first and last stage."""
    shape, tr = job.shape, job.training
    t, p, v = spec.tensor, spec.pipeline, spec.virtual_stages
    d = max(spec.data_parallel(job.devices), 1)
    e = DTYPE_BYTES[tr.dtype]
    g = DTYPE_BYTES[tr.param_dtype]
    state = MASTER_AND_MOMENTS_BYTES if e < 4 else MOMENTS_BYTES
    if spec.distributed_optimizer:
        state /= d
    per_layer = layer_activation_bytes(
        shape,
        tr.micro_batch,
        tr.seq_len,
        t,
        spec.sequence_parallel,
        tr.checkpointing,
        tr.flash_attention,
    )
    layers = shape.n_layers // p
    sbh = float(tr.seq_len * tr.micro_batch * shape.hidden)
    best: MemoryBreakdown | None = None
    for stage in {0, p - 1}:
        n = layers * shape.layer_params() / t
        if stage == 0:
            n += shape.embedding_params() / t
        if stage == p - 1:
            n += (shape.head_params() + (shape.embedding_params() if p > 1 else 0)) / t
        in_flight = in_flight_micro_batches(p, v, tr.grad_accum, stage)
        acts = layers * per_layer * in_flight
        if tr.checkpointing is Checkpointing.FULL:
            # one block's working set while it is recomputed
            acts += layer_activation_bytes(
                shape,
                tr.micro_batch,
                tr.seq_len,
                t,
                spec.sequence_parallel,
                Checkpointing.NONE,
                tr.flash_attention,
            )
        if stage == 0:
            acts += in_flight * sbh * e  # embedding output (dropout input), Korthikanti §4.3
        if stage == p - 1:
            # 16-bit logits and their fp32 copy for the vocabulary-parallel loss
            acts += tr.seq_len * tr.micro_batch * shape.vocab / t * (e + 4.0)
        mem = MemoryBreakdown(
            weights=n * (e if e < 4 else 4),
            gradients=n * g,
            optimizer=n * state,
            activations=acts,
            comm_buffers=0.0,
            reserved=job.system.device.reserved_mem_bytes,
        )
        if best is None or mem.total > best.total:
            best = mem
    assert best is not None
    return best


# ---- compute ------------------------------------------------------------------------------------


def _mm(name: str, m: int, k: int, n: int, e: int, bias: bool = False) -> Op:
    g = GemmShape(m, k, n)
    nbytes = float(e * (m * k + k * n + m * n))
    return Op(name, 2.0 * m * k * n, nbytes, True, gemm=g, bias=bias)


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
        _mm("logits", tok, h, vt, e),
        Op("cross_entropy", 5.0 * tv, tv * (e + 12.0), False, backward_bytes=tv * (e + 20.0)),
    ]
    return emb, head


def _cost(cm: ComputeModel, kernels: list[Op]) -> PhaseCost:
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
        _cost(cm, first),
        _cost(cm, second),
        _cost(cm, b2),
        _cost(cm, b2w),
        _cost(cm, b1 + extra),
        _cost(cm, b1w),
        _cost(cm, b0),
        checkpointing is Checkpointing.FULL,
    )


# ---- placement ----------------------------------------------------------------------------------


def rank_of(spec: MegatronSpec, d: int, tp: int, pp: int, dp: int) -> int:
    """Global rank (= device) of coordinates (tp, pp, dp) under ``spec.order``."""
    t, p = spec.tensor, spec.pipeline
    if spec.order == "tp-dp-pp":
        return tp + t * (dp + d * pp)
    return tp + t * (pp + p * dp)


def _group_of(
    devices: list[int], lanes: int, dpn: int, nodes: int, slot: int | None = None
) -> Group:
    """A :class:`Group` over ``devices`` (one lane) with ``lanes`` sibling lanes: as many nodes
    and ranks per node as they span (the same number on each: the config refuses placements
    that straddle nodes unevenly, ``megatron_size_error``). A set strided over nodes (a DP
    group under ``tp-pp-dp``) is priced as consecutive nodes with the same shape, the offsets'
    groups kept on disjoint blocks of nodes as the real ones are; strided local devices as
    consecutive ones. ``slot``: the group's index among the groups (each with its lanes) that
    share its nodes; its stand-in then takes local devices ``slot·per_node·lanes`` on, so that
    the stand-ins of groups that are disjoint (the stages' DP groups) are disjoint too."""
    node_ids = sorted({x // dpn for x in devices})
    n = len(node_ids)
    per_node = len(devices) // n
    counts = {i: 0 for i in node_ids}
    for x in devices:
        counts[x // dpn] += 1
    assert n * per_node == len(devices) and set(counts.values()) == {per_node}, (
        f"ranks {devices[:4]}… straddle nodes of {dpn} unevenly ({sorted(counts.values())})"
    )
    first = node_ids[0]
    stride = node_ids[1] - node_ids[0] if n > 1 else 1
    if stride > 1:
        # nodes first, first + stride, …: the groups of the stride's offsets are disjoint, and so
        # are their consecutive stand-ins, block by block
        first = (first % stride) * n
    first = min(first, nodes - n)
    local = min(x % dpn for x in devices if x // dpn == node_ids[0])
    if slot is not None:
        local = slot * per_node * lanes
    if local + per_node > dpn:
        local = dpn - per_node
    lanes = max(1, min(lanes, (dpn - local) // per_node))
    return Group(len(node_ids), per_node, first, local, lanes)


def _p2p_group(a: int, b: int, lanes: int, dpn: int) -> Group:
    """The group a point-to-point send from device ``a`` to ``b`` runs on (as a two-rank
    broadcast): two neighbouring nodes, one rank each and ``lanes`` rails side by side, when it
    leaves the node; inside a node the pair of neighbours that straddles the boundary between the
    two devices' blocks (the same links a real send crosses between them)."""
    na, nb = a // dpn, b // dpn
    if na != nb:
        return Group(2, 1, min(na, nb), a % dpn, max(1, min(lanes, dpn - a % dpn)))
    lo = max(a % dpn, b % dpn)
    return Group(1, 2, na, lo - 1, 1)


# ---- the work -----------------------------------------------------------------------------------


def stage_order(p: int, v: int, m: int, stage: int) -> list[tuple[str, int, int]]:
    """Megatron-LM's order of (``"F"``/``"B"``, micro-batch, chunk) for one pipeline stage."""
    if v == 1:
        warm = min(p - stage - 1, m)
        out = [("F", i, 0) for i in range(warm)]
        for i in range(m - warm):
            out += [("F", warm + i, 0), ("B", i, 0)]
        return out + [("B", i, 0) for i in range(m - warm, m)]
    total = m * v
    warm = min((p - stage - 1) * 2 + (v - 1) * p, total)
    if m == p:  # Megatron-LM: with m == p every micro-step is a warm-up one
        warm = total

    def at(i: int, forward: bool) -> tuple[str, int, int]:
        chunk = (i % (p * v)) // p
        if not forward:
            chunk = v - 1 - chunk
        return ("F" if forward else "B", (i // (p * v)) * p + i % p, chunk)

    out = [at(i, True) for i in range(warm)]
    for i in range(total - warm):
        out += [at(warm + i, True), at(i, False)]
    return out + [at(i, False) for i in range(total - warm, total)]


def _price_node_local_uncontended(env: simpy.Environment, comm: Communicator) -> None:
    """On the flow network, run collectives that stay inside one node (TP groups, sends
    between stages of a node) for the tuner's uncontended prediction instead of as flows.

    They share no link with the inter-node traffic (DP, sends between nodes) and, with TP
    innermost, none with each other; as flows each would cost ~2 ms of engine time, and a
    100B+ model issues ~10⁵ of them per step. Inter-node collectives still run as flows.
    """
    flows = getattr(comm.runner, "__self__", None)
    if flows is None or not hasattr(flows, "cost"):
        return
    start = comm.runner

    def runner(op: CollectiveOp, nbytes: float, group: Group) -> simpy.Event:
        if group.nodes == 1 and group.lanes == 1:
            c = flows.cost(op, nbytes, group)
            return env.timeout(c.time_s, value=c.algorithm)
        return start(op, nbytes, group)

    comm.runner = runner


@dataclass
class MegatronWork:
    """What every stage needs: compute segments, groups, sizes and the schedule.

    Attributes:
        spec: the parallelism.
        m: micro-batches per step per pipeline.
        block: one block's segments on one TP rank.
        emb_fwd, emb_bwd, head_fwd, head_bwd: embedding (first virtual stage) and output layer +
            loss (last virtual stage) on one TP rank.
        layers_per_chunk: blocks per model chunk.
        act_bytes: the ``b·s·h`` activation in the compute dtype, bytes (the TP collectives'
            nccl-tests size).
        p2p_bytes: what each TP rank sends to the next stage per micro-batch, bytes.
        tp_groups, dp_groups: per stage.
        p2p_groups: per stage, the group of its send to the next stage (cyclically).
        chunk_grad_bytes: one chunk's gradient buffer on one rank, bytes (per stage, chunk).
        chunk_param_bytes: one chunk's 16-bit parameters on one rank, bytes.
        optimizer_per_stage: the optimizer step of one rank of each stage.
        grad_dtype, act_dtype: wire dtypes.
        model_flops_per_device: rank 0's share of the model FLOPs per step.
        compute_bytes_per_step: bytes rank 0's compute moves per step (its blocks, the
            embedding, with one stage the output layer, and the optimizer step).
        flush_s: per step, when stage 0 finished its last backward (s after the step start).
    """

    spec: MegatronSpec
    m: int
    block: BlockCost
    emb_fwd: PhaseCost
    emb_bwd: PhaseCost
    head_fwd: PhaseCost
    head_bwd: PhaseCost
    layers_per_chunk: int
    act_bytes: float
    p2p_bytes: float
    tp_groups: list[Group]
    dp_groups: list[Group]
    p2p_groups: list[Group]
    chunk_grad_bytes: list[list[float]]
    chunk_param_bytes: list[list[float]]
    optimizer_per_stage: list[PhaseCost]
    grad_dtype: str
    act_dtype: str
    model_flops_per_device: float
    compute_bytes_per_step: float
    layer_grad_bytes: float = 0.0
    flush_s: list[float] = field(default_factory=list)
    _steps: list[simpy.Event] = field(default_factory=list)

    @property
    def optimizer(self) -> PhaseCost:
        """Stage 0's optimizer step."""
        return self.optimizer_per_stage[0]

    @classmethod
    def build(cls, job: Job, spec: MegatronSpec, cm: ComputeModel) -> MegatronWork:
        """Price every segment and lay out the groups of ``job`` under ``spec``."""
        shape, tr, s = job.shape, job.training, job.system
        t, p, v = spec.tensor, spec.pipeline, spec.virtual_stages
        d = spec.data_parallel(job.devices)
        dpn = s.devices_per_node
        b, seq, e = tr.micro_batch, tr.seq_len, cm.dtype_bytes
        blk = block_cost(
            cm, shape, b, seq, t, spec.sequence_parallel, tr.checkpointing, tr.flash_attention
        )
        emb, head = tp_head_ops(shape, b, seq, e, t, spec.sequence_parallel)
        act = float(b * seq * shape.hidden * e)
        lpc = shape.n_layers // (p * v)
        tp_groups, dp_groups, p2p_groups = [], [], []
        # the stages' DP groups (TP lane 0) and, to keep their stand-ins apart as the real
        # groups are, each one's rank among the stages on the same nodes (by first local device)
        dp_devs = [[rank_of(spec, d, 0, k, r) for r in range(d)] for k in range(p)]
        dp_nodes = [frozenset(x // dpn for x in devs) for devs in dp_devs]
        dp_low = [min(x % dpn for x in devs) for devs in dp_devs]
        for k in range(p):
            tp_devs = [rank_of(spec, d, j, k, 0) for j in range(t)]
            tp_groups.append(_group_of(tp_devs, 1, dpn, job.nodes))
            slot = sum(1 for q in range(p) if dp_nodes[q] == dp_nodes[k] and dp_low[q] < dp_low[k])
            dp_groups.append(_group_of(dp_devs[k], t, dpn, job.nodes, slot))
            nxt = rank_of(spec, d, 0, (k + 1) % p, 0)
            p2p_groups.append(_p2p_group(rank_of(spec, d, 0, k, 0), nxt, t, dpn))
        g = DTYPE_BYTES[tr.param_dtype]
        layer_p = shape.layer_params() / t
        grads, params, opt = [], [], []
        for k in range(p):
            n_chunks = [lpc * layer_p] * v
            if k == 0:
                n_chunks[0] += shape.embedding_params() / t
            if k == p - 1:
                n_chunks[-1] += (
                    shape.head_params() + (shape.embedding_params() if p > 1 else 0)
                ) / t
            grads.append([n * g for n in n_chunks])
            params.append([n * e for n in n_chunks])
            n_opt = sum(n_chunks) / (d if spec.distributed_optimizer else 1)
            opt.append(cm.optimizer_cost(n_opt))
        m = tr.grad_accum
        # model FLOPs of one rank per step: the model's, over the t·p ranks of a replica
        flops = shape.flops_per_token(seq) * b * seq * m / (t * p)
        per_micro = (
            lpc * v * (blk.f1.bytes + blk.f2.bytes + blk.b2.bytes + blk.b2w.bytes + blk.b1.bytes)
        )
        per_micro += lpc * v * (blk.b1w.bytes + blk.b0.bytes)
        if blk.recompute:
            per_micro += lpc * v * (blk.f1.bytes + blk.f2.bytes)
        emb_fwd, emb_bwd = _cost(cm, emb), _cost(cm, cm.kernels(emb, backward=True))
        head_fwd, head_bwd = _cost(cm, head), _cost(cm, cm.kernels(head, backward=True))
        # rank 0 (stage 0) runs the embedding; with one stage the output layer and loss too
        per_micro += emb_fwd.bytes + emb_bwd.bytes
        if p == 1:
            per_micro += head_fwd.bytes + head_bwd.bytes
        comp_bytes = m * per_micro + opt[0].bytes
        return cls(
            spec,
            m,
            blk,
            emb_fwd,
            emb_bwd,
            head_fwd,
            head_bwd,
            lpc,
            act,
            act / t,
            tp_groups,
            dp_groups,
            p2p_groups,
            grads,
            params,
            opt,
            tr.param_dtype,
            tr.dtype,
            flops,
            comp_bytes,
            layer_grad_bytes=layer_p * g,
        )

    # ---- closed-form helpers (tests, explanations) ------------------------------------------
    def chunk_compute_s(self) -> tuple[float, float]:
        """Compute of one model chunk for one micro-batch on one rank, forward and backward (s;
        no embedding or head, no communication)."""
        bc = self.block
        fwd = bc.f1.time_s + bc.f2.time_s
        bwd = bc.b2.time_s + bc.b2w.time_s + bc.b1.time_s + bc.b1w.time_s + bc.b0.time_s
        if bc.recompute:
            bwd += fwd
        return self.layers_per_chunk * fwd, self.layers_per_chunk * bwd

    def tp_calls_per_block(self) -> list[tuple[CollectiveOp, float]]:
        """The TP collectives of one block for one micro-batch, forward then backward (op,
        nccl-tests bytes), without recomputation."""
        a = self.act_bytes
        if self.spec.sequence_parallel:
            fwd = [CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER] * 2
            bwd = [CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER] * 2
        else:
            fwd = [CollectiveOp.ALL_REDUCE] * 2
            bwd = [CollectiveOp.ALL_REDUCE] * 2
        return [(op, a) for op in fwd + bwd]

    def describe(self, key: CollectiveKey) -> dict[str, object]:
        """The parallel dimension and where in the model the call is."""
        out: dict[str, object] = {"parallel": key.kind}
        if key.tag:
            out["stage"] = key.tag[0]
        return out

    # ---- the processes ------------------------------------------------------------------------
    def run(
        self,
        env: simpy.Environment,
        rank: int,
        comm: Communicator,
        steps: int,
        cs: ComputeStream,
    ) -> Generator[simpy.Event, object, None]:
        """Every stage of the representative pipeline for ``steps`` steps (rank 0 = stage 0)."""
        p = self.spec.pipeline
        if rank != 0:
            # every rank simulated (simulate_all_ranks): the others mirror rank 0's steps
            yield from self._mirror(env, steps, cs)
            return
        _price_node_local_uncontended(env, comm)
        streams = [cs] + [
            ComputeStream(env, comm, None, 0.0, cs.interference, RankLog(spans=None), cs.slowdown)
            for _ in range(1, p)
        ]
        for step in range(steps):
            for st in streams:
                st.begin_step(step)
            mail: dict[tuple[str, int, int], simpy.Event] = {}
            start = env.now
            procs = [
                env.process(self._stage(env, k, step, comm, streams[k], mail, start))
                for k in range(p)
            ]
            yield env.all_of(procs)
            for st in streams:
                st.end_step()
            self._step_done(env, step).succeed(cs.busy)

    def _step_done(self, env: simpy.Environment, step: int) -> simpy.Event:
        while len(self._steps) <= step:
            self._steps.append(env.event())
        return self._steps[step]

    def _mirror(
        self, env: simpy.Environment, steps: int, cs: ComputeStream
    ) -> Generator[simpy.Event, object, None]:
        """A rank other than 0 when every rank is simulated: identical to rank 0 (stage 0
        stands for every stage's step), its step ends when rank 0's does."""
        for step in range(steps):
            cs.begin_step(step)
            busy = yield self._step_done(env, step)
            assert isinstance(busy, float)
            cs.busy = busy
            cs.end_step()

    def _box(
        self, env: simpy.Environment, mail: dict[tuple[str, int, int], simpy.Event], key: tuple
    ) -> simpy.Event:
        ev = mail.get(key)
        if ev is None:
            ev = mail[key] = env.event()
        return ev

    def _tp(
        self,
        comm: Communicator,
        step: int,
        phase: str,
        stage: int,
        index: int,
        micro: int,
        op: CollectiveOp,
        nbytes: float,
    ) -> simpy.Event:
        key = CollectiveKey(
            step,
            phase,
            "tp",
            index,
            micro,
            STREAMS["tp"],
            (stage,),
            f"TP {op.value} (stage {stage}, {phase})",
        )
        return comm.call(key, op, nbytes, self.tp_groups[stage], 1, dtype=self.act_dtype)

    def _tp_pair(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        phase: str,
        stage: int,
        index: int,
        micro: int,
    ) -> Generator[simpy.Event, object, None]:
        """The communication at one TP point: an all-reduce, or (sequence parallel) the
        reduce-scatter that ends a half and the all-gather that starts the next one."""
        a = self.act_bytes
        if not self.spec.sequence_parallel:
            ev = self._tp(comm, step, phase, stage, index, micro, CollectiveOp.ALL_REDUCE, a)
            yield from cs.wait(ev, "tp all_reduce")
            return
        ops = (CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_GATHER)
        for j, op in enumerate(ops):
            ev = self._tp(comm, step, phase, stage, 2 * index + j, micro, op, a)
            yield from cs.wait(ev, f"tp {op.value}")

    def _forward(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        stage: int,
        micro: int,
        chunk: int,
        phase: str = "forward",
    ) -> Generator[simpy.Event, object, None]:
        bc, lpc = self.block, self.layers_per_chunk
        slot = 4 if phase == "recompute" else 0
        for layer in range(lpc):
            idx = ((chunk * lpc + layer) * 8 + slot) * 2
            yield from cs.run(bc.f1.time_s, phase, layer=layer)
            yield from self._tp_pair(comm, cs, step, phase, stage, idx, micro)
            yield from cs.run(bc.f2.time_s, phase, layer=layer)
            yield from self._tp_pair(comm, cs, step, phase, stage, idx + 2, micro)

    def _backward_layer(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        stage: int,
        micro: int,
        idx: int,
        layer: int,
    ) -> Generator[simpy.Event, object, None]:
        bc = self.block
        yield from cs.run(bc.b2.time_s, "backward", layer=layer)
        for seg_w, seg_next, j in ((bc.b2w, bc.b1, 0), (bc.b1w, bc.b0, 2)):
            if self.spec.sequence_parallel:
                # the all-gather of g-bar's backward, then the reduce-scatter of f's, overlapped
                # with the wgrad GEMM
                ag = self._tp(
                    comm,
                    step,
                    "backward",
                    stage,
                    2 * (idx + j),
                    micro,
                    CollectiveOp.ALL_GATHER,
                    self.act_bytes,
                )
                yield from cs.wait(ag, "tp all_gather")
                ev = self._tp(
                    comm,
                    step,
                    "backward",
                    stage,
                    2 * (idx + j) + 1,
                    micro,
                    CollectiveOp.REDUCE_SCATTER,
                    self.act_bytes,
                )
            else:
                ev = self._tp(
                    comm,
                    step,
                    "backward",
                    stage,
                    idx + j,
                    micro,
                    CollectiveOp.ALL_REDUCE,
                    self.act_bytes,
                )
            yield from cs.run(seg_w.time_s, "backward", layer=layer)
            yield from cs.wait(
                ev, "tp " + ("reduce_scatter" if self.spec.sequence_parallel else "all_reduce")
            )
            yield from cs.run(seg_next.time_s, "backward", layer=layer)

    def _send(
        self,
        comm: Communicator,
        mail: dict[tuple[str, int, int], simpy.Event],
        env: simpy.Environment,
        step: int,
        direction: str,
        micro: int,
        src_vs: int,
        dst_vs: int,
    ) -> None:
        p = self.spec.pipeline
        src, dst = src_vs % p, dst_vs % p
        # the link between neighbouring stages k and k+1 (cyclically) is p2p_groups[min…]
        group = self.p2p_groups[src if direction == "F" else dst]
        key = CollectiveKey(
            step,
            "forward" if direction == "F" else "backward",
            "pp",
            src_vs,
            micro,
            STREAMS["pp"],
            (src,),
            f"PP send {'activation' if direction == 'F' else 'gradient'} stage {src}→{dst}",
        )
        done = comm.call(
            key, CollectiveOp.BROADCAST, self.p2p_bytes, group, 1, dtype=self.act_dtype
        )
        box = self._box(env, mail, (direction, micro, dst_vs))

        def deliver(_ev: simpy.Event) -> None:
            box.succeed()

        done.callbacks.append(deliver)

    def _stage(
        self,
        env: simpy.Environment,
        k: int,
        step: int,
        comm: Communicator,
        cs: ComputeStream,
        mail: dict[tuple[str, int, int], simpy.Event],
        start: float,
    ) -> Generator[simpy.Event, object, None]:
        p, v = self.spec.pipeline, self.spec.virtual_stages
        last = p * v - 1
        lpc = self.layers_per_chunk
        order = stage_order(p, v, self.m, k)
        final_b = {c: i for i, (kind, _, c) in enumerate(order) if kind == "B"}
        zero = self.spec.distributed_optimizer
        op = CollectiveOp.REDUCE_SCATTER if zero else CollectiveOp.ALL_REDUCE
        overlap = self.spec.overlap_grad_reduce
        tail: simpy.Event | None = None  # the DP stream's last bucket (in-order stream)
        for i, (kind, micro, chunk) in enumerate(order):
            vs = chunk * p + k
            if kind == "F":
                if vs > 0:
                    yield from cs.wait(self._box(env, mail, ("F", micro, vs)), "pp recv activation")
                else:
                    yield from cs.run(self.emb_fwd.time_s, "forward", part="embedding")
                    yield from self._tp_pair(comm, cs, step, "forward", k, -2, micro)
                yield from self._forward(comm, cs, step, k, micro, chunk)
                if vs < last:
                    self._send(comm, mail, env, step, "F", micro, vs, vs + 1)
                else:
                    yield from cs.run(self.head_fwd.time_s, "forward", part="head")
            else:
                if vs < last:
                    yield from cs.wait(self._box(env, mail, ("B", micro, vs)), "pp recv gradient")
                else:
                    yield from cs.run(self.head_bwd.time_s, "backward", part="head")
                    ev = self._tp(
                        comm,
                        step,
                        "backward",
                        k,
                        -1,
                        micro,
                        CollectiveOp.REDUCE_SCATTER
                        if self.spec.sequence_parallel
                        else CollectiveOp.ALL_REDUCE,
                        self.act_bytes,
                    )
                    yield from cs.wait(ev, "tp head")
                for layer in reversed(range(lpc)):
                    idx = ((chunk * lpc + layer) * 8 + 2) * 2
                    if self.block.recompute:
                        yield from self._recompute_layer(comm, cs, step, k, micro, chunk, layer)
                    yield from self._backward_layer(comm, cs, step, k, micro, idx, layer)
                    if overlap and i == final_b[chunk]:
                        nbytes = self.layer_grad_bytes
                        if layer == 0:  # the chunk's embedding / head gradients too
                            nbytes = self.chunk_grad_bytes[k][chunk] - (lpc - 1) * nbytes
                        index = chunk * lpc + layer
                        tail = self._dp_bucket(env, comm, step, k, index, op, nbytes, tail)
                if vs > 0:
                    self._send(comm, mail, env, step, "B", micro, vs, vs - 1)
                else:
                    yield from cs.run(self.emb_bwd.time_s, "backward", part="embedding")
        if k == 0:
            self.flush_s.append(env.now - start)
        if not overlap:
            # data parallel after the flush: one gradient buffer per model chunk, in order
            for c in range(v):
                nbytes = self.chunk_grad_bytes[k][c]
                tail = self._dp_bucket(env, comm, step, k, 1000 * (c + 1), op, nbytes, tail)
        if tail is not None:
            yield from cs.wait(tail, f"dp {op.value}")
        dp = self.dp_groups[k]
        yield from cs.run(self.optimizer_per_stage[k].time_s, "optimizer")
        if zero:
            evs = [
                comm.call(
                    CollectiveKey(
                        step,
                        "optimizer",
                        "dp",
                        v + c,
                        0,
                        STREAMS["dp"],
                        (k,),
                        f"DP all_gather chunk {c}",
                    ),
                    CollectiveOp.ALL_GATHER,
                    self.chunk_param_bytes[k][c],
                    dp,
                    1,
                    dtype=self.act_dtype,
                )
                for c in range(v)
            ]
            for ev in evs:
                yield from cs.wait(ev, "dp all_gather")

    def _dp_bucket(
        self,
        env: simpy.Environment,
        comm: Communicator,
        step: int,
        stage: int,
        index: int,
        op: CollectiveOp,
        nbytes: float,
        prev: simpy.Event | None,
    ) -> simpy.Event:
        """One DP gradient bucket of ``stage``, started when the one before it on the stage's
        (in-order) DP stream has completed; the returned process ends with it."""
        label = f"DP {op.value} " + (
            f"chunk {index // 1000 - 1}" if index >= 1000 else f"bucket (block {index})"
        )
        key = CollectiveKey(step, "backward", "dp", index, 0, STREAMS["dp"], (stage,), label)

        def proc() -> Generator[simpy.Event, object, None]:
            if prev is not None:
                yield prev
            yield comm.call(key, op, nbytes, self.dp_groups[stage], 1, dtype=self.grad_dtype)

        return env.process(proc())

    def _recompute_layer(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        stage: int,
        micro: int,
        chunk: int,
        layer: int,
    ) -> Generator[simpy.Event, object, None]:
        bc, lpc = self.block, self.layers_per_chunk
        idx = ((chunk * lpc + layer) * 8 + 4) * 2
        yield from cs.run(bc.f1.time_s, "backward", part="recompute", layer=layer)
        yield from self._tp_pair(comm, cs, step, "recompute", stage, idx, micro)
        yield from cs.run(bc.f2.time_s, "backward", part="recompute", layer=layer)
        yield from self._tp_pair(comm, cs, step, "recompute", stage, idx + 2, micro)
