"""The persistent per-device speed spread (``variability.device_speed_cv``) and FSDP at scale:
a job that synchronises every layer runs at its slowest device, so per-GPU throughput falls as
ranks grow (E[max of p draws] rises as √(2 ln p))."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from scaling.io.config import experiment_from_dict
from scaling.io.errors import ConfigError
from scaling.model.job import Job
from scaling.model.simulation import run_job
from scaling.model.variability import VariabilitySpec, expected_max_normal_factor, layout

CV = 0.012  # the A100 spread the FSDP validation uses (docs/guides/fsdp-at-scale.md)


def test_spread_draw_has_the_given_cv_and_keeps_other_draws() -> None:
    spec = VariabilitySpec(device_speed_cv=0.02)
    f = layout(spec, 512, 8, 8, seed=7).slowdown
    assert f.shape == (4096,)
    assert np.mean(f) == pytest.approx(1.0, abs=0.002)
    assert np.std(f) == pytest.approx(0.02, rel=0.05)
    assert np.array_equal(f, layout(spec, 512, 8, 8, seed=7).slowdown)  # seeded
    # drawn last: the slow ranks and degraded NICs of a run do not move when a spread is added
    base = VariabilitySpec(0.01, 1.5, 0.01, 0.5)
    a, b = (
        layout(base, 64, 8, 8, 3),
        layout(dataclasses.replace(base, device_speed_cv=0.02), 64, 8, 8, 3),
    )
    assert a.degraded == b.degraded
    assert np.array_equal(a.slowdown > 1.2, b.slowdown > 1.2)


def _fsdp(nodes: int, cv: float, seed: int = 0) -> Job:
    """The FSDP-at-scale guide's job (tools/fsdp_at_scale.py builds it; one definition)."""
    spec = importlib.util.spec_from_file_location(
        "fsdp_at_scale", Path(__file__).parents[1] / "tools" / "fsdp_at_scale.py"
    )
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    job: Job = tool.job(nodes, cv, seed)
    return job


def test_fsdp_per_gpu_throughput_falls_from_8_to_512_a100s_with_the_spread() -> None:
    """FULL_SHARD, 13B, 8 → 512 A100: without a spread the model gains (the optimizer shrinks
    as 1/p, every collective hidden); with identical-SKU spread the slowest GPU paces every
    all-gather and the step grows by the slowest device's factor, as the mechanism says."""
    step = {(n, cv): run_job(_fsdp(n, cv)).step_time_s for n in (1, 64) for cv in (0.0, CV)}
    assert step[(64, 0.0)] <= step[(1, 0.0)] * 1.001  # identical devices: no loss with scale
    assert step[(64, CV)] > step[(1, CV)] * 1.01  # throughput per GPU falls > 1 %
    # the loss is the slowest device's factor, not something else: each step is its
    # identical-device step times max(factor) over the run's ranks, within 0.5 %
    for n in (1, 64):
        job = _fsdp(n, CV)
        worst = float(layout(job.sim.variability, n, 8, 8, job.sim.seed).slowdown.max())
        assert step[(n, CV)] == pytest.approx(step[(n, 0.0)] * worst, rel=0.005)


def test_expected_loss_8_to_512_in_closed_form() -> None:
    """E[max] of the speed factor: 1 + 1.42·cv at 8 devices, 1 + 3.04·cv at 512 (normal order
    statistics), so the expected per-GPU loss 8 → 512 is ≈ 1.6·cv."""
    lo, hi = expected_max_normal_factor(8, CV), expected_max_normal_factor(512, CV)
    assert (lo - 1) / CV == pytest.approx(1.4236, abs=1e-3)
    # order-statistics tables: 3.0367 at n = 500, 3.2414 at n = 1000; 512 lies just above 500
    assert 3.0367 < (hi - 1) / CV < 3.06


@pytest.mark.parametrize("cv", [-0.1, 0.5, 0.9])
def test_out_of_range_spread_is_refused(cv: float) -> None:
    with pytest.raises(ConfigError, match="device_speed_cv"):
        experiment_from_dict(
            {
                "model": "gpt3-125m",
                "systems": ["dgx-a100"],
                "nodes": [1],
                "variability": {"device_speed_cv": cv},
            }
        )
