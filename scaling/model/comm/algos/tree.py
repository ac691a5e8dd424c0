"""NCCL's tree all-reduce: a chain inside each node, a double binary tree across nodes."""

from __future__ import annotations

import itertools
import math

import numpy as np

from scaling.model.comm.algos.base import (
    Algorithm,
    NotApplicable,
    Schedule,
    phase_of_arrays,
    register,
)
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.algos.trees import add_tree_edges, dtree_parent_arrays
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec


@register
class Tree(Algorithm):
    """Tree all-reduce (on one node: its chain); its bandwidth share and per-level latency are
    the library's ``tree_bw_factor`` and ``tree_level_latency``."""

    name = "tree"
    ops = frozenset({CollectiveOp.ALL_REDUCE})

    def latency_s(
        self, system: SystemSpec, proto: LibraryProtocol, group: Group, sched: Schedule
    ) -> float:
        """The default rule plus the library's calibrated ``tree_level_latency`` per network
        step (a tree level between nodes costs more than a ring step at scale)."""
        lat = super().latency_s(system, proto, group, sched)
        net = sched.steps.get(LinkClass.NETWORK, 0.0)
        return lat + net * system.library.tree_level_latency_s

    def efficiency(self, system: SystemSpec, op: CollectiveOp, group: Group) -> float:
        """The library's ``tree_bw_factor`` (tuning.cc's 0.92 for tree all-reduce)."""
        return system.library.tree_bw_factor

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """NCCL-style tree all-reduce: a chain inside each node, a double binary tree across
        nodes; reduce and broadcast pipelined, so every edge carries its bytes both ways.

        NCCL runs the two trees of ``ncclGetDtree`` on two copies of each channel (connect.cc,
        "Duplicate channels trees": channel ``c`` carries tree 0, channel ``c + nChannels``
        tree 1), each with its own copy of the intra-node chain, each with half of the data.
        So every flow here — chain edge or tree edge, per tree — carries the same S/(2·channels)
        each way, and a flow is never larger than another: the slowest flow's max-min rate is
        the first water level ``min over links of capacity / flows``, the rate at which the
        pipelined tree as a whole moves (its chunks advance in lock-step through every edge,
        so it runs at its bottleneck link's rate). Pricing by the slowest flow is then exact
        (a flow that finishes early frees no capacity on that bottleneck link), and more
        bandwidth on any link never makes it slower.

        On one node the tree is its chain (NCCL builds and prices it there: connect.cc's
        ``tree.up``/``tree.down`` from ``treeIntra``; tuning.cc's tree latency
        ``2·((nRanks/nNodes−1)·intraLat + log2i(nNodes)·interLat)`` and LL128 factor
        ``nNodes == 1 ? 7/9 : 120/128``; only NVLSTree is disabled on one node). That LL128
        factor is not modelled: a protocol's ``bw_fraction`` is one number per library.
        """
        if op is not CollectiveOp.ALL_REDUCE or group.size < 2:
            raise NotApplicable("tree exists for all-reduce on more than one rank")
        n, k, g = group.nodes, group.per_node, plan.g
        base = group.local_base
        # per tree (two of them) and channel: every flow's bytes per byte of S
        per_flow = 0.5 / plan.channels
        # Double binary tree as NCCL builds it (dtree_parents), each tree carrying half of
        # the data; a node interior in one tree is a leaf of the other.
        trees = list(dtree_parent_arrays(n)) if n > 1 else []
        node_base = base + (group.first_node + np.arange(n, dtype=np.int64)) * g
        srcs, dsts, coeffs, weights = [], [], [], []
        # each walk once, its flows weighted by its channels
        for chain, (_, times) in plan.distinct_walks(k).items():
            # per node, in node order: each chain edge down (broadcast) then up (reduce), once
            # for each tree's copy of the channel (the copy: twice the weight)
            pairs = [(x, y) for a, b in itertools.pairwise(chain) for x, y in ((a, b), (b, a))]
            if pairs:
                pa = np.array(pairs, dtype=np.int64)
                srcs.append((node_base[:, None] + pa[:, 0]).ravel())
                dsts.append((node_base[:, None] + pa[:, 1]).ravel())
                coeffs.append(np.full(n * len(pa), per_flow))
                weights.append(np.full(n * len(pa), 2 * times, dtype=np.int64))
            add_tree_edges(
                srcs, dsts, coeffs, trees, node_base + chain[0], 2 * per_flow, weights, times
            )
        src, dst = np.concatenate(srcs), np.concatenate(dsts)
        steps = {
            plan.intra_class: 2.0 * (k - 1),
            LinkClass.NETWORK: 2.0 * math.log2(n),
        }
        ph = phase_of_arrays(src, dst, np.concatenate(coeffs), np.concatenate(weights))
        return Schedule("tree", (ph,), steps, 2.0)
