"""A cluster's link keys and ids by arithmetic, never listed (issue 29).

:class:`~scaling.model.comm.cluster.ClusterNetwork` numbers its links in build order: node by
node the same block of node links (the fabric's, then each NIC's), then each leaf's uplink and
downlink to every spine. So a key's id follows from the key: node ``n``'s link ``(kind, n,
*rest)`` is ``n × block + (kind, *rest)``'s position in the block, and a leaf's ``("l2s",
leaf, spine)`` / ``("s2l", spine, leaf)`` is ``2 × (leaf × spines per leaf + spine)`` (+ 1 for
the downlink) after the nodes' links. :class:`LinkIds` answers both ways (key → id as a
mapping, id → key as :meth:`LinkIds.key`) without making the ~25,000 keys of a 512-node
cluster (200,000 at 4,096 nodes) as tuples and a dict: those were most of a cold cluster
build, and their allocation set off full garbage collections in a start-up-sized heap.

The mapping is the one a dict built from the keys in build order would be — the same ids
(where a key repeats, its last position), the same keys in the same order.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import overload

#: the leaf-spine link kinds (a leaf's uplink to a spine, a spine's downlink to a leaf)
SPINE_KINDS = ("l2s", "s2l")


class LinkIds(Mapping[tuple[object, ...], int]):
    """Link id by key (a mapping) and key by id (:meth:`key`) of a cluster's recipe.

    ``parts``: one node's links in build order as (kind, rest of the key after the node);
    ``nodes``: node count; ``n_leaves`` leaves with ``per_leaf`` spine links each way (0: no
    spine tier)."""

    __slots__ = ("_first", "_leaf_base", "_n", "_n_leaves", "_nodes", "_parts", "_per_leaf", "pos")

    def __init__(
        self,
        parts: tuple[tuple[str, tuple[object, ...]], ...],
        nodes: int,
        n_leaves: int,
        per_leaf: int,
    ) -> None:
        if any(kind in SPINE_KINDS for kind, _ in parts):
            raise ValueError(f"node link kinds must not be the spine's {SPINE_KINDS}")
        self._parts = parts
        self._nodes = nodes
        self._n_leaves = n_leaves if per_leaf else 0
        self._per_leaf = per_leaf
        #: a node link's position in the block by (kind, *rest) (the last where one repeats)
        self.pos: dict[tuple[object, ...], int] = {(k, *r): i for i, (k, r) in enumerate(parts)}
        # the distinct node links in first appearance (a dict's key order)
        self._first = tuple(dict.fromkeys((k, *r) for k, r in parts))
        self._leaf_base = nodes * len(parts)
        self._n = self._leaf_base + 2 * self._n_leaves * per_leaf

    @property
    def block(self) -> int:
        """Links per node."""
        return len(self._parts)

    @property
    def leaf_base(self) -> int:
        """The id of leaf 0's uplink to spine 0 (the first spine link)."""
        return self._leaf_base

    @property
    def n_links(self) -> int:
        """Links in build order, repeats included (ids are ``0 … n_links − 1``)."""
        return self._n

    def spine_link(self, up: bool, leaf: int, spine: int) -> int:
        """The id of ``("l2s", leaf, spine)`` (``up``) or ``("s2l", spine, leaf)``."""
        return self._leaf_base + 2 * (leaf * self._per_leaf + spine) + (0 if up else 1)

    def __getitem__(self, key: tuple[object, ...]) -> int:
        try:
            kind = key[0]
            if kind in SPINE_KINDS:
                if len(key) == 3:
                    a, b = operator.index(key[1]), operator.index(key[2])  # type: ignore[arg-type]
                    leaf, sp = (a, b) if kind == "l2s" else (b, a)
                    if 0 <= leaf < self._n_leaves and 0 <= sp < self._per_leaf:
                        return self.spine_link(kind == "l2s", leaf, sp)
            elif len(key) >= 2:
                n = operator.index(key[1])  # type: ignore[arg-type]
                if 0 <= n < self._nodes:
                    return n * len(self._parts) + self.pos[(kind, *key[2:])]
        except (TypeError, KeyError, IndexError):
            pass
        raise KeyError(key)

    def __len__(self) -> int:
        return self._nodes * len(self._first) + 2 * self._n_leaves * self._per_leaf

    def __iter__(self) -> Iterator[tuple[object, ...]]:
        for n in range(self._nodes):
            for kind, *rest in self._first:
                yield (kind, n, *rest)
        for leaf in range(self._n_leaves):
            for sp in range(self._per_leaf):
                yield ("l2s", leaf, sp)
                yield ("s2l", sp, leaf)

    def key(self, i: int) -> tuple[object, ...]:
        """The key of link id ``i`` (its build position)."""
        if not 0 <= i < self._n:
            raise IndexError(i)
        if i < self._leaf_base:
            n, p = divmod(i, len(self._parts))
            kind, rest = self._parts[p]
            return (kind, n, *rest)
        j, down = divmod(i - self._leaf_base, 2)
        leaf, sp = divmod(j, self._per_leaf)
        return ("s2l", sp, leaf) if down else ("l2s", leaf, sp)


class LinkKeys(Sequence[tuple[object, ...]]):
    """Every link's key in build order (repeats included), made when asked for."""

    __slots__ = ("_ids",)

    def __init__(self, ids: LinkIds) -> None:
        self._ids = ids

    def __len__(self) -> int:
        return self._ids.n_links

    @overload
    def __getitem__(self, i: int) -> tuple[object, ...]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[object, ...]]: ...
    def __getitem__(self, i: int | slice) -> tuple[object, ...] | list[tuple[object, ...]]:
        if isinstance(i, slice):
            return [self._ids.key(j) for j in range(*i.indices(len(self)))]
        return self._ids.key(i + len(self) if i < 0 else i)
