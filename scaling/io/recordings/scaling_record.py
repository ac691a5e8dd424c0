"""``scaling.record``'s JSON-lines files (format ``scaling-record``, version 1; docs/guides/recording.md).

The format carries everything the comparison checks: op, bytes, dtype, group ranks, phase,
micro-batch, DDP bucket and FSDP unit with the user's parameter names. It cannot recover the
communication stream (gloo has none; on NCCL all collectives of a group share one) nor times.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scaling.io.recordings.base import SETUP, RecordedCall, Recording, RecordingError

FORMAT = "scaling-record"
VERSION = 1
_NEEDED = ("step", "op", "bytes", "group", "phase")


class ScalingRecordImporter:
    """Reads one rank's ``rank<R>.jsonl`` written by :mod:`scaling.record`."""

    name = "scaling-record"

    def recognises(self, path: Path, head: str) -> bool:
        """A first line that is a JSON object with ``"format": "scaling-record"``."""
        return f'"format": "{FORMAT}"' in head.split("\n", 1)[0]

    def load(self, path: Path) -> Recording:
        """Read and check the file: header first, collectives, one ``step`` record per
        iteration, ``end`` last (a file without it was cut short)."""
        lines = path.read_text(errors="replace").splitlines()
        recs: list[tuple[int, dict[str, Any]]] = []
        for no, line in enumerate(lines, 1):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                last = no == len(lines)
                why = "cut short (the run stopped while writing)" if last else "not JSON"
                raise RecordingError(f"{path}:{no}: {why}") from None
            if not isinstance(r, dict) or "record" not in r:
                raise RecordingError(f"{path}:{no}: expected a JSON object with a 'record' key")
            recs.append((no, r))
        header = recs[0][1] if recs else {}
        if header.get("record") != "header" or header.get("format") != FORMAT:
            raise RecordingError(f"{path}:1: expected the scaling-record header line")
        if header.get("version") != VERSION:
            raise RecordingError(
                f"{path}:1: version: expected {VERSION}, got {header.get('version')!r}"
            )
        if recs[-1][1]["record"] != "end":
            raise RecordingError(
                f"{path}:{len(lines)}: truncated: no 'end' record (the job stopped before "
                "scaling.record could close the file)"
            )
        steps: dict[int | str, list[RecordedCall]] = {}
        counted: dict[int | str, int] = {}
        for no, r in recs[1:-1]:
            kind = r["record"]
            if kind == "step":
                counted[r["step"]] = r.get("collectives", -1)
                continue
            if kind != "collective":
                raise RecordingError(f"{path}:{no}: record: unknown kind {kind!r}")
            missing = [k for k in _NEEDED if k not in r]
            if missing:
                raise RecordingError(f"{path}:{no}: collective without {', '.join(missing)}")
            step = SETUP if r["step"] == "setup" else int(r["step"])
            steps.setdefault(step, []).append(_call(r))
        for step, n in counted.items():
            if len(steps.get(step, [])) != n:
                raise RecordingError(
                    f"{path}: step {step}: the step record counts {n} collectives, "
                    f"the file holds {len(steps.get(step, []))}"
                )
        if not counted:
            raise RecordingError(f"{path}: no complete iteration recorded")
        params = tuple((str(n), int(k)) for n, k in header.get("params", []))
        return Recording(
            path,
            self.name,
            int(header["rank"]),
            int(header["world_size"]),
            params,
            {SETUP: steps.pop(SETUP, []), **dict(sorted(steps.items()))},
            ("stream", "times"),
        )


def _call(r: dict[str, Any]) -> RecordedCall:
    return RecordedCall(
        op=str(r["op"]),
        nbytes=int(r["bytes"]),
        dtype=r.get("dtype"),
        group=tuple(int(x) for x in r["group"]),
        phase=str(r["phase"]),
        micro=int(r.get("micro", 0)),
        bucket=r.get("bucket"),
        unit=r.get("unit"),
        params=tuple(r.get("params", ())),
    )
