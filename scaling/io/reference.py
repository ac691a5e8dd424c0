"""The published measurements bundled with the package (copied from shared/reference with their
sources), for calibration and validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "reference"


def nccl_busbw() -> pd.DataFrame:
    """nccl-tests results (reference/nccl_busbw.csv); ``msg_bytes`` numeric where it is a size."""
    df = pd.read_csv(REFERENCE_DIR / "nccl_busbw.csv", dtype=str)
    for col in ("gpus", "nodes", "gpus_per_node", "msg_bytes", "algbw_GBps", "busbw_GBps"):
        df[col + "_num"] = pd.to_numeric(df[col], errors="coerce")
    return df


def training_scaling() -> pd.DataFrame:
    """End-to-end training results (reference/training_scaling.csv)."""
    return pd.read_csv(REFERENCE_DIR / "training_scaling.csv")


def mpt_benchmarks() -> pd.DataFrame:
    """MosaicML MPT training benchmark rows, A100-80GB and H100-80GB BF16
    (reference/mpt_benchmarks.csv, from mosaicml/llm-foundry scripts/train/benchmarking)."""
    return pd.read_csv(REFERENCE_DIR / "mpt_benchmarks.csv")


def ascend_training() -> pd.DataFrame:
    """Published Ascend 910B (Atlas 800T A2) training rows (reference/ascend_training.csv)."""
    return pd.read_csv(REFERENCE_DIR / "ascend_training.csv")
