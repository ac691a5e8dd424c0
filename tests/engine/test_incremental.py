"""The flow engine's incremental bookkeeping (`scaling.engine.network`): the compact live
entries, per-path flow counts and active-set signature kept as flows start and finish, and
finished flows retired in start order, equal what a from-scratch recount gives at every step."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import numpy.typing as npt
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaling.engine import network
from scaling.engine.maxmin import Solution
from scaling.engine.network import FlowNetwork

GB = 1e9


class Checked(FlowNetwork):
    """A FlowNetwork that checks its incremental state against a from-scratch recount: the
    live entries match a shadow list of the flows started and not yet finished (in start
    order, so compaction kept every array aligned and ordered), the per-path counts match the
    live entries, and the signature handed to the solver is their sorted unique paths."""

    solves = 0
    hits = 0
    retired = 0
    successor_hits = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shadow: list[tuple[int, float, int, int, int]] = []  # path, B, mult, seq, bundle
        self.seq = 0
        self.n_bundles = 0

    def transfer_many(self, path_ids, nbytes, multiplicity=None):  # type: ignore[no-untyped-def]
        ev = super().transfer_many(path_ids, nbytes, multiplicity)
        mult = [1] * len(path_ids) if multiplicity is None else list(multiplicity)
        for p, b, m in zip(path_ids, nbytes, mult, strict=True):
            if b > 0 and self.solver.path_lengths(np.array([p]))[0] > 0:
                self.shadow.append((int(p), float(b), int(m), self.seq, self.n_bundles))
                self.seq += 1
        self.n_bundles += 1
        self.check()
        return ev

    def live(self) -> npt.NDArray[np.bool_]:
        """Which of the entries [0, _n) are live (the others are dead: finished, kept until
        they outnumber the live ones)."""
        return self._i[0, : self._n] >= 0

    def check(self) -> None:
        n, live = self._n, self.live()
        dead = ~live
        # dead entries can never finish, take no time to finish, and are few enough
        assert (self._f[0, :n][dead] == np.inf).all() and (self._f[1, :n][dead] == -np.inf).all()
        assert int(dead.sum()) <= int(live.sum()) * network._DEAD_RATIO
        assert self.active_transfers == int(live.sum())
        head = self._head
        assert not live[:head].any()
        spans = [b[2] for b in self._bundles]
        assert head + sum(spans) == n
        pid, mult = self._i[:, :n][:, live]
        assert pid.size == len(self.shadow)
        assert pid.tolist() == [e[0] for e in self.shadow]
        assert mult.tolist() == [e[2] for e in self.shadow]
        assert self._f[1, :n][live].tolist() == [self._finish_rtol * e[1] for e in self.shadow]
        # each bundle's entries hold exactly its live flows (and dead ones)
        ends = np.cumsum([head, *spans])
        per_span = [int(live[a:b].sum()) for a, b in itertools.pairwise(ends)]
        assert per_span == [b[0] for b in self._bundles]
        # the unfinished bundles, in start order, and how many live entries each holds
        per_bundle: dict[int, int] = {}
        for e in self.shadow:
            per_bundle[e[4]] = per_bundle.get(e[4], 0) + 1
        assert [b[0] for b in self._bundles] == list(per_bundle.values())
        assert list(per_bundle) == sorted(per_bundle)
        want = np.bincount(pid, weights=mult, minlength=self._path_mult.size)
        assert self._path_mult.tolist() == want.astype(np.int64).tolist()
        assert (self._sum_m, self._sum_pm) == (int(mult.sum()), int(pid @ mult))

    def signature(self) -> tuple[list[int], list[int]]:
        """The active set recounted from the live entries: sorted paths, flows on each."""
        live, live_mult = self._i[:, : self._n][:, self.live()]
        want, inv = np.unique(live, return_inverse=True)
        return want.tolist(), np.bincount(inv, weights=live_mult).astype(np.int64).tolist()

    def _resolve(self) -> None:
        solve, lookup = self.solver.solve_arrays, self.solver.lookup_counts
        successor = self.solver.successor

        def checked_successor(
            before: Solution, sign: int, pids: npt.NDArray[np.int64], mults: npt.NDArray[np.int64]
        ) -> tuple | None:
            got = successor(before, sign, pids, mults)
            if got is not None:  # the successor of a change is the solution of the new set
                after, moved, moved_rate = got
                assert (after.path_ids.tolist(), after.multiplicity.tolist()) == self.signature()
                # ... and the paths whose rate moved are exactly those
                old = dict(zip(before.path_ids.tolist(), before.rates.tolist(), strict=True))
                new = zip(after.path_ids.tolist(), after.rates.tolist(), strict=True)
                assert moved.tolist() == [p for p, r in new if old.get(p) != r]
                assert moved_rate.tolist() == [after.rates[after.path_ids == p][0] for p in moved]
                Checked.solves += 1
                Checked.hits += 1
                Checked.successor_hits += 1
            return got

        def checked(pids: npt.NDArray[np.int64], mults: npt.NDArray[np.int64]) -> Solution:
            assert (pids.tolist(), mults.tolist()) == self.signature()
            Checked.solves += 1
            return solve(pids, mults)

        def checked_lookup(
            total: int, weighted: int, counts: npt.NDArray[np.int64]
        ) -> Solution | None:
            memo = lookup(total, weighted, counts)
            if memo is not None:  # a memo hit is the solution of exactly this active set
                got = (memo.path_ids.tolist(), memo.multiplicity.tolist())
                assert got == self.signature()
                Checked.solves += 1
                Checked.hits += 1
            return memo

        self.solver.solve_arrays = checked  # type: ignore[method-assign,assignment]
        self.solver.lookup_counts = checked_lookup  # type: ignore[method-assign]
        self.solver.successor = checked_successor  # type: ignore[method-assign]
        try:
            super()._resolve()
        finally:
            del self.solver.solve_arrays
            del self.solver.lookup_counts
            del self.solver.successor
        # the rate row is each live entry's path rate, whether rewritten or kept
        live = self.live()
        rate = self._f[2, : self._n][live]
        assert rate.tolist() == self._path_rate[self._i[0, : self._n][live]].tolist()

    def _complete(self, done: npt.NDArray[np.bool_], now: float) -> None:
        live = self.live()
        assert not (done & ~live).any()  # a dead entry never finishes again
        flags = done[live].tolist()
        gone = [e for e, d in zip(self.shadow, flags, strict=True) if d]
        seqs = [e[3] for e in gone]
        assert seqs == sorted(seqs)  # retired (residues credited) in start order
        self.shadow = [e for e, d in zip(self.shadow, flags, strict=True) if not d]
        super()._complete(done, now)
        self.check()
        Checked.retired += 1


@st.composite
def bundles(draw: st.DrawFn) -> tuple[list[int], list[list[int]], list[tuple]]:
    n_links = draw(st.integers(1, 6))
    cap = draw(st.lists(st.integers(1, 8), min_size=n_links, max_size=n_links))
    paths = draw(
        st.lists(
            st.lists(st.integers(0, n_links - 1), min_size=1, max_size=3, unique=True),
            min_size=1,
            max_size=6,
        )
    )
    flow = st.tuples(
        st.integers(0, len(paths) - 1), st.integers(1, 9), st.integers(1, 3)
    )  # (path, GB, multiplicity): flows of one bundle of several sizes finish in waves
    starts = draw(
        st.lists(
            st.tuples(st.integers(0, 5), st.lists(flow, min_size=1, max_size=6)),
            min_size=1,
            max_size=8,
        )
    )
    return cap, paths, starts


@pytest.mark.parametrize("succ", [0, 10**9], ids=["successor", "counts"])
@pytest.mark.parametrize("dead", [0, 1, 10**9], ids=["squeeze", "default", "keep-dead"])
@pytest.mark.parametrize("ratio", [0, 10**9], ids=["scan", "sort"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=bundles())
def test_signature_and_retirement_order_match_a_recount(
    ratio: int, dead: int, succ: int, sc
) -> None:
    # both ways of reading the signature (scan of the path table, sort of the live entries),
    # with finished entries squeezed out at once, kept dead until they outnumber the live
    # ones, or never squeezed (until every flow is done); re-solves after one change asking
    # the successor memo first, or the per-path counts only
    saved = network._SORT_RATIO, network._DEAD_RATIO, network._SUCC_MIN
    network._SORT_RATIO, network._DEAD_RATIO, network._SUCC_MIN = ratio, dead, succ
    try:
        _run_checked(sc)
    finally:
        network._SORT_RATIO, network._DEAD_RATIO, network._SUCC_MIN = saved


def _trace(
    sc, dead: int, checked: bool = False, succ: int = 10**9
) -> tuple[list[tuple[int, float]], list[float], list[dict]]:
    """Completion (bundle, time) in firing order, link bytes, and the rates at every
    re-solve, of a workload run with the given _DEAD_RATIO, started by transfer_many or
    (``checked``) transfer_checked_many."""
    cap, paths, starts = sc
    saved = network._DEAD_RATIO, network._SUCC_MIN
    network._DEAD_RATIO, network._SUCC_MIN = dead, succ
    try:
        env = simpy.Environment()
        net = FlowNetwork(env, np.asarray(cap, dtype=float) * GB / 3.0)
        pids = [net.path_id(p) for p in paths]
        fired: list[tuple[int, float]] = []
        rates: list[dict] = []
        resolve = net._resolve

        def traced() -> None:
            resolve()
            rates.append(net.current_rates())

        net._resolve = traced  # type: ignore[method-assign]

        def bundle(j: int, start: int, flows: list[tuple[int, int, int]]):
            yield env.timeout(start / 7.0)
            args = (
                [pids[k] for k, _, _ in flows],
                [b * GB / 3.0 for _, b, _ in flows],
                [m for *_, m in flows],
            )
            if checked:
                p, b, m = args
                ev = net.transfer_checked_many(
                    np.array(p, dtype=np.int64), np.array(b), np.array(m, dtype=np.int64)
                )
            else:
                ev = net.transfer_many(*args)
            t = yield ev
            fired.append((j, t))

        for j, (start, flows) in enumerate(starts):
            env.process(bundle(j, start, flows))
        env.run()
        counts = [net.resolves, net.cache_hits, net.cache_misses, net.stale_wakeups]
        return fired, net.bytes_per_link.tolist() + counts, rates
    finally:
        network._DEAD_RATIO, network._SUCC_MIN = saved


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=bundles())
def test_dead_entries_change_no_float(sc) -> None:
    # keeping finished entries dead in the tables instead of squeezing them out at once
    # gives the same completion times and order, link bytes and rates, bit for bit
    want = _trace(sc, 0)
    assert _trace(sc, 1) == want
    assert _trace(sc, 10**9) == want
    # and so does the successor memo (hit and miss counters included)
    assert _trace(sc, 1, succ=0) == want
    assert _trace(sc, 0, succ=0) == want


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=bundles(), zero=st.integers(0, 2))
def test_checked_transfers_equal_transfer_many(sc, zero: int) -> None:
    # the unchecked entry starts the same flows: same completions, link bytes and rates,
    # bit for bit, zero-byte flows and local copies (the empty path) included
    cap, paths, starts = sc
    if zero:  # a local copy as the first path, or a zero-byte first flow
        if zero == 1:
            paths = [[], *paths[1:]]
        else:
            starts = [(starts[0][0], [(starts[0][1][0][0], 0, 1), *starts[0][1][1:]])]
            starts += sc[2][1:]
    assert _trace((cap, paths, starts), 1, checked=True) == _trace((cap, paths, starts), 1)


def _run_checked(sc) -> None:
    cap, paths, starts = sc
    env = simpy.Environment()
    net = Checked(env, np.asarray(cap, dtype=float) * GB)
    pids = [net.path_id(p) for p in paths]
    done: list[float] = []

    def bundle(start: int, flows: list[tuple[int, int, int]]):
        yield env.timeout(start)
        t = yield net.transfer_many(
            [pids[k] for k, _, _ in flows], [b * GB for _, b, _ in flows], [m for *_, m in flows]
        )
        done.append(t)

    Checked.solves = Checked.retired = Checked.hits = 0
    for start, flows in starts:
        env.process(bundle(start, flows))
    env.run()
    assert len(done) == len(starts)
    assert net.active_transfers == 0
    assert Checked.solves == net.resolves and Checked.retired >= 1
    assert not net._path_mult.any()  # every flow counted in was counted out


def test_flows_finishing_in_mixed_order_retire_in_start_order() -> None:
    # many bundles of unequal flows: flows finish in waves out of start order, and the
    # live entries are squeezed each time
    rng = np.random.default_rng(3)  # fixed inputs; the engine has no randomness
    env = simpy.Environment()
    net = Checked(env, rng.uniform(1, 4, 12) * GB)
    pids = [net.path_id(rng.choice(12, 3, replace=False)) for _ in range(20)]

    def bundle(start: float, k: int):
        yield env.timeout(start)
        yield net.transfer_many(
            rng.choice(pids, k), rng.uniform(0.1, 3.0, k) * GB, rng.integers(1, 4, k)
        )

    Checked.solves = Checked.retired = Checked.hits = 0
    for _ in range(60):
        env.process(bundle(float(rng.uniform(0, 10)), int(rng.integers(1, 9))))
    env.run()
    assert net.active_transfers == 0 and Checked.retired > 60
    assert not net._path_mult.any()


def test_bundles_retire_in_start_order() -> None:
    env = simpy.Environment()
    net = Checked(env, [1 * GB])
    p = net.path_id([0])
    order: list[str] = []

    def bundle(name: str, start: float, sizes: list[float]):
        yield env.timeout(start)
        yield net.transfer_many([p] * len(sizes), [s * GB for s in sizes])
        order.append(name)

    env.process(bundle("a", 0, [1, 1, 1]))  # retired first
    env.process(bundle("b", 0, [2, 2, 2]))  # retired second
    # then c: its first wave (1 GB) is its entries 0 and 3, retired in that order
    env.process(bundle("c", 20, [1, 2, 3, 1, 2]))
    Checked.retired = 0
    env.run()
    assert order == ["a", "b", "c"] and Checked.retired == 5
    assert net.bytes_per_link.tolist() == [18 * GB]


@pytest.mark.parametrize("succ", [0, 10**9], ids=["successor", "counts"])
def test_repeated_steps_hit_the_memo_from_the_counts(succ: int, monkeypatch) -> None:
    # a "training step" (two overlapping bundles of unequal flows) replayed 4 times: every
    # active set after the first step is a memo hit found from the per-path counts, or, for a
    # change seen before from the same solution, from the successor memo; checked against
    # the recount
    monkeypatch.setattr(network, "_SUCC_MIN", succ)
    env = simpy.Environment()
    net = Checked(env, [2 * GB, 3 * GB, 1 * GB])
    p = [net.path_id(x) for x in ([0], [0, 1], [1, 2], [2])]

    def step():
        for _ in range(4):
            a = net.transfer_many([p[0], p[1], p[2]], [1 * GB, 2 * GB, 3 * GB])
            b = net.transfer_many([p[3], p[1]], [1 * GB, 1 * GB], [2, 1])
            yield a & b

    Checked.solves = Checked.retired = Checked.hits = Checked.successor_hits = 0
    env.process(step())
    env.run()
    per_step = net.resolves // 4
    assert net.resolves == 4 * per_step and per_step >= 3
    assert Checked.solves == net.resolves and Checked.hits == net.cache_hits == 3 * per_step
    assert net.cache_misses == per_step
    # from the third step on, every re-solve after a single change is a successor hit
    assert (Checked.successor_hits >= per_step) == (succ == 0)


def test_a_starved_class_never_finishes_and_warns_nothing() -> None:
    # a class whose rate is 0 (here a zero-capacity link, which only the solver accepts;
    # in a FlowNetwork, a link saturated up to rounding) is flagged on its solution, and the
    # engine divides its bytes by 0 quietly: it never finishes, the others do
    from scaling.engine.maxmin import MaxMinSolver

    solver = MaxMinSolver([0.0, 1.0])
    fed = solver.register([1])
    assert solver.solve_arrays(np.array([fed]), np.array([1])).zero_rate is False
    env = simpy.Environment()
    net = FlowNetwork(env, [1 * GB, 1 * GB])
    net.solver = MaxMinSolver([0.0, 1 * GB])
    starved, ok = net.path_id([0]), net.path_id([1])
    assert net.solver.solve_arrays(np.array([starved]), np.array([1])).zero_rate is True
    a = net.transfer_many([starved], [1 * GB])
    b = net.transfer_many([ok, ok], [1 * GB, 2 * GB])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.run(until=10.0)
    assert b.triggered and b.value == 3.0 and not a.triggered
    assert net.active_transfers == 1 and net.current_rates() == {starved: 0.0}


def _refilled(refill: bool) -> tuple[list[float], list[float], int]:
    env = simpy.Environment()
    net = Checked(env, [2 * GB, 3 * GB, 1 * GB])
    p = [net.path_id(x) for x in ([0], [0, 1], [1, 2], [2])]
    pids = np.zeros(2, dtype=np.int64)
    size = np.zeros(2)
    ends: list[float] = []

    def step():
        for k in range(6):
            a = net.transfer_many([p[0], p[1]], [4 * GB, 4 * GB])
            yield env.timeout(0.5)
            # a second bundle joins the first: alternately on paths 2 and 3
            pids[:] = p[2 + k % 2]
            size[:] = 1 * GB
            b = net.transfer_many(pids, size)
            if refill:  # scribble over the buffers before the flush
                pids[:] = p[3]
                size[:] = 7 * GB
            ends.append((yield b))
            ends.append((yield a))

    Checked.solves = Checked.retired = Checked.hits = Checked.successor_hits = 0
    env.process(step())
    env.run()
    return ends, net.bytes_per_link.tolist(), Checked.successor_hits


def test_a_caller_refilling_its_buffers_changes_nothing(monkeypatch) -> None:
    # transfer_many reads its arrays when called: a caller that refills the same buffers
    # right after (before the flush re-solves) gets what fresh arrays give, successor memo on
    monkeypatch.setattr(network, "_SUCC_MIN", 0)
    want = _refilled(False)
    assert want[2] > 0 and len(want[0]) == 12
    assert _refilled(True) == want


@pytest.mark.parametrize("values", [0, 40, 1 << 22])
def test_the_successor_memo_is_bounded(values: int, monkeypatch) -> None:
    # the successor memo keeps at most _SUCC_VALUES array values (a bound of 0 keeps
    # nothing: every re-solve falls back on the counts, same results)
    from scaling.engine import maxmin

    monkeypatch.setattr(network, "_SUCC_MIN", 0)
    monkeypatch.setattr(maxmin, "_SUCC_VALUES", values)
    rng = np.random.default_rng(5)
    env = simpy.Environment()
    net = Checked(env, rng.uniform(1, 4, 12) * GB)
    pids = [net.path_id(rng.choice(12, 3, replace=False)) for _ in range(20)]

    def steps():
        for _ in range(8):  # the same step 8 times: successors repeat
            yield net.transfer_many(pids, np.arange(1.0, 21.0) * GB / 4)

    Checked.solves = Checked.retired = Checked.hits = Checked.successor_hits = 0
    env.process(steps())
    env.run()
    solver = net.solver
    kept = [e for es in solver._succ.values() for e in es]
    assert solver._succ_n == sum(2 * (len(e[1]) // 8 + e[4].size) for e in kept) <= values
    if values in (0, 1 << 22):  # nothing kept, nothing found; or room for every successor
        assert (Checked.successor_hits > 0) == (values > 0)
