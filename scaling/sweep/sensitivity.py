"""Which uncertain inputs decide a metric (``scaling sensitivity``): one-at-a-time elasticities
(:func:`one_at_a_time`) and Sobol first-order / total indices (Saltelli 2010 / Jansen 1999
estimators, :func:`sobol_indices`), over the inputs of :mod:`scaling.sweep.uncertainty`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from scaling.io.config import LoadedExperiment
from scaling.io.errors import ConfigError
from scaling.io.results import add_scaling_efficiency, efficiency_rows
from scaling.io.rows import NAN
from scaling.model.analysis.metrics import METRICS, RunResult
from scaling.model.job import Job
from scaling.sweep.batch import RunMemo, run_all
from scaling.sweep.executors import SweepExecutor
from scaling.sweep.runner import OK
from scaling.sweep.uncertainty import (
    ECONOMICS_ONLY,
    FEASIBILITY_ONLY,
    UncertainInput,
    _point_systems,
    _shortest,
    _with_steps,
    perturbed_spec,
    structure_rank,
    uncertain_inputs,
    unit_design,
)

#: A run's identifying columns: not metrics a sensitivity can explain.
_IDENTITY = frozenset(("system", "model", "strategy", "nodes", "devices", "global_batch"))


def sensitivity_metrics() -> list[str]:
    """The metrics a sensitivity can explain: those of :data:`METRICS` (``scaling metrics``),
    then a run's other numeric scalars (``n_collectives_per_step``, ``tokens_per_step`` …)."""
    fields = [
        k
        for k, f in RunResult.__dataclass_fields__.items()
        if k != "steps" and k not in _IDENTITY and str(f.type) in {"int", "float"}
    ]
    return list(dict.fromkeys([*METRICS, *fields]))


def check_metric(metric: str) -> None:
    """Raise :class:`ConfigError` (one line naming the valid metrics) unless ``metric`` is one
    of :func:`sensitivity_metrics` — a misspelled name would give an all-NaN table."""
    names = sensitivity_metrics()
    if metric not in names:
        raise ConfigError(f"metric {metric!r}: not a metric; expected one of {', '.join(names)}")


def case_records(rows: list[dict[str, Any]], jobs: list[Job]) -> list[dict[str, Any]]:
    """One record per run of a case: the job's identifying columns, then its result row."""
    return [
        {
            "system": j.system.name,
            "model": j.shape.name,
            "strategy": j.strategy.label,
            "devices": j.devices,
            "nodes": j.nodes,
            **r,
        }
        for j, r in zip(jobs, rows, strict=True)
    ]


def _metric_of(
    rows: list[dict[str, Any]], jobs: list[Job], at: int, metric: str
) -> dict[tuple[str, str], float]:
    """Per (system, strategy): ``metric`` at ``at`` nodes (scaling efficiency against the
    fewest nodes of the same rows). Called once per case (thousands in a Sobol design), so
    without pandas where :func:`~scaling.io.results.efficiency_rows` mirrors it exactly (the
    same table as ``add_scaling_efficiency(pd.DataFrame(...))``; issue 29)."""
    records = case_records(rows, jobs)
    table = efficiency_rows(records)
    if not table.exact:
        return _metric_of_pandas(records, at, metric)
    data = table.data
    cells = data.get(metric)
    status = data.get("status")
    out = {}
    for i in range(len(table)):
        if data["nodes"][i] != at:
            continue
        v = NAN if cells is None else cells[i]
        ok = status is not None and status[i] == OK and v == v
        out[(str(data["system"][i]), str(data["strategy"][i]))] = float(v) if ok else NAN
    return out


def _metric_of_pandas(
    records: list[dict[str, Any]], at: int, metric: str
) -> dict[tuple[str, str], float]:
    """:func:`_metric_of` with pandas (a cell :class:`~scaling.io.rows.Rows` cannot mirror)."""
    df = pd.DataFrame(records)
    if "tokens_per_s_per_device" not in df:
        df["tokens_per_s_per_device"] = float("nan")
    df = add_scaling_efficiency(df)
    out = {}
    for _, r in df[df["nodes"] == at].iterrows():
        ok = r.get("status") == OK and metric in r and pd.notna(r[metric])
        out[(str(r["system"]), str(r["strategy"]))] = float(r[metric]) if ok else float("nan")
    return out


