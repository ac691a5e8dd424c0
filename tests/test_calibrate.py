"""``scaling calibrate``: round trip (a synthetic table from a known profile is fitted back inside
its intervals), transfer (fitted on the 64-node arXiv:2411.13055 curve, predicts 4 and 512
nodes), the written profile loads and changes results, and bad tables are refused in one line."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from scaling.app.cli import main
from scaling.io.benchmark_tables import read_benchmark_table
from scaling.io.reference import nccl_busbw
from scaling.io.topology import load_library, load_system, to_library_profile
from scaling.model.calibration.fit import calibrate
from scaling.model.calibration.measure import (
    Measurement,
    predict_rows,
    predict_times,
    time_from_busbw,
)
from scaling.model.calibration.params import free_params
from scaling.model.comm.ops import CollectiveOp

AR = CollectiveOp.ALL_REDUCE
#: The truth of the round trip: the nominal MLU370-X8 library with these fields changed (ones a
#: sweep at 1-8 nodes identifies: a ring's per-call latency trades off with its per-step ones,
#: tested below).
TRUTH = {
    "step_latency_us.scale_up": 7.0,
    "step_latency_us.network": 31.0,
    "bw_efficiency.pcie": 0.85,
    "bw_efficiency.network": 0.74,
}
SIZES = [4**k for k in range(6, 16)]  # 4 KiB .. 1 GiB


def _truth_system():
    spec = load_system("mlu370-x8").spec
    # ring-only whatever the catalog's nominal CNCL set is: the round trip tests the fit, not
    # the catalog
    lib = dataclasses.replace(spec.library, algorithms=("ring",))
    spec = dataclasses.replace(spec, library=lib)
    params = {p.path: p for p in free_params(lib)}
    for path, v in TRUTH.items():
        lib = params[path].write(lib, v)
    return spec, dataclasses.replace(spec, library=lib)


def _synthetic_csv(path: Path, system, nodes_list, noise: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lines = ["op,nodes,per_node,size_B,time_us,algorithm"]
    for n in nodes_list:
        for s, (t, algo) in zip(
            SIZES, predict_times(system, AR, n, system.devices_per_node, SIZES), strict=True
        ):
            t *= float(np.exp(rng.normal(0.0, noise)))
            lines.append(f"all_reduce,{n},{system.devices_per_node},{s},{t * 1e6:.3f},{algo}")
    path.write_text("\n".join(lines) + "\n")


def test_round_trip_recovers_the_profile_inside_its_intervals(tmp_path):
    nominal, truth = _truth_system()
    table = tmp_path / "mlu.csv"
    _synthetic_csv(table, truth, [1, 2, 4, 8], noise=0.02, seed=0)
    t = read_benchmark_table(table)
    assert t.layout == "csv" and len(t.rows) == 40
    cal = calibrate(t.rows, {"nominal": nominal})
    fit = {p.path: p for p in cal.final.params}
    true_values = {p.path: p.read(truth.library) for p in free_params(truth.library)}
    for path, v in TRUTH.items():
        p = fit[path]
        assert p.identified, (path, p.why)
        assert p.low <= v <= p.high, (path, v, p)
        assert p.high - p.low < 0.5 * v  # a real identification, not a bound-to-bound range
    for p in cal.final.fitted:  # every number it claims, the truth lies in
        assert p.low <= true_values[p.path] <= p.high, p
    # the fit's error is the noise's (2 %), the nominal profile's is far above it
    nominal_err = np.log(
        [r.time_s / t for r, (t, _) in zip(t.rows, predict_rows(nominal, t.rows), strict=True)]
    )
    assert cal.final.rms < 0.03 < float(np.sqrt(np.mean(nominal_err**2)))


def test_one_node_count_cannot_separate_call_and_step_latency():
    nominal, truth = _truth_system()
    rows = [
        Measurement(AR, 4, 8, s, t, i)
        for i, (s, (t, _)) in enumerate(
            zip(SIZES, predict_times(truth, AR, 4, 8, SIZES), strict=True)
        )
    ]
    fit = {p.path: p for p in calibrate(rows, {"nominal": nominal}).final.params}
    call, step = fit["call_latency_us"], fit["step_latency_us.network"]
    assert not (call.identified and step.identified)
    kept = call if not call.identified else step
    assert "not identifiable" in kept.why and "node counts" in kept.why
    assert kept.value == kept.prior  # not guessed: the profile's value is kept
    assert "no row of this table depends on it" in fit["bw_efficiency.pcie"].why or not any(
        p.identified for p in [fit["bw_efficiency.pcie"]]
    )


# ---- transfer: arXiv:2411.13055 ---------------------------------------------------------

SCALE = "arXiv2411.13055_nccltests_4_to_512_nodes"
#: MAPE `scaling validate` reports today for the 4- and 512-node curves (README): >= 128 MiB
#: 2.3 % and 6.2 %, below 4.6 % and 12.4 %; the calibrated profile must do as well as the worst.
MAPE_LARGE, MAPE_SMALL = 0.062, 0.124


def _arxiv(nodes: int) -> list[tuple[int, float]]:
    ref = nccl_busbw()
    ref = ref[(ref.dataset == SCALE) & (ref.nodes_num == nodes)].sort_values("msg_bytes_num")
    return list(zip(ref.msg_bytes_num.astype(int), ref.busbw_GBps_num.astype(float), strict=True))


def _nccl_tests_text(nodes: int, per_node: int, rows: list[tuple[int, float]], op="all_reduce"):
    out = [
        "# nccl-tests version 2.17.6 nccl-headers=22501 nccl-library=22501",
        f"# Collective test starting: {op}_perf",
        "# nThread 1 nGpus 1 minBytes 16777216 maxBytes 17179869184 step: 4(factor) warmup iters: "
        "5 iters: 20 agg iters: 1 validation: 1 graph: 0",
        "#",
        "# Using devices",
    ]
    for r in range(nodes * per_node):
        out.append(
            f"#  Rank {r:3d} Group  0 Pid {1000 + r:6d} on node{r // per_node:03d} device "
            f"{r % per_node} [0x00] NVIDIA H100 80GB HBM3"
        )
    out += [
        "#                                                  out-of-place                 in-place",
        "#       size         count      type   redop    root     time   algbw   busbw #wrong     "
        "time   algbw   busbw #wrong",
        "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            "
        "(us)  (GB/s)  (GB/s)",
    ]
    for s, bw in rows:
        t = time_from_busbw(AR, nodes * per_node, s, bw) * 1e6
        out.append(
            f"{s:12d} {s // 4:13d}     float     sum      -1 {t:8.1f} {s / t / 1e3:7.2f} "
            f"{bw:7.2f}      0 {t:8.1f} {s / t / 1e3:7.2f} {bw:7.2f}      0"
        )
    out += ["# Out of bounds values : 0 OK", "# Avg bus bandwidth    : 200.1", "#"]
    return "\n".join(out) + "\n"


def _mape(system, nodes: int) -> tuple[float, float]:
    rows = _arxiv(nodes)
    got = predict_times(system, AR, nodes, 8, [s for s, _ in rows])
    err = [
        (s, abs(time_from_busbw(AR, nodes * 8, s, bw) / t - 1.0))  # model/measured busbw − 1
        for (s, bw), (t, _) in zip(rows, got, strict=True)
    ]
    large = [e for s, e in err if s >= 128 * 2**20]
    small = [e for s, e in err if s < 128 * 2**20]
    return sum(large) / len(large), sum(small) / len(small)


def test_transfer_fit_on_64_nodes_predicts_4_and_512(tmp_path):
    table = tmp_path / "ar64.txt"
    table.write_text(_nccl_tests_text(64, 8, _arxiv(64)))
    out = tmp_path / "topo" / "libraries" / "nccl-cal.yaml"
    sys_out = tmp_path / "topo" / "dgx-h100-cal.yaml"
    res = CliRunner().invoke(
        main,
        [
            "calibrate",
            str(table),
            "--system",
            "dgx-h100",
            "--out",
            str(out),
            "--system-out",
            str(sys_out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "tree_level_latency_us" in res.output
    lib, _, _ = load_library(str(out))
    fitted = {k for k, v in lib.model_dump().items() if isinstance(v, dict) and v.get("confidence") == "calibrated" and "scaling calibrate" in v.get("source", "")}  # fmt: skip
    assert "tree_level_latency_us" in fitted
    assert re.search(r"sha256 [0-9a-f]{16}, 5 rows", lib.tree_level_latency_us.source)
    calibrated = load_system(str(sys_out)).spec
    nominal = load_system("dgx-h100").spec
    assert calibrated.library == to_library_profile(lib)
    assert calibrated.library != nominal.library  # the profile changes results ...
    assert predict_times(calibrated, AR, 512, 8, [2**24]) != predict_times(
        nominal, AR, 512, 8, [2**24]
    )
    for nodes in (4, 512):  # ... and transfers to the node counts it never saw
        large, small = _mape(calibrated, nodes)
        assert large <= MAPE_LARGE and small <= MAPE_SMALL, (nodes, large, small)


# ---- readers and bad input --------------------------------------------------------------


def test_hccl_test_output_uses_time_not_alg_bandwidth(tmp_path):
    f = tmp_path / "hccl.txt"
    f.write_text(
        "the minbytes is 8192, maxbytes is 67108864, iters is 20, warmup_iters is 5\n"
        "data_size(Bytes): | aveg_time(us): | alg_bandwidth(GB/s): | check_result:\n"
        + "".join(f"{8192 * 8**k} | {20.0 + k * 100:.2f} | 99.0 | success\n" for k in range(5))
    )
    t = read_benchmark_table(f, AR, nodes=2, per_node=8)
    assert t.layout == "hccl_test" and [r.time_s for r in t.rows] == pytest.approx(
        [(20.0 + k * 100) * 1e-6 for k in range(5)]
    )
    assert {(r.nodes, r.per_node) for r in t.rows} == {(2, 8)}


def _one_line_error(args: list[str]) -> str:
    res = CliRunner().invoke(main, ["calibrate", *args])
    assert res.exit_code == 2, res.output
    err = res.output.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_tables_are_refused_in_one_line_naming_file_and_line(tmp_path):
    ok = _nccl_tests_text(2, 8, [(2**20 * 4**k, 20.0 + k) for k in range(5)])
    cases = {
        # a truncated row
        "trunc.txt": (ok.replace(" float     sum      -1 ", " float ", 1), r"trunc\.txt:\d+: a row"),
        # a CSV without units
        "nounit.csv": ("op,nodes,per_node,size,time\nall_reduce,2,8,1024,10\n", r"nounit\.csv:1:.*'time'|nounit\.csv:1:.*'size'"),
        # a table of another op than asked for
        "ag.txt": (_nccl_tests_text(2, 8, [(2**20 * 4**k, 20.0) for k in range(5)], "all_gather"), r"ag\.txt:2: a table of all_gather; --op asked for all_reduce"),
        # too few sizes
        "few.txt": (_nccl_tests_text(2, 8, [(2**20, 20.0), (2**22, 21.0)]), r"few\.txt:\d+: 2 distinct size"),
        # failed data check
        "wrong.txt": (ok.replace("      0 ", "      3 ", 1), r"wrong\.txt:\d+: 3 wrong results"),
        # not a table at all
        "junk.txt": ("hello\nworld\n", r"junk\.txt:1: not a benchmark table"),
    }  # fmt: skip
    for name, (text, pattern) in cases.items():
        (tmp_path / name).write_text(text)
        err = _one_line_error([str(tmp_path / name), "--system", "dgx-h100", "--op", "all_reduce"])
        assert re.search(pattern, err), (name, err)
    hccl = tmp_path / "h.txt"
    hccl.write_text("data_size(Bytes): | aveg_time(us): | alg_bandwidth(GB/s): | check_result:\n")
    assert "give --op" in _one_line_error([str(hccl), "--system", "atlas-800t-a2"])
    assert "--system" in _one_line_error([str(tmp_path / "few.txt")])


def test_a_file_of_several_nccl_tests_runs_keeps_each_runs_group(tmp_path):
    f = tmp_path / "runs.txt"
    rows = [(2**20 * 4**k, 20.0 + k) for k in range(4)]
    f.write_text(_nccl_tests_text(2, 8, rows) + _nccl_tests_text(4, 4, rows))
    t = read_benchmark_table(f)
    assert [(r.nodes, r.per_node) for r in t.rows] == [(2, 8)] * 4 + [(4, 4)] * 4
    assert t.rows[0].busbw_GBps == pytest.approx(20.0, rel=1e-3)  # time read back exactly


def test_a_table_the_profile_cannot_describe_writes_nothing(tmp_path):
    table = tmp_path / "odd.txt"  # busbw that falls, then rises with the square of the size
    table.write_text(_nccl_tests_text(1, 8, [(4096 * 4**k, 0.1 * (k + 1) ** 2) for k in range(8)]))
    out = tmp_path / "never.yaml"
    res = CliRunner().invoke(
        main, ["calibrate", str(table), "--system", "mlu370-x8", "--out", str(out)]
    )
    assert res.exit_code == 2
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith(f"error: {table}: the best fit") and "nothing written" in err, err
    assert not out.exists()
