"""The run command's tables without pandas (scaling/io/rows.py, issue 29): every file and line
it writes must be the bytes pandas writes. Compared on real result tables (ok and refused rows)
and on edge values: float text at every magnitude, NaN/inf/-0.0, int columns with missing cells,
CSV quoting, unicode, bools, all-null columns, column order, ties in the efficiency summary."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scaling.app.api import run_experiment
from scaling.app.run_cmd import _descending
from scaling.io.results import (
    add_scaling_efficiency,
    efficiency_rows,
    results_cells,
    write_outputs,
)
from scaling.io.rows import Rows, pandas_version

MIXED = {  # dgx-a100 runs; the Enflame T20 cannot train: refused rows, int columns with NaN
    "name": "mixed",
    "model": "gpt3-125m",
    "systems": ["enflame-t20", "dgx-a100"],
    "nodes": [1, 2],
    "simulation": {"steps": 1, "warmup_steps": 1},
}

FLOATS = [
    0.0, -0.0, 1.0, -1.5, 0.1 + 0.2, 1 / 3, 1e-4, 1e-5, 1.2345e-5, 9.999e15, 1e16, 1.5e16,
    123456789012345678.0, 1e22, 1e300, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
    math.inf, -math.inf, math.nan, 10361320704.0, 44.00856399536133, 0.05068984529653658,
]  # fmt: skip


def _pandas_files(records: list[dict], folder: Path, resolved: dict, h: str) -> dict:
    """What the run command wrote before: the table built and written by pandas."""
    df = pd.DataFrame(records)
    if "tokens_per_s_per_device" not in df:
        df["tokens_per_s_per_device"] = float("nan")
    return write_outputs(folder, add_scaling_efficiency(df), resolved, h)


def _same_files(records: list[dict], tmp_path: Path) -> Rows:
    rows = efficiency_rows(records)
    assert rows.exact
    a = write_outputs(tmp_path / "rows", rows, {"x": 1}, "abc")
    b = _pandas_files(records, tmp_path / "pandas", {"x": 1}, "abc")
    for k in a:
        assert a[k].read_bytes() == b[k].read_bytes(), k
    assert pq.read_schema(a["parquet"]).equals(pq.read_schema(b["parquet"]), check_metadata=True)
    return rows


def test_real_results_are_written_byte_for_byte(tmp_path) -> None:
    res = run_experiment(MIXED)
    assert list(res.table["status"]) == ["refused", "refused", "ok", "ok"]  # refused row first
    rows = _same_files(res.records, tmp_path)
    assert rows.columns == list(res.table.columns)  # first-seen column order
    assert rows.kinds["tokens_per_step"] == "f"  # ints with missing cells: float64, as pandas
    assert rows.row_dicts()[2]["tokens_per_step"] == res.table["tokens_per_step"].iloc[2]
    assert results_cells(rows) == results_cells(res.table)
    csv = (tmp_path / "rows" / "results.csv").read_text()
    assert csv == res.table.assign().pipe(lambda d: d.insert(0, "config_hash", "abc") or d).to_csv(
        index=False
    )


def test_edge_values_are_written_byte_for_byte(tmp_path) -> None:
    strings = ["plain", "a,b", 'say "hi"', "two\nlines", "", "ünïcødé ✓", " lead", "x\r\ny"]
    records = []
    for i, f in enumerate(FLOATS):
        rec = {
            "system": strings[i % len(strings)],
            "model": "m",
            "strategy": "ddp" if i % 3 else "fsdp",
            "nodes": i + 1,
            "devices": (i % 4 + 1) * 8,
            "tokens_per_s_per_device": f if i % 5 and f != 0 else math.nan,
            "value": f,
            "flag": bool(i % 2),
            "big": 2**62 - i,
            "mfu": i,  # ints and bools in metric columns whose Parquet type is float64: cast
            "goodput": i % 3 == 0,
            "note": None,  # every cell None: an object column, empty in CSV, null in Parquet
            "status": "ok",
        }
        if i % 4:  # a missing int cell makes the column float64; a missing str cell NaN
            rec["sometimes"] = i
            rec["label"] = strings[i % len(strings)]
        records.append(rec)
    records.insert(0, {"late_first": 1.0, **records[0]})  # a column only the first row has
    rows = _same_files(records, tmp_path)
    assert rows.kinds["flag"] == "b" and rows.kinds["sometimes"] == "f"
    assert rows.to_csv() == pd.DataFrame(rows.row_dicts()).to_csv(index=False)
    eff = add_scaling_efficiency(pd.DataFrame(records))["scaling_efficiency"].to_numpy()
    np.testing.assert_array_equal(rows.data["scaling_efficiency"], eff)


def test_float_text_is_numpys_at_every_magnitude() -> None:
    rng = np.random.default_rng(0)
    vals = np.concatenate(
        [rng.standard_normal(2000) * 10.0 ** rng.integers(-320, 308, 2000), FLOATS]
    )
    records = [{"v": float(v)} for v in vals]
    assert Rows(records).to_csv() == pd.DataFrame(records).to_csv(index=False)


@pytest.mark.parametrize(
    "cells",
    [[1, None], [np.int64(1), 2], [True, 1], [1.0, "x"], [{"a": 1}, {"a": 2}], [None, "x"]],
    ids=["none", "numpy int", "bool and int", "mixed", "dict", "str and none"],
)
def test_what_it_cannot_mirror_falls_back_to_pandas(cells, tmp_path) -> None:
    records = [{"system": "s", "model": "m", "strategy": "x", "devices": 8, "c": c} for c in cells]
    rows = efficiency_rows(records)
    assert not rows.exact  # the run command then writes the DataFrame, as before
    with pytest.raises(ValueError, match="pass the DataFrame"):
        write_outputs(tmp_path, rows, {}, "h")


def test_descending_order_is_pandas_sort_values() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 7, 16, 17, 40):
        for _ in range(20):
            v = rng.choice([1.0, 0.5, 0.25, math.nan, 0.9], size=n)  # ties and NaN
            want = list(pd.Series(v).sort_values(ascending=False).index)
            assert _descending(v) == want, v


def test_pandas_version_read_without_importing_it() -> None:
    assert pandas_version() == pd.__version__


def _gap_summary_pandas(df: pd.DataFrame) -> list[str]:
    """The run command's summary as it was written with pandas (the oracle)."""
    top = df["nodes"].max()
    out: list[str] = []
    for strategy, g in df[df["nodes"] == top].groupby("strategy", sort=False):
        last = g.sort_values("scaling_efficiency", ascending=False)
        if len(last) < 2:
            continue
        best = last.iloc[0]
        out.append(
            f"At {top} nodes with {strategy}, scaling efficiency (1.000 = perfect weak scaling):"
        )
        for _, r in last.iterrows():
            gap = (r["scaling_efficiency"] - best["scaling_efficiency"]) * 100
            rel = (
                ""
                if r["system"] == best["system"]
                else f"  ({gap:+.1f} points vs {best['system']})"
            )
            out.append(f"  {r['system']:<12} {r['scaling_efficiency']:.3f}{rel}")
    return out


def test_gap_summary_is_the_pandas_one_with_ties_and_nan() -> None:
    from scaling.app.run_cmd import _gap_summary

    rng = np.random.default_rng(2)
    for _ in range(40):
        n = int(rng.integers(1, 30))
        records = [
            {
                "system": f"s{int(rng.integers(0, 6))}",
                "strategy": str(rng.choice(["ddp", "fsdp", "tp"])),
                "nodes": int(rng.choice([1, 8, 8])),
                "scaling_efficiency": float(rng.choice([1.0, 0.9, 0.9, 0.75, math.nan])),
            }
            for _ in range(n)
        ]
        want = _gap_summary_pandas(pd.DataFrame(records))
        assert _gap_summary(Rows(records).row_dicts()) == want
