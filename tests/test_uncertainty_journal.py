"""Issue 30: ``--uncertainty`` samples journalled as they finish and resumed after a kill, with
the same tables as an uninterrupted run; a journal of another run is not reused; a line cut by
a kill is dropped with a note (:mod:`scaling.io.journal`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from scaling.io.config import experiment_from_dict
from scaling.io.journal import Journal
from scaling.sweep.executors import Outcome, SerialExecutor, SweepExecutor
from scaling.sweep.uncertainty import JOURNAL_FILE, UncertaintyResult, run_uncertainty

N, SEED = 4, 3


def _tiny() -> dict:
    return {
        "name": "tiny",
        "model": "gpt3-1.3b",
        "systems": ["mlu370-x8"],
        "nodes": [1, 2],
        "strategies": [{"kind": "fsdp"}],
        "training": {"seq_len": 512, "micro_batch_size": 1},
        "simulation": {"steps": 2, "warmup_steps": 2},
    }


class Killed(Exception):
    """Stands for a kill: the process stops between two finished runs."""


class Counting(SweepExecutor):
    """Runs in process, counting simulated runs; raises :class:`Killed` after ``stop`` runs."""

    def __init__(self, stop: int | None = None) -> None:
        self.calls = 0
        self.stop = stop

    def imap_unordered(self, fn: Callable[[Any], Any], args: Sequence[Any]) -> Iterator[Outcome]:
        for outcome in SerialExecutor().imap_unordered(fn, args):
            self.calls += 1
            yield outcome
            if self.stop is not None and self.calls >= self.stop:
                raise Killed


def _tables(u: UncertaintyResult) -> list[str]:
    return [df.to_csv(index=False) for df in (u.samples, u.runs, u.shaped, u.branches)]


def _run_lines(path: Path) -> list[str]:
    """The journal's finished runs (sample runs and sample-0 checks)."""
    return [ln for ln in path.read_text().splitlines() if '"result":' in ln]


def test_a_killed_run_resumes_with_identical_tables_and_only_the_missing_runs(
    tmp_path: Path,
) -> None:
    exp = experiment_from_dict(_tiny())
    points = len(exp.jobs())
    whole = Counting()
    ref = run_uncertainty(exp, N, SEED, whole)  # uninterrupted, no journal
    units = N * points + points  # every sample run and the sample-0 check of each point
    probes = whole.calls - units - points  # the steady-state probe runs (and the nominal runs)
    journal = tmp_path / JOURNAL_FILE
    with pytest.raises(Killed):
        run_uncertainty(exp, N, SEED, Counting(stop=points + probes + 3), journal=journal)
    done = len(_run_lines(journal))
    assert done == 3  # each run on disk as it finished
    notes: list[str] = []
    again = Counting()
    got = run_uncertainty(exp, N, SEED, again, journal=journal, note=notes.append)
    assert again.calls == units - done  # only what the journal lacks (plans reused too)
    assert _tables(got) == _tables(ref)  # byte-identical CSVs
    assert got.check_max_rel == ref.check_max_rel
    assert any("resuming" in n for n in notes)
    third = Counting()  # a finished journal: nothing simulated again
    assert _tables(run_uncertainty(exp, N, SEED, third, journal=journal)) == _tables(ref)
    assert third.calls == 0


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("seed", SEED + 1, "seed 3, this run has 4"),
        ("samples", 2, "samples 4, this run has 2"),
        ("code", None, "code"),
    ],
)
def test_a_journal_of_another_run_is_not_reused(
    tmp_path: Path, field: str, value: Any, why: str
) -> None:
    exp = experiment_from_dict(_tiny())
    journal = tmp_path / JOURNAL_FILE
    run_uncertainty(exp, N, SEED, Counting(), journal=journal)
    n, seed = N, SEED
    if field == "code":  # the journal written by another version of the simulator
        lines = journal.read_text().splitlines()
        head = json.loads(lines[0])
        head["journal"]["code"] = "0.0.1+000000000000"
        journal.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    elif field == "seed":
        seed = value
    else:
        n = value
    notes: list[str] = []
    fresh = Counting()
    run_uncertainty(exp, n, seed, fresh, journal=journal, note=notes.append)
    whole = Counting()
    run_uncertainty(exp, n, seed, whole)
    assert fresh.calls == whole.calls  # everything simulated again
    assert [x for x in notes if "not reused" in x and why in x], notes
    # started afresh, not appended to: each sample run and each point's check once
    assert len(_run_lines(journal)) == (n + 1) * len(exp.jobs())


