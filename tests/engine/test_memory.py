"""The engine's per-event arrays cost no page faults (scaling.engine.memory), and the small
helpers that replace numpy calls on its paths give numpy's answers."""

from __future__ import annotations

import platform
import resource
import sys

import numpy as np
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling.engine.memory import keep_freed_memory
from scaling.engine.network import FlowNetwork
from scaling.engine.waterfill import sorted_distinct

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-1, 50), min_size=1, max_size=300))
def test_sorted_distinct_is_np_unique(values: list[int]) -> None:
    a = np.array(values, dtype=np.int64)
    got, want = sorted_distinct(a), np.unique(a)
    assert got.dtype == want.dtype and got.tolist() == want.tolist()


def _waves(n_flows: int) -> float:
    """A bundle of ``n_flows`` flows over 64 paths of different speeds: they finish in
    waves, each retiring thousands of entries (the arrays a 256-node collective moves)."""
    env = simpy.Environment()
    net = FlowNetwork(env, np.linspace(1e9, 8e9, 64))
    pids = np.array([net.path_id([k]) for k in range(64)])
    ev = net.transfer_many(np.repeat(pids, n_flows // 64), np.full(n_flows, 1e6))
    env.run()
    assert net.wakeups >= 32 and ev.value > 0
    return float(ev.value)


def test_second_run_of_large_waves_faults_no_pages() -> None:
    """With glibc, the freed arrays of one run serve the next: a repeat of a 64,000-flow run
    touches no fresh page (without keep_freed_memory glibc trims and re-faults them: ~1,000
    faults here)."""
    if not GLIBC:
        assert keep_freed_memory() in (True, False)
        return
    assert keep_freed_memory() and keep_freed_memory()  # set, and idempotent
    first = _waves(64_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert _waves(64_000) == first
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 200
