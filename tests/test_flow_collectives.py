"""Collectives as flows on the cluster graph: closed forms, conservation, contention, routing."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling.io.topology import load_system
from scaling.model.comm import analytic
from scaling.model.comm.cluster import ClusterNetwork
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group, busbw_factor
from scaling.model.comm.uncontended import AnalyticCostModel
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec

AR = CollectiveOp.ALL_REDUCE


def plain(
    system: SystemSpec, alpha: float, algorithms=None, big_leaves: bool = False
) -> SystemSpec:
    """One protocol, no call overhead or size ramp, the same per-step latency α on every class:
    a quarter from the library, three quarters from the hop's hardware (none at the spine)."""
    lib = dataclasses.replace(
        system.library,
        protocols=(LibraryProtocol("simple", 0.0, dict.fromkeys(LinkClass, 0.25 * alpha)),),
        call_overhead_s=0.0,
        ramp_half_bytes=0.0,
        tree_bw_factor=1.0,
        tree_level_latency_s=0.0,
        algorithms=algorithms or system.library.algorithms,
    )
    hw = 0.75 * alpha
    out = dataclasses.replace(
        system,
        library=lib,
        fabric=dataclasses.replace(
            system.fabric, link_latency_s=hw, pcie_latency_s=hw, switch_reduction_latency_s=0.0
        ),
        nics=dataclasses.replace(system.nics, latency_s=hw),
        scale_out=dataclasses.replace(system.scale_out, spine_latency_s=0.0),
    )
    if big_leaves:
        out = dataclasses.replace(
            out, scale_out=dataclasses.replace(out.scale_out, nodes_per_leaf=4096)
        )
    return out


def run_alone(system: SystemSpec, nodes: int, op, nbytes: float, group: Group, algorithm=None):
    env = simpy.Environment()
    fc = FlowCollectives(env, system, nodes)
    proc = env.process(fc.run(op, nbytes, group, algorithm))
    env.run(proc)
    return env.now, fc


# Systems and node counts where the ring's bottleneck cut is exact (every ring edge of the
# bottleneck class carries the same load), on one non-blocking leaf (no ECMP collisions).
# Multi-node DGX H100 and MTT S4000 rings are *faster* than the cut bound because the exit device
# of each channel does not also send on its scale-up link; the cut model is conservative there.
EXACT = [
    ("dgx-a100", range(1, 33)),
    ("mlu370-x8", range(1, 33)),
    ("mlu370-s4", range(1, 33)),
    ("atlas-800t-a2", range(1, 33)),
    ("br100", range(1, 33)),
    ("mlu590", range(1, 33)),
    ("dgx-h100", [1]),
    ("mtt-s4000", [1]),
]


@settings(max_examples=50, deadline=None)
@given(
    case=st.sampled_from(EXACT),
    data=st.data(),
    nbytes=st.floats(1e3, 2.0**33),
    alpha=st.floats(0.0, 30e-6),
    op=st.sampled_from([AR, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_GATHER]),
)
def test_ring_on_flows_equals_closed_form(case, data, nbytes, alpha, op) -> None:
    name, node_range = case
    nodes = data.draw(st.sampled_from(list(node_range)))
    system = plain(load_system(name).spec, alpha, ("ring",), big_leaves=True)
    group = Group(nodes, system.devices_per_node)
    if group.size == 1:
        return
    t, _ = run_alone(system, nodes, op, nbytes, group, "ring")
    beta = 1.0 / AnalyticCostModel(system).price(op, nbytes, group, "ring").bus_bw_Bps
    fn = {
        AR: analytic.ring_allreduce,
        CollectiveOp.REDUCE_SCATTER: analytic.ring_reduce_scatter,
        CollectiveOp.ALL_GATHER: analytic.ring_allgather,
    }[op]
    assert t == pytest.approx(fn(group.size, nbytes, alpha, beta), rel=1e-9)


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 7), nbytes=st.floats(1e3, 2.0**32), alpha=st.floats(0.0, 30e-6))
def test_rhd_equals_closed_form_on_one_nic_per_rank(k, nbytes, alpha) -> None:
    # One rank per node on a non-blocking leaf: every flow has its own NIC pair.
    nodes = 2**k
    system = plain(load_system("dgx-a100").spec, alpha, ("rhd",), big_leaves=True)
    group = Group(nodes, 1)
    t, _ = run_alone(system, nodes, AR, nbytes, group, "rhd")
    b = system.nics.bw_Bps * system.nics.efficiency
    assert t == pytest.approx(analytic.rhd_allreduce(nodes, nbytes, alpha, 1 / b), rel=1e-9)


