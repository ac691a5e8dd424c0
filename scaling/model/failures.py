"""Failures, checkpoints and restarts: goodput and the wall time to train a token budget.

The job-level fault model, beside :mod:`scaling.model.variability` (which is about how fast a
step runs; this is about how much of the wall time steps run at all). A job of ``p`` devices
fails as a Poisson process of rate ``p / MTBF_device`` (independent device failures; host,
network and software faults are counted per device, as the Llama 3 interruption statistics
are). The job writes a checkpoint every ``τ`` of training (rounded up to whole steps), each
write blocking training for ``δ``; a failure loses the work since the last completed
checkpoint and costs a restart ``R`` (rescheduling, loading the checkpoint, warm-up), during
which another failure restarts the restart. Training time that survives is useful;
**goodput** = useful training time / wall time (the "effective training time" of the Llama 3
report), and the wall time to train is the failure-free time to train / goodput.

Closed forms (M = job MTBF):

* Young (1974), first order: optimal interval ``τ* = √(2 δ M)``.
* first-order goodput (renewal argument, lost work linear in τ): per unit of useful work the
  job writes δ/τ, and a failure every M of wall time costs ``R + (τ+δ)/2``:
  ``G₁ = (1 − (R + (τ+δ)/2)/M) / (1 + δ/τ)``. It holds where δ ≪ τ ≪ M and R ≪ M.
* Daly (2006), exact for exponential failures and this restart model: a segment of τ + δ
  takes ``M e^{R/M} (e^{(τ+δ)/M} − 1)`` of wall time on average, so
  ``G = τ / (M e^{R/M} (e^{(τ+δ)/M} − 1))``. Evaluated in logarithms (:func:`log_goodput_daly`)
  so that no input overflows: a job whose MTBF is seconds has a goodput of e^-300, not an
  ``OverflowError``.

A job whose expected goodput is below :data:`MIN_GOODPUT` would almost never finish; it is
refused before it is simulated (:func:`failures_refusal`), naming the MTBF it would need.

:func:`simulate_training` draws the failure process itself (seeded) for the whole training —
the distribution replicas sample; its mean is Daly's form (a test checks both forms). Its work
is bounded: segment by segment while the expected number of attempts is at most
:data:`MAX_DRAWN_ATTEMPTS`, else by counts (geometric numbers of failures per segment and the
normal limit of their summed durations). Nothing here runs in SimPy.

Sources: J. W. Young, "A first order approximation to the optimum checkpoint interval", CACM
17(9), 1974; J. T. Daly, "A higher order estimate of the optimum checkpoint interval for
restart dumps", FGCS 22(3), 2006.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Largest restart and checkpoint-write times a config may give, s (one week: a job that takes
#: longer to come back is not being trained; the Llama 3 report's restarts are minutes).
MAX_RESTART_S = 7 * 86400.0
MAX_CHECKPOINT_WRITE_S = 86400.0
#: Below this expected goodput a job spends > 100× its training time failing and restarting:
#: refused before it is simulated, with the MTBF it would need.
MIN_GOODPUT = 0.01
#: Above this many expected attempts (segments × attempts per segment) the failure process is
#: drawn by counts, not attempt by attempt (bounded work whatever the MTBF).
MAX_DRAWN_ATTEMPTS = 2_000_000


@dataclass(frozen=True, slots=True)
class FailureSpec:
    """How a job fails and recovers (config section ``failures``).

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


def _interval_s(spec: FailureSpec, mtbf_s: float) -> float:
    """The configured interval or Young's optimum (s), before rounding to steps."""
    if spec.checkpoint_interval_min is not None:
        return spec.checkpoint_interval_min * 60.0
    return young_interval_s(spec.checkpoint_write_s, mtbf_s)


def checkpoint_interval_s(spec: FailureSpec, devices: int, step_s: float) -> float:
    """The interval the job checkpoints at (s): the configured one or Young's optimum, rounded up
    to whole steps of ``step_s`` (a checkpoint is written between steps)."""
    tau = _interval_s(spec, job_mtbf_s(spec, devices))
    return max(1, math.ceil(tau / step_s - 1e-9)) * step_s


