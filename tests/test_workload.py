"""Model presets against published parameter counts and the 6N + attention FLOP rule."""

from __future__ import annotations

import pytest

from scaling.model.hardware.moe import MOE_PRESETS
from scaling.model.hardware.workload import PRESETS, get_preset

# Published totals (billions): GPT-3 paper Table 2.1; Megatron-LM SC'21 Table 1 ("1.7B");
# Llama-2 paper / model cards (6.74B, 13.0B, 69.0B); Llama-3 model cards (8.03B, 70.6B).
PUBLISHED_B = {
    "gpt3-125m": 0.125,
    "gpt3-350m": 0.350,
    "gpt3-1.3b": 1.3,
    "gpt3-2.7b": 2.7,
    "gpt3-6.7b": 6.7,
    "gpt3-13b": 13.0,
    "gpt3-175b": 175.0,
    "megatron-1.7b": 1.7,
    "llama2-7b": 6.74,
    "llama2-13b": 13.02,
    "llama2-70b": 68.98,
    "llama3-8b": 8.03,
    "llama3-70b": 70.55,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_B))
def test_param_counts_match_published(name: str) -> None:
    got = get_preset(name).params() / 1e9
    # GPT-3's table rounds to 2 significant digits (1.3B is 1.316B with the 50257 vocab and
    # learned positions; 350M is 356M; 1.7B is 1.65B), so small models get a rounding allowance.
    tol = 0.01 if name.startswith("llama") else 0.04
    assert got == pytest.approx(PUBLISHED_B[name], rel=tol), f"{name}: {got:.4f}B"


def test_every_preset_is_checked() -> None:
    # the MoE presets are checked against their model cards in tests/test_moe_model.py
    assert set(PRESETS) == set(PUBLISHED_B) | set(MOE_PRESETS)


def test_flops_per_token_gpt3_1p3b_is_6n_plus_attention() -> None:
    shape = get_preset("gpt3-1.3b")
    seq = 2048
    # 6 FLOP per parameter per token for every weight matrix that multiplies activations
    # (embeddings excluded, the tied output projection included), plus the attention term
    # 6 · 2 · L · s · h (QK^T and A·V, forward + backward).
    matmul_params = shape.n_layers * 12 * shape.hidden**2 + shape.vocab * shape.hidden
    expected = 6 * matmul_params + 12 * shape.n_layers * seq * shape.hidden
    assert shape.flops_per_token(seq) == pytest.approx(expected, rel=0.02)
    # the SEED note: ≈ 9.0 GFLOP per token at sequence 2048
    assert shape.flops_per_token(seq) / 1e9 == pytest.approx(9.0, rel=0.02)


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"gpt3-1\.3b"):
        get_preset("gpt-5")
