"""Monte-Carlo replicas of a run: their seeds and the summary statistics of their metrics.

Replica ``i`` of a run with seed ``s`` runs with :func:`replica_seed` ``(s, i)``: replica 0 is
the run itself (``--replicas 1`` is a plain run), the others draw every random stream — rank
jitter, slow ranks and degraded NICs, host noise, the failure process — afresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: spawn key of the replica seeds (beside ``model.variability``'s streams)
REPLICA_STREAM = (1 << 30) + 16


def replica_seed(seed: int, replica: int) -> int:
    """The seed of replica ``replica`` of a run seeded ``seed`` (replica 0: ``seed`` itself)."""
    if replica == 0:
        return seed
    ss = np.random.SeedSequence(seed, spawn_key=(REPLICA_STREAM, replica))
    return int(ss.generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True, slots=True)
class Summary:
    """Replicas of one metric.

    Attributes:
        n: replicas.
        median: their median.
        median_lo, median_hi: distribution-free confidence interval of the median (order
            statistics whose ranks bracket n/2 with binomial probability ≥ ``level``); the
            extreme replicas when n is too small for the level.
        p_lo, p_hi: the central ``level`` share of the replicas (2.5th and 97.5th percentiles
            at level 0.95): where one run falls.
    """

    n: int
    median: float
    median_lo: float
    median_hi: float
    p_lo: float
    p_hi: float


def summarize(values: list[float] | np.ndarray, level: float = 0.95) -> Summary:
    """Median, its confidence interval and the central ``level`` range of ``values``."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        nan = math.nan
        return Summary(0, nan, nan, nan, nan, nan)
    # [x_(j), x_(n−j+1)] (1-based) covers the median with probability 1 − 2·P(B ≤ j − 1),
    # B ~ binomial(n, 1/2): the largest j that keeps that ≥ level (1 when none does)
    j = 1
    while j < n // 2 and stats.binom.cdf(j, n, 0.5) <= (1 - level) / 2:
        j += 1
    tail = (1 - level) / 2 * 100
    return Summary(
        n,
        float(np.median(x)),
        float(x[j - 1]),
        float(x[n - j]),
        float(np.percentile(x, tail)),
        float(np.percentile(x, 100 - tail)),
    )
