"""The training studies of ``scaling validate``: single-node compute (MosaicML's MPT benchmarks
on A100 and H100, whose calibration points fitted the devices' in-loop compute constants; the
FlashAttention-2 GPT3-1.3B run) and end-to-end runs (Megatron-LM SC'21 Table 1 with DDP and with
TP x PP, the MPT H100 rows on 2-8 nodes, Ascend 910B rows for information)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from scaling.app.validate.data import (
    DeviceOverrides,
    compute_calibration,
    fa2_gpt3_measured,
    megatron_table1,
    mpt_shapes,
    result,
)
from scaling.app.validate.report import Point, StudyResult
from scaling.io.config import DDPConfig, FSDPConfig, TrainingConfig
from scaling.io.reference import ascend_training, mpt_benchmarks
from scaling.io.topology import load_system
from scaling.lazy import lazy_module
from scaling.model.hardware.system import SystemSpec
from scaling.model.hardware.workload import Checkpointing, TransformerShape, get_preset
from scaling.model.job import Job, SimSpec, TrainingSpec

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")

#: MPT shapes as benchmarked, by model (scaling/data/validation/mpt_shapes.csv, from
#: mosaicml/llm-foundry scripts/train/yamls/pretrain/mpt-*.yaml): layers, width, heads,
#: vocabulary; MLP ratio 4, learned positions, biases (the benchmark's parameter counts,
#: reference/mpt_benchmarks.csv num_params, are reproduced exactly: tests/test_validate.py).
MPT_SHAPES = mpt_shapes()

#: Calibration points per device (model, sequence length), single node: the only points the
#: device's in-loop compute constants were fitted to (tools/fit_compute.py;
#: scaling/data/validation/compute_calibration.csv). Chosen to span the size and sequence range
#: with as few points as the two constants need; everything else in the range is held out.
COMPUTE_CALIBRATION = compute_calibration()

#: The MPT benchmark's GPU name of each system.
MPT_GPU = {"dgx-a100": "a100_80gb", "dgx-h100": "h100_80gb"}


def mpt_shape(model: str, seq: int) -> TransformerShape:
    """An MPT model as benchmarked (position table as long as the sequence)."""
    n_layers, hidden, heads, vocab = MPT_SHAPES[model]
    return TransformerShape(f"mpt-{model}", n_layers, hidden, heads, 4 * hidden, vocab, seq, heads)


def _unbounded_memory(system: SystemSpec) -> SystemSpec:
    # The benchmark runs did fit in memory; the memory model is not what these studies check,
    # and its activation estimate is conservative for some of them (e.g. MPT-760m, micro-batch
    # 24 at 2k). Capacity changes no time in the model, only feasibility.
    return dataclasses.replace(system, device=dataclasses.replace(system.device, mem_bytes=1e18))


def mpt_job(system: SystemSpec, row: pd.Series) -> Job:
    """The benchmark run of ``row`` (reference/mpt_benchmarks.csv) as a job: Composer FSDP
    FULL_SHARD with mixed precision DEFAULT (bf16 parameters, fp32 gradient reduction)."""
    seq = int(row.seq_len)
    nodes = max(1, int(row.gpus) // system.devices_per_node)
    ckpt = Checkpointing.FULL if bool(row.activation_checkpointing) else Checkpointing.NONE
    training = _training(int(row.micro_batch), int(row.grad_accum), seq, "bf16", ckpt, True)
    fsdp = FSDPConfig(kind="fsdp", param_dtype="bf16", reduce_dtype="fp32").to_spec()
    return Job(
        _unbounded_memory(system),
        mpt_shape(str(row.model), seq),
        nodes,
        training,
        fsdp,
        SimSpec(steps=1, warmup_steps=1),
    )


def _training(
    micro_batch: int,
    grad_accum: int,
    seq: int,
    dtype: str,
    checkpointing: Checkpointing,
    flash: bool,
) -> TrainingSpec:
    # through the config schema, so the defaults are those of a user's config
    return TrainingConfig(
        seq_len=seq,
        micro_batch_size=micro_batch,
        grad_accum_steps=grad_accum,
        dtype=dtype,  # type: ignore[arg-type]
        activation_checkpointing=checkpointing,
        flash_attention=flash,
    ).to_spec()


def _system(name: str, overrides: DeviceOverrides | None) -> SystemSpec:
    spec = load_system(name).spec
    if overrides and name in overrides:
        spec = dataclasses.replace(spec, device=overrides[name])
    return spec


def _tokens_per_device(job: Job) -> float:
    from scaling.model.simulation import run_job

    res = run_job(job)
    return res.tokens_per_s / res.devices


def mpt_rows(system: str, *, single_node: bool) -> pd.DataFrame:
    """The MPT benchmark rows of ``system`` in the validated range: 125M–13B, 2k–8k."""
    df = mpt_benchmarks()
    df = df[(df.gpu == MPT_GPU[system]) & df.seq_len.between(2048, 8192)]
    df = df[df.model.isin(list(MPT_SHAPES))]
    return df[df.gpus == 8] if single_node else df[df.gpus > 8]


def compute_points(
    system: str, overrides: DeviceOverrides | None = None, *, fitted_only: bool = False
) -> list[Point]:
    """Model vs measured tokens/s per GPU for the single-node MPT rows of ``system``
    (``fitted_only``: just its calibration points, for the fit)."""
    spec = _system(system, overrides)
    cal = set(COMPUTE_CALIBRATION[system])
    pts = []
    for _, row in mpt_rows(system, single_node=True).iterrows():
        key = (str(row.model), int(row.seq_len))
        if fitted_only and key not in cal:
            continue
        label = f"MPT-{row.model} s={row.seq_len} mb={row.micro_batch}" + (
            " ckpt" if bool(row.activation_checkpointing) else ""
        )
        got = _tokens_per_device(mpt_job(spec, row))
        pts.append(Point(label, float(row.tokens_per_s_per_gpu), got, key in cal))
    return pts


def study_compute_mpt(overrides: DeviceOverrides | None = None) -> list[StudyResult]:
    """Single-node MPT training throughput on A100 and H100 (tokens/s per GPU)."""
    return [
        result(
            f"compute-{system.removeprefix('dgx-')}-mpt", tuple(compute_points(system, overrides))
        )
        for system in ("dgx-a100", "dgx-h100")
    ]


#: DDP's first two iterations differ from the steady state (its first bucket, then the bucket
#: rebuild after iteration 0): measure the third.
_DDP_WARMUP = 2


def fa2_gpt3_point(overrides: DeviceOverrides | None = None) -> Point:
    """FlashAttention-2 paper Table 1: GPT3-1.3B, 2k, 8x A100-80GB, TFLOP/s per GPU with
    6·s·N + 12·L·h·s² FLOPs per sequence (its row of reference/training_scaling.csv); config
    gpt3xl-flash.yaml: micro-batch 8, global 512 (Dao 2023, arXiv:2307.08691;
    Dao-AILab/flash-attention training/configs/experiment/pile)."""
    from scaling.model.simulation import run_job

    shape = get_preset("gpt3-1.3b")
    seq = 2048
    job = Job(
        _system("dgx-a100", overrides),
        shape,
        1,
        _training(8, 8, seq, "bf16", Checkpointing.NONE, True),
        DDPConfig(gradient_as_bucket_view=True).to_spec(),
        SimSpec(steps=1, warmup_steps=_DDP_WARMUP),
    )
    res = run_job(job)
    per_seq = 6 * seq * shape.params() + 12 * shape.n_layers * shape.hidden * seq**2
    tflops = per_seq * res.global_batch / res.step_time_s / res.devices / 1e12
    return Point("GPT3-1.3B s=2048 mb=8 DDP, 8 A100", fa2_gpt3_measured(), tflops, True)


def study_fa2(overrides: DeviceOverrides | None = None) -> list[StudyResult]:
    """FlashAttention-2 GPT-3 1.3B on 8 A100 (the fitted compute point)."""
    return [result("compute-a100-flashattention2-gpt3-1.3b", (fa2_gpt3_point(overrides),))]


# ---- end to end ---------------------------------------------------------------------------


def megatron_point(overrides: DeviceOverrides | None = None) -> Point:
    """Megatron-LM SC'21 Table 1: GPT 1.7B, 32 A100 (4 DGX nodes), pure data parallel, global
    batch 512, TFLOP/s per GPU counted with eq. (3), which includes the recomputed forward (its
    row of reference/training_scaling.csv; NVIDIA/Megatron-LM examples/sc21: micro-batch 16, overlapping DDP, full recompute, fp16,
    unfused attention with dropout 0.1)."""
    from scaling.model.simulation import run_job

    shape = get_preset("megatron-1.7b")
    seq, mbs = 2048, 16
    job = Job(
        _system("dgx-a100", overrides),
        shape,
        4,
        _training(mbs, 1, seq, "fp16", Checkpointing.FULL, False),
        DDPConfig(overlap=True).to_spec(),
        SimSpec(steps=1, warmup_steps=_DDP_WARMUP),
    )
    res = run_job(job)
    b, nl, h, v = res.global_batch, shape.n_layers, shape.hidden, shape.vocab
    flops = 96 * b * seq * nl * h**2 * (1 + seq / (6 * h) + v / (16 * nl * h))
    # the row of Table 1 without model parallelism (TP x PP = 1)
    (measured,) = (r[-1] for r in MEGATRON_TABLE1 if r[4] * r[5] == 1)
    return Point(
        "GPT 1.7B, 32 A100, DP, ckpt", measured, flops / res.step_time_s / 32 / 1e12, False
    )


def study_megatron(overrides: DeviceOverrides | None = None) -> list[StudyResult]:
    """Megatron-LM GPT 1.7B, 32 A100 data-parallel (SC21 Table 1), not fitted."""
    return [result("e2e-megatron-gpt1.7b-32a100", (megatron_point(overrides),))]


#: Megatron-LM SC'21 Table 1 (arXiv:2104.04473; the same table as NVIDIA/Megatron-LM
#: images/cases_april2021.png), read from reference/training_scaling.csv: params (B), heads,
#: hidden, layers, TP, PP, GPUs, global batch, achieved TFLOP/s per GPU (vocabulary 51,200,
#: sequence 2048).
MEGATRON_TABLE1 = megatron_table1()
#: the model-parallel rows ``scaling validate`` simulates (3.6B-145.6B, PP <= 8); the 310B-1T
#: rows (PP 16-64, 10^5-10^6 simulated events) are in tests/test_megatron.py's slow tier
MEGATRON_TABLE1_TP_PP = tuple(r for r in MEGATRON_TABLE1 if r[4] * r[5] > 1 and r[5] <= 8)


def megatron_tp_pp_point(row: tuple[float, ...], overrides: DeviceOverrides | None = None) -> Point:
    """One model-parallel row of SC'21 Table 1 under the Megatron strategy (TP x PP x DP, 1F1B),
    every row with the same inputs: fp16, micro-batch 1, full recomputation, unfused attention
    (the 2021 code base), gradients all-reduced in fp16 after the flush (Megatron-LM's default
    under --fp16: arguments.py leaves accumulate_allreduce_grads_in_fp32 off; it forces it on
    only for bf16); TFLOP/s per GPU by eq. (3), recomputation included."""
    from scaling.model.simulation import run_job
    from scaling.model.strategies.megatron import MegatronSpec

    params, heads, h, layers, t, p, gpus, batch, ref = row
    a, hh, nl, tt, pp, g, b = (int(x) for x in (heads, h, layers, t, p, gpus, batch))
    shape = TransformerShape(f"megatron-{params}b", nl, hh, a, 4 * hh, 51200, 2048, a)
    d = g // (tt * pp)
    seq = 2048
    job = Job(
        _system("dgx-a100", overrides),
        shape,
        g // 8,
        dataclasses.replace(
            _training(1, b // d, seq, "fp16", Checkpointing.FULL, False), param_dtype="fp16"
        ),
        MegatronSpec(tt, pp),
        SimSpec(steps=1, warmup_steps=0),
    )
    res = run_job(job)
    flops = 96 * b * seq * nl * hh**2 * (1 + seq / (6 * hh) + 51200 / (16 * nl * hh))
    label = f"GPT {params}B TP{tt} x PP{pp}, {g} A100"
    return Point(label, ref, flops / res.step_time_s / g / 1e12, False)


def study_megatron_tp_pp(overrides: DeviceOverrides | None = None) -> list[StudyResult]:
    """Megatron-LM SC'21 Table 1, the TP / TP x PP rows (3.6B-145.6B), not fitted."""
    pts = tuple(megatron_tp_pp_point(r, overrides) for r in MEGATRON_TABLE1_TP_PP)
    return [result("e2e-megatron-sc21-table1-tp-pp", pts)]


