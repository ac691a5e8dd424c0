"""Experiment configs: YAML → pydantic v2 schemas (frozen, ``extra="forbid"``) → model ``Job``s.

An experiment names a model preset, one or more systems (files in ``topologies/``), the node
counts, a strategy and its knobs, the per-rank batch, dtypes and how many steps to simulate.
It expands into one run per (system, nodes) point. ``--set path=value`` overrides any field.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from scaling.io.errors import ConfigError, LineMap, check_yaml_limits, read_yaml, validate
from scaling.io.topology import LoadedSystem, load_system
from scaling.model.analysis.goodput import FailureSpec
from scaling.model.hardware.system import SystemSpec
from scaling.model.hardware.workload import (
    PRESETS,
    Checkpointing,
    Norm,
    TransformerShape,
    get_preset,
)
from scaling.model.job import Job, SimSpec, TrainingSpec
from scaling.model.strategies.ddp import CommHook, DDPSpec
from scaling.model.strategies.fsdp import BackwardPrefetch, FSDPSpec, ShardingStrategy
from scaling.model.strategies.megatron import MegatronSpec
from scaling.model.variability import VariabilitySpec
from scaling.units import MiB


class _Strict(BaseModel):
    # inf and NaN are no rate, latency, budget or count: refused everywhere (``.inf`` in YAML)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: The largest integer any count field takes: far above every meaningful size (a trillion
#: layers, sequences or steps), low enough that sizes times sizes stay exact in float64.
MAX_COUNT = 10**12
PosInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
#: The largest value of a float knob (MiB, seconds, µs, tokens, W, USD): beyond any meaning.
MAX_VALUE = 1e15
PosFloat = Annotated[float, Field(gt=0, le=MAX_VALUE)]
NonNegFloat = Annotated[float, Field(ge=0, le=MAX_VALUE)]

#: Default limits of one run, checked before anything is built (:meth:`LoadedExperiment.
#: check_size`): ranks (nodes x devices per node) and simulated micro-batches per rank
#: ((steps + warmup_steps) x grad_accum_steps). A 32,768-rank flow network takes ~0.4 GiB and
#: ~20 s to build and run one collective on; the limits sit above every bundled config and
#: benchmark. Raise them with ``simulation.max_ranks`` / ``simulation.max_micro_batches``.
DEFAULT_MAX_RANKS = 65_536
DEFAULT_MAX_MICRO_BATCHES = 10_000
#: memory of the flow network per rank (B), measured: 32,768 ranks of dgx-a100 peak at 0.4 GiB
NETWORK_BYTES_PER_RANK = 13_000

#: A name that becomes a folder under ``results/``: no path separators, no ``..``, no leading
#: dot, at most 100 characters (file systems allow 255 bytes per component).
_SAFE_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+=-]{0,99}")


def safe_name(v: str) -> str:
    """``v`` if it is usable as one folder name (see ``_SAFE_NAME``); else a ValueError."""
    if not _SAFE_NAME.fullmatch(v) or ".." in v:
        raise ValueError(
            "a name of 1-100 letters, digits, '.', '_', '-', '+' or '=' (it names the folder "
            "results/<name>: no '/', no '..', no leading '.')"
        )
    return v


class DDPConfig(_Strict):
    """PyTorch DDP knobs (names and defaults as in ``torch.nn.parallel.DistributedDataParallel``)."""

    kind: Literal["ddp"] = "ddp"
    # None = not passed: 25 MiB buckets after a first bucket of first_bucket_MB (PyTorch's
    # dist._DEFAULT_FIRST_BUCKET_BYTES); passing it makes the first bucket this size too.
    bucket_cap_MB: PosFloat | None = None
    first_bucket_MB: PosFloat | None = None
    overlap: bool = True
    gradient_as_bucket_view: bool = False
    find_unused_parameters: bool = False
    static_graph: bool = False
    comm_hook: CommHook = CommHook.NONE

    @model_validator(mode="after")
    def _first_bucket_needs_default_cap(self) -> DDPConfig:
        if self.first_bucket_MB is not None and self.bucket_cap_MB is not None:
            raise ValueError(
                "first_bucket_MB only applies when bucket_cap_MB is not given: PyTorch caps the "
                "first bucket at dist._DEFAULT_FIRST_BUCKET_BYTES only when bucket_cap_mb is not "
                "passed (remove one of them)"
            )
        return self

    def to_spec(self) -> DDPSpec:
        """The model-layer DDP spec (MiB converted to bytes)."""
        # PyTorch's "MB" are MiB: bucket_cap_mb * 1024 * 1024 bytes.
        first = self.first_bucket_MB
        return DDPSpec(
            None if self.bucket_cap_MB is None else self.bucket_cap_MB * MiB,
            (1.0 if first is None else first) * MiB,
            self.overlap,
            self.gradient_as_bucket_view,
            self.find_unused_parameters,
            self.static_graph,
            self.comm_hook,
        )


class FSDPConfig(_Strict):
    """PyTorch FSDP knobs (names as in ``torch.distributed.fsdp``; lower case)."""

    kind: Literal["fsdp"]
    sharding: ShardingStrategy = ShardingStrategy.FULL_SHARD
    backward_prefetch: BackwardPrefetch = BackwardPrefetch.BACKWARD_PRE
    limit_all_gathers: NonNegInt = 2
    # MixedPrecision(param_dtype, reduce_dtype); null = no mixed precision for that field
    # (PyTorch: gather in the parameters' dtype; reduce in param_dtype). The defaults are what
    # large-model FSDP recipes run (bf16 compute, fp32 gradient reduction: torchtitan's
    # mixed_precision_reduce, llm-foundry's DEFAULT policy).
    param_dtype: Literal["bf16", "fp16", "fp32"] | None = "bf16"
    reduce_dtype: Literal["bf16", "fp16", "fp32"] | None = "fp32"
    # gradient accumulation: non-final micro-batches under no_sync() (reduce once per step)
    no_sync: bool = True
    clip_grad_norm: bool = False  # FSDP.clip_grad_norm_ before the optimizer (one all-reduce)
    # FSDP1 = FullyShardedDataParallel (padded FlatParameter per unit); fsdp2 = fully_shard
    # (per-parameter dim-0 shards)
    api: Literal["fsdp1", "fsdp2"] = "fsdp1"
    # FSDP2 fully_shard(reshard_after_forward=…) given to every unit: null = blocks resharded,
    # root kept; true = every unit resharded (the root too); false = none (ZeRO-2); an int k =
    # every unit, the root too, resharded over k ranks of its node after forward (backward
    # all-gathers in groups of k)
    reshard_after_forward: bool | PosInt | None = None
    # FSDP1 forward_prefetch=True: each block's gradient reduction one slot later in backward
    forward_prefetch: bool = False

    @model_validator(mode="after")
    def _fsdp2_options(self) -> FSDPConfig:
        if self.reshard_after_forward is not None and self.api != "fsdp2":
            raise ValueError("reshard_after_forward is FSDP2's fully_shard option: set api: fsdp2")
        ok = (ShardingStrategy.FULL_SHARD, ShardingStrategy.HYBRID_SHARD)
        if self.forward_prefetch and self.api != "fsdp1":
            raise ValueError(
                "forward_prefetch is FullyShardedDataParallel's (api: fsdp1) option; FSDP2 "
                "prefetches through set_modules_to_forward_prefetch"
            )
        if self.api == "fsdp2" and self.sharding not in ok:
            raise ValueError(
                "FSDP2 (fully_shard) shards fully or hybrid (a 2-D mesh); for ZeRO-2 use "
                "reshard_after_forward: false, for DDP-like replication use kind: ddp"
            )
        return self

    def to_spec(self) -> FSDPSpec:
        """The model-layer FSDP spec (FSDP2 reshard options resolved)."""
        raf = self.reshard_after_forward
        sharding = ShardingStrategy.SHARD_GRAD_OP if raf is False else self.sharding
        k = raf if (raf is not None and not isinstance(raf, bool)) else None
        return FSDPSpec(
            sharding,
            self.backward_prefetch,
            self.limit_all_gathers,
            self.param_dtype,
            self.reduce_dtype,
            self.no_sync,
            self.clip_grad_norm,
            k,
            self.api,
            raf is True or k is not None,
            self.forward_prefetch,
        )


class ParallelismConfig(_Strict):
    """Megatron-LM's parallel sizes: ``devices = tensor × pipeline × data``."""

    tensor: PosInt = 1  # --tensor-model-parallel-size
    pipeline: PosInt = 1  # --pipeline-model-parallel-size
    virtual_stages: PosInt = 1  # model chunks per stage (interleaved 1F1B when > 1)
    data: Literal["auto"] | PosInt = "auto"  # auto: devices / (tensor x pipeline)


