"""The CLI a user meets (issue 30, "CLI"): ``sensitivity --format`` and its progress bar,
``plot --image-format`` (``--format`` is every other command's table format), the group's help,
nccl-tests' columns and ``-b/-e/-f`` on ``collective``, a quiet local Dask cluster, and a
description on every bundled example."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from scaling.app.cli import main

REPO = Path(__file__).resolve().parents[1]

#: a sensitivity that runs in seconds: one input, two node counts
SENS = {
    "name": "tiny",
    "model": "gpt3-1.3b",
    "systems": ["mlu370-x8"],
    "nodes": [1, 2],
    "strategies": [{"kind": "fsdp"}],
    "training": {"seq_len": 512, "micro_batch_size": 1},
    "simulation": {"steps": 2, "warmup_steps": 2},
}

TINY = {
    "name": "tiny",
    "model": "gpt3-125m",
    "systems": ["dgx-a100"],
    "nodes": [1, 2],
    "simulation": {"steps": 1, "warmup_steps": 1, "network": "analytic"},
}


def _split(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), prog_name="scaling")
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


# ---- 1. sensitivity: --format and a progress bar ---------------------------------------------


def test_sensitivity_speaks_every_format_and_draws_progress(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(SENS))
    base = ["sensitivity", str(cfg), "--at", "nodes=2", "--only", "nics.count", "-j", "1"]
    base += ["--no-plot", "--out", str(tmp_path / "o")]
    code, out, err = _split(*base, "--format", "json", "--progress")
    assert code == 0, err
    rows = json.loads(out)  # stdout: only the table
    assert [r["input"] for r in rows] == ["mlu370-x8: node.nics.count"]
    assert rows[0]["at_low"] < rows[0]["at_nominal"] < rows[0]["at_high"]
    assert "sensitivity:" in err and "run/s" in err  # the bar, on stderr
    assert "wrote " in err and "one input at a time" in err  # the notes, on stderr
    code, out, err = _split(*base, "--format", "csv", "--no-progress")
    assert code == 0 and err.count("sensitivity:") == 0
    df = pd.read_csv(io.StringIO(out))
    assert list(df["input"]) == ["mlu370-x8: node.nics.count"]
    assert df.equals(pd.read_csv(tmp_path / "o" / "sensitivity.csv"))
    code, out, err = _split("-q", *base, "--format", "csv")
    assert code == 0 and err == ""  # -q: no notes, no bar


def test_counting_executor_counts_every_batch() -> None:
    from scaling.sweep.executors import CountingExecutor, SerialExecutor

    seen: list[tuple[int, int]] = []
    with CountingExecutor(SerialExecutor(), lambda d, t: seen.append((d, t))) as ex:
        assert sorted(v for _, _, v in ex.imap_unordered(abs, [-1, -2])) == [1, 2]
        assert [v for _, _, v in ex.imap_unordered(abs, [-3])] == [3]
    assert seen == [(0, 2), (1, 2), (2, 2), (2, 3), (3, 3)]


# ---- 2. plot --image-format ------------------------------------------------------------------


def test_plot_takes_image_format_and_refuses_format_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert _split("run", str(cfg), "--out", str(tmp_path / "r"), "--no-plot")[0] == 0
    code, out, err = _split("plot", str(tmp_path / "r"), "--image-format", "svg")
    assert code == 0, err
    assert (tmp_path / "r" / "scaling_efficiency.svg").stat().st_size > 0
    assert not (tmp_path / "r" / "scaling_efficiency.png").exists()
    for given, hint in (("pdf", "use --image-format pdf"), ("csv", "--image-format png|svg|pdf")):
        code, out, err = _split("plot", str(tmp_path / "r"), "--format", given)
        line = [x for x in err.splitlines() if x.startswith("Error")]
        assert code == 2 and len(line) == 1 and hint in line[0], err
    code, out, _ = _split("plot", "--help")
    assert "--image-format" in out and "--format" not in out.replace("--image-format", "")


# ---- 3. the group's help ---------------------------------------------------------------------


def test_top_level_help_names_what_the_tool_does() -> None:
    from scaling.app.entry import main as entry_main

    res = CliRunner().invoke(entry_main, ["--help"])
    head = " ".join(res.output.split("Options:")[0].split())
    assert "(DDP)" not in head
    for word in ("DDP", "FSDP", "Megatron", "tensor", "pipeline", "collective", "plan"):
        assert word in head, word
    for word in ("calibrat", "validat"):
        assert word in head, word


# ---- 4. collective: nccl-tests' columns and -b/-e/-f ------------------------------------------


def test_collective_has_nccl_tests_columns_and_flags() -> None:
    base = ["collective", "--system", "dgx-a100", "--network", "analytic", "--no-progress"]
    code, out, err = _split(*base, "-b", "8", "-e", "128M", "-f", "2", "--format", "csv")
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert list(df["size_bytes"]) == [8 * 2**k for k in range(25)]  # 8 B .. 128 MiB, x2
    assert list(df.columns[:5]) == ["size_bytes", "count", "type", "redop", "root"]
    assert set(df["type"]) == {"float"} and set(df["redop"]) == {"sum"}
    assert set(df["root"]) == {-1} and (df["count"] == df["size_bytes"] // 4).all()
    code, out, _ = _split(*base, "-b", "1M", "-e", "4M", "--stepfactor", "4")
    header = out.splitlines()[1].split()
    assert header[:7] == ["size", "(B)", "count", "type", "redop", "root", "time"], header
    assert [ln.split()[0] for ln in out.splitlines()[3:]] == ["1048576", "4194304"]
    for op, redop, root in (("all_gather", "none", -1), ("broadcast", "none", 0)):
        code, out, _ = _split(*base, "--op", op, "-b", "1M", "-e", "1M", "--format", "json")
        row = json.loads(out)[0]
        assert (row["redop"], row["root"]) == (redop, root), op
    # --sizes stays; one range, not two
    code, out, _ = _split(*base, "--sizes", "1M,2M", "--format", "csv")
    assert code == 0 and list(pd.read_csv(io.StringIO(out))["size_bytes"]) == [2**20, 2**21]
    for bad, msg in (
        (["--sizes", "1M", "-b", "8"], "--sizes and -b"),
        (["-b", "1G", "-e", "1M"], "-b 1G -e 1M: expected minBytes <= maxBytes"),
        (["-e", "12Q"], "-e: got '12Q'"),
    ):
        code, out, err = _split(*base, *bad)
        assert code == 2 and err.count("\n") == 1 and msg in err, (bad, err)


# ---- 5. a local Dask cluster is quiet --------------------------------------------------------


def test_library_info_logs_are_dropped_below_vv() -> None:
    from scaling.app.entry import _StderrHandler, configure_logging

    chatty = logging.getLogger("distributed.scheduler")
    old_level, old_err = chatty.level, sys.stderr
    chatty.setLevel(logging.INFO)  # as distributed's own config sets it
    try:
        for flags, lib_info, ours_info in (
            ((0, True), False, False),
            ((0, False), False, False),
            ((1, False), False, True),
            ((2, False), True, True),
        ):
            sys.stderr = buf = io.StringIO()
            configure_logging(*flags)
            chatty.info("State start")
            logging.getLogger("scaling.test").info("runs execute in process")
            chatty.warning("a warning")
            text = buf.getvalue()
            assert ("State start" in text) == lib_info, flags
            assert ("runs execute" in text) == ours_info, flags
            assert ("a warning" in text) == (not flags[1]), flags
    finally:
        sys.stderr = old_err
        chatty.setLevel(old_level)
        configure_logging(0, False)
    assert sum(isinstance(h, _StderrHandler) for h in logging.getLogger().handlers) == 1


def test_a_quiet_sweep_on_a_local_dask_cluster_prints_nothing(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    args = ["sweep", str(cfg), "--out", str(tmp_path / "o"), "--dask-local", "1", "--no-plot"]
    # a process of its own: the cluster's workers write to the real stderr
    res = subprocess.run(
        [sys.executable, "-m", "scaling", "-q", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0 and res.stderr == "", res.stderr[-2000:]


# ---- 6. every bundled example says what it is -------------------------------------------------


def test_every_bundled_example_has_a_description() -> None:
    from scaling.io.examples import bundled_configs

    found = bundled_configs()
    assert {"mlu-vs-gpu", "sweeps/ddp-buckets", "seed-table1"} <= set(found)
    missing = [n for n, p in found.items() if not yaml.safe_load(p.read_text()).get("description")]
    assert missing == []
    code, out, _ = _split("examples", "--format", "json")
    assert code == 0 and all(r["description"] for r in json.loads(out))
