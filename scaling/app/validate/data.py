"""The data of ``scaling validate``, all in CSV: each study's metric, source, tolerance and notes
(scaling/data/validation/studies.csv), the study inputs (which multi-node busbw rows to simulate
at which node count, the MPT shapes, the compute calibration points), and the published figures,
read from the package's reference copies (scaling/data/reference/) — none is typed in Python."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from scaling.app.validate.report import Point, StudyResult
from scaling.io.reference import reference_rows
from scaling.model.hardware.system import DeviceSpec

#: Device overrides by system name (the fit tool times candidate constants with these).
DeviceOverrides = Mapping[str, DeviceSpec]

VALIDATION_DIR = Path(__file__).resolve().parents[2] / "data" / "validation"

#: reference/training_scaling.csv: the study of Megatron-LM SC'21 Table 1's rows, and of the
#: FlashAttention-2 GPT3-1.3B row
MEGATRON_STUDY = "Megatron-LM weak scaling (SC'21 Table 1)"
FA2_STUDY = "FlashAttention-2 GPT-3 training (Table 1)"


def _rows(name: str) -> list[dict[str, str]]:
    with open(VALIDATION_DIR / name, newline="") as f:
        return list(csv.DictReader(f))


def _float_or_none(text: str) -> float | None:
    return float(text) if text else None


@dataclass(frozen=True, slots=True)
class StudySpec:
    """One row of studies.csv: what a study result reports and the tolerance it is judged by
    (fractions; ``None``: no such bound). An empty ``source`` means the compared reference rows'
    own source."""

    name: str
    group: str
    metric: str
    source: str
    max_mape: float | None
    max_point_error: float | None
    note: str
    known_miss: str


@cache
def study_specs() -> dict[str, StudySpec]:
    """Every study result's declaration, by name, in report order (studies.csv)."""
    return {
        r["study"]: StudySpec(
            r["study"],
            r["group"],
            r["metric"],
            r["source"],
            _float_or_none(r["max_mape"]),
            _float_or_none(r["max_point_error"]),
            r["note"],
            r["known_miss"],
        )
        for r in _rows("studies.csv")
    }


def result(name: str, points: tuple[Point, ...], source: str = "") -> StudyResult:
    """The study result ``name`` of studies.csv with ``points``; ``source``: the reference
    rows' source, used where the declaration names none."""
    s = study_specs()[name]
    return StudyResult(
        name,
        s.group,
        s.metric,
        s.source or source,
        points,
        max_mape=s.max_mape,
        max_point_error=s.max_point_error,
        note=s.note,
        known_miss=s.known_miss,
    )


@dataclass(frozen=True, slots=True)
class PlateauPoint:
    """One multi-node busbw point: what to simulate and the published busbw (GB/s) it is
    compared with (the row ``dataset``/``reference_system`` of reference/nccl_busbw.csv)."""

    label: str
    system: str
    nodes: int
    nics: int | None
    algorithm: str | None
    msg_bytes: int
    measured: float


def nccl_plateaus() -> list[PlateauPoint]:
    """The large-message busbw points (nccl_plateaus.csv), each with its reference figure."""
    ref = {(r["dataset"], r["system"]): r for r in reference_rows("nccl_busbw.csv")}
    out = []
    for r in _rows("nccl_plateaus.csv"):
        measured = ref[(r["dataset"], r["reference_system"])]["busbw_GBps"]
        out.append(
            PlateauPoint(
                r["label"],
                r["system"],
                int(r["nodes"]),
                int(r["nics"]) if r["nics"] else None,
                r["algorithm"] or None,
                int(r["msg_bytes"]),
                float(measured),
            )
        )
    return out


def mpt_shapes() -> dict[str, tuple[int, int, int, int]]:
    """MPT model → (layers, width, heads, vocabulary) as benchmarked (mpt_shapes.csv)."""
    return {
        r["model"]: (int(r["n_layers"]), int(r["hidden"]), int(r["heads"]), int(r["vocab"]))
        for r in _rows("mpt_shapes.csv")
    }


