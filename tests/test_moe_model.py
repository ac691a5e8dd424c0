"""MoE shapes: presets against their config.json values and published totals, the tensors
Megatron-Core registers, active-parameter FLOPs, the model mapping and its bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scaling.io.config import experiment_from_dict, load_experiment
from scaling.io.errors import ConfigError
from scaling.model.hardware.moe import (
    GROUPED_GEMM_PAD_ROWS,
    MOE_PRESETS,
    MoEShape,
    grouped_gemm_efficiency,
    grouped_gemm_rows,
)
from scaling.model.hardware.workload import get_preset

REF = Path(__file__).resolve().parents[1] / "scaling" / "data" / "reference" / "moe_models.csv"
ROWS = {r["preset"]: r for r in csv.DictReader(REF.open())}


def test_every_moe_preset_has_a_reference_row() -> None:
    assert set(ROWS) == set(MOE_PRESETS)


@pytest.mark.parametrize("name", sorted(MOE_PRESETS))
def test_preset_matches_config_json(name: str) -> None:
    s, r = get_preset(name), ROWS[name]
    assert isinstance(s, MoEShape)
    got = (s.n_layers, s.hidden, s.n_heads, s.kv_heads, s.vocab, s.ffn_hidden)
    want = tuple(int(r[k]) for k in ("layers", "hidden", "heads", "kv_heads", "vocab", "dense_ffn"))
    assert got == want
    m = s.moe
    assert (m.experts, m.top_k, m.expert_ffn, m.shared_experts, m.dense_layers) == tuple(
        int(r[k])
        for k in ("routed_experts", "top_k", "expert_ffn", "shared_experts", "dense_first_layers")
    )
    assert m.router.value == r["router"]


@pytest.mark.parametrize("name", sorted(MOE_PRESETS))
def test_total_params_match_published(name: str) -> None:
    got = get_preset(name).params() / 1e9
    assert got == pytest.approx(float(ROWS[name]["published_total_B"]), rel=0.01), got


@pytest.mark.parametrize("name", sorted(MOE_PRESETS))
def test_active_params_match_published(name: str) -> None:
    s = get_preset(name)
    assert isinstance(s, MoEShape)
    got = s.active_params() / 1e9
    if name.startswith("deepseek"):
        # DeepSeek's cards count the activated parameters without the input embedding (a
        # lookup): V2-Lite 2.66B with it, 2.45B without, card 2.4B; V3 37.55B / 36.6B, card 37B
        got -= s.embedding_params() / 1e9
    assert got == pytest.approx(float(ROWS[name]["published_active_B"]), rel=0.03), got


def test_deepseek_v3_exact_counts() -> None:
    # hand count from config.json: 61 MLA blocks of 187,107,328; 3 dense MLPs of 3·7168·18432;
    # 58 MoE MLPs of 257 experts of 3·7168·2048 + the 256 × 7168 router; 2 norms per block;
    # untied embedding and head of 129280 × 7168; the final norm
    s = get_preset("deepseek-v3")
    mla = 7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256
    mla += 128 * 128 * 7168
    assert mla == 187_107_328
    expert = 3 * 7168 * 2048
    total = 61 * (mla + 2 * 7168) + 3 * 3 * 7168 * 18432 + 58 * (257 * expert + 256 * 7168)
    total += 2 * 129280 * 7168 + 7168
    assert s.params() == total == sum(n for _, n in s.param_tensors())
    active = total - 58 * (256 - 8) * expert
    assert s.active_params() == active


def test_tensors_as_megatron_core_registers_them() -> None:
    s = get_preset("mixtral-8x7b")
    names = [n for n, _ in s.param_tensors()]
    block = [n.removeprefix("h0.") for n in names if n.startswith("h0.")]
    assert block[:5] == ["ln1.weight", "attn.qkv.weight", "attn.proj.weight", "ln2.weight",
                         "mlp.router.weight"]  # fmt: skip
    assert block[5:7] == ["mlp.experts.0.fc_in.weight", "mlp.experts.0.fc_out.weight"]
    assert len(block) == 5 + 2 * 8
    ds = get_preset("deepseek-v3")
    d0 = {n.removeprefix("h0.") for n, _ in ds.param_tensors() if n.startswith("h0.")}
    d3 = {n.removeprefix("h3.") for n, _ in ds.param_tensors() if n.startswith("h3.")}
    assert "mlp.fc_in.weight" in d0 and "mlp.router.weight" not in d0  # dense first block
    assert {"mlp.router.weight", "mlp.shared_experts.fc_in.weight", "attn.q_down.weight",
            "attn.kv_up.weight"} <= d3  # fmt: skip


def test_flops_count_active_parameters() -> None:
    # Mixtral (no MLA, no dense layers, head_dim = h/heads): 6 × the active matmul weights
    # (all but the embedding lookup) + 12·L·s·h for the attention core (Megatron's convention)
    s = get_preset("mixtral-8x7b")
    assert isinstance(s, MoEShape)
    seq = 4096
    norms = s.n_layers * 2 * s.hidden + s.hidden
    matmul = s.active_params() - s.embedding_params() - norms
    want = 6 * matmul + 12 * s.n_layers * seq * s.hidden
    assert s.flops_per_token(seq) == pytest.approx(want, rel=1e-12)
    # top-k = experts would count every expert
    assert s.flops_per_token(seq) < 6 * (s.params() - s.embedding_params()) + 12 * 32 * seq * 4096


def test_grouped_gemm_rows_and_efficiency() -> None:
    assert grouped_gemm_rows(0) == 0
    assert grouped_gemm_rows(100.2) == 101 + GROUPED_GEMM_PAD_ROWS
    effs = [grouped_gemm_efficiency(m, 7168, 4096, 8, 0.8, 132) for m in (16, 128, 1024, 8192)]
    assert effs == sorted(effs) and all(0 < e < 0.8 for e in effs)  # more tokens, better
    assert grouped_gemm_efficiency(0, 7168, 4096, 8, 0.8, 132) == 0.0


# ---- the model mapping ------------------------------------------------------------------------

MAPPING = {
    "name": "tiny-moe",
    "vocab": 32000,
    "hidden": 1024,
    "layers": 4,
    "heads": 16,
    "ffn": 4096,
    "gated_mlp": True,
    "bias": False,
    "tied_embeddings": False,
    "norm": "rmsnorm",
    "moe": {"experts": 16, "top_k": 2, "expert_ffn": 512, "shared_experts": 1, "dense_layers": 1},
}


def _cfg(model: dict) -> dict:
    return {
        "model": model,
        "systems": ["dgx-h100"],
        "nodes": [1],
        "strategy": {"kind": "megatron"},
        "simulation": {"steps": 1, "warmup_steps": 0},
    }


def test_mapping_builds_a_moe_shape() -> None:
    shape = experiment_from_dict(_cfg(MAPPING)).jobs()[0].shape
    assert isinstance(shape, MoEShape)
    assert shape.moe.experts == 16 and shape.moe.shared_width == 512
    assert not shape.is_moe_layer(0) and shape.is_moe_layer(1)
    mla = {**MAPPING, "mla": {"kv_lora_rank": 256, "qk_nope_dim": 64, "qk_rope_dim": 32,
                              "v_dim": 64}}  # fmt: skip
    s2 = experiment_from_dict(_cfg(mla)).jobs()[0].shape
    assert isinstance(s2, MoEShape) and s2.mla is not None and s2.params() != shape.params()


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"moe": {"experts": 4, "top_k": 5, "expert_ffn": 64}}, "model.moe: expected top_k (5) at most experts (4)"),
        ({"moe": {"experts": 4, "top_k": 1, "expert_ffn": 64, "dense_layers": 4}}, "model: expected moe.dense_layers (4) fewer than layers (4)"),
        ({"moe": None, "mla": {"kv_lora_rank": 8, "qk_nope_dim": 8, "qk_rope_dim": 8, "v_dim": 8}}, "model.mla: given without model.moe"),
        ({"moe": {"experts": 0, "top_k": 1, "expert_ffn": 64}}, "experts"),
    ],
)  # fmt: skip
def test_bad_moe_mapping_is_one_line(patch: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        experiment_from_dict(_cfg({**MAPPING, **patch}), where="m.yaml")
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg.strip(), msg


def test_dense_strategies_refuse_a_moe_model() -> None:
    cfg = {**_cfg(MAPPING), "strategy": {"kind": "fsdp"}}
    with pytest.raises(ConfigError, match="expected strategy kind megatron"):
        experiment_from_dict(cfg, where="m.yaml")


def test_bad_moe_file_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "model:\n  name: x\n  vocab: 1000\n  hidden: 64\n  layers: 2\n  heads: 4\n"
        "  moe:\n    experts: 4\n    top_k: 5\n    expert_ffn: 64\n"
        "systems: [dgx-h100]\nnodes: [1]\nstrategy: {kind: megatron}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_experiment(f)
    assert str(info.value) == f"{f}:7: model.moe: expected top_k (5) at most experts (4)"
