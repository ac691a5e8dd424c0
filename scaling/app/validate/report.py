"""The results of ``scaling validate``: a study's compared points and declared tolerance, the
verdict, and the report as text, Markdown and CSV."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scaling.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")

from scaling.io.files import write_output, write_output_text


@dataclass(frozen=True, slots=True)
class Point:
    """One compared point: the published value, the model's, and whether it was fitted."""

    label: str
    measured: float
    model: float
    fitted: bool

    @property
    def error(self) -> float:
        """Relative error of the model, ``model / measured − 1``."""
        return self.model / self.measured - 1.0


@dataclass(frozen=True)
class StudyResult:
    """A study's points and its declared tolerance (fractions, e.g. 0.10 = 10 %)."""

    name: str
    group: str
    metric: str
    source: str
    points: tuple[Point, ...]
    max_mape: float | None = None
    max_point_error: float | None = None
    note: str = ""
    #: a miss we know of and have not fixed, with why: reported as ``known miss`` (it does not
    #: fail the run, like pytest's xfail); if the study starts to pass, the mark must go
    known_miss: str = ""

    @property
    def calibration(self) -> tuple[Point, ...]:
        """Points used to fit constants."""
        return tuple(p for p in self.points if p.fitted)

    @property
    def validation(self) -> tuple[Point, ...]:
        """Points held out from fitting."""
        return tuple(p for p in self.points if not p.fitted)

    @property
    def judged(self) -> tuple[Point, ...]:
        """The points the tolerance applies to: the validation points, or all when none is."""
        return self.validation or self.points

    @property
    def mape_calibration(self) -> float | None:
        """MAPE over the calibration points (None without any)."""
        return _mape(self.calibration)

    @property
    def mape_validation(self) -> float | None:
        """MAPE over the validation points (None without any)."""
        return _mape(self.validation)

    @property
    def status(self) -> str:
        """``pass``, ``FAIL``, ``known miss`` (a declared, explained miss), ``unexpected pass``
        (a declared miss that no longer misses: remove the mark) or ``info`` (no tolerance)."""
        if self.max_mape is None and self.max_point_error is None:
            return "info"
        if self.known_miss:
            return "known miss" if self.failures() else "unexpected pass"
        return "FAIL" if self.failures() else "pass"

    def failures(self) -> list[str]:
        """Why the study misses its tolerance (empty when it meets it)."""
        out: list[str] = []
        mape = _mape(self.judged)
        if self.max_mape is not None and mape is not None and mape > self.max_mape:
            out.append(f"MAPE {mape:.1%} > {self.max_mape:.0%}")
        if self.max_point_error is not None:
            for p in self.judged:
                if abs(p.error) > self.max_point_error:
                    out.append(f"{p.label}: error {p.error:+.1%} > ±{self.max_point_error:.0%}")
        return out


def _mape(points: tuple[Point, ...]) -> float | None:
    if not points:
        return None
    return sum(abs(p.error) for p in points) / len(points)


# ---- collectives ---------------------------------------------------------------------------


@dataclass
class Report:
    """All study results; ``ok`` when every study with a tolerance meets it."""

    studies: list[StudyResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No study failed and none passed unexpectedly."""
        return all(s.status not in ("FAIL", "unexpected pass") for s in self.studies)


def _pct(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.1%}"


def _tol(s: StudyResult) -> str:
    parts = []
    if s.max_mape is not None:
        parts.append(f"MAPE ≤ {s.max_mape:.0%}")
    if s.max_point_error is not None:
        parts.append(f"each ≤ {s.max_point_error:.0%}")
    return ", ".join(parts) or "none (info)"


def format_text(rep: Report) -> str:
    """Per study: the points, their errors, whether fitted; MAPE of calibration and validation
    points apart; the tolerance and the verdict."""
    lines: list[str] = []
    for s in rep.studies:
        lines.append(f"== {s.name} [{s.group}] {s.metric}")
        lines.append(f"   source: {s.source}")
        if s.note:
            lines.append(f"   note: {s.note}")
        w = max(len(p.label) for p in s.points)
        lines.append(f"   {'point':<{w}} {'measured':>11} {'model':>11} {'error':>8}  used for")
        for p in s.points:
            use = "calibration (fitted)" if p.fitted else "validation"
            lines.append(
                f"   {p.label:<{w}} {p.measured:>11,.2f} {p.model:>11,.2f} {p.error:>+8.1%}  {use}"
            )
        lines.append(
            f"   calibration: {len(s.calibration)} points, MAPE {_pct(s.mape_calibration)}   "
            f"validation: {len(s.validation)} points, MAPE {_pct(s.mape_validation)}   "
            f"tolerance: {_tol(s)}   -> {s.status}"
        )
        for f in s.failures():
            lines.append(f"   ! {f}")
        if s.known_miss:
            lines.append(f"   known miss: {s.known_miss}")
        lines.append("")
    count = {k: sum(s.status == k for s in rep.studies) for k in ("pass", "FAIL", "known miss")}
    lines.append(
        f"{len(rep.studies)} studies: {count['pass']} pass, {count['FAIL']} fail, "
        f"{count['known miss']} known miss, "
        f"{sum(s.status == 'info' for s in rep.studies)} for information"
    )
    return "\n".join(lines)


def summary_table(rep: Report) -> str:
    """The Markdown summary table (one row per study), as the README shows it."""
    head = (
        "| study | group | points (fitted / held out) | calibration MAPE | validation MAPE "
        "| tolerance | status |\n|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {s.name} | {s.group} | {len(s.calibration)} / {len(s.validation)} "
        f"| {_pct(s.mape_calibration)} | {_pct(s.mape_validation)} | {_tol(s)} | {s.status} |"
        for s in rep.studies
    ]
    return "\n".join([head, *rows])


def points_frame(rep: Report) -> pd.DataFrame:
    """Every point of every study as one tidy table (the CSV ``scaling validate`` writes)."""
    return pd.DataFrame(
        [
            {
                "study": s.name,
                "group": s.group,
                "metric": s.metric,
                "point": p.label,
                "measured": p.measured,
                "model": p.model,
                "error": p.error,
                "used_for": "calibration" if p.fitted else "validation",
                "source": s.source,
            }
            for s in rep.studies
            for p in s.points
        ]
    )


def markdown_report(rep: Report) -> str:
    """The full report: summary table, then each study's points."""
    out = ["# scaling validate", "", summary_table(rep), ""]
    for s in rep.studies:
        out += [f"## {s.name}", "", f"{s.metric}. Source: {s.source}.", ""]
        if s.note:
            out += [s.note + ".", ""]
        out += ["| point | measured | model | error | used for |", "|---|---|---|---|---|"]
        out += [
            f"| {p.label} | {p.measured:,.2f} | {p.model:,.2f} | {p.error:+.1%} | "
            f"{'calibration' if p.fitted else 'validation'} |"
            for p in s.points
        ]
        out += [
            "",
            f"Calibration MAPE {_pct(s.mape_calibration)} ({len(s.calibration)} points); "
            f"validation MAPE {_pct(s.mape_validation)} ({len(s.validation)} points); "
            f"tolerance {_tol(s)}: **{s.status}**.",
            "",
        ]
    return "\n".join(out)


def write_report(rep: Report, out_dir: Path) -> list[Path]:
    """Write ``validation.md`` and ``validation.csv`` under ``out_dir``."""
    md, csv = out_dir / "validation.md", out_dir / "validation.csv"
    write_output_text(md, markdown_report(rep))  # atomic, one-line errors (io.files)
    write_output(csv, lambda p: points_frame(rep).to_csv(p, index=False))
    return [md, csv]
