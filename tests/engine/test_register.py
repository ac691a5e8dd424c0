"""Bulk registration of trusted paths (MaxMinSolver.register_checked_csr) and the lazy table of
path ids by link tuple: the same ids, CSR and rates as registering the paths one by one."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from scaling.engine.maxmin import MaxMinSolver
from scaling.engine.network import FlowNetwork

PATHS = [(0, 1), (2,), (), (3, 0, 2), (1,), (4, 3)]


def _csr(paths: list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    flat = np.array([x for p in paths for x in p], dtype=np.int64)
    return flat, np.array([len(p) for p in paths], dtype=np.int64)


def test_checked_csr_gives_register_many_ids_and_paths() -> None:
    a, b = MaxMinSolver(np.ones(5)), MaxMinSolver(np.ones(5))
    want = a.register_many(PATHS[:3])
    got = b.register_checked_csr(*_csr(PATHS[:3]))
    assert got.tolist() == want.tolist() == [0, 1, 2]
    # a second batch continues the numbering, as register_many's new paths do
    assert b.register_checked_csr(*_csr(PATHS[3:])).tolist() == [3, 4, 5]
    assert a.register_many(PATHS[3:]).tolist() == [3, 4, 5]
    for pid in range(6):
        assert b.path_links(pid).tolist() == a.path_links(pid).tolist() == list(PATHS[pid])
    assert a.empty_path_id() == b.empty_path_id() == 2


def test_lookup_by_links_after_bulk_registration() -> None:
    s = MaxMinSolver(np.ones(5))
    s.register_checked_csr(*_csr(PATHS))
    # the table by link tuple is built from the CSR when first needed
    assert [s.register(p) for p in PATHS] == list(range(6))
    assert s.register((2, 4)) == 6  # a new path: the next id
    assert s.register_many([(4, 3), (2, 4), (0,)]).tolist() == [5, 6, 7]
    s.register_checked_csr(*_csr([(1, 2)]))
    assert s.register([1, 2]) == 8
    assert s.n_paths == 9


def test_empty_path_tracked_by_every_entry() -> None:
    s = MaxMinSolver(np.ones(3))
    assert s.empty_path_id() is None
    s.register_checked_csr(*_csr([(0,), (1,)]))
    assert s.empty_path_id() is None
    s.register_checked_csr(*_csr([(2,), ()]))
    assert s.empty_path_id() == 3
    t = MaxMinSolver(np.ones(3))
    t.register([0])
    assert t.register([]) == t.empty_path_id() == 1
    u = MaxMinSolver(np.ones(3))
    u.register_many([(1,), ()])
    assert u.empty_path_id() == 1


def test_checked_csr_still_checks_link_range() -> None:
    s = MaxMinSolver(np.ones(3))
    with pytest.raises(ValueError, match="out of range"):
        s.register_checked_csr(*_csr([(0,), (3,)]))
    with pytest.raises(ValueError, match="same paths"):
        s.register_checked_csr(np.zeros(2, dtype=np.int64), np.ones(1, dtype=np.int64))
    assert s.n_paths == 0


def test_run_on_bulk_paths_equals_run_on_paths_one_by_one() -> None:
    cap = np.array([3.0, 5.0, 7.0, 11.0, 2.0])
    times = []
    for bulk in (False, True):
        env = simpy.Environment()
        net = FlowNetwork(env, cap)
        if bulk:
            pids = net.solver.register_checked_csr(*_csr(PATHS))
        else:
            pids = np.array([net.path_id(p) for p in PATHS], dtype=np.int64)
        sizes = np.array([10.0, 20.0, 5.0, 30.0, 7.0, 13.0])
        ev = net.transfer_checked_many(pids, sizes, np.array([1, 2, 1, 1, 3, 1]))
        done = net.transfer_many(pids[::-1], sizes * 0.5)
        env.run()
        times.append((ev.value, done.value, net.bytes_per_link.tolist(), net.flows_completed))
    assert times[0] == times[1]
