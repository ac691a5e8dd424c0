"""NVLSTree: NVLS inside each node, NCCL's double binary tree across nodes (NCCL >= 2.18)."""

from __future__ import annotations

import math
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
from scaling.model.comm.algos.nvls import switch_reduction_floor_s
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.algos.trees import add_tree_edges, dtree_parent_arrays
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec


@register
class NvlsTree(Algorithm):
    """NVLSTree all-reduce across nodes of an NVLS-capable switch."""

    name = "nvls_tree"
    ops = frozenset({CollectiveOp.ALL_REDUCE})
    simple_only = True
    params: ClassVar[dict[str, Param]] = {
        # hwLat[NET][NVLSTree][Simple] − hwLat[NET][Ring][Simple]: what its network step costs
        # beyond the Simple protocol's network step
        "net_step_extra_us": Param(unit=1e-6),
    }

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """NVLSTree all-reduce: NVLS inside each node, NCCL's double binary tree across nodes.

        Where NCCL 2.30 runs it: all-reduce only (tuning.cc: AG/RS take only PAT, ring, NVLS and
        CollNetDirect; broadcast and reduce only ring), Simple protocol only, on 2+ nodes
        ("Disable NVLS Tree on a single node", tuning.cc), where NVLS exists. Pipelined, one
        phase: every device sends S into its switch and receives the reduced S back (the NVLS
        part); channel ``c``'s head device (the one whose NIC the channel leaves by) joins the
        nodes' two complementary trees, each carrying half of the channel's data both ways —
        the tree's network flows.
        """
        if (
            op is not CollectiveOp.ALL_REDUCE
            or group.nodes < 2
            or group.per_node < 2
            or not plan.fabric.reduces_in_switch(plan.system.fabric)
        ):
            raise NotApplicable(
                "NVLSTree: all-reduce across nodes of several ranks on switches with in-switch "
                "reduction"
            )
        n, k, g = group.nodes, group.per_node, plan.g
        per_ch = 1.0 / plan.channels
        trees = list(dtree_parent_arrays(n))
        node_base = group.local_base + (group.first_node + np.arange(n, dtype=np.int64)) * g
        local = np.arange(k, dtype=np.int64)
        devs = (node_base[:, None] + local[None, :]).ravel()
        nxt = (node_base[:, None] + np.roll(local, -1)[None, :]).ravel()
        srcs, dsts, coeffs = [devs], [nxt], [np.ones(devs.size)]
        weights = [np.ones(devs.size, dtype=np.int64)]
        # channels of the same head device add the same tree edges: each head once, weighted
        # by its channels (phase_of_arrays: the same entries, first seen in the same order)
        head_channels: dict[int, int] = {}
        for walk, (_, times) in plan.distinct_walks(k).items():
            head_channels[walk[0]] = head_channels.get(walk[0], 0) + times
        for head, times in head_channels.items():
            add_tree_edges(srcs, dsts, coeffs, trees, node_base + head, per_ch, weights, times)
        src, dst = np.concatenate(srcs), np.concatenate(dsts)
        steps = {LinkClass.SCALE_UP: 2.0, LinkClass.NETWORK: 2.0 * math.log2(n)}
        ph = phase_of_arrays(src, dst, np.concatenate(coeffs), np.concatenate(weights))
        return Schedule("nvls_tree", (ph,), steps, 1.0 + 2.0 / k)

    def latency_s(
        self, system: SystemSpec, proto: LibraryProtocol, group: Group, sched: Schedule
    ) -> float:
        """The default rule, plus the switch's reduction latency once (tuning.cc's NVLS
        ``intraLat``) and per network step (``2·log2(nNodes)`` of them) NVLSTree's NET latency —
        the protocol's network step plus :attr:`params`'s ``net_step_extra`` (20.9 us on a DGX,
        tuning.cc) — and the library's calibrated tree level latency.

        tuning.cc ncclTopoTuneModel prices NVLSTree as ``baseLat (0) + intraLat + 2·log2i(nNodes)
        · interLat`` with no extra per level. That rule was tried (issue 23): it makes the tuner
        pick NVLSTree for mid-size all-reduces at 64 and 512 nodes and the model then runs
        33-71 % faster than measured on the 64-node arXiv:2411.13055 curve (MAPE < 128 MiB 52 %,
        target 20 %). The calibrated level latency is what a tree level between nodes costs at
        scale whichever tree it is, so it stays here too."""
        lat = super().latency_s(system, proto, group, sched)
        lat += system.fabric.switch_reduction_latency_s
        net = sched.steps.get(LinkClass.NETWORK, 0.0)
        extra = self.param(system, "net_step_extra_us") + system.library.tree_level_latency_s
        return lat + net * extra

    def bandwidth_floor_s(
        self,
        system: SystemSpec,
        op: CollectiveOp,
        nbytes: float,
        proto: LibraryProtocol,
        ramp: float,
    ) -> float:
        """The switch's reduction rate bounds it as it bounds NVLS."""
        return switch_reduction_floor_s(system, op, nbytes, proto, ramp)
