"""Mixture-of-Experts transformer shapes: routed and shared experts, dense first layers, the
router, DeepSeek's multi-head latent attention (MLA), and the presets with published shapes.

A MoE block replaces the MLP by a router (``nn.Linear(h, E, bias=False)``), ``E`` routed experts
of width ``f_e`` (each a gated MLP as the dense one), of which every token uses ``top_k``, and
optionally ``S`` shared experts that every token uses (Megatron-Core ``SharedExpertMLP``: one MLP
of width ``S·f_s``, DeepSeek's ``DeepseekV3MLP(intermediate_size = moe_intermediate_size ×
n_shared_experts)``). The first ``dense_layers`` blocks keep the dense MLP of width
``ffn_hidden`` (DeepSeek's ``first_k_dense_replace``; Megatron-Core ``--moe-layer-freq``).

Parameter tensors are those Megatron-Core registers (``megatron/core/transformer/moe/``:
``router.weight`` of ``E × h``; the expert-bias of DeepSeek-V3's sigmoid router is a buffer,
``register_buffer("expert_bias")``, not a parameter; ``TEGroupedMLP`` one fc1 / fc2 weight per
expert), named as the dense blocks of :class:`~scaling.model.hardware.workload.TransformerShape`
(``h{i}.mlp.router.weight``, ``h{i}.mlp.experts.{j}.fc_in.weight``,
``h{i}.mlp.shared_experts.fc_in.weight`` …).

**FLOPs / MFU convention** (:meth:`MoEShape.flops_per_token`): model FLOPs count the *active*
parameters — every matmul a token runs through: attention projections, the router, ``top_k``
routed experts and the shared experts (or the dense MLP of a dense layer), the logits — at
``2`` FLOP per weight per token forward, backward ``2×`` forward, plus the attention core over the
full ``s×s`` score matrix (Megatron's convention, as the dense shapes count it). Tokens dropped
by a capacity factor are still counted (MFU measures the model's nominal work; DeepSeek-V3's and
Megatron-Core's MFU figures use active parameters the same way).

**MLA** (DeepSeek-V2/V3, Megatron-Core ``MLASelfAttention``): its tensors and FLOPs per token are
counted exactly (``q_down``/``q_norm``/``q_up`` or a direct ``q`` projection, ``kv_down`` with the
shared rotary key, ``kv_norm``, ``kv_up``, ``proj``; the core over ``d_qk = nope + rope`` and
``d_v``). The per-rank *kernels* of the Megatron strategy approximate it as multi-head attention
of the same hidden width and heads (QKV ``h × 3h`` and projection ``h × h``: 205.5 M weights per
DeepSeek-V3 layer against MLA's 187.1 M, +10 %; its flash-attention core at ``d = h/heads``
under-counts MLA's ``(d_qk + d_v)/2 = 160``-wide heads, about 5 % of a DeepSeek-V3 block's
active FLOPs at ``s = 4096``). Qwen3's ``head_dim`` (128, wider than ``h/heads``) is likewise
exact in parameters and FLOPs per token, approximated at ``h/heads`` in the kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from scaling.model.hardware.workload import Norm, TransformerShape


class Router(StrEnum):
    """Gating function of the router (which changes the router's element-wise kernel)."""

    SOFTMAX = "softmax"  # Mixtral, Qwen3-MoE, DeepSeek-V2: softmax over experts, then top-k
    SIGMOID = "sigmoid"  # DeepSeek-V3: sigmoid scores + expert bias (aux-loss-free), top-k


#: Element-wise FLOPs per router score of the gating function (exp, sum, divide ≈ 5 for softmax
#: with its max pass; sigmoid, bias add and the normalisation of the k picked ≈ 4).
ROUTER_FLOPS_PER_SCORE = {Router.SOFTMAX: 5.0, Router.SIGMOID: 4.0}
#: Passes over the ``tokens × E`` scores the gating kernel makes (the kernel is memory-bound):
#: softmax reads them twice (max and sum, then normalise) and writes the probabilities; the
#: sigmoid reads once, adds the bias and writes (the top-k normalisation touches only ``k``).
ROUTER_PASSES_PER_SCORE = {Router.SOFTMAX: 3.0, Router.SIGMOID: 2.0}


@dataclass(frozen=True, slots=True)
class MoESpec:
    """The experts of a MoE transformer.

    Attributes:
        experts: routed experts ``E`` per MoE block.
        top_k: routed experts each token uses.
        expert_ffn: inner width ``f_e`` of one routed expert (``moe_intermediate_size``).
        shared_experts: shared experts ``S`` (every token uses them; 0 = none).
        shared_ffn: inner width of one shared expert (None: ``expert_ffn``).
        dense_layers: the first blocks that keep the dense MLP (``first_k_dense_replace``).
        router: the gating function.
    """

    experts: int
    top_k: int
    expert_ffn: int
    shared_experts: int = 0
    shared_ffn: int | None = None
    dense_layers: int = 0
    router: Router = Router.SOFTMAX

    @property
    def shared_width(self) -> int:
        """Inner width of the shared-expert MLP (``S·f_s``; 0 without shared experts)."""
        return self.shared_experts * (self.shared_ffn or self.expert_ffn)


@dataclass(frozen=True, slots=True)
class MLASpec:
    """DeepSeek's multi-head latent attention (``config.json`` names).

    Attributes:
        q_lora_rank: rank of the query's low-rank projection (0: a direct ``q_proj``).
        kv_lora_rank: rank of the compressed key/value latent.
        qk_nope_dim: per-head query/key width without rotary embedding.
        qk_rope_dim: per-head rotary width (one shared rotary key for all heads).
        v_dim: per-head value width.
    """

    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_dim: int
    qk_rope_dim: int
    v_dim: int


@dataclass(frozen=True, slots=True)
class MoEShape(TransformerShape):
    """A decoder-only MoE transformer (see the module docstring). ``ffn_hidden`` is the dense
    first layers' MLP width; ``attn_head_dim`` a per-head width other than ``hidden/heads``
    (Qwen3: 128; 0 = ``hidden/heads``); ``qk_norm``: per-head RMSNorms on queries and keys
    (Qwen3's ``q_norm``/``k_norm``)."""

    moe: MoESpec = field(kw_only=True)
    mla: MLASpec | None = field(default=None, kw_only=True)
    attn_head_dim: int = field(default=0, kw_only=True)
    qk_norm: bool = field(default=False, kw_only=True)

    # ---- layers -----------------------------------------------------------------------------
    def is_moe_layer(self, i: int) -> bool:
        """Whether block ``i`` (0-based) has experts (the first ``dense_layers`` do not)."""
        return i >= self.moe.dense_layers

    @property
    def moe_layers(self) -> int:
        """Blocks with experts."""
        return self.n_layers - self.moe.dense_layers

    @property
    def q_head_dim(self) -> int:
        """Per-head query/key width of the attention core."""
        if self.mla is not None:
            return self.mla.qk_nope_dim + self.mla.qk_rope_dim
        return self.attn_head_dim or self.hidden // self.n_heads

    @property
    def v_head_dim(self) -> int:
        """Per-head value width of the attention core."""
        if self.mla is not None:
            return self.mla.v_dim
        return self.attn_head_dim or self.hidden // self.n_heads

    # ---- parameters -------------------------------------------------------------------------
    def attention_tensors(self) -> list[tuple[str, int]]:
        """One block's attention tensors (no norms around it): MLA's projections, or Q/K/V
        fused as the dense shapes have it, with per-head query/key norms for Qwen3."""
        h, a = self.hidden, self.n_heads
        m = self.mla
        if m is None:
            d = self.q_head_dim
            t = self._linear_tensors("attn.qkv", h, a * d + 2 * self.kv_heads * d)
            if self.qk_norm:
                t += [("attn.q_norm.weight", d), ("attn.k_norm.weight", d)]
            return t + self._linear_tensors("attn.proj", a * d, h)
        q_out = a * (m.qk_nope_dim + m.qk_rope_dim)
        if m.q_lora_rank:
            t = [
                *self._linear_tensors("attn.q_down", h, m.q_lora_rank),
                ("attn.q_norm.weight", m.q_lora_rank),
                *self._linear_tensors("attn.q_up", m.q_lora_rank, q_out),
            ]
        else:
            t = self._linear_tensors("attn.q", h, q_out)
        return [
            *t,
            *self._linear_tensors("attn.kv_down", h, m.kv_lora_rank + m.qk_rope_dim),
            ("attn.kv_norm.weight", m.kv_lora_rank),
            *self._linear_tensors("attn.kv_up", m.kv_lora_rank, a * (m.qk_nope_dim + m.v_dim)),
            *self._linear_tensors("attn.proj", a * m.v_dim, h),
        ]

    def _mlp_tensors(self, name: str, f: int) -> list[tuple[str, int]]:
        n_in = 2 if self.gated_mlp else 1
        return [
            *self._linear_tensors(f"{name}.fc_in", self.hidden, n_in * f),
            *self._linear_tensors(f"{name}.fc_out", f, self.hidden),
        ]

    def expert_tensors(self) -> list[tuple[str, int]]:
        """The routed experts' tensors of one MoE block (``mlp.experts.{j}.…``)."""
        out: list[tuple[str, int]] = []
        for j in range(self.moe.experts):
            out += self._mlp_tensors(f"mlp.experts.{j}", self.moe.expert_ffn)
        return out

    def block_param_tensors(self, i: int) -> list[tuple[str, int]]:
        """(name, element count) of block ``i``'s tensors, in registration order."""
        mlp: list[tuple[str, int]]
        if not self.is_moe_layer(i):
            mlp = self._mlp_tensors("mlp", self.ffn_hidden)
        else:
            mlp = [("mlp.router.weight", self.moe.experts * self.hidden), *self.expert_tensors()]
            if self.moe.shared_width:
                mlp += self._mlp_tensors("mlp.shared_experts", self.moe.shared_width)
        return [
            *self._norm_tensors("ln1"),
            *self.attention_tensors(),
            *self._norm_tensors("ln2"),
            *mlp,
        ]

    def param_tensors(self) -> list[tuple[str, int]]:
        """Every parameter tensor, in registration order (embeddings, blocks, head)."""
        blocks = [
            (f"h{i}.{name}", n)
            for i in range(self.n_layers)
            for name, n in self.block_param_tensors(i)
        ]
        return [*self.embedding_tensors(), *blocks, *self.head_tensors()]

    def routed_expert_params(self) -> int:
        """Parameters of the routed experts of one MoE block (what expert parallelism shards)."""
        n_in = 2 if self.gated_mlp else 1
        per = (n_in + 1) * self.hidden * self.moe.expert_ffn
        if self.bias:
            per += n_in * self.moe.expert_ffn + self.hidden
        return self.moe.experts * per

    def block_params(self, i: int) -> int:
        """Parameters of block ``i``."""
        return sum(n for _, n in self.block_param_tensors(i))

    def layer_params(self) -> int:
        """Parameters of a MoE block (the blocks a stage mostly holds; dense first blocks:
        :meth:`block_params`)."""
        return self.block_params(self.moe.dense_layers)

    def params(self) -> int:
        """Total trainable parameters."""
        blocks = self.moe.dense_layers * self.block_params(0)  # block 0 is dense when any is
        blocks += self.moe_layers * self.layer_params()
        return self.embedding_params() + blocks + self.head_params()

    def active_params(self) -> int:
        """Parameters one token runs through: all but the ``E − top_k`` unused routed experts
        of every MoE block."""
        unused = self.routed_expert_params() * (self.moe.experts - self.moe.top_k)
        return self.params() - self.moe_layers * unused // self.moe.experts

    # ---- FLOPs ------------------------------------------------------------------------------
    def _attention_matmul_params(self) -> int:
        return sum(n for name, n in self.attention_tensors() if "norm" not in name)

    def block_flops_fwd(self, i: int, seq: int) -> float:
        """Forward model FLOPs of block ``i`` per token: ``2 ×`` its active matmul weights plus
        the attention core ``2·s·heads·(d_qk + d_v)`` (full ``s×s``)."""
        n_in = 2 if self.gated_mlp else 1
        h = self.hidden
        w = self._attention_matmul_params()
        if self.is_moe_layer(i):
            per_expert = (n_in + 1) * h * self.moe.expert_ffn
            w += self.moe.experts * h + self.moe.top_k * per_expert
            w += (n_in + 1) * h * self.moe.shared_width
        else:
            w += (n_in + 1) * h * self.ffn_hidden
        core = 2.0 * seq * self.n_heads * (self.q_head_dim + self.v_head_dim)
        return 2.0 * w + core

    def flops_per_token(self, seq: int) -> float:
        """Training model FLOPs per token (forward + backward, no recomputation), counting the
        active parameters (see the module docstring)."""
        layers = sum(self.block_flops_fwd(i, seq) for i in range(self.n_layers))
        return 3.0 * (layers + self.logits_flops_fwd(1))


# ---- grouped GEMM --------------------------------------------------------------------------
#: Rows a ragged grouped GEMM loses per expert to its last, partly filled row tile (CUTLASS /
#: Transformer Engine ``GroupedLinear`` tile each expert's rows separately): on average half a
#: 128-row tile. ASSUMPTION (no public per-device grouped-GEMM measurement is in reference/):
#: 64 rows, range 0 (rows padded to the tile by the dispatcher, ``--moe-pad-expert-input-to-
#: capacity``) to 128 (a whole tile per expert).
GROUPED_GEMM_PAD_ROWS = 64
GROUPED_GEMM_PAD_ROWS_RANGE = (0, 128)


def grouped_gemm_rows(tokens_per_expert: float, pad_rows: int = GROUPED_GEMM_PAD_ROWS) -> int:
    """Rows one expert's GEMM executes for ``tokens_per_expert`` tokens (≥ 1 of them): the tokens
    plus the ragged tile's padding. The grouped GEMM's efficiency per device is then the
    device's :func:`~scaling.model.hardware.compute.matmul_efficiency` of a ``batch`` of
    ``experts`` GEMMs of these rows (its waves of tiles over the device's compute units) times
    ``tokens / rows``; 0 tokens run no rows."""
    if tokens_per_expert <= 0:
        return 0
    return math.ceil(tokens_per_expert) + pad_rows


def grouped_gemm_efficiency(
    tokens_per_expert: float, k: int, n: int, experts: int, best: float, units: int
) -> float:
    """Achievable fraction of dense peak of a grouped GEMM of ``experts`` experts, each
    ``(tokens × k)·(k × n)``, counting the useful FLOPs only (dimensionless, ≤ ``best``).
    Calibrated where a measurement exists: none yet (see :data:`GROUPED_GEMM_PAD_ROWS`)."""
    from scaling.model.hardware.compute import matmul_efficiency  # compute imports workload

    rows = grouped_gemm_rows(tokens_per_expert)
    if rows == 0:
        return 0.0
    eff = matmul_efficiency(rows, k, n, best, batch=experts, units=units)
    return eff * tokens_per_expert / rows


# ---- presets ---------------------------------------------------------------------------------
def _moe_preset(
    name: str,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    dense_ffn: int,
    vocab: int,
    moe: MoESpec,
    **kw: object,
) -> MoEShape:
    return MoEShape(
        name,
        layers,
        hidden,
        heads,
        dense_ffn,
        vocab,
        0,
        kv_heads,
        gated_mlp=True,
        bias=False,
        tied_embeddings=False,
        norm=Norm.RMSNORM,
        moe=moe,
        **kw,  # type: ignore[arg-type]
    )


#: MoE presets, from each model's ``config.json`` on Hugging Face (values quoted in
#: ``scaling/data/reference/moe_models.csv``); totals checked against the model cards in tests.
MOE_PRESETS: dict[str, MoEShape] = {
    s.name: s
    for s in (
        # deepseek-ai/DeepSeek-V3 config.json: 61 layers, h 7168, 128 heads, MLA (q_lora 1536,
        # kv_lora 512, nope 128, rope 64, v 128), 256 routed experts of 2048, top-8, 1 shared,
        # first_k_dense_replace 3 (dense 18432), vocab 129280, sigmoid router. 671B / 37B.
        _moe_preset(
            "deepseek-v3",
            61,
            7168,
            128,
            128,
            18432,
            129280,
            MoESpec(256, 8, 2048, 1, None, 3, Router.SIGMOID),
            mla=MLASpec(1536, 512, 128, 64, 128),
        ),
        # deepseek-ai/DeepSeek-V2-Lite config.json: 27 layers, h 2048, 16 heads, MLA without
        # q_lora (kv_lora 512), 64 routed experts of 1408, top-6, 2 shared, first 1 dense
        # (10944), vocab 102400, softmax router. 15.7B total.
        _moe_preset(
            "deepseek-v2-lite",
            27,
            2048,
            16,
            16,
            10944,
            102400,
            MoESpec(64, 6, 1408, 2, None, 1, Router.SOFTMAX),
            mla=MLASpec(0, 512, 128, 64, 128),
        ),
        # mistralai/Mixtral-8x7B-v0.1 config.json: 32 layers, h 4096, 32 heads, 8 KV heads,
        # 8 experts of 14336, top-2, vocab 32000. 46.7B / 12.9B.
        _moe_preset("mixtral-8x7b", 32, 4096, 32, 8, 14336, 32000, MoESpec(8, 2, 14336)),
        # mistralai/Mixtral-8x22B-v0.1 config.json: 56 layers, h 6144, 48 heads, 8 KV heads,
        # 8 experts of 16384, top-2, vocab 32768 (v0.3 tokenizer). 141B / 39B.
        _moe_preset("mixtral-8x22b", 56, 6144, 48, 8, 16384, 32768, MoESpec(8, 2, 16384)),
        # Qwen/Qwen3-30B-A3B config.json: 48 layers, h 2048, 32 heads of 128, 4 KV heads,
        # 128 experts of 768, top-8, vocab 151936, q/k norms. 30.5B / 3.3B.
        _moe_preset(
            "qwen3-30b-a3b",
            48,
            2048,
            32,
            4,
            6144,
            151936,
            MoESpec(128, 8, 768),
            attn_head_dim=128,
            qk_norm=True,
        ),
        # Qwen/Qwen3-235B-A22B config.json: 94 layers, h 4096, 64 heads of 128, 4 KV heads,
        # 128 experts of 1536, top-8, vocab 151936, q/k norms. 235B / 22B.
        _moe_preset(
            "qwen3-235b-a22b",
            94,
            4096,
            64,
            4,
            12288,
            151936,
            MoESpec(128, 8, 1536),
            attn_head_dim=128,
            qk_norm=True,
        ),
    )
}
