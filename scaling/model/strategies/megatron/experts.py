"""Expert parallelism in the Megatron strategy (Megatron-Core ``megatron/core/transformer/moe/``).

What is modelled, with the rule's source:

* **Rank order** (``megatron/core/parallel_state.py``, ``initialize_model_parallel``): the
  decoder's ranks follow ``tp-cp-dp-pp``; the experts' follow a second generator over the same
  ranks, ``etp-ep-edp-pp`` (expert-TP innermost, then EP, then the expert-data-parallel rest), so
  that a pipeline stage's ``t·c·d`` ranks are refolded into ``ETP × EP × EDP`` with ``EDP =
  t·c·d / (EP·ETP)``: EP folds over DP × CP (× TP). The EP group of stage-local rank 0 is ranks
  ``0, ETP, 2·ETP …`` of the stage's block; its expert-TP group the first ``ETP``; its
  expert-data-parallel group ranks ``EP·ETP`` apart. The stage's block is contiguous under this
  project's ``tp-dp-pp`` order (Megatron's own); ``tp-pp-dp`` with several stages interleaves the
  blocks and is refused for expert parallelism.
* **Per MoE block, forward** (``MoELayer.forward``, ``token_dispatcher.py``
  ``MoEAlltoAllTokenDispatcher``): router GEMM and gating on the rank's tokens (``b·s/(t·c)``:
  with TP, sequence parallelism is required, Megatron-LM ``arguments.py``), permutation, the
  **dispatch all-to-all** over EP (each rank sends its ``tokens·top_k`` token-copies of ``h``
  values, nccl-tests size ``tokens·k·h·bytes``, of which ``(EP−1)/EP`` leave the rank), with
  expert-TP an all-gather of the received tokens over ETP, the grouped GEMMs of the rank's
  ``E/EP`` experts (``TEGroupedMLP``; 1/ETP of each expert's width), with expert-TP a
  reduce-scatter, the **combine all-to-all**, un-permutation. The shared experts (one TP-split
  MLP of width ``S·f_s``) run after the routed ones, or with ``--moe-shared-expert-overlap`` on a
  side stream during the dispatch (fc1) and the combine (fc2) all-to-alls.
* **Backward**: the mirror — the combine's backward all-to-all sends the output gradients to the
  expert ranks, the grouped GEMMs' data and weight gradients, the dispatch's backward
  all-to-all returns the input gradients; recomputation re-runs the forward with its
  all-to-alls.
* **Routing imbalance** (``model.routing``): each MoE block's routing is drawn once per run
  from the run's seed; the busiest EP rank's token-copies set the grouped GEMMs' rows of the
  simulated rank (every rank waits for the busiest in the combine all-to-all: a straggler inside
  the EP group). The block's dispatch and combine all-to-alls (forward and backward) are the
  uneven ``all_to_allv`` the routing implies (``MoEAlltoAllTokenDispatcher`` passes the
  per-rank ``input_splits``/``output_splits`` to ``all_to_all``): every rank sends rank ``d``
  ``received[d]·S/EP`` of its nccl-tests size ``S``, ``received[d]`` being rank ``d``'s
  token-copies over the mean after drops, so the all-to-all's time follows the busiest
  receiver's links (``comm.algos`` ``schedule_v``). With all loads 1 it is the uniform
  all-to-all: ``S·(EP−1)/EP`` leave each rank. Above ``V_MAX_RANKS`` EP ranks (real pairs:
  ``EP²`` flows) the all-to-all is the uniform one of size ``busiest·S``: each rank receiving
  what the busiest does (an upper bound, stated).
* **Gradients** (``distributed_data_parallel.py``: expert parameters in buffers of their own,
  ``get_expert_data_parallel_group``): the routed experts' gradients are reduced over the
  ``EDP`` ranks (reduce-scatter with the distributed optimizer, which shards their states over
  EDP), the rest over the ``d·c`` data-parallel ranks as for a dense model.
* **Memory**: routed-expert weights, gradients and optimizer states ``1/(EP·ETP)`` per rank;
  activations of a MoE block with its routed tokens (``k×`` the MLP's, ``× the busiest load``)
  and the permuted dispatch buffers (``megatron.memory``).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scaling.model.comm.algos.exchange import V_MAX_RANKS
from scaling.model.comm.collectives import CollectiveKey, Communicator
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.compute import DTYPE_BYTES, ComputeModel, GemmShape, Op, PhaseCost
from scaling.model.hardware.moe import (
    ROUTER_FLOPS_PER_SCORE,
    ROUTER_PASSES_PER_SCORE,
    MoEShape,
    grouped_gemm_rows,
)
from scaling.model.routing import RoutingLoad, layer_loads
from scaling.model.strategies.megatron.ops import phase_cost
from scaling.model.strategies.megatron.overlap import STREAMS
from scaling.model.strategies.megatron.placement import dp_ranks, group_of, rank_of

if TYPE_CHECKING:
    import simpy

    from scaling.model.job import Job
    from scaling.model.strategies.megatron.spec import MegatronSpec
    from scaling.model.strategies.rank import ComputeStream


def stage_blocks(spec: MegatronSpec, n_layers: int, stage: int) -> list[list[int]]:
    """Global block indices of each model chunk of ``stage`` (chunk ``c`` of stage ``k`` holds
    virtual stage ``c·p + k``'s blocks, which follow every earlier virtual stage's; uneven
    stages and chunks shift the others, ``MegatronSpec.chunk_layers``)."""
    p, v = spec.pipeline, spec.virtual_stages
    per = spec.chunk_layers(n_layers)
    sizes = [per[vs % p][vs // p] for vs in range(p * v)]  # in virtual-stage order
    out = []
    for c in range(v):
        vs = c * p + stage
        start = sum(sizes[:vs])
        out.append(list(range(start, start + sizes[vs])))
    return out


def moe_tokens(spec: MegatronSpec, b: int, seq: int) -> int:
    """Tokens one rank routes per micro-batch (``seq`` already ``s/c``): its ``1/t`` of them
    under sequence parallelism."""
    return b * seq // spec.tensor if spec.sequence_parallel else b * seq


def dispatch_bytes(tokens: int, top_k: int, hidden: int, dtype_bytes: int) -> float:
    """nccl-tests size of one dispatch (or combine) all-to-all of one rank: its token-copies,
    ``tokens·top_k·h·bytes`` (of which ``(EP−1)/EP`` leave the rank), bytes."""
    return float(tokens * top_k * hidden * dtype_bytes)


def a2a_sizes(load: RoutingLoad, nbytes: float) -> tuple[float, PeerSizes | None]:
    """The nccl-tests size and per-peer sizes of one MoE block's dispatch / combine all-to-all
    under ``load`` (``nbytes``: the uniform size, :func:`dispatch_bytes`): every rank sends rank
    ``d`` its share ``received[d]·nbytes/EP`` (None: one EP rank, or all shares 1 — the uniform
    all-to-all). Above ``V_MAX_RANKS`` ranks: the uniform all-to-all of ``busiest·nbytes``."""
    ep = len(load.received)
    if ep < 2 or all(x == 1.0 for x in load.received):
        return nbytes, None
    if ep > V_MAX_RANKS:
        return load.busiest * nbytes, None
    return nbytes, PeerSizes(np.tile(np.asarray(load.received), (ep, 1)))


def _gemm(name: str, rows: int, k: int, n: int, batch: int, e: int) -> Op:
    g = GemmShape(rows, k, n, batch)
    nbytes = float(e * batch * (rows * k + k * n + rows * n))
    return Op(name, 2.0 * rows * k * n * batch, nbytes, True, gemm=g)


@dataclass(frozen=True, slots=True)
class MoEOps:
    """One rank's kernels of a MoE block's MLP half (forward), in the order they run."""

    pre: list[Op]  # residual, norm, router GEMM, gating, permutation
    experts: list[Op]  # the grouped GEMMs of the rank's local experts and their activation
    post: list[Op]  # un-permutation and the weighted sum of the k expert outputs
    shared_in: list[Op]  # shared experts' fc1 + activation (empty without shared experts)
    shared_out: list[Op]  # shared experts' fc2


def moe_ops(
    shape: MoEShape, spec: MegatronSpec, b: int, seq: int, e: int, busiest: float
) -> MoEOps:
    """The kernels of one MoE block's MLP half on one rank, ``busiest``: the busiest EP rank's
    token-copies over the mean (the rank simulated is the one that sets the pace)."""
    m, h, t = shape.moe, shape.hidden, spec.tensor
    n_in = 2 if shape.gated_mlp else 1
    tok = b * seq
    tl = moe_tokens(spec, b, seq)
    ep, etp = spec.expert_parallel, spec.etp
    local = m.experts // ep
    copies = tl * m.top_k
    pre = [
        Op("residual1", float(tl * h), 3.0 * e * tl * h, False),
        Op("ln2", 5.0 * tl * h, 2.0 * e * tl * h, False),
        _gemm("router", tl, h, m.experts, 1, e),
        Op(
            "gate",
            ROUTER_FLOPS_PER_SCORE[m.router] * tl * m.experts,
            ROUTER_PASSES_PER_SCORE[m.router] * e * tl * m.experts,
            False,
        ),
        Op("permute", 0.0, 2.0 * e * copies * h, False),
    ]
    rows = busiest * copies * etp  # the busiest rank's rows, gathered over expert-TP
    experts: list[Op] = []
    if rows > 0:
        per = grouped_gemm_rows(rows / local)
        f = m.expert_ffn // etp
        experts = [
            _gemm("experts.fc_in", per, h, n_in * f, local, e),
            Op("experts.act", 8.0 * rows * f, float(e * rows * (n_in + 1) * f), False),
            _gemm("experts.fc_out", per, f, h, local, e),
        ]
    post = [Op("unpermute", float(copies * h), e * (2.0 * copies * h + tl * h), False)]
    shared_in: list[Op] = []
    shared_out: list[Op] = []
    if m.shared_width:
        w = m.shared_width // t
        shared_in = [
            _gemm("shared.fc_in", tok, h, n_in * w, 1, e),
            Op("act", 8.0 * tok * w, float(e * tok * (n_in + 1) * w), False),
        ]
        shared_out = [_gemm("shared.fc_out", tok, w, h, 1, e)]
    return MoEOps(pre, experts, post, shared_in, shared_out)


@dataclass(frozen=True, slots=True)
class MoECost:
    """A MoE block's MLP half on one rank, priced: forward and backward segments (PhaseCost)."""

    pre: PhaseCost
    experts: PhaseCost
    post: PhaseCost
    shared_in: PhaseCost
    shared_out: PhaseCost
    pre_b: PhaseCost
    experts_b: PhaseCost
    post_b: PhaseCost
    shared_in_b: PhaseCost
    shared_out_b: PhaseCost

    @classmethod
    def of(cls, cm: ComputeModel, ops: MoEOps) -> MoECost:
        """Price ``ops`` forward and backward."""
        parts = (ops.pre, ops.experts, ops.post, ops.shared_in, ops.shared_out)
        fwd = [phase_cost(cm, x) for x in parts]
        bwd = [phase_cost(cm, cm.kernels(x, backward=True)) for x in parts]
        return cls(*fwd, *bwd)

    @property
    def forward_s(self) -> float:
        """Forward compute, s."""
        return sum(x.time_s for x in (self.pre, self.experts, self.post, self.shared_in,
                                      self.shared_out))  # fmt: skip

    @property
    def backward_s(self) -> float:
        """Backward compute, s."""
        return sum(x.time_s for x in (self.pre_b, self.experts_b, self.post_b,
                                      self.shared_in_b, self.shared_out_b))  # fmt: skip


