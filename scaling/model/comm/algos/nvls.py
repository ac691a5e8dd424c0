"""NVLS: NVLink SHARP in-switch reduction on one node (NCCL >= 2.17)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Param, Phase, Schedule, register
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec


@register
class Nvls(Algorithm):
    """In-switch reduction on one node of a switch that reduces (``fabric.in_switch_reduction``)."""

    name = "nvls"
    ops = frozenset({CollectiveOp.ALL_REDUCE, CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER})
    simple_only = True
    params: ClassVar[dict[str, Param]] = {
        # tuning.cc nvlsEfficiency[Hopper]: NVLS bus bandwidth per channel relative to the
        # NVLink graph's
        "efficiency": Param(),
        # src/include/device.h NCCL_MAX_NVLS_ARITY: enqueue.cc updateCollCostTable skips NVLS
        # for anything but all-reduce on nodes of more local ranks than this
        "max_arity": Param(integer=True),
    }

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """In-switch reduction (NVLS) on one node; busbw may exceed the link rate.

        Where NCCL 2.30 runs it: all-reduce, all-gather and reduce-scatter (tuning.cc
        ncclTopoTuneModel: AG/RS take only PAT, ring, NVLS and CollNetDirect), Simple protocol
        only, on one node — across nodes NVLS needs CollNet (tuning.cc disables it when
        ``nNodes > 1`` without collnet; enqueue.cc updateCollCostTable: ``collNetSupport != 1 &&
        nNodes > 1``), which the model does not have; AG/RS only up to NCCL_MAX_NVLS_ARITY local
        ranks (enqueue.cc).

        All-reduce: each device sends S into the switch and receives the reduced S back.
        All-gather / reduce-scatter: each device's link carries the (p−1)/p·S of the other
        ranks' shards (multicast out, or the switch's reduced reads in); the flows load both
        directions alike, as a ring does.
        """
        system = plan.system
        if group.nodes != 1 or not plan.fabric.reduces_in_switch(system.fabric) or group.size < 2:
            raise NotApplicable(
                "NVLS: all-reduce, all-gather or reduce-scatter on one node of a switch with "
                "in-switch reduction"
            )
        devs = group.devices(plan.g)
        if op is CollectiveOp.ALL_REDUCE:
            nxt = np.roll(devs, -1)
            # A flow a→b uses a's up link and b's down link: each carries S once.
            return Schedule(
                "nvls",
                (Phase(devs, nxt, np.ones(devs.size), np.ones(devs.size, dtype=np.int64)),),
                {LinkClass.SCALE_UP: 2.0},
                1.0,
            )
        p = group.size
        arity = int(self.param(system, "max_arity"))
        if p > arity:
            raise NotApplicable(f"NVLS all-gather/reduce-scatter: at most {arity} ranks")
        src = np.repeat(devs, p - 1)
        dst = np.concatenate([np.roll(devs, -j) for j in range(1, p)]).reshape(p - 1, p).T.ravel()
        ph = Phase(src, dst, np.full(src.size, 1.0 / p), np.ones(src.size, dtype=np.int64))
        return Schedule("nvls", (ph,), {LinkClass.SCALE_UP: 2.0}, (p - 1) / p)

    def latency_s(
        self, system: SystemSpec, proto: LibraryProtocol, group: Group, sched: Schedule
    ) -> float:
        """The default rule plus the switch's reduction latency (tuning.cc's NVLS intraLat,
        25 us on a DGX with the two NVLink steps)."""
        return super().latency_s(system, proto, group, sched) + (
            system.fabric.switch_reduction_latency_s
        )

    def efficiency(self, system: SystemSpec, op: CollectiveOp, group: Group) -> float:
        """All-gather / reduce-scatter: tuning.cc's NVLS bus bandwidth, ``bwIntra ·
        nvlsEfficiency · (nCh−1)/nCh · (ppn−1)/ppn`` with no bus-to-algorithm conversion,
        against the ring's ``bwIntra · ppn/(ppn−1)`` conversion — on 8 GPUs and 16 channels
        0.85 · 15/16 · (7/8)² = 0.61 of the ring's. So NCCL keeps the ring for large AG/RS on
        one node, as nccl-tests shows on 8x H200 (reference/nccl_busbw.csv
        H200_1node_collectives_16GiB: Ring, 361-363 GB/s). The model takes NCCL's rating as
        the rate: what NVLS AG/RS would reach if forced is not measured here. All-reduce: 1."""
        if op is CollectiveOp.ALL_REDUCE:
            return 1.0
        c, ppn = system.library.channels, group.per_node
        return self.param(system, "efficiency") * (c - 1) / c * ((ppn - 1) / ppn) ** 2

    def bandwidth_floor_s(
        self,
        system: SystemSpec,
        op: CollectiveOp,
        nbytes: float,
        proto: LibraryProtocol,
        ramp: float,
    ) -> float:
        """All-reduce: the switch reduces each device's data no faster than its reduction
        rate (``fabric.switch_reduction``)."""
        return switch_reduction_floor_s(system, op, nbytes, proto, ramp)


def switch_reduction_floor_s(
    system: SystemSpec, op: CollectiveOp, nbytes: float, proto: LibraryProtocol, ramp: float
) -> float:
    """Time the switch takes to reduce one device's ``nbytes`` of an all-reduce at its rate
    (with the protocol's data share and the size ramp), s; 0 for other ops."""
    if op is not CollectiveOp.ALL_REDUCE:
        return 0.0
    return nbytes / (system.fabric.switch_reduction_Bps * proto.bw_fraction * ramp)
