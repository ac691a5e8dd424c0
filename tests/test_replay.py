"""``scaling replay`` (issue 27 item 5): a recorded job's collective schedule on any system.

The recordings are real PyTorch jobs (tests/fixtures/torch_schedules, written out in the
scaling-record format). Replayed on dgx-a100 the calls come out in the recorded order with the
recorded bytes and groups (moved to the devices they are placed on); on mlu370-x8 the same
schedule runs and its communication takes longer (CNCL's per-call latency and MLU-Link's
bandwidth against NCCL on NVSwitch). Compute comes from a described model (the config of the
same job) or from a GPU trace's kernel times scaled by the peak ratio, exactly. Recordings that
do not fit are refused in one line with exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from scaling.app.cli import main
from scaling.app.replay_cmd import explain_replay, replay_job, replayed_schedule
from scaling.model.comm.ops import CollectiveOp
from scaling.model.hardware.compute import ComputeModel, micro_batch_compute
from scaling.model.strategies.replay import ReplayedCall, ReplayedStep, ReplaySpec, group_of
from tests.test_recordings_import import _as_scaling_record
from tests.test_torch_schedules import FIXTURES, _load, job_config


def _recording(tmp_path: Path, variant: str, rank: int = 0) -> tuple[Path, dict[str, Any]]:
    doc = _load(FIXTURES / f"{variant}.json")
    return _as_scaling_record(doc, rank, tmp_path / f"{variant}_{rank}.jsonl"), doc


def _config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    """The experiment config describing the fixture's job (model, training, strategy)."""
    cfg = job_config(doc)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _device(r: int, per_node: int, dpn: int) -> int:
    return r // per_node * dpn + r % per_node


