"""Link accounting for the flow engine: bytes per link (:class:`LinkBytes`) and the log of
intervals of constant link rates a :class:`~scaling.engine.network.FlowNetwork`
keeps once asked (``record_intervals``: ``explain --links``, traces), and the questions it
answers over any time window: bytes and busy seconds per link, and a link's rate as a step
function.

Units: bytes, seconds, bytes/s. Imports only the standard library and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from scaling.engine.waterfill import FloatArray, IntArray

__all__ = ["MAX_OWED", "IntervalLog", "LinkBytes", "LinkDiagnostics"]


class IntervalLog:
    """Intervals ``(start s, end s, link ids, their aggregate rates B/s)`` of constant link
    rates, in time order. The arrays are the solver's read-only solutions, shared by intervals
    with the same active set (memory: one entry per flow-set change)."""

    def __init__(self, n_links: int) -> None:
        """``n_links``: the network's link count L (the length of every per-link answer)."""
        self.n_links = int(n_links)
        self.entries: list[tuple[float, float, IntArray, FloatArray]] = []

    def add(self, t0: float, t1: float, link_idx: IntArray, link_rate: FloatArray) -> None:
        """Record that ``link_idx`` carried ``link_rate`` (B/s) from ``t0`` to ``t1`` (s)."""
        self.entries.append((t0, t1, link_idx, link_rate))

    def window(
        self, t0: float, t1: float
    ) -> tuple[list[tuple[float, float, IntArray, FloatArray]], FloatArray]:
        """The intervals overlapping ``[t0, t1]`` and each one's overlap (s)."""
        got = [iv for iv in self.entries if iv[1] > t0 and iv[0] < t1]
        overlap = np.array([min(b, t1) - max(a, t0) for a, b, _, _ in got], dtype=np.float64)
        return got, overlap

    def usage(self, t0: float, t1: float) -> tuple[FloatArray, FloatArray]:
        """Bytes carried by each link, and seconds it carried traffic, between ``t0`` and ``t1``
        (s), shape [L] each: rate × overlap per interval, one vectorised sum."""
        got, overlap = self.window(t0, t1)
        n = self.n_links
        if not got:
            return np.zeros(n), np.zeros(n)
        idx = np.concatenate([iv[2] for iv in got])
        counts = np.array([iv[2].size for iv in got])
        rate = np.concatenate([iv[3] for iv in got])
        dt = np.repeat(overlap, counts)
        carried = np.bincount(idx, weights=rate * dt, minlength=n).astype(np.float64)
        busy = np.bincount(idx, weights=dt, minlength=n).astype(np.float64)
        return carried, busy

    def rates(
        self, links: Sequence[int] | npt.ArrayLike, t0: float, t1: float
    ) -> tuple[FloatArray, FloatArray]:
        """The aggregate rate (B/s) of each of ``links`` over ``[t0, t1]`` as a step function:
        change times (s), shape [T], and the rates from each time on, shape [T, K]; the last
        row (at the end of the window, or where the links fall idle) is zero."""
        want = np.asarray(links, dtype=np.int64).reshape(-1)
        got, _ = self.window(t0, t1)
        times: list[float] = []
        rows: list[FloatArray] = []
        zero = np.zeros(want.size)
        end = -math.inf
        for a, b, idx, rate in got:
            start = max(a, t0)
            if times and start > end:  # a gap: nothing flowed
                times.append(end)
                rows.append(zero)
            pos = np.minimum(np.searchsorted(idx, want), idx.size - 1)
            row = np.where(idx[pos] == want, rate[pos], 0.0)
            if not rows or not np.array_equal(row, rows[-1]):
                times.append(start)
                rows.append(row)
            end = min(b, t1)
        if times:
            times.append(end)
            rows.append(zero)
        return np.array(times), np.array(rows).reshape(len(times), want.size)


#: owed link-byte values kept alive before they are added up (~12 B each: ~100 MB, the bound
#: of 4M values at 24 B before residues were kept as int32 ids + one float). Only diagnostics
#: read link bytes, so a run that stays below it never adds them up: a 512-node step of GPT-3
#: 1.3B owes 3.8M (MLU370-X8) to 5.2M (DGX A100) values, a settle of ~20-100 ms CPU each
MAX_OWED = 1 << 23


