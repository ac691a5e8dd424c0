"""Fabric kinds as objects: what each intra-node fabric kind means to the collective model.

A :class:`~scaling.model.hardware.system.FabricKind` names how a node's accelerators are joined
(DESIGN §3.2); the :class:`FabricModel` registered for it answers every question the collective
model asks of that kind (which link class a step inside the node crosses, how many ring steps per
pass cross PCIe, whether ring walks may stride over direct peer links, …). A new kind is one
subclass plus :func:`register_fabric`; nothing else dispatches on the kind's name.
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Iterator
from typing import ClassVar

from scaling.model.hardware.system import FabricKind, FabricSpec, LinkClass

__all__ = ["FabricModel", "NodeLink", "fabric_of", "register_fabric"]

#: one link of a node: (key without the node: kind first, then indices; raw bandwidth B/s;
#: link class; hardware efficiency, None = the class's own)
NodeLink = tuple[tuple[object, ...], float, LinkClass, float | None]


class FabricModel(ABC):
    """The behaviour of one fabric kind. Every hook has a default (a switch-like fabric with no
    PCIe groups); a kind overrides what differs."""

    kind: ClassVar[FabricKind]
    #: devices sit in groups behind PCIe switches (``group_size``, ``inter_group_bw``,
    #: ``pcie_latency``, ``pcie_efficiency`` apply; a NIC is reached through the PCIe switch)
    grouped: ClassVar[bool] = False
    #: the link class of a step between two devices of one node (of one group)
    intra_class: ClassVar[LinkClass] = LinkClass.SCALE_UP
    #: each device has a direct link to each peer (of its group): ring walks may use any stride
    #: coprime with the ring's length, so channels spread over several peer links
    direct_peers: ClassVar[bool] = False
    #: every device exchanges with every peer of the node at once (HCCL's intra-server Mesh)
    mesh_exchange: ClassVar[bool] = False

    def pcie_steps_per_pass(self, nodes: int, per_node: int, group_size: int) -> int:
        """Sequential steps of one ring pass that cross a PCIe boundary inside the nodes."""
        return 0

    def pcie_hop_latency_s(self, fab: FabricSpec, spans_switches: bool) -> float:
        """Hardware latency of a PCIe-class step, s (``spans_switches``: the group's devices sit
        under more than one PCIe switch)."""
        return 0.0

    def reduces_in_switch(self, fab: FabricSpec) -> bool:
        """Whether the fabric can reduce in-network (NVLS exists)."""
        return False

    # ---- the node's links and the routes between its devices (comm.cluster builds them) ----
    def scale_up_links(self, fab: FabricSpec, g: int) -> Iterator[NodeLink]:
        """The node's accelerator-link (scale-up) links, in build order."""
        return iter(())

    def device_pcie(self, fab: FabricSpec) -> tuple[float, float | None]:
        """A device's own PCIe link on a grouped fabric: (raw bandwidth B/s, hardware
        efficiency or None for the PCIe class's own)."""
        return fab.inter_group_bw_Bps, None

    def node_links(self, fab: FabricSpec, g: int) -> Iterator[NodeLink]:
        """Every link inside one node of ``g`` devices (NICs aside), in build order: the
        scale-up links, then on a grouped fabric each device's PCIe link (both directions) and
        each PCIe switch's link to the host."""
        yield from self.scale_up_links(fab, g)
        if not self.grouped:
            return
        dev_bw, dev_eff = self.device_pcie(fab)
        for d in range(g):
            yield ("pci_up", d), dev_bw, LinkClass.PCIE, dev_eff
            yield ("pci_dn", d), dev_bw, LinkClass.PCIE, dev_eff
        for sw in range(math.ceil(g / fab.group_size)):
            yield ("sw_up", sw), fab.inter_group_bw_Bps, LinkClass.PCIE, None
            yield ("sw_dn", sw), fab.inter_group_bw_Bps, LinkClass.PCIE, None

    def intra_route(self, fab: FabricSpec, a: int, b: int) -> list[tuple[object, ...]]:
        """The links (keys without the node) from device ``a`` to device ``b`` of one node."""
        return self.pcie_route(fab, a, b)

    @staticmethod
    def pcie_route(fab: FabricSpec, a: int, b: int) -> list[tuple[object, ...]]:
        """Device ``a`` to ``b`` through PCIe: up its switch, through the host between switches,
        down to ``b``."""
        gs = fab.group_size
        sa, sb = a // gs, b // gs
        path: list[tuple[object, ...]] = [("pci_up", a)]
        if sa != sb:
            path += [("sw_up", sa), ("sw_dn", sb)]
        return [*path, ("pci_dn", b)]


