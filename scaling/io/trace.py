"""Chrome Trace Event JSON (opens in ui.perfetto.dev and chrome://tracing) of one training step.

A process per rank, a track per stream: ``compute`` (kernel groups and waits on communication)
and the strategy's communication streams (``Strategy.trace_streams``: ``comm`` /
``comm:replicate``; collectives, with bytes, algorithm and group in ``args``).
Times are microseconds from the start of the traced step.

Flow events (``"ph": "s"`` → ``"ph": "f"``, paired by ``id``) draw the arrows:

* ``waits on`` (category ``wait``): from the end of the collective a rank's wait ended with to
  the end of that wait (the collective of the rank that finished last at or before the wait's
  end, of the op the wait names);
* ``same collective`` (category ``collective``): from each traced rank's slice of one
  collective to the next traced rank's slice of it (rank order; HSDP's sibling lanes apart).

Counter events (``"ph": "C"``) on a process of their own, ``network``: the aggregate rate
(GB/s) of each of the step's busiest links (flow network, :mod:`scaling.model.comm.linkload`),
one track per link, a sample at each change of its rate; ``otherData.busiest_links`` lists
their bytes, busy time and utilisation over the step.

The document holds only finite numbers (non-finite ones become ``null``), so it serialises
with ``json.dump(..., allow_nan=False)``; ``bytes`` are integers.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from typing import Any

from scaling.model.comm.collectives import CollectiveRecord
from scaling.model.simulation import Timeline

#: how far inside a slice (µs) a flow event sits, so the viewer binds it to that slice
_INSIDE_US = 1e-3


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively
    through dicts, lists and tuples: what strict JSON (``allow_nan=False``) can hold."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def _lane(rec: CollectiveRecord, rank: int, per_node_devices: int) -> int:
    """Which of a record's sibling communicators (HSDP lanes) ``rank`` belongs to."""
    return rec.group.lane_of(rank, per_node_devices)


class _ByEnd:
    """One rank's collectives of a step sorted by end time, for :func:`_awaited` to find those
    that ended inside a wait by bisection (a Megatron rank has 10^4-10^5 waits and collectives;
    a scan per wait is quadratic)."""

    def __init__(self, colls: list[CollectiveRecord]) -> None:
        self.recs = sorted(colls, key=lambda r: r.end_s)
        self.ends = [r.end_s for r in self.recs]

    def ended_in(self, start_s: float, end_s: float) -> list[CollectiveRecord]:
        """Those that ended in ``[start_s, end_s]`` (to rounding), by end time."""
        eps = 1e-12 * max(1.0, abs(end_s))
        lo = bisect.bisect_left(self.ends, start_s - eps)
        hi = bisect.bisect_right(self.ends, end_s + eps)
        return self.recs[lo:hi]


def _awaited(
    wanted: tuple[str, str], start_s: float, end_s: float, colls: _ByEnd
) -> CollectiveRecord | None:
    """The collective a wait span ``[start_s, end_s]`` waiting for ``wanted`` (the kind and op
    its strategy reads in the wait's name: ``Strategy.wait_target``) ended with: of those that
    ended inside it (to rounding), the last; of the named kind and op if any did (else of the
    kind, else any)."""
    inside = colls.ended_in(start_s, end_s)
    kind, op = wanted
    if kind:
        inside = [r for r in inside if r.key.kind == kind] or inside
    named = [r for r in inside if r.op.value == op] or inside
    return max(named, key=lambda r: (r.end_s, r.issue)) if named else None


def _link_counters(
    timeline: Timeline, t0: float, t1: float, n: int, pid: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Counter events of the ``n`` busiest links over ``[t0, t1]`` on process ``pid``, and
    their summary (for ``otherData``); nothing without the run's link load."""
    load = timeline.links
    if load is None or n <= 0:
        return [], []
    top = load.busiest(t0, t1, n)
    if not top:
        return [], []
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": pid, "name": "process_name", "args": {"name": "network"}},
        {"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": pid}},
    ]
    times, rates = load.rates([u.link for u in top], t0, t1)
    for k, u in enumerate(top):
        name = f"{u.cls} ({u.place}) GB/s"
        events += [
            {"ph": "C", "pid": pid, "name": name, "ts": (t - t0) * 1e6, "args": {"GB/s": r / 1e9}}
            for t, r in zip(times.tolist(), rates[:, k].tolist(), strict=True)
        ]
    summary = [
        {
            "link_class": u.cls,
            "where": u.place,
            "bytes": round(u.bytes),
            "busy_s": u.busy_s,
            "capacity_GBps": u.capacity_Bps / 1e9,
            "utilisation": u.utilisation,
        }
        for u in top
    ]
    return events, summary