def study_mpt_multinode(overrides: DeviceOverrides | None = None) -> list[StudyResult]:
    """MPT H100 rows on 2–8 nodes (none fitted). The benchmark does not state the H100
    cluster's inter-node fabric; the DGX H100 entry's 8x 400 Gb/s is used."""
    spec = _system("dgx-h100", overrides)
    pts = []
    for _, row in mpt_rows("dgx-h100", single_node=False).iterrows():
        got = _tokens_per_device(mpt_job(spec, row))
        label = f"MPT-{row.model} s={row.seq_len} {row.gpus} GPUs mb={row.micro_batch}"
        pts.append(Point(label, float(row.tokens_per_s_per_gpu), got, False))
    return [result("e2e-h100-mpt-multinode", tuple(pts))]


def study_ascend(overrides: DeviceOverrides | None = None) -> list[StudyResult]:
    """Ascend 910B LLaMA2-7B rows (reference/ascend_training.csv), for information: the runs'
    batch settings are not all published, so the model is run at the stated ones (see notes)."""
    from scaling.model.simulation import run_job

    ref = ascend_training()
    spec = _unbounded_memory(_system("atlas-800t-a2", overrides))
    shape = get_preset("llama2-7b")
    pts = []
    for _, row in ref[ref.simulate == "yes"].iterrows():
        seq = int(row.seq_len)
        job = Job(
            spec,
            shape,
            1,
            _training(int(row.micro_batch), 1, seq, "bf16", Checkpointing(row.checkpointing), True),
            FSDPConfig(kind="fsdp").to_spec(),
            SimSpec(steps=1, warmup_steps=1),
        )
        res = run_job(job)
        pts.append(
            Point(str(row.label), float(row.tokens_per_s_per_npu), res.tokens_per_s / 8, False)
        )
    return [result("info-ascend910b-llama2-7b", tuple(pts))]
