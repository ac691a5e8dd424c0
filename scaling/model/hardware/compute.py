"""Compute-time model: ops with FLOPs and bytes, timed by a roofline on one device.

``time(op) = max(flops_exec / (peak · eff(op)), bytes / (mem_bw · mem_eff)) + kernel_gap``, and a
phase (a list of kernels the host issues back to back) takes ``max(Σ time(op), n · host_launch)``:
the host runs ahead of the device and queues kernels, so its per-kernel issue cost only shows
when the kernels are, on average, shorter than it (small micro-batches, small models).

Every device-specific number comes from the device's own entry (``DeviceSpec``, i.e. its
``topologies/*.yaml`` section with source and confidence); nothing here is an A100 fact applied to
every device.

``eff(op)`` is the achievable fraction of the dtype's dense peak for that kernel:

* **GEMMs** (:func:`matmul_efficiency`): the device's best-shape efficiency ``E`` (the measured
  maximum achievable matmul FLOP/s, e.g. A100 BF16 271.2 of 312 TFLOP/s, H100 794.5 of 989, the
  stas00/ml-engineering MAMF table, reference/training_scaling.csv), times two saturating,
  monotone factors for what a smaller GEMM loses: idle/tail compute units when the output has few
  tiles (over the device's own ``compute_units``: 108 SMs on an A100, 132 on an H100 …), and the
  pipeline fill of a short reduction. Low arithmetic intensity is *not* in the efficiency: the
  roofline's memory term handles it.
* Inside a training loop GEMMs run at the device's ``sustained_matmul_fraction`` of that burst
  rate: a training step holds the device at its power limit, below the boost clock a MAMF burst
  runs at, plus in-loop losses. **Calibrated** per device where published training throughputs
  exist (A100, H100: tools/fit_compute.py, calibration points named in the YAML); an explicit
  assumption elsewhere. ``ComputeModel(..., sustained=False)`` times an isolated kernel.
* **Fused (flash) attention** (:func:`flash_attention_efficiency`): the device's
  ``attention_efficiency`` (forward, fraction of dense peak in a training loop); the backward runs
  at :data:`FLASH_BWD_OVER_FWD` of it. Only the causal (lower-triangle) blocks are executed.
* **Everything that is not a GEMM** is memory-bound and timed by the bytes it moves at the
  device's achievable bandwidth (``mem_bw_efficiency``): layer norms, activations, residual adds,
  dropout and softmax (when attention is not fused), the bias-gradient reductions of linear
  layers with biases, the embedding gather, the cast / log-softmax / NLL kernels of the
  cross-entropy over the vocabulary, and the optimizer step.

``Op.flops`` are the *counted* FLOPs of the workload (full s×s attention, as in Megatron's formula,
backward = 2× forward); ``flops_exec`` is what the kernel really executes (a causal flash kernel
skips the upper triangle; its backward recomputes the scores: 2.5× forward, Dao 2023 §3.1).

Checks (tests/test_compute.py): the MAMF best shape reproduces 271.2 TFLOP/s in burst mode; the
calibration and validation of the training-loop constants are ``scaling validate``'s compute
studies (scaling/app/validate.py), with the points used for fitting kept apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from scaling.model.hardware.system import DeviceSpec
from scaling.model.hardware.workload import Checkpointing, TransformerShape

if TYPE_CHECKING:  # job.py imports the strategies, which import this module
    from scaling.model.job import Job

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}

#: Bytes per parameter read+written by one mixed-precision Adam step: read fp32 master weight,
#: 16-bit gradient, two fp32 moments (4+2+4+4); write master, moments and the 16-bit copy of the
#: weight (4+4+4+2). The step is memory-bound (≈ 10 FLOP per parameter).
ADAM_BYTES_PER_PARAM = 28.0

# ---- GEMM efficiency constants ----------------------------------------------------------------

#: Output tile edge, elements. cuBLAS's sm80 half-precision kernels use 128x128 … 256x128 tiles
#: and fall back to smaller ones (or split-K) when a GEMM has few tiles (NVIDIA "Matrix
#: Multiplication Background" guide §2.3); 128x128 sets the scale at which the device fills up.
GEMM_TILE = 128

#: Reduction depth, elements, lost per output tile to the software pipeline's fill and drain:
#: cuBLAS's sm80 GEMMs (kernel names ``…_stages_32x3_…`` / ``…_stages_64x3_…``) keep 3 k-slices in
#: flight, so about two 32-deep slices are loaded before the first MMA and the epilogue is not
#: overlapped with MMAs of the same tile. Assumption, not a fit.
GEMM_K_FILL = 64

# ---- fused attention constants ----------------------------------------------------------------

#: Backward over forward fraction of peak of a flash-attention kernel: FlashAttention-2 on
#: A100-SXM4-80GB at sequence 1–4k, causal, head dim 64–128: forward ≈ 0.50 of peak
#: (liangan1/GPU_travel performance/flash-attn: 144–159 TFLOP/s; Dao 2023 Fig. 5), backward ≈ 0.42
#: (Dao 2023 Fig. 6: ~0.9× forward at 16k, lagging more at 1–4k) → 0.84. Assumption for other
#: devices and kernels: the backward's extra matmuls and atomics cost the same share everywhere.
FLASH_BWD_OVER_FWD = 0.42 / 0.50
#: FlashAttention-2's block size along the key axis on sm80 (head dim ≤ 128); with a causal mask
#: the kernel skips blocks above the diagonal and computes the diagonal blocks in full.
FLASH_BLOCK = 128
#: FLOPs of a flash backward pass relative to its forward (5 matmuls vs 2: scores recomputed).
FLASH_BWD_FLOP_RATIO = 2.5

# ---- unfused attention -------------------------------------------------------------------------

#: Bytes per score element of a dropout mask (PyTorch stores a 1-byte bool mask).
DROPOUT_MASK_BYTES = 1.0


def matmul_efficiency(
    m: int,
    k: int,
    n: int,
    best: float,
    *,
    batch: int = 1,
    units: int,
    tile: int = GEMM_TILE,
    k_fill: int = GEMM_K_FILL,
) -> float:
    """Achievable fraction of dense peak for a GEMM ``(m×k)·(k×n)`` (``batch`` of them at once).

    ``eff = best · (1 − exp(−W)) · k / (k + k_fill)``,  ``W = batch·m·n / (tile² · units)``

    * ``best``: the device's best-shape efficiency (measured MAMF / peak, 0–1].
    * ``W`` is the number of waves of ``tile × tile`` output tiles over the device's ``units``
      compute units (SMs, MLU cores, AI cores; ``DeviceSpec.compute_units``).
      With ``W ≪ 1`` most units idle (eff ∝ W); with a few waves only the last, partly filled wave
      is lost. ``1 − exp(−W)`` is a smooth, monotone stand-in for the saw-tooth ``W / ceil(W)``:
      cuBLAS smooths it by picking smaller tiles or split-K for small grids, and a monotone
      envelope cannot reproduce the lucky shapes a MAMF sweep finds, so the best shape itself
      keeps ~0.3 % of loss here.
    * ``k / (k + k_fill)``: per output tile, the reduction loop runs ``k`` deep behind a fill and
      drain worth ``k_fill`` of it (see :data:`GEMM_K_FILL`).

    Units: m, k, n, tile, k_fill in elements; the result is dimensionless. Never exceeds ``best``
    and is non-decreasing in m, k, n and batch. Memory-bound shapes (small k or n) are left to the
    roofline's bytes term, not to this function.
    """
    if min(m, k, n, batch) <= 0:
        raise ValueError(f"GEMM dimensions must be positive, got m={m} k={k} n={n} batch={batch}")
    waves = batch * m * n / (tile * tile * units)
    return best * -math.expm1(-waves) * (k / (k + k_fill))


def flash_attention_efficiency(forward_eff: float, *, backward: bool) -> float:
    """Achievable fraction of dense peak of a fused (flash) attention kernel.

    ``forward_eff`` is the device's in-loop forward fraction (``DeviceSpec.attention_efficiency``);
    the backward reaches :data:`FLASH_BWD_OVER_FWD` of it. The FLOPs it applies to are those
    executed (causal half, backward 2.5× forward), see :func:`causal_fraction`.
    """
    return forward_eff * (FLASH_BWD_OVER_FWD if backward else 1.0)


def causal_fraction(seq: int, block: int = FLASH_BLOCK) -> float:
    """Share of the s×s score blocks a causal flash kernel computes: ``(nb + 1) / (2·nb)``.

    ``nb = ceil(seq / block)`` key blocks per query block row; the kernel computes the blocks on
    and below the diagonal (diagonal blocks in full, masked inside). 0.53 at s = 2048.
    """
    nb = max(1, math.ceil(seq / block))
    return (nb + 1) / (2 * nb)


@dataclass(frozen=True, slots=True)
class GemmShape:
    """A GEMM ``(m×k)·(k×n)``, ``batch`` independent ones in one (strided-batched) kernel."""

    m: int
    k: int
    n: int
    batch: int = 1

    def backward(self) -> tuple[GemmShape, GemmShape]:
        """The two backward GEMMs of ``Y = X·W``: data gradient ``dY·Wᵀ`` (m×n)·(n×k) and weight
        gradient ``Xᵀ·dY`` (k×m)·(m×n)."""
        return (
            GemmShape(self.m, self.n, self.k, self.batch),
            GemmShape(self.k, self.m, self.n, self.batch),
        )


@dataclass(frozen=True, slots=True)
class FlashShape:
    """A fused attention kernel over sequences of ``seq`` tokens (causal mask or not)."""

    seq: int
    causal: bool = True


@dataclass(frozen=True, slots=True)
class Op:
    """One kernel: FLOPs, bytes moved to/from device memory, and whether it runs on matmul units.

    ``gemm`` / ``flash`` give the kernel's shape when it has one; a matmul op with neither runs at
    the device's best-shape efficiency. ``backward`` marks a backward-pass kernel (flash attention
    runs at a different efficiency there). ``backward_bytes`` is what a memory-bound op's backward
    moves when it is not the usual 2× the forward's bytes. ``bias``: a linear layer with a bias,
    whose backward adds the bias-gradient reduction over the tokens (``torch.nn.Linear``'s
    autograd sums ``dY`` over the rows in a separate kernel; the forward bias add is the GEMM's
    epilogue, free).
    """

    name: str
    flops: float
    bytes: float
    matmul: bool
    gemm: GemmShape | None = None
    flash: FlashShape | None = None
    backward: bool = False
    backward_bytes: float | None = None
    bias: bool = False


@dataclass(frozen=True, slots=True)
class PhaseCost:
    """Totals of a list of ops on one device: time (s), FLOP counted and bytes moved."""

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
        """This cost with time, FLOPs, bytes and kernel count multiplied by ``k``."""
        return PhaseCost(self.time_s * k, self.flops * k, self.bytes * k, round(self.kernels * k))


ZERO = PhaseCost(0.0, 0.0, 0.0, 0)


def _gemm_bytes(g: GemmShape, e: int) -> float:
    return float(e * g.batch * (g.m * g.k + g.k * g.n + g.m * g.n))


def _matmul(name: str, m: int, k: int, n: int, e: int, bias: bool = False) -> Op:
    g = GemmShape(m, k, n)
    return Op(name, 2.0 * m * k * n, _gemm_bytes(g, e), True, gemm=g, bias=bias)


def block_forward_ops(
    shape: TransformerShape, micro_batch: int, seq: int, dtype_bytes: int, flash: bool
) -> list[Op]:
    """Kernels of one transformer block's forward pass for ``micro_batch`` sequences."""
    t = micro_batch * seq
    h, f, kv, e = shape.hidden, shape.ffn_hidden, shape.kv_dim, dtype_bytes
    n_in = 2 if shape.gated_mlp else 1
    ops = [
        Op("ln1", 5.0 * t * h, 2.0 * e * t * h, False),
        _matmul("qkv", t, h, h + 2 * kv, e, shape.bias),
    ]
    attn_flops = 4.0 * t * seq * h
    if flash:
        # Fused kernel: reads Q, K, V once and writes the output; the s×s scores stay on chip.
        # Decoder-only presets are causal.
        ops.append(
            Op(
                "attention",
                attn_flops,
                float(e * t * (2 * h + 2 * kv)),
                True,
                flash=FlashShape(seq, causal=True),
            )
        )
    else:
        # Classic unfused GPT attention (Megatron-LM 2021, HF GPT-2): strided-batched GEMMs over
        # micro_batch·heads write the full s×s scores (the causal mask is applied, not exploited),
        # a fused scale-mask-softmax, dropout on the probabilities (p = 0.1, the default of both,
        # also in Megatron's SC'21 runs: their CONFIG.sh does not override it), then A·V.
        # Backward bytes: softmax reads y and dy and writes dx (3 per element); dropout reads dy
        # and the mask and writes dx.
        bh, d = micro_batch * shape.n_heads, shape.head_dim
        scores = float(bh * seq * seq)
        drop = (2.0 * e + DROPOUT_MASK_BYTES) * scores
        ops += [
            Op(
                "attn.scores",
                attn_flops / 2,
                e * (t * (h + kv)) + e * scores,
                True,
                gemm=GemmShape(seq, d, seq, bh),
            ),
            Op(
                "attn.softmax",
                5.0 * scores,
                2.0 * e * scores,
                False,
                backward_bytes=3.0 * e * scores,
            ),
            Op("attn.dropout", scores, drop, False, backward_bytes=drop),
            Op(
                "attn.av",
                attn_flops / 2,
                e * scores + e * t * (kv + h),
                True,
                gemm=GemmShape(seq, seq, d, bh),
            ),
        ]
    ops += [
        _matmul("proj", t, h, h, e, shape.bias),
        Op("residual1", float(t * h), 3.0 * e * t * h, False),
        Op("ln2", 5.0 * t * h, 2.0 * e * t * h, False),
        _matmul("fc_in", t, h, n_in * f, e, shape.bias),
        Op("act", 8.0 * t * f, float(e * t * (n_in + 1) * f), False),
        _matmul("fc_out", t, f, h, e, shape.bias),
        Op("residual2", float(t * h), 3.0 * e * t * h, False),
    ]
    return ops


