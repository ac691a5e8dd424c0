"""Golden baselines on disk: run a golden experiment, write it, read it back, regenerate the set.

The experiments are the config files in ``configs/golden/`` (every ``*.yaml`` but
:data:`~scaling.golden.invariants.INVARIANTS_FILE`); ``scaling baseline update`` runs each one
and writes a folder per experiment (``tests/golden/<config stem>/``):

* ``results.csv`` — one row per (system, strategy, nodes) point, every metric, in the layout
  ``scaling run`` writes (without its per-row ``config_hash`` column, so a changed input does not
  touch every line of the diff);
* ``resolved_config.yaml`` — the inputs that produced it
  (:meth:`~scaling.io.config.LoadedExperiment.inputs`: provenance stripped, so editing a
  ``source`` or ``note`` does not change a baseline);
* ``baseline.yaml`` — the config file, its config hash, the ``scaling`` version and the date
  that produced it, and the points the model refused (out of memory, a device that cannot train),
  with the reason.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import scaling
from scaling.golden.compare import Comparison, compare_frames
from scaling.golden.invariants import INVARIANTS_FILE, check_invariants, invariants_for
from scaling.io.config import LoadedExperiment, as_experiment, content_hash
from scaling.io.errors import ConfigError
from scaling.io.results import read_results, results_frame
from scaling.io.topology import bundled_topology_dir
from scaling.model.analysis.metrics import RunResult
from scaling.model.errors import InfeasibleJobError
from scaling.model.simulation import check_feasible, run_job

RESULTS_FILE = "results.csv"
INPUTS_FILE = "resolved_config.yaml"
META_FILE = "baseline.yaml"
UPDATE_COMMAND = "scaling baseline update"


# ---- running a golden experiment -------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Points of one (system, strategy) curve the model refused, with the first reason."""

    system: str
    strategy: str
    nodes: tuple[int, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The metadata as written to baseline.yaml."""
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
    def config_hash(self) -> str:
        """The hash of :attr:`inputs` (the experiment's config hash)."""
        return content_hash(self.inputs)


def _results_columns() -> list[str]:
    return [k for k in RunResult.__dataclass_fields__ if k != "steps"] + ["scaling_efficiency"]


def run_golden(
    config: LoadedExperiment | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
    name: str | None = None,
) -> GoldenRun:
    """Run every point of an experiment; unlike ``run_experiment``, a point the model refuses
    (out of memory, a device that cannot train) is recorded instead of failing the whole run."""
    exp = as_experiment(config, overrides)
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
    return GoldenRun(name or stem, table, refusals, exp.inputs(), exp)


# ---- inputs of a curve --------------------------------------------------------------------


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
    a = _leaves(inputs.get("experiment", {}), "experiment")
    b = _leaves(baseline.get("experiment", {}), "experiment")
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
        """Why the baseline refused this point, or None if it ran."""
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
        "config_hash": run.config_hash,
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


def inputs_text(run: GoldenRun) -> str:
    """The text of a baseline's ``resolved_config.yaml`` for ``run``."""
    return _INPUTS_HEADER + yaml.safe_dump(run.inputs, sort_keys=False)


def frames_equal(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-12) -> bool:
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


def _same_meta(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal but for the date and the version that wrote them."""
    drop = ("created", "scaling_version")
    return {k: v for k, v in old.items() if k not in drop} == {
        k: v for k, v in new.items() if k not in drop
    }


def write_baseline(run: GoldenRun, out_dir: str | Path, created: str | None = None) -> str:
    """Write ``run`` as the baseline ``out_dir/<run.name>/``. Returns ``"new"``, ``"updated"`` or
    ``"unchanged"``; an unchanged baseline (same inputs, refusals and values) is left untouched,
    keeping its date and version, so regenerating produces no diff."""
    folder = Path(out_dir) / run.name
    created = created or _dt.date.today().isoformat()
    meta = _meta(run, created)
    text = inputs_text(run)
    status = "new"
    if (folder / RESULTS_FILE).is_file() and (folder / META_FILE).is_file():
        status = "updated"
        old = _read_yaml_file(folder / META_FILE) or {}
        old_inputs = (folder / INPUTS_FILE).read_text() if (folder / INPUTS_FILE).is_file() else ""
        try:
            old_table = pd.read_csv(folder / RESULTS_FILE)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            old_table = pd.DataFrame()
        if _same_meta(old, meta) and old_inputs == text and frames_equal(old_table, run.table):
            return "unchanged"
    folder.mkdir(parents=True, exist_ok=True)
    run.table.to_csv(folder / RESULTS_FILE, index=False, lineterminator="\n")
    (folder / INPUTS_FILE).write_text(text)
    (folder / META_FILE).write_text(
        _HEADER + yaml.safe_dump(meta, sort_keys=False, width=100, default_flow_style=None)
    )
    return status


def golden_configs(config_dir: str | Path) -> list[Path]:
    """The golden experiments: every ``*.yaml`` in ``config_dir`` (``configs/golden``) but the
    invariants file."""
    d = Path(config_dir)
    if not d.is_dir():
        raise ConfigError(
            f"{d}: no such folder (golden experiment configs); run from the repository root "
            "or pass --configs"
        )
    files = sorted(p for p in [*d.glob("*.yaml"), *d.glob("*.yml")] if p.name != INVARIANTS_FILE)
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
    """Run every golden config (or those named in ``only``), check the invariants declared
    beside them (:func:`~scaling.golden.invariants.invariants_for`) on every curve, and — only
    if all hold — write the baselines into ``out_dir``."""
    files = golden_configs(config_dir)
    invariants = invariants_for(config_dir)
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
        bad = check_invariants(run.table, invariants)
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
