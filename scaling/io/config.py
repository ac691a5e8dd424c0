"""Experiment configs: YAML → pydantic v2 schemas (frozen, ``extra="forbid"``) → model ``Job``s.

An experiment names a model preset, one or more systems (files in ``topologies/``), the node
counts, a strategy and its knobs, the per-rank batch, dtypes and how many steps to simulate.
It expands into one run per (system, nodes) point. ``--set path=value`` overrides any field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scaling.io.errors import ConfigError, LineMap, read_yaml, validate
from scaling.io.topology import LoadedSystem, load_system
from scaling.model.hardware.compute import DTYPE_BYTES
from scaling.model.hardware.system import SystemSpec
from scaling.model.hardware.workload import PRESETS, Checkpointing, get_preset
from scaling.model.job import Job, SimSpec, TrainingSpec
from scaling.model.strategies.ddp import DDPSpec
from scaling.model.strategies.fsdp import BackwardPrefetch, FSDPSpec, ShardingStrategy
from scaling.units import MiB


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PosInt = Annotated[int, Field(gt=0)]


class DDPConfig(_Strict):
    """PyTorch DDP knobs (names and defaults as in ``torch.nn.parallel.DistributedDataParallel``)."""

    kind: Literal["ddp"] = "ddp"
    bucket_cap_MB: Annotated[float, Field(gt=0)] = 25.0
    first_bucket_MB: Annotated[float, Field(gt=0)] = 1.0
    overlap: bool = True
    gradient_as_bucket_view: bool = False

    def to_spec(self) -> DDPSpec:
        # PyTorch's "MB" are MiB: bucket_cap_mb * 1024 * 1024 bytes.
        return DDPSpec(
            self.bucket_cap_MB * MiB,
            self.first_bucket_MB * MiB,
            self.overlap,
            self.gradient_as_bucket_view,
        )


class FSDPConfig(_Strict):
    """PyTorch FSDP knobs (names as in ``torch.distributed.fsdp``; lower case)."""

    kind: Literal["fsdp"]
    sharding: ShardingStrategy = ShardingStrategy.FULL_SHARD
    backward_prefetch: BackwardPrefetch = BackwardPrefetch.BACKWARD_PRE
    limit_all_gathers: Annotated[int, Field(ge=0)] = 2
    param_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    reduce_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"

    def to_spec(self) -> FSDPSpec:
        return FSDPSpec(
            self.sharding,
            self.backward_prefetch,
            self.limit_all_gathers,
            float(DTYPE_BYTES[self.param_dtype]),
            float(DTYPE_BYTES[self.reduce_dtype]),
        )


class TrainingConfig(_Strict):
    """Per-rank batch and numerics. Weak scaling: the per-rank batch is fixed as nodes grow."""

    seq_len: PosInt = 2048
    micro_batch_size: PosInt = 1
    grad_accum_steps: PosInt = 1
    dtype: Literal["bf16", "fp16", "fp32", "tf32", "fp8"] = "bf16"
    activation_checkpointing: Checkpointing = Checkpointing.NONE
    flash_attention: bool = True
    token_budget: Annotated[float, Field(gt=0)] | None = None  # default: 20 tokens per parameter
    sparsity: bool = False  # weight GEMMs on the structured-sparsity engine (device's speed-up)

    def to_spec(self) -> TrainingSpec:
        return TrainingSpec(
            self.micro_batch_size,
            self.grad_accum_steps,
            self.seq_len,
            self.dtype,
            self.activation_checkpointing,
            self.flash_attention,
            self.token_budget,
            self.sparsity,
        )


class SimulationConfig(_Strict):
    """How long to simulate and with which seed."""

    steps: PosInt = 2
    warmup_steps: Annotated[int, Field(ge=0)] = 1
    seed: Annotated[int, Field(ge=0)] = 0
    compute_jitter_cv: Annotated[float, Field(ge=0, lt=1)] = 0.0
    network: Literal["flow", "analytic"] = "flow"

    def to_spec(self) -> SimSpec:
        return SimSpec(
            self.steps, self.warmup_steps, self.seed, self.compute_jitter_cv, network=self.network
        )


class EconomicsConfig(_Strict):
    """Per-system overrides of the catalog's price and power assumptions (for cost/energy)."""

    price_per_hour_USD: Annotated[float, Field(gt=0)] | None = None
    power_idle_W: Annotated[float, Field(ge=0)] | None = None
    power_busy_W: Annotated[float, Field(gt=0)] | None = None
    node_power_overhead_W: Annotated[float, Field(ge=0)] | None = None


class ExperimentConfig(_Strict):
    """A runnable experiment: systems × node counts for one model and strategy."""

    name: str = "experiment"
    description: str = ""
    model: str
    systems: Annotated[list[str], Field(min_length=1)]
    nodes: Annotated[list[PosInt], Field(min_length=1)]
    strategy: Annotated[DDPConfig | FSDPConfig, Field(discriminator="kind")] = DDPConfig()
    strategies: (
        Annotated[
            list[Annotated[DDPConfig | FSDPConfig, Field(discriminator="kind")]],
            Field(min_length=1),
        ]
        | None
    ) = None
    training: TrainingConfig = TrainingConfig()
    simulation: SimulationConfig = SimulationConfig()
    report: Literal["seed-table1", "seed-table2"] | None = None  # extra table after the run
    economics: dict[str, EconomicsConfig] = {}  # system name -> price/power overrides

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"a known model preset ({', '.join(PRESETS)})")
        return v

    @model_validator(mode="after")
    def _one_strategy_field(self) -> ExperimentConfig:
        if self.strategies is not None and "strategy" in self.model_fields_set:
            raise ValueError("give either 'strategy' or 'strategies' (a list), not both")
        return self

    def all_strategies(self) -> list[DDPConfig | FSDPConfig]:
        """The strategies to run: ``strategies`` if given, else the one ``strategy``."""
        return list(self.strategies) if self.strategies is not None else [self.strategy]

    @field_validator("systems", "nodes", mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        return v if isinstance(v, list) else [v]


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


def apply_overrides(
    data: dict[str, Any], overrides: list[str], lines: LineMap | None = None
) -> dict[str, Any]:
    """Apply ``path=value`` overrides (value parsed as YAML) to a nested mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected PATH=VALUE, e.g. --set nodes=[1,2,4]")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise ConfigError(f"--set {item!r}: empty field name in path {path!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: value {raw!r} is not valid YAML") from None
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {k!r} is not a mapping")
            node = nxt
        node[keys[-1]] = value
        if lines is not None:
            lines.mark_overridden(tuple(keys))
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

    def jobs(self) -> list[Job]:
        """One job per (system, strategy, nodes): systems and strategies in config order, nodes
        ascending."""
        cfg = self.config
        shape = get_preset(cfg.model)
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
                            sim=cfg.simulation.to_spec(),
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

    def config_hash(self) -> str:
        """SHA-256 (16 hex digits) of the resolved config's values: equal hashes mean equal
        inputs, wherever the files live (paths are left out)."""
        data = self.resolved()
        for sysd in data["systems"].values():
            sysd.pop("file", None)
            sysd.pop("library_file", None)
        blob = json.dumps(data, sort_keys=True).encode()
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


def experiment_from_dict(data: dict[str, Any], where: str = "<dict>") -> LoadedExperiment:
    """Build an experiment from an in-memory mapping (notebooks, tests)."""
    cfg = validate(ExperimentConfig, default_strategy_kind(data), where, None)
    return LoadedExperiment(cfg, where, None)
