"""FSDP FULL_SHARD at scale: the rate limiter's host stall (strategies.fsdp_host) and the
direction of T5-11B's per-GPU throughput from 8 to 512 A100 (scaling validate's study
e2e-fsdp-t5-11b-a100-8-512)."""

from __future__ import annotations

import dataclasses

import pytest
import simpy

from scaling.app.validate.data import ScalingRun, fsdp_scaling_runs
from scaling.app.validate.fsdp_scaling import per_gpu_ratio, scaling_job
from scaling.io.config import ConfigError, experiment_from_dict
from scaling.model.simulation import run_job
from scaling.model.strategies.fsdp import FSDPSpec
from scaling.model.strategies.fsdp_host import LIMITER_RESUME_S, after_limiter


def test_after_limiter_fires_resume_after_the_gate() -> None:
    env = simpy.Environment()
    gate = env.timeout(3.0)
    out = after_limiter(env, gate, 0.25)
    assert out is not None
    env.run(out)
    assert env.now == pytest.approx(3.25)
    assert after_limiter(env, None, 0.25) is None  # ungated: the first units of a forward
    assert after_limiter(env, gate, 0.0) is gate


def test_resume_in_effect() -> None:
    assert FSDPSpec().resume_s == LIMITER_RESUME_S == 235e-6  # pytorch/pytorch#108234
    assert FSDPSpec(api="fsdp2").resume_s == 0.0  # no CPU-side limiter in fully_shard
    assert FSDPSpec(limit_all_gathers=0).resume_s == 0.0
    assert FSDPSpec(limiter_resume_s=1e-3).resume_s == 1e-3


def test_limiter_resume_is_fsdp1_only() -> None:
    cfg = {
        "model": "gpt3-125m",
        "systems": ["dgx-a100"],
        "nodes": [1],
        "strategy": {"kind": "fsdp", "api": "fsdp2", "limiter_resume_us": 100},
    }
    with pytest.raises(ConfigError) as err:
        experiment_from_dict(cfg)
    assert "\n" not in str(err.value) and "limiter_resume_us" in str(err.value)


def _step(resume_us: float, nodes: int = 8) -> float:
    cfg = {
        "model": "gpt3-1.3b",
        "systems": ["dgx-a100"],
        "nodes": [nodes],
        "strategy": {"kind": "fsdp", "reduce_dtype": "bf16", "limiter_resume_us": resume_us},
        "training": {"seq_len": 512, "micro_batch_size": 1},
        "simulation": {"steps": 1, "warmup_steps": 1},
    }
    return run_job(experiment_from_dict(cfg).jobs()[0]).step_time_s


def test_limiter_stall_exposes_gated_all_gathers_only_when_they_do_not_fit() -> None:
    # a small micro-batch: each block's forward is short next to its all-gather, so the host's
    # time between the limiter's sync and the launch adds to the step; never subtracts
    steps = [_step(r) for r in (0.0, 235.0, 2000.0)]
    assert steps[0] <= steps[1] < steps[2]
    # 22 gated forward all-gathers (units 3 … 24; the root and units 1, 2 are not gated) can
    # add at most their resume time each
    assert steps[2] - steps[0] <= 22 * 2000e-6 + 1e-9


def _t5_run(**changes: object) -> ScalingRun:
    (run, *_) = fsdp_scaling_runs()
    return dataclasses.replace(run, seeds=1, **changes)  # type: ignore[arg-type]


def test_t5_11b_per_gpu_throughput_falls_8_to_512_with_the_device_spread() -> None:
    # every collective waits for the slowest rank: E[max of p] grows with p (Sinha et al. cv)
    assert per_gpu_ratio(_t5_run(device_speed_cv=0.012)) < 0.995


def test_t5_11b_does_not_fall_when_no_mechanism_says_so() -> None:
    # micro-batch 8: every all-gather and reduce-scatter hides behind T5-11B's 5-11 ms units
    # at 512 ranks too, and the optimizer's 1/p shard gains: no fall without the spread
    run = _t5_run(device_speed_cv=0.0)
    assert per_gpu_ratio(run) > 1.0
    res = run_job(scaling_job(run, 64, 0, None))
    assert res.exposed_comm_share < 0.01


def test_t5_11b_falls_when_its_units_are_shorter_than_their_all_gathers() -> None:
    # micro-batch 2: a decoder block's forward (2.8 ms) is shorter than its 537 MB all-gather
    # at 512 ranks (~4.4 ms, the ring across 64 nodes) but not at 8 (~2.2 ms on NVSwitch)
    assert per_gpu_ratio(_t5_run(device_speed_cv=0.0, micro_batch=2)) < 0.95
