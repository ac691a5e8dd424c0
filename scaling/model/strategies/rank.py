"""What every simulated rank shares: its compute stream (noise, interference, accounting, spans)
and its log."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import simpy

from scaling.model.comm.collectives import Communicator


@dataclass(slots=True)
class Span:
    """One interval on a rank's timeline (s): a compute kernel group, or a wait on communication."""

    stream: str
    name: str
    start_s: float
    end_s: float
    step: int
    args: dict = field(default_factory=dict)


@dataclass(slots=True)
class RankLog:
    """What one simulated rank did, per step: start/end times, compute-busy time (s), and — when
    tracing — its spans."""

    step_start: list[float] = field(default_factory=list)
    step_end: list[float] = field(default_factory=list)
    compute_busy: list[float] = field(default_factory=list)
    spans: list[Span] | None = None


class ComputeStream:
    """A rank's compute stream.

    A kernel group of nominal duration t takes ``t · noise`` (seeded per rank) and, when any
    collective is in flight at its start, ``× (1 + interference)``: communication kernels take
    compute units and memory bandwidth from compute (the library profile's
    ``compute_interference``). Waits on communication are recorded as spans named ``wait:…``.
    """

    def __init__(
        self,
        env: simpy.Environment,
        comm: Communicator,
        rng: np.random.Generator | None,
        jitter_cv: float,
        interference: float,
        log: RankLog,
    ) -> None:
        self.env = env
        self.comm = comm
        self.rng = rng
        self.jitter_cv = jitter_cv
        self.interference = interference
        self.log = log
        self.busy = 0.0
        self.step = 0

    def run(self, t: float, name: str, **args) -> Generator[simpy.Event, object, None]:
        """Compute for nominal ``t`` seconds."""
        if self.rng is not None:
            t *= max(0.05, 1.0 + self.jitter_cv * float(self.rng.standard_normal()))
        if self.interference and self.comm.in_flight:
            t *= 1.0 + self.interference
        start = self.env.now
        yield self.env.timeout(t)
        self.busy += t
        if self.log.spans is not None:
            self.log.spans.append(Span("compute", name, start, self.env.now, self.step, args))

    def wait(self, event: simpy.Event, name: str) -> Generator[simpy.Event, object, None]:
        """Block the compute stream until ``event`` (a collective) has completed."""
        if event.processed:
            return
        start = self.env.now
        yield event
        if self.log.spans is not None and self.env.now > start:
            self.log.spans.append(Span("compute", f"wait:{name}", start, self.env.now, self.step))

    def begin_step(self, step: int) -> None:
        self.step = step
        self.busy = 0.0
        self.log.step_start.append(self.env.now)

    def end_step(self) -> None:
        self.log.step_end.append(self.env.now)
        self.log.compute_busy.append(self.busy)
