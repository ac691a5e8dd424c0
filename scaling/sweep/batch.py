"""The simulations of one command's loops (uncertainty samples, sensitivity cases): each
distinct job simulated once, the runs of one cluster one after another (issue 29)."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scaling.model.job import Job
from scaling.model.reads import read_view
from scaling.sweep.executors import SweepExecutor
from scaling.sweep.runner import execute_run


def job_key(job: Job) -> bytes:
    """A run's identity: its pickled :func:`~scaling.model.reads.read_view`, every input the
    simulation reads (the system's numbers, structure and name, the workload, the seed, the
    steps; the model's rules drop the rest). Equal keys are the same simulation, so one
    result serves both; two equal jobs built differently may pickle differently and then
    simply run twice."""
    return pickle.dumps(read_view(job), protocol=pickle.HIGHEST_PROTOCOL)


@dataclass
class RunMemo:
    """What one command has computed so far, for its later loops: finished runs by job
    (:func:`job_key`), so that no job is simulated twice, and perturbed systems by system and
    changes (the Sobol design of each strategy of a system draws the same systems;
    :func:`scaling.sweep.uncertainty.perturbed_spec`)."""

    runs: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    systems: dict[Hashable, Any] = field(default_factory=dict)

    def system(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The system stored under ``key``, built by ``build()`` the first time."""
        if key not in self.systems:
            self.systems[key] = build()
        return self.systems[key]


def run_all(
    executor: SweepExecutor,
    jobs: list[Job],
    on_done: Callable[[], None] | None = None,
    on_result: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None,
    memo: RunMemo | None = None,
    rank: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """``execute_run`` of every job on ``executor``; results in ``jobs`` order.

    A job equal to another (:func:`job_key`) of ``jobs`` or of ``memo`` (the runs an earlier
    loop of the same command finished; updated here) is simulated once. The runs go to the
    executor grouped by system and node count, the largest first (better packing), within a
    group by ``rank`` (a sortable key per job, e.g.
    :func:`scaling.sweep.uncertainty.structure_rank`), so that runs of
    one cluster follow one another in a worker (its caches: issue 29). ``on_result(i,
    result)``, where given, is called as job ``i`` finishes and its return value kept (the
    journal's read-back); ``on_done`` after each. A failed call (not a refusal) raises; the
    results before it have had their ``on_result``."""
    memo = RunMemo() if memo is None else memo
    keys = [job_key(j) for j in jobs]
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    waiting: dict[bytes, list[int]] = {}
    for i, k in enumerate(keys):
        waiting.setdefault(k, []).append(i)

    def finish(k: bytes, value: dict[str, Any]) -> None:
        for i in waiting.pop(k):
            out[i] = value if on_result is None else on_result(i, value)
            if on_done is not None:
                on_done()

    for k in [k for k in waiting if k in memo.runs]:
        finish(k, memo.runs[k])

    def order(k: bytes) -> tuple[Any, ...]:
        i = waiting[k][0]
        j = jobs[i]
        return (-j.devices, j.system.name, j.nodes, () if rank is None else rank[i])

    todo = sorted(waiting, key=order)  # stable: equal ranks keep the jobs' order
    first = [jobs[waiting[k][0]] for k in todo]
    groups = [(j.system.name, j.nodes) for j in first]
    for t, ok, value in executor.imap_grouped(execute_run, first, groups):
        if not ok:
            raise RuntimeError(f"sampled run failed: {value}")
        memo.runs[todo[t]] = value
        finish(todo[t], value)
    missing = [i for i, o in enumerate(out) if o is None]
    assert not missing, f"runs {missing} returned nothing"  # a gap would shift every result
    return [o for o in out if o is not None]
