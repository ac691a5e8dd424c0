"""Variability across ranks: jitter order statistics, slow ranks, host noise, degraded NICs, and
the rank ensemble against one SimPy process per rank."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import pytest
import simpy
from scipy import stats

from scaling.io.config import experiment_from_dict
from scaling.io.errors import ConfigError
from scaling.model.comm.collectives import (
    AnalyticCostModel,
    CollectiveCost,
    CollectiveKey,
    Communicator,
)
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import PhaseCost
from scaling.model.hardware.memory import MemoryBreakdown
from scaling.model.job import Job
from scaling.model.simulation import run_job
from scaling.model.strategies.base import StrategyBase, WorkBase
from scaling.model.strategies.rank import ComputeStream
from scaling.model.variability import (
    DegradedNicCostModel,
    VariabilitySpec,
    degraded_system,
    expected_max_normal_factor,
    layout,
)

T = 0.1  # s, the toy step's compute


class _Free:
    """Collectives that cost nothing."""

    def cost(self, op: CollectiveOp, nbytes: float, group: Group) -> CollectiveCost:
        return CollectiveCost(0.0, 0.0, float("inf"), None, "free", 0.0)


@dataclass(frozen=True)
class _SyncWork(WorkBase):
    """Per step: ``phases`` compute phases of T/phases each, then one all-reduce of every rank
    that the compute waits for (one synchronising collective per step)."""

    group: Group
    phases: int = 1

    @property
    def optimizer(self) -> PhaseCost:
        return PhaseCost(0.0, 0.0, 0.0, 0)

    def run(
        self, env: simpy.Environment, rank: int, comm: Communicator, steps: int, cs: ComputeStream
    ) -> Generator[simpy.Event, object, None]:
        for step in range(steps):
            cs.begin_step(step)
            for _ in range(self.phases):
                yield from cs.run(T / self.phases, "compute")
            ev = comm.call(
                CollectiveKey(step, "backward", "sync", 0), CollectiveOp.ALL_REDUCE, 1.0, self.group
            )
            yield from cs.wait(ev, "sync")
            cs.end_step()

    def describe(self, key: CollectiveKey) -> dict[str, object]:
        return {}


@dataclass(frozen=True)
class _SyncStrategy(StrategyBase):
    phases: int = 1

    @property
    def label(self) -> str:
        return "sync"

    def memory(self, job: Job) -> MemoryBreakdown:
        return MemoryBreakdown(0, 0, 0, 0, 0, 0)

    def plan(self, job: Job, compute, mb) -> _SyncWork:
        return _SyncWork(Group(job.nodes, job.system.devices_per_node), self.phases)


def _job(
    nodes: int,
    steps: int,
    cv: float = 0.0,
    var: VariabilitySpec | None = None,
    seed: int = 0,
    strategy=None,
    every: bool = False,
) -> Job:
    j = experiment_from_dict(
        {
            "model": "gpt3-125m",
            "systems": ["dgx-a100"],
            "nodes": [nodes],
            "simulation": {"steps": steps, "warmup_steps": 0, "network": "analytic"},
        }
    ).jobs()[0]
    sim = dataclasses.replace(
        j.sim, compute_jitter_cv=cv, variability=var, seed=seed, simulate_all_ranks=every
    )
    return dataclasses.replace(j, sim=sim, strategy=strategy or _SyncStrategy())


def _step_times(job: Job) -> np.ndarray:
    r = run_job(job, _Free())
    return np.array([s.step_time_s for s in r.steps if not s.warmup])


@pytest.mark.parametrize(
    ("ranks", "every"),
    [(8, False), (64, False), (512, False), (4096, False), (8, True), (64, True)],
)
def test_iid_jitter_step_is_the_expected_max_of_p_draws(ranks: int, every: bool) -> None:
    """Rank ensemble (and, at 8 and 64 ranks, one process per rank) vs E[max of p draws]."""
    cv, steps = 0.08, 400
    mean = _step_times(_job(ranks // 8, steps, cv, every=every)).mean()
    want = T * expected_max_normal_factor(ranks, cv)
    print(
        f"\np={ranks} cv={cv}: mean step {mean * 1e3:.3f} ms, E[max] {want * 1e3:.3f} ms "
        f"({mean / want - 1:+.2%})"
    )
    assert mean == pytest.approx(want, rel=0.02)


def test_expected_max_quadrature_against_sampling() -> None:
    rng = np.random.default_rng(1)
    draws = np.maximum(0.05, 1 + 0.1 * rng.standard_normal((20_000, 64))).max(axis=1)
    assert expected_max_normal_factor(64, 0.1) == pytest.approx(draws.mean(), rel=2e-3)
    assert expected_max_normal_factor(1, 0.1) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("every", [False, True])
def test_persistent_stragglers_slow_every_step_by_their_slowdown(every: bool) -> None:
    var = VariabilitySpec(slow_rank_fraction=0.01, slow_rank_slowdown=1.37)
    steps = _step_times(_job(4, 5, var=var, every=every))
    assert steps == pytest.approx(np.full(5, 1.37 * T), rel=1e-12)
    assert int((layout(var, 4, 8, 8, 0).slowdown > 1).sum()) == 1  # round(0.32) → at least one


def test_stragglers_slow_a_ddp_step_by_their_slowdown() -> None:
    # no communication cost, so the step is compute only: the slowest rank's, × its slowdown
    base = experiment_from_dict(
        {
            "model": "gpt3-125m",
            "systems": ["mlu370-x8"],
            "nodes": [2],
            "simulation": {"steps": 2, "network": "analytic"},
        }
    ).jobs()[0]
    var = VariabilitySpec(slow_rank_fraction=0.1, slow_rank_slowdown=1.25)
    slow = dataclasses.replace(base, sim=dataclasses.replace(base.sim, variability=var))
    a, b = run_job(base, _Free()), run_job(slow, _Free())
    assert b.step_time_s == pytest.approx(1.25 * a.step_time_s, rel=1e-9)
    # the mean busy time counts the two slow ranks of 16
    assert b.compute_time_s == pytest.approx(a.compute_time_s * (14 + 2 * 1.25) / 16, rel=1e-9)


def test_host_noise_adds_the_max_of_poisson_interruptions() -> None:
    rate, dur, ranks, steps = 40.0, 2e-3, 64, 600
    var = VariabilitySpec(host_noise_rate_per_s=rate, host_noise_duration_s=dur)
    mean = _step_times(_job(ranks // 8, steps, var=var)).mean()
    k = np.arange(0, 60)
    cdf_max = stats.poisson.cdf(k, rate * T) ** ranks
    e_max = float(np.sum(1.0 - cdf_max))  # E[max] = Σ P(max > k)
    want = T + dur * e_max
    assert mean == pytest.approx(want, rel=0.01)


def test_ensemble_matches_explicit_ranks_at_512() -> None:
    """The same step-time distribution from one process per rank and from the rank ensemble."""
    var = VariabilitySpec(
        slow_rank_fraction=0.004,
        slow_rank_slowdown=1.02,
        host_noise_rate_per_s=20.0,
        host_noise_duration_s=1e-3,
    )
    strat = _SyncStrategy(phases=4)
    ens = _step_times(_job(64, 150, 0.05, var, seed=1, strategy=strat))
    exp = _step_times(_job(64, 150, 0.05, var, seed=2, strategy=strat, every=True))
    print(
        f"\n512 ranks: ensemble {ens.mean() * 1e3:.3f} ± {ens.std() * 1e3:.3f} ms, explicit "
        f"{exp.mean() * 1e3:.3f} ± {exp.std() * 1e3:.3f} ms"
    )
    assert ens.mean() == pytest.approx(exp.mean(), rel=0.005)
    assert stats.ks_2samp(ens, exp).pvalue > 0.01


@pytest.mark.slow
def test_ensemble_matches_explicit_ddp_at_512() -> None:
    """DDP (buckets overlapping the backward, interference) at 512 ranks: the rank ensemble and
    one SimPy process per rank give the same step-time distribution."""
    base = experiment_from_dict(
        {
            "model": "gpt3-125m",
            "systems": ["dgx-a100"],
            "nodes": [64],
            "simulation": {"steps": 30, "network": "analytic", "compute_jitter_cv": 0.05},
        }
    ).jobs()[0]
    var = VariabilitySpec(host_noise_rate_per_s=20.0, host_noise_duration_s=1e-3)

    def steps(every: bool, seed: int) -> np.ndarray:
        sim = dataclasses.replace(base.sim, variability=var, seed=seed, simulate_all_ranks=every)
        r = run_job(dataclasses.replace(base, sim=sim))
        return np.array([s.step_time_s for s in r.steps if not s.warmup])

    ens, exp = steps(False, 1), steps(True, 2)
    print(
        f"\nDDP 512 ranks: ensemble {ens.mean() * 1e3:.3f} ms, explicit {exp.mean() * 1e3:.3f} ms"
    )
    # the interference factor is decided at the slowest rank's time: within 2 %
    assert ens.mean() == pytest.approx(exp.mean(), rel=0.02)
    assert stats.ks_2samp(ens, exp).pvalue > 0.01


def test_degraded_nic_slows_the_collectives_crossing_it() -> None:
    base = experiment_from_dict(
        {"model": "gpt3-125m", "systems": ["dgx-a100"], "nodes": [4]}
    ).jobs()[0]
    system = base.system
    model = DegradedNicCostModel(system, frozenset({2}), 0.5)
    nominal, slow = AnalyticCostModel(system), AnalyticCostModel(degraded_system(system, 0.5))
    ar, big = CollectiveOp.ALL_REDUCE, 1 << 30
    across, others, inside = Group(4, 8), Group(2, 8), Group(1, 8, first_node=2)
    assert model.cost(ar, big, across) == slow.cost(ar, big, across)
    assert model.cost(ar, big, others) == nominal.cost(ar, big, others)  # nodes 0-1 only
    assert model.cost(ar, big, inside) == nominal.cost(ar, big, inside)  # no NIC crossed
    # network-bound: the bandwidth part of a large cross-node all-reduce doubles
    assert slow.cost(ar, big, across).bus_bw_Bps == pytest.approx(
        0.5 * nominal.cost(ar, big, across).bus_bw_Bps, rel=1e-9
    )


@pytest.mark.parametrize("network", ["analytic", "flow"])
def test_degraded_nic_slows_a_ddp_step(network: str) -> None:
    cfg = {
        "model": "gpt3-125m",
        "systems": ["mlu370-x8"],
        "nodes": [2],
        "simulation": {"steps": 1, "network": network},
    }
    base = run_job(experiment_from_dict(cfg).jobs()[0])
    cfg["variability"] = {"degraded_nic_fraction": 0.01, "degraded_nic_bw_fraction": 0.25}
    slow = run_job(experiment_from_dict(cfg).jobs()[0])
    assert slow.comm_time_s > 1.5 * base.comm_time_s
    assert slow.step_time_s > base.step_time_s


def test_variability_is_seeded_and_off_by_default() -> None:
    cfg = {
        "model": "gpt3-125m",
        "systems": ["dgx-a100"],
        "nodes": [2],
        "simulation": {"steps": 2, "network": "analytic", "seed": 3},
    }
    plain = run_job(experiment_from_dict(cfg).jobs()[0])
    cfg["variability"] = {}
    assert run_job(experiment_from_dict(cfg).jobs()[0]) == plain  # all defaults: nothing moves
    cfg["variability"] = {
        "slow_rank_fraction": 0.1,
        "slow_rank_slowdown": 1.1,
        "host_noise_rate_per_s": 50,
        "host_noise_duration_us": 500,
    }
    a = run_job(experiment_from_dict(cfg).jobs()[0])
    assert run_job(experiment_from_dict(cfg).jobs()[0]) == a
    assert a.step_time_s > plain.step_time_s
    cfg["simulation"]["seed"] = 4
    assert run_job(experiment_from_dict(cfg).jobs()[0]).step_time_s != a.step_time_s


@pytest.mark.parametrize(
    "section",
    [
        {"slow_rank_fraction": 0.1},
        {"slow_rank_slowdown": 2.0},
        {"degraded_nic_fraction": 0.1},
        {"host_noise_duration_us": 10},
        {"slow_rank_fraction": 1.5, "slow_rank_slowdown": 2},
    ],
)
def test_half_given_or_out_of_range_variability_is_refused(section: dict) -> None:
    with pytest.raises(ConfigError, match="variability"):
        experiment_from_dict(
            {"model": "gpt3-125m", "systems": ["dgx-a100"], "nodes": [1], "variability": section}
        )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_ensemble_mean_step_matches_explicit_ranks(strategy: str) -> None:
    """Mean step over replicas, GPT-3 125M on 16 DGX A100 nodes at jitter CV 0.1: the rank
    ensemble and one process per rank agree within 1.5 % (FSDP: its waits read the end of
    collectives that completed before the latest rank arrived)."""
    base = experiment_from_dict(
        {
            "model": "gpt3-125m",
            "systems": ["dgx-a100"],
            "nodes": [16],
            "strategy": {"kind": strategy},
            "simulation": {"steps": 12, "network": "analytic", "compute_jitter_cv": 0.1},
        }
    ).jobs()[0]

    def steps(every: bool, seed: int) -> np.ndarray:
        sim = dataclasses.replace(base.sim, seed=seed, simulate_all_ranks=every)
        r = run_job(dataclasses.replace(base, sim=sim))
        return np.array([s.step_time_s for s in r.steps if not s.warmup])

    ens = np.concatenate([steps(False, s) for s in range(3)])
    exp = np.concatenate([steps(True, 10 + s) for s in range(2)])
    print(f"\n{strategy}: ensemble {ens.mean() * 1e3:.3f} ms, explicit {exp.mean() * 1e3:.3f} ms")
    assert ens.mean() == pytest.approx(exp.mean(), rel=0.015)
