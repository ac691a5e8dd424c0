"""Comparing a results table with a baseline, point by point and metric by metric.

A point is identified by :data:`~scaling.io.results.KEY_COLUMNS` (system, strategy, model, nodes).
A value passes when ``|result − baseline| ≤ atol + rtol·|baseline|`` (NumPy's ``isclose`` with
the baseline as reference); two NaNs, or two equal infinities, are equal. The comparison is one
array operation over every common point × metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scaling.io.errors import ConfigError
from scaling.io.results import KEY_COLUMNS, format_table

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

_VALUE_COLUMNS = ["metric", "baseline", "result", "abs_diff", "rel_diff", "ok"]


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


@dataclass(frozen=True)
class Comparison:
    """Per-point, per-metric differences between a results table and a baseline.

    ``values`` is long-form, point-major (each common point's metrics in ``metrics`` order): the
    key columns, ``metric``, ``baseline``, ``result``, ``abs_diff``, ``rel_diff`` (relative to the
    baseline, signed like ``result − baseline``) and ``ok``. ``only_in_results`` and
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
        """Rows (point, metric) beyond tolerance."""
        return self.values[~self.values["ok"].astype(bool)]

    @property
    def n_points(self) -> int:
        """Points compared."""
        return len(self.values.drop_duplicates(list(KEY_COLUMNS)))

    @property
    def failing_points(self) -> list[tuple[Any, ...]]:
        """Keys of the points with at least one metric beyond tolerance."""
        f = self.failures.drop_duplicates(list(KEY_COLUMNS))
        return [tuple(r) for r in f[list(KEY_COLUMNS)].itertuples(index=False)]

    @property
    def ok(self) -> bool:
        """Every compared value within tolerance."""
        missing = not self.allow_missing and (self.only_in_results or self.only_in_baseline)
        return bool(self.values["ok"].all()) and not missing

    def point_table(self) -> str:
        """Every common point, one row each: the relative difference of each metric
        (``*`` marks one beyond tolerance)."""
        v = self.values
        cells = [
            (_fmt_rel(r) if a != 0 else "0") + ("" if ok else " *")
            for r, a, ok in zip(v["rel_diff"], v["abs_diff"], v["ok"], strict=True)
        ]
        k = len(self.metrics)
        keys = v[list(KEY_COLUMNS)].iloc[::k] if k else v[list(KEY_COLUMNS)].iloc[:0]
        rows = [
            [str(x) for x in key] + cells[i * k : (i + 1) * k]
            for i, key in enumerate(keys.itertuples(index=False, name=None))
        ]
        return format_table([*KEY_COLUMNS, *self.metrics], rows, align="lll")

    def failure_table(self, limit: int | None = 60) -> str:
        """The values beyond tolerance: point, metric, both values and their difference."""
        f = self.failures
        header = [*KEY_COLUMNS, "metric", "baseline", "result", "difference", "relative"]
        diff = f["result"].to_numpy(float) - f["baseline"].to_numpy(float)
        rows = [
            [str(getattr(r, k)) for k in KEY_COLUMNS]
            + [
                r.metric,
                _fmt_value(r.baseline),
                _fmt_value(r.result),
                f"{d:+.4g}" if np.isfinite(r.abs_diff) else "nan",
                _fmt_rel(r.rel_diff),
            ]
            for r, d in zip(f.itertuples(index=False), diff, strict=True)
        ]
        more = ""
        if limit is not None and len(rows) > limit:
            more = f"\n... and {len(rows) - limit} more"
            rows = rows[:limit]
        return format_table(header, rows, align="lllll") + more

    def summary(self) -> str:
        """One line: how many points and the largest relative difference."""
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


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _numeric_metric(df: pd.DataFrame, m: str, side: str) -> None:
    if m not in df.columns:
        raise ConfigError(
            f"unknown metric {m!r}: not a column of the {side}; available: "
            + ", ".join(c for c in df.columns if c not in KEY_COLUMNS and _is_numeric(df[c]))
        )
    if not _is_numeric(df[m]):
        raise ConfigError(f"metric {m!r} is not numeric in the {side}")


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


def _differences(
    b: np.ndarray, v: np.ndarray, rtol: float, atol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Element-wise ``abs_diff``, signed ``rel_diff`` and ``ok`` of results ``v`` against
    baseline ``b`` (arrays of one shape)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        diff = np.abs(v - b)
        ok = diff <= atol + rtol * np.abs(b)  # False where either is NaN
        equal = (np.isnan(b) & np.isnan(v)) | (np.isinf(b) & (b == v))
        inf = np.isinf(b) | np.isinf(v)
        diff = np.where(equal, 0.0, np.where(inf, np.inf, diff))
        ok = np.where(equal, True, np.where(inf, False, ok))
        rel = np.where(diff == 0, 0.0, np.where(b != 0, diff / np.abs(b), np.inf))
        rel = np.where(v < b, -rel, rel)
    return diff, rel, ok.astype(bool)


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
    b = both[[f"{m}__b" for m in ms]].to_numpy(dtype=float)  # (points, metrics)
    v = both[[f"{m}__r" for m in ms]].to_numpy(dtype=float)
    diff, rel, ok = _differences(b, v, rtol, atol)
    k = len(ms)
    values = pd.DataFrame(
        {
            **{c: np.repeat(both[c].to_numpy(), k) for c in keys},
            "metric": np.tile(np.array(ms, dtype=object), len(both)),
            "baseline": b.ravel(),
            "result": v.ravel(),
            "abs_diff": diff.ravel(),
            "rel_diff": rel.ravel(),
            "ok": ok.ravel(),
        },
        columns=[*keys, *_VALUE_COLUMNS],
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
