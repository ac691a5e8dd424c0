"""The analytic (uncontended) network mode against the closed forms, and the bandwidth bounds."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling.io.topology import load_system
from scaling.model.comm import analytic
from scaling.model.comm.ops import CollectiveOp, Group, busbw_factor
from scaling.model.comm.uncontended import AnalyticCostModel
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec
from scaling.units import GBps, MiB


def uniform_latency(system: SystemSpec, alpha: float, algorithms=("ring",)) -> SystemSpec:
    """The system with zero call latency and one protocol, and the same per-step latency α on
    every link class: a quarter from the library, three quarters from the hop's hardware (so
    the closed forms check that both parts are charged once per step)."""
    lib = dataclasses.replace(
        system.library,
        protocols=(LibraryProtocol("simple", 0.0, dict.fromkeys(LinkClass, 0.25 * alpha)),),
        call_overhead_s=0.0,
        algorithms=algorithms,
    )
    return with_hop_latency(dataclasses.replace(system, library=lib), 0.75 * alpha)


def with_hop_latency(system: SystemSpec, hw: float, spine: float = 0.0) -> SystemSpec:
    """The system with hardware latency ``hw`` on every hop class and ``spine`` at the spine."""
    return dataclasses.replace(
        system,
        fabric=dataclasses.replace(system.fabric, link_latency_s=hw, pcie_latency_s=hw),
        nics=dataclasses.replace(system.nics, latency_s=hw),
        scale_out=dataclasses.replace(system.scale_out, spine_latency_s=spine),
    )


SYSTEMS = ["dgx-a100", "dgx-h100", "mlu370-x8", "mlu370-s4"]


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(SYSTEMS),
    nodes=st.integers(1, 64),
    nbytes=st.floats(1.0, 2.0**34),
    alpha=st.floats(0.0, 50e-6),
)
def test_uncontended_ring_allreduce_equals_closed_form(name, nodes, nbytes, alpha) -> None:
    system = uniform_latency(load_system(name).spec, alpha)
    model = AnalyticCostModel(system)
    group = Group(nodes, system.devices_per_node)
    cost = model.cost(CollectiveOp.ALL_REDUCE, nbytes, group)
    beta = 1.0 / cost.bus_bw_Bps
    expected = analytic.ring_allreduce(group.size, nbytes, alpha, beta)
    assert cost.algorithm.split("/")[0] == "ring"
    assert cost.time_s == pytest.approx(expected, rel=1e-9)


@settings(max_examples=10, deadline=None)
@given(nodes=st.integers(1, 64), nbytes=st.floats(1.0, 2.0**32), alpha=st.floats(0, 20e-6))
def test_ring_reduce_scatter_and_all_gather_closed_forms(nodes, nbytes, alpha) -> None:
    system = uniform_latency(load_system("dgx-a100").spec, alpha)
    model = AnalyticCostModel(system)
    group = Group(nodes, 8)
    for op, fn in (
        (CollectiveOp.REDUCE_SCATTER, analytic.ring_reduce_scatter),
        (CollectiveOp.ALL_GATHER, analytic.ring_allgather),
    ):
        cost = model.cost(op, nbytes, group)
        assert cost.time_s == pytest.approx(
            fn(group.size, nbytes, alpha, 1 / cost.bus_bw_Bps), rel=1e-9
        )


def test_busbw_factors_are_nccl_tests_definitions() -> None:
    assert busbw_factor(CollectiveOp.ALL_REDUCE, 8) == pytest.approx(2 * 7 / 8)
    assert busbw_factor(CollectiveOp.ALL_GATHER, 8) == pytest.approx(7 / 8)
    assert busbw_factor(CollectiveOp.REDUCE_SCATTER, 16) == pytest.approx(15 / 16)


def large_message_busbw(name: str, nodes: int) -> float:
    system = load_system(name).spec
    model = AnalyticCostModel(system)
    group = Group(nodes, system.devices_per_node)
    n = 16 * 2**30
    t = model.price(CollectiveOp.ALL_REDUCE, n, group, "ring").time_s
    return n / t * busbw_factor(CollectiveOp.ALL_REDUCE, group.size) / GBps


def test_plateaus_match_published_nccl_tests() -> None:
    # reference/nccl_busbw.csv: 8x A100 single node 234.9 GB/s (the calibration point),
    # DGX A100 multi-node 192 GB/s, DGX H100 multi-node 370-380 GB/s (GTC24 S62129).
    assert large_message_busbw("dgx-a100", 1) == pytest.approx(234.9, rel=0.01)
    assert large_message_busbw("dgx-a100", 4) == pytest.approx(192, rel=0.10)
    assert large_message_busbw("dgx-h100", 4) == pytest.approx(375, rel=0.10)


def test_mlu_nodes_are_bounded_by_their_two_nics() -> None:
    system = load_system("mlu370-x8").spec
    cost = AnalyticCostModel(system).price(CollectiveOp.ALL_REDUCE, 16 * 2**30, Group(4, 8), "ring")
    assert cost.bottleneck is LinkClass.NETWORK
    nic = system.nics
    ramp = system.library.size_efficiency(16 * 2**30)
    assert cost.bus_bw_Bps == pytest.approx(
        nic.count
        * nic.bw_Bps
        * nic.efficiency
        * system.library.bw_efficiency[LinkClass.NETWORK]
        * ramp
    )


@pytest.mark.parametrize("name", SYSTEMS)
def test_more_bandwidth_never_slower(name: str) -> None:
    base = load_system(name).spec
    faster_nic = dataclasses.replace(
        base, nics=dataclasses.replace(base.nics, bw_Bps=base.nics.bw_Bps * 2)
    )
    faster_link = dataclasses.replace(
        base, fabric=dataclasses.replace(base.fabric, link_bw_Bps=base.fabric.link_bw_Bps * 2)
    )
    for nodes in (1, 2, 16, 128):
        group = Group(nodes, base.devices_per_node)
        for size in (1 * MiB, 25 * MiB, 1024 * MiB):
            t0 = AnalyticCostModel(base).cost(CollectiveOp.ALL_REDUCE, size, group).time_s
            for other in (faster_nic, faster_link):
                assert (
                    AnalyticCostModel(other).cost(CollectiveOp.ALL_REDUCE, size, group).time_s <= t0
                )


def test_tree_wins_where_ring_latency_explodes() -> None:
    system = load_system("dgx-a100").spec
    model = AnalyticCostModel(system)
    big = Group(128, 8)
    small_msg = model.cost(CollectiveOp.ALL_REDUCE, 25 * MiB, big)
    assert small_msg.algorithm.split("/")[0] == "tree"
    ring = model.price(CollectiveOp.ALL_REDUCE, 25 * MiB, big, "ring")
    # ring latency 2(p−1) steps grows linearly; the tree's grows with log2(nodes) (each with
    # the protocol the tuner picks for it: LL for the latency-bound ring); the tree's steps
    # between nodes carry NCCL's calibrated tree_level_latency (37 us each, 14 of them here)
    assert ring.latency_s > 3 * small_msg.latency_s
    # one node: no tree in the library's choice
    assert (
        model.cost(CollectiveOp.ALL_REDUCE, 25 * MiB, Group(1, 8)).algorithm.split("/")[0] == "ring"
    )


def test_single_rank_costs_nothing() -> None:
    cost = AnalyticCostModel(load_system("dgx-a100").spec).cost(
        CollectiveOp.ALL_REDUCE, 1e9, Group(1, 1)
    )
    assert cost.time_s == 0.0 and math.isinf(cost.bus_bw_Bps)
