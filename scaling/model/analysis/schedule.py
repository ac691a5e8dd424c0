"""The collective schedule of one rank in one step: what it issued, in issue order.

This is the form in which a user checks the simulator against their own PyTorch job, collective
by collective (``scaling schedule``; ``tools/record_torch_schedule.py`` records the same form
from real PyTorch). Sizes follow the torch.distributed buffers: all-reduce and broadcast the
tensor, all-gather the gathered output, reduce-scatter the full input.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from scaling.model.comm.ops import Group
from scaling.model.simulation import Timeline

#: torch dtype names (``str(tensor.dtype)`` without ``torch.``) -> the names used here
TORCH_DTYPES = {
    "float32": "fp32",
    "float16": "fp16",
    "bfloat16": "bf16",
    "int32": "int32",
    "int64": "int64",
    "float64": "fp64",
}


def rank_schedule(timeline: Timeline, step: int, rank: int = 0) -> list[dict[str, Any]]:
    """Collectives ``rank`` issued in ``step``, in issue order, one dict each (JSON-ready).

    Keys: ``op``, ``bytes`` (int), ``dtype``, ``group_size``, ``group`` (the global ranks of
    ``rank``'s process group), ``phase``, ``micro_batch``, plus the
    strategy's own (``bucket`` {index, params} for DDP, ``unit`` for FSDP) and ``label``. Needs a
    timeline recorded with ``trace=True``.
    """
    if not timeline.details and timeline.collectives:
        raise ValueError("rank_schedule needs a timeline recorded with trace=True")
    # identical ranks were simulated once: rank 0's calls stand for every rank's
    who = rank if timeline.all_ranks else 0
    calls = sorted(
        (r for r in timeline.rank_collectives(who) if r.key.step == step), key=lambda r: r.issue
    )
    return [
        {
            "op": r.op.value,
            "bytes": round(r.nbytes),
            "dtype": r.dtype,
            "group_size": r.group.size,
            "group": group_ranks(r.group, rank, timeline.devices_per_node),
            "phase": r.key.phase,
            "micro_batch": r.key.micro,
            **timeline.details.get(r.key, {}),
            "label": r.key.label,
        }
        for r in calls
    ]


def group_ranks(group: Group, rank: int, devices_per_node: int) -> list[int]:
    """Global ranks of the communicator of ``group`` that ``rank`` belongs to (its lane).

    A group recorded for rank 0 standing for every identical rank (a node's shard group, a
    k-rank block of it, a strided group's sibling) is moved to the node and block of ``rank``.
    """
    if not group.contains(rank, devices_per_node):
        group = _sibling(group, rank, devices_per_node)
    for j in range(group.lanes):
        devs = [int(d) for d in group.lane(j).devices(devices_per_node)]
        if rank in devs:
            return devs
    return [int(d) for d in group.lane(0).devices(devices_per_node)]


def _sibling(group: Group, rank: int, devices_per_node: int) -> Group:
    """The group of ``group``'s shape (strides and lanes included) that holds ``rank``: groups
    of one shape tile the cluster from device 0 in blocks of ``nodes·node_stride`` nodes and
    ``per_node·local_stride`` (strided, one per offset) or ``per_node·lanes`` (contiguous)
    local devices."""
    node, local = divmod(rank, devices_per_node)
    span = group.nodes * group.node_stride
    first = (node // span) * span + node % group.node_stride
    if group.local_stride > 1:
        width = group.per_node * group.local_stride
        base = (local // width) * width + local % group.local_stride
        return replace(group, first_node=first, local_base=base, lanes=1)
    width = group.per_node * group.lanes
    base = (local // width) * width + group.local_base % width
    return replace(group, first_node=first, local_base=base)
