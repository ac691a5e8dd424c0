"""``NCCL_DEBUG=INFO`` logs (with ``NCCL_DEBUG_SUBSYS=COLL``, or ``INIT,COLL``).

NCCL writes one INFO line per collective call when it is enqueued (NVIDIA/nccl
src/enqueue.cc, ``ncclEnqueueCheck``: ``INFO(NCCL_COLL, "%s: opCount %lx sendbuff %p recvbuff
%p count %zu datatype %d op %d root %d comm %p [nranks=%d] stream %p", ...)``; NCCL 2.4-2.7
printed the same fields from collectives.cc), prefixed by ``host:pid:tid [cudaDev] NCCL INFO``.
Every communicator's init line (src/init.cc: ``comm %p rank %d nranks %d cudaDev %d ...
Init COMPLETE``; newer releases also ``comm %p rank %d nRanks %d nNodes ...``) names the
caller's rank in it. ``count`` is the API's element count: the buffer of an all-reduce or a
broadcast, one rank's part of an all-gather (send count) or a reduce-scatter (receive count);
the datatype is ``ncclDataType_t`` (src/nccl.h.in).

The recorded rank is the process (``host:pid`` and device) holding rank 0 of the largest
communicator (the job's world), or, without init lines, the first communicator in the log taken
as rank 0 (said in ``cannot_recover``). A call on the world communicator has every rank as its
group; a call on a smaller communicator has only its size (the log does not list its members),
so its group is left unknown and the comparison does not check groups. What the log cannot
give: iterations, phases, micro-batches, DDP buckets, FSDP units, parameter names (none reach
NCCL), a barrier (PyTorch's is an all-reduce of one element), the members of sub-communicators,
and calls whose line was not printed (``NCCL_DEBUG_SUBSYS`` without ``COLL``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from scaling.io.recordings.base import WHOLE, RecordedCall, Recording, RecordingError

#: ``ncclDataType_t`` (NVIDIA/nccl src/nccl.h.in) -> (torch dtype name, bytes)
_DTYPES = {
    0: ("int8", 1),
    1: ("uint8", 1),
    2: ("int32", 4),
    3: ("uint32", 4),
    4: ("int64", 8),
    5: ("uint64", 8),
    6: ("float16", 2),
    7: ("float32", 4),
    8: ("float64", 8),
    9: ("bfloat16", 2),
    10: ("float8_e4m3fn", 1),
    11: ("float8_e5m2", 1),
}
#: NCCL's op name -> (the recording's op, count is one rank's part: scale by the group)
_OPS = {
    "AllReduce": ("all_reduce", False),
    "Broadcast": ("broadcast", False),
    "Reduce": ("reduce", False),
    "AllGather": ("all_gather", True),
    "ReduceScatter": ("reduce_scatter", True),
    "Send": ("send", False),
    "Recv": ("recv", False),
}
_PREFIX = r"(?:(?P<who>[^\s:]+:\d+):\d+ \[(?P<dev>\d+)\] )?NCCL INFO "
_CALL = re.compile(
    _PREFIX + r"(?P<op>\w+): opCount (?P<seq>[0-9a-fA-F]+) sendbuff \S+ recvbuff \S+ "
    r"count (?P<count>\d+) datatype (?P<dtype>\d+) op \d+ root \d+ comm (?P<comm>0x[0-9a-fA-F]+|"
    r"\(nil\)) \[nranks=(?P<nranks>\d+)\]"
)
_INIT = re.compile(
    _PREFIX + r"(?:\S+ )?comm (?P<comm>0x[0-9a-fA-F]+) rank (?P<rank>\d+) n[Rr]anks (?P<n>\d+)"
)
CANNOT = (
    "iterations",
    "phase",
    "micro-batch",
    "DDP buckets",
    "FSDP units",
    "parameter names",
    "barrier (an all-reduce of one element)",
    "members of sub-communicators (only their size)",
)


@dataclass(frozen=True, slots=True)
class _Call:
    line: int
    who: tuple[str, str]
    op: str
    count: int
    dtype: int
    comm: str
    nranks: int


class NcclLogImporter:
    """Reads the collectives of one rank from an ``NCCL_DEBUG=INFO`` log (one or many ranks'
    lines, interleaved as launchers write them)."""

    name = "nccl-debug-log"

    def recognises(self, path: Path, head: str) -> bool:
        """A text log with NCCL's ``NCCL INFO`` lines in its first characters, or any ``.log``
        file (NCCL's lines may come after the training script's own output)."""
        text = "NCCL INFO" in head or path.suffix == ".log"
        return text and not head.lstrip().startswith("{")

    def load(self, path: Path) -> Recording:
        """Read the log; refuse one without collective lines (``NCCL_DEBUG_SUBSYS`` lacks
        ``COLL``) or with an unknown op or datatype."""
        calls: list[_Call] = []
        ranks: dict[str, tuple[int, int]] = {}  # comm -> (rank in it, its size)
        owner: dict[str, tuple[str, str]] = {}  # comm -> (host:pid, device)
        with path.open(errors="replace") as f:
            for no, line in enumerate(f, 1):
                if "NCCL INFO" not in line:
                    continue
                if m := _CALL.search(line):
                    op = m["op"]
                    if op not in _OPS:
                        raise RecordingError(f"{path}:{no}: unknown NCCL collective {op!r}")
                    if int(m["dtype"]) not in _DTYPES:
                        raise RecordingError(
                            f"{path}:{no}: datatype {m['dtype']}: expected an ncclDataType_t 0-11"
                        )
                    who = (m["who"] or "", m["dev"] or "")
                    calls.append(
                        _Call(
                            no,
                            who,
                            op,
                            int(m["count"]),
                            int(m["dtype"]),
                            m["comm"],
                            int(m["nranks"]),
                        )
                    )
                elif m := _INIT.search(line):
                    ranks[m["comm"]] = (int(m["rank"]), int(m["n"]))
                    owner[m["comm"]] = (m["who"] or "", m["dev"] or "")
        if not calls:
            raise RecordingError(
                f"{path}: no collective lines (run with NCCL_DEBUG=INFO and "
                "NCCL_DEBUG_SUBSYS=COLL, or INIT,COLL)"
            )
        world = max([c.nranks for c in calls] + [n for _, n in ranks.values()])
        cannot: tuple[str, ...] = CANNOT
        world_comms = [c for c, (_, n) in ranks.items() if n == world]
        mine = next((c for c in world_comms if ranks[c][0] == 0), None) or next(
            iter(world_comms), None
        )
        if mine is not None:
            rank, who = ranks[mine][0], owner[mine]
        else:
            mine = max(calls, key=lambda c: c.nranks).comm
            rank, who = 0, next(c.who for c in calls if c.comm == mine)
            cannot = (*CANNOT, "the rank (no init line for its communicator: taken as rank 0)")
        if not who[0]:
            # no host:pid prefix to tell the processes apart: the calls on that communicator
            calls = [c for c in calls if c.comm == mine]
        out = [_recorded(c, world) for c in calls if c.who == who]
        checked = ("op", "bytes", "dtype", "group")
        return Recording(
            path,
            self.name,
            rank,
            world,
            (),
            {WHOLE: out},
            cannot,
            checked[:3] if any(not r.group for r in out) else checked,
        )


def _recorded(c: _Call, world: int) -> RecordedCall:
    op, per_rank = _OPS[c.op]
    dtype, size = _DTYPES[c.dtype]
    nbytes = c.count * size * (c.nranks if per_rank else 1)
    group = tuple(range(world)) if c.nranks == world else ()
    return RecordedCall(op, nbytes, dtype, group, "")
