"""Results tables: RunResults → tidy DataFrame with derived cross-run metrics; CSV/Parquet out."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from scaling.io.errors import ConfigError
from scaling.model.analysis.metrics import RunResult, scaling_efficiency

#: Columns that identify a sweep run and its outcome (``scaling sweep`` tables); every other
#: column that is not a :class:`RunResult` field or ``scaling_efficiency`` is a sweep axis.
SWEEP_META_COLUMNS = ("config_hash", "point", "status", "error")

#: A run's cross-run baseline group: efficiency compares runs of one system, model and strategy.
EFFICIENCY_GROUP = ("system", "model", "strategy")


def add_scaling_efficiency(df: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Add ``scaling_efficiency`` to a table of runs, in place, and return it.

    Each run is compared with the run with the fewest devices in its group — same system, model
    and strategy, plus the columns ``by`` (a sweep's point). Rows without a throughput (refused
    or failed sweep runs) get NaN and are never a baseline.
    """
    if df.empty:
        return df
    keys = [*by, *EFFICIENCY_GROUP]
    valid = df[df["tokens_per_s_per_device"].notna()]
    base: dict[tuple, float] = {}
    if not valid.empty:
        first = valid.loc[valid.groupby(keys, dropna=False)["devices"].idxmin()]
        base = dict(
            zip(
                first[keys].itertuples(index=False, name=None),
                first["tokens_per_s_per_device"],
                strict=True,
            )
        )
    df["scaling_efficiency"] = [
        scaling_efficiency(t, base[k]) if pd.notna(t) and k in base else float("nan")
        for t, k in zip(
            df["tokens_per_s_per_device"], df[keys].itertuples(index=False, name=None), strict=True
        )
    ]
    return df


def results_frame(results: list[RunResult]) -> pd.DataFrame:
    """One row per run, plus ``scaling_efficiency`` relative to each system's smallest run."""
    return add_scaling_efficiency(pd.DataFrame([r.scalars() for r in results]))


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a results table: a ``.parquet`` or ``.csv`` file, or a ``scaling run``/``scaling
    sweep`` output folder holding ``results.parquet`` or ``results.csv``."""
    p = Path(path)
    if p.is_dir():
        found = [p / n for n in ("results.parquet", "results.csv") if (p / n).is_file()]
        if not found:
            raise ConfigError(f"{p}: no results.parquet or results.csv in this folder")
        p = found[0]
    if not p.exists():
        raise ConfigError(f"{p}: no such file (results .parquet/.csv or an output folder expected)")
    try:
        if p.suffix == ".parquet":
            df = pd.read_parquet(p)
        elif p.suffix == ".csv":
            df = pd.read_csv(p)
        else:
            raise ConfigError(f"{p}: expected a .parquet or .csv results file")
    except ConfigError:
        raise
    except Exception as e:  # pyarrow / parser errors: unreadable input
        raise ConfigError(f"{p}: cannot read results: {type(e).__name__}: {e}") from None
    needed = {"system", "strategy", "devices", "tokens_per_s_per_device"}
    missing = sorted(needed - set(df.columns))
    if missing:
        raise ConfigError(f"{p}: not a results table (no column {', '.join(missing)})")
    return df


def write_outputs(
    out_dir: Path, df: pd.DataFrame, resolved: dict[str, Any], config_hash: str
) -> dict[str, Path]:
    """Write results CSV and the resolved config (with its hash) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"results": out_dir / "results.csv", "config": out_dir / "resolved_config.yaml"}
    frame = df.copy()
    frame.insert(0, "config_hash", config_hash)
    frame.to_csv(paths["results"], index=False)
    with paths["config"].open("w") as fh:
        fh.write(f"# resolved config; hash {config_hash}\n")
        yaml.safe_dump(
            {"config_hash": config_hash, **json.loads(json.dumps(resolved))}, fh, sort_keys=False
        )
    return paths


def _cell(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def _short_axis(col: str) -> str:
    return col.removeprefix("axis.").rsplit(".", 1)[-1]


def format_results_table(df: Any, axes: Sequence[str] = ()) -> str:
    """A results table as aligned text: axis values, identity, headline metrics, status."""
    cols = [(a, _short_axis(a), "{:g}" if df[a].dtype.kind == "f" else "{}") for a in axes]
    cols += [
        ("system", "system", "{}"),
        ("strategy", "strategy", "{}"),
        ("nodes", "nodes", "{:d}"),
        ("devices", "accel", "{:d}"),
        ("step_time_s", "step (s)", "{:.4f}"),
        ("tokens_per_s_per_device", "tok/s/accel", "{:,.0f}"),
        ("scaling_efficiency", "scaling eff", "{:.3f}"),
        ("exposed_comm_share", "exposed comm", "{:.1%}"),
        ("mfu", "MFU", "{:.1%}"),
        ("status", "status", "{}"),
    ]
    cols = [c for c in cols if c[0] in df.columns]
    rows = [[h for _, h, _ in cols]]
    for rec in df.to_dict("records"):
        rows.append([_cell(rec[c], fmt) for c, _, fmt in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    text_cols = {"system", "strategy", "status"} | {
        a for a in axes if df[a].dtype.kind not in "iuf"
    }
    lines = []
    for k, row in enumerate(rows):
        lines.append(
            "  ".join(
                v.ljust(w) if c in text_cols else v.rjust(w)
                for v, w, (c, _, _) in zip(row, widths, cols, strict=True)
            ).rstrip()
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
