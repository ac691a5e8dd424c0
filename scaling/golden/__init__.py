"""Golden scaling curves: run them, store them, compare against them, check their invariants.

A *golden baseline* is one experiment's scaling curves as this version of the model computes
them, stored so that a later model change that bends a curve fails a test.

* :mod:`scaling.golden.baseline` — running a golden experiment (refused points recorded, not
  fatal), the baseline folders ``scaling baseline update`` writes, and regenerating the set;
* :mod:`scaling.golden.compare` — a results table against a baseline, per point and metric,
  ``|result − baseline| ≤ atol + rtol·|baseline|`` (``scaling compare``);
* :mod:`scaling.golden.invariants` — the physical sanity of curves, with what a set of curves may
  deviate from it and must show declared in data (``configs/golden/invariants.yaml``).

The package sits above :mod:`scaling.io` and the model; :mod:`scaling.testing` (pytest helpers)
and ``scaling.app.golden_cmd`` (the commands) are thin layers over it. Every input error is a
:class:`~scaling.io.errors.ConfigError` (the CLI's exit code 2).
"""

from scaling.golden.baseline import (
    INPUTS_FILE,
    META_FILE,
    RESULTS_FILE,
    UPDATE_COMMAND,
    Baseline,
    GoldenRun,
    Refusal,
    UpdateReport,
    golden_configs,
    input_differences,
    load_baseline,
    run_golden,
    update_baselines,
    write_baseline,
)
from scaling.golden.compare import (
    DEFAULT_ATOL,
    DEFAULT_METRICS,
    DEFAULT_RTOL,
    Comparison,
    compare_frames,
    curve_names,
    parse_metrics,
    point_name,
)
from scaling.golden.invariants import (
    INVARIANTS_FILE,
    Invariants,
    check_invariants,
    invariants_for,
    load_invariants,
)

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_METRICS",
    "DEFAULT_RTOL",
    "INPUTS_FILE",
    "INVARIANTS_FILE",
    "META_FILE",
    "RESULTS_FILE",
    "UPDATE_COMMAND",
    "Baseline",
    "Comparison",
    "GoldenRun",
    "Invariants",
    "Refusal",
    "UpdateReport",
    "check_invariants",
    "compare_frames",
    "curve_names",
    "golden_configs",
    "input_differences",
    "invariants_for",
    "load_baseline",
    "load_invariants",
    "parse_metrics",
    "point_name",
    "run_golden",
    "update_baselines",
    "write_baseline",
]