class MegatronConfig(_Strict):
    """Megatron-LM tensor + pipeline + data parallelism. Micro-batches per step per pipeline are
    ``training.grad_accum_steps``; the micro-batch is ``training.micro_batch_size``."""

    kind: Literal["megatron"]
    parallelism: ParallelismConfig = ParallelismConfig()
    sequence_parallel: bool = False  # --sequence-parallel (Korthikanti et al. 2022)
    # rank placement, innermost first (Megatron-LM's own order is tp-dp-pp)
    order: Literal["tp-pp-dp", "tp-dp-pp"] = "tp-pp-dp"
    distributed_optimizer: bool = False  # --use-distributed-optimizer (ZeRO-1 over data)
    # --overlap-grad-reduce: each block's gradients reduced as the last backward produces them
    overlap_grad_reduce: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> MegatronConfig:
        par = self.parallelism
        if par.virtual_stages > 1 and par.pipeline < 2:
            raise ValueError(
                f"parallelism.virtual_stages: got {par.virtual_stages} with pipeline "
                f"{par.pipeline}; expected pipeline >= 2 for the interleaved schedule"
            )
        if self.sequence_parallel and par.tensor < 2:
            raise ValueError(
                "sequence_parallel: got true with parallelism.tensor 1; expected tensor >= 2 "
                "(sequence parallelism splits along the tensor-parallel group)"
            )
        return self

    def to_spec(self) -> MegatronSpec:
        """The model-layer Megatron spec."""
        par = self.parallelism
        return MegatronSpec(
            par.tensor,
            par.pipeline,
            par.virtual_stages,
            self.sequence_parallel,
            self.order,
            self.distributed_optimizer,
            self.overlap_grad_reduce,
        )


