"""Sweeps: spec expansion and validation, executors (process pool, Dask), point-by-point
results, resume after kill -9, refused and failed runs, and the `sweep` / `plot` commands."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from scaling.app.sweep_cmd import plot, sweep
from scaling.io.errors import ConfigError
from scaling.sweep import (
    DaskExecutor,
    LocalPoolExecutor,
    SerialExecutor,
    expand,
    load_sweep,
    make_executor,
    run_sweep,
    sweep_from_dict,
)
from scaling.sweep.executors import SweepExecutor

SMALL = {
    "name": "small",
    "base": {
        "model": "gpt3-125m",
        "systems": ["dgx-a100", "mlu370-x8"],
        "nodes": [1, 2],
        "simulation": {"steps": 1, "warmup_steps": 2},
    },
    "axes": {"training.micro_batch_size": [1, 2]},
}


def _write(path: Path, doc: dict | str) -> Path:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def _by_hash(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("run_key").reset_index(drop=True)


# ---- spec and expansion --------------------------------------------------------------------


def test_expand_grid_and_zip_in_deterministic_order() -> None:
    spec = {
        **SMALL,
        "axes": {"training.micro_batch_size": [1, 2]},
        "zip": [
            {"strategy.bucket_cap_MB": [5, 50], "strategy.gradient_as_bucket_view": [False, True]}
        ],
    }
    runs = expand(sweep_from_dict(spec))
    # 2 axis values x 2 zipped pairs = 4 points; x 2 systems x 2 node counts
    assert len(runs) == 16 and len({r.key for r in runs}) == 16
    assert [r.point for r in runs] == [p for p in range(4) for _ in range(4)]
    assert dict(runs[4].axes) == {
        "training.micro_batch_size": 1,
        "strategy.bucket_cap_MB": 50,
        "strategy.gradient_as_bucket_view": True,
    }
    assert runs[4].job.strategy.bucket_cap_bytes == 50 * 2**20
    assert runs[4].job.strategy.gradient_as_bucket_view
    assert [(r.system, r.nodes) for r in runs[:4]] == [
        ("dgx-a100", 1),
        ("dgx-a100", 2),
        ("mlu370-x8", 1),
        ("mlu370-x8", 2),
    ]
    assert [r.key for r in expand(sweep_from_dict(spec))] == [r.key for r in runs]
    assert pickle.loads(pickle.dumps(runs[5].job)) == runs[5].job  # what workers receive


def test_run_key_is_the_run_content_not_its_neighbours(repo) -> None:
    """A run's hash depends on its own inputs: adding node counts or renaming the sweep keeps
    the hashes of the runs that were already there (so a resume reuses them)."""
    a = {r.nodes: r.key for r in expand(sweep_from_dict({**SMALL, "axes": {}}))}
    more = {**SMALL, "name": "other", "axes": {}, "base": {**SMALL["base"], "nodes": [1, 2, 4]}}
    b = {r.nodes: r.key for r in expand(sweep_from_dict(more))}
    assert a[1] == b[1] and a[2] == b[2] and b[4] not in a.values()
    # a plain experiment is a one-point sweep; --set applies to it
    plain = load_sweep(repo / "configs" / "mlu-vs-gpu.yaml", ["nodes=[1,2]"])
    runs = expand(plain)
    assert len(plain.points()) == 1 and len(runs) == 8 and runs[0].axes == ()


def test_example_sweep_spec_expands(repo) -> None:
    sw = load_sweep(repo / "configs" / "sweeps" / "ddp-buckets.yaml")
    runs = expand(sw)
    assert len(sw.points()) == 6 and len(runs) == 60 and len({r.key for r in runs}) == 60
    assert {r.job.training.micro_batch * r.job.training.grad_accum for r in runs} == {4}


def test_base_config_is_relative_to_the_spec_and_lists_index_by_position(tmp_path, repo) -> None:
    sub = tmp_path / "sweeps"
    sub.mkdir()
    rel = os.path.relpath(repo / "configs" / "mlu-vs-gpu.yaml", sub)
    spec = _write(
        sub / "s.yaml",
        {"base_config": rel, "axes": {"strategies.1.backward_prefetch": ["backward_post", "none"]}},
    )
    sw = load_sweep(spec, ["nodes=[1]", "systems=[mlu370-x8]"])
    runs = expand(sw)
    assert sw.name == "mlu-vs-gpu" and len(runs) == 4
    fsdp = [r for r in runs if r.strategy.startswith("fsdp")]
    assert [r.job.strategy.backward_prefetch.value for r in fsdp] == ["backward_post", "none"]


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        (
            "base:\n  model: gpt3-125m\n  systems: [dgx-a100]\n  nodes: [1]\n"
            "axes:\n  training.micro_batch_size: [1, 0]\n",
            ":6: training.micro_batch_size: got 0; expected a number > 0",
            "[sweep point 1: training.micro_batch_size=0]",
        ),
        (
            "base:\n  model: gpt3-125m\n  systems: [dgx-a100]\n  nodes: [1]\n"
            "zip:\n  - training.seq_len: [512, 1024]\n    training.micro_batch_size: [4]\n",
            ":6: zip[0]: expected lists of equal length",
            "training.seq_len: 2, training.micro_batch_size: 1",
        ),
        (
            "base:\n  model: gpt3-125m\n  systems: [dgx-a100]\n  nodes: [1]\n"
            "axis:\n  training.micro_batch_size: [1]\n",
            ":5: axis: expected no such field",  # the line of the key
            "",
        ),
        (
            "base:\n  model: gpt3-125m\n  systems: [dgx-a100]\n  nodes: [1]\n"
            "  training:\n    micro_batch: 2\n"
            "axes:\n  training.micro_batch_size: [1]\n",
            ":6: base.training.micro_batch: got 2; expected no such field",
            "",
        ),
        (
            "base:\n  model: gpt3-125m\n  systems: [dgx-a100]\n  nodes: [1]\n"
            "axes:\n  training.micro_batch_sise: [1]\n",
            ":6: training.micro_batch_sise: got 1; expected no such field",
            "",
        ),
        (
            "base_config: missing.yaml\naxes:\n  nodes: [[1]]\n",
            ":1: base_config: got 'missing.yaml'",
            "does not exist",
        ),
        (
            "base:\n  model: gpt3-125m\n  systems: [dgx-a100]\n  nodes: [1]\nbase_config: x.yaml\n",
            ":1: (top level): expected exactly one of 'base'",
            "",
        ),
        (
            "base:\n  model: gpt3-125m\n  systems: [dgx-a100]\n  nodes: [1]\n"
            "axes:\n  strategy: [{kind: ddp}]\n  strategy.bucket_cap_MB: [5]\n",
            ":1: (top level): expected each path to vary once",
            "",
        ),
    ],
)
def test_spec_errors_name_file_line_and_field(tmp_path, text, where, expected) -> None:
    spec = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as e:
        load_sweep(spec)
    msg = str(e.value)
    assert msg.startswith(f"{spec}{where}") and expected in msg and "\n" not in msg, msg
    res = CliRunner().invoke(sweep, [str(spec), "--out", str(tmp_path / "o"), "--jobs", "1"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {spec}")


def test_set_and_axes_share_one_setter_with_list_indices(repo) -> None:
    """`--set strategies.1.x=...` indexes lists as sweep axes do, with the same errors."""
    from scaling.io.config import load_experiment

    main = repo / "configs" / "mlu-vs-gpu.yaml"
    exp = load_experiment(main, ["strategies.1.backward_prefetch=none", "nodes=[1]"])
    assert [s.kind for s in exp.config.all_strategies()] == ["ddp", "fsdp"]
    assert exp.config.all_strategies()[1].backward_prefetch.value == "none"
    sw = load_sweep(main, ["strategies.1.backward_prefetch=none", "nodes=[1]"])
    assert [r.job.strategy for r in expand(sw)] == [j.strategy for j in exp.jobs()]
    with pytest.raises(ConfigError, match=r"strategies is a list of 2; expected an index 0\.\.1"):
        load_experiment(main, ["strategies.2.sharding=no_shard"])
    spec = {**SMALL, "base": {**SMALL["base"], "strategies": [{"kind": "ddp"}]}}
    spec["axes"] = {"strategies.2.bucket_cap_MB": [5]}
    with pytest.raises(ConfigError, match=r"strategies is a list of 1; expected an index 0\.\.0"):
        sweep_from_dict(spec)


def test_set_on_an_axis_and_conflicting_executors_are_refused(tmp_path) -> None:
    spec = _write(tmp_path / "s.yaml", SMALL)
    with pytest.raises(ConfigError, match="is a sweep axis"):
        load_sweep(spec, ["training.micro_batch_size=4"])
    with pytest.raises(ConfigError, match="--jobs and --scheduler"):
        make_executor(jobs=2, scheduler="tcp://127.0.0.1:1")
    res = CliRunner().invoke(sweep, [str(spec), "--jobs", "2", "--dask-local", "2"])
    assert res.exit_code == 2 and "give only one way" in res.output


# ---- executors -----------------------------------------------------------------------------


def test_dask_local_cluster_and_process_pool_give_identical_tables(tmp_path) -> None:
    pytest.importorskip("dask.distributed", reason="the dask extra is not installed")
    spec = sweep_from_dict(SMALL)
    with LocalPoolExecutor(jobs=2) as pool:
        a = run_sweep(spec, tmp_path / "pool", pool, progress=False)
    with DaskExecutor(local_workers=2) as dask:
        b = run_sweep(spec, tmp_path / "dask", dask, progress=False)
    c = run_sweep(spec, tmp_path / "serial", SerialExecutor(), progress=False)
    assert len(a) == 8 and (a["status"] == "ok").all()
    pd.testing.assert_frame_equal(_by_hash(a), _by_hash(b))
    pd.testing.assert_frame_equal(_by_hash(a), _by_hash(c))
    assert list(a["run_key"]) == list(c["run_key"])  # same (expand) order too
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask" / "results.parquet"), b)
    # efficiency is per point: each point's smallest run is its baseline
    assert (a.loc[a["nodes"] == 1, "scaling_efficiency"] == 1.0).all()
    assert set(a["training.micro_batch_size"]) == {1, 2}


def _die_on_three(x: int) -> int:
    if x == 3:
        os._exit(13)  # a worker lost mid-call (killed, out of memory)
    if x == 5:
        raise RuntimeError("bad input\nsecond line")
    return 10 * x


def _pid_or_fail(x: int) -> tuple[int, int]:
    if x == 5:
        raise RuntimeError("bad input")
    return x, os.getpid()


@pytest.mark.parametrize("start_method", [None, "spawn"])
def test_grouped_calls_run_a_chunk_per_task_with_per_call_outcomes(start_method) -> None:
    """``imap_grouped`` on a pool: each call's own outcome (one that raises costs only itself,
    not its chunk), and the calls of a group in few worker processes: a chunk per task."""
    args = list(range(40))
    keys = [x % 2 for x in args]  # two groups, interleaved
    with LocalPoolExecutor(jobs=2, start_method=start_method) as ex:
        got = sorted(ex.imap_grouped(_pid_or_fail, args, keys))
    assert [i for i, _, _ in got] == args
    assert got[5] == (5, False, "RuntimeError: bad input")
    ok = [(i, v) for i, good, v in got if good]
    assert all(v[0] == i for i, v in ok)
    # 40 calls, 2 workers: chunks of 5 (40 // (2 x 4)), each in one process
    for start in range(0, 20, 5):
        chunk = [i for i in args if i % 2 == 0][start : start + 5]
        assert len({got[i][2][1] for i in chunk}) == 1


def test_serial_grouped_calls_follow_the_groups_in_first_seen_order() -> None:
    seen: list[int] = []

    def note(x: int) -> int:
        seen.append(x)
        return x

    out = list(SerialExecutor().imap_grouped(note, [10, 11, 12, 13], ["b", "a", "b", "a"]))
    assert seen == [10, 12, 11, 13]  # group b (seen first), then group a
    assert sorted(out) == [(0, True, 10), (1, True, 11), (2, True, 12), (3, True, 13)]


def test_lost_worker_costs_only_its_call() -> None:
    with LocalPoolExecutor(jobs=2) as ex:
        out = sorted(ex.imap_unordered(_die_on_three, list(range(7))))
    assert out == [
        (0, True, 0),
        (1, True, 10),
        (2, True, 20),
        (3, False, "worker process died while running this call"),
        (4, True, 40),
        (5, False, "RuntimeError: bad input second line"),
        (6, True, 60),
    ]


class _FailOnce(SweepExecutor):
    """Serial, but the call for one job raises the first time (a flaky worker)."""

    def __init__(self, nodes: int) -> None:
        self.nodes, self.failed = nodes, False

    def imap_unordered(self, fn, args):
        for i, job in enumerate(args):
            if job.nodes == self.nodes and not self.failed:
                self.failed = True
                yield i, False, "ConnectionError: worker lost"
            else:
                yield i, True, fn(job)


def test_failed_runs_are_recorded_and_retried_on_resume(tmp_path) -> None:
    spec = sweep_from_dict(
        {**SMALL, "axes": {}, "base": {**SMALL["base"], "systems": ["dgx-a100"]}}
    )
    first = run_sweep(spec, tmp_path, _FailOnce(nodes=2), progress=False)
    assert list(first["status"]) == ["ok", "failed"]
    assert first["error"].iloc[1] == "ConnectionError: worker lost"
    ran: list[int] = []
    again = run_sweep(
        spec, tmp_path, SerialExecutor(), progress=False, on_run=lambda r, _: ran.append(r.nodes)
    )
    assert ran == [2] and list(again["status"]) == ["ok", "ok"]
    assert again["scaling_efficiency"].notna().all()


def test_refused_runs_are_rows_with_their_reason(tmp_path) -> None:
    spec = {
        "base": {
            "model": "gpt3-125m",
            "systems": ["dgx-a100", "enflame-t20"],
            "nodes": [1, 2],
            "simulation": {"steps": 1, "warmup_steps": 2},
        },
        "axes": {"model": ["gpt3-125m", "gpt3-13b"]},
    }
    df = run_sweep(sweep_from_dict(spec), tmp_path, SerialExecutor(), progress=False)
    assert len(df) == 8 and "axis.model" in df.columns
    ok = df[df["status"] == "ok"]
    assert set(ok["system"]) == {"dgx-a100"} and set(ok["model"]) == {"gpt3-125m"}
    refused = df[df["status"] == "refused"]
    assert len(refused) == 6 and refused["tokens_per_s_per_device"].isna().all()
    assert refused["scaling_efficiency"].isna().all()
    assert refused["error"].str.contains("cannot train").sum() == 4
    assert refused["error"].str.contains("GiB per rank").sum() == 2
    assert (refused["devices"] > 0).all()  # identity columns are filled for refused runs
    assert (ok.loc[ok["nodes"] == 1, "scaling_efficiency"] == 1.0).all()


# ---- resume after kill -9 -------------------------------------------------------------------

KILL_SPEC = {
    "name": "killme",
    "base": {
        "model": "gpt3-1.3b",
        "systems": ["dgx-a100", "mlu370-x8"],
        "nodes": [32, 64, 128],
        "simulation": {"steps": 1, "warmup_steps": 2},
    },
    "axes": {"training.micro_batch_size": [1, 2]},
}


def test_kill_9_mid_sweep_then_resume_gives_the_uninterrupted_table(tmp_path) -> None:
    spec = _write(tmp_path / "kill.yaml", KILL_SPEC)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "scaling.app.sweep_cmd", "sweep", str(spec), "--out", str(out)]
    cmd += ["--jobs", "1", "--no-plot", "--no-progress"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    runs = out / "runs"
    deadline = time.monotonic() + 60
    try:
        while len(list(runs.glob("*.parquet"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the sweep wrote no run files"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = {p.stem for p in runs.glob("*.parquet")}
    assert 2 <= len(saved) < 12, "killed too late to test a resume"
    assert not (out / "results.parquet").exists()

    rerun: list[str] = []
    resumed = run_sweep(
        spec, out, SerialExecutor(), progress=False, on_run=lambda r, _: rerun.append(r.key)
    )
    assert len(rerun) == 12 - len(saved) and not saved & set(rerun)  # redoes none, loses none
    assert resumed.attrs["reused"] == len(saved)
    assert len(resumed) == 12 and resumed["run_key"].is_unique
    assert not list(runs.glob(".*.tmp"))

    whole = run_sweep(spec, tmp_path / "whole", SerialExecutor(), progress=False)
    pd.testing.assert_frame_equal(_by_hash(resumed), _by_hash(whole))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), resumed)


# ---- commands ------------------------------------------------------------------------------


def test_sweep_command_on_the_main_config_then_resume_and_plot(repo, tmp_path) -> None:
    out = tmp_path / "out"
    args = [str(repo / "configs" / "mlu-vs-gpu.yaml"), "--out", str(out), "--jobs", "1"]
    args += ["--set", "nodes=[1,2]", "--set", "systems=[dgx-a100]", "--csv"]
    res = CliRunner().invoke(sweep, args)
    assert res.exit_code == 0, res.output
    assert "1 point(s), 4 run(s)" in res.output and "4 run(s) simulated, 0 reused" in res.output
    for col in ("system", "strategy", "nodes", "accel", "tok/s/accel", "scaling eff", "status"):
        assert col in res.output
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 4 and (df["status"] == "ok").all()
    csv = pd.read_csv(out / "results.csv")  # (an empty error reads back as NaN)
    pd.testing.assert_frame_equal(csv.drop(columns="error"), df.drop(columns="error"))
    resolved = yaml.safe_load((out / "sweep.yaml").read_text())
    assert [r["run_key"] for r in resolved["runs"]] == list(df["run_key"])
    # the point's config hash is the experiment's, as `scaling run` writes it; not a run key
    from scaling.io.config import load_experiment

    exp = load_experiment(
        repo / "configs" / "mlu-vs-gpu.yaml", ["nodes=[1,2]", "systems=[dgx-a100]"]
    )
    assert resolved["points"][0]["config_hash"] == exp.config_hash()
    assert exp.config_hash() not in set(df["run_key"])
    assert resolved["points"][0]["experiment"]["nodes"] == [1, 2]
    assert len(list((out / "runs").glob("*.parquet"))) == 4
    for stem in ("scaling_efficiency", "tokens_per_device", "exposed_comm"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:2000]

    res = CliRunner().invoke(sweep, [*args, "--no-plot"])
    assert res.exit_code == 0 and "0 run(s) simulated, 4 reused" in res.output


def test_plot_command_writes_png_and_svg_with_axis_lines(tmp_path) -> None:
    run_sweep(sweep_from_dict(SMALL), tmp_path / "s", SerialExecutor(), progress=False, csv=True)
    for source in (tmp_path / "s", tmp_path / "s" / "results.csv"):
        dest = tmp_path / f"plots-{source.suffix or 'dir'}"
        res = CliRunner().invoke(plot, [str(source), "--out", str(dest)])
        assert res.exit_code == 0, res.output
        assert "4 line(s) per plot" in res.output  # 2 systems x 2 micro-batch sizes
        files = sorted(p.name for p in dest.iterdir())
        assert files == sorted(
            f"{s}.{e}"
            for s in ("scaling_efficiency", "tokens_per_device", "exposed_comm")
            for e in ("png", "svg")
        )
        svg = (dest / "scaling_efficiency.svg").read_text()
        assert "micro_batch_size=2" in svg
        assert (dest / "exposed_comm.png").stat().st_size > 10_000
    res = CliRunner().invoke(plot, [str(tmp_path / "nothing-here")])
    assert res.exit_code == 2 and res.output.startswith("error: ")
