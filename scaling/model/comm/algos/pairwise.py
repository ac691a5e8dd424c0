"""Pairwise exchange all-to-all (HCCL's ``pairwise``; MPI's pairwise-exchange all-to-all).

``p−1`` rounds one after another; in round ``r`` rank ``i`` sends its ``S/p`` share to rank
``i + r`` and receives from ``i − r`` (Thakur, Rabenseifner & Gropp, IJHPCA 2005, §4.4). HCCL
lists ``pairwise`` among its ``HCCL_ALGO`` options for AlltoAll/AlltoAllV/AlltoAllVC only
(reference/huawei_hccl_algorithms.csv, "HCCL_ALGO level1 options"): one peer at a time, so no
endpoint is ever flooded by many senders at once, at the price of rounds that cannot overlap
the scale-up and the network transfers.

Uncontended time: ``Σ_rounds max over the round's flows of (S/p)/rate`` — with one NIC per
device every round that crosses nodes is NIC-bound, ``(p−1)/p · S / B_nic`` on several nodes.
Rounds whose flows are alike (same local permutation, same near/far pod pattern) run as one
phase of their summed bytes: sequential identical rounds take, uncontended, exactly the sum of
their times. Latency: ``p−1`` steps, on the network once the group spans nodes.
"""

from __future__ import annotations

import numpy as np

from scaling.model.comm.algos.base import (
    Algorithm,
    NotApplicable,
    Phase,
    Schedule,
    phase_of_arrays,
    register,
)
from scaling.model.comm.algos.exchange import concat, folds, v_pairs
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import LinkClass


@register
class Pairwise(Algorithm):
    """Pairwise exchange: one peer per round, ``p−1`` rounds."""

    name = "pairwise"
    ops = frozenset({CollectiveOp.ALL_TO_ALL})

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """``p−1`` sequential rounds (alike rounds merged)."""
        if op is not CollectiveOp.ALL_TO_ALL:
            raise NotApplicable("pairwise exists for all_to_all")
        p, n = group.size, group.nodes
        devs = group.devices(plan.g)
        if folds(group):
            phases = _folded_rounds(plan, group)
        else:
            ranks = np.arange(p)
            phases = tuple(
                phase_of_arrays(devs, devs[(ranks + r) % p], np.full(p, 1.0 / p))
                for r in range(1, p)
            )
        cls = LinkClass.NETWORK if n > 1 else plan.intra_class
        return Schedule(self.name, phases, {cls: float(p - 1)}, (p - 1) / p, n > 1)

    def schedule_v(self, plan: Planner, group: Group, sizes: PeerSizes) -> Schedule:
        """The uneven all-to-all: round ``r`` carries each rank's share for rank ``i + r``;
        a round ends with its largest share's flow."""
        w = v_pairs(plan, group, sizes)  # refuses groups too large for real pairs
        p, n = group.size, group.nodes
        devs = group.devices(plan.g)
        weights = sizes.weights / p
        ranks = np.arange(p)
        phases = []
        for r in range(1, p):
            coeff = weights[ranks, (ranks + r) % p]
            keep = coeff > 0
            if keep.any():
                dst = devs[(ranks + r) % p]
                phases.append(phase_of_arrays(devs[keep], dst[keep], coeff[keep]))
        cls = LinkClass.NETWORK if n > 1 else plan.intra_class
        wire = float(w.coeff.sum()) / p
        return Schedule(self.name, tuple(phases), {cls: float(p - 1)}, wire, n > 1)


def _folded_rounds(plan: Planner, group: Group) -> tuple[Phase, ...]:
    """The rounds grouped by their folded flows: rank ``(i, x)`` sends in round ``r`` to local
    rank ``(x + r) mod k`` of node ``i + (x + r) // k``; a round's folded flows depend on
    ``r mod k`` and on which nodes' partners sit in another pod for the two node offsets
    ``r // k`` and ``r // k + 1``."""
    n, k, p = group.nodes, group.per_node, group.size
    devs = group.devices(plan.g).reshape(n, k)
    npl = plan.system.scale_out.nodes_per_leaf
    pod = (group.first_node + np.arange(n)) // npl
    offs = np.arange(n)
    far = pod[None, :] != pod[(np.arange(n)[None, :] + offs[:, None]) % n]  # [offset, node]
    _, cls = np.unique(far, axis=0, return_inverse=True)
    cls = cls.reshape(-1).astype(np.int64)
    cls[0] = -1  # offset 0: inside the node
    r = np.arange(1, p)
    s, q = r % k, r // k
    keys = np.stack([s, cls[q % n], cls[(q + 1) % n]], axis=1)
    _, first, counts = np.unique(keys, axis=0, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    phases = []
    for u in order.tolist():
        rr, cnt = int(r[first[u]]), int(counts[u])
        x = np.arange(k)
        off = ((x + rr) // k) % n
        y = (x + rr) % k
        parts = []
        for xi, oi, yi in zip(x.tolist(), off.tolist(), y.tolist(), strict=True):
            src = devs[:, xi]
            coeff = np.full(n, cnt / p)
            one = np.ones(n, dtype=np.int64)
            if oi == 0:
                parts.append(Phase(src, devs[:, yi], coeff, one))
            else:
                code = np.where(far[oi], 2, 1).astype(np.int8)
                parts.append(Phase(src, devs[:, yi], coeff, one, code))
        phases.append(concat(*parts))
    return tuple(phases)
