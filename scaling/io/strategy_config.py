"""Strategy sections of an experiment config (``strategy:`` / ``strategies:``): one schema per
strategy kind, registered by its ``kind``; each turns into the model-layer strategy
(``to_spec``), whose own hooks (``Strategy.model_error`` / ``placement_error``) carry the rules
that need the model or the devices. A new strategy is a schema subclassing
:class:`StrategyConfig` with a ``kind: Literal[...]`` field, and one call of
:func:`register_strategy`."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from scaling.io.fields import NonNegFloat, NonNegInt, PosFloat, PosInt, Strict
from scaling.model.routing import RoutingKind, RoutingSpec
from scaling.model.strategies.base import Strategy
from scaling.model.strategies.ddp import CommHook, DDPSpec
from scaling.model.strategies.fsdp import BackwardPrefetch, FSDPSpec, ShardingStrategy
from scaling.model.strategies.fsdp_mesh import HSDPMesh
from scaling.units import MiB

if TYPE_CHECKING:  # imported by to_spec: a DDP/FSDP run skips the Megatron package (~30 ms CPU)
    from scaling.model.strategies.megatron import MegatronSpec


class StrategyConfig(Strict):
    """A strategy's config section: its ``kind`` (the discriminator) and the model-layer spec
    it stands for."""

    kind: str

    def to_spec(self) -> Strategy:
        """The model-layer strategy."""
        raise NotImplementedError


class DDPConfig(StrategyConfig):
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


class FSDPConfig(StrategyConfig):
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
    # FSDP1 rate limiter: host time from its event.synchronize() to the gated all-gather's
    # launch (model.strategies.fsdp_host); null = 235 us measured (pytorch/pytorch#108234)
    limiter_resume_us: NonNegFloat | None = None
    # HYBRID_SHARD on an explicit 2-D DeviceMesh: init_device_mesh(mesh_shape, mesh_dim_names)
    # handed to FSDP as (replicate, shard) (FSDP1 device_mesh=, FSDP2 fully_shard(mesh=)).
    # Names [replicate, shard]: shard groups of consecutive ranks; [shard, replicate]: ranks laid
    # out shard-major, strided shard groups (e.g. 8 ranks, [4, 2]: shard over {0,2,4,6},
    # replicate over {0,1}). null = shard inside each node (mesh [nodes, devices per node]).
    mesh_shape: tuple[PosInt, PosInt] | None = None
    mesh_dim_names: tuple[Literal["replicate", "shard"], Literal["replicate", "shard"]] = (
        "replicate",
        "shard",
    )

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
        if self.limiter_resume_us and self.api != "fsdp1":
            raise ValueError(
                "limiter_resume_us is FullyShardedDataParallel's (api: fsdp1) CPU-side rate "
                "limiter; FSDP2 waits for the reshard on the device (leave it unset)"
            )
        if self.mesh_shape is not None and self.sharding is not ShardingStrategy.HYBRID_SHARD:
            raise ValueError(
                "mesh_shape is a 2-D (replicate, shard) mesh: set sharding: hybrid_shard"
            )
        if set(self.mesh_dim_names) != {"replicate", "shard"}:
            raise ValueError("mesh_dim_names: expected [replicate, shard] or [shard, replicate]")
        if self.mesh_dim_names != ("replicate", "shard") and self.mesh_shape is None:
            raise ValueError("mesh_dim_names names the dimensions of mesh_shape: set mesh_shape")
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
            limiter_resume_s=None
            if self.limiter_resume_us is None
            else self.limiter_resume_us * 1e-6,
            mesh=None
            if self.mesh_shape is None
            else HSDPMesh.from_config(self.mesh_shape, self.mesh_dim_names),
        )


class ParallelismConfig(Strict):
    """Megatron-LM's parallel sizes: ``devices = tensor × context × pipeline × data``."""

    tensor: PosInt = 1  # --tensor-model-parallel-size
    pipeline: PosInt = 1  # --pipeline-model-parallel-size
    virtual_stages: PosInt = 1  # model chunks per stage (interleaved 1F1B when > 1)
    data: Literal["auto"] | PosInt = "auto"  # auto: devices / (tensor x context x pipeline)
    context: PosInt = 1  # --context-parallel-size (ring attention over the sequence)
    # --decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers (null: even)
    first_stage_layers: PosInt | None = None
    last_stage_layers: PosInt | None = None
    # --account-for-embedding-in-pipeline-split / --account-for-loss-in-pipeline-split
    account_for_embedding: bool = False
    account_for_loss: bool = False
    # --expert-model-parallel-size: a MoE block's routed experts split over EP ranks, folded
    # over tensor x context x data (Megatron-Core parallel_state)
    expert_parallel: PosInt = 1
    # --expert-tensor-parallel-size (null: the tensor size, Megatron-Core's default)
    expert_tensor_parallel: PosInt | None = None


