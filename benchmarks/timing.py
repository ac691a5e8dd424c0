"""Shared timing for the benchmarks: CPU seconds next to wall, median of repeats.

CPU seconds (``time.process_time`` of this process plus ``resource.getrusage(RUSAGE_CHILDREN)``
user + system of the subprocesses it waited for) mean something on a loaded machine, where wall
time is 2-25x more. Every benchmark states its targets in CPU seconds and prints both.

    from timing import measure, measure_command, line
    t = measure(lambda: simulate(cfg))                       # in process
    t = measure_command(["scaling", "run", "x.yaml"])        # a whole process, start-up included
    print(line("DDP 512 nodes", t, target_cpu_s=1.0))
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: repeats per figure (the project's rule: median of 3)
REPEATS = 3
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Timing:
    """Medians over repeats: CPU seconds (children included) and wall seconds."""

    cpu_s: float
    wall_s: float
    repeats: int


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(fn: Callable[[], object], repeats: int = REPEATS) -> Timing:
    """Median CPU and wall seconds of ``repeats`` calls of ``fn`` in this process (CPU of any
    subprocess it waits for included)."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, k0, w0 = time.process_time(), _children_cpu_s(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0 + _children_cpu_s() - k0)
    return Timing(statistics.median(cpu), statistics.median(wall), repeats)


#: where the measured processes keep their bytecode (see :func:`measure_command`)
_PYCACHE = Path(tempfile.gettempdir()) / "scaling-bench-pycache"


def measure_command(args: Sequence[str], repeats: int = REPEATS, warm: bool = True) -> Timing:
    """Median CPU and wall seconds of a fresh process ``args`` (``scaling ...`` runs this
    interpreter's ``python -m scaling``), start-up included; it must exit 0.

    Start-up as a user sees it from the second run on: with compiled bytecode. The processes
    write and read it under a cache folder of their own (``PYTHONPYCACHEPREFIX``; the source
    tree is left alone) even where the environment sets ``PYTHONDONTWRITEBYTECODE`` (without
    bytecode every start compiles the project's modules again: 0.1-1 s CPU more); one run
    before the measured ones fills the cache (``warm=False``: none, for a command of minutes,
    where the first run's compiling is noise)."""
    argv = [sys.executable, "-m", "scaling", *args[1:]] if args[0] == "scaling" else list(args)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(_PYCACHE)

    def run() -> None:
        subprocess.run(argv, capture_output=True, check=True, cwd=ROOT, env=env)

    if warm:
        run()  # fills the bytecode cache; not measured
    return measure(run, repeats)


def line(label: str, t: Timing, target_cpu_s: float | None = None) -> str:
    """``label: 0.41 s CPU (target <= 0.50 s CPU, met), 1.20 s wall, median of 3``."""
    target = ""
    if target_cpu_s is not None:
        verdict = "met" if t.cpu_s <= target_cpu_s else "NOT met"
        target = f" (target <= {target_cpu_s:g} s CPU, {verdict})"
    return f"{label}: {t.cpu_s:.3f} s CPU{target}, {t.wall_s:.3f} s wall, median of {t.repeats}"
