"""Variability across ranks: persistent slow ranks, degraded NICs and host (OS) noise.

Per-rank, per-phase compute jitter is :attr:`SimSpec.compute_jitter_cv`. This module adds what
persists or comes from outside the kernel:

* **slow ranks** — ``round(fraction · p)`` ranks (at least one when the fraction is > 0), drawn
  once per run, whose every compute phase takes ``slowdown ×`` its time (thermal throttling, a
  weak part, a noisy neighbour on the host);
* **degraded NICs** — ``round(fraction · nodes · nics)`` NICs (at least one), drawn once per run,
  that run at ``bw_fraction`` of their rate (a link trained down, FEC errors, a flapping port). A
  ring is paced by its slowest channel and NCCL splits a call evenly over its channels, so a
  collective whose group crosses a node with a degraded NIC moves its network bytes at the
  degraded rate (the analytic model: that group's NIC bandwidth × ``bw_fraction``; the flow
  network: the NIC's links at that capacity, so contention decides; both in
  :mod:`scaling.model.comm.degraded`);
* **device speed spread** — every rank's compute runs at its own persistent speed, a factor
  ``max(0.5, 1 + speed_cv·Z)`` (Z standard normal) on every compute phase, drawn once per run:
  identical SKUs differ through manufacturing and power management (Sinha et al., "Not All GPUs
  Are Created Equal", SC'22: 8 % average, up to 22 %, performance variation across the GPUs of
  one cluster on identical SKUs). A job that synchronises every layer (FSDP's all-gathers) runs
  at its slowest rank, whose expected factor grows with p as E[max of p normals] ≈ √(2 ln p):
  1 + 1.42·cv at 8 ranks, 1 + 3.04·cv at 512 (:func:`expected_max_normal_factor`);
* **host noise** — interruptions of ``duration_s`` arriving as a Poisson process of
  ``rate_per_s`` on each rank (daemons, interrupts, page reclaim): a compute phase of nominal
  length t gains ``duration_s · Poisson(rate_per_s · t)``.

The step time is what the synchronising collectives make of these: a collective starts when the
last rank calls it (:class:`~scaling.model.comm.collectives.Communicator`). Every draw comes
from the run's seed (:func:`stream`), so a run is reproducible and replicas differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: spawn keys of the run's random streams beside the per-rank ones (``SeedSequence(seed)
#: .spawn(n)`` takes keys 0 … n−1; these lie far above any rank count)
LAYOUT_STREAM = 1 << 30  # which ranks are slow, which NICs degraded
ENSEMBLE_STREAM = LAYOUT_STREAM + 1  # per-rank noise of the rank ensemble
FAILURE_STREAM = LAYOUT_STREAM + 2  # the failure process (model.failures)


#: Largest slow-rank slowdown a config may give: a rank 100× slower than its peers is a failed
#: rank (the failure model's business), not a straggler.
MAX_SLOWDOWN = 100.0


def stream(seed: int, key: int) -> np.random.Generator:
    """The run's random stream ``key`` (one of the ``*_STREAM`` constants)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


@dataclass(frozen=True, slots=True)
class VariabilitySpec:
    """Persistent and external variability of a job (see the module docstring).

    Attributes:
        slow_rank_fraction: share of ranks that are persistently slow, [0, 1).
        slow_rank_slowdown: factor (≥ 1) on every compute phase of a slow rank.
        degraded_nic_fraction: share of the cluster's NICs that run degraded, [0, 1].
        degraded_nic_bw_fraction: rate of a degraded NIC as a share of its nominal rate, (0, 1].
        host_noise_rate_per_s: host interruptions per second of compute, per rank.
        host_noise_duration_s: length of one host interruption, s.
        device_speed_cv: coefficient of variation of the persistent per-rank compute speed
            factor (0 = identical devices), [0, 0.5).
    """

    slow_rank_fraction: float = 0.0
    slow_rank_slowdown: float = 1.0
    degraded_nic_fraction: float = 0.0
    degraded_nic_bw_fraction: float = 1.0
    host_noise_rate_per_s: float = 0.0
    host_noise_duration_s: float = 0.0
    device_speed_cv: float = 0.0

    @property
    def slow_ranks(self) -> bool:
        """Some ranks are persistently slow."""
        return self.slow_rank_fraction > 0 and self.slow_rank_slowdown != 1.0

    @property
    def host_noise(self) -> bool:
        """Ranks see OS/host interruptions."""
        return self.host_noise_rate_per_s > 0 and self.host_noise_duration_s > 0

    @property
    def degraded_nics(self) -> bool:
        """Some NICs run below their rate."""
        return self.degraded_nic_fraction > 0 and self.degraded_nic_bw_fraction < 1.0

    @property
    def per_rank(self) -> bool:
        """Ranks differ in their compute (so they must be simulated as distinct ranks)."""
        return self.slow_ranks or self.host_noise or self.device_speed_cv > 0


