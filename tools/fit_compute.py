"""Fit each device's two in-loop compute constants to its calibration points.

The constants (``topologies/<system>.yaml``, device section, ``confidence: calibrated``):

* ``sustained_matmul_fraction``: GEMM rate in the training loop over the isolated best-shape
  (MAMF) rate;
* ``attention_efficiency``: the fused attention forward's fraction of dense peak in the loop.

Calibration points, and only these (``scaling.app.validate.COMPUTE_CALIBRATION``): three MPT
benchmark runs per device (reference/mpt_benchmarks.csv, single node, spanning model size,
sequence length and activation checkpointing) and, for the A100, the FlashAttention-2 paper's
GPT3-1.3B run. Every other point of ``scaling validate``'s compute studies is held out. The
objective is the mean squared log error of the simulated throughput over the calibration points.

Run: ``python tools/fit_compute.py [dgx-a100 dgx-h100]`` — prints the fitted values and the
calibration errors; copy the values into the YAML files (their ``source`` names this script).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
from scipy.optimize import minimize

from scaling.app.validate import compute_points, fa2_gpt3_point
from scaling.io.topology import load_system
from scaling.model.hardware.system import DeviceSpec

#: Calibration points that are not MPT rows, per system.
EXTRA_POINTS = {"dgx-a100": (fa2_gpt3_point,)}


def objective(system: str, base: DeviceSpec, x: np.ndarray) -> float:
    """Mean squared log error over the calibration points with constants ``x``."""
    sus, att = (float(v) for v in x)
    if not (0.05 <= sus <= 1.0 and 0.05 <= att <= 1.0):
        return 1e3
    dev = dataclasses.replace(base, sustained_matmul_fraction=sus, attention_efficiency=att)
    overrides = {system: dev}
    pts = compute_points(system, overrides, fitted_only=True)
    pts += [fn(overrides) for fn in EXTRA_POINTS.get(system, ())]
    return sum(math.log(p.model / p.measured) ** 2 for p in pts) / len(pts)


def fit(system: str) -> tuple[float, float]:
    base = load_system(system).spec.device
    x0 = np.array([base.sustained_matmul_fraction, base.attention_efficiency])
    res = minimize(
        lambda x: objective(system, base, x),
        x0,
        method="Nelder-Mead",
        options={"xatol": 1e-3, "fatol": 1e-7, "maxiter": 200},
    )
    sus, att = (round(float(v), 3) for v in res.x)
    dev = dataclasses.replace(base, sustained_matmul_fraction=sus, attention_efficiency=att)
    overrides = {system: dev}
    pts = compute_points(system, overrides, fitted_only=True)
    pts += [fn(overrides) for fn in EXTRA_POINTS.get(system, ())]
    print(f"{system}: sustained_matmul_fraction {sus}, attention_efficiency {att}")
    for p in pts:
        print(
            f"  {p.label:<40} measured {p.measured:>10,.1f} model {p.model:>10,.1f} {p.error:+.1%}"
        )
    return sus, att


def main(argv: list[str]) -> None:
    for system in argv or ["dgx-a100", "dgx-h100"]:
        fit(system)


if __name__ == "__main__":
    main(sys.argv[1:])
