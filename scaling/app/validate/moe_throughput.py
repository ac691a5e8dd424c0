"""MoE training throughput on H100 (reference/moe_training.csv): Megatron-Core's Mixtral 8x7B
(held out, judged) and the Megatron Bridge MoE rows (FP8, reported for information), each run
as its recipe runs it with expert parallelism (``MegatronSpec.expert_parallel``), uniform
dropless routing (the recipes force-balance the tokens), the distributed optimizer with
``overlap_grad_reduce``, Megatron's rank order ``tp-dp-pp``, no activation recomputation.
Which reference rows run, and under which study, is data (scaling/data/validation/
moe_throughput.csv); a row the strategy cannot run is listed with the reason.

Metrics: the Bridge tables give tokens/s per GPU; the Megatron-LM README gives model TFLOP/s
per GPU by Megatron-LM's own count (``num_floating_point_operations``), which for Mixtral's
shape (GQA, SwiGLU, no MLA) is the model's :meth:`MoEShape.flops_per_token` (tests check the
two agree), so the model's TFLOP/s is its tokens/s per GPU times that count.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass

from scaling.app.validate.data import VALIDATION_DIR, DeviceOverrides, result
from scaling.app.validate.report import Point, StudyResult
from scaling.app.validate.training import _system, _training, _unbounded_memory
from scaling.io.reference import reference_rows
from scaling.model.hardware.workload import Checkpointing, get_preset
from scaling.model.job import Job, SimSpec

#: the studies of this module, in report order
MOE_STUDIES = ("e2e-moe-mixtral-8x7b-h100", "e2e-moe-megatron-bridge-h100")


@dataclass(frozen=True, slots=True)
class MoERun:
    """One reference row to simulate: its study, the metric compared and the row itself."""

    study: str
    metric: str  # "tflops" or "tokens"
    row: dict[str, str]


def moe_runs() -> list[MoERun]:
    """The rows of reference/moe_training.csv a study compares with (moe_throughput.csv)."""
    ref = {r["label"]: r for r in reference_rows("moe_training.csv")}
    with open(VALIDATION_DIR / "moe_throughput.csv", newline="") as f:
        return [MoERun(r["study"], r["metric"], ref[r["label"]]) for r in csv.DictReader(f)]


def moe_job(row: dict[str, str], system: str = "dgx-h100",
            overrides: DeviceOverrides | None = None) -> Job:  # fmt: skip
    """The run of a reference/moe_training.csv row as a job."""
    from scaling.model.strategies.megatron import MegatronSpec

    shape = get_preset(row["model"])
    gpus, gbs, mbs = int(row["gpus"]), int(row["global_batch"]), int(row["micro_batch"])
    t, p, ep = int(row["tp"]), int(row["pp"]), int(row["ep"])
    v = int(row["vp"]) if row["vp"] else 1
    d = gpus // (t * p)
    seq = int(row["seq_len"])
    training = dataclasses.replace(
        _training(mbs, gbs // (d * mbs), seq, row["precision"], Checkpointing.NONE, True),
        param_dtype="bf16",
    )
    spec = MegatronSpec(
        t,
        p,
        v,
        sequence_parallel=t > 1,
        order="tp-dp-pp",
        distributed_optimizer=True,
        overlap_grad_reduce=True,
        expert_parallel=ep,
    )
    sys_spec = _unbounded_memory(_system(system, overrides))
    return Job(sys_spec, shape, gpus // sys_spec.devices_per_node, training, spec,
               SimSpec(steps=1, warmup_steps=1))  # fmt: skip


def moe_point(run: MoERun, overrides: DeviceOverrides | None = None) -> Point:
    """Model vs published figure for one row (tokens/s or model TFLOP/s per GPU)."""
    from scaling.model.simulation import run_job

    res = run_job(moe_job(run.row, overrides=overrides))
    tokens = res.tokens_per_s / res.devices
    if run.metric == "tflops":
        flops = get_preset(run.row["model"]).flops_per_token(int(run.row["seq_len"]))
        measured, got = float(run.row["model_tflops_per_gpu"]), tokens * flops / 1e12
    else:
        measured, got = float(run.row["tokens_per_s_per_gpu"]), tokens
    return Point(run.row["label"], measured, got, False)


def study_moe_throughput(overrides: DeviceOverrides | None = None) -> list[StudyResult]:
    """Every MoE throughput study, held out from every fit."""
    pts: dict[str, list[Point]] = {name: [] for name in MOE_STUDIES}
    sources: dict[str, str] = {}
    for run in moe_runs():
        pts[run.study].append(moe_point(run, overrides))
        sources.setdefault(run.study, run.row["source"])
    return [result(name, tuple(pts[name]), sources[name]) for name in MOE_STUDIES]
