"""The space a plan searches: every strategy configuration of one model on one system at one node
count that keeps the global batch, before anything is checked against memory or simulated.

The batch arithmetic is the planner's own rule: a configuration is comparable with another only
at the same global batch (sequences per optimizer step), so DDP/FSDP split it as
``devices · micro_batch · grad_accum`` and Megatron as ``data · micro_batch · micro_batches``
with ``data = devices / (tensor · pipeline)``. Everything else that makes a configuration invalid
(heads not divisible by the tensor size, layers by the pipeline, placements) is the config
layer's rule and is checked there, once, by loading the candidate as an experiment.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: strategy kinds the planner knows how to enumerate
KINDS = ("ddp", "fsdp", "megatron")


@dataclass(frozen=True)
class PlanSpace:
    """What the planner may choose (each a tuple of allowed values; the CLI's constraints).

    Attributes:
        strategies: strategy kinds (``ddp``, ``fsdp``, ``megatron``).
        micro_batches: sequences per micro-batch per rank.
        checkpointing: activation checkpointing modes (``none``, ``full``).
        fsdp_sharding: FSDP sharding strategies.
        ddp_bucket_caps_MB: DDP ``bucket_cap_mb`` values (None = PyTorch's default 25 MiB
            buckets after a 1 MiB first one).
        tensor: Megatron tensor-parallel sizes.
        pipeline: Megatron pipeline-parallel sizes.
        virtual_stages: Megatron model chunks per stage (interleaved 1F1B when > 1).
        distributed_optimizer: Megatron ZeRO-1 choices.
        expert_parallel: Megatron expert-parallel sizes for a MoE model (None: every divisor
            of its routed experts); a dense model runs without expert parallelism.
    """

    strategies: tuple[str, ...] = KINDS
    micro_batches: tuple[int, ...] = (1, 2, 4, 8)
    checkpointing: tuple[str, ...] = ("none", "full")
    fsdp_sharding: tuple[str, ...] = ("full_shard", "shard_grad_op", "hybrid_shard")
    ddp_bucket_caps_MB: tuple[float | None, ...] = (None,)
    tensor: tuple[int, ...] = (1, 2, 4, 8)
    pipeline: tuple[int, ...] = (1, 2, 4, 8, 16)
    virtual_stages: tuple[int, ...] = (1,)
    distributed_optimizer: tuple[bool, ...] = (True,)
    expert_parallel: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        unknown = [k for k in self.strategies if k not in KINDS]
        if unknown:
            raise ValueError(f"strategies: got {unknown[0]!r}; expected one of {', '.join(KINDS)}")
        for name in ("strategies", "micro_batches", "checkpointing", "tensor", "pipeline"):
            if not getattr(self, name):
                raise ValueError(f"{name}: got an empty list; expected at least one value")
        for name in ("micro_batches", "tensor", "pipeline", "virtual_stages", "expert_parallel"):
            bad = [v for v in getattr(self, name) or () if not isinstance(v, int) or v < 1]
            if bad:
                raise ValueError(f"{name}: got {bad[0]!r}; expected positive integers")


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: a strategy mapping and the batch split, on one system and node
    count. ``fields`` are the experiment's fields it sets (config paths → values)."""

    system: str
    nodes: int
    kind: str
    fields: tuple[tuple[str, str], ...] = field(default=())  # (path, JSON value), hashable
    configured: bool = False  # the experiment's own strategy (reported beside the best)

    @classmethod
    def make(
        cls, system: str, nodes: int, kind: str, fields: dict[str, Any], configured: bool = False
    ) -> Candidate:
        """A candidate from a mapping of experiment paths to Python values."""
        pairs = tuple((k, json.dumps(v, sort_keys=True)) for k, v in fields.items())
        return cls(system, nodes, kind, pairs, configured)

    def values(self) -> dict[str, Any]:
        """The experiment paths this candidate sets, with their Python values."""
        return {k: json.loads(v) for k, v in self.fields}

    @property
    def label(self) -> str:
        """A short human name: ``megatron t8 p8 mb1 m24 ckpt=full zero1``."""
        v = self.values()
        st, tr = v["strategy"], v["training"]
        parts = [self.kind]
        if self.kind == "fsdp":
            parts.append(st["sharding"])
        if self.kind == "ddp" and st.get("bucket_cap_MB") is not None:
            parts.append(f"cap{st['bucket_cap_MB']:g}MB")
        if self.kind == "megatron":
            par = st["parallelism"]
            parts.append(f"t{par['tensor']} p{par['pipeline']}")
            if par.get("expert_parallel", 1) > 1:
                parts.append(f"e{par['expert_parallel']}")
            if par["virtual_stages"] > 1:
                parts.append(f"v{par['virtual_stages']}")
        parts.append(f"mb{tr['micro_batch_size']} ga{tr['grad_accum_steps']}")
        parts.append(f"ckpt={tr['activation_checkpointing']}")
        if self.kind == "megatron" and st.get("distributed_optimizer"):
            parts.append("zero1")
        if self.configured:
            parts.append("(as configured)")
        return " ".join(parts)

    def with_checkpointing(self, mode: str) -> Candidate:
        """The same configuration with another activation checkpointing mode."""
        v = self.values()
        v["training"] = {**v["training"], "activation_checkpointing": mode}
        return Candidate.make(self.system, self.nodes, self.kind, v, self.configured)


def _split(global_batch: int, replicas: int, micro_batch: int) -> int | None:
    """Micro-batches per step per replica that keep ``global_batch``, or None."""
    per = replicas * micro_batch
    if global_batch % per:
        return None
    return global_batch // per


def replicas_of(strategy: dict[str, Any], devices: int) -> int | None:
    """Data-parallel replicas of a strategy mapping on ``devices`` (None: it does not divide):
    ``devices`` over the strategy's own ``model_parallel`` (Megatron: tensor × context ×
    pipeline), asked of the strategy the config kind builds."""
    from scaling.io.strategy_config import STRATEGY_CONFIGS

    mp = STRATEGY_CONFIGS[strategy["kind"]].model_validate(strategy).to_spec().model_parallel
    return devices // mp if devices % mp == 0 else None


def configured_candidate(
    system: str,
    devices_per_node: int,
    nodes: int,
    global_batch: int,
    strategy: dict[str, Any],
    training: dict[str, Any],
) -> Candidate | str:
    """The experiment's own strategy and micro-batch at ``global_batch`` (its micro-batches per
    step adjusted to keep it), or why it cannot keep that batch."""
    replicas = replicas_of(strategy, nodes * devices_per_node)
    mb = training["micro_batch_size"]
    ga = None if replicas is None else _split(global_batch, replicas, mb)
    if ga is None:
        return "global batch not a multiple of replicas x micro-batch"
    fields = {
        "strategy": strategy,
        "training": {
            "micro_batch_size": mb,
            "grad_accum_steps": ga,
            "activation_checkpointing": training["activation_checkpointing"],
        },
    }
    return Candidate.make(system, nodes, str(strategy["kind"]), fields, configured=True)


def expert_choices(
    strategy: dict[str, Any], replicas: int, experts: int, space: PlanSpace, refused: Counter[str]
) -> Iterator[dict[str, Any]]:
    """A Megatron strategy mapping with each expert-parallel size the space allows for a MoE
    model of ``experts`` routed experts (the mapping itself for a dense model), counting the
    sizes refused by reason. The rules are Megatron-Core's: EP divides the experts
    (``num_moe_experts % expert_model_parallel_size``), and the expert ranks ``ETP × EP ×
    EDP`` refold a stage's ``tensor × data`` ranks (``parallel_state.py``; ETP defaults to the
    tensor size, the planner searches no context parallelism), so ``EP · ETP`` divides them.
    With EP > 1 the ranks follow Megatron's own ``tp-dp-pp`` order, which expert parallelism
    over several stages requires."""
    if experts == 0:
        yield strategy
        return
    par = strategy["parallelism"]
    t = par["tensor"]
    sizes = space.expert_parallel or tuple(e for e in range(1, experts + 1) if experts % e == 0)
    for ep in sizes:
        if experts % ep:
            refused["experts not a multiple of expert_parallel"] += 1
        elif (t * replicas) % (ep * t):  # i.e. EP does not divide the data-parallel size
            refused["tensor x data not a multiple of expert_parallel x expert_tensor_parallel"] += 1
        elif ep == 1:
            yield strategy
        else:
            yield {**strategy, "order": "tp-dp-pp", "parallelism": {**par, "expert_parallel": ep}}


def enumerate_candidates(
    system: str,
    devices_per_node: int,
    nodes: int,
    global_batch: int,
    space: PlanSpace,
    experts: int = 0,
) -> tuple[list[Candidate], Counter[str]]:
    """Every configuration of ``space`` at ``nodes`` nodes that keeps ``global_batch``
    sequences per step, and the count of those refused by the batch arithmetic (and, for a MoE
    model of ``experts`` routed experts, by the expert-parallel rules), by reason."""
    devices = nodes * devices_per_node
    refused: Counter[str] = Counter()
    out: list[Candidate] = []

    def training(mb: int, ga: int, ckpt: str) -> dict[str, Any]:
        return {"micro_batch_size": mb, "grad_accum_steps": ga, "activation_checkpointing": ckpt}

    for kind in space.strategies:
        for base in _strategies(kind, space, nodes, devices_per_node):
            replicas = replicas_of(base, devices)
            if replicas is None:
                refused["devices not a multiple of tensor x pipeline"] += 1
                continue
            moe = experts if kind == "megatron" else 0
            for strat in expert_choices(base, replicas, moe, space, refused):
                for mb in space.micro_batches:
                    ga = _split(global_batch, replicas, mb)
                    if ga is None:
                        refused["global batch not a multiple of replicas x micro-batch"] += 1
                        continue
                    for ckpt in space.checkpointing:
                        fields = {"strategy": strat, "training": training(mb, ga, ckpt)}
                        out.append(Candidate.make(system, nodes, kind, fields))
    return out, refused


def _strategies(
    kind: str, space: PlanSpace, nodes: int, devices_per_node: int
) -> Iterator[dict[str, Any]]:
    """The strategy mappings of one kind (without the batch split)."""
    if kind == "ddp":
        for cap in space.ddp_bucket_caps_MB:
            yield {"kind": "ddp"} if cap is None else {"kind": "ddp", "bucket_cap_MB": cap}
    elif kind == "fsdp":
        for sh in space.fsdp_sharding:
            if sh == "hybrid_shard" and nodes == 1:
                continue  # one node: the same groups as full_shard
            yield {"kind": "fsdp", "sharding": sh}
    else:
        for t in space.tensor:
            for p in space.pipeline:
                for v in space.virtual_stages:
                    if v > 1 and p < 2:
                        continue
                    for zero1 in space.distributed_optimizer:
                        yield {
                            "kind": "megatron",
                            "parallelism": {"tensor": t, "pipeline": p, "virtual_stages": v},
                            "sequence_parallel": t > 1,
                            "distributed_optimizer": zero1,
                        }
