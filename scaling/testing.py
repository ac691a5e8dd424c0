"""Test helpers for users' own suites: regression checks on scaling curves.

.. code-block:: python

    from scaling.testing import assert_scaling_curve_matches

    def test_my_cluster_curve():
        assert_scaling_curve_matches("configs/my-cluster.yaml", "tests/golden/my-cluster")

A baseline is a folder written by ``scaling baseline update`` (or ``scaling run``), a results
CSV/Parquet file, or a DataFrame. On failure the helpers raise :class:`AssertionError` with a
table naming every point and metric beyond tolerance and both values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from scaling.golden import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    UPDATE_COMMAND,
    Comparison,
    GoldenRun,
    Invariants,
    check_invariants,
    compare_frames,
    curve_names,
    input_differences,
    load_baseline,
    load_invariants,
    point_name,
    run_golden,
)
from scaling.io.config import LoadedExperiment
from scaling.io.results import read_results

__all__ = ["assert_scaling_curve_matches", "assert_scaling_invariants", "curve_of"]

_RESULTS_SUFFIXES = (".csv", ".parquet", ".pq")


def curve_of(config_or_results: Any) -> GoldenRun | pd.DataFrame:
    """A results table to check: run a config (path to a YAML file, mapping or loaded
    experiment; refused points are recorded, not fatal), take an ``ExperimentResult``'s table, or
    read a results file/folder. Returns a :class:`GoldenRun` when it ran the model."""
    from scaling.app.api import ExperimentResult

    x = config_or_results
    if isinstance(x, GoldenRun | pd.DataFrame):
        return x
    if isinstance(x, ExperimentResult):
        return GoldenRun(x.experiment.config.name, x.table, (), x.experiment.inputs(), x.experiment)
    if isinstance(x, str | Path):
        p = Path(x)
        if p.is_dir() or p.suffix.lower() in _RESULTS_SUFFIXES:
            return read_results(p, "results")
        return run_golden(p)
    if isinstance(x, dict | LoadedExperiment):
        return run_golden(x)
    raise TypeError(
        "config_or_results: expected a config path, mapping or LoadedExperiment, an "
        f"ExperimentResult, a results path or a DataFrame; got {type(x).__name__}"
    )


def assert_scaling_curve_matches(
    config_or_results: Any,
    baseline: str | Path | pd.DataFrame,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    metrics: str | list[str] | tuple[str, ...] | None = None,
) -> Comparison:
    """Assert that a scaling curve matches its baseline, point by point.

    Args:
        config_or_results: an experiment config (path to a YAML file, a mapping or a
            ``LoadedExperiment``: it is run now), an ``ExperimentResult`` from
            ``run_experiment``, a results file/folder, or a DataFrame.
        baseline: a baseline folder (``tests/golden/<name>``), a results CSV/Parquet file, or a
            DataFrame.
        rtol, atol: a value passes when ``|result − baseline| ≤ atol + rtol·|baseline|``.
        metrics: metric columns to compare (list or ``"a,b"``); default
            :data:`scaling.golden.DEFAULT_METRICS`.

    Every point of the baseline must be in the results and vice versa (a point the model now
    refuses, or one it used to refuse, is a difference). Returns the :class:`Comparison` when all
    match; raises :class:`AssertionError` naming the points, metrics and both values otherwise;
    bad input (missing file, unknown metric, no common points) raises ``ConfigError``.
    """
    __tracebackhide__ = True
    curve = curve_of(config_or_results)
    run = curve if isinstance(curve, GoldenRun) else None
    table = run.table if run is not None else curve
    base = load_baseline(baseline)
    cmp = compare_frames(table, base.table, metrics, rtol, atol)
    if cmp.ok:
        return cmp
    where = f" {base.path}" if base.path is not None else ""
    lines = [f"scaling curve differs from baseline{where}: {cmp.summary()}"]
    if cmp.failing_points:
        lines.append("affected points: " + "; ".join(point_name(k) for k in cmp.failing_points))
        lines.append(cmp.failure_table())
    refused_now = {}
    if run is not None:
        for r in run.refused:
            for n in r.nodes:
                refused_now[(r.system, r.strategy, n)] = r.reason
    if cmp.only_in_baseline:
        lines.append("points in the baseline that the run does not have:")
        refused = [k for k in cmp.only_in_baseline if (k[0], k[1], k[3]) in refused_now]
        absent = [k for k in cmp.only_in_baseline if k not in refused]
        lines += [f"  {c}" for c in curve_names(absent)]
        lines += [
            f"  {point_name(k)} (refused now: {refused_now[(k[0], k[1], k[3])]})" for k in refused
        ]
    if cmp.only_in_results:
        lines.append("points the run has that the baseline lacks:")
        was_refused = [k for k in cmp.only_in_results if base.refusal_of(k[0], k[1], k[3])]
        new = [k for k in cmp.only_in_results if k not in was_refused]
        lines += [f"  {c}" for c in curve_names(new)]
        lines += [
            f"  {point_name(k)} (refused in the baseline: {base.refusal_of(k[0], k[1], k[3])})"
            for k in was_refused
        ]
    if run is not None and base.inputs is not None:
        diffs = input_differences(run.inputs, base.inputs)
        if diffs:
            lines.append("note: the inputs differ from the baseline's (a changed input, not "
                         "necessarily a changed model):")  # fmt: skip
            lines += [f"  {d}" for d in diffs]
        else:
            lines.append(
                f"note: the inputs equal the baseline's (config hash {run.config_hash}), "
                "so the model changed; if that is intended, regenerate with "
                f"`{UPDATE_COMMAND}` and review the diff"
            )
    raise AssertionError("\n".join(lines))


def assert_scaling_invariants(
    config_or_results: Any, invariants: Invariants | str | Path | None = None
) -> None:
    """Assert :func:`scaling.golden.check_invariants` holds on a curve (a config is run; a
    baseline folder, results file, ``ExperimentResult`` or DataFrame is checked as is).

    ``invariants``: what the curve may deviate from the generic rules and must show — an
    :class:`~scaling.golden.Invariants`, or the path of an invariants YAML file such as
    ``configs/golden/invariants.yaml`` (FSDP's super-linear allowance, MLU370-X8 below DGX A100);
    default: the generic rules alone (efficiency finite, in (0, 1] and non-increasing).
    """
    __tracebackhide__ = True
    curve = curve_of(config_or_results)
    table = curve.table if isinstance(curve, GoldenRun) else curve
    inv = load_invariants(invariants) if isinstance(invariants, str | Path) else invariants
    bad = check_invariants(table, inv)
    if bad:
        raise AssertionError(
            "scaling-curve invariants violated:\n" + "\n".join(f"  {b}" for b in bad)
        )