def megatron_shape_errors(
    strat: MegatronConfig, shape: TransformerShape, training: TrainingConfig
) -> str:
    """Why ``strat`` cannot split ``shape`` with this batch ("" when it can): the rules of
    Megatron-LM's ``arguments.py`` / ``initialize_model_parallel``."""
    par = strat.parallelism
    t, p, v = par.tensor, par.pipeline, par.virtual_stages
    m = training.grad_accum_steps
    checks = [
        (shape.n_heads % t == 0, f"parallelism.tensor: got {t}; expected a divisor of the "
         f"model's {shape.n_heads} attention heads"),
        (shape.kv_heads % t == 0, f"parallelism.tensor: got {t}; expected a divisor of the "
         f"model's {shape.kv_heads} key/value heads"),
        (shape.ffn_hidden % t == 0, f"parallelism.tensor: got {t}; expected a divisor of the "
         f"MLP width {shape.ffn_hidden}"),
        (shape.n_layers % (p * v) == 0, f"parallelism.pipeline: got pipeline {p} x "
         f"virtual_stages {v} = {p * v}; expected a divisor of the model's {shape.n_layers} "
         "layers"),
        (p == 1 or m >= p, f"training.grad_accum_steps: got {m} micro-batches per step; "
         f"expected at least parallelism.pipeline = {p} (else the pipeline never fills)"),
        (v == 1 or m % p == 0, f"training.grad_accum_steps: got {m}; expected a multiple of "
         f"parallelism.pipeline = {p} for the interleaved schedule (Megatron-LM's rule)"),
        (not strat.sequence_parallel or training.seq_len % t == 0, f"training.seq_len: got "
         f"{training.seq_len}; expected a multiple of parallelism.tensor = {t} for "
         "sequence_parallel"),
    ]  # fmt: skip
    return next((msg for ok, msg in checks if not ok), "")