def compute_calibration() -> dict[str, tuple[tuple[str, int], ...]]:
    """System → its compute calibration points (MPT model, sequence length), single node
    (compute_calibration.csv)."""
    out: dict[str, tuple[tuple[str, int], ...]] = {}
    for r in _rows("compute_calibration.csv"):
        out[r["system"]] = (*out.get(r["system"], ()), (r["model"], int(r["seq_len"])))
    return out


_MODEL = re.compile(r"h=(\d+), L=(\d+), (\d+) heads")
_PARALLEL = re.compile(r"^(?:(\d+) x (\d+)|model-parallel size (1)) \(TP x PP\)$")


def megatron_table1() -> tuple[tuple[float, ...], ...]:
    """SC'21 Table 1 from reference/training_scaling.csv, one tuple per row: params (B), heads,
    hidden, layers, TP, PP, GPUs, global batch, achieved TFLOP/s per GPU."""
    out = []
    for r in reference_rows("training_scaling.csv"):
        if r["study"] != MEGATRON_STUDY:
            continue
        shape, par = _MODEL.search(r["model"]), _PARALLEL.match(r["TP"])
        if shape is None or par is None:
            raise ValueError(
                f"reference/training_scaling.csv: {r['model']!r}, TP {r['TP']!r}: expected "
                "'(h=H, L=L, N heads)' and 'T x P (TP x PP)'"
            )
        h, layers, heads = (float(x) for x in shape.groups())
        tp, pp = (float(par[1]), float(par[2])) if par[1] else (1.0, 1.0)
        row = (float(r["params_B"]), heads, h, layers, tp, pp, float(r["n_accel"]))
        out.append((*row, float(r["global_batch"]), float(r["value"])))
    return tuple(out)


def fa2_gpt3_measured() -> float:
    """FlashAttention-2 Table 1: GPT3-1.3B's TFLOP/s per GPU (reference/training_scaling.csv)."""
    (value,) = (
        r["value"] for r in reference_rows("training_scaling.csv") if r["study"] == FA2_STUDY
    )
    return float(value)


@dataclass(frozen=True, slots=True)
class ScalingRun:
    """One FSDP weak-scaling comparison (fsdp_scaling.csv): what to simulate at two node counts
    and the published per-GPU ratio (high / low) it is compared with, from its reference row."""

    study: str
    label: str
    system: str
    model: str
    target_len: int
    micro_batch: int
    seq_len: int
    checkpointing: str
    flash_attention: bool
    param_dtype: str
    reduce_dtype: str
    nodes: tuple[int, int]
    device_speed_cv: float
    seeds: int
    measured_ratio: float
    source: str


def fsdp_scaling_runs() -> list[ScalingRun]:
    """The FSDP scaling comparisons, each with its published ratio: the reference row's
    per-GPU change (%) from the low to the high GPU count, as ``1 + change / 100``."""
    ref = {(r["study"], r["metric"]): r for r in reference_rows("training_scaling.csv")}
    out = []
    for r in _rows("fsdp_scaling.csv"):
        change = float(ref[(r["reference_study"], r["reference_metric"])]["value"])
        out.append(
            ScalingRun(
                r["study"],
                r["label"],
                r["system"],
                r["model"],
                int(r["target_len"]),
                int(r["micro_batch"]),
                int(r["seq_len"]),
                r["checkpointing"],
                r["flash_attention"] == "true",
                r["param_dtype"],
                r["reduce_dtype"],
                (int(r["nodes_low"]), int(r["nodes_high"])),
                float(r["device_speed_cv"]),
                int(r["seeds"]),
                1.0 + change / 100.0,
                ref[(r["reference_study"], r["reference_metric"])]["source"],
            )
        )
    return out
