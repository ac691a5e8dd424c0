"""FP8 training as Transformer Engine runs it (model/hardware/precision.py) and the cuDNN attention
kernel: closed forms of the kernels' times and the refusals where a device lacks the numbers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scaling.io.topology import load_system
from scaling.model.hardware.compute import (
    ComputeModel,
    Op,
    block_forward_ops,
    head_forward_ops,
    matmul_efficiency,
)
from scaling.model.hardware.precision import FP8_CAST_BYTES, activation_dtype, fp8_cast_bytes
from scaling.model.hardware.workload import get_preset


def _h100():  # type: ignore[no-untyped-def]
    return load_system("dgx-h100").spec.device


def _gemm_s(cm: ComputeModel, op: Op, peak: float, best: float) -> float:
    dev = cm.device
    g = op.gemm
    assert g is not None
    eff = matmul_efficiency(g.m, g.k, g.n, best, batch=g.batch, units=dev.compute_units)
    mem = dev.mem_bw_Bps * dev.mem_bw_efficiency
    return max(op.flops / (peak * eff * dev.sustained_matmul_fraction), op.bytes / mem)


def test_fp8_block_linears_run_at_the_fp8_rate_with_their_casts() -> None:
    """A block linear: the FP8 peak × the FP8 GEMM efficiency of its shape, plus the
    cast_transpose of its BF16 input (read 2, write 1 + 1 bytes per element); in backward the
    data-gradient GEMM casts the output gradient (m × n), the weight-gradient GEMM nothing."""
    dev = _h100()
    f8 = ComputeModel(dev, "fp8")
    assert f8.dtype_bytes == 2 and activation_dtype("fp8") == "bf16" and FP8_CAST_BYTES == 4
    ops = block_forward_ops(get_preset("llama2-7b"), 1, 4096, f8.dtype_bytes, True)
    mem = dev.mem_bw_Bps * dev.mem_bw_efficiency
    gap = dev.kernel_launch_s
    fp8_peak, best = dev.peak("fp8"), dev.fp8_matmul_efficiency
    assert best is not None
    linears = [op for op in ops if op.fp8]
    assert [op.name for op in linears] == ["qkv", "proj", "fc_in", "fc_out"]
    for op in linears:
        g = op.gemm
        assert g is not None
        cast = fp8_cast_bytes(g.m, g.k) / mem
        assert f8.op_time(op) == pytest.approx(_gemm_s(f8, op, fp8_peak, best) + cast + gap)
        dgrad, wgrad = f8.kernels([op], backward=True)
        assert dgrad.gemm is not None and wgrad.gemm is not None
        d_cast = 4.0 * g.m * g.n / mem  # the output gradient dY, m × n
        assert f8.op_time(dgrad) == pytest.approx(_gemm_s(f8, dgrad, fp8_peak, best) + d_cast + gap)
        assert f8.op_time(wgrad) == pytest.approx(_gemm_s(f8, wgrad, fp8_peak, best) + gap)


def test_fp8_leaves_everything_but_the_block_linears_in_bf16() -> None:
    """Norms, activations, attention (cuDNN or flash, BF16), the embedding, the output layer's
    GEMM (Megatron-Core's own ColumnParallelLinear) and the loss take what they take in BF16."""
    dev = _h100()
    shape = get_preset("llama3-8b")
    for kernel in ("flash", "cudnn"):
        bf = ComputeModel(dev, "bf16", attention_kernel=kernel)
        f8 = ComputeModel(dev, "fp8", attention_kernel=kernel)
        ops = block_forward_ops(shape, 1, 8192, 2, True) + head_forward_ops(shape, 1, 8192, 2)
        others = [op for op in ops if not op.fp8]
        assert {"attention", "logits", "ln1", "act", "cross_entropy"} <= {op.name for op in others}
        for backward in (False, True):
            for k in f8.kernels(others, backward=backward):
                assert f8.op_time(k) == bf.op_time(k)
        # the block as a whole: faster than BF16, never twice as fast
        block = block_forward_ops(shape, 1, 8192, 2, True)
        t_bf = bf.cost(block).time_s + bf.cost(block, backward=True).time_s
        t_f8 = f8.cost(block).time_s + f8.cost(block, backward=True).time_s
        assert t_bf / 2 < t_f8 < t_bf


def test_cudnn_attention_runs_at_the_devices_cudnn_rate() -> None:
    """The fused attention kernel at ``cudnn_attention_efficiency`` (forward) and the fixed
    backward share of it, on the causal FLOPs it executes."""
    dev = _h100()
    assert dev.cudnn_attention_efficiency is not None
    flash = ComputeModel(dev, "bf16")
    cudnn = ComputeModel(dev, "bf16", attention_kernel="cudnn")
    att = next(op for op in block_forward_ops(get_preset("llama2-7b"), 1, 4096, 2, True)
               if op.flash is not None)  # fmt: skip
    ratio = dev.cudnn_attention_efficiency / dev.attention_efficiency
    for backward in (False, True):
        k = cudnn.kernels([att], backward=backward)[0]
        assert cudnn.efficiency(k) == pytest.approx(flash.efficiency(k) * ratio)
    bwd = cudnn.kernels([att], backward=True)[0]
    assert cudnn.efficiency(bwd) < cudnn.efficiency(att)


def test_fp8_and_cudnn_are_refused_on_a_device_without_their_numbers() -> None:
    dev = _h100()
    with pytest.raises(KeyError, match="fp8_matmul_efficiency"):
        ComputeModel(replace(dev, fp8_matmul_efficiency=None), "fp8")
    with pytest.raises(KeyError, match="cudnn_attention_efficiency"):
        ComputeModel(replace(dev, cudnn_attention_efficiency=None), "bf16",
                     attention_kernel="cudnn")  # fmt: skip
    a100 = load_system("dgx-a100").spec.device
    assert a100.fp8_matmul_efficiency is None and a100.cudnn_attention_efficiency is None
