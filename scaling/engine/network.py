"""Flow-level network process: flows drain at max-min fair rates inside a SimPy environment.

A *bundle* of flows (one collective phase) enters the network at once; each flow moves a number
of bytes over a registered path. Concurrent flows share links max-min fairly
(:class:`~scaling.engine.maxmin.MaxMinSolver`); rates are recomputed only when the set of active
flows changes, and in between every flow drains linearly ("fluid" model). There is no packet,
chunk or time-step granularity anywhere: the simulation cost is proportional to the number of
flow-set changes, not to bytes or time.

Links carry bandwidth only. Latency is not a property of the engine: the model prices it per
sequential algorithm step (``scaling.model.comm``), which a fluid flow cannot see.

Units everywhere: bytes, seconds, bytes/s. This module knows nothing about ML; it imports only
the standard library, numpy, simpy, :mod:`scaling.engine.maxmin` and its link accounting
(:mod:`scaling.engine.intervals`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import numpy as np
import numpy.typing as npt
import simpy

from scaling.engine.intervals import LinkBytes, LinkDiagnostics
from scaling.engine.maxmin import (
    DEFAULT_SOLVER_RTOL,
    FloatArray,
    IntArray,
    MaxMinSolver,
    Solution,
    as_capacity,
    fingerprint,
)
from scaling.engine.memory import keep_freed_memory
from scaling.engine.waterfill import sorted_distinct

__all__ = ["DEFAULT_FINISH_RTOL", "FlowNetwork"]

#: Default relative tolerance (fraction of a flow's own size) under which a flow whose remaining
#: bytes are not exactly zero is considered finished at a wake-up. This is what makes flows that
#: finish "at the same instant" up to rounding finish together in one re-solve.
DEFAULT_FINISH_RTOL = 1e-9
#: the signature is sorted from the live entries when the path table has more than this many
#: entries per live flow, else read off the table by a scan
_SORT_RATIO = 8
# rows of FlowNetwork._f and ._i (the rate row last: a squeeze skips it)
_REM, _THRESH, _RATE = 0, 1, 2
_PID, _MULT = 0, 1
#: finished entries stay in the tables as dead entries (never finished again, rate 0 or their
#: last one, no time left to finish: remaining bytes inf, threshold -inf, path id -1) until
#: they are more than 1/this of the live ones; then the tables are squeezed (one gather each)
_DEAD_RATIO = 1
# reductions as ufunc methods: `a.min()` & co. add a Python wrapper (~0.5-2 us a call)
_any, _all = np.logical_or.reduce, np.logical_and.reduce
_min = np.minimum.reduce
#: a bundle of at least this many flows whose path ids are a block (k, k + 1, ...) adds its
#: counts by a slice; below, np.add.at is as cheap as the check
_BLOCK_MIN = 64
_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_I.setflags(write=False)
_EMPTY_F = np.zeros(0)
_EMPTY_F.setflags(write=False)
#: a re-solve after one change asks the successor memo (O(changed flows)) when the solution
#: before had at least this many classes; below, the per-path counts are as cheap
_SUCC_MIN = 128


class FlowNetwork(LinkDiagnostics):
    """Fluid flow-level network running inside a :class:`simpy.Environment`.

    Model:
        * :meth:`transfer_many` starts a bundle of flow classes; a class of multiplicity k is k
          identical flows on one path, each carrying its ``nbytes``. The bundle's event fires
          once, when its last byte has been delivered. A zero-byte flow, or one on an empty path
          (a local copy), is delivered at once.
        * Active flows share links max-min fairly. Rates are re-solved only when the set of
          active flows changes; in between, remaining bytes decrease linearly in time.

    Scheduling:
        * Bundles started at the same simulated instant are batched: :meth:`transfer_many` only
          marks the flow set dirty and schedules one zero-delay flush, so several collectives
          starting together cost one re-solve.
        * Exactly one live timer exists: it fires at the earliest predicted completion. Any
          flow-set change bumps a generation counter, which turns the old timer into a no-op
          (counted in :attr:`stale_wakeups`) and schedules a new one.
        * At a wake-up, every flow whose remaining bytes are within ``finish_rtol`` of its size
          finishes, so flows that end simultaneously up to rounding cause a single re-solve.

    Determinism: no randomness, and no iteration over unordered containers; completion events
    of simultaneous finishes fire in the order the bundles were started.
    """

    def __init__(
        self,
        env: simpy.Environment,
        capacity_Bps: Sequence[float] | npt.ArrayLike,
        *,
        finish_rtol: float = DEFAULT_FINISH_RTOL,
        solver_rtol: float = DEFAULT_SOLVER_RTOL,
        cache_size: int | None = 1024,
    ) -> None:
        """Args:
        env: the SimPy environment (time unit: seconds).
        capacity_Bps: per-link capacity in bytes/s, shape [L], finite and > 0.
        finish_rtol: a flow is finished at a wake-up when its remaining bytes are
            <= finish_rtol * its size.
        solver_rtol: tie tolerance of the water-filling.
        cache_size: memo size of the underlying :class:`MaxMinSolver`.
        """
        self.env = env
        keep_freed_memory()  # once per process: no page faults per event (see its module)
        cap = as_capacity(capacity_Bps, allow_zero=False)
        self.solver = MaxMinSolver(cap, rtol=solver_rtol, cache_size=cache_size)
        self._finish_rtol = float(finish_rtol)

        # The active flows, as parallel numpy arrays in start order: entries [0, _n) are live
        # or dead (finished, path id -1: see _DEAD_RATIO), the rest is spare capacity (appends
        # are amortised O(1)). Dead entries are squeezed out once they outnumber the live ones
        # (_DEAD_RATIO), so that every per-event operation is O(active flows), not O(the
        # largest number of flows ever active), while a wake-up that retires a wave of flows
        # only marks them (a squeeze per wake-up cost as much as the rest of the event). Start
        # order makes the finished flows of a wake-up come out in start order by a plain scan
        # (no sort), which is the order their residues are credited and their bundles fire in.
        # Two 2-D tables, one row per field, so that squeezing out finished flows is two
        # gathers instead of five: floats (remaining bytes; finish_rtol * nbytes, at or below
        # which a flow is finished; current per-flow rate, B/s) and ints (path id,
        # multiplicity).
        self._f = np.zeros((3, 0))
        self._i = np.zeros((2, 0), dtype=np.int64)
        # scratch rows as long as the tables for the per-event temporaries (drained bytes,
        # finished mask, time left): no fresh array of ~10^4 entries per pass
        self._sf = np.zeros(0)
        self._sb = np.zeros(0, dtype=np.bool_)
        self._sb2 = np.zeros(0, dtype=np.bool_)
        # each entry's time left (s) at the last re-solve; the live timer's flows are the
        # entries [0, _due_n) with at most _due_dt of it (read at the wake-up, not listed at
        # the re-solve: most re-solves' timers go stale first, and at the wake-up the mask
        # costs a compare where a list of ~10^4 positions cost a scan and a scatter)
        self._tl = np.zeros(0)
        self._due_n = 0
        self._due_dt = 0.0
        self._n = 0
        self._live = 0  # live entries among [0, _n)
        # The unfinished bundles in start order, [flows left, event, entries] each. A bundle's
        # flows are appended together and squeezing keeps their order, so entries [0, _n) are
        # _head dead entries, then each bundle's `entries` (its live flows, and dead ones
        # from it or from finished bundles after it), one bundle after the other: the counts
        # locate them (no per-flow id).
        self._bundles: list[list] = []
        self._head = 0
        # flows in all and sum of path id * flows over the live entries: the solver memo's
        # fingerprint of the active set, kept as flows start and finish
        self._sum_m = 0
        self._sum_pm = 0
        # The solution of the last re-solve (None when no flow was live), and the changes of
        # the flow set since: how many, and the last (sign, path ids, multiplicities). One
        # change after a solution of many classes asks the solver's successor memo first.
        self._sol: Solution | None = None
        self._changes = 0
        self._change: tuple[int, IntArray, IntArray] | None = None
        self._squeezed = False  # the tables were squeezed since the last re-solve

        self._last_t = float(env.now)  # time up to which `_f[REM]` and link bytes are integrated
        self._gen = 0  # bumped at every re-solve; older timers become no-ops
        self._wake_at = math.inf  # time of the live timer
        self._dirty = False
        self._flush_pending = False
        self._link_idx = _EMPTY_I
        self._link_rate = _EMPTY_F
        # link bytes, owed until read (only diagnostics read them; see LinkBytes)
        self._link_bytes = LinkBytes(cap.size, self.solver.gather)
        # Per registered path, the flows it carries (multiplicity summed over the live
        # entries), kept up to date as flows start and finish, and its per-flow rate at the
        # last re-solve: the re-solve reads the signature's multiplicities off it (and, when
        # many flows are live, the signature itself, by a scan instead of a sort). Indexed by
        # path id; grown as paths register.
        self._path_mult = np.zeros(0, dtype=np.int64)
        self._path_rate = np.zeros(0)
        # intervals of constant link rates, kept only after record_intervals() (explain
        # --links, trace; see LinkDiagnostics)
        self._intervals = None

        self.resolves = 0
        """Flow-set changes that left >= 1 active flow (each asks the solver for rates)."""
        self.wakeups = 0
        """Live timer firings (each completes >= 1 flow)."""
        self.stale_wakeups = 0
        """Timers that fired after being superseded by a later flow-set change (no-ops)."""
        self.flows_completed = 0
        """Completed flows, counting multiplicity."""
        self.transfers_completed = 0
        """Completed flow classes (entries of :meth:`transfer_many` calls)."""

    # -- topology ---------------------------------------------------------------------------

    @property
    def n_links(self) -> int:
        """Number of links L."""
        return self.solver.n_links

    @property
    def capacity(self) -> FloatArray:
        """Link capacities in bytes/s (read-only), shape [L]."""
        return self.solver.capacity

    def path_id(self, links: Sequence[int] | np.ndarray) -> int:
        """Register a path (link indices, each at most once) once and return its id."""
        return self.solver.register(links)

    def path_ids(self, paths: Sequence[Sequence[int]]) -> IntArray:
        """:meth:`path_id` of each path, registered in one batch, shape [len(paths)]."""
        return self.solver.register_many(paths)

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
        """Number of flow classes currently sending bytes."""
        return self._live

    def current_rates(self) -> dict[int, float]:
        """Per-flow rate in bytes/s of each active path at the last re-solve."""
        n = self._n
        live = (self._i[_PID, :n] >= 0).nonzero()[0]
        pids, rates = self._i[_PID, :n].take(live), self._f[_RATE, :n].take(live)
        return dict(zip(pids.tolist(), rates.tolist(), strict=True))

    # -- transfers --------------------------------------------------------------------------

    def transfer_many(
        self,
        path_ids: Sequence[int] | npt.ArrayLike,
        nbytes: Sequence[float] | npt.ArrayLike,
        multiplicity: Sequence[int] | npt.ArrayLike | None = None,
    ) -> simpy.Event:
        """Start a bundle of flows; one event fires when the last of them is delivered.

        This is how a collective phase enters the network: thousands of flows cost one
        vectorised append and one completion event instead of one event per flow.

        Args:
            path_ids: registered path ids, shape [F].
            nbytes: bytes per flow, shape [F], finite and >= 0.
            multiplicity: identical flows per entry, shape [F], ints >= 1 (default 1).

        Returns:
            A SimPy event whose value is the completion time in seconds.
        """
        pids = np.asarray(path_ids, dtype=np.int64).reshape(-1)
        size = np.asarray(nbytes, dtype=np.float64).reshape(-1)
        mult = (
            np.ones(pids.size, dtype=np.int64)
            if multiplicity is None
            else np.asarray(multiplicity, dtype=np.int64).reshape(-1)
        )
        k = pids.size
        if not (k == size.size == mult.size):
            raise ValueError("path_ids, nbytes and multiplicity must have the same length")
        event = self.env.event()
        if k == 0:
            event.succeed(float(self.env.now))
            return event
        # The checks as min/max reductions (no temporaries): NaN fails `lo >= 0`
        if pids.min() < 0 or pids.max() >= self.solver.n_paths:
            raise KeyError("unknown path id in transfer_many")
        lo = float(size.min())
        if not (lo >= 0.0 and float(size.max()) < math.inf):
            raise ValueError("nbytes must be finite and >= 0")
        if mult.min() < 1:
            raise ValueError("multiplicity must be >= 1")
        return self._start(event, pids, size, mult, lo)

    def transfer_checked_many(
        self, path_ids: IntArray, nbytes: FloatArray, multiplicity: IntArray
    ) -> simpy.Event:
        """:meth:`transfer_many` for a caller that guarantees its input, which is not
        re-checked: ``path_ids`` a 1-D int64 array of registered path ids, ``nbytes`` a float64
        array of the same length, finite and >= 0 (bytes per flow), ``multiplicity`` an int64
        array of the same length, >= 1. The arrays are read, never kept or written. Same
        flows, same floats, same event as :meth:`transfer_many` on that input; a violation is
        undefined behaviour (wrong results, no error).

        For the model's collectives, whose flows come from paths it registered itself and
        sizes it computed (``scaling.model.comm.flowcoll``): the checks cost ~5 us a phase.
        """
        event = self.env.event()
        if not path_ids.size:
            event.succeed(float(self.env.now))
            return event
        return self._start(event, path_ids, nbytes, multiplicity, float(nbytes.min()))

    def _start(
        self, event: simpy.Event, pids: IntArray, size: FloatArray, mult: IntArray, lo: float
    ) -> simpy.Event:
        """Start the checked, non-empty bundle (``lo``: its smallest size); returns ``event``."""
        k = pids.size
        # A zero-byte flow, or one on the empty path (a local copy: the only path without
        # links, registered at most once), is delivered at once; usually there is none.
        empty = self.solver.empty_path_id()
        if lo == 0.0 or (empty is not None and bool((pids == empty).any())):
            real = size > 0
            if empty is not None:
                real &= pids != empty
            n_real = int(real.sum())
            self.transfers_completed += k - n_real
            self.flows_completed += int(mult[~real].sum())
            pids, size, mult = pids[real], size[real], mult[real]
            if n_real == 0:
                # Nothing to share: no flow enters the solver, so no re-solve either.
                event.succeed(float(self.env.now))
                return event
            k = n_real
        self._bundles.append([k, event, k])
        self._live += k
        self._changes += 1
        n = self._n
        if n + k > self._f.shape[1]:
            self._grow(max(n + k, 2 * self._f.shape[1], 16))
        end = n + k
        f, i = self._f, self._i
        f[_REM, n:end] = size
        np.multiply(self._finish_rtol, size, out=f[_THRESH, n:end])
        f[_RATE, n:end] = 0.0  # until the flush re-solves; no time passes before then
        i[_PID, n:end] = pids
        i[_MULT, n:end] = mult
        # The change as views of the table (not copies): the re-solve reads it only if it is
        # the one change since the last, and no entry moves or is written before (squeezes
        # and dead marks come with a second change; a grow leaves the old table unchanged).
        # Counted from the rows too: ufunc.at leaves its fast loop (~50x slower) for a dtype
        # equal to int64 but another instance, as arrays that crossed a pickle carry.
        self._change = _, pids, mult = (1, i[_PID, n:end], i[_MULT, n:end])
        self._n = end
        self._grow_paths()
        p0 = int(pids[0])
        if k >= _BLOCK_MIN and int(pids[-1]) - p0 == k - 1 and _all(pids[1:] > pids[:-1]):
            # the path ids are the block p0 ... p0 + k - 1 (a phase's paths, registered
            # together): a slice (integer adds: the same counts as np.add.at, ~10x faster)
            self._path_mult[p0 : p0 + k] += mult
        else:
            np.add.at(self._path_mult, pids, mult)
        flows, weighted = fingerprint(pids, mult)
        self._sum_m += flows
        self._sum_pm += weighted
        self._dirty = True
        self._schedule_flush()
        return event

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            # One zero-delay flush per burst of same-instant bundles (batched re-solve).
            self._flush_pending = True
            flush = self.env.event()
            flush.callbacks.append(self._on_flush)
            flush.succeed()

    # -- internals --------------------------------------------------------------------------

    def _grow(self, size: int) -> None:
        """Reallocate the flow tables with room for ``size`` flows (live entries kept)."""
        n = self._n
        f = np.zeros((3, size))
        f[:, :n] = self._f[:, :n]
        i = np.zeros((2, size), dtype=np.int64)
        i[:, :n] = self._i[:, :n]
        self._f, self._i = f, i
        self._sf = np.zeros(size)
        self._sb = np.zeros(size, dtype=np.bool_)
        self._sb2 = np.zeros(size, dtype=np.bool_)
        # (a bundle started at the instant of a live wake-up grows the table before it)
        tl = np.zeros(size)
        tl[:n] = self._tl[:n]
        self._tl = tl

    def _grow_paths(self) -> None:
        """Extend the per-path tables to every registered path."""
        n_paths = self.solver.n_paths
        # one spare entry past the last path at least: a dead entry's path id -1 reads it
        # (count and rate 0, never written)
        if self._path_mult.size <= n_paths:
            grow = max(n_paths + 1, 2 * self._path_mult.size) - self._path_mult.size
            self._path_mult = np.concatenate([self._path_mult, np.zeros(grow, dtype=np.int64)])
            self._path_rate = np.concatenate([self._path_rate, np.zeros(grow)])

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
        n = self._n
        if dt > 0.0 and n:
            # a flow not yet solved has rate 0 and keeps its bytes
            rem = self._f[_REM, :n]
            drained = np.multiply(self._f[_RATE, :n], dt, out=self._sf[:n])
            rem -= drained
            if self._link_idx.size:
                self._link_bytes.owe_rate(self._link_idx, self._link_rate, dt)
                if self._intervals is not None:
                    self._intervals.add(self._last_t, now, self._link_idx, self._link_rate)
        self._last_t = now

    def _step(self) -> None:
        """Advance time, retire finished flows, and re-solve if the flow set changed."""
        self._advance()
        n = self._n
        if n:
            now = self._last_t
            done = np.less_equal(self._f[_REM, :n], self._f[_THRESH, :n], out=self._sb[:n])
            m = self._due_n
            if now >= self._wake_at and m:
                # The timer's own flows are finished by definition, whatever the rounding:
                # those whose time left at the re-solve was at most the timer's (>= 1 flow)
                due = np.less_equal(self._tl[:m], self._due_dt, out=self._sb2[:m])
                np.logical_or(done[:m], due, out=done[:m])
                self._complete(done, now)
            elif _any(done):
                self._complete(done, now)
        if self._dirty:
            self._resolve()

    def _complete(self, done: npt.NDArray[np.bool_], now: float) -> None:
        """Retire the flows marked in ``done`` (a mask over the entries [0, _n), live ones
        only)."""
        n = self._n
        idx = done.nonzero()[0]  # in start order: the entries are kept in start order
        n_done = idx.size
        i = self._i
        if n_done == n:  # common: a phase's flows finish together: views, no gathers
            # (the change is read by the re-solve that follows at once, before any write)
            pids, mults = i[_PID, :n], i[_MULT, :n]
            rems = self._f[_REM, :n]
        else:
            pids, mults = i[_PID, :n].take(idx), i[_MULT, :n].take(idx)  # (2-D take: slower)
            rems = self._f[_REM, :n].take(idx)
        # Credit the sub-tolerance residue (or overshoot) so link byte counts are exact.
        # Owed whole: a zero residue adds 0.0 to a link's bytes, which changes no float
        # (they are never -0.0), so filtering the zeros out here would only cost time.
        self._link_bytes.owe_rest(pids, rems * mults)
        if n_done == self._live:  # the last live flows: every count drops to zero
            self._path_mult[pids] = 0
            n_flows = self._sum_m
            self._sum_m = self._sum_pm = 0
        else:
            np.subtract.at(self._path_mult, pids, mults)
            n_flows, weighted = fingerprint(pids, mults)
            self._sum_m -= n_flows
            self._sum_pm -= weighted
        self.transfers_completed += n_done
        self.flows_completed += n_flows
        self._live -= n_done
        self._changes += 1
        self._change = (-1, pids, mults)

        # Bundles fire in start order; most wake-ups finish flows of the oldest bundle only.
        bundles = self._bundles
        if len(bundles) == 1 or int(idx[-1]) < self._head + bundles[0][2]:
            done_counts = [n_done]
        else:
            # flows done per bundle: bundle j holds the entries [ends[j-1], ends[j])
            ends = np.cumsum([b[2] for b in bundles]) + self._head
            done_counts = np.diff(np.searchsorted(idx, ends), prepend=0).tolist()
        finished: list[simpy.Event] = []
        kept: list[list] = []
        for entry, cnt in zip(bundles, done_counts, strict=False):
            entry[0] -= cnt
            if entry[0] == 0:
                finished.append(entry[1])
                # its entries (all dead now) go to the bundle before it, or the head
                if kept:
                    kept[-1][2] += entry[2]
                else:
                    self._head += entry[2]
            else:
                kept.append(entry)
        if finished:
            self._bundles = kept + bundles[len(done_counts) :]
        live = self._live
        if live == 0:
            self._n = 0
            self._head = 0
        elif (n - live) > live * _DEAD_RATIO:
            # squeeze the finished and dead entries out, keeping the others in start order
            # (not the rates: the re-solve that always follows rewrites them all)
            keep_mask = np.logical_not(done, out=done)
            keep_mask &= self._i[_PID, :n] >= 0
            keep = keep_mask.nonzero()[0]
            # row by row through a scratch row (mode "wrap": "raise" buffers `out`)
            f, i, sf = self._f, self._i, self._sf[:live]
            si = sf.view(np.int64)
            for row, tmp in ((f[_REM], sf), (f[_THRESH], sf), (i[_PID], si), (i[_MULT], si)):
                row[:n].take(keep, out=tmp, mode="wrap")
                row[:live] = tmp
            self._n = live
            self._head = 0
            self._squeezed = True
            for entry in self._bundles:
                entry[2] = entry[0]
        else:
            # mark them dead (the rates: the re-solve that always follows reads 0 for path
            # -1); fancy assignment of a scalar: 1.5-4x faster than `put` (numpy 2.x)
            f = self._f
            f[_REM][idx] = math.inf
            f[_THRESH][idx] = -math.inf
            self._i[_PID][idx] = -1
        for event in finished:
            event.succeed(now)
        self._dirty = True

    def _resolve(self) -> None:
        self._dirty = False
        self._gen += 1  # any pending timer is now stale
        self._wake_at = math.inf
        n = self._n
        before, change = self._sol, self._change
        if not (self._changes == 1 and before is not None and before.path_ids.size >= _SUCC_MIN):
            before = change = None
        self._changes = 0
        self._change = None
        self._due_n = 0
        if n == 0:
            self._sol = None
            self._link_idx = _EMPTY_I
            self._link_rate = _EMPTY_F
            return
        # the memo first (from the per-path counts, no signature built: 99 % of re-solves);
        # else the signature, active path ids in increasing order and their flow counts:
        # from the few live entries when the path table is much larger (a small sort), else
        # by a scan of the table (on a bool mask: ~4x faster than on ints)
        self._grow_paths()  # paths registered since the last start may be in the memo
        pid = self._i[_PID, :n]
        # one change since a solution of many classes: the successor memo (the rates of the
        # paths that moved only: _path_rate holds `before`'s rates on its paths)
        got = None
        if before is not None and change is not None:
            got = self.solver.successor(before, *change)
        # Flows finished and no path's rate moved (a wave that frees no link another flow is
        # bottlenecked on, the common case): every live entry keeps its rate, so the rate row
        # stays as it is unless a squeeze moved the entries (a dead entry's old rate is
        # harmless: its bytes are inf, so its time left is inf / rate = inf)
        keep_rates = False
        if got is not None:
            sol, moved, moved_rate = got
            self._path_rate[moved] = moved_rate
            keep_rates = change is not None and change[0] < 0 and not moved.size
        else:
            memo = self.solver.lookup_counts(self._sum_m, self._sum_pm, self._path_mult)
            if memo is not None:
                sol = memo
            else:
                if n * _SORT_RATIO < self._path_mult.size:
                    pids = sorted_distinct(pid)
                    if pids[0] < 0:  # dead entries
                        pids = pids[1:]
                else:
                    pids = (self._path_mult != 0).nonzero()[0]
                sol = self.solver.solve_arrays(pids, self._path_mult[pids])
            if before is not None and change is not None:
                self.solver.remember_successor(before, *change, sol)
            k = sol.first
            if k >= 0:  # a block of path ids: a slice, not a scatter
                self._path_rate[k : k + sol.rates.size] = sol.rates
            else:
                self._path_rate[sol.path_ids] = sol.rates
        self._sol = sol
        self.resolves += 1
        rate = self._f[_RATE, :n]
        if not keep_rates or self._squeezed:
            # mode "wrap" (a dead entry's -1 reads the last, spare entry, as "raise" would):
            # "raise" buffers `out`, a temporary of n floats
            self._path_rate.take(pid, out=rate, mode="wrap")
        self._squeezed = False
        self._link_idx = sol.link_idx
        self._link_rate = sol.link_rate

        if sol.zero_rate:  # a class starved by a link saturated to rounding: never finishes
            with np.errstate(divide="ignore"):
                t_left = np.divide(self._f[_REM, :n], rate, out=self._tl[:n])
        else:  # (a dead entry: inf / 0.0 is inf, exact, no warning; errstate costs ~1 us)
            t_left = np.divide(self._f[_REM, :n], rate, out=self._tl[:n])
        dt = float(_min(t_left))
        if not math.isfinite(dt):
            return
        dt = max(dt, 0.0)
        self._due_n, self._due_dt = n, dt
        timer = self.env.timeout(dt)
        self._wake_at = float(self.env.now) + dt  # same arithmetic simpy uses to schedule
        timer.callbacks.append(partial(self._on_wake, self._gen))
