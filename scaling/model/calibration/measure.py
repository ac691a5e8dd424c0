"""A measured collective, and the one place calibration asks the simulator what a collective costs.

:func:`predict_times` is the adapter: everything in :mod:`scaling.model.calibration` prices a
collective through it, and it uses only the library tuner's public cost interface
(:meth:`~scaling.model.comm.flowcoll.FlowCollectives.cost`, the ``CollectiveCostModel`` protocol):
the uncontended time of the algorithm/protocol the tuner picks — what ``scaling collective``
prints and nccl-tests measures (one collective alone on the cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import simpy

from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group, busbw_factor
from scaling.model.hardware.system import SystemSpec


@dataclass(frozen=True, slots=True)
class Measurement:
    """One row of a collective benchmark table.

    Attributes:
        op: the collective.
        nodes: nodes in the group.
        per_node: ranks per node.
        size_B: message size as nccl-tests counts it (all-gather: the gathered size), bytes.
        time_s: measured time of one call, s.
        line: the row's line in its table (1-based; 0 if none), for messages.
    """

    op: CollectiveOp
    nodes: int
    per_node: int
    size_B: int
    time_s: float
    line: int = 0

    @property
    def ranks(self) -> int:
        """Ranks in the group."""
        return self.nodes * self.per_node

    @property
    def busbw_GBps(self) -> float:
        """nccl-tests bus bandwidth of the measurement, GB/s."""
        return busbw_GBps(self.op, self.ranks, self.size_B, self.time_s)


def busbw_GBps(op: CollectiveOp, ranks: int, size_B: float, time_s: float) -> float:
    """nccl-tests bus bandwidth (GB/s) of one call of ``size_B`` bytes taking ``time_s`` s."""
    return size_B * busbw_factor(op, ranks) / time_s / 1e9


def time_from_busbw(op: CollectiveOp, ranks: int, size_B: float, busbw: float) -> float:
    """The call time (s) that gives bus bandwidth ``busbw`` (GB/s): the inverse of
    :func:`busbw_GBps`."""
    return size_B * busbw_factor(op, ranks) / (busbw * 1e9)


def predict_times(
    system: SystemSpec, op: CollectiveOp, nodes: int, per_node: int, sizes: Sequence[float]
) -> list[tuple[float, str]]:
    """The simulator's uncontended time (s) of ``op`` for each size (bytes) on ``nodes`` ×
    ``per_node`` ranks of ``system``, and the ``algorithm/protocol`` its library's tuner chose.

    The only dependency of calibration on the collective model: one cluster network per call,
    priced by the tuner (``FlowCollectives.cost``), as ``scaling collective`` and ``scaling
    validate`` price nccl-tests rows. Raises ``ValueError`` where the library has no algorithm
    for the op on this group."""
    fc = FlowCollectives(simpy.Environment(), system, nodes)
    group = Group(nodes, per_node)
    out = []
    for s in sizes:
        c = fc.cost(op, float(s), group)
        out.append((c.time_s, c.algorithm))
    return out


def predict_rows(system: SystemSpec, rows: Sequence[Measurement]) -> list[tuple[float, str]]:
    """:func:`predict_times` of each measurement (one network per op and group shape)."""
    out: list[tuple[float, str] | None] = [None] * len(rows)
    shapes: dict[tuple[CollectiveOp, int, int], list[int]] = {}
    for i, r in enumerate(rows):
        shapes.setdefault((r.op, r.nodes, r.per_node), []).append(i)
    for (op, nodes, per_node), idx in shapes.items():
        got = predict_times(system, op, nodes, per_node, [rows[i].size_B for i in idx])
        for i, g in zip(idx, got, strict=True):
            out[i] = g
    return [g for g in out if g is not None]