def _oat_jobs(
    exp: LoadedExperiment,
    at: int,
    name: str,
    changes: dict[tuple[str, str], Any],
    plans: list[tuple[int, int] | None] | None = None,
    memo: RunMemo | None = None,
) -> list[Job]:
    """The jobs of system ``name`` at the fewest nodes and at ``at``, with ``changes`` (and
    each point's steady-state ``plans``, see :func:`steady_plans`; the system from ``memo``
    where built before)."""
    base = exp.jobs()
    names = _point_systems(exp)
    plans = plans or [None] * len(base)
    first = min(exp.config.nodes)
    spec = perturbed_spec(exp, name, changes, memo)
    out = []
    for p, job in enumerate(base):
        if names[p] == name and job.nodes in {first, at}:
            out.append(_with_steps(dataclasses.replace(job, system=spec), plans[p]))
    return out


Plans = list[tuple[int, int] | None]


def plans_at(
    exp: LoadedExperiment, at: int, executor: SweepExecutor, memo: RunMemo | None = None
) -> Plans:
    """:func:`steady_plans` of the points at the fewest nodes and at ``at`` (others None):
    compute once and pass to :func:`one_at_a_time` and :func:`sobol_indices`, which otherwise
    each probe them again. ``memo``: runs finished by the command so far, by job (updated;
    pass the same one to every call so that no job is simulated twice: the probe's shortened
    nominal run is the one-at-a-time nominal case)."""
    base = exp.jobs()
    keep = [p for p, j in enumerate(base) if j.nodes in {min(exp.config.nodes), at}]
    jobs = [base[p] for p in keep]
    got = _shortest(executor, jobs, run_all(executor, jobs, memo=memo), memo)
    plans: list[tuple[int, int] | None] = [None] * len(base)
    for p, plan in zip(keep, got, strict=True):
        plans[p] = plan
    return plans


