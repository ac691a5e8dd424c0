"""Failures, checkpoints and restarts: goodput and the wall time to train a token budget.

A job of ``p`` devices fails as a Poisson process of rate ``p / MTBF_device`` (independent
device failures; host, network and software faults are counted per device, as the Llama 3
interruption statistics are). The job writes a checkpoint every ``τ`` of training (rounded up to
whole steps), each write blocking training for ``δ``; a failure loses the work since the last
completed checkpoint and costs a restart ``R`` (rescheduling, loading the checkpoint, warm-up),
during which another failure restarts the restart. Training time that survives is useful;
**goodput** = useful training time / wall time (the "effective training time" of the Llama 3
report), and the wall time to train is the failure-free time to train / goodput.

Closed forms (M = job MTBF):

* Young (1974), first order: optimal interval ``τ* = √(2 δ M)``.
* first-order goodput (renewal argument, lost work linear in τ): per unit of useful work the
  job writes δ/τ, and a failure every M of wall time costs ``R + (τ+δ)/2``:
  ``G₁ = (1 − (R + (τ+δ)/2)/M) / (1 + δ/τ)``. It holds where δ ≪ τ ≪ M and R ≪ M.
* Daly (2006), exact for exponential failures and this restart model: a segment of τ + δ
  takes ``M e^{R/M} (e^{(τ+δ)/M} − 1)`` of wall time on average, so
  ``G = τ / (M e^{R/M} (e^{(τ+δ)/M} − 1))``.

:func:`simulate_training` draws the failure process itself (seeded) for the whole training —
the distribution replicas sample; its mean is Daly's form (a test checks both forms). Nothing
here runs in SimPy: days of training are a few thousand numpy draws.

Sources: J. W. Young, "A first order approximation to the optimum checkpoint interval", CACM
17(9), 1974; J. T. Daly, "A higher order estimate of the optimum checkpoint interval for
restart dumps", FGCS 22(3), 2006.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class FailureSpec:
    """How a job fails and recovers.

    Attributes:
        mtbf_per_device_h: mean time between failures of one device (and its share of host,
            network and software faults), h.
        checkpoint_write_s: training time lost to one checkpoint write (the blocking part), s.
        restart_s: time from a failure to training again (detect, reschedule, load, warm up), s.
        checkpoint_interval_min: training time between checkpoints, min; None = Young's optimum.
    """

    mtbf_per_device_h: float
    checkpoint_write_s: float
    restart_s: float
    checkpoint_interval_min: float | None = None


def job_mtbf_s(spec: FailureSpec, devices: int) -> float:
    """Mean time between failures of a job on ``devices`` devices, s."""
    return spec.mtbf_per_device_h * 3600.0 / devices


def young_interval_s(write_s: float, mtbf_s: float) -> float:
    """Young's first-order optimal checkpoint interval √(2 δ M), s."""
    return math.sqrt(2.0 * write_s * mtbf_s)


def checkpoint_interval_s(spec: FailureSpec, devices: int, step_s: float) -> float:
    """The interval the job checkpoints at (s): the configured one or Young's optimum, rounded up
    to whole steps of ``step_s`` (a checkpoint is written between steps)."""
    m = job_mtbf_s(spec, devices)
    tau = (
        spec.checkpoint_interval_min * 60.0
        if spec.checkpoint_interval_min is not None
        else young_interval_s(spec.checkpoint_write_s, m)
    )
    return max(1, math.ceil(tau / step_s - 1e-9)) * step_s


def goodput_first_order(
    interval_s: float, write_s: float, restart_s: float, mtbf_s: float
) -> float:
    """First-order goodput ``(1 − (R + (τ+δ)/2)/M) / (1 + δ/τ)`` (clipped at 0)."""
    g = (1.0 - (restart_s + (interval_s + write_s) / 2.0) / mtbf_s) / (1.0 + write_s / interval_s)
    return max(g, 0.0)


def goodput_daly(interval_s: float, write_s: float, restart_s: float, mtbf_s: float) -> float:
    """Daly's exact expected goodput for exponential failures: τ / (M e^{R/M}(e^{(τ+δ)/M} − 1))."""
    m = mtbf_s
    return interval_s / (m * math.exp(restart_s / m) * math.expm1((interval_s + write_s) / m))