@settings(max_examples=15, deadline=None)
@given(nodes=st.integers(2, 48), nbytes=st.floats(1e4, 2.0**33), alpha=st.floats(0.0, 30e-6))
def test_hierarchical_equals_closed_form(nodes, nbytes, alpha) -> None:
    system = plain(load_system("dgx-a100").spec, alpha, ("hierarchical",), big_leaves=True)
    group = Group(nodes, 8)
    t, _ = run_alone(system, nodes, AR, nbytes, group, "hierarchical")
    b_intra = system.fabric.link_bw_Bps * system.fabric.link_efficiency
    b_inter = system.nics.bw_Bps * system.nics.efficiency
    expected = analytic.hierarchical_allreduce(
        8, nodes, nbytes, alpha, 1 / b_intra, alpha, 1 / b_inter
    )
    assert t == pytest.approx(expected, rel=1e-9)


def test_tree_latency_grows_with_log_nodes_ring_linearly() -> None:
    system = load_system("dgx-a100").spec
    lat = {}
    for nodes in (4, 64):
        fc = FlowCollectives(simpy.Environment(), system, nodes)
        g = Group(nodes, 8)
        lat[nodes] = (
            fc.predict(AR, 1024.0, g, "tree").latency_s,
            fc.predict(AR, 1024.0, g, "ring").latency_s,
        )
    tree_growth = lat[64][0] / lat[4][0]
    ring_growth = lat[64][1] / lat[4][1]
    # the tree's latency is affine in log2(nodes) with a positive intercept (call and intra-node
    # steps): it grows by less than log2(64)/log2(4) = 3; the ring's 2(p−1) steps by more
    assert tree_growth < 3 < ring_growth


def test_bytes_are_conserved_on_every_link() -> None:
    system = load_system("mlu370-x8").spec
    nodes, nbytes = 4, 64e6
    group = Group(nodes, 8)
    _, fc = run_alone(system, nodes, AR, nbytes, group, "ring")
    sched = fc.schedule("ring", AR, group)
    choice = fc.predict(AR, nbytes, group, "ring")
    expected = np.zeros(len(fc.cluster.links))
    for ph in sched.phases:
        for a, b, c, m in zip(ph.src, ph.dst, ph.coeff, ph.mult, strict=True):
            for link in fc.cluster.route(int(a), int(b)):
                expected[link] += c * nbytes * choice.scale * m
    np.testing.assert_allclose(fc.net.bytes_per_link, expected, rtol=1e-9, atol=1e-3)
    # and every rank sends 2(p−1)/p of the buffer in a ring all-reduce
    assert choice.wire_per_rank == pytest.approx(2 * 31 / 32)


def test_two_allreduces_sharing_the_nics_take_twice_as_long() -> None:
    system = load_system("dgx-a100").spec
    nodes, nbytes = 8, 4 * 2**30
    group = Group(nodes, 8)
    alone, _ = run_alone(system, nodes, AR, nbytes, group, "ring")
    env = simpy.Environment()
    fc = FlowCollectives(env, system, nodes)
    a = env.process(fc.run(AR, nbytes, group, "ring"))
    b = env.process(fc.run(AR, nbytes, group, "ring"))
    env.run(a & b)
    print(f"\none all-reduce {alone * 1e3:.2f} ms, two at once {env.now * 1e3:.2f} ms")
    assert env.now == pytest.approx(2 * alone, rel=0.02)