def expert_ranks(spec: MegatronSpec, d: int, stage: int) -> tuple[list[int], list[int], list[int]]:
    """(EP group, expert-TP group, expert-data-parallel group) of the stage's first rank, as
    devices (Megatron-Core's ``etp-ep-edp-pp`` generator over the stage's block)."""
    base = rank_of(spec, d, 0, stage, 0)
    ep, etp = spec.expert_parallel, spec.etp
    edp = spec.tensor * spec.context * d // (ep * etp)
    if ep == 1 and etp == spec.tensor:  # the TP group and the DP group (any order)
        tp = [rank_of(spec, d, j, stage, 0) for j in range(etp)]
        return [base], tp, dp_ranks(spec, d, stage)
    return (
        [base + etp * j for j in range(ep)],
        [base + j for j in range(etp)],
        [base + ep * etp * j for j in range(edp)],
    )


@dataclass
class ExpertPlan:
    """Everything the stage processes need for the experts.

    Attributes:
        costs: the MLP half of each MoE block by global block index (its own routing draw).
        blocks: per stage, per model chunk, the global block indices.
        a2a_bytes: nccl-tests size of one dispatch / combine all-to-all of one rank, bytes.
        etp_bytes: nccl-tests size of the expert-TP all-gather / reduce-scatter, bytes.
        ep_groups, etp_groups, edp_groups: per stage.
        expert_grad_bytes: one MoE block's routed-expert gradients on one rank, bytes.
        expert_param_bytes: the same in 16-bit parameters, bytes.
        overlap_shared: ``--moe-shared-expert-overlap``.
        loads: the routing of each MoE block (in block order).
        a2a_calls: per MoE block, the nccl-tests size and per-peer sizes of its dispatch /
            combine all-to-all (:func:`a2a_sizes`).
    """

    costs: dict[int, MoECost]
    blocks: list[list[list[int]]]
    a2a_bytes: float
    etp_bytes: float
    ep_groups: list[Group]
    etp_groups: list[Group]
    edp_groups: list[Group]
    expert_grad_bytes: float
    expert_param_bytes: float
    overlap_shared: bool
    loads: list[RoutingLoad]
    a2a_calls: dict[int, tuple[float, PeerSizes | None]]

    @classmethod
    def build(cls, job: Job, spec: MegatronSpec, cm: ComputeModel, d: int) -> ExpertPlan:
        """The experts of ``job`` (whose shape is a :class:`MoEShape`) under ``spec``."""
        shape, tr = job.shape, job.training
        assert isinstance(shape, MoEShape)
        m, e = shape.moe, cm.dtype_bytes
        seq = tr.seq_len // spec.context
        ep, etp = spec.expert_parallel, spec.etp
        tl = moe_tokens(spec, tr.micro_batch, seq)
        moe_blocks = [i for i in range(shape.n_layers) if shape.is_moe_layer(i)]
        loads = layer_loads(spec.routing, m.experts, m.top_k, ep, tl * ep, len(moe_blocks),
                            job.sim.seed)  # fmt: skip
        costs = {
            i: MoECost.of(cm, moe_ops(shape, spec, tr.micro_batch, seq, e, ld.busiest))
            for i, ld in zip(moe_blocks, loads, strict=True)
        }
        dpn = job.system.devices_per_node
        eg, tg, dg = [], [], []
        lanes = max(1, dpn // (ep * etp))
        for k in range(spec.pipeline):
            epr, etpr, edpr = expert_ranks(spec, d, k)
            eg.append(group_of(epr, etp * lanes, dpn, job.nodes))
            tg.append(group_of(etpr, max(1, dpn // etp), dpn, job.nodes))
            dg.append(group_of(edpr, ep * etp, dpn, job.nodes))
        per_rank = shape.routed_expert_params() / (ep * etp)
        a2a = dispatch_bytes(tl, m.top_k, shape.hidden, e)
        return cls(
            costs,
            [stage_blocks(spec, shape.n_layers, k) for k in range(spec.pipeline)],
            a2a,
            a2a * etp,
            eg,
            tg,
            dg,
            per_rank * DTYPE_BYTES[tr.param_dtype],
            per_rank * e,
            spec.moe_shared_expert_overlap,
            loads,
            {i: a2a_sizes(ld, a2a) for i, ld in zip(moe_blocks, loads, strict=True)},
        )


class ExpertProcess:
    """The MoE parts of a stage's process (fields: :class:`~scaling.model.strategies.megatron.
    work.MegatronWork`'s)."""

    experts: ExpertPlan | None
    act_dtype: str
    grad_dtype: str
    _per_stage: int

    def moe_block(self, stage: int, chunk: int, layer: int) -> int | None:
        """The global index of ``stage``'s block (chunk, layer) when it has experts, else None."""
        x = self.experts
        if x is None:
            return None
        block = x.blocks[stage][chunk][layer]
        return block if block in x.costs else None

    def _call(self, comm: Communicator, step: int, phase: str, kind: str, index: int,
              micro: int, stage: int, op: CollectiveOp, label: str,
              block: int = -1) -> simpy.Event:  # fmt: skip
        """An EP all-to-all of MoE block ``block`` or an expert-TP call over the stage's
        group."""
        x = self.experts
        assert x is not None
        group = {"ep": x.ep_groups, "etp": x.etp_groups}[kind][stage]
        nbytes, sizes = x.a2a_calls[block] if kind == "ep" else (x.etp_bytes, None)
        key = CollectiveKey(step, phase, kind, index, micro, STREAMS[kind], (stage,),
                            f"{kind.upper()} {label} (stage {stage}, {phase})")  # fmt: skip
        return comm.call(key, op, nbytes, group, self._per_stage, dtype=self.act_dtype,
                         sizes=sizes)  # fmt: skip

    def _a2a(self, comm: Communicator, step: int, phase: str, index: int, micro: int,
             stage: int, what: str, block: int) -> simpy.Event | None:  # fmt: skip
        """A dispatch or combine all-to-all of MoE block ``block`` over the stage's EP group
        (None with EP = 1: the tokens stay on the rank)."""
        x = self.experts
        assert x is not None
        if x.ep_groups[stage].size == 1:
            return None
        return self._call(comm, step, phase, "ep", index, micro, stage,
                          CollectiveOp.ALL_TO_ALL, f"{what} all_to_all", block)  # fmt: skip

    def _moe_forward(self, comm: Communicator, cs: ComputeStream, step: int, phase: str,
                     stage: int, micro: int, block: int, idx: int,
                     layer: int) -> Generator[simpy.Event, object, None]:  # fmt: skip
        """A MoE block's MLP half forward (``phase``: ``forward`` or ``recompute``)."""
        x = self.experts
        assert x is not None
        c = x.costs[block]
        where, part = ("backward", "recompute") if phase == "recompute" else ("forward", None)

        def run(seg: PhaseCost) -> Generator[simpy.Event, object, None]:
            if seg.kernels:
                yield from cs.run(seg.time_s, where, part=part, layer=layer)

        etp = x.etp_groups[stage].size > 1
        base = idx * 8
        yield from run(c.pre)
        ev = self._a2a(comm, step, phase, base, micro, stage, "dispatch", block)
        if x.overlap_shared:
            yield from run(c.shared_in)
        if ev is not None:
            yield from cs.wait(ev, "ep all_to_all")
        if etp:
            ev = self._call(comm, step, phase, "etp", base, micro, stage,
                            CollectiveOp.ALL_GATHER, "all_gather")  # fmt: skip
            yield from cs.wait(ev, "etp all_gather")
        yield from run(c.experts)
        if etp:
            ev = self._call(comm, step, phase, "etp", base + 1, micro, stage,
                            CollectiveOp.REDUCE_SCATTER, "reduce_scatter")  # fmt: skip
            yield from cs.wait(ev, "etp reduce_scatter")
        ev = self._a2a(comm, step, phase, base + 1, micro, stage, "combine", block)
        if x.overlap_shared:
            yield from run(c.shared_out)
        if ev is not None:
            yield from cs.wait(ev, "ep all_to_all")
        yield from run(c.post)
        if not x.overlap_shared:
            yield from run(c.shared_in)
            yield from run(c.shared_out)

    def _moe_backward(self, comm: Communicator, cs: ComputeStream, step: int, stage: int,
                      micro: int, block: int, idx: int,
                      layer: int) -> Generator[simpy.Event, object, None]:  # fmt: skip
        """A MoE block's MLP half backward: the mirror of :meth:`_moe_forward`."""
        x = self.experts
        assert x is not None
        c = x.costs[block]

        def run(seg: PhaseCost) -> Generator[simpy.Event, object, None]:
            if seg.kernels:
                yield from cs.run(seg.time_s, "backward", layer=layer)

        etp = x.etp_groups[stage].size > 1
        base = idx * 8 + 4
        if not x.overlap_shared:
            yield from run(c.shared_out_b)
            yield from run(c.shared_in_b)
        yield from run(c.post_b)
        ev = self._a2a(comm, step, "backward", base, micro, stage, "combine", block)
        if x.overlap_shared:
            yield from run(c.shared_out_b)
        if ev is not None:
            yield from cs.wait(ev, "ep all_to_all")
        if etp:
            ev = self._call(comm, step, "backward", "etp", base, micro, stage,
                            CollectiveOp.ALL_GATHER, "all_gather")  # fmt: skip
            yield from cs.wait(ev, "etp all_gather")
        yield from run(c.experts_b)
        if etp:
            ev = self._call(comm, step, "backward", "etp", base + 1, micro, stage,
                            CollectiveOp.REDUCE_SCATTER, "reduce_scatter")  # fmt: skip
            yield from cs.wait(ev, "etp reduce_scatter")
        ev = self._a2a(comm, step, "backward", base + 1, micro, stage, "dispatch", block)
        if x.overlap_shared:
            yield from run(c.shared_in_b)
        if ev is not None:
            yield from cs.wait(ev, "ep all_to_all")
        yield from run(c.pre_b)

    def _edp_call(self, comm: Communicator, step: int, phase: str, stage: int, index: int,
                  op: CollectiveOp, nbytes: float, what: str) -> simpy.Event:  # fmt: skip
        """One collective of the routed experts' gradients / parameters over the stage's
        expert-data-parallel group."""
        x = self.experts
        assert x is not None
        key = CollectiveKey(step, phase, "edp", index, 0, STREAMS["edp"], (stage,),
                            f"EDP {op.value} {what}")  # fmt: skip
        dtype = self.grad_dtype if phase == "backward" else self.act_dtype
        return comm.call(key, op, nbytes, x.edp_groups[stage], self._per_stage, dtype=dtype)

    def expert_blocks(self, stage: int, chunk: int) -> int:
        """MoE blocks of ``stage``'s model chunk ``chunk``."""
        x = self.experts
        if x is None:
            return 0
        return sum(1 for i in x.blocks[stage][chunk] if i in x.costs)

    def _edp_bucket(self, env: simpy.Environment, comm: Communicator, step: int, stage: int,
                    index: int, op: CollectiveOp, nbytes: float,
                    prev: simpy.Event | None) -> simpy.Event:  # fmt: skip
        """The routed experts' gradient bucket of ``stage`` over its expert-data-parallel
        group, started after ``prev`` on the stage's in-order DP stream (Megatron-Core keeps
        expert parameters in buffers of their own, reduced over ``get_expert_data_parallel_
        group``); the returned process ends with it."""
        what = f"chunk {index // 1000 - 1}" if index >= 1000 else f"bucket (block {index})"

        def proc() -> Generator[simpy.Event, object, None]:
            if prev is not None:
                yield prev
            yield self._edp_call(comm, step, "backward", stage, index, op, nbytes, what)

        return env.process(proc())


def dense_block_params(shape: MoEShape, block: int) -> int:
    """Parameters of block ``block`` outside its routed experts (what TP splits and DP
    reduces)."""
    routed = shape.routed_expert_params() if shape.is_moe_layer(block) else 0
    return shape.params_in_block(block) - routed
