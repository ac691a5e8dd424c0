"""NHR: HCCL's nonuniform hierarchical ring as its inter-server (level-1) algorithm
(``HCCL_ALGO`` ``level1:NHR``): ⌈log2 n⌉ steps between n servers on any server count.

The step rule is HCCL's own (``ReduceScatterNHR::GetStepInfo``, CANN HCCL open source,
zhuxy-USTC/HCCL @3b445c61 src/domain/collective_communication/algorithm/base/alg_template/
temp_reduce_scatter/reduce_scatter_nhr.cc; the same formula in hcomm's
``InsTempReduceScatterNHR::GetStepInfoList``): at reduce-scatter step ``s`` each participant
sends to the one ``2^s`` before it ``⌊(n − 1 + 2^s) / 2^(s+1)⌋`` slices of ``1/n``; the
slices sum to ``n − 1``, so each sends ``(n−1)/n`` of the data, as a ring does. The all-gather
runs the same steps in reverse, the data flowing back (``AllGatherNHR::GetStepInfo``). The
largest step goes to the nearest neighbour (hicann/hccl docs/en/user_guide/coll_algo_intro/
NHR.md: "the maximum communication traffic is concentrated between physically adjacent
nodes"), where Bruck (NB) sends its largest step farthest. Cost (NHR.md Table 1; reference/
collective_cost_models.csv NHR rows): reduce-scatter / all-gather ⌈log2 p⌉α + (p−1)/p·nβ,
all-reduce twice that.

On several servers of k ranks HCCL runs two levels (hicann/hccl docs coll_algo_intro/
algo_intro.md "Hierarchical Communication Principle", Atlas A2 table): all-reduce = intra-server
reduce-scatter → inter-server all-reduce of the server's ``S/k`` shard per local index (rail) →
intra-server all-gather; reduce-scatter = intra then inter; all-gather = inter then intra (the
order of hicann/hccl Pipeline.md: same-index cards across servers first, then inside the
server). Inside the server the level-0 algorithm of the fabric (Mesh on a full mesh).
"""

from __future__ import annotations

import numpy as np

from scaling.model.comm.algos.base import Algorithm, NotApplicable, Phase, Schedule, register
from scaling.model.comm.algos.hierarchical import intra_server_phase
from scaling.model.comm.algos.planner import Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LinkClass

AG, RS, AR = CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_REDUCE


def nhr_steps(m: int) -> list[tuple[int, int]]:
    """NHR's reduce-scatter steps on ``m`` participants, in order: (distance to the peer it
    sends to, slices of ``1/m`` sent). ``⌈log2 m⌉`` steps whose slices sum to ``m − 1``."""
    return [(1 << s, (m - 1 + (1 << s)) // (1 << (s + 1))) for s in range((m - 1).bit_length())]


def nhr_rail_phases(plan: Planner, group: Group, share: float, op: CollectiveOp) -> list[Phase]:
    """NHR reduce-scatter (``op`` RS) or all-gather (AG) steps between the nodes of ``group``,
    one rail per local index (local rank ``d`` exchanges with local rank ``d`` of the other
    nodes), each rail carrying ``share`` of S."""
    n, k, g = group.nodes, group.per_node, plan.g
    local = group.local_base + np.arange(k)
    src = ((group.first_node + np.arange(n))[:, None] * g + local[None, :]).ravel()
    phases = []
    for dist, slices in nhr_steps(n):
        peer = (
            (group.first_node + (np.arange(n) - dist) % n)[:, None] * g + local[None, :]
        ).ravel()
        coeff = np.full(src.size, slices / n * share)
        ones = np.ones(src.size, np.int64)
        # all-gather: the same step with the data flowing back (to the one 2^s after)
        phases.append(Phase(src, peer, coeff, ones) if op is RS else Phase(peer, src, coeff, ones))
    return phases if op is RS else phases[::-1]


def two_level(
    plan: Planner,
    op: CollectiveOp,
    group: Group,
    inter_rs: list[Phase],
    inter_ag: list[Phase],
    inter_steps: float,
    name: str,
) -> Schedule:
    """HCCL's two-level schedule of ``op`` around inter-server phases that move ``1/k`` of S
    per rail (:func:`nhr_rail_phases` with ``share = 1/k``): level 0 inside servers as
    :func:`~scaling.model.comm.algos.hierarchical.intra_server_phase`; ``inter_steps`` network
    steps per inter-server reduce-scatter or all-gather."""
    n, k = group.nodes, group.per_node
    inter_wire = (n - 1) / n / k
    if k == 1:
        alone = {AG: inter_ag, RS: inter_rs, AR: [*inter_rs, *inter_ag]}[op]
        mult = 2.0 if op is AR else 1.0
        return Schedule(
            name, tuple(alone), {LinkClass.NETWORK: mult * inter_steps}, mult * inter_wire
        )
    ph_intra, intra_steps = intra_server_phase(plan, group)
    intra_wire = (k - 1) / k
    if op is AR:
        both = (ph_intra, *inter_rs, *inter_ag, ph_intra)
        steps = {plan.intra_class: 2.0 * intra_steps, LinkClass.NETWORK: 2.0 * inter_steps}
        return Schedule(name, both, steps, 2.0 * (intra_wire + inter_wire))
    half = (ph_intra, *inter_rs) if op is RS else (*inter_ag, ph_intra)
    steps = {plan.intra_class: intra_steps, LinkClass.NETWORK: inter_steps}
    return Schedule(name, half, steps, intra_wire + inter_wire)


@register
class NonuniformHierarchicalRing(Algorithm):
    """HCCL's two-level scheme with NHR between servers."""

    name = "nhr"
    ops = frozenset({AG, RS, AR})

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """See the module: level 0 inside servers, NHR steps between them."""
        n, k = group.nodes, group.per_node
        if n < 2:
            raise NotApplicable("NHR is an inter-server algorithm: two or more servers")
        rs = nhr_rail_phases(plan, group, 1.0 / k, RS)
        ag = nhr_rail_phases(plan, group, 1.0 / k, AG)
        return two_level(plan, op, group, rs, ag, float(len(rs)), self.name)
