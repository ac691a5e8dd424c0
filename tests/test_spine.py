"""The spine of a run: the layer rule, the Strategy interface (a toy third strategy needs nothing
but its own code), typed collective keys, and retired config fields."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import pkgutil
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pytest
import simpy

import scaling
from scaling.io.config import experiment_from_dict
from scaling.io.errors import ConfigError
from scaling.model.comm.collectives import AnalyticCostModel, CollectiveKey, Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import ComputeModel, MicroBatchCompute, PhaseCost
from scaling.model.hardware.memory import MemoryBreakdown, ddp_memory
from scaling.model.job import Job
from scaling.model.simulation import run_job_detailed
from scaling.model.strategies.base import Strategy, StrategyBase, WorkBase
from scaling.model.strategies.ddp import DDPSpec
from scaling.model.strategies.fsdp import FSDPSpec
from scaling.model.strategies.rank import ComputeStream

PKG = Path(scaling.__file__).parent

# What each layer may not import (prefixes). Layers import only the ones below them.
FORBIDDEN = {
    "scaling.engine": ("scaling.",),  # nothing of ours but itself
    "scaling.model": (
        "scaling.io",
        "scaling.sweep",
        "scaling.plan",
        "scaling.app",
        "scaling.golden",
        "scaling.testing",
        "pandas",
        "matplotlib",
        "pyarrow",
        "dask",
        "yaml",
    ),
    "scaling.io": (
        "scaling.sweep",
        "scaling.plan",
        "scaling.app",
        "scaling.golden",
        "scaling.testing",
    ),
    "scaling.sweep": ("scaling.plan", "scaling.app", "scaling.golden", "scaling.testing"),
    # the planner runs candidates on the sweep executors; commands call it
    "scaling.plan": ("scaling.app", "scaling.golden", "scaling.testing"),
}


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(scaling.__path__, "scaling.")]


def _imports(module: str) -> set[str]:
    """Every module ``module`` imports anywhere in its source (top level, functions,
    TYPE_CHECKING blocks), as absolute names."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_every_module_imports_and_obeys_the_layer_rule() -> None:
    mods = _modules()
    assert len(mods) > 30  # the walk found the package
    bad = []
    for mod in mods:
        importlib.import_module(mod)
        for layer, banned in FORBIDDEN.items():
            if mod != layer and not mod.startswith(layer + "."):
                continue
            for imp in _imports(mod):
                own = imp == layer or imp.startswith(layer + ".")
                if not own and any(imp == b.rstrip(".") or imp.startswith(b) for b in banned):
                    bad.append(f"{mod} imports {imp}")
    assert not bad, "layer rule broken:\n" + "\n".join(bad)


def test_layer_check_catches_a_violation() -> None:
    # the checker itself must be able to fail: a model module importing pandas is caught
    banned = FORBIDDEN["scaling.model"]
    assert any("pandas".startswith(b) for b in banned)
    assert "scaling.model.comm.collectives" in _modules()
    assert "scaling.model.hardware.system" in _imports("scaling.model.comm.collectives")


# ------------------------------------------------------------------------------------------
# A toy third strategy: every rank computes forward+backward, then one all-reduce of all
# gradients at the end (no buckets, no overlap), then the optimizer. Defined here only.


@dataclass(frozen=True, slots=True)
class _ToyWork(WorkBase):
    mb: MicroBatchCompute
    optimizer: PhaseCost
    n_layers: int
    grad_bytes: float
    group: Group

    def run(
        self,
        env: simpy.Environment,
        rank: int,
        comm: Communicator,
        steps: int,
        cs: ComputeStream,
    ) -> Generator[simpy.Event, object, None]:
        mb = self.mb
        for step in range(steps):
            cs.begin_step(step)
            yield from cs.run(mb.head_fwd.time_s + self.n_layers * mb.block_fwd.time_s, "forward")
            yield from cs.run(mb.head_bwd.time_s + self.n_layers * mb.block_bwd.time_s, "backward")
            key = CollectiveKey(step, "backward", "all_grads", 0, label="all gradients")
            done = comm.call(key, CollectiveOp.ALL_REDUCE, self.grad_bytes, self.group)
            yield from cs.wait(done, "all_reduce")
            yield from cs.run(self.optimizer.time_s, "optimizer")
            cs.end_step()

    def describe(self, key: CollectiveKey) -> dict[str, object]:
        return {"all_grads": True}


