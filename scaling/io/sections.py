"""The run sections of an experiment config: training, simulation, variability, failures,
economics and a model described field by field; each turns into its model-layer spec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_serializer, model_validator

from scaling.io.fields import NonNegFloat, NonNegInt, PosFloat, PosInt, Strict
from scaling.io.limits import DEFAULT_MAX_MICRO_BATCHES, DEFAULT_MAX_RANKS
from scaling.model.failures import MAX_CHECKPOINT_WRITE_S, MAX_RESTART_S, FailureSpec
from scaling.model.hardware.encdec import T5_BUCKETS, t5_shape
from scaling.model.hardware.moe import MLASpec, MoEShape, MoESpec, Router
from scaling.model.hardware.workload import Checkpointing, Norm, TransformerShape
from scaling.model.job import SimSpec, TrainingSpec
from scaling.model.variability import MAX_SLOWDOWN, VariabilitySpec


class TrainingConfig(Strict):
    """Per-rank batch and numerics. Weak scaling: the per-rank batch is fixed as nodes grow."""

    seq_len: PosInt = 2048
    micro_batch_size: PosInt = 1
    grad_accum_steps: PosInt = 1
    dtype: Literal["bf16", "fp16", "fp32", "tf32", "fp8"] = "bf16"
    activation_checkpointing: Checkpointing = Checkpointing.NONE
    flash_attention: bool = True
    token_budget: PosFloat | None = None  # default: 20 tokens per parameter
    sparsity: bool = False  # weight GEMMs on the structured-sparsity engine (device's speed-up)
    # Dtype the parameters (and so their gradients and Adam states) are held in. fp32 with
    # dtype bf16 is PyTorch AMP (torch.autocast): what most users run, and what DDP all-reduces.
    param_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    # the fused attention kernel: "flash" (the device's attention_efficiency) or "cudnn"
    # (cuDNN fused attention, as Transformer Engine runs it on Hopper; cudnn_attention_efficiency)
    attention_kernel: Literal["flash", "cudnn"] = "flash"

    @model_serializer(mode="wrap")
    def _omit_default_kernel(self, handler: Any) -> Any:
        # left out of dumps at its default so that config hashes and run keys stay what they
        # were before the field existed
        d = handler(self)
        if isinstance(d, dict) and d.get("attention_kernel") == "flash":
            d.pop("attention_kernel", None)
        return d

    def to_spec(self) -> TrainingSpec:
        """The model-layer training spec."""
        return TrainingSpec(
            self.micro_batch_size,
            self.grad_accum_steps,
            self.seq_len,
            self.dtype,
            self.activation_checkpointing,
            self.flash_attention,
            self.token_budget,
            self.sparsity,
            self.param_dtype,
            self.attention_kernel,
        )


class SimulationConfig(Strict):
    """How long to simulate and with which seed."""

    steps: PosInt = 2
    # DDP differs in iterations 0 (one bucket) and 1 (bucket rebuild): steady state from 2 on
    warmup_steps: NonNegInt = 2
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0  # numpy seeds are 64-bit here
    compute_jitter_cv: Annotated[float, Field(ge=0, lt=1)] = 0.0
    network: Literal["flow", "analytic"] = "flow"
    # size limits of one run, checked before it is built (LoadedExperiment.check_size)
    max_ranks: PosInt = DEFAULT_MAX_RANKS
    max_micro_batches: PosInt = DEFAULT_MAX_MICRO_BATCHES

    @model_serializer(mode="wrap")
    def _omit_default_limits(self, handler: Any) -> Any:
        # limits decide whether a run is refused, never its result: left out of dumps at their
        # defaults so that config hashes and run keys stay what they were before they existed
        d = handler(self)
        if isinstance(d, dict):
            for k, default in (
                ("max_ranks", DEFAULT_MAX_RANKS),
                ("max_micro_batches", DEFAULT_MAX_MICRO_BATCHES),
            ):
                if d.get(k) == default:
                    d.pop(k, None)
        return d

    def to_spec(self) -> SimSpec:
        """The model-layer simulation spec."""
        return SimSpec(
            self.steps, self.warmup_steps, self.seed, self.compute_jitter_cv, network=self.network
        )


class VariabilityConfig(Strict):
    """Persistent and external variability across ranks (``scaling.model.variability``). A
    fraction and its size come together: one without the other would change nothing."""

    slow_rank_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0
    slow_rank_slowdown: Annotated[float, Field(ge=1, le=MAX_SLOWDOWN)] = 1.0  # on a slow rank
    degraded_nic_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    degraded_nic_bw_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0  # of the nominal rate
    host_noise_rate_per_s: NonNegFloat = 0.0  # interruptions per compute-s
    host_noise_duration_us: NonNegFloat = 0.0  # length of one interruption
    # persistent per-rank compute speed spread (CV of the factor on every compute phase)
    device_speed_cv: Annotated[float, Field(ge=0, lt=0.5)] = 0.0

    @model_validator(mode="after")
    def _pairs(self) -> VariabilityConfig:
        for a, b, none_b in (
            ("slow_rank_fraction", "slow_rank_slowdown", 1.0),
            ("degraded_nic_fraction", "degraded_nic_bw_fraction", 1.0),
            ("host_noise_rate_per_s", "host_noise_duration_us", 0.0),
        ):
            if (getattr(self, a) > 0) != (getattr(self, b) != none_b):
                raise ValueError(f"{a} and {b} given together (one alone changes nothing)")
        return self

    def to_spec(self) -> VariabilitySpec:
        """The model-layer variability spec (microseconds to seconds)."""
        return VariabilitySpec(
            self.slow_rank_fraction,
            self.slow_rank_slowdown,
            self.degraded_nic_fraction,
            self.degraded_nic_bw_fraction,
            self.host_noise_rate_per_s,
            self.host_noise_duration_us * 1e-6,
            self.device_speed_cv,
        )


class FailuresConfig(Strict):
    """Failures and recovery (``scaling.model.failures``): goodput, time to train."""

    mtbf_per_device_h: PosFloat
    checkpoint_write_s: Annotated[float, Field(ge=0, le=MAX_CHECKPOINT_WRITE_S)] = 0.0
    restart_s: Annotated[float, Field(ge=0, le=MAX_RESTART_S)] = 0.0
    # null = Young's optimum sqrt(2 · write · job MTBF); needs a write cost to be defined
    checkpoint_interval_min: PosFloat | None = None

    @model_validator(mode="after")
    def _interval_defined(self) -> FailuresConfig:
        if self.checkpoint_interval_min is None and self.checkpoint_write_s == 0:
            raise ValueError(
                "checkpoint_interval_min or a checkpoint_write_s > 0 (Young's optimal interval "
                "sqrt(2 · write · MTBF) is 0 for free checkpoints)"
            )
        return self

    def to_spec(self) -> FailureSpec:
        """The model-layer failure spec (hours/minutes to seconds)."""
        return FailureSpec(
            self.mtbf_per_device_h,
            self.checkpoint_write_s,
            self.restart_s,
            self.checkpoint_interval_min,
        )


class EconomicsConfig(Strict):
    """Per-system overrides of the catalog's price and power assumptions (for cost/energy)."""

    price_per_hour_USD: PosFloat | None = None
    power_idle_W: NonNegFloat | None = None
    power_busy_W: PosFloat | None = None
    node_power_overhead_W: NonNegFloat | None = None


