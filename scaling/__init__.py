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

Also: ``explain`` (the step breakdown as a table), ``run_replicas``, ``run_uncertainty``,
``run_plan``, ``run_collective`` (one collective, as ``scaling collective``),
``load_experiment``, in-memory systems (``systems={"name": topology mapping}``, a catalog one
from ``system_document``), ``system_spec`` and the plots of the CLI. Type checkers
see the real signatures (the ``TYPE_CHECKING`` imports below); at run time each name is imported
on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from scaling._version import __version__

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use
    from scaling.app.api import (
        ExperimentResult as ExperimentResult,
    )
    from scaling.app.api import (
        run_experiment as run_experiment,
    )
    from scaling.app.api import (
        run_sweep as run_sweep,
    )
    from scaling.app.api import (
        simulate as simulate,
    )
    from scaling.app.api_analysis import (
        attribute_gap as attribute_gap,
    )
    from scaling.app.api_analysis import (
        explain as explain,
    )
    from scaling.app.api_analysis import (
        format_uncertainty as format_uncertainty,
    )
    from scaling.app.api_analysis import (
        load_experiment as load_experiment,
    )
    from scaling.app.api_analysis import (
        run_collective as run_collective,
    )
    from scaling.app.api_analysis import (
        run_plan as run_plan,
    )
    from scaling.app.api_analysis import (
        run_replicas as run_replicas,
    )
    from scaling.app.api_analysis import (
        run_sensitivity as run_sensitivity,
    )
    from scaling.app.api_analysis import (
        run_uncertainty as run_uncertainty,
    )
    from scaling.app.api_analysis import (
        system_spec as system_spec,
    )
    from scaling.io.errors import (
        ConfigError as ConfigError,
    )
    from scaling.io.examples import (
        resolve_config as resolve_config,
    )
    from scaling.io.plots import (
        plot_efficiency as plot_efficiency,
    )
    from scaling.io.plots import (
        plot_headline as plot_headline,
    )
    from scaling.io.plots import (
        plot_metric as plot_metric,
    )
    from scaling.io.plots import (
        plot_sweep as plot_sweep,
    )
    from scaling.io.results import (
        read_results as read_results,
    )
    from scaling.io.results import (
        results_frame as results_frame,
    )
    from scaling.io.results import (
        run_series as run_series,
    )
    from scaling.io.topology import (
        system_document as system_document,
    )
    from scaling.io.uncertainty_plot import (
        plot_bands as plot_bands,
    )
    from scaling.model.analysis.metrics import (
        RunResult as RunResult,
    )
    from scaling.model.failures import (
        goodput_daly as goodput_daly,
    )
    from scaling.model.job import (
        InfeasibleJobError as InfeasibleJobError,
    )
    from scaling.model.job import (
        Job as Job,
    )
    from scaling.plan import (
        PlanSpace as PlanSpace,
    )
    from scaling.sweep.branches import (
        split_lines as split_lines,
    )
    from scaling.sweep.executors import (
        make_executor as make_executor,
    )

#: public name → the module that defines it (the TYPE_CHECKING imports above list the same)
_API = {
    "simulate": "scaling.app.api",
    "run_experiment": "scaling.app.api",
    "run_sweep": "scaling.app.api",
    "ExperimentResult": "scaling.app.api",
    "load_experiment": "scaling.app.api_analysis",
    "explain": "scaling.app.api_analysis",
    "run_replicas": "scaling.app.api_analysis",
    "run_uncertainty": "scaling.app.api_analysis",
    "run_sensitivity": "scaling.app.api_analysis",
    "attribute_gap": "scaling.app.api_analysis",
    "format_uncertainty": "scaling.app.api_analysis",
    "run_plan": "scaling.app.api_analysis",
    "run_collective": "scaling.app.api_analysis",
    "system_spec": "scaling.app.api_analysis",
    "ConfigError": "scaling.io.errors",
    "InfeasibleJobError": "scaling.model.job",
    "Job": "scaling.model.job",
    "RunResult": "scaling.model.analysis.metrics",
    "run_series": "scaling.io.results",
    "read_results": "scaling.io.results",
    "results_frame": "scaling.io.results",
    "plot_metric": "scaling.io.plots",
    "plot_efficiency": "scaling.io.plots",
    "plot_sweep": "scaling.io.plots",
    "plot_headline": "scaling.io.plots",
    "plot_bands": "scaling.io.uncertainty_plot",
    "system_document": "scaling.io.topology",
    "resolve_config": "scaling.io.examples",
    "make_executor": "scaling.sweep.executors",
    "split_lines": "scaling.sweep.branches",
    "PlanSpace": "scaling.plan",
    "goodput_daly": "scaling.model.failures",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:  # lazy: keep `import scaling.engine` free of app-layer imports
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'scaling' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
