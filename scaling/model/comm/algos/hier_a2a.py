"""Hierarchical (two-dimensional) all-to-all: gather by rail inside the node, then exchange
between nodes on each rail.

Phase 1, over the scale-up fabric: local rank ``x`` hands local rank ``y`` every share it has
for rank ``y`` of any node (its own node's included): ``n·S/p`` per ordered local pair.
Phase 2, over the NICs: local rank ``y`` of node ``i`` sends rank ``y`` of node ``j`` the
``k`` shares node ``i`` gathered for it, ``k·S/p``, rail-aligned. The scatter step of the
gather-exchange-scatter scheme is empty here because the rail's gatherer is the destination
rank itself (the 2D hierarchical all-to-all of DeepSpeed-MoE, Rajbhandari et al., ICML 2022,
§5.2, and Tutel, Hwang et al., MLSys 2023). Unlike :mod:`.pxn` the two phases run one after
the other (store and forward), with fewer, larger messages: latency ``k−1`` scale-up peers
(one step on a fabric that exchanges with every peer at once) plus ``n−1`` network peers, in
rounds of ``peers_in_flight``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Param, Schedule, register
from scaling.model.comm.algos.exchange import (
    folds,
    intra_pairs,
    peer_rounds,
    peers_in_flight,
    remote_pairs,
    v_rail,
)
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import LinkClass


@register
class HierarchicalAllToAll(Algorithm):
    """Two-level all-to-all: intra-node gather by rail, inter-node exchange on each rail."""

    name = "hier_a2a"
    ops = frozenset({CollectiveOp.ALL_TO_ALL})
    #: no library lists it (DeepSpeed-MoE and Tutel build it on NCCL send/receive): where a
    #: library gives no ``peers_in_flight``, one peer at a time
    params: ClassVar[dict[str, Param]] = {"peers_in_flight": Param(required=False, default=1.0)}

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """Gather by rail, then exchange on each rail."""
        if op is not CollectiveOp.ALL_TO_ALL:
            raise NotApplicable("hier_a2a exists for all_to_all")
        if group.nodes < 2 or group.per_node < 2:
            raise NotApplicable("hierarchical all-to-all needs several nodes of several ranks")
        p, k, n = group.size, group.per_node, group.nodes
        in_flight = peers_in_flight(self.param(plan.system, "peers_in_flight"))
        gather = intra_pairs(plan, group, n / p)
        exchange = remote_pairs(plan, group, np.diag(np.full(k, k / p)), fold=folds(group))
        intra = 1 if plan.fabric.mesh_exchange else peer_rounds(k - 1, in_flight)
        net = float(peer_rounds(n - 1, in_flight))
        steps = {plan.intra_class: float(intra), LinkClass.NETWORK: net}
        wire = ((k - 1) * n + (n - 1) * k) / p  # bytes each rank sends per byte of S
        return Schedule(self.name, (gather, exchange), steps, wire)

    def schedule_v(self, plan: Planner, group: Group, sizes: PeerSizes) -> Schedule:
        """The uneven all-to-all: gather by rail, then exchange on each rail."""
        sched = self.schedule(plan, CollectiveOp.ALL_TO_ALL, group)
        gather, net = v_rail(plan, group, sizes)
        wire = float(gather.coeff.sum() + net.coeff.sum()) / group.size
        return Schedule(self.name, (gather, net), sched.steps, wire)
