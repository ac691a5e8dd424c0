"""Megatron-LM's pipeline schedules (``megatron/core/pipeline_parallel/schedules.py``)."""

from __future__ import annotations


def stage_order(p: int, v: int, m: int, stage: int) -> list[tuple[str, int, int]]:
    """Megatron-LM's order of (``"F"``/``"B"``, micro-batch, chunk) for one pipeline stage."""
    if v == 1:
        warm = min(p - stage - 1, m)
        out = [("F", i, 0) for i in range(warm)]
        for i in range(m - warm):
            out += [("F", warm + i, 0), ("B", i, 0)]
        return out + [("B", i, 0) for i in range(m - warm, m)]
    total = m * v
    warm = min((p - stage - 1) * 2 + (v - 1) * p, total)
    if m == p:  # Megatron-LM: with m == p every micro-step is a warm-up one
        warm = total

    def at(i: int, forward: bool) -> tuple[str, int, int]:
        chunk = (i % (p * v)) // p
        if not forward:
            chunk = v - 1 - chunk
        return ("F" if forward else "B", (i // (p * v)) * p + i % p, chunk)

    out = [at(i, True) for i in range(warm)]
    for i in range(total - warm):
        out += [at(warm + i, True), at(i, False)]
    return out + [at(i, False) for i in range(total - warm, total)]