#: Bytes per logit element of PyTorch's unfused cross-entropy under autocast (the default of
#: ``torch.nn.CrossEntropyLoss`` on 16-bit logits; aten/src/ATen/native/cuda/SoftMax.cu,
#: LossNLL.cu): forward = cast to float32 (read e, write 4) + log_softmax (read 4, write 4); the
#: NLL gather is per token, not per logit. Backward = NLL backward (write a float32 zero-filled
#: gradient, 4) + log_softmax backward (read grad and output, write: 12) + cast back (read 4,
#: write e). With e = 2: 14 forward, 22 backward (2× would be 28: the NLL forward has no logit
#: traffic but its backward does).
CE_FWD_BYTES_FP32 = 4.0 + 4.0 + 4.0  # + e (read of the 16-bit logits)
CE_BWD_BYTES_FP32 = 4.0 + 12.0 + 4.0  # + e (write of the 16-bit gradient)


def head_forward_ops(
    shape: TransformerShape, micro_batch: int, seq: int, dtype_bytes: int
) -> list[Op]:
    """Embedding lookup, final norm, logits and the (float32) cross-entropy over the vocabulary."""
    t = micro_batch * seq
    h, v, e = shape.hidden, shape.vocab, dtype_bytes
    tv = float(t * v)
    return [
        Op("embedding", float(t * h), 2.0 * e * t * h, False),
        Op("ln_f", 5.0 * t * h, 2.0 * e * t * h, False),
        _matmul("logits", t, h, v, e),
        Op(
            "cross_entropy",
            5.0 * tv,
            tv * (e + CE_FWD_BYTES_FP32),
            False,
            backward_bytes=tv * (e + CE_BWD_BYTES_FP32),
        ),
    ]


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