@pytest.mark.parametrize(
    ("variant", "rank", "per_node"),
    [("ddp_bucket_cap", 0, 2), ("fsdp1_full_shard", 1, 2), ("fsdp1_hybrid_shard_2x2", 3, 2)],
)
@pytest.mark.parametrize("network", ["analytic", "flow"])
def test_replay_on_dgx_a100_reproduces_the_recorded_order(
    tmp_path: Path, variant: str, rank: int, per_node: int, network: str
) -> None:
    path, doc = _recording(tmp_path, variant, rank)
    world = doc["world_size"]
    rp, _ = replay_job(path, "dgx-a100", world // per_node, per_node, network=network)
    _, tl = explain_replay(rp.job)
    dpn = rp.job.system.devices_per_node
    device = _device(rank, per_node, dpn)
    recorded = doc["ranks"][rank]["steps"]
    for k, calls in enumerate(recorded):
        got = [(c["op"], c["bytes"], c["group"]) for c in replayed_schedule(tl, k, device)]
        want = [
            (c["op"], c["bytes"], [_device(r, per_node, dpn) for r in c["group"]]) for c in calls
        ]
        assert got == want, f"iteration {k}"


def _exposed(rows: list[dict[str, Any]], step: int, tier: str) -> float:
    return sum(
        r["time_s"]
        for r in rows
        if r["step"] == step and r["kind"] == "step" and f"({tier} bound)" in r["label"]
    )


def _scaled(job: Any, factor: float) -> Any:
    """The same program with every call ``factor`` times larger (a larger model's buckets)."""
    spec = job.strategy
    steps = tuple(
        dataclasses.replace(
            s, calls=tuple(dataclasses.replace(c, nbytes=c.nbytes * factor) for c in s.calls)
        )
        for s in spec.steps
    )
    return dataclasses.replace(job, strategy=dataclasses.replace(spec, steps=steps))


def test_on_mlu370_the_same_schedule_runs_and_its_communication_is_slower(
    tmp_path: Path,
) -> None:
    path, doc = _recording(tmp_path, "fsdp1_hybrid_shard_2x2")
    a100, _ = replay_job(path, "dgx-a100", 2, 2, network="analytic")
    mlu, _ = replay_job(path, "mlu370-x8", 2, 2, network="analytic")
    rows_a, tl_a = explain_replay(a100.job)
    rows_m, tl_m = explain_replay(mlu.job)
    steady = len(doc["ranks"][0]["steps"]) - 1
    # the same program: same calls in the same order on both
    same = [(c["op"], c["bytes"]) for c in replayed_schedule(tl_a, steady, 0)]
    assert same == [(c["op"], c["bytes"]) for c in replayed_schedule(tl_m, steady, 0)]
    # no compute recorded: the step is communication only. The recorded calls are tens of KiB,
    # latency-bound: inside the node CNCL's per-call latency over MLU-Link exceeds NCCL's
    assert _exposed(rows_m, steady, "scale_up") > 1.1 * _exposed(rows_a, steady, "scale_up")
    # HSDP's cross-node all-reduce is bound by the scale-out network on both
    assert _exposed(rows_m, steady, "network") > 0 and _exposed(rows_a, steady, "network") > 0
    # the same program with 4,096x larger calls is bandwidth-bound: MLU-Link (and RoCE with 2
    # NICs per node) against NVSwitch (and 8 InfiniBand rails)
    big_a, _ = explain_replay(_scaled(a100.job, 4096))
    big_m, _ = explain_replay(_scaled(mlu.job, 4096))
    assert _exposed(big_m, steady, "scale_up") > 4 * _exposed(big_a, steady, "scale_up")
    assert _exposed(big_m, steady, "network") > 2 * _exposed(big_a, steady, "network")


def test_compute_from_a_described_model_is_the_models_on_the_target(tmp_path: Path) -> None:
    path, doc = _recording(tmp_path, "ddp_bucket_cap")
    cfg = _config(tmp_path, doc)
    a100, _ = replay_job(path, "dgx-a100", 1, 2, config=cfg, network="analytic")
    mlu, _ = replay_job(path, "mlu370-x8", 1, 2, config=cfg, network="analytic")
    rows_a, _ = explain_replay(a100.job)
    rows_m, _ = explain_replay(mlu.job)

    def part(rows: list[dict[str, Any]], label: str) -> float:
        return next(r["time_s"] for r in rows if r["step"] == 2 and r["label"] == label)

    for rp, rows in ((a100, rows_a), (mlu, rows_m)):
        # the model's forward and backward on the target's device model, exactly
        job = rp.job
        t = job.training
        cm = ComputeModel(job.system.device, t.dtype)
        mb = micro_batch_compute(
            cm, job.shape, t.micro_batch, t.seq_len, t.checkpointing, t.flash_attention
        )
        n = job.shape.n_layers
        fwd = t.grad_accum * (mb.head_fwd.time_s + n * mb.block_fwd.time_s)
        bwd = t.grad_accum * (mb.head_bwd.time_s + n * mb.block_bwd.time_s)
        assert part(rows, "compute: forward") == pytest.approx(fwd, rel=1e-9)
        assert part(rows, "compute: backward") == pytest.approx(bwd, rel=1e-9)
    assert part(rows_a, "compute: forward") != part(rows_m, "compute: forward")
    assert part(rows_a, "compute: backward") > 0 and part(rows_a, "compute: optimizer") > 0
    # forward has no DDP call: all of it runs before the first bucket, backward is spread
    # over the buckets' gaps; the parts add up to the step
    total = part(rows_a, "step time")
    parts = sum(r["time_s"] for r in rows_a if r["step"] == 2 and r["kind"] == "step")
    assert parts - total == pytest.approx(total, rel=1e-9)


def _gpu_trace(path: Path, kernel_us: float) -> Path:
    """A Kineto trace of a GPU job (rank 0 of 2): one compute kernel before each of two NCCL
    all-reduces and one after."""
    comms = [
        {
            "ph": "X",
            "name": "record_param_comms",
            "ts": 100 + 1000 * i,
            "dur": 5,
            "args": {
                "Collective name": "allreduce",
                "In msg nelems": 1 << 20,
                "Out msg nelems": 1 << 20,
                "dtype": "Float",
                "Process Group Ranks": "[0, 1]",
            },
        }
        for i in range(2)
    ]
    kernels = []
    for i, ts in enumerate((150, 1150, 2150)):
        kernels.append(
            {"ph": "X", "cat": "kernel", "name": "sm80_gemm", "ts": ts, "dur": kernel_us}
        )
        if i < 2:
            kernels.append(
                {
                    "ph": "X",
                    "cat": "kernel",
                    "name": "ncclDevKernel_AllReduce",
                    "ts": ts + 600,
                    "dur": 50,
                }
            )
    doc = {
        "schemaVersion": 1,
        "deviceProperties": [{"name": "NVIDIA A100-SXM4-80GB"}],
        "distributedInfo": {"rank": 0, "world_size": 2, "pg_config": [{"ranks": [0, 1]}]},
        "traceEvents": comms + kernels,
    }
    path.write_text(json.dumps(doc))
    return path


def test_trace_compute_is_the_kernel_time_scaled_by_the_peak_ratio(tmp_path: Path) -> None:
    path = _gpu_trace(tmp_path / "trace.json", kernel_us=400.0)
    rp, _ = replay_job(path, "dgx-h100", 1, 2, recorded_on="dgx-a100", network="analytic")
    rows, _ = explain_replay(rp.job)
    ratio = rp.job.strategy.recorded_peak_flops / rp.job.system.device.peak("bf16")
    assert ratio < 0.5  # A100 312 / H100 989 TFLOP/s bf16 dense
    compute = sum(r["time_s"] for r in rows if r["label"].startswith("compute"))
    assert compute == pytest.approx(3 * 400e-6 * ratio, rel=1e-9)
    # without --recorded-on the times cannot be scaled: refused, naming the trace's device
    with pytest.raises(ValueError, match=r"NVIDIA A100-SXM4-80GB.*--recorded-on"):
        replay_job(path, "dgx-h100", 1, 2)


def test_group_placement() -> None:
    g = group_of((0, 8), 8, 8)  # HSDP's replicate group of local rank 0: every lane runs
    assert not isinstance(g, str) and (g.nodes, g.per_node, g.lanes) == (2, 1, 8)
    g = group_of((2, 3), 4, 8)
    assert not isinstance(g, str) and (g.nodes, g.per_node, g.local_base) == (1, 2, 2)
    assert "not a block" in str(group_of((0, 2), 4, 8))
    bad = ReplayedCall(CollectiveOp.ALL_REDUCE, 8.0, (0, 5))
    spec = ReplaySpec(0, 2, 2, (), (ReplayedStep((bad,)),))
    assert "outside the recorded world of 2" in spec.placement_error(8, 8)
    ok = ReplaySpec(0, 2, 2, (), (ReplayedStep((dataclasses.replace(bad, ranks=(0, 1)),)),))
    assert ok.placement_error(8, 8) == ""
    assert "other world size" in ok.placement_error(16, 8)


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["replay", *args])
    return res.exit_code, res.output


