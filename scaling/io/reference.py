"""The published measurements bundled with the package (copied from shared/reference with their
sources), for calibration and validation."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING

from scaling.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")

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


# ---- whose hardware a reference row measured ----------------------------------------------

#: words that name a vendor's hardware or software in a device name, a source or a row
VENDOR_TOKENS: dict[str, tuple[str, ...]] = {
    "NVIDIA": (
        "nvidia",
        "a100",
        "a800",
        "h100",
        "h200",
        "h20",
        "h800",
        "v100",
        "b200",
        "gb200",
        "gh200",
        "dgx",
        "hgx",
        "nccl",
        "nvlink",
        "nvswitch",
        "selene",
        "gtc",
    ),
    "Cambricon": ("cambricon", "mlu", "cncl", "bang"),
    "Huawei": ("huawei", "ascend", "910b", "atlas", "hccl", "hccs", "hiascend"),
    "Biren": ("biren", "br100", "bccl", "blink"),
    "Moore Threads": ("moore threads", "mthreads", "mtt", "mccl", "mtlink"),
    "Enflame": ("enflame", "eccl", "gcu", "dtu"),
    "AMD": ("amd", "mi300", "rccl"),
    "Intel": ("intel", "gaudi"),
}
#: vendor-neutral rows: interconnect standards any system's NICs or slots follow
NEUTRAL_VENDORS = frozenset({"IBTA/NVIDIA", "PCI-SIG", "AWS"})
#: reference files whose every row is one vendor's hardware (NCCL runs on NVIDIA GPUs only)
FILE_VENDOR: dict[str, str] = {
    "nccl_busbw.csv": "NVIDIA",
    "nccl_tuning_constants.csv": "NVIDIA",
    "deepep_bandwidth.csv": "NVIDIA",
    "mpt_benchmarks.csv": "NVIDIA",
    "failures_goodput.csv": "NVIDIA",
    "ascend_training.csv": "Huawei",
    "cambricon_cncl_evidence.csv": "Cambricon",
    "cambricon_compute_constants.csv": "Cambricon",
    "huawei_hccl_algorithms.csv": "Huawei",
}
_CITE = re.compile(r"reference/([A-Za-z0-9_]+\.csv)")


def vendors_named(text: str) -> set[str]:
    """The vendors whose hardware or software ``text`` names (:data:`VENDOR_TOKENS`, whole
    words, case-insensitive)."""
    low = text.lower()
    return {
        v
        for v, toks in VENDOR_TOKENS.items()
        if any(re.search(rf"(?<![a-z0-9]){re.escape(t)}(?![a-z])", low) for t in toks)
    }


def row_vendor(file: str, row: dict[str, str]) -> str | None:
    """The vendor whose hardware a reference row measured or specifies; None for a
    vendor-neutral row (an interconnect standard) or one naming no vendor."""
    if file in FILE_VENDOR:
        return FILE_VENDOR[file]
    if "vendor" in row:
        v = row["vendor"]
        return None if v in NEUTRAL_VENDORS else v
    named = vendors_named(" ".join(str(row.get(k, "")) for k in ("accelerator", "system")))
    return next(iter(sorted(named))) if len(named) == 1 else None


def reference_rows(file: str) -> list[dict[str, str]]:
    """Every row of a bundled reference file as a dict of strings."""
    with open(REFERENCE_DIR / file, newline="") as f:
        return list(csv.DictReader(f))


def cited_vendors(source: str) -> set[str]:
    """The vendors whose hardware the reference rows cited by ``source`` measured: for a file
    of one vendor's rows, that vendor; for a file of several vendors' rows
    (``hardware_specs.csv``, ``training_scaling.csv``), the vendors of the rows whose vendor the
    source names. Vendor-neutral rows (PCIe, InfiniBand standards) count for none."""
    out: set[str] = set()
    for file in _CITE.findall(source):
        if file in FILE_VENDOR:
            out.add(FILE_VENDOR[file])
            continue
        if not (REFERENCE_DIR / file).is_file():
            continue
        present = {row_vendor(file, r) for r in reference_rows(file)} - {None}
        out |= vendors_named(source) & present
    return out
