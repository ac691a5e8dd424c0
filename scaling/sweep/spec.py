"""Sweep specs: a base experiment plus axes → sweep points → runs, each keyed by a content hash.

A sweep spec is YAML validated by pydantic (``extra="forbid"``)::

    name: bucket-sweep                 # optional; default: the base experiment's name
    base_config: ../configs/mlu-vs-gpu.yaml   # relative to this file — or an inline `base:`
    axes:                              # a grid: every combination of these values
      training.micro_batch_size: [1, 2, 4]
      strategy.bucket_cap_MB: [5, 25, 100]
    zip:                               # groups of paths that vary together (equal lengths)
      - training.seq_len: [1024, 2048]
        training.micro_batch_size: [8, 4]

Each sweep *point* is the base experiment with one value per axis set by its dotted path (list
items by index: ``strategies.1.backward_prefetch``). A point is an ordinary experiment, so it
expands to systems × strategies × nodes *runs*. A plain experiment file (no ``axes``) is a
one-point sweep.

Every run is keyed by its ``run_key``: a SHA-256 (16 hex digits) of the run's own resolved config
— the point's experiment narrowed to this run's system, strategy and node count, plus that
system's topology and collective-library content. Names, descriptions and file locations are
not in it: equal hashes mean equal simulator inputs, so a resumed or extended sweep reuses every
run it already has.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from scaling.io.config import (
    ExperimentConfig,
    LoadedExperiment,
    apply_overrides,
    content_hash,
    default_strategy_kind,
    parse_override,
    path_keys,
    safe_name,
    set_path,
)
from scaling.io.errors import ConfigError, LineMap, read_yaml, validate, validation_error
from scaling.io.results import EFFICIENCY_GROUP, META_COLUMNS
from scaling.model.analysis.metrics import RunResult
from scaling.model.job import Job

#: Bump when the content of a run key changes meaning (old run files then no longer match).
RUN_KEY_VERSION = "scaling-run/1"

#: Sweep spec top-level keys; a file with none of them is a plain experiment.
_SPEC_KEYS = ("base", "base_config", "axes", "zip")

# Result columns an axis column must not shadow (it is then named ``axis.<path>``).
_RESERVED = {
    *RunResult.__dataclass_fields__,
    *META_COLUMNS,
    *EFFICIENCY_GROUP,
    "scaling_efficiency",
}


def _check_path(path: str) -> str:
    if not path or not all(part.strip() for part in path.split(".")):
        raise ValueError(f"a dotted field path like training.micro_batch_size (got {path!r})")
    return path


def _check_axes(axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    for path in axes:
        _check_path(path)
    return axes


def _check_zip_group(group: dict[str, list[Any]]) -> dict[str, list[Any]]:
    if not group:
        raise ValueError("a mapping of at least one path to a list of values")
    _check_axes(group)
    lengths = {p: len(v) for p, v in group.items()}
    if len(set(lengths.values())) > 1:
        got = ", ".join(f"{p}: {n}" for p, n in lengths.items())
        raise ValueError(f"lists of equal length in one zip group (got {got})")
    return group


Values = Annotated[list[Any], Field(min_length=1)]
Axes = Annotated[dict[str, Values], AfterValidator(_check_axes)]
ZipGroup = Annotated[dict[str, Values], AfterValidator(_check_zip_group)]


#: The most points one sweep expands to (the product of its axes' lengths): each point is a
#: validated experiment held in memory before anything runs.
MAX_SWEEP_POINTS = 10_000


class SweepSpec(BaseModel):
    """A sweep: a base experiment (inline or a file) and the axes it varies."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    name: str | None = None  # names the output folder results/<name> (see safe_name)
    description: str = ""
    base: dict[str, Any] | None = None
    base_config: str | None = None
    axes: Axes = Field(default_factory=dict)
    zip_groups: list[ZipGroup] = Field(default_factory=list, alias="zip")

    @model_validator(mode="after")
    def _one_base(self) -> SweepSpec:
        if (self.base is None) == (self.base_config is None):
            raise ValueError(
                "exactly one of 'base' (an inline experiment mapping) or 'base_config' "
                "(an experiment file, relative to the sweep file)"
            )
        paths = list(self.axes) + [p for g in self.zip_groups for p in g]
        for a, b in itertools.combinations(paths, 2):
            if a == b or a.startswith(b + ".") or b.startswith(a + "."):
                raise ValueError(f"each path to vary once ({a!r} and {b!r} overlap)")
        return self

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        return None if v is None else safe_name(v)

    @model_validator(mode="after")
    def _grid_size(self) -> SweepSpec:
        n = 1
        for values in [*self.axes.values(), *(next(iter(g.values())) for g in self.zip_groups)]:
            n *= len(values)
        if n > MAX_SWEEP_POINTS:
            raise ValueError(
                f"at most {MAX_SWEEP_POINTS:,} points (the product of the axes' lengths); "
                f"got {n:,}: split the sweep"
            )
        return self

    def dimensions(self) -> list[list[str]]:
        """The grid's dimensions: one per axis, one per zip group; each a list of its paths."""
        return [[p] for p in self.axes] + [list(g) for g in self.zip_groups]


