"""NCCL's binary and double binary trees (src/graph/trees.cc) and their network edges."""

from __future__ import annotations

import numpy as np


def btree_parent(nranks: int, rank: int) -> int:
    """Parent of ``rank`` in NCCL's binary tree over ``nranks`` (root 0: −1).

    NCCL's ``ncclGetBtree`` (src/graph/trees.cc): a rank's lowest set bit ``b`` fixes its
    level; its parent is ``(rank ^ b) | (b << 1)``, or ``rank ^ b`` where that is out of range.
    Odd ranks are the leaves; rank 0 is the root, with one child.
    """
    if rank == 0:
        return -1
    bit = 1
    while bit < nranks and not bit & rank:
        bit <<= 1
    up = (rank ^ bit) | (bit << 1)
    return rank ^ bit if up >= nranks else up


def dtree_parents(n: int) -> tuple[list[int], list[int]]:
    """Parents of each rank in NCCL's two complementary trees over ``n`` ranks (root: −1).

    ``ncclGetDtree`` (src/graph/trees.cc): the first tree is :func:`btree_parent`'s; the second
    is its mirror (rank r ↔ n−1−r) when n is even, or the same tree shifted by one rank when n
    is odd. Either way the interior ranks of one tree are leaves of the other, so each rank sends
    and receives at most 2·S over the two halves of the data.
    """
    first = [btree_parent(n, r) for r in range(n)]
    if n % 2 == 0:
        second = []
        for r in range(n):
            u = btree_parent(n, n - 1 - r)
            second.append(-1 if u < 0 else n - 1 - u)
    else:
        second = []
        for r in range(n):
            u = btree_parent(n, (r - 1) % n)
            second.append(-1 if u < 0 else (u + 1) % n)
    return first, second


def dtree_parent_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`dtree_parents` as int64 arrays, computed without a loop per rank (the tree of a
    4,096-rank all-reduce is built per cold structure): :func:`btree_parent`'s rule on every
    rank at once, since a rank's lowest set bit ``r & -r`` is below ``n``."""
    r = np.arange(n, dtype=np.int64)

    def parents(ranks: np.ndarray) -> np.ndarray:
        bit = ranks & -ranks
        up = (ranks ^ bit) | (bit << 1)
        return np.where(ranks == 0, -1, np.where(up >= n, ranks ^ bit, up))

    first = parents(r)
    if n % 2 == 0:
        u = parents(n - 1 - r)
        second = np.where(u < 0, -1, n - 1 - u)
    else:
        u = parents((r - 1) % n)
        second = np.where(u < 0, -1, (u + 1) % n)
    return first, second


def add_tree_edges(
    srcs: list[np.ndarray],
    dsts: list[np.ndarray],
    coeffs: list[np.ndarray],
    trees: list[np.ndarray],
    heads: np.ndarray,
    per_ch: float,
    weights: list[np.ndarray] | None = None,
    times: int = 1,
) -> None:
    """Append one channel's network edges of NCCL's double binary tree: for each tree (node
    ``i``'s parent ``parents[i]``, -1 at the root), every child-parent pair of head devices
    ``heads[i]`` both ways (reduce up, broadcast down, pipelined), each tree carrying half of
    the channel's share ``per_ch`` of the data. ``weights`` (optional): where given, each
    edge's weight ``times`` is appended to it (:func:`~scaling.model.comm.algos.base.phase_of_arrays`)."""
    for parents in trees:
        child = np.flatnonzero(parents >= 0)
        c_dev, p_dev = heads[child], heads[parents[child]]
        srcs.append(np.stack([c_dev, p_dev], axis=1).ravel())
        dsts.append(np.stack([p_dev, c_dev], axis=1).ravel())
        coeffs.append(np.full(2 * child.size, per_ch / 2))
        if weights is not None:
            weights.append(np.full(2 * child.size, times, dtype=np.int64))