class MoEModelConfig(Strict):
    """The experts of a MoE model (``model.moe``; names as DeepSeek's / Qwen's ``config.json``,
    see :class:`~scaling.model.hardware.moe.MoESpec`)."""

    experts: PosInt  # n_routed_experts / num_local_experts
    top_k: PosInt  # num_experts_per_tok
    expert_ffn: PosInt  # moe_intermediate_size (a routed expert's inner width)
    shared_experts: NonNegInt = 0  # n_shared_experts
    shared_ffn: PosInt | None = None  # one shared expert's width; null = expert_ffn
    dense_layers: NonNegInt = 0  # first_k_dense_replace: first blocks with the dense MLP (ffn)
    router: Router = Router.SOFTMAX  # scoring_func

    @model_validator(mode="after")
    def _top_k(self) -> MoEModelConfig:
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) at most experts ({self.experts})")
        return self

    def to_spec(self) -> MoESpec:
        """The model-layer experts."""
        return MoESpec(
            self.experts,
            self.top_k,
            self.expert_ffn,
            self.shared_experts,
            self.shared_ffn,
            self.dense_layers,
            self.router,
        )


class MLAConfig(Strict):
    """DeepSeek's multi-head latent attention (``model.mla``; ``config.json`` names)."""

    q_lora_rank: NonNegInt = 0  # 0 / null in config.json: a direct q projection
    kv_lora_rank: PosInt
    qk_nope_dim: PosInt  # qk_nope_head_dim
    qk_rope_dim: PosInt  # qk_rope_head_dim
    v_dim: PosInt  # v_head_dim


