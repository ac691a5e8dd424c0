"""Schedules, routes and phase solves shared across runs of one cluster structure
(scaling.model.comm.shared, issue 29): runs in any order give the bits of a cold process, the
shared arrays cannot be altered, blanked fields never change a schedule, and the caches stay
bounded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import simpy

from scaling.io.config import as_experiment
from scaling.io.topology import load_system
from scaling.model.comm import shared
from scaling.model.comm.algos import NotApplicable, Planner, algorithm_names
from scaling.model.comm.cluster import clear_structure_cache as clear_cluster_cache
from scaling.model.comm.flowcoll import FlowCollectives, clear_price_cache
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import SystemSpec
from scaling.model.job import Job
from scaling.model.simulation import run_job


def _cold() -> None:
    """Forget everything a run shares with the next one in this process."""
    shared.clear_structure_cache()
    clear_price_cache()
    clear_cluster_cache()


def _job(system: str, nodes: int) -> Job:
    cfg = {
        "model": "gpt3-125m",
        "systems": [system],
        "nodes": [nodes],
        "simulation": {"steps": 2, "warmup_steps": 1, "seed": 3},
    }
    (job,) = as_experiment(cfg).jobs()
    return job


def _scaled(system: SystemSpec, f: float) -> SystemSpec:
    """``system`` with every capacity scaled by ``f`` and its latencies by 1/f: the same
    structure (uncertainty samples differ this way)."""
    return dataclasses.replace(
        system,
        nics=dataclasses.replace(
            system.nics, bw_Bps=system.nics.bw_Bps * f, latency_s=system.nics.latency_s / f
        ),
        fabric=dataclasses.replace(system.fabric, link_bw_Bps=system.fabric.link_bw_Bps * f),
    )


def _bits(job: Job) -> str:
    return repr(run_job(job))


def test_runs_in_any_order_give_the_bits_of_a_cold_process() -> None:
    a = _job("dgx-a100", 4)
    b = dataclasses.replace(a, system=_scaled(a.system, 0.37))  # same structure
    c = _job("mlu370-x8", 4)  # another structure
    d = dataclasses.replace(a, nodes=2)  # another node count
    so = a.system.scale_out  # the same schedules, other routes (more spines)
    e = dataclasses.replace(
        a,
        system=dataclasses.replace(
            a.system, scale_out=dataclasses.replace(so, oversubscription=0.5)
        ),
    )
    jobs = {"a": a, "b": b, "c": c, "d": d, "e": e}
    cold = {}
    for name, job in jobs.items():
        _cold()
        cold[name] = _bits(job)
    assert cold["a"] != cold["b"]  # the capacities matter
    _cold()
    order = ["a", "b", "a", "c", "a", "d", "b", "c", "a"]
    assert [_bits({"a": a, "b": b, "c": c, "d": d}[n]) for n in order] == [cold[n] for n in order]


def test_engine_path_ids_are_a_cold_runs() -> None:
    spec = load_system("dgx-a100").spec
    g8 = Group(4, spec.devices_per_node)
    g4 = Group(4, 4)

    def ids(calls: list[Group]) -> list[bytes]:
        fc = FlowCollectives(simpy.Environment(), spec, 4)
        out = []
        for g in calls:
            ch = fc.predict(CollectiveOp.ALL_REDUCE, 2**26, g)
            sched = fc.schedule(ch.algorithm, CollectiveOp.ALL_REDUCE, g)
            assert sched is not None
            out += [fc.flows(ph)[0].tobytes() for ph in sched.phases]
        return out

    _cold()
    cold = ids([g4, g8])
    _cold()
    ids([g8])  # another run met g8 first: its structure-wide ids are in another order
    clear_price_cache()  # (a price hit would skip registering the other algorithms' paths)
    assert ids([g4, g8]) == cold


def test_shared_arrays_are_read_only() -> None:
    _cold()
    spec = load_system("mlu370-x8").spec
    fc = FlowCollectives(simpy.Environment(), spec, 2)
    sched = fc.schedule("ring", CollectiveOp.ALL_REDUCE, Group(2, spec.devices_per_node))
    assert sched is not None
    ph = sched.phases[0]
    _pids, coeff, mult = fc.flows(ph)
    for arr in (ph.src, ph.dst, ph.coeff, ph.mult, coeff, mult):
        with pytest.raises(ValueError):
            arr[0] = 0


def _blanked(system: SystemSpec) -> SystemSpec:
    """Every field structure_view blanks, changed."""
    fab, nic, so, lib = system.fabric, system.nics, system.scale_out, system.library
    return dataclasses.replace(
        system,
        name="other",
        fabric=dataclasses.replace(
            fab,
            link_bw_Bps=fab.link_bw_Bps * 3,
            link_latency_s=fab.link_latency_s * 3 + 1e-6,
            link_efficiency=fab.link_efficiency / 2,
            inter_group_bw_Bps=fab.inter_group_bw_Bps * 3,
            pcie_latency_s=fab.pcie_latency_s * 3 + 1e-6,
            pcie_efficiency=fab.pcie_efficiency / 2,
            switch_reduction_Bps=fab.switch_reduction_Bps / 3,
            switch_reduction_latency_s=fab.switch_reduction_latency_s + 1e-6,
        ),
        nics=dataclasses.replace(
            nic, bw_Bps=nic.bw_Bps / 3, latency_s=nic.latency_s * 2, efficiency=0.5
        ),
        scale_out=dataclasses.replace(
            so,
            spine_latency_s=so.spine_latency_s * 2 + 1e-6,
            oversubscription=so.oversubscription * 1.7,
            ecmp="ideal" if so.ecmp == "hash" else "hash",
        ),
        library=dataclasses.replace(
            lib,
            protocols=tuple(
                dataclasses.replace(p, call_latency_s=p.call_latency_s * 2 + 1e-6)
                for p in lib.protocols
            ),
            bw_efficiency={k: v / 2 for k, v in lib.bw_efficiency.items()},
            tree_bw_factor=lib.tree_bw_factor / 2,
            tree_level_latency_s=lib.tree_level_latency_s + 1e-6,
            compute_interference=0.3,
            call_overhead_s=lib.call_overhead_s + 1e-6,
            ramp_half_bytes=lib.ramp_half_bytes * 2 + 1,
            ramp_exponent=lib.ramp_exponent * 2,
        ),
    )


@pytest.mark.parametrize("name", ["dgx-a100", "dgx-h100", "mlu370-x8", "atlas-800t-a2"])
def test_blanked_fields_change_no_schedule(name: str) -> None:
    spec = load_system(name).spec
    other = _blanked(spec)
    assert shared.structure_view(other) == shared.structure_view(spec)
    pa, pb = (Planner(s, s.library.channels) for s in (spec, other))
    g = spec.devices_per_node
    groups = [Group(1, g), Group(4, g), Group(3, 2), Group(40, g)]  # 40 nodes: several pods
    built = 0
    for algo in algorithm_names():
        for op in CollectiveOp:
            for g in groups:
                try:
                    sa = pa.build(algo, op, g)
                except NotApplicable:
                    with pytest.raises(NotApplicable):
                        pb.build(algo, op, g)
                    continue
                sb = pb.build(algo, op, g)
                built += 1
                assert (sa.algorithm, sa.steps, sa.wire_per_rank, sa.cross_rail) == (
                    sb.algorithm,
                    sb.steps,
                    sb.wire_per_rank,
                    sb.cross_rail,
                )
                assert len(sa.phases) == len(sb.phases)
                for x, y in zip(sa.phases, sb.phases, strict=True):
                    for f in ("src", "dst", "coeff", "mult"):
                        assert np.array_equal(getattr(x, f), getattr(y, f)), (algo, op, g)
                    assert (x.fold is None) == (y.fold is None)
                    if x.fold is not None:
                        assert np.array_equal(x.fold, y.fold)
    assert built > 10


def test_structural_fields_are_in_the_view() -> None:
    spec = load_system("dgx-a100").spec
    view = shared.structure_view(spec)
    so, lib = spec.scale_out, spec.library
    for changed in (
        dataclasses.replace(spec, scale_out=dataclasses.replace(so, nodes_per_leaf=4)),
        dataclasses.replace(spec, scale_out=dataclasses.replace(so, rail_optimized=False)),
        dataclasses.replace(spec, library=dataclasses.replace(lib, channels=lib.channels + 1)),
        dataclasses.replace(spec, nics=dataclasses.replace(spec.nics, count=4)),
    ):
        assert shared.structure_view(changed) != view


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    _cold()
    monkeypatch.setattr(shared, "_MAX_VIEWS", 2)
    monkeypatch.setattr(shared, "_MAX_ROUTINGS", 3)
    monkeypatch.setattr(shared, "_MAX_INFOS", 2)
    monkeypatch.setattr(shared, "_MAX_PHASES", 2)
    monkeypatch.setattr(shared, "_MAX_SCHEDULES", 3)
    spec = load_system("dgx-a100").spec
    lib = spec.library
    for ch in range(1, 6):  # five structure views (channels), five salts
        s = dataclasses.replace(spec, library=dataclasses.replace(lib, channels=ch))
        fc = FlowCollectives(simpy.Environment(), s, 2, seed=ch)
        for nbytes in (2**20, 2**24):
            fc.predict(CollectiveOp.ALL_REDUCE, nbytes, Group(2, 8))
        assert len(shared._STRUCTURES) <= 2
        assert len(shared._ROUTINGS) <= 3
        assert all(len(r.infos) <= 2 for r in shared._ROUTINGS.values())
        assert all(len(r.phases) <= 2 for r in shared._ROUTINGS.values())
        assert all(len(v.schedules) <= 3 for v in shared._STRUCTURES.values())
    # evicted entries are rebuilt with the same result
    first = dataclasses.replace(spec, library=dataclasses.replace(lib, channels=1))
    again = FlowCollectives(simpy.Environment(), first, 2, seed=1)
    warm = again.predict(CollectiveOp.ALL_REDUCE, 2**24, Group(2, 8))
    _cold()
    cold = FlowCollectives(simpy.Environment(), first, 2, seed=1)
    assert cold.predict(CollectiveOp.ALL_REDUCE, 2**24, Group(2, 8)) == warm


def test_a_phase_solve_is_reused_only_on_the_same_capacities() -> None:
    spec = load_system("dgx-a100").spec
    slower = _scaled(spec, 0.37)
    g = Group(4, spec.devices_per_node)

    def price(s: SystemSpec) -> object:
        return FlowCollectives(simpy.Environment(), s, 4).predict(CollectiveOp.ALL_REDUCE, 2**26, g)

    _cold()
    cold_slow = price(slower)
    _cold()
    base = price(spec)
    assert price(slower) == cold_slow != base  # the phase solves of `spec` not reused
    clear_price_cache()  # the phase solves shared, the tuner's choices made afresh
    assert price(spec) == base and price(slower) == cold_slow


def test_threads_sharing_the_tables_get_a_cold_runs_answers() -> None:
    from concurrent.futures import ThreadPoolExecutor

    spec = load_system("mlu370-x8").spec
    groups = [Group(8, spec.devices_per_node), Group(8, 4), Group(4, 2), Group(16, 1)]

    def work(order: int) -> list[tuple[object, bytes]]:
        fc = FlowCollectives(simpy.Environment(), spec, 16)
        out = []
        for g in groups[order:] + groups[:order]:
            ch = fc.predict(CollectiveOp.ALL_GATHER, 2**22, g)
            sched = fc.schedule(ch.algorithm, CollectiveOp.ALL_GATHER, g)
            assert sched is not None
            out += [(ch, fc.flows(ph)[0].tobytes()) for ph in sched.phases]
        return out

    cold = []
    for i in range(4):
        _cold()
        cold.append(work(i))
    _cold()
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(work, [0, 1, 2, 3, 0, 1, 2, 3])) == cold + cold
