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

#: ``torch.optim.Adam`` keeps two moments (``exp_avg``, ``exp_avg_sq``) per parameter, each in
#: the parameter's dtype (``torch.zeros_like(p)`` in torch/optim/adam.py ``_init_group``).
ADAM_STATES = 2


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
        """Peak bytes of one rank, all components."""
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
    own = shape.activation_bytes(micro_batch, seq, checkpointing, flash_attention)
    if own is not None:  # a shape with its own accounting (encoder-decoder)
        return own
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
    *,
    param_bytes: float = 4.0,
    compute_bytes: float = 2.0,
) -> MemoryBreakdown:
    """Memory of one DDP rank: a full replica of weights, grads and Adam states, bytes.

    ``param_bytes`` per parameter for weights, gradients and each Adam moment (fp32 under
    AMP). When the compute dtype is narrower, ``torch.autocast`` keeps a ``compute_bytes`` copy
    of every weight for forward and backward (its cast cache), counted with the weights. DDP
    copies gradients into flat bucket buffers unless ``gradient_as_bucket_view`` is set, which
    costs one more gradient-sized buffer.
    """
    n = float(shape.params())
    casts = n * compute_bytes if compute_bytes < param_bytes else 0.0
    grads = n * param_bytes
    return MemoryBreakdown(
        weights=n * param_bytes + casts,
        gradients=grads,
        optimizer=ADAM_STATES * n * param_bytes,
        activations=activation_bytes(shape, micro_batch, seq, checkpointing, flash_attention),
        comm_buffers=0.0 if gradient_as_bucket_view else grads,
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
    gather_bytes: float = 2.0,
    *,
    param_bytes: float = 4.0,
    reduce_bytes: float = 4.0,
    unsharded_grads: bool = False,
    post_forward_shard: int | None = None,
) -> MemoryBreakdown:
    """Peak memory of one FSDP rank (Adam), bytes.

    Sharded state in the parameter dtype (``param_bytes``: fp32 flat parameters as FSDP keeps
    them): parameters, gradients and Adam's two moments, over ``shard_size`` ranks (NO_SHARD:
    a full replica, like DDP without buckets). Unsharded working copies in ``gather_bytes``
    (``MixedPrecision.param_dtype``): the root unit (kept for the whole step), plus the blocks
    in flight — up to ``limit_all_gathers`` + 1 under FULL/HYBRID_SHARD (PyTorch's rate
    limiter), every block under SHARD_GRAD_OP (kept from forward to backward). Unsharded
    gradients of the blocks being reduced, in ``reduce_bytes`` (two: one computing, one
    reduce-scattering). ``unsharded_grads``: gradient accumulation under ``no_sync`` keeps every
    unit's unsharded gradient (``gather_bytes`` each) between micro-batches.
    ``post_forward_shard`` (FSDP2 ``reshard_after_forward=k``): every block keeps a 1/k shard
    from forward to its backward.
    """
    n = float(shape.params())
    blocks = shape.block_params()
    block = float(max(blocks))  # the largest unit in flight (blocks differ in an enc-dec)
    root = float(shape.embedding_params() + shape.head_params())
    if sharding == "no_shard":
        weights, grads = n * param_bytes, n * param_bytes
        opt = ADAM_STATES * n * param_bytes
        comm = 0.0
    else:
        weights = param_bytes * n / shard_size
        grads = param_bytes * n / shard_size
        opt = ADAM_STATES * param_bytes * n / shard_size
        if sharding == "shard_grad_op":
            in_flight = shape.n_layers
        else:
            in_flight = min(shape.n_layers, (limit_all_gathers or shape.n_layers) + 1)
        weights += (root + in_flight * block) * gather_bytes
        comm = 2 * block * reduce_bytes
        if unsharded_grads:
            grads += n * gather_bytes
        if post_forward_shard:
            weights += sum(blocks) * gather_bytes / post_forward_shard
    return MemoryBreakdown(
        weights=weights,
        gradients=grads,
        optimizer=opt,
        activations=activation_bytes(shape, micro_batch, seq, checkpointing, flash_attention),
        comm_buffers=comm,
        reserved=reserved_bytes,
    )