@dataclass(frozen=True)
class AxisValue:
    """One path set at one sweep point, and where the value came from in the spec."""

    path: str
    value: Any
    line: int | None


@dataclass(frozen=True)
class Point:
    """A sweep point: the base experiment with ``values`` set."""

    index: int
    values: tuple[AxisValue, ...]
    experiment: LoadedExperiment

    def overrides(self) -> dict[str, Any]:
        """The point axis values as --set style overrides."""
        return {v.path: v.value for v in self.values}


@dataclass(frozen=True, eq=False)
class RunSpec:
    """One run of a sweep: a :class:`Job` and what identifies it in the results table.

    Attributes:
        key: the run's ``run_key`` (hash of its resolved config; see the module doc).
        point: index of its sweep point.
        axes: (column, value) per sweep axis, values as stored in the table.
        job: the resolved job (picklable: what workers receive).
        resolved: the run's resolved config (what ``key`` hashes).
    """

    key: str
    point: int
    axes: tuple[tuple[str, Any], ...]
    job: Job
    resolved: dict[str, Any]

    @property
    def system(self) -> str:
        """System of this run."""
        return self.job.system.name

    @property
    def strategy(self) -> str:
        """Strategy label of this run."""
        return self.job.strategy.label

    @property
    def nodes(self) -> int:
        """Node count of this run."""
        return self.job.nodes

    def identity(self) -> dict[str, Any]:
        """The table's identifying columns for this run (also filled for refused runs)."""
        return {
            "system": self.system,
            "model": self.job.shape.name,
            "strategy": self.strategy,
            "nodes": self.nodes,
            "devices": self.job.devices,
            "global_batch": self.job.global_batch,
        }


def _axis_line(lines: LineMap | None, path: str, prefix: tuple[Any, ...], i: int) -> int | None:
    if lines is None:
        return None
    return lines.line_of((*prefix, path, i))


class _Relative(LineMap):
    """A line map of a sub-tree (``base:`` of a sweep file) addressed by paths inside it."""

    def __init__(self, inner: LineMap, prefix: tuple[Any, ...]) -> None:
        super().__init__()
        self._inner, self._prefix = inner, prefix

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        return self._inner.line_of((*self._prefix, *path))

    def overridden(self, path: tuple[Any, ...]) -> bool:
        return self._inner.overridden((*self._prefix, *path))


