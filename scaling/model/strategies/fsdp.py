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
  local rank of every node; all g of them run at once).
* NO_SHARD: gradients all-reduced per unit after its backward (DDP without buckets).
* All-gathers and reduce-scatters of one process group share one NCCL communicator and so run
  in issue order on one queue. In forward the CPU runs ahead of the GPU and issues all-gathers
  early, throttled by ``limit_all_gathers`` (at most that many unsharded units in flight).
  In backward the next all-gather is issued: before the current unit's gradient computation
  (BACKWARD_PRE), after it but before its reduce-scatter (BACKWARD_POST), or only when the next
  unit's backward begins, i.e. after the reduce-scatter (none) — which is why prefetching helps.
* Gradient accumulation (``no_sync``): non-final micro-batches keep unsharded gradients and
  skip the reduce-scatter; all-gathers still happen every micro-batch.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from enum import StrEnum

import simpy

from scaling.model.comm.collectives import Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import MicroBatchCompute, PhaseCost
from scaling.model.hardware.workload import TransformerShape
from scaling.model.strategies.rank import ComputeStream


class ShardingStrategy(StrEnum):
    FULL_SHARD = "full_shard"
    SHARD_GRAD_OP = "shard_grad_op"
    HYBRID_SHARD = "hybrid_shard"
    NO_SHARD = "no_shard"


class BackwardPrefetch(StrEnum):
    BACKWARD_PRE = "backward_pre"
    BACKWARD_POST = "backward_post"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class FSDPSpec:
    """FSDP knobs (names as in ``torch.distributed.fsdp.FullyShardedDataParallel``).

    Attributes:
        sharding: sharding strategy.
        backward_prefetch: when the next unit's all-gather is issued in backward.
        forward_prefetch: issue the next unit's all-gather explicitly at the start of a unit's
            forward (only matters when the CPU cannot run ahead; kept for completeness).
        limit_all_gathers: at most this many units unsharded at once (PyTorch's rate limiter
            allows 2); 0 = unlimited.
        param_bytes: bytes per parameter all-gathered (mixed-precision ``param_dtype``).
        reduce_bytes: bytes per gradient element reduced (``reduce_dtype``).
    """

    sharding: ShardingStrategy = ShardingStrategy.FULL_SHARD
    backward_prefetch: BackwardPrefetch = BackwardPrefetch.BACKWARD_PRE
    forward_prefetch: bool = False
    limit_all_gathers: int = 2
    param_bytes: float = 2.0
    reduce_bytes: float = 2.0


def unit_params(shape: TransformerShape) -> list[int]:
    """Parameters of each FSDP unit: [root, block 0 … block L−1]."""
    return [shape.embedding_params() + shape.head_params()] + [
        shape.layer_params()
    ] * shape.n_layers


@dataclass(frozen=True, slots=True)
class FSDPWork:
    """Everything an FSDP rank needs, precomputed once per job."""

    mb: MicroBatchCompute
    optimizer: PhaseCost
    units: list[int]
    grad_accum: int
    nodes: int
    per_node: int
    spec: FSDPSpec

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


class _Queue:
    """One in-order communication queue (one NCCL communicator) of a rank."""

    def __init__(
        self, env: simpy.Environment, comm: Communicator, expected: int, tag: tuple = ()
    ) -> None:
        self.env = env
        self.comm = comm
        self.expected = expected  # simulated ranks in this queue's group
        self.tag = tag  # tells groups apart in rendezvous keys (HSDP: the node)
        self._tail: simpy.Event | None = None

    def submit(
        self,
        key: tuple,
        op: CollectiveOp,
        nbytes: float,
        group: Group,
        after: simpy.Event | None = None,
    ) -> simpy.Event:
        """Queue a collective behind everything issued before it (and behind ``after``)."""
        done = self.env.event()
        prev, self._tail = self._tail, done
        self.env.process(self._run(key, op, nbytes, group, prev, after, done))
        return done

    def _run(self, key, op, nbytes, group, prev, after, done) -> Generator:
        if prev is not None and not prev.processed:
            yield prev
        if after is not None and not after.processed:
            yield after
        if group.size > 1 and nbytes > 0:
            yield self.comm.call((*key, *self.tag), op, nbytes, group, self.expected)
        done.succeed()


