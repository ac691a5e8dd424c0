"""Simulation-speed benchmark of all-to-all on the flow engine (prints figures; asserts nothing).

Issue 26 target: a 1 GiB all-to-all at 4,096 ranks in <= 5 s of CPU time. Each run builds the
cluster network, lets the tuner choose among the library's all-to-all algorithms (every
candidate's schedule built and priced) and runs the choice on the flow engine; CPU seconds
(time.process_time) and wall seconds, medians of 3. The inter-node flows are folded (one class
per source, destination local index and near/far pod; scaling/model/comm/algos/exchange.py):
the flow entries printed are what the engine sees, against the p² pairs they stand for.
"""

from __future__ import annotations

import statistics
import time

import simpy

from scaling.io.topology import load_system
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group

A2A = CollectiveOp.ALL_TO_ALL


def once(system: str, nodes: int, algorithm: str | None) -> dict[str, float | str]:
    spec = load_system(system).spec
    c0, w0 = time.process_time(), time.perf_counter()
    env = simpy.Environment()
    fc = FlowCollectives(env, spec, nodes)
    group = Group(nodes, spec.devices_per_node)
    env.run(env.process(fc.run(A2A, 2.0**30, group, algorithm)))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    ch = fc.predict(A2A, 2.0**30, group, algorithm)
    sched = fc.schedule(ch.algorithm, A2A, group)
    assert sched is not None
    entries = sum(int(p.src.size) for p in sched.phases)
    return {"cpu": cpu, "wall": wall, "sim": env.now, "algo": ch.algorithm, "entries": entries}


def main() -> None:
    print("1 GiB all-to-all on the flow engine (network, tuner, run), medians of 3")
    cases = [
        ("dgx-h100", 512, None, 5.0),
        ("atlas-800t-a2", 512, None, None),
        ("atlas-800t-a2", 512, "pairwise", None),
        ("mlu370-x8", 512, None, None),
    ]
    for system, nodes, algo, target in cases:
        runs = [once(system, nodes, algo) for _ in range(3)]
        cpu = statistics.median(float(r["cpu"]) for r in runs)
        wall = statistics.median(float(r["wall"]) for r in runs)
        p = nodes * load_system(system).spec.devices_per_node
        goal = f" (target <= {target:.0f} s CPU)" if target else ""
        print(
            f"{system:14} {p:5d} ranks {runs[0]['algo']!s:9}: CPU {cpu:5.2f} s, wall "
            f"{wall:5.2f} s{goal}; simulated {float(runs[0]['sim']) * 1e3:7.2f} ms; "
            f"{runs[0]['entries']} flow entries for {p * (p - 1)} pairs"
        )


if __name__ == "__main__":
    main()
