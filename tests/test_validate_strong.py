"""The Megatron-Core strong-scaling rows (reference/megatron_core_h100.csv, Megatron-LM README)
and the ratio study built from them (e2e-megatron-core-h100-strong)."""

from __future__ import annotations

import dataclasses

import pytest

from scaling.app.validate.megatron_core import (
    EXTRA_SHAPES,
    megatron_core_rows,
    strong_scaling_points,
)
from scaling.app.validate.report import Point
from scaling.model.hardware.workload import TransformerShape

#: Megatron-LM README images/model_table.png: (params in B, heads, hidden, layers); vocabulary
#: 131,072 and sequence 4,096 for every row (README text).
MODEL_TABLE = (
    (1.7, 16, 2048, 24), (7.1, 32, 4096, 30), (16, 48, 6144, 32), (32, 56, 7168, 48),
    (70, 64, 8192, 84), (119, 80, 10240, 92), (177, 96, 12288, 96), (314, 128, 16384, 96),
    (462, 144, 18432, 112),
)  # fmt: skip


def _flops_per_token(s: TransformerShape, seq: int) -> float:
    # Megatron core_r0.8.0 megatron/training/training.py num_floating_point_operations, MHA,
    # no SwiGLU, per token: 12·l·h²·((2 + s/h) + ffn/h + V/(2·l·h))
    h, n = s.hidden, s.n_layers
    return 12 * n * h * h * ((2 + seq / h) + s.ffn_hidden / h + s.vocab / (2 * n * h))


def test_untied_shapes_give_the_readme_table_parameter_counts() -> None:
    for params, heads, hidden, layers in MODEL_TABLE:
        tied = TransformerShape("x", layers, hidden, heads, 4 * hidden, 131072, 4096, heads)
        untied = dataclasses.replace(tied, tied_embeddings=False)
        assert untied.params() / 1e9 == pytest.approx(params, rel=0.035), params
        assert tied.params() < untied.params()
    assert EXTRA_SHAPES["megatron-gpt-177b"].params() / 1e9 == pytest.approx(177, rel=0.002)


def test_strong_rows_are_one_series_and_the_published_flop_rates() -> None:
    rows = [r for r in megatron_core_rows() if r["model"] == "megatron-gpt-177b"]
    assert sorted(int(r["gpus"]) for r in rows) == [96, 144, 288, 576, 1152, 2304, 3072, 4608]
    assert len({r["source"] for r in rows}) == 1  # one series
    shape = EXTRA_SHAPES["megatron-gpt-177b"]
    # TFLOP/s per GPU the README gives: MFU 47 % and 42 % of the 989.5 TFLOP/s BF16 peak at the
    # ends (text), 432.8 at 2304 GPUs (table), the others read off images/strong_scaling.png
    published = {96: 0.47 * 989.5, 2304: 432.8, 4608: 0.42 * 989.5, 144: 461.4, 288: 458.7,
                 576: 456.0, 1152: 448.2, 3072: 424.5}  # fmt: skip
    for r in rows:
        g, t, p, c = int(r["gpus"]), int(r["tp"]), int(r["pp"]), int(r["cp"])
        d = g // (t * p * c)
        assert t * p * c * d == g and r["global_batch"] == "1152" and r["role"] == "validation"
        micro_batches = 1152 // (d * int(r["micro_batch"]))
        assert micro_batches * d * int(r["micro_batch"]) == 1152
        assert micro_batches % p == 0  # the interleaved schedule's requirement
        assert shape.n_layers % (p * int(r["vp"])) == 0
        tflops = float(r["tokens_per_s_per_gpu"]) * _flops_per_token(shape, 4096) / 1e12
        assert tflops == pytest.approx(published[g], rel=2e-4), g


def test_strong_scaling_points_are_ratios_to_the_smallest_scale_of_a_series() -> None:
    def row(model: str, gpus: int, gbs: int) -> dict[str, str]:
        return {"model": model, "gpus": str(gpus), "global_batch": str(gbs), "seq_len": "4096",
                "precision": "bf16", "source": "s"}  # fmt: skip

    rows = [row("a", 8, 64), row("a", 32, 64), row("a", 16, 64), row("a", 64, 256), row("b", 8, 64)]
    pts = [Point(f"p{i}", m, x, False) for i, (m, x) in
           enumerate([(100, 110), (80, 99), (90, 90), (70, 70), (50, 50)])]  # fmt: skip
    out = strong_scaling_points(rows, pts)
    # series a/64 at 8, 16, 32 GPUs; a/256 and b have one count each: no ratio
    assert [p.label for p in out] == ["p2 / 8 GPUs", "p1 / 8 GPUs"]
    assert [p.measured for p in out] == pytest.approx([0.9, 0.8])
    assert [p.model for p in out] == pytest.approx([90 / 110, 0.9])
    assert out[1].error == pytest.approx(0.9 / 0.8 - 1)
