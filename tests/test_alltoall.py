"""All-to-all algorithms (p2p, pxn, hier_a2a, pairwise) and folded flows: closed forms,
volume per rank, folded = unfolded, contention, monotonicity, scale, the command's busbw."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import simpy

from scaling.io.topology import load_system
from scaling.model.comm.algos import exchange
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import LinkClass, SystemSpec
from tests.test_flow_collectives import plain, run_alone

A2A = CollectiveOp.ALL_TO_ALL
ALGOS = ("p2p", "pxn", "hier_a2a", "pairwise")
GiB = 2.0**30


def ideal(system: SystemSpec, nodes_per_leaf: int | None = None) -> SystemSpec:
    """The system with a perfectly balanced spine (and another pod size, if given)."""
    so = dataclasses.replace(system.scale_out, ecmp="ideal")
    if nodes_per_leaf:
        so = dataclasses.replace(so, nodes_per_leaf=nodes_per_leaf)
    return dataclasses.replace(system, scale_out=so)


def _rates(fc: FlowCollectives) -> tuple[float, float]:
    """Achievable NIC and NVSwitch-port rates of a DGX cluster, bytes/s."""
    caps = {lk.key[0]: lk.capacity_Bps for lk in fc.cluster.links}
    return caps["nic_tx"], caps["up"]


@pytest.mark.parametrize("nodes", [4, 16])  # 32 ranks: real pairs; 128: folded
def test_uncontended_bandwidth_of_each_algorithm_is_its_closed_form(nodes: int) -> None:
    """DGX H100 (NVSwitch, a NIC per GPU, rails on a non-blocking spine), seconds per byte of S:
    p2p max((p−k)/p/B_nic, (k−1)/p/B_up); pxn max((n−1)k/p/B_nic, (k−1)n/p/B_up); hier_a2a
    their sum; pairwise (p−1)/p/B_nic (every round crosses nodes, one flow per NIC)."""
    spec = ideal(load_system("dgx-h100").spec)
    k = spec.devices_per_node
    group = Group(nodes, k)
    n, p = nodes, nodes * k
    fc = FlowCollectives(simpy.Environment(), spec, nodes)
    b_nic, b_up = _rates(fc)
    assert exchange.folds(group) == (p > 64)
    expected = {
        "p2p": max((p - k) / p / b_nic, (k - 1) / p / b_up),
        "pxn": max((n - 1) * k / p / b_nic, (k - 1) * n / p / b_up),
        "hier_a2a": (n - 1) * k / p / b_nic + (k - 1) * n / p / b_up,
        "pairwise": (p - 1) / p / b_nic,
    }
    for algo, want in expected.items():
        ch = fc.predict(A2A, GiB, group, algo, "Simple")
        assert ch.bw_s_per_byte == pytest.approx(want, rel=1e-9), algo


@pytest.mark.parametrize("nodes", [4, 16])
def test_volume_per_rank_is_n_minus_1_over_n(nodes: int) -> None:
    """Every rank sends (p−1)/p of its buffer in p2p and pairwise, folded or not: the flows
    leaving each rank for the others sum to that (a folded class counts its peers)."""
    spec = load_system("dgx-h100").spec
    group = Group(nodes, 8)
    p = group.size
    fc = FlowCollectives(simpy.Environment(), spec, nodes)
    for algo in ("p2p", "pairwise", "pxn"):
        sched = fc.schedule(algo, A2A, group)
        assert sched is not None
        assert sched.wire_per_rank == pytest.approx((p - 1) / p)
        if algo == "pxn":
            continue  # relays forward the others' shares
        sent = np.zeros(fc.cluster.n_devices)
        for ph in sched.phases:
            np.add.at(sent, ph.src, ph.coeff * ph.mult)
        np.testing.assert_allclose(sent[group.devices(8)], (p - 1) / p, rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "nodes", "per_leaf"),
    [("dgx-h100", 6, 4), ("atlas-800t-a2", 6, 4), ("mlu370-x8", 5, 2), ("dgx-h100", 3, 2)],
)
def test_folded_flows_equal_the_real_pairs(
    name: str, nodes: int, per_leaf: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a balanced spine, folding the inter-node flows (one class per source, destination
    local index and near/far pod, the peers as multiplicity) changes no time, over two or three
    pods: every link carries the load the real pairs put on it."""
    spec = ideal(load_system(name).spec, per_leaf)
    group = Group(nodes, spec.devices_per_node)
    for algo in ALGOS:
        times = []
        for fold_above in (10**9, 1):
            monkeypatch.setattr(exchange, "FOLD_ABOVE", fold_above)
            fc = FlowCollectives(simpy.Environment(), spec, nodes)
            try:
                times.append(fc.predict(A2A, GiB, group, algo, spec.library.protocols[-1].name))
            except ValueError:
                times.append(None)
        if times[0] is None:
            assert times[1] is None
            continue
        assert times[1] is not None
        assert times[1].time_s == pytest.approx(times[0].time_s, rel=1e-9), algo


