"""Networks with degraded NICs: what a collective sees when some NICs run below their rate.

Which NICs are degraded is drawn by :func:`scaling.model.variability.layout`; this module prices
collectives with them. A ring is paced by its slowest channel and NCCL splits a call evenly over
its channels, so a collective whose group crosses a node with a degraded NIC moves its network
bytes at the degraded rate: the analytic model prices that group with the NIC bandwidth ×
``bw_fraction`` (:class:`DegradedNicCostModel`); the flow network runs the NIC's links at that
capacity, so contention decides (:func:`degraded_flow_network`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import simpy

from scaling.engine.network import FlowNetwork
from scaling.model.comm.collectives import CollectiveCost
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.comm.uncontended import AnalyticCostModel
from scaling.model.hardware.system import SystemSpec


def degraded_system(system: SystemSpec, bw_fraction: float) -> SystemSpec:
    """``system`` with every NIC at ``bw_fraction`` of its rate (what a ring crossing one
    degraded NIC sees: it is paced by its slowest channel)."""
    return replace(system, nics=replace(system.nics, bw_Bps=system.nics.bw_Bps * bw_fraction))


def group_nodes(group: Group) -> range:
    """Nodes a group's ranks live on."""
    return range(group.first_node, group.last_node + 1, group.node_stride)


class DegradedNicCostModel:
    """The analytic cost model with degraded NICs: a group crossing the network from a node
    with a degraded NIC is priced with the degraded NIC rate; every other group as before."""

    def __init__(self, system: SystemSpec, degraded_nodes: frozenset[int], bw_fraction: float):
        self.nominal = AnalyticCostModel(system)
        self.degraded = AnalyticCostModel(degraded_system(system, bw_fraction))
        self.degraded_nodes = degraded_nodes

    def cost(
        self, op: CollectiveOp, nbytes: float, group: Group, *, sizes: PeerSizes | None = None
    ) -> CollectiveCost:
        """Price one call (s, bytes/s) as :meth:`AnalyticCostModel.cost`."""
        crosses = group.nodes > 1 and any(n in self.degraded_nodes for n in group_nodes(group))
        return (self.degraded if crosses else self.nominal).cost(op, nbytes, group, sizes=sizes)


def degrade_capacities(capacity: np.ndarray, link_ids: list[int], bw_fraction: float) -> np.ndarray:
    """A copy of the flow network's link capacities (bytes/s) with ``link_ids`` at
    ``bw_fraction``."""
    out = np.array(capacity, dtype=float)
    if link_ids:
        out[np.asarray(link_ids, dtype=np.int64)] *= bw_fraction
    return out


def degraded_flow_network(
    env: simpy.Environment,
    flows: FlowCollectives,
    degraded: tuple[tuple[int, int], ...],
    bw_fraction: float,
) -> FlowNetwork:
    """A fresh flow network for ``flows`` whose degraded NICs' send and receive links run at
    ``bw_fraction`` of their capacity (build it before the first collective)."""
    index = flows.cluster._index  # link ids by key, as ClusterNetwork builds them
    ids = [
        index[key]
        for n, k in degraded
        for key in (("nic_tx", n, k), ("nic_rx", n, k))
        if key in index
    ]
    return FlowNetwork(env, degrade_capacities(flows.cluster.capacity(), ids, bw_fraction))
