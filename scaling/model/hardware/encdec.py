"""Encoder-decoder transformers (T5, T5 v1.1): parameter tensors, FLOPs, kernels and activations.

The module structure and the registration order of its parameters are those of Hugging Face
``transformers`` ``src/transformers/models/t5/modeling_t5.py`` (``T5ForConditionalGeneration``):

* ``shared`` (``nn.Embedding(vocab, d_model)``), used by both stacks and, when tied, the output;
* ``encoder`` (``T5Stack``): ``block.{i}`` (``T5Block``) holding ``layer.0`` =
  ``T5LayerSelfAttention`` (``SelfAttention`` = ``T5Attention``: ``q``, ``k``, ``v``, ``o``
  ``nn.Linear(bias=False)``, then ``relative_attention_bias`` = ``nn.Embedding(buckets, heads)`` in
  block 0 only, ``has_relative_attention_bias=bool(i == 0)``; ``layer_norm`` = ``T5LayerNorm``, a
  weight and no bias) and ``layer.1`` = ``T5LayerFF`` (``DenseReluDense``: ``wi``, ``wo``, or for
  the gated v1.1 ``T5DenseGatedActDense`` ``wi_0``, ``wi_1``, ``wo``; ``layer_norm``); then
  ``final_layer_norm``. The stack's ``embed_tokens`` is the shared module (counted once by
  ``parameters()``).
* ``decoder`` (``T5Stack``, ``is_decoder``): the same, with ``layer.1`` =
  ``T5LayerCrossAttention`` (``EncDecAttention`` = ``T5Attention`` without relative bias,
  ``layer_norm``) and the FF as ``layer.2``;
* ``lm_head`` (``nn.Linear(d_model, vocab, bias=False)``) when not tied (v1.1); tied T5 reuses
  ``shared`` and registers nothing.

Attention width is ``heads × d_kv`` (16,384 for T5-11B, against d_model 1,024). Lengths: the
encoder reads ``training.seq_len`` tokens per sequence (the input length); the decoder runs on
:attr:`EncDecShape.target_len` tokens (the target length), its self-attention causal over them and
its cross-attention over the encoder's output. A "token" in throughput is an encoder input token.

FLOPs follow the convention of :mod:`workload` (2·m·k·n per matmul, backward = 2× forward, full
score matrices counted). Cross-attention projects the encoder output to keys and values in every
decoder block (``T5Attention.forward``'s ``key_value_states``), so its k/v GEMMs have the
encoder's token count. Relative position bias adds a (heads × q × k) bias to the scores: HF's
``T5Attention`` is unfused (scores, + bias, softmax, dropout, ·v), which is what
``flash_attention: false`` times; ``true`` times a fused kernel that takes an additive bias
(PyTorch SDPA's memory-efficient kernel, xformers), non-causal for the encoder and the
cross-attention.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model.hardware.compute import (
    DROPOUT_MASK_BYTES,
    FlashShape,
    GemmShape,
    Op,
    gemm_op,
)
from scaling.model.hardware.workload import PRESETS, Checkpointing, Norm, TransformerShape

#: Relative-attention buckets of every published T5 (``relative_attention_num_buckets``).
T5_BUCKETS = 32


@dataclass(frozen=True, slots=True)
class EncDecShape(TransformerShape):
    """An encoder-decoder transformer (T5 family), see the module docstring.

    ``n_layers`` counts every block, encoder first (``enc_layers`` of them) then decoder: the
    blocks FSDP wraps (``transformer_auto_wrap_policy({T5Block})``) and DDP's backward stages.

    Attributes:
        enc_layers: encoder blocks (``num_layers``); the decoder has ``n_layers − enc_layers``.
        d_kv: width of one attention head (``d_kv``; attention width = ``n_heads · d_kv``).
        target_len: decoder (target) tokens per sequence.
        rel_buckets: relative position buckets (``relative_attention_num_buckets``).
    """

    enc_layers: int = 0
    d_kv: int = 0
    target_len: int = 0
    rel_buckets: int = T5_BUCKETS

    @property
    def dec_layers(self) -> int:
        """Decoder blocks."""
        return self.n_layers - self.enc_layers

    @property
    def head_dim(self) -> int:
        """``d_kv`` (T5 does not tie the head width to d_model / heads)."""
        return self.d_kv

    @property
    def inner(self) -> int:
        """Attention width ``n_heads · d_kv``."""
        return self.n_heads * self.d_kv

    @property
    def encoder_decoder(self) -> bool:
        """True: an encoder stack and a decoder stack with cross-attention."""
        return True

    # ---- parameters -------------------------------------------------------------------------
    def _attention(self, name: str, rel_bias: bool) -> list[tuple[str, int]]:
        h, a = self.hidden, self.inner
        t = [(f"{name}.{p}.weight", h * a) for p in ("q", "k", "v", "o")]
        if rel_bias:
            t.append((f"{name}.relative_attention_bias.weight", self.rel_buckets * self.n_heads))
        return t

    def _ff(self, name: str) -> list[tuple[str, int]]:
        h, f = self.hidden, self.ffn_hidden
        wi = ("wi_0", "wi_1") if self.gated_mlp else ("wi",)
        return [(f"{name}.DenseReluDense.{w}.weight", h * f) for w in (*wi, "wo")] + [
            (f"{name}.layer_norm.weight", h)
        ]

    def block_tensors(self, i: int) -> list[tuple[str, int]]:
        """Block ``i`` (encoder blocks first) with its full parameter names, registration order."""
        h = self.hidden
        decoder = i >= self.enc_layers
        j = i - self.enc_layers if decoder else i
        p = f"{'decoder' if decoder else 'encoder'}.block.{j}.layer"
        t = [*self._attention(f"{p}.0.SelfAttention", j == 0), (f"{p}.0.layer_norm.weight", h)]
        if decoder:
            t += self._attention(f"{p}.1.EncDecAttention", False)
            t += [(f"{p}.1.layer_norm.weight", h)]
        return t + self._ff(f"{p}.{2 if decoder else 1}")

    def layer_param_tensors(self) -> list[tuple[str, int]]:
        """The first encoder block's tensors (blocks differ: see :meth:`block_tensors`)."""
        return self.block_tensors(0)

    def block_params(self) -> list[int]:
        """Parameters of every block, encoder first."""
        return [sum(n for _, n in self.block_tensors(i)) for i in range(self.n_layers)]

    def layer_params(self) -> int:
        """The largest block's parameters (a decoder block's: the unit FSDP gathers)."""
        return max(self.block_params())

    def embedding_tensors(self) -> list[tuple[str, int]]:
        """``shared``: the token embedding of both stacks."""
        return [("shared.weight", self.vocab * self.hidden)]

    def head_tensors(self) -> list[tuple[str, int]]:
        """Both stacks' final norms and, untied, ``lm_head`` (everything outside the blocks
        besides ``shared``; registered in the order of :meth:`param_tensors`)."""
        t = [("encoder.final_layer_norm.weight", self.hidden)]
        t.append(("decoder.final_layer_norm.weight", self.hidden))
        if not self.tied_embeddings:
            t.append(("lm_head.weight", self.hidden * self.vocab))
        return t

    def param_tensors(self) -> list[tuple[str, int]]:
        """Every tensor in the order ``T5ForConditionalGeneration.parameters()`` yields them."""
        enc_norm, dec_norm, *lm_head = self.head_tensors()
        enc = [t for i in range(self.enc_layers) for t in self.block_tensors(i)]
        dec = [t for i in range(self.enc_layers, self.n_layers) for t in self.block_tensors(i)]
        return [*self.embedding_tensors(), *enc, enc_norm, *dec, dec_norm, *lm_head]

    def params(self) -> int:
        """Total trainable parameters."""
        return self.embedding_params() + sum(self.block_params()) + self.head_params()

    def tensors_with_stage(self) -> list[tuple[str, int, int]]:
        """(name, elements, backward stage after which the gradient is ready), registration
        order. Blocks as in a decoder-only model (block i after ``n_layers − i`` blocks); the
        encoder's final norm once every decoder block is done (each one's cross-attention reads
        the encoder output); the decoder's final norm and ``lm_head`` after the head (stage 0);
        ``shared`` when the whole backward is done."""
        L = self.n_layers
        stages = {"encoder.final_layer_norm.weight": self.dec_layers, "shared.weight": L}
        out = []
        for i in range(L):
            out += [(n, k, L - i) for n, k in self.block_tensors(i)]
        by_block = {n: s for n, _, s in out}
        return [(n, k, by_block.get(n, stages.get(n, 0))) for n, k in self.param_tensors()]

    def dim0(self, name: str, numel: int) -> int:
        """Rows of parameter ``name`` (``nn.Linear`` weights are (out, in))."""
        module = name.split(".")[-2]
        rows = {
            "q": self.inner,
            "k": self.inner,
            "v": self.inner,
            "wi": self.ffn_hidden,
            "wi_0": self.ffn_hidden,
            "wi_1": self.ffn_hidden,
            "relative_attention_bias": self.rel_buckets,
            "shared": self.vocab,
            "lm_head": self.vocab,
        }
        if module in ("o", "wo"):
            return self.hidden
        return rows.get(module, numel)

    # ---- FLOPs ------------------------------------------------------------------------------
    def _block_flops_fwd(self, decoder: bool, s_enc: int) -> float:
        """Forward FLOP of one block for one sequence."""
        h, a, f, s_dec = self.hidden, self.inner, self.ffn_hidden, self.target_len
        n_in = 2 if self.gated_mlp else 1
        s = s_dec if decoder else s_enc
        flops = 2.0 * s * (4 * h * a + (n_in + 1) * h * f) + 4.0 * s * s * a
        if decoder:  # cross-attention: q, o on target tokens, k, v on encoder tokens
            flops += 2.0 * (2 * s_dec * h * a + 2 * s_enc * h * a) + 4.0 * s_dec * s_enc * a
        return flops

    def flops_per_token(self, seq: int) -> float:
        """Training FLOP (3× forward) per encoder input token, with ``seq`` input tokens and
        :attr:`target_len` target tokens per sequence; logits over the target tokens."""
        fwd = self.enc_layers * self._block_flops_fwd(False, seq)
        fwd += self.dec_layers * self._block_flops_fwd(True, seq)
        fwd += 2.0 * self.target_len * self.hidden * self.vocab
        return 3.0 * fwd / seq

    # ---- kernels ----------------------------------------------------------------------------
    def _attention_ops(
        self, name: str, b: int, s_q: int, s_kv: int, e: int, flash: bool, causal: bool
    ) -> list[Op]:
        h, a, heads = self.hidden, self.inner, self.n_heads
        tq, tkv = b * s_q, b * s_kv
        ops = [
            gemm_op(f"{name}.q", tq, h, a, e),
            gemm_op(f"{name}.kv", tkv, h, 2 * a, e),
        ]
        core = 4.0 * tq * s_kv * a
        if flash:
            io = float(e * (2 * tq * a + 2 * tkv * a) + e * heads * s_q * s_kv)
            ops.append(
                Op(f"{name}.attention", core, io, True, flash=FlashShape(s_kv, causal=causal))
            )
        else:
            # HF T5Attention: scores = q·kᵀ, + position bias (self-attention), softmax (float32
            # inside, cast back), dropout, ·v — unfused, the s_q×s_kv scores written per head.
            bh, d = b * heads, self.d_kv
            scores = float(bh * s_q * s_kv)
            drop = (2.0 * e + DROPOUT_MASK_BYTES) * scores
            ops += [
                Op(
                    f"attn.{name}.scores",
                    core / 2,
                    e * (tq * a + tkv * a) + e * scores,
                    True,
                    gemm=GemmShape(s_q, d, s_kv, bh),
                ),
                Op(
                    f"attn.{name}.softmax",
                    6.0 * scores,
                    3.0 * e * scores,
                    False,
                    backward_bytes=3.0 * e * scores,
                ),
                Op(f"attn.{name}.dropout", scores, drop, False, backward_bytes=drop),
                Op(
                    f"attn.{name}.av",
                    core / 2,
                    e * scores + 2.0 * e * tq * a,
                    True,
                    gemm=GemmShape(s_q, s_kv, d, bh),
                ),
            ]
        ops.append(gemm_op(f"{name}.o", tq, a, h, e))
        return ops

    def _norm_ops(self, name: str, t: int, e: int) -> list[Op]:
        h = self.hidden
        return [
            Op(f"ln.{name}", 4.0 * t * h, 2.0 * e * t * h, False),
            Op(f"residual.{name}", float(t * h), 3.0 * e * t * h, False),
        ]

    def block_ops(
        self, micro_batch: int, seq: int, dtype_bytes: int, flash: bool
    ) -> list[tuple[list[Op], int]] | None:
        """Forward kernels of the encoder block and of the decoder block, each with how many
        blocks in a row run them (encoder first), for ``seq`` input tokens per sequence."""
        b, e, s_dec, h, f = micro_batch, dtype_bytes, self.target_len, self.hidden, self.ffn_hidden
        n_in = 2 if self.gated_mlp else 1

        def ff(t: int) -> list[Op]:
            return [
                *self._norm_ops("ff", t, e),
                gemm_op("ff.wi", t, h, n_in * f, e),
                Op("act", 8.0 * t * f, float(e * t * (n_in + 1) * f), False),
                gemm_op("ff.wo", t, f, h, e),
            ]

        te, td = b * seq, b * s_dec
        enc = [
            *self._norm_ops("self", te, e),
            *self._attention_ops("self", b, seq, seq, e, flash, causal=False),
            *ff(te),
        ]
        dec = [
            *self._norm_ops("self", td, e),
            *self._attention_ops("self", b, s_dec, s_dec, e, flash, causal=True),
            *self._norm_ops("cross", td, e),
            *self._attention_ops("cross", b, s_dec, seq, e, flash, causal=False),
            *ff(td),
        ]
        return [(enc, self.enc_layers), (dec, self.dec_layers)]

    def head_ops(self, micro_batch: int, seq: int, dtype_bytes: int) -> list[Op] | None:
        """Embedding lookups of both stacks, final norms, logits and the float32
        cross-entropy over the target tokens (the loss of ``T5ForConditionalGeneration``)."""
        from scaling.model.hardware.compute import CE_BWD_BYTES_FP32, CE_FWD_BYTES_FP32

        h, v, e = self.hidden, self.vocab, dtype_bytes
        te, td = micro_batch * seq, micro_batch * self.target_len
        tv = float(td * v)
        return [
            Op("embedding", float((te + td) * h), 2.0 * e * (te + td) * h, False),
            Op("ln_f", 4.0 * (te + td) * h, 2.0 * e * (te + td) * h, False),
            gemm_op("logits", td, h, v, e),
            Op(
                "cross_entropy",
                5.0 * tv,
                tv * (e + CE_FWD_BYTES_FP32),
                False,
                backward_bytes=tv * (e + CE_BWD_BYTES_FP32),
            ),
        ]

    # ---- activation memory ------------------------------------------------------------------
    def activation_bytes(
        self,
        micro_batch: int,
        seq: int,
        checkpointing: Checkpointing,
        flash_attention: bool,
    ) -> float | None:
        """Peak activation bytes of one micro-batch (16-bit activations).

        Per sub-layer, what its backward keeps (the accounting of Korthikanti et al. 2022 §4.1
        applied to T5's sub-layers): attention keeps its input and normed input (2·2·t·h), q, k,
        v and the context (4·2·t·a, k/v over the key tokens), the output-dropout mask (t·h) and,
        unfused, the scores' softmax output and dropout mask (5·heads·s_q·s_kv per sequence);
        the FF keeps input, normed input (4·t·h), both sides of the activation (4·t·f per input
        projection) and its masks (t·f + t·h). ``full`` checkpointing keeps each block's input
        (2·t·h) plus the encoder output the decoder reads, and one block's full set during its
        recomputation; ``selective`` drops the unfused attention cores. The logits add their
        16-bit copy and the loss's float32 copy (6 bytes per target token and vocabulary entry).
        """
        b, h, a, f, heads = micro_batch, self.hidden, self.inner, self.ffn_hidden, self.n_heads
        n_in = 2 if self.gated_mlp else 1
        te, td = b * seq, b * self.target_len

        def attn(tq: int, tkv: int, s_q: int, s_kv: int, core: bool) -> float:
            x = 5.0 * tq * h + 2.0 * 2 * tq * a + 2.0 * 2 * tkv * a
            return x + (5.0 * heads * s_q * s_kv * b if core else 0.0)

        def ff(t: int) -> float:
            return 5.0 * t * h + (4.0 * n_in + 1) * t * f

        core = not flash_attention and checkpointing is not Checkpointing.SELECTIVE
        s_d = self.target_len
        enc = attn(te, te, seq, seq, core) + ff(te)
        dec = attn(td, td, s_d, s_d, core) + attn(td, te, s_d, seq, core) + ff(td)
        if checkpointing is Checkpointing.FULL:
            full = attn(te, te, seq, seq, not flash_attention) + ff(te)
            full_dec = (
                attn(td, td, s_d, s_d, not flash_attention)
                + attn(td, te, s_d, seq, not flash_attention)
                + ff(td)
            )
            kept = 2.0 * h * (self.enc_layers * te + self.dec_layers * td + te)
            blocks = kept + max(full, full_dec)
        else:
            blocks = self.enc_layers * enc + self.dec_layers * dec
        return blocks + td * self.vocab * (2.0 + 4.0)


