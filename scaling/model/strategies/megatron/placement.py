"""Where Megatron's ranks sit: coordinates → devices, and the groups their collectives run on."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from scaling.model.comm.ops import Group

if TYPE_CHECKING:
    from scaling.model.strategies.megatron.spec import MegatronSpec


def rank_of(spec: MegatronSpec, d: int, tp: int, pp: int, dp: int, cp: int = 0) -> int:
    """Global rank (= device) of coordinates (tp, cp, pp, dp) under ``spec.order``: CP right
    after TP, as Megatron-LM's ``initialize_model_parallel`` order ``tp-cp-ep-dp-pp``
    (``megatron/core/parallel_state.py``) puts it, so that a CP ring stays as close as TP
    allows."""
    t, c, p = spec.tensor, spec.context, spec.pipeline
    inner = tp + t * cp
    if spec.order == "tp-dp-pp":
        return inner + t * c * (dp + d * pp)
    return inner + t * c * (pp + p * dp)


def dp_ranks(spec: MegatronSpec, d: int, pp: int, tp: int = 0) -> list[int]:
    """The ranks stage ``pp``'s gradients are reduced over: the data-parallel group *with*
    context parallelism (``parallel_state.get_data_parallel_group(with_context_parallel=True)``,
    which the DDP buffers and the distributed optimizer use), ``d·c`` ranks of TP lane ``tp``."""
    return [rank_of(spec, d, tp, pp, r, cp) for r in range(d) for cp in range(spec.context)]


def cp_ranks(spec: MegatronSpec, d: int, pp: int, dp: int = 0, tp: int = 0) -> list[int]:
    """The ``c`` ranks of one context-parallel ring (``t`` devices apart)."""
    return [rank_of(spec, d, tp, pp, dp, cp) for cp in range(spec.context)]


def group_of(
    devices: list[int], lanes: int, dpn: int, nodes: int, slot: int | None = None
) -> Group:
    """A :class:`Group` over ``devices`` (one lane) with up to ``lanes`` sibling lanes (the
    other TP ranks' groups on the same devices' nodes, local devices shifted by one).

    A set spaced evenly over nodes and local devices (a DP group under ``tp-pp-dp``: every
    ``t·c·p``-th rank) is the group it is, strides included, so it is priced on the links it
    really uses: the NICs of its own local devices, the spine where its nodes sit in several
    pods, the PCIe switches its devices sit under (``Group.of_ranks``). A set that is not
    evenly spaced falls back to :func:`_standin`.
    """
    try:
        g = Group.of_ranks(sorted(devices), dpn)
    except ValueError:
        return _standin(devices, lanes, dpn, nodes, slot)
    # siblings interleave with a strided group (at most its stride) and follow a contiguous
    # one block by block (as many as fit in the node)
    room = g.local_stride if g.local_stride > 1 else (dpn - g.local_base) // g.per_node
    return replace(g, lanes=max(1, min(lanes, room)))


def _standin(
    devices: list[int], lanes: int, dpn: int, nodes: int, slot: int | None = None
) -> Group:
    """A group of the shape of ``devices``: as many nodes and ranks per node as they span (the
    same number on each: the config refuses placements that straddle nodes unevenly,
    ``MegatronSpec.placement_error``), on consecutive nodes and local devices, the offsets'
    groups kept on disjoint blocks of nodes as the real ones are. ``slot``: the group's index
    among the groups (each with its lanes) that share its nodes; its stand-in then takes local
    devices ``slot·per_node·lanes`` on, so that the stand-ins of disjoint groups are disjoint."""
    node_ids = sorted({x // dpn for x in devices})
    n = len(node_ids)
    per_node = len(devices) // n
    counts = {i: 0 for i in node_ids}
    for x in devices:
        counts[x // dpn] += 1
    assert n * per_node == len(devices) and set(counts.values()) == {per_node}, (
        f"ranks {devices[:4]}… straddle nodes of {dpn} unevenly ({sorted(counts.values())})"
    )
    first = node_ids[0]
    stride = node_ids[1] - node_ids[0] if n > 1 else 1
    if stride > 1:
        # nodes first, first + stride, …: the groups of the stride's offsets are disjoint, and so
        # are their consecutive stand-ins, block by block
        first = (first % stride) * n
    first = min(first, nodes - n)
    local = min(x % dpn for x in devices if x // dpn == node_ids[0])
    if slot is not None:
        local = slot * per_node * lanes
    if local + per_node > dpn:
        local = dpn - per_node
    lanes = max(1, min(lanes, (dpn - local) // per_node))
    return Group(len(node_ids), per_node, first, local, lanes)


def p2p_group(a: int, b: int, lanes: int, dpn: int) -> Group:
    """The group a point-to-point send from device ``a`` to ``b`` runs on (as a two-rank
    broadcast): two neighbouring nodes, one rank each and ``lanes`` rails side by side, when it
    leaves the node; inside a node the pair of neighbours that straddles the boundary between the
    two devices' blocks (the same links a real send crosses between them)."""
    na, nb = a // dpn, b // dpn
    if na != nb:
        return Group(2, 1, min(na, nb), a % dpn, max(1, min(lanes, dpn - a % dpn)))
    lo = max(a % dpn, b % dpn)
    return Group(1, 2, na, lo - 1, 1)


def stage_of(spec: MegatronSpec, d: int, rank: int) -> int:
    """The pipeline stage of global rank ``rank`` under ``spec.order`` (``d`` replicas)."""
    tc, p = spec.tensor * spec.context, spec.pipeline
    if spec.order == "tp-dp-pp":
        return rank // (tc * d)
    return (rank // tc) % p
