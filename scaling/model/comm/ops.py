"""The vocabulary of communication, defined once: collective operations, communicator groups
and the nccl-tests bus-bandwidth factor (algorithm names: the registry of ``comm.algos``)."""

from __future__ import annotations

import itertools
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

    Rank ``i`` is local device ``local_base + (i % per_node)·local_stride`` of node
    ``first_node + (i // per_node)·node_stride``. ``lanes > 1`` stands for that many sibling
    communicators running the same collective at the same time, lane ``j`` on local devices
    shifted by ``j·per_node`` (contiguous groups: HSDP's replicate groups, local rank j of every
    node) or by ``j`` (strided groups: the siblings interleave); ``size`` is one lane's.

    Strides (default 1) describe groups that skip devices or nodes: the shard group {0, 2, 4, 6}
    of a (replicate=2, shard=4) ``DeviceMesh`` laid out shard-major, a Megatron DP group under
    ``tp-pp-dp``. Algorithms build their flows on :meth:`standin` (the same shape without the
    strides) and the planner moves them onto the real devices (:meth:`standin_devices` →
    :meth:`devices`), so a strided group is priced on the links it really uses.
    """

    nodes: int
    per_node: int
    first_node: int = 0
    local_base: int = 0
    lanes: int = 1
    node_stride: int = 1
    local_stride: int = 1

    @property
    def size(self) -> int:
        """Ranks in one lane of the group."""
        return self.nodes * self.per_node

    @property
    def strided(self) -> bool:
        """Whether the group skips nodes or local devices."""
        return self.node_stride > 1 or self.local_stride > 1

    @property
    def last_node(self) -> int:
        """The highest node the group reaches."""
        return self.first_node + (self.nodes - 1) * self.node_stride

    def _lane_step(self) -> int:
        return 1 if self.local_stride > 1 else self.per_node

    def lane(self, j: int) -> Group:
        """The ``j``-th sibling communicator on its own."""
        return Group(
            self.nodes,
            self.per_node,
            self.first_node,
            self.local_base + j * self._lane_step(),
            1,
            self.node_stride,
            self.local_stride,
        )

    def lane_of(self, device: int, devices_per_node: int) -> int:
        """Which sibling communicator (lane) local device of ``device`` belongs to."""
        off = device % devices_per_node - self.local_base
        return off % self.local_stride if self.local_stride > 1 else off // self.per_node

    def standin(self) -> Group:
        """The group with its strides removed (consecutive nodes from ``first_node``, local
        devices from ``local_base``; lanes kept): what the algorithms build their flows on."""
        return Group(self.nodes, self.per_node, self.first_node, self.local_base, self.lanes)

    def node_ids(self) -> np.ndarray:
        """The nodes of the group, in rank order."""
        return self.first_node + np.arange(self.nodes) * self.node_stride

    def local_ids(self) -> np.ndarray:
        """One lane's local devices, in rank order."""
        return self.local_base + np.arange(self.per_node) * self.local_stride

    def contains(self, device: int, devices_per_node: int) -> bool:
        """Whether global device ``device`` is a rank of this group (of any of its lanes)."""
        node, local = divmod(device, devices_per_node)
        if not self.strided:
            if not self.first_node <= node < self.first_node + self.nodes:
                return False
            return self.local_base <= local < self.local_base + self.per_node * self.lanes
        if node not in self.node_ids():
            return False
        return any(local in self.lane(j).local_ids() for j in range(self.lanes))

    def devices(self, devices_per_node: int) -> np.ndarray:
        """Global device ids of the ranks (one lane), in rank order."""
        n, local = self.node_ids(), self.local_ids()
        return (n[:, None] * devices_per_node + local[None, :]).reshape(-1)

    def standin_devices(self, devices_per_node: int) -> np.ndarray:
        """Global device ids of :meth:`standin`'s ranks (one lane), in rank order."""
        return self.standin().lane(0).devices(devices_per_node)

    @classmethod
    def of_ranks(cls, ranks: list[int], devices_per_node: int, lanes: int = 1) -> Group:
        """The group of global ``ranks`` (in rank order): the same local devices on every node
        it spans, nodes and local devices each evenly spaced; ``ValueError`` otherwise."""
        g = devices_per_node
        nodes = sorted({r // g for r in ranks})
        local = [r % g for r in ranks if r // g == nodes[0]]
        want = [n * g + x for n in nodes for x in local]
        node_steps = {b - a for a, b in itertools.pairwise(nodes)} or {1}
        local_steps = {b - a for a, b in itertools.pairwise(local)} or {1}
        if want != list(ranks) or len(node_steps) > 1 or len(local_steps) > 1:
            raise ValueError(
                f"ranks {list(ranks)[:8]} are not one evenly spaced set of local devices on "
                f"evenly spaced nodes of {g} devices"
            )
        return cls(
            len(nodes), len(local), nodes[0], local[0], lanes, node_steps.pop(), local_steps.pop()
        )


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
