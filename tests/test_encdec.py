"""Encoder-decoder models (T5): tensors as HF ``T5ForConditionalGeneration`` registers them,
FLOPs by closed form, the model mapping, and DDP/FSDP running on them (Megatron refusing)."""

from __future__ import annotations

import pytest
import yaml

from scaling.io.config import ConfigError, experiment_from_dict, load_experiment
from scaling.io.topology import load_system
from scaling.model.hardware.compute import ComputeModel, micro_batch_compute
from scaling.model.hardware.encdec import EncDecShape
from scaling.model.hardware.memory import activation_bytes
from scaling.model.hardware.workload import Checkpointing, get_preset
from scaling.model.simulation import run_job
from scaling.model.strategies.ddp import param_tensors_with_stage
from scaling.model.strategies.fsdp import unit_padded_elements, unit_params


def _t5(name: str = "t5-11b") -> EncDecShape:
    shape = get_preset(name)
    assert isinstance(shape, EncDecShape)
    return shape


def test_registration_order_is_hf_t5() -> None:
    # transformers/models/t5/modeling_t5.py: shared, encoder.block.*, encoder.final_layer_norm,
    # decoder.block.*, decoder.final_layer_norm, (lm_head); in a block SelfAttention q,k,v,o,
    # relative_attention_bias (block 0 only), layer_norm, [EncDecAttention ...], DenseReluDense
    names = [n for n, _ in _t5().param_tensors()]
    assert names[:7] == [
        "shared.weight",
        "encoder.block.0.layer.0.SelfAttention.q.weight",
        "encoder.block.0.layer.0.SelfAttention.k.weight",
        "encoder.block.0.layer.0.SelfAttention.v.weight",
        "encoder.block.0.layer.0.SelfAttention.o.weight",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "encoder.block.0.layer.0.layer_norm.weight",
    ]
    dec1 = [n for n in names if n.startswith("decoder.block.1.")]
    assert dec1 == [
        *(f"decoder.block.1.layer.0.SelfAttention.{p}.weight" for p in "qkvo"),
        "decoder.block.1.layer.0.layer_norm.weight",
        *(f"decoder.block.1.layer.1.EncDecAttention.{p}.weight" for p in "qkvo"),
        "decoder.block.1.layer.1.layer_norm.weight",
        "decoder.block.1.layer.2.DenseReluDense.wi.weight",
        "decoder.block.1.layer.2.DenseReluDense.wo.weight",
        "decoder.block.1.layer.2.layer_norm.weight",
    ]
    assert sum("relative_attention_bias" in n for n in names) == 2  # one per stack
    assert names.index("encoder.final_layer_norm.weight") < names.index(
        "decoder.block.0.layer.0.SelfAttention.q.weight"
    )
    assert names[-1] == "decoder.final_layer_norm.weight"  # tied: no lm_head
    assert _t5("t5-v1.1-xxl").param_tensors()[-1][0] == "lm_head.weight"
    assert "wi_1" in _t5("t5-v1.1-xxl").block_tensors(0)[-3][0]


