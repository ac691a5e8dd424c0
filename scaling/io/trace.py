"""Chrome Trace Event JSON (opens in ui.perfetto.dev and chrome://tracing) of one training step.

A process per rank, a track per stream: ``compute`` (kernel groups and waits on communication)
and ``comm`` / ``comm:replicate`` (collectives, with bytes, algorithm and group in ``args``).
Times are microseconds from the start of the traced step.

Flow events (``"ph": "s"`` → ``"ph": "f"``, paired by ``id``) draw the arrows:

* ``waits on`` (category ``wait``): from the end of the collective a rank's wait ended with to
  the end of that wait (the collective of the rank that finished last at or before the wait's
  end, of the op the wait names);
* ``same collective`` (category ``collective``): from each traced rank's slice of one
  collective to the next traced rank's slice of it (rank order; HSDP's sibling lanes apart).

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
from scaling.model.comm.ops import CollectiveOp
from scaling.model.simulation import Timeline

_OPS = frozenset(op.value for op in CollectiveOp)
_TIDS = {"compute": 0, "comm": 1, "comm:replicate": 2}
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
    local = rank % per_node_devices
    return (local - rec.group.local_base) // rec.group.per_node


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


def _wanted(name: str) -> tuple[str, str]:
    """The parallel kind and op a wait's name ``wait:<op>…`` or ``wait:<kind> <op>…`` names:
    ``wait:all_gather:unit3`` → ``("", "all_gather")``, Megatron's ``wait:tp all_reduce`` →
    ``("tp", "all_reduce")``, ``wait:pp recv activation`` → ``("pp", "recv")`` (an op no
    record has: the kind alone then decides)."""
    what = name.removeprefix("wait:")
    kind, sep, rest = what.partition(" ")
    if not sep or kind in _OPS:
        kind, rest = "", what
    return kind, rest.split(":")[0].split(" ")[0]


def _awaited(name: str, start_s: float, end_s: float, colls: _ByEnd) -> Any:
    """The collective a wait span ``[start_s, end_s]`` named ``wait:<op>…`` (Megatron:
    ``wait:<kind> <op>…``) ended with: of those that ended inside it (to rounding), the last;
    of the named parallel kind and op if any did (else of the kind, else any)."""
    inside = colls.ended_in(start_s, end_s)
    kind, op = _wanted(name)
    if kind:
        inside = [r for r in inside if r.key.kind == kind] or inside
    named = [r for r in inside if r.op.value == op] or inside
    return max(named, key=lambda r: (r.end_s, r.issue)) if named else None


def chrome_trace(timeline: Timeline, step: int, ranks: list[int], meta: dict[str, Any]) -> dict:
    """Trace events of ``step`` for ``ranks`` (identical ranks share rank 0's timeline when they
    were simulated once), with flow events linking waits to collectives and the ranks of each
    collective (see the module docstring)."""
    t0, _ = timeline.step_window(step)
    g = timeline.devices_per_node
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
        for stream, tid in _TIDS.items():
            events.append(
                {"ph": "M", "pid": r, "tid": tid, "name": "thread_name", "args": {"name": stream}}
            )
        colls = [rec for rec in timeline.rank_collectives(r) if rec.key.step == step]
        for rec in colls:
            records[id(rec)] = rec
            members[id(rec)][_lane(rec, r, g)].append(r)
        log = timeline.logs[r if timeline.all_ranks else 0]
        by_end = _ByEnd(colls)
        for sp in log.spans or []:
            if sp.step != step:
                continue
            ev: dict[str, Any] = {
                "ph": "X",
                "pid": r,
                "tid": _TIDS["compute"],
                "name": sp.name,
                "cat": "wait" if sp.name.startswith("wait:") else "compute",
                "ts": us(sp.start_s),
                "dur": (sp.end_s - sp.start_s) * 1e6,
                "args": dict(sp.args),
            }
            events.append(ev)
            if ev["cat"] != "wait":
                continue
            rec = _awaited(sp.name, sp.start_s, sp.end_s, by_end)
            if rec is None:  # nothing of this rank's ended in it: it waited for other ranks
                continue
            ev["args"]["waits_on"] = rec.key.label or f"{rec.op.value} {rec.key.kind}"
            flow(
                "wait",
                "waits on",
                (r, _TIDS[rec.key.stream], inside(us(rec.start_s), us(rec.end_s), True)),
                (r, _TIDS["compute"], inside(ev["ts"], ev["ts"] + ev["dur"], True)),
            )
        for rec in colls:
            events.append(
                {
                    "ph": "X",
                    "pid": r,
                    "tid": _TIDS[rec.key.stream],
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
        tid = _TIDS[rec.key.stream]
        ts = inside(us(rec.start_s), us(rec.end_s), False)
        for lane_ranks in lanes.values():
            for src, dst in itertools.pairwise(lane_ranks):
                flow("collective", "same collective", (src, tid, ts), (dst, tid, ts))
    doc = {"traceEvents": events + flows, "displayTimeUnit": "ms", "otherData": meta}
    return finite(doc)
