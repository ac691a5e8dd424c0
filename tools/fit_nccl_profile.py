"""Fit NCCL's calibrated constants to the 8x A100 nccl-tests all-reduce curve.

Three numbers of ``topologies/libraries/nccl.yaml`` are fitted here, and only these: the host-side
call overhead (``call_overhead_us``) and the size-efficiency ramp (``ramp_half_MB``,
``ramp_exponent``). Everything else (protocol latencies, bandwidth fractions, link efficiency)
comes from NCCL's tuner constants or from the measured plateau. The objective is the mean
absolute log error of the predicted time over all sizes of
``scaling/data/reference/nccl_busbw.csv`` dataset ``A100_1node_allreduce_curve``.

Run: ``python tools/fit_nccl_profile.py`` — prints the fitted values and the error table; copy
the values into nccl.yaml (they are marked ``calibrated`` there with this script as source).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import simpy
from scipy.optimize import minimize

from scaling.io.topology import load_system
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.units import MB, us

REF = Path(__file__).resolve().parents[1] / "scaling" / "data" / "reference" / "nccl_busbw.csv"


def curve() -> pd.DataFrame:
    df = pd.read_csv(REF)
    df = df[df.dataset == "A100_1node_allreduce_curve"].copy()
    df["msg_bytes"] = pd.to_numeric(df.msg_bytes)
    df["algbw_GBps"] = pd.to_numeric(df.algbw_GBps)
    df["time_s"] = df.msg_bytes / (df.algbw_GBps * 1e9)
    return df


def predict(params: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    overhead_us, log_half_mb, exponent = params
    base = load_system("dgx-a100").spec
    lib = dataclasses.replace(
        base.library,
        call_overhead_s=max(overhead_us, 0.0) * us,
        ramp_half_bytes=float(np.exp(log_half_mb)) * MB,
        ramp_exponent=max(exponent, 0.05),
    )
    system = dataclasses.replace(base, library=lib)
    fc = FlowCollectives(simpy.Environment(), system, 1)
    return np.array(
        [fc.predict(CollectiveOp.ALL_REDUCE, float(s), Group(1, 8)).time_s for s in sizes]
    )


def main() -> None:
    df = curve()
    sizes, meas = df.msg_bytes.to_numpy(float), df.time_s.to_numpy()

    def loss(p: np.ndarray) -> float:
        return float(np.mean(np.abs(np.log(predict(p, sizes) / meas))))

    best = min(
        (
            minimize(
                loss,
                x0,
                method="Nelder-Mead",
                options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000},
            )
            for x0 in (
                [25.0, np.log(8.0), 1.0],
                [30.0, np.log(30.0), 0.7],
                [20.0, np.log(2.0), 1.5],
            )
        ),
        key=lambda r: r.fun,
    )
    o, lh, e = best.x
    print(f"call_overhead_us = {o:.2f}\nramp_half_MB = {np.exp(lh):.3f}\nramp_exponent = {e:.3f}")
    pred = predict(best.x, sizes)
    err = pred / meas - 1
    for s, m, p_, x in zip(sizes, meas, pred, err, strict=True):
        print(f"{s:>12.0f} B  measured {m * 1e6:9.1f} us  model {p_ * 1e6:9.1f} us  {x:+6.1%}")
    big = sizes >= 2**20
    print(
        f"MAPE >= 1 MiB: {np.mean(np.abs(err[big])):.1%}   < 1 MiB: {np.mean(np.abs(err[~big])):.1%}"
    )


if __name__ == "__main__":
    main()
