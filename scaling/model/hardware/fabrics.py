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
from typing import ClassVar

from scaling.model.hardware.system import FabricKind, FabricSpec, LinkClass

__all__ = ["FabricModel", "fabric_of", "register_fabric"]


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


class SwitchFabric(FabricModel):
    """NVSwitch-like: one port per device into a non-blocking switch."""

    kind = FabricKind.SWITCH

    def reduces_in_switch(self, fab: FabricSpec) -> bool:
        return fab.in_switch_reduction


class FullMeshFabric(FabricModel):
    """HCCS-like: one direct link per device pair."""

    kind = FabricKind.FULL_MESH
    direct_peers = True
    mesh_exchange = True


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