class LoadedSweep:
    """A validated sweep spec, its base experiment mapping and where each input came from."""

    def __init__(
        self,
        spec: SweepSpec,
        where: str,
        lines: LineMap | None,
        base: dict[str, Any],
        base_where: str,
        base_lines: LineMap | None,
        base_dir: Path | None,
        source: dict[str, Any],
    ) -> None:
        self.spec = spec
        self.where = where
        self.lines = lines
        self.base = base
        self.base_where = base_where
        self.base_lines = base_lines
        self.base_dir = base_dir
        self.source = source
        self.base_prefix: tuple[str, ...] = ("base",) if spec.base is not None else ()
        self._points: list[Point] | None = None

    @property
    def name(self) -> str:
        """The sweep name."""
        if self.spec.name:
            return self.spec.name
        name = self.base.get("name")
        return name if isinstance(name, str) and name else "sweep"

    def axis_paths(self) -> list[str]:
        """Dotted paths of every axis (grid and zip), in order."""
        return [p for dim in self.spec.dimensions() for p in dim]

    def axis_columns(self) -> dict[str, str]:
        """Axis path → its column in the results table."""
        return {p: (f"axis.{p}" if p in _RESERVED else p) for p in self.axis_paths()}

    def _grid(self) -> list[tuple[AxisValue, ...]]:
        dims: list[list[tuple[AxisValue, ...]]] = []
        for path, values in self.spec.axes.items():
            dims.append(
                [
                    (AxisValue(path, v, _axis_line(self.lines, path, ("axes",), i)),)
                    for i, v in enumerate(values)
                ]
            )
        for g, group in enumerate(self.spec.zip_groups):
            n = len(next(iter(group.values())))
            dims.append(
                [
                    tuple(
                        AxisValue(p, vals[i], _axis_line(self.lines, p, ("zip", g), i))
                        for p, vals in group.items()
                    )
                    for i in range(n)
                ]
            )
        return [tuple(itertools.chain.from_iterable(c)) for c in itertools.product(*dims)]

    def points(self) -> list[Point]:
        """Every sweep point, validated, in grid order (the last axis varies fastest)."""
        if self._points is None:
            self._points = [self._point(i, vals) for i, vals in enumerate(self._grid())]
        return self._points

    def _point(self, index: int, values: tuple[AxisValue, ...]) -> Point:
        data = copy.deepcopy(self.base)
        for v in values:
            set_path(data, v.path, v.value, self._axis_where(v))
        data = default_strategy_kind(data)
        label = ", ".join(f"{v.path}={v.value!r}" for v in values)
        try:
            cfg = ExperimentConfig.model_validate(data)
        except ValidationError as e:
            raise self._point_error(e, data, values, index, label) from None
        systems_axis = next(
            (v for v in values if v.path == "systems" or v.path.startswith("systems.")), None
        )
        if systems_axis is not None:
            lines = LineMap()
            if systems_axis.line is not None:
                lines.add(("systems",), systems_axis.line)
            try:
                exp = LoadedExperiment(cfg, self.where, self.base_dir, lines)
            except ConfigError as e:
                raise ConfigError(f"{e} [sweep point {index}: {label}]") from None
        else:
            exp = LoadedExperiment(cfg, self.base_where, self.base_dir, self.base_lines)
        return Point(index, values, exp)

    def _axis_where(self, v: AxisValue) -> str:
        return f"{self.where}:{v.line}" if v.line else self.where

    def _point_error(
        self,
        e: ValidationError,
        data: dict[str, Any],
        values: tuple[AxisValue, ...],
        index: int,
        label: str,
    ) -> ConfigError:
        from scaling.io.errors import data_path

        loc = data_path(tuple(e.errors(include_url=False)[0]["loc"]), data)
        hit = next((v for v in values if loc[: len(path_keys(v.path))] == path_keys(v.path)), None)
        if hit is not None:
            # the bad value came from an axis: point at it in the sweep file
            lines = LineMap()
            if hit.line is not None:
                lines.add(path_keys(hit.path), hit.line)
            err = validation_error(e, self.where, lines, data=data)
        elif self.base_prefix:
            err = validation_error(
                e, self.base_where, self.lines, prefix=self.base_prefix, data={"base": data}
            )
        else:
            err = validation_error(e, self.base_where, self.base_lines, data=data)
        suffix = f" [sweep point {index}: {label}]" if values else ""
        return ConfigError(f"{err}{suffix}")


def _column_values(values: list[Any]) -> list[Any]:
    """Axis values as table cells: plain scalars of one kind stay; anything else is JSON."""
    kinds = {type(v) for v in values}
    if kinds <= {int, float} or kinds in ({bool}, {str}):
        return list(values)
    return [json.dumps(v, sort_keys=True) for v in values]


def run_resolved(exp: LoadedExperiment, system: str, strategy: Any, nodes: int) -> dict[str, Any]:
    """One run's resolved config: the point's experiment narrowed to (system, strategy, nodes)
    plus the system's topology and library (by content, not by file location)."""
    e = exp.config.model_dump(mode="json")
    for k in ("name", "description", "systems", "nodes", "strategy", "strategies"):
        e.pop(k, None)
    s = exp.systems[system]
    return {
        "version": RUN_KEY_VERSION,
        "experiment": {
            **e,
            "system": system,
            "nodes": nodes,
            "strategy": strategy.model_dump(mode="json"),
        },
        "system": {
            "topology": s.schema.model_dump(mode="json"),
            "library": s.library.model_dump(mode="json"),
        },
    }


def run_key(resolved: dict[str, Any]) -> str:
    """A run's key: :func:`~scaling.io.config.content_hash` of its resolved config
    (:func:`run_resolved`). Not the experiment's ``config_hash``: one point's runs differ in it."""
    return content_hash(resolved)