def _busbw(system: SystemSpec, nodes: int, per_node: int, algorithm: str, nbytes: float) -> float:
    t, _ = run_alone(system, nodes, AR, nbytes, Group(nodes, per_node), algorithm)
    return nbytes * busbw_factor(AR, nodes * per_node) / t


def test_oversubscribed_fat_tree_lowers_inter_node_busbw() -> None:
    base = load_system("dgx-a100").spec
    over = dataclasses.replace(
        base, scale_out=dataclasses.replace(base.scale_out, oversubscription=4.0)
    )
    nbytes = 2.0**30
    # halving-doubling partners sit in other leaves: it needs the spine's bandwidth
    full = _busbw(base, 64, 1, "rhd", nbytes)
    thin = _busbw(over, 64, 1, "rhd", nbytes)
    print(f"\nrhd busbw at 64 nodes: non-blocking {full / 1e9:.1f} GB/s, 4:1 {thin / 1e9:.1f} GB/s")
    assert thin < 0.6 * full
    # a rail-aligned ring crosses each leaf boundary once per channel and barely notices
    ring_full = _busbw(base, 64, 8, "ring", nbytes)
    ring_thin = _busbw(over, 64, 8, "ring", nbytes)
    assert ring_thin <= ring_full
    assert ring_thin > 0.5 * ring_full


@pytest.mark.parametrize("name", ["dgx-a100", "mlu370-x8", "mlu370-s4", "atlas-800t-a2"])
def test_more_bandwidth_never_slower_on_flows(name: str) -> None:
    base = load_system(name).spec
    faster = dataclasses.replace(
        base, nics=dataclasses.replace(base.nics, bw_Bps=2 * base.nics.bw_Bps)
    )
    for nodes in (2, 16):
        g = Group(nodes, base.devices_per_node)
        for size in (1e6, 1e9):
            t0 = FlowCollectives(simpy.Environment(), base, nodes).predict(AR, size, g).time_s
            t1 = FlowCollectives(simpy.Environment(), faster, nodes).predict(AR, size, g).time_s
            assert t1 <= t0 * (1 + 1e-12)


def test_routes_are_deterministic_and_use_the_right_links() -> None:
    system = load_system("dgx-a100").spec
    net = ClusterNetwork(system, 64)
    a = net.route(0, 8 * 40 + 3)
    assert a == ClusterNetwork(system, 64).route(0, 8 * 40 + 3)
    names = [net.links[i].name for i in a]
    # device 0 leaves on NIC 0 (rail 0), crosses the spine to rail 3 of the far pod
    assert names[0] == "nic_tx/0/0" and names[-1] == "nic_rx/40/3"
    assert any(n.startswith("l2s/") for n in names)
    intra = [net.links[i].name for i in net.route(1, 5)]
    assert intra == ["up/0/1", "dn/0/5"]
    mlu = ClusterNetwork(load_system("mlu370-x8").spec, 2)
    cross = [mlu.links[i].name for i in mlu.route(1, 6)]
    assert cross == ["pci_up/0/1", "sw_up/0/0", "sw_dn/0/1", "pci_dn/0/6"]


def test_nvls_busbw_exceeds_the_link_rate() -> None:
    system = plain(load_system("dgx-h100").spec, 0.0, ("nvls",))
    t, _ = run_alone(system, 1, AR, 2.0**30, Group(1, 8), "nvls")
    busbw = 2.0**30 * busbw_factor(AR, 8) / t
    link = system.fabric.link_bw_Bps * system.fabric.link_efficiency
    assert busbw > link  # nccl-tests' busbw definition, not a wire speed
    # each GPU's S goes through the switch at the lesser of its port and the reduction rate
    rate = min(link, system.fabric.switch_reduction_Bps)
    assert busbw == pytest.approx(2 * 7 / 8 * rate)


