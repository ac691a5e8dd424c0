"""Where a device's compute time goes: kernels grouped by kind for ``scaling explain``
(:func:`op_category`), one micro-batch's forward + backward split by kind
(:func:`compute_breakdown`), and a rank's share per step (:func:`step_compute_breakdown`).
The times are :class:`~scaling.model.hardware.compute.ComputeModel`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaling.model.hardware.compute import (
    ComputeModel,
    Op,
    block_groups,
    model_head_ops,
    recompute_ops,
)
from scaling.model.hardware.workload import Checkpointing, TransformerShape

if TYPE_CHECKING:
    from scaling.model.job import Job


#: How :func:`op_category` groups kernels for explanations (prefix of the op name → label).
OP_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("*.bgrad", "bias gradients"),
    # MoE blocks (strategies/megatron/experts.py)
    ("experts.act", "activations"),
    ("experts.", "expert GEMMs (grouped)"),
    ("router", "router and gating"),
    ("gate", "router and gating"),
    ("permute", "token permutation"),
    ("unpermute", "token permutation"),
    ("attention", "attention (fused)"),
    ("attn.softmax", "softmax / dropout (attention)"),
    ("attn.dropout", "softmax / dropout (attention)"),
    ("attn.", "attention GEMMs"),
    ("ln", "layer norms"),
    ("act", "activations"),
    ("residual", "residual adds"),
    ("cross_entropy", "cross-entropy (vocabulary)"),
    ("embedding", "embedding"),
    ("logits", "GEMMs"),
)


def op_category(name: str) -> str:
    """The explanation label of a kernel (``"GEMMs"`` for the dense weight GEMMs)."""
    for prefix, label in OP_CATEGORIES:
        if name.startswith(prefix) or (prefix.startswith("*") and name.endswith(prefix[1:])):
            return label
    return "GEMMs"


def compute_breakdown(
    cm: ComputeModel,
    shape: TransformerShape,
    micro_batch: int,
    seq: int,
    checkpointing: Checkpointing,
    flash_attention: bool,
) -> dict[str, float]:
    """Device time of one micro-batch's forward + backward (all blocks and the head), s, split by
    kind of kernel (:func:`op_category`), with ``"kernel gaps"`` (the per-kernel device gap) and
    ``"host-bound wait"`` (what :meth:`ComputeModel.cost`'s host bound adds) apart. The parts add
    up to ``n_layers · (block_fwd + block_bwd) + head_fwd + head_bwd`` of
    :func:`micro_batch_compute` for the same arguments."""
    e = cm.dtype_bytes
    # each phase is costed on its own, as micro_batch_compute does: (kernels, repetitions)
    phases: list[tuple[list[Op], int]] = []
    for fwd_ops, count in block_groups(shape, micro_batch, seq, e, flash_attention):
        phases += [
            (cm.kernels(fwd_ops), count),
            (cm.kernels(fwd_ops, backward=True), count),
            (cm.kernels(recompute_ops(fwd_ops, checkpointing)), count),
        ]
    head_ops = model_head_ops(shape, micro_batch, seq, e)
    phases += [(cm.kernels(head_ops), 1), (cm.kernels(head_ops, backward=True), 1)]
    out: dict[str, float] = {}
    gap = cm.device.kernel_launch_s
    for kernels, reps in phases:
        device_time = 0.0
        for k in kernels:
            t = cm.op_time(k)
            label = op_category(k.name)
            out[label] = out.get(label, 0.0) + reps * (t - gap)
            out["kernel gaps"] = out.get("kernel gaps", 0.0) + reps * gap
            device_time += t
        wait = max(0.0, len(kernels) * cm.device.host_launch_s - device_time)
        out["host-bound wait"] = out.get("host-bound wait", 0.0) + reps * wait
    return out


def step_compute_breakdown(job: Job) -> list[tuple[str, float]]:
    """A rank's forward + backward device time in one step of ``job``, s, by kind of kernel,
    largest first: the strategy's answer (``Strategy.compute_breakdown``; a model-parallel
    strategy knows its rank's share). The optimizer step is not included (``scaling explain``
    shows it as its own part)."""
    return job.strategy.compute_breakdown(job)


def replica_compute_breakdown(job: Job) -> list[tuple[str, float]]:
    """:func:`compute_breakdown` of one micro-batch of the whole model × the micro-batches per
    step, largest first: a rank of a data-parallel strategy (``StrategyBase``'s default)."""
    t = job.training
    cm = ComputeModel.for_job(job)
    parts = compute_breakdown(
        cm, job.shape, t.micro_batch, t.seq_len, t.checkpointing, t.flash_attention
    )
    return sorted(((k, v * t.grad_accum) for k, v in parts.items()), key=lambda kv: -kv[1])