@dataclass(frozen=True, slots=True)
class TrainingRun:
    """One draw of the failure process over a whole training.

    Attributes:
        useful_s: failure-free training time (the work), s.
        wall_s: wall time to finish it, s.
        failures: failures during the training (restarts that failed included).
        lost_s: training time lost to failures (work since the last checkpoint), s.
        checkpoint_s: time spent writing checkpoints, s.
        restart_s: time spent restarting, s.
    """

    useful_s: float
    wall_s: float
    failures: int
    lost_s: float
    checkpoint_s: float
    restart_s: float

    @property
    def goodput(self) -> float:
        """Useful training time / wall time (1 = no loss)."""
        return self.useful_s / self.wall_s if self.wall_s > 0 else 1.0


def simulate_training(
    useful_s: float,
    interval_s: float,
    write_s: float,
    restart_s: float,
    mtbf_s: float,
    rng: np.random.Generator,
) -> TrainingRun:
    """Draw the failure process for ``useful_s`` of training (see the module docstring).

    The training is ⌈useful/τ⌉ segments of τ of work plus a checkpoint write (the last segment
    is shorter and writes none). A segment's first attempt needs τ + δ without a failure; after
    a failure it needs R + τ + δ (the restart, then the segment again). Failures are
    exponential with mean ``mtbf_s`` (memoryless, so each attempt draws afresh). All segments
    are drawn together, one numpy round per attempt.
    """
    if (restart_s + interval_s + write_s) / mtbf_s > 20.0:
        # a segment almost never completes (e^20 attempts): the expectation, not a draw
        g = goodput_daly(interval_s, write_s, restart_s, mtbf_s)
        wall = useful_s / g if g > 0 else math.inf
        return TrainingRun(useful_s, wall, round(wall / mtbf_s), wall - useful_s, 0.0, 0.0)
    n_full = int(useful_s // interval_s)
    rest = useful_s - n_full * interval_s
    need = np.full(n_full, interval_s + write_s)
    if rest > 1e-9 * interval_s:
        need = np.append(need, rest)
    wall = 0.0
    failures = 0
    lost = 0.0
    restarts = 0.0
    pending = need  # segments still to complete and what their next attempt needs
    work = need.copy()
    first = True
    while pending.size:
        x = rng.exponential(mtbf_s, pending.size)
        ok = x >= pending
        wall += float(pending[ok].sum())
        failed = ~ok
        nf = int(failed.sum())
        if nf:
            wall += float(x[failed].sum())
            failures += nf
            # time lost: what of the attempt had run (restart part counted as restart)
            spent = x[failed]
            if not first:
                r = np.minimum(spent, restart_s)
                restarts += float(r.sum())
                lost += float((spent - r).sum())
            else:
                lost += float(spent.sum())
        if not first:
            restarts += restart_s * int(ok.sum())
        work = work[failed]
        pending = restart_s + work
        first = False
    n_ckpt = n_full
    return TrainingRun(useful_s, wall, failures, lost, n_ckpt * write_s, restarts)


@dataclass(frozen=True, slots=True)
class Goodput:
    """The failure metrics of one run (see :data:`~scaling.model.analysis.metrics.METRICS`)."""

    goodput: float
    effective_time_to_train_h: float
    job_mtbf_h: float
    checkpoint_interval_min: float
    checkpoint_interval_opt_min: float
    failures: int


def goodput_of(
    spec: FailureSpec | None,
    devices: int,
    step_s: float,
    time_to_train_h: float,
    rng: np.random.Generator | None,
) -> Goodput:
    """The failure metrics of a job whose failure-free training takes ``time_to_train_h`` with
    steps of ``step_s``. No failure model (``spec`` None): goodput 1, and the job never fails
    (MTBF and checkpoint intervals infinite: the limits of the forms as MTBF → ∞)."""
    if spec is None or rng is None:
        inf = math.inf
        return Goodput(1.0, time_to_train_h, inf, inf, inf, 0)
    m = job_mtbf_s(spec, devices)
    tau = checkpoint_interval_s(spec, devices, step_s)
    run = simulate_training(
        time_to_train_h * 3600.0, tau, spec.checkpoint_write_s, spec.restart_s, m, rng
    )
    return Goodput(
        run.goodput,
        run.wall_s / 3600.0,
        m / 3600.0,
        tau / 60.0,
        young_interval_s(spec.checkpoint_write_s, m) / 60.0,
        run.failures,
    )
