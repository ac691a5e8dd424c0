"""Two-level all-reduce: intra-server reduce-scatter, inter-server all-reduce of S/g per rail,
intra-server all-gather (HCCL's recommended multi-server scheme)."""

from __future__ import annotations

from scaling.model.comm.algos.base import (
    Algorithm,
    NotApplicable,
    Phase,
    Schedule,
    phase_of_edges,
    register,
)
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LinkClass


@register
class Hierarchical(Algorithm):
    """Hierarchical all-reduce across nodes of several ranks."""

    name = "hierarchical"
    ops = frozenset({CollectiveOp.ALL_REDUCE})

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """Intra-node ring reduce-scatter → inter-node ring all-reduce of S/g (one ring per
        local index, i.e. per rail) → intra-node ring all-gather."""
        if op is not CollectiveOp.ALL_REDUCE or group.nodes < 2 or group.per_node < 2:
            raise NotApplicable("hierarchical all-reduce needs several nodes of several ranks")
        n, k, g = group.nodes, group.per_node, plan.g
        ph_intra, intra_steps = intra_server_phase(plan, group)
        inter: list[tuple[int, int, float]] = []
        for d in range(k):
            for i in range(n):
                a = (group.first_node + i) * g + group.local_base + d
                b = (group.first_node + (i + 1) % n) * g + group.local_base + d
                inter.append((a, b, 2.0 * (n - 1) / n / k))
        steps = {plan.intra_class: 2.0 * intra_steps, LinkClass.NETWORK: 2.0 * (n - 1)}
        wire = 2.0 * (k - 1) / k + 2.0 * (n - 1) / n / k
        return Schedule("hierarchical", (ph_intra, phase_of_edges(inter), ph_intra), steps, wire)


def intra_server_phase(plan: Planner, group: Group) -> tuple[Phase, float]:
    """Level 0 of a two-level collective: the reduce-scatter (or all-gather) inside each node
    of ``group``, as one phase, and its sequential steps. On a fabric whose devices exchange
    with every peer at once (HCCL's intra-server Mesh) one step; else the channels' rings,
    ``k − 1`` steps."""
    n, k, g = group.nodes, group.per_node, plan.g
    intra: list[tuple[int, int, float]] = []
    mesh = plan.fabric.mesh_exchange
    for i in range(n):
        node = group.first_node + i
        if mesh:
            # HCCL's intra-server Mesh: every rank exchanges its 1/k share with each peer.
            base = node * g + group.local_base
            intra += [(base + a, base + b, 1.0 / k) for a in range(k) for b in range(k) if a != b]
            continue
        sub = Group(1, k, node, group.local_base)
        for c in range(plan.channels):
            order = plan.ring_order(sub, c)
            for j in range(k):
                intra.append((order[j], order[(j + 1) % k], (k - 1) / k / plan.channels))
    return phase_of_edges(intra), 1.0 if mesh else float(k - 1)
