"""The quasi-random designs of the uncertainty and sensitivity loops, without importing
``scipy.stats`` (about 1.1 s CPU of start-up per command, issue 29).

The draws are those of :class:`scipy.stats.qmc.Sobol` (``scramble=True``, 30 bits,
:meth:`~scipy.stats.qmc.Sobol.random_base2`) and :class:`scipy.stats.qmc.LatinHypercube`
(``scramble=True``, strength 1) seeded with an integer — the same floats from the same
``numpy.random.default_rng(seed)`` stream, which ``tests/test_uncertainty.py`` checks against
SciPy — so a design, and every result drawn from it, is unchanged.

Sobol' points: the direction numbers of Joe and Kuo (2008, ``new-joe-kuo-6.21201``; the file
SciPy ships), the recurrence of Bratley and Fox (1988, Algorithm 659), a left linear matrix
scramble and a digital shift (Matoušek 1998; Owen 2003), points in Gray-code order (Antonov
and Saleev 1979). Where SciPy's data file is not found, SciPy itself draws the design.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

#: bits of a Sobol' point (SciPy's default): points are integers / 2**BITS
BITS = 30
#: SciPy's direction numbers, relative to its package folder
_DIRECTIONS = Path("stats") / "_sobol_direction_numbers.npz"


def _direction_file() -> Path | None:
    spec = importlib.util.find_spec("scipy")  # locates the package without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / _DIRECTIONS
        if path.is_file():
            return path
    return None


def _directions(path: Path, d: int) -> np.ndarray:
    """The (d, BITS) direction integers, column j already shifted by ``BITS - 1 - j``."""
    with np.load(path) as z:
        poly = [int(p) for p in z["poly"][:d]]
        vinit = z["vinit"][:d].astype(np.int64)
    v = np.zeros((d, BITS), dtype=np.int64)
    v[0, :] = 1  # the first coordinate: the van der Corput sequence
    for k in range(1, d):
        p = poly[k]
        deg = p.bit_length() - 1  # degree of the primitive polynomial
        row = [int(x) for x in vinit[k, :deg]]
        for j in range(deg, BITS):
            x = row[j - deg]
            for i in range(deg):
                if (p >> (deg - 1 - i)) & 1:
                    x ^= row[j - i - 1] << (i + 1)
            row.append(x)
        v[k, :] = row[:BITS]
    return v << (BITS - 1 - np.arange(BITS, dtype=np.int64))


def _scrambled(v: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The digital shift and the left-matrix-scrambled directions (the draws in SciPy's
    order: the shift's bits, then the lower-triangular matrices)."""
    d = v.shape[0]
    shift_bits = rng.integers(2, size=(d, BITS), dtype=np.uint32).astype(np.int64)
    shift = shift_bits @ (np.int64(1) << np.arange(BITS, dtype=np.int64))
    ltm = np.tril(rng.integers(2, size=(d, BITS, BITS), dtype=np.uint32)).astype(np.int64)
    idx = np.arange(BITS)
    ltm[:, idx, idx] = 1
    msb_first = (BITS - 1 - idx).astype(np.int64)
    weights = np.int64(1) << msb_first
    out = np.empty_like(v)
    for k in range(d):
        bits = (v[k][None, :] >> msb_first[:, None]) & 1  # (bit, column), most significant first
        out[k] = ((ltm[k] @ bits) % 2).T @ weights
    return shift, out


def sobol(m: int, d: int, seed: int) -> np.ndarray:
    """``2**m`` scrambled Sobol' points in [0, 1)^d from ``seed``: SciPy's
    ``qmc.Sobol(d, scramble=True, seed=seed).random_base2(m)``."""
    path = _direction_file()
    if path is None:
        from scipy.stats import qmc

        return np.asarray(qmc.Sobol(d, scramble=True, seed=seed).random_base2(m))
    rng = np.random.default_rng(seed)
    shift, sv = _scrambled(_directions(path, d), rng)
    n = 2**m
    quasi = shift.copy()
    points = np.empty((n, d), dtype=np.int64)
    points[0] = quasi
    for i in range(n - 1):
        # Gray-code order: point i + 1 flips the direction of i's lowest zero bit
        quasi ^= sv[:, (~i & (i + 1)).bit_length() - 1]
        points[i + 1] = quasi
    return points.astype(np.float64) * (1.0 / 2**BITS)


def latin_hypercube(n: int, d: int, seed: int) -> np.ndarray:
    """``n`` points of a scrambled Latin hypercube in [0, 1)^d from ``seed``: SciPy's
    ``qmc.LatinHypercube(d, seed=seed).random(n)``."""
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(size=(n, d))
    perms = np.tile(np.arange(1, n + 1), (d, 1))
    for i in range(d):
        rng.shuffle(perms[i, :])
    return np.asarray((perms.T - jitter) / n)
