"""Start-up time of the command line (prints figures; asserts nothing).

Issue 18 target: ``scaling --help`` and ``scaling --version`` in <= 0.5 s of wall time (the
entry point imports click only; a command loads numpy, pandas and pydantic when it runs). Prints
the median of 5 fresh interpreters per command, and for comparison a command that loads them.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

TARGET_S = 0.5


def wall(args: list[str], n: int = 5) -> float:
    """Median wall time (s) of ``python -m scaling ARGS`` in fresh interpreters."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "scaling", *args], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    for args in (["--help"], ["--version"], ["metrics", "--format", "csv"]):
        t = wall(args)
        note = f"(target <= {TARGET_S} s)" if args[0].startswith("--") else "(loads the model)"
        print(f"scaling {' '.join(args):<24} {t:6.3f} s  {note}")
