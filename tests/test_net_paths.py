"""Routes between nodes computed for many pairs at once (``ClusterNetwork.net_paths``, issue
29) are exactly the per-pair :meth:`ClusterNetwork.routes`: the same links in the same order,
the same NIC pairings and the same ECMP spine under every salt; and a shared routing
(``shared.Routing``) that learns a phase through them holds the per-pair routes of every
entry (between nodes, inside a node, to itself, folded near and far)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scaling.io.topology import load_system
from scaling.model.comm import shared
from scaling.model.comm.algos import Phase
from scaling.model.comm.cluster import ClusterNetwork, _ecmp, _ecmp_array
from scaling.model.hardware.system import SystemSpec

SALTS = [0, 7, 2**40 + 3, -5]


def _variant(name: str, **so: object) -> SystemSpec:
    """System ``name`` with its NIC count (``nics``) and leaf-spine fields replaced."""
    spec = load_system(name).spec
    nics = so.pop("nics", None)
    if nics is not None:
        spec = dataclasses.replace(spec, nics=dataclasses.replace(spec.nics, count=nics))
    return dataclasses.replace(spec, scale_out=dataclasses.replace(spec.scale_out, **so))


SYSTEMS = {
    "dgx-a100": _variant("dgx-a100"),
    "dgx-h100": _variant("dgx-h100"),
    "mlu370-x8": _variant("mlu370-x8"),
    "atlas-800t-a2": _variant("atlas-800t-a2"),
    # small pods, so pairs cross the spine: oversubscribed (fewer spines) and fat (more)
    "dgx-a100 spine 3:1": _variant("dgx-a100", nodes_per_leaf=2, oversubscription=3.0),
    "mlu370-x8 spine 1:2": _variant("mlu370-x8", nodes_per_leaf=2, oversubscription=0.5),
    "dgx-a100 ideal": _variant("dgx-a100", nodes_per_leaf=2, ecmp="ideal"),
    "mlu370-x8 ideal": _variant("mlu370-x8", nodes_per_leaf=3, ecmp="ideal"),
    # more NICs than devices (a device's transfer split over its NICs), and fewer on rails
    "dgx-a100 16 NICs": _variant("dgx-a100", nics=16, nodes_per_leaf=2),
    "dgx-h100 3 NICs": _variant("dgx-h100", nics=3, nodes_per_leaf=2),
    "mlu370-x8 5 NICs": _variant("mlu370-x8", nics=5, nodes_per_leaf=2, rail_optimized=True),
}


@pytest.mark.parametrize("name", list(SYSTEMS))
@pytest.mark.parametrize("nodes", [2, 5])
def test_net_paths_are_the_per_pair_routes(name: str, nodes: int) -> None:
    for salt in SALTS:
        net = ClusterNetwork(SYSTEMS[name], nodes, salt)
        n = net.n_devices
        src, dst = np.divmod(np.arange(n * n, dtype=np.int64), n)
        across = src // net.g != dst // net.g
        src, dst = src[across], dst[across]
        paths, count = net.net_paths(src, dst)
        assert count.size == src.size and int(count.sum()) == len(paths)
        at = 0
        for s, d, k in zip(src.tolist(), dst.tolist(), count.tolist(), strict=True):
            assert tuple(paths[at : at + k]) == net.routes(s, d), (name, nodes, salt, s, d)
            at += k


def test_net_paths_in_any_order_and_the_spine_varies_with_the_salt() -> None:
    spec = SYSTEMS["dgx-a100 spine 3:1"]
    spines = set()
    for salt in SALTS:
        net = ClusterNetwork(spec, 9, salt)
        rng = np.random.default_rng(salt % 97)
        src = rng.integers(0, net.n_devices, 500)
        dst = (src + net.g * rng.integers(1, net.nodes, 500)) % net.n_devices
        paths, count = net.net_paths(src, dst)
        assert bool((count == 1).all())
        assert paths == [
            net.routes(s, d)[0] for s, d in zip(src.tolist(), dst.tolist(), strict=True)
        ]
        spines.add(tuple(p[1] for p in paths if len(p) == 4))  # the uplinks taken
    assert len(spines) == len(SALTS)  # each salt picks other spines


def test_net_paths_refuses_a_pair_inside_a_node() -> None:
    net = ClusterNetwork(SYSTEMS["dgx-a100"], 2)
    with pytest.raises(ValueError, match="cross nodes"):
        net.net_paths(np.array([0, 1]), np.array([9, 2]))


def test_the_hash_of_many_pairs_is_the_hash_of_each() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2**20, 2000), rng.integers(0, 2**20, 2000)
    for salt in [*SALTS, 2**64 + 11, -(2**70)]:
        for n in (1, 3, 16):
            want = [_ecmp(x, y, n, salt) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
            assert _ecmp_array(a, b, n, salt).tolist() == want


@pytest.mark.parametrize("name", ["dgx-a100 spine 3:1", "mlu370-x8 spine 1:2", "dgx-a100 16 NICs"])
def test_a_routing_learns_every_entry_as_its_per_pair_routes(name: str) -> None:
    shared.clear_structure_cache()
    net = ClusterNetwork(SYSTEMS[name], 5, 11)
    g, n = net.g, net.n_devices
    src, dst, fold = [], [], []
    for s in range(0, n, 3):
        for d in (s, (s + 1) % g + s // g * g, (s + g) % n, (s + 3 * g + 2) % n, n - 1 - s):
            src.append(s)
            dst.append(d)
            fold.append(0)
        for f in (1, 2):  # folded: dst is a device of src's node
            src.append(s)
            dst.append(s // g * g + (s + 1) % g)
            fold.append(f)
    k = len(src)
    phase = Phase(
        np.array(src), np.array(dst), np.ones(k), np.ones(k, dtype=np.int64), np.array(fold)
    )
    # learn a part first, so the second phase mixes known and new entries
    first = Phase(
        phase.src[::4], phase.dst[::4], phase.coeff[::4], phase.mult[::4], phase.fold[::4]
    )
    routing = shared.routing_of(net)
    routing.phase_paths(first, net)
    pp = routing.phase_paths(phase, net)
    want = []
    for s, d, f in zip(src, dst, fold, strict=True):
        want += net.routes(s, d) if f == 0 else net.folded_routes(s, d, f == 2)
    assert [routing.links[gid] for gid in pp.flow.tolist()] == want
    assert len(set(routing.links)) == len(routing.links) == len(routing.ids)
