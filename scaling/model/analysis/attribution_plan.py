"""The attribution of :mod:`scaling.model.analysis.attribution` at several node counts, planned as
independent simulations for any executor (``scaling explain --vs``).

Each hybrid simulation is a separate call so a process pool can run them; a *plan* leaves out the
hybrids that cannot differ from one already planned (a swapped memory capacity that fits exactly
the same micro-batches), and :func:`attribute_many` gives the same floats as the serial
:func:`~scaling.model.analysis.attribution.attribute`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from scaling.model.analysis.attribution import (
    COMPONENTS,
    Attribution,
    hybrid,
    shapley,
    throughput_per_device,
)
from scaling.model.hardware.system import SystemSpec
from scaling.model.job import InfeasibleJobError, Job
from scaling.model.simulation import check_feasible

#: one simulation of a plan: (node count, the components taken from B)
Hybrid = tuple[int, frozenset[str]]

#: above this configured micro-batch the plan does not look for memory-capacity twins (it would
#: check every micro-batch 1 … the configured one for feasibility, twice per hybrid)
MAX_TWIN_MICRO_BATCH = 256


class CallMap(Protocol):
    """What runs a plan's simulations: independent calls, results in any order, the calls of
    one group (equal keys) submitted together (the sweep layer's executors are such maps)."""

    def imap_grouped(
        self, fn: Callable[[Any], Any], args: Sequence[Any], keys: Sequence[Any]
    ) -> Iterable[tuple[int, bool, Any]]:
        """Yield ``(index into args, ok, result or error line)`` as each call finishes."""
        ...


class Progress(Protocol):
    """A progress bar advanced once per finished simulation."""

    def update(self, n: int = 1) -> Any:
        """Count ``n`` more finished simulations."""
        ...


class HybridRunError(ValueError):
    """A hybrid simulation of the plan failed; the message names the hybrid and why."""


def hybrid_point(arg: tuple[Job, SystemSpec, SystemSpec, tuple[str, ...]]) -> float:
    """One value of the attribution (runs in a worker): tokens/s per device of ``job`` on
    system A with the components in ``from_b`` taken from B."""
    job, a, b, from_b = arg
    return throughput_per_device(replace(job, system=hybrid(a, b, frozenset(from_b))))


def feasible_micro_batches(job: Job) -> tuple[bool, ...]:
    """Which micro-batches 1 … the job's fit in memory (what the attribution's search for the
    largest fitting micro-batch looks at)."""
    out = []
    for mb in range(1, job.training.micro_batch + 1):
        try:
            check_feasible(replace(job, training=replace(job.training, micro_batch=mb)))
        except InfeasibleJobError:
            out.append(False)
        else:
            out.append(True)
    return tuple(out)


def hybrid_plan(
    base: Job, a: SystemSpec, b: SystemSpec, counts: list[int]
) -> tuple[list[Hybrid], dict[Hybrid, Hybrid]]:
    """The hybrid simulations the attribution at ``counts`` needs: ``(to run, twins)``.

    Memory capacity enters a run only through the micro-batch that fits (capacity and reserved
    memory are read by the feasibility check and reported, nothing else; the seeds do not
    depend on the system's name). A hybrid with B's memory capacity whose micro-batches fit
    exactly as they do with A's is therefore the same simulation as the hybrid without it:
    ``twins`` maps it to that one, and only ``to run`` (largest node count first) is simulated.
    """
    mem = "memory capacity"
    subsets = [
        frozenset(c)
        for k in range(len(COMPONENTS) + 1)
        for c in itertools.combinations(COMPONENTS, k)
    ]
    run: list[Hybrid] = []
    twins: dict[Hybrid, Hybrid] = {}
    for n in sorted(counts, reverse=True):
        job = replace(base, nodes=n)
        look = mem in COMPONENTS and job.training.micro_batch <= MAX_TWIN_MICRO_BATCH
        for s in subsets:
            if look and mem in s:
                other = s - {mem}
                fits = feasible_micro_batches(replace(job, system=hybrid(a, b, s)))
                if fits == feasible_micro_batches(replace(job, system=hybrid(a, b, other))):
                    twins[(n, s)] = (n, other)
                    continue
            run.append((n, s))
    return run, twins


def cluster_of(h: Hybrid) -> tuple[int, bool, bool, bool]:
    """The hybrids that simulate the same cluster: the node count and whether the scale-up
    link, the scale-out network and the collective library come from B (the device components
    change only compute and memory). A plan's runs are grouped by it so that those of one
    cluster follow one another in one process (its cluster and tuner caches: issue 29)."""
    n, s = h
    return (n, "scale-up link" in s, "scale-out network" in s, "collective library" in s)


def attribute_many(
    base: Job,
    a: SystemSpec,
    b: SystemSpec,
    counts: list[int],
    executor: CallMap,
    bar: Progress | None = None,
) -> list[Attribution]:
    """:func:`scaling.model.analysis.attribution.attribute` at each node count, its hybrid
    simulations (of :func:`hybrid_plan`) run as independent calls on ``executor``: the same
    numbers as the serial function. ``bar``: a progress bar to advance per simulation.

    Raises :class:`HybridRunError` when a simulation fails."""
    run, twins = hybrid_plan(base, a, b, counts)
    args = [(replace(base, nodes=n), a, b, tuple(sorted(s))) for n, s in run]
    values: dict[Hybrid, float] = {}
    for i, ok, value in executor.imap_grouped(hybrid_point, args, [cluster_of(h) for h in run]):
        if not ok:
            n, s = run[i]
            what = "+".join(sorted(s)) or "none"
            raise HybridRunError(
                f"the hybrid at {n} nodes with {what} from {b.name} failed: {value}"
            )
        values[run[i]] = value
        if bar is not None:
            bar.update(1)
    for twin, same in twins.items():
        values[twin] = values[same]
    out = []
    for n in counts:
        # as attribute(): Shapley over v(S) - v(empty); the gap is v(empty) - v(all): negate
        def value_at(s: frozenset[str], n: int = n) -> float:
            return values[(n, s)]

        raw = shapley(value_at)
        parts = {k: -x for k, x in raw.items()}
        v_a, v_b = values[(n, frozenset())], values[(n, frozenset(COMPONENTS))]
        out.append(Attribution(a.name, b.name, n, v_a, v_b, parts))
    return out
