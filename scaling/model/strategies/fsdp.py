"""PyTorch FullyShardedDataParallel (FSDP1 semantics) as a SimPy process per rank.

Rules, with their source (torch/distributed/fsdp, PyTorch 2.x; Zhao et al., VLDB 2023):

* Units: one per transformer block (``transformer_auto_wrap_policy``) plus the root unit holding
  everything else (embeddings, final norm, untied head).
* FULL_SHARD: all-gather a unit's parameters before its forward and again before its backward,
  free them after each (reshard); reduce-scatter its gradients after its backward. The *root* unit
  is not resharded after forward, since backward needs it at once (``_post_forward_reshard``
  skips the root), so it is gathered once per step. Volume per rank ≈ 3(p−1)/p·Ψ (ZeRO-3: 1.5×
  DDP's 2(p−1)/p·Ψ).
* SHARD_GRAD_OP: parameters stay unsharded from forward to the end of backward: one all-gather
  per unit per step, 2(p−1)/p·Ψ.
* HYBRID_SHARD: FULL_SHARD inside a node (shard group = the node's ranks); after the intra-node
  reduce-scatter, an all-reduce of the 1/g gradient shard across nodes (replicate group: the same
  local rank of every node; all g of them run at once). On an explicit 2-D mesh
  (``FSDPSpec.mesh``, :mod:`~scaling.model.strategies.fsdp_mesh`) the groups are the mesh's rows
  and columns, strided ones included.
* NO_SHARD: gradients all-reduced per unit after its backward (DDP without buckets).
* All-gathers and reduce-scatters of one process group share one NCCL communicator and so run
  in issue order on one queue. In forward the CPU runs ahead of the GPU and issues all-gathers
  early, throttled by ``limit_all_gathers`` (at most that many unsharded units in flight).
  In backward the next all-gather is issued: before the current unit's gradient computation
  (BACKWARD_PRE), after it but before its reduce-scatter (BACKWARD_POST), or only when the next
  unit's backward begins, i.e. after the reduce-scatter (none) — which is why prefetching helps.
* Gradient accumulation: under ``no_sync`` non-final micro-batches keep unsharded gradients and
  skip the reduce-scatter; all-gathers still happen every micro-batch (FULL_SHARD re-gathers).
  Without it every micro-batch reduce-scatters and the shards accumulate.
* The root unit's gradient reduction is issued last (its embedding gradient is the last one
  backward produces). ``clip_grad_norm_`` adds one scalar all-reduce before the optimizer.
* ``forward_prefetch`` (FSDP1): from the second forward on (the forward order is recorded in the
  first, ``_exec_order_utils``), each unit's pre-forward prefetches the next unit
  (``_runtime_utils._pre_forward_unshard``). The forward issue order is unchanged (the CPU
  already runs ahead), but the next unit's unsharded views are then created before this unit's
  forward, so in backward autograd (ready nodes by decreasing sequence number) reaches the next
  unit's pre-backward hook before this unit's post-backward hook: each block's post-backward
  (its BACKWARD_POST prefetch and gradient reduction) is issued after the next unit's
  pre-backward (its all-gather and BACKWARD_PRE prefetch), one slot later. Recorded from
  PyTorch 2.13 on 4 blocks (fsdp1_forward_prefetch_4blocks); invisible with 2 blocks.
* FSDP2 ``reshard_after_forward=k`` (an int) applies to the root as to the blocks when given
  for both (``_fully_shard.fully_shard`` → ``_get_post_forward_mesh_info``): the root is then
  resharded to k ranks after forward and gathered again, in groups of k, before its backward.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

import simpy

from scaling.model.comm.collectives import CollectiveKey, Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import DTYPE_BYTES, ComputeModel, MicroBatchCompute, PhaseCost
from scaling.model.hardware.memory import MemoryBreakdown, fsdp_memory
from scaling.model.hardware.workload import TransformerShape
from scaling.model.strategies.base import StrategyBase, WorkBase
from scaling.model.strategies.fsdp_host import LIMITER_RESUME_S, after_limiter
from scaling.model.strategies.fsdp_mesh import HSDPMesh
from scaling.model.strategies.rank import ComputeStream

if TYPE_CHECKING:
    from scaling.model.job import Job

from scaling.model.errors import InfeasibleJobError


class ShardingStrategy(StrEnum):
    """``torch.distributed.fsdp.ShardingStrategy`` (lower case)."""

    FULL_SHARD = "full_shard"
    SHARD_GRAD_OP = "shard_grad_op"
    HYBRID_SHARD = "hybrid_shard"
    NO_SHARD = "no_shard"


class BackwardPrefetch(StrEnum):
    """``torch.distributed.fsdp.BackwardPrefetch`` (``none`` = no prefetch)."""

    BACKWARD_PRE = "backward_pre"
    BACKWARD_POST = "backward_post"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class FSDPSpec(StrategyBase):
    """FSDP knobs (names as in ``torch.distributed.fsdp.FullyShardedDataParallel``).

    Attributes:
        sharding: sharding strategy.
        backward_prefetch: when the next unit's all-gather is issued in backward.
        limit_all_gathers: at most this many units unsharded at once (PyTorch's rate limiter
            allows 2); 0 = unlimited.
        param_dtype: ``MixedPrecision.param_dtype``, the dtype units are all-gathered and
            computed in; None = the parameters' own dtype (PyTorch's default: no mixed precision).
        reduce_dtype: ``MixedPrecision.reduce_dtype``, the dtype gradients are reduced in; None
            = ``param_dtype`` (as PyTorch resolves it).
        no_sync: with gradient accumulation, run non-final micro-batches under ``no_sync()``
            (keep unsharded gradients, reduce once per step); False reduces every micro-batch.
        clip_grad_norm: call ``FSDP.clip_grad_norm_`` before the optimizer (one all-reduce).
        post_forward_shard: FSDP2 ``fully_shard(reshard_after_forward=k)``: after forward each
            block is resharded over k ranks of its node only (1/k kept per rank), so backward
            all-gathers run inside groups of k; None = reshard to the whole shard group.
        api: ``fsdp1`` (``FullyShardedDataParallel``: one padded FlatParameter per unit) or
            ``fsdp2`` (``fully_shard``: per-parameter dim-0 shards).
        reshard_root: FSDP2 ``reshard_after_forward`` True or an int given for the root too,
            which is then gathered again before its backward (by default the root is kept).
        forward_prefetch: FSDP1 ``forward_prefetch=True`` (moves each block's gradient
            reduction one slot later in backward, from the second forward on).
        limiter_resume_s: FSDP1's host time from the rate limiter's synchronisation to the
            gated all-gather's launch, s (:mod:`.fsdp_host`); None = the measured
            :data:`~.fsdp_host.LIMITER_RESUME_S` for FSDP1, 0 for FSDP2 (no CPU-side limiter).
        mesh: HYBRID_SHARD on an explicit 2-D device mesh (FSDP1 ``device_mesh=``, FSDP2
            ``fully_shard(mesh=)``), shard groups possibly strided; None = shard inside a node.
    """

    sharding: ShardingStrategy = ShardingStrategy.FULL_SHARD
    backward_prefetch: BackwardPrefetch = BackwardPrefetch.BACKWARD_PRE
    limit_all_gathers: int = 2
    param_dtype: str | None = "bf16"
    reduce_dtype: str | None = "fp32"
    no_sync: bool = True
    clip_grad_norm: bool = False
    post_forward_shard: int | None = None
    api: str = "fsdp1"
    reshard_root: bool = False
    forward_prefetch: bool = False
    limiter_resume_s: float | None = None
    mesh: HSDPMesh | None = None

    @property
    def resume_s(self) -> float:
        """The limiter's host resume time in effect, s (0 without the limiter or on FSDP2)."""
        if not self.limit_all_gathers:
            return 0.0
        if self.limiter_resume_s is not None:
            return self.limiter_resume_s
        return LIMITER_RESUME_S if self.api == "fsdp1" else 0.0

    def placement_error(self, devices: int, devices_per_node: int) -> str:
        """An explicit HSDP mesh must hold every device, its groups evenly spread over nodes."""
        return "" if self.mesh is None else self.mesh.error(devices, devices_per_node)

    def _check_post_forward(self, job: Job) -> None:
        k, g = self.post_forward_shard, job.system.devices_per_node
        if k is not None and (self.sharding is not ShardingStrategy.FULL_SHARD or g % k):
            raise InfeasibleJobError(
                f"{job.system.name}: reshard_after_forward={k} needs sharding full_shard and a "
                f"group size that divides the node's {g} devices (FSDP2 reshards to a smaller, "
                "intra-node mesh after forward)"
            )

    def dtypes(self, job: Job) -> tuple[str, str]:
        """(all-gather dtype, reduce dtype) of ``job``, defaults resolved as PyTorch does."""
        gather = self.param_dtype or job.training.param_dtype
        return gather, self.reduce_dtype or gather

    @property
    def collective_ops(self) -> frozenset[CollectiveOp]:
        """Parameter all-gathers, gradient reduce-scatters (all-reduces when not sharded,
        across replicas with hybrid sharding) and the gradient-norm all-reduce: no all-to-all
        or broadcast."""
        return frozenset(
            {CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_REDUCE}
        )

    @property
    def label(self) -> str:
        """``fsdp-<sharding>`` (FSDP1), e.g. ``fsdp-full_shard``; ``fsdp2-…`` for FSDP2."""
        if self.post_forward_shard is not None:
            return f"fsdp2-reshard{self.post_forward_shard}"
        return f"{'fsdp' if self.api == 'fsdp1' else 'fsdp2'}-{self.sharding.value}"

    def shard_size(self, job: Job) -> int:
        """Ranks one parameter shard is split over: the node (HYBRID_SHARD), one (NO_SHARD) or
        the whole cluster."""
        if self.sharding is ShardingStrategy.NO_SHARD:
            return 1
        if self.sharding is ShardingStrategy.HYBRID_SHARD:
            return job.system.devices_per_node if self.mesh is None else self.mesh.shard
        return job.devices

    def memory(self, job: Job) -> MemoryBreakdown:
        """Sharded state plus the unsharded units in flight (see :func:`fsdp_memory`)."""
        self._check_post_forward(job)
        t = job.training
        gather, reduce = self.dtypes(job)
        # NO_SHARD's memory is a full replica: fsdp_memory ignores the shard size there
        shard = job.devices if self.sharding is ShardingStrategy.NO_SHARD else self.shard_size(job)
        return fsdp_memory(
            job.shape,
            self.sharding.value,
            shard,
            self.limit_all_gathers,
            t.micro_batch,
            t.seq_len,
            t.checkpointing,
            t.flash_attention,
            job.system.device.reserved_mem_bytes,
            DTYPE_BYTES[gather],
            param_bytes=DTYPE_BYTES[t.param_dtype],
            reduce_bytes=DTYPE_BYTES[reduce],
            unsharded_grads=self.no_sync and t.grad_accum > 1,
            post_forward_shard=self.post_forward_shard,
        )

    def plan(self, job: Job, compute: ComputeModel, mb: MicroBatchCompute) -> FSDPWork:
        """Units and the optimizer step over this rank's shard only."""
        return FSDPWork(
            mb,
            compute.optimizer_cost(job.shape.params() / self.shard_size(job)),
            unit_padded_elements(job.shape, self.shard_size(job), self.api),
            job.training.grad_accum,
            job.nodes,
            job.system.devices_per_node,
            self,
            *self.dtypes(job),
            len(job.shape.param_tensors()),
        )


