"""The loops around simulations (issue 29): what they compute per case without pandas equals
what pandas gives, and pools start their workers before a progress bar's thread exists."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest

from scaling.io.config import load_experiment
from scaling.model.job import Job
from scaling.sweep.batch import job_key
from scaling.sweep.runner import REFUSED, execute_run
from scaling.sweep.sensitivity import (
    _metric_of,
    _metric_of_pandas,
    case_records,
    sensitivity_metrics,
)


@functools.cache
def _runs() -> tuple[list, list]:
    exp = load_experiment("configs/mlu-vs-gpu.yaml", ["systems=[mlu370-x8]", "nodes=[1,8]"])
    jobs = exp.jobs()
    return jobs, [execute_run(j) for j in jobs]


def _records(jobs: list, rows: list) -> list[dict]:
    return case_records(rows, jobs)


def _same(a: dict, b: dict) -> bool:
    # NaN != NaN: compare the floats' text (repr), which is what the tables hold
    return a.keys() == b.keys() and all(repr(a[k]) == repr(b[k]) for k in a)


@pytest.mark.parametrize("refuse", [(), (1,), (0,), (1, 3), (0, 1, 2, 3)])
def test_a_cases_metric_without_pandas_is_pandas_value_for_value(refuse: tuple[int, ...]) -> None:
    """Every metric of real DDP/FSDP runs at 1 and 8 nodes, with refused runs at the baseline
    (efficiency NaN), at the point itself, or everywhere (no throughput column at all)."""
    jobs, got = _runs()
    rows = [
        {"status": REFUSED, "error": "does not fit"} if i in refuse else r
        for i, r in enumerate(got)
    ]
    for metric in sensitivity_metrics():
        fast = _metric_of(rows, jobs, 8, metric)
        slow = _metric_of_pandas(_records(jobs, rows), 8, metric)
        assert _same(fast, slow), (metric, fast, slow)
        assert len(fast) == 2  # DDP and FSDP at 8 nodes
    ok = _metric_of(rows, jobs, 8, "scaling_efficiency")
    # the values are real: NaN where the point was refused; against itself (1) where only its
    # baseline was (a refused run is never a baseline); a fraction where both ran
    for p, label in ((1, "ddp"), (3, "fsdp-full_shard")):
        v = ok[(jobs[p].system.name, label)]
        assert math.isnan(v) == (p in refuse)
        assert p in refuse or (v == 1.0) == (p - 1 in refuse)
        assert math.isnan(v) or 0 < v <= 1.0


#: run in a fresh interpreter (pytest's own process may hold threads from earlier tests): a
#: pool of one worker maps a probe that reports whether the worker holds a mark the parent
#: set after import (only a forked worker has it), while a thread like tqdm's monitor runs
_PROBE = """
import sys, threading
import scaling
from scaling.sweep.executors import LocalPoolExecutor
from tests.test_sweep_loops import _forked_from_this_parent
scaling._test_loops_mark = "parent"
stop = threading.Event()
with LocalPoolExecutor(1) as ex:
    if sys.argv[1] == "start":
        ex.start()
    bar_thread = threading.Thread(target=stop.wait, daemon=True)
    bar_thread.start()
    got = [v for _, ok, v in ex.imap_unordered(_forked_from_this_parent, [0, 1]) if ok]
    stop.set()
print(got)
"""


def _forked_from_this_parent(_: object) -> bool:
    """In a worker: whether it holds the parent's mark (set after import: only a fork has it)."""
    import scaling

    return getattr(scaling, "_test_loops_mark", None) == "parent"


@pytest.mark.parametrize("start_first", [True, False])
def test_a_pool_started_before_a_bars_thread_forks_its_workers(start_first: bool) -> None:
    """A progress bar's monitor thread makes a pool that starts after it spawn its workers
    (fresh interpreters that import everything again); ``start()`` before the bar forks them.
    The control (no ``start()``) shows the check can fail."""
    import multiprocessing
    import os
    import subprocess
    import sys
    from pathlib import Path

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    arg = "start" if start_first else "lazy"
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, arg], capture_output=True, text=True, env=env, cwd=root
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([start_first, start_first])


def _with_device(job: Job, **changes: object) -> Job:
    dev = dataclasses.replace(job.system.device, **changes)
    return dataclasses.replace(job, system=dataclasses.replace(job.system, device=dev))


@pytest.mark.parametrize("system", ["mlu370-x8", "dgx-a100"])
def test_a_device_number_the_job_never_reads_leaves_its_key_and_its_result(system: str) -> None:
    """What :func:`~scaling.model.reads.read_view` leaves out of the key is what the
    simulation does not read: the other dtypes' peaks and a dense job's sparsity speed-up
    change neither the key nor one bit of the result; the job's own dtype's peak changes both
    (the check can fail)."""
    exp = load_experiment(
        "configs/mlu-vs-gpu.yaml", [f"systems=[{system}]", "nodes=[2]", "simulation.steps=1"]
    )
    for job in exp.jobs():  # DDP and FSDP
        dev = job.system.device
        assert job.training.dtype == "bf16" and not job.training.sparsity
        others = {k: v * 0.5 for k, v in dev.peak_flops.items()}
        others["bf16"] = dev.peak_flops["bf16"]
        assert others != dev.peak_flops  # there is another dtype to move
        base = execute_run(job)
        for moved in (
            _with_device(job, peak_flops=others),
            _with_device(job, sparsity_speedup=dev.sparsity_speedup * 1.7 + 0.1),
        ):
            assert job_key(moved) == job_key(job)
            assert _same(execute_run(moved), base)
        own = _with_device(job, peak_flops={**dev.peak_flops, "bf16": dev.peak_flops["bf16"] * 0.5})
        assert job_key(own) != job_key(job)
        assert not _same(execute_run(own), base)
        sparse = dataclasses.replace(job, training=dataclasses.replace(job.training, sparsity=True))
        faster = _with_device(sparse, sparsity_speedup=dev.sparsity_speedup * 1.7 + 0.1)
        assert job_key(faster) != job_key(sparse)  # read by a sparse job: part of its key
