"""The SimPy process of one Megatron pipeline stage for one step (Megatron-LM ``megatron/core/
pipeline_parallel/schedules.py``, ``tensor_parallel/layers.py``, ``distributed``): its schedule's
forwards and backwards, the TP collectives of every block, the point-to-point sends between
stages and the stage's data-parallel gradient reduction and optimizer step."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy

from scaling.model.comm.collectives import CollectiveKey, Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import PhaseCost
from scaling.model.strategies.megatron.context import ContextRingProcess
from scaling.model.strategies.megatron.experts import ExpertProcess
from scaling.model.strategies.megatron.ops import BlockCost
from scaling.model.strategies.megatron.overlap import STREAMS, OverlapSegments
from scaling.model.strategies.megatron.schedule import stage_order
from scaling.model.strategies.rank import ComputeStream

if TYPE_CHECKING:
    from scaling.model.strategies.megatron.spec import MegatronSpec


class StageProcess(ContextRingProcess, OverlapSegments, ExpertProcess):
    """The stage process, a part of :class:`~scaling.model.strategies.megatron.work.
    MegatronWork` (whose fields it reads). Every call a stage makes is joined by the simulated
    ranks of the stage (``_per_stage``: 1 for the representative, ``t·d`` when every rank is
    simulated), with ``tag = (stage,)``."""

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
    layer_grad_bytes: float
    flush_s: list[float]
    ce_bytes: float
    emb_group: Group | None
    emb_grad_bytes: float
    layer_param_bytes: float
    ub_slow: dict[str, float]
    _per_stage: int
    _mail: dict[int, dict[tuple[str, int, int], simpy.Event]]
    _params: dict[tuple[int, int], dict[tuple[int, int], simpy.Event]]

    def _box(self, env: simpy.Environment, step: int, key: tuple[str, int, int]) -> simpy.Event:
        """The mailbox of an activation (``"F"``) or gradient (``"B"``) of ``(micro, virtual
        stage)`` in ``step``: succeeded, with the send's record, when it has arrived."""
        mail = self._mail.setdefault(step, {})
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
        return comm.call(
            key, op, nbytes, self.tp_groups[stage], self._per_stage, dtype=self.act_dtype
        )

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
        bc, lpc, stride = self.block, self.layers_of(stage, chunk), self.block_stride
        slot = 4 if phase == "recompute" else 0
        params = self._params.get((step, stage), {})
        for layer in range(lpc):
            idx = ((chunk * stride + layer) * 8 + slot) * 2
            gather = params.get((chunk, layer))  # every simulated rank of the stage waits
            if gather is not None:  # --overlap-param-gather: this block's bucket
                yield from cs.wait(gather, "dp all_gather")
            if self.spec.tp_comm_overlap:
                yield from self._forward_overlapped(comm, cs, step, phase, stage, idx, micro, layer)
                continue
            yield from cs.run(bc.f1.time_s, phase, layer=layer)
            yield from self._ring(comm, cs, step, phase, stage, micro, idx, layer, False)
            yield from self._tp_pair(comm, cs, step, phase, stage, idx, micro)
            block = self.moe_block(stage, chunk, layer)
            if block is None:
                yield from cs.run(bc.f2.time_s, phase, layer=layer)
            else:  # the experts' half (megatron.experts)
                yield from self._moe_forward(comm, cs, step, phase, stage, micro, block, idx,
                                             layer)  # fmt: skip
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
        block: int | None = None,
    ) -> Generator[simpy.Event, object, None]:
        """One block's backward; ``block``: its global index when it is a MoE block, whose
        MLP half is the experts' (``megatron.experts``; with sequence parallelism between the
        all-gather of the output gradient and the reduce-scatter of the input gradient)."""
        bc, sp, a = self.block, self.spec.sequence_parallel, self.act_bytes
        if block is not None:
            if sp:
                ev = self._tp(comm, step, "backward", stage, 2 * idx, micro,
                              CollectiveOp.ALL_GATHER, a)  # fmt: skip
                yield from cs.wait(ev, "tp all_gather")
            yield from self._moe_backward(comm, cs, step, stage, micro, block, idx, layer)
            if sp:
                ev = self._tp(comm, step, "backward", stage, 2 * idx + 1, micro,
                              CollectiveOp.REDUCE_SCATTER, a)  # fmt: skip
                yield from cs.wait(ev, "tp reduce_scatter")
        if sp:
            yield from self._backward_layer_sp(
                comm, cs, step, stage, micro, idx, layer, block is not None
            )
            return
        pairs: tuple[tuple[PhaseCost, PhaseCost, int], ...] = (
            (bc.b2w, bc.b1, 0),
            (bc.b1w, bc.b0, 2),
        )
        if block is None:
            yield from cs.run(bc.b2.time_s, "backward", layer=layer)
        else:
            yield from cs.run(bc.b1.time_s, "backward", layer=layer)
            pairs = pairs[1:]
        for seg_w, seg_next, j in pairs:
            ev = self._tp(
                comm, step, "backward", stage, idx + j, micro, CollectiveOp.ALL_REDUCE,
                self.act_bytes,
            )  # fmt: skip
            yield from cs.run(seg_w.time_s, "backward", layer=layer)
            yield from cs.wait(ev, "tp all_reduce")
            yield from cs.run(seg_next.time_s, "backward", layer=layer)

    def _send(
        self,
        comm: Communicator,
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
            key,
            CollectiveOp.BROADCAST,
            self.p2p_bytes,
            group,
            self._per_stage,
            dtype=self.act_dtype,
        )
        box = self._box(env, step, (direction, micro, dst_vs))

        def deliver(ev: simpy.Event) -> None:
            if not box.triggered:  # every simulated rank of the stage sends; one delivery
                box.succeed(ev.value)

        done.callbacks.append(deliver)

    def stage_step(
        self,
        env: simpy.Environment,
        k: int,
        step: int,
        comm: Communicator,
        cs: ComputeStream,
        start: float,
        record_flush: bool,
    ) -> Generator[simpy.Event, object, None]:
        """Stage ``k``'s step ``step`` (started at ``start``, s): its schedule, then its DP
        gradient reduction and optimizer step; ``record_flush``: note when its last backward
        ended (``flush_s``)."""
        p, v = self.spec.pipeline, self.spec.virtual_stages
        last = p * v - 1
        stride = self.block_stride
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
                    yield from cs.wait(self._box(env, step, ("F", micro, vs)), "pp recv activation")
                else:
                    yield from cs.run(self.emb_fwd.time_s, "forward", part="embedding")
                    if self.spec.tp_comm_overlap:  # the first QKV's ring exchange gathers it
                        ev = self._tp(comm, step, "forward", k, -4, micro,
                                      CollectiveOp.REDUCE_SCATTER, self.act_bytes)  # fmt: skip
                        yield from cs.wait(ev, "tp reduce_scatter")
                    else:
                        yield from self._tp_pair(comm, cs, step, "forward", k, -2, micro)
                yield from self._forward(comm, cs, step, k, micro, chunk)
                if vs < last:
                    self._send(comm, env, step, "F", micro, vs, vs + 1)
                else:
                    yield from self._head_forward(comm, cs, step, k, micro)
            else:
                if vs < last:
                    yield from cs.wait(self._box(env, step, ("B", micro, vs)), "pp recv gradient")
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
                lpc = self.layers_of(k, chunk)
                for layer in reversed(range(lpc)):
                    idx = ((chunk * stride + layer) * 8 + 2) * 2
                    if self.block.recompute:
                        yield from self._recompute_layer(comm, cs, step, k, micro, chunk, layer)
                    block = self.moe_block(k, chunk, layer)
                    yield from self._backward_layer(comm, cs, step, k, micro, idx, layer, block)
                    yield from self._ring_backward(comm, cs, step, k, micro, idx, layer)
                    if overlap and i == final_b[chunk]:
                        nbytes = self.layer_grad_bytes
                        if layer == 0:  # the chunk's embedding / head gradients too
                            nbytes = self.chunk_grad_bytes[k][chunk] - (lpc - 1) * nbytes
                        index = chunk * stride + layer
                        tail = self._dp_bucket(env, comm, step, k, index, op, nbytes, tail)
                        if block is not None and self.experts is not None:
                            nbytes = self.experts.expert_grad_bytes
                            tail = self._edp_bucket(env, comm, step, k, index, op, nbytes, tail)
                if vs > 0:
                    self._send(comm, env, step, "B", micro, vs, vs - 1)
                else:
                    yield from cs.run(self.emb_bwd.time_s, "backward", part="embedding")
        if record_flush:
            self.flush_s.append(env.now - start)
        if not overlap:
            # data parallel after the flush: one gradient buffer per model chunk, in order
            for c in range(v):
                nbytes = self.chunk_grad_bytes[k][c]
                tail = self._dp_bucket(env, comm, step, k, 1000 * (c + 1), op, nbytes, tail)
                if self.experts is not None and self.expert_blocks(k, c):
                    nbytes = self.expert_blocks(k, c) * self.experts.expert_grad_bytes
                    tail = self._edp_bucket(env, comm, step, k, 1000 * (c + 1), op, nbytes, tail)
        if tail is not None:
            yield from cs.wait(tail, f"dp {op.value}")
        dp = self.dp_groups[k]
        if self.emb_group is not None and k in (0, p - 1):
            # tied embeddings: the word-embedding gradients of the first and the last stage
            # all-reduced after the DP gradient sync (``finalize_model_grads.py``,
            # ``_allreduce_word_embedding_grads``), before the optimizer
            ev = comm.call(
                CollectiveKey(step, "optimizer", "pp", -3, 0, STREAMS["pp"], (0, p - 1),
                              "embedding gradient all_reduce (stages 0, last)"),
                CollectiveOp.ALL_REDUCE, self.emb_grad_bytes, self.emb_group,
                2 * self._per_stage, dtype=self.grad_dtype,
            )  # fmt: skip
            yield from cs.wait(ev, "pp all_reduce embedding")
        yield from cs.run(self.optimizer_per_stage[k].time_s, "optimizer")
        if zero and self.spec.overlap_param_gather:
            self._dispatch_param_gather(cs.env, comm, step, k)
        elif zero:
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
                    self._per_stage,
                    dtype=self.act_dtype,
                )
                for c in range(v)
            ]
            if self.experts is not None:  # the experts' parameters over the EDP group
                evs += [
                    self._edp_call(
                        comm,
                        step,
                        "optimizer",
                        k,
                        v + c,
                        CollectiveOp.ALL_GATHER,
                        self.expert_blocks(k, c) * self.experts.expert_param_bytes,
                        f"chunk {c}",
                    )
                    for c in range(v)
                    if self.expert_blocks(k, c)
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
            yield comm.call(
                key, op, nbytes, self.dp_groups[stage], self._per_stage, dtype=self.grad_dtype
            )

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
        bc = self.block
        idx = ((chunk * self.block_stride + layer) * 8 + 4) * 2
        yield from cs.run(bc.f1.time_s, "backward", part="recompute", layer=layer)
        yield from self._ring(comm, cs, step, "recompute", stage, micro, idx, layer, False)
        yield from self._tp_pair(comm, cs, step, "recompute", stage, idx, micro)
        block = self.moe_block(stage, chunk, layer)
        if block is None:
            yield from cs.run(bc.f2.time_s, "backward", part="recompute", layer=layer)
        else:
            yield from self._moe_forward(comm, cs, step, "recompute", stage, micro, block, idx,
                                         layer)  # fmt: skip
        yield from self._tp_pair(comm, cs, step, "recompute", stage, idx + 2, micro)