def test_shapes_sum_to_params_and_dims() -> None:
    s = _t5()
    assert sum(n for _, n in s.param_tensors()) == s.params() == 11_307_321_344
    dims = dict(s.param_shapes())
    assert dims["encoder.block.0.layer.0.SelfAttention.q.weight"] == (16384, 1024)
    assert dims["encoder.block.0.layer.0.SelfAttention.o.weight"] == (1024, 16384)
    assert dims["encoder.block.0.layer.1.DenseReluDense.wi.weight"] == (65536, 1024)
    assert dims["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] == (32, 128)
    assert dims["shared.weight"] == (32128, 1024)


def test_flops_per_token_closed_form() -> None:
    # 2 FLOP per weight per token that multiplies it, ×3 for training: encoder weights over the
    # s_e input tokens, decoder weights over the s_d target tokens except the cross-attention's
    # k and v, which project the s_e encoder outputs; plus the score and A·V matmuls.
    s = _t5("t5-3b")
    se, sd, h, a, f, L = 512, s.target_len, 1024, 32 * 128, 16384, 24
    attn_w, ff_w = 4 * h * a, 2 * h * f
    per_seq = 2 * (L * se * (attn_w + ff_w) + L * sd * (attn_w + ff_w + 2 * h * a))
    per_seq += 2 * L * se * 2 * h * a  # cross-attention k, v over the encoder tokens
    per_seq += 4 * a * (L * se * se + L * sd * sd + L * sd * se)
    per_seq += 2 * sd * h * 32128
    assert s.flops_per_token(se) == pytest.approx(3 * per_seq / se, rel=1e-12)


def test_blocks_differ_in_compute_and_fsdp_units() -> None:
    s = _t5()
    cm = ComputeModel(load_system("dgx-a100").spec.device, "bf16")
    mb = micro_batch_compute(cm, s, 8, 512, Checkpointing.FULL, False)
    assert len(mb.blocks) == s.n_layers == 48
    enc, dec = mb.block(0), mb.block(47)
    assert enc == mb.block(23) and dec == mb.block(24) and enc != dec
    # the model FLOPs are those of the counted kernels (forward + backward, no recompute)
    nr = micro_batch_compute(cm, s, 8, 512, Checkpointing.NONE, False)
    fwd, bwd = nr.all_blocks(s.n_layers)
    counted = fwd.flops + bwd.flops + nr.head_fwd.flops + nr.head_bwd.flops
    matmul_only = nr.model_flops
    assert counted > matmul_only > 0.95 * counted  # norms, softmax, activations on top
    units = unit_params(s)
    assert units[0] == s.embedding_params() + s.head_params()
    # 4·h·a + 2·h·f + norms, + the relative bias (32 × 128) in each stack's first block
    assert units[1] == 4 * 1024 * 16384 + 2 * 1024 * 65536 + 2 * 1024 + 32 * 128
    assert units[2] == units[1] - 32 * 128
    assert units[-1] == 8 * 1024 * 16384 + 2 * 1024 * 65536 + 3 * 1024
    assert units[25] == units[-1] + 32 * 128
    assert sum(units) == s.params()
    fsdp2 = unit_padded_elements(s, 512, "fsdp2")
    assert len(fsdp2) == 49 and all(p >= u for p, u in zip(fsdp2, units, strict=True))


def test_ddp_stages() -> None:
    s = _t5("t5-3b")
    stage = {n: st for n, _, st in param_tensors_with_stage(s)}
    assert stage["shared.weight"] == 48
    assert stage["decoder.final_layer_norm.weight"] == 0
    assert stage["decoder.block.23.layer.0.SelfAttention.q.weight"] == 1
    assert stage["encoder.final_layer_norm.weight"] == 24  # after every decoder block
    assert stage["encoder.block.23.layer.0.SelfAttention.q.weight"] == 25


def test_activation_memory_checkpointing_orders() -> None:
    s = _t5()
    full, none = (
        activation_bytes(s, 8, 512, c, False) for c in (Checkpointing.FULL, Checkpointing.NONE)
    )
    assert 0 < full < none
    assert activation_bytes(s, 16, 512, Checkpointing.NONE, False) == pytest.approx(2 * none)


def _cfg(model: object, strategy: dict[str, object], nodes: int = 1) -> dict[str, object]:
    return {
        "model": model,
        "systems": ["dgx-a100"],
        "nodes": [nodes],
        "strategy": strategy,
        "training": {
            "seq_len": 512,
            "micro_batch_size": 4,
            "activation_checkpointing": "full",
            "flash_attention": False,
        },
        "simulation": {"steps": 1, "warmup_steps": 2},
    }


T5_3B_MAPPING = {
    "kind": "encoder_decoder",
    "name": "t5-3b",
    "vocab": 32128,
    "hidden": 1024,
    "layers": 24,
    "heads": 32,
    "head_dim": 128,
    "ffn": 16384,
    "target_len": 114,
}


def test_mapping_equals_preset() -> None:
    job = experiment_from_dict(_cfg(T5_3B_MAPPING, {"kind": "ddp"})).jobs()[0]
    assert job.shape == get_preset("t5-3b")


@pytest.mark.parametrize("strategy", [{"kind": "ddp"}, {"kind": "fsdp", "reduce_dtype": "bf16"}])
def test_ddp_and_fsdp_run_t5(strategy: dict[str, object]) -> None:
    job = experiment_from_dict(_cfg("t5-3b", strategy)).jobs()[0]
    res = run_job(job)
    assert res.step_time_s > 0
    mb_flops = job.shape.flops_per_token(512) * 4 * 512
    assert res.mfu == pytest.approx(mb_flops / res.step_time_s / 312e12, rel=0.02)


def test_megatron_refuses_encoder_decoder() -> None:
    with pytest.raises(ConfigError) as err:
        experiment_from_dict(_cfg("t5-3b", {"kind": "megatron"}))
    msg = str(err.value)
    assert "\n" not in msg and "encoder-decoder" in msg and "ddp or fsdp" in msg


def test_bad_mapping_is_one_line(tmp_path) -> None:
    bad = dict(T5_3B_MAPPING)
    del bad["target_len"]
    path = tmp_path / "t5.yaml"
    path.write_text(yaml.safe_dump(_cfg(bad, {"kind": "fsdp"}), sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert "\n" not in msg and f"{path}:" in msg and "model.target_len" in msg
