"""Recursive halving-doubling (Rabenseifner) all-reduce (HCCL's RHD; Thakur et al. 2005)."""

from __future__ import annotations

import math

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Phase, Schedule, register
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LinkClass


@register
class Rhd(Algorithm):
    """Recursive halving-doubling all-reduce on a power-of-two group."""

    name = "rhd"
    ops = frozenset({CollectiveOp.ALL_REDUCE})

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """Recursive halving-doubling (Rabenseifner) all-reduce, p a power of two."""
        p = group.size
        if op is not CollectiveOp.ALL_REDUCE or p & (p - 1) or p < 2:
            raise NotApplicable("recursive halving-doubling: all-reduce on a power-of-two group")
        devs = group.devices(plan.g)
        phases: list[Phase] = []
        steps: dict[LinkClass, float] = {}
        rounds = int(math.log2(p))
        dists = [p >> (r + 1) for r in range(rounds)]  # halving: far partners first
        for r, dist in enumerate(dists + dists[::-1]):
            frac = 1.0 / (2 ** (r + 1)) if r < rounds else 1.0 / (2 ** (2 * rounds - r))
            ranks = np.arange(p)
            partner = ranks ^ dist
            phases.append(
                Phase(devs[ranks], devs[partner], np.full(p, frac), np.ones(p, dtype=np.int64))
            )
            same_node = (ranks // group.per_node) == (partner // group.per_node)
            cls = plan.intra_class if bool(same_node.all()) else LinkClass.NETWORK
            steps[cls] = steps.get(cls, 0.0) + 1.0
        return Schedule("rhd", tuple(phases), steps, 2.0 * (p - 1) / p)
