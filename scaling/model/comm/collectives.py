"""Collectives: operations, groups, cost models, and the SimPy communicator that runs them.

The cost model here is the first cut (issue #2): alpha-beta closed forms whose bandwidth term is
bounded by the slowest *cut* the algorithm crosses and whose latency term counts sequential steps
per link class, in the form NCCL's own tuner uses (``reference/collective_cost_models.csv``,
"NCCL model" rows)::

    ring: t = call_latency + Σ_class steps_class · α_class + factor(p) · S / B_bus
    tree: t = call_latency + 2((g−1)·α_intra + log2(N)·(α_net + α_level)) + 2·S / (B_bus · tree_bw_factor)

where ``α_level`` is the library's ``tree_level_latency`` (a tree level between nodes beyond a
ring step), ``α_class`` is the library's step latency for that class plus the hardware latency of the
hop (``algorithms.latency_s``), and each of the library's protocols is tried (its bandwidth share
and bus-bandwidth cap applied), the fastest kept.

The library picks, per call, the fastest of the algorithms it implements (as NCCL's tuner does);
the tree (NCCL's double binary tree across nodes, a chain inside a node) exists only for
all-reduce across more than one node.

``B_bus`` is the bus bandwidth the ring can sustain: the minimum over the cuts it crosses of the
cut's bandwidth per direction. A ring with C channels crosses every node boundary once per channel,
so its bus bandwidth across nodes is the node's total NIC bandwidth (8 × 24 GB/s ≈ 192 GB/s on a
DGX A100, the measured plateau), not one NIC's. The flow-level network engine replaces this model
behind the same :class:`CollectiveCostModel` interface.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import simpy

from scaling.model.comm.algorithms import Algorithms, latency_s, ring_steps_per_pass
from scaling.model.comm.ops import CollectiveOp, Group, busbw_factor
from scaling.model.hardware.system import FabricKind, LinkClass, SystemSpec

__all__ = [
    "AnalyticCostModel",
    "CollectiveCost",
    "CollectiveCostModel",
    "CollectiveRecord",
    "Communicator",
    "Runner",
    "timed_runner",
]


@dataclass(frozen=True, slots=True)
class CollectiveCost:
    """Cost of one uncontended collective call.

    Attributes:
        time_s: total time, s.
        latency_s: the latency (alpha) part, s.
        bus_bw_Bps: bus bandwidth bound used for the bandwidth part, bytes/s.
        bottleneck: the link class whose cut bounds ``bus_bw_Bps``.
        algorithm: algorithm name.
        bytes_sent_per_rank: bytes each rank puts on the wire, bytes.
    """

    time_s: float
    latency_s: float
    bus_bw_Bps: float
    bottleneck: LinkClass | None
    algorithm: str
    bytes_sent_per_rank: float


class CollectiveCostModel(Protocol):
    """Anything that can price a collective for a group (analytic now, flow-level next)."""

    def cost(self, op: CollectiveOp, nbytes: float, group: Group) -> CollectiveCost:
        """Uncontended cost of one call of ``op`` on ``nbytes`` (nccl-tests size) over ``group``."""
        ...


class AnalyticCostModel:
    """Ring and tree collectives priced by alpha-beta forms over the cuts they cross."""

    def __init__(self, system: SystemSpec) -> None:
        self.system = system
        self._memo: dict[tuple[CollectiveOp, float, Group], CollectiveCost] = {}

    # -- bandwidth ---------------------------------------------------------------------------
    def cut_bandwidths(self, group: Group) -> dict[LinkClass, float]:
        """Bus bandwidth bound (bytes/s, per direction) of each link class the ring crosses."""
        s, lib = self.system, self.system.library
        fab, g, n = s.fabric, group.per_node, group.nodes
        # Achievable = hardware fraction (fabric/NIC spec) × library fraction (software maturity).
        eff = {
            LinkClass.SCALE_UP: fab.link_efficiency * lib.bw_efficiency[LinkClass.SCALE_UP],
            LinkClass.PCIE: fab.pcie_efficiency * lib.bw_efficiency[LinkClass.PCIE],
            LinkClass.NETWORK: s.nics.efficiency * lib.bw_efficiency[LinkClass.NETWORK],
        }
        cuts: dict[LinkClass, float] = {}
        if g > 1:
            if fab.kind is FabricKind.SWITCH:
                cuts[LinkClass.SCALE_UP] = fab.link_bw_Bps * eff[LinkClass.SCALE_UP]
            elif fab.kind is FabricKind.FULL_MESH:
                # Channels cycle over the walk strides (model.algorithms): the busiest peer link
                # carries ceil(C / strides) channel flows.
                ns = len(Algorithms(s, lib.channels).mesh_strides(g)) if g > 2 else 1
                links = lib.channels / math.ceil(lib.channels / ns)
                cuts[LinkClass.SCALE_UP] = links * fab.link_bw_Bps * eff[LinkClass.SCALE_UP]
            elif fab.kind is FabricKind.BRIDGE_GROUPS:
                gs = min(fab.group_size, g)
                if gs > 1:
                    # A device's bridge bandwidth is split over its gs−1 peers; channels use
                    # one peer link per walk stride.
                    if g > fab.group_size:
                        ns = len([d for d in range(1, gs) if math.gcd(d, gs) == 1]) if gs > 2 else 1
                        per_stride = math.ceil(lib.channels / math.ceil(g / gs))
                        links = per_stride / math.ceil(per_stride / ns)
                    else:
                        ns = len(Algorithms(s, lib.channels).mesh_strides(g)) if g > 2 else 1
                        links = lib.channels / math.ceil(lib.channels / ns)
                    share = fab.link_bw_Bps / (gs - 1)
                    cuts[LinkClass.SCALE_UP] = links * share * eff[LinkClass.SCALE_UP]
                if g > fab.group_size:
                    cuts[LinkClass.PCIE] = fab.inter_group_bw_Bps * eff[LinkClass.PCIE]
            else:  # PCIE: the device's PCIe link at link_efficiency, switch-host legs at pcie's
                lib_pcie = lib.bw_efficiency[LinkClass.PCIE]
                bw = fab.link_bw_Bps * (fab.link_efficiency * lib_pcie)
                if g > fab.group_size:
                    bw = min(bw, fab.inter_group_bw_Bps * eff[LinkClass.PCIE])
                cuts[LinkClass.PCIE] = bw
        if n > 1:
            nics = min(lib.channels, s.nics.count)
            node_out = nics * s.nics.bw_Bps
            net = node_out
            if n > s.scale_out.nodes_per_leaf:
                # A leaf's uplinks carry the ring's crossing to the next leaf (one per channel).
                net = min(net, s.scale_out.nodes_per_leaf * node_out / s.scale_out.oversubscription)
            cuts[LinkClass.NETWORK] = net * eff[LinkClass.NETWORK]
        return cuts

    # -- latency -----------------------------------------------------------------------------
    def _fastest(
        self,
        name: str,
        op: CollectiveOp,
        nbytes: float,
        group: Group,
        steps: dict[LinkClass, float],
        bw: float,
        bottleneck: LinkClass,
        wire: float,
    ) -> CollectiveCost:
        """The best of the library's protocols for one algorithm: latency from ``steps``; the
        ``wire`` bytes move at ``bw`` (bytes/s) × the protocol's data share, and no faster than
        its bus-bandwidth cap allows (nccl-tests busbw = factor(p)·S / t ≤ cap)."""
        best: CollectiveCost | None = None
        lib = self.system.library
        extra = (
            steps.get(LinkClass.NETWORK, 0.0) * lib.tree_level_latency_s if name == "tree" else 0.0
        )
        for proto in lib.protocols:
            latency = latency_s(self.system, proto, group, steps) + extra
            bw_time = wire / (bw * proto.bw_fraction)
            if math.isfinite(proto.max_busbw_Bps):
                bw_time = max(bw_time, busbw_factor(op, group.size) * nbytes / proto.max_busbw_Bps)
            eff_bw = wire / bw_time if bw_time > 0 else bw
            cost = CollectiveCost(latency + bw_time, latency, eff_bw, bottleneck, name, wire)
            if best is None or cost.time_s < best.time_s:
                best = cost
        assert best is not None  # a library has at least one protocol
        return best

    def ring(self, op: CollectiveOp, nbytes: float, group: Group) -> CollectiveCost:
        """Ring collective of ``nbytes`` (nccl-tests size convention) on ``group``."""
        passes = 2 if op is CollectiveOp.ALL_REDUCE else 1
        steps: dict[LinkClass, float] = {
            c: passes * k for c, k in ring_steps_per_pass(self.system, group).items()
        }
        cuts = self.cut_bandwidths(group)
        bottleneck = min(cuts, key=lambda c: cuts[c])
        wire = busbw_factor(op, group.size) * nbytes
        return self._fastest("ring", op, nbytes, group, steps, cuts[bottleneck], bottleneck, wire)

    def tree(self, op: CollectiveOp, nbytes: float, group: Group) -> CollectiveCost | None:
        """NCCL-style tree all-reduce (chain in the node, double binary tree across nodes).

        Returns None where the library has no tree for this call (not an all-reduce, one node).
        """
        lib = self.system.library
        if op is not CollectiveOp.ALL_REDUCE or group.nodes < 2 or "tree" not in lib.algorithms:
            return None
        intra_class = LinkClass.SCALE_UP
        if self.system.fabric.kind is FabricKind.PCIE:
            intra_class = LinkClass.PCIE
        steps = {
            intra_class: 2.0 * (group.per_node - 1),
            LinkClass.NETWORK: 2.0 * math.log2(group.nodes),
        }
        cuts = self.cut_bandwidths(group)
        bottleneck = min(cuts, key=lambda c: cuts[c])
        bw = cuts[bottleneck] * lib.tree_bw_factor
        # Each rank sends its data up the tree and receives the result down: ~2S per rank.
        wire = 2.0 * nbytes
        return self._fastest("tree", op, nbytes, group, steps, bw, bottleneck, wire)

    def cost(self, op: CollectiveOp, nbytes: float, group: Group) -> CollectiveCost:
        """The library's choice for this call: the fastest algorithm it implements."""
        key = (op, nbytes, group)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        if group.size == 1:
            result = CollectiveCost(0.0, 0.0, math.inf, None, "none", 0.0)
        else:
            result = self.ring(op, nbytes, group)
            tree = self.tree(op, nbytes, group)
            if tree is not None and tree.time_s < result.time_s:
                result = tree
        self._memo[key] = result
        return result


