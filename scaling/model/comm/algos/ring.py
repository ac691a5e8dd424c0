"""Ring: the multi-channel, rail-aligned ring of every library (NCCL, HCCL Ring, CNCL)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from scaling.model.comm.algos.base import (
    Algorithm,
    NotApplicable,
    Param,
    Schedule,
    phase_of_arrays,
    register,
)
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec


@register
class Ring(Algorithm):
    """Ring collectives; on one rank per node NCCL prices its network steps at the tree's latency."""

    name = "ring"
    ops = frozenset(
        {
            CollectiveOp.ALL_REDUCE,
            CollectiveOp.REDUCE_SCATTER,
            CollectiveOp.ALL_GATHER,
            CollectiveOp.BROADCAST,
        }
    )
    #: ncclTopoTuneModel: "With ppn=1 latencies are fully exposed, use the Tree network
    #: latency": what a ring's network step costs beyond its own on one rank per node, s
    params: ClassVar[dict[str, Param]] = {
        "ppn1_net_step_extra_us": Param(unit=1e-6, required=False, per_protocol=True)
    }

    def latency_s(
        self, system: SystemSpec, proto: LibraryProtocol, group: Group, sched: Schedule
    ) -> float:
        """The default rule, plus on one rank per node :attr:`params`'s extra per network
        step (NCCL 2.30 tuning.cc ncclTopoTuneModel)."""
        lat = super().latency_s(system, proto, group, sched)
        if group.per_node == 1 and group.nodes > 1:
            net = sched.steps.get(LinkClass.NETWORK, 0.0)
            lat += net * self.param(system, "ppn1_net_step_extra_us", proto)
        return lat

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """Ring (multi-channel, rail-aligned) schedule of ``op`` on ``group``."""
        p = group.size
        if op is CollectiveOp.ALL_TO_ALL:
            raise NotApplicable("ring all-to-all is not implemented by any library profile")
        if op is CollectiveOp.BROADCAST:
            coeff, passes, wire = 1.0, 1, 1.0
        elif op is CollectiveOp.ALL_REDUCE:
            coeff, passes, wire = 2.0 * (p - 1) / p, 2, 2.0 * (p - 1) / p
        else:
            coeff, passes, wire = (p - 1) / p, 1, (p - 1) / p
        srcs, dsts, weights = [], [], []
        # a channel's ring follows from its walk: each walk once, weighted by its channels
        for c, times in plan.distinct_walks(group.per_node).values():
            order = np.array(plan.ring_order(group, c), dtype=np.int64)
            hops = order.size if op is not CollectiveOp.BROADCAST else order.size - 1
            srcs.append(order[:hops])
            dsts.append(np.roll(order, -1)[:hops])
            weights.append(np.full(hops, times, dtype=np.int64))
        src, dst = np.concatenate(srcs), np.concatenate(dsts)
        ph = phase_of_arrays(
            src, dst, np.full(src.size, coeff / plan.channels), np.concatenate(weights)
        )
        return Schedule("ring", (ph,), plan.class_steps(group, passes), wire)
