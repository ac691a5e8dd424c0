"""Results tables: RunResults → tidy DataFrame with derived cross-run metrics; CSV/Parquet out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from scaling.model.metrics import scaling_efficiency
from scaling.model.simulation import RunResult


def results_frame(results: list[RunResult]) -> pd.DataFrame:
    """One row per run, plus ``scaling_efficiency`` relative to each system's smallest run."""
    df = pd.DataFrame([r.scalars() for r in results])
    if df.empty:
        return df
    base = df.loc[df.groupby(["system", "model", "strategy"])["devices"].idxmin()]
    base = base.set_index(["system", "model", "strategy"])["tokens_per_s_per_device"]
    keys = list(zip(df["system"], df["model"], df["strategy"], strict=True))
    df["scaling_efficiency"] = [
        scaling_efficiency(t, base[k])
        for t, k in zip(df["tokens_per_s_per_device"], keys, strict=True)
    ]
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
