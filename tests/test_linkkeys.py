"""Link ids by arithmetic (`scaling.model.comm.linkkeys`): the mapping and key list a dict
built from the keys in build order would be, on every catalog topology."""

from __future__ import annotations

import glob
import os

import pytest

from scaling.io.topology import load_system
from scaling.model.comm.cluster import ClusterNetwork, clear_structure_cache
from scaling.model.comm.linkkeys import LinkIds, LinkKeys

TOPOLOGIES = sorted(os.path.basename(f)[:-5] for f in glob.glob("topologies/*.yaml"))


def listed(ids: LinkIds, parts, nodes: int, n_leaves: int, per_leaf: int):
    """The keys in build order and the dict of them, as they were built before (a list)."""
    keys = [(kind, n, *rest) for n in range(nodes) for kind, rest in parts]
    for leaf in range(n_leaves if per_leaf else 0):
        for sp in range(per_leaf):
            keys += [("l2s", leaf, sp), ("s2l", sp, leaf)]
    return keys, {k: i for i, k in enumerate(keys)}


@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("nodes", [1, 2, 9, 40])
def test_ids_and_keys_equal_a_dict_of_the_listed_keys(name: str, nodes: int) -> None:
    clear_structure_cache()
    net = ClusterNetwork(load_system(name).spec, nodes)
    parts, n, n_leaves, per_leaf = net._recipe
    keys, index = listed(net._index, parts, n, n_leaves, per_leaf)
    assert list(net._keys) == keys and len(net._keys) == len(keys) == len(net.links)
    assert [net._keys[i] for i in (-1, 0, len(keys) - 1)] == [keys[-1], keys[0], keys[-1]]
    assert dict(net._index) == index and list(net._index) == list(index)
    assert len(net._index) == len(index)
    assert all(net._index[k] == i for k, i in index.items())
    assert [lk.key for lk in net.links] == keys


def test_a_repeated_node_link_takes_its_last_position_and_unknown_keys_raise() -> None:
    parts = (("up", (0,)), ("dn", (0,)), ("up", (0,)), ("nic_tx", (0,)))
    ids = LinkIds(parts, 3, 2, 2)
    keys, index = listed(ids, parts, 3, 2, 2)
    assert dict(ids) == index and list(ids) == list(index) and len(ids) == len(index)
    assert list(LinkKeys(ids)) == keys
    assert ids[("up", 1, 0)] == 4 + 2 and ids[("s2l", 1, 0)] == 12 + 3
    for bad in [
        ("up", 3, 0),  # no node 3
        ("up", -1, 0),
        ("up", 0, 1),
        ("l2s", 2, 0),  # no leaf 2
        ("s2l", 2, 0),  # no spine 2
        ("l2s", 0),
        ("nic_rx", 0, 0),
        ("up",),
        (),
        ("up", "0", 0),
    ]:
        assert bad not in ids
        with pytest.raises(KeyError):
            ids[bad]
    with pytest.raises(IndexError):
        ids.key(len(keys))
    assert ids.get(("up", True, 0)) == index[("up", 1, 0)]  # as a dict: True == 1


def test_no_spine_tier_has_no_spine_links_and_node_kinds_cannot_be_the_spine_s() -> None:
    ids = LinkIds((("up", (0,)),), 4, 3, 0)
    assert len(ids) == 4 and ("l2s", 0, 0) not in ids
    with pytest.raises(ValueError, match="spine"):
        LinkIds((("l2s", (0,)),), 2, 0, 0)