def expand(sweep: LoadedSweep) -> list[RunSpec]:
    """Every run of ``sweep``, in a deterministic order: points in grid order, then each point's
    systems and strategies in config order and its node counts ascending."""
    columns = sweep.axis_columns()
    points = sweep.points()
    cells: dict[str, list[Any]] = {}
    for path in columns:
        raw = [next(v.value for v in p.values if v.path == path) for p in points]
        cells[path] = _column_values(raw)
    out: list[RunSpec] = []
    for p in points:
        exp = p.experiment
        cfg = exp.config
        jobs = iter(exp.jobs())
        axes = tuple((columns[path], cells[path][p.index]) for path in columns)
        for system in cfg.systems:
            for strat in cfg.all_strategies():
                for n in sorted(set(cfg.nodes)):
                    job = next(jobs)
                    resolved = run_resolved(exp, system, strat, n)
                    out.append(RunSpec(run_key(resolved), p.index, axes, job, resolved))
    return out


def _from_data(
    data: dict[str, Any],
    lines: LineMap | None,
    where: str,
    spec_dir: Path | None,
    overrides: list[str],
) -> LoadedSweep:
    if not any(k in data for k in _SPEC_KEYS):
        # a plain experiment: a one-point sweep
        base = apply_overrides(copy.deepcopy(data), overrides, lines)
        spec = SweepSpec(base_config=where)
        return LoadedSweep(spec, where, lines, base, where, lines, spec_dir, data)
    spec = validate(SweepSpec, data, where, lines)
    varied = {p for dim in spec.dimensions() for p in dim}
    for item in overrides:
        path, _ = parse_override(item)
        if path in varied:
            raise ConfigError(
                f"--set {path}: this path is a sweep axis in {where}; change the axis "
                "values instead"
            )
    if spec.base is not None:
        base = apply_overrides(copy.deepcopy(spec.base), overrides, lines, prefix=("base",))
        base_lines: LineMap | None = _Relative(lines, ("base",)) if lines is not None else None
        return LoadedSweep(spec, where, lines, base, where, base_lines, spec_dir, data)
    assert spec.base_config is not None
    bpath = Path(spec.base_config)
    if not bpath.is_absolute() and spec_dir is not None:
        bpath = spec_dir / bpath
    if not bpath.exists():
        line = lines.line_of(("base_config",)) if lines else None
        head = f"{where}:{line}" if line else where
        raise ConfigError(
            f"{head}: base_config: got {spec.base_config!r}; expected an experiment file "
            f"(relative to the sweep file): {bpath} does not exist"
        )
    base, blines = read_yaml(bpath, "experiment config")
    if any(k in base for k in _SPEC_KEYS):
        raise ConfigError(f"{bpath}: is a sweep spec; base_config must name an experiment file")
    base = apply_overrides(base, overrides, blines)
    return LoadedSweep(spec, where, lines, base, str(bpath), blines, bpath.resolve().parent, data)


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> LoadedSweep:
    """Read and validate a sweep spec (or a plain experiment file: one point).

    ``overrides`` (``PATH=VALUE``, as ``--set``) apply to the base experiment. Every failure —
    of the spec, the base experiment or any point — is a :class:`ConfigError` naming the file,
    the line and the field. Points are validated by :meth:`LoadedSweep.points` (``expand``).
    """
    p = Path(path)
    data, lines = read_yaml(p, "sweep spec or experiment config")
    sweep = _from_data(data, lines, str(p), p.resolve().parent, list(overrides or []))
    sweep.points()
    return sweep


def sweep_from_dict(
    data: dict[str, Any],
    overrides: list[str] | None = None,
    base_dir: str | Path | None = None,
    where: str = "<dict>",
) -> LoadedSweep:
    """A sweep from an in-memory mapping (notebooks, tests): a sweep spec or a plain experiment.

    ``base_config`` paths are relative to ``base_dir`` (default: the current directory).
    """
    d = Path(base_dir) if base_dir is not None else Path.cwd()
    sweep = _from_data(copy.deepcopy(data), None, where, d, list(overrides or []))
    sweep.points()
    return sweep


def as_sweep(
    spec: LoadedSweep | dict[str, Any] | str | Path, overrides: list[str] | None = None
) -> LoadedSweep:
    """A loaded sweep as is, or one from a mapping or a file (the sweep counterpart of
    :func:`~scaling.io.config.as_experiment`), with optional ``PATH=VALUE`` overrides."""
    if isinstance(spec, LoadedSweep):
        if overrides:
            raise ValueError("overrides apply when loading; pass them to load_sweep()")
        return spec
    if isinstance(spec, dict):
        return sweep_from_dict(spec, overrides)
    return load_sweep(spec, overrides)
