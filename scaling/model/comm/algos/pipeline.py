"""Pipeline: HCCL's hierarchical pipeline (``HCCL_ALGO`` ``level1:pipeline``), inter-server and
intra-server links used at once.

hicann/hccl docs/en/user_guide/coll_algo_intro/Pipeline.md (reference/collective_cost_models.csv
Pipeline rows): for an all-gather the ranks of equal local index run a ring between the n servers
(one block of ``S/p`` per step) while, in the same step, each rank forwards the block it received
the step before to the other k − 1 ranks of its server over the intra-server Mesh; one more
intra-server step ends it (the rank's own block rides in the first ring step). Time:

    max(S/p·β_inter + α_inter, S/p·β_intra + α_intra)·(n − 1) + S/p·β_intra + α_intra

reduce-scatter the same, all-reduce = reduce-scatter + all-gather (twice). The model:

* the n − 1 lock-step ring steps are one pipelined phase whose inter-server flows (rank → its
  index on the next server) and intra-server flows (rank → each server peer) carry (n−1)·S/p
  each: the steps are identical, so its uncontended time is (n − 1) times one step's
  max(inter, intra), the two link classes being disjoint; then one intra phase of S/p per flow
  (first for a reduce-scatter, last for an all-gather);
* latency: n − 1 network steps and one intra-server step per reduce-scatter or all-gather,
  i.e. max(α_inter, α_intra) per ring step (the network's α is the larger); taking the max of
  latency and bandwidth terms separately bounds the documented per-step max from above.

Where HCCL uses it (CollAlgOperator::GetDefaultAlgoLevel1V2, CANN HCCL open source,
zhuxy-USTC/HCCL @3b445c61 src/domain/collective_communication/algorithm/impl/operator/
coll_alg_operator.cc): Atlas A2 all-gather / reduce-scatter / all-reduce on servers of several
ranks whose level 0 is Mesh, above a size threshold (all-reduce: 1 MiB per rank's slice,
S/(n·k); all-gather and reduce-scatter: 32 KiB; 2 MiB without RDMA-lite), and while its task
count fits the FFTS+ graph (65535 contexts). The schedule exists only on a fabric whose devices
exchange with every peer at once (the Mesh); the size thresholds are not modelled (a schedule
does not know the size): the tuner takes it where it is fastest.
"""

from __future__ import annotations

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Phase, Schedule, register
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LinkClass

AG, RS, AR = CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_REDUCE


def pipeline_phases(plan: Planner, group: Group) -> tuple[Phase, Phase]:
    """(the pipelined ring-plus-forward phase, the closing intra-server phase) of one
    pipelined all-gather or reduce-scatter of S on ``group``."""
    n, k, g = group.nodes, group.per_node, plan.g
    p = n * k
    node = (group.first_node + np.arange(n))[:, None, None]
    a = np.arange(k)[None, :, None]
    b = np.arange(k)[None, None, :]
    # intra-server: every rank to each of its k − 1 server peers
    pa, pb = np.broadcast_arrays(node * g + group.local_base + a, node * g + group.local_base + b)
    mask = np.broadcast_to(a != b, pa.shape)
    isrc, idst = pa[mask], pb[mask]
    # inter-server ring per local index: rank → its index on the next server
    local = group.local_base + np.arange(k)
    rsrc = ((group.first_node + np.arange(n))[:, None] * g + local[None, :]).ravel()
    rdst = ((group.first_node + (np.arange(n) + 1) % n)[:, None] * g + local[None, :]).ravel()
    src = np.concatenate([rsrc, isrc])
    dst = np.concatenate([rdst, idst])
    pipe = Phase(src, dst, np.full(src.size, (n - 1) / p), np.ones(src.size, np.int64))
    last = Phase(isrc, idst, np.full(isrc.size, 1.0 / p), np.ones(isrc.size, np.int64))
    return pipe, last


@register
class HierarchicalPipeline(Algorithm):
    """HCCL's pipeline: inter-server ring overlapped with the intra-server Mesh."""

    name = "pipeline"
    ops = frozenset({AG, RS, AR})

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """See the module."""
        n, k = group.nodes, group.per_node
        if n < 2 or k < 2:
            raise NotApplicable("pipeline: two or more servers of two or more ranks")
        if not plan.fabric.mesh_exchange:
            raise NotApplicable("pipeline needs the intra-server Mesh (a full-mesh fabric)")
        pipe, last = pipeline_phases(plan, group)
        wire = (group.size - 1) / group.size
        steps = {LinkClass.NETWORK: float(n - 1), plan.intra_class: 1.0}
        if op is AR:
            twice = {c: 2.0 * v for c, v in steps.items()}
            return Schedule(self.name, (last, pipe, pipe, last), twice, 2.0 * wire)
        phases = (last, pipe) if op is RS else (pipe, last)
        return Schedule(self.name, phases, steps, wire)
