"""scaling plan: the space keeps the global batch, refusals are counted, the analytic prune finds
the true best (against exhaustive flow simulation), the configured strategy is reported, an
interrupted plan resumes, and bad constraints are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scaling.app.cli import main
from scaling.io.config import experiment_from_dict
from scaling.io.errors import ConfigError
from scaling.plan import PlanSpace, enumerate_candidates, plan
from scaling.plan import search as plan_search

SMALL = {
    "model": "gpt3-125m",
    "systems": ["dgx-a100"],
    "nodes": [2],
    "strategy": {"kind": "ddp"},
    "training": {"micro_batch_size": 2, "seq_len": 512},
    "simulation": {"steps": 1, "warmup_steps": 1},
}
SPACE = PlanSpace(
    strategies=("ddp", "fsdp", "megatron"),
    micro_batches=(1, 2),
    checkpointing=("none",),
    tensor=(1, 2),
    pipeline=(1, 2),
)


def test_every_candidate_keeps_the_global_batch() -> None:
    cands, refused = enumerate_candidates("dgx-a100", 8, 2, 64, SPACE)
    assert cands and not refused
    for c in cands:
        v = c.values()
        mb, ga = v["training"]["micro_batch_size"], v["training"]["grad_accum_steps"]
        par = v["strategy"].get("parallelism", {"tensor": 1, "pipeline": 1})
        replicas = 16 // (par["tensor"] * par["pipeline"])
        assert replicas * mb * ga == 64, c.label
    # hybrid sharding is the full-shard group on one node: not a distinct candidate there
    one_node, _ = enumerate_candidates("dgx-a100", 8, 1, 32, SPACE)
    assert not any("hybrid_shard" in c.label for c in one_node)
    assert any("hybrid_shard" in c.label for c in cands)


def test_batch_arithmetic_refusals_are_counted() -> None:
    space = PlanSpace(
        strategies=("ddp", "megatron"), micro_batches=(3,), tensor=(1,), pipeline=(3,)
    )
    cands, refused = enumerate_candidates("dgx-a100", 8, 2, 64, space)
    assert not cands
    assert refused["global batch not a multiple of replicas x micro-batch"] == 1
    assert refused["devices not a multiple of tensor x pipeline"] == 1


def test_pruned_search_finds_the_exhaustive_best() -> None:
    exp = experiment_from_dict(SMALL)
    pruned = plan(exp, SPACE, keep=1)
    exhaustive = plan(exp, SPACE, keep=1000)
    (pp,), (ep,) = pruned.points, exhaustive.points
    assert len(ep.flow) == len(ep.analytic) > 2  # every feasible candidate on the flow network
    assert len(pp.flow) < len(ep.flow)  # the bound pruned something
    # the bound it rests on: no candidate runs faster on the flow network than its analytic
    # price (plus the margin)
    price = {e.candidate: e.metrics["tokens_per_s_per_device"] for e in ep.analytic}
    for e in ep.flow:
        bound = price[e.candidate] * (1 + plan_search.BOUND_MARGIN)
        assert e.metrics["tokens_per_s_per_device"] <= bound, e.candidate.label
    assert pp.best is not None and ep.best is not None
    assert pp.best.candidate == ep.best.candidate
    assert pp.best.metrics == ep.best.metrics
    # the experiment's own strategy is among the candidates and the best is at least as fast
    own = [e for e in ep.flow if e.candidate.configured]
    assert (
        own
        and ep.best.metrics["tokens_per_s_per_device"] >= own[0].metrics["tokens_per_s_per_device"]
    )


def test_memory_refusals_and_dominated_checkpointing_are_counted() -> None:
    exp = experiment_from_dict({**SMALL, "model": "gpt3-13b", "nodes": [1]})
    space = PlanSpace(
        strategies=("ddp", "fsdp"), micro_batches=(1,), checkpointing=("none", "full")
    )
    res = plan(exp, space, keep=1)
    (p,) = res.points
    assert p.refused["does not fit in memory"] >= 2  # DDP of 13B does not fit 80 GB either way
    assert p.refused["dominated (fits without activation checkpointing)"] >= 1
    assert p.best is not None and p.best.candidate.kind == "fsdp"


def test_an_empty_space_names_the_constraint() -> None:
    exp = experiment_from_dict(SMALL)
    with pytest.raises(ConfigError, match=r"no configuration of the space keeps the global batch"):
        plan(exp, PlanSpace(strategies=("fsdp",), micro_batches=(3,)), keep=1)
    big = experiment_from_dict({**SMALL, "model": "gpt3-175b", "nodes": [1]})
    with pytest.raises(
        ConfigError, match=r"the constraint that emptied it: does not fit in memory"
    ):
        plan(big, PlanSpace(strategies=("ddp",), micro_batches=(1,)), keep=1)


def test_a_rerun_resumes_from_the_saved_evaluations(tmp_path: Path, monkeypatch) -> None:
    exp = experiment_from_dict(SMALL)
    space = PlanSpace(strategies=("ddp", "fsdp"), micro_batches=(2,), checkpointing=("none",))
    first = plan(exp, space, keep=2, out_dir=tmp_path)
    calls = []
    real = plan_search.evaluate
    monkeypatch.setattr(plan_search, "evaluate", lambda c: calls.append(c) or real(c))
    again = plan(exp, space, keep=2, out_dir=tmp_path)
    assert calls == []
    assert [e.metrics for e in again.points[0].flow] == [e.metrics for e in first.points[0].flow]


def test_cli_plan_writes_runnable_configs(tmp_path: Path) -> None:
    import yaml

    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "name": "tiny"}))
    out = tmp_path / "plan"
    args = [
        "plan",
        str(cfg),
        "--strategies",
        "ddp,fsdp",
        "--micro-batches",
        "2",
        "--checkpointing",
        "none",
        "--top",
        "2",
        "-j",
        "1",
        "--out",
        str(out),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "dgx-a100 at 2 nodes" in res.output and "1." in res.output
    best = (out / "best.csv").read_text()
    assert best.count("\n") == 3  # header + top 2
    first = sorted((out / "configs").glob("*.yaml"))[0]
    run = CliRunner().invoke(main, ["run", str(first), "--check"])
    assert run.exit_code == 0, run.output


@pytest.mark.parametrize(
    ("opt", "value", "expected"),
    [
        ("--tp", "0,2", "--tp '0,2': expected comma-separated positive integers"),
        ("--strategies", "ddp,zero3", "--strategies 'zero3': expected a comma-separated subset"),
        ("--checkpointing", "some", "--checkpointing 'some': expected a comma-separated subset"),
    ],
)
def test_cli_refuses_bad_constraints_in_one_line(opt: str, value: str, expected: str) -> None:
    res = CliRunner().invoke(main, ["plan", "mlu-vs-gpu", opt, value])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], res.output
