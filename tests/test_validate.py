"""``scaling validate``: studies, calibration kept apart from validation, the catalog's compute
facts (no device inherits another's), the report files and the README's table."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaling.app import validate as v
from scaling.app.cli import main
from scaling.io.errors import ConfigError
from scaling.io.reference import mpt_benchmarks
from scaling.io.topology import available_systems, bundled_topology_dir, load_system

COMPUTE_FIELDS = ("compute_units", "sustained_matmul_fraction", "attention_efficiency")
README_START, README_END = "<!-- validation-table:start -->", "<!-- validation-table:end -->"


@pytest.fixture(scope="module")
def report() -> v.Report:
    # the whole validation, once (about 15 s on two cores)
    return v.run_validation()


# ---- the catalog: every device carries its own compute facts ------------------------------


def test_no_device_inherits_compute_facts_silently() -> None:
    systems = {n: load_system(n) for n in available_systems()}
    calibrated: dict[str, dict[str, float]] = {}
    for name, s in systems.items():
        dev = s.schema.device
        for f in COMPUTE_FIELDS:
            q = getattr(dev, f)
            if q.confidence == "calibrated":
                # a calibrated constant names its fit and this system has calibration points
                assert "tools/fit_compute.py" in q.source, (name, f)
                assert name in v.COMPUTE_CALIBRATION, (name, f)
                calibrated.setdefault(name, {})[f] = q.value
    # each device with calibration points has both in-loop constants fitted, on its own points
    assert set(calibrated) == set(v.COMPUTE_CALIBRATION)
    for name in calibrated:
        assert set(calibrated[name]) == {"sustained_matmul_fraction", "attention_efficiency"}
    # a value equal to another device's calibrated one is an assumption that says whose it is
    for name, s in systems.items():
        dev = s.schema.device
        for f in ("sustained_matmul_fraction", "attention_efficiency"):
            q = getattr(dev, f)
            if q.confidence == "calibrated":
                continue
            assert q.confidence == "assumption" and q.note, (name, f)
            for other, vals in calibrated.items():
                if other != name and vals.get(f) == q.value:
                    assert "A100" in q.note or other in q.note, (name, f, other)
    # compute-unit counts: each with its own provenance (no copied entry)
    units = [
        (s.schema.device.compute_units.source, s.schema.device.compute_units.note)
        for s in systems.values()
    ]
    assert len(set(units)) == len(units)
    assert systems["dgx-a100"].spec.device.compute_units == 108
    assert systems["dgx-h100"].spec.device.compute_units == 132


def test_a_device_without_compute_units_is_refused(tmp_path: Path) -> None:
    src = bundled_topology_dir() / "dgx-a100.yaml"
    text = src.read_text()
    text = re.sub(r"(?m)^  compute_units:.*\n", "", text)
    (tmp_path / "libraries").mkdir()
    shutil.copy(bundled_topology_dir() / "libraries" / "nccl.yaml", tmp_path / "libraries")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match="compute_units"):
        load_system(str(tmp_path / "bad.yaml"))


# ---- study mechanics ----------------------------------------------------------------------


def test_tolerance_applies_to_validation_points_else_to_all() -> None:
    cal, val = v.Point("a", 100.0, 150.0, True), v.Point("b", 100.0, 105.0, False)
    s = v.StudyResult("x", "compute", "m", "src", (cal, val), max_mape=0.10)
    assert s.mape_calibration == pytest.approx(0.5) and s.mape_validation == pytest.approx(0.05)
    assert s.status == "pass"  # the 50 % calibration miss is reported, not judged
    only_cal = v.StudyResult("y", "compute", "m", "src", (cal,), max_mape=0.10)
    assert only_cal.status == "FAIL" and only_cal.failures() == ["MAPE 50.0% > 10%"]
    each = v.StudyResult("z", "compute", "m", "src", (val,), max_point_error=0.04)
    assert each.status == "FAIL" and "b: error +5.0%" in each.failures()[0]
    assert v.StudyResult("i", "compute", "m", "src", (cal,)).status == "info"
    # a declared miss is reported as such and does not fail the run; once it passes, it must
    known = dataclasses.replace(only_cal, known_miss="why")
    assert known.status == "known miss" and v.Report([known]).ok
    healed = dataclasses.replace(each, max_point_error=0.5, known_miss="why")
    assert healed.status == "unexpected pass" and not v.Report([healed]).ok


def test_mpt_shapes_reproduce_the_benchmarks_parameter_counts() -> None:
    df = mpt_benchmarks()
    for _, r in df.iterrows():
        assert v.mpt_shape(r.model, int(r.seq_len)).params() == r.num_params, (r.model, r.seq_len)


def test_calibration_points_exist_and_are_few() -> None:
    for system, points in v.COMPUTE_CALIBRATION.items():
        rows = v.mpt_rows(system, single_node=True)
        keys = set(zip(rows.model, rows.seq_len, strict=True))
        assert set(points) <= keys
        assert len(points) <= len(keys) // 4  # most of the range is held out


# ---- the data: studies and figures in CSV, none typed in Python ---------------------------


def test_studies_csv_declares_exactly_the_studies_run() -> None:
    declared = list(v.study_specs())
    assert declared == [n for names, _ in v.STUDIES for n in names]  # the same, in report order
    for s in v.study_specs().values():
        assert s.group in ("collectives", "compute", "end-to-end") and s.metric, s.name
        assert s.max_mape is None or 0 < s.max_mape < 1, s.name


def test_published_figures_are_the_reference_rows() -> None:
    from scaling.app.validate.data import (
        FA2_STUDY,
        MEGATRON_STUDY,
        fa2_gpt3_measured,
        nccl_plateaus,
    )
    from scaling.io.reference import nccl_busbw, training_scaling

    ref = training_scaling()
    sc21 = ref[ref.study == MEGATRON_STUDY]
    assert len(v.MEGATRON_TABLE1) == len(sc21) == 10
    assert [r[-1] for r in v.MEGATRON_TABLE1] == sc21.value.astype(float).tolist()
    for row, dp in zip(v.MEGATRON_TABLE1, sc21.DP.astype(int), strict=True):
        params, heads, hidden, layers, tp, pp, gpus, batch, _ = row
        assert tp * pp * dp == gpus and hidden % heads == 0 and batch % dp == 0, params
        # the shape gives the table's parameter count by the paper's eq. (2), P = 12·l·h²·(1 +
        # 13/(12h) + (V + s)/(12·l·h)), to the table's rounding
        n = (
            12
            * layers
            * hidden**2
            * (1 + 13 / (12 * hidden) + (51200 + 2048) / (12 * layers * hidden))
        )
        assert n / 1e9 == pytest.approx(params, rel=0.04), params
    assert fa2_gpt3_measured() == float(ref[ref.study == FA2_STUDY].value.iloc[0]) == 196.0
    busbw = set(nccl_busbw().busbw_GBps_num.dropna())
    plateaus = nccl_plateaus()
    assert len({p.label for p in plateaus}) == len(plateaus) == 5
    assert all(p.measured in busbw for p in plateaus)


def test_a_reference_row_that_does_not_parse_is_one_error(monkeypatch) -> None:
    from scaling.app.validate import data

    bad = {"study": data.MEGATRON_STUDY, "model": "GPT 1.7B", "TP": "1 (TP x PP)"}
    monkeypatch.setattr(data, "reference_rows", lambda _: [bad])
    with pytest.raises(ValueError, match=r"training_scaling.csv: 'GPT 1.7B', TP '1 \(TP x PP\)'"):
        data.megatron_table1()


def test_no_measured_figure_is_a_literal_in_the_validate_package(report: v.Report) -> None:
    import ast

    import scaling.app.validate as pkg

    measured = {p.measured for s in report.studies for p in s.points}
    literals = set()
    for f in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float):
                literals.add(node.value)
    # powers of two are node counts and sizes (the 64-node curve, 8 GiB), not figures
    counts = {2**k for k in range(40)}
    assert len(measured) > 50 and 196.0 in measured  # the FA2 figure, read from its CSV
    assert not measured & (literals - counts)


# ---- the full report ------------------------------------------------------------------------


def test_compute_studies_meet_10_percent_on_held_out_points(report: v.Report) -> None:
    by = {s.name: s for s in report.studies}
    print()
    for name in ("compute-a100-mpt", "compute-h100-mpt"):
        s = by[name]
        print(
            f"{name}: calibration {len(s.calibration)} points MAPE {s.mape_calibration:.1%}, "
            f"validation {len(s.validation)} points MAPE {s.mape_validation:.1%}"
        )
        assert len(s.calibration) == 3 and len(s.validation) >= 10
        assert s.mape_validation is not None and s.mape_validation <= 0.10
        # the held-out points span the range: sizes 125M/760M–13B, sequences 2k–8k
        labels = " ".join(p.label for p in s.validation)
        for seq in ("2048", "4096", "8192"):
            assert f"s={seq}" in labels
        assert "MPT-13b" in labels and ("MPT-125m" in labels or name.endswith("h100-mpt"))


def test_every_study_reports_calibration_and_validation_apart(report: v.Report) -> None:
    text = v.format_text(report)
    for s in report.studies:
        assert f"== {s.name} " in text
    assert text.count("calibration: ") == len(report.studies)
    assert "calibration (fitted)" in text and "validation" in text
    df = v.points_frame(report)
    assert set(df.used_for) == {"calibration", "validation"}
    assert len(df) == sum(len(s.points) for s in report.studies)
    groups = {s.group for s in report.studies}
    assert groups == {"collectives", "compute", "end-to-end"}


def test_report_files_and_readme_table(report: v.Report, tmp_path: Path, repo: Path) -> None:
    md, csv = v.write_report(report, tmp_path)
    assert v.summary_table(report) in md.read_text()
    assert csv.read_text().count("\n") == len(v.points_frame(report)) + 1
    readme = (repo / "README.md").read_text()
    assert README_START in readme and README_END in readme
    inside = readme.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    assert inside == v.summary_table(report)


def test_cli_validate_selects_studies_and_exits_1_on_a_miss(monkeypatch, tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["validate", "--study", "nccl-multinode", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "nccl-multinode-plateaus" in res.output and "-> pass" in res.output
    assert (tmp_path / "validation.csv").is_file()

    def missing(_=None):
        return [v.StudyResult("bad", "compute", "m", "src", (v.Point("p", 1.0, 2.0, False),), 0.1)]

    monkeypatch.setattr(v, "STUDIES", ((("bad",), missing),))
    res = runner.invoke(main, ["validate"])
    assert res.exit_code == 1 and "FAIL" in res.output
    res = runner.invoke(main, ["validate", "--study", "nope"])
    assert res.exit_code == 2


def test_explain_shows_the_non_gemm_kernels(repo: Path) -> None:
    args = ["explain", str(repo / "configs" / "mlu-vs-gpu.yaml"), "--set", "systems=[dgx-a100]"]
    args += ["--set", "nodes=[1]", "--set", "strategies=null", "--top", "0"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    block = res.output.split("compute by kernel kind", 1)[1]
    for label in ("GEMMs", "attention (fused)", "layer norms", "cross-entropy (vocabulary)"):
        assert label in block
    ms = [float(x) for x in re.findall(r"(\d+\.\d+) ms", block)]
    fwd_bwd = re.findall(r"compute: (?:forward|backward)\s+(\d+\.\d+) ms", res.output)
    # the kinds add up to the step's forward + backward device time; the spans may be longer
    # only by the library's compute interference while collectives overlap (NCCL: 5 %)
    spans, rounding = sum(float(x) for x in fwd_bwd), 0.01 * (len(ms) + 2)
    assert spans / 1.05 - rounding <= sum(ms) <= spans + rounding
