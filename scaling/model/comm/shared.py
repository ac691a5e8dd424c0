"""What one cluster *structure* decides, shared by every run of it in one process (issue 29).

Loops over uncertainty samples, Sobol points, Shapley swaps (``explain --vs``), seeds and
strategies build a fresh :class:`~scaling.model.comm.flowcoll.FlowCollectives` per run. Much of
what it computes does not depend on any capacity, latency or efficiency: the schedules of the
algorithms (the planner's ring orders and phases), and, for one node count and ECMP salt, the
routes of every phase's flows. This module keeps those per *structure view*
(:func:`structure_view`: the system with every bandwidth, latency, efficiency and the device
blanked out), and routes per cluster graph and ECMP salt (:func:`routing_of`), so a run of the
same structure only rebinds its own capacities.

Why sharing cannot change a result:

* A schedule is built from the structure view alone (the planner and the algorithms read device
  counts, the fabric kind and group size, in-switch reduction, NIC count, nodes per leaf and
  rail optimization, channels, the algorithm list and parameters; ``tests/test_shared_structure.py`` checks that
  blanked fields do not change any algorithm's schedule), and its arrays are made read-only
  before they are shared, so no run can alter another's.
* Routes are a function of the cluster graph (its ``structure_key``: node count, devices,
  fabric, NICs, leaf-spine shape and ECMP mode; its link ids are checked to be the same
  object) and the ECMP salt (:class:`~scaling.model.comm.cluster.ClusterNetwork`): one
  :class:`Routing` each (:func:`routing_of`). Paths get *structure-wide* ids there;
  each run still registers them on its own network in the order a fresh run would (the order
  of first appearance in the phases it meets), so every engine path id, and with it every
  float of every solve, is the one a cold process computes.
* A phase's uncontended solve (``FlowCollectives._phase_info``) is reused only for the same
  phase, the same network capacities (a digest of the capacity vector) and the same engine
  path ids of its flows (which fix the solver's flow order).

Bounded: at most :data:`_MAX_VIEWS` structure views (:data:`_MAX_SCHEDULES` schedules each),
:data:`_MAX_ROUTINGS` routings, :data:`_MAX_PHASES` phases and :data:`_MAX_INFOS` phase solves
per routing, oldest first out; entries keyed by ``id(phase)`` keep the phase alive, so an id is
never reused while its entry lives.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain, islice

import numpy as np

from scaling.model.comm.algos import Phase, Planner, Schedule
from scaling.model.comm.cluster import ClusterNetwork
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.system import LibraryProtocol, SystemSpec

SchedKey = tuple[str, CollectiveOp, Group, PeerSizes | None]

#: held while the shared tables change: a multi-threaded Dask worker runs jobs at once in one
#: process (lookups of finished entries take no lock: they are single dict reads)
_LOCK = threading.RLock()

#: structure views kept (a loop visits a few: systems × fabrics of a Shapley swap)
_MAX_VIEWS = 8
#: routings kept: (cluster graph, ECMP salt) pairs (uncertainty samples draw a salt each;
#: one of a 4,096-rank cluster holds tens of thousands of paths, a few MB)
_MAX_ROUTINGS = 8
#: phases' flows kept per routing (each keeps its phase alive)
_MAX_PHASES = 4096
#: uncontended phase solves kept per routing
_MAX_INFOS = 4096
#: schedules kept per view (a job meets tens; uneven all-to-alls may meet more)
_MAX_SCHEDULES = 4096


def structure_view(system: SystemSpec) -> str:
    """The part of ``system`` that schedules depend on, as a string key: every field except
    the device, the names, the power overhead, the bandwidths, latencies and efficiencies of
    the fabric, NICs, spine and library (these scale capacities and latency terms only; they
    are keys of the capacity-dependent caches instead), and the leaf-spine's oversubscription
    and ECMP mode (they decide routes, which are kept per cluster graph: :func:`routing_of`)."""
    fab, nic, so, lib = system.fabric, system.nics, system.scale_out, system.library
    return repr(
        (
            system.devices_per_node,
            dataclasses.replace(
                fab,
                link_bw_Bps=0.0,
                link_latency_s=0.0,
                link_efficiency=0.0,
                inter_group_bw_Bps=0.0,
                pcie_latency_s=0.0,
                pcie_efficiency=0.0,
                switch_reduction_Bps=0.0,
                switch_reduction_latency_s=0.0,
            ),
            dataclasses.replace(nic, bw_Bps=0.0, latency_s=0.0, efficiency=0.0),
            # the spine count and ECMP mode shape routes (their own key), not schedules
            dataclasses.replace(so, spine_latency_s=0.0, oversubscription=0.0, ecmp=""),
            dataclasses.replace(
                lib,
                name="",
                # protocols' latencies and caps are the tuner's, not a schedule's
                protocols=tuple(LibraryProtocol(p.name, 0.0, {}) for p in lib.protocols),
                bw_efficiency={},
                tree_bw_factor=0.0,
                tree_level_latency_s=0.0,
                compute_interference=0.0,
                call_overhead_s=0.0,
                ramp_half_bytes=0.0,
                ramp_exponent=0.0,
            ),
        )
    )


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def freeze(sched: Schedule) -> Schedule:
    """``sched`` with every phase array read-only (shared schedules must not be altered)."""
    for ph in sched.phases:
        for a in (ph.src, ph.dst, ph.coeff, ph.mult, ph.fold):
            if a is not None:
                a.setflags(write=False)
    return sched


@dataclass(frozen=True, slots=True)
class PhasePaths:
    """One phase's flows on one routing, in structure-wide path ids.

    ``order``: the distinct path ids of its flows in first appearance (the order a fresh
    network registers them in); ``flow``: each engine flow's path id; ``coeff`` and ``mult``
    per engine flow (a transfer split over several NIC paths gives each an equal share)."""

    phase: Phase  # kept alive: the cache is keyed by its id
    order: np.ndarray
    flow: np.ndarray
    coeff: np.ndarray
    mult: np.ndarray


def _gather(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices ``starts[k] … starts[k] + lengths[k] − 1`` for every k, end to end."""
    offset = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - offset, lengths)