@dataclass(frozen=True, slots=True)
class Layout:
    """One run's draw of which ranks are slow and which NICs are degraded.

    Attributes:
        slowdown: compute-time factor per rank, shape [devices] (1 for a normal rank).
        degraded: (node, nic) of every degraded NIC, sorted.
    """

    slowdown: np.ndarray
    degraded: tuple[tuple[int, int], ...]

    @property
    def degraded_nodes(self) -> frozenset[int]:
        """Nodes holding at least one degraded NIC."""
        return frozenset(n for n, _ in self.degraded)


def _count(fraction: float, total: int) -> int:
    """How many of ``total`` a fraction names: rounded, at least one when the fraction is > 0."""
    return 0 if fraction <= 0 else min(total, max(1, round(fraction * total)))


def layout(
    spec: VariabilitySpec | None, nodes: int, devices_per_node: int, nics: int, seed: int
) -> Layout:
    """Draw the run's slow ranks and degraded NICs (the ``LAYOUT_STREAM`` of ``seed``)."""
    p = nodes * devices_per_node
    slowdown = np.ones(p)
    degraded: tuple[tuple[int, int], ...] = ()
    if spec is None:
        return Layout(slowdown, degraded)
    rng = stream(seed, LAYOUT_STREAM)
    if spec.slow_ranks:
        slow = rng.choice(p, size=_count(spec.slow_rank_fraction, p), replace=False)
        slowdown[slow] = spec.slow_rank_slowdown
    if spec.degraded_nics:
        total = nodes * nics
        picks = rng.choice(total, size=_count(spec.degraded_nic_fraction, total), replace=False)
        degraded = tuple(sorted((int(i) // nics, int(i) % nics) for i in picks))
    if spec.device_speed_cv > 0:
        # drawn last, so that adding a spread keeps the same slow ranks and degraded NICs; the
        # floor keeps the factor positive (a rank at half the time would be another part)
        slowdown *= np.maximum(0.5, 1.0 + spec.device_speed_cv * rng.standard_normal(p))
    return Layout(slowdown, degraded)


def host_noise_mean_s(spec: VariabilitySpec, t: float) -> float:
    """Expected host-noise delay (s) added to a compute phase of nominal ``t`` seconds."""
    return spec.host_noise_rate_per_s * t * spec.host_noise_duration_s if spec.host_noise else 0.0


def expected_max_normal_factor(p: int, cv: float, floor: float = 0.05) -> float:
    """E[max of p i.i.d. draws of max(floor, 1 + cv·Z)], Z standard normal, by quadrature.

    The step-time factor of ``p`` ranks with i.i.d. jitter meeting at one collective. With
    F the CDF of one draw, E[max] = ∫ x d(F(x)^p), integrated on a fine grid in Z
    (trapezoid on 200,001 points over ±12σ: error far below 1e-6 for p ≤ 10^6).
    """
    from scipy.special import ndtr

    z = np.linspace(-12.0, 12.0, 200_001)
    cdf = ndtr(z)
    x = np.maximum(floor, 1.0 + cv * z)
    dens = np.gradient(cdf**p, z)
    return float(np.trapezoid(x * dens, z))