def test_folded_link_loads_equal_the_real_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes per link after a p2p all-to-all over two pods: folded and real flows put the same
    bytes on every NIC and on every leaf's uplinks and downlinks in total."""
    spec = ideal(load_system("dgx-h100").spec, 2)
    nodes, group = 4, Group(4, 8)
    loads = []
    for fold_above in (10**9, 1):
        monkeypatch.setattr(exchange, "FOLD_ABOVE", fold_above)
        _, fc = run_alone(spec, nodes, A2A, GiB, group, "p2p")
        loads.append(fc.net.bytes_per_link)
    np.testing.assert_allclose(loads[1], loads[0], rtol=1e-9, atol=1.0)


def test_two_all_to_alls_share_the_nics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folded flows load the real links: two concurrent NIC-bound all-to-alls take twice one."""
    spec = plain(load_system("dgx-h100").spec, 0.0, ("p2p",))
    nodes, group = 16, Group(16, 8)
    assert exchange.folds(group)
    alone, _ = run_alone(spec, nodes, A2A, GiB, group, "p2p")
    env = simpy.Environment()
    fc = FlowCollectives(env, spec, nodes)
    a = env.process(fc.run(A2A, GiB, group, "p2p"))
    b = env.process(fc.run(A2A, GiB, group, "p2p"))
    env.run(a & b)
    assert env.now == pytest.approx(2 * alone, rel=1e-6)


def test_latency_counts_the_rounds() -> None:
    """p2p: ceil((k−1)/P) scale-up rounds and ceil((p−k)/P) network rounds of P peers in flight;
    pxn one scale-up hop more; hier_a2a ceil((n−1)/P) network rounds; pairwise p−1 steps."""
    spec = load_system("dgx-h100").spec
    P = int(spec.library.algorithm_params["p2p"]["peers_in_flight"])
    fc = FlowCollectives(simpy.Environment(), spec, 16)
    group = Group(16, 8)
    p, k, n = 128, 8, 16
    steps = {a: fc.schedule(a, A2A, group).steps for a in ALGOS}  # type: ignore[union-attr]
    up, net = LinkClass.SCALE_UP, LinkClass.NETWORK
    assert steps["p2p"] == {up: math.ceil((k - 1) / P), net: math.ceil((p - k) / P)}
    assert steps["pxn"] == {up: math.ceil((k - 1) / P) + 1, net: math.ceil((p - k) / P)}
    # no library lists hier_a2a: one peer at a time
    assert steps["hier_a2a"] == {up: k - 1, net: n - 1}
    assert steps["pairwise"] == {net: p - 1}


@pytest.mark.parametrize("name", ["dgx-h100", "atlas-800t-a2", "mlu370-x8"])
def test_more_bandwidth_never_slower(name: str) -> None:
    base = load_system(name).spec
    nic = dataclasses.replace(
        base, nics=dataclasses.replace(base.nics, bw_Bps=2 * base.nics.bw_Bps)
    )
    fab = dataclasses.replace(
        base, fabric=dataclasses.replace(base.fabric, link_bw_Bps=2 * base.fabric.link_bw_Bps)
    )
    for nodes in (2, 16):
        g = Group(nodes, base.devices_per_node)
        for algo in ALGOS:
            for size in (1e6, 1e9):
                try:
                    t0 = FlowCollectives(simpy.Environment(), base, nodes).predict(
                        A2A, size, g, algo
                    )
                except ValueError:
                    continue
                for faster in (nic, fab):
                    t1 = FlowCollectives(simpy.Environment(), faster, nodes).predict(
                        A2A, size, g, algo
                    )
                    assert t1.time_s <= t0.time_s * (1 + 1e-12), (algo, nodes, size)


def test_pxn_keeps_inter_node_traffic_on_its_rail() -> None:
    """On a rail-optimized fabric PXN's network flows never cross rails; p2p's do."""
    spec = load_system("dgx-h100").spec
    fc = FlowCollectives(simpy.Environment(), spec, 2)
    group = Group(2, 8)
    for algo, crosses in (("pxn", False), ("p2p", True)):
        sched = fc.schedule(algo, A2A, group)
        assert sched is not None and sched.cross_rail is crosses
        ph = sched.phases[0]
        remote = ph.src // 8 != ph.dst // 8
        assert bool(np.any(ph.src[remote] % 8 != ph.dst[remote] % 8)) is crosses


def test_pairwise_hash_collisions_show_only_on_real_pairs() -> None:
    """Per-flow hashing over a permutation collides on spine links: the real pairs of a
    pairwise all-to-all across rails are slower than a balanced spine; folded classes are dealt
    evenly over the spines (the documented limit of folding)."""
    spec = load_system("dgx-h100").spec
    group = Group(8, 8)
    hashed = FlowCollectives(simpy.Environment(), spec, 8).predict(A2A, GiB, group, "pairwise")
    balanced = FlowCollectives(simpy.Environment(), ideal(spec), 8).predict(
        A2A, GiB, group, "pairwise"
    )
    assert hashed.time_s > balanced.time_s


def test_collective_command_reports_alltoall_busbw() -> None:
    """``scaling collective --op all_to_all``: busbw = algbw · (n−1)/n, as nccl-tests."""
    import csv
    import io

    from click.testing import CliRunner

    from scaling.app.cli import main

    args = ["collective", "--system", "dgx-h100", "--nodes", "16", "--op", "all_to_all"]
    res = CliRunner().invoke(
        main, [*args, "--sizes", "1G", "--network", "analytic", "--format", "csv"]
    )
    assert res.exit_code == 0, res.output
    (row,) = list(csv.DictReader(io.StringIO(res.stdout)))
    algbw, busbw = float(row["algbw_GBps"]), float(row["busbw_GBps"])
    assert busbw == pytest.approx(algbw * 127 / 128, rel=1e-6)
    assert row["algorithm"] in ("p2p", "pxn")


# ---- uneven all-to-all (all_to_allv) ---------------------------------------------------------

V_ALGOS = ("direct", *ALGOS)


@pytest.mark.parametrize("name", ["dgx-h100", "atlas-800t-a2"])
def test_uniform_peer_sizes_are_the_all_to_all(name: str) -> None:
    """All-ones peer sizes move what the uniform all-to-all moves, in the same time."""
    spec = load_system(name).spec
    group = Group(4, spec.devices_per_node)
    uniform = PeerSizes(np.ones((group.size, group.size)))
    fc = FlowCollectives(simpy.Environment(), spec, 4)
    for algo in V_ALGOS:
        try:
            base = fc.predict(A2A, GiB, group, algo)
        except ValueError:
            continue
        v = fc.predict(A2A, GiB, group, algo, sizes=uniform)
        assert v.time_s == pytest.approx(base.time_s, rel=1e-9), algo
        assert v.wire_per_rank == pytest.approx(base.wire_per_rank, rel=1e-9), algo


def test_histogram_all_to_all_is_set_by_the_busiest_receiver() -> None:
    """p2p with a per-destination histogram h on NIC-bound DGX H100 nodes: every remote flow
    into rank d carries S·h_d/Σh and the NICs share evenly, so the bandwidth time per byte of
    S is (p−k)·max h/(Σh·B_nic): the uniform time × the imbalance p·max h/Σh."""
    spec = ideal(load_system("dgx-h100").spec)
    group = Group(4, 8)
    p, k = 32, 8
    rng = np.random.default_rng(7)
    h = rng.integers(1, 100, size=p).astype(float)
    fc = FlowCollectives(simpy.Environment(), spec, 4)
    b_nic, _ = _rates(fc)
    ch = fc.predict(A2A, GiB, group, "p2p", "Simple", PeerSizes.from_histogram(h))
    assert ch.bw_s_per_byte == pytest.approx((p - k) * h.max() / (h.sum() * b_nic), rel=1e-9)
    t, _ = run_alone(spec, 4, A2A, GiB, group, "p2p")  # the uniform one, for the ratio
    assert ch.time_s > t


@pytest.mark.parametrize("algo", V_ALGOS)
def test_more_skew_is_never_faster(algo: str) -> None:
    """Zipf-distributed destinations, exponent 0 (uniform) to 2: each step of skew makes the
    uneven all-to-all no faster (the busiest rank's share grows)."""
    spec = load_system("dgx-h100").spec
    group = Group(4, 8)
    fc = FlowCollectives(simpy.Environment(), spec, 4)
    ranks = np.arange(1, group.size + 1, dtype=float)
    times = []
    for s in (0.0, 0.5, 1.0, 1.5, 2.0):
        sizes = PeerSizes.from_histogram(ranks**-s)
        times.append(fc.predict(A2A, GiB, group, algo, sizes=sizes).time_s)
    assert all(b >= a * (1 - 1e-12) for a, b in itertools.pairwise(times)), times
    assert times[-1] > times[0]


def test_uneven_all_to_all_refuses_what_it_cannot_run() -> None:
    spec = load_system("dgx-h100").spec
    fc = FlowCollectives(simpy.Environment(), spec, 64)
    with pytest.raises(ValueError, match="up to 256 ranks"):
        fc.predict(A2A, GiB, Group(64, 8), "p2p", sizes=PeerSizes(np.ones((512, 512))))
    with pytest.raises(ValueError, match="peer sizes for 8 ranks, group of 16"):
        fc.predict(A2A, GiB, Group(2, 8), "p2p", sizes=PeerSizes(np.ones((8, 8))))
    with pytest.raises(ValueError, match="finite and >= 0"):
        PeerSizes(-np.ones((4, 4)))
    with pytest.raises(ValueError, match="square matrix"):
        PeerSizes(np.ones((4, 3)))
