"""The plan of a Megatron job: every stage's compute segments, groups and sizes, its
representative processes, and the closed forms tests and explanations use. The process each
stage runs is :class:`~scaling.model.strategies.megatron.stage.StageProcess`."""

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
    MicroBatchCompute,
    PhaseCost,
)
from scaling.model.hardware.moe import MoEShape
from scaling.model.routing import RoutingStats
from scaling.model.strategies.base import Representative
from scaling.model.strategies.megatron.context import ContextRing, stage_rings
from scaling.model.strategies.megatron.experts import ExpertPlan, dense_block_params, stage_blocks
from scaling.model.strategies.megatron.ops import (
    BlockCost,
    block_cost,
    phase_cost,
    tp_head_ops,
    ub_slowdown,
)
from scaling.model.strategies.megatron.placement import (
    dp_ranks,
    group_of,
    p2p_group,
    rank_of,
    stage_of,
)
from scaling.model.strategies.megatron.stage import StageProcess
from scaling.model.strategies.rank import ComputeStream

if TYPE_CHECKING:
    from scaling.model.job import Job
    from scaling.model.strategies.megatron.spec import MegatronSpec


@dataclass
class MegatronWork(StageProcess):
    """What every stage needs: compute segments, groups, sizes and the schedule.

    Attributes:
        spec: the parallelism.
        m: micro-batches per step per pipeline.
        block: one block's segments on one TP rank.
        emb_fwd, emb_bwd, head_fwd, head_bwd: embedding (first virtual stage) and output layer +
            loss (last virtual stage) on one TP rank.
        layers_per_chunk: blocks per model chunk (the even share).
        chunk_layers: blocks of each model chunk of each stage, ``[stage][chunk]``, when the
            stages are uneven (``MegatronSpec.chunk_layers``; else empty).
        act_bytes: the ``b·s·h`` activation in the compute dtype, bytes (the TP collectives'
            nccl-tests size).
        p2p_bytes: what each TP rank sends to the next stage per micro-batch, bytes.
        tp_groups, dp_groups: per stage.
        p2p_groups: per stage, the group of its send to the next stage (cyclically).
        chunk_grad_bytes: one chunk's gradient buffer on one rank, bytes (per stage, chunk).
        chunk_param_bytes: one chunk's 16-bit parameters on one rank, bytes.
        optimizer_per_stage: the optimizer step of one rank of each stage.
        grad_dtype, act_dtype: wire dtypes.
        step_flops: rank 0's share of the model FLOPs per step.
        step_bytes: bytes rank 0's compute moves per step (its blocks, the embedding, with one
            stage the output layer, and the optimizer step).
        layer_grad_bytes: one block's gradients on one rank, bytes.
        replicas: the data-parallel size ``d``.
        flush_s: per step, when stage 0 finished its last backward (s after the step start).
        ring: context parallelism's ring attention (None without it).
        ce_bytes: one fp32 value per token of a micro-batch, bytes (the cross-entropy's
            all-reduces).
        emb_group: with tied embeddings over ``p > 1`` stages, the group of the first and the
            last stage's embedding-gradient all-reduce (None otherwise).
        emb_grad_bytes: the word-embedding gradients of one TP rank, bytes.
        layer_param_bytes: one block's 16-bit parameters on one rank, bytes.
        ub_slow: how much longer a GEMM chunk runs under each userbuffer overlap method
            (``ops.ub_slowdown`` of the device's compute units).
        experts: a MoE model's experts (``megatron.experts``; None for a dense model).
    """

    spec: MegatronSpec
    m: int
    block: BlockCost
    emb_fwd: PhaseCost
    emb_bwd: PhaseCost
    head_fwd: PhaseCost
    head_bwd: PhaseCost
    layers_per_chunk: int
    chunk_layers: list[list[int]]
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
    step_flops: float
    step_bytes: float
    layer_grad_bytes: float = 0.0
    replicas: int = 1
    flush_s: list[float] = field(default_factory=list)
    ring: ContextRing | None = None
    ce_bytes: float = 0.0
    emb_group: Group | None = None
    emb_grad_bytes: float = 0.0
    layer_param_bytes: float = 0.0
    ub_slow: dict[str, float] = field(default_factory=dict)
    experts: ExpertPlan | None = None
    # run state shared by the stage processes: simulated ranks per stage (who joins a call),
    # each step's mailboxes of activations and gradients, and the ranks at the step barrier
    _per_stage: int = 1
    _mail: dict[int, dict[tuple[str, int, int], simpy.Event]] = field(default_factory=dict)
    _waiting: dict[int, dict[int, simpy.Event]] = field(default_factory=dict)
    _params: dict[tuple[int, int], dict[tuple[int, int], simpy.Event]] = field(default_factory=dict)

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
        c = spec.context
        # each CP rank runs its blocks on 1/c of the sequence (context.py)
        b, seq, e = tr.micro_batch, tr.seq_len // c, cm.dtype_bytes
        blk = block_cost(
            cm, shape, b, seq, t, spec.sequence_parallel, tr.checkpointing, tr.flash_attention
        )
        emb, head = tp_head_ops(shape, b, seq, e, t, spec.sequence_parallel)
        act = float(b * seq * shape.hidden * e)
        lpc = shape.n_layers // (p * v)
        per_chunk = spec.chunk_layers(shape.n_layers) if spec.uneven_stages else []
        lpcs = per_chunk or [[lpc] * v] * p
        tp_groups, dp_groups, p2p_groups = [], [], []
        # the stages' DP groups (TP lane 0) and, to keep their stand-ins apart as the real
        # groups are, each one's rank among the stages on the same nodes (by first local device)
        dp_devs = [dp_ranks(spec, d, k) for k in range(p)]
        dp_nodes = [frozenset(x // dpn for x in devs) for devs in dp_devs]
        dp_low = [min(x % dpn for x in devs) for devs in dp_devs]
        for k in range(p):
            tp_devs = [rank_of(spec, d, j, k, 0) for j in range(t)]
            tp_groups.append(group_of(tp_devs, 1, dpn, job.nodes))
            slot = sum(1 for q in range(p) if dp_nodes[q] == dp_nodes[k] and dp_low[q] < dp_low[k])
            dp_groups.append(group_of(dp_devs[k], t, dpn, job.nodes, slot))
            nxt = rank_of(spec, d, 0, (k + 1) % p, 0)
            p2p_groups.append(p2p_group(rank_of(spec, d, 0, k, 0), nxt, t, dpn))
        g = DTYPE_BYTES[tr.param_dtype]
        layer_p = shape.layer_params() / t
        grads, params, opt = [], [], []
        moe = isinstance(shape, MoEShape)
        expert_chunks: list[list[int]] = []  # MoE blocks per stage and chunk
        for k in range(p):
            n_chunks = [n * layer_p for n in lpcs[k]]
            if isinstance(shape, MoEShape):  # the routed experts apart (megatron.experts)
                chunks = stage_blocks(spec, shape.n_layers, k)
                n_chunks = [sum(dense_block_params(shape, i) for i in ch) / t for ch in chunks]
                expert_chunks.append([sum(map(shape.is_moe_layer, ch)) for ch in chunks])
            if k == 0:
                n_chunks[0] += shape.embedding_params() / t
            if k == p - 1:
                n_chunks[-1] += (
                    shape.head_params() + (shape.embedding_params() if p > 1 else 0)
                ) / t
            grads.append([n * g for n in n_chunks])
            params.append([n * e for n in n_chunks])
            n_opt = sum(n_chunks) / (d if spec.distributed_optimizer else 1)
            if isinstance(shape, MoEShape):  # the experts' states sharded over EDP
                edp = t * c * d // (spec.expert_parallel * spec.etp)
                n_exp = (
                    sum(expert_chunks[k])
                    * shape.routed_expert_params()
                    / (spec.expert_parallel * spec.etp)
                )
                n_opt += n_exp / (edp if spec.distributed_optimizer else 1)
            opt.append(cm.optimizer_cost(n_opt))
        m = tr.grad_accum
        # model FLOPs of one rank per step: the model's, over the t·c·p ranks of a replica
        flops = shape.flops_per_token(tr.seq_len) * b * tr.seq_len * m / (t * p * c)
        n0 = sum(lpcs[0])  # rank 0's blocks
        per_micro = n0 * (blk.f1.bytes + blk.f2.bytes + blk.b2.bytes + blk.b2w.bytes + blk.b1.bytes)
        per_micro += n0 * (blk.b1w.bytes + blk.b0.bytes)
        if blk.recompute:
            per_micro += n0 * (blk.f1.bytes + blk.f2.bytes)
        emb_fwd, emb_bwd = phase_cost(cm, emb), phase_cost(cm, cm.kernels(emb, backward=True))
        head_fwd, head_bwd = phase_cost(cm, head), phase_cost(cm, cm.kernels(head, backward=True))
        # rank 0 (stage 0) runs the embedding; with one stage the output layer and loss too
        per_micro += emb_fwd.bytes + emb_bwd.bytes
        if p == 1:
            per_micro += head_fwd.bytes + head_bwd.bytes
        ring = ContextRing.build(job, spec, cm, stage_rings(spec, d)) if c > 1 else None
        if ring is not None:  # the ring's other c − 1 attention steps
            per_micro += n0 * (c - 1) * ring.step_bytes
        experts = None
        if moe:
            experts = ExpertPlan.build(job, spec, cm, d)
            mlp = (
                blk.f2.bytes + blk.b2.bytes + blk.b2w.bytes + (blk.f2.bytes if blk.recompute else 0)
            )
            for i in (i for ch in experts.blocks[0] for i in ch if i in experts.costs):
                x = experts.costs[i]
                fwd = sum(y.bytes for y in (x.pre, x.experts, x.post, x.shared_in, x.shared_out))
                bwd = sum(y.bytes for y in (x.pre_b, x.experts_b, x.post_b, x.shared_in_b,
                                            x.shared_out_b))  # fmt: skip
                per_micro += fwd * (2 if blk.recompute else 1) + bwd - mlp
            assert isinstance(shape, MoEShape)
            layer_p = dense_block_params(shape, shape.moe.dense_layers) / t
        comp_bytes = m * per_micro + opt[0].bytes
        emb_group = None
        if p > 1 and shape.tied_embeddings:
            ends = [rank_of(spec, d, 0, 0, 0), rank_of(spec, d, 0, p - 1, 0)]
            emb_group = group_of(ends, t, dpn, job.nodes)
        return cls(
            spec,
            m,
            blk,
            emb_fwd,
            emb_bwd,
            head_fwd,
            head_bwd,
            lpc,
            per_chunk,
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
            replicas=d,
            ring=ring,
            ce_bytes=4.0 * b * seq,
            emb_group=emb_group,
            emb_grad_bytes=shape.vocab * shape.hidden / t * g,
            layer_param_bytes=layer_p * e,
            ub_slow=ub_slowdown(cm.device.compute_units),
            experts=experts,
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
        nccl-tests bytes), without recomputation. With sequence parallelism the backward
        re-gathers each column-parallel linear's input for its weight gradient (the
        sequence-sharded input is what Megatron-LM saves), one all-gather more per half."""
        a = self.act_bytes
        if self.spec.sequence_parallel:
            fwd = [CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER] * 2
            # per half: the output gradient's all-gather, the re-gather of the column-parallel
            # linear's input for its wgrad, the input gradient's reduce-scatter
            ag, rs = CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER
            bwd = [ag, ag, rs] * 2
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

    def model_flops_per_device(self, job: Job, mb: MicroBatchCompute) -> float:
        """Rank 0's share of the model FLOPs per step (the model's over the ``t·p`` ranks of a
        replica)."""
        return self.step_flops

    def compute_bytes_per_step(self, job: Job, mb: MicroBatchCompute) -> float:
        """Bytes rank 0's compute moves per step."""
        return self.step_bytes

    @property
    def node_local_calls_contend(self) -> bool:
        """No: with TP innermost a node's TP groups (and the sends between its stages) use
        disjoint links and none of the inter-node traffic's, so the flow network may price them
        by its uncontended prediction (as flows each would cost ~2 ms of engine time, and a
        100B+ model issues ~10^5 of them per step)."""
        return False

    @property
    def routing(self) -> RoutingStats:
        """The routing draws of the MoE blocks (``ExpertPlan.loads``; none for a dense model)."""
        return RoutingStats.of(self.experts.loads if self.experts is not None else [])

    @property
    def all_to_all_calls_contend(self) -> bool:
        """No: the expert-parallel all-to-alls (``megatron.experts``) of a stage run on its own
        block of nodes (the ``tp-dp-pp`` order that expert parallelism requires with several
        stages), where only the stage's own point-to-point sends could share a NIC with them
        (one ``b·s·h/t`` activation per micro-batch against ``k×`` that per all-to-all), and the
        sibling EP groups of the other expert-data-parallel ranks run on disjoint nodes that
        the representative processes do not simulate anyway; priced by the tuner's uncontended
        prediction (``configs/moe-deepseek-v3.yaml`` at 16 micro-batches, ~5,600 all-to-alls of
        64 ranks per step: 92 CPU-s as flows against 1.2 priced, the step 11.95 s against
        11.93 s)."""
        return False

    # ---- the representative processes ---------------------------------------------------------
    def representatives(self, job: Job) -> tuple[Representative, ...]:
        """One process per pipeline stage: rank (tp 0, cp 0, stage k, dp 0) for the stage's
        ``t·c·d`` ranks."""
        spec, d = self.spec, self.replicas
        return tuple(
            Representative(
                rank_of(spec, d, 0, k, 0),
                [
                    rank_of(spec, d, j, k, r, q)
                    for r in range(d)
                    for q in range(spec.context)
                    for j in range(spec.tensor)
                ],
            )
            for k in range(spec.pipeline)
        )

    def run(
        self,
        env: simpy.Environment,
        rank: int,
        comm: Communicator,
        steps: int,
        cs: ComputeStream,
    ) -> Generator[simpy.Event, object, None]:
        """Rank ``rank``'s pipeline stage for ``steps`` steps; each step starts on every stage
        once every stage has finished the one before (the end-of-step reductions over the
        model-parallel group)."""
        k = stage_of(self.spec, self.replicas, rank)
        self._per_stage = comm.simulated_ranks // self.spec.pipeline
        for step in range(steps):
            cs.begin_step(step)
            yield from self.stage_step(env, k, step, comm, cs, env.now, rank == 0)
            yield from cs.hold(self._barrier(env, step, rank, comm.simulated_ranks))
            cs.end_step()

    def _barrier(self, env: simpy.Environment, step: int, rank: int, n: int) -> simpy.Event:
        """The event that releases ``rank`` once all ``n`` simulated ranks ended ``step``
        (released in rank order, so that the next step starts in stage order)."""
        waiting = self._waiting.setdefault(step, {})
        ev = waiting[rank] = env.event()
        if len(waiting) == n:
            for r in sorted(waiting):
                waiting[r].succeed()
            del self._waiting[step]
            self._mail.pop(step, None)
            for k in range(self.spec.pipeline):  # this step's parameter gathers were waited for
                self._params.pop((step, k), None)
        return ev
