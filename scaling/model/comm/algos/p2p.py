"""NCCL's all-to-all: point-to-point sends and receives to every peer in one group call.

NCCL has no all-to-all algorithm of its own: ``alltoall_perf`` (nccl-tests
src/alltoall.cu) posts one ``ncclSend`` and one ``ncclRecv`` per peer between
``ncclGroupStart``/``ncclGroupEnd``, and NCCL schedules the peers in rounds — in round ``r``
rank ``i`` sends to ``i + r`` and receives from ``i − r`` (src/init.cc p2p schedule) — spread
over its p2p channels, a few channels per peer (``NCCL_MAX_P2P_NCHANNELS``,
``NCCL_NCHANNELS_PER_NET_PEER``), so a number of peers are in flight at once. Each send goes
from the source GPU over its own NIC to the destination's NIC: between local ranks of
different indices it crosses rails (without PXN, :mod:`.pxn`).

Bandwidth: every pair's ``S/p`` at once (one phase; the rounds pipeline on the links), so the
uncontended time is ``max`` over links of load / capacity — on a rail-optimized fabric with a
NIC per GPU ``(p−k)/p · S / B_nic`` for ``k`` ranks per node. Latency: the rounds,
``ceil((k−1)/P)`` inside the node and ``ceil((p−k)/P)`` across nodes for ``P`` peers in flight.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Param, Schedule, register
from scaling.model.comm.algos.exchange import (
    concat,
    folds,
    intra_pairs,
    peer_rounds,
    peers_in_flight,
    remote_pairs,
    v_pairs,
)
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import LibraryProtocol, LinkClass


@register
class P2P(Algorithm):
    """All-to-all as point-to-point sends to every peer (NCCL's grouped send/receive)."""

    name = "p2p"
    ops = frozenset({CollectiveOp.ALL_TO_ALL})
    params: ClassVar[dict[str, Param]] = {"peers_in_flight": Param()}

    def allows_protocol(self, proto: LibraryProtocol, candidates: int) -> bool:
        """NCCL sends point-to-point with LL below ``NCCL_P2P_LL_THRESHOLD`` and Simple above,
        never LL128 (src/enqueue.cc p2p task protocol): LL128 is refused where the library
        offers a choice."""
        return proto.name.lower() != "ll128" or candidates <= 1

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """All pairs at once; rounds of ``peers_in_flight`` peers for the latency."""
        if op is not CollectiveOp.ALL_TO_ALL:
            raise NotApplicable("p2p exists for all_to_all")
        p, k, n = group.size, group.per_node, group.nodes
        in_flight = peers_in_flight(self.param(plan.system, "peers_in_flight"))
        remote = np.full((k, k), 1.0 / p)
        ph = concat(
            intra_pairs(plan, group, 1.0 / p),
            remote_pairs(plan, group, remote, fold=folds(group)),
        )
        steps = {
            plan.intra_class: float(peer_rounds(k - 1, in_flight)),
            LinkClass.NETWORK: float(peer_rounds(p - k, in_flight)),
        }
        cross = n > 1 and k > 1  # local rank x sends to local rank y != x of another node
        return Schedule(self.name, (ph,), steps, (p - 1) / p, cross)

    def schedule_v(self, plan: Planner, group: Group, sizes: PeerSizes) -> Schedule:
        """The uneven all-to-all: every pair's own size at once, the same rounds."""
        sched = self.schedule(plan, CollectiveOp.ALL_TO_ALL, group)
        ph = v_pairs(plan, group, sizes)
        wire = float(ph.coeff.sum()) / group.size  # mean bytes a rank sends per byte of S
        return Schedule(self.name, (ph,), sched.steps, wire, sched.cross_rail)
