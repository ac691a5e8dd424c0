"""NCCL's PXN all-to-all: NVLink to the local GPU on the destination's rail, then its NIC.

PXN ("PCI × NVLink", NCCL 2.12+, on by default; ``NCCL_PXN_DISABLE=1`` turns it off) lets a
GPU send to a remote GPU through the local GPU that shares the destination's rail: the data
crosses NVLink to that intermediary, which posts it on its own NIC, so every inter-node transfer
stays on one rail (no spine hop on a rail-optimized fabric) and the messages from one node to
one remote GPU are aggregated (NCCL src/graph/paths.cc ``ncclTopoGetPxnRanks``,
src/transport/net.cc proxy connection through the PXN rank).

Flows (one phase: the intermediary forwards as it receives): inside each node ``x → y`` carries
the direct share ``S/p`` plus the relayed shares for the other nodes' rank ``y``,
``n·S/p``; between nodes ``(i, y) → (j, y)`` carries the ``k`` shares node ``i`` has for
``(j, y)``, ``k·S/p``. Latency: as :mod:`.p2p`'s rounds, plus one scale-up hop in front of
the network rounds. Needs a fabric where every local GPU reaches every other directly (NVSwitch,
full mesh), several ranks per node and several nodes.
"""

from __future__ import annotations

import numpy as np

from scaling.model.comm.algos.base import NotApplicable, Schedule, register
from scaling.model.comm.algos.exchange import (
    concat,
    folds,
    intra_pairs,
    peer_rounds,
    peers_in_flight,
    remote_pairs,
    v_pairs,
    v_rail,
)
from scaling.model.comm.algos.p2p import P2P
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import LinkClass


@register
class PXN(P2P):
    """All-to-all over NVLink to the rail peer, then the rail NIC (NCCL PXN): point-to-point
    sends as :class:`P2P` (its protocols and ``peers_in_flight``), routed through the rail."""

    name = "pxn"

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """Relay through the rail peer; one pipelined phase."""
        if op is not CollectiveOp.ALL_TO_ALL:
            raise NotApplicable("pxn exists for all_to_all")
        if group.nodes < 2 or group.per_node < 2:
            raise NotApplicable("PXN needs several nodes of several ranks")
        if plan.fabric.grouped:
            raise NotApplicable("PXN needs every local device linked to every other (NVLink)")
        p, k, n = group.size, group.per_node, group.nodes
        in_flight = peers_in_flight(self.param(plan.system, "peers_in_flight"))
        rail = np.diag(np.full(k, k / p))
        ph = concat(
            intra_pairs(plan, group, n / p),
            remote_pairs(plan, group, rail, fold=folds(group)),
        )
        steps = {
            plan.intra_class: float(peer_rounds(k - 1, in_flight) + 1),
            LinkClass.NETWORK: float(peer_rounds(p - k, in_flight)),
        }
        # each rank sends its p-1 shares once; relays add (n-1)/p·S on the scale-up links
        return Schedule(self.name, (ph,), steps, (p - 1) / p)

    def schedule_v(self, plan: Planner, group: Group, sizes: PeerSizes) -> Schedule:
        """The uneven all-to-all relayed through the rail peer; one pipelined phase."""
        sched = self.schedule(plan, CollectiveOp.ALL_TO_ALL, group)
        gather, net = v_rail(plan, group, sizes)
        wire = float(v_pairs(plan, group, sizes).coeff.sum()) / group.size
        return Schedule(self.name, (concat(gather, net),), sched.steps, wire)