def one_at_a_time(
    exp: LoadedExperiment,
    at: int,
    metric: str,
    executor: SweepExecutor,
    include_economics: bool = False,
    only: Sequence[str] | None = None,
    plans: Plans | None = None,
    memo: RunMemo | None = None,
) -> pd.DataFrame:
    """Each uncertain input set to its ``low`` and its ``high`` (an alternative: each option),
    the others nominal; ``metric`` at ``at`` nodes per system and strategy. Columns: system,
    strategy, input, confidence, nominal/low/high input values, metric at nominal/low/high,
    ``swing`` (metric at high - at low; an alternative: largest change from nominal) and
    ``elasticity`` (relative metric change per relative input change between low and high;
    NaN for an alternative or a nominal of 0). Inputs that feed only cost/energy
    (:data:`ECONOMICS_ONLY`) or only the memory check (:data:`FEASIBILITY_ONLY`) are left out
    of a speed metric unless ``include_economics``; ``only``: keep the inputs whose label
    contains one of these strings. ``memo``: as for :func:`plans_at` (a case equal to another,
    e.g. a count whose rounded end is its nominal, runs once)."""
    check_metric(metric)
    if at not in exp.config.nodes:
        raise ConfigError(f"--at nodes={at}: not one of the experiment's node counts")
    skip = set() if include_economics else (ECONOMICS_ONLY | FEASIBILITY_ONLY)
    inputs = [i for i in uncertain_inputs(exp) if i.path not in skip]
    if only:
        inputs = [i for i in inputs if any(o in i.label for o in only)]
    cases: list[tuple[str, UncertainInput | None, Any]] = [
        (name, None, None) for name in dict.fromkeys(exp.config.systems)
    ]
    for inp in inputs:
        ends: tuple[Any, ...] = inp.options[1:] if inp.options else (inp.low, inp.high)
        if inp.integer:
            ends = (round(inp.low), round(inp.high))
        cases += [(inp.system, inp, v) for v in ends]
    if plans is None:
        plans = plans_at(exp, at, executor, memo)
    all_jobs: list[Job] = []
    spans = []
    for name, which, v in cases:
        change = {} if which is None else {(which.doc, which.path): v}
        js = _oat_jobs(exp, at, name, change, plans, memo)
        spans.append((len(all_jobs), len(js)))
        all_jobs += js
    results = run_all(executor, all_jobs, memo=memo)
    per_case = [_metric_of(results[s : s + k], all_jobs[s : s + k], at, metric) for s, k in spans]
    nominal = {name: per_case[i] for i, (name, which, _) in enumerate(cases) if which is None}
    rows = []
    c = len(nominal)
    for inp in inputs:
        k = len(inp.options) - 1 if inp.options else 2
        got = per_case[c : c + k]
        c += k
        for sys_strat, m0 in nominal[inp.system].items():
            ms = [g.get(sys_strat, float("nan")) for g in got]
            row = {
                "system": sys_strat[0],
                "strategy": sys_strat[1],
                "input": inp.label,
                "confidence": inp.confidence,
                "nominal_value": inp.options[0] if inp.options else inp.value,
                "low_value": ", ".join(inp.options[1:]) if inp.options else inp.low,
                "high_value": "" if inp.options else inp.high,
                "metric": metric,
                "at_nominal": m0,
                "at_low": ms[0] if not inp.options else min(ms),
                "at_high": ms[-1] if not inp.options else max(ms),
            }
            if inp.options:
                row["swing"] = max((m - m0 for m in ms), key=abs)
                row["elasticity"] = float("nan")
            else:
                row["swing"] = ms[1] - ms[0]
                dx = (inp.high - inp.low) / inp.value if inp.value else float("nan")
                row["elasticity"] = (ms[1] - ms[0]) / m0 / dx if m0 and dx else float("nan")
            rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["abs_swing"] = df["swing"].abs()
        df = df.sort_values(["system", "strategy", "abs_swing"], ascending=[True, True, False])
        df = df.drop(columns="abs_swing").reset_index(drop=True)
    return df


def saltelli_indices(f_a: np.ndarray, f_b: np.ndarray, f_ab: np.ndarray) -> pd.DataFrame:
    """First-order (Saltelli 2010) and total (Jansen 1999) Sobol indices from model outputs on
    the sample matrices A, B (``n``) and A with column i from B (``f_ab``: n x d). Indices are
    clipped to [0, 1]; their sampling noise is of order 1/sqrt(n)."""
    f_a, f_b, f_ab = (np.asarray(x, dtype=float) for x in (f_a, f_b, f_ab))
    var = np.var(np.concatenate([f_a, f_b]), ddof=1)
    d = f_ab.shape[1]
    if not np.isfinite(var) or var <= 0:
        return pd.DataFrame({"S1": np.zeros(d), "ST": np.zeros(d)})
    s1 = np.mean(f_b[:, None] * (f_ab - f_a[:, None]), axis=0) / var
    st = 0.5 * np.mean((f_a[:, None] - f_ab) ** 2, axis=0) / var
    return pd.DataFrame({"S1": np.clip(s1, 0, 1), "ST": np.clip(st, 0, 1)})


