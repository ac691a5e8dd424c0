"""Parameter sweeps: a base experiment × axes → runs on a local pool or a Dask cluster.

>>> from scaling.sweep import load_sweep, expand, run_sweep, LocalPoolExecutor
>>> df = run_sweep("configs/sweeps/ddp-buckets.yaml", "out/ddp", LocalPoolExecutor(jobs=4))  # doctest: +SKIP

See :mod:`scaling.sweep.spec` for the spec format, :mod:`scaling.sweep.runner` for the output
folder and resume, :mod:`scaling.sweep.executors` for where runs execute.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use
    from scaling.sweep.executors import (
        DaskExecutor,
        LocalPoolExecutor,
        SerialExecutor,
        SweepExecutor,
        make_executor,
    )
    from scaling.sweep.runner import FAILED, OK, REFUSED, consolidate, execute_run, run_sweep
    from scaling.sweep.spec import (
        LoadedSweep,
        RunSpec,
        SweepSpec,
        as_sweep,
        expand,
        load_sweep,
        sweep_from_dict,
    )

#: public name → its module: importing a submodule (``scaling.sweep.budget`` for ``scaling
#: run``) does not import the executors (multiprocessing), the runner and the spec schemas
#: (~0.03 CPU-s of start-up: issue 29)
_LAZY = {
    **dict.fromkeys(
        ("DaskExecutor", "LocalPoolExecutor", "SerialExecutor", "SweepExecutor", "make_executor"),
        "scaling.sweep.executors",
    ),
    **dict.fromkeys(
        ("FAILED", "OK", "REFUSED", "consolidate", "execute_run", "run_sweep"),
        "scaling.sweep.runner",
    ),
    **dict.fromkeys(
        (
            "LoadedSweep",
            "RunSpec",
            "SweepSpec",
            "as_sweep",
            "expand",
            "load_sweep",
            "sweep_from_dict",
        ),
        "scaling.sweep.spec",
    ),
}


def __getattr__(name: str) -> Any:
    """``scaling.sweep.<name>``, imported from its module on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'scaling.sweep' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "FAILED",
    "OK",
    "REFUSED",
    "DaskExecutor",
    "LoadedSweep",
    "LocalPoolExecutor",
    "RunSpec",
    "SerialExecutor",
    "SweepExecutor",
    "SweepSpec",
    "as_sweep",
    "consolidate",
    "execute_run",
    "expand",
    "load_sweep",
    "make_executor",
    "run_sweep",
    "sweep_from_dict",
]
