"""Collective algorithms: one module per algorithm, each an :class:`Algorithm` registered by
name (:func:`register`). Importing this package registers the built-in ones; a new algorithm is
its own module (imported here, or by whoever registers it) plus its entry in a library file."""

from scaling.model.comm.algos import (  # noqa: F401  (importing registers them)
    ahc,
    bruck,
    direct,
    hier_a2a,
    hierarchical,
    nhr,
    nvls,
    nvls_tree,
    p2p,
    pairwise,
    pat,
    pipeline,
    pxn,
    rhd,
    ring,
    tree,
)
from scaling.model.comm.algos.base import (
    Algorithm,
    NotApplicable,
    Param,
    Phase,
    Schedule,
    algorithm,
    algorithm_names,
    register,
    unregister,
)
from scaling.model.comm.algos.planner import Planner

__all__ = [
    "Algorithm",
    "NotApplicable",
    "Param",
    "Phase",
    "Planner",
    "Schedule",
    "algorithm",
    "algorithm_names",
    "register",
    "unregister",
]
