"""What :func:`scaling.model.reads.read_view` leaves out of a job's key is what its simulation
does not read: each dropped field moved alone to another valid value leaves every bit of the
run's results and the key (:func:`scaling.sweep.batch.job_key`) as they were, on every
topology and its library; a field the view keeps moves both (the check can fail)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scaling.io.config import experiment_from_dict, load_experiment
from scaling.model.comm.collectives import Communicator
from scaling.model.comm.ops import CollectiveOp
from scaling.model.hardware.system import LinkClass
from scaling.model.job import Job
from scaling.model.reads import read_view
from scaling.model.strategies.fsdp import ShardingStrategy
from scaling.sweep.batch import job_key
from scaling.sweep.runner import execute_run

R = dataclasses.replace
NET = LinkClass.NETWORK
TOPOLOGIES = sorted(p.stem for p in Path("topologies").glob("*.yaml"))


def _system(job: Job, **changes: Any) -> Job:
    return R(job, system=R(job.system, **changes))


def _nics(job: Job, **changes: Any) -> Job:
    return _system(job, nics=R(job.system.nics, **changes))


def _scale_out(job: Job, **changes: Any) -> Job:
    return _system(job, scale_out=R(job.system.scale_out, **changes))


def _library(job: Job, **changes: Any) -> Job:
    return _system(job, library=R(job.system.library, **changes))


def _net_step_latency(job: Job) -> Job:
    lib = job.system.library
    protocols = tuple(
        R(p, step_latency_s={**p.step_latency_s, NET: p.step_latency_s[NET] * 3 + 2e-6})
        for p in lib.protocols
    )
    return _library(job, protocols=protocols)


#: every field rule 3 drops at one node, each moved alone to another valid value (its dotted
#: path: test_every_field_the_view_drops_is_moved_here checks that the list is complete)
ONE_NODE_DROPPED: dict[str, Callable[[Job], Job]] = {
    "nics.bw_Bps": lambda j: _nics(j, bw_Bps=j.system.nics.bw_Bps * 0.37),
    "nics.latency_s": lambda j: _nics(j, latency_s=j.system.nics.latency_s * 3 + 1e-6),
    "nics.efficiency": lambda j: _nics(j, efficiency=j.system.nics.efficiency * 0.8),
    "scale_out.nodes_per_leaf": lambda j: _scale_out(
        j, nodes_per_leaf=j.system.scale_out.nodes_per_leaf + 7
    ),
    "scale_out.oversubscription": lambda j: _scale_out(
        j, oversubscription=j.system.scale_out.oversubscription * 2 + 1
    ),
    "scale_out.spine_latency_s": lambda j: _scale_out(
        j, spine_latency_s=j.system.scale_out.spine_latency_s * 3 + 1e-6
    ),
    "scale_out.ecmp": lambda j: _scale_out(
        j, ecmp="ideal" if j.system.scale_out.ecmp == "hash" else "hash"
    ),
    "library.bw_efficiency[network]": lambda j: _library(
        j,
        bw_efficiency={
            **j.system.library.bw_efficiency,
            NET: j.system.library.bw_efficiency[NET] * 0.6,
        },
    ),
    "library.protocols[*].step_latency_s[network]": _net_step_latency,
    "library.tree_level_latency_s": lambda j: _library(
        j, tree_level_latency_s=j.system.library.tree_level_latency_s * 2 + 5e-6
    ),
}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # every key, bitwise: the floats' repr (NaN != NaN, repr is what the tables hold)
    return a.keys() == b.keys() and all(repr(a[k]) == repr(b[k]) for k in a)


@functools.cache
def _jobs(system: str, config: str = "configs/mlu-vs-gpu.yaml", *extra: str) -> tuple[Job, ...]:
    exp = load_experiment(
        config, [f"systems=[{system}]", "nodes=[1]", "simulation.steps=1", *extra]
    )
    return tuple(exp.jobs())


def _leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every scalar inside a dataclass tree, in field order; a
    tuple's items as ``[*]``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{path}[{k}]")
    elif isinstance(obj, tuple) and obj and dataclasses.is_dataclass(obj[0]):
        for v in obj:
            yield from _leaves(v, f"{path}[*]")
    else:
        yield path, obj


def _check_one_node(job: Job) -> None:
    """Each dropped field moved alone: same key, same results; a fabric bandwidth: neither."""
    assert job.nodes == 1
    base = execute_run(job)
    for name, move in ONE_NODE_DROPPED.items():
        moved = move(job)
        assert moved != job, name  # the perturbation moves something
        assert job_key(moved) == job_key(job), name
        assert _same(execute_run(moved), base), (job.system.name, job.strategy.label, name)
    fab = job.system.fabric
    control = _system(job, fabric=R(fab, link_bw_Bps=fab.link_bw_Bps * 0.5))
    assert job_key(control) != job_key(job)
    if base["status"] == "ok":
        assert not _same(execute_run(control), base)


@pytest.mark.parametrize("system", TOPOLOGIES)
def test_a_one_node_job_reads_no_network_number(system: str) -> None:
    """DDP and FSDP at one node on every topology: results bitwise and keys unmoved by each
    network number the view drops."""
    jobs = _jobs(system)
    for job in jobs:
        _check_one_node(job)
    statuses = {execute_run(j)["status"] for j in jobs}
    # a topology that trains runs at least one of them (else the check compared refusals)
    assert "ok" in statuses or not jobs[0].system.device.can_train


@pytest.mark.parametrize("system", ["dgx-h100", "mlu370-x8"])
def test_a_one_node_job_priced_uncontended_reads_no_network_number(system: str) -> None:
    """The same with ``simulation.network: analytic`` (every call at the tuner's uncontended
    price: ``AnalyticCostModel`` builds the cluster a group reaches, one node here)."""
    jobs = _jobs(system, "configs/mlu-vs-gpu.yaml", "simulation.network=analytic")
    assert all(j.sim.network == "analytic" for j in jobs)
    for job in jobs:
        _check_one_node(job)


@pytest.mark.slow
@pytest.mark.parametrize("system", ["dgx-a100", "mlu370-x8", "atlas-800t-a2"])
def test_a_one_node_megatron_and_moe_job_reads_no_network_number(system: str) -> None:
    """As above for Megatron TP 4 x PP 2 and an expert-parallel MoE (its all-to-alls)."""
    tp_pp = _jobs(
        system,
        "configs/gpt3-175b-tp-pp.yaml",
        "model=gpt3-1.3b",
        "strategy.parallelism.tensor=4",
        "strategy.parallelism.pipeline=2",
    )
    moe = _jobs(system, "configs/moe-mlu-vs-gpu.yaml")
    for job in (*tp_pp, *moe):
        _check_one_node(job)


def test_every_field_the_view_drops_is_moved_here() -> None:
    """The view of a one-node job differs from the job exactly in :data:`ONE_NODE_DROPPED`'s
    fields (and the device rules'), so a new rule for one-node jobs cannot go untested."""
    # no algorithm constants: rule 4 (tested below) removes entries, not values
    job = _library(_jobs("dgx-h100")[0], algorithm_params={})
    for move in ONE_NODE_DROPPED.values():  # off the view's fixed values (ecmp "hash" …)
        job = move(job)
    pairs = zip(_leaves(job.system), _leaves(read_view(job).system), strict=True)
    dropped = {p for (p, v), (q, w) in pairs if p == q and repr(v) != repr(w)}
    device = {p for p in dropped if p.startswith("device.")}
    assert device  # rule 1: the other dtypes' peaks (dgx-h100 has fp8, fp32 …)
    assert dropped - device == set(ONE_NODE_DROPPED), dropped - device ^ set(ONE_NODE_DROPPED)


def test_the_network_rule_holds_at_one_node_only_and_keeps_what_one_node_reads() -> None:
    """At two nodes every network number is part of the key; at one node the NIC count and
    the rail layout are (the planner's walks read them: the check can fail)."""
    one = _jobs("dgx-a100")[0]
    two = R(one, nodes=2)
    for name, move in ONE_NODE_DROPPED.items():
        assert job_key(move(two)) != job_key(two), name
    assert job_key(_nics(one, count=one.system.nics.count + 1)) != job_key(one)
    rail = not one.system.scale_out.rail_optimized
    assert job_key(_scale_out(one, rail_optimized=rail)) != job_key(one)
    # dgx-a100 with 1 NIC instead of 8: the channels' walks inside the node change, and the
    # results with them (why the count stays in the key)
    assert not _same(execute_run(_nics(one, count=1)), execute_run(one))


def _moved_params(job: Job) -> Iterator[tuple[str, Job]]:
    """``job`` with each constant of an algorithm the view drops moved alone (rule 4)."""
    lib = job.system.library
    kept = read_view(job).system.library.algorithm_params
    for name, params in lib.algorithm_params.items():
        if name in kept:
            continue
        for key, value in params.items():
            moved = {**lib.algorithm_params, name: {**params, key: value * 1.5 + 1.0}}
            yield f"{name}.{key}", _library(job, algorithm_params=moved)


@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize("system", ["mlu370-x8", "dgx-h100"])
def test_a_job_reads_no_constant_of_an_algorithm_for_operations_it_never_calls(
    system: str, nodes: int
) -> None:
    """DDP and FSDP call no all-to-all: the p2p (CNCL, NCCL) and PXN (NCCL) constants move
    neither their key nor one bit of their results, at one node and across nodes."""
    jobs = [R(j, nodes=nodes) for j in _jobs(system)]
    for job in jobs:
        moves = list(_moved_params(job))
        assert {m.split(".")[0] for m, _ in moves} >= {"p2p"}  # there is one to move
        base = execute_run(job)
        assert base["status"] == "ok"
        for name, moved in moves:
            assert job_key(moved) == job_key(job), name
            assert _same(execute_run(moved), base), (system, job.strategy.label, nodes, name)


def test_an_all_to_all_job_keeps_its_algorithms_constants() -> None:
    """A MoE job (expert all-to-alls; Megatron declares every operation) keeps them in its
    key, and on the MLU590 at one node they move its result (the check can fail)."""
    job = _jobs("mlu590", "configs/moe-mlu-vs-gpu.yaml")[0]
    assert not list(_moved_params(job))
    lib = job.system.library
    p2p = lib.algorithm_params["p2p"]
    moved = _library(
        job,
        algorithm_params={**lib.algorithm_params, "p2p": {**p2p, "peers_in_flight": 1.0}},
    )
    assert job_key(moved) != job_key(job)
    assert not _same(execute_run(moved), execute_run(job))


_STRATEGIES = [
    {"kind": "ddp"},
    {"kind": "ddp", "overlap": False, "find_unused_parameters": True},
    {"kind": "ddp", "static_graph": True},
    *({"kind": "fsdp", "sharding": s} for s in ShardingStrategy),
]


def test_a_strategy_calls_only_the_operations_it_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``Communicator.call`` of DDP and FSDP runs (several options, 1 and 2 nodes) is of
    an operation the strategy declares (``Strategy.collective_ops``: rule 4's premise)."""
    calls: list[CollectiveOp] = []
    real = Communicator.call

    def record(self: Communicator, key: Any, op: CollectiveOp, *a: Any, **k: Any) -> Any:
        calls.append(op)
        return real(self, key, op, *a, **k)

    monkeypatch.setattr(Communicator, "call", record)
    for strategy in _STRATEGIES:  # one experiment each: two DDPs would share a label
        exp = experiment_from_dict(
            {
                "model": "gpt3-125m",
                "systems": ["mlu370-x8"],
                "nodes": [1, 2],
                "strategies": [strategy],
                "simulation": {"steps": 1, "warmup_steps": 1},
            }
        )
        for job in exp.jobs():
            calls.clear()
            assert execute_run(job)["status"] == "ok", job.strategy.label
            assert calls, job.strategy.label  # the recorder sees the run's calls
            assert set(calls) <= job.strategy.collective_ops, (job.strategy.label, set(calls))
