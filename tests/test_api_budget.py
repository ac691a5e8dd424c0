"""The point budget from Python (issue 30): ``run_experiment``, ``simulate`` and ``run_sweep``
refuse, before simulating anything, a point whose estimated cost exceeds the budget — the same
refusal as ``scaling run --budget`` — and take an argument that allows more."""

from __future__ import annotations

from pathlib import Path

import pytest

import scaling.app.api as api
from scaling import ConfigError, run_experiment, simulate
from scaling.sweep.budget import Budget, budget_error, estimate

REPO = Path(__file__).resolve().parents[1]
DDP = REPO / "configs" / "mlu-vs-gpu.yaml"
#: one DGX point of 1,024 nodes and 1,000 steps: ~1,000 CPU-s estimated, far past 60
ONE = {"systems": ["dgx-a100"], "strategies": [{"kind": "ddp"}]}
HUGE = {**ONE, "nodes": [1024], "simulation.steps": 1000}
SMALL = {**ONE, "nodes": [1], "simulation.steps": 1}


@pytest.fixture
def no_simulation(monkeypatch):
    """Fail the test if anything is simulated."""

    def boom(job):
        raise AssertionError(f"simulated {job.system.name} x{job.nodes} despite the budget")

    monkeypatch.setattr(api, "run_job", boom)


def _cli_message(overrides: dict) -> str:
    from scaling.app.api_analysis import load_experiment

    job = load_experiment(DDP, overrides).jobs()[0]
    return budget_error(job, Budget(60.0, 1.0))


def test_run_experiment_refuses_past_the_default_budget(no_simulation) -> None:
    with pytest.raises(ConfigError) as e:
        run_experiment(DDP, HUGE)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{DDP}: dgx-a100 x1024 nodes (ddp): estimated")
    # the same estimate the CLI prints, and the argument that allows more
    assert _cli_message(HUGE).split("; expected")[0] in msg
    assert "budget=(CPU_S, GiB)" in msg and "--budget" not in msg


def test_simulate_refuses_past_the_default_budget(no_simulation) -> None:
    with pytest.raises(ConfigError, match=r"estimated .* CPU-s"):
        simulate(DDP, HUGE)
    job = api.as_experiment(DDP, api.override_strings(HUGE)).jobs()[0]
    with pytest.raises(ConfigError, match=r"^simulate\(\): dgx-a100 x1024"):
        simulate(job)


@pytest.mark.parametrize("budget", ["inf,inf", (float("inf"), float("inf")), Budget(1e9, 1e9)])
def test_the_override_lets_the_point_through(monkeypatch, budget) -> None:
    ran = []
    monkeypatch.setattr(api, "run_job", lambda job: ran.append(job) or _fake(job))
    with pytest.raises(_Ran):
        run_experiment(DDP, HUGE, budget=budget)
    assert [j.nodes for j in ran] == [1024]


class _Ran(Exception):
    pass


def _fake(job):
    raise _Ran


def test_a_tight_budget_refuses_a_small_point(no_simulation) -> None:
    cost = estimate(api.as_experiment(DDP, api.override_strings(SMALL)).jobs()[0])
    with pytest.raises(ConfigError, match="expected at most"):
        run_experiment(DDP, SMALL, budget=cost.cpu_s / 2)
    with pytest.raises(ConfigError, match="expected at most"):
        run_experiment(DDP, SMALL, budget=(1e6, cost.mem_GiB / 2))


def test_small_points_run_under_the_default() -> None:
    res = run_experiment(DDP, SMALL)
    assert list(res.table["status"]) == ["ok"]


@pytest.mark.parametrize("bad", ["0", "-1,2", "a", (1, 2, 3), ("x", 1), "1,2,3"])
def test_a_bad_budget_is_one_line_naming_the_argument(bad, no_simulation) -> None:
    with pytest.raises(ConfigError) as e:
        run_experiment(DDP, SMALL, budget=bad)
    msg = str(e.value)
    assert msg.startswith("budget=") and "\n" not in msg and "--budget" not in msg


def test_run_sweep_takes_the_same_budget_forms(tmp_path) -> None:
    spec = {
        "name": "b",
        "base": {
            "model": "gpt3-1.3b",
            "systems": ["dgx-a100"],
            "nodes": [1024],
            "strategy": {"kind": "ddp"},
            "training": {"seq_len": 2048, "micro_batch_size": 1},
            "simulation": {"steps": 1000, "warmup_steps": 1},
        },
        "axes": {},
    }
    with pytest.raises(ConfigError, match="estimated"):
        api.run_sweep(spec, tmp_path / "s", jobs=1)
    with pytest.raises(ConfigError, match="estimated"):
        api.run_sweep(spec, tmp_path / "s", jobs=1, budget="100")