@dataclass(frozen=True, slots=True)
class _AllReduceAtEnd(StrategyBase):
    @property
    def label(self) -> str:
        return "toy-allreduce-at-end"

    def memory(self, job: Job) -> MemoryBreakdown:
        t = job.training
        return ddp_memory(
            job.shape,
            t.micro_batch,
            t.seq_len,
            t.checkpointing,
            t.flash_attention,
            job.system.device.reserved_mem_bytes,
        )

    def plan(self, job: Job, compute: ComputeModel, mb: MicroBatchCompute) -> _ToyWork:
        return _ToyWork(
            mb,
            compute.optimizer_cost(job.shape.params()),
            job.shape.n_layers,
            2.0 * job.shape.params(),
            Group(job.nodes, job.system.devices_per_node),
        )


def _job(strategy: Strategy, nodes: int = 4) -> Job:
    exp = experiment_from_dict(
        {
            "model": "gpt3-125m",
            "systems": ["mlu370-x8"],
            "nodes": [nodes],
            "simulation": {"network": "analytic", "steps": 2},
        }
    )
    return dataclasses.replace(exp.jobs()[0], strategy=strategy)


def test_toy_strategy_runs_through_the_interface_alone() -> None:
    toy = _AllReduceAtEnd()
    assert isinstance(toy, Strategy) and isinstance(DDPSpec(), Strategy)
    assert isinstance(FSDPSpec(), Strategy)
    job = _job(toy)
    res, tl = run_job_detailed(job, trace=True)
    assert res.strategy == "toy-allreduce-at-end"
    # closed form: no overlap, so step = compute + one uncontended all-reduce of all gradients
    ar = AnalyticCostModel(job.system).cost(
        CollectiveOp.ALL_REDUCE, 2.0 * job.shape.params(), Group(4, 8)
    )
    assert res.step_time_s == pytest.approx(res.compute_time_s + ar.time_s, rel=1e-12)
    assert res.n_collectives_per_step == 1
    assert [r.key.label for r in tl.collectives] == ["all gradients"] * 4  # 2 warm-up + 2 steps
    assert res.exposed_comm_s == pytest.approx(ar.time_s, rel=1e-9)


def test_collective_keys_identify_calls_by_value_not_label() -> None:
    a = CollectiveKey(3, "backward", "bucket", 2, label="bucket 2 (25.0 MiB all_reduce)")
    b = CollectiveKey(3, "backward", "bucket", 2, label="other text")
    assert a == b and hash(a) == hash(b)
    assert a != dataclasses.replace(a, tag=(1,))
    assert a != dataclasses.replace(a, micro=1)


def test_retired_forward_prefetch_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.forward_prefetch: .*would change nothing"):
        experiment_from_dict(
            {"model": "gpt3-125m", "systems": ["dgx-a100"], "nodes": [1]}
            | {"strategy": {"kind": "fsdp", "forward_prefetch": True}}
        )


def test_schedule_cli_json_and_csv(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from scaling.app.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "model: {vocab: 512, hidden: 64, layers: 2, heads: 4, max_positions: 32}\n"
        "systems: [dgx-a100]\nnodes: [1]\ntraining: {seq_len: 32}\n"
        "strategy: {bucket_cap_MB: 0.05}\n"
    )
    out = tmp_path / "s.json"
    res = CliRunner().invoke(main, ["schedule", str(cfg), "--step", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert (doc["step"], doc["world_size"], doc["rank"]) == (0, 8, 0)
    [only] = doc["collectives"]  # iteration 0: one bucket holding every parameter
    assert only["op"] == "all_reduce" and only["dtype"] == "fp32" and only["group_size"] == 8
    assert only["bucket"]["params"][0] == "wte.weight"
    res = CliRunner().invoke(main, ["schedule", str(cfg), "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = res.output.strip().splitlines()
    assert rows[0].startswith("index,op,bytes,dtype,group_size,phase")
    assert len(rows) > 2 and all(",all_reduce," in r for r in rows[1:])
    res = CliRunner().invoke(main, ["schedule", str(cfg), "--rank", "8"])
    assert res.exit_code == 2 and "has 8 ranks" in res.output
    res = CliRunner().invoke(main, ["schedule", str(cfg), "--step", "setup"])
    assert res.exit_code == 0 and json.loads(res.output)["collectives"][0]["op"] == "all_gather"
    res = CliRunner().invoke(main, ["schedule", str(cfg), "--step", "x"])
    assert res.exit_code == 2 and "'setup'" in res.output
