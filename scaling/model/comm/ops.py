"""The vocabulary of communication, defined once: collective operations, communicator groups
and the nccl-tests bus-bandwidth factor (algorithm names: the registry of ``comm.algos``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class CollectiveOp(StrEnum):
    """A collective operation (torch.distributed names)."""

    ALL_REDUCE = "all_reduce"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_GATHER = "all_gather"
    BROADCAST = "broadcast"
    ALL_TO_ALL = "all_to_all"


def busbw_factor(op: CollectiveOp, n: int) -> float:
    """nccl-tests bus-bandwidth factor: busbw = algbw · factor."""
    if op is CollectiveOp.ALL_REDUCE:
        return 2.0 * (n - 1) / n
    if op is CollectiveOp.BROADCAST:
        return 1.0
    return (n - 1) / n


@dataclass(frozen=True, slots=True)
class Group:
    """A communicator of ``nodes × per_node`` ranks laid out node by node.

    Rank ``i`` is local device ``local_base + i % per_node`` of node ``first_node + i //
    per_node``. ``lanes > 1`` stands for that many sibling communicators running the same
    collective at the same time, lane ``j`` on local devices shifted by ``j`` (HSDP's replicate
    groups: local rank j of every node); ``size`` is one lane's.
    """

    nodes: int
    per_node: int
    first_node: int = 0
    local_base: int = 0
    lanes: int = 1

    @property
    def size(self) -> int:
        """Ranks in one lane of the group."""
        return self.nodes * self.per_node

    def lane(self, j: int) -> Group:
        """The ``j``-th sibling communicator on its own."""
        return Group(
            self.nodes, self.per_node, self.first_node, self.local_base + j * self.per_node
        )

    def contains(self, device: int, devices_per_node: int) -> bool:
        """Whether global device ``device`` is a rank of this group (of any of its lanes)."""
        node, local = divmod(device, devices_per_node)
        if not self.first_node <= node < self.first_node + self.nodes:
            return False
        return self.local_base <= local < self.local_base + self.per_node * self.lanes

    def devices(self, devices_per_node: int) -> np.ndarray:
        """Global device ids of the ranks, in rank order."""
        n = np.arange(self.first_node, self.first_node + self.nodes)
        local = self.local_base + np.arange(self.per_node)
        return (n[:, None] * devices_per_node + local[None, :]).reshape(-1)
