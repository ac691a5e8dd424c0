"""Compute model: shape-dependent GEMM efficiency, roofline, and end-to-end A100 checks.

Reference figures (reference/training_scaling.csv unless noted):
* MAMF, A100 SXM BF16: 271.2 TFLOP/s at the best shape 1024x10240x5120 (MxNxK, so k = 5120).
* Megatron-LM SC'21 Table 1: GPT 1.7B, 32 A100 (4 DGX nodes), pure data parallel, global batch
  512, 137 TFLOP/s per GPU. The run (NVIDIA/Megatron-LM examples/sc21/run_table_1.sh + CONFIG.sh):
  micro-batch 16 (so one micro-batch per step on each of the 32 GPUs), ``--DDP-impl torch``
  (overlapping PyTorch DDP), ``--recompute-method uniform`` (full activation checkpointing),
  ``--fp16``, sequence 2048, 2021 software (no FlashAttention: unfused attention with its
  default 0.1 attention dropout). Their TFLOP/s counts eq. (3), F = 96·B·s·l·h²·(1 + s/6h +
  V/16lh) per iteration, which *includes* the recomputed forward; so the comparison below divides
  that same F by the simulated step time, rather than comparing MFU (which excludes recompute).
  Not a calibration target of the compute model: an independent check.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling.app.api import simulate
from scaling.io.topology import load_system
from scaling.model.hardware.breakdown import compute_breakdown
from scaling.model.hardware.compute import (
    CE_BWD_BYTES_FP32,
    CE_FWD_BYTES_FP32,
    DTYPE_BYTES,
    FLASH_BWD_OVER_FWD,
    ComputeModel,
    GemmShape,
    Op,
    block_forward_ops,
    causal_fraction,
    flash_attention_efficiency,
    head_forward_ops,
    matmul_efficiency,
    micro_batch_compute,
)
from scaling.model.hardware.workload import Checkpointing, get_preset

A100 = load_system("dgx-a100").spec.device
MAMF_TFLOPS = 271.2
MEGATRON_TFLOPS = 137.0


def _gemm_op(m: int, k: int, n: int, e: int = 2) -> Op:
    g = GemmShape(m, k, n)
    return Op("gemm", 2.0 * m * k * n, float(e * (m * k + k * n + m * n)), True, gemm=g)


# ---- (a) the MAMF best shape ------------------------------------------------------------------


def test_best_shape_reaches_measured_mamf() -> None:
    m, n, k = 1024, 10240, 5120  # MAMF table "Best Shape MxNxK"
    eff = matmul_efficiency(m, k, n, A100.matmul_efficiency, units=A100.compute_units)
    tflops = eff * A100.peak("bf16") / 1e12
    # An isolated kernel, as the benchmark times it (CUDA events around the kernel: no launch
    # gap), at the burst clock.
    cm = ComputeModel(A100, "bf16", sustained=False)
    op = _gemm_op(m, k, n)
    kernel_tflops = op.flops / (cm.op_time(op) - A100.kernel_launch_s) / 1e12
    print(f"\nMAMF best shape: model {tflops:.1f} TFLOP/s vs measured {MAMF_TFLOPS}")
    assert tflops == pytest.approx(MAMF_TFLOPS, rel=0.02)
    assert kernel_tflops == pytest.approx(tflops, rel=1e-12)
    # the training loop runs the same kernel at the sustained fraction of that rate
    sustained = ComputeModel(A100, "bf16")
    t_sus = sustained.op_time(op) - A100.kernel_launch_s
    assert op.flops / t_sus / 1e12 == pytest.approx(
        A100.sustained_matmul_fraction * tflops, rel=1e-12
    )


# ---- (b) efficiency bounded by the best shape and monotone ------------------------------------

_dim = st.integers(min_value=1, max_value=1 << 17)
_step = st.integers(min_value=0, max_value=1 << 15)
_best = st.floats(min_value=0.05, max_value=1.0)
_units = st.integers(min_value=1, max_value=512)


@settings(max_examples=300, deadline=None)
@given(m=_dim, k=_dim, n=_dim, dm=_step, dk=_step, dn=_step, best=_best, units=_units)
def test_efficiency_bounded_and_monotone(
    m: int, k: int, n: int, dm: int, dk: int, dn: int, best: float, units: int
) -> None:
    e = matmul_efficiency(m, k, n, best, units=units)
    assert 0.0 < e <= best
    assert matmul_efficiency(m + dm, k, n, best, units=units) >= e
    assert matmul_efficiency(m, k + dk, n, best, units=units) >= e
    assert matmul_efficiency(m, k, n + dn, best, units=units) >= e
    assert matmul_efficiency(m, k, n, best, batch=2, units=units) >= e
    # more compute units to fill never make the same GEMM more efficient
    assert matmul_efficiency(m, k, n, best, units=units + 1) <= e


def test_efficiency_rejects_empty_gemm() -> None:
    with pytest.raises(ValueError, match="positive"):
        matmul_efficiency(0, 128, 128, 0.8, units=108)


def test_small_gemms_lose_efficiency() -> None:
    best, units = A100.matmul_efficiency, A100.compute_units
    big = matmul_efficiency(8192, 8192, 8192, best, units=units)
    assert big == pytest.approx(best, rel=0.01)
    # a GEMM with one tile per SM and a short reduction runs far below the best shape
    assert matmul_efficiency(128 * 12, 64, 128 * 9, best, units=units) < 0.5 * best


def test_wave_model_uses_each_devices_own_unit_count() -> None:
    h100 = load_system("dgx-h100").spec.device
    assert (A100.compute_units, h100.compute_units) == (108, 132)  # SMs, vendor spec
    g = _gemm_op(128 * 12, 4096, 128 * 9)  # 108 output tiles: one wave on an A100
    # closed form: eff = best · (1 − e^(−tiles/units)) · k/(k + 64) for each device's own units
    for dev in (A100, h100):
        cm = ComputeModel(dev, "bf16", sustained=False)
        want = dev.matmul_efficiency * -math.expm1(-108 / dev.compute_units) * 4096 / (4096 + 64)
        assert cm.efficiency(g) == pytest.approx(want, rel=1e-12)
    # the same device with more units to fill runs this GEMM at a lower fraction
    more = dataclasses.replace(A100, compute_units=132)
    a, b = ComputeModel(A100, "bf16"), ComputeModel(more, "bf16")
    assert b.efficiency(g) < a.efficiency(g)


def test_flash_attention_efficiency_and_causal_work() -> None:
    fwd = flash_attention_efficiency(A100.attention_efficiency, backward=False)
    bwd = flash_attention_efficiency(A100.attention_efficiency, backward=True)
    assert fwd == A100.attention_efficiency
    assert bwd == pytest.approx(FLASH_BWD_OVER_FWD * fwd, rel=1e-12)
    assert pytest.approx(0.42 / 0.50) == FLASH_BWD_OVER_FWD
    assert bwd < fwd < A100.matmul_efficiency
    # 16 key blocks of 128 at s = 2048: 136 of 256 blocks computed
    assert causal_fraction(2048) == pytest.approx(136 / 256)
    assert causal_fraction(64) == 1.0


# ---- (c) roofline ----------------------------------------------------------------------------


def test_memory_bound_ops_take_bytes_over_bandwidth_exactly() -> None:
    cm = ComputeModel(A100, "bf16")
    rate = A100.mem_bw_Bps * A100.mem_bw_efficiency
    elementwise = Op("act", 8.0e9, 1.2e9, False)
    assert cm.op_time(elementwise) == elementwise.bytes / rate + A100.kernel_launch_s
    # a GEMM with a 16-deep reduction is memory-bound: the bytes term sets its time
    thin = _gemm_op(8192, 16, 8192)
    compute_t = thin.flops / (A100.peak("bf16") * cm.efficiency(thin))
    assert compute_t < thin.bytes / rate
    assert cm.op_time(thin) == thin.bytes / rate + A100.kernel_launch_s


def test_backward_gemms_keep_twice_the_forward_work() -> None:
    cm = ComputeModel(A100, "bf16")
    shape = get_preset("gpt3-1.3b")
    for flash in (True, False):
        ops = block_forward_ops(shape, 2, 2048, DTYPE_BYTES["bf16"], flash)
        fwd, bwd = cm.cost(ops), cm.cost(ops, backward=True)
        assert bwd.flops == pytest.approx(2.0 * fwd.flops)
        assert bwd.time_s > fwd.time_s


# ---- (d) Megatron-LM SC'21 Table 1, GPT 1.7B on 32 A100 -------------------------------------


def test_megatron_1p7b_data_parallel_within_15_percent() -> None:
    shape = get_preset("megatron-1.7b")
    seq, mbs = 2048, 16
    res = simulate(
        {
            "model": "megatron-1.7b",
            "systems": ["dgx-a100"],
            "nodes": [4],
            "strategy": {"kind": "ddp", "overlap": True},
            "training": {
                "seq_len": seq,
                "micro_batch_size": mbs,
                "grad_accum_steps": 1,
                "dtype": "fp16",
                "activation_checkpointing": "full",
                "flash_attention": False,
            },
            "simulation": {"steps": 1, "warmup_steps": 2},
        }
    )
    assert res.devices == 32 and res.global_batch == 512
    b, nl, h, v = res.global_batch, shape.n_layers, shape.hidden, shape.vocab
    # Narayanan et al. SC'21 eq. (3): model FLOPs per iteration including the recomputed forward
    flops_per_iter = 96 * b * seq * nl * h**2 * (1 + seq / (6 * h) + v / (16 * nl * h))
    tflops = flops_per_iter / res.step_time_s / res.devices / 1e12
    err = tflops / MEGATRON_TFLOPS - 1.0
    print(
        f"\nMegatron GPT 1.7B, 32 A100, DP: {tflops:.1f} TFLOP/s per GPU (eq. 3, with recompute) "
        f"vs published {MEGATRON_TFLOPS:.0f}: error {err:+.1%}; MFU (no recompute) {res.mfu:.1%}"
    )
    assert abs(err) <= 0.15


# ---- (e) GPT-3 1.3B DDP on one node ----------------------------------------------------------


def _gpt3_1p3b_one_node(system: str):
    return simulate(
        {
            "model": "gpt3-1.3b",
            "systems": [system],
            "nodes": [1],
            "training": {"seq_len": 2048, "micro_batch_size": 4, "dtype": "bf16"},
            "simulation": {"steps": 1},
        }
    )


def test_gpt3_1p3b_a100_mfu_plausible() -> None:
    a100 = _gpt3_1p3b_one_node("dgx-a100")
    mlu = _gpt3_1p3b_one_node("mlu370-x8")
    print(
        f"\nGPT-3 1.3B DDP, 1 node, micro-batch 4: MFU dgx-a100 {a100.mfu:.1%}, mlu370-x8 {mlu.mfu:.1%}"
    )
    assert 0.35 <= a100.mfu <= 0.60
    assert mlu.mfu < a100.mfu


# ---- the calibration target (a regression check, not a validation) ---------------------------


def test_sustained_fraction_reproduces_its_calibration_target() -> None:
    # FlashAttention-2 paper Table 1: GPT3-1.3B, 2k, 8x A100-80GB, 196 TFLOP/s per GPU with
    # 6·s·N + 12·L·h·s² FLOPs per sequence; config gpt3xl-flash.yaml: micro-batch 8, global 512.
    shape = get_preset("gpt3-1.3b")
    seq = 2048
    res = simulate(
        {
            "model": "gpt3-1.3b",
            "systems": ["dgx-a100"],
            "nodes": [1],
            "strategy": {"kind": "ddp", "gradient_as_bucket_view": True},
            "training": {"seq_len": seq, "micro_batch_size": 8, "grad_accum_steps": 8},
            "simulation": {"steps": 1},
        }
    )
    per_seq = 6 * seq * shape.params() + 12 * shape.n_layers * shape.hidden * seq**2
    tflops = per_seq * res.global_batch / res.step_time_s / res.devices / 1e12
    print(
        f"\nFlashAttention-2 GPT3-1.3B run: model {tflops:.1f} TFLOP/s per GPU vs 196 (calibrated)"
    )
    assert tflops == pytest.approx(196.0, rel=0.03)


# ---- non-GEMM ops and the host ---------------------------------------------------------------


def test_cross_entropy_bytes_are_the_unfused_pytorch_kernels() -> None:
    shape = get_preset("gpt3-125m")
    mb, seq, e = 4, 2048, 2
    (ce,) = [op for op in head_forward_ops(shape, mb, seq, e) if op.name == "cross_entropy"]
    tv = mb * seq * shape.vocab
    # forward: cast to fp32 (e + 4) and log_softmax (4 + 4): 14 bytes per logit
    assert ce.bytes == tv * (e + CE_FWD_BYTES_FP32) == tv * 14
    # backward: NLL grad (4), log_softmax grad (12), cast back (4 + e): 22 bytes per logit
    cm = ComputeModel(A100, "bf16")
    (bwd,) = cm.kernels([ce], backward=True)
    assert bwd.bytes == tv * (e + CE_BWD_BYTES_FP32) == tv * 22
    assert cm.op_time(bwd) == tv * 22 / (A100.mem_bw_Bps * A100.mem_bw_efficiency) + (
        A100.kernel_launch_s
    )


def test_host_launch_bounds_a_phase_of_short_kernels_only() -> None:
    cm = ComputeModel(A100, "bf16")
    tiny = [Op(f"act{i}", 1e3, 1e3, False) for i in range(50)]  # ~3 us each on the device
    assert cm.cost(tiny).time_s == pytest.approx(50 * A100.host_launch_s, rel=1e-12)
    big = [Op(f"act{i}", 1e9, 1e9, False) for i in range(50)]  # ~0.6 ms each
    assert cm.cost(big).time_s == pytest.approx(sum(cm.op_time(op) for op in big), rel=1e-12)
    slow_host = dataclasses.replace(A100, host_launch_s=1.0)
    assert ComputeModel(slow_host, "bf16").cost(big).time_s == pytest.approx(50.0)


@pytest.mark.parametrize("system", ["dgx-a100", "dgx-h100", "mlu370-x8"])
@pytest.mark.parametrize("ckpt", list(Checkpointing))
@pytest.mark.parametrize(("flash", "mb"), [(True, 1), (False, 4), (True, 16)])
def test_breakdown_adds_up_to_the_micro_batch(system, ckpt, flash, mb) -> None:
    dev = load_system(system).spec.device
    cm = ComputeModel(dev, "bf16")
    shape = get_preset("gpt3-350m")
    parts = compute_breakdown(cm, shape, mb, 2048, ckpt, flash)
    m = micro_batch_compute(cm, shape, mb, 2048, ckpt, flash)
    total = shape.n_layers * (m.block_fwd.time_s + m.block_bwd.time_s)
    total += m.head_fwd.time_s + m.head_bwd.time_s
    assert sum(parts.values()) == pytest.approx(total, rel=1e-9)
    assert all(v >= 0 for v in parts.values())
    assert ("attention (fused)" in parts) == flash
    assert parts["cross-entropy (vocabulary)"] > 0 and parts["layer norms"] > 0