def _check_routes(routes: Sequence[tuple[int, ...]]) -> None:
    """Refuse a route that crosses a link twice (a routing bug: the engine would count the
    link twice). Checked once, where a routing learns its routes, so that every run registers
    them through the engine's trusted entry (:meth:`Routing.csr`)."""
    bad = next((r for r in routes if len(set(r)) != len(r)), None)
    if bad is not None:
        raise ValueError(f"route {bad} crosses a link twice")


class Routing:
    """Paths of one cluster graph and ECMP salt: structure-wide ids of link tuples (as tuples
    and as CSR arrays), the routes of every (src, dst, fold) entry met so far in those ids,
    each phase's flows, and the phases' uncontended solves by capacity."""

    def __init__(self, index: Mapping[tuple[object, ...], int]) -> None:
        #: the cluster's link ids this routing's paths are in (kept: identity is checked)
        self.index = index
        self.ids: dict[tuple[int, ...], int] = {}
        self.links: list[tuple[int, ...]] = []
        self._flat: list[int] = []  # the links' ids end to end …
        self._ptr: list[int] = [0]  # … path g at _flat[_ptr[g] : _ptr[g + 1]]
        self._csr: tuple[np.ndarray, np.ndarray] | None = None  # the two as arrays
        # entries met so far, by code ((src · devices + dst) · 3 + fold), sorted: their
        # structure-wide path ids at _kg[_kstart[i] : _kstart[i] + _klen[i]]
        self._kcode = np.zeros(0, dtype=np.int64)
        self._kstart = np.zeros(0, dtype=np.int64)
        self._klen = np.zeros(0, dtype=np.int64)
        self._kg: list[int] = []
        self._kg_arr = np.zeros(0, dtype=np.int64)  # _kg as an array
        self.phases: dict[int, PhasePaths] = {}
        #: (capacity digest, id(phase), engine path ids of its flows) -> (phase, its solve)
        self.infos: dict[tuple[bytes, int, bytes], tuple[Phase, tuple[float, str]]] = {}

    def csr(self, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The paths ``gids`` as (their links end to end, links per path): the input of
        :meth:`~scaling.engine.maxmin.MaxMinSolver.register_checked_csr`, whose promises
        hold: the routing's paths are distinct (interned) and none crosses a link twice
        (:func:`_check_routes`, as they are learned)."""
        with _LOCK:
            return self._csr_of(gids)

    def _csr_of(self, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._csr is None or self._csr[1].size != len(self._ptr):
            self._csr = (np.array(self._flat, dtype=np.int64), np.array(self._ptr, np.int64))
        flat, ptr = self._csr
        starts = ptr[gids]
        lengths = ptr[gids + 1] - starts
        return flat[_gather(starts, lengths)], lengths

    def _intern(self, paths: list[tuple[int, ...]]) -> list[int]:
        """The structure-wide ids of ``paths``, new ones numbered in first appearance."""
        ids = self.ids
        n0 = len(ids)
        # len(ids) is read before the insert: a new path gets the next id (ids and links
        # grow together, in the same order)
        got = [ids.setdefault(r, len(ids)) for r in paths]
        if len(ids) > n0:
            new = list(islice(ids, n0, None))
            self.links.extend(new)
            self._ptr.extend(list(accumulate(map(len, new), initial=len(self._flat)))[1:])
            self._flat.extend(chain.from_iterable(new))
        return got

    def _learn(self, codes: np.ndarray, cluster: ClusterNetwork) -> None:
        """Route the entries ``codes`` (not met before) and add them to the sorted table."""
        n_dev, g = cluster.n_devices, cluster.g
        pair, fold = np.divmod(codes, 3)
        src, dst = np.divmod(pair, n_dev)
        node = src // g
        order: list[np.ndarray] = []  # the entries in the order their routes are added …
        paths: list[tuple[int, ...]] = []  # … their routes end to end …
        lens: list[np.ndarray] = []  # … and the number of routes of each
        # a transfer inside one node is node 0's route shifted to its node's links
        # (ClusterNetwork.node_block): one route per local pair, then array arithmetic
        inside = (fold == 0) & (node == dst // g) & (src != dst)
        local = (src % g) * g + dst % g
        # (sorted(set(...)) is np.unique's answer for ints without its import of numpy.ma)
        for lp in sorted(set(local[inside].tolist())):
            a, b = divmod(lp, g)
            (base,) = cluster.routes(a, b)
            _check_routes([base])  # (each node's copy: these links shifted, as distinct)
            at = np.flatnonzero(inside & (local == lp))
            rows = np.asarray(base, dtype=np.int64) + (node[at] * cluster.node_block)[:, None]
            order.append(at)
            # tuples straight from the columns (zip; no list per path); an empty route has none
            paths.extend(zip(*rows.T.tolist(), strict=True) if base else [()] * at.size)
            lens.append(np.ones(at.size, dtype=np.int64))
        # a transfer between nodes: every pair's routes at once (ClusterNetwork.net_paths)
        across = (fold == 0) & (node != dst // g)
        at = np.flatnonzero(across)
        if at.size:
            net, count = cluster.net_paths(src[at], dst[at])
            _check_routes(net)
            order.append(at)
            paths.extend(net)
            lens.append(count)
        # the rest (folded entries, a device to itself) one by one
        rest = np.flatnonzero(~inside & ~across)
        order.append(rest)
        few: list[int] = []
        for a, b, f in zip(
            src[rest].tolist(), dst[rest].tolist(), fold[rest].tolist(), strict=True
        ):
            routes = cluster.routes(a, b) if f == 0 else cluster.folded_routes(a, b, f == 2)
            _check_routes(routes)
            paths.extend(routes)
            few.append(len(routes))
        ln = np.concatenate([*lens, np.array(few, dtype=np.int64)])
        start = len(self._kg) + np.cumsum(ln) - ln
        self._kg.extend(self._intern(paths))
        code = np.concatenate([self._kcode, codes[np.concatenate(order)]])
        sort = np.argsort(code, kind="stable")
        self._kcode = code[sort]
        self._kstart = np.concatenate([self._kstart, start])[sort]
        self._klen = np.concatenate([self._klen, ln])[sort]

    def phase_paths(self, phase: Phase, cluster: ClusterNetwork) -> PhasePaths:
        """The phase's flows in structure-wide path ids (computed once per routing): each
        (src, dst, fold) entry's routes from ``cluster`` (:meth:`ClusterNetwork.routes`,
        :meth:`ClusterNetwork.folded_routes`), looked up in arrays once met."""
        hit = self.phases.get(id(phase))
        if hit is not None and hit.phase is phase:
            return hit
        with _LOCK:
            return self._phase_paths(phase, cluster)

    def _phase_paths(self, phase: Phase, cluster: ClusterNetwork) -> PhasePaths:
        n_dev = cluster.n_devices
        code = phase.src * n_dev + phase.dst
        code = code * 3 + (phase.fold if phase.fold is not None else 0)
        uc, first, inv = np.unique(code, return_index=True, return_inverse=True)
        pos = np.searchsorted(self._kcode, uc)
        known = pos < self._kcode.size
        known[known] = self._kcode[pos[known]] == uc[known]
        if not known.all():
            # route the new entries in first-seen order (the cluster memoises routes per salt)
            new = ~known
            self._learn(uc[new][np.argsort(first[new], kind="stable")], cluster)
            pos = np.searchsorted(self._kcode, uc)
        if self._kg_arr.size != len(self._kg):
            self._kg_arr = np.array(self._kg, dtype=np.int64)
        kg = self._kg_arr
        ustart, ulen = self._kstart[pos], self._klen[pos]
        # the order a fresh network registers the phase's paths in: first appearance over
        # the routes of its distinct entries, in first-seen order
        seen = np.argsort(first, kind="stable")
        spans = kg[_gather(ustart[seen], ulen[seen])]
        _, at = np.unique(spans, return_index=True)
        order = spans[np.sort(at)]
        if bool((ulen == 1).all()):
            flow = kg[ustart[inv]]
            coeff, mult = phase.coeff, phase.mult
        else:
            n = ulen[inv]
            flow = kg[_gather(ustart[inv], n)]
            coeff, mult = np.repeat(phase.coeff / n, n), np.repeat(phase.mult, n)
        hit = PhasePaths(
            phase, _readonly(order), _readonly(flow), _readonly(coeff), _readonly(mult)
        )
        if len(self.phases) >= _MAX_PHASES:
            del self.phases[next(iter(self.phases))]
        self.phases[id(phase)] = hit
        return hit

    def info(self, key: tuple[bytes, int, bytes], phase: Phase) -> tuple[float, str] | None:
        """A phase's remembered uncontended solve, or None."""
        hit = self.infos.get(key)
        return hit[1] if hit is not None and hit[0] is phase else None

    def remember_info(
        self, key: tuple[bytes, int, bytes], phase: Phase, value: tuple[float, str]
    ) -> None:
        """Remember a phase's uncontended solve (oldest out beyond :data:`_MAX_INFOS`)."""
        with _LOCK:
            if len(self.infos) >= _MAX_INFOS:
                del self.infos[next(iter(self.infos))]
            self.infos[key] = (phase, value)