def t5_shape(
    name: str,
    layers: int,
    d_model: int,
    d_ff: int,
    heads: int,
    d_kv: int,
    vocab: int,
    target_len: int,
    *,
    gated: bool = False,
    tied: bool = True,
    decoder_layers: int | None = None,
    rel_buckets: int = T5_BUCKETS,
) -> EncDecShape:
    """A T5-style shape: ``layers`` encoder blocks and ``decoder_layers`` (default the same)
    decoder blocks, RMS-style ``T5LayerNorm`` (a weight, no bias), no linear biases."""
    dec = layers if decoder_layers is None else decoder_layers
    return EncDecShape(
        name,
        layers + dec,
        d_model,
        heads,
        d_ff,
        vocab,
        0,  # relative position bias: no learned position table
        heads,
        gated_mlp=gated,
        bias=False,
        tied_embeddings=tied,
        norm=Norm.RMSNORM,
        enc_layers=layers,
        d_kv=d_kv,
        target_len=target_len,
        rel_buckets=rel_buckets,
    )


#: Decoder length of the presets: T5's pre-training objective (Raffel et al. 2020 §3.1.4, span
#: corruption with 15 % noise, mean span 3) turns 512 input tokens into targets of about 114
#: tokens; the released pre-training used an input length of 512 and a target length of 114
#: (``t5.data.preprocessors.span_corruption``; HF ``run_t5_mlm_flax.py``
#: ``compute_input_and_target_lengths``: inputs 568 → 512, targets 114).
T5_TARGET_LEN = 114

