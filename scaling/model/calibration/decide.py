"""The measurement that decides: rank cheap collective benchmarks by how well their outcome
separates a profile's structural alternatives (branches), or — with one branch — by how
uncertain their outcome is.

Each branch is a set of sampled systems (the branch's structure with its other uncertain
numbers drawn over their ranges). For a candidate measurement (op, size, nodes) every sample is
priced by the simulator (:func:`~scaling.model.calibration.measure.predict_times`) and each
branch gives an interval of predicted bus bandwidth (the central :data:`COVERAGE` of its
samples), or of the ratio of two node counts' bus bandwidth (:class:`Probe`). The separation score of a measurement is the smallest, over pairs of branches, log gap
between their intervals: ``log(lo_upper / hi_lower)`` — positive where the intervals do not
overlap (the measurement tells the branches apart whatever the other numbers are), negative by
how much they overlap. Ties go to the cheaper measurement (fewer nodes in all, then smaller size).
With one branch the score is the interval's log width: measure where the model knows least.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scaling.model.calibration.measure import busbw_GBps, predict_times
from scaling.model.comm.ops import CollectiveOp
from scaling.model.hardware.system import SystemSpec

#: Share of a branch's samples its predicted interval covers (central).
COVERAGE = 0.9
#: Separation scores closer than this (log gap: 5 %) tie; the cheaper measurement goes first.
SCORE_TIE = 0.05


@dataclass(frozen=True)
class Probe:
    """A candidate measurement: one collective benchmark row (its busbw, GB/s), or with
    ``versus_nodes`` the ratio of its busbw to the same row on that many nodes — a ratio of two
    runs on the same hardware cancels what both share (link rates, efficiencies), leaving what
    scales differently with the node count (a ring's steps grow linearly, a tree's
    logarithmically)."""

    op: CollectiveOp
    nodes: int
    per_node: int
    size_B: int
    versus_nodes: int = 0

    @property
    def base(self) -> Probe:
        """The single row measured at ``nodes``."""
        return Probe(self.op, self.nodes, self.per_node, self.size_B)

    @property
    def reference(self) -> Probe | None:
        """The row the ratio divides by (None for a single row)."""
        if not self.versus_nodes:
            return None
        return Probe(self.op, self.versus_nodes, self.per_node, self.size_B)

    @property
    def cost(self) -> int:
        """Nodes the measurement occupies, summed over its runs."""
        return self.nodes + self.versus_nodes


@dataclass(frozen=True)
class BranchPrediction:
    """What one branch predicts for a probe: bus bandwidth (GB/s; for a ratio probe the ratio)
    interval and median, and the algorithm/protocol the tuner picks at the median sample."""

    branch: str
    low_GBps: float
    median_GBps: float
    high_GBps: float
    algorithm: str


@dataclass(frozen=True)
class RankedProbe:
    """A probe with each branch's prediction and its score (higher: more decisive)."""

    probe: Probe
    branches: tuple[BranchPrediction, ...]
    score: float

    @property
    def separates(self) -> bool:
        """Whether every pair of branch intervals is disjoint."""
        return len(self.branches) > 1 and self.score > 0


def _interval(x: np.ndarray) -> tuple[float, float, float]:
    q = (1 - COVERAGE) / 2 * 100
    lo, med, hi = np.percentile(x, [q, 50.0, 100 - q])
    return float(lo), float(med), float(hi)


def _score(preds: Sequence[BranchPrediction]) -> float:
    if len(preds) == 1:
        p = preds[0]
        return math.log(p.high_GBps / p.low_GBps)
    best = math.inf
    for i, a in enumerate(preds):
        for b in preds[i + 1 :]:
            lo, hi = (a, b) if a.median_GBps <= b.median_GBps else (b, a)
            best = min(best, math.log(hi.low_GBps / lo.high_GBps))
    return best


def predict_probes(
    branches: Mapping[str, Sequence[SystemSpec]], probes: Sequence[Probe]
) -> tuple[dict[str, np.ndarray], dict[str, list[list[str]]]]:
    """Predicted busbw (GB/s) of every single-row probe under every sample of each branch,
    ``{branch: array[sample, probe]}``, and the tuner's ``algorithm/protocol`` of each,
    ``{branch: [sample][probe]}``."""
    shapes: dict[tuple[CollectiveOp, int, int], list[int]] = {}
    for i, p in enumerate(probes):
        shapes.setdefault((p.op, p.nodes, p.per_node), []).append(i)
    bws: dict[str, np.ndarray] = {}
    algos: dict[str, list[list[str]]] = {}
    for name, systems in branches.items():
        bw = np.zeros((len(systems), len(probes)))
        chosen = [[""] * len(probes) for _ in systems]
        for s, system in enumerate(systems):
            for (op, nodes, per_node), idx in shapes.items():
                got = predict_times(system, op, nodes, per_node, [probes[i].size_B for i in idx])
                for i, (t, a) in zip(idx, got, strict=True):
                    bw[s, i] = busbw_GBps(op, nodes * per_node, probes[i].size_B, t)
                    chosen[s][i] = a
        bws[name], algos[name] = bw, chosen
    return bws, algos


def rank_probes(
    branches: Mapping[str, Sequence[SystemSpec]], probes: Sequence[Probe]
) -> list[RankedProbe]:
    """Every probe with each branch's predicted interval, most decisive first."""
    if not branches or any(not s for s in branches.values()):
        raise ValueError("rank_probes needs at least one branch, each with a sample")
    rows = list(dict.fromkeys([p.base for p in probes] + [r for p in probes if (r := p.reference)]))
    at = {r: i for i, r in enumerate(rows)}
    pred, algos = predict_probes(branches, rows)
    ranked = []
    for p in probes:
        bp = []
        for name in branches:
            col = pred[name][:, at[p.base]]
            ref = p.reference
            if ref is not None:
                col = col / pred[name][:, at[ref]]
            lo, med, hi = _interval(col)
            k = int(np.argmin(np.abs(col - med)))
            bp.append(BranchPrediction(name, lo, med, hi, algos[name][k][at[p.base]]))
        ranked.append(RankedProbe(p, tuple(bp), _score(bp)))
    # scores within 5 % of each other (log gap 0.05) count as a tie: the cheaper probe first
    ranked.sort(key=lambda r: (-round(r.score / SCORE_TIE), r.probe.cost, r.probe.size_B))
    return ranked


def probe_grid(
    ops: Sequence[CollectiveOp], sizes: Sequence[int], max_nodes: int, per_node: int
) -> list[Probe]:
    """Candidate measurements: each op × size on 1, 2, 4, … up to ``max_nodes`` nodes of
    ``per_node`` ranks (1 node only where it holds 2 ranks or more), and the ratio of each pair
    of those node counts."""
    counts, n = [], 1
    while n <= max_nodes:
        counts.append(n)
        n *= 2
    if counts[-1] != max_nodes:
        counts.append(max_nodes)
    counts = [c for c in counts if c * per_node >= 2]
    single = [Probe(op, c, per_node, s) for op in ops for c in counts for s in sizes]
    ratios = [
        Probe(op, hi, per_node, s, lo)
        for op in ops
        for i, lo in enumerate(counts)
        for hi in counts[i + 1 :]
        for s in sizes
    ]
    return single + ratios
