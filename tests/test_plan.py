"""scaling plan: the space keeps the global batch, refusals are counted, the analytic prune finds
the true best (against exhaustive flow simulation), the configured strategy is reported, an
interrupted plan resumes, and bad constraints are refused in one line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
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


def test_intervals_rerun_the_winners_over_the_samples() -> None:
    from scaling.plan.intervals import interval_rows, plan_intervals
    from scaling.sweep.executors import SerialExecutor

    exp = experiment_from_dict({**SMALL, "systems": ["dgx-a100", "mlu370-x8"], "nodes": [1, 2]})
    space = PlanSpace(strategies=("ddp", "fsdp"), micro_batches=(2,), checkpointing=("none",))
    res = plan(exp, space, keep=1)
    points = plan_intervals(res, top=2, n=4, seed=3, executor=SerialExecutor())
    assert len(points) == 4 and all(p.values.shape == (4, 2) for p in points)
    rows = {(r["system"], r["nodes"]): r for r in interval_rows(points)}
    for (system, nodes), r in rows.items():
        assert r["best_p5"] <= r["best_median"] <= r["best_p95"]
        assert 0.0 <= r["winner_share"] <= 1.0
        if nodes == 1:  # efficiency against the system's own best at its fewest nodes
            assert r["efficiency_median"] == pytest.approx(1.0)
        if system == "dgx-a100":
            assert r["ratio_to_dgx-a100_median"] == pytest.approx(1.0)
    # the MLU samples draw their own inputs: its best varies across samples, the ratio with it
    mlu = next(p for p in points if p.system == "mlu370-x8")
    assert np.nanstd(mlu.best) > 0
    # the same seed gives the same samples
    again = plan_intervals(res, top=2, n=4, seed=3, executor=SerialExecutor())
    assert all(
        np.array_equal(a.values, b.values, equal_nan=True)
        for a, b in zip(points, again, strict=True)
    )


MOE = {
    "model": {"name": "tiny-moe", "vocab": 32000, "hidden": 1024, "layers": 4, "heads": 16,
              "ffn": 4096, "gated_mlp": True, "bias": False, "tied_embeddings": False,
              "norm": "rmsnorm", "moe": {"experts": 16, "top_k": 2, "expert_ffn": 512}},
    "systems": ["dgx-h100"],
    "nodes": [1],
    "strategy": {"kind": "megatron", "moe": {"routing": "zipf", "zipf_s": 0.5}},
    "training": {"micro_batch_size": 1, "seq_len": 1024, "grad_accum_steps": 2},
    "simulation": {"steps": 1, "warmup_steps": 0},
}  # fmt: skip
MOE_SPACE = PlanSpace(
    strategies=("ddp", "megatron"),
    micro_batches=(1,),
    checkpointing=("none",),
    tensor=(1, 2),
    pipeline=(1, 2),
)


def test_moe_expert_parallel_candidates_and_refusals() -> None:
    """EP over the divisors of the experts that the expert-data-parallel rule allows
    (EP·ETP divides tensor·data; ETP = tensor), counted by reason; Megatron's tp-dp-pp order."""
    cands, refused = enumerate_candidates("dgx-h100", 8, 1, 16, MOE_SPACE, experts=16)
    eps = {}
    for c in cands:
        if c.kind != "megatron":
            continue
        st = c.values()["strategy"]
        par = st["parallelism"]
        ep = par.get("expert_parallel", 1)
        d = 8 // (par["tensor"] * par["pipeline"])
        assert d % ep == 0 and 16 % ep == 0
        assert ep == 1 or st["order"] == "tp-dp-pp"
        eps.setdefault((par["tensor"], par["pipeline"]), set()).add(ep)
    # data 8, 4, 4, 2: EP up to the data size, of the divisors 1, 2, 4, 8, 16
    assert eps == {(1, 1): {1, 2, 4, 8}, (2, 1): {1, 2, 4}, (1, 2): {1, 2, 4}, (2, 2): {1, 2}}
    assert refused == {"tensor x data not a multiple of expert_parallel x expert_tensor_parallel": 1
                       + 2 + 2 + 3}  # fmt: skip
    few, refused = enumerate_candidates(
        "dgx-h100", 8, 1, 16, replace(MOE_SPACE, expert_parallel=(3, 4)), experts=16
    )
    assert refused["experts not a multiple of expert_parallel"] == 4
    assert any("e4" in c.label for c in few)
    # a dense model runs no expert parallelism: the same candidates as before, and --ep refused
    dense, _ = enumerate_candidates("dgx-h100", 8, 1, 16, MOE_SPACE)
    assert not any("expert_parallel" in c.values()["strategy"].get("parallelism", {})
                   for c in dense)  # fmt: skip
    with pytest.raises(ConfigError, match="expert_parallel: got \\[2\\] with the dense model"):
        plan(experiment_from_dict(SMALL), replace(SPACE, expert_parallel=(2,)))


def test_moe_pruned_search_finds_the_exhaustive_best() -> None:
    exp = experiment_from_dict(MOE)
    pruned = plan(exp, MOE_SPACE, keep=1)
    exhaustive = plan(exp, MOE_SPACE, keep=1000)
    (pp,), (ep,) = pruned.points, exhaustive.points
    assert len(ep.flow) == len(ep.analytic) > 4
    assert pp.best is not None and ep.best is not None
    assert pp.best.candidate == ep.best.candidate and pp.best.metrics == ep.best.metrics
    # DDP cannot run a MoE model: refused as a config rule, counted
    assert any(k.startswith("config rule") for k in ep.refused)
    labels = {e.candidate.label for e in ep.flow}
    assert any(" e" in lb for lb in labels)  # expert parallelism was searched
