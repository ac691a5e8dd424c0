"""Experiment configs: YAML → pydantic v2 schemas (frozen, ``extra="forbid"``) → model ``Job``s.

An experiment names a model preset, one or more systems (files in ``topologies/``), the node
counts, a strategy and its knobs, the per-rank batch, dtypes and how many steps to simulate.
It expands into one run per (system, nodes) point. ``--set path=value`` overrides any field.

The experiment's parts have their own modules: ``io.fields`` (the strict base and bounded
numbers), ``io.strategy_config`` (strategy sections, registered by kind), ``io.sections``
(training, simulation, variability, failures, economics, a described model) and
``io.overrides`` (``--set`` paths). Their public names are re-exported here.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_serializer, model_validator

from scaling.io.errors import UNION_TAG, ConfigError, LineMap, read_yaml, validate
from scaling.io.fields import (
    MAX_COUNT,
    MAX_VALUE,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Strict,
    safe_name,
)
from scaling.io.limits import (
    DEFAULT_MAX_MICRO_BATCHES,
    DEFAULT_MAX_RANKS,
    NETWORK_BYTES_PER_RANK,
    run_size_error,
)
from scaling.io.overrides import apply_overrides, parse_override, path_keys, set_path
from scaling.io.sections import (
    EconomicsConfig,
    EncDecConfig,
    FailuresConfig,
    ModelConfig,
    SimulationConfig,
    TrainingConfig,
    VariabilityConfig,
)
from scaling.io.strategy_config import (
    STRATEGY_CONFIGS,
    DDPConfig,
    FSDPConfig,
    MegatronConfig,
    ParallelismConfig,
    StrategyConfig,
    default_strategy_kind,
    on_register,
    register_strategy,
    strategy_union,
)
from scaling.io.topology import LoadedSystem, load_system, system_from_dict
from scaling.model.hardware.system import SystemSpec
from scaling.model.hardware.workload import PRESETS, get_preset
from scaling.model.job import Job

__all__ = [
    "DEFAULT_MAX_MICRO_BATCHES",
    "DEFAULT_MAX_RANKS",
    "MAX_COUNT",
    "MAX_VALUE",
    "NETWORK_BYTES_PER_RANK",
    "STRATEGY_CONFIGS",
    "DDPConfig",
    "EconomicsConfig",
    "EncDecConfig",
    "ExperimentConfig",
    "FSDPConfig",
    "FailuresConfig",
    "LoadedExperiment",
    "MegatronConfig",
    "ModelConfig",
    "NonNegFloat",
    "NonNegInt",
    "ParallelismConfig",
    "PosFloat",
    "PosInt",
    "SimulationConfig",
    "StrategyConfig",
    "TrainingConfig",
    "VariabilityConfig",
    "apply_overrides",
    "as_experiment",
    "content_hash",
    "default_strategy_kind",
    "experiment_from_dict",
    "load_experiment",
    "parse_override",
    "path_keys",
    "register_strategy",
    "run_size_error",
    "safe_name",
    "set_path",
]

#: the strategy field's type: the registered strategy schemas by ``kind`` (rebuilt on
#: registration, :func:`_rebuild_strategies`)
if TYPE_CHECKING:
    _Strategy = StrategyConfig
else:
    _Strategy = strategy_union(STRATEGY_CONFIGS)


def _model_member(v: Any) -> str:
    """The member of ``model``'s union an input is validated as: a string names a preset,
    anything else is a described model (and gets that schema's field errors)."""
    if isinstance(v, str):
        return f"{UNION_TAG}preset"
    if isinstance(v, Mapping | EncDecConfig) and _kind(v) == "encoder_decoder":
        return f"{UNION_TAG}encdec"
    return f"{UNION_TAG}model"


def _kind(v: Any) -> object:
    return v.get("kind") if isinstance(v, Mapping) else v.kind


class ExperimentConfig(Strict):
    """A runnable experiment: systems × node counts for one model and strategy."""

    name: str = "experiment"  # names the output folder results/<name> (see safe_name)
    description: str = ""
    # a preset name, or a mapping describing the model; the union picks its member by the
    # input's type, so a bad mapping's error names its field (not "model: expected a string")
    model: Annotated[
        Annotated[str, Tag(f"{UNION_TAG}preset")]
        | Annotated[ModelConfig, Tag(f"{UNION_TAG}model")]
        | Annotated[EncDecConfig, Tag(f"{UNION_TAG}encdec")],
        Discriminator(_model_member),
    ]
    # list lengths bounded: an experiment is systems x strategies x nodes runs, all built first
    systems: Annotated[list[str], Field(min_length=1, max_length=100)]
    nodes: Annotated[list[PosInt], Field(min_length=1, max_length=1000)]
    strategy: _Strategy = DDPConfig()
    strategies: Annotated[list[_Strategy], Field(min_length=1, max_length=100)] | None = None
    training: TrainingConfig = TrainingConfig()
    simulation: SimulationConfig = SimulationConfig()
    report: Literal["seed-table1", "seed-table2"] | None = None  # extra table after the run
    # system name -> price/power overrides
    economics: dict[str, EconomicsConfig] = Field(default_factory=dict)
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
    def _known_model(cls, v: str | ModelConfig | EncDecConfig) -> str | ModelConfig | EncDecConfig:
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
    def _strategy_fits_model(self) -> ExperimentConfig:
        # the strategy's own rules (Strategy.model_error: Megatron's divisibility rules)
        shape = get_preset(self.model) if isinstance(self.model, str) else self.model.to_shape()
        training = self.training.to_spec()
        for strat in self.all_strategies():
            msg = strat.to_spec().model_error(shape, training)
            if msg:
                raise ValueError(f"strategy ({strat.kind}): {msg}")
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

    def all_strategies(self) -> list[StrategyConfig]:
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


class LoadedExperiment:
    """A validated experiment with its source, resolved systems and per-point jobs."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        where: str,
        base_dir: Path | None,
        lines: LineMap | None = None,
        inline_systems: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.config = cfg
        self.where = where
        self.base_dir = base_dir
        extra = [base_dir / "topologies", base_dir.parent / "topologies"] if base_dir else []
        self.systems: dict[str, LoadedSystem] = {}
        inline = dict(inline_systems or {})
        unused = sorted(set(inline) - set(cfg.systems))
        if unused:
            raise ConfigError(
                f"{where}: systems[{unused[0]!r}] is defined in memory but not one of the "
                f"experiment's systems ({', '.join(cfg.systems)})"
            )
        for i, name in enumerate(cfg.systems):
            try:
                if name in inline:  # defined in memory (API), before the catalog of that name
                    self.systems[name] = system_from_dict(name, inline[name], extra)
                    continue
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
            spec = strat.to_spec()  # its placement rules (Strategy.placement_error)
            for n in cfg.nodes:
                for name in cfg.systems:
                    per_node = self.systems[name].spec.devices_per_node
                    msg = spec.placement_error(n * per_node, per_node)
                    if msg:
                        where = ("strategies", j) if cfg.strategies is not None else ("strategy",)
                        raise ConfigError(
                            f"{head(where)}: strategy ({strat.kind}) at {n} nodes of {name}: {msg}"
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


def load_experiment(
    path: str | Path,
    overrides: list[str] | None = None,
    systems: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedExperiment:
    """Read, override and validate an experiment file; every failure is a :class:`ConfigError`.
    ``systems``: in-memory topology documents by name (:func:`~scaling.io.topology.
    system_from_dict`), used where the experiment names them."""
    p = Path(path)
    data, lines = read_yaml(p, "experiment config")
    if overrides:
        data = apply_overrides(data, overrides, lines)
    where = str(p)
    cfg = validate(ExperimentConfig, default_strategy_kind(data), where, lines)
    return LoadedExperiment(cfg, where, p.resolve().parent, lines, systems)


def experiment_from_dict(
    data: dict[str, Any],
    overrides: list[str] | None = None,
    where: str = "<dict>",
    systems: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedExperiment:
    """Build an experiment from an in-memory mapping (notebooks, tests), with optional
    ``PATH=VALUE`` overrides (as ``--set``; the mapping itself is not changed)."""
    if overrides:
        data = apply_overrides(copy.deepcopy(data), overrides)
    cfg = validate(ExperimentConfig, default_strategy_kind(data), where, None)
    return LoadedExperiment(cfg, where, None, None, systems)


def as_experiment(
    config: LoadedExperiment | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
    systems: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedExperiment:
    """The one experiment loader of the API: a loaded experiment as is, a mapping, or a YAML
    file or bundled example name (``mlu-vs-gpu``, as the CLI takes it), with optional
    ``PATH=VALUE`` overrides and in-memory ``systems`` (which need a mapping or a file)."""
    if isinstance(config, LoadedExperiment):
        if overrides or systems:
            raise ConfigError(
                "overrides and systems apply when loading: pass a file or a mapping with them"
            )
        return config
    if isinstance(config, dict):
        return experiment_from_dict(config, overrides, systems=systems)
    from scaling.io.examples import resolve_config

    return load_experiment(resolve_config(config), overrides, systems)


def _rebuild_strategies(registry: dict[str, type[StrategyConfig]]) -> None:
    """Let ``strategy:`` / ``strategies:`` take every registered strategy schema."""
    union: Any = strategy_union(registry)
    listed: Any = Annotated[list[union], Field(min_length=1, max_length=100)] | None
    fields = ExperimentConfig.model_fields
    fields["strategy"].annotation = union.__origin__
    fields["strategy"].discriminator = "kind"
    fields["strategies"].annotation = listed
    ExperimentConfig.model_rebuild(force=True)


on_register(_rebuild_strategies)
