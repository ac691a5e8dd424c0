"""Max-min fair bandwidth sharing, stateless: the flow-to-link incidence, link capacities and the
progressive filling (water-filling) that gives every flow class its max-min fair rate.

The memoising solver the engine uses is :class:`scaling.engine.maxmin.MaxMinSolver` (which
re-exports these names). Units everywhere: bytes, seconds, bytes/s. This module knows nothing
about ML; it imports only the standard library and numpy.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_SOLVER_RTOL",
    "FloatArray",
    "Incidence",
    "IntArray",
    "as_capacity",
    "maxmin_rates",
    "sorted_distinct",
    "waterfill_csr",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Default relative tolerance used to decide that two saturation levels are "the same" in the
#: water-filling. Symmetric flows computed through different arithmetic orders differ by a few
#: ulps (~1e-16); 1e-12 merges those while remaining far below any physically meaningful
#: difference in bandwidth.
DEFAULT_SOLVER_RTOL = 1e-12

# --------------------------------------------------------------------------------------------
# Incidence (flows x links) in compressed-row form
# --------------------------------------------------------------------------------------------


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


def as_capacity(capacity: npt.ArrayLike, *, allow_zero: bool) -> FloatArray:
    """A validated copy of per-link capacities (bytes/s) as a 1-D float64 array: finite, and
    > 0 (``allow_zero`` False) or >= 0. Raises ValueError otherwise."""
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


def waterfill_csr(
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
        # recomputed level is stale (levels only rise; see waterfill_csr).
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
    paths: Sequence[Sequence[int] | np.ndarray] | Incidence,
    weights: npt.ArrayLike | None = None,
    *,
    rtol: float = DEFAULT_SOLVER_RTOL,
) -> FloatArray:
    """Max-min fair rate of every flow class, by vectorised progressive filling.

    Args:
        capacity: link capacities in bytes/s, shape [L]; finite and >= 0.
        paths: for each flow class, the link indices it crosses (each link at most once).
            Either a sequence of index sequences/arrays or an :class:`Incidence`.
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
    cap = as_capacity(capacity, allow_zero=True)
    if isinstance(paths, Incidence):
        inc = paths
        if inc.n_links != cap.size:
            raise ValueError("incidence n_links does not match len(capacity)")
        inc.validate()
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
    return waterfill_csr(cap, inc.indptr, inc.links, w, rtol)


# --------------------------------------------------------------------------------------------
# Memoising solver with registered paths
# --------------------------------------------------------------------------------------------


def sorted_distinct(a: IntArray) -> IntArray:
    """The distinct values of the non-empty 1-D int array ``a``, increasing: ``np.unique(a)``,
    without np.unique, whose first call imports numpy.ma (10-30 ms of start-up)."""
    srt = np.sort(a)
    first = np.empty(srt.size, dtype=np.bool_)
    first[0] = True
    np.not_equal(srt[1:], srt[:-1], out=first[1:])
    return srt[first]
