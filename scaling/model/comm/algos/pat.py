"""PAT: Parallel Aggregated Trees all-gather / reduce-scatter (NCCL >= 2.23)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Param, Phase, Schedule, register
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec


@register
class Pat(Algorithm):
    """PAT with one rank per node."""

    name = "pat"
    ops = frozenset({CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER})
    simple_only = True
    params: ClassVar[dict[str, Param]] = {
        # tuning.cc baseLat[PAT][Simple]: its base latency, in place of the protocol's
        "base_latency_us": Param(unit=1e-6),
        # ncclTopoTuneModel: latency ``log2i(nNodes) · interLat / 3.5 + nRanks · 2.8 us``
        "level_divisor": Param(),
        "rank_latency_us": Param(unit=1e-6),
        # ncclTopoTuneModel: ``if (a == NCCL_ALGO_PAT) busBw *= .75``
        "bw_factor": Param(),
    }

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """PAT (Parallel Aggregated Trees, NCCL ≥ 2.23) all-gather / reduce-scatter.

        Where NCCL 2.30 runs it: all-gather and reduce-scatter only (tuning.cc: ``coll ==
        ncclFuncAllReduce && a == NCCL_ALGO_PAT`` is skipped), Simple protocol only, and only
        with one rank per node (tuning.cc ncclPatEnable: ``nNodes != nRanks`` → 0), so never on
        8-GPU nodes where every rank of a node is in the communicator. (enqueue.cc also skips it
        for a reduce-scatter with a pre-multiplied or post-divided sum — ``ncclAvg`` — an op the
        model does not see.)

        The data moves as in PatAGAlgorithm (src/include/collectives.h): ⌈log2 n⌉ steps, the
        step at distance 2^j carrying the min(2^j, n − 2^j) shards gathered so far; each rank
        sends (n−1)/n·S in all, as a ring does. Phases run one after the other.
        """
        if op not in (CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER):
            raise NotApplicable("PAT: all-gather or reduce-scatter")
        if group.per_node != 1 or group.nodes < 2:
            raise NotApplicable("PAT: one rank per node (NCCL's ncclPatEnable), 2+ nodes")
        n = group.nodes
        devs = group.devices(plan.g)
        ranks = np.arange(n)
        phases = []
        d = 1
        while d < n:
            frac = min(d, n - d) / n
            phases.append(
                Phase(devs, devs[(ranks + d) % n], np.full(n, frac), np.ones(n, dtype=np.int64))
            )
            d *= 2
        levels = float(int(math.log2(n)))  # log2i: floor
        steps = {LinkClass.NETWORK: levels / self.param(plan.system, "level_divisor")}
        return Schedule("pat", tuple(phases), steps, (n - 1) / n)

    def latency_s(
        self, system: SystemSpec, proto: LibraryProtocol, group: Group, sched: Schedule
    ) -> float:
        """tuning.cc: PAT's base latency in place of the protocol's, ``log2i(n)/3.5`` network
        steps (in the schedule), and a linear part per rank ("still a linear part; hopefully
        we'll manage to remove it at some point")."""
        lat = super().latency_s(system, proto, group, sched)
        lat += self.param(system, "base_latency_us") - proto.call_latency_s
        return lat + group.size * self.param(system, "rank_latency_us")

    def efficiency(self, system: SystemSpec, op: CollectiveOp, group: Group) -> float:
        """``busBw *= .75`` (:attr:`params` ``bw_factor``)."""
        return self.param(system, "bw_factor")
