"""The latency term of a collective: sequential steps per link class, each priced at the
library's software step latency plus the hardware latency of the hop it crosses."""

from __future__ import annotations

from scaling.model.comm.ops import Group
from scaling.model.hardware.fabrics import fabric_of
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec


def ring_steps_per_pass(system: SystemSpec, group: Group) -> dict[LinkClass, int]:
    """Sequential ring steps per pass (p−1 in all) by the class of link they cross.

    Following NCCL's tuner, a pass charges ``nodes−1`` steps to the network; steps that cross an
    MLU-Link group or PCIe-switch boundary inside a node are charged to PCIe; the rest to the
    scale-up link.
    """
    fab, k, n = system.fabric, group.per_node, group.nodes
    net = n - 1
    pcie = fabric_of(fab.kind).pcie_steps_per_pass(n, k, fab.group_size)
    up = group.size - 1 - net - pcie
    return {LinkClass.SCALE_UP: up, LinkClass.PCIE: pcie, LinkClass.NETWORK: net}


def hop_latency_s(
    system: SystemSpec, group: Group, *, cross_rail: bool = False
) -> dict[LinkClass, float]:
    """Hardware latency of one sequential step on ``group``, by the link class it crosses, s.

    All ranks take a step at once and the step ends with its slowest hop, so each class is
    charged the latency of the longest real path of that class the group uses:

    * scale-up: ``fabric.link_latency`` (through the NVSwitch, over the HCCS / MLU-Link link);
    * PCIe: ``fabric.pcie_latency`` where the path crosses PCIe switches through the host
      (between MLU-Link groups; between PCIe switches), else ``fabric.link_latency`` (two devices
      under one PCIe switch);
    * network: ``nics.latency`` (NIC tx, one leaf switch, NIC rx) plus
      ``scale_out.spine_latency`` when a hop leaves its leaf: the group spans several pods, or
      (``cross_rail``) its flows join different rails of a rail-optimized fabric.
    """
    fab, so = system.fabric, system.scale_out
    model = fabric_of(fab.kind)
    pcie = 0.0
    if model.grouped:
        gs, k = fab.group_size, group.per_node
        if group.strided:  # a lane whose local devices sit under more than one PCIe switch
            spans_switches = any(
                len({int(x) // gs for x in group.lane(j).local_ids()}) > 1
                for j in range(group.lanes)
            )
        else:
            lows = [group.local_base + j * k for j in range(group.lanes)]  # lanes' first devices
            spans_switches = any(lo // gs != (lo + k - 1) // gs for lo in lows)
        pcie = model.pcie_hop_latency_s(fab, spans_switches)
    net = 0.0
    if group.nodes > 1:
        npl = so.nodes_per_leaf
        last = group.last_node  # strided groups: the real nodes' span
        pods = last // npl - group.first_node // npl + 1
        rails = cross_rail and so.rail_optimized and system.nics.count > 1
        net = system.nics.latency_s + (so.spine_latency_s if pods > 1 or rails else 0.0)
    return {LinkClass.SCALE_UP: fab.link_latency_s, LinkClass.PCIE: pcie, LinkClass.NETWORK: net}


def latency_s(
    system: SystemSpec,
    proto: LibraryProtocol,
    group: Group,
    steps: dict[LinkClass, float],
    *,
    cross_rail: bool = False,
) -> float:
    """Latency term of one call on ``group``, s: the library's host overhead + the protocol's
    base latency + Σ over link classes of steps × (library step latency + hardware hop
    latency, :func:`hop_latency_s`)."""
    hop = hop_latency_s(system, group, cross_rail=cross_rail)
    total = sum(n * (proto.step_latency_s[c] + hop[c]) for c, n in steps.items())
    return system.library.call_overhead_s + proto.call_latency_s + total
