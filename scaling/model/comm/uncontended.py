"""The analytic network mode: each collective at the library tuner's uncontended time.

``simulation.network: analytic`` prices every call with the same tuner as the flow mode
(:meth:`FlowCollectives.predict <scaling.model.comm.flowcoll.FlowCollectives.predict>`): the
same algorithms the library lists, each with its own latency rule and protocol limits, its
bandwidth from its phases' max-min rates solved *alone* on the cluster's links. What it drops is
contention: a call never shares a link with another call in flight, so it costs exactly what
the tuner predicts (as a flow-mode call alone on the network does, to the last bit). One tuner
for both modes: on an uncontended call they pick the same algorithm and protocol and agree on
its time (``tests/test_tuner_modes.py``).
"""

from __future__ import annotations

import simpy

from scaling.model.comm.collectives import CollectiveCost
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import SystemSpec

__all__ = ["AnalyticCostModel"]


class AnalyticCostModel:
    """Every call at the tuner's uncontended prediction (the ``CollectiveCostModel``
    interface). The cluster is built as large as the furthest node a group reaches (the same
    routes and leaf-spine as a job's network of at least that many nodes), once per size."""

    def __init__(self, system: SystemSpec, nodes: int = 1, seed: int = 0) -> None:
        """``nodes``: the cluster's size to start with; ``seed``: salts the ``hash`` ECMP as
        the flow mode's run seed does."""
        self.system = system
        self.seed = seed
        self._nodes = max(1, nodes)
        self._flows: FlowCollectives | None = None
        self._memo: dict[
            tuple[CollectiveOp, float, Group, str | None, str | None, PeerSizes | None],
            CollectiveCost,
        ]
        self._memo = {}

    def collectives(self, group: Group) -> FlowCollectives:
        """The tuner over a cluster that holds ``group`` (grown when a group reaches further)."""
        need = group.last_node + 1
        if self._flows is None or need > self._nodes:
            self._nodes = max(self._nodes, need)
            self._flows = FlowCollectives(simpy.Environment(), self.system, self._nodes, self.seed)
        return self._flows

    def cost(
        self, op: CollectiveOp, nbytes: float, group: Group, *, sizes: PeerSizes | None = None
    ) -> CollectiveCost:
        """The tuner's choice for this call and its uncontended cost (memoised)."""
        return self.price(op, nbytes, group, sizes=sizes)

    def price(
        self,
        op: CollectiveOp,
        nbytes: float,
        group: Group,
        algorithm: str | None = None,
        protocol: str | None = None,
        sizes: PeerSizes | None = None,
    ) -> CollectiveCost:
        """:meth:`cost`, or the named algorithm/protocol's uncontended cost (an uneven
        all-to-all of ``sizes`` where given); ``ValueError`` where the library has none for
        this call."""
        key = (op, nbytes, group, algorithm, protocol, sizes)
        hit = self._memo.get(key)
        if hit is None:
            hit = self.collectives(group).cost(op, nbytes, group, algorithm, protocol, sizes)
            self._memo[key] = hit
        return hit