@dataclass(slots=True)
class Structure:
    """What one structure view decides: its planner, schedules (read-only) and routings."""

    planner: Planner
    schedules: dict[SchedKey, Schedule | None] = field(default_factory=dict)
    why: dict[SchedKey, str] = field(default_factory=dict)  # why a schedule is None

    def remember_schedule(self, key: SchedKey, sched: Schedule | None, why: str = "") -> None:
        """Share a schedule (read-only) or its absence (oldest out beyond the bound)."""
        with _LOCK:
            if len(self.schedules) >= _MAX_SCHEDULES:
                old = next(iter(self.schedules))
                del self.schedules[old]
                self.why.pop(old, None)
            self.schedules[key] = freeze(sched) if sched is not None else None
            if sched is None:
                self.why[key] = why


#: structures by :func:`structure_view`, oldest evicted first
_STRUCTURES: dict[str, Structure] = {}


def structure_of(system: SystemSpec) -> Structure:
    """The shared structure of ``system`` (made on first use, with a planner of ``system``)."""
    view = structure_view(system)
    with _LOCK:
        hit = _STRUCTURES.get(view)
        if hit is None:
            if len(_STRUCTURES) >= _MAX_VIEWS:
                del _STRUCTURES[next(iter(_STRUCTURES))]
            hit = _STRUCTURES[view] = Structure(Planner(system, system.library.channels))
        return hit


def clear_structure_cache() -> None:
    """Forget every shared schedule, routing and phase solve (the next run builds afresh)."""
    with _LOCK:
        _STRUCTURES.clear()
        _ROUTINGS.clear()


#: routings by (cluster structure key, ECMP salt), oldest evicted first
_ROUTINGS: dict[tuple[object, ...], Routing] = {}


def routing_of(cluster: ClusterNetwork) -> Routing:
    """The shared routing of ``cluster``'s graph and ECMP salt (None under ideal ECMP): made
    afresh where the cluster's link ids are not those the kept one was made on."""
    key = (cluster.structure_key(), None if cluster.ideal_ecmp else cluster.seed)
    with _LOCK:
        hit = _ROUTINGS.get(key)
        if hit is None or hit.index is not cluster._index:
            if hit is None and len(_ROUTINGS) >= _MAX_ROUTINGS:
                del _ROUTINGS[next(iter(_ROUTINGS))]
            hit = _ROUTINGS[key] = Routing(cluster._index)
        return hit
