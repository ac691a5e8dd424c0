"""Max-min fair bandwidth sharing: the stateless water-filling and a memoising solver.

The network is a set of directed links, each with a capacity (bytes/s). A *flow class* crosses a
fixed *path* (a set of link indices) and stands for ``multiplicity`` identical flows. Concurrent
flows share links max-min fairly.

* :func:`maxmin_rates` — stateless, vectorised progressive filling (water-filling).
* :class:`MaxMinSolver` — registers paths once (integer ids) and memoises solutions keyed by
  the active-set signature, because training workloads repeat the same communication pattern
  every step.

The SimPy process that drains flows at these rates is :mod:`scaling.engine.network`. Units
everywhere: bytes, seconds, bytes/s. This module knows nothing about ML; it imports only the
standard library and numpy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from operator import mul
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from scaling.engine.waterfill import (  # the stateless part, re-exported
    DEFAULT_SOLVER_RTOL,
    FloatArray,
    Incidence,
    IntArray,
    as_capacity,
    maxmin_rates,
    waterfill_csr,
)

__all__ = [
    "DEFAULT_SOLVER_RTOL",
    "Incidence",
    "MaxMinSolver",
    "Solution",
    "fingerprint",
    "maxmin_rates",
]


#: successor memo bounds: entries per (solution, sign, changed classes), and in all
_SUCC_PER_KEY = 4
_SUCC_MAX = 4096
#: ... and array values kept in all (8 bytes each: 32 MB)
_SUCC_VALUES = 1 << 22


class Solution(NamedTuple):
    """A solved active set (read-only arrays).

    Attributes:
        path_ids: sorted unique path ids of the active classes, shape [K].
        multiplicity: total number of flows per class, shape [K].
        rates: per-flow rate of each class in bytes/s, shape [K].
        link_idx: links carrying traffic, shape [M].
        link_rate: aggregate rate on each of ``link_idx`` in bytes/s, shape [M]
            (sum over classes of rate * multiplicity).
        zero_rate: some class has rate 0 (a link saturated up to rounding before it was
            filled): its flows never finish, and dividing bytes by its rate warns.
        first: ``path_ids`` is the block ``first, first + 1, ..., first + K - 1`` when >= 0
            (a phase's paths, registered together: slices read and write its per-path
            values, where a gather or scatter of ~10^4 entries costs tens of us), else -1.
    """

    path_ids: IntArray
    multiplicity: IntArray
    rates: FloatArray
    link_idx: IntArray
    link_rate: FloatArray
    zero_rate: bool = False
    first: int = -1


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


#: batches of at most this many flow classes sum their fingerprint terms in plain Python
_PY_SUMS = 32
# a ufunc method: `a.sum()` adds a Python wrapper (~0.5-2 us a call)
_add = np.add.reduce


def fingerprint(pids: IntArray, mult: IntArray) -> tuple[int, int]:
    """(flows in all, sum of path id * flows) of a batch of flow classes: its share of the
    solver memo's fingerprint (``total`` and ``weighted`` of :meth:`MaxMinSolver.lookup_counts`,
    which a caller keeps as flows start and finish). Integer sums, so the same numbers either
    way; a small batch in plain Python (~1 us less than two numpy calls, the common size on
    one node), a large one in numpy. (int64 wraps where Python ints do not: beyond 2^63,
    where a mismatch costs a memo miss, never a wrong answer.)"""
    if pids.size <= _PY_SUMS:
        m = mult.tolist()
        return sum(m), sum(map(mul, pids.tolist(), m))
    return int(_add(mult)), int(pids @ mult)


class MaxMinSolver:
    """Max-min solver over a fixed capacity vector, with registered paths and a memo.

    Paths are registered once and receive dense integer ids, so that an *active set* — which
    classes are active and how many flows each holds — has a cheap canonical signature: the
    sorted (path_id, multiplicity) pairs. Solutions are memoised on that signature because a
    training job replays the same communication pattern every step.

    The memo is keyed by a fingerprint linear in the per-path flow counts (flows in all, sum
    of path id * flows) and checked exactly against the stored signature, so the engine, which
    keeps the counts as flows start and finish, finds a hit with :meth:`lookup_counts` in
    O(active classes) without sorting or hashing the signature.
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
        self._cap = _readonly(as_capacity(capacity_Bps, allow_zero=True))
        self._rtol = float(rtol)
        if cache_size is not None and cache_size < 0:
            raise ValueError("cache_size must be >= 0 or None")
        self._cache_size = cache_size
        # memo of solutions: per cheap fingerprint of an active set, the solutions of the sets
        # seen with it; one is used only if its path ids and multiplicities equal the asked
        # set's exactly. The fingerprint (flows in all, sum of path id * flows) is linear in
        # the per-path flow counts, so a caller that keeps those counts as flows start and
        # finish keeps it too, in O(changed flows), and asks :meth:`lookup_counts` without
        # building the signature. `_fifo`: insertion order, for eviction.
        self._cache: dict[tuple[int, int], list[Solution]] = {}
        self._fifo: deque[tuple[tuple[int, int], Solution]] = deque()
        # Registered paths in a growable CSR buffer (amortised O(1) append), and the id of each
        # path's link tuple, kept lazily: paths [0, _ids_upto) are in `_ids`, the rest are
        # added from the CSR by _keys() when a lookup by links needs them (the model
        # registers its paths in bulk with register_checked_csr and never looks one up by its
        # links: hashing ~6,400 tuples per run was ~5 % of a Sobol run). The empty path's id
        # is kept apart: every transfer asks for it.
        self._ids: dict[tuple[int, ...], int] = {}
        self._ids_upto = 0
        self._empty: int | None = None
        self._ptr = np.zeros(16, dtype=np.int64)
        self._buf = np.zeros(64, dtype=np.int64)
        self._n_paths = 0
        self.hits = 0
        """Number of :meth:`solve` calls answered from the memo."""
        self.misses = 0
        # ids of the memoised solutions (the memo holds them, so an id is not reused while
        # listed), and the successor memo (see :meth:`successor`): per (id of the solution
        # before, sign, changed classes), up to _SUCC_PER_KEY entries (solution before,
        # changed path ids, their flows, solution after, paths whose rate differs, their
        # rates), _SUCC_MAX in all (oldest first out)
        self._held: set[int] = set()
        self._succ: dict[tuple[int, int, int], list[tuple]] = {}
        self._succ_fifo: deque[tuple[int, int, int]] = deque()
        self._succ_n = 0  # array values the successor memo keeps
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
        # Paths are short (a handful of links) and registered by the ten thousand on big
        # clusters: key and checks in plain Python, which beats numpy's per-call overhead.
        if isinstance(links, tuple) and all(type(i) is int for i in links):
            key: tuple[int, ...] = links
        else:
            key = tuple(np.asarray(links, dtype=np.int64).ravel().tolist())
        ids = self._keys()
        pid = ids.get(key)
        if pid is not None:
            return pid
        if key:
            if min(key) < 0 or max(key) >= self.n_links:
                raise ValueError(f"link index out of range [0, {self.n_links})")
            if len(set(key)) != len(key):
                raise ValueError("a path must not cross the same link twice")
        arr = np.asarray(key, dtype=np.int64)
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
        ids[key] = pid
        self._ids_upto = self._n_paths
        if not key:
            self._empty = pid
        return pid

    def register_many(self, paths: Sequence[Sequence[int]]) -> IntArray:
        """Register many paths at once; the ids :meth:`register` would return one by one (new
        paths numbered in first-seen order), shape [len(paths)]."""
        n0 = self._n_paths
        ids = self._keys()
        new: dict[tuple[int, ...], int] = {}  # first-seen order: the ids register would give
        got: list[int] = []
        for links in paths:
            key = links if isinstance(links, tuple) else tuple(int(x) for x in links)
            pid = ids.get(key)
            if pid is None:
                pid = new.setdefault(key, n0 + len(new))
            got.append(pid)
        out = np.array(got, dtype=np.int64)
        if new:
            fresh = list(new)
            lengths = np.fromiter((len(k) for k in fresh), dtype=np.int64, count=len(fresh))
            flat = np.fromiter(
                (x for k in fresh for x in k), dtype=np.int64, count=int(lengths.sum())
            )
            self._append_csr(flat, lengths)
            ids.update(new)
            self._ids_upto = self._n_paths
        return out

    def _keys(self) -> dict[tuple[int, ...], int]:
        """The id of every registered path by its link tuple (the ones registered in bulk by
        :meth:`register_checked_csr` added from the CSR now)."""
        ids, upto, n = self._ids, self._ids_upto, self._n_paths
        if upto < n:
            ptr = self._ptr[upto : n + 1].tolist()
            flat = self._buf[ptr[0] : ptr[-1]].tolist()
            base = ptr[0]
            for k in range(n - upto):
                ids[tuple(flat[ptr[k] - base : ptr[k + 1] - base])] = upto + k
            self._ids_upto = n
        return ids

    def _append_csr(self, flat: IntArray, lengths: IntArray, *, repeats: bool = True) -> None:
        """Record new paths given end to end (``flat``, ``lengths`` links each) as ids
        ``n_paths, n_paths + 1, ...``, after the checks of :meth:`register` on all of them at
        once (before any is recorded; ``repeats=False``: a link repeated inside a path is not
        looked for). The caller maps their keys to the ids (or leaves that to :meth:`_keys`)."""
        n0, n = self._n_paths, int(lengths.size)
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= self.n_links):
            raise ValueError(f"link index out of range [0, {self.n_links})")
        if flat.size and repeats:
            seg = np.repeat(np.arange(n), lengths)
            order = np.lexsort((flat, seg))
            s_seg, s_flat = seg[order], flat[order]
            if np.any((s_seg[1:] == s_seg[:-1]) & (s_flat[1:] == s_flat[:-1])):
                raise ValueError("a path must not cross the same link twice")
        start = int(self._ptr[n0])
        end = start + flat.size
        need = n0 + n + 1
        if need > self._ptr.size:
            grown = np.zeros(max(need, 2 * self._ptr.size), dtype=np.int64)
            grown[: self._ptr.size] = self._ptr
            self._ptr = grown
        if end > self._buf.size:
            grown = np.zeros(max(end, 2 * self._buf.size), dtype=np.int64)
            grown[: self._buf.size] = self._buf
            self._buf = grown
        self._buf[start:end] = flat
        self._ptr[n0 + 1 : need] = start + np.cumsum(lengths)
        self._n_paths = need - 1
        if self._empty is None and n and int(lengths.min()) == 0:  # the path without links
            self._empty = n0 + int(np.argmin(lengths))

    def path_links(self, path_id: int) -> IntArray:
        """Link indices of a registered path (read-only copy)."""
        self._check_pid(path_id)
        return _readonly(self._buf[self._ptr[path_id] : self._ptr[path_id + 1]].copy())

    def _check_pid(self, path_id: int) -> None:
        if not 0 <= path_id < self._n_paths:
            raise KeyError(f"unknown path id {path_id}")

    def empty_path_id(self) -> int | None:
        """The id of the registered path without links (a local copy), or None: there is at
        most one, since paths are registered once per link sequence."""
        return self._empty

    def path_lengths(self, path_ids: IntArray) -> IntArray:
        """Number of links of each of the given registered paths (0: a local copy)."""
        return self._ptr[path_ids + 1] - self._ptr[path_ids]

    def gather(self, pids: IntArray) -> tuple[IntArray, IntArray]:
        """Concatenated links of the given registered paths, and the number of links of each."""
        starts = self._ptr[pids]
        lengths = self._ptr[pids + 1] - starts
        # Entry j of path k (in the output) sits at starts[k] + (j - offset[k]).
        offset = np.cumsum(lengths) - lengths
        total = int(lengths.sum())
        gather = np.arange(total, dtype=np.int64) + np.repeat(starts - offset, lengths)
        return self._buf[gather], lengths

    def link_flows(self, path_ids: IntArray, multiplicity: IntArray) -> FloatArray:
        """Number of flows crossing each link, shape [L], for paths with multiplicities."""
        links, lengths = self.gather(np.asarray(path_ids, dtype=np.int64))
        weights = np.repeat(np.asarray(multiplicity, dtype=np.float64), lengths)
        # bincount with float weights returns float64 (numpy's stubs say int)
        return np.bincount(links, weights=weights, minlength=self.n_links)  # type: ignore[return-value]

    # -- solving ----------------------------------------------------------------------------

    @property
    def cache_len(self) -> int:
        """Number of memoised active sets."""
        return len(self._fifo)

    def clear_cache(self) -> None:
        """Drop all memoised solutions (counters are kept)."""
        self._cache.clear()
        self._fifo.clear()
        self._held.clear()
        self._succ.clear()
        self._succ_fifo.clear()
        self._succ_n = 0

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
        # (int64 sums may wrap on absurd inputs: still a deterministic fingerprint)
        key = (int(mults.sum()), int(pids @ mults))
        bucket = self._cache.get(key)
        if bucket is not None:
            for memo in bucket:
                if np.array_equal(memo.path_ids, pids) and np.array_equal(memo.multiplicity, mults):
                    self.hits += 1
                    return memo
        self.misses += 1
        sol = self._compute(pids, mults)
        if self._cache_size is None or self._cache_size > 0:
            if self._cache_size is not None and len(self._fifo) >= self._cache_size:
                # FIFO eviction: the oldest entry goes
                old_key, old = self._fifo.popleft()
                self._held.discard(id(old))
                kept = [m for m in self._cache[old_key] if m is not old]
                if kept:
                    self._cache[old_key] = kept
                else:
                    del self._cache[old_key]
            self._cache.setdefault(key, []).append(sol)
            self._fifo.append((key, sol))
            self._held.add(id(sol))
        return sol

    def lookup_counts(self, total: int, weighted: int, counts: IntArray) -> Solution | None:
        """The memoised solution of the active set given as per-path flow counts, or None.

        The fast path for a caller that keeps the counts up to date (the engine): no
        signature is built. A hit counts in :attr:`hits`; on None, call :meth:`solve_arrays`
        (which counts the miss).

        Args:
            total: ``counts.sum()``, the number of active flows.
            weighted: ``(path_id * counts).sum()``; only picks the memo bucket, so a wrong
                value (e.g. after int64 wrap-around) can cost a miss, never a wrong answer.
            counts: flows per registered path, int64 >= 0, shape [>= n_paths] (extra
                entries zero).
        """
        bucket = self._cache.get((total, weighted))
        if bucket is not None:
            for memo in bucket:
                # exact: the memo's counts match on its paths, and its flows add up to
                # `total` (the key), so every other path's count is zero (counts >= 0)
                # (bytes compared: int64 both, ~5 us less than `(a == b).all()` on a few)
                k = memo.first
                got = counts[k : k + memo.path_ids.size] if k >= 0 else counts.take(memo.path_ids)
                if got.tobytes() == memo.multiplicity.tobytes():
                    self.hits += 1
                    return memo
        return None

    def successor(
        self, before: Solution, sign: int, pids: IntArray, mults: IntArray
    ) -> tuple[Solution, IntArray, FloatArray] | None:
        """The memoised solution of the active set ``before``'s set changed by one batch of
        flows, from a change seen before (:meth:`remember_successor`), or None.

        The engine's fastest path: one change (a bundle started, a wave of flows finished)
        between two re-solves is checked in O(changed flows) instead of O(active classes),
        and hands back only the paths whose rate moved. Answers only what
        :meth:`lookup_counts` would (a solution still in the memo; it counts as a hit).

        Args:
            before: the solution of the active set before the change.
            sign: +1 (flows started) or -1 (flows finished).
            pids: path id of each changed class (not necessarily unique or sorted), int64,
                shape [D] (another dtype never matches).
            mults: flows of each, int64, shape [D].

        Returns:
            (the solution after, path ids whose per-flow rate differs from ``before``'s or
            which ``before`` lacks, their rates in bytes/s), or None.
        """
        entries = self._succ.get((id(before), sign, pids.size))
        if entries is not None:
            # the changed flows as bytes (int64 arrays of one length: equal bytes, equal
            # values; another dtype can only miss), compared without a ufunc and a reduction
            want_p, want_m = pids.tobytes(), mults.tobytes()
            for prev, dp, dm, nxt, cp, cr in entries:
                if prev is before and id(nxt) in self._held and dp == want_p and dm == want_m:
                    self.hits += 1
                    return nxt, cp, cr
        return None

    def remember_successor(
        self, before: Solution, sign: int, pids: IntArray, mults: IntArray, after: Solution
    ) -> None:
        """Record that ``before``'s active set changed by the flows ``pids``/``mults``
        (``sign`` as in :meth:`successor`) is ``after``'s (copies kept, bounded memo)."""
        key = (id(before), sign, pids.size)
        bp, ap = before.path_ids, after.path_ids
        pos = np.minimum(np.searchsorted(bp, ap), max(bp.size - 1, 0))
        same = (bp[pos] == ap) & (before.rates[pos] == after.rates) if bp.size else ap < 0
        moved = ~same
        entry = (
            before,
            np.ascontiguousarray(pids, dtype=np.int64).tobytes(),
            np.ascontiguousarray(mults, dtype=np.int64).tobytes(),
            after,
            _readonly(ap[moved]),
            _readonly(after.rates[moved]),
        )
        entries = self._succ.setdefault(key, [])
        entries.append(entry)
        self._succ_n += 2 * (pids.size + entry[4].size)
        if len(entries) > _SUCC_PER_KEY:
            self._succ_n -= 2 * (len(entries[0][1]) // 8 + entries[0][4].size)
            del entries[0]
        self._succ_fifo.append(key)
        while self._succ_fifo and (len(self._succ_fifo) > _SUCC_MAX or self._succ_n > _SUCC_VALUES):
            old = self._succ_fifo.popleft()
            olds = self._succ.get(old)
            if olds:
                self._succ_n -= 2 * (len(olds[0][1]) // 8 + olds[0][4].size)
                del olds[0]
                if not olds:
                    del self._succ[old]

    def _compute(self, pids: IntArray, mults: IntArray) -> Solution:
        links, lengths = self.gather(pids)
        indptr = np.zeros(pids.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        w = mults.astype(np.float64)
        rates = waterfill_csr(self._cap, indptr, links, w, self._rtol)
        finite = np.isfinite(rates)  # empty paths carry no traffic
        per_entry = np.repeat(np.where(finite, rates * w, 0.0), lengths)
        load = np.bincount(links, weights=per_entry, minlength=self.n_links)
        # the links used, sorted (np.unique's answer) by a count: O(entries + links) where
        # np.unique sorts or hashes the entries, the larger cost on a big active set
        link_idx = np.flatnonzero(np.bincount(links, minlength=self.n_links))
        # (strictly increasing: the ends tell a block)
        first = int(pids[0]) if pids.size and int(pids[-1]) - int(pids[0]) == pids.size - 1 else -1
        return Solution(
            path_ids=_readonly(pids.copy()),
            multiplicity=_readonly(mults.copy()),
            rates=_readonly(rates),
            link_idx=_readonly(link_idx),
            link_rate=_readonly(load[link_idx]),
            zero_rate=bool((rates == 0.0).any()),
            first=first,
        )

    # -- bulk registration of known-distinct paths (issue 29) -------------------------------

    def register_checked_csr(self, flat: IntArray, lengths: IntArray) -> IntArray:
        """Register paths that the caller guarantees are new: distinct from each other and
        from every path registered before, none crossing a link twice. They get the ids
        ``n_paths, n_paths + 1, ...`` in the order given (those :meth:`register_many` would
        give them) and the same state, shape [len(lengths)].

        Args:
            flat: the paths' link indices end to end, int64, shape [sum(lengths)].
            lengths: links per path, int64 >= 0, shape [P].

        Only the link range is checked (two reductions): a path given twice, one registered
        before, or one crossing a link twice is undefined behaviour (wrong ids or rates, no
        error). For the model's routes (``scaling.model.comm.flowcoll``), interned once per
        cluster structure, where that is checked once (``scaling.model.comm.shared``) instead
        of hashing every path of every run here: ~5 % of a Sobol run's CPU.
        """
        n0 = self._n_paths
        flat = np.asarray(flat, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != flat.size:
            raise ValueError("flat and lengths do not describe the same paths")
        self._append_csr(flat, lengths, repeats=False)
        return np.arange(n0, n0 + lengths.size, dtype=np.int64)
