"""Where a step went: compute, exposed communication by collective and network tier, idle.

Built from one rank's timeline (spans of its compute stream, and the collectives it took part
in). A wait of the compute stream on communication is *exposed* time; it is split among the
collectives in flight during it, equally at each instant (a wait with none in flight — waiting
for slower ranks to arrive at a collective — counts as ``waiting for other ranks``). The parts add
up to the rank's step time exactly. Under pipeline parallelism a wait for another stage with
nothing of this rank in flight is the pipeline bubble (the strategy's ``bubble_waits``), and
collectives are labelled by the parallel dimension the strategy declares for their kind
(``Strategy.parallel_dims``; Megatron's TP, PP, DP: ``exposed_by_parallel``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

from scaling.model.comm.collectives import CollectiveRecord
from scaling.model.simulation import Timeline


@dataclass
class Breakdown:
    """Seconds of one step of one rank, by part; ``exposed`` keyed by (op, tier)."""

    step_s: float
    forward_s: float = 0.0
    backward_s: float = 0.0
    optimizer_s: float = 0.0
    other_compute_s: float = 0.0
    exposed: dict[tuple[str, str], float] = field(default_factory=dict)
    waiting_for_ranks_s: float = 0.0
    idle_s: float = 0.0
    exposed_by_collective: dict[str, float] = field(default_factory=dict)
    #: pipeline parallelism: waits for an activation or gradient from another stage while no
    #: transfer of this rank is in flight (the stage had nothing to do: the bubble), s
    bubble_s: float = 0.0
    #: exposed seconds by parallel dimension (the strategy's ``parallel_dims``: Megatron's
    #: ``TP``, ``PP``, ``DP``)
    exposed_by_parallel: dict[str, float] = field(default_factory=dict)

    @property
    def compute_s(self) -> float:
        """Compute-stream busy time of the step (s)."""
        return self.forward_s + self.backward_s + self.optimizer_s + self.other_compute_s

    @property
    def exposed_s(self) -> float:
        """Time the compute stream waited on communication or on other ranks (s)."""
        return sum(self.exposed.values()) + self.waiting_for_ranks_s + self.bubble_s

    def parts(self) -> list[tuple[str, float]]:
        """(label, seconds) rows that add up to ``step_s``."""
        rows = [
            ("compute: forward", self.forward_s),
            ("compute: backward", self.backward_s),
            ("compute: optimizer", self.optimizer_s),
        ]
        if self.other_compute_s:
            rows.append(("compute: other", self.other_compute_s))
        for (op, tier), t in sorted(self.exposed.items(), key=lambda kv: -kv[1]):
            rows.append((f"exposed {op} ({tier or 'unknown'} bound)", t))
        if self.bubble_s:
            rows.append(("pipeline bubble", self.bubble_s))
        if self.waiting_for_ranks_s:
            rows.append(("waiting for other ranks", self.waiting_for_ranks_s))
        rows.append(("idle", self.idle_s))
        return rows


def explain_step(timeline: Timeline, step: int, rank: int = 0) -> Breakdown:
    """Break rank ``rank``'s step ``step`` into parts (requires a traced timeline)."""
    log = timeline.log_of(rank)
    if log.spans is None:
        raise ValueError("explain_step needs a timeline recorded with trace=True")
    start, end = log.step_start[step], log.step_end[step]
    out = Breakdown(step_s=end - start)
    colls = _Overlaps(
        [r for r in timeline.rank_collectives(rank) if r.end_s > start and r.start_s < end]
    )
    covered = 0.0
    bubble = timeline.strategy.bubble_waits
    for sp in log.spans:
        if sp.step != step:
            continue
        dur = sp.end_s - sp.start_s
        covered += dur
        if sp.name.startswith("forward"):
            out.forward_s += dur
        elif sp.name.startswith("backward"):
            out.backward_s += dur
        elif sp.name == "optimizer":
            out.optimizer_s += dur
        elif sp.name.startswith("wait:"):
            _split_wait(sp.start_s, sp.end_s, colls, timeline, out, sp.name.startswith(bubble))
        else:
            out.other_compute_s += dur
    out.idle_s = max(out.step_s - covered, 0.0)
    return out


class _Overlaps:
    """One rank's collectives, for the ones in flight during each of its waits in turn: a sweep
    by start time with a heap of the started ones by end time, so a rank's waits cost
    O((waits + collectives) log collectives) and not a scan of every collective per wait (a
    Megatron rank has 10^4-10^5 of each). Queries come in time order (a compute stream's waits);
    one that starts earlier than the one before restarts the sweep."""

    def __init__(self, colls: list[CollectiveRecord]) -> None:
        self.colls = colls
        self.order = sorted(range(len(colls)), key=lambda i: colls[i].start_s)
        self._restart()

    def _restart(self) -> None:
        self.next = 0
        self.heap: list[tuple[float, int]] = []
        self.last_a = -math.inf

    def during(self, a: float, b: float) -> list[CollectiveRecord]:
        """Those with ``end_s > a`` and ``start_s < b``, in their original order."""
        if a < self.last_a:
            self._restart()
        self.last_a = a
        colls, order = self.colls, self.order
        while self.next < len(order) and colls[order[self.next]].start_s < b:
            i = order[self.next]
            heapq.heappush(self.heap, (colls[i].end_s, i))
            self.next += 1
        while self.heap and not self.heap[0][0] > a:  # ended by a: never in flight again
            heapq.heappop(self.heap)
        return [colls[i] for i in sorted(i for _, i in self.heap if colls[i].start_s < b)]


def _split_wait(
    a: float,
    b: float,
    colls: _Overlaps,
    tl: Timeline,
    out: Breakdown,
    pipeline_wait: bool = False,
) -> None:
    active = colls.during(a, b)
    dims = tl.strategy.parallel_dims
    cuts = sorted({a, b, *(t for r in active for t in (r.start_s, r.end_s) if a < t < b)})
    for lo, hi in itertools.pairwise(cuts):
        mid = 0.5 * (lo + hi)
        now = [r for r in active if r.start_s <= mid < r.end_s]
        if not now:
            if pipeline_wait:
                out.bubble_s += hi - lo
            else:
                out.waiting_for_ranks_s += hi - lo
            continue
        share = (hi - lo) / len(now)
        for r in now:
            dim = dims.get(r.key.kind)
            op = f"{dim} {r.op.value}" if dim else r.op.value
            if dim:
                out.exposed_by_parallel[dim] = out.exposed_by_parallel.get(dim, 0.0) + share
            key = (op, tl.bottleneck.get(r.key, ""))
            out.exposed[key] = out.exposed.get(key, 0.0) + share
            lab = r.key.label or f"{r.op.value} ({r.key.kind} {r.key.index})"
            out.exposed_by_collective[lab] = out.exposed_by_collective.get(lab, 0.0) + share