def test_tuner_picks_the_fastest_prediction() -> None:
    system = load_system("dgx-a100").spec
    fc = FlowCollectives(simpy.Environment(), system, 16)
    g = Group(16, 8)
    for size in (64e3, 4e6, 256e6, 4e9):
        best = fc.predict(AR, size, g)
        for algo in ("ring", "tree"):
            for proto in ("LL", "LL128", "Simple"):
                assert best.time_s <= fc.predict(AR, size, g, algo, proto).time_s
    assert math.isclose(fc.cost(AR, 4e9, g).time_s, fc.predict(AR, 4e9, g).time_s)


def test_hierarchical_respects_the_group_device_offset() -> None:
    # Group(2, 4, local_base=4): local devices 4-7 of nodes 0 and 1 (global 4-7 and 12-15).
    system = load_system("dgx-a100").spec
    fc = FlowCollectives(simpy.Environment(), system, 2)
    group = Group(2, 4, local_base=4)
    sched = fc.schedule("hierarchical", AR, group)
    assert sched is not None
    ranks = set(group.devices(8).tolist())
    assert ranks == {4, 5, 6, 7, 12, 13, 14, 15}
    for ph in sched.phases:
        assert set(ph.src.tolist()) <= ranks and set(ph.dst.tolist()) <= ranks
    # the same on a full-mesh node (HCCL's intra-server mesh)
    atlas = load_system("atlas-800t-a2").spec
    g = atlas.devices_per_node // 2
    mesh = FlowCollectives(simpy.Environment(), atlas, 2).schedule(
        "hierarchical", AR, Group(2, g, local_base=g)
    )
    assert mesh is not None
    used = set(mesh.phases[0].src.tolist()) | set(mesh.phases[0].dst.tolist())
    assert used == set(Group(2, g, local_base=g).devices(atlas.devices_per_node).tolist())


def _scaled(system: SystemSpec, part: str, field: str, k: float) -> SystemSpec:
    sub = getattr(system, part)
    return dataclasses.replace(
        system, **{part: dataclasses.replace(sub, **{field: k * getattr(sub, field)})}
    )


def test_hardware_latencies_change_collective_times() -> None:
    # A step crosses real links: the hop's hardware latency is part of every step's α.
    base = load_system("dgx-a100").spec

    def t(system: SystemSpec, nodes: int) -> float:
        fc = FlowCollectives(simpy.Environment(), system, nodes)
        return fc.cost(AR, 1024.0, Group(nodes, 8)).time_s

    # 1 KiB all-reduce across 16 nodes: doubling the NIC latency slows it
    assert t(_scaled(base, "nics", "latency_s", 2.0), 16) > t(base, 16)
    # one node: the NVLink hop latency counts, the NIC's does not
    assert t(_scaled(base, "fabric", "link_latency_s", 2.0), 1) > t(base, 1)
    assert t(_scaled(base, "nics", "latency_s", 2.0), 1) == t(base, 1)
    # the spine only once the group spans two pods (SuperPOD: 20 nodes per leaf)
    spine = _scaled(base, "scale_out", "spine_latency_s", 2.0)
    assert t(spine, 16) == t(base, 16)
    assert t(spine, 32) > t(base, 32)


def test_nccl_steps_on_a_dgx_sum_to_the_tuning_constants() -> None:
    # nccl.yaml holds the software part; with the DGX hop latency the step is tuning.cc's hwLat
    # (NVLINK Ring: LL 0.6, LL128 1.9, Simple 3.4 us; reference/nccl_tuning_constants.csv).
    system = load_system("dgx-a100").spec
    fc = FlowCollectives(simpy.Environment(), system, 1)
    base = {"LL": 6.6, "LL128": 14.0, "Simple": 8.4}
    step = {"LL": 0.6, "LL128": 1.9, "Simple": 3.4}
    for proto in ("LL", "LL128", "Simple"):
        lat = fc.predict(AR, 1024.0, Group(1, 8), "ring", proto).latency_s
        want = system.library.call_overhead_s + (base[proto] + 2 * 7 * step[proto]) * 1e-6
        assert lat == pytest.approx(want, rel=1e-12)
