"""Issue 24: a result a structural alternative splits is reported per branch (value and 5-95 %
interval per branch, the deciding assumption named), not as one median across modes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scaling.sweep.branches import (
    ALL,
    AlternativeColumn,
    branch_table,
    cluster_options,
    shaped_summary,
    split_lines,
)
from scaling.sweep.uncertainty import format_summary, summarize

ALT = AlternativeColumn("sys", "sys: lib.alternatives", ("nominal", "ring-only"))
OTHER = AlternativeColumn("sys", "sys: alternatives", ("nominal", "ecmp-ideal"))


def _synthetic(effect: float, n: int = 16, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` samples of one series (1 and 512 nodes): efficiency 1 at 1 node; at 512 nodes
    0.95 +- 0.02 for samples that drew ``nominal`` of ALT and ``0.95 - effect`` for
    ``ring-only``; OTHER is drawn independently and changes nothing."""
    rng = np.random.default_rng(seed)
    alt = ["nominal" if i % 2 == 0 else "ring-only" for i in range(n)]
    other = ["nominal" if (i // 2) % 2 == 0 else "ecmp-ideal" for i in range(n)]
    samples = pd.DataFrame({"sample": range(n), ALT.label: alt, OTHER.label: other})
    rows = []
    for i in range(n):
        base = 0.95 - (effect if alt[i] == "ring-only" else 0.0)
        for nodes, eff in ((1, 1.0), (512, base + rng.uniform(-0.02, 0.02))):
            rows.append(
                {"sample": i, "system": "sys", "strategy": "ddp", "model": "m", "nodes": nodes,
                 "status": "ok", "scaling_efficiency": eff}
            )  # fmt: skip
    return pd.DataFrame(rows), samples


def test_an_alternative_that_changes_the_result_gives_two_branches_with_their_values() -> None:
    runs, samples = _synthetic(effect=0.7)
    b = branch_table(runs, samples, [OTHER, ALT], ["scaling_efficiency"])
    at = b[b["nodes"] == 512].set_index("branch")
    assert set(at.index) == {"nominal", "ring-only"}
    assert (at["assumption"] == ALT.label).all() and at["split"].all()  # the deciding one
    assert at.loc["nominal", "median"] == pytest.approx(0.95, abs=0.02)
    assert at.loc["ring-only", "median"] == pytest.approx(0.25, abs=0.02)
    assert at.loc["ring-only", "p95"] < at.loc["nominal", "p5"]
    assert at["ok"].tolist() == [8, 8] and bool(at.loc["nominal", "has_nominal"])
    # at 1 node the same branches, not split (both 1.0)
    one = b[b["nodes"] == 1]
    assert len(one) == 2 and not one["split"].any()
    # the pooled median (a value neither branch has) is replaced in the shaped summary
    pooled = summarize(runs)
    shaped = shaped_summary(pooled, b)
    rows = shaped[(shaped["nodes"] == 512) & (shaped["metric"] == "scaling_efficiency")]
    assert sorted(rows["branch"]) == ["nominal", "ring-only"]
    text = format_summary(shaped, ["scaling_efficiency"])
    assert f"split by {ALT.label}" in text and "ring-only" in text
    (line,) = split_lines(b)
    assert ALT.label in line and "the nominal run's branch" in line


def test_an_alternative_that_changes_nothing_gives_one_branch() -> None:
    runs, samples = _synthetic(effect=0.0)
    b = branch_table(runs, samples, [OTHER, ALT], ["scaling_efficiency"])
    at = b[b["nodes"] == 512]
    assert at["branch"].tolist() == [ALL] and at["assumption"].tolist() == [""]
    assert not at["split"].any() and at["ok"].tolist() == [16]
    shaped = shaped_summary(summarize(runs), b)
    assert (shaped["branch"] == ALL).all()
    assert split_lines(b) == []


def test_a_branch_whose_samples_are_all_refused_is_reported_but_splits_nothing() -> None:
    runs, samples = _synthetic(effect=0.0)
    refused = runs["sample"].map(samples.set_index("sample")[ALT.label]) == "ring-only"
    runs.loc[refused, ["status", "scaling_efficiency"]] = ["refused", np.nan]
    b = branch_table(runs, samples, [ALT], ["scaling_efficiency"])
    assert b["branch"].unique().tolist() == [ALL]  # one branch that runs: no split
    assert b[b["nodes"] == 512]["refused"].tolist() == [8]


def test_overlapping_options_join_one_branch() -> None:
    x = {
        "a": np.array([1.0, 1.1, 1.2]),
        "b": np.array([1.15, 1.3]),
        "c": np.array([5.0, 5.1]),
        "d": np.array([np.nan]),
        "e": np.array([]),
    }
    assert cluster_options(x) == [("a", "b"), ("c",), ("d",)]
