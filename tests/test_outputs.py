"""Output files under faults (issue 30): a full or read-only disk leaves no partial or empty file
and says so in one line; special files are refused as input; one results folder, one writer."""

from __future__ import annotations

import builtins
import errno
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from scaling.app.cli import main
from scaling.io.errors import ConfigError, read_yaml
from scaling.io.files import LOCK_FILE, results_lock, write_output_text
from scaling.sweep.runner import run_sweep

TINY = {
    "name": "tiny",
    "model": "gpt3-125m",
    "systems": ["dgx-a100"],
    "nodes": [1],
    "simulation": {"steps": 1, "warmup_steps": 1, "network": "analytic"},
}


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


class _FailingFile:
    """A file on a disk that fills up: the first write stores half its data, then fails."""

    def __init__(self, fh: Any, err: int) -> None:
        self._fh, self._err = fh, err

    def write(self, data: Any) -> int:
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise OSError(self._err, os.strerror(self._err))

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _fail_writes_under(monkeypatch, disk: Path, err: int) -> None:
    """Files opened for writing under ``disk`` fail on their first write with ``err`` (as a
    full or read-only disk would; a real one needs a tmpfs, so the writes are patched)."""
    real_open = builtins.open

    def failing_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        fh = real_open(file, mode, *a, **k)
        on_disk = isinstance(file, (str, os.PathLike)) and str(file).startswith(str(disk))
        return _FailingFile(fh, err) if on_disk and set(mode) & set("wax+") else fh

    monkeypatch.setattr(builtins, "open", failing_open)
    monkeypatch.setattr(io, "open", failing_open)


@pytest.fixture(params=[errno.ENOSPC, errno.EROFS], ids=["full disk", "read-only"])
def bad_disk(request, monkeypatch, tmp_path) -> Path:
    """A folder whose files fail on their first write."""
    disk = tmp_path / "disk"
    disk.mkdir()
    _fail_writes_under(monkeypatch, disk, request.param)
    return disk


def _config(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


COMMANDS = {
    "collective": lambda cfg, out: [
        "collective", "--system", "dgx-a100", "--sizes", "1M:2M", "--out", str(out / "c.csv"),
    ],
    "schedule": lambda cfg, out: ["schedule", str(cfg), "--out", str(out / "s.json")],
    "trace": lambda cfg, out: ["trace", str(cfg), "--out", str(out / "t.json")],
    "validate": lambda cfg, out: ["validate", "--study", "nccl", "--out", str(out / "v")],
    "schema": lambda cfg, out: ["schema", "experiment", "--out", str(out / "e.json")],
}  # fmt: skip


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_failed_write_is_one_line_and_leaves_no_file(bad_disk, tmp_path, command) -> None:
    code, out = cli(*COMMANDS[command](_config(tmp_path), bad_disk))
    assert code == 2, out
    err = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and str(bad_disk) in err[0], out
    assert ("No space left" in err[0]) or ("Read-only" in err[0]), out
    assert "Traceback" not in out
    left = [p for p in bad_disk.rglob("*") if p.is_file()]
    assert left == [], left  # neither an empty/partial target nor a temp file


def test_a_device_is_written_in_place(tmp_path) -> None:
    # --out /dev/stdout cannot be renamed onto: written in place (and /dev/null swallows it)
    write_output_text(Path(os.devnull), "x")
    code, out = cli(*COMMANDS["collective"](None, tmp_path)[:-1], os.devnull)
    assert code == 0, out


def test_special_files_are_refused_as_input(tmp_path) -> None:
    code, out = cli("run", "/dev/zero", "--check")
    assert code == 2 and "/dev/zero: is a device; expected a regular YAML" in out, out
    with pytest.raises(ConfigError, match="is a device"):
        read_yaml("/dev/urandom")


def test_a_pipe_is_read_with_a_bound(monkeypatch, tmp_path) -> None:
    from scaling.io import errors

    fifo = tmp_path / "cfg.fifo"
    os.mkfifo(fifo)
    monkeypatch.setattr(errors, "MAX_YAML_CHARS", 1000)
    # a writer that never stops: the reader takes at most 4,001 bytes and refuses
    writer = subprocess.Popen(
        [sys.executable, "-c", f"import sys\nf = open({str(fifo)!r}, 'w')\nwhile True: f.write('#' * 4096)"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with pytest.raises(ConfigError, match="more than 4,000 bytes"):
            read_yaml(fifo)
    finally:
        writer.kill()
        writer.wait()


def test_a_second_writer_of_a_results_folder_is_refused(tmp_path) -> None:
    cfg, out = _config(tmp_path), tmp_path / "out"
    with results_lock(out):  # another process would hold it the same way (flock)
        code, text = cli("run", str(cfg), "--out", str(out), "--no-plot")
        assert code == 2 and "is writing results here" in text and "--out" in text, text
        assert not (out / "results.csv").exists()
        with pytest.raises(ConfigError, match="is writing results here"):
            run_sweep(TINY, out, progress=False)
    code, text = cli("run", str(cfg), "--out", str(out), "--no-plot")
    assert code == 0, text
    assert (out / "results.csv").exists() and (out / LOCK_FILE).exists()


def test_the_lock_is_held_across_processes_and_dropped_when_its_holder_dies(tmp_path) -> None:
    cfg, out = _config(tmp_path), tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from scaling.io.files import results_lock
                with results_lock({str(out)!r}):
                    print("held", flush=True)
                    time.sleep(600)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code, text = cli("run", str(cfg), "--out", str(out), "--no-plot")
        assert code == 2 and f"pid {holder.pid}" in text, text
    finally:
        holder.kill()  # as kill -9: the kernel drops the flock
        holder.wait()
    code, text = cli("run", str(cfg), "--out", str(out), "--no-plot")
    assert code == 0, text


def test_a_rerun_sweep_leaves_no_stale_csv(tmp_path) -> None:
    from scaling.sweep.executors import SerialExecutor

    out = tmp_path / "s"
    run_sweep(TINY, out, SerialExecutor(), progress=False, csv=True)
    assert (out / "results.csv").exists()
    run_sweep(TINY, out, SerialExecutor(), progress=False)  # resumed, without --csv
    assert (out / "results.parquet").exists() and not (out / "results.csv").exists()


def test_a_plot_on_a_full_disk_leaves_no_partial_image(tmp_path, monkeypatch) -> None:
    cfg, res = _config(tmp_path), tmp_path / "res"
    assert cli("run", str(cfg), "--out", str(res), "--no-plot")[0] == 0
    disk = tmp_path / "disk"
    disk.mkdir()
    _fail_writes_under(monkeypatch, disk, errno.ENOSPC)
    code, out = cli("plot", str(res), "--out", str(disk), "--image-format", "png")
    assert code == 2 and "No space left" in out, out
    assert [p for p in disk.rglob("*") if p.is_file()] == []
