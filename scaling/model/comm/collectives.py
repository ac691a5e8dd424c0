"""Collectives: the cost interface, call records, and the SimPy communicator that runs them.

A :class:`CollectiveCostModel` prices one uncontended call (:class:`CollectiveCost`); two
implement it, both through the library's one tuner
(:meth:`~scaling.model.comm.flowcoll.FlowCollectives.predict`): the flow network itself
(contention-aware execution) and :class:`~scaling.model.comm.uncontended.AnalyticCostModel`
(every call at its uncontended time). The :class:`Communicator` is the rendezvous of simulated
ranks; a :data:`Runner` starts a call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import simpy

from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import LinkClass

__all__ = [
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

    def cost(
        self, op: CollectiveOp, nbytes: float, group: Group, *, sizes: PeerSizes | None = None
    ) -> CollectiveCost:
        """Uncontended cost of one call of ``op`` on ``nbytes`` (nccl-tests size) over ``group``
        (an uneven all-to-all of per-peer ``sizes`` where given)."""
        ...


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
    start); ``dtype`` is the element type on the wire (empty: not stated by the strategy);
    ``sizes``: an uneven all-to-all's per-peer sizes (None: even).
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
    sizes: PeerSizes | None = None


@dataclass(slots=True)
class _Pending:
    arrived: int
    issue: int
    done: simpy.Event


Runner = Callable[[CollectiveOp, float, Group, PeerSizes | None], simpy.Event]
"""Starts one collective now (an uneven all-to-all where per-peer sizes are given); the event
fires when it is done, with the algorithm name."""


def timed_runner(env: simpy.Environment, model: CollectiveCostModel) -> Runner:
    """A runner that takes each collective's uncontended cost from ``model`` (no contention)."""

    def start(
        op: CollectiveOp, nbytes: float, group: Group, sizes: PeerSizes | None
    ) -> simpy.Event:
        cost = (
            model.cost(op, nbytes, group)
            if sizes is None
            else model.cost(op, nbytes, group, sizes=sizes)
        )
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
        sizes: PeerSizes | None = None,
    ) -> simpy.Event:
        """Join collective ``key``; the returned event fires when it has completed.

        ``expected``: simulated ranks that take part (default: all of them). ``dtype``: element
        type on the wire, for reports. ``issue``: the number :meth:`next_issue` gave the call
        when it was queued (default: a new one now). ``sizes``: an all-to-all's per-peer sizes
        (``all_to_allv``; None: every peer ``nbytes/p``).
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
                    sizes,
                )
                self.records.append(rec)
                done.succeed(rec)

            self.runner(op, nbytes, group, sizes).callbacks.append(finish)
        return pend.done

    def next_issue(self) -> int:
        """A new issue number (calls are numbered in the order ranks issue them)."""
        self._issued += 1
        return self._issued