def goodput_first_order(
    interval_s: float, write_s: float, restart_s: float, mtbf_s: float
) -> float:
    """First-order goodput ``(1 − (R + (τ+δ)/2)/M) / (1 + δ/τ)`` (clipped at 0)."""
    g = (1.0 - (restart_s + (interval_s + write_s) / 2.0) / mtbf_s) / (1.0 + write_s / interval_s)
    return max(g, 0.0)


def _log_expm1(x: float) -> float:
    """ln(e^x − 1) for x > 0 without overflow."""
    return x + math.log1p(-math.exp(-x)) if x > 1.0 else math.log(math.expm1(x))


def log_goodput_daly(interval_s: float, write_s: float, restart_s: float, mtbf_s: float) -> float:
    """ln of Daly's goodput: ln τ − ln M − R/M − ln(e^{(τ+δ)/M} − 1); finite for any finite
    positive inputs."""
    m = mtbf_s
    return (
        math.log(interval_s) - math.log(m) - restart_s / m - _log_expm1((interval_s + write_s) / m)
    )


def goodput_daly(interval_s: float, write_s: float, restart_s: float, mtbf_s: float) -> float:
    """Daly's exact expected goodput for exponential failures: τ / (M e^{R/M}(e^{(τ+δ)/M} − 1))
    (0 where it is below the smallest float)."""
    return math.exp(log_goodput_daly(interval_s, write_s, restart_s, mtbf_s))


def min_mtbf_per_device_h(spec: FailureSpec, devices: int, goodput: float = MIN_GOODPUT) -> float:
    """The smallest per-device MTBF (h) at which the job's expected (Daly) goodput reaches
    ``goodput``, other failure numbers fixed; by bisection on ln M (goodput rises with M)."""

    def ok(mtbf_s: float) -> bool:
        tau = _interval_s(spec, mtbf_s)
        return log_goodput_daly(tau, spec.checkpoint_write_s, spec.restart_s, mtbf_s) >= math.log(
            goodput
        )

    lo, hi = -10.0, 60.0  # ln s: 45 µs … 1e26 s
    if ok(math.exp(lo)):
        return math.exp(lo) * devices / 3600.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if ok(math.exp(mid)) else (mid, hi)
    return math.exp(hi) * devices / 3600.0


def failures_refusal(spec: FailureSpec | None, devices: int) -> str:
    """Why a job on ``devices`` devices would almost never finish under ``spec`` (its expected
    goodput, at the interval it would checkpoint at, below :data:`MIN_GOODPUT`), naming the
    MTBF it needs; "" when it can run."""
    if spec is None:
        return ""
    m = job_mtbf_s(spec, devices)
    tau = _interval_s(spec, m)
    lg = log_goodput_daly(tau, spec.checkpoint_write_s, spec.restart_s, m)
    if lg >= math.log(MIN_GOODPUT):
        return ""
    need = min_mtbf_per_device_h(spec, devices)
    return (
        f"failures: expected goodput {math.exp(lg):.2g} on {devices:,} devices (job MTBF "
        f"{m:,.3g} s against a restart of {spec.restart_s:,.3g} s and a checkpoint interval of "
        f"{tau:,.3g} s): the job would almost never finish; expected "
        f"failures.mtbf_per_device_h >= {need:,.4g} h (goodput >= {MIN_GOODPUT:.0%}) or a "
        "shorter restart_s"
    )


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


