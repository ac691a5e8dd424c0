"""Context parallelism: ring attention over the ``c`` ranks of a context-parallel group.

Rules and their sources:

* **Sequence split** (Megatron-LM ``megatron/training/utils.py`` ``get_batch_on_this_cp_rank``):
  each micro-batch's sequence is cut into ``2c`` chunks and CP rank ``i`` keeps chunks ``i`` and
  ``2c−1−i`` (causal load balance), so every rank runs its blocks on ``b·s/c`` tokens: every
  GEMM, element-wise op, activation and the loss are ``1/c`` of the unsplit ones.
* **Ring exchange** (Transformer Engine ``pytorch/attention/dot_product_attention/
  context_parallel.py``, ``AttnFuncWithCPAndKVP2P``, which Megatron-Core's
  ``TEDotProductAttention`` calls with ``cp_comm_type="p2p"``): the local queries meet the
  keys/values of all ``c`` chunks in ``c`` steps; before step ``j`` computes on the K/V it
  holds, the rank sends them to the next CP rank and receives the previous rank's
  (``flash_attn_p2p_communicate``), ``c − 1`` exchanges per forward, each overlapped with the
  attention of the current step and waited for before the next. The backward exchanges K/V
  *and* their gradients dK/dV the same ``c − 1`` times ("Point-to-point communications of KV
  and dKV"): twice the forward's bytes.
* **Volume** (derived here): one exchange carries one rank's K and V chunk, ``2·b·(s/c)·
  (kv_dim/t)·e`` bytes (GQA: ``kv_dim = kv_heads·head_dim``; the heads are split ``t`` ways by
  TP); per block and micro-batch a rank sends ``2·(c−1)/c·b·s·kv_dim/t·e`` forward and twice
  that backward (:func:`ring_bytes_per_layer`).
* **Compute**: ring step ``j`` is the attention of ``b·s/c`` queries against ``s/c`` keys; the
  ``c`` steps together do ``1/c`` of the unsplit attention's FLOPs (the causal mask's halving
  kept by the balanced split).
* **Placement**: CP comes right after TP in the rank order (``parallel_state.py``'s
  ``tp-cp-ep-dp-pp``); a ring of ``c`` ranks ``t`` devices apart, the ``t`` TP lanes running
  their rings side by side. All ranks send at once, each to its neighbour: priced as one
  two-rank send, on the lanes, across the slowest boundary the ring crosses.
* **Gradients** are reduced over the data-parallel group *with* context parallelism (``d·c``
  ranks, :func:`~scaling.model.strategies.megatron.placement.dp_ranks`), and the distributed
  optimizer shards over the same ``d·c`` ranks.

Explain reports the waits as ``exposed CP …`` (the collective kind ``cp``); traces show the
exchanges on the node's communication stream.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import simpy

from scaling.model.comm.collectives import CollectiveKey, Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import ComputeModel
from scaling.model.hardware.workload import Checkpointing, TransformerShape
from scaling.model.strategies.megatron.ops import tp_block_ops
from scaling.model.strategies.megatron.placement import cp_ranks, p2p_group
from scaling.model.strategies.rank import ComputeStream

if TYPE_CHECKING:
    from scaling.model.job import Job
    from scaling.model.strategies.megatron.spec import MegatronSpec

#: The trace stream of the ring's exchanges (the node's communication stream, as TP and PP).
CP_STREAM = "comm"


def ring_bytes_per_step(shape: TransformerShape, b: int, s: int, c: int, t: int, e: int) -> float:
    """Bytes one rank sends in one forward ring exchange: its K and V chunk, ``2·b·(s/c)·
    (kv_dim/t)·e``."""
    return 2.0 * b * (s / c) * (shape.kv_dim / t) * e


def ring_bytes_per_layer(
    shape: TransformerShape, b: int, s: int, c: int, t: int, e: int
) -> tuple[float, float]:
    """(forward, backward) bytes one rank sends per block and micro-batch: ``2·(c−1)/c·b·s·
    kv_dim/t·e`` forward (``c − 1`` K/V exchanges) and twice that backward (K/V and dK/dV)."""
    fwd = (c - 1) * ring_bytes_per_step(shape, b, s, c, t, e)
    return fwd, 2.0 * fwd


@dataclass(frozen=True, slots=True)
class ContextRing:
    """One rank's ring attention for one block and micro-batch.

    Attributes:
        c: context-parallel size.
        kv_bytes: one forward exchange (K and V chunk), bytes.
        attn_fwd_s, attn_bwd_s: one ring step's attention on one rank, forward / backward (s).
        groups: per pipeline stage, the group one exchange is priced on.
        recompute_core: selective recomputation re-runs the ring forward in the backward.
        step_bytes: bytes one ring step's attention moves, forward + backward.
    """

    c: int
    kv_bytes: float
    attn_fwd_s: float
    attn_bwd_s: float
    groups: list[Group]
    recompute_core: bool
    step_bytes: float = 0.0

    @classmethod
    def build(
        cls, job: Job, spec: MegatronSpec, cm: ComputeModel, rank: list[list[int]]
    ) -> ContextRing:
        """The ring of ``job`` under ``spec`` (``rank[k]``: stage ``k``'s CP ring, global
        ranks in ring order, TP lane 0 of replica 0)."""
        shape, tr = job.shape, job.training
        c, t = spec.context, spec.tensor
        s_loc = tr.seq_len // c
        e = cm.dtype_bytes
        first, _ = tp_block_ops(
            shape, tr.micro_batch, s_loc, e, tr.flash_attention, t, spec.sequence_parallel
        )
        attn = [op for op in first if op.name == "attention" or op.name.startswith("attn.")]
        kf, kb = cm.kernels(attn), cm.kernels(attn, backward=True)
        fwd = sum(cm.op_time(k) for k in kf)
        bwd = sum(cm.op_time(k) for k in kb)
        dpn = job.system.devices_per_node
        groups = []
        for ring in rank:
            pairs = [(ring[i], ring[(i + 1) % c]) for i in range(c)]
            # the slowest boundary: a pair on two nodes if the ring leaves a node at all
            a, b = max(pairs, key=lambda ab: (ab[0] // dpn != ab[1] // dpn, -ab[0]))
            groups.append(p2p_group(min(a, b), max(a, b), t, dpn))
        return cls(
            c,
            ring_bytes_per_step(shape, tr.micro_batch, tr.seq_len, c, t, e),
            fwd,
            bwd,
            groups,
            # as the block's own segments: selective recomputation re-runs the unfused
            # attention core (a fused kernel stores no s×s tensors, so nothing is recomputed)
            tr.checkpointing is Checkpointing.SELECTIVE and not tr.flash_attention,
            sum(k.bytes for k in kf + kb),
        )


def stage_rings(spec: MegatronSpec, d: int) -> list[list[int]]:
    """Every stage's CP ring (TP lane 0, replica 0), global ranks in ring order."""
    return [cp_ranks(spec, d, k) for k in range(spec.pipeline)]


