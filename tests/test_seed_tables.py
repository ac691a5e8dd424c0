"""The seed scenario's tables (shared/SEED.md) side by side with the model.

What is reproduced (asserted): Table 1's A100 throughput, both power rows and the A100 time to
converge, from the catalog's numbers with nothing fitted. What is not (printed, reported in the
issue notes): the MLU row's throughput — 7,800 tokens/s needs >= 61 TFLOP/s of model FLOPs on a
96 TFLOPS (MLU370-X8-class) card, about twice the efficiency the A100 reaches in the same setup —
and with it the MLU time and relative cost; the memory-bandwidth utilisation row follows another
definition (the model reports bytes moved / peak bandwidth).
"""

from __future__ import annotations

import pytest

from scaling.app import seed
from scaling.app.api import run_experiment


def test_table1_side_by_side(repo) -> None:
    res = run_experiment(repo / "configs" / "seed-table1.yaml")
    t = seed.table1(res.table)
    print("\n" + seed.format_table1(t))
    by = t.set_index("metric")
    assert by.loc["training throughput (tokens/s)", "error A (%)"] == pytest.approx(0, abs=10)
    assert by.loc["power (W)", "error A (%)"] == pytest.approx(0, abs=10)
    assert by.loc["power (W)", "error B (%)"] == pytest.approx(0, abs=10)
    assert by.loc["time to converge (h)", "error A (%)"] == pytest.approx(0, abs=10)
    # the power gap is reproduced within 5 points
    assert by.loc["power (W)", "gap error (pp)"] == pytest.approx(0, abs=5)


def test_table2_ratios_and_verdicts(repo) -> None:
    res = run_experiment(repo / "configs" / "seed-table2.yaml")
    t = seed.table2(res.table)
    print("\n" + seed.format_table2(t))
    row = t.set_index("product")
    assert row.loc["Ascend 910B", "verdict"] == "inside"
    assert row.loc["T20", "verdict"].startswith("not run")
    for product in ("Ascend 910B", "BR100", "MLU590", "MTT S4000"):
        assert 0 < row.loc[product, "ratio"] < 2
        assert "[" in row.loc[product, "drivers"]  # confidence of each driving number shown


def test_price_and_power_are_overridable_in_config() -> None:
    base = {"model": "gpt3-125m", "systems": ["mlu370-x8"], "nodes": [1]}
    a = run_experiment(base).table.iloc[0]
    b = run_experiment(
        {**base, "economics": {"mlu370-x8": {"price_per_hour_USD": 0.45, "power_busy_W": 125}}}
    ).table.iloc[0]
    assert b.cost_per_million_tokens_USD == pytest.approx(a.cost_per_million_tokens_USD / 2)
    assert b.avg_board_power_W < a.avg_board_power_W
    assert b.step_time_s == a.step_time_s  # economics never changes the simulation
