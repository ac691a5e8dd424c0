"""Kineto / ``torch.profiler`` traces (Chrome trace JSON from ``export_chrome_trace``).

Two kinds of events carry collectives. With NCCL, ``record_param_comms`` events give the
collective's name, element counts, dtype and process group ranks
(torch/csrc/distributed/c10d/ParamCommsUtils.hpp). With gloo on CPU there are none; the
``c10d::<op>`` dispatcher events on the issuing thread give the op and its tensors' dims in issue
order (``record_shapes=True`` is needed), the ``gloo:<op>`` events on gloo's worker threads the
dtype, matched in order. The trace's ``distributedInfo`` gives rank, world size and the groups.
What it cannot give: iterations, phases, micro-batches, DDP buckets, FSDP units, parameter
names; with gloo, the group of a call when the job has several process groups; anything before
the profiler started or after it stopped (profile the whole run, wrapper construction included).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from scaling.io.recordings.base import WHOLE, RecordedCall, Recording, RecordingError

#: scalar type names as the profiler writes them -> torch's
_DTYPES = {
    "float": "float32",
    "Float": "float32",
    "double": "float64",
    "Double": "float64",
    "c10::BFloat16": "bfloat16",
    "BFloat16": "bfloat16",
    "c10::Half": "float16",
    "Half": "float16",
    "long int": "int64",
    "long": "int64",
    "Long": "int64",
    "int": "int32",
    "Int": "int32",
}
_ITEMSIZE = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2, "int64": 8, "int32": 4}
#: c10d dispatcher op -> (the recording's op, index of the counted argument, scale by group)
_C10D = {
    "allreduce_": ("all_reduce", 0),
    "allreduce_coalesced_": ("all_reduce", 0),
    "allgather_": ("all_gather", 0),
    "_allgather_base_": ("all_gather", 0),
    "allgather_into_tensor_coalesced_": ("all_gather", 0),
    "reduce_scatter_": ("reduce_scatter", 1),
    "_reduce_scatter_base_": ("reduce_scatter", 1),
    "reduce_scatter_tensor_coalesced_": ("reduce_scatter", 1),
    "broadcast_": ("broadcast", 0),
    "barrier": ("barrier", -1),
    "alltoall_base_": ("all_to_all", 1),
}
#: record_param_comms "Collective name" -> the recording's op
_COMMS = {
    "allreduce": "all_reduce",
    "allreduce_coalesced": "all_reduce",
    "allgather": "all_gather",
    "_allgather_base": "all_gather",
    "allgather_into_tensor_coalesced": "all_gather",
    "reduce_scatter": "reduce_scatter",
    "_reduce_scatter_base": "reduce_scatter",
    "reduce_scatter_tensor_coalesced": "reduce_scatter",
    "broadcast": "broadcast",
    "barrier": "barrier",
    "all_to_all": "all_to_all",
    "alltoall_base": "all_to_all",
}
CANNOT = (
    "iterations",
    "phase",
    "micro-batch",
    "DDP buckets",
    "FSDP units",
    "parameter names",
    "calls outside the profiled span",
)


class KinetoImporter:
    """Reads one rank's exported profiler trace."""

    name = "kineto"

    def recognises(self, path: Path, head: str) -> bool:
        """A Chrome trace with the profiler's ``schemaVersion`` / ``traceEvents``."""
        return '"traceEvents"' in head and (
            '"schemaVersion"' in head or '"distributedInfo"' in head
        )

    def load(self, path: Path) -> Recording:
        """Read the trace; refuse one without distributed information or collectives."""
        try:
            doc = json.loads(path.read_text(errors="replace"))
        except json.JSONDecodeError as e:
            raise RecordingError(f"{path}:{e.lineno}: not JSON (cut short?): {e.msg}") from None
        info = doc.get("distributedInfo")
        if not isinstance(info, dict) or "rank" not in info:
            raise RecordingError(
                f"{path}: no distributedInfo: not a trace of a torch.distributed job"
            )
        events = [e for e in doc.get("traceEvents", []) if e.get("ph") == "X"]
        groups = [tuple(g.get("ranks", ())) for g in info.get("pg_config", [])]
        only = groups[0] if len(groups) == 1 else ()
        comms = [e for e in events if e.get("name") == "record_param_comms"]
        world = int(info.get("world_size", 1))
        calls = _from_comms(comms) if comms else _from_dispatcher(path, events, only, world)
        if not calls:
            raise RecordingError(
                f"{path}: no collectives in the trace (profile with record_shapes=True around "
                "the whole run)"
            )
        checked = ("op", "bytes", "dtype", "group") if comms or only else ("op", "bytes", "dtype")
        calls, after, cannot = _with_kernel_times(events, calls)
        props = doc.get("deviceProperties") or [{}]
        return Recording(
            path,
            self.name,
            int(info["rank"]),
            int(info.get("world_size", 1)),
            (),
            {WHOLE: calls},
            cannot,
            checked,
            {WHOLE: after} if after is not None else {},
            str(props[0].get("name", "")) if isinstance(props[0], dict) else "",
        )


