"""Public API: ``simulate`` one point, ``run_experiment`` all points of an experiment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from scaling.io.config import LoadedExperiment, as_experiment
from scaling.io.errors import ConfigError
from scaling.io.results import results_frame
from scaling.model.analysis.metrics import RunResult
from scaling.model.job import InfeasibleJobError, Job
from scaling.model.simulation import check_feasible, run_job


def simulate(
    config: Job | LoadedExperiment | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
) -> RunResult:
    """Simulate one training job and return its steady-state metrics.

    ``config`` is a :class:`Job`, an experiment (file path, mapping or loaded) with exactly one
    system and one node count, plus optional ``--set``-style overrides. Same config and seed give
    bit-identical results. Raises :class:`InfeasibleJobError` for a job that cannot run.
    """
    if isinstance(config, Job):
        return run_job(config)
    jobs = as_experiment(config, overrides).jobs()
    if len(jobs) != 1:
        raise ConfigError(
            f"simulate() runs one point but the config expands to {len(jobs)} "
            "(systems × nodes); use run_experiment() or narrow it with overrides"
        )
    return run_job(jobs[0])


@dataclass(frozen=True)
class ExperimentResult:
    """All points of an experiment: per-run results and the tidy table."""

    experiment: LoadedExperiment
    runs: list[RunResult]
    table: pd.DataFrame


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


def run_experiment(
    config: LoadedExperiment | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
    progress: bool = False,
) -> ExperimentResult:
    """Run every (system, nodes) point; refuses the whole experiment if any point is infeasible."""
    exp = as_experiment(config, overrides)
    errs = feasibility_errors(exp)
    if errs:
        raise InfeasibleJobError("; ".join(errs))
    jobs = exp.jobs()
    it = jobs
    if progress:
        from tqdm import tqdm

        it = tqdm(jobs, desc="simulating", unit="run", leave=False)
    runs = [run_job(j) for j in it]
    return ExperimentResult(exp, runs, results_frame(runs))
