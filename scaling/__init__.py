"""`scaling`: a discrete-event simulator of distributed deep-learning training at scale.

Layers (imports go downward only):

* :mod:`scaling.engine` — SimPy helpers and the network engine; knows nothing about ML.
* :mod:`scaling.model` — devices, workloads, collectives, training strategies.
* :mod:`scaling.io` and :mod:`scaling.app` — configs, results, plots, CLI.

The public API, for scripts and notebooks (imported on first use, so ``import scaling`` is
cheap)::

    from scaling import run_experiment, run_sweep, simulate, ConfigError, InfeasibleJobError
    res = run_experiment("mlu-vs-gpu", {"nodes": [1, 8]})   # a bundled example, by name
    fig = plot_efficiency(res.table)                        # a matplotlib Figure (ax= to draw on yours)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from scaling._version import __version__

#: public name → the module that defines it
_API = {
    "simulate": "scaling.app.api",
    "run_experiment": "scaling.app.api",
    "run_sweep": "scaling.app.api",
    "ExperimentResult": "scaling.app.api",
    "ConfigError": "scaling.io.errors",
    "InfeasibleJobError": "scaling.model.job",
    "RunResult": "scaling.model.analysis.metrics",
    "run_series": "scaling.io.results",
    "read_results": "scaling.io.results",
    "plot_metric": "scaling.io.plots",
    "plot_efficiency": "scaling.io.plots",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:  # lazy: keep `import scaling.engine` free of app-layer imports
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'scaling' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
