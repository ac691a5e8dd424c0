"""Schedules built once per distinct channel walk (issue 29): the phase of weighted rows is the
phase of the rows repeated, and the vectorised double binary tree is NCCL's rule rank by rank."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.model.comm.algos.base import Phase, phase_of_arrays, phase_of_edges
from scaling.model.comm.algos.trees import dtree_parent_arrays, dtree_parents


def same(a: Phase, b: Phase) -> None:
    for x, y in zip((a.src, a.dst, a.coeff, a.mult), (b.src, b.dst, b.coeff, b.mult), strict=True):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def test_dtree_arrays_are_dtree_parents() -> None:
    for n in range(1, 1100):
        first, second = dtree_parent_arrays(n)
        want = dtree_parents(n)
        assert first.tolist() == want[0] and second.tolist() == want[1], n
        assert first.dtype == second.dtype == np.int64


@pytest.mark.parametrize("seed", range(6))
def test_phase_of_arrays_is_phase_of_edges(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    src, dst = rng.integers(0, 12, n), rng.integers(0, 12, n)
    coeff = rng.choice([0.25, 0.5, 1.0][: 1 + seed % 3], n)
    edges = list(zip(src.tolist(), dst.tolist(), coeff.tolist(), strict=True))
    same(phase_of_arrays(src, dst, coeff), phase_of_edges(edges))


@pytest.mark.parametrize("seed", range(6))
def test_weighted_rows_are_the_rows_repeated(seed: int) -> None:
    rng = np.random.default_rng(seed)
    chunks = []
    for _ in range(int(rng.integers(1, 5))):
        m = int(rng.integers(1, 60))
        chunks.append((rng.integers(0, 9, m), rng.integers(0, 9, m)))
    times = rng.integers(1, 4, len(chunks))
    coeff = 0.125 if seed % 2 else None
    # every chunk `times` times over, the repeats after the first appearance of each
    order = [i for i in range(len(chunks))] + [
        i for i in range(len(chunks)) for _ in range(int(times[i]) - 1)
    ]
    rng.shuffle(order[len(chunks) :])
    full_src = np.concatenate([chunks[i][0] for i in order])
    full_dst = np.concatenate([chunks[i][1] for i in order])

    def c(size: int) -> np.ndarray:
        return np.full(size, coeff) if coeff else rng.choice([1.0, 2.0], size)

    cs = [c(ch[0].size) for ch in chunks]  # a chunk's coefficients ride with its rows
    full_c = np.concatenate([cs[i] for i in order])
    want = phase_of_arrays(full_src, full_dst, full_c)
    got = phase_of_arrays(
        np.concatenate([ch[0] for ch in chunks]),
        np.concatenate([ch[1] for ch in chunks]),
        np.concatenate(cs),
        np.concatenate([np.full(ch[0].size, t) for ch, t in zip(chunks, times, strict=True)]),
    )
    same(got, want)
