"""Per-rank memory model and the feasibility check that refuses jobs that do not fit.

Activation bytes per block follow Korthikanti et al., "Reducing Activation Recomputation in Large
Transformer Models" (2022), §4, without tensor/sequence parallelism: ``s·b·h·(34 + 5·a·s/h)``
bytes for 16-bit activations. A fused (flash) attention kernel does not store the ``a·s²``
score/softmax/dropout tensors, leaving ``34·s·b·h``; full checkpointing keeps only each block's
input (``2·s·b·h``) plus one block's full working set during its recomputation.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model.hardware.workload import Checkpointing, TransformerShape
from scaling.units import GiB

#: Mixed-precision Adam (ZeRO paper §3.1): 16-bit weight and gradient (2+2) plus fp32 master
#: weight, momentum and variance (4+4+4) = 16 bytes per parameter.
WEIGHT_BYTES = 2.0
GRAD_BYTES = 2.0
OPTIMIZER_BYTES = 12.0


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    """Peak memory of one rank, bytes, by component."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    comm_buffers: float
    reserved: float

    @property
    def total(self) -> float:
        return (
            self.weights
            + self.gradients
            + self.optimizer
            + self.activations
            + self.comm_buffers
            + self.reserved
        )

    def describe(self) -> str:
        """One line, GiB per component."""
        parts = [
            ("weights", self.weights),
            ("grads", self.gradients),
            ("optimizer", self.optimizer),
            ("activations", self.activations),
            ("comm buffers", self.comm_buffers),
            ("reserved", self.reserved),
        ]
        return ", ".join(f"{k} {v / GiB:.1f}" for k, v in parts)


def activation_bytes(
    shape: TransformerShape,
    micro_batch: int,
    seq: int,
    checkpointing: Checkpointing,
    flash_attention: bool,
) -> float:
    """Peak activation memory of one rank for one micro-batch in flight, bytes."""
    s, b, h, a = seq, micro_batch, shape.hidden, shape.n_heads
    full_block = s * b * h * 34.0
    if not flash_attention:
        full_block += 5.0 * a * s * s * b
    if checkpointing is Checkpointing.FULL:
        blocks = shape.n_layers * 2.0 * s * b * h + full_block
    elif checkpointing is Checkpointing.SELECTIVE:
        blocks = shape.n_layers * s * b * h * 34.0
    else:
        blocks = shape.n_layers * full_block
    # Logits in the compute dtype plus the float32 copy used by the loss.
    logits = s * b * shape.vocab * (2.0 + 4.0)
    return blocks + logits


def ddp_memory(
    shape: TransformerShape,
    micro_batch: int,
    seq: int,
    checkpointing: Checkpointing,
    flash_attention: bool,
    reserved_bytes: float,
    gradient_as_bucket_view: bool = False,
) -> MemoryBreakdown:
    """Memory of one DDP rank: full replica of weights, grads and Adam states.

    PyTorch DDP copies gradients into flat bucket buffers unless ``gradient_as_bucket_view`` is
    set, which costs one more gradient-sized buffer.
    """
    n = float(shape.params())
    buckets = 0.0 if gradient_as_bucket_view else n * GRAD_BYTES
    return MemoryBreakdown(
        weights=n * WEIGHT_BYTES,
        gradients=n * GRAD_BYTES,
        optimizer=n * OPTIMIZER_BYTES,
        activations=activation_bytes(shape, micro_batch, seq, checkpointing, flash_attention),
        comm_buffers=buckets,
        reserved=reserved_bytes,
    )


def fsdp_memory(
    shape: TransformerShape,
    sharding: str,
    shard_size: int,
    limit_all_gathers: int,
    micro_batch: int,
    seq: int,
    checkpointing: Checkpointing,
    flash_attention: bool,
    reserved_bytes: float,
    param_bytes: float = 2.0,
) -> MemoryBreakdown:
    """Peak memory of one FSDP rank (mixed precision, Adam).

    Sharded state: fp32 flat parameters, fp32 gradients and Adam's two moments, 16 bytes per
    parameter over ``shard_size`` ranks (NO_SHARD: the whole model). Unsharded working copies in
    ``param_bytes``: the root unit (kept for the whole step), plus the blocks in flight — up to
    ``limit_all_gathers`` + 1 under FULL/HYBRID_SHARD (PyTorch's rate limiter), every block under
    SHARD_GRAD_OP (kept from forward to backward). Unsharded gradients of the block being reduced
    (two: one computing, one reduce-scattering).
    """
    n = float(shape.params())
    block = float(shape.layer_params())
    root = n - shape.n_layers * block
    if sharding == "no_shard":
        weights, grads, opt = n * WEIGHT_BYTES, n * GRAD_BYTES, n * OPTIMIZER_BYTES
        comm = 0.0
    else:
        weights = 4.0 * n / shard_size
        grads = 4.0 * n / shard_size
        opt = 8.0 * n / shard_size
        if sharding == "shard_grad_op":
            in_flight = shape.n_layers
        else:
            in_flight = min(shape.n_layers, (limit_all_gathers or shape.n_layers) + 1)
        weights += (root + in_flight * block) * param_bytes
        comm = 2 * block * GRAD_BYTES
    return MemoryBreakdown(
        weights=weights,
        gradients=grads,
        optimizer=opt,
        activations=activation_bytes(shape, micro_batch, seq, checkpointing, flash_attention),
        comm_buffers=comm,
        reserved=reserved_bytes,
    )
