"""Flows of an all-to-all exchange, real or folded, shared by the all-to-all algorithms.

An all-to-all moves ``S/p`` from every rank to every other: ``p²`` flows, 16.7 million at 4,096
ranks. Inside a node the ``k(k−1)`` pairs per node are kept as they are; between nodes the
exchange is symmetric (every node sends the same pattern to every other node), so above
:data:`FOLD_ABOVE` ranks the flows from one device to one local index on all other nodes
become one *folded* class per (source, destination local index, same pod / other pod) whose
multiplicity is the number of peers (:class:`~scaling.model.comm.algos.base.Phase`'s
``fold``): ``2·n·k²`` entries instead of ``n(n−1)k²``, and every link carries the load the real
flows put on it (``ClusterNetwork.folded_routes`` mirrors the receiving half onto the sender's
node). Below the threshold the real pairs run (per-flow ECMP hashing included).

Layout: rank ``i·k + x`` is local device ``local_base + x`` of node ``first_node + i``
(:class:`~scaling.model.comm.ops.Group`).
"""

from __future__ import annotations

import math

import numpy as np

from scaling.model.comm.algos.base import NotApplicable, Phase
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import Group, PeerSizes

__all__ = [
    "FOLD_ABOVE",
    "V_MAX_RANKS",
    "concat",
    "folds",
    "intra_pairs",
    "peer_rounds",
    "peers_in_flight",
    "remote_pairs",
    "v_pairs",
    "v_rail",
]

#: groups of more ranks than this fold their inter-node flows (Direct's p² limit)
FOLD_ABOVE = 64
#: an uneven all-to-all is not symmetric (no folding): its real pairs, up to this many ranks
V_MAX_RANKS = 256


def folds(group: Group) -> bool:
    """Whether the group's inter-node flows run folded (more than :data:`FOLD_ABOVE` ranks on
    several nodes)."""
    return group.size > FOLD_ABOVE and group.nodes > 1


def _devices(plan: Planner, group: Group) -> np.ndarray:
    """Global device ids as an [n, k] array (node, local rank)."""
    return group.devices(plan.g).reshape(group.nodes, group.per_node)


def intra_pairs(plan: Planner, group: Group, coeff: float) -> Phase:
    """Every ordered pair of distinct ranks of one node, on every node, ``coeff`` each."""
    devs = _devices(plan, group)
    k = group.per_node
    x, y = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    m = x != y
    src = devs[:, x[m]].reshape(-1)
    dst = devs[:, y[m]].reshape(-1)
    one = np.ones(src.size, dtype=np.int64)
    return Phase(src, dst, np.full(src.size, coeff), one)


def remote_pairs(plan: Planner, group: Group, coeff: np.ndarray, fold: bool) -> Phase:
    """Flows from every rank ``(i, x)`` to every rank ``(j, y)`` of another node, ``coeff[x,
    y]`` bytes per byte of S each (0: none), real or folded (module docstring)."""
    devs = _devices(plan, group)
    n = devs.shape[0]
    xs, ys = np.nonzero(coeff > 0)
    c = coeff[xs, ys]
    if n < 2 or not xs.size:
        z = np.zeros(0, dtype=np.int64)
        return Phase(z, z, np.zeros(0), z)
    if not fold:
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        m = i != j
        i, j = i[m], j[m]
        src = devs[i[:, None], xs[None, :]].reshape(-1)
        dst = devs[j[:, None], ys[None, :]].reshape(-1)
        one = np.ones(src.size, dtype=np.int64)
        return Phase(src, dst, np.tile(c, i.size), one)
    near, far = pod_peers(plan, group)
    srcs, dsts, cs, ms, fs = [], [], [], [], []
    for code, mult in ((1, near), (2, far)):
        keep = mult > 0
        if not keep.any():
            continue
        nodes = np.flatnonzero(keep)
        srcs.append(devs[nodes[:, None], xs[None, :]].reshape(-1))
        dsts.append(devs[nodes[:, None], ys[None, :]].reshape(-1))
        cs.append(np.tile(c, nodes.size))
        ms.append(np.repeat(mult[nodes], xs.size))
        fs.append(np.full(nodes.size * xs.size, code, dtype=np.int8))
    return Phase(
        np.concatenate(srcs),
        np.concatenate(dsts),
        np.concatenate(cs),
        np.concatenate(ms).astype(np.int64),
        np.concatenate(fs),
    )