def test_another_config_is_not_reused(tmp_path: Path) -> None:
    journal = tmp_path / JOURNAL_FILE
    run_uncertainty(experiment_from_dict(_tiny()), 2, SEED, Counting(), journal=journal)
    notes: list[str] = []
    other = experiment_from_dict({**_tiny(), "nodes": [1, 4]})
    run_uncertainty(other, 2, SEED, Counting(), journal=journal, note=notes.append)
    assert any("not reused" in n and "config_hash" in n for n in notes), notes


def test_a_cut_last_line_is_dropped_with_a_note_and_not_fused(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path, {"kind": "t"})
    j.put("a", {"x": 1.5})
    j.put("b", {"x": 2})
    path.write_text(path.read_text() + '{"key": "c", "x"')  # a kill mid-write
    notes: list[str] = []
    j = Journal(path, {"kind": "t"}, notes.append)
    assert j.done == {"a": {"x": 1.5}, "b": {"x": 2}} and j.reused == 2
    assert len(notes) == 1 and "cut" in notes[0]
    j.put("c", {"x": 3})
    assert Journal(path, {"kind": "t"}).done["c"] == {"x": 3}  # the next line reads back whole
    assert Journal(None).done == {}  # in memory: no file


def test_cli_resumes_from_a_cut_journal_with_the_same_csvs(tmp_path: Path) -> None:
    import yaml
    from click.testing import CliRunner

    from scaling.app.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(_tiny()))
    out = tmp_path / "o"
    args = ["run", str(cfg), "--uncertainty", str(N), "--seed", str(SEED), "--jobs", "1"]
    args += ["--no-plot", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    names = [f"uncertainty_{t}.csv" for t in ("samples", "runs", "summary", "branches")]
    first = [(out / f).read_bytes() for f in names]
    journal = out / JOURNAL_FILE
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:5]) + lines[5][:17])  # header, plans, 3 runs, a cut line
    res = CliRunner().invoke(main, args)  # the same command again
    assert res.exit_code == 0, res.output
    assert "last line was cut" in res.output and "resuming: 4 finished unit(s)" in res.output
    assert [(out / f).read_bytes() for f in names] == first


def test_python_api_writes_the_tables_and_journal_into_a_locked_folder(tmp_path: Path) -> None:
    import pandas as pd

    from scaling import ConfigError
    from scaling import run_uncertainty as api_run
    from scaling.io.files import results_lock

    out = tmp_path / "u"
    u = api_run(_tiny(), 2, seed=SEED, out=out)
    assert pd.read_csv(out / "uncertainty_runs.csv").shape[0] == len(u.runs)
    assert len(_run_lines(out / JOURNAL_FILE)) == 3 * 2  # 2 samples + the check, 2 points
    with results_lock(out), pytest.raises(ConfigError, match="is writing results here"):
        api_run(_tiny(), 2, seed=SEED, out=out)  # a second writer is refused


@pytest.mark.slow
def test_kill_9_mid_run_then_the_same_command_resumes(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(_tiny()))

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "scaling", "run", str(cfg), "--uncertainty", "16",
                "--seed", str(SEED), "--jobs", "1", "--no-plot", "--no-progress", "--out",
                str(out)]  # fmt: skip

    ref = tmp_path / "ref"
    subprocess.run(cmd(ref), check=True, capture_output=True, timeout=600)
    out = tmp_path / "o"
    proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / JOURNAL_FILE
    deadline = time.monotonic() + 300
    while not (journal.is_file() and len(_run_lines(journal)) >= 4):
        assert proc.poll() is None and time.monotonic() < deadline, "no journal line"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    k = len(_run_lines(journal))
    assert k < 17 * 2  # killed before the end
    res = subprocess.run(cmd(out), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stdout + res.stderr
    for t in ("samples", "runs", "summary", "branches"):
        f = f"uncertainty_{t}.csv"
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