class MoEOptionsConfig(Strict):
    """Megatron-Core MoE options and the routing of tokens to experts (``model.routing``)."""

    shared_expert_overlap: bool = False  # --moe-shared-expert-overlap
    # --moe-expert-capacity-factor (null: dropless, Megatron-Core's default); > 0
    capacity_factor: PosFloat | None = None
    routing: Literal["uniform", "zipf", "histogram"] = "uniform"
    zipf_s: Annotated[float, Field(ge=0, le=10)] = 1.0  # Zipf exponent (routing: zipf)
    # measured relative load per routed expert, in expert order (routing: histogram): inline,
    # or a file of one number per line / comma-separated (relative to the working directory)
    histogram: list[Annotated[float, Field(ge=0, le=1e12)]] | None = None
    histogram_file: str | None = None

    @model_validator(mode="after")
    def _routing_inputs(self) -> MoEOptionsConfig:
        given = [k for k in ("histogram", "histogram_file") if getattr(self, k) is not None]
        if self.routing == "histogram" and len(given) != 1:
            raise ValueError("routing histogram with exactly one of histogram / histogram_file")
        if self.routing != "histogram" and given:
            raise ValueError(f"routing: histogram with {given[0]} (got routing {self.routing})")
        # (a dumped config carries the default zipf_s back in: only another value is refused)
        if self.zipf_s != 1.0 and self.routing != "zipf":
            raise ValueError(f"routing: zipf with zipf_s (got routing {self.routing})")
        if self.histogram is not None and not any(self.histogram):
            raise ValueError("histogram with at least one positive weight")
        return self

    def weights(self) -> tuple[float, ...]:
        """The histogram's weights (read from ``histogram_file`` when given)."""
        if self.histogram is not None:
            return tuple(self.histogram)
        if self.histogram_file is None:
            return ()
        path = Path(self.histogram_file)
        try:
            text = path.read_text()
            vals = tuple(float(x) for x in text.replace(",", " ").split())
        except (OSError, ValueError) as err:
            raise ValueError(
                f"moe.histogram_file: expected a readable file of numbers, one weight per "
                f"routed expert ({path}: {err})"
            ) from None
        if not vals or min(vals) < 0 or not any(vals) or not all(map(math.isfinite, vals)):
            raise ValueError(
                f"moe.histogram_file: expected non-negative finite weights, not all zero ({path})"
            )
        return vals

    def to_spec(self) -> RoutingSpec:
        """The model-layer routing."""
        return RoutingSpec(
            RoutingKind(self.routing), self.zipf_s, self.weights(), self.capacity_factor
        )


class MegatronConfig(StrategyConfig):
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
    # --overlap-param-gather: ZeRO-1's parameter all-gather overlapped with the next forward
    overlap_param_gather: bool = False
    # --tp-comm-overlap: Transformer Engine userbuffers (needs sequence_parallel)
    tp_comm_overlap: bool = False
    # MoE options (a model with model.moe): --moe-shared-expert-overlap, the capacity factor,
    # the token-to-expert distribution
    moe: MoEOptionsConfig = MoEOptionsConfig()

    @model_validator(mode="after")
    def _histogram_readable(self) -> MegatronConfig:
        self.moe.weights()  # a bad histogram_file refused here, with the file's line
        return self

    def to_spec(self) -> MegatronSpec:
        """The model-layer Megatron spec."""
        from scaling.model.strategies.megatron import MegatronSpec

        par = self.parallelism
        return MegatronSpec(
            par.tensor,
            par.pipeline,
            par.virtual_stages,
            self.sequence_parallel,
            self.order,
            self.distributed_optimizer,
            self.overlap_grad_reduce,
            None if par.data == "auto" else par.data,
            par.context,
            par.first_stage_layers,
            par.last_stage_layers,
            par.account_for_embedding,
            par.account_for_loss,
            tp_comm_overlap=self.tp_comm_overlap,
            overlap_param_gather=self.overlap_param_gather,
            expert_parallel=par.expert_parallel,
            expert_tensor_parallel=par.expert_tensor_parallel,
            moe_shared_expert_overlap=self.moe.shared_expert_overlap,
            routing=self.moe.to_spec(),
        )


#: Strategy schemas by ``kind`` (the discriminator of ``strategy:`` / ``strategies:``), in
#: registration order.
STRATEGY_CONFIGS: dict[str, type[StrategyConfig]] = {}
#: Called with the registry after each registration (the experiment schema rebuilds its union).
_ON_REGISTER: list[Callable[[dict[str, type[StrategyConfig]]], None]] = []


def register_strategy(cls: type[StrategyConfig]) -> type[StrategyConfig]:
    """Make ``cls`` (a schema with a ``kind: Literal["name"]`` field) a strategy of experiment
    configs; returns it (usable as a class decorator). A kind registered twice is an error."""
    kind = cls.model_fields["kind"].default
    if not isinstance(kind, str):
        (kind,) = cls.model_fields["kind"].annotation.__args__  # type: ignore[union-attr]
    if kind in STRATEGY_CONFIGS and STRATEGY_CONFIGS[kind] is not cls:
        raise ValueError(f"strategy kind {kind!r} is already registered")
    STRATEGY_CONFIGS[kind] = cls
    for hook in _ON_REGISTER:
        hook(STRATEGY_CONFIGS)
    return cls


def unregister_strategy(kind: str) -> None:
    """Forget the strategy schema of ``kind`` (tests that register a toy one clean up)."""
    STRATEGY_CONFIGS.pop(kind, None)
    for hook in _ON_REGISTER:
        hook(STRATEGY_CONFIGS)


def on_register(hook: Callable[[dict[str, type[StrategyConfig]]], None]) -> None:
    """Call ``hook`` with the registry after every later registration."""
    _ON_REGISTER.append(hook)


def strategy_union(registry: dict[str, type[StrategyConfig]]) -> Any:
    """The discriminated union (by ``kind``) of the registered strategy schemas."""
    classes = tuple(registry.values())
    union = classes[0] if len(classes) == 1 else Union[classes]  # noqa: UP007
    return Annotated[union, Field(discriminator="kind")]


for _cls in (DDPConfig, FSDPConfig, MegatronConfig):
    register_strategy(_cls)


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
