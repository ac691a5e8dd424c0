"""NB: HCCL's nonuniform Bruck as its inter-server (level-1) algorithm (``HCCL_ALGO``
``level1:NB``): log-step exchanges between servers on any server count.

HCCL runs a collective on several servers in two levels (hicann/hccl docs
coll_algo_intro/hierarchical_comm_principle.md): inside each server (level 0, the Mesh on a
full-mesh node, else rings) and between servers (level 1: ring, H-D_R, NHR, NB, …, chosen with
``HCCL_ALGO``; reference/huawei_hccl_algorithms.csv). With NB at level 1:

* all-reduce: intra-server reduce-scatter → between servers, per local index (rail), a Bruck
  reduce-scatter then a Bruck all-gather of the server's ``S/k`` shard → intra-server
  all-gather;
* all-gather / reduce-scatter with one rank per server: the Bruck steps alone.

Bruck's pattern (Bruck et al., IEEE TPDS 8(11) 1997; MPICH allgather_intra_brucks.c;
reference/collective_cost_models.csv NB / Bruck rows): ⌈log2 n⌉ steps; at step ``j`` each
server sends to the one ``2^j`` before it the ``min(2^j, n − 2^j)`` shards it holds, so each
sends ``(n−1)/n`` of the data in all, as a ring does, in log steps instead of ``n − 1``.
A reduce-scatter runs the steps in reverse. Phases run one after the other.
"""

from __future__ import annotations

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Phase, Schedule, register
from scaling.model.comm.algos.hierarchical import intra_server_phase
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LinkClass


def bruck_phases(plan: Planner, group: Group, share: float) -> list[Phase]:
    """Bruck all-gather steps between the nodes of ``group``, one rail per local index (local
    rank ``d`` of every node exchanges with local rank ``d`` of the others), each rail carrying
    ``share`` of S."""
    n, k, g = group.nodes, group.per_node, plan.g
    nodes = group.first_node + np.arange(n)
    local = group.local_base + np.arange(k)
    devs = (nodes[:, None] * g + local[None, :]).ravel()  # node-major: rail d at offset d
    phases = []
    d = 1
    while d < n:
        dst_nodes = (np.arange(n) - d) % n
        dst = ((group.first_node + dst_nodes)[:, None] * g + local[None, :]).ravel()
        frac = min(d, n - d) / n * share
        phases.append(Phase(devs, dst, np.full(devs.size, frac), np.ones(devs.size, np.int64)))
        d *= 2
    return phases


@register
class NonuniformBruck(Algorithm):
    """HCCL's two-level scheme with NB between servers."""

    name = "nb"
    ops = frozenset({CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_REDUCE})

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """See the module: level 0 inside servers, Bruck steps between them."""
        n, k = group.nodes, group.per_node
        if n < 2:
            raise NotApplicable("NB is an inter-server algorithm: two or more servers")
        if op is not CollectiveOp.ALL_REDUCE:
            if k != 1:
                raise NotApplicable("NB all-gather / reduce-scatter: one rank per server")
            gather = bruck_phases(plan, group, 1.0)
            phases = tuple(gather if op is CollectiveOp.ALL_GATHER else gather[::-1])
            return Schedule(self.name, phases, {LinkClass.NETWORK: len(phases)}, (n - 1) / n)
        gather = bruck_phases(plan, group, 1.0 / k)
        inter = [*gather[::-1], *gather]
        steps: dict[LinkClass, float] = {LinkClass.NETWORK: float(len(inter))}
        wire = 2.0 * (n - 1) / n / k
        if k == 1:
            return Schedule(self.name, tuple(inter), steps, wire)
        ph_intra, intra_steps = intra_server_phase(plan, group)
        steps[plan.intra_class] = 2.0 * intra_steps
        wire += 2.0 * (k - 1) / k
        return Schedule(self.name, (ph_intra, *inter, ph_intra), steps, wire)