class LinkBytes:
    """Bytes each link has carried, owed rather than added until read (only diagnostics read
    them): per interval ``("rate", link ids, their rates, dt)`` and per completion ``("rest",
    path ids, residue * multiplicity per path)``, added by :meth:`settle` entry by entry in
    the order earned with the very operations the event loop would have used, so the same
    floats. The memory they keep alive is bounded: residues and rate arrays not already owed
    count. A completion's path ids are kept as int32 (12 bytes a finished flow class, not the
    24 of three int64/float64 rows): a 256-node step owes ~2.6 million of them, and fresh
    memory costs page faults (~2.4 us per 4 KiB page, a fifth of such a run's CPU)."""

    def __init__(self, n_links: int, gather: Callable[[IntArray], tuple[IntArray, IntArray]]):
        """``n_links``: L; ``gather``: path ids -> (their concatenated links, links per path),
        as :meth:`~scaling.engine.maxmin.MaxMinSolver.gather` (int32 ids accepted)."""
        self._bytes = np.zeros(int(n_links))
        self._gather = gather
        self._owed: list[tuple[bool, npt.NDArray[np.integer], FloatArray, float]] = []
        self._owed_arrays: set[int] = set()  # ids of the rate arrays owed
        self._owed_n = 0

    @property
    def n_links(self) -> int:
        """The link count L."""
        return int(self._bytes.size)

    def owe_rate(self, link_idx: IntArray, link_rate: FloatArray, dt: float) -> None:
        """Owe ``link_rate * dt`` bytes (B/s times s) to the links ``link_idx`` (unique)."""
        self._owed.append((True, link_idx, link_rate, dt))
        if id(link_idx) not in self._owed_arrays:  # a solution's arrays, often repeated
            self._owed_arrays.add(id(link_idx))
            self._owed_n += link_idx.size
            if self._owed_n >= MAX_OWED:
                self.settle()

    def owe_rest(self, pids: IntArray, rest: FloatArray) -> None:
        """Owe ``rest[k]`` bytes to every link of path ``pids[k]`` (paths may repeat): the
        residue times the multiplicity of each finished flow class."""
        self._owed.append((False, pids.astype(np.int32), rest, 0.0))
        self._owed_n += pids.size
        if self._owed_n >= MAX_OWED:
            self.settle()

    def settle(self) -> None:
        """Add the owed bytes in the order earned (fancy += per interval, np.add.at per
        completion)."""
        lb = self._bytes
        for is_rate, a, b, c in self._owed:
            if is_rate:
                lb[a] += b * c
            else:
                links, lengths = self._gather(a)  # type: ignore[arg-type]
                np.add.at(lb, links, np.repeat(b, lengths))
        self._owed = []
        self._owed_arrays = set()
        self._owed_n = 0

    def total(self) -> FloatArray:
        """Bytes per link so far (a copy), shape [L]."""
        self.settle()
        return self._bytes.copy()


class LinkDiagnostics:
    """The per-link questions a :class:`~scaling.engine.network.FlowNetwork` answers (bytes
    and busy seconds per link, rates over a window), read from the accounting its event loop
    keeps. A subclass sets the state declared here (in its ``__init__``) and keeps it up to
    date; these methods only read it."""

    #: bytes per link, owed as the flows drain and finish
    _link_bytes: LinkBytes
    #: the intervals of constant link rates, kept only after :meth:`record_intervals`
    _intervals: IntervalLog | None

    @property
    def bytes_per_link(self) -> FloatArray:
        """Bytes carried by each link so far (copy), shape [L].

        Integrated from the fluid rates (plus each flow's sub-tolerance residue when it
        finishes), up to the last flow-set change or wake-up. Once all flows have finished it
        equals, per link, the sum of ``nbytes * multiplicity`` over flows crossing it.
        """
        return self._link_bytes.total()

    @property
    def busy_s_per_link(self) -> FloatArray:
        """Seconds each link has carried traffic so far, shape [L]: the summed lengths of the
        recorded intervals in which some active flow crossed it (needs :meth:`record_intervals`
        before the run: derived from the intervals, so the event loop keeps no second
        counter)."""
        return self.link_usage(-math.inf, math.inf)[1]

    def record_intervals(self) -> None:
        """From now on keep every interval of constant link rates, for :meth:`link_usage` and
        :meth:`link_rates` over any time window (memory: one entry per flow-set change)."""
        if self._intervals is None:
            self._intervals = IntervalLog(self._link_bytes.n_links)

    def _log(self) -> IntervalLog:
        """The interval log. Queries read it up to the last flow-set change: a query must not
        advance the flows (that would split an interval and move the rounding of results)."""
        if self._intervals is None:
            raise RuntimeError("link_usage/link_rates need record_intervals() before the run")
        return self._intervals

    def link_usage(self, t0: float, t1: float) -> tuple[FloatArray, FloatArray]:
        """Bytes carried by each link, and seconds it carried traffic, between ``t0`` and
        ``t1`` (s), shape [L] each, from the intervals kept since :meth:`record_intervals`.

        Integrated from the fluid rates (:meth:`IntervalLog.usage`); the sub-tolerance residue
        a finishing flow is credited with (<= ``finish_rtol`` of its size, see
        :attr:`bytes_per_link`) has no time and is left out.
        """
        return self._log().usage(t0, t1)

    def link_rates(
        self, links: Sequence[int] | npt.ArrayLike, t0: float, t1: float
    ) -> tuple[FloatArray, FloatArray]:
        """The aggregate rate (bytes/s) of each of ``links`` over ``[t0, t1]`` as a step
        function: change times (s), shape [T], and the rates from each time on, shape [T, K];
        the last row (at the end of the window, or where the links fall idle) is zero."""
        return self._log().rates(links, t0, t1)