def megatron_size_error(strat: MegatronConfig, devices: int, devices_per_node: int) -> str:
    """Why ``strat`` cannot place its ranks on ``devices`` devices ("" when it can)."""
    par = strat.parallelism
    mp = par.tensor * par.pipeline
    if devices % mp:
        return (
            f"parallelism: got tensor {par.tensor} x pipeline {par.pipeline} = {mp} on "
            f"{devices} devices; expected devices a multiple of {mp}"
        )
    if par.data != "auto" and par.data * mp != devices:
        return (
            f"parallelism.data: got {par.data}; expected devices / (tensor x pipeline) = "
            f"{devices // mp} (or auto)"
        )
    t = par.tensor
    if devices_per_node % t and t % devices_per_node:
        return (
            f"parallelism.tensor: got {t} on nodes of {devices_per_node} devices; expected a "
            f"divisor or a multiple of {devices_per_node}"
        )
    # a DP group's ranks repeat every t·p devices (tp-pp-dp) or fill t·d consecutive ones
    # (tp-dp-pp): unless that block divides or is a multiple of the node, the group has more
    # ranks on some nodes than on others, which no group of nodes × ranks per node prices
    d = devices // mp
    inner = {"tp-pp-dp": (t * par.pipeline, "pipeline", par.pipeline),
             "tp-dp-pp": (t * d, "data", d)}  # fmt: skip

    def uneven(order: str) -> bool:
        block = inner[order][0]
        return d > 1 and devices_per_node % block != 0 and block % devices_per_node != 0

    if uneven(strat.order):
        block, name, size = inner[strat.order]
        other = next(o for o in inner if o != strat.order)
        alt = "" if uneven(other) else f", or order {other}"
        return (
            f"order: got {strat.order} with tensor {t} x {name} {size} = {block} devices per "
            f"data-parallel block on nodes of {devices_per_node} devices; expected tensor x "
            f"{name} a divisor or a multiple of {devices_per_node} (else a data-parallel group "
            f"straddles nodes unevenly){alt}"
        )
    return ""


class TrainingConfig(_Strict):
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
        )


class SimulationConfig(_Strict):
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


class VariabilityConfig(_Strict):
    """Persistent and external variability across ranks (``scaling.model.variability``). A
    fraction and its size come together: one without the other would change nothing."""

    slow_rank_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0
    slow_rank_slowdown: Annotated[float, Field(ge=1)] = 1.0  # factor on a slow rank's compute
    degraded_nic_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    degraded_nic_bw_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0  # of the nominal rate
    host_noise_rate_per_s: NonNegFloat = 0.0  # interruptions per compute-s
    host_noise_duration_us: NonNegFloat = 0.0  # length of one interruption

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
        )


class FailuresConfig(_Strict):
    """Failures and recovery (``scaling.model.analysis.goodput``): goodput, time to train."""

    mtbf_per_device_h: PosFloat
    checkpoint_write_s: NonNegFloat = 0.0
    restart_s: NonNegFloat = 0.0
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


class EconomicsConfig(_Strict):
    """Per-system overrides of the catalog's price and power assumptions (for cost/energy)."""

    price_per_hour_USD: PosFloat | None = None
    power_idle_W: NonNegFloat | None = None
    power_busy_W: PosFloat | None = None
    node_power_overhead_W: NonNegFloat | None = None


class ModelConfig(_Strict):
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

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) divisible by heads ({self.heads})")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) divisible by kv_heads ({self.kv_heads})")
        return self

    def to_shape(self) -> TransformerShape:
        """The model shape this mapping describes."""
        return TransformerShape(
            self.name,
            self.layers,
            self.hidden,
            self.heads,
            self.ffn or 4 * self.hidden,
            self.vocab,
            self.max_positions,
            self.kv_heads or self.heads,
            gated_mlp=self.gated_mlp,
            bias=self.bias,
            tied_embeddings=self.tied_embeddings,
            norm=self.norm,
            head_bias=self.head_bias,
        )


