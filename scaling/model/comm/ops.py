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


class PeerSizes:
    """The per-peer sizes of an uneven all-to-all (``all_to_allv``).

    ``weights[s, d]`` is what rank ``s`` sends rank ``d`` in units of ``S/p``, ``S`` being the
    call's size: all ones is the uniform all-to-all; the diagonal (a rank's share for itself)
    moves nothing. Equal weights compare equal (a content digest), so schedules memoise on them.
    """

    __slots__ = ("_key", "weights")

    def __init__(self, weights: np.ndarray) -> None:
        w = np.array(weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 2:
            raise ValueError(f"peer sizes: a square matrix of at least 2 ranks, got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("peer sizes: every weight finite and >= 0")
        w.setflags(write=False)
        self.weights = w
        self._key = hash(w.tobytes())

    @classmethod
    def from_histogram(cls, counts: np.ndarray) -> PeerSizes:
        """Every rank sends to rank ``d`` in proportion to ``counts[d]`` (tokens routed to the
        experts of rank ``d``), its buffer ``S`` in all: ``weights[s, d] = p·counts[d]/Σcounts``."""
        c = np.asarray(counts, dtype=np.float64).reshape(-1)
        if c.size < 2 or not np.all(np.isfinite(c)) or np.any(c < 0) or c.sum() <= 0:
            raise ValueError("peer sizes: a histogram of >= 2 non-negative counts, not all 0")
        return cls(np.tile(c.size * c / c.sum(), (c.size, 1)))

    @property
    def ranks(self) -> int:
        """Ranks of the group the sizes are for."""
        return int(self.weights.shape[0])

    def __hash__(self) -> int:
        return self._key

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PeerSizes)
            and self._key == other._key
            and np.array_equal(self.weights, other.weights)
        )
