"""Golden scaling curves: run them, store them, compare against them, check their invariants.

A *golden baseline* is one experiment's scaling curves as this version of the model computes
them, stored so that a later model change that bends a curve fails a test. The experiments are
the config files in ``configs/golden/``; ``scaling baseline update`` runs each one and writes a
folder per experiment (``tests/golden/<config stem>/``):

* ``results.csv`` — one row per (system, strategy, nodes) point, every metric, in the layout
  ``scaling run`` writes (without its per-row ``config_hash`` column, so a changed input does not
  touch every line of the diff);
* ``resolved_config.yaml`` — the inputs that produced it: the experiment with every default
  filled in, and each system's and collective library's *values* (provenance stripped: editing a
  ``source`` or ``note`` does not change a baseline);
* ``baseline.yaml`` — the config file, a hash of the inputs, the ``scaling`` version and the date
  that produced it, and the points the model refused (out of memory, a device that cannot train),
  with the reason.

Comparison is per point (keys :data:`KEY_COLUMNS`) and metric, ``|result − baseline| ≤ atol +
rtol·|baseline|`` (NumPy's ``isclose`` with the baseline as reference). Every input error is a
:class:`~scaling.io.errors.ConfigError` (the CLI's exit code 2).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

import scaling
from scaling.io.config import LoadedExperiment, experiment_from_dict, load_experiment
from scaling.io.errors import ConfigError
from scaling.io.results import results_frame
from scaling.io.topology import bundled_topology_dir
from scaling.model.analysis.metrics import RunResult
from scaling.model.job import InfeasibleJobError
from scaling.model.simulation import check_feasible, run_job

#: Columns that identify a point of a scaling curve.
KEY_COLUMNS: tuple[str, ...] = ("system", "strategy", "model", "nodes")

#: Metrics compared when none are named.
DEFAULT_METRICS: tuple[str, ...] = (
    "step_time_s",
    "tokens_per_s_per_device",
    "scaling_efficiency",
    "exposed_comm_share",
    "mfu",
    "peak_mem_GiB",
)

#: Default relative tolerance. The simulator is deterministic (same inputs and seed give
#: bit-identical results), so the only legitimate differences between a run and its baseline are
#: floating-point reassociation (~1e-15). 1e-6 leaves nine orders of magnitude for that and still
#: flags any modelling change above one part per million; a 5 % change of one link bandwidth or
#: one library latency moves the affected points of the golden set by 1e-3 to 4e-2.
DEFAULT_RTOL = 1e-6

#: Default absolute tolerance, in each metric's own unit (s, tokens/s, GiB or a fraction): only
#: there so that two values that are both (nearly) zero compare equal.
DEFAULT_ATOL = 1e-9

#: How far FSDP's scaling efficiency may exceed 1 (and rise between node counts). FSDP shards the
#: optimizer state, so each rank's optimizer step shrinks as 1/p: per-device throughput can rise
#: with N until communication catches up — super-linear scaling, as ZeRO reports for the same
#: reason (scaling/data/reference/training_scaling.csv, "ZeRO-100B super-linear"). The gain is
#: bounded by the optimizer step's share of the smallest run's step; the largest in the golden set
#: is 1.5 % (MLU370-S4, micro-batch 1, where the optimizer step is the largest share).
FSDP_SUPERLINEAR_TOL = 0.02

#: Float slack for DDP's "≤ 1 and non-increasing" (efficiency is a ratio of two simulated rates).
DDP_TOL = 1e-9

#: In any table holding both, the first system's scaling efficiency lies below the second's at
#: the largest node count they share, for every strategy (the seed scenario: MLU370-X8 vs A100).
SLOWER_THAN: tuple[tuple[str, str], ...] = (("mlu370-x8", "dgx-a100"),)

RESULTS_FILE = "results.csv"
INPUTS_FILE = "resolved_config.yaml"
META_FILE = "baseline.yaml"
UPDATE_COMMAND = "scaling baseline update"
_NOT_INPUTS = frozenset({"description", "cannot_train_reason"})


# ---- reading results ------------------------------------------------------------------------


def read_results(path: str | Path, what: str = "results") -> pd.DataFrame:
    """Read a results file: CSV or Parquet written by ``scaling run``, or a folder holding
    ``results.csv`` (or ``results.parquet``)."""
    p = Path(path)
    if p.is_dir():
        for name in (RESULTS_FILE, "results.parquet"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise ConfigError(f"{p}: folder holds no {RESULTS_FILE} or results.parquet ({what})")
    elif not p.exists():
        raise ConfigError(f"{p}: no such file ({what}: a results CSV/Parquet file or its folder)")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(p)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raise ConfigError(
                f"{p}: unknown results format {suffix or '(none)'!r}; expected .csv or .parquet"
            )
    except ConfigError:
        raise
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{p}: file is empty; expected a results table ({what})") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{p}: cannot read as a results table ({what}): {first}") from None
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{p}: not a results table ({what}): missing column(s) {', '.join(missing)}; "
            f"expected the keys {', '.join(KEY_COLUMNS)} and metric columns"
        )
    return df


# ---- inputs of a curve --------------------------------------------------------------------


def _values_only(node: Any) -> Any:
    """A topology or library dump without provenance: each quantity becomes its value."""
    if isinstance(node, dict):
        if "value" in node and "confidence" in node:
            return node["value"]
        return {k: _values_only(v) for k, v in node.items() if k not in _NOT_INPUTS}
    if isinstance(node, list):
        return [_values_only(v) for v in node]
    return node


def golden_inputs(exp: LoadedExperiment) -> dict[str, Any]:
    """Everything that determines an experiment's results, independent of where files live:
    the experiment with defaults filled in and every system's and library's values."""
    systems: dict[str, Any] = {}
    for s in exp.systems.values():
        systems[s.schema.name] = {
            "topology": _values_only(s.schema.model_dump(mode="json")),
            "library": _values_only(s.library.model_dump(mode="json")),
        }
    experiment = exp.config.model_dump(mode="json")
    experiment.pop("description", None)
    return json.loads(json.dumps({"experiment": experiment, "systems": systems}))


def inputs_hash(inputs: dict[str, Any]) -> str:
    """SHA-256 (16 hex digits) of :func:`golden_inputs`: equal hashes mean equal inputs."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def input_differences(
    inputs: dict[str, Any], baseline: dict[str, Any], limit: int = 8
) -> list[str]:
    """Input values that differ between a run and its baseline, for the systems both have (the
    experiment's ``systems``/``nodes``/``name`` only decide which points exist; left out)."""
    skip = ("experiment.systems", "experiment.nodes", "experiment.name")
    a = {k: v for k, v in _leaves(inputs.get("experiment", {}), "experiment").items()}
    b = {k: v for k, v in _leaves(baseline.get("experiment", {}), "experiment").items()}
    for name, sys_in in inputs.get("systems", {}).items():
        if name in baseline.get("systems", {}):
            a.update(_leaves(sys_in, f"systems.{name}"))
            b.update(_leaves(baseline["systems"][name], f"systems.{name}"))
    out = []
    for k in sorted(set(a) | set(b)):
        if k.startswith(skip) or a.get(k, "(absent)") == b.get(k, "(absent)"):
            continue
        out.append(f"{k}: {a.get(k, '(absent)')!r} (baseline {b.get(k, '(absent)')!r})")
    if len(out) > limit:
        out = [*out[:limit], f"... and {len(out) - limit} more"]
    return out