@dataclass(frozen=True, slots=True)
class CollectiveKey:
    """Names one collective call of a run; simulated ranks calling with equal keys meet in it.

    Attributes:
        step: training step (0 = the first simulated step).
        phase: where in the step it is issued: ``forward``, ``backward``, ``optimizer``, ``setup``.
        kind: what the strategy calls it (``bucket``, ``all_gather``, ``grad``, ``replicate`` …).
        index: the bucket (DDP) or unit (FSDP) it belongs to.
        micro: micro-batch of the step.
        stream: the communication stream it is issued on (a trace track).
        tag: tells apart sibling groups that issue the same call (HSDP: the node).
        label: a readable description for explanations and traces (not part of the identity).
    """

    step: int
    phase: str
    kind: str
    index: int
    micro: int = 0
    stream: str = "comm"
    tag: tuple[int, ...] = ()
    label: str = field(default="", compare=False)


@dataclass(slots=True)
class CollectiveRecord:
    """One completed collective as seen by the communicator (times in s, sizes in bytes).

    ``issue`` orders calls as the ranks issued them (a rank may queue a call before it can
    start); ``dtype`` is the element type on the wire (empty: not stated by the strategy).
    """

    key: CollectiveKey
    op: CollectiveOp
    nbytes: float
    group: Group
    start_s: float
    end_s: float
    algorithm: str
    issue: int = 0
    dtype: str = ""