class SwitchFabric(FabricModel):
    """NVSwitch-like: one port per device into a non-blocking switch."""

    kind = FabricKind.SWITCH

    def reduces_in_switch(self, fab: FabricSpec) -> bool:
        return fab.in_switch_reduction

    def scale_up_links(self, fab: FabricSpec, g: int) -> Iterator[NodeLink]:
        # each device's port into the switch, both directions
        for d in range(g):
            yield ("up", d), fab.link_bw_Bps, LinkClass.SCALE_UP, None
            yield ("dn", d), fab.link_bw_Bps, LinkClass.SCALE_UP, None

    def intra_route(self, fab: FabricSpec, a: int, b: int) -> list[tuple[object, ...]]:
        return [("up", a), ("dn", b)]


class FullMeshFabric(FabricModel):
    """HCCS-like: one direct link per device pair."""

    kind = FabricKind.FULL_MESH
    direct_peers = True
    mesh_exchange = True

    def scale_up_links(self, fab: FabricSpec, g: int) -> Iterator[NodeLink]:
        # a directed link per ordered device pair
        for a in range(g):
            for b in range(g):
                if a != b:
                    yield ("p2p", a, b), fab.link_bw_Bps, LinkClass.SCALE_UP, None

    def intra_route(self, fab: FabricSpec, a: int, b: int) -> list[tuple[object, ...]]:
        return [("p2p", a, b)]


class BridgeGroupsFabric(FabricModel):
    """MLU-Link-like: cards in bridged groups; PCIe through the host between groups."""

    kind = FabricKind.BRIDGE_GROUPS
    grouped = True
    direct_peers = True

    def pcie_steps_per_pass(self, nodes: int, per_node: int, group_size: int) -> int:
        # a ring crosses each group boundary once per node
        return nodes * (math.ceil(per_node / group_size) - 1)

    def pcie_hop_latency_s(self, fab: FabricSpec, spans_switches: bool) -> float:
        return fab.pcie_latency_s

    def scale_up_links(self, fab: FabricSpec, g: int) -> Iterator[NodeLink]:
        # a bridge group's links shared among each card's peers in the group
        gs = fab.group_size
        for a in range(g):
            for b in range(g):
                if a != b and a // gs == b // gs:
                    share = fab.link_bw_Bps / (min(gs, g) - 1)
                    yield ("p2p", a, b), share, LinkClass.SCALE_UP, None

    def intra_route(self, fab: FabricSpec, a: int, b: int) -> list[tuple[object, ...]]:
        gs = fab.group_size
        if a // gs == b // gs:
            return [("p2p", a, b)]
        return self.pcie_route(fab, a, b)


class PcieFabric(FabricModel):
    """No accelerator link: peer traffic crosses PCIe switches (and the host between them)."""

    kind = FabricKind.PCIE
    grouped = True
    intra_class = LinkClass.PCIE

    def pcie_steps_per_pass(self, nodes: int, per_node: int, group_size: int) -> int:
        return nodes * (per_node - 1)  # every intra-node hop crosses PCIe

    def pcie_hop_latency_s(self, fab: FabricSpec, spans_switches: bool) -> float:
        # two devices under one PCIe switch: the fabric's own link latency
        return fab.pcie_latency_s if spans_switches else fab.link_latency_s

    def device_pcie(self, fab: FabricSpec) -> tuple[float, float | None]:
        # the device's own PCIe link is the fabric's link (link_bw at link_efficiency)
        return fab.link_bw_Bps, fab.link_efficiency


_FABRICS: dict[FabricKind, FabricModel] = {}


def register_fabric(model: FabricModel) -> FabricModel:
    """Register the behaviour of a fabric kind (one per kind); returns it."""
    _FABRICS[model.kind] = model
    return model


def fabric_of(kind: FabricKind) -> FabricModel:
    """The behaviour registered for ``kind``."""
    return _FABRICS[kind]


for _m in (SwitchFabric(), FullMeshFabric(), BridgeGroupsFabric(), PcieFabric()):
    register_fabric(_m)
