"""`scaling trace` (Chrome Trace Event JSON) and `scaling explain` (where the step went)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from scaling.app.cli import main
from scaling.io.config import experiment_from_dict
from scaling.model.analysis.explain import explain_step
from scaling.model.simulation import run_job_detailed


def test_fsdp_16_rank_trace_structure(repo, tmp_path) -> None:
    out = tmp_path / "trace.json"
    res = CliRunner().invoke(
        main, ["trace", str(repo / "configs" / "fsdp-mlu-16.yaml"), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    procs = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == set(range(16))
    threads = {
        (e["pid"], e["args"]["name"])
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert {(0, "compute"), (0, "comm")} <= threads
    slices = [e for e in events if e["ph"] == "X"]
    for e in slices:
        assert {"name", "ph", "ts", "dur", "pid", "tid"} <= e.keys()
        assert e["dur"] >= 0 and e["ts"] >= -1e-6
    colls = [e for e in slices if e["cat"] == "collective"]
    assert {e["name"] for e in colls} == {"all_gather", "reduce_scatter"}
    for e in colls:
        assert (
            e["args"]["bytes"] > 0
            and "/" in e["args"]["algorithm"]
            and e["args"]["group_size"] == 16
        )
    # every rank sees the same collectives (one FSDP group)
    per_rank = {p: sum(1 for e in colls if e["pid"] == p) for p in range(16)}
    assert len(set(per_rank.values())) == 1
    assert doc["otherData"]["strategy"] == "fsdp-full_shard"


@pytest.mark.parametrize(
    "strategy",
    [
        {"kind": "ddp"},
        {"kind": "fsdp", "sharding": "full_shard", "backward_prefetch": "none"},
        {"kind": "fsdp", "sharding": "hybrid_shard"},
    ],
)
def test_explain_parts_add_up_to_the_step(strategy) -> None:
    job = experiment_from_dict(
        {
            "model": "gpt3-1.3b",
            "systems": ["mlu370-x8"],
            "nodes": [64],
            "strategy": strategy,
            "training": {"micro_batch_size": 4},
            "simulation": {"steps": 1},
        }
    ).jobs()[0]
    res, tl = run_job_detailed(job, trace=True)
    b = explain_step(tl, len(res.steps) - 1)
    total = sum(t for _, t in b.parts())
    # the parts are a partition of the step: they add up to it exactly (up to float rounding)
    assert total == pytest.approx(b.step_s, rel=1e-12)
    assert b.step_s == pytest.approx(res.step_time_s, rel=1e-12)
    assert b.compute_s == pytest.approx(res.compute_time_s, rel=1e-12)
    # what is not compute is exposed communication, waiting for other ranks, or idle
    assert b.exposed_s + b.idle_s == pytest.approx(res.exposed_comm_s, rel=1e-9)
    assert b.exposed_s > 0


def test_explain_cli_names_the_exposed_buckets(repo) -> None:
    res = CliRunner().invoke(
        main,
        [
            "explain",
            str(repo / "configs" / "mlu-vs-gpu.yaml"),
            "--set",
            "nodes=[128]",
            "--set",
            "systems=[mlu370-x8]",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "exposed all_reduce" in res.output and "bucket" in res.output and "total" in res.output


def test_trace_needs_one_point(repo, tmp_path) -> None:
    res = CliRunner().invoke(
        main,
        ["trace", str(repo / "configs" / "mlu-vs-gpu.yaml"), "--out", str(tmp_path / "t.json")],
    )
    assert res.exit_code == 2 and "needs one point" in res.output