def pod_peers(plan: Planner, group: Group) -> tuple[np.ndarray, np.ndarray]:
    """Per node of the group: how many other nodes of the group share its pod (leaf), and how
    many sit in other pods."""
    npl = plan.system.scale_out.nodes_per_leaf
    nodes = group.first_node + np.arange(group.nodes)
    pod = nodes // npl
    _, inv, counts = np.unique(pod, return_inverse=True, return_counts=True)
    near = counts[inv] - 1
    return near.astype(np.int64), (group.nodes - 1 - near).astype(np.int64)


def concat(*phases: Phase) -> Phase:
    """Several phases' flows as one phase (they run at once)."""
    fold = None
    if any(p.fold is not None for p in phases):
        fold = np.concatenate(
            [p.fold if p.fold is not None else np.zeros(p.src.size, np.int8) for p in phases]
        )
    return Phase(
        np.concatenate([p.src for p in phases]),
        np.concatenate([p.dst for p in phases]),
        np.concatenate([p.coeff for p in phases]),
        np.concatenate([p.mult for p in phases]),
        fold,
    )


def peers_in_flight(value: float) -> int:
    """A library's ``peers_in_flight`` as a count: rounded to the nearest whole peer, at least
    one (the uncertainty sampler draws it from a continuous range)."""
    return max(1, round(value))


def peer_rounds(peers: int, in_flight: int) -> int:
    """Sequential rounds to reach ``peers`` peers, ``in_flight`` at a time."""
    return math.ceil(peers / max(1, in_flight)) if peers > 0 else 0


def _v_weights(group: Group, sizes: PeerSizes) -> np.ndarray:
    """The per-pair weights as coefficients (bytes per byte of S), diagonal zeroed; refuses
    groups above :data:`V_MAX_RANKS`."""
    if group.size > V_MAX_RANKS:
        raise NotApplicable(
            f"uneven all-to-all runs its {group.size}² real pairs: up to {V_MAX_RANKS} ranks"
        )
    w = sizes.weights / group.size
    w = w.copy()
    np.fill_diagonal(w, 0.0)
    return w


def v_pairs(plan: Planner, group: Group, sizes: PeerSizes) -> Phase:
    """Every rank to every other its ``weights[s, d]·S/p`` at once (zero pairs dropped)."""
    w = _v_weights(group, sizes)
    devs = group.devices(plan.g)
    s, d = np.nonzero(w > 0)
    return Phase(devs[s], devs[d], w[s, d], np.ones(s.size, dtype=np.int64))


def v_rail(plan: Planner, group: Group, sizes: PeerSizes) -> tuple[Phase, Phase]:
    """An uneven all-to-all relayed through the rail peer (PXN, hierarchical): inside each
    node ``x → y`` carries ``x``'s shares for every rank of local index ``y`` (its own node's
    included); between nodes ``(i, y) → (j, y)`` carries node ``i``'s shares for ``(j, y)``."""
    w = _v_weights(group, sizes)
    n, k = group.nodes, group.per_node
    devs = group.devices(plan.g).reshape(n, k)
    w4 = w.reshape(n, k, n, k)  # [src node, src local, dst node, dst local]
    intra = w4.sum(axis=2)  # [i, x, y]: all that x of node i has for local index y
    ii, xx, yy = np.nonzero(intra * (1 - np.eye(k))[None, :, :] > 0)
    gather = Phase(devs[ii, xx], devs[ii, yy], intra[ii, xx, yy], np.ones(ii.size, dtype=np.int64))
    rail = np.einsum("ixjy->iyj", w4)  # [i, y, j]: node i's shares for (j, y)
    ii, yy, jj = np.nonzero(rail * (1 - np.eye(n))[:, None, :] > 0)
    net = Phase(devs[ii, yy], devs[jj, yy], rail[ii, yy, jj], np.ones(ii.size, dtype=np.int64))
    return gather, net
