"""The flow engine's incremental bookkeeping (`scaling.engine.network`): the active-set
signature kept as flows start and finish, and finished flows retired in start order, equal what
a from-scratch computation over the slot table gives at every step."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaling.engine.maxmin import Solution
from scaling.engine.network import FlowNetwork

GB = 1e9


class Checked(FlowNetwork):
    """A FlowNetwork that checks its incremental state against the slot table."""

    solves = 0
    retired = 0

    def _resolve(self) -> None:
        solve = self.solver.solve_arrays

        def checked(pids: npt.NDArray[np.int64], mults: npt.NDArray[np.int64]) -> Solution:
            act = np.flatnonzero(self._active)
            want, inv = np.unique(self._pid[act], return_inverse=True)
            want_mult = np.bincount(inv, weights=self._mult[act]).astype(np.int64)
            assert pids.tolist() == want.tolist()
            assert mults.tolist() == want_mult.tolist()
            Checked.solves += 1
            return solve(pids, mults)

        self.solver.solve_arrays = checked  # type: ignore[method-assign,assignment]
        try:
            super()._resolve()
        finally:
            del self.solver.solve_arrays

    def _complete(self, done: npt.NDArray[np.bool_], now: float) -> None:
        slots = np.flatnonzero(done)
        want = slots[np.argsort(self._seq[slots], kind="stable")]
        top = self._n_free
        super()._complete(done, now)
        # freed slots are pushed in reverse retirement order
        got = self._free[top : self._n_free][::-1]
        assert got.tolist() == want.tolist()
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


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=bundles())
def test_signature_and_retirement_order_match_the_slot_table(sc) -> None:
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

    Checked.solves = Checked.retired = 0
    for start, flows in starts:
        env.process(bundle(start, flows))
    env.run()
    assert len(done) == len(starts)
    assert net.active_transfers == 0
    assert Checked.solves == net.resolves and Checked.retired >= 1
    assert not net._path_mult.any()  # every flow counted in was counted out


def test_reused_slots_out_of_order_still_retire_in_start_order() -> None:
    # many bundles of unequal flows: slots freed in waves are reused in mixed order
    rng = np.random.default_rng(3)  # fixed inputs; the engine has no randomness
    env = simpy.Environment()
    net = Checked(env, rng.uniform(1, 4, 12) * GB)
    pids = [net.path_id(rng.choice(12, 3, replace=False)) for _ in range(20)]

    def bundle(start: float, k: int):
        yield env.timeout(start)
        yield net.transfer_many(
            rng.choice(pids, k), rng.uniform(0.1, 3.0, k) * GB, rng.integers(1, 4, k)
        )

    Checked.solves = Checked.retired = 0
    for _ in range(60):
        env.process(bundle(float(rng.uniform(0, 10)), int(rng.integers(1, 9))))
    env.run()
    assert net.active_transfers == 0 and Checked.retired > 60
    assert not net._path_mult.any()


def test_a_bundle_on_reused_slots_retires_in_start_order_not_slot_order() -> None:
    env = simpy.Environment()
    net = Checked(env, [1 * GB])
    p = net.path_id([0])
    order: list[str] = []

    def bundle(name: str, start: float, sizes: list[float]):
        yield env.timeout(start)
        yield net.transfer_many([p] * len(sizes), [s * GB for s in sizes])
        order.append(name)

    env.process(bundle("a", 0, [1, 1, 1]))  # slots 0-2, retired first
    env.process(bundle("b", 0, [2, 2, 2]))  # slots 3-5, retired second
    # then c reuses them as [3, 4, 5, 0, 1]: its first wave (1 GB) is slots 3 and 0, in
    # that start order although slot 0 < 3
    env.process(bundle("c", 20, [1, 2, 3, 1, 2]))
    Checked.retired = 0
    env.run()
    assert order == ["a", "b", "c"] and Checked.retired == 5
    assert net.bytes_per_link.tolist() == [18 * GB]