@dataclass(slots=True)
class _Pending:
    arrived: int
    issue: int
    done: simpy.Event


Runner = Callable[[CollectiveOp, float, Group], simpy.Event]
"""Starts one collective now; the event fires when it is done, with the algorithm name."""


def timed_runner(env: simpy.Environment, model: CollectiveCostModel) -> Runner:
    """A runner that takes each collective's uncontended cost from ``model`` (no contention)."""

    def start(op: CollectiveOp, nbytes: float, group: Group) -> simpy.Event:
        cost = model.cost(op, nbytes, group)
        return env.timeout(cost.time_s, value=cost.algorithm)

    return start


@dataclass
class Communicator:
    """Rendezvous of simulated ranks at a collective, then runs it.

    A collective starts when the last participating simulated rank has called it (so a slow
    rank delays everyone, as in NCCL) and completes when the runner says so: after its
    uncontended cost (:func:`timed_runner`) or when its flows have crossed the shared network
    (:meth:`scaling.model.flowcoll.FlowCollectives.start`).

    Attributes:
        env: the SimPy environment.
        runner: starts a collective and returns its completion event.
        simulated_ranks: how many simulated ranks take part in every call (may be fewer than the
            group size when identical ranks are simulated once; the collective spans the group).
    """

    env: simpy.Environment
    runner: Runner
    simulated_ranks: int
    records: list[CollectiveRecord] = field(default_factory=list)
    in_flight: int = 0  # collectives started and not yet completed
    _issued: int = 0
    _pending: dict[CollectiveKey, _Pending] = field(default_factory=dict)

    def call(
        self,
        key: CollectiveKey,
        op: CollectiveOp,
        nbytes: float,
        group: Group,
        expected: int | None = None,
        *,
        dtype: str | None = None,
        issue: int | None = None,
    ) -> simpy.Event:
        """Join collective ``key``; the returned event fires when it has completed.

        ``expected``: simulated ranks that take part (default: all of them). ``dtype``: element
        type on the wire, for reports. ``issue``: the number :meth:`next_issue` gave the call
        when it was queued (default: a new one now).
        """
        pend = self._pending.get(key)
        if pend is None:
            pend = _Pending(0, self.next_issue() if issue is None else issue, self.env.event())
            self._pending[key] = pend
        pend.arrived += 1
        if pend.arrived == (expected or self.simulated_ranks):
            del self._pending[key]
            start = self.env.now
            done = pend.done
            self.in_flight += 1

            def finish(ev: simpy.Event) -> None:
                self.in_flight -= 1
                rec = CollectiveRecord(
                    key,
                    op,
                    nbytes,
                    group,
                    start,
                    self.env.now,
                    str(ev.value or ""),
                    pend.issue,
                    dtype or "",
                )
                self.records.append(rec)
                done.succeed(rec)

            self.runner(op, nbytes, group).callbacks.append(finish)
        return pend.done

    def next_issue(self) -> int:
        """A new issue number (calls are numbered in the order ranks issue them)."""
        self._issued += 1
        return self._issued