def fsdp_rank(
    env: simpy.Environment,
    rank: int,
    *,
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
    if spec.sharding is ShardingStrategy.HYBRID_SHARD:
        q = _Queue(env, comm, shard.size if all_ranks else 1, ("node", shard.first_node))
    else:
        q = _Queue(env, comm, comm.simulated_ranks)
    q_rep = _Queue(env, comm, comm.simulated_ranks) if rep_group is not None else None
    n_units = len(work.units)
    limit = spec.limit_all_gathers or n_units + 1

    def fwd_cost(u: int) -> float:
        return mb.head_fwd.time_s if u == 0 else mb.block_fwd.time_s

    def bwd_cost(u: int) -> float:
        return mb.head_bwd.time_s if u == 0 else mb.block_bwd.time_s

    def ag_bytes(u: int) -> float:
        return work.units[u] * spec.param_bytes  # full gathered size (nccl-tests convention)

    def grad_bytes(u: int) -> float:
        return work.units[u] * spec.reduce_bytes

    for step in range(steps):
        cs.begin_step(step)
        pending_grad: list[simpy.Event] = []
        for micro in range(work.grad_accum):
            sync = micro == work.grad_accum - 1
            gathered: dict[int, simpy.Event] = {}
            freed: list[simpy.Event] = [env.event() for _ in range(n_units)]
            # ---- forward: root first, then blocks; the CPU issues all-gathers ahead --------
            # The rate limiter lets block u gather only once block u−limit has been freed.
            order = list(range(n_units))
            if sharded:
                for u in order:
                    gate = freed[u - limit] if (reshard_fwd and u - limit >= 1) else None
                    gathered[u] = q.submit(
                        ("ag", step, micro, "f", u),
                        CollectiveOp.ALL_GATHER,
                        ag_bytes(u),
                        shard,
                        gate,
                    )
            for u in order:
                if sharded:
                    yield from cs.wait(gathered[u], f"all_gather:unit{u}")
                yield from cs.run(fwd_cost(u), f"forward:unit{u}", micro=micro)
                if not reshard_fwd or u == 0:
                    continue  # SHARD_GRAD_OP keeps everything; the root is never resharded
                freed[u].succeed()
            # ---- backward: head (root) first, then blocks last to first ---------------------
            border = [0, *range(n_units - 1, 0, -1)]
            bgather: dict[int, simpy.Event] = {}

            def issue_ag(u: int, bgather=bgather, step=step, micro=micro) -> None:
                # a resharded block is gathered again before its backward, once
                if reshard_fwd and u != 0 and u not in bgather:
                    bgather[u] = q.submit(
                        ("ag", step, micro, "b", u), CollectiveOp.ALL_GATHER, ag_bytes(u), shard
                    )

            for i, u in enumerate(border):
                issue_ag(u)  # no-op if prefetched or never resharded
                nxt = border[i + 1] if i + 1 < len(border) else None
                if nxt is not None and spec.backward_prefetch is BackwardPrefetch.BACKWARD_PRE:
                    issue_ag(nxt)
                if u in bgather:
                    yield from cs.wait(bgather[u], f"all_gather:unit{u}")
                yield from cs.run(bwd_cost(u), f"backward:unit{u}", micro=micro)
                if nxt is not None and spec.backward_prefetch is BackwardPrefetch.BACKWARD_POST:
                    issue_ag(nxt)
                if sync:
                    key = ("grad", step, micro, u)
                    if spec.sharding is ShardingStrategy.NO_SHARD:
                        pending_grad.append(
                            q.submit(key, CollectiveOp.ALL_REDUCE, grad_bytes(u), shard)
                        )
                    else:
                        rs = q.submit(key, CollectiveOp.REDUCE_SCATTER, grad_bytes(u), shard)
                        if q_rep is not None and rep_group is not None:
                            rs = q_rep.submit(
                                ("rep", step, micro, u),
                                CollectiveOp.ALL_REDUCE,
                                grad_bytes(u) / shard.size,
                                rep_group,
                                rs,
                            )
                        pending_grad.append(rs)
        for ev in pending_grad:
            yield from cs.wait(ev, "reduce_scatter" if sharded else "all_reduce")
        yield from cs.run(work.optimizer.time_s, "optimizer")
        cs.end_step()
