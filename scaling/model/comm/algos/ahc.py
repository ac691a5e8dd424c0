"""AHC: HCCL's asymmetric hierarchical concatenate (``HCCL_ALGO`` ``level1:AHC``) on the
project's symmetric groups.

AHC (hicann/hccl docs/en/user_guide/coll_algo_intro/AHC.md; reference/huawei_hccl_algorithms.csv
"HCCL_ALGO level1 options") groups the ranks by physical topology, runs a reduce-scatter inside
each group, an all-reduce between "logical same-number" cards of the groups (the cards whose
data segments correspond; with equal group sizes the cards of equal local index), and an
all-gather inside each group. Its point is groups of unequal card counts (the LCM slicing); the
project's groups are ``nodes × per_node``, always symmetric, so only the symmetric case is
modelled. On the Atlas A2 (910B) the groups are the servers (``TopoInfoExtractor::
AHCCommSubgroupInit`` groups ranks by server id for the 910B: CANN HCCL/hcomm open source,
topo_info_extractor.cc), and the default concatenated algorithms are NHR inside a group and ring
between groups (``CommAHCBaseInfo::InitConcAlgOption``: "intra NHR, inter RING", hcomm
comm_ahc_base.cc; both read through the project's code-search index). So:

* all-reduce: intra-server NHR reduce-scatter (⌈log2 k⌉ steps over the server's links) →
  between servers, per local index (rail), a ring all-reduce of the ``S/k`` shard (2(n−1)
  steps) → intra-server NHR all-gather;
* reduce-scatter: the first two stages' reduce-scatter halves; all-gather: the reverse.

Unlike the intra-server Mesh of the other two-level algorithms, NHR inside the server uses one
peer link per step, so on a full mesh AHC is the slower of the two there: HCCL runs it when
``HCCL_ALGO`` asks for it (``TopoInfoExtractor::InitAHCConfig`` reads level 1 = AHC/AHC_BROKE),
and the catalog lists it as a structural alternative (topologies/libraries/hccl.yaml).
"""

from __future__ import annotations

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Phase, Schedule, register
from scaling.model.comm.algos.nhr import nhr_steps
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LinkClass

AG, RS, AR = CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_REDUCE


def intra_nhr_phases(plan: Planner, group: Group, op: CollectiveOp) -> list[Phase]:
    """NHR reduce-scatter (``op`` RS) or all-gather (AG) of S inside every node of ``group``:
    at RS step ``s`` local rank ``j`` sends to local rank ``j − 2^s`` its slices of ``1/k``."""
    n, k, g = group.nodes, group.per_node, plan.g
    base = ((group.first_node + np.arange(n)) * g + group.local_base)[:, None]
    local = np.arange(k)[None, :]
    src = (base + local).ravel()
    phases = []
    for dist, slices in nhr_steps(k):
        peer = (base + (local - dist) % k).ravel()
        coeff = np.full(src.size, slices / k)
        ones = np.ones(src.size, np.int64)
        phases.append(Phase(src, peer, coeff, ones) if op is RS else Phase(peer, src, coeff, ones))
    return phases if op is RS else phases[::-1]


def rail_ring_phase(plan: Planner, group: Group, coeff: float) -> Phase:
    """A ring between the nodes of ``group`` per local index (rail), pipelined as one phase:
    each rank sends ``coeff`` of S to the rank of its index on the next node."""
    n, k, g = group.nodes, group.per_node, plan.g
    local = group.local_base + np.arange(k)
    src = ((group.first_node + np.arange(n))[:, None] * g + local[None, :]).ravel()
    dst = ((group.first_node + (np.arange(n) + 1) % n)[:, None] * g + local[None, :]).ravel()
    return Phase(src, dst, np.full(src.size, coeff), np.ones(src.size, np.int64))


@register
class AsymmetricHierarchicalConcatenate(Algorithm):
    """HCCL's AHC with its default concatenation (NHR inside servers, ring between them)."""

    name = "ahc"
    ops = frozenset({AG, RS, AR})

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """See the module."""
        n, k = group.nodes, group.per_node
        if n < 2 or k < 2:
            raise NotApplicable("AHC is hierarchical: two or more servers of two or more ranks")
        intra = float((k - 1).bit_length())  # ⌈log2 k⌉ NHR steps
        rs_wire = (k - 1) / k + (n - 1) / n / k
        if op is AR:
            ring = rail_ring_phase(plan, group, 2.0 * (n - 1) / n / k)
            phases = (*intra_nhr_phases(plan, group, RS), ring, *intra_nhr_phases(plan, group, AG))
            steps = {plan.intra_class: 2.0 * intra, LinkClass.NETWORK: 2.0 * (n - 1)}
            return Schedule(self.name, phases, steps, 2.0 * rs_wire)
        ring = rail_ring_phase(plan, group, (n - 1) / n / k)
        if op is RS:
            phases = (*intra_nhr_phases(plan, group, RS), ring)
        else:
            phases = (ring, *intra_nhr_phases(plan, group, AG))
        steps = {plan.intra_class: intra, LinkClass.NETWORK: float(n - 1)}
        return Schedule(self.name, phases, steps, rs_wire)