def sobol_indices(
    exp: LoadedExperiment,
    at: int,
    metric: str,
    n: int,
    seed: int,
    executor: SweepExecutor,
    system: str,
    strategy: str,
    only: Sequence[str] | None = None,
    plans: Plans | None = None,
    memo: RunMemo | None = None,
) -> pd.DataFrame:
    """Variance-based (Sobol) indices of ``metric`` at ``at`` nodes for one system and strategy
    (its inputs only, the run seed held at the config's): ``n`` x (d + 2) simulated cases.
    Columns: input, S1, ST (first-order and total index). ``only``: as for
    :func:`one_at_a_time`; ``memo``: as for :func:`plans_at` (a row of A with column i from B
    that equals A's row, e.g. a count or an alternative drawn alike, runs once)."""
    check_metric(metric)
    inputs = [
        i
        for i in uncertain_inputs(exp, [system])
        if i.path not in ECONOMICS_ONLY | FEASIBILITY_ONLY
        and (not only or any(o in i.label for o in only))
    ]
    d = len(inputs)
    both = unit_design(n, 2 * d, seed)
    a, b = both[:, :d], both[:, d:]
    mats = [a, b] + [np.where(np.arange(d) == i, b, a) for i in range(d)]
    if plans is None:
        plans = plans_at(exp, at, executor, memo)
    memo = RunMemo() if memo is None else memo
    all_jobs: list[Job] = []
    ranks: list[tuple[Any, ...]] = []
    spans = []
    for m in mats:
        for row, u in enumerate(m):
            values = [inp.from_unit(u[k]) for k, inp in enumerate(inputs)]
            changes = {(inp.doc, inp.path): v for inp, v in zip(inputs, values, strict=True)}
            js = [
                j
                for j in _oat_jobs(exp, at, system, changes, plans, memo)
                if j.strategy.label == strategy
            ]
            spans.append((len(all_jobs), len(js)))
            all_jobs += js
            # per structure, the design's row: A's row r and every row of B_A^(i) built from
            # it follow one another, and those whose column i leaves the capacities alone
            # (device, latency and library-latency inputs) meet A's uncontended phase solves
            # in the worker's caches (scaling.model.comm.shared, keyed by capacities)
            ranks += [(structure_rank(inputs, values), row)] * len(js)
    results = run_all(executor, all_jobs, memo=memo, rank=ranks)
    ys = np.array(
        [
            _metric_of(results[s : s + k], all_jobs[s : s + k], at, metric).get(
                (exp.systems[system].spec.name, strategy), float("nan")
            )
            for s, k in spans
        ]
    ).reshape(len(mats), n)
    idx = saltelli_indices(ys[0], ys[1], ys[2:].T)
    idx.insert(0, "input", [i.label for i in inputs])
    return idx.sort_values("ST", ascending=False).reset_index(drop=True)


class NoUncertainInput(ConfigError):
    """The experiment's systems have no uncertain input (every range is a point)."""


def run_sensitivity(
    exp: LoadedExperiment,
    at: int,
    metric: str,
    executor: SweepExecutor,
    samples: int = 0,
    seed: int = 0,
    only: Sequence[str] | None = None,
    on_table: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The whole ``scaling sensitivity``: the steady-state probe, the one-at-a-time table
    (:func:`one_at_a_time`) and, with ``samples`` > 0, the Sobol indices (:func:`sobol_indices`)
    of every system and strategy the table holds, no job simulated twice. Returns (one-at-a-time
    table, Sobol table with ``system`` and ``strategy`` columns, or None without samples).

    ``on_table(name, frame)``: called with ``"sensitivity"`` and the one-at-a-time table as
    soon as it is done, then with ``"sobol"`` and the indices so far after each system and
    strategy (partial results: a long Sobol design stopped midway keeps what finished).
    Raises :class:`NoUncertainInput` when no input of the systems is uncertain."""
    memo = RunMemo()  # no job simulated twice in the command
    plans = plans_at(exp, at, executor, memo)  # the steady-state probe, once for every case
    oat = one_at_a_time(exp, at, metric, executor, only=only, plans=plans, memo=memo)
    if oat.empty:
        raise NoUncertainInput(f"{exp.config.name}: no uncertain input (every range is a point)")
    if on_table is not None:
        on_table("sensitivity", oat)
    tables: list[pd.DataFrame] = []
    pairs = oat[["system", "strategy"]].drop_duplicates().itertuples(index=False)
    for system, strat in pairs if samples else []:
        name = next(k for k, v in exp.systems.items() if v.spec.name == system)
        idx = sobol_indices(
            exp, at, metric, samples, seed, executor, name, strat, only, plans, memo
        )
        idx.insert(0, "strategy", strat)
        idx.insert(0, "system", system)
        tables.append(idx)
        if on_table is not None:
            on_table("sobol", pd.concat(tables, ignore_index=True))
    return oat, pd.concat(tables, ignore_index=True) if tables else None