#: Published shapes: Raffel et al. 2020 (JMLR 21(140)) §3.7 "Model sizes" and the HF configs
#: ``t5-3b`` / ``t5-11b`` (d_model 1024, d_kv 128, 24+24 layers, vocab 32,128; 3B: d_ff 16,384,
#: 32 heads; 11B: d_ff 65,536, 128 heads; ReLU FF, tied output). T5 v1.1 XL / XXL
#: (``google/t5-v1_1-xl`` / ``-xxl`` configs): gated-GELU FF, untied ``lm_head``, d_model 2048 /
#: 4096, d_ff 5120 / 10240, 32 / 64 heads of 64.
ENCDEC_PRESETS: dict[str, TransformerShape] = {
    s.name: s
    for s in (
        t5_shape("t5-3b", 24, 1024, 16384, 32, 128, 32128, T5_TARGET_LEN),
        t5_shape("t5-11b", 24, 1024, 65536, 128, 128, 32128, T5_TARGET_LEN),
        t5_shape(
            "t5-v1.1-xl", 24, 2048, 5120, 32, 64, 32128, T5_TARGET_LEN, gated=True, tied=False
        ),
        t5_shape(
            "t5-v1.1-xxl", 24, 4096, 10240, 64, 64, 32128, T5_TARGET_LEN, gated=True, tied=False
        ),
    )
}

# registration: the encoder-decoder presets are model presets like any other (config, CLI)
PRESETS.update(ENCDEC_PRESETS)
