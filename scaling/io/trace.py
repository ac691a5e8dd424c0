"""Chrome Trace Event JSON (opens in ui.perfetto.dev and chrome://tracing) of one training step.

A process per rank, a track per stream: ``compute`` (kernel groups and waits on communication)
and ``comm`` / ``comm:replicate`` (collectives, with bytes, algorithm and group in ``args``).
Times are microseconds from the start of the traced step.
"""

from __future__ import annotations

from typing import Any

from scaling.model.simulation import Timeline

_TIDS = {"compute": 0, "comm": 1, "comm:replicate": 2}


def chrome_trace(timeline: Timeline, step: int, ranks: list[int], meta: dict[str, Any]) -> dict:
    """Trace events of ``step`` for ``ranks`` (identical ranks share rank 0's timeline when they
    were simulated once)."""
    t0, _ = timeline.step_window(step)
    g = timeline.devices_per_node
    events: list[dict[str, Any]] = []
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
        log = timeline.logs[r if timeline.all_ranks else 0]
        for sp in log.spans or []:
            if sp.step != step:
                continue
            events.append(
                {
                    "ph": "X",
                    "pid": r,
                    "tid": _TIDS["compute"],
                    "name": sp.name,
                    "cat": "wait" if sp.name.startswith("wait:") else "compute",
                    "ts": (sp.start_s - t0) * 1e6,
                    "dur": (sp.end_s - sp.start_s) * 1e6,
                    "args": dict(sp.args),
                }
            )
        for rec in timeline.rank_collectives(r):
            if rec.key.step != step:
                continue
            stream = rec.key.stream
            events.append(
                {
                    "ph": "X",
                    "pid": r,
                    "tid": _TIDS[stream],
                    "name": rec.op.value,
                    "cat": "collective",
                    "ts": (rec.start_s - t0) * 1e6,
                    "dur": (rec.end_s - rec.start_s) * 1e6,
                    "args": {
                        "bytes": rec.nbytes,
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
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}
