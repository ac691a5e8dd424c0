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

import resource
import statistics
import subprocess
import sys
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


def measure_command(args: Sequence[str], repeats: int = REPEATS) -> Timing:
    """Median CPU and wall seconds of a fresh process ``args`` (``scaling ...`` runs this
    interpreter's ``python -m scaling``), start-up included; it must exit 0."""
    argv = [sys.executable, "-m", "scaling", *args[1:]] if args[0] == "scaling" else list(args)

    def run() -> None:
        subprocess.run(argv, capture_output=True, check=True, cwd=ROOT)

    return measure(run, repeats)


def line(label: str, t: Timing, target_cpu_s: float | None = None) -> str:
    """``label: 0.41 s CPU (target <= 0.50 s CPU, met), 1.20 s wall, median of 3``."""
    target = ""
    if target_cpu_s is not None:
        verdict = "met" if t.cpu_s <= target_cpu_s else "NOT met"
        target = f" (target <= {target_cpu_s:g} s CPU, {verdict})"
    return f"{label}: {t.cpu_s:.3f} s CPU{target}, {t.wall_s:.3f} s wall, median of {t.repeats}"
