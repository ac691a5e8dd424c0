"""Collectives at scale (issue 13): NCCL's double binary tree, NICs ≠ devices, ECMP modes."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import simpy

from scaling.io.errors import ConfigError, read_yaml, validate
from scaling.io.topology import SystemSchema, bundled_topology_dir, load_system
from scaling.model.comm.algos import Planner
from scaling.model.comm.algos.trees import btree_parent, dtree_parents
from scaling.model.comm.cluster import ClusterNetwork
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group, busbw_factor
from scaling.model.hardware.system import SystemSpec

AR = CollectiveOp.ALL_REDUCE


def _children(parents: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for r, p in enumerate(parents):
        if p >= 0:
            out.setdefault(p, []).append(r)
    return {p: sorted(c) for p, c in out.items()}


def test_trees_are_the_ones_drawn_in_nccl_trees_cc() -> None:
    # The two figures above ncclGetDtree (src/graph/trees.cc): 12 ranks mirror, 13 ranks shift.
    t0, t1 = dtree_parents(12)
    assert _children(t0) == {0: [8], 8: [4, 10], 4: [2, 6], 2: [1, 3], 6: [5, 7], 10: [9, 11]}
    assert t1.index(-1) == 11
    assert _children(t1) == {11: [3], 3: [1, 7], 1: [0, 2], 7: [5, 9], 5: [4, 6], 9: [8, 10]}
    t0, t1 = dtree_parents(13)
    assert _children(t0)[8] == [4, 12] and _children(t0)[12] == [10]
    assert t1.index(-1) == 1
    assert _children(t1)[1] == [9] and _children(t1)[9] == [0, 5] and _children(t1)[0] == [11]
    assert btree_parent(1, 0) == -1


def test_dtree_no_rank_has_more_than_four_tree_neighbours() -> None:
    for n in range(2, 1025):
        deg = [0] * n
        for parents in dtree_parents(n):
            assert sum(p < 0 for p in parents) == 1, n  # one root
            for r, p in enumerate(parents):
                if p >= 0:
                    assert 0 <= p < n and p != r
                    deg[r] += 1
                    deg[p] += 1
        # each tree edge carries S/2 each way: ≤ 4 neighbours is ≤ 2·S per node and direction
        assert max(deg) <= 4, n


@pytest.mark.parametrize("nodes", [2, 3, 5, 8, 13, 64, 100, 512, 1024])
def test_tree_nic_load_per_node_is_at_most_two_s(nodes: int) -> None:
    system = load_system("dgx-h100").spec
    sched = Planner(system, system.library.channels).build("tree", AR, Group(nodes, 8))
    g = system.devices_per_node
    tx = [0.0] * nodes
    rx = [0.0] * nodes
    (ph,) = sched.phases
    for a, b, c, m in zip(ph.src, ph.dst, ph.coeff, ph.mult, strict=True):
        if a // g != b // g:
            tx[a // g] += c * m
            rx[b // g] += c * m
    assert max(tx) <= 2.0 + 1e-9 and max(rx) <= 2.0 + 1e-9
    assert sum(tx) == pytest.approx(sum(rx))


def _busbw(system: SystemSpec, nodes: int, nbytes: float, algorithm=None, seed: int = 0) -> float:
    fc = FlowCollectives(simpy.Environment(), system, nodes, seed)
    g = Group(nodes, system.devices_per_node)
    ch = fc.predict(AR, nbytes, g, algorithm)
    return nbytes * busbw_factor(AR, g.size) / ch.time_s


def _sixteen_nics(system: SystemSpec) -> SystemSpec:
    nics = dataclasses.replace(system.nics, count=16, bw_Bps=system.nics.bw_Bps / 2)
    return dataclasses.replace(system, nics=nics)


@pytest.mark.parametrize("algorithm", ["ring", "tree"])
@pytest.mark.parametrize("nodes", [4, 64])
def test_sixteen_200g_nics_match_eight_400g(nodes: int, algorithm: str) -> None:
    base = load_system("dgx-h100").spec
    wide = _sixteen_nics(base)
    a = _busbw(base, nodes, 2.0**32, algorithm)
    b = _busbw(wide, nodes, 2.0**32, algorithm)
    assert b == pytest.approx(a, rel=0.02)


def test_a_device_spreads_over_its_own_nics() -> None:
    wide = _sixteen_nics(load_system("dgx-h100").spec)
    net = ClusterNetwork(wide, 2)
    paths = net.routes(3, 8 + 3)
    names = [[net.links[i].name for i in p] for p in paths]
    assert [n[0] for n in names] == ["nic_tx/0/6", "nic_tx/0/7"]
    assert [n[-1] for n in names] == ["nic_rx/1/6", "nic_rx/1/7"]
    # fewer NICs than devices: one path, the device's PCIe neighbour
    mlu = ClusterNetwork(load_system("mlu370-x8").spec, 2)
    assert len(mlu.routes(5, 8 + 5)) == 1


def _ecmp(system: SystemSpec, mode: str) -> SystemSpec:
    return dataclasses.replace(system, scale_out=dataclasses.replace(system.scale_out, ecmp=mode))


def test_ecmp_hash_follows_the_seed_and_ideal_bounds_it() -> None:
    base = load_system("mlu370-x8").spec
    nodes, nbytes = 256, 2.0**30  # 16 leaves: the ring crosses the spine
    hashed = [_busbw(base, nodes, nbytes, "ring", seed) for seed in range(4)]
    ideal = _busbw(_ecmp(base, "ideal"), nodes, nbytes, "ring")
    print(
        f"\nring busbw, MLU370-X8 x{nodes}: hash by seed {[round(h / 1e9, 2) for h in hashed]}"
        f" GB/s, ideal {ideal / 1e9:.2f} GB/s"
    )
    assert len(set(hashed)) > 1  # replicas differ in their collisions
    assert all(h <= ideal * (1 + 1e-12) for h in hashed)
    # same seed, same routes (determinism)
    assert _busbw(base, nodes, nbytes, "ring", 2) == hashed[2]
    # ideal does not depend on the seed
    assert _busbw(_ecmp(base, "ideal"), nodes, nbytes, "ring", 3) == ideal


def test_ecmp_field_is_validated() -> None:
    raw = read_yaml(bundled_topology_dir() / "mlu370-x8.yaml", "topology")[0]
    assert raw["scale_out"]["ecmp"] == "hash"
    bad = copy.deepcopy(raw)
    bad["scale_out"]["ecmp"] = "random"
    with pytest.raises(ConfigError, match="ecmp"):
        validate(SystemSchema, bad, "mlu370-x8.yaml", None)


def test_batch_path_registration_gives_the_one_by_one_ids() -> None:
    from scaling.engine.maxmin import MaxMinSolver

    paths = [(0, 1), (2,), (0, 1), (), (3, 1, 2), (2,), (4, 0)]
    one, many = MaxMinSolver([1.0] * 5), MaxMinSolver([1.0] * 5)
    ids = [one.register(p) for p in paths[:3]]
    many_ids = many.register_many(paths[:3]).tolist()
    assert ids == many_ids == [0, 1, 0]
    assert [one.register(p) for p in paths[3:]] == many.register_many(paths[3:]).tolist()
    for pid in range(one.n_paths):
        assert one.path_links(pid).tolist() == many.path_links(pid).tolist()
    with pytest.raises(ValueError):
        many.register_many([(1, 1)])
    with pytest.raises(ValueError):
        many.register_many([(9,)])