def chrome_trace(
    timeline: Timeline, step: int, ranks: list[int], meta: dict[str, Any], links: int = 8
) -> dict:
    """Trace events of ``step`` for ``ranks`` (identical ranks share rank 0's timeline when they
    were simulated once), with flow events linking waits to collectives and the ranks of each
    collective, and counters of the ``links`` busiest links when the timeline has the run's
    link load (see the module docstring)."""
    t0, t1 = timeline.step_window(step)
    g = timeline.devices_per_node
    strategy = timeline.strategy
    tids = {"compute": 0} | {name: i + 1 for i, name in enumerate(strategy.trace_streams)}
    events: list[dict[str, Any]] = []
    flows: list[dict[str, Any]] = []
    next_id = 0

    def us(t: float) -> float:
        return (t - t0) * 1e6

    def flow(cat: str, name: str, src: tuple[int, int, float], dst: tuple[int, int, float]) -> None:
        nonlocal next_id
        next_id += 1
        for ph, (pid, tid, ts) in (("s", src), ("f", dst)):
            ev = {"ph": ph, "id": next_id, "cat": cat, "name": name, "pid": pid, "tid": tid}
            flows.append(ev | {"ts": ts} | ({"bp": "e"} if ph == "f" else {}))

    def inside(start_us: float, end_us: float, at_end: bool) -> float:
        """A time inside the slice ``[start_us, end_us]``: just after its start or before its
        end."""
        d = min(_INSIDE_US, 0.5 * (end_us - start_us))
        return end_us - d if at_end else start_us + d

    # every collective of the step → the traced ranks in it, by lane
    members: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    records: dict[int, CollectiveRecord] = {}
    for r in ranks:
        node, local = divmod(r, g)
        events.append(
            {
                "ph": "M",
                "pid": r,
                "name": "process_name",
                "args": {"name": f"rank {r} (node {node}, local {local})"},
            }
        )
        events.append(
            {"ph": "M", "pid": r, "name": "process_sort_index", "args": {"sort_index": r}}
        )
        for stream, tid in tids.items():
            events.append(
                {"ph": "M", "pid": r, "tid": tid, "name": "thread_name", "args": {"name": stream}}
            )
        colls = [rec for rec in timeline.rank_collectives(r) if rec.key.step == step]
        for rec in colls:
            records[id(rec)] = rec
            members[id(rec)][_lane(rec, r, g)].append(r)
        log = timeline.log_of(r)
        by_end = _ByEnd(colls)
        for sp in log.spans or []:
            if sp.step != step:
                continue
            ev: dict[str, Any] = {
                "ph": "X",
                "pid": r,
                "tid": tids["compute"],
                "name": sp.name,
                "cat": "wait" if sp.name.startswith("wait:") else "compute",
                "ts": us(sp.start_s),
                "dur": (sp.end_s - sp.start_s) * 1e6,
                "args": dict(sp.args),
            }
            events.append(ev)
            if ev["cat"] != "wait":
                continue
            got = _awaited(strategy.wait_target(sp.name), sp.start_s, sp.end_s, by_end)
            if got is None:  # nothing of this rank's ended in it: it waited for other ranks
                continue
            ev["args"]["waits_on"] = got.key.label or f"{got.op.value} {got.key.kind}"
            flow(
                "wait",
                "waits on",
                (r, tids[got.key.stream], inside(us(got.start_s), us(got.end_s), True)),
                (r, tids["compute"], inside(ev["ts"], ev["ts"] + ev["dur"], True)),
            )
        for rec in colls:
            events.append(
                {
                    "ph": "X",
                    "pid": r,
                    "tid": tids[rec.key.stream],
                    "name": rec.op.value,
                    "cat": "collective",
                    "ts": us(rec.start_s),
                    "dur": (rec.end_s - rec.start_s) * 1e6,
                    "args": {
                        "bytes": round(rec.nbytes),
                        "algorithm": rec.algorithm,
                        "group": f"{rec.group.nodes} node(s) x {rec.group.per_node}"
                        + (f" x {rec.group.lanes} lanes" if rec.group.lanes > 1 else ""),
                        "group_size": rec.group.size,
                        "bottleneck": timeline.bottleneck.get(rec.key, ""),
                        "collective": rec.key.label,
                        "phase": rec.key.phase,
                        "micro_batch": rec.key.micro,
                    },
                }
            )
    for key, lanes in members.items():
        rec = records[key]
        tid = tids[rec.key.stream]
        ts = inside(us(rec.start_s), us(rec.end_s), False)
        for lane_ranks in lanes.values():
            for src, dst in itertools.pairwise(lane_ranks):
                flow("collective", "same collective", (src, tid, ts), (dst, tid, ts))
    # the network's process id: one past the last rank, so it is nobody's
    counters, busiest = _link_counters(timeline, t0, t1, links, len(timeline.log_index))
    if busiest:
        meta = meta | {"busiest_links": busiest}
    doc = {"traceEvents": events + flows + counters, "displayTimeUnit": "ms", "otherData": meta}
    return finite(doc)
