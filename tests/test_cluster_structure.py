"""The cluster graph's structure cache (`scaling.model.comm.cluster`): reused only where the
graph is the same, never stale, and identical to a fresh build."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scaling.io.topology import load_system
from scaling.model.comm.cluster import ClusterNetwork, clear_structure_cache
from scaling.model.hardware.system import FabricKind, SystemSpec


def fresh(system: SystemSpec, nodes: int, seed: int = 0) -> ClusterNetwork:
    clear_structure_cache()
    net = ClusterNetwork(system, nodes, seed)
    assert not net.reused
    return net


def pairs(net: ClusterNetwork) -> list[tuple[int, int]]:
    n, g = net.n_devices, net.g
    return [(s, d) for s in range(0, n, 3) for d in ((s + 1) % n, (s + g) % n, n - 1 - s)]


def assert_same_graph(a: ClusterNetwork, b: ClusterNetwork) -> None:
    assert [lk.key for lk in a.links] == [lk.key for lk in b.links]
    assert [lk.cls for lk in a.links] == [lk.cls for lk in b.links]
    assert a.capacity().tobytes() == b.capacity().tobytes()
    assert [a.routes(s, d) for s, d in pairs(a)] == [b.routes(s, d) for s, d in pairs(b)]


def replace(spec: SystemSpec, part: str, **kw: object) -> SystemSpec:
    return dataclasses.replace(spec, **{part: dataclasses.replace(getattr(spec, part), **kw)})


@pytest.mark.parametrize("name", ["dgx-a100", "mlu370-x8"])
def test_capacity_change_reuses_the_structure_and_equals_a_fresh_build(name: str) -> None:
    base = load_system(name).spec
    nodes = 40  # several pods: spine links and hashed routes
    fresh(base, nodes)
    faster = replace(base, "nics", bw_Bps=2 * base.nics.bw_Bps, efficiency=0.5)
    faster = replace(faster, "fabric", link_efficiency=0.7)
    net = ClusterNetwork(faster, nodes)
    assert net.reused
    assert not np.array_equal(net.capacity(), ClusterNetwork(base, nodes).capacity())
    assert_same_graph(net, fresh(faster, nodes))


def test_seed_salts_routes_separately() -> None:
    base = load_system("dgx-a100").spec
    a = fresh(base, 64, seed=0)
    b = ClusterNetwork(base, 64, seed=1)
    assert b.reused  # same links, routes cached per seed
    assert [a.routes(s, d) for s, d in pairs(a)] != [b.routes(s, d) for s, d in pairs(b)]
    assert_same_graph(b, fresh(base, 64, seed=1))


def _structural_changes() -> list[tuple[str, str, SystemSpec, int]]:
    dgx, mlu = load_system("dgx-a100").spec, load_system("mlu370-x8").spec
    return [
        ("nodes", "dgx", dgx, 41),
        ("nics.count", "dgx", replace(dgx, "nics", count=4), 40),
        ("fabric.kind", "dgx", replace(dgx, "fabric", kind=FabricKind.FULL_MESH), 40),
        ("fabric.group_size", "mlu", replace(mlu, "fabric", group_size=2), 40),
        ("scale_out.nodes_per_leaf", "dgx", replace(dgx, "scale_out", nodes_per_leaf=8), 40),
        ("scale_out.oversubscription", "dgx", replace(dgx, "scale_out", oversubscription=2.0), 40),
        ("scale_out.rail_optimized", "dgx", replace(dgx, "scale_out", rail_optimized=False), 40),
        ("scale_out.ecmp", "dgx", replace(dgx, "scale_out", ecmp="ideal"), 40),
    ]


@pytest.mark.parametrize(
    ("field", "base", "changed", "nodes"),
    _structural_changes(),
    ids=[c[0] for c in _structural_changes()],
)
def test_a_structural_change_rebuilds(
    field: str, base: str, changed: SystemSpec, nodes: int
) -> None:
    original = load_system({"dgx": "dgx-a100", "mlu": "mlu370-x8"}[base]).spec
    warm = fresh(original, 40)
    for s, d in pairs(warm):  # fill the cached routes
        warm.routes(s, d)
    net = ClusterNetwork(changed, nodes)
    assert not net.reused, field
    assert_same_graph(net, fresh(changed, nodes))


def test_same_key_but_other_links_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    # even if the key missed a structural input, a build whose links differ takes no cache
    monkeypatch.setattr(ClusterNetwork, "structure_key", lambda self: ("always the same",))
    dgx = load_system("dgx-a100").spec
    fresh(dgx, 40)
    other = ClusterNetwork(replace(dgx, "nics", count=4), 40)
    assert not other.reused
    clear_structure_cache()
    assert_same_graph(other, ClusterNetwork(replace(dgx, "nics", count=4), 40))


@pytest.mark.parametrize("name", ["dgx-a100", "mlu370-x8", "atlas-800t-a2"])
@pytest.mark.parametrize("nodes", [1, 3])
def test_a_node_s_own_links_are_node_0_s_shifted_by_the_node_block(name: str, nodes: int) -> None:
    net = fresh(load_system(name).spec, nodes)
    g, block = net.g, net.node_block
    keys = [lk.key for lk in net.links]
    for n in range(nodes):
        own = keys[n * block : (n + 1) * block]
        assert [k[1] for k in own] == [n] * block
        assert [(k[0], *k[2:]) for k in own] == [(k[0], *k[2:]) for k in keys[:block]]
        for a in range(g):
            for b in range(g):
                if a != b:
                    (base,) = net.routes(a, b)
                    (route,) = net.routes(n * g + a, n * g + b)
                    assert route == tuple(i + n * block for i in base)


def test_structures_of_other_spines_have_a_fresh_build_s_keys_and_ids() -> None:
    """Samples that vary the spine (oversubscription, pod size) differ in the leaves' part
    only; each structure's keys and ids are still a fresh build's."""
    base = load_system("dgx-a100").spec
    variants = [
        replace(base, "scale_out", nodes_per_leaf=2, oversubscription=f) for f in (1.0, 3.0, 0.5)
    ] + [replace(base, "scale_out", nodes_per_leaf=3)]
    clear_structure_cache()
    shared = [ClusterNetwork(v, 7) for v in variants]
    for v, net in zip(variants, shared, strict=True):
        cold = fresh(v, 7)
        assert list(net._keys) == list(cold._keys) and dict(net._index) == dict(cold._index)
        assert list(net._index) == list(cold._index)
    assert len({len(n._keys) for n in shared}) > 1  # the leaves' part differs
