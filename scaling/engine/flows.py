"""Flow-level network engine: max-min fair bandwidth sharing inside a SimPy environment.

The network is a set of directed links, each with a capacity (bytes/s) and a propagation
latency (s). A *flow* moves a number of bytes over a fixed *path* (a set of link indices).
Concurrent flows share links max-min fairly; rates are recomputed only when the set of active
flows changes, and in between every flow drains linearly ("fluid" model). There is no packet,
chunk or time-step granularity anywhere: the simulation cost is proportional to the number of
flow-set changes, not to bytes or time.

Three layers, each usable on its own:

* :func:`maxmin_rates` — stateless, vectorised progressive filling (water-filling).
* :class:`MaxMinSolver` — registers paths once (integer ids) and memoises solutions keyed by
  the active-set signature, because training workloads repeat the same communication pattern
  every step.
* :class:`FlowNetwork` — runs transfers inside a :class:`simpy.Environment` with exactly one
  pending timer for the next completion.

Units everywhere: bytes, seconds, bytes/s. This module knows nothing about ML; it imports only
the standard library, numpy and simpy.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import simpy

__all__ = [
    "FlowNetwork",
    "Incidence",
    "MaxMinSolver",
    "Solution",
    "maxmin_rates",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Default relative tolerance used to decide that two saturation levels are "the same" in the
#: water-filling. Symmetric flows computed through different arithmetic orders differ by a few
#: ulps (~1e-16); 1e-12 merges those while remaining far below any physically meaningful
#: difference in bandwidth.
DEFAULT_SOLVER_RTOL = 1e-12

#: Default relative tolerance (fraction of a flow's own size) under which a flow whose remaining
#: bytes are not exactly zero is considered finished at a wake-up. This is what makes flows that
#: finish "at the same instant" up to rounding finish together in one re-solve.
DEFAULT_FINISH_RTOL = 1e-9


# --------------------------------------------------------------------------------------------
# Incidence (flows x links) in compressed-row form
# --------------------------------------------------------------------------------------------


@runtime_checkable
class _SparseLike(Protocol):
    """Anything with a ``tocsr()`` method (e.g. a scipy.sparse matrix); duck-typed on purpose
    so that this layer does not import scipy."""

    shape: tuple[int, int]

    def tocsr(self) -> Any: ...


@dataclass(frozen=True)
class Incidence:
    """Flow-to-link incidence in compressed sparse row (CSR) form.

    Flow ``f`` crosses links ``links[indptr[f]:indptr[f + 1]]``. Each flow may cross a given
    link at most once (a path is a *set* of links).

    Attributes:
        indptr: int64 array of shape [F + 1], non-decreasing, ``indptr[0] == 0``.
        links: int64 array of shape [E] with link indices in ``[0, n_links)``.
        n_links: number of links L the indices refer to.
    """

    indptr: IntArray
    links: IntArray
    n_links: int

    @property
    def n_flows(self) -> int:
        """Number of flows (classes) F."""
        return int(self.indptr.size - 1)

    @classmethod
    def from_paths(cls, paths: Sequence[Sequence[int] | np.ndarray], n_links: int) -> Incidence:
        """Build an incidence from one sequence of link indices per flow (validated)."""
        lengths = np.fromiter((len(p) for p in paths), dtype=np.int64, count=len(paths))
        indptr = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        if indptr[-1] > 0:
            links = np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in paths])
        else:
            links = np.zeros(0, dtype=np.int64)
        inc = cls(indptr=indptr, links=links, n_links=int(n_links))
        inc.validate()
        return inc

    @classmethod
    def from_sparse(cls, matrix: _SparseLike) -> Incidence:
        """Build an incidence from a sparse flows x links matrix (stored entries = incidence)."""
        csr = matrix.tocsr()
        inc = cls(
            indptr=np.asarray(csr.indptr, dtype=np.int64),
            links=np.asarray(csr.indices, dtype=np.int64),
            n_links=int(csr.shape[1]),
        )
        inc.validate()
        return inc

    def validate(self) -> None:
        """Raise ValueError if indices are out of range, or a flow lists a link twice."""
        ip, lk, n_links = self.indptr, self.links, self.n_links
        if ip.ndim != 1 or ip.size < 1 or ip[0] != 0 or np.any(np.diff(ip) < 0):
            raise ValueError("indptr must be a non-decreasing 1-D array starting at 0")
        if lk.ndim != 1 or ip[-1] != lk.size:
            raise ValueError("links must be 1-D with indptr[-1] == len(links)")
        if lk.size == 0:
            return
        if lk.min() < 0 or lk.max() >= n_links:
            raise ValueError(f"link index out of range [0, {n_links})")
        # A flow crossing the same link twice has no clear meaning in the fluid model (a loop);
        # reject it rather than silently double-count. Vectorised: sort (flow, link) keys.
        flow_of = np.repeat(np.arange(ip.size - 1, dtype=np.int64), np.diff(ip))
        keys = np.sort(flow_of * np.int64(n_links) + lk)
        if np.any(keys[1:] == keys[:-1]):
            bad = int(keys[1:][keys[1:] == keys[:-1]][0] // n_links)
            raise ValueError(f"flow {bad} crosses the same link more than once")


def _as_capacity(capacity: npt.ArrayLike, *, allow_zero: bool) -> FloatArray:
    cap = np.array(capacity, dtype=np.float64)  # copy: callers may mutate theirs
    if cap.ndim != 1:
        raise ValueError("capacity must be a 1-D array of link capacities (bytes/s)")
    if not np.all(np.isfinite(cap)):
        raise ValueError("link capacities must be finite")
    if np.any(cap < 0) or (not allow_zero and np.any(cap <= 0)):
        raise ValueError(
            "link capacities must be " + ("non-negative" if allow_zero else "positive")
        )
    return cap


# --------------------------------------------------------------------------------------------
# Progressive filling
# --------------------------------------------------------------------------------------------


def _waterfill(
    cap: FloatArray,
    indptr: IntArray,
    links: IntArray,
    weight: FloatArray,
    rtol: float,
) -> FloatArray:
    """Core max-min solver on validated CSR input; returns the per-flow rate (bytes/s).

    Classic progressive filling raises all unfrozen flows together and freezes the flows of the
    single link that saturates first, one link per round. Here every round freezes the flows of
    *all locally minimal links* at once, which yields exactly the same allocation:

    * A link's saturation level is ``(capacity - used) / n_unfrozen`` (``n`` weighted by
      multiplicity); a flow's candidate rate ``mu`` is the smallest level along its path.
    * Freezing a flow at ``mu <= level(l)`` never lowers the level of any link ``l`` it
      crosses: ``(c - u - mu*w) / (n - w) >= (c - u) / n``  <=>  ``mu <= (c - u) / n``.
      So levels only rise as filling proceeds.
    * Hence a link whose level is no larger than ``mu`` of every flow crossing it ("locally
      minimal") cannot lose a flow before the water reaches its level: it saturates exactly at
      its current level, and all its flows freeze at that rate. The global minimum link is
      always locally minimal, so each round makes progress.

    The number of rounds is the depth of the bottleneck dependency chain, typically a handful,
    rather than the number of distinct rates. Each round is O(E + L) numpy work.
    """
    n_flows = indptr.size - 1
    n_links = cap.size
    lengths = np.diff(indptr)
    rates = np.full(n_flows, np.inf)  # flows with an empty path are never constrained

    nonempty = lengths > 0
    seg_flow = np.flatnonzero(nonempty)  # unfrozen flows, in CSR order
    seg_len = lengths[nonempty]
    e_link = links
    e_w = np.repeat(weight, lengths)
    used = np.zeros(n_links)  # bytes/s already committed to frozen flows, per link
    level = np.empty(n_links)
    blocked_link = np.empty(n_links, dtype=bool)
    rounds = 0

    while seg_flow.size:
        count = np.bincount(e_link, weights=e_w, minlength=n_links)
        # Clamp: rounding can leave `used` a few ulps above capacity on saturated links.
        headroom = np.maximum(cap - used, 0.0)
        level.fill(np.inf)
        np.divide(headroom, count, out=level, where=count > 0)

        e_level = level[e_link]
        starts = np.cumsum(seg_len) - seg_len
        mu = np.minimum.reduceat(e_level, starts)
        e_mu = np.repeat(mu, seg_len)

        # A link is blocked (not locally minimal) if one of its flows has a strictly lower
        # candidate rate elsewhere; the relative tolerance lets symmetric ties freeze together.
        blocked_link.fill(False)
        blocked_link[e_link[e_level > e_mu * (1.0 + rtol)]] = True
        f_freeze = np.logical_or.reduceat(~blocked_link[e_link], starts)

        rates[seg_flow[f_freeze]] = mu[f_freeze]
        e_freeze = np.repeat(f_freeze, seg_len)
        used += np.bincount(e_link[e_freeze], weights=(e_mu * e_w)[e_freeze], minlength=n_links)

        keep = ~e_freeze
        e_link = e_link[keep]
        e_w = e_w[keep]
        n_before = seg_flow.size
        seg_flow = seg_flow[~f_freeze]
        seg_len = seg_len[~f_freeze]
        rounds += 1
        # Long bottleneck chains (e.g. flows overlapping pairwise along a line) freeze only a
        # few flows per round, and each round costs ~30 numpy calls whatever its size. When
        # progress is that slow, finish with the sequential heap algorithm, which is
        # O(E log E) in total instead of O(rounds * (E + L)).
        if (
            seg_flow.size
            and rounds >= _MIN_VECTOR_ROUNDS
            and ((n_before - seg_flow.size) * _SLOW_PROGRESS_RATIO < n_before)
        ):
            _waterfill_sequential(
                np.maximum(cap - used, 0.0), e_link, e_w, seg_flow, seg_len, rates
            )
            break
    return rates


#: Vectorised rounds always attempted before the sequential fallback is considered.
_MIN_VECTOR_ROUNDS = 8
#: A round that freezes fewer than 1/this of the remaining flows counts as slow progress.
_SLOW_PROGRESS_RATIO = 16


def _waterfill_sequential(
    headroom: FloatArray,
    e_link: IntArray,
    e_w: FloatArray,
    seg_flow: IntArray,
    seg_len: IntArray,
    rates: FloatArray,
) -> None:
    """Textbook progressive filling with a lazy min-heap of link levels (pure Python).

    Finishes a partially solved problem in place: ``headroom`` is the capacity left per link
    (bytes/s), the ``e_*`` arrays are the entries of the still-unfrozen flows ``seg_flow``
    (CSR order, ``seg_len`` entries each) and ``rates`` receives their rates.
    """
    links_u, e_loc_arr = np.unique(e_link, return_inverse=True)
    n_l = int(links_u.size)
    n_f = int(seg_flow.size)
    room: list[float] = headroom[links_u].tolist()
    count: list[float] = np.bincount(e_loc_arr, weights=e_w, minlength=n_l).tolist()
    # Integer number of unfrozen flows per link: decides emptiness without float drift.
    left: list[int] = np.bincount(e_loc_arr, minlength=n_l).tolist()
    fptr: list[int] = np.concatenate([[0], np.cumsum(seg_len)]).tolist()
    f_links: list[int] = e_loc_arr.tolist()
    f_w: list[float] = e_w[fptr[:-1]].tolist() if n_f else []
    # link -> flows (local ids), by a stable counting sort on the link index.
    e_f = np.repeat(np.arange(n_f, dtype=np.int64), seg_len)
    order = np.argsort(e_loc_arr, kind="stable")
    l_flows: list[int] = e_f[order].tolist()
    lptr: list[int] = np.concatenate([[0], np.cumsum(left)]).tolist()

    out = [0.0] * n_f
    frozen = [False] * n_f
    done = [False] * n_l
    heap = [(room[j] / count[j], j) for j in range(n_l)]
    heapq.heapify(heap)
    while heap:
        lev, j = heapq.heappop(heap)
        # Every update pushes the link's new level, so an entry that no longer matches the
        # recomputed level is stale (levels only rise; see _waterfill).
        if done[j] or lev != room[j] / count[j]:
            continue
        done[j] = True
        for f in l_flows[lptr[j] : lptr[j + 1]]:
            if frozen[f]:
                continue
            frozen[f] = True
            out[f] = lev
            w = f_w[f]
            for m in f_links[fptr[f] : fptr[f + 1]]:
                if done[m]:
                    continue
                left[m] -= 1
                if left[m] == 0:
                    done[m] = True
                    continue
                room[m] = max(room[m] - lev * w, 0.0)
                count[m] -= w
                heapq.heappush(heap, (room[m] / count[m], m))
    rates[seg_flow] = out


def maxmin_rates(
    capacity: npt.ArrayLike,
    paths: Sequence[Sequence[int] | np.ndarray] | Incidence | _SparseLike,
    weights: npt.ArrayLike | None = None,
    *,
    rtol: float = DEFAULT_SOLVER_RTOL,
) -> FloatArray:
    """Max-min fair rate of every flow class, by vectorised progressive filling.

    Args:
        capacity: link capacities in bytes/s, shape [L]; finite and >= 0.
        paths: for each flow class, the link indices it crosses (each link at most once).
            Either a sequence of index sequences/arrays, an :class:`Incidence`, or a sparse
            flows x links matrix with a ``tocsr()`` method (structure only; values ignored).
        weights: optional multiplicity per class, shape [F], > 0. A class of multiplicity k
            stands for k identical flows on the same links: it counts k times on every link it
            crosses and each of its flows gets the returned rate. Non-integer values are
            accepted and act as fractional flow counts. Default: all ones.
        rtol: relative tolerance under which two saturation levels are treated as equal.

    Returns:
        float64 array of shape [F]: the rate of *one* flow of each class, in bytes/s. A class
        with an empty path crosses no link and is unconstrained: its rate is ``+inf``
        (a local copy completes instantly); it does not affect other classes.

    Raises:
        ValueError: on malformed capacities, paths, or weights.
    """
    cap = _as_capacity(capacity, allow_zero=True)
    if isinstance(paths, Incidence):
        inc = paths
        if inc.n_links != cap.size:
            raise ValueError("incidence n_links does not match len(capacity)")
        inc.validate()
    elif isinstance(paths, _SparseLike) and not isinstance(paths, Sequence | np.ndarray):
        inc = Incidence.from_sparse(paths)
        if inc.n_links != cap.size:
            raise ValueError("sparse incidence has the wrong number of columns (links)")
    else:
        inc = Incidence.from_paths(paths, cap.size)

    if weights is None:
        w = np.ones(inc.n_flows)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (inc.n_flows,):
            raise ValueError(f"weights must have shape ({inc.n_flows},)")
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError("weights (multiplicities) must be finite and > 0")
    return _waterfill(cap, inc.indptr, inc.links, w, rtol)


# --------------------------------------------------------------------------------------------
# Memoising solver with registered paths
# --------------------------------------------------------------------------------------------


class Solution(NamedTuple):
    """A solved active set (read-only arrays).

    Attributes:
        path_ids: sorted unique path ids of the active classes, shape [K].
        multiplicity: total number of flows per class, shape [K].
        rates: per-flow rate of each class in bytes/s, shape [K].
        link_idx: links carrying traffic, shape [M].
        link_rate: aggregate rate on each of ``link_idx`` in bytes/s, shape [M]
            (sum over classes of rate * multiplicity).
    """

    path_ids: IntArray
    multiplicity: IntArray
    rates: FloatArray
    link_idx: IntArray
    link_rate: FloatArray


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


class MaxMinSolver:
    """Max-min solver over a fixed capacity vector, with registered paths and a memo.

    Paths are registered once and receive dense integer ids, so that an *active set* — which
    classes are active and how many flows each holds — has a cheap canonical signature: the
    sorted (path_id, multiplicity) pairs. Solutions are memoised on that signature because a
    training job replays the same communication pattern every step.

    The cache key is the byte encoding of the two sorted int64 arrays (path ids, then
    multiplicities); it is equivalent to the tuple ``((pid, mult), ...)`` sorted by pid but is
    built and hashed in C, which matters for thousands of classes per change.
    """

    def __init__(
        self,
        capacity_Bps: npt.ArrayLike,
        *,
        rtol: float = DEFAULT_SOLVER_RTOL,
        cache_size: int | None = 1024,
    ) -> None:
        """Args:
        capacity_Bps: link capacities in bytes/s, shape [L], finite and >= 0.
        rtol: relative tie tolerance passed to the water-filling.
        cache_size: maximum number of memoised active sets (oldest evicted first);
            ``None`` for unbounded. Each entry costs O(K + links used) floats.
        """
        self._cap = _readonly(_as_capacity(capacity_Bps, allow_zero=True))
        self._rtol = float(rtol)
        if cache_size is not None and cache_size < 0:
            raise ValueError("cache_size must be >= 0 or None")
        self._cache_size = cache_size
        self._cache: dict[bytes, Solution] = {}
        self._ids: dict[tuple[int, ...], int] = {}
        # Registered paths in a growable CSR buffer (amortised O(1) append).
        self._ptr = np.zeros(16, dtype=np.int64)
        self._buf = np.zeros(64, dtype=np.int64)
        self._n_paths = 0
        self.hits = 0
        """Number of :meth:`solve` calls answered from the memo."""
        self.misses = 0
        """Number of :meth:`solve` calls that ran the water-filling."""

    # -- paths ------------------------------------------------------------------------------

    @property
    def capacity(self) -> FloatArray:
        """Link capacities in bytes/s (read-only view), shape [L]."""
        return self._cap

    @property
    def n_links(self) -> int:
        """Number of links L."""
        return int(self._cap.size)

    @property
    def n_paths(self) -> int:
        """Number of registered paths."""
        return self._n_paths

    def register(self, links: Sequence[int] | np.ndarray) -> int:
        """Register a path (link indices, each at most once) and return its integer id.

        Registering the same sequence again returns the same id (order matters for the key but
        not for the rates).
        """
        arr = np.asarray(links, dtype=np.int64).ravel()
        key = tuple(arr.tolist())
        pid = self._ids.get(key)
        if pid is not None:
            return pid
        if arr.size:
            if arr.min() < 0 or arr.max() >= self.n_links:
                raise ValueError(f"link index out of range [0, {self.n_links})")
            if np.unique(arr).size != arr.size:
                raise ValueError("a path must not cross the same link twice")
        pid = self._n_paths
        start = int(self._ptr[pid])
        end = start + arr.size
        if pid + 2 > self._ptr.size:
            self._ptr = np.concatenate([self._ptr, np.zeros_like(self._ptr)])
        if end > self._buf.size:
            self._buf = np.concatenate([self._buf, np.zeros(max(end, self._buf.size), np.int64)])
        self._buf[start:end] = arr
        self._ptr[pid + 1] = end
        self._n_paths += 1
        self._ids[key] = pid
        return pid

    def path_links(self, path_id: int) -> IntArray:
        """Link indices of a registered path (read-only copy)."""
        self._check_pid(path_id)
        return _readonly(self._buf[self._ptr[path_id] : self._ptr[path_id + 1]].copy())

    def _check_pid(self, path_id: int) -> None:
        if not 0 <= path_id < self._n_paths:
            raise KeyError(f"unknown path id {path_id}")

    def _gather(self, pids: IntArray) -> tuple[IntArray, IntArray]:
        """Concatenated links of the given paths, and the number of links of each."""
        starts = self._ptr[pids]
        lengths = self._ptr[pids + 1] - starts
        # Entry j of path k (in the output) sits at starts[k] + (j - offset[k]).
        offset = np.cumsum(lengths) - lengths
        total = int(lengths.sum())
        gather = np.arange(total, dtype=np.int64) + np.repeat(starts - offset, lengths)
        return self._buf[gather], lengths

    def link_flows(self, path_ids: IntArray, multiplicity: IntArray) -> FloatArray:
        """Number of flows crossing each link, shape [L], for paths with multiplicities."""
        links, lengths = self._gather(np.asarray(path_ids, dtype=np.int64))
        weights = np.repeat(np.asarray(multiplicity, dtype=np.float64), lengths)
        return np.bincount(links, weights=weights, minlength=self.n_links)

    # -- solving ----------------------------------------------------------------------------

    @property
    def cache_len(self) -> int:
        """Number of memoised active sets."""
        return len(self._cache)

    def clear_cache(self) -> None:
        """Drop all memoised solutions (counters are kept)."""
        self._cache.clear()

    def solve(self, active: Mapping[int, int] | Iterable[tuple[int, int]]) -> dict[int, float]:
        """Per-flow max-min rate (bytes/s) of each active path.

        Args:
            active: ``{path_id: multiplicity}`` or ``(path_id, multiplicity)`` pairs;
                repeated path ids are merged by summing multiplicities (identical flows get
                identical max-min rates, so they form one class).

        Returns:
            ``{path_id: rate of one flow on that path}``; ``+inf`` for an empty path.
        """
        items = active.items() if isinstance(active, Mapping) else active
        merged: dict[int, int] = {}
        for pid, mult in items:
            pid, mult = int(pid), int(mult)
            self._check_pid(pid)
            if mult <= 0:
                raise ValueError("multiplicity must be >= 1")
            merged[pid] = merged.get(pid, 0) + mult
        pids = np.array(sorted(merged), dtype=np.int64)
        mults = np.array([merged[p] for p in pids.tolist()], dtype=np.int64)
        sol = self.solve_arrays(pids, mults)
        return dict(zip(sol.path_ids.tolist(), sol.rates.tolist(), strict=True))

    def solve_arrays(self, path_ids: IntArray, multiplicity: IntArray) -> Solution:
        """Solve (or look up) an active set given as arrays; the fast path for the engine.

        Args:
            path_ids: strictly increasing registered path ids, shape [K] (not re-checked).
            multiplicity: flows per class, int64 >= 1, shape [K].

        Returns:
            A :class:`Solution`; the same object is returned for repeated signatures.
        """
        pids = np.ascontiguousarray(path_ids, dtype=np.int64)
        mults = np.ascontiguousarray(multiplicity, dtype=np.int64)
        key = pids.tobytes() + mults.tobytes()
        sol = self._cache.get(key)
        if sol is not None:
            self.hits += 1
            return sol
        self.misses += 1
        sol = self._compute(pids, mults)
        if self._cache_size is None or self._cache_size > 0:
            if self._cache_size is not None and len(self._cache) >= self._cache_size:
                # FIFO eviction: dicts keep insertion order, so the first key is the oldest.
                del self._cache[next(iter(self._cache))]
            self._cache[key] = sol
        return sol

    def _compute(self, pids: IntArray, mults: IntArray) -> Solution:
        links, lengths = self._gather(pids)
        indptr = np.zeros(pids.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        w = mults.astype(np.float64)
        rates = _waterfill(self._cap, indptr, links, w, self._rtol)
        finite = np.isfinite(rates)  # empty paths carry no traffic
        per_entry = np.repeat(np.where(finite, rates * w, 0.0), lengths)
        load = np.bincount(links, weights=per_entry, minlength=self.n_links)
        link_idx = np.unique(links)
        return Solution(
            path_ids=_readonly(pids.copy()),
            multiplicity=_readonly(mults.copy()),
            rates=_readonly(rates),
            link_idx=_readonly(link_idx),
            link_rate=_readonly(load[link_idx]),
        )


# --------------------------------------------------------------------------------------------
# SimPy engine
# --------------------------------------------------------------------------------------------


class FlowNetwork:
    """Fluid flow-level network running inside a :class:`simpy.Environment`.

    Model:
        * A transfer of ``nbytes`` with multiplicity k is k identical flows on one path; each
          flow carries ``nbytes``. All k finish together; the returned event fires once.
        * Active flows share links max-min fairly (:class:`MaxMinSolver`). Rates are re-solved
          only when the set of active flows changes; in between, remaining bytes decrease
          linearly in time.
        * Latency is pipelined: a flow starts consuming bandwidth immediately, and its event
          fires at (time its last byte leaves the bottleneck) + (sum of its path's link
          latencies). Latency is added once at the end and does not occupy bandwidth. A
          zero-byte transfer therefore completes after the path latency alone, and a transfer
          on an empty path (no links) completes immediately.

    Scheduling:
        * Transfers started at the same simulated instant are batched: :meth:`transfer` only
          marks the flow set dirty and schedules one zero-delay flush, so a collective issuing
          p transfers costs one re-solve, not p.
        * Exactly one live timer exists: it fires at the earliest predicted completion. Any
          flow-set change bumps a generation counter, which turns the old timer into a no-op
          (counted in :attr:`stale_wakeups`) and schedules a new one.
        * At a wake-up, every flow whose remaining bytes are within ``finish_rtol`` of its size
          finishes, so flows that end simultaneously up to rounding cause a single re-solve.

    Determinism: no randomness, and no iteration over unordered containers; completion events
    of simultaneous finishes fire in the order the transfers were started.
    """

    def __init__(
        self,
        env: simpy.Environment,
        capacity_Bps: Sequence[float] | npt.ArrayLike,
        latency_s: Sequence[float] | npt.ArrayLike | None = None,
        *,
        finish_rtol: float = DEFAULT_FINISH_RTOL,
        solver_rtol: float = DEFAULT_SOLVER_RTOL,
        cache_size: int | None = 1024,
    ) -> None:
        """Args:
        env: the SimPy environment (time unit: seconds).
        capacity_Bps: per-link capacity in bytes/s, shape [L], finite and > 0.
        latency_s: per-link propagation latency in seconds, shape [L], >= 0; default 0.
        finish_rtol: a flow is finished at a wake-up when its remaining bytes are
            <= finish_rtol * its size.
        solver_rtol: tie tolerance of the water-filling.
        cache_size: memo size of the underlying :class:`MaxMinSolver`.
        """
        self.env = env
        cap = _as_capacity(capacity_Bps, allow_zero=False)
        self.solver = MaxMinSolver(cap, rtol=solver_rtol, cache_size=cache_size)
        if latency_s is None:
            lat = np.zeros(cap.size)
        else:
            lat = np.array(latency_s, dtype=np.float64)
            if lat.shape != cap.shape:
                raise ValueError("latency_s must have the same shape as capacity_Bps")
            if not np.all(np.isfinite(lat)) or np.any(lat < 0):
                raise ValueError("link latencies must be finite and >= 0")
        self._lat = _readonly(lat)
        self._path_lat: list[float] = []
        self._path_lat_arr = np.zeros(0)  # the same as an array, see _path_latencies
        self._finish_rtol = float(finish_rtol)

        # Slot table for active transfers (parallel numpy arrays so that advancing time and
        # finding completions are vectorised; freed slots are reused LIFO, deterministically).
        self._rem = np.zeros(0)  # remaining bytes per flow of the transfer
        self._size = np.zeros(0)  # nbytes per flow
        self._rate = np.zeros(0)  # current per-flow rate, bytes/s
        self._pid = np.zeros(0, dtype=np.int64)
        self._mult = np.zeros(0, dtype=np.int64)
        self._seq = np.zeros(0, dtype=np.int64)  # start order, for deterministic event order
        self._active = np.zeros(0, dtype=bool)
        self._bundle = np.zeros(0, dtype=np.int64)  # bundle id per slot, -1 = own event
        self._events: list[simpy.Event | None] = []
        self._free: list[int] = []
        # Bundles: many flows, one completion event (see transfer_many).
        self._bundles: dict[int, list] = {}  # id -> [flows left, event, latency]
        self._next_bundle = 0
        self._n_active = 0
        self._next_seq = 0

        self._last_t = float(env.now)  # time up to which `_rem` and link bytes are integrated
        self._gen = 0  # bumped at every re-solve; older timers become no-ops
        self._wake_at = math.inf  # time of the live timer
        self._due = np.zeros(0, dtype=np.int64)  # slots predicted to finish at `_wake_at`
        self._dirty = False
        self._flush_pending = False
        self._link_idx = np.zeros(0, dtype=np.int64)
        self._link_rate = np.zeros(0)
        self._link_bytes = np.zeros(cap.size)

        self.resolves = 0
        """Flow-set changes that left >= 1 active flow (each asks the solver for rates)."""
        self.wakeups = 0
        """Live timer firings (each completes >= 1 transfer)."""
        self.stale_wakeups = 0
        """Timers that fired after being superseded by a later flow-set change (no-ops)."""
        self.flows_completed = 0
        """Completed flows, counting multiplicity."""
        self.transfers_completed = 0
        """Completed :meth:`transfer` calls."""

    # -- topology ---------------------------------------------------------------------------

    @property
    def n_links(self) -> int:
        """Number of links L."""
        return self.solver.n_links

    @property
    def capacity(self) -> FloatArray:
        """Link capacities in bytes/s (read-only), shape [L]."""
        return self.solver.capacity

    @property
    def latency(self) -> FloatArray:
        """Link latencies in seconds (read-only), shape [L]."""
        return self._lat

    def path_id(self, links: Sequence[int] | np.ndarray) -> int:
        """Register a path (link indices, each at most once) once and return its id."""
        pid = self.solver.register(links)
        self._sync_paths()
        return pid

    def _sync_paths(self) -> None:
        """Compute the latency of every path registered on the solver since the last call."""
        if len(self._path_lat) == self.solver.n_paths:
            return
        while len(self._path_lat) < self.solver.n_paths:
            k = len(self._path_lat)
            # fsum: exactly rounded and independent of summation order.
            self._path_lat.append(math.fsum(self._lat[self.solver.path_links(k)].tolist()))

    def _path_latencies(self) -> FloatArray:
        """Latency of every registered path as an array (rebuilt only after paths were added)."""
        self._sync_paths()
        if self._path_lat_arr.size != len(self._path_lat):
            self._path_lat_arr = np.asarray(self._path_lat)
        return self._path_lat_arr

    def path_latency(self, path_id: int) -> float:
        """Sum of the link latencies of a registered path, in seconds."""
        self.path_id(self.solver.path_links(path_id))  # syncs paths registered on the solver
        return self._path_lat[path_id]

    # -- diagnostics ------------------------------------------------------------------------

    @property
    def cache_hits(self) -> int:
        """Solver memo hits."""
        return self.solver.hits

    @property
    def cache_misses(self) -> int:
        """Solver memo misses (actual water-filling runs)."""
        return self.solver.misses

    @property
    def active_transfers(self) -> int:
        """Number of transfers currently sending bytes."""
        return self._n_active

    @property
    def bytes_per_link(self) -> FloatArray:
        """Bytes carried by each link so far (copy), shape [L].

        Integrated from the fluid rates (plus each flow's sub-tolerance residue when it
        finishes), up to the last flow-set change or wake-up. Once all flows have finished it
        equals, per link, the sum of ``nbytes * multiplicity`` over transfers crossing it.
        """
        return self._link_bytes.copy()

    def current_rates(self) -> dict[int, float]:
        """Per-flow rate in bytes/s of each active path at the last re-solve."""
        act = np.flatnonzero(self._active)
        return dict(zip(self._pid[act].tolist(), self._rate[act].tolist(), strict=True))

    # -- transfers --------------------------------------------------------------------------

    def transfer(self, path_id: int, nbytes: float, multiplicity: int = 1) -> simpy.Event:
        """Start ``multiplicity`` identical flows of ``nbytes`` bytes each on a path.

        Args:
            path_id: id from :meth:`path_id`.
            nbytes: bytes per flow, finite and >= 0.
            multiplicity: number of identical flows (int >= 1).

        Returns:
            A SimPy event that succeeds, with the completion time in seconds as its value,
            when the last byte has been delivered and the path latency has elapsed.
        """
        if not 0 <= path_id < len(self._path_lat):
            self.path_latency(path_id)  # KeyError if unknown; syncs solver-registered paths
        nbytes = float(nbytes)
        if not math.isfinite(nbytes) or nbytes < 0:
            raise ValueError("nbytes must be finite and >= 0")
        if int(multiplicity) != multiplicity or multiplicity < 1:
            raise ValueError("multiplicity must be an integer >= 1")
        multiplicity = int(multiplicity)
        event = self.env.event()
        now = float(self.env.now)
        if nbytes == 0.0 or self.solver._ptr[path_id + 1] == self.solver._ptr[path_id]:
            # Nothing to share: no flow enters the solver, so no re-solve either.
            self.transfers_completed += 1
            self.flows_completed += multiplicity
            self._deliver([event], now, self._path_lat[path_id])
            return event

        slot = self._alloc()
        self._rem[slot] = nbytes
        self._size[slot] = nbytes
        self._rate[slot] = 0.0  # until the flush re-solves; no time passes before then
        self._pid[slot] = path_id
        self._mult[slot] = multiplicity
        self._seq[slot] = self._next_seq
        self._next_seq += 1
        self._active[slot] = True
        self._bundle[slot] = -1
        self._events[slot] = event
        self._n_active += 1
        self._dirty = True
        self._schedule_flush()
        return event

    def transfer_many(
        self,
        path_ids: Sequence[int] | npt.ArrayLike,
        nbytes: Sequence[float] | npt.ArrayLike,
        multiplicity: Sequence[int] | npt.ArrayLike | None = None,
    ) -> simpy.Event:
        """Start many flows at once; one event fires when the last of them is delivered.

        This is how a collective phase enters the network: thousands of flows cost one
        vectorised slot allocation and one completion event instead of one event per flow.
        The event's value is the completion time: the last byte's delivery plus the largest
        path latency in the bundle (a bundle's latency is taken once, at the end).

        Args:
            path_ids: registered path ids, shape [F].
            nbytes: bytes per flow, shape [F], finite and >= 0.
            multiplicity: identical flows per entry, shape [F], ints >= 1 (default 1).
        """
        pids = np.asarray(path_ids, dtype=np.int64).reshape(-1)
        size = np.asarray(nbytes, dtype=np.float64).reshape(-1)
        mult = (
            np.ones(pids.size, dtype=np.int64)
            if multiplicity is None
            else np.asarray(multiplicity, dtype=np.int64).reshape(-1)
        )
        if not (pids.size == size.size == mult.size):
            raise ValueError("path_ids, nbytes and multiplicity must have the same length")
        if pids.size and (pids.min() < 0 or pids.max() >= self.solver.n_paths):
            raise KeyError("unknown path id in transfer_many")
        if not np.all(np.isfinite(size)) or np.any(size < 0):
            raise ValueError("nbytes must be finite and >= 0")
        if np.any(mult < 1):
            raise ValueError("multiplicity must be >= 1")
        event = self.env.event()
        now = float(self.env.now)
        ptr = self.solver._ptr
        real = (size > 0) & (ptr[pids + 1] > ptr[pids])
        lat = float(self._path_latencies()[pids].max()) if pids.size else 0.0
        n_real = int(real.sum())
        done_now = pids.size - n_real
        self.transfers_completed += done_now
        self.flows_completed += int(mult[~real].sum())
        if n_real == 0:
            self._deliver([event], now, lat)
            return event
        bid = self._next_bundle
        self._next_bundle += 1
        self._bundles[bid] = [n_real, event, lat]
        slots = self._alloc_many(n_real)
        self._rem[slots] = size[real]
        self._size[slots] = size[real]
        self._rate[slots] = 0.0
        self._pid[slots] = pids[real]
        self._mult[slots] = mult[real]
        self._seq[slots] = np.arange(self._next_seq, self._next_seq + n_real)
        self._next_seq += n_real
        self._active[slots] = True
        self._bundle[slots] = bid
        self._n_active += n_real
        self._dirty = True
        self._schedule_flush()
        return event

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            # One zero-delay flush per burst of same-instant transfers (batched re-solve).
            self._flush_pending = True
            flush = self.env.event()
            flush.callbacks.append(self._on_flush)
            flush.succeed()

    # -- internals --------------------------------------------------------------------------

    def _alloc(self) -> int:
        if not self._free:
            self._grow(max(16, self._rem.size))
        return self._free.pop()

    def _grow(self, grow: int) -> None:
        """Add ``grow`` free slots to the tables."""
        n = self._rem.size
        self._rem = np.concatenate([self._rem, np.zeros(grow)])
        self._size = np.concatenate([self._size, np.zeros(grow)])
        self._rate = np.concatenate([self._rate, np.zeros(grow)])
        self._pid = np.concatenate([self._pid, np.zeros(grow, dtype=np.int64)])
        self._mult = np.concatenate([self._mult, np.zeros(grow, dtype=np.int64)])
        self._seq = np.concatenate([self._seq, np.zeros(grow, dtype=np.int64)])
        self._active = np.concatenate([self._active, np.zeros(grow, dtype=bool)])
        self._bundle = np.concatenate([self._bundle, np.full(grow, -1, dtype=np.int64)])
        self._events.extend([None] * grow)
        # Reversed so that pop() hands out the lowest slot first (deterministic reuse).
        self._free[:0] = range(n + grow - 1, n - 1, -1)

    def _alloc_many(self, n: int) -> IntArray:
        if len(self._free) < n:
            self._grow(max(n - len(self._free), self._rem.size, 16))
        out = self._free[-n:][::-1]
        del self._free[-n:]
        return np.asarray(out, dtype=np.int64)

    def _deliver(self, events: list[simpy.Event], t_done: float, lat: float) -> None:
        """Succeed `events` (whose last byte left at `t_done`) after `lat` seconds."""
        if lat == 0.0:
            for event in events:
                event.succeed(t_done)
            return
        # One timer per (completion instant, path latency), not per flow.
        timer = self.env.timeout(lat, value=t_done + lat)
        timer.callbacks.append(partial(_succeed_all, events))

    def _on_flush(self, _event: simpy.Event) -> None:
        self._flush_pending = False
        self._step()

    def _on_wake(self, gen: int, _event: simpy.Event) -> None:
        if gen != self._gen:
            self.stale_wakeups += 1
            return
        self.wakeups += 1
        self._step()

    def _advance(self) -> None:
        """Drain every active flow linearly from `_last_t` to now at the current rates."""
        now = float(self.env.now)
        dt = now - self._last_t
        if dt > 0.0 and self._n_active:
            act = self._active
            self._rem[act] -= self._rate[act] * dt
            self._link_bytes[self._link_idx] += self._link_rate * dt
        self._last_t = now

    def _step(self) -> None:
        """Advance time, retire finished flows, and re-solve if the flow set changed."""
        self._advance()
        now = self._last_t
        done = self._active & (self._rem <= self._finish_rtol * self._size)
        if now >= self._wake_at and self._due.size:
            # The timer's own flows are finished by definition, whatever the rounding.
            done[self._due] = True
        if done.any():
            self._complete(np.flatnonzero(done), now)
        if self._dirty:
            self._resolve()

    def _complete(self, slots: IntArray, now: float) -> None:
        slots = slots[np.argsort(self._seq[slots], kind="stable")]
        pids = self._pid[slots]
        mults = self._mult[slots]
        rems = self._rem[slots]
        # Credit the sub-tolerance residue (or overshoot) so link byte counts are exact.
        nz = rems != 0.0
        if nz.any():
            links, lengths = self.solver._gather(pids[nz])
            np.add.at(self._link_bytes, links, np.repeat(rems[nz] * mults[nz], lengths))
        self._active[slots] = False
        self._rate[slots] = 0.0
        self._rem[slots] = 0.0
        self._n_active -= int(slots.size)
        self.transfers_completed += int(slots.size)
        self.flows_completed += int(mults.sum())

        # Group the user events by path latency: dicts keep insertion order, so events still
        # fire in start order within a group, and groups in latency order (their times).
        by_latency: dict[float, list[simpy.Event]] = {}
        events, path_lat = self._events, self._path_lat
        bundle_of = self._bundle[slots]
        own = bundle_of < 0
        own_slots = slots[own].tolist()
        for s, pid in zip(own_slots, pids[own].tolist(), strict=True):
            event = events[s]
            assert event is not None
            events[s] = None
            by_latency.setdefault(path_lat[pid], []).append(event)
        if not own.all():
            bids, counts = np.unique(bundle_of[~own], return_counts=True)
            for bid, cnt in zip(bids.tolist(), counts.tolist(), strict=True):
                entry = self._bundles[bid]
                entry[0] -= cnt
                if entry[0] == 0:
                    del self._bundles[bid]
                    by_latency.setdefault(entry[2], []).append(entry[1])
            self._bundle[slots] = -1
        self._free.extend(reversed(slots.tolist()))
        for lat, group in by_latency.items():
            self._deliver(group, now, lat)
        self._dirty = True

    def _resolve(self) -> None:
        self._dirty = False
        self._gen += 1  # any pending timer is now stale
        self._wake_at = math.inf
        self._due = np.zeros(0, dtype=np.int64)
        if self._n_active == 0:
            self._link_idx = np.zeros(0, dtype=np.int64)
            self._link_rate = np.zeros(0)
            return
        act = np.flatnonzero(self._active)
        pids, inv = np.unique(self._pid[act], return_inverse=True)
        mults = np.bincount(inv, weights=self._mult[act]).astype(np.int64)
        sol = self.solver.solve_arrays(pids, mults)
        self.resolves += 1
        rate = sol.rates[inv]
        self._rate[act] = rate
        self._link_idx = sol.link_idx
        self._link_rate = sol.link_rate

        with np.errstate(divide="ignore"):
            t_left = self._rem[act] / rate  # rate 0 (zero-capacity link) -> never finishes
        dt = float(t_left.min())
        if not math.isfinite(dt):
            return
        dt = max(dt, 0.0)
        self._due = act[t_left <= dt]
        timer = self.env.timeout(dt)
        self._wake_at = float(self.env.now) + dt  # same arithmetic simpy uses to schedule
        timer.callbacks.append(partial(self._on_wake, self._gen))


def _succeed_all(events: list[simpy.Event], timer: simpy.Event) -> None:
    for event in events:
        event.succeed(timer.value)
