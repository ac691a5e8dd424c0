"""The cost estimate of a point and the budget that refuses the points that would take minutes or
gigabytes (issue 30: runs inside the size limits took > 300 s and 2.5 GB while --check said ok)."""

from __future__ import annotations

from pathlib import Path

import pytest
import simpy
from click.testing import CliRunner

from scaling.app.cli import main
from scaling.io.config import experiment_from_dict
from scaling.io.errors import ConfigError
from scaling.model.simulation import run_job
from scaling.sweep import budget
from scaling.sweep.budget import (
    DEFAULT_BUDGET,
    EVENTS_PER_MB_LAYER,
    Budget,
    estimate,
    parse_budget,
)

REPO = Path(__file__).resolve().parents[1]
MEGATRON = REPO / "configs" / "gpt3-175b-tp-pp.yaml"
DDP = REPO / "configs" / "mlu-vs-gpu.yaml"


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def _job(strategy: dict, network: str = "analytic", nodes: int = 2, **training):
    return experiment_from_dict(
        {
            "model": "gpt3-1.3b",
            "systems": ["dgx-a100"],
            "nodes": [nodes],
            "strategy": strategy,
            "training": {"seq_len": 2048, "micro_batch_size": 1, **training},
            "simulation": {"steps": 2, "warmup_steps": 1, "network": network},
        }
    ).jobs()[0]


@pytest.mark.parametrize(
    ("strategy", "network", "accum"),
    [
        ({"kind": "ddp"}, "flow", 1),
        ({"kind": "ddp"}, "analytic", 4),
        ({"kind": "fsdp"}, "flow", 2),
        ({"kind": "megatron", "parallelism": {"tensor": 8, "pipeline": 2, "data": "auto"}},
         "flow", 8),
    ],
)  # fmt: skip
def test_estimated_events_bound_the_simulated_ones(monkeypatch, strategy, network, accum) -> None:
    job = _job(strategy, network, grad_accum_steps=accum)
    events = 0
    schedule = simpy.Environment.schedule

    def counting(self, *a, **k):
        nonlocal events
        events += 1
        return schedule(self, *a, **k)

    monkeypatch.setattr(simpy.Environment, "schedule", counting)
    run_job(job)
    est = estimate(job)
    mbs = (job.sim.steps + job.sim.warmup_steps) * accum
    assert est.events == EVENTS_PER_MB_LAYER * mbs * job.shape.n_layers
    # an upper bound, and not a vacuous one
    assert est.events / 20 <= events <= est.events, (events, est.events)


def test_cost_grows_with_what_the_simulator_does() -> None:
    small = estimate(_job({"kind": "ddp"}))
    assert estimate(_job({"kind": "ddp"}, grad_accum_steps=10)).cpu_s > small.cpu_s
    flow = estimate(_job({"kind": "ddp"}, "flow"))
    assert flow.cpu_s > small.cpu_s and flow.mem_bytes > small.mem_bytes
    assert estimate(_job({"kind": "ddp"}, "flow", nodes=64)).cpu_s > flow.cpu_s


@pytest.mark.parametrize(
    ("config", "sets", "fragment"),
    [
        # Megatron with 10,000 micro-batches: > 300 s and 2.5 GB growing (issue 30)
        (MEGATRON, ["training.grad_accum_steps=10000"], "10,000 micro-batches x 96 layers"),
        # 10,000 steps
        (DDP, ["simulation.steps=9998", "nodes=[1]"], "10,000 micro-batches"),
        # 65,536 ranks: 90 s
        (DDP, ["nodes=[8192]", "systems=[dgx-a100]"], "65,536 ranks"),
    ],
)
def test_check_and_run_refuse_what_exceeds_the_budget(
    monkeypatch, tmp_path, config, sets, fragment
) -> None:
    args = [a for s in sets for a in ("--set", s)]
    code, out = cli("run", str(config), "--check", *args)
    assert code == 2 and fragment in out and "--budget CPU_S,GiB" in out, out
    assert str(config) in out and "CPU-s" in out and "GiB" in out
    assert len([ln for ln in out.splitlines() if ln.startswith("error:")]) == 1

    def no_simulation(*a, **k):
        raise AssertionError("simulated a point beyond the budget")

    monkeypatch.setattr("scaling.app.api.run_job", no_simulation)
    code, out = cli("run", str(config), *args, "--out", str(tmp_path / "o"), "--no-plot")
    assert code == 2 and "--budget" in out, out
    assert not (tmp_path / "o" / "results.csv").exists()
    # the override lets --check through
    code, out = cli("run", str(config), "--check", *args, "--budget", "inf,inf")
    assert code == 0, out


def test_every_bundled_config_fits_the_default_budget() -> None:
    for config in sorted((REPO / "configs").glob("*.yaml")):
        code, out = cli("run", str(config), "--check")
        assert code == 0, (config, out)
        assert "estimated ~" in out


@pytest.mark.parametrize("text", ["", "x", "0", "-5", "1,2,3", "60,abc", "nan"])
def test_a_bad_budget_is_one_line(text) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


def test_budget_parsing_and_default() -> None:
    assert parse_budget(None) == DEFAULT_BUDGET
    assert parse_budget("600") == Budget(600.0, DEFAULT_BUDGET.mem_GiB)
    assert parse_budget("600,16") == Budget(600.0, 16.0)
    assert parse_budget("inf,inf").cpu_s == float("inf")
    job = _job({"kind": "ddp"})
    assert budget.budget_error(job, DEFAULT_BUDGET) == ""
    assert "expected at most" in budget.budget_error(job, Budget(1e-6, 1e-6))


def test_a_sweep_beyond_the_budget_is_refused_before_it_runs(tmp_path) -> None:
    from scaling.sweep.runner import run_sweep

    spec = {
        "name": "big",
        "model": "gpt3-1.3b",
        "systems": ["dgx-a100"],
        "nodes": [1, 8192],
    }
    with pytest.raises(ConfigError, match=r"65,536 ranks.*--budget"):
        run_sweep(spec, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written
    code, out = cli("sweep", str(DDP), "--set", "nodes=[8192]", "--out", str(tmp_path / "o"),
                    "-j", "1", "--no-plot")  # fmt: skip
    assert code == 2 and "--budget" in out, out