def _with_kernel_times(
    events: list[dict[str, Any]], calls: list[RecordedCall]
) -> tuple[list[RecordedCall], float | None, tuple[str, ...]]:
    """The calls with the device time of the compute kernels before each (GPU traces: the
    ``kernel`` events, NCCL's own — ``nccl*`` — marking where each call ran on the device, in
    issue order), and the compute after the last; unchanged, with what is missing said, when
    the trace has no device kernels or its NCCL kernels do not pair one to one with its calls."""
    kernels = sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    comm = [e for e in kernels if str(e.get("name", "")).startswith("nccl")]
    if not kernels:
        return calls, None, (*CANNOT, "compute times (no device kernels in the trace)")
    if len(comm) != len(calls):
        why = f"{len(comm)} NCCL kernels for {len(calls)} calls"
        return calls, None, (*CANNOT, f"compute times ({why})")
    sums = [0.0] * (len(calls) + 1)
    starts = [float(e["ts"]) for e in comm]
    k = 0
    for e in kernels:
        if str(e.get("name", "")).startswith("nccl"):
            continue
        while k < len(starts) and float(e["ts"]) >= starts[k]:
            k += 1
        sums[k] += float(e.get("dur", 0.0)) * 1e-6  # the trace's µs
    out = [replace(c, compute_before_s=t) for c, t in zip(calls, sums, strict=False)]
    return out, sums[-1], CANNOT


def _numel(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _from_comms(events: list[dict[str, Any]]) -> list[RecordedCall]:
    out = []
    for e in sorted(events, key=lambda e: e["ts"]):
        a = e.get("args", {})
        op = _COMMS.get(str(a.get("Collective name", "")))
        if op is None:
            continue
        dtype = _DTYPES.get(str(a.get("dtype", "")), str(a.get("dtype", "")) or None)
        side = "Out msg nelems" if op == "all_gather" else "In msg nelems"
        nbytes = int(a.get(side, 0)) * _ITEMSIZE.get(dtype or "", 0)
        ranks = a.get("Process Group Ranks", "[]")
        group = tuple(json.loads(ranks) if isinstance(ranks, str) else ranks)
        out.append(RecordedCall(op, nbytes, dtype, group, ""))
    return out


def _outermost(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop an event nested in another of the same name on the same thread (an op recorded
    again by its own re-dispatch)."""
    out: list[dict[str, Any]] = []
    open_until: dict[tuple[Any, str], float] = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        key = (e.get("tid"), e["name"])
        if e["ts"] < open_until.get(key, -1.0):
            continue
        open_until[key] = e["ts"] + e.get("dur", 0)
        out.append(e)
    return out


def _from_dispatcher(
    path: Path, events: list[dict[str, Any]], group: tuple[int, ...], world: int
) -> list[RecordedCall]:
    def named(prefix: str) -> list[dict[str, Any]]:
        return _outermost([e for e in events if str(e.get("name", "")).startswith(prefix)])

    issued = [e for e in named("c10d::") if e["name"].removeprefix("c10d::") in _C10D]
    ran = named("gloo:")
    out = []
    for k, e in enumerate(issued):
        op, arg = _C10D[e["name"].removeprefix("c10d::")]
        dims = e.get("args", {}).get("Input Dims")
        if dims is None:
            raise RecordingError(
                f"{path}: {e['name']} without Input Dims: profile with record_shapes=True"
            )
        dtype = None
        if k < len(ran):
            types = ran[k].get("args", {}).get("Input type") or [""]
            dtype = _DTYPES.get(str(types[0]))
        numel = _tensor_numel(dims[arg]) if arg >= 0 else 0
        if op == "all_gather" and numel == 0 and len(dims) > 1:
            # a list of output lists is not recorded: the input times the group size
            numel = _tensor_numel(dims[1]) * (len(group) or world)
        out.append(RecordedCall(op, numel * _ITEMSIZE.get(dtype or "", 0), dtype, group, ""))
    return out


def _tensor_numel(dims: Any) -> int:
    """Elements of a recorded tensor, tensor list, or list of tensor lists (the first)."""
    if not dims:
        return 0
    if isinstance(dims[0], list) and dims[0] and isinstance(dims[0][0], list):
        dims = dims[0]
    if isinstance(dims[0], list):
        return sum(_numel(t) for t in dims)
    return _numel(dims)
