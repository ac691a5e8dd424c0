"""Parameter sweeps: a base experiment × axes → runs on a local pool or a Dask cluster.

>>> from scaling.sweep import load_sweep, expand, run_sweep, LocalPoolExecutor
>>> df = run_sweep("configs/sweeps/ddp-buckets.yaml", "out/ddp", LocalPoolExecutor(jobs=4))  # doctest: +SKIP

See :mod:`scaling.sweep.spec` for the spec format, :mod:`scaling.sweep.runner` for the output
folder and resume, :mod:`scaling.sweep.executors` for where runs execute.
"""

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
