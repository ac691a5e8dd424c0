"""Tests for the flow-level network engine (`scaling.engine.maxmin`, `scaling.engine.network`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from fractions import Fraction

import numpy as np
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaling.engine import waterfill as flows
from scaling.engine.maxmin import Incidence, MaxMinSolver, maxmin_rates
from scaling.engine.network import FlowNetwork

GB = 1e9
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Exact references (Fractions): textbook progressive filling and a fluid simulator
# --------------------------------------------------------------------------------------------


def ref_maxmin(
    cap: Sequence[int | Fraction], paths: Sequence[Sequence[int]], w: Sequence[int]
) -> list[Fraction | float]:
    """One-link-level-at-a-time progressive filling in exact rational arithmetic."""
    rate: list[Fraction | float] = [math.inf] * len(paths)
    unfrozen = [f for f, p in enumerate(paths) if p]
    used = [Fraction(0)] * len(cap)
    while unfrozen:
        levels = {}
        for link in range(len(cap)):
            n = sum(w[f] for f in unfrozen if link in paths[f])
            if n:
                levels[link] = (Fraction(cap[link]) - used[link]) / n
        t = min(levels.values())
        sat = {link for link, lev in levels.items() if lev == t}
        frozen = [f for f in unfrozen if sat.intersection(paths[f])]
        for f in frozen:
            rate[f] = t
            for link in paths[f]:
                used[link] += t * w[f]
        unfrozen = [f for f in unfrozen if f not in frozen]
    return rate


def ref_fluid(
    cap: Sequence[int],
    paths: Sequence[Sequence[int]],
    transfers: Sequence[tuple[int, int, int, int]],
) -> list[Fraction]:
    """Exact fluid simulation: transfers are (start, path, nbytes > 0, multiplicity).

    Returns the time the last byte of each transfer is delivered.
    """
    pending = sorted(range(len(transfers)), key=lambda i: (transfers[i][0], i))
    rem: dict[int, Fraction] = {}
    done: list[Fraction] = [Fraction(-1)] * len(transfers)
    t = Fraction(0)
    while pending or rem:
        act = sorted(rem)
        rates = ref_maxmin(
            cap, [paths[transfers[i][1]] for i in act], [transfers[i][3] for i in act]
        )
        dt_fin = min((rem[i] / r for i, r in zip(act, rates, strict=True)), default=None)
        t_fin = t + dt_fin if dt_fin is not None else None
        t_start = Fraction(transfers[pending[0]][0]) if pending else None
        t_next = min(x for x in (t_fin, t_start) if x is not None)
        for i, r in zip(act, rates, strict=True):
            rem[i] -= r * (t_next - t)
        t = t_next
        for i in act:
            if rem[i] == 0:
                done[i] = t
                del rem[i]
        while pending and transfers[pending[0]][0] == t:
            i = pending.pop(0)
            rem[i] = Fraction(transfers[i][2])
    return done


@contextlib.contextmanager
def solver_mode(mode: str) -> Iterator[None]:
    """Force the vectorised rounds only, or the sequential heap fallback after one round."""
    saved = (flows._MIN_VECTOR_ROUNDS, flows._SLOW_PROGRESS_RATIO)
    if mode == "vector":
        flows._MIN_VECTOR_ROUNDS, flows._SLOW_PROGRESS_RATIO = 10**9, 1
    elif mode == "sequential":
        flows._MIN_VECTOR_ROUNDS, flows._SLOW_PROGRESS_RATIO = 1, 10**9
    try:
        yield
    finally:
        flows._MIN_VECTOR_ROUNDS, flows._SLOW_PROGRESS_RATIO = saved


# --------------------------------------------------------------------------------------------
# Random small problems
# --------------------------------------------------------------------------------------------


@st.composite
def problems(draw: st.DrawFn, max_links: int = 7, max_flows: int = 9):
    n_links = draw(st.integers(1, max_links))
    cap = draw(st.lists(st.integers(1, 60), min_size=n_links, max_size=n_links))
    n_flows = draw(st.integers(1, max_flows))
    paths = draw(
        st.lists(
            st.lists(st.integers(0, n_links - 1), min_size=1, max_size=n_links, unique=True),
            min_size=n_flows,
            max_size=n_flows,
        )
    )
    w = draw(st.lists(st.integers(1, 4), min_size=n_flows, max_size=n_flows))
    return cap, paths, w


def scaled(cap: Sequence[int]) -> np.ndarray:
    return np.asarray(cap, dtype=np.float64) * GB


# --------------------------------------------------------------------------------------------
# maxmin_rates: closed forms
# --------------------------------------------------------------------------------------------


def test_single_flow_gets_min_capacity_on_its_path() -> None:
    r = maxmin_rates([40 * GB, 10 * GB, 25 * GB], [[0, 1, 2]])
    assert r.tolist() == [10 * GB]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_n_flows_on_one_link_get_equal_share(n: int) -> None:
    c = 100 * GB
    r = maxmin_rates([c], [[0]] * n)
    assert np.all(r == c / n)


def test_textbook_example() -> None:
    # Bertsekas & Gallager style: links A=0 (cap 1), B=1 (cap 1), C=2 (cap 2); flows:
    #   f0: A          f1: A, B        f2: B, C        f3: C
    # A is shared by f0, f1 -> 1/2 each (A and B both reach 1/2 first; B holds f1, f2).
    # Then f2 = 1/2 (B saturated) and f3 takes what is left on C: 2 - 1/2 = 3/2.
    r = maxmin_rates([1.0, 1.0, 2.0], [[0], [0, 1], [1, 2], [2]])
    np.testing.assert_allclose(r, [0.5, 0.5, 0.5, 1.5], rtol=1e-15)


def test_textbook_example_three_levels() -> None:
    # 3 links, 4 flows: link0 cap 10 (f0, f1, f2), link1 cap 8 (f1, f3), link2 cap 30 (f2, f3).
    # link0 first: 10/3 each for f0, f1, f2. link1: f3 = 8 - 10/3 = 14/3. link2 not saturated.
    r = maxmin_rates([10.0, 8.0, 30.0], [[0], [0, 1], [0, 2], [1, 2]])
    np.testing.assert_allclose(r, [10 / 3, 10 / 3, 10 / 3, 14 / 3], rtol=1e-15)


def test_weights_are_multiplicities_and_empty_path_is_unconstrained() -> None:
    r = maxmin_rates([12.0, 5.0], [[0], [0, 1], []], weights=[3, 1, 2])
    # link0 holds 3 + 1 flows -> 3 each; link1 is not the bottleneck for flow 1.
    assert r.tolist() == [3.0, 3.0, math.inf]


def test_input_forms_agree() -> None:
    rng = np.random.default_rng(1)
    n_links, n_flows = 50, 40
    paths = [rng.choice(n_links, size=rng.integers(1, 5), replace=False) for _ in range(n_flows)]
    cap = rng.uniform(1, 100, n_links) * GB
    a = maxmin_rates(cap, paths)
    inc = Incidence.from_paths(paths, n_links)
    b = maxmin_rates(cap, inc)
    assert a.tolist() == b.tolist()


def test_sequential_fallback_on_long_chain() -> None:
    # Flow i crosses links i and i+1; increasing capacities make a dependency chain of ~n/2
    # rounds, which triggers the heap fallback. Hand solution: rate(2k) = rate(2k+1) = k + 1.
    n = 400
    cap = np.arange(1, n + 2, dtype=np.float64)
    r = maxmin_rates(cap, [[i, i + 1] for i in range(n)])
    assert r.tolist() == [float(i // 2 + 1) for i in range(n)]
    with solver_mode("vector"):
        assert maxmin_rates(cap, [[i, i + 1] for i in range(n)]).tolist() == r.tolist()


@pytest.mark.parametrize(
    ("cap", "paths", "weights", "match"),
    [
        ([1.0, 1.0], [[0, 0]], None, "same link"),
        ([1.0], [[1]], None, "out of range"),
        ([1.0], [[-1]], None, "out of range"),
        ([math.inf], [[0]], None, "finite"),
        ([-1.0], [[0]], None, "non-negative"),
        ([1.0], [[0]], [0], "> 0"),
        ([1.0], [[0]], [1, 1], "shape"),
    ],
)
def test_maxmin_validation(cap, paths, weights, match) -> None:
    with pytest.raises(ValueError, match=match):
        maxmin_rates(cap, paths, weights)


# --------------------------------------------------------------------------------------------
# maxmin_rates: properties
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["default", "vector", "sequential"])
@PROPS
@given(prob=problems())
def test_matches_exact_reference(mode: str, prob) -> None:
    cap, paths, w = prob
    expected = [float(x) * GB for x in ref_maxmin(cap, paths, w)]
    with solver_mode(mode):
        got = maxmin_rates(scaled(cap), paths, w)
    np.testing.assert_allclose(got, expected, rtol=1e-9)


@PROPS
@given(prob=problems())
def test_feasible_and_every_flow_has_a_bottleneck(prob) -> None:
    cap, paths, w = prob
    c = scaled(cap)
    r = maxmin_rates(c, paths, w)
    load = np.zeros(len(cap))
    for f, p in enumerate(paths):
        load[p] += r[f] * w[f]
    assert np.all(load <= c * (1 + 1e-9))
    for f, p in enumerate(paths):
        # Bottleneck: a saturated link on which flow f's rate is the largest of all its flows.
        assert any(
            load[link] >= c[link] * (1 - 1e-9)
            and all(r[f] >= r[g] * (1 - 1e-9) for g, q in enumerate(paths) if link in q)
            for link in p
        ), (f, r, load)


@PROPS
@given(prob=problems())
def test_multiplicity_equals_separate_identical_flows(prob) -> None:
    cap, paths, w = prob
    grouped = maxmin_rates(scaled(cap), paths, w)
    expanded_paths = [p for p, k in zip(paths, w, strict=True) for _ in range(k)]
    expanded = maxmin_rates(scaled(cap), expanded_paths)
    np.testing.assert_allclose(np.repeat(grouped, w), expanded, rtol=1e-9)


@PROPS
@given(prob=problems(), data=st.data())
def test_raising_a_capacity_never_hurts_the_sorted_rate_vector(prob, data) -> None:
    """True property: the max-min fair vector is the lexicographically largest *sorted* rate
    vector over the feasible set, and raising a capacity only enlarges that set. So the sorted
    vector (one entry per flow, multiplicity expanded) never decreases lexicographically, and
    in particular the minimum rate never decreases. Individual rates *can* decrease."""
    cap, paths, w = prob
    link = data.draw(st.integers(0, len(cap) - 1))
    bump = data.draw(st.integers(1, 50))
    before = np.sort(np.repeat(maxmin_rates(scaled(cap), paths, w), w))
    cap2 = list(cap)
    cap2[link] += bump
    after = np.sort(np.repeat(maxmin_rates(scaled(cap2), paths, w), w))
    assert after[0] >= before[0] * (1 - 1e-12)
    for a, b in zip(after, before, strict=True):
        if a > b * (1 + 1e-9):
            break
        assert a >= b * (1 - 1e-9), (before, after)


def test_individual_rate_can_drop_when_capacity_rises() -> None:
    # Documents why the monotonicity property above is stated on the sorted vector.
    paths = [[0], [0, 1], [1]]
    r1 = maxmin_rates([2.0, 1.0], paths)  # link1 first: f1 = f2 = 0.5, f0 = 1.5
    r2 = maxmin_rates([2.0, 3.0], paths)  # link0 first: f0 = f1 = 1, f2 = 2
    assert r1.tolist() == [1.5, 0.5, 0.5]
    assert r2.tolist() == [1.0, 1.0, 2.0]


def test_4096_classes_10000_links_solve_in_a_few_vectorised_rounds(monkeypatch) -> None:
    # A guard against regressions to per-flow Python loops, stated as work, not wall time
    # (speed: benchmarks/bench_flows.py): each progressive-filling round is two bincounts over
    # all (flow, link) entries; this problem freezes its 4,096 classes in at most 16 rounds and
    # never needs the sequential (per-flow) finish.
    from scaling.engine import waterfill

    rng = np.random.default_rng(0)
    n_links, n_flows = 10_000, 4096
    paths = [rng.choice(n_links, size=rng.integers(2, 7), replace=False) for _ in range(n_flows)]
    inc = Incidence.from_paths(paths, n_links)
    cap = rng.uniform(1, 100, n_links) * GB
    calls = {"bincount": 0, "sequential": 0}
    bincount = np.bincount

    def counting_bincount(*a, **k):
        calls["bincount"] += 1
        return bincount(*a, **k)

    def no_sequential(*a, **k):
        calls["sequential"] += 1
        raise AssertionError("per-flow sequential finish used")

    monkeypatch.setattr(np, "bincount", counting_bincount)
    monkeypatch.setattr(waterfill, "_waterfill_sequential", no_sequential)
    r = maxmin_rates(cap, inc)
    assert calls["sequential"] == 0 and 0 < calls["bincount"] <= 2 * 16
    assert np.all(np.isfinite(r)) and np.all(r > 0)
    # feasible: no link carries more than its capacity
    load = np.bincount(inc.links, weights=np.repeat(r, np.diff(inc.indptr)), minlength=n_links)
    assert np.all(load <= cap * (1 + 1e-9))


# --------------------------------------------------------------------------------------------
# MaxMinSolver
# --------------------------------------------------------------------------------------------


def solve(s: MaxMinSolver, active: dict[int, int]) -> dict[int, float]:
    """Per-flow rate of each active path, through the array interface the engine uses."""
    pids = np.array(sorted(active), dtype=np.int64)
    sol = s.solve_arrays(pids, np.array([active[p] for p in pids.tolist()], dtype=np.int64))
    return dict(zip(sol.path_ids.tolist(), sol.rates.tolist(), strict=True))


def test_solver_registers_paths_once_and_memoises() -> None:
    s = MaxMinSolver([10.0, 20.0])
    a = s.register([0, 1])
    assert s.register((0, 1)) == a
    b = s.register([1])
    e = s.register([])
    assert (a, b, e) == (0, 1, 2)
    assert s.path_links(a).tolist() == [0, 1]
    r = solve(s, {a: 2, b: 1, e: 1})
    assert r == {a: 5.0, b: 10.0, e: math.inf}
    assert (s.hits, s.misses) == (0, 1)
    # Same signature again -> memo hit.
    assert solve(s, {a: 2, b: 1, e: 1}) == r
    assert (s.hits, s.misses) == (1, 1)
    solve(s, {a: 1})
    assert (s.hits, s.misses, s.cache_len) == (1, 2, 2)
    assert s.path_lengths(np.array([a, b, e])).tolist() == [2, 1, 0]
    with pytest.raises(ValueError):
        s.register([0, 0])


def test_lookup_from_counts_is_exact_when_fingerprints_collide() -> None:
    # {0, 3} and {1, 2}, one flow each, share the memo fingerprint (2 flows, path-id sum 3)
    s = MaxMinSolver([1.0, 2.0, 4.0, 8.0])
    p = [s.register([i]) for i in range(4)]
    counts_a = np.array([1, 0, 0, 1], dtype=np.int64)
    counts_b = np.array([0, 1, 1, 0], dtype=np.int64)
    sol_a = s.solve_arrays(np.array([p[0], p[3]]), np.array([1, 1]))
    assert s.lookup_counts(2, 3, counts_b) is None  # same bucket, other set: no hit
    assert s.lookup_counts(2, 3, counts_a) is sol_a
    sol_b = s.solve_arrays(np.array([p[1], p[2]]), np.array([1, 1]))
    assert sol_b.rates.tolist() == [2.0, 4.0]
    assert s.lookup_counts(2, 3, counts_b) is sol_b
    # a superset matching the memo on its paths has more flows: another bucket
    assert s.lookup_counts(3, 4, np.array([1, 1, 0, 1], dtype=np.int64)) is None
    assert (s.hits, s.misses) == (2, 2)


def test_solver_cache_eviction() -> None:
    s = MaxMinSolver([10.0], cache_size=1)
    p = s.register([0])
    solve(s, {p: 1})
    solve(s, {p: 2})
    solve(s, {p: 1})
    assert (s.hits, s.misses, s.cache_len) == (0, 3, 1)
    sol = s.solve_arrays(np.array([p]), np.array([1]))
    assert sol.link_idx.tolist() == [0] and sol.link_rate.tolist() == [10.0]
    assert s.hits == 1


# --------------------------------------------------------------------------------------------
# FlowNetwork
# --------------------------------------------------------------------------------------------


def run_transfers(
    net: FlowNetwork, transfers: Sequence[tuple[float, int, float, int]]
) -> list[float]:
    """Start (start_s, path_id, nbytes, multiplicity) transfers; return their finish times."""
    env = net.env
    out = [math.nan] * len(transfers)

    def one(i: int, start: float, pid: int, nbytes: float, mult: int):
        yield env.timeout(start)
        out[i] = yield net.transfer_many([pid], [nbytes], [mult])
        assert out[i] == env.now

    for i, tr in enumerate(transfers):
        env.process(one(i, *tr))
    env.run()
    return out


def test_single_transfer_time_is_size_over_rate() -> None:
    env = simpy.Environment()
    net = FlowNetwork(env, [25 * GB, 50 * GB])
    p = net.path_id([0, 1])
    s = 3.7 * GB
    (t,) = run_transfers(net, [(0.0, p, s, 1)])
    assert t == pytest.approx(s / (25 * GB), rel=1e-12)
    assert (net.resolves, net.wakeups, net.flows_completed) == (1, 1, 1)


def test_zero_bytes_and_empty_path() -> None:
    env = simpy.Environment()
    net = FlowNetwork(env, [GB])
    p = net.path_id([0])
    local = net.path_id([])
    assert run_transfers(net, [(1.0, p, 0.0, 1), (1.0, local, 5 * GB, 4)]) == [1.0, 1.0]
    assert net.resolves == 0
    assert (net.transfers_completed, net.flows_completed) == (2, 5)


def test_two_equal_flows_share_a_link() -> None:
    env = simpy.Environment()
    b, s = 10 * GB, 2 * GB
    net = FlowNetwork(env, [b])
    p = net.path_id([0])
    t = run_transfers(net, [(0.0, p, s, 1), (0.0, p, s, 1)])
    assert t == [2 * s / b, 2 * s / b]
    assert (net.resolves, net.wakeups) == (1, 1)  # batched start, simultaneous finish
    # Same with multiplicity 2 in one transfer.
    env2 = simpy.Environment()
    net2 = FlowNetwork(env2, [b])
    assert run_transfers(net2, [(0.0, net2.path_id([0]), s, 2)]) == [2 * s / b]


def test_flow_joining_half_way() -> None:
    # A: 1 GB alone at 1 GB/s from t=0. B: 1 GB from t=0.5. At 0.5 A has 0.5 GB left, now at
    # 0.5 GB/s -> A ends at 1.5. B got 0.5 GB by then, then runs alone: ends at 2.0.
    env = simpy.Environment()
    net = FlowNetwork(env, [GB])
    p = net.path_id([0])
    seen: list[dict[int, float]] = []

    def probe():
        yield env.timeout(0.75)
        seen.append(net.current_rates())

    env.process(probe())
    ta, tb = run_transfers(net, [(0.0, p, GB, 1), (0.5, p, GB, 1)])
    assert seen == [{p: 0.5 * GB}]
    assert ta == pytest.approx(1.5, rel=1e-12)
    assert tb == pytest.approx(2.0, rel=1e-12)
    # Changes: A starts, B joins, A leaves (B's leaving empties the set: no solve).
    assert net.resolves == 3
    assert net.stale_wakeups == 1  # A's original t=1.0 timer, superseded at t=0.5
    assert net.wakeups == 2


def test_flow_joining_on_a_different_bottleneck() -> None:
    # Links: 0 (4 GB/s) shared; 1 (1 GB/s) only for B. A on [0]; B on [0, 1] joins at t=1.
    # B is bottlenecked at 1 GB/s on link 1; A gets 4 - 1 = 3 GB/s after t=1.
    # A: 8 GB; by t=1 it sent 4 GB; 4 GB left at 3 GB/s -> ends at 1 + 4/3.
    # B: 2 GB at 1 GB/s -> ends at 3 (A's departure does not change B's rate).
    env = simpy.Environment()
    net = FlowNetwork(env, [4 * GB, GB])
    a, b = net.path_id([0]), net.path_id([0, 1])
    ta, tb = run_transfers(net, [(0.0, a, 8 * GB, 1), (1.0, b, 2 * GB, 1)])
    assert ta == pytest.approx(1 + 4 / 3, rel=1e-12)
    assert tb == pytest.approx(3.0, rel=1e-12)


def test_simultaneous_finishes_collapse_into_one_resolve() -> None:
    # 4 flows start together on one link: sizes 1,1,2,2 GB. The two 1 GB flows end together
    # (one change), then the two 2 GB flows end together (set becomes empty: no solve).
    env = simpy.Environment()
    net = FlowNetwork(env, [4 * GB])
    p = net.path_id([0])
    t = run_transfers(net, [(0, p, GB, 1), (0, p, 2 * GB, 1), (0, p, GB, 1), (0, p, 2 * GB, 1)])
    assert t == pytest.approx([1.0, 1.5, 1.0, 1.5], rel=1e-12)
    assert (net.resolves, net.wakeups, net.stale_wakeups) == (2, 2, 0)


def test_finishes_equal_up_to_rounding_are_merged() -> None:
    # Disjoint links; sizes differ by 1e-13 relative -> one wake-up, one finish time.
    env = simpy.Environment()
    net = FlowNetwork(env, [GB, GB, 3 * GB])
    sizes = [GB, GB * (1 + 1e-13), 3 * GB * (1 - 1e-13)]
    t = run_transfers(net, [(0, net.path_id([i]), s, 1) for i, s in enumerate(sizes)])
    assert t[0] == t[1] == t[2] == pytest.approx(1.0, rel=1e-12)
    assert (net.resolves, net.wakeups) == (1, 1)
    assert net.bytes_per_link.tolist() == pytest.approx(sizes, rel=1e-14)


def ring_net(p: int) -> tuple[FlowNetwork, list[int]]:
    """p endpoints; link 2i = uplink of i, link 2i+1 = downlink of i; flows i -> i+1."""
    env = simpy.Environment()
    net = FlowNetwork(env, [25 * GB] * (2 * p))
    return net, [net.path_id([2 * i, 2 * ((i + 1) % p) + 1]) for i in range(p)]


def test_symmetric_collective_is_one_resolve_and_memo_hits_on_repeat() -> None:
    p, steps, s = 16, 5, 64e6
    net, pids = ring_net(p)
    env = net.env
    finish: list[float] = []

    def collective():
        for _ in range(steps):
            events = [net.transfer_many([pid], [s]) for pid in pids]
            yield simpy.AllOf(env, events)
            finish.append(env.now)

    env.process(collective())
    env.run()
    step = s / (25 * GB)
    np.testing.assert_allclose(finish, step * np.arange(1, steps + 1), rtol=1e-12)
    # One flow-set change with flows per step (the empty set after it needs no solve) and a
    # single wake-up for all p simultaneous finishes.
    assert net.resolves == steps and net.wakeups == steps
    assert (net.cache_misses, net.cache_hits) == (1, steps - 1)
    assert net.flows_completed == p * steps
    np.testing.assert_allclose(net.bytes_per_link, s * steps, rtol=1e-12)


def test_a_bundle_fires_once_when_its_slowest_flow_is_delivered() -> None:
    # Three flows on disjoint links (1, 2, 4 GB/s) of 4 GB each: done at 4, 2 and 1 s; the
    # bundle fires once, at 4 s, and its own local copy and zero-byte flow add nothing.
    env = simpy.Environment()
    net = FlowNetwork(env, [GB, 2 * GB, 4 * GB])
    pids = [net.path_id([i]) for i in range(3)] + [net.path_id([])]
    fired: list[float] = []

    def run():
        fired.append((yield net.transfer_many([*pids, pids[0]], [4 * GB] * 4 + [0.0])))

    env.process(run())
    env.run()
    assert fired == [pytest.approx(4.0, rel=1e-12)]
    # changes: start, fastest done, middle done (the last leaves an empty set: no solve)
    assert (net.resolves, net.wakeups) == (3, 3)
    assert (net.transfers_completed, net.flows_completed) == (5, 5)
    np.testing.assert_allclose(net.bytes_per_link, [4 * GB] * 3, rtol=1e-12)


def test_resolves_count_distinct_changes_with_staggered_starts() -> None:
    env = simpy.Environment()
    net = FlowNetwork(env, [GB, GB])
    a, b = net.path_id([0]), net.path_id([1])
    # t=0: two starts (1 change). t=1: one start (1 change). t=2: a-flows end together
    # (1 change), b-flow continues. b ends at 3 (empty, no solve).
    t = run_transfers(net, [(0, a, GB, 1), (0, a, GB, 1), (1, b, 2 * GB, 1)])
    assert t == pytest.approx([2.0, 2.0, 3.0], rel=1e-12)
    assert net.resolves == 3


def test_validation_errors() -> None:
    env = simpy.Environment()
    with pytest.raises(ValueError):
        FlowNetwork(env, [0.0])
    net = FlowNetwork(env, [1.0, 2.0])
    with pytest.raises(ValueError):
        net.path_id([1, 1])
    with pytest.raises(ValueError):
        net.path_id([2])
    p = net.path_id([0])
    with pytest.raises(ValueError):
        net.transfer_many([p], [-1.0])
    with pytest.raises(ValueError):
        net.transfer_many([p], [math.nan])
    # the checks are min/max reductions: a NaN or inf anywhere is caught
    with pytest.raises(ValueError):
        net.transfer_many([p, p], [1.0, math.nan])
    with pytest.raises(ValueError):
        net.transfer_many([p, p], [math.inf, 1.0])
    with pytest.raises(ValueError):
        net.transfer_many([p], [1.0], [0])
    with pytest.raises(ValueError):
        net.transfer_many([p, p], [1.0])
    with pytest.raises(KeyError):
        net.transfer_many([5], [1.0])


@st.composite
def scenarios(draw: st.DrawFn):
    n_links = draw(st.integers(1, 5))
    cap = draw(st.lists(st.integers(1, 8), min_size=n_links, max_size=n_links))
    n_paths = draw(st.integers(1, 4))
    paths = draw(
        st.lists(
            st.lists(st.integers(0, n_links - 1), min_size=1, max_size=n_links, unique=True),
            min_size=n_paths,
            max_size=n_paths,
        )
    )
    transfers = draw(
        st.lists(
            st.tuples(
                st.integers(0, 6),  # start (s)
                st.integers(0, n_paths - 1),
                st.integers(1, 12),  # bytes (in GB units below)
                st.integers(1, 3),  # multiplicity
            ),
            min_size=1,
            max_size=7,
        )
    )
    return cap, paths, transfers


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_engine_matches_exact_fluid_reference_and_conserves_bytes(sc) -> None:
    cap, paths, transfers = sc
    expected = ref_fluid(cap, paths, transfers)

    def simulate() -> tuple[list[float], FlowNetwork]:
        env = simpy.Environment()
        net = FlowNetwork(env, scaled(cap))
        pids = [net.path_id(p) for p in paths]
        trs = [(float(t), pids[k], nb * GB, m) for t, k, nb, m in transfers]
        return run_transfers(net, trs), net

    got, net = simulate()
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(float(e), rel=1e-9, abs=1e-12)
    # Bytes conservation per link (integrated from rates, not just summed at the end).
    want = np.zeros(len(cap))
    for _, k, nb, m in transfers:
        want[paths[k]] += nb * GB * m
    np.testing.assert_allclose(net.bytes_per_link, want, rtol=1e-9)
    assert net.transfers_completed == len(transfers)
    assert net.active_transfers == 0
    # Determinism: a second run is bit-identical.
    got2, net2 = simulate()
    assert got2 == got
    assert net2.bytes_per_link.tolist() == net.bytes_per_link.tolist()
    assert (net2.resolves, net2.wakeups) == (net.resolves, net.wakeups)


def test_determinism_on_a_busy_scenario() -> None:
    def simulate() -> list[float]:
        rng = np.random.default_rng(7)  # fixed inputs; the engine itself has no randomness
        n = 24
        env = simpy.Environment()
        net = FlowNetwork(env, rng.uniform(1, 10, 3 * n) * GB)
        pids = [net.path_id(rng.choice(3 * n, 3, replace=False)) for _ in range(2 * n)]
        trs = [
            (float(rng.uniform(0, 2)), pids[i % len(pids)], float(rng.uniform(0, 4) * GB), 1)
            for i in range(200)
        ]
        return run_transfers(net, trs)

    a, b = simulate(), simulate()
    assert a == b
    assert all(math.isfinite(x) for x in a)


def test_owed_link_bytes_equal_the_event_by_event_sums(monkeypatch) -> None:
    """Link bytes are owed until read and then added in the order earned; owing at most one
    value (added at once, at every event: the eager accounting) gives the same floats, bit for
    bit, on a busy scenario with overlapping flows and rounding residues."""
    import scaling.engine.intervals as intervals

    def simulate() -> list[float]:
        rng = np.random.default_rng(11)
        n = 16
        env = simpy.Environment()
        net = FlowNetwork(env, rng.uniform(1, 10, 3 * n) * GB)
        pids = [net.path_id(rng.choice(3 * n, 3, replace=False)) for _ in range(2 * n)]
        trs = [
            (float(rng.uniform(0, 2)), pids[i % len(pids)], float(rng.uniform(0.1, 4) * GB), 2)
            for i in range(150)
        ]
        run_transfers(net, trs)
        assert net.wakeups > 50  # many events, so many owed entries
        return net.bytes_per_link.tolist()

    owed = simulate()
    monkeypatch.setattr(intervals, "MAX_OWED", 1)
    assert simulate() == owed


def test_solver_memo_tells_apart_sets_with_the_same_fingerprint() -> None:
    """Path ids {0, 3} and {1, 2}, one flow each, have the same size and sums (the memo's
    cheap fingerprint): each gets its own solution, and each is a memo hit when asked again."""
    s = MaxMinSolver([1.0, 2.0, 4.0, 8.0])
    p = [s.register([k]) for k in range(4)]
    one = np.array([1, 1])
    a = s.solve_arrays(np.array([p[0], p[3]]), one)
    b = s.solve_arrays(np.array([p[1], p[2]]), one)
    assert a.rates.tolist() == [1.0, 8.0] and b.rates.tolist() == [2.0, 4.0]
    assert s.solve_arrays(np.array([p[1], p[2]]), one) is b
    assert s.solve_arrays(np.array([p[0], p[3]]), one) is a
    assert (s.hits, s.misses, s.cache_len) == (2, 2, 2)
