"""A recording as the schedule ``scaling replay`` runs: its calls per iteration, as the model's
:class:`~scaling.model.strategies.replay.ReplayedCall` (op, bytes, group ranks, phase, recorded
compute before each).

What cannot be replayed is refused in one line naming the file and the call: a call whose group
ranks the format did not recover (an NCCL log's sub-communicators), point-to-point sends and
receives and rooted reduces (not collectives the simulator prices). A barrier is replayed as
what PyTorch issues for it on NCCL: an all-reduce of one element (ProcessGroupNCCL::barrier).
"""

from __future__ import annotations

from scaling.io.recordings.base import SETUP, RecordedCall, Recording, RecordingError
from scaling.model.comm.ops import CollectiveOp
from scaling.model.strategies.replay import ReplayedCall, ReplayedStep

#: bytes of a barrier's all-reduce (one float32 element)
BARRIER_BYTES = 4


def replay_schedule(
    rec: Recording,
) -> tuple[tuple[ReplayedCall, ...], tuple[ReplayedStep, ...], bool]:
    """The recording's setup calls, its iterations (a recording without iteration boundaries
    is one iteration), and whether it holds compute times for every gap.

    Raises:
        RecordingError: a call that cannot be replayed (one line).
    """
    setup = tuple(_call(rec, SETUP, i, c) for i, c in enumerate(rec.steps.get(SETUP, [])))
    steps = []
    timed = True
    for key, calls in rec.steps.items():
        if key == SETUP:
            continue
        replayed = tuple(_call(rec, key, i, c) for i, c in enumerate(calls))
        timed &= key in rec.compute_after_s and all(c.compute_before_s is not None for c in calls)
        steps.append(ReplayedStep(replayed, rec.compute_after_s.get(key, 0.0)))
    if not steps or not any(s.calls for s in steps):
        raise RecordingError(f"{rec.path}: no collectives to replay")
    return setup, tuple(steps), timed


def _call(rec: Recording, step: int | str, i: int, c: RecordedCall) -> ReplayedCall:
    where = f"{rec.path}: step {step}, call #{i} ({c.op})"
    if not c.group:
        raise RecordingError(
            f"{where}: group ranks not recorded ({rec.importer} gives only the group's size); "
            "record the job with scaling.record or Flight Recorder to replay it"
        )
    if c.op == "barrier":
        op, nbytes = CollectiveOp.ALL_REDUCE, float(BARRIER_BYTES)
    else:
        try:
            op, nbytes = CollectiveOp(c.op), float(c.nbytes)
        except ValueError:
            known = ", ".join(o.value for o in CollectiveOp)
            raise RecordingError(
                f"{where}: not replayed: expected a collective of {known} or barrier"
            ) from None
    return ReplayedCall(
        op,
        nbytes,
        tuple(c.group),
        "" if c.phase == "setup" else c.phase,
        c.dtype,
        c.compute_before_s or 0.0,
    )
