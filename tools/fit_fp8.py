"""Fit the H100's ``fp8_matmul_efficiency`` to the calibration rows of the Megatron-Core study.

The constant (``topologies/dgx-h100.yaml``, device section, ``confidence: calibrated``): the
best-shape fraction of the FP8 peak an FP8 GEMM reaches (``scaling/model/hardware/precision.py``).
Calibration rows, and only these: the rows of ``reference/megatron_core_h100.csv`` whose ``role``
is ``calibration`` (LLAMA2-7B on one node, NeMo 24.09). Every other row of ``scaling validate``'s
``e2e-megatron-core-h100`` study is held out. The objective is the mean log error of the
simulated tokens/s per GPU over the calibration rows, driven to zero by bisection (the throughput
rises monotonically with the efficiency).

Run: ``python tools/fit_fp8.py`` — prints the fitted value and the calibration errors; copy the
value into the YAML file (its ``source`` names the calibration row).
"""

from __future__ import annotations

import dataclasses
import math

from scaling.app.validate.megatron_core import megatron_core_job, megatron_core_rows
from scaling.io.topology import load_system
from scaling.model.simulation import run_job


def mean_log_error(eff: float) -> float:
    """Mean log(model / published) over the calibration rows with ``fp8_matmul_efficiency``."""
    base = load_system("dgx-h100").spec.device
    dev = dataclasses.replace(base, fp8_matmul_efficiency=eff)
    rows = [r for r in megatron_core_rows() if r["role"] == "calibration"]
    errs = []
    for row in rows:
        res = run_job(megatron_core_job(row, True, overrides={"dgx-h100": dev}))
        got = res.tokens_per_s / res.devices
        errs.append(math.log(got / float(row["tokens_per_s_per_gpu"])))
        print(f"  {eff:.4f} {row['label']}: {got:,.0f} vs {row['tokens_per_s_per_gpu']}")
    return sum(errs) / len(errs)


def main() -> None:
    lo, hi = 0.4, 0.95
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        if mean_log_error(mid) < 0:
            lo = mid
        else:
            hi = mid
    print(f"fp8_matmul_efficiency = {0.5 * (lo + hi):.3f}")


if __name__ == "__main__":
    main()