def _truncated_exp_moments(mtbf_s: float, t: float) -> tuple[float, float]:
    """Mean and variance (s, s²) of an exponential time of mean ``mtbf_s`` given it is < ``t``
    (how long a failed attempt of length ``t`` ran)."""
    x = t / mtbf_s
    if x < 1e-6:  # uniform on [0, t] in the limit
        return t / 2.0, t * t / 12.0
    q = x / math.expm1(x)  # x e^-x / (1 - e^-x)
    mean = mtbf_s * (1.0 - q)
    # E[X²] = M²(2 − (x² + 2x) e^-x/(1−e^-x))
    ex2 = mtbf_s**2 * (2.0 - (x + 2.0) * q)
    return mean, max(ex2 - mean * mean, 0.0)


def _draw_by_counts(
    groups: list[tuple[float, int]], restart_s: float, mtbf_s: float, rng: np.random.Generator
) -> tuple[float, int, float, float]:
    """Wall time, failures, lost and restart time (s) of ``groups`` of (need, segments): each
    segment needs ``need`` s without a failure, drawn by counts in O(1) per group — how many
    first attempts fail (binomial, probability 1 − e^{−need/M}), how many retries of R + need
    fail after them (negative binomial: a geometric number per segment), and the time the
    failed attempts ran as the normal limit of a sum of exponentials truncated at the attempt's
    length (exact mean and variance; used where there are millions of attempts)."""
    wall = lost = restarts = 0.0
    failures = 0
    for need, n in groups:
        retry = restart_s + need
        n1 = int(rng.binomial(n, -math.expm1(-need / mtbf_s)))
        # (R+τ+δ)/M ≤ 20 here (simulate_training), so p ≥ e^-20 > 0
        k = int(rng.negative_binomial(n1, math.exp(-retry / mtbf_s))) if n1 else 0
        wall += (n - n1) * need + n1 * retry  # every segment's last, successful attempt
        restarts += n1 * restart_s
        failures += n1 + k
        for length, c in ((need, n1), (retry, k)):
            if not c:
                continue
            mean, var = _truncated_exp_moments(mtbf_s, length)
            ran = max(float(rng.normal(c * mean, math.sqrt(c * var))), 0.0)
            wall += ran
            if length == need:
                lost += ran
                continue
            # of a failed retry, the part spent restarting: E[min(X, R) | X < R + need]
            p_in_r = math.expm1(-restart_s / mtbf_s) / math.expm1(-length / mtbf_s)
            r_mean, _ = _truncated_exp_moments(mtbf_s, restart_s)
            share = min((p_in_r * r_mean + (1.0 - p_in_r) * restart_s) / mean, 1.0)
            restarts += ran * share
            lost += ran * (1.0 - share)
    return wall, failures, lost, restarts


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
    are drawn together, one numpy round per attempt, while the expected number of attempts is
    at most :data:`MAX_DRAWN_ATTEMPTS`; beyond, by counts (:func:`_draw_by_counts`).
    """
    if (restart_s + interval_s + write_s) / mtbf_s > 20.0:
        # a segment almost never completes (e^20 attempts): the expectation, not a draw
        lg = log_goodput_daly(interval_s, write_s, restart_s, mtbf_s)
        wall = useful_s * math.exp(min(-lg, 700.0))
        failures = wall / mtbf_s
        return TrainingRun(useful_s, wall, int(min(failures, 2**62)), wall - useful_s, 0.0, 0.0)
    n_full = int(useful_s // interval_s)
    rest = useful_s - n_full * interval_s
    has_rest = rest > 1e-9 * interval_s
    n_ckpt = n_full
    # expected attempts: 1 per segment, plus e^{(R+τ+δ)/M} per segment whose first one failed
    attempts = (n_full + has_rest) * (1.0 + math.exp((restart_s + interval_s + write_s) / mtbf_s))
    if attempts > MAX_DRAWN_ATTEMPTS:
        groups = [(interval_s + write_s, n_full)] + ([(rest, 1)] if has_rest else [])
        wall_c, nf_c, lost_c, restarts_c = _draw_by_counts(groups, restart_s, mtbf_s, rng)
        return TrainingRun(useful_s, wall_c, nf_c, lost_c, n_ckpt * write_s, restarts_c)
    need = np.full(n_full, interval_s + write_s)
    if has_rest:
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
