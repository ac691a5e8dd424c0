"""Megatron-Core on H100 (NeMo and Megatron Bridge performance summaries,
reference/megatron_core_h100.csv). One row (``role`` ``calibration``: LLAMA2-7B on one node, the
row with the least communication) is what the H100's ``fp8_matmul_efficiency`` is fitted to;
every other row is held out from every fit. Each row runs as its recipe does: sequence
parallelism with TP, the distributed optimizer, ``overlap_grad_reduce``,
``overlap_param_gather``, ``tp_comm_overlap`` (Transformer Engine userbuffers) with TP, the
interleaved 1F1B schedule, context parallelism where the row has it, FP8 as Transformer Engine
runs it with cuDNN's fused attention (model.hardware.precision), Megatron's rank order
(``tp-dp-pp``), the row's pipeline split (``pipeline_split``), no activation recomputation,
bf16 gradient reduction (the recipes' ``grad_reduce_in_fp32 = False``; an assumption where a row
does not say). The same rows with every overlap off (:func:`megatron_core_points`) show how much
of the difference is the overlap (docs/guides/megatron-overlap.md)."""

from __future__ import annotations

import dataclasses

from scaling.app.validate.data import DeviceOverrides, result
from scaling.app.validate.report import Point, StudyResult
from scaling.app.validate.training import _system, _training, _unbounded_memory
from scaling.io.reference import reference_rows
from scaling.model.hardware.workload import Checkpointing, Norm, TransformerShape, get_preset
from scaling.model.job import Job, SimSpec

#: Shapes the presets lack, as the row's ``shape_source`` gives them.
EXTRA_SHAPES = {
    "nemotron4-340b": TransformerShape(
        "nemotron4-340b", 96, 18432, 96, 73728, 256000, 4096, 8,
        gated_mlp=False, bias=False, tied_embeddings=False, norm=Norm.LAYERNORM,
    ),
    # Megatron-LM README's scaling runs (images/model_table.png, 177B row): GPT-3 175B's
    # layers, width and heads with a 131,072-token vocabulary and 4,096-token sequences;
    # Megatron's GPT defaults (learned positions, GeLU MLP 4h, biases, LayerNorm); an untied
    # output layer: the table's parameter counts (1.7B ... 462B) are those of untied shapes
    "megatron-gpt-177b": TransformerShape(
        "megatron-gpt-177b", 96, 12288, 96, 4 * 12288, 131072, 4096, 96, tied_embeddings=False,
    ),
    # Llama 3.1 model card: 126 layers, hidden 16384, 128 heads, 8 KV heads, MLP 53248
    "llama3.1-405b": TransformerShape(
        "llama3.1-405b", 126, 16384, 128, 53248, 128256, 0, 8,
        gated_mlp=True, bias=False, tied_embeddings=False, norm=Norm.RMSNORM,
    ),
}  # fmt: skip
#: The row's ``pipeline_split``: ``even`` (Megatron-Core's default, ``L/(p·v)`` blocks per
#: virtual stage) or ``embedding+loss`` (``--account-for-embedding-in-pipeline-split`` and
#: ``--account-for-loss-in-pipeline-split``, as the Llama 3.1 405B recipe sets them).
PIPELINE_SPLITS = {"even": False, "embedding+loss": True}


def megatron_core_rows(simulated: bool = True) -> list[dict[str, str]]:
    """The rows of reference/megatron_core_h100.csv the strategy can run (``simulated``), or the
    others."""
    rows = reference_rows("megatron_core_h100.csv")
    return [r for r in rows if (r["simulate"] == "yes") == simulated]


def megatron_core_job(row: dict[str, str], overlap: bool, system: str = "dgx-h100",
                      overrides: DeviceOverrides | None = None) -> Job:  # fmt: skip
    """The run of ``row`` as a job (``overlap``: the recipe's overlap options on)."""
    from scaling.model.strategies.megatron import MegatronSpec

    name = row["model"]
    shape = EXTRA_SHAPES[name] if name in EXTRA_SHAPES else get_preset(name)
    gpus, gbs, mbs = int(row["gpus"]), int(row["global_batch"]), int(row["micro_batch"])
    t, p, v, c = int(row["tp"]), int(row["pp"]), int(row["vp"]), int(row["cp"])
    d = gpus // (t * c * p)
    seq = int(row["seq_len"])
    training = dataclasses.replace(
        _training(mbs, gbs // (d * mbs), seq, row["precision"], Checkpointing.NONE, True),
        param_dtype="bf16",
        # Transformer Engine's DotProductAttention runs cuDNN's fused attention on Hopper
        attention_kernel="cudnn",
    )
    spec = MegatronSpec(
        t,
        p,
        v,
        sequence_parallel=t > 1,
        context=c,
        order="tp-dp-pp",
        distributed_optimizer=True,
        overlap_grad_reduce=overlap,
        overlap_param_gather=overlap,
        tp_comm_overlap=overlap and t > 1,
        account_for_embedding=PIPELINE_SPLITS[row["pipeline_split"]],
        account_for_loss=PIPELINE_SPLITS[row["pipeline_split"]],
    )
    sys_spec = _unbounded_memory(_system(system, overrides))
    # one warm-up step: --overlap-param-gather's gathers are waited for by the next step
    return Job(sys_spec, shape, gpus // sys_spec.devices_per_node, training, spec,
               SimSpec(steps=1, warmup_steps=1))  # fmt: skip


def megatron_core_points(overlap: bool, overrides: DeviceOverrides | None = None) -> list[Point]:
    """Model vs published tokens/s per GPU, every runnable row."""
    from scaling.model.simulation import run_job

    pts = []
    for row in megatron_core_rows():
        res = run_job(megatron_core_job(row, overlap, overrides=overrides))
        got = res.tokens_per_s / res.devices
        fitted = row["role"] == "calibration"  # the device's fp8_matmul_efficiency is fitted to it
        pts.append(Point(row["label"], float(row["tokens_per_s_per_gpu"]), got, fitted))
    return pts


def strong_scaling_points(rows: list[dict[str, str]], points: list[Point]) -> list[Point]:
    """Strong scaling, published vs model: in each series of ``rows`` (the same model, global
    batch, sequence, precision and source at two or more GPU counts), the tokens/s per GPU at
    each larger count over that at the series' smallest (``points``: the rows' points, in
    order). The ratio leaves out an error of the level common to the series."""
    series: dict[tuple[str, ...], list[tuple[int, Point]]] = {}
    for row, pt in zip(rows, points, strict=True):
        key = (row["model"], row["global_batch"], row["seq_len"], row["precision"], row["source"])
        series.setdefault(key, []).append((int(row["gpus"]), pt))
    out = []
    for members in series.values():
        g0, base = min(members, key=lambda m: m[0])
        for g, pt in sorted(members, key=lambda m: m[0]):
            if g > g0:
                out.append(Point(f"{pt.label} / {g0} GPUs", pt.measured / base.measured,
                                 pt.model / base.model, pt.fitted or base.fitted))  # fmt: skip
    return out


def study_megatron_core(overrides: DeviceOverrides | None = None) -> list[StudyResult]:
    """Megatron-Core H100 rows as their recipes run them, and their strong-scaling ratios
    (``megatron_core_points(False)``: the same rows with every overlap off, for
    docs/guides/megatron-overlap.md's before/after)."""
    points = megatron_core_points(True, overrides)
    strong = strong_scaling_points(megatron_core_rows(), points)
    return [result("e2e-megatron-core-h100", tuple(points)),
            result("e2e-megatron-core-h100-strong", tuple(strong))]  # fmt: skip
