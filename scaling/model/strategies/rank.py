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

    A kernel group of nominal duration t takes ``t · noise · slowdown`` (noise seeded per rank;
    ``slowdown`` > 1 on a persistently slow rank) plus ``noise_duration_s · Poisson(
    noise_rate_per_s · t)`` of host interruptions, and, when any collective is in flight at its
    start, ``× (1 + interference)``: communication kernels take compute units and memory
    bandwidth from compute (the library profile's ``compute_interference``). Waits on
    communication are recorded as spans named ``wait:…``. (``model.variability`` describes the
    slow ranks and host noise.)
    """

    def __init__(
        self,
        env: simpy.Environment,
        comm: Communicator,
        rng: np.random.Generator | None,
        jitter_cv: float,
        interference: float,
        log: RankLog,
        slowdown: float = 1.0,
        noise_rate_per_s: float = 0.0,
        noise_duration_s: float = 0.0,
    ) -> None:
        self.env = env
        self.comm = comm
        self.rng = rng
        self.jitter_cv = jitter_cv
        self.interference = interference
        self.log = log
        self.busy = 0.0
        self.step = 0
        self.slowdown = slowdown
        # host noise needs the rank's stream (given whenever the rank has noise of any kind)
        self.noise_rate = noise_rate_per_s if (noise_duration_s > 0 and rng is not None) else 0.0
        self.noise_duration = noise_duration_s

    def run(self, t: float, name: str, **args: object) -> Generator[simpy.Event, object, None]:
        """Compute for nominal ``t`` seconds."""
        nominal = t
        if self.rng is not None and self.jitter_cv > 0:
            t *= max(0.05, 1.0 + self.jitter_cv * float(self.rng.standard_normal()))
        if self.slowdown != 1.0:
            t *= self.slowdown
        if self.noise_rate > 0:
            assert self.rng is not None
            t += self.noise_duration * float(self.rng.poisson(self.noise_rate * nominal))
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

    def hold(self, event: simpy.Event) -> Generator[simpy.Event, object, None]:
        """Block until ``event`` (e.g. the end of the step on every pipeline stage) without
        recording a wait: the time is idle, not waiting on communication."""
        if not event.processed:
            yield event

    def begin_step(self, step: int) -> None:
        """Start step ``step``: reset busy time, record the start."""
        self.step = step
        self.busy = 0.0
        self.log.step_start.append(self.env.now)

    def end_step(self) -> None:
        """End the step: record its end and the compute-busy time."""
        self.log.step_end.append(self.env.now)
        self.log.compute_busy.append(self.busy)
