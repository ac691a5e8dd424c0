"""Benchmark of the flow-level network engine (`scaling.engine.maxmin`, `scaling.engine.network`).

Run with ``python benchmarks/bench_flows.py``. Prints CPU seconds (``time.process_time``; the
engine runs in this process), medians of 3 runs, and the totals' wall time next to them; asserts
nothing about time (no target of its own: the collective and step benchmarks carry them).
Scenarios:

* ``ring``: a 2-tier fat-tree-like link set with 4,096 endpoints (32 per leaf, 128 leaves,
  16 spines, 12,288 directed links) and 4,096 concurrent ring-neighbour flows (i -> i+1) of
  1 GiB / 4096 bytes each, all started at t=0.
* ``ring x10``: the same collective repeated 10 times back to back (memo hits).
* ``staggered``: the same 4,096 flows with 64 different sizes, so the flow set changes 64
  times with ~4,096 classes each (every change is a memo miss).
* ``staggered x10``: that collective 10 times back to back: after the first, every change is
  a memo hit, and each wake-up retires a wave of flows from a partly finished bundle (the
  common event of a training step's phases; per-event cost O(live flows)).
* ``small x2000``: 16 ring flows of 4 sizes, 2,000 times: the per-event overhead when few
  flows are live.
* ``maxmin_rates``: 4,096 flows with random 2-6 link paths over 10,000 links, and the ring
  pattern on the fat tree.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import simpy
from timing import REPEATS, line, measure

try:
    from scaling.engine.maxmin import Incidence, maxmin_rates
    from scaling.engine.network import FlowNetwork
except ModuleNotFoundError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scaling.engine.maxmin import Incidence, maxmin_rates
    from scaling.engine.network import FlowNetwork

N_ENDPOINTS = 4096
PER_LEAF = 32
N_SPINES = 16
HOST_BPS = 50e9  # 400 Gb/s NIC
FABRIC_BPS = 100e9  # 800 Gb/s leaf-spine
GIB = 1 << 30


class FatTree:
    """Link numbering: host up, host down, leaf->spine, spine->leaf (all directed)."""

    def __init__(self) -> None:
        self.n_leaves = N_ENDPOINTS // PER_LEAF
        self.up0 = 0
        self.down0 = N_ENDPOINTS
        self.l2s0 = 2 * N_ENDPOINTS
        self.s2l0 = self.l2s0 + self.n_leaves * N_SPINES
        self.n_links = self.s2l0 + self.n_leaves * N_SPINES
        cap = np.full(self.n_links, FABRIC_BPS)
        cap[: 2 * N_ENDPOINTS] = HOST_BPS
        self.capacity = cap

    def path(self, src: int, dst: int) -> list[int]:
        ls, ld = src // PER_LEAF, dst // PER_LEAF
        links = [self.up0 + src]
        if ls != ld:
            spine = src % N_SPINES  # deterministic ECMP
            links += [self.l2s0 + ls * N_SPINES + spine, self.s2l0 + ld * N_SPINES + spine]
        links.append(self.down0 + dst)
        return links

    def ring_paths(self) -> list[list[int]]:
        return [self.path(i, (i + 1) % N_ENDPOINTS) for i in range(N_ENDPOINTS)]


def run_engine(sizes: list[float], steps: int = 1) -> dict[str, float]:
    """Ring flows i -> i+1 for the first len(sizes) endpoints, ``steps`` times."""
    tree = FatTree()
    t0 = time.process_time()
    env = simpy.Environment()
    net = FlowNetwork(env, tree.capacity)
    pids = [net.path_id(p) for p in tree.ring_paths()[: len(sizes)]]
    t1 = time.process_time()

    def collective():
        for _ in range(steps):
            # one bundle per collective, as scaling.model.comm.flowcoll issues a phase
            yield net.transfer_many(pids, sizes)

    env.process(collective())
    env.run()
    t2 = time.process_time()
    expected = float(np.sum(sizes)) * steps
    delivered = float(net.bytes_per_link[tree.up0 : tree.up0 + len(sizes)].sum())
    assert abs(delivered - expected) <= 1e-9 * expected  # correctness, not timing
    return {
        "cpu_s": t2 - t0,
        "setup_s": t1 - t0,
        "run_s": t2 - t1,
        "sim_time_s": float(env.now),
        "resolves": net.resolves,
        "cache_hits": net.cache_hits,
        "cache_misses": net.cache_misses,
        "wakeups": net.wakeups,
    }


def median_of(fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    runs = [fn() for _ in range(REPEATS)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def report_engine(name: str, r: dict[str, float]) -> None:
    print(
        f"{name:<13} CPU {r['cpu_s'] * 1e3:8.1f} ms (setup {r['setup_s'] * 1e3:6.1f} ms, "
        f"run {r['run_s'] * 1e3:7.1f} ms)  sim {r['sim_time_s'] * 1e6:9.3f} us  "
        f"re-solves {int(r['resolves']):5d}  cache hits {int(r['cache_hits']):5d}  "
        f"misses {int(r['cache_misses']):3d}  wake-ups {int(r['wakeups']):5d}"
    )


def time_maxmin(name: str, cap: np.ndarray, paths: list) -> None:
    inc = Incidence.from_paths(paths, cap.size)
    t_list, t_inc = [], []
    for _ in range(REPEATS):
        t0 = time.process_time()
        maxmin_rates(cap, paths)
        t1 = time.process_time()
        maxmin_rates(cap, inc)
        t2 = time.process_time()
        t_list.append(t1 - t0)
        t_inc.append(t2 - t1)
    print(
        f"maxmin_rates {name:<32} flows {len(paths):5d} links {cap.size:6d} "
        f"entries {inc.links.size:6d}: {statistics.median(t_list) * 1e3:6.2f} ms "
        f"(lists)  {statistics.median(t_inc) * 1e3:6.2f} ms (prebuilt Incidence)"
    )


def main() -> None:
    print(f"flow engine benchmark, CPU, medians of {REPEATS} runs")
    flow_bytes = GIB / N_ENDPOINTS
    ring = [flow_bytes] * N_ENDPOINTS
    report_engine("ring", median_of(lambda: run_engine(ring)))
    print(line("ring, CPU and wall", measure(lambda: run_engine(ring))))
    report_engine("ring x10", median_of(lambda: run_engine(ring, steps=10)))
    staggered = [flow_bytes * (1 + (i % 64) / 64) for i in range(N_ENDPOINTS)]
    report_engine("staggered", median_of(lambda: run_engine(staggered)))
    report_engine("staggered x10", median_of(lambda: run_engine(staggered, steps=10)))
    small = [flow_bytes * (1 + i % 4) for i in range(16)]
    report_engine("small x2000", median_of(lambda: run_engine(small, steps=2000)))

    rng = np.random.default_rng(0)
    n_links = 10_000
    cap = rng.uniform(10e9, 100e9, n_links)
    paths = [rng.choice(n_links, size=int(rng.integers(2, 7)), replace=False) for _ in range(4096)]
    time_maxmin("random 2-6 link paths", cap, paths)
    tree = FatTree()
    time_maxmin("fat-tree ring", tree.capacity, tree.ring_paths())
    chain = [[i, i + 1] for i in range(4096)]
    time_maxmin("adversarial chain (heap fallback)", np.arange(1.0, 4098.0) * 1e9, chain)


if __name__ == "__main__":
    main()
