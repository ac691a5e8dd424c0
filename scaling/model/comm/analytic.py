"""Closed-form alpha-beta costs of collective algorithms: the test oracles of the simulator.

Notation (``reference/collective_cost_models.csv``): ``p`` ranks, ``n`` bytes (all-reduce: the
buffer on each rank; reduce-scatter: the full input; all-gather: the full gathered output),
``alpha`` seconds per sequential step, ``beta`` seconds per byte (1/bandwidth). Reduction compute
(gamma) is not modelled: on accelerators it overlaps with transfer.

Sources: Patarasuk & Yuan, JPDC 69(2) 2009 (ring all-reduce); Thakur, Rabenseifner & Gropp,
IJHPCA 19(1) 2005 (recursive halving/doubling, ring all-gather / reduce-scatter); HCCL docs
(Ring.md, RHD.md); the two-level hierarchical form is a composition of the ring formulas.
"""

from __future__ import annotations

import math


def ring_allreduce(p: int, n: float, alpha: float, beta: float) -> float:
    """Ring all-reduce: ``2(p−1)·α + 2(p−1)/p·n·β`` seconds."""
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * n * beta


def ring_reduce_scatter(p: int, n: float, alpha: float, beta: float) -> float:
    """Ring reduce-scatter: ``(p−1)·α + (p−1)/p·n·β`` seconds."""
    return (p - 1) * alpha + (p - 1) / p * n * beta


def ring_allgather(p: int, n: float, alpha: float, beta: float) -> float:
    """Ring all-gather: ``(p−1)·α + (p−1)/p·n·β`` seconds."""
    return (p - 1) * alpha + (p - 1) / p * n * beta


def rhd_allreduce(p: int, n: float, alpha: float, beta: float) -> float:
    """Recursive halving-doubling (Rabenseifner) all-reduce, p a power of two:
    ``2·log2(p)·α + 2(p−1)/p·n·β`` seconds."""
    if p & (p - 1):
        raise ValueError(f"recursive halving-doubling needs a power-of-two p, got {p}")
    return 2 * math.log2(p) * alpha + 2 * (p - 1) / p * n * beta


def hierarchical_allreduce(
    g: int,
    k: int,
    n: float,
    alpha_intra: float,
    beta_intra: float,
    alpha_inter: float,
    beta_inter: float,
) -> float:
    """Two-level all-reduce, ``g`` ranks per node and ``k`` nodes: intra-node ring reduce-scatter,
    inter-node ring all-reduce of ``n/g``, intra-node ring all-gather."""
    intra = 2 * (g - 1) * alpha_intra + 2 * (g - 1) / g * n * beta_intra
    inter = 2 * (k - 1) * alpha_inter + 2 * (k - 1) / k * (n / g) * beta_inter
    return intra + inter
