"""Compute-time model: ops with FLOPs and bytes, timed by a roofline on one device.

``time(op) = max(flops / (peak · matmul_eff), bytes / (mem_bw · mem_eff)) + kernel_launch``

The matmul efficiency is the device's measured/assumed achievable fraction of peak for large
matmuls (e.g. A100 BF16: 271.2 of 312 TFLOP/s, stas00/ml-engineering MAMF table); it is applied
to every matmul and to the fused attention kernel. Element-wise ops (norms, activations, residual
adds, softmax when attention is not fused) are memory-bound and timed by bytes moved.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model.hardware import DeviceSpec
from scaling.model.workload import Checkpointing, TransformerShape

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}

#: Bytes per parameter read+written by one mixed-precision Adam step: read fp32 master weight,
#: 16-bit gradient, two fp32 moments (4+2+4+4); write master, moments and the 16-bit copy of the
#: weight (4+4+4+2). The step is memory-bound (≈ 10 FLOP per parameter).
ADAM_BYTES_PER_PARAM = 28.0


@dataclass(frozen=True, slots=True)
class Op:
    """One kernel: FLOPs, bytes moved to/from device memory, and whether it runs on matmul units."""

    name: str
    flops: float
    bytes: float
    matmul: bool


@dataclass(frozen=True, slots=True)
class PhaseCost:
    """Totals of a list of ops on one device: time (s), FLOP executed and bytes moved."""

    time_s: float
    flops: float
    bytes: float
    kernels: int

    def __add__(self, other: PhaseCost) -> PhaseCost:
        return PhaseCost(
            self.time_s + other.time_s,
            self.flops + other.flops,
            self.bytes + other.bytes,
            self.kernels + other.kernels,
        )

    def scaled(self, k: float) -> PhaseCost:
        return PhaseCost(self.time_s * k, self.flops * k, self.bytes * k, round(self.kernels * k))


ZERO = PhaseCost(0.0, 0.0, 0.0, 0)


def _matmul(name: str, m: int, k: int, n: int, e: int) -> Op:
    return Op(name, 2.0 * m * k * n, float(e * (m * k + k * n + m * n)), True)


def block_forward_ops(
    shape: TransformerShape, micro_batch: int, seq: int, dtype_bytes: int, flash: bool
) -> list[Op]:
    """Kernels of one transformer block's forward pass for ``micro_batch`` sequences."""
    t = micro_batch * seq
    h, f, kv, e = shape.hidden, shape.ffn_hidden, shape.kv_dim, dtype_bytes
    n_in = 2 if shape.gated_mlp else 1
    ops = [
        Op("ln1", 5.0 * t * h, 2.0 * e * t * h, False),
        _matmul("qkv", t, h, h + 2 * kv, e),
    ]
    attn_flops = 4.0 * t * seq * h
    if flash:
        # Fused kernel: reads Q, K, V once and writes the output; the s×s scores stay on chip.
        ops.append(Op("attention", attn_flops, float(e * t * (2 * h + 2 * kv)), True))
    else:
        scores = float(micro_batch * shape.n_heads * seq * seq)
        ops += [
            Op("attn.scores", attn_flops / 2, e * (t * (h + kv)) + e * scores, True),
            Op("attn.softmax", 5.0 * scores, 2.0 * e * scores, False),
            Op("attn.av", attn_flops / 2, e * scores + e * t * (kv + h), True),
        ]
    ops += [
        _matmul("proj", t, h, h, e),
        Op("residual1", float(t * h), 3.0 * e * t * h, False),
        Op("ln2", 5.0 * t * h, 2.0 * e * t * h, False),
        _matmul("fc_in", t, h, n_in * f, e),
        Op("act", 8.0 * t * f, float(e * t * (n_in + 1) * f), False),
        _matmul("fc_out", t, f, h, e),
        Op("residual2", float(t * h), 3.0 * e * t * h, False),
    ]
    return ops