class ExperimentConfig(_Strict):
    """A runnable experiment: systems × node counts for one model and strategy."""

    name: str = "experiment"  # names the output folder results/<name> (see safe_name)
    description: str = ""
    model: str | ModelConfig  # a preset name, or a mapping describing the model
    # list lengths bounded: an experiment is systems x strategies x nodes runs, all built first
    systems: Annotated[list[str], Field(min_length=1, max_length=100)]
    nodes: Annotated[list[PosInt], Field(min_length=1, max_length=1000)]
    strategy: Annotated[DDPConfig | FSDPConfig | MegatronConfig, Field(discriminator="kind")] = (
        DDPConfig()
    )
    strategies: (
        Annotated[
            list[Annotated[DDPConfig | FSDPConfig | MegatronConfig, Field(discriminator="kind")]],
            Field(min_length=1, max_length=100),
        ]
        | None
    ) = None
    training: TrainingConfig = TrainingConfig()
    simulation: SimulationConfig = SimulationConfig()
    report: Literal["seed-table1", "seed-table2"] | None = None  # extra table after the run
    economics: dict[str, EconomicsConfig] = {}  # system name -> price/power overrides
    variability: VariabilityConfig | None = None  # slow ranks, degraded NICs, host noise
    failures: FailuresConfig | None = None  # failure process -> goodput, effective time to train

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return safe_name(v)

    @field_validator("systems")
    @classmethod
    def _system_names(cls, v: list[str]) -> list[str]:
        for s in v:
            if not 0 < len(s) <= 255:
                raise ValueError("system names of 1-255 characters (a file in topologies/)")
        return v

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str | ModelConfig) -> str | ModelConfig:
        if isinstance(v, str) and v not in PRESETS:
            raise ValueError(f"a known model preset ({', '.join(PRESETS)})")
        return v

    @model_validator(mode="after")
    def _one_strategy_field(self) -> ExperimentConfig:
        if self.strategies is not None and "strategy" in self.model_fields_set:
            raise ValueError("give either 'strategy' or 'strategies' (a list), not both")
        return self

    @model_validator(mode="after")
    def _distinct_strategy_labels(self) -> ExperimentConfig:
        # the label is the results' strategy key (scaling efficiency, summaries, comparisons)
        seen: dict[str, int] = {}
        for i, strat in enumerate(self.all_strategies()):
            label = strat.to_spec().label
            if label in seen:
                raise ValueError(
                    f"strategies with distinct labels (the label keys the results); got "
                    f"strategies[{seen[label]}] and strategies[{i}] both labelled {label!r} "
                    "(strategies that differ only in fields the label leaves out belong in "
                    "separate experiments)"
                )
            seen[label] = i
        return self

    @model_validator(mode="after")
    def _megatron_fits_model(self) -> ExperimentConfig:
        shape = get_preset(self.model) if isinstance(self.model, str) else self.model.to_shape()
        for strat in self.all_strategies():
            if not isinstance(strat, MegatronConfig):
                continue
            msg = megatron_shape_errors(strat, shape, self.training)
            if msg:
                raise ValueError(f"strategy (megatron): {msg}")
            if self.variability is not None or self.simulation.compute_jitter_cv > 0:
                raise ValueError(
                    "strategy (megatron): got variability or simulation.compute_jitter_cv > 0; "
                    "expected neither (Megatron runs one representative rank per stage)"
                )
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_sections(self, handler: Any) -> Any:
        # a section left out is not dumped: config hashes and run keys of experiments without
        # variability or failures stay what they were before these sections existed
        d = handler(self)
        if isinstance(d, dict):
            for k in ("variability", "failures"):
                if d.get(k) is None:
                    d.pop(k, None)
        return d

    @property
    def model_name(self) -> str:
        """The preset's name, or the described model's ``name``."""
        return self.model if isinstance(self.model, str) else self.model.name

    def all_strategies(self) -> list[DDPConfig | FSDPConfig | MegatronConfig]:
        """The strategies to run: ``strategies`` if given, else the one ``strategy``."""
        return list(self.strategies) if self.strategies is not None else [self.strategy]

    @field_validator("systems", "nodes", mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        return v if isinstance(v, list) else [v]


def run_size_error(nodes: int, devices_per_node: int, max_ranks: int, knob: str = "") -> str:
    """Why ``nodes`` nodes of ``devices_per_node`` ranks are too many to simulate (beyond
    ``max_ranks``), with the estimated network memory and the knob that raises the limit; ""
    when they fit. ``knob`` names the limit's option (default: ``simulation.max_ranks``)."""
    ranks = nodes * devices_per_node
    if ranks <= max_ranks:
        return ""
    gib = ranks * NETWORK_BYTES_PER_RANK / 2**30
    return (
        f"{ranks:,} ranks (a flow network of ~{gib:,.3g} GiB); expected at most {max_ranks:,} "
        f"ranks (raise {knob or 'simulation.max_ranks'} to allow more)"
    )


def _with_economics(system: SystemSpec, eco: EconomicsConfig | None) -> SystemSpec:
    """The system with the config's price/power overrides applied."""
    if eco is None:
        return system
    dev = system.device
    dev = replace(
        dev,
        price_per_hour=eco.price_per_hour_USD
        if eco.price_per_hour_USD is not None
        else dev.price_per_hour,
        power_idle_W=eco.power_idle_W if eco.power_idle_W is not None else dev.power_idle_W,
        power_busy_W=eco.power_busy_W if eco.power_busy_W is not None else dev.power_busy_W,
    )
    overhead = system.node_power_overhead_W
    if eco.node_power_overhead_W is not None:
        overhead = eco.node_power_overhead_W
    return replace(system, device=dev, node_power_overhead_W=overhead)


def path_keys(path: str) -> tuple[str | int, ...]:
    """A dotted field path as the key tuple of a :class:`LineMap`: names for mapping keys,
    integers for list items (``strategies.1.sharding`` → ``("strategies", 1, "sharding")``)."""
    return tuple(int(k) if k.isdigit() else k for k in path.split("."))


def set_path(data: dict[str, Any], path: str, value: Any, where: str) -> tuple[str | int, ...]:
    """Set ``value`` (a copy) at the dotted ``path`` of a nested mapping, in place: mapping keys
    by name, list items by index (``strategies.1.backward_prefetch``); a missing (or null) mapping
    on the way is created. The one setter of ``--set`` and of sweep axes. Returns the path's key
    tuple; a bad path is a :class:`ConfigError` starting with ``where``."""
    keys = path.split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(f"{where}: empty field name in path {path!r}")
    node: Any = data
    used: list[str | int] = []
    for depth, k in enumerate(keys):
        last = depth == len(keys) - 1
        above = ".".join(keys[:depth]) or "(top level)"
        if isinstance(node, list):
            if not (k.isdigit() and int(k) < len(node)):
                raise ConfigError(
                    f"{where}: {path}: {above} is a list of {len(node)}; expected an index "
                    f"0..{len(node) - 1}, got {k!r}"
                )
            i = int(k)
            used.append(i)
            if last:
                node[i] = copy.deepcopy(value)
            else:
                node = node[i]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {path}: {above} is not a mapping; cannot set {k!r}")
        used.append(k)
        if last:
            node[k] = copy.deepcopy(value)
        else:
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
    return tuple(used)


def parse_override(item: str) -> tuple[str, Any]:
    """``PATH=VALUE`` (as ``--set``) → the path and the value parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected PATH=VALUE, e.g. --set nodes=[1,2,4]")
    path, raw = item.split("=", 1)
    shown = item if len(item) <= 80 else item[:77] + "..."
    try:
        check_yaml_limits(raw, f"--set {shown!r}")
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {shown!r}: value is not valid YAML") from None
    except (ValueError, OverflowError, RecursionError):
        raise ConfigError(f"--set {shown!r}: cannot read the value (a number too long?)") from None
    return path.strip(), value


def apply_overrides(
    data: dict[str, Any],
    overrides: list[str],
    lines: LineMap | None = None,
    prefix: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """Apply ``PATH=VALUE`` overrides (value parsed as YAML; list items by index, as sweep axes)
    to a nested mapping, in place. Each overridden path is marked in ``lines`` (under
    ``prefix``: the mapping's place in its file) so that an error names ``--set``, not a line."""
    for item in overrides:
        path, value = parse_override(item)
        keys = set_path(data, path, value, f"--set {item!r}")
        if lines is not None:
            lines.mark_overridden((*prefix, *keys))
    return data


class LoadedExperiment:
    """A validated experiment with its source, resolved systems and per-point jobs."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        where: str,
        base_dir: Path | None,
        lines: LineMap | None = None,
    ) -> None:
        self.config = cfg
        self.where = where
        self.base_dir = base_dir
        extra = [base_dir / "topologies", base_dir.parent / "topologies"] if base_dir else []
        self.systems: dict[str, LoadedSystem] = {}
        for i, name in enumerate(cfg.systems):
            try:
                self.systems[name] = load_system(name, extra)
            except ConfigError as e:
                if str(e).startswith("unknown system"):
                    line = lines.line_of(("systems", i)) if lines else None
                    head = f"{where}:{line}" if line else where
                    raise ConfigError(f"{head}: systems[{i}]: {e}") from None
                raise
        self._check_economics()
        self.check_size(lines)

    def estimates(self) -> list[dict[str, Any]]:
        """Each (system, nodes) point's size before anything is built: ranks, simulated
        micro-batches per rank, and the flow network's estimated memory (GiB, from
        :data:`NETWORK_BYTES_PER_RANK`)."""
        cfg = self.config
        mbs = (cfg.simulation.steps + cfg.simulation.warmup_steps) * cfg.training.grad_accum_steps
        out = []
        for name in cfg.systems:
            per_node = self.systems[name].spec.devices_per_node
            for n in sorted(set(cfg.nodes)):
                out.append(
                    {
                        "system": name,
                        "nodes": n,
                        "ranks": n * per_node,
                        "micro_batches": mbs,
                        "network_GiB": n * per_node * NETWORK_BYTES_PER_RANK / 2**30,
                    }
                )
        return out

    def check_size(self, lines: LineMap | None = None) -> None:
        """Refuse, before anything is built, a run beyond ``simulation.max_ranks`` ranks or
        ``simulation.max_micro_batches`` simulated micro-batches per rank, with its estimate and
        the knob that raises the limit (a :class:`ConfigError` naming the field's line)."""
        cfg = self.config
        sim = cfg.simulation

        def head(path: tuple[Any, ...]) -> str:
            if lines is not None and lines.overridden(path):
                return f"{self.where} (--set)"
            line = lines.line_of(path) if lines else None
            return f"{self.where}:{line}" if line else self.where

        # before simulating, not after: Table 1 compares two systems (app.seed.table1)
        if cfg.report == "seed-table1" and len(set(cfg.systems)) < 2:
            raise ConfigError(
                f"{head(('report',))}: report: got 'seed-table1' with {len(set(cfg.systems))} "
                "system; expected two or more systems (the reference first) for Table 1"
            )

        for i, n in enumerate(cfg.nodes):
            for name in cfg.systems:
                per_node = self.systems[name].spec.devices_per_node
                msg = run_size_error(n, per_node, sim.max_ranks)
                if msg:
                    raise ConfigError(
                        f"{head(('nodes', i))}: nodes[{i}]: got {n} nodes of {name}: {msg}"
                    )
        for j, strat in enumerate(cfg.all_strategies()):
            if not isinstance(strat, MegatronConfig):
                continue
            for n in cfg.nodes:
                for name in cfg.systems:
                    per_node = self.systems[name].spec.devices_per_node
                    msg = megatron_size_error(strat, n * per_node, per_node)
                    if msg:
                        where = ("strategies", j) if cfg.strategies is not None else ("strategy",)
                        raise ConfigError(
                            f"{head(where)}: strategy (megatron) at {n} nodes of {name}: {msg}"
                        )
        mbs = (sim.steps + sim.warmup_steps) * cfg.training.grad_accum_steps
        if mbs > sim.max_micro_batches:
            path = ("simulation", "steps")
            raise ConfigError(
                f"{head(path)}: simulation.steps: got (steps {sim.steps} + warmup_steps "
                f"{sim.warmup_steps}) x grad_accum_steps {cfg.training.grad_accum_steps} = "
                f"{mbs:,} simulated micro-batches per rank; expected at most "
                f"{sim.max_micro_batches:,} (steady state is reached after a few steps; raise "
                "simulation.max_micro_batches to allow more)"
            )

    def jobs(self) -> list[Job]:
        """One job per (system, strategy, nodes): systems and strategies in config order, nodes
        ascending."""
        cfg = self.config
        shape = get_preset(cfg.model) if isinstance(cfg.model, str) else cfg.model.to_shape()
        out = []
        for name in cfg.systems:
            system = _with_economics(self.systems[name].spec, cfg.economics.get(name))
            for strat in cfg.all_strategies():
                for n in sorted(set(cfg.nodes)):
                    out.append(
                        Job(
                            system=system,
                            shape=shape,
                            nodes=n,
                            training=cfg.training.to_spec(),
                            strategy=strat.to_spec(),
                            sim=replace(
                                cfg.simulation.to_spec(),
                                variability=None
                                if cfg.variability is None
                                else cfg.variability.to_spec(),
                            ),
                            failures=None if cfg.failures is None else cfg.failures.to_spec(),
                        )
                    )
        return out

    def _check_economics(self) -> None:
        unknown = sorted(set(self.config.economics) - set(self.config.systems))
        if unknown:
            raise ConfigError(
                f"{self.where}: economics: {unknown[0]!r} is not one of the config's systems "
                f"({', '.join(self.config.systems)})"
            )

    def resolved(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled in) plus the system files it used."""
        return {
            "experiment": self.config.model_dump(mode="json"),
            "systems": {
                n: {
                    "file": str(s.path),
                    "library_file": str(s.library_path),
                    "content_hash": s.content_hash,
                    "topology": s.schema.model_dump(mode="json"),
                    "library": s.library.model_dump(mode="json"),
                }
                for n, s in self.systems.items()
            },
        }

    def inputs(self) -> dict[str, Any]:
        """Everything that determines this experiment's results, independent of where files
        live: the experiment with defaults filled in (its description left out) and each
        system's topology and collective-library *values* (provenance — ``source``,
        ``confidence``, ``note``, descriptions — stripped: editing it changes no result)."""
        systems: dict[str, Any] = {}
        for s in self.systems.values():
            systems[s.schema.name] = {
                "topology": _values_only(s.schema.model_dump(mode="json")),
                "library": _values_only(s.library.model_dump(mode="json")),
            }
        experiment = self.config.model_dump(mode="json")
        experiment.pop("description", None)
        return json.loads(json.dumps({"experiment": experiment, "systems": systems}))

    def config_hash(self) -> str:
        """The experiment's config hash: :func:`content_hash` of :meth:`inputs` (equal hashes,
        equal inputs). ``scaling run`` writes it per row, golden baselines record it; a sweep
        keys each *run* by its own :func:`~scaling.sweep.spec.run_key` instead."""
        return content_hash(self.inputs())


#: Fields of a topology or library dump that describe rather than determine a result.
_NOT_INPUTS = frozenset({"description", "cannot_train_reason", "alternatives"})


def _values_only(node: Any) -> Any:
    """A topology or library dump without provenance: each quantity becomes its value."""
    if isinstance(node, dict):
        if "value" in node and "confidence" in node:
            return node["value"]
        return {k: _values_only(v) for k, v in node.items() if k not in _NOT_INPUTS}
    if isinstance(node, list):
        return [_values_only(v) for v in node]
    return node


def content_hash(doc: Any) -> str:
    """SHA-256 (16 hex digits) of a JSON-able document, keys sorted: the one hasher behind every
    config hash, run key and sweep-spec hash (equal hashes, equal documents)."""
    blob = json.dumps(doc, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def default_strategy_kind(data: dict[str, Any]) -> dict[str, Any]:
    """``kind`` may be left out for DDP, the default strategy."""
    strat = data.get("strategy")
    if isinstance(strat, dict) and "kind" not in strat:
        data = {**data, "strategy": {"kind": "ddp", **strat}}
    strats = data.get("strategies")
    if isinstance(strats, list):
        fixed = [
            {"kind": "ddp", **x} if isinstance(x, dict) and "kind" not in x else x for x in strats
        ]
        data = {**data, "strategies": fixed}
    return data


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> LoadedExperiment:
    """Read, override and validate an experiment file; every failure is a :class:`ConfigError`."""
    p = Path(path)
    data, lines = read_yaml(p, "experiment config")
    if overrides:
        data = apply_overrides(data, overrides, lines)
    where = str(p)
    cfg = validate(ExperimentConfig, default_strategy_kind(data), where, lines)
    return LoadedExperiment(cfg, where, p.resolve().parent, lines)


def experiment_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None, where: str = "<dict>"
) -> LoadedExperiment:
    """Build an experiment from an in-memory mapping (notebooks, tests), with optional
    ``PATH=VALUE`` overrides (as ``--set``; the mapping itself is not changed)."""
    if overrides:
        data = apply_overrides(copy.deepcopy(data), overrides)
    cfg = validate(ExperimentConfig, default_strategy_kind(data), where, None)
    return LoadedExperiment(cfg, where, None)


def as_experiment(
    config: LoadedExperiment | dict[str, Any] | str | Path, overrides: list[str] | None = None
) -> LoadedExperiment:
    """The one experiment loader of the API: a loaded experiment as is, a mapping, or a YAML
    file or bundled example name (``mlu-vs-gpu``, as the CLI takes it), with optional
    ``PATH=VALUE`` overrides (which need a mapping or a file)."""
    if isinstance(config, LoadedExperiment):
        if overrides:
            raise ValueError("overrides apply when loading: pass a file or a mapping with them")
        return config
    if isinstance(config, dict):
        return experiment_from_dict(config, overrides)
    from scaling.io.examples import resolve_config

    return load_experiment(resolve_config(config), overrides)
