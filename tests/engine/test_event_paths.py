"""The engine's shortcuts for large bundles give the general path's answers: a bundle whose
path ids are a block (counted by a slice, solutions read and written by slices) and the
timer's flows told by a mask at the wake-up (also after the table grew at that instant)."""

from __future__ import annotations

import numpy as np
import simpy

from scaling.engine.maxmin import MaxMinSolver
from scaling.engine.network import FlowNetwork


def test_solution_marks_a_block_of_path_ids() -> None:
    s = MaxMinSolver(np.full(8, 2.0))
    for k in range(8):
        s.register([k])
    block = s.solve_arrays(np.arange(2, 6), np.ones(4, dtype=np.int64))
    assert block.first == 2
    gaps = s.solve_arrays(np.array([1, 2, 4]), np.ones(3, dtype=np.int64))
    assert gaps.first == -1
    # the memo answers from the per-path counts either way
    counts = np.zeros(9, dtype=np.int64)
    counts[2:6] = 1
    assert s.lookup_counts(4, 2 + 3 + 4 + 5, counts) is block
    counts[:] = 0
    counts[[1, 2, 4]] = 1
    assert s.lookup_counts(3, 7, counts) is gaps
    counts[4] = 2  # another multiplicity: no hit
    assert s.lookup_counts(4, 11, counts) is None


def _run(order: np.ndarray, k: int) -> tuple[list[float], list[float], int]:
    """k flows on paths of two links each (shared pairwise), started in ``order`` twice."""
    env = simpy.Environment()
    net = FlowNetwork(env, np.linspace(1.0, 3.0, k + 1))
    pids = np.array([net.path_id([j, j + 1]) for j in range(k)], dtype=np.int64)[order]
    sizes = np.linspace(5.0, 9.0, k)[order]
    mult = (1 + np.arange(k) % 3)[order]
    first = net.transfer_many(pids, sizes, mult)
    again = net.transfer_many(pids, sizes * 2, mult)
    env.run()
    return [first.value, again.value], net.bytes_per_link.tolist(), net.flows_completed


def test_bundle_of_a_block_equals_the_same_flows_in_any_order() -> None:
    k = 100  # above the engine's threshold for the slice
    block = _run(np.arange(k), k)
    shuffled = _run(np.random.default_rng(1).permutation(k), k)
    assert block[0] == shuffled[0] and block[2] == shuffled[2] == 2 * int(
        (1 + np.arange(k) % 3).sum()
    )
    assert np.allclose(block[1], shuffled[1], rtol=1e-12)


def test_timer_flows_after_the_table_grew_at_the_wake_up() -> None:
    """A bundle started at the very instant of a live wake-up (before the timer fires) grows
    the flow table; the wake-up must still finish only the timer's own flow."""
    env = simpy.Environment()
    net = FlowNetwork(env, np.ones(202))
    a, b = net.path_id([0]), net.path_id([1])
    many = np.array([net.path_id([2 + j]) for j in range(200)], dtype=np.int64)
    done: dict[str, float] = {}

    def later() -> simpy.events.ProcessGenerator:
        # scheduled before the first re-solve's timer (t = 1): resumes first at t = 1
        yield env.timeout(1.0)
        ev = net.transfer_many(many, np.ones(200))
        yield ev
        done["many"] = env.now

    def watch(name: str, ev: simpy.Event) -> simpy.events.ProcessGenerator:
        yield ev
        done[name] = env.now

    env.process(later())
    env.process(watch("a", net.transfer_many([a], [1.0])))
    env.process(watch("b", net.transfer_many([b], [3.0])))
    env.run()
    assert done == {"a": 1.0, "b": 3.0, "many": 2.0}
    assert net.flows_completed == 202
