"""`scaling`: a discrete-event simulator of distributed deep-learning training at scale.

Layers (imports go downward only):

* :mod:`scaling.engine` — SimPy helpers and the network engine; knows nothing about ML.
* :mod:`scaling.model` — devices, workloads, collectives, training strategies.
* :mod:`scaling.io` and :mod:`scaling.app` — configs, results, plots, CLI.

The public entry point is :func:`scaling.simulate`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "simulate"]


def __getattr__(name: str):  # lazy: keep `import scaling.engine` free of app-layer imports
    if name == "simulate":
        from scaling.app.api import simulate

        return simulate
    raise AttributeError(name)
