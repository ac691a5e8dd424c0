"""Megatron-Core's communication overlap inside a pipeline stage's process: Transformer Engine's
userbuffer overlap of the sequence-parallel TP collectives with the GEMMs (``--tp-comm-overlap``;
``ops.UB_NUM_SM``, ``ops.UB_PIPELINE_SPLITS``), the sequence-parallel backward with its input
re-gather, the output layer's collectives, and the distributed optimizer's parameter all-gather
overlapped with the next forward (``--overlap-param-gather``). A part of
:class:`~scaling.model.strategies.megatron.stage.StageProcess`."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy

from scaling.model.comm.collectives import CollectiveKey, CollectiveRecord, Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import PhaseCost
from scaling.model.strategies.megatron.context import CP_STREAM
from scaling.model.strategies.megatron.ops import UB_PIPELINE_SPLITS, BlockCost
from scaling.model.strategies.rank import ComputeStream

if TYPE_CHECKING:
    from scaling.model.strategies.megatron.spec import MegatronSpec

#: Trace tracks of the three kinds of communication (TP and PP on the node's communication
#: stream, DP on the replicate stream as HSDP's replication); the parallel dimension itself is
#: the key's ``kind`` (``tp``, ``pp``, ``dp``).
STREAMS = {"tp": "comm", "cp": CP_STREAM, "pp": "comm", "dp": "comm:replicate",
           # expert parallelism (megatron.experts): the dispatch / combine all-to-alls on a
           # track of their own, expert-TP with TP, the experts' gradients with DP's
           "ep": "comm:ep", "etp": "comm", "edp": "comm:replicate"}  # fmt: skip


class OverlapSegments:
    """The overlapped segments of a stage's step (the fields it reads are
    :class:`~scaling.model.strategies.megatron.work.MegatronWork`'s)."""

    spec: MegatronSpec
    block: BlockCost
    head_fwd: PhaseCost
    layers_per_chunk: int
    chunk_layers: list[list[int]]
    act_bytes: float
    tp_groups: list[Group]
    dp_groups: list[Group]
    chunk_param_bytes: list[list[float]]
    act_dtype: str
    ce_bytes: float
    layer_param_bytes: float
    ub_slow: dict[str, float]
    _per_stage: int
    _params: dict[tuple[int, int], dict[tuple[int, int], simpy.Event]]

    def layers_of(self, stage: int, chunk: int) -> int:
        """Blocks of model chunk ``chunk`` of ``stage`` (uneven stages and chunks)."""
        return self.chunk_layers[stage][chunk] if self.chunk_layers else self.layers_per_chunk

    @property
    def block_stride(self) -> int:
        """Block slots per chunk in the collectives' keys (the largest chunk's blocks, so that
        chunks of different sizes never share a key)."""
        if not self.chunk_layers:
            return self.layers_per_chunk
        return max(max(row) for row in self.chunk_layers)

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
        """One TP collective of ``stage`` (``StageProcess._tp``)."""
        raise NotImplementedError

    def _ring(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        phase: str,
        stage: int,
        micro: int,
        index: int,
        layer: int,
        backward: bool,
    ) -> Generator[simpy.Event, object, None]:
        """The context-parallel ring steps of one block (``ContextRingProcess._ring``)."""
        raise NotImplementedError

    def _forward_overlapped(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        phase: str,
        stage: int,
        idx: int,
        micro: int,
        layer: int,
    ) -> Generator[simpy.Event, object, None]:
        """One block's forward under ``--tp-comm-overlap``: ring-exchange all-gathers into the
        QKV and MLP-in GEMMs, pipelined reduce-scatters out of the projection and MLP-out GEMMs
        (``ops.UB_NUM_SM``). With context parallelism the ring's other ``c − 1`` attention steps
        follow the block's own attention, before the projection, as without the overlap: the
        userbuffers hold this rank's ``s/c`` tokens (Megatron-LM ``initialize_tp_communicators``:
        ``input_shape = [seq_length · micro_batch_size // context_parallel_size, hidden]``), and
        the ring exchanges K/V on its own stream (``megatron.context``)."""
        parts = self.block.parts
        assert parts is not None
        seq = ((parts.a_pre, parts.qkv, parts.attn, parts.proj),
               (parts.m_pre, parts.fc1, parts.act, parts.fc2))  # fmt: skip
        for half, (pre, col, mid, row) in enumerate(seq):
            base = 2 * (idx + 2 * half)
            args = (comm, cs, step, phase, stage, micro, layer)
            yield from cs.run(pre, phase, layer=layer)
            yield from self._ring_gather_gemm(*args, base + 1, col)
            yield from cs.run(mid, phase, layer=layer)
            if half == 0:  # the context-parallel ring (nothing without it)
                yield from self._ring(comm, cs, step, phase, stage, micro, idx, layer, False)
            yield from self._pipelined_gemm_scatter(*args, base, row)

    def _ring_gather_gemm(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        phase: str,
        stage: int,
        micro: int,
        layer: int,
        index: int,
        gemm_s: float,
    ) -> Generator[simpy.Event, object, None]:
        """A GEMM of ``gemm_s`` fed by a ring-exchange all-gather of its input (TE
        ``ring_exchange``): ``t`` chunks, the first on the local shard while the first exchange
        runs, chunk ``i`` once shard ``i`` has arrived. With the ``t − 1`` exchange steps of
        ``c`` each (the ring all-gather of the activation, one call) the GEMM ends
        ``(t − 1)·max(g', c) + g`` after it starts (``g = gemm_s / t``, ``g'`` = ``g`` slowed by
        the ring's SM share): every chunk but the last overlaps a step, the last runs alone."""
        t = self.spec.tensor
        g = gemm_s / t
        slow = self.ub_slow["ring_exchange"]
        ev = self._tp(comm, step, phase, stage, index, micro, CollectiveOp.ALL_GATHER,
                      self.act_bytes)  # fmt: skip
        yield from cs.run((t - 1) * g * slow, phase, layer=layer)
        yield from cs.wait(ev, "tp all_gather")
        yield from cs.run(g, phase, layer=layer)

    def _pipelined_gemm_scatter(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        phase: str,
        stage: int,
        micro: int,
        layer: int,
        index: int,
        gemm_s: float,
    ) -> Generator[simpy.Event, object, None]:
        """A GEMM of ``gemm_s`` whose output is reduce-scattered in ``n`` =
        :data:`~scaling.model.strategies.megatron.ops.UB_PIPELINE_SPLITS` chunks (TE
        ``pipeline``): chunk ``i``'s reduce-scatter starts when its GEMM chunk has ended and the
        previous one is done, overlapping the next GEMM chunk (slowed by the pipeline's SM
        share); the block waits for the last. The chunks run over userbuffers' registered
        buffers without a library call each, so each takes ``r = C / n`` of the reduce-scatter
        ``C`` of the whole activation (one call, issued after the first GEMM chunk): the GEMM
        and its scatter end ``g + (n − 1)·max(g', r) + r`` after they start."""
        n = UB_PIPELINE_SPLITS
        g = gemm_s / n
        g_slow = g * self.ub_slow["pipeline"]
        yield from cs.run(g, phase, layer=layer)
        ev = self._tp(comm, step, phase, stage, index, micro, CollectiveOp.REDUCE_SCATTER,
                      self.act_bytes)  # fmt: skip
        yield from cs.run((n - 1) * g_slow, phase, layer=layer)
        yield from cs.wait(ev, "tp reduce_scatter")
        rec = ev.value
        assert isinstance(rec, CollectiveRecord)
        c = rec.end_s - rec.start_s
        # the chunked scatter ends max((n−1)g', (n−1)r) + r after the first chunk (when the call
        # started); the last chunk's scatter may still be running when the one call has ended
        done = rec.start_s + max((n - 1) * g_slow, (n - 1) * c / n) + c / n
        tail = done - cs.env.now
        if tail > 1e-12 * max(1.0, done):
            yield from cs.wait(cs.env.timeout(tail), "tp reduce_scatter")

    def _chained(
        self,
        env: simpy.Environment,
        comm: Communicator,
        key: CollectiveKey,
        op: CollectiveOp,
        nbytes: float,
        group: Group,
        prev: simpy.Event | None,
        dtype: str,
    ) -> simpy.Event:
        """Collective ``key`` issued once ``prev`` (the one before it on its in-order stream) has
        completed; the returned process ends with it."""

        def proc() -> Generator[simpy.Event, object, None]:
            if prev is not None:
                yield prev
            yield comm.call(key, op, nbytes, group, self._per_stage, dtype=dtype)

        return env.process(proc())

    def _backward_layer_sp(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        stage: int,
        micro: int,
        idx: int,
        layer: int,
        attention_only: bool = False,
    ) -> Generator[simpy.Event, object, None]:
        """One block's backward with sequence parallelism (``attention_only``: its attention
        half, after a MoE block's MLP half, ``megatron.experts``), each half: the all-gather of the
        output gradient before the row-parallel linear's dgrad (``g``-bar's backward; a ring
        exchange into the dgrad GEMM under ``--tp-comm-overlap``), its wgrad and the core's
        backward; then the column-parallel linear as ``LinearWithGradAccumulationAndAsync
        Communication`` runs it (``megatron/core/tensor_parallel/layers.py``): the re-gather of
        its sequence-sharded input launched before the dgrad GEMM and waited for after it, the
        reduce-scatter of the input gradient launched before the wgrad GEMM and waited for after
        it (TE's ``bulk`` overlap under ``--tp-comm-overlap``, the GEMMs slowed by its SM share);
        then the norm and residual."""
        p = self.block.parts
        assert p is not None
        ub = self.spec.tp_comm_overlap
        slow = self.ub_slow["bulk"] if ub else 1.0
        halves = ((p.fc2_d, p.fc2_w + p.act_b, p.fc1_d, p.fc1_w, p.m_post, 0),
                  (p.proj_d, p.proj_w + p.attn_b, p.qkv_d, p.qkv_w, p.a_post, 2))  # fmt: skip
        a = self.act_bytes
        for row_d, rest, col_d, col_w, post, j in halves[int(attention_only) :]:
            base = 2 * (idx + j)
            if ub:
                args = (comm, cs, step, "backward", stage, micro, layer)
                yield from self._ring_gather_gemm(*args, base, row_d)
            else:
                ag = self._tp(comm, step, "backward", stage, base, micro,
                              CollectiveOp.ALL_GATHER, a)  # fmt: skip
                yield from cs.wait(ag, "tp all_gather")
                yield from cs.run(row_d, "backward", layer=layer)
            yield from cs.run(rest, "backward", layer=layer)
            regather = self._tp(comm, step, "backward", stage, base + 2, micro,
                                CollectiveOp.ALL_GATHER, a)  # fmt: skip
            yield from cs.run(col_d * slow, "backward", layer=layer)
            yield from cs.wait(regather, "tp all_gather")
            rs = self._tp(comm, step, "backward", stage, base + 1, micro,
                          CollectiveOp.REDUCE_SCATTER, a)  # fmt: skip
            yield from cs.run(col_w * slow, "backward", layer=layer)
            yield from cs.wait(rs, "tp reduce_scatter")
            yield from cs.run(post, "backward", layer=layer)

    def _dispatch_param_gather(
        self, env: simpy.Environment, comm: Communicator, step: int, k: int
    ) -> None:
        """``--overlap-param-gather``: the updated parameters all-gathered bucket by bucket (one
        bucket per block, the chunk's embedding / head with its first block) on the stage's
        in-order DP stream, dispatched after the optimizer step (``DistributedOptimizer``'s
        ``start_param_sync``); the next step's forward waits for a block's bucket before the
        block (the forward pre-hook's ``finish_param_sync``, ``distributed_data_parallel.py``).
        The gathers of the last simulated step are waited for by no one."""
        stride, v = self.block_stride, self.spec.virtual_stages
        ready = self._params.setdefault((step + 1, k), {})
        prev: simpy.Event | None = None
        for c in range(v):
            lpc = self.layers_of(k, c)
            for layer in range(lpc):
                nbytes = self.layer_param_bytes
                if layer == 0:
                    nbytes = self.chunk_param_bytes[k][c] - (lpc - 1) * nbytes
                key = CollectiveKey(step, "optimizer", "dp", 2000 + c * stride + layer, 0,
                                    STREAMS["dp"], (k,), f"DP all_gather bucket (block "
                                    f"{c * stride + layer})")  # fmt: skip
                prev = ready[(c, layer)] = self._chained(
                    env,
                    comm,
                    key,
                    CollectiveOp.ALL_GATHER,
                    nbytes,
                    self.dp_groups[k],
                    prev,
                    self.act_dtype,
                )

    def _head_forward(
        self, comm: Communicator, cs: ComputeStream, step: int, k: int, micro: int
    ) -> Generator[simpy.Event, object, None]:
        """The last virtual stage's output layer and loss: under ``--tp-comm-overlap`` the
        all-gather of the sequence-sharded final norm output before the logits GEMM (without
        it, the last block's all-gather stands for it); the vocabulary-parallel cross-entropy's
        all-reduces of the per-token maximum logit and of the (predicted logit, sum of
        exponentials) pair, fp32, over the TP group (``megatron/core/tensor_parallel/
        cross_entropy.py``)."""
        if self.spec.tp_comm_overlap:
            ev = self._tp(comm, step, "forward", k, -5, micro, CollectiveOp.ALL_GATHER,
                          self.act_bytes)  # fmt: skip
            yield from cs.wait(ev, "tp all_gather")
        yield from cs.run(self.head_fwd.time_s, "forward", part="head")
        if self.spec.tensor > 1:
            for j, nbytes in enumerate((self.ce_bytes, 2 * self.ce_bytes)):
                key = CollectiveKey(step, "forward", "tp", -6 - j, micro, STREAMS["tp"], (k,),
                                    f"TP cross-entropy all_reduce (stage {k})")  # fmt: skip
                ev = comm.call(key, CollectiveOp.ALL_REDUCE, nbytes, self.tp_groups[k],
                               self._per_stage, dtype="fp32")  # fmt: skip
                yield from cs.wait(ev, "tp all_reduce")