def head_forward_ops(
    shape: TransformerShape, micro_batch: int, seq: int, dtype_bytes: int
) -> list[Op]:
    """Embedding lookup, final norm, logits and the cross-entropy loss (float32)."""
    t = micro_batch * seq
    h, v, e = shape.hidden, shape.vocab, dtype_bytes
    return [
        Op("embedding", float(t * h), 2.0 * e * t * h, False),
        Op("ln_f", 5.0 * t * h, 2.0 * e * t * h, False),
        _matmul("logits", t, h, v, e),
        Op("cross_entropy", 5.0 * t * v, float(t * v * (e + 4)), False),
    ]


class ComputeModel:
    """Times ops on one device with the roofline in the module docstring."""

    def __init__(self, device: DeviceSpec, dtype: str) -> None:
        self.device = device
        self.dtype = dtype
        self.dtype_bytes = DTYPE_BYTES[dtype]
        self._flops_rate = device.peak(dtype) * device.matmul_efficiency
        # Non-matmul FLOPs run on vector units; they are never the bound for these ops in
        # practice, so they are timed by bytes only (their FLOPs still count as executed work).
        self._mem_rate = device.mem_bw_Bps * device.mem_bw_efficiency

    def op_time(self, op: Op) -> float:
        """Roofline time of one kernel, s."""
        t_mem = op.bytes / self._mem_rate
        t = max(op.flops / self._flops_rate, t_mem) if op.matmul else t_mem
        return t + self.device.kernel_launch_s

    def cost(self, ops: list[Op], *, backward: bool = False) -> PhaseCost:
        """Time/FLOP/bytes of ``ops``; ``backward`` applies the 2× FLOP and bytes of backward."""
        k = 2.0 if backward else 1.0
        time = flops = nbytes = 0.0
        for op in ops:
            scaled = Op(op.name, op.flops * k, op.bytes * k, op.matmul)
            # Backward runs two kernels per matmul (data and weight gradients).
            launches = 2 if (backward and op.matmul) else 1
            time += self.op_time(scaled) + (launches - 1) * self.device.kernel_launch_s
            flops += scaled.flops
            nbytes += scaled.bytes
        return PhaseCost(time, flops, nbytes, len(ops) * (2 if backward else 1))

    def optimizer_cost(self, n_params: float) -> PhaseCost:
        """One fused mixed-precision Adam step over ``n_params`` parameters (memory-bound)."""
        nbytes = ADAM_BYTES_PER_PARAM * n_params
        return PhaseCost(
            nbytes / self._mem_rate + self.device.kernel_launch_s, 10.0 * n_params, nbytes, 1
        )


@dataclass(frozen=True, slots=True)
class MicroBatchCompute:
    """Per-micro-batch compute of one rank, split the way the schedule needs it.

    ``block_fwd`` / ``block_bwd`` are per transformer block; ``head_fwd`` / ``head_bwd`` cover
    embedding, final norm, logits and loss. ``block_bwd`` includes the forward recomputation when
    activation checkpointing is on. ``model_flops`` counts forward + backward once (no recompute),
    the numerator of MFU.
    """

    block_fwd: PhaseCost
    block_bwd: PhaseCost
    head_fwd: PhaseCost
    head_bwd: PhaseCost
    model_flops: float


def micro_batch_compute(
    cm: ComputeModel,
    shape: TransformerShape,
    micro_batch: int,
    seq: int,
    checkpointing: Checkpointing,
    flash_attention: bool,
) -> MicroBatchCompute:
    """Build the per-block and head costs of one micro-batch on one device."""
    e = cm.dtype_bytes
    fwd_ops = block_forward_ops(shape, micro_batch, seq, e, flash_attention)
    block_fwd = cm.cost(fwd_ops)
    block_bwd = cm.cost(fwd_ops, backward=True)
    if checkpointing is Checkpointing.FULL:
        block_bwd = block_bwd + block_fwd
    elif checkpointing is Checkpointing.SELECTIVE:
        attn = [op for op in fwd_ops if op.name.startswith("attn")]
        block_bwd = block_bwd + cm.cost(attn)
    head_ops = head_forward_ops(shape, micro_batch, seq, e)
    head_fwd = cm.cost(head_ops)
    head_bwd = cm.cost(head_ops, backward=True)
    tokens = micro_batch * seq
    model_flops = shape.flops_per_token(seq) * tokens
    return MicroBatchCompute(block_fwd, block_bwd, head_fwd, head_bwd, model_flops)