class ContextRingProcess:
    """The ring exchanges of a stage process (mixed into ``StageProcess``): the ``c − 1``
    attention steps beyond the one the block's own segments price, each overlapped with one
    exchange and waiting for it at its end."""

    ring: ContextRing | None
    act_dtype: str
    _per_stage: int

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
        """The extra ring steps of one block (nothing without context parallelism)."""
        r = self.ring
        if r is None:
            return
        nbytes = r.kv_bytes * (2.0 if backward else 1.0)
        compute = r.attn_bwd_s if backward else r.attn_fwd_s
        op = "exchange dK/dV" if backward else "exchange K/V"
        for j in range(r.c - 1):
            key = CollectiveKey(
                step,
                phase,
                "cp",
                index * r.c + j,
                micro,
                CP_STREAM,
                (stage,),
                f"CP ring {op} (stage {stage}, {phase})",
            )
            ev = comm.call(
                key,
                CollectiveOp.BROADCAST,
                nbytes,
                r.groups[stage],
                self._per_stage,
                dtype=self.act_dtype,
            )
            yield from cs.run(compute, phase, layer=layer, part="ring attention")
            yield from cs.wait(ev, "cp send_recv")

    def _ring_backward(
        self,
        comm: Communicator,
        cs: ComputeStream,
        step: int,
        stage: int,
        micro: int,
        index: int,
        layer: int,
    ) -> Generator[simpy.Event, object, None]:
        """A block's backward ring; under selective recomputation the ring forward first
        (the attention core is recomputed, its K/V exchanged again)."""
        if self.ring is not None and self.ring.recompute_core:
            yield from self._ring(comm, cs, step, "recompute", stage, micro, index, layer, False)
        yield from self._ring(comm, cs, step, "backward", stage, micro, index, layer, True)
