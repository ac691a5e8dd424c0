"""Transformer workloads: model presets, parameter counts, per-layer FLOPs and bytes.

Shapes are the published ones (GPT-3 paper Table 2.1; Megatron-LM SC'21 Table 1; Llama-2/3 model
cards). FLOP counts follow the usual convention (Narayanan et al. SC'21, Appendix): a matmul of
(m×k)·(k×n) costs 2·m·k·n FLOP; backward costs 2× forward; attention scores and the weighted sum
are counted over the full s×s matrix (causal masking is not subtracted, as in Megatron's formula).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # compute.py imports this module
    from scaling.model.hardware.compute import Op


class Checkpointing(StrEnum):
    """Activation checkpointing mode."""

    NONE = "none"
    SELECTIVE = "selective"  # recompute attention core only (Korthikanti et al. 2022)
    FULL = "full"  # keep layer inputs only; re-run each layer's forward during backward


class Norm(StrEnum):
    """Normalisation layer type."""

    LAYERNORM = "layernorm"
    RMSNORM = "rmsnorm"


@dataclass(frozen=True, slots=True)
class TransformerShape:
    """Decoder-only transformer shape.

    Attributes:
        name: preset name.
        n_layers: transformer blocks.
        hidden: model width h.
        n_heads: attention heads.
        ffn_hidden: MLP inner width.
        vocab: vocabulary size.
        max_seq: context length of the learned position table (0 = rotary, no table).
        kv_heads: key/value heads (grouped-query attention); equals ``n_heads`` for MHA.
        gated_mlp: SwiGLU-style MLP with three weight matrices (Llama) instead of two (GPT).
        bias: linear layers (and LayerNorms) have biases (GPT) or not (Llama).
        tied_embeddings: the output projection reuses the input embedding.
        norm: ``layernorm`` (``nn.LayerNorm``: weight, and bias when ``bias``) or ``rmsnorm``
            (``nn.RMSNorm``: weight only).
        head_bias: an untied output layer has a bias (``nn.Linear``'s default); None = ``bias``.
    """

    name: str
    n_layers: int
    hidden: int
    n_heads: int
    ffn_hidden: int
    vocab: int
    max_seq: int
    kv_heads: int
    gated_mlp: bool = False
    bias: bool = True
    tied_embeddings: bool = True
    norm: Norm = Norm.LAYERNORM
    head_bias: bool | None = None

    @property
    def head_dim(self) -> int:
        """Width of one attention head (hidden / heads)."""
        return self.hidden // self.n_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key/value projections (kv_heads × head_dim)."""
        return self.kv_heads * self.head_dim

    # ---- parameters -------------------------------------------------------------------------
    # Tensors and their order are those ``torch.nn`` registers for the equivalent module: a
    # module's parameters in the order its ``__init__`` assigns them (``nn.Module.__setattr__``),
    # ``nn.Linear``/``nn.LayerNorm`` as ``weight`` then ``bias`` (two tensors), ``nn.RMSNorm`` as
    # ``weight`` only, a tied output layer registering nothing of its own.
    def _norm_tensors(self, name: str) -> list[tuple[str, int]]:
        h = self.hidden
        t = [(f"{name}.weight", h)]
        if self.norm is Norm.LAYERNORM and self.bias:
            t.append((f"{name}.bias", h))
        return t

    def _linear_tensors(
        self, name: str, n_in: int, n_out: int, bias: bool | None = None
    ) -> list[tuple[str, int]]:
        t = [(f"{name}.weight", n_in * n_out)]
        if self.bias if bias is None else bias:
            t.append((f"{name}.bias", n_out))
        return t

    def layer_param_tensors(self) -> list[tuple[str, int]]:
        """(name, element count) of one block's parameter tensors, in registration order."""
        h, f, kv = self.hidden, self.ffn_hidden, self.kv_dim
        n_in = 2 if self.gated_mlp else 1
        return [
            *self._norm_tensors("ln1"),
            *self._linear_tensors("attn.qkv", h, h + 2 * kv),
            *self._linear_tensors("attn.proj", h, h),
            *self._norm_tensors("ln2"),
            *self._linear_tensors("mlp.fc_in", h, n_in * f),
            *self._linear_tensors("mlp.fc_out", f, h),
        ]

    def embedding_tensors(self) -> list[tuple[str, int]]:
        """Token embedding ``wte`` and, with a learned position table, ``wpe``."""
        t = [("wte.weight", self.vocab * self.hidden)]
        if self.max_seq:
            t.append(("wpe.weight", self.max_seq * self.hidden))
        return t

    def head_tensors(self) -> list[tuple[str, int]]:
        """Final norm ``ln_f`` and, when untied, the output layer ``lm_head``."""
        t = self._norm_tensors("ln_f")
        if not self.tied_embeddings:
            t += self._linear_tensors("lm_head", self.hidden, self.vocab, self.head_bias)
        return t

    def param_tensors(self) -> list[tuple[str, int]]:
        """Every parameter tensor of the model, in registration order: embeddings, blocks
        ``h{i}.…``, final norm, output layer (the order of ``model.parameters()``)."""
        blocks = [t for i in range(self.n_layers) for t in self.block_tensors(i)]
        return [*self.embedding_tensors(), *blocks, *self.head_tensors()]

    # ---- blocks: what an encoder-decoder (encdec.EncDecShape) answers differently ------------
    @property
    def encoder_decoder(self) -> bool:
        """False: one stack of identical blocks (encdec.EncDecShape: encoder and decoder)."""
        return False

    def block_tensors(self, i: int) -> list[tuple[str, int]]:
        """Block ``i``'s parameter tensors with their full names ``h{i}.…``, registration order."""
        return [(f"h{i}.{name}", n) for name, n in self.layer_param_tensors()]

    def block_params(self) -> list[int]:
        """Parameters of every block, in order (FSDP's units, besides the root)."""
        return [self.layer_params()] * self.n_layers

    def tensors_with_stage(self) -> list[tuple[str, int, int]]:
        """(name, elements, ready stage) of every parameter tensor in registration order.

        Stages: the head (final norm, untied output layer) is ready after the head's backward
        (stage 0); block i after the ``n_layers − i`` blocks above it; the embeddings only when
        the whole backward is done (stage ``n_layers``).
        """
        L = self.n_layers
        out: list[tuple[str, int, int]] = [(n, k, L) for n, k in self.embedding_tensors()]
        for i in range(L):
            out += [(name, k, L - i) for name, k in self.block_tensors(i)]
        out += [(n, k, 0) for n, k in self.head_tensors()]
        return out

    def block_ops(
        self, micro_batch: int, seq: int, dtype_bytes: int, flash: bool
    ) -> list[tuple[list[Op], int]] | None:
        """Forward kernels of each kind of block with how many blocks in a row run them, when
        blocks differ; None = every block runs ``compute.block_forward_ops``."""
        return None

    def head_ops(self, micro_batch: int, seq: int, dtype_bytes: int) -> list[Op] | None:
        """Kernels of embedding, final norm, logits and loss when they are not
        ``compute.head_forward_ops``'s; None = those."""
        return None

    def activation_bytes(
        self, micro_batch: int, seq: int, checkpointing: Checkpointing, flash_attention: bool
    ) -> float | None:
        """Peak activation bytes of one micro-batch when not ``memory.activation_bytes``'s
        decoder-only accounting; None = that."""
        return None

    def dim0(self, name: str, numel: int) -> int:
        """Size of dimension 0 of parameter ``name`` of ``numel`` elements (what FSDP2 shards):
        a Linear weight is (out, in), an Embedding (rows, hidden), a bias or norm weight a
        vector."""
        n = numel
        if name.endswith(".bias") or name.split(".")[-2].startswith("ln"):
            return n
        if name.startswith(("wte.", "wpe.", "lm_head.")):
            return n // self.hidden
        cols = {"fc_out": self.ffn_hidden}.get(name.split(".")[-2], self.hidden)
        return n // cols

    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, dimensions) of every parameter tensor, in registration order."""
        out: list[tuple[str, tuple[int, ...]]] = []
        for name, n in self.param_tensors():
            rows = self.dim0(name, n)
            out.append((name, (n,) if rows == n else (rows, n // rows)))
        return out

    def grad_ready_order(self, autocast: bool) -> list[tuple[str, int]]:
        """Parameter tensors in the order backward produces their gradients.

        Modules finish backward in reverse registration order (the model runs them in order);
        inside a module the order is autograd's, as recorded from PyTorch 2.x
        (tests/fixtures/torch_schedules): a LayerNorm gives weight then bias; a Linear gives
        bias then weight, or weight then bias under ``torch.autocast`` (the cast of the weight
        adds a node that runs first); the position table before the token table.
        """
        out: list[tuple[str, int]] = []
        module: list[tuple[str, int]] = []

        def flush() -> None:
            names = [n.rsplit(".", 1)[-1] for n, _ in module]
            linear = not module[0][0].split(".")[-2].startswith("ln") and "bias" in names
            out.extend(module if (autocast or not linear) else module[::-1])

        for name, n in reversed(self.param_tensors()):
            if module and name.rsplit(".", 1)[0] != module[0][0].rsplit(".", 1)[0]:
                flush()
                module = []
            module.insert(0, (name, n))  # back to registration order inside the module
        if module:
            flush()
        return out

    def layer_params(self) -> int:
        """Parameters of one transformer block."""
        return sum(n for _, n in self.layer_param_tensors())

    def embedding_params(self) -> int:
        """Token (+ learned position) embedding parameters."""
        return sum(n for _, n in self.embedding_tensors())

    def head_params(self) -> int:
        """Final norm and (if untied) output layer parameters."""
        return sum(n for _, n in self.head_tensors())

    def params(self) -> int:
        """Total trainable parameters."""
        return self.embedding_params() + self.n_layers * self.layer_params() + self.head_params()

    # ---- FLOPs ------------------------------------------------------------------------------
    def layer_matmul_flops_fwd(self, tokens: int, seq: int) -> float:
        """Forward matmul FLOP of one block for ``tokens`` tokens in sequences of length ``seq``."""
        h, f, kv = self.hidden, self.ffn_hidden, self.kv_dim
        n_in = 2 if self.gated_mlp else 1
        dense = 2 * tokens * (h * (h + 2 * kv) + h * h + n_in * h * f + f * h)
        attn = 2 * 2 * tokens * seq * h  # QK^T and A·V over the full s×s score matrix
        return float(dense + attn)

    def logits_flops_fwd(self, tokens: int) -> float:
        """Forward FLOP of the output projection onto the vocabulary."""
        return 2.0 * tokens * self.hidden * self.vocab

    def flops_per_token(self, seq: int) -> float:
        """Training FLOP per token (forward + backward, no recomputation)."""
        fwd = self.n_layers * self.layer_matmul_flops_fwd(1, seq) + self.logits_flops_fwd(1)
        return 3.0 * fwd


def _gpt3(name: str, n_layers: int, hidden: int, n_heads: int) -> TransformerShape:
    # GPT-3 (Brown et al. 2020, Table 2.1): ffn = 4h, vocab 50257, context 2048, learned positions.
    return TransformerShape(name, n_layers, hidden, n_heads, 4 * hidden, 50257, 2048, n_heads)


def _llama(
    name: str, n_layers: int, hidden: int, n_heads: int, kv_heads: int, ffn: int, vocab: int
) -> TransformerShape:
    return TransformerShape(
        name,
        n_layers,
        hidden,
        n_heads,
        ffn,
        vocab,
        0,
        kv_heads,
        gated_mlp=True,
        bias=False,
        tied_embeddings=False,
        norm=Norm.RMSNORM,
    )


#: Published shapes. Parameter counts are checked against the published totals in the tests.
PRESETS: dict[str, TransformerShape] = {
    s.name: s
    for s in (
        _gpt3("gpt3-125m", 12, 768, 12),
        _gpt3("gpt3-350m", 24, 1024, 16),
        _gpt3("gpt3-1.3b", 24, 2048, 16),
        _gpt3("gpt3-2.7b", 32, 2560, 32),
        _gpt3("gpt3-6.7b", 32, 4096, 32),
        _gpt3("gpt3-13b", 40, 5140, 40),
        _gpt3("gpt3-175b", 96, 12288, 96),
        # Megatron-LM SC'21 Table 1 first row: h=2304, 24 layers, 24 heads, vocab 51,200.
        TransformerShape("megatron-1.7b", 24, 2304, 24, 4 * 2304, 51200, 2048, 24),
        # Llama-2 (Touvron et al. 2023) and Llama-3 (Meta model cards).
        _llama("llama2-7b", 32, 4096, 32, 32, 11008, 32000),
        _llama("llama2-13b", 40, 5120, 40, 40, 13824, 32000),
        _llama("llama2-70b", 80, 8192, 64, 8, 28672, 32000),
        _llama("llama3-8b", 32, 4096, 32, 8, 14336, 128256),
        _llama("llama3-70b", 80, 8192, 64, 8, 28672, 128256),
    )
}


def get_preset(name: str) -> TransformerShape:
    """Look up a preset by name; ``KeyError`` lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}") from None