class ComputeModel:
    """Times ops on one device with the roofline in the module docstring."""

    def __init__(
        self, device: DeviceSpec, dtype: str, *, sustained: bool = True, sparse: bool = False
    ) -> None:
        """``sustained``: time GEMMs at the training-loop rate (the device's
        ``sustained_matmul_fraction`` of the burst rate); ``False`` times an isolated kernel the
        way a MAMF benchmark does. ``sparse``: weight GEMMs run on the device's
        structured-sparsity engine, at ``peak × device.sparsity_speedup`` (attention and
        element-wise ops stay dense)."""
        self.device = device
        self.dtype = dtype
        self.dtype_bytes = DTYPE_BYTES[dtype]
        self.sustained = sustained
        self._peak = device.peak(dtype)
        self._gemm_peak = self._peak * (device.sparsity_speedup if sparse else 1.0)
        self._best = device.matmul_efficiency
        self._units = device.compute_units
        self._gemm_scale = device.sustained_matmul_fraction if sustained else 1.0
        # Non-matmul FLOPs run on vector units; they are never the bound for these ops in
        # practice, so they are timed by bytes only (their FLOPs still count as executed work).
        self._mem_rate = device.mem_bw_Bps * device.mem_bw_efficiency

    def efficiency(self, op: Op) -> float:
        """Achievable fraction of peak of a matmul-unit op (see the module docstring)."""
        if op.flash is not None:
            # an in-loop figure already: the sustained fraction is not applied again
            return flash_attention_efficiency(
                self.device.attention_efficiency, backward=op.backward
            )
        if op.gemm is not None:
            g = op.gemm
            eff = matmul_efficiency(g.m, g.k, g.n, self._best, batch=g.batch, units=self._units)
        else:
            eff = self._best
        return eff * self._gemm_scale

    def executed_flops(self, op: Op) -> float:
        """FLOPs the kernel really executes: a causal flash kernel skips the upper-triangle blocks
        and its backward recomputes the scores (2.5× the forward's FLOPs instead of 2×)."""
        if op.flash is None:
            return op.flops
        frac = causal_fraction(op.flash.seq) if op.flash.causal else 1.0
        # op.flops of a backward flash op is the counted 2× forward.
        scale = FLASH_BWD_FLOP_RATIO / 2.0 if op.backward else 1.0
        return op.flops * frac * scale

    def op_time(self, op: Op) -> float:
        """Device time of one kernel, s: roofline plus the device's per-kernel gap."""
        t_mem = op.bytes / self._mem_rate
        if op.matmul:
            peak = self._gemm_peak if op.gemm is not None else self._peak
            t = max(self.executed_flops(op) / (peak * self.efficiency(op)), t_mem)
        else:
            t = t_mem
        return t + self.device.kernel_launch_s

    def _backward_kernels(self, op: Op) -> list[Op]:
        """The backward kernels of a forward op (2× its counted FLOPs and bytes in total)."""
        if op.gemm is not None:
            # Data and weight gradients: two GEMMs, each with the forward's FLOPs and bytes.
            out = [
                replace(op, gemm=g, backward=True, name=f"{op.name}.{part}")
                for g, part in zip(op.gemm.backward(), ("dgrad", "wgrad"), strict=True)
            ]
            if op.bias:
                # db = Σ_rows dY: reads dY (m×n), writes n float32; memory-bound, and not part
                # of the counted model FLOPs (the convention counts the matmuls only).
                g, e = op.gemm, self.dtype_bytes
                nbytes = float(e * g.batch * g.m * g.n + 4 * g.n)
                out.append(Op(f"{op.name}.bgrad", 0.0, nbytes, False, backward=True))
            return out
        if op.matmul and op.flash is None:
            # A matmul without a shape: two kernels at the best-shape efficiency.
            half = replace(op, backward=True)
            return [half, replace(half, name=f"{op.name}.wgrad")]
        nbytes = 2.0 * op.bytes if op.backward_bytes is None else op.backward_bytes
        return [replace(op, flops=2.0 * op.flops, bytes=nbytes, backward=True)]

    def kernels(self, ops: list[Op], *, backward: bool = False) -> list[Op]:
        """The kernels ``ops`` run as, forward or backward (see :meth:`cost`)."""
        if not backward:
            return list(ops)
        return [k for op in ops for k in self._backward_kernels(op)]

    def cost(self, ops: list[Op], *, backward: bool = False) -> PhaseCost:
        """Time/FLOP/bytes of ``ops``; ``backward`` applies the 2× FLOP and bytes of backward.

        In backward a GEMM becomes its data- and weight-gradient GEMMs (each timed with its own
        shape); other ops run once with twice the FLOPs and twice the bytes (or their
        ``backward_bytes``). The phase takes ``max(Σ device time, kernels · host_launch_s)``:
        the host queues kernels ahead of the device, so its issue cost only bounds the phase
        when the kernels are on average shorter than it.
        """
        time = flops = nbytes = 0.0
        kernels = 0
        for kop in self.kernels(ops, backward=backward):
            time += self.op_time(kop)
            flops += kop.flops
            nbytes += kop.bytes
            kernels += 1
        return PhaseCost(max(time, kernels * self.device.host_launch_s), flops, nbytes, kernels)

    def optimizer_cost(self, n_params: float) -> PhaseCost:
        """One fused mixed-precision Adam step over ``n_params`` parameters (memory-bound)."""
        nbytes = ADAM_BYTES_PER_PARAM * n_params
        t = nbytes / self._mem_rate + self.device.kernel_launch_s
        return PhaseCost(max(t, self.device.host_launch_s), 10.0 * n_params, nbytes, 1)


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
        # Selective recompute re-runs the attention core (scores, softmax, dropout, A·V) in
        # backward. With a fused flash kernel ("attention") its backward already recomputes the
        # scores, so there is nothing more to re-run: only the unfused "attn.*" ops count.
        attn = [op for op in fwd_ops if op.name.startswith("attn.")]
        block_bwd = block_bwd + cm.cost(attn)
    head_ops = head_forward_ops(shape, micro_batch, seq, e)
    head_fwd = cm.cost(head_ops)
    head_bwd = cm.cost(head_ops, backward=True)
    tokens = micro_batch * seq
    model_flops = shape.flops_per_token(seq) * tokens
    return MicroBatchCompute(block_fwd, block_bwd, head_fwd, head_bwd, model_flops)


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
    fwd_ops = block_forward_ops(shape, micro_batch, seq, e, flash_attention)
    head_ops = head_forward_ops(shape, micro_batch, seq, e)
    recompute: list[Op] = []
    if checkpointing is Checkpointing.FULL:
        recompute = fwd_ops
    elif checkpointing is Checkpointing.SELECTIVE:
        recompute = [op for op in fwd_ops if op.name.startswith("attn.")]
    # each phase is costed on its own, as micro_batch_compute does: (kernels, repetitions)
    phases = [
        (cm.kernels(fwd_ops), shape.n_layers),
        (cm.kernels(fwd_ops, backward=True), shape.n_layers),
        (cm.kernels(recompute), shape.n_layers),
        (cm.kernels(head_ops), 1),
        (cm.kernels(head_ops, backward=True), 1),
    ]
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
    cm = ComputeModel(job.system.device, t.dtype, sparse=t.sparsity)
    parts = compute_breakdown(
        cm, job.shape, t.micro_batch, t.seq_len, t.checkpointing, t.flash_attention
    )
    return sorted(((k, v * t.grad_accum) for k, v in parts.items()), key=lambda kv: -kv[1])
