"""Public API: ``simulate`` one point, ``run_experiment`` all points of an experiment,
``run_sweep`` a parameter sweep — for scripts and notebooks::

    from scaling import run_experiment, ConfigError, InfeasibleJobError
    res = run_experiment("configs/mlu-vs-gpu.yaml", {"nodes": [1, 8], "training.seq_len": 1024})
    res.table            # one row per point: status ok/refused, metrics, scaling_efficiency
    res.runs[0]          # a RunResult; res.runs[0].scalars() for every metric

Overrides are ``--set``-style strings (``["nodes=[1,8]"]``) or a mapping of paths to Python
values (``{"nodes": [1, 8]}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from scaling.io.config import LoadedExperiment, as_experiment
from scaling.io.errors import ConfigError
from scaling.io.results import add_scaling_efficiency, efficiency_rows, job_identity
from scaling.io.rows import Rows
from scaling.lazy import lazy_module
from scaling.model.analysis.metrics import RunResult
from scaling.model.job import InfeasibleJobError, Job
from scaling.model.simulation import check_feasible, run_job

if TYPE_CHECKING:
    import pandas as pd

    from scaling.sweep.budget import Budget
else:
    pd = lazy_module("pandas")  # tables only: simulate() and sweep workers skip its import

#: overrides: ``PATH=VALUE`` strings (as ``--set``) or a mapping of paths to Python values
Overrides = Iterable[str] | Mapping[str, Any] | None
#: the most one point may cost: a :class:`~scaling.sweep.budget.Budget`, ``"CPU_S[,GiB]"`` as
#: ``--budget`` takes it, CPU seconds, ``(cpu_s, GiB)``, or None for the default (60 CPU-s, 1 GiB)
BudgetLike: TypeAlias = "Budget | str | float | tuple[float, float] | None"


def as_budget(budget: BudgetLike) -> Budget:
    """The :class:`Budget` of any form :data:`BudgetLike` allows (``inf``: no limit); a bad one
    is a one-line :class:`ConfigError` naming ``budget``."""
    # imported here: scaling.sweep's package pulls in pandas, which simulate() avoids
    from scaling.sweep.budget import Budget, parse_budget

    if isinstance(budget, Budget):
        return budget
    text: str | None
    if budget is None or isinstance(budget, str):
        text = budget
    elif isinstance(budget, tuple | list):
        text = ",".join(map(str, budget))
    else:
        text = f"{budget!r}"
    try:
        return parse_budget(text)
    except ConfigError as e:  # the CLI's message names --budget; here it is an argument
        raise ConfigError(str(e).replace("--budget ", "budget=")) from None


def check_point_budget(jobs: list[Job], budget: BudgetLike, where: str) -> None:
    """Refuse, before simulating anything, the first of ``jobs`` whose estimated cost exceeds
    ``budget`` — the check ``scaling run`` makes (:mod:`scaling.sweep.budget`): one-line
    :class:`ConfigError` with the estimate and ``budget=`` to allow more."""
    from scaling.sweep.budget import check_budget

    try:
        check_budget(jobs, as_budget(budget), where)
    except ConfigError as e:
        raise ConfigError(str(e).replace("--budget CPU_S,GiB", "budget=(CPU_S, GiB)")) from None


def override_strings(overrides: Overrides) -> list[str]:
    """``--set``-style strings from either form of overrides. A mapping's values are written as
    JSON, which the override parser reads as YAML: ``{"nodes": [1, 8]}`` → ``nodes=[1, 8]``."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        out = []
        for k, v in overrides.items():
            try:
                out.append(f"{k}={json.dumps(v, allow_nan=False)}")
            except (TypeError, ValueError):
                raise ConfigError(
                    f"override {k}={v!r}: expected a number, string, bool, None, list or dict"
                ) from None
        return out
    return list(overrides)


def simulate(
    config: Job | LoadedExperiment | dict[str, Any] | str | Path,
    overrides: Overrides = None,
    systems: Mapping[str, Mapping[str, Any]] | None = None,
    budget: BudgetLike = None,
) -> RunResult:
    """Simulate one training job and return its steady-state metrics.

    ``config`` is a :class:`Job`, an experiment (file path, mapping or loaded) with exactly one
    system and one node count, plus optional overrides (``--set`` strings or a mapping). Same
    config and seed give bit-identical results. ``systems``: in-memory systems, topology
    documents by name (``{"my-cluster": {...}}``, the schema of ``topologies/*.yaml``;
    :func:`scaling.system_document` gives a catalog one to edit). Raises :class:`InfeasibleJobError` for a job
    that cannot run, :class:`ConfigError` for bad input — and for a point whose estimated cost
    exceeds ``budget`` (default 60 CPU-s and 1 GiB, as ``scaling run --budget``; ``"inf,inf"``:
    no limit), refused before anything is simulated.
    """
    if isinstance(config, Job):
        check_point_budget([config], budget, "simulate()")
        return run_job(config)
    jobs = as_experiment(config, override_strings(overrides), systems).jobs()
    if len(jobs) != 1:
        raise ConfigError(
            f"simulate() runs one point but the config expands to {len(jobs)} "
            "(systems × nodes); use run_experiment() or narrow it with overrides"
        )
    check_point_budget(jobs, budget, _where(config))
    return run_job(jobs[0])


def _where(config: object) -> str:
    """How a budget refusal names the config: its file, or the call."""
    return str(config) if isinstance(config, str | Path) else "experiment"


