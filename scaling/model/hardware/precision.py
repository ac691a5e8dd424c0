"""FP8 training as Transformer Engine runs it: which kernels run in FP8 and what the recipe adds.

Rules and their sources (the compute model, :mod:`scaling.model.hardware.compute`, applies them
when a job's ``dtype`` is ``fp8``):

* **Only the linears of the transformer block run in FP8.** Transformer Engine's
  ``fp8_autocast`` changes the GEMMs of its own modules (``te.Linear``, ``LayerNormLinear``,
  ``LayerNormMLP``: the block's QKV, projection, MLP in and MLP out, which Megatron-Core builds
  from TE in ``megatron/core/extensions/transformer_engine.py``). Everything between them stays in
  the activation dtype, BF16: layer norms, activations, residual adds, the attention core
  (``DotProductAttention`` runs the cuDNN / flash kernel in BF16 unless ``fp8_dpa`` is set, which
  the NeMo / Megatron Bridge performance recipes leave off), the embedding, and Megatron-Core's
  output layer and loss (``GPTModel.output_layer`` is ``tensor_parallel.ColumnParallelLinear``,
  not a TE module, so the logits GEMM is a BF16 GEMM). The tensor-parallel and pipeline
  communication of activations is BF16 too, and so is the distributed optimizer's parameter
  all-gather (BF16 model weights; ``fp8_param_gather`` is off in those recipes).
* **An FP8 GEMM reaches its own fraction of the FP8 peak** (``DeviceSpec.fp8_matmul_efficiency``,
  the best-shape burst fraction, as ``matmul_efficiency`` is for 16-bit GEMMs): cuBLASLt's FP8
  kernels on Hopper do not reach the 2× of the BF16 rate the datasheet's peaks imply.
* **Casts.** Before an FP8 GEMM, TE casts its BF16 input to FP8 and writes the transposed FP8
  copy the weight-gradient GEMM needs (``cast_transpose``; for ``LayerNormLinear`` the norm
  writes the FP8 output itself, the transpose is still a pass): read 2 bytes, write 1 + 1 per
  input element, :data:`FP8_CAST_BYTES`. The backward casts the incoming BF16 output gradient
  the same way before the data-gradient GEMM (``cast_transpose_dbias`` / ``..._dgelu``); the
  weight-gradient GEMM reads the two transposed FP8 copies and casts nothing. The weights are
  cast once per step, not per micro-batch (Megatron-Core's ``set_is_first_microbatch``: "TE
  modules will update their fp8 parameter cache" on the first micro-batch only), so with the
  recipes' 16–64 micro-batches per step their cast is left out (< 0.5 % of a step).
"""

from __future__ import annotations

#: The dtype of the tensors between FP8 GEMMs (activations, gradients, communication) for each
#: training dtype whose activations are wider than its GEMM operands; any other dtype is its own.
ACTIVATION_DTYPE: dict[str, str] = {"fp8": "bf16"}

#: Bytes per input element of Transformer Engine's ``cast_transpose`` before an FP8 GEMM: read
#: the BF16 tensor (2), write its FP8 copy (1) and the transposed FP8 copy (1).
FP8_CAST_BYTES = 4.0


def activation_dtype(dtype: str) -> str:
    """The dtype activations and their gradients are stored and sent in when training in
    ``dtype`` (``"bf16"`` for ``"fp8"``: Transformer Engine keeps them in BF16)."""
    return ACTIVATION_DTYPE.get(dtype, dtype)


def fp8_cast_bytes(rows: int, cols: int, batch: int = 1) -> float:
    """Bytes one ``cast_transpose`` of a ``rows × cols`` BF16 GEMM operand moves (``batch`` of
    them): ``FP8_CAST_BYTES · batch · rows · cols``."""
    return FP8_CAST_BYTES * batch * rows * cols
