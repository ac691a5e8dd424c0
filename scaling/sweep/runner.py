"""Running a sweep: point-by-point result files, resume, and the consolidated table.

Output folder layout::

    OUT/sweep.yaml            the resolved spec: points, runs, systems, and its hash
    OUT/runs/<run key>.parquet  one row per finished run, written atomically (temp file + rename)
    OUT/results.parquet       every run of the spec, with scaling_efficiency (+ results.csv)

A run's file is its checkpoint: with ``resume`` a run whose file holds an ``ok`` or ``refused``
row is not run again, and a ``failed`` one is retried. A sweep stopped at any moment (Ctrl-C,
``kill -9``, a lost machine) loses at most the runs in flight and resumes from its files.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scaling.io.config import content_hash
from scaling.io.errors import ConfigError
from scaling.io.files import atomic_write, checksum_ok, make_dir, results_lock, stamp_checksum
from scaling.io.results import add_scaling_efficiency, write_parquet
from scaling.model.job import InfeasibleJobError, Job
from scaling.model.simulation import run_job
from scaling.sweep.budget import DEFAULT_BUDGET, Budget, check_budget
from scaling.sweep.executors import SweepExecutor, describe_error, make_executor
from scaling.sweep.spec import LoadedSweep, RunSpec, as_sweep, expand

if TYPE_CHECKING:
    import pandas as pd
else:  # tables only: a sweep worker (execute_run) skips pandas' import (start-up: issue 29)
    from scaling.lazy import lazy_module

    pd = lazy_module("pandas")

#: statuses of a run: simulated, refused before simulating (infeasible), or errored / lost
OK, REFUSED, FAILED = "ok", "refused", "failed"
#: statuses that are final: a resume does not run them again
FINAL = (OK, REFUSED)

RESULTS_FILE = "results.parquet"
SPEC_FILE = "sweep.yaml"
RUNS_DIR = "runs"


def execute_run(job: Job) -> dict[str, Any]:
    """Worker entry point: simulate one job; return its status, error and scalar metrics.

    An infeasible job is an answer, not a failure: ``status="refused"`` with the reason.
    """
    try:
        result = run_job(job)
    except InfeasibleJobError as e:
        return {"status": REFUSED, "error": str(e)}
    return {"status": OK, "error": "", **result.scalars()}


def _run_row(run: RunSpec, outcome: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"run_key": run.key, "status": outcome.get("status", FAILED)}
    row["error"] = outcome.get("error", "")
    row.update(run.identity())
    row.update({k: v for k, v in outcome.items() if k not in ("status", "error")})
    return row


def _write_run(runs_dir: Path, row: dict[str, Any]) -> None:
    frame = pd.DataFrame([row])

    def write(p: Path) -> None:
        write_parquet(frame, p)
        stamp_checksum(p)  # a hand-edited or partial file is then detected and run again

    atomic_write(runs_dir / f"{row['run_key']}.parquet", write)


def _save_run(runs_dir: Path, run: RunSpec, row: dict[str, Any]) -> dict[str, Any]:
    """Write a run's row; a row that cannot be stored (a value out of its column's range) is
    stored as that run's failure instead, so one bad point fails only itself. A full disk or
    read-only folder (``ConfigError``) stops the sweep."""
    try:
        _write_run(runs_dir, row)
        return row
    except ConfigError:
        raise
    except Exception as e:
        bad = _run_row(
            run, {"status": FAILED, "error": f"cannot store its result: {describe_error(e)}"}
        )
        _write_run(runs_dir, bad)
        return bad


def _read_run(runs_dir: Path, key: str) -> dict[str, Any] | None:
    path = runs_dir / f"{key}.parquet"
    if not path.exists() or not checksum_ok(path):  # edited by hand or partial: run it again
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception:  # unreadable (should not happen with atomic writes): run it again
        return None
    if len(frame) != 1 or "run_key" not in frame or frame["run_key"].iloc[0] != key:
        return None
    return frame.iloc[0].to_dict()


def _clean_temp(runs_dir: Path) -> None:
    """Remove temp files a killed sweep left behind."""
    for p in runs_dir.glob(".*.tmp"):
        p.unlink(missing_ok=True)


def resolved_spec(sweep: LoadedSweep, runs: list[RunSpec]) -> dict[str, Any]:
    """The resolved sweep: its source, every point's experiment and config hash, every run's
    key, the systems."""
    systems: dict[str, Any] = {}
    points = []
    for p in sweep.points():
        res = p.experiment.resolved()
        for name, s in res["systems"].items():
            systems.setdefault(name, s)
        points.append(
            {
                "point": p.index,
                "overrides": p.overrides(),
                "config_hash": p.experiment.config_hash(),
                "experiment": res["experiment"],
            }
        )
    doc = {
        "name": sweep.name,
        "source": sweep.where,
        "base_source": sweep.base_where,
        "base": sweep.base,
        "axes": sweep.spec.axes,
        "zip": sweep.spec.zip_groups,
        "columns": sweep.axis_columns(),
        "points": points,
        "runs": [
            {
                "run_key": r.key,
                "point": r.point,
                "system": r.system,
                "strategy": r.strategy,
                "nodes": r.nodes,
            }
            for r in runs
        ],
        "systems": systems,
    }
    doc = json.loads(json.dumps(doc, default=str))
    return {"spec_hash": content_hash(doc), **doc}


def _write_spec(out: Path, doc: dict[str, Any]) -> Path:
    path = out / SPEC_FILE

    def write(p: Path) -> None:
        with p.open("w") as fh:
            fh.write(f"# resolved sweep {doc['name']}; spec hash {doc['spec_hash']}\n")
            yaml.safe_dump(doc, fh, sort_keys=False)

    atomic_write(path, write)
    return path


def consolidate(sweep: LoadedSweep, runs: list[RunSpec], out_dir: str | Path) -> pd.DataFrame:
    """The sweep's table from its run files: one row per run of the spec, in ``expand`` order,
    with ``scaling_efficiency`` per (point, system, model, strategy). Runs without a file are
    rows with ``status="missing"``."""
    runs_dir = Path(out_dir) / RUNS_DIR
    rows = []
    cache: dict[str, dict[str, Any] | None] = {}
    for r in runs:
        if r.key not in cache:
            cache[r.key] = _read_run(runs_dir, r.key)
        stored = cache[r.key]
        row: dict[str, Any] = {"run_key": r.key, "point": r.point, **dict(r.axes)}
        if stored is None:
            row.update({"status": "missing", "error": "no result file", **r.identity()})
        else:
            row.update({k: v for k, v in stored.items() if k != "run_key"})
            row.update(r.identity())
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if "tokens_per_s_per_device" not in df:
        df["tokens_per_s_per_device"] = float("nan")
    return add_scaling_efficiency(df, by=("point",))


def run_sweep(
    spec: LoadedSweep | dict[str, Any] | str | Path,
    out_dir: str | Path,
    executor: SweepExecutor | None = None,
    resume: bool = True,
    progress: bool | None = True,
    csv: bool = False,
    overrides: list[str] | None = None,
    on_run: Callable[[RunSpec, dict[str, Any]], None] | None = None,
    budget: Budget = DEFAULT_BUDGET,
) -> pd.DataFrame:
    """Run every run of a sweep, writing each result as it finishes; return the full table.

    Args:
        spec: a sweep spec or experiment (file path, mapping, or :func:`load_sweep` result).
        out_dir: output folder (created): ``runs/``, ``results.parquet``, ``sweep.yaml``.
        executor: where runs execute (default: a local process pool, one process per CPU);
            left open if given, closed if created here.
        resume: skip runs whose result file is final (``ok``/``refused``); retry ``failed``
            ones. ``False`` runs everything again.
        progress: a tqdm bar on stderr with ETA (``None``: only when stderr is a terminal).
        csv: also write ``results.csv``.
        overrides: ``PATH=VALUE`` overrides of the base experiment (as ``--set``).
        on_run: called with each finished run and its row (after its file is written).
        budget: the most one run may cost (:mod:`scaling.sweep.budget`); a sweep with a run
            beyond it is refused before anything runs.

    Returns the consolidated table (also written to ``results.parquet``): one row per run, in
    :func:`expand` order, with the axis columns, ``status`` (``ok``/``refused``/``failed``),
    ``error`` and the metrics. Raises :class:`ConfigError` for a bad spec before running, or
    when another process is writing ``out_dir`` (:func:`~scaling.io.files.results_lock`).
    """
    sweep = as_sweep(spec, overrides)
    check_budget([r.job for r in {r.key: r for r in expand(sweep)}.values()], budget, sweep.where)
    with results_lock(out_dir):
        return _run_locked(sweep, Path(out_dir), executor, resume, progress, csv, on_run)


def _run_locked(
    sweep: LoadedSweep,
    out: Path,
    executor: SweepExecutor | None,
    resume: bool,
    progress: bool | None,
    csv: bool,
    on_run: Callable[[RunSpec, dict[str, Any]], None] | None,
) -> pd.DataFrame:
    """:func:`run_sweep` with the results folder held."""
    runs = expand(sweep)
    runs_dir = out / RUNS_DIR
    make_dir(runs_dir)
    _clean_temp(runs_dir)
    _write_spec(out, resolved_spec(sweep, runs))

    unique: dict[str, RunSpec] = {}
    for r in runs:
        unique.setdefault(r.key, r)
    todo = []
    for key, r in unique.items():
        stored = _read_run(runs_dir, key) if resume else None
        if stored is None or stored.get("status") not in FINAL:
            todo.append(r)
    # largest first: the long runs start early and the pool drains evenly
    todo.sort(key=lambda r: -r.job.devices)

    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm  # a widget in Jupyter, text on a terminal

        bar = tqdm(
            total=len(unique),
            initial=len(unique) - len(todo),
            desc=f"sweep {sweep.name}",
            unit="run",
            file=sys.stderr,
            dynamic_ncols=True,
        )
    own = executor is None
    ex = executor or make_executor()
    counts = {OK: 0, REFUSED: 0, FAILED: 0}
    try:
        if todo:
            for i, ok, value in ex.imap_unordered(execute_run, [r.job for r in todo]):
                run = todo[i]
                outcome = value if ok else {"status": FAILED, "error": value}
                try:
                    row = _save_run(runs_dir, run, _run_row(run, outcome))
                except ConfigError as e:
                    saved = sum(counts.values())
                    raise ConfigError(
                        f"{e}; the sweep stopped: {saved} run(s) finished now are saved in "
                        f"{runs_dir}; free space and run the same command again to resume"
                    ) from None
                counts[row["status"]] = counts.get(row["status"], 0) + 1
                if bar is not None:
                    bar.update(1)
                    if counts[REFUSED] or counts[FAILED]:
                        bar.set_postfix(refused=counts[REFUSED], failed=counts[FAILED])
                if on_run is not None:
                    on_run(run, row)
    finally:
        if bar is not None:
            bar.close()
        if own:
            ex.close()

    df = consolidate(sweep, runs, out)
    atomic_write(out / RESULTS_FILE, lambda p: write_parquet(df, p))
    if csv:
        atomic_write(out / "results.csv", lambda p: df.to_csv(p, index=False))
    else:  # a CSV from an earlier run would no longer match results.parquet
        (out / "results.csv").unlink(missing_ok=True)
    df.attrs.update(
        {
            "sweep": sweep.name,
            "points": len(sweep.points()),
            "axis_columns": list(sweep.axis_columns().values()),
            "ran": len(todo),
            "reused": len(unique) - len(todo),
        }
    )
    return df