class ModelConfig(Strict):
    """A decoder-only transformer described field by field; its parameter tensors are those
    ``torch.nn`` registers for the equivalent module (see ``TransformerShape.param_tensors``)."""

    name: Annotated[str, Field(min_length=1, max_length=100)] = "custom"
    vocab: PosInt
    hidden: PosInt
    layers: PosInt
    heads: PosInt
    kv_heads: PosInt | None = None  # grouped-query attention; default: heads (MHA)
    ffn: PosInt | None = None  # MLP inner width; default 4·hidden
    max_positions: NonNegInt = 0  # learned position table rows; 0 = none (rotary)
    tied_embeddings: bool = True  # output layer reuses wte (no lm_head tensor)
    bias: bool = True  # nn.Linear (incl. an untied lm_head) and LayerNorm biases
    norm: Norm = Norm.LAYERNORM
    gated_mlp: bool = False  # SwiGLU-style MLP: fc_in holds two ffn-wide projections
    head_bias: bool | None = None  # untied lm_head's bias; null = follow `bias` (nn.Linear)
    # Mixture of Experts (scaling.model.hardware.moe): routed / shared experts; with it, MLA,
    # a per-head width other than hidden/heads and Qwen3's per-head q/k norms
    moe: MoEModelConfig | None = None
    mla: MLAConfig | None = None
    head_dim: PosInt | None = None
    qk_norm: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) divisible by heads ({self.heads})")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) divisible by kv_heads ({self.kv_heads})")
        if self.moe is None:
            given = [k for k in ("mla", "head_dim", "qk_norm") if k in self.model_fields_set]
            if given:
                raise ValueError(
                    f"model.{given[0]}: given without model.moe; expected a moe mapping (MLA, "
                    "head_dim and qk_norm are modelled for MoE models)"
                )
        elif self.moe.dense_layers >= self.layers:
            raise ValueError(
                f"moe.dense_layers ({self.moe.dense_layers}) fewer than layers ({self.layers})"
            )
        return self

    def to_shape(self) -> TransformerShape:
        """The model shape this mapping describes (a :class:`MoEShape` with ``moe``)."""
        dims = (
            self.name,
            self.layers,
            self.hidden,
            self.heads,
            self.ffn or 4 * self.hidden,
            self.vocab,
            self.max_positions,
            self.kv_heads or self.heads,
        )
        flags: dict[str, Any] = {
            "gated_mlp": self.gated_mlp,
            "bias": self.bias,
            "tied_embeddings": self.tied_embeddings,
            "norm": self.norm,
            "head_bias": self.head_bias,
        }
        if self.moe is None:
            return TransformerShape(*dims, **flags)
        m = self.mla
        mla = None if m is None else MLASpec(
            m.q_lora_rank, m.kv_lora_rank, m.qk_nope_dim, m.qk_rope_dim, m.v_dim
        )  # fmt: skip
        return MoEShape(
            *dims,
            **flags,
            moe=self.moe.to_spec(),
            mla=mla,
            attn_head_dim=self.head_dim or 0,
            qk_norm=self.qk_norm,
        )


class EncDecConfig(Strict):
    """An encoder-decoder (T5-style) transformer described field by field (``kind:
    encoder_decoder``); tensors as Hugging Face's ``T5ForConditionalGeneration`` registers them
    (see ``scaling.model.hardware.encdec``). The encoder reads ``training.seq_len`` tokens per
    sequence; the decoder ``target_len``."""

    kind: Literal["encoder_decoder"]
    name: Annotated[str, Field(min_length=1, max_length=100)] = "custom-encdec"
    vocab: PosInt
    hidden: PosInt  # d_model
    layers: PosInt  # encoder blocks (num_layers)
    decoder_layers: PosInt | None = None  # num_decoder_layers; default: layers
    heads: PosInt
    head_dim: PosInt  # d_kv (attention width = heads x head_dim, need not be hidden)
    ffn: PosInt  # d_ff
    target_len: PosInt  # decoder (target) tokens per sequence
    gated_mlp: bool = False  # T5 v1.1 gated-GELU FF (wi_0, wi_1, wo)
    tied_embeddings: bool = True  # lm_head reuses `shared` (T5); false: own lm_head (v1.1)
    relative_buckets: PosInt = T5_BUCKETS

    def to_shape(self) -> TransformerShape:
        """The model shape this mapping describes."""
        return t5_shape(
            self.name,
            self.layers,
            self.hidden,
            self.ffn,
            self.heads,
            self.head_dim,
            self.vocab,
            self.target_len,
            gated=self.gated_mlp,
            tied=self.tied_embeddings,
            decoder_layers=self.decoder_layers,
            rel_buckets=self.relative_buckets,
        )
