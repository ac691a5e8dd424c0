"""What an importer gives back: one rank's recorded collectives, per iteration.

Every importer (``scaling.record``'s JSON lines, PyTorch's Flight Recorder dumps, …) turns its
file into a :class:`Recording`; ``scaling schedule --compare`` compares that with the simulated
schedule. Each importer also says what its format cannot recover (``cannot_recover``), so that a
comparison never reads a missing field as a match or a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

#: the key of the setup collectives (wrapper construction) in :attr:`Recording.steps`
SETUP = "setup"
#: the key of a recording without iteration boundaries: every call, setup included, in order
WHOLE = "whole"


class RecordingError(ValueError):
    """A recording that cannot be read or does not fit: one line saying file, line and why."""


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One collective as the recorded rank issued it.

    Attributes:
        op: ``all_reduce``, ``all_gather``, ``reduce_scatter``, ``broadcast``, ``barrier``, …
        nbytes: bytes (all-reduce/broadcast: the tensor; all-gather: the gathered output;
            reduce-scatter: the full input).
        dtype: torch dtype name (``float32``), or None if not recorded.
        group: global ranks of the process group, or () if not recorded.
        phase: ``setup``, ``forward``, ``backward``, ``optimizer``, or "" if not recorded.
        micro: micro-batch within the iteration.
        bucket: DDP bucket index, if the call is a bucket's all-reduce.
        unit: FSDP unit (the user's module name), if the call moves one.
        params: the user's parameter names the call carries (bucket or unit).
        compute_before_s: device seconds of compute kernels between the previous call (or the
            start) and this one, where the format has kernel times (a Kineto trace of a GPU
            job); None otherwise.
    """

    op: str
    nbytes: int
    dtype: str | None
    group: tuple[int, ...]
    phase: str
    micro: int = 0
    bucket: int | None = None
    unit: str | None = None
    params: tuple[str, ...] = ()
    compute_before_s: float | None = None


@dataclass(frozen=True, slots=True)
class Recording:
    """One rank's recorded schedule.

    Attributes:
        path: the file it was read from.
        importer: the importer's name (the file's format).
        rank: the recorded rank.
        world_size: ranks in the job.
        params: the user's (name, elements) of every parameter tensor, registration order;
            empty if the recording does not name them.
        steps: per iteration (0, 1, …; :data:`SETUP` for wrapper construction), the calls in
            issue order.
        cannot_recover: what this format does not carry.
        checked: the fields the comparison checks (of ``op``, ``bytes``, ``dtype``, ``group``,
            ``phase``, ``micro_batch``, ``bucket``, ``unit``); None = all of them.
        compute_after_s: per iteration, device seconds of compute kernels after its last call,
            where the format has kernel times (see :attr:`RecordedCall.compute_before_s`).
        device: the recorded accelerator's name as the format gives it ("" if not).
    """

    path: Path
    importer: str
    rank: int
    world_size: int
    params: tuple[tuple[str, int], ...]
    steps: dict[int | str, list[RecordedCall]]
    cannot_recover: tuple[str, ...] = field(default=())
    checked: tuple[str, ...] | None = None
    compute_after_s: dict[int | str, float] = field(default_factory=dict)
    device: str = ""


class Importer(Protocol):
    """A recording format: recognises its files and reads them."""

    name: str

    def recognises(self, path: Path, head: str) -> bool:
        """Whether ``path`` (whose first characters are ``head``) is in this format."""
        ...

    def load(self, path: Path) -> Recording:
        """Read ``path``; raise :class:`RecordingError` (one line) if it is unreadable."""
        ...
