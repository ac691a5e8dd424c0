"""Direct (mesh): every rank exchanges its share with every other rank at once (HCCL's Mesh)."""

from __future__ import annotations

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Phase, Schedule, register
from scaling.model.comm.algos.exchange import v_pairs
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import LinkClass


@register
class Direct(Algorithm):
    """Direct exchange, up to 64 ranks (p² flows)."""

    name = "direct"
    #: p² flows per lane, all in flight at once (the tuner's bound in :meth:`FlowCollectives.predict`)
    max_call_ranks = 64
    ops = frozenset(
        {
            CollectiveOp.ALL_REDUCE,
            CollectiveOp.REDUCE_SCATTER,
            CollectiveOp.ALL_GATHER,
            CollectiveOp.ALL_TO_ALL,
        }
    )

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """Direct (mesh): every rank exchanges its share with every other rank at once."""
        p = group.size
        if p > 64:
            raise NotApplicable("direct/mesh algorithms are limited to 64 ranks (p² flows)")
        devs = group.devices(plan.g)
        src, dst = np.meshgrid(devs, devs, indexing="ij")
        mask = src != dst
        pairs = (src[mask], dst[mask])
        share = Phase(
            pairs[0], pairs[1], np.full(mask.sum(), 1.0 / p), np.ones(mask.sum(), dtype=np.int64)
        )
        cls = plan.intra_class if group.nodes == 1 else LinkClass.NETWORK
        cross = group.nodes > 1 and group.per_node > 1  # local rank a talks to local rank b != a
        if op is CollectiveOp.ALL_REDUCE:
            return Schedule("direct", (share, share), {cls: 2.0}, 2.0 * (p - 1) / p, cross)
        if op in (CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_GATHER, CollectiveOp.ALL_TO_ALL):
            return Schedule("direct", (share,), {cls: 1.0}, (p - 1) / p, cross)
        raise NotApplicable("direct broadcast is not modelled")

    def schedule_v(self, plan: Planner, group: Group, sizes: PeerSizes) -> Schedule:
        """The uneven all-to-all (HCCL's AlltoAllV over the mesh): every pair's own size at
        once, one step."""
        sched = self.schedule(plan, CollectiveOp.ALL_TO_ALL, group)
        ph = v_pairs(plan, group, sizes)
        wire = float(ph.coeff.sum()) / group.size
        return Schedule("direct", (ph,), sched.steps, wire, sched.cross_rail)
