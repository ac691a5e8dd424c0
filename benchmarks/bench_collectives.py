"""Simulation-speed benchmark of flow-level collectives (prints figures; asserts nothing).

Targets in CPU seconds (``time.process_time``; wall printed next to it): a 1 GiB ring
all-reduce over 4,096 ranks (512 nodes of 8) on a fat-tree resolves in <= 1 s CPU. Prints medians
of 3 runs: building the cluster network, building the ring schedule and registering its paths
(first call), and running the collective on the flow engine (cold: first run in a fresh
environment; warm: the same collective again, memoised), each in CPU ms.

Issue 13 targets (with contention, the tuner's choice, set-up included): a 1 GiB all-reduce at
8,192 ranks (1,024 DGX H100 nodes) <= 1 s CPU, at 32,768 ranks (4,096 nodes) <= 5 s CPU. The
whole ``scaling collective`` process (issue 29) is in ``bench_commands.py``.
"""

from __future__ import annotations

import statistics
import time

import simpy
from timing import REPEATS, line, measure

from scaling.io.topology import load_system
from scaling.model.comm.cluster import clear_structure_cache
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group


def once(system_name: str, nodes: int) -> dict[str, float]:
    spec = load_system(system_name).spec
    clear_structure_cache()  # a cold build each time (a process's later runs reuse it)
    t0 = time.process_time()
    env = simpy.Environment()
    fc = FlowCollectives(env, spec, nodes)
    t1 = time.process_time()
    group = Group(nodes, spec.devices_per_node)
    fc.predict(CollectiveOp.ALL_REDUCE, 2.0**30, group, "ring")
    t2 = time.process_time()
    env.run(env.process(fc.run(CollectiveOp.ALL_REDUCE, 2.0**30, group, "ring")))
    t3 = time.process_time()
    env.run(env.process(fc.run(CollectiveOp.ALL_REDUCE, 2.0**30, group, "ring")))
    t4 = time.process_time()
    return {
        "network": t1 - t0,
        "schedule": t2 - t1,
        "run": t3 - t2,
        "warm": t4 - t3,
        "total": t3 - t0,
        "links": len(fc.cluster.links),
        "flows": int(
            sum(p.mult.sum() for p in fc.schedule("ring", CollectiveOp.ALL_REDUCE, group).phases)
        ),
    }


def contended(nodes: int) -> None:
    """Two concurrent 1 GiB all-reduces (the tuner's choice) sharing one DGX H100 cluster's
    network, from building the network to the last byte."""
    spec = load_system("dgx-h100").spec
    env = simpy.Environment()
    fc = FlowCollectives(env, spec, nodes)
    group = Group(nodes, spec.devices_per_node)
    runs = [env.process(fc.run(CollectiveOp.ALL_REDUCE, 2.0**30, group)) for _ in range(2)]
    env.run(env.all_of(runs))


def main() -> None:
    print(f"1 GiB ring all-reduce on the flow engine, CPU, medians of {REPEATS} runs")
    for system, nodes in (("dgx-a100", 64), ("dgx-a100", 512), ("mlu370-x8", 512)):
        runs = [once(system, nodes) for _ in range(REPEATS)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{system:10} {nodes:4d} nodes ({nodes * 8} ranks, {int(med['links'])} links, {int(med['flows'])} flows): "
            f"network {med['network'] * 1e3:7.1f} ms  schedule {med['schedule'] * 1e3:7.1f} ms  "
            f"run {med['run'] * 1e3:6.1f} ms  total {med['total']:.3f} s  (warm re-run {med['warm'] * 1e3:.1f} ms)"
        )
    print("two concurrent 1 GiB all-reduces (tuner's choice) on DGX H100, set-up included")
    for nodes, target in ((1024, 1.0), (4096, 5.0)):
        print(line(f"{nodes * 8:6d} ranks", measure(lambda n=nodes: contended(n)), target))


if __name__ == "__main__":
    main()
