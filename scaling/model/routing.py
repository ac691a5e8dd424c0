"""Routing imbalance of a MoE layer: how a micro-batch's tokens fall on the experts, which
tokens a capacity factor drops, and how much more than the mean the busiest expert-parallel
rank receives — the straggler inside the EP group that sets its pace (every rank waits for the
combine all-to-all, which waits for the busiest rank's grouped GEMMs).

A distribution gives each expert a share of the token-copies (``tokens × top_k``): ``uniform``
(a balanced router: what the auxiliary / aux-loss-free balancing aims at), ``zipf`` (the expert of
popularity rank ``r`` gets ``∝ r^−s``; which experts are hot is a seeded permutation, as no
router knows it in advance) or ``histogram`` (measured relative loads per expert, in expert
order). The counts are drawn from the run's own random stream (``ROUTING_STREAM``, a spawn key
of the run's seed: no global state), one draw per MoE layer: ``multinomial(tokens·top_k,
shares)``. Two simplifications, stated: a token's ``k`` picks are drawn with replacement (the
router picks ``k`` distinct experts; with ``k ≪ E`` the loads differ by O(k/E)); and the shares
are the same for every micro-batch of a step.

Experts sit on the EP ranks in contiguous blocks of ``E/EP`` (Megatron-Core ``MoELayer``:
``local_expert_indices = ep_rank · num_local_experts + i``). A capacity factor ``C``
(``--moe-expert-capacity-factor``) keeps at most ``ceil(C · tokens·k / E)`` token-copies per
expert (``moe_utils.get_capacity``) and drops the rest (they pass through the residual only);
None is Megatron-Core's dropless default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from scaling.model.variability import LAYOUT_STREAM, stream

#: Spawn key of the routing draws (beside ``model.variability``'s streams).
ROUTING_STREAM = LAYOUT_STREAM + 3


class RoutingKind(StrEnum):
    """Token-to-expert distribution."""

    UNIFORM = "uniform"
    ZIPF = "zipf"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class RoutingSpec:
    """How tokens fall on experts.

    Attributes:
        kind: the distribution.
        zipf_s: Zipf exponent ``s ≥ 0`` (``zipf`` only; 0 is uniform shares).
        histogram: relative load of each expert, in expert order (``histogram`` only; one
            non-negative weight per routed expert, not all zero).
        capacity_factor: tokens kept per expert as a multiple of the mean (> 0; None: dropless).
    """

    kind: RoutingKind = RoutingKind.UNIFORM
    zipf_s: float = 1.0
    histogram: tuple[float, ...] = ()
    capacity_factor: float | None = None

    def error(self, experts: int) -> str:
        """Why this routing cannot be used with ``experts`` routed experts ("" when it can)."""
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            return f"moe.capacity_factor: got {self.capacity_factor}; expected > 0 (or null)"
        if self.kind is RoutingKind.HISTOGRAM and len(self.histogram) != experts:
            return (
                f"moe.histogram: got {len(self.histogram)} weights; expected one per routed "
                f"expert ({experts})"
            )
        return ""


@dataclass(frozen=True, slots=True)
class RoutingLoad:
    """One MoE layer's routing of one micro-batch over one EP group.

    Attributes:
        busiest: token-copies the busiest EP rank keeps, over the mean ``tokens·k/EP``
            (1 for a perfect balance without drops; below 1 only when drops cut every rank).
        dropped: share of the token-copies dropped by the capacity factor (0 when dropless).
    """

    busiest: float
    dropped: float


def expert_shares(spec: RoutingSpec, experts: int, rng: np.random.Generator) -> np.ndarray:
    """Each expert's expected share of the token-copies (sums to 1), in expert order."""
    if spec.kind is RoutingKind.HISTOGRAM:
        w = np.asarray(spec.histogram, dtype=float)
    elif spec.kind is RoutingKind.ZIPF:
        w = np.arange(1, experts + 1, dtype=float) ** -spec.zipf_s
        w = w[rng.permutation(experts)]  # which experts are hot: seeded
    else:
        w = np.ones(experts)
    return w / w.sum()


def route(
    spec: RoutingSpec, experts: int, top_k: int, ep: int, tokens: int, rng: np.random.Generator
) -> RoutingLoad:
    """Draw one layer's routing of ``tokens`` tokens (the whole EP group's) with ``top_k``
    picks each over ``experts`` experts on ``ep`` ranks (see the module docstring)."""
    copies = tokens * top_k
    counts = rng.multinomial(copies, expert_shares(spec, experts, rng)).astype(float)
    if spec.capacity_factor is not None:
        cap = math.ceil(spec.capacity_factor * copies / experts)
        counts = np.minimum(counts, cap)
    per_rank = counts.reshape(ep, experts // ep).sum(axis=1)
    return RoutingLoad(float(per_rank.max() / (copies / ep)), float(1.0 - counts.sum() / copies))


def layer_loads(
    spec: RoutingSpec, experts: int, top_k: int, ep: int, tokens: int, layers: int, seed: int
) -> list[RoutingLoad]:
    """The routing of each of ``layers`` MoE layers, from the run's routing stream (the same
    ``seed`` gives the same loads)."""
    rng = stream(seed, ROUTING_STREAM)
    return [route(spec, experts, top_k, ep, tokens, rng) for _ in range(layers)]
