"""Start-up time of the command line (prints figures; asserts nothing).

Issue 18 target: ``scaling --help`` and ``scaling --version`` in <= 0.5 s CPU (the entry point
imports click only; a command loads numpy and pydantic when it runs, pandas only for an analysis
table: ``scaling run`` and ``scaling collective`` print and write theirs without it, issue 29).
Prints CPU (the child process's user + system) next to wall, median of 3 fresh interpreters per
command; for comparison a command that loads the model, and importing ``scaling.app.api``
(what ``simulate`` and every simulating command pay; issue 29).
"""

from __future__ import annotations

import sys

from timing import line, measure_command

TARGET_CPU_S = 0.5


if __name__ == "__main__":
    for args in (["--help"], ["--version"], ["metrics", "--format", "csv"]):
        target = TARGET_CPU_S if args[0].startswith("--") else None
        print(line(f"scaling {' '.join(args):<24}", measure_command(["scaling", *args]), target))
    api = measure_command([sys.executable, "-c", "import scaling.app.api"])
    print(line(f"{'import scaling.app.api':<32}", api))