def test_bad_recordings_are_refused_in_one_line(tmp_path: Path) -> None:
    path, _ = _recording(tmp_path, "ddp_bucket_cap")
    lines = path.read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:-3]) + "\n")
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello\n")
    other_model = tmp_path / "other.yaml"
    other_model.write_text(
        yaml.safe_dump({"model": "gpt3-125m", "systems": ["dgx-a100"], "nodes": [1]})
    )
    nccl = tmp_path / "sub.log"
    nccl.write_text(
        "n:1:2 [0] NCCL INFO comm 0xa rank 0 nranks 4 cudaDev 0 - Init COMPLETE\n"
        "n:1:2 [0] NCCL INFO AllGather: opCount 0 sendbuff 0x1 recvbuff 0x2 count 8 datatype 7 "
        "op 0 root 0 comm 0xb [nranks=2] stream 0x3\n"
    )
    cases = [
        (
            [str(cut), "--system", "dgx-a100", "--nodes", "1", "--devices-per-node", "2"],
            "truncated",
        ),
        (
            [str(foreign), "--system", "dgx-a100", "--nodes", "1"],
            "not a recording of a known format",
        ),
        (
            [str(path), "--system", "dgx-a100", "--nodes", "2", "--devices-per-node", "2"],
            "other world size: recorded 2 ranks",
        ),
        ([str(path), "--system", "dgx-a100", "--nodes", "1"], "other world size"),
        (
            [
                str(path),
                "--system",
                "dgx-a100",
                "--nodes",
                "1",
                "--devices-per-node",
                "2",
                "--config",
                str(other_model),
            ],
            "other model",
        ),
        (
            [str(nccl), "--system", "dgx-a100", "--nodes", "1", "--devices-per-node", "4"],
            "group ranks not recorded",
        ),
        ([str(path), "--system", "no-such", "--nodes", "1"], "no-such"),
        (
            [str(path), "--system", "mlu370-x8", "--nodes", "1", "--devices-per-node", "9"],
            "at most 8",
        ),
    ]
    for args, expected in cases:
        code, out = _cli(*args)
        assert code == 2, (args, out)
        assert expected in out and out.count("\n") == 1 and "Traceback" not in out, (args, out)


def test_cli_prints_explain_rows_and_intervals(tmp_path: Path) -> None:
    path, _ = _recording(tmp_path, "ddp_bucket_cap")
    base = [str(path), "--system", "mlu370-x8", "--nodes", "1", "--devices-per-node", "2"]
    code, out = _cli(*base, "--network", "analytic")
    assert code == 0, out
    assert "iteration 3: step" in out and "exposed all_reduce (scale_up bound)" in out
    code, out = _cli(*base, "--network", "analytic", "--uncertainty", "4", "--format", "csv")
    assert code == 0, out
    import io

    import pandas as pd

    df = pd.read_csv(io.StringIO(out.split("\n", 3)[-1] if not out.startswith("step") else out))
    assert {"median_s", "p5_s", "p95_s"} <= set(df.columns)
    assert (df.p5_s <= df.median_s + 1e-15).all() and (df.median_s <= df.p95_s + 1e-15).all()
    step = df[df.label == "step time"]
    assert (step.p95_s > step.p5_s).any(), "the MLU370's uncertain inputs move the step"
