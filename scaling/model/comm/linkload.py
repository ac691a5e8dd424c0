"""Per-link load of a run on the flow network: which links carried the step's bytes, and how
close to their capacity (``scaling explain --links``, the counters of ``scaling trace``).

The engine integrates each link's aggregate rate over every interval between flow-set changes
(:meth:`~scaling.engine.network.FlowNetwork.link_usage`); this module names the links
(:class:`~scaling.model.comm.cluster.ClusterNetwork` keys) and divides by their capacity.
Utilisation over a window of ``T`` seconds is ``bytes / (capacity × T)``: 1 means the link
carried traffic at its achievable capacity for the whole window. Capacities are the achievable
ones the run used (raw × hardware × library efficiency; a degraded NIC's reduced one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.engine.maxmin import FloatArray
from scaling.engine.network import FlowNetwork
from scaling.model.comm.cluster import ClusterNetwork
from scaling.model.hardware.system import FabricKind

#: link class of each ClusterNetwork key kind (the first element of a link's key)
_CLASS = {
    "up": "scale-up switch port (device->switch)",
    "dn": "scale-up switch port (switch->device)",
    "pci_up": "PCIe device->switch",
    "pci_dn": "PCIe switch->device",
    "sw_up": "PCIe switch->host",
    "sw_dn": "PCIe host->switch",
    "sw_nic": "PCIe switch->NIC",
    "nic_sw": "PCIe NIC->switch",
    "nic_tx": "NIC tx",
    "nic_rx": "NIC rx",
    "l2s": "leaf->spine",
    "s2l": "spine->leaf",
}
#: a device-pair link's class by the node's fabric (HCCS-style mesh, MLU-Link-style bridge)
_P2P = {
    FabricKind.FULL_MESH: "scale-up mesh link (full_mesh)",
    FabricKind.BRIDGE_GROUPS: "scale-up bridge link (bridge_groups)",
}


def link_class(cluster: ClusterNetwork, link: int) -> str:
    """The class of ``link``: scale-up switch port, mesh or bridge link, PCIe leg, NIC tx/rx,
    leaf-spine uplink/downlink."""
    kind = str(cluster.links[link].key[0])
    if kind == "p2p":
        return _P2P.get(cluster.system.fabric.kind, "scale-up link")
    return _CLASS.get(kind, kind)


def link_place(cluster: ClusterNetwork, link: int) -> str:
    """Where ``link`` is: its node and device, NIC or PCIe switch, or its leaf and spine."""
    kind, *ix = cluster.links[link].key
    if kind == "p2p":
        return f"node {ix[0]}, device {ix[1]}->{ix[2]}"
    if kind in ("up", "dn", "pci_up", "pci_dn"):
        return f"node {ix[0]}, device {ix[1]}"
    if kind in ("sw_up", "sw_dn"):
        return f"node {ix[0]}, PCIe switch {ix[1]}"
    if kind in ("sw_nic", "nic_sw", "nic_tx", "nic_rx"):
        return f"node {ix[0]}, NIC {ix[1]}"
    if kind in ("l2s", "s2l"):
        leaf, spine = (ix[0], ix[1]) if kind == "l2s" else (ix[1], ix[0])
        if cluster.ideal_ecmp:
            return f"leaf {leaf}, all spines (ideal ECMP: one bundle)"
        return f"leaf {leaf}, spine {spine}"
    return "/".join(map(str, ix))


@dataclass(frozen=True, slots=True)
class LinkUse:
    """One link's load over a window.

    Attributes:
        link: the link's index in the cluster (and the engine).
        cls: its class (:func:`link_class`).
        place: where it is (:func:`link_place`).
        bytes: bytes it carried in the window.
        busy_s: seconds in the window it carried traffic.
        capacity_Bps: its achievable capacity, bytes/s.
        window_s: the window's length, s.
    """

    link: int
    cls: str
    place: str
    bytes: float
    busy_s: float
    capacity_Bps: float
    window_s: float

    @property
    def utilisation(self) -> float:
        """bytes / (capacity × window): the mean fraction of its capacity it used."""
        return self.bytes / (self.capacity_Bps * self.window_s) if self.window_s > 0 else 0.0

    @property
    def busy_fraction(self) -> float:
        """busy_s / window: the fraction of the window it carried traffic."""
        return self.busy_s / self.window_s if self.window_s > 0 else 0.0


class LinkLoad:
    """The links of a run's flow network, with their load over any window of the run (the
    engine keeps its intervals: :meth:`FlowNetwork.record_intervals` before the run)."""

    def __init__(self, cluster: ClusterNetwork, net: FlowNetwork) -> None:
        self.cluster = cluster
        self.net = net
        net.record_intervals()

    def usage(self, t0: float, t1: float) -> list[LinkUse]:
        """Every link that carried bytes in ``[t0, t1]`` (s), busiest first (utilisation,
        then bytes, then link index)."""
        carried, busy = self.net.link_usage(t0, t1)
        cap = self.net.capacity
        window = t1 - t0
        used = np.flatnonzero(carried > 0)
        util = carried[used] / cap[used]
        order = used[np.lexsort((used, -carried[used], -util))]
        return [
            LinkUse(
                int(i),
                link_class(self.cluster, int(i)),
                link_place(self.cluster, int(i)),
                float(carried[i]),
                float(busy[i]),
                float(cap[i]),
                window,
            )
            for i in order
        ]

    def busiest(self, t0: float, t1: float, n: int) -> list[LinkUse]:
        """The ``n`` busiest links of :meth:`usage`."""
        return self.usage(t0, t1)[:n]

    def rates(self, links: list[int], t0: float, t1: float) -> tuple[FloatArray, FloatArray]:
        """Each link's aggregate rate (bytes/s) over ``[t0, t1]`` as a step function: change
        times (s) and rows of rates (see :meth:`FlowNetwork.link_rates`)."""
        return self.net.link_rates(links, t0, t1)