def unit_params(shape: TransformerShape) -> list[int]:
    """Parameters of each FSDP unit: [root, block 0 … block L−1]."""
    return [shape.embedding_params() + shape.head_params(), *shape.block_params()]


def unit_padded_elements(shape: TransformerShape, shard: int, api: str) -> list[int]:
    """Elements each unit all-gathers and reduce-scatters over ``shard`` ranks, padding included.

    FSDP1 flattens a unit into one FlatParameter and pads it to a multiple of the shard size
    (``FlatParamHandle.shard``: ``ceil(numel / world)`` per rank). FSDP2 shards every parameter
    on dim 0 (``torch.chunk`` semantics, padded to ``ceil(dim0 / world)`` rows per rank), so a
    parameter with fewer rows than ranks is padded up to one row per rank.
    """
    if api == "fsdp1":
        return [-(-n // shard) * shard for n in unit_params(shape)]
    root = [*shape.embedding_tensors(), *shape.head_tensors()]

    def padded(tensors: list[tuple[str, int]]) -> int:
        total = 0
        for name, n in tensors:
            rows = shape.dim0(name, n)
            total += -(-rows // shard) * shard * (n // rows)
        return total

    return [padded(root)] + [padded(shape.block_tensors(i)) for i in range(shape.n_layers)]


@dataclass(frozen=True, slots=True)
class FSDPWork(WorkBase):
    """Everything an FSDP rank needs, precomputed once per job."""

    mb: MicroBatchCompute
    optimizer: PhaseCost
    units: list[int]
    grad_accum: int
    nodes: int
    per_node: int
    spec: FSDPSpec
    gather_dtype: str
    reduce_dtype: str
    n_tensors: int = 0

    def shard_group(self, rank: int) -> Group:
        """The group a rank shards over: its node (HYBRID_SHARD) or every rank."""
        if self.spec.sharding is ShardingStrategy.HYBRID_SHARD:
            return Group(1, self.per_node, rank // self.per_node)
        return Group(self.nodes, self.per_node)

    @property
    def replicate_group(self) -> Group | None:
        """HYBRID_SHARD: local rank j of every node, all ``per_node`` lanes at once."""
        if self.spec.sharding is not ShardingStrategy.HYBRID_SHARD or self.nodes == 1:
            return None
        return Group(self.nodes, 1, lanes=self.per_node)

    def run(
        self,
        env: simpy.Environment,
        rank: int,
        comm: Communicator,
        steps: int,
        cs: ComputeStream,
    ) -> Generator[simpy.Event, object, None]:
        """SimPy process of one FSDP rank for ``steps`` training steps."""
        return _rank_process(env, rank, self, comm, steps, cs)

    def describe(self, key: CollectiveKey) -> dict[str, object]:
        """The unit a collective belongs to: ``root`` or the block's module name ``h{i}``."""
        if key.kind == "grad_norm":
            return {}
        return {"unit": "root" if key.index == 0 else f"h{key.index - 1}"}


@dataclass(frozen=True, slots=True)
class _Call:
    """A queued collective: what to call once the queue reaches it, and when it was issued."""

    key: CollectiveKey
    op: CollectiveOp
    nbytes: float
    group: Group
    dtype: str
    issue: int
    expected: int


class _Queue:
    """One in-order communication queue (one NCCL communicator) of a rank."""

    def __init__(
        self,
        env: simpy.Environment,
        comm: Communicator,
        expected: int,
        issue: Iterator[int],
        tag: tuple[int, ...] = (),
    ) -> None:
        self.env = env
        self.comm = comm
        self.expected = expected  # simulated ranks in this queue's group
        # The rank's own issue counter, shared by all its queues: a call's number is its place in
        # this rank's program order. Every FSDP rank runs the same program, so each member of a
        # group gives the call the same number whenever it gets there; a counter shared by all
        # ranks would number it by whichever rank got there first in simulated time (a node
        # running ahead would put its cross-node all-reduce before this node's reduce-scatter).
        self.issue = issue
        self.tag = tag  # tells groups apart in rendezvous keys (HSDP: the node)
        self._tail: simpy.Event | None = None

    def submit(
        self,
        key: CollectiveKey,
        op: CollectiveOp,
        nbytes: float,
        group: Group,
        dtype: str,
        after: simpy.Event | None = None,
        *,
        expected: int | None = None,
        tag: tuple[int, ...] | None = None,
    ) -> simpy.Event:
        """Queue a collective behind everything issued before it (and behind ``after``).

        ``expected``/``tag``: for a call on a smaller group than the queue's (FSDP2's
        post-forward mesh), the simulated ranks in it and what tells its sibling groups apart.
        """
        done = self.env.event()
        prev, self._tail = self._tail, done
        tag = self.tag if tag is None else tag
        call = _Call(
            # (most calls already carry their queue's tag: no copy of the key then)
            key if key.tag == tag else replace(key, tag=tag),
            op,
            nbytes,
            group,
            dtype,
            next(self.issue),
            self.expected if expected is None else expected,
        )
        self.env.process(self._run(call, prev, after, done))
        return done

    def _run(
        self,
        call: _Call,
        prev: simpy.Event | None,
        after: simpy.Event | None,
        done: simpy.Event,
    ) -> Generator[simpy.Event, object, None]:
        if prev is not None and not prev.processed:
            yield prev
        if after is not None and not after.processed:
            yield after
        rec = None
        if call.group.size > 1 and call.nbytes > 0:
            rec = yield self.comm.call(
                call.key,
                call.op,
                call.nbytes,
                call.group,
                call.expected,
                dtype=call.dtype,
                issue=call.issue,
            )
        done.succeed(rec)  # the record: when it ended (the rank ensemble's waits read it)


def _rank_process(
    env: simpy.Environment,
    rank: int,
    work: FSDPWork,
    comm: Communicator,
    steps: int,
    cs: ComputeStream,
) -> Generator[simpy.Event, object, None]:
    """SimPy process of one FSDP rank for ``steps`` training steps."""
    spec, mb = work.spec, work.mb
    shard = work.shard_group(rank)
    rep_group = work.replicate_group
    sharded = spec.sharding is not ShardingStrategy.NO_SHARD
    reshard_fwd = spec.sharding in (ShardingStrategy.FULL_SHARD, ShardingStrategy.HYBRID_SHARD)
    all_ranks = comm.simulated_ranks > 1
    issue = itertools.count(1)
    q_rep: _Queue | None = None
    if spec.mesh is not None:
        # an explicit mesh: each rank's own groups (strides included); with every rank
        # simulated each group is its own rendezvous, told apart by its first rank
        m = spec.mesh
        shard = m.shard_group(rank, work.per_node, not all_ranks)
        first = min(m.shard_ranks(rank))
        q = _Queue(env, comm, m.shard if all_ranks else 1, issue, (first,))
        rep_group = m.replicate_group(rank, work.per_node, not all_ranks)
        rep_group = rep_group if m.replicate > 1 else None
        first = min(m.replicate_ranks(rank))
        q_rep = _Queue(env, comm, m.replicate if all_ranks else 1, issue, (first,))
    elif spec.sharding is ShardingStrategy.HYBRID_SHARD:
        q = _Queue(env, comm, shard.size if all_ranks else 1, issue, (shard.first_node,))
    else:
        q = _Queue(env, comm, comm.simulated_ranks, issue)
    if spec.mesh is None:
        q_rep = _Queue(env, comm, comm.simulated_ranks, issue) if rep_group is not None else None
    n_units = len(work.units)
    limit = spec.limit_all_gathers or n_units + 1
    # backward all-gathers: the shard group, or FSDP2's smaller post-forward group of k ranks
    bwd_group, bwd_expected, bwd_tag = shard, None, None
    if spec.post_forward_shard is not None:
        k = spec.post_forward_shard
        node, local = divmod(rank, work.per_node)
        bwd_group = Group(1, k, node, (local // k) * k)
        bwd_expected = k if all_ranks else 1
        bwd_tag = (node, (local // k) * k)

    def fwd_cost(u: int) -> float:
        return mb.head_fwd.time_s if u == 0 else mb.block(u - 1)[0].time_s

    def bwd_cost(u: int) -> float:
        return mb.head_bwd.time_s if u == 0 else mb.block(u - 1)[1].time_s

    def ag_bytes(u: int) -> float:
        return work.units[u] * DTYPE_BYTES[work.gather_dtype]  # full gathered size

    def grad_bytes(u: int) -> float:
        return work.units[u] * DTYPE_BYTES[work.reduce_dtype]

    def reduce_grad(u: int, step: int, micro: int) -> simpy.Event:
        """Issue unit ``u``'s gradient reduction (and HSDP's replicate all-reduce after it)."""
        op = CollectiveOp.REDUCE_SCATTER if sharded else CollectiveOp.ALL_REDUCE
        key = CollectiveKey(step, "backward", "grad", u, micro, label=f"unit {u} {op.value}")
        done = q.submit(key, op, grad_bytes(u), shard, work.reduce_dtype)
        if q_rep is not None and rep_group is not None:
            rep = CollectiveKey(
                step,
                "backward",
                "replicate",
                u,
                micro,
                stream="comm:replicate",
                label=f"unit {u} all_reduce across nodes",
            )
            done = q_rep.submit(
                rep,
                CollectiveOp.ALL_REDUCE,
                grad_bytes(u) / shard.size,
                rep_group,
                work.reduce_dtype,
                done,
            )
        return done

    for step in range(steps):
        cs.begin_step(step)
        pending_grad: list[simpy.Event] = []
        for micro in range(work.grad_accum):
            # with no_sync, non-final micro-batches keep unsharded gradients and reduce nothing
            reduce_now = micro == work.grad_accum - 1 or not spec.no_sync
            gathered: dict[int, simpy.Event] = {}
            freed: list[simpy.Event] = [env.event() for _ in range(n_units)]
            # ---- forward: root first, then blocks; the CPU issues all-gathers ahead --------
            # The rate limiter lets block u gather only once block u−limit has been freed.
            order = list(range(n_units))
            if sharded:
                for u in order:
                    gate = freed[u - limit] if (reshard_fwd and u - limit >= 1) else None
                    gate = after_limiter(env, gate, spec.resume_s)  # the host's stall
                    gathered[u] = q.submit(
                        CollectiveKey(
                            step,
                            "forward",
                            "all_gather",
                            u,
                            micro,
                            label=f"unit {u} all_gather (forward)",
                        ),
                        CollectiveOp.ALL_GATHER,
                        ag_bytes(u),
                        shard,
                        work.gather_dtype,
                        gate,
                    )
            for u in order:
                if sharded:
                    yield from cs.wait(gathered[u], f"all_gather:unit{u}")
                yield from cs.run(fwd_cost(u), f"forward:unit{u}", micro=micro)
                if not reshard_fwd or (u == 0 and not spec.reshard_root):
                    continue  # SHARD_GRAD_OP keeps everything; the root is kept by default
                freed[u].succeed()
            # ---- backward: head (root) first, then blocks last to first ---------------------
            border = [0, *range(n_units - 1, 0, -1)]
            bgather: dict[int, simpy.Event] = {}

            def issue_ag(
                u: int,
                bgather: dict[int, simpy.Event] = bgather,
                step: int = step,
                micro: int = micro,
            ) -> None:
                # a resharded block is gathered again before its backward, once
                if reshard_fwd and (u != 0 or spec.reshard_root) and u not in bgather:
                    key = CollectiveKey(
                        step,
                        "backward",
                        "all_gather",
                        u,
                        micro,
                        label=f"unit {u} all_gather (backward)",
                    )
                    bgather[u] = q.submit(
                        key,
                        CollectiveOp.ALL_GATHER,
                        ag_bytes(u),
                        bwd_group,
                        work.gather_dtype,
                        expected=bwd_expected,
                        tag=bwd_tag,
                    )

            # forward_prefetch acts from the second forward on (see the module docstring)
            late_post = spec.forward_prefetch and sharded and (step, micro) != (0, 0)
            deferred: list[int] = []  # blocks whose post-backward waits for the next pre-backward

            def post_backward(
                u: int,
                nxt: int | None,
                step: int = step,
                micro: int = micro,
                reduce_now: bool = reduce_now,
                pending: list[simpy.Event] = pending_grad,
                issue_ag: Callable[[int], None] = issue_ag,
            ) -> None:
                if nxt is not None and spec.backward_prefetch is BackwardPrefetch.BACKWARD_POST:
                    issue_ag(nxt)
                # The root's gradients are complete only after the embedding's backward, the
                # last op of backward: its reduction is issued after every block's (PyTorch
                # runs it in the post-backward hook of the root's flat parameter, which fires
                # last; torch/distributed/fsdp/_runtime_utils.py ``_post_backward_hook``).
                if reduce_now and u != 0:
                    pending.append(reduce_grad(u, step, micro))

            for i, u in enumerate(border):
                issue_ag(u)  # no-op if prefetched or never resharded
                nxt = border[i + 1] if i + 1 < len(border) else None
                if nxt is not None and spec.backward_prefetch is BackwardPrefetch.BACKWARD_PRE:
                    issue_ag(nxt)
                while deferred:  # the previous block's post-backward, after this pre-backward
                    post_backward(deferred.pop(), u)
                if u in bgather:
                    yield from cs.wait(bgather[u], f"all_gather:unit{u}")
                yield from cs.run(bwd_cost(u), f"backward:unit{u}", micro=micro)
                if late_post and u != 0:
                    deferred.append(u)
                else:
                    post_backward(u, nxt)
            while deferred:
                post_backward(deferred.pop(), None)
            if reduce_now:
                pending_grad.append(reduce_grad(0, step, micro))
        for ev in pending_grad:
            yield from cs.wait(ev, "reduce_scatter" if sharded else "all_reduce")
        if spec.clip_grad_norm:
            # FSDP.clip_grad_norm_: each rank's shard norm, all-reduced (one fp32 scalar) over
            # the shard group before the optimizer (torch/distributed/fsdp/
            # fully_sharded_data_parallel.py ``clip_grad_norm_``). FSDP2's
            # torch.nn.utils.clip_grad_norm_ reduces one norm per parameter tensor (the stacked
            # per-parameter norms are a Partial DTensor; recorded in the fixtures).
            n = 1 if spec.api == "fsdp1" else work.n_tensors
            key = CollectiveKey(
                step, "optimizer", "grad_norm", 0, label="clip_grad_norm_ all_reduce"
            )
            norm = q.submit(key, CollectiveOp.ALL_REDUCE, 4.0 * n, shard, "fp32")
            yield from cs.wait(norm, "all_reduce")
        yield from cs.run(work.optimizer.time_s, "optimizer")
        cs.end_step()
