"""Write a fitted collective library profile as a library YAML the catalog loads.

Each fitted number becomes ``confidence: calibrated`` with the table's provenance in ``source``
(file, sha256, rows, lines) and its fit interval as ``low``/``high`` (so ``scaling run
--uncertainty`` samples the calibrated range); numbers the table could not identify keep their
value, confidence and range, and the file's header comment says what would identify them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from scaling.io.benchmark_tables import BenchmarkTable
from scaling.io.files import atomic_write
from scaling.io.topology import AlternativeSchema, LibrarySchema, apply_alternative
from scaling.model.calibration.fit import CONFIDENCE, Calibration, CandidateFit, ParamFit


def _quantity(p: ParamFit, value: float, low: float, high: float, source: str) -> dict[str, Any]:
    return {
        "value": round(value, 6),
        "source": source,
        "confidence": "calibrated",
        "note": (
            f"least squares on log time through the simulator's collective cost; {CONFIDENCE:.0%} "
            f"interval from the fit's Jacobian {low:.4g}-{high:.4g} {p.unit}; the profile said "
            f"{p.prior:.4g} before"
        ),
        "low": round(min(low, value), 6),
        "high": round(max(high, value), 6),
    }


def _set(doc: dict[str, Any], p: ParamFit, source: str) -> None:
    """Write the fitted ``p`` into the library dump ``doc``; a latency of a library with
    protocols shifts every protocol's figure by the fitted change."""
    keys = p.path.split(".")
    protos = doc.get("protocols") or []
    if p.unit == "us" and protos and keys[0] in ("call_latency_us", "step_latency_us"):
        d, dlo, dhi = p.value - p.prior, p.low - p.prior, p.high - p.prior
        for proto in protos:
            node = proto
            for k in keys[:-1]:
                node = node[k]
            old = float(node[keys[-1]]["value"])
            node[keys[-1]] = _quantity(
                p, max(old + d, 0.0), max(old + dlo, 0.0), max(old + dhi, 0.0), source
            )
        return
    node = doc
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = _quantity(p, p.value, p.low, p.high, source)


def profile_document(
    library: LibrarySchema, cal: Calibration, table: BenchmarkTable
) -> tuple[dict[str, Any], CandidateFit]:
    """The calibrated library document and the fit it was written from (``cal.final``: the
    structure the table supports, or the nominal one with its alternatives kept, still
    undecided)."""
    fit = cal.final
    doc = json.loads(library.model_dump_json(exclude_none=True))
    if fit.name != "nominal":
        alt: AlternativeSchema = next(a for a in library.alternatives if a.name == fit.name)
        doc = apply_alternative(doc, alt, "library")
    elif cal.decided and len(cal.candidates) > 1:
        doc.pop("alternatives", None)  # the table ruled them out
    a, b = table.line_span
    source = (
        f"scaling calibrate: {table.layout} table {Path(table.path).name} (sha256 "
        f"{table.sha256[:16]}, {len(table.rows)} rows, lines {a}-{b}); structure {fit.name!r}"
    )
    for p in fit.fitted:
        _set(doc, p, source)
    doc["name"] = f"{library.name}-calibrated"
    doc["version"] = f"{library.version} calibrated".strip()
    doc["description"] = (
        f"{library.description} — calibrated by scaling calibrate on {Path(table.path).name}"
    ).strip(" —")
    try:
        LibrarySchema.model_validate(doc)
    except ValidationError as e:  # a fit must never write a file the catalog refuses
        err = e.errors()[0]
        at = ".".join(str(x) for x in err["loc"])
        raise AssertionError(f"calibrated profile invalid at {at}: {err['msg']}") from None
    return doc, fit


def header_comment(cal: Calibration, fit: CandidateFit, table: BenchmarkTable) -> str:
    """The provenance and the fit's summary as YAML comment lines."""
    a, b = table.line_span
    lines = [
        f"Calibrated by `scaling calibrate` from {table.path}",
        f"  layout {table.layout}, sha256 {table.sha256}, {len(table.rows)} rows (lines {a}-{b})",
        f"  structure {fit.name!r}; log-time rms {fit.rms:.3f}",
    ]
    for c in cal.candidates:
        lines.append(f"  candidate {c.name}: rms {c.rms:.3f}, AICc {c.aicc:.1f}")
    if not cal.decided:
        lines.append("  the table does not decide between the structures: alternatives kept")
    for p in fit.params:
        if not p.identified:
            lines.append(f"  {p.path}: kept at {p.prior:g} — {p.why}")
    return "".join(f"# {ln}\n" for ln in lines)


def write_profile(path: Path, doc: dict[str, Any], header: str) -> None:
    """Write the profile YAML (atomically) with its header comment."""
    text = header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)
