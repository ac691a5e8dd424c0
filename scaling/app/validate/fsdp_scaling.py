"""The FSDP weak-scaling study of ``scaling validate``: per-GPU throughput of a FULL_SHARD run at
a large GPU count over a small one, against a published curve (fsdp_scaling.csv; the published
change from the reference row of training_scaling.csv).

The mechanisms that make the per-GPU rate fall as ranks grow, each from its source and none
fitted to the curve: NCCL's ring (latency linear in ranks, bandwidth across nodes; the library
profile's tuner constants), the FSDP1 rate limiter's host stall before each gated all-gather
(``strategies.fsdp_host``, pytorch/pytorch#108234), and every collective waiting for the slowest
rank of a persistent device speed spread (``variability.device_speed_cv``, Sinha et al. SC'22),
whose expected slowest factor grows with the ranks. The optimizer step on the 1/p shard works
the other way. Per-GPU TFLOPS at both counts divide the same model FLOPs per GPU (weak scaling),
so their ratio is the ratio of tokens/s per GPU. Each count is the mean over ``seeds`` runs (the
spread is drawn per run).
"""

from __future__ import annotations

import dataclasses
import statistics

from scaling.app.validate.data import (
    DeviceOverrides,
    ScalingRun,
    fsdp_scaling_runs,
    result,
)
from scaling.app.validate.report import Point, StudyResult
from scaling.io.config import FSDPConfig, TrainingConfig
from scaling.io.topology import load_system
from scaling.model.hardware.encdec import EncDecShape
from scaling.model.hardware.workload import Checkpointing, TransformerShape, get_preset
from scaling.model.job import Job, SimSpec
from scaling.model.variability import VariabilitySpec

#: the study results this module returns, in studies.csv order
FSDP_SCALING_STUDIES = ("e2e-fsdp-t5-11b-a100-8-512",)


def _shape(run: ScalingRun) -> TransformerShape:
    shape = get_preset(run.model)
    if isinstance(shape, EncDecShape):  # the run's own decoder length
        return dataclasses.replace(shape, target_len=run.target_len)
    return shape


def scaling_job(run: ScalingRun, nodes: int, seed: int, overrides: DeviceOverrides | None) -> Job:
    """The run at ``nodes`` nodes with the run's device spread drawn from ``seed``."""
    system = load_system(run.system).spec
    if overrides and run.system in overrides:
        system = dataclasses.replace(system, device=overrides[run.system])
    training = TrainingConfig(
        seq_len=run.seq_len,
        micro_batch_size=run.micro_batch,
        activation_checkpointing=Checkpointing(run.checkpointing),
        flash_attention=run.flash_attention,
    ).to_spec()
    fsdp = FSDPConfig(
        kind="fsdp",
        param_dtype=run.param_dtype,  # type: ignore[arg-type]
        reduce_dtype=run.reduce_dtype,  # type: ignore[arg-type]
    ).to_spec()
    var = VariabilitySpec(device_speed_cv=run.device_speed_cv) if run.device_speed_cv else None
    sim = SimSpec(steps=1, warmup_steps=1, seed=seed, variability=var)
    return Job(system, _shape(run), nodes, training, fsdp, sim)


def per_gpu_ratio(run: ScalingRun, overrides: DeviceOverrides | None = None) -> float:
    """Mean tokens/s per GPU at the run's high node count over its low one."""
    from scaling.model.simulation import run_job

    def rate(nodes: int) -> float:
        jobs = (scaling_job(run, nodes, s, overrides) for s in range(run.seeds))
        return statistics.mean(run_job(j).tokens_per_s_per_device for j in jobs)

    low, high = run.nodes
    return rate(high) / rate(low)


def study_fsdp_scaling(overrides: DeviceOverrides | None = None) -> list[StudyResult]:
    """Every FSDP scaling comparison, held out from any fit."""
    out = []
    for name in FSDP_SCALING_STUDIES:
        runs = [r for r in fsdp_scaling_runs() if r.study == name]
        pts = tuple(
            Point(r.label, r.measured_ratio, per_gpu_ratio(r, overrides), False) for r in runs
        )
        out.append(result(name, pts, runs[0].source))
    return out
