"""The collective-algorithm interface: phases of flows, a latency rule, and a registry by name.

A phase is a set of flows ``(src device, dst device, bytes = coeff · S)`` that run concurrently;
a phase ends when its slowest flow ends. An algorithm instance on a group (:class:`Schedule`) is
a sequence of phases and a number of sequential steps per link class (its latency term). One
step costs the library's software latency for that class plus the hardware latency of the hop
it crosses (:func:`~scaling.model.comm.algos.latency.hop_latency_s`): latency lives here, per
step, not in the flow engine, whose links carry bandwidth only. Pipelined algorithms (ring,
tree, chain broadcast) are one phase whose flows carry the total bytes each link sees over the
whole collective — so the uncontended time of a ring all-reduce is exactly
``2(p−1)·α + 2(p−1)/p · S/B`` — and their step count carries the latency.

S follows nccl-tests: the per-rank buffer for all-reduce and broadcast, the full gathered size
for all-gather / reduce-scatter, the per-rank send buffer for all-to-all.

An algorithm is one :class:`Algorithm` subclass in its own module plus :func:`register`; the
constants it reads from the library file are declared in :attr:`Algorithm.params` (the io layer
refuses an undeclared one and requires the required ones), so a library's ``algorithm_params``
section carries each with its source, confidence and range.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from scaling.model.comm.algos.latency import latency_s
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec

if TYPE_CHECKING:
    from scaling.model.comm.algos.planner import Planner

__all__ = [
    "Algorithm",
    "NotApplicable",
    "Param",
    "Phase",
    "Schedule",
    "algorithm",
    "algorithm_names",
    "register",
]


@dataclass(frozen=True, slots=True)
class Phase:
    """Concurrent flows: ``src``/``dst`` global device ids, ``coeff`` bytes per byte of S, and
    ``mult`` identical flows per entry (several channels between the same two devices are
    separate flows: each gets its own max-min share).

    ``fold`` (optional, one code per entry) aggregates a symmetric exchange: 0 is a real pair;
    1 and 2 stand for ``mult`` flows from ``src`` to the devices of ``dst``'s local index on the
    *other nodes* of the group in ``src``'s pod (1) or in other pods (2), ``dst`` being a device
    of ``src``'s own node, each routed with its far half mirrored onto ``src``'s node
    (:meth:`ClusterNetwork.folded_routes <scaling.model.comm.cluster.ClusterNetwork.folded_routes>`).
    Exact in link loads where every node sends the same pattern (a uniform all-to-all), and
    ``O(p)`` entries instead of ``p²``."""

    src: np.ndarray
    dst: np.ndarray
    coeff: np.ndarray
    mult: np.ndarray
    fold: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """An algorithm instance on a group: its phases and its latency steps per link class."""

    algorithm: str
    phases: tuple[Phase, ...]
    steps: dict[LinkClass, float] = field(default_factory=dict)
    wire_per_rank: float = 0.0  # bytes each rank sends per byte of S
    cross_rail: bool = False  # network flows join NICs of different local indices (rails)


def phase_of_edges(edges: list[tuple[int, int, float]]) -> Phase:
    """Flows as a phase; identical (src, dst, bytes) flows become one entry with a multiplicity
    (first-seen order, so the result is deterministic)."""
    acc: dict[tuple[int, int, float], int] = {}
    for e in edges:
        acc[e] = acc.get(e, 0) + 1
    if not acc:
        z = np.zeros(0, dtype=np.int64)
        return Phase(z, z, np.zeros(0), z)
    keys = list(acc)
    a = np.array(keys, dtype=np.float64)
    return Phase(
        a[:, 0].astype(np.int64),
        a[:, 1].astype(np.int64),
        a[:, 2],
        np.array([acc[k] for k in keys], dtype=np.int64),
    )


def phase_of_arrays(
    src: np.ndarray, dst: np.ndarray, coeff: np.ndarray, weight: np.ndarray | None = None
) -> Phase:
    """:func:`phase_of_edges` for flows given as arrays (large groups: no Python loop per flow); the
    same entries in the same first-seen order. ``weight`` (optional, ≥ 1 each): how many flows
    each row stands for, its count in the entry's multiplicity (default 1 each): the phase of
    the rows each repeated ``weight`` times in place — or of any row list that only adds
    repeats of rows seen before (a channel whose flows an earlier channel has), which has the
    same entries in the same first-seen order."""
    if not src.size:
        z = np.zeros(0, dtype=np.int64)
        return Phase(z, z, np.zeros(0), z)
    # one integer key per (src, dst, coeff): a 1-D sort is far faster than a row-wise one
    c0 = coeff[0]
    if bool((coeff == c0).all()):
        # one coefficient (every flow of a pipelined ring or tree): np.unique's answer
        # without its sort (only the count of values and each flow's index are used)
        n_vals, cidx = 1, np.zeros(coeff.size, dtype=np.int64)
    else:
        cvals, cidx = np.unique(coeff, return_inverse=True)
        n_vals = cvals.size
    span = int(max(src.max(), dst.max())) + 1
    key = (src.astype(np.int64) * span + dst.astype(np.int64)) * n_vals + cidx
    # np.unique(key, return_index=True, return_counts=True) by its own method (a stable sort:
    # each key's first row leads its run), with the counts summed over ``weight``
    perm = np.argsort(key, kind="stable")
    sk = key[perm]
    starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
    first = perm[starts]
    if weight is None:
        counts = np.diff(np.append(starts, key.size))
    else:
        counts = np.add.reduceat(np.asarray(weight, dtype=np.int64)[perm], starts)
    order = np.argsort(first, kind="stable")
    keep = first[order]
    return Phase(
        src[keep].astype(np.int64),
        dst[keep].astype(np.int64),
        coeff[keep].astype(np.float64),
        counts[order].astype(np.int64),
    )


@dataclass(frozen=True, slots=True)
class Param:
    """A constant an algorithm reads from the library file's ``algorithm_params.<name>``.

    Attributes:
        unit: the file unit's size in SI (``us`` → 1e-6: the model reads seconds), 1 for a
            plain number.
        required: a library listing the algorithm must give it; else absent means ``default``.
        default: the value (SI) where the library does not give it.
        per_protocol: one value per protocol of the library (a mapping protocol name → value).
        integer: a count (refused unless a whole number).
    """

    unit: float = 1.0
    required: bool = True
    default: float = 0.0
    per_protocol: bool = False
    integer: bool = False


class Algorithm(ABC):
    """One collective algorithm: where it exists, its phases of flows, its latency rule and its
    protocol limits. Every hook but :meth:`schedule` has a default; a subclass fills what its
    rule differs in. Instances are stateless (one per name in the registry)."""

    #: the name library files and ``--algo`` use
    name: ClassVar[str]
    #: the operations it exists for (others: :class:`NotApplicable` before :meth:`schedule`)
    ops: ClassVar[frozenset[CollectiveOp]] = frozenset(CollectiveOp)
    #: the library runs it with the Simple protocol only (NCCL's NVLS, NVLSTree, PAT)
    simple_only: ClassVar[bool] = False
    #: constants read from the library file (``algorithm_params.<name>.<key>``)
    params: ClassVar[dict[str, Param]] = {}
    #: most ranks, all sibling lanes together, of a call the tuner picks it for on its own
    #: (None: no bound); naming the algorithm still prices and runs it (direct: p² flows
    #: per lane, all at once, retire one by one at their distinct max-min rates)
    max_call_ranks: ClassVar[int | None] = None

    @abstractmethod
    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        """Its phases and latency steps for ``op`` on ``group``; raises :class:`NotApplicable`
        where it does not exist (group shape, fabric)."""

    def schedule_v(self, plan: Planner, group: Group, sizes: PeerSizes) -> Schedule:
        """Its phases for an uneven all-to-all (``all_to_allv``) of ``sizes`` on ``group``;
        by default it has none (:class:`NotApplicable`)."""
        raise NotApplicable(f"{self.name} has no uneven all-to-all")

    def allows_protocol(self, proto: LibraryProtocol, candidates: int) -> bool:
        """Whether it runs with ``proto`` when the tuner has ``candidates`` protocols to try
        (a library of one protocol runs everything with it)."""
        return not self.simple_only or proto.name.lower() == "simple" or candidates <= 1

    def latency_s(
        self, system: SystemSpec, proto: LibraryProtocol, group: Group, sched: Schedule
    ) -> float:
        """Latency term of one call, s: by default the library's call overhead + the protocol's
        base latency + Σ steps × (step latency + hop latency) (:func:`latency.latency_s`)."""
        return latency_s(system, proto, group, sched.steps, cross_rail=sched.cross_rail)

    def efficiency(self, system: SystemSpec, op: CollectiveOp, group: Group) -> float:
        """Share of its flows' uncontended bandwidth it reaches (≤ 1); 1 by default."""
        return 1.0

    def bandwidth_floor_s(
        self,
        system: SystemSpec,
        op: CollectiveOp,
        nbytes: float,
        proto: LibraryProtocol,
        ramp: float,
    ) -> float:
        """A lower bound on its bandwidth time that is not a link's (a switch's reduction
        rate), s; 0 by default. ``ramp``: the library's size efficiency at ``nbytes``."""
        return 0.0

    # ---- helpers for subclasses ---------------------------------------------------------
    def param(self, system: SystemSpec, key: str, proto: LibraryProtocol | None = None) -> float:
        """The library's value of declared constant ``key`` (SI; per protocol where declared
        so), or its default where the library does not give it."""
        spec = self.params[key]
        sub = f"{key}.{proto.name}" if spec.per_protocol and proto is not None else key
        return system.library.algorithm_params.get(self.name, {}).get(sub, spec.default)


class NotApplicable(Exception):
    """This algorithm does not exist for this op, group or fabric."""


_REGISTRY: dict[str, Algorithm] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Register an algorithm class under its ``name`` (usable as a class decorator); a second
    class of the same name replaces the first."""
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove the algorithm registered as ``name`` (a test's or a plug-in's; no-op if none)."""
    _REGISTRY.pop(name, None)


def algorithm(name: str) -> Algorithm:
    """The registered algorithm ``name``; ``KeyError`` if none."""
    return _REGISTRY[name]


def algorithm_names() -> tuple[str, ...]:
    """Every registered algorithm's name, in registration order."""
    return tuple(_REGISTRY)