# ---- running a golden experiment -------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Points of one (system, strategy) curve the model refused, with the first reason."""

    system: str
    strategy: str
    nodes: tuple[int, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "strategy": self.strategy,
            "nodes": list(self.nodes),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GoldenRun:
    """One experiment's curves: the table of the points that ran and the refused ones."""

    name: str
    table: pd.DataFrame
    refused: tuple[Refusal, ...]
    inputs: dict[str, Any]
    experiment: LoadedExperiment

    @property
    def inputs_hash(self) -> str:
        return inputs_hash(self.inputs)


def _results_columns() -> list[str]:
    return [k for k in RunResult.__dataclass_fields__ if k != "steps"] + ["scaling_efficiency"]


def _as_experiment(
    config: LoadedExperiment | dict[str, Any] | str | Path, overrides: list[str] | None = None
) -> LoadedExperiment:
    if isinstance(config, LoadedExperiment):
        return config
    if isinstance(config, dict):
        return experiment_from_dict(config)
    return load_experiment(config, overrides)


def run_golden(
    config: LoadedExperiment | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
    name: str | None = None,
) -> GoldenRun:
    """Run every point of an experiment; unlike ``run_experiment``, a point the model refuses
    (out of memory, a device that cannot train) is recorded instead of failing the whole run."""
    exp = _as_experiment(config, overrides)
    runs: list[RunResult] = []
    refused: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for job in exp.jobs():
        try:
            check_feasible(job)
        except InfeasibleJobError as e:
            refused.setdefault((job.system.name, job.strategy.label), []).append(
                (job.nodes, str(e))
            )
            continue
        runs.append(run_job(job))
    table = results_frame(runs)
    if table.empty:
        table = pd.DataFrame(columns=_results_columns())
    refusals = tuple(
        Refusal(sys_, strat, tuple(n for n, _ in pts), pts[0][1])
        for (sys_, strat), pts in refused.items()
    )
    stem = Path(config).stem if isinstance(config, str | Path) else exp.config.name
    return GoldenRun(name or stem, table, refusals, golden_inputs(exp), exp)


# ---- baselines on disk -----------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """A stored baseline: its table and, for folders written by ``baseline update``, its
    metadata (``baseline.yaml``) and inputs (``resolved_config.yaml``)."""

    table: pd.DataFrame
    path: Path | None = None
    meta: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None

    def refusal_of(self, system: str, strategy: str, nodes: int) -> str | None:
        for r in (self.meta or {}).get("refused") or []:
            if r["system"] == system and r["strategy"] == strategy and nodes in r["nodes"]:
                return str(r["reason"])
        return None


def _read_yaml_file(p: Path) -> dict[str, Any] | None:
    if not p.is_file():
        return None
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    return data if isinstance(data, dict) else None


def load_baseline(path: str | Path | pd.DataFrame) -> Baseline:
    """A baseline from a folder written by ``baseline update``, a results file, or a DataFrame."""
    if isinstance(path, pd.DataFrame):
        return Baseline(path)
    p = Path(path)
    table = read_results(p, "baseline")
    folder = p if p.is_dir() else p.parent
    meta = _read_yaml_file(folder / META_FILE)
    inputs = _read_yaml_file(folder / INPUTS_FILE) if meta is not None else None
    if inputs is not None:
        inputs = {k: v for k, v in inputs.items() if k in ("experiment", "systems")}
    return Baseline(table, p, meta, inputs)


def _relative(p: Path) -> str:
    p = p.resolve()
    for root in (bundled_topology_dir().resolve().parent, Path.cwd().resolve()):
        if p.is_relative_to(root):
            return p.relative_to(root).as_posix()
    return p.as_posix()


def _meta(run: GoldenRun, created: str) -> dict[str, Any]:
    exp = run.experiment
    return {
        "name": run.name,
        "config": _relative(Path(exp.where)) if exp.base_dir is not None else exp.where,
        "config_hash": run.inputs_hash,
        "scaling_version": scaling.__version__,
        "created": created,
        "regenerate": UPDATE_COMMAND,
        "points": len(run.table),
        "systems": {
            s.schema.name: {"file": _relative(s.path), "library_file": _relative(s.library_path)}
            for s in exp.systems.values()
        },
        "refused": [r.as_dict() for r in run.refused],
    }


_HEADER = (
    "# Golden scaling curve written by `scaling baseline update`; never edit by hand.\n"
    "# config_hash: SHA-256 of the inputs in resolved_config.yaml (equal hashes, equal inputs).\n"
)
_INPUTS_HEADER = (
    "# The inputs of this baseline: the experiment with every default filled in and each\n"
    "# system's and library's values (provenance is in the system files). Written by\n"
    "# `scaling baseline update`; never edit by hand.\n"
)


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-12) -> bool:
    """Same columns, rows and values (floats to ``rtol``: last-bit noise is not a change)."""
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    try:
        pd.testing.assert_frame_equal(
            a.reset_index(drop=True),
            b.reset_index(drop=True),
            check_dtype=False,
            check_exact=False,
            rtol=rtol,
            atol=0.0,
        )
    except AssertionError:
        return False
    return True


def write_baseline(run: GoldenRun, out_dir: str | Path, created: str | None = None) -> str:
    """Write ``run`` as the baseline ``out_dir/<run.name>/``. Returns ``"new"``, ``"updated"`` or
    ``"unchanged"``; an unchanged baseline (same inputs, refusals and values) is left untouched,
    keeping its date and version, so regenerating produces no diff."""
    folder = Path(out_dir) / run.name
    created = created or _dt.date.today().isoformat()
    meta = _meta(run, created)
    inputs_text = _INPUTS_HEADER + yaml.safe_dump(run.inputs, sort_keys=False)
    status = "new"
    if (folder / RESULTS_FILE).is_file() and (folder / META_FILE).is_file():
        status = "updated"
        old = _read_yaml_file(folder / META_FILE) or {}
        same_meta = {k: v for k, v in old.items() if k not in ("created", "scaling_version")} == {
            k: v for k, v in meta.items() if k not in ("created", "scaling_version")
        }
        old_inputs = (folder / INPUTS_FILE).read_text() if (folder / INPUTS_FILE).is_file() else ""
        try:
            old_table = pd.read_csv(folder / RESULTS_FILE)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            old_table = pd.DataFrame()
        if same_meta and old_inputs == inputs_text and _frames_equal(old_table, run.table):
            return "unchanged"
    folder.mkdir(parents=True, exist_ok=True)
    run.table.to_csv(folder / RESULTS_FILE, index=False, lineterminator="\n")
    (folder / INPUTS_FILE).write_text(inputs_text)
    (folder / META_FILE).write_text(
        _HEADER + yaml.safe_dump(meta, sort_keys=False, width=100, default_flow_style=None)
    )
    return status


def golden_configs(config_dir: str | Path) -> list[Path]:
    """The golden experiments: every ``*.yaml`` in ``config_dir`` (``configs/golden``)."""
    d = Path(config_dir)
    if not d.is_dir():
        raise ConfigError(
            f"{d}: no such folder (golden experiment configs); run from the repository root "
            "or pass --configs"
        )
    files = sorted([*d.glob("*.yaml"), *d.glob("*.yml")])
    if not files:
        raise ConfigError(f"{d}: holds no *.yaml experiment configs")
    return files


@dataclass
class UpdateReport:
    """What ``update_baselines`` did: per baseline its status, run and changes; violations."""

    runs: list[GoldenRun] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    changes: dict[str, Comparison] = field(default_factory=dict)
    violations: dict[str, list[str]] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)


def update_baselines(
    config_dir: str | Path,
    out_dir: str | Path,
    only: Sequence[str] = (),
    on_run: Callable[[str], None] | None = None,
) -> UpdateReport:
    """Run every golden config (or those named in ``only``), check the invariants on every
    curve, and — only if all hold — write the baselines into ``out_dir``."""
    files = golden_configs(config_dir)
    if only:
        unknown = sorted(set(only) - {f.stem for f in files})
        if unknown:
            raise ConfigError(
                f"--only {', '.join(unknown)}: no such golden config in {config_dir}; "
                f"known: {', '.join(f.stem for f in files)}"
            )
        files = [f for f in files if f.stem in only]
    rep = UpdateReport()
    for f in files:
        if on_run:
            on_run(f.stem)
        run = run_golden(f)
        rep.runs.append(run)
        bad = check_invariants(run.table)
        if bad:
            rep.violations[run.name] = bad
    out = Path(out_dir)
    if out.is_dir():
        names = {f.stem for f in golden_configs(config_dir)}
        rep.stale = sorted(
            d.name for d in out.iterdir() if (d / META_FILE).is_file() and d.name not in names
        )
    if rep.violations:
        return rep
    for run in rep.runs:
        old = out / run.name / RESULTS_FILE
        if old.is_file():
            try:
                cmp = compare_frames(run.table, read_results(old), allow_missing=True)
            except ConfigError:
                cmp = None
            if cmp is not None and not cmp.ok:
                rep.changes[run.name] = cmp
        rep.status[run.name] = write_baseline(run, out)
    return rep


# ---- comparison ----------------------------------------------------------------------------


def _fmt_value(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _fmt_rel(r: float) -> str:
    if r == 0:
        return "0"
    if math.isinf(r) or math.isnan(r):
        return str(r)
    return f"{r:+.2%}" if abs(r) >= 1e-4 else f"{r:+.1e}"


def format_table(header: list[str], rows: list[list[str]], left: int = 3) -> str:
    """A plain-text table: the first ``left`` columns left-aligned, the rest right-aligned."""
    allrows = [header, *rows]
    widths = [max(len(r[i]) for r in allrows) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i < left else v.rjust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


@dataclass(frozen=True)
class Comparison:
    """Per-point, per-metric differences between a results table and a baseline.

    ``values`` is long-form: the key columns, ``metric``, ``baseline``, ``result``, ``abs_diff``,
    ``rel_diff`` (relative to the baseline) and ``ok``. ``only_in_results`` and
    ``only_in_baseline`` hold the key tuples of points present on one side only.
    """

    values: pd.DataFrame
    metrics: tuple[str, ...]
    rtol: float
    atol: float
    only_in_results: tuple[tuple[Any, ...], ...] = ()
    only_in_baseline: tuple[tuple[Any, ...], ...] = ()
    allow_missing: bool = False

    @property
    def failures(self) -> pd.DataFrame:
        return self.values[~self.values["ok"]]

    @property
    def n_points(self) -> int:
        return len(self.values.drop_duplicates(list(KEY_COLUMNS)))

    @property
    def failing_points(self) -> list[tuple[Any, ...]]:
        f = self.failures.drop_duplicates(list(KEY_COLUMNS))
        return [tuple(r) for r in f[list(KEY_COLUMNS)].itertuples(index=False)]

    @property
    def ok(self) -> bool:
        missing = not self.allow_missing and (self.only_in_results or self.only_in_baseline)
        return bool(self.values["ok"].all()) and not missing

    def point_table(self) -> str:
        """Every common point, one row each: the relative difference of each metric
        (``*`` marks one beyond tolerance)."""
        wide: dict[tuple[Any, ...], dict[str, str]] = {}
        for r in self.values.itertuples(index=False):
            key = tuple(getattr(r, k) for k in KEY_COLUMNS)
            cell = _fmt_rel(r.rel_diff) if r.abs_diff != 0 else "0"
            wide.setdefault(key, {})[r.metric] = cell + ("" if r.ok else " *")
        header = [*KEY_COLUMNS, *self.metrics]
        rows = [
            [str(k) for k in key] + [cells.get(m, "") for m in self.metrics]
            for key, cells in wide.items()
        ]
        return format_table(header, rows, left=3)

    def failure_table(self, limit: int | None = 60) -> str:
        """The values beyond tolerance: point, metric, both values and their difference."""
        f = self.failures
        header = [*KEY_COLUMNS, "metric", "baseline", "result", "difference", "relative"]
        rows = [
            [str(getattr(r, k)) for k in KEY_COLUMNS]
            + [
                r.metric,
                _fmt_value(r.baseline),
                _fmt_value(r.result),
                f"{r.result - r.baseline:+.4g}" if np.isfinite(r.abs_diff) else "nan",
                _fmt_rel(r.rel_diff),
            ]
            for r in f.itertuples(index=False)
        ]
        more = ""
        if limit is not None and len(rows) > limit:
            more = f"\n... and {len(rows) - limit} more"
            rows = rows[:limit]
        return format_table(header, rows, left=5) + more

    def summary(self) -> str:
        tol = f"rtol={self.rtol:g}, atol={self.atol:g}"
        if len(self.failures) == 0:
            worst = self.values["rel_diff"].abs().max() if len(self.values) else 0.0
            head = (
                f"all {self.n_points} common points within tolerance ({tol}; "
                f"largest relative difference {worst:.1e})"
            )
        else:
            head = (
                f"{len(self.failures)} value(s) at {len(self.failing_points)} of {self.n_points} "
                f"points beyond tolerance ({tol})"
            )
        if self.only_in_results or self.only_in_baseline:
            head += (
                f"; {len(self.only_in_baseline)} point(s) only in the baseline, "
                f"{len(self.only_in_results)} only in the results"
                + (" (ignored)" if self.allow_missing else "")
            )
        return head


def _numeric_metric(df: pd.DataFrame, m: str, side: str) -> None:
    if m not in df.columns:
        raise ConfigError(
            f"unknown metric {m!r}: not a column of the {side}; available: "
            + ", ".join(c for c in df.columns if c not in KEY_COLUMNS and _is_numeric(df[c]))
        )
    if not _is_numeric(df[m]):
        raise ConfigError(f"metric {m!r} is not numeric in the {side}")


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _keyed(df: pd.DataFrame, side: str) -> pd.DataFrame:
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"the {side} lacks key column(s) {', '.join(missing)}")
    out = df.copy()
    for c in ("system", "strategy", "model"):
        out[c] = out[c].astype(str)
    out["nodes"] = pd.to_numeric(out["nodes"], errors="raise").astype(int)
    dup = out.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        r = out[dup].iloc[0]
        raise ConfigError(
            f"the {side} has {int(dup.sum())} rows with the same point "
            f"({', '.join(f'{k}={r[k]}' for k in KEY_COLUMNS)}); compare needs one row per point"
        )
    return out


def parse_metrics(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"a,b"`` or a list → a tuple of metric names; None → :data:`DEFAULT_METRICS`."""
    if text is None:
        return DEFAULT_METRICS
    items = text.split(",") if isinstance(text, str) else list(text)
    out = tuple(m.strip() for m in items if m.strip())
    if not out:
        raise ConfigError("--metrics: no metric named; e.g. --metrics step_time_s,mfu")
    return out


def compare_frames(
    results: pd.DataFrame,
    baseline: pd.DataFrame,
    metrics: str | Iterable[str] | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    allow_missing: bool = False,
) -> Comparison:
    """Compare ``results`` with ``baseline`` point by point. Points present on one side only
    make the comparison fail unless ``allow_missing``; no common point at all is an input error
    (unless both tables are empty)."""
    if rtol < 0 or atol < 0:
        raise ConfigError(f"tolerances must be >= 0 (got rtol={rtol}, atol={atol})")
    ms = parse_metrics(metrics)
    res, base = _keyed(results, "results"), _keyed(baseline, "baseline")
    for m in ms:
        _numeric_metric(res, m, "results")
        _numeric_metric(base, m, "baseline")
    keys = list(KEY_COLUMNS)
    merged = base[[*keys, *ms]].merge(
        res[[*keys, *ms]], on=keys, how="outer", suffixes=("__b", "__r"), indicator=True, sort=False
    )
    only_b = merged[merged["_merge"] == "left_only"]
    only_r = merged[merged["_merge"] == "right_only"]
    both = merged[merged["_merge"] == "both"]
    if both.empty and not (res.empty and base.empty):
        raise ConfigError(
            "no common points between the results and the baseline (keys "
            f"{', '.join(KEY_COLUMNS)}): results have {len(res)} point(s), the baseline {len(base)}"
        )
    rows = []
    for r in both.itertuples(index=False):
        d = r._asdict()
        for m in ms:
            b, v = float(d[f"{m}__b"]), float(d[f"{m}__r"])
            if math.isnan(b) and math.isnan(v):
                diff, ok = 0.0, True
            elif math.isinf(b) or math.isinf(v):
                diff, ok = (0.0, True) if b == v else (math.inf, False)
            else:
                diff = abs(v - b)
                ok = diff <= atol + rtol * abs(b)
            rel = 0.0 if diff == 0 else (diff / abs(b) if b else math.inf)
            if v < b:
                rel = -rel
            rows.append({**{k: d[k] for k in keys}, "metric": m, "baseline": b, "result": v,
                         "abs_diff": diff, "rel_diff": rel, "ok": bool(ok)})  # fmt: skip
    values = pd.DataFrame(
        rows, columns=[*keys, "metric", "baseline", "result", "abs_diff", "rel_diff", "ok"]
    )
    return Comparison(
        values,
        ms,
        rtol,
        atol,
        tuple(tuple(x) for x in only_r[keys].itertuples(index=False)),
        tuple(tuple(x) for x in only_b[keys].itertuples(index=False)),
        allow_missing,
    )


def point_name(key: Sequence[Any]) -> str:
    """``mlu370-x8 ddp gpt3-1.3b nodes=64``."""
    system, strategy, model, nodes = key
    return f"{system} {strategy} {model} nodes={nodes}"


def curve_names(keys: Iterable[Sequence[Any]]) -> list[str]:
    """Points grouped by curve: ``mlu370-x8 ddp gpt3-1.3b nodes=1, 8, 64``."""
    curves: dict[tuple[Any, ...], list[Any]] = {}
    for system, strategy, model, nodes in keys:
        curves.setdefault((system, strategy, model), []).append(nodes)
    return [
        f"{s} {st} {m} nodes={', '.join(str(n) for n in sorted(ns))}"
        for (s, st, m), ns in curves.items()
    ]


# ---- invariants --------------------------------------------------------------------------------


def check_invariants(
    table: pd.DataFrame, slower_than: Sequence[tuple[str, str]] = SLOWER_THAN
) -> list[str]:
    """Physical sanity of scaling curves; returns one message per violation (empty: all hold).

    Per curve (system, model, strategy), weak scaling at a fixed per-device batch:

    * scaling efficiency is finite and > 0;
    * DDP (and any non-FSDP strategy): efficiency ≤ 1 and non-increasing with nodes;
    * FSDP: efficiency ≤ 1 + :data:`FSDP_SUPERLINEAR_TOL` and no point exceeds an earlier
      (smaller-N) point by more than that tolerance — the sharded optimizer step shrinks as 1/p,
      so per-device throughput may rise slightly with N (super-linear scaling, as in ZeRO);
    * for each pair in ``slower_than`` present in the table (the seed scenario: MLU370-X8 below
      DGX A100), the first system's efficiency lies below the second's at the largest node count
      both ran, for every strategy.
    """
    out: list[str] = []
    if table.empty:
        return out
    need = ["system", "model", "strategy", "nodes", "scaling_efficiency"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        return [f"table lacks column(s) {', '.join(missing)}"]
    for (system, model, strategy), g in table.groupby(["system", "model", "strategy"], sort=False):
        g = g.sort_values("nodes")
        curve = f"{system} {strategy} {model}"
        eff = g["scaling_efficiency"].astype(float).to_numpy()
        nodes = g["nodes"].astype(int).to_numpy()
        if "global_batch" in g and "devices" in g:
            per_dev = (g["global_batch"] / g["devices"]).unique()
            if len(per_dev) > 1:
                out.append(
                    f"{curve}: per-device batch varies ({per_dev.tolist()}): not weak scaling"
                )
                continue
        fsdp = str(strategy).startswith("fsdp")
        tol = FSDP_SUPERLINEAR_TOL if fsdp else DDP_TOL
        for n, e in zip(nodes, eff, strict=True):
            if not (math.isfinite(e) and e > 0):
                out.append(f"{curve} nodes={n}: scaling efficiency {e} is not in (0, 1]")
            elif e > 1 + tol:
                what = (
                    f"1 + {FSDP_SUPERLINEAR_TOL} (FSDP's super-linear allowance)" if fsdp else "1"
                )
                out.append(f"{curve} nodes={n}: scaling efficiency {e:.6f} > {what}")
        for j in range(1, len(eff)):
            i = int(np.argmin(eff[:j]))
            if eff[j] > eff[i] + tol:
                out.append(
                    f"{curve}: scaling efficiency rises from {eff[i]:.6f} at {nodes[i]} nodes "
                    f"to {eff[j]:.6f} at {nodes[j]} nodes"
                    + (f" (more than the FSDP allowance {FSDP_SUPERLINEAR_TOL})" if fsdp else "")
                )
    for slow, fast in slower_than:
        for (strategy, model), g in table.groupby(["strategy", "model"], sort=False):
            a, b = g[g["system"] == slow], g[g["system"] == fast]
            common = sorted(set(a["nodes"]) & set(b["nodes"]))
            if not common:
                continue
            n = common[-1]
            ea = float(a.loc[a["nodes"] == n, "scaling_efficiency"].iloc[0])
            eb = float(b.loc[b["nodes"] == n, "scaling_efficiency"].iloc[0])
            if not ea < eb:
                out.append(
                    f"{slow} {strategy} {model}: scaling efficiency {ea:.6f} at {n} nodes is not "
                    f"below {fast}'s {eb:.6f}"
                )
    return out
