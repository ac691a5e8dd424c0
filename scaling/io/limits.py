"""The size limits of one run, checked before anything is built, in a module of their own so a
command that only checks them (``scaling collective``) need not import the config schemas
(start-up: issue 29). :mod:`scaling.io.config` re-exports them."""

from __future__ import annotations

#: Default limits of one run, checked before anything is built (:meth:`LoadedExperiment.
#: check_size`): ranks (nodes x devices per node) and simulated micro-batches per rank
#: ((steps + warmup_steps) x grad_accum_steps). A 32,768-rank flow network takes ~0.4 GiB and
#: ~20 s to build and run one collective on; the limits sit above every bundled config and
#: benchmark. Raise them with ``simulation.max_ranks`` / ``simulation.max_micro_batches``.
DEFAULT_MAX_RANKS = 65_536
DEFAULT_MAX_MICRO_BATCHES = 10_000
#: memory of the flow network per rank (B), measured: 32,768 ranks of dgx-a100 peak at 0.4 GiB
NETWORK_BYTES_PER_RANK = 13_000


def run_size_error(nodes: int, devices_per_node: int, max_ranks: int, knob: str = "") -> str:
    """Why ``nodes`` nodes of ``devices_per_node`` ranks are too many to simulate (beyond
    ``max_ranks``), with the estimated network memory and the knob that raises the limit; ""
    when they fit. ``knob`` names the limit's option (default: ``simulation.max_ranks``)."""
    ranks = nodes * devices_per_node
    if ranks <= max_ranks:
        return ""
    gib = ranks * NETWORK_BYTES_PER_RANK / 2**30
    return (
        f"{ranks:,} ranks (a flow network of ~{gib:,.3g} GiB); expected at most {max_ranks:,} "
        f"ranks (raise {knob or 'simulation.max_ranks'} to allow more)"
    )