@dataclass(frozen=True)
class ExperimentResult:
    """All points of an experiment.

    Attributes:
        experiment: the loaded experiment.
        runs: a :class:`RunResult` per point that ran (refused points have none).
        records: one dict per point in the experiment's order (what :attr:`table` is built from).
        table: one row per point in the experiment's order: identity, ``status`` (``ok`` or
            ``refused``), ``error`` (why a point was refused), metrics and
            ``scaling_efficiency`` — NaN where a point has no such value (a DataFrame, built on
            first use: the CLI prints and writes :attr:`rows` without importing pandas).
    """

    experiment: LoadedExperiment
    runs: list[RunResult]
    records: list[dict[str, Any]] = field(repr=False)

    @cached_property
    def table(self) -> pd.DataFrame:  # noqa: D102 (documented above)
        table = pd.DataFrame(self.records)
        if "tokens_per_s_per_device" not in table:
            table["tokens_per_s_per_device"] = float("nan")
        return add_scaling_efficiency(table)

    @cached_property
    def rows(self) -> Rows:
        """:attr:`table` as :class:`~scaling.io.rows.Rows` (no pandas; when not
        :attr:`~scaling.io.rows.Rows.exact`, use :attr:`table`)."""
        return efficiency_rows(self.records)

    @property
    def ok(self) -> pd.DataFrame:
        """The rows of the points that ran."""
        return self.table[self.table["status"] == "ok"]

    @property
    def refused(self) -> pd.DataFrame:
        """The rows of the points that could not run, with the reason in ``error``."""
        return self.table[self.table["status"] == "refused"]

    def __repr__(self) -> str:
        n_ref = len(self.refused)
        systems = ", ".join(dict.fromkeys(self.table["system"])) if len(self.table) else "-"
        return (
            f"ExperimentResult({self.experiment.config.name}: {len(self.table)} point(s) on "
            f"{systems}; {len(self.runs)} ok, {n_ref} refused; .table for the metrics)"
        )


def feasibility_errors(exp: LoadedExperiment) -> list[str]:
    """One message per point that would be refused (out of memory, cannot train)."""
    errs: list[str] = []
    for job in exp.jobs():
        try:
            check_feasible(job)
        except InfeasibleJobError as e:
            if str(e) not in errs:  # memory per rank does not depend on the node count
                errs.append(str(e))
    return errs


def refusals(exp: LoadedExperiment) -> dict[int, str]:
    """Why each point that cannot run is refused, by its index in ``exp.jobs()``."""
    out: dict[int, str] = {}
    for i, job in enumerate(exp.jobs()):
        try:
            check_feasible(job)
        except InfeasibleJobError as e:
            out[i] = str(e)
    return out


def run_experiment(
    config: LoadedExperiment | dict[str, Any] | str | Path,
    overrides: Overrides = None,
    progress: bool = False,
    strict: bool = False,
    systems: Mapping[str, Mapping[str, Any]] | None = None,
    budget: BudgetLike = None,
) -> ExperimentResult:
    """Run every (system, nodes) point of an experiment.

    A point that cannot run (out of memory, a device that cannot train) is a ``refused`` row
    with its reason, as in a sweep; the others run. Raises :class:`InfeasibleJobError` before
    simulating anything when every point would be refused, or any with ``strict=True``.
    ``progress``: a bar (a widget in Jupyter) counting the simulated points; ``systems``:
    in-memory systems by name, as :func:`simulate`; ``budget``: the most one point may cost,
    estimated before anything is simulated (default 60 CPU-s and 1 GiB, as ``scaling run
    --budget``: ``"3600,32"``, ``(3600, 32)``, a :class:`~scaling.sweep.budget.Budget`;
    ``"inf,inf"`` for no limit) — a point beyond it raises :class:`ConfigError` with its
    estimate, and nothing runs.
    """
    exp = as_experiment(config, override_strings(overrides), systems)
    jobs = exp.jobs()
    check_point_budget(jobs, budget, _where(config))
    reasons = refusals(exp)
    if reasons and (strict or len(reasons) == len(jobs)):  # nothing to run, or asked to refuse
        raise InfeasibleJobError("; ".join(dict.fromkeys(reasons.values())))
    todo = [i for i in range(len(jobs)) if i not in reasons]
    from scaling.app.output import progress_bar

    it: Iterable[int] = progress_bar(todo, desc="simulating", enabled=bool(progress))
    done = {i: run_job(jobs[i]) for i in it}
    rows = []
    for i, job in enumerate(jobs):
        if i in done:
            rows.append({**done[i].scalars(), "status": "ok", "error": ""})
        else:
            rows.append({**job_identity(job), "status": "refused", "error": reasons[i]})
    return ExperimentResult(exp, [done[i] for i in todo], rows)


def run_sweep(
    spec: Any,
    out_dir: str | Path,
    overrides: Overrides = None,
    jobs: int | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`scaling.sweep.run_sweep` with overrides in either form and ``jobs`` worker
    processes (default: one per CPU; 1 = in this process) unless ``executor=`` is given;
    ``progress=True`` draws a bar with ETA. ``spec`` is a sweep file, a bundled example name
    or a mapping (``base`` experiment + ``axes``). Returns the sweep's table (also in
    ``out_dir/results.parquet``)."""
    from scaling.sweep import make_executor
    from scaling.sweep import run_sweep as _run_sweep

    kwargs.setdefault("progress", False)
    if "budget" in kwargs:  # any form run_experiment takes
        kwargs["budget"] = as_budget(kwargs["budget"])
    if isinstance(spec, str | Path):
        from scaling.io.examples import resolve_config

        spec = resolve_config(spec)  # a bundled example by name, as the CLI takes it
    if "executor" in kwargs:
        return _run_sweep(spec, out_dir, overrides=override_strings(overrides), **kwargs)
    with make_executor(jobs=jobs) as ex:
        return _run_sweep(spec, out_dir, ex, overrides=override_strings(overrides), **kwargs)
