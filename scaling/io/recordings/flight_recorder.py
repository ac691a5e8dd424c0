"""PyTorch Flight Recorder dumps in JSON (``torch._C._distributed_c10d._dump_fr_trace_json``).

Flight Recorder keeps, per rank, a ring buffer of the last ``TORCH_FR_BUFFER_SIZE`` collectives
(NCCL, and gloo on CPU), each with its process group, op (``profiling_name``: ``nccl:all_reduce``
/ ``gloo:all_gather``), input and output sizes and dtypes (format ``version`` 2.x; fields as
in torch/csrc/distributed/c10d/FlightRecorder.hpp). What it cannot give: iteration boundaries,
phases, micro-batches, DDP buckets, FSDP units and parameter names; calls older than the ring
buffer (``record_id`` of the first entry > 0); the rank, unless the file name carries it
(``..._rank_<R>`` or ``rank<R>``). The comparison then checks op, bytes, dtype and group ranks
of the whole recorded sequence against the simulated iterations laid end to end. Pickled dumps
(the default of ``TORCH_FR_DUMP_TEMP_FILE``) are not read: unpickling runs code from the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from scaling.io.recordings.base import WHOLE, RecordedCall, Recording, RecordingError

#: Flight Recorder's dtype names (c10::ScalarType) -> torch's
_DTYPES = {
    "Float": "float32",
    "BFloat16": "bfloat16",
    "Half": "float16",
    "Double": "float64",
    "Long": "int64",
    "Int": "int32",
    "Byte": "uint8",
    "Char": "int8",
    "Bool": "bool",
}
_ITEMSIZE = {
    "float32": 4,
    "bfloat16": 2,
    "float16": 2,
    "float64": 8,
    "int64": 8,
    "int32": 4,
    "uint8": 1,
    "int8": 1,
    "bool": 1,
}
#: the op's name after the backend prefix -> the recording's (sizes as in ``scaling schedule``)
_OPS = {
    "all_reduce": ("all_reduce", "in"),
    "allreduce": ("all_reduce", "in"),
    "all_reduce_coalesced": ("all_reduce", "in"),
    "all_gather": ("all_gather", "out"),
    "_allgather_base": ("all_gather", "out"),
    "all_gather_into_tensor_coalesced": ("all_gather", "out"),
    "reduce_scatter": ("reduce_scatter", "in"),
    "_reduce_scatter_base": ("reduce_scatter", "in"),
    "reduce_scatter_tensor_coalesced": ("reduce_scatter", "in"),
    "broadcast": ("broadcast", "in"),
    "barrier": ("barrier", "none"),
    "all_to_all": ("all_to_all", "in"),
    "alltoall_base": ("all_to_all", "in"),
    "send": ("send", "in"),
    "recv": ("recv", "in"),
}
CANNOT = (
    "iterations",
    "phase",
    "micro-batch",
    "DDP buckets",
    "FSDP units",
    "parameter names",
    "calls before the ring buffer",
)


class FlightRecorderImporter:
    """Reads one rank's Flight Recorder JSON dump."""

    name = "flight-recorder"

    def recognises(self, path: Path, head: str) -> bool:
        """A JSON object with Flight Recorder's ``entries`` (of ``collective_seq_id`` records)."""
        ours = '"pg_config"' in head or '"collective_seq_id"' in head
        return head.lstrip().startswith("{") and '"entries"' in head and ours

    def load(self, path: Path) -> Recording:
        """Read the dump; the rank comes from the file name (default 0)."""
        try:
            doc = json.loads(path.read_text(errors="replace"))
        except json.JSONDecodeError as e:
            raise RecordingError(f"{path}:{e.lineno}: not JSON (cut short?): {e.msg}") from None
        entries = doc.get("entries")
        if not isinstance(entries, list) or not isinstance(doc.get("pg_config"), dict):
            raise RecordingError(f"{path}: expected Flight Recorder's 'entries' and 'pg_config'")
        groups = _groups(doc["pg_config"])
        if not entries:
            raise RecordingError(f"{path}: no collectives recorded (TORCH_FR_BUFFER_SIZE = 0?)")
        if entries[0].get("record_id", 0) != 0:
            raise RecordingError(
                f"{path}: the ring buffer overflowed ({entries[0]['record_id']} calls lost "
                "before the first entry): raise TORCH_FR_BUFFER_SIZE"
            )
        calls = [_call(path, i, e, groups) for i, e in enumerate(entries)]
        world = max((len(g) for g in groups.values()), default=1)
        m = re.search(r"rank_?(\d+)", path.name)
        return Recording(
            path,
            self.name,
            int(m.group(1)) if m else 0,
            world,
            (),
            {WHOLE: calls},
            CANNOT,
            ("op", "bytes", "dtype", "group"),
        )


def _groups(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    out = {}
    for name, g in cfg.items():
        ranks = g.get("ranks", "[]")
        out[str(name)] = tuple(json.loads(ranks) if isinstance(ranks, str) else ranks)
    return out


def _call(
    path: Path, i: int, e: dict[str, Any], groups: dict[str, tuple[int, ...]]
) -> RecordedCall:
    prof = str(e.get("profiling_name", ""))
    op_name = prof.split(":", 1)[-1]
    if op_name not in _OPS:
        raise RecordingError(f"{path}: entry {i}: unknown collective {prof!r}")
    op, side = _OPS[op_name]
    sizes = e.get("input_sizes" if side != "out" else "output_sizes") or []
    dtypes = e.get("input_dtypes" if side != "out" else "output_dtypes") or []
    dtype = _DTYPES.get(dtypes[0]) if dtypes else None
    nbytes = 0
    if side != "none":
        for shape, dt in zip(sizes, dtypes, strict=False):
            n = 1
            for d in shape:
                n *= int(d)
            nbytes += n * _ITEMSIZE.get(_DTYPES.get(dt, ""), 0)
    pg = e.get("process_group") or ["", ""]
    group = groups.get(str(pg[0]))
    if group is None and len(groups) == 1:
        group = next(iter(groups.values()))  # some versions key pg_config by another name
    return RecordedCall(op, nbytes, dtype, group or (), "")
