"""Hardened against bad input, huge input and faults (issue 19).

A generated corpus of bad inputs — every scalar leaf of the bundled experiment configs and of one
topology mutated in type and range, every mapping given an unknown key, every key deleted in
turn, and hostile YAML (alias bombs, deep nesting, python tags, NaN/inf, huge numbers, binary) —
where every case ends with exit 0 (valid) or exit 2 and one line naming the file (and line) —
never a traceback. The corpus runs in process (``scaling run --check``: validate, refuse, size;
nothing simulated); a sampled subset is in the default tier, the whole corpus is ``slow``. A few
cases run in subprocesses under a timeout and memory limits. Then one test per fix: size limits
before building, one-line write errors, a full disk mid-sweep, a bad row failing only its run,
values that mean nothing, orphaned workers after ``kill -9``, and checksummed run files.
"""

from __future__ import annotations

import copy
import errno
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from scaling.app.cli import main
from scaling.io.config import DEFAULT_MAX_RANKS, experiment_from_dict, load_experiment
from scaling.io.errors import MAX_YAML_DEPTH, ConfigError, parse_yaml
from scaling.io.files import CHECKSUM_KEY, checksum_ok
from scaling.sweep import runner
from scaling.sweep.executors import SerialExecutor, make_executor
from scaling.sweep.runner import run_sweep

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TOPOLOGY = REPO / "topologies" / "dgx-a100.yaml"
#: what a refusal of a valid-looking but impossible job says (no file: the job, not the file)
INFEASIBLE = ("GiB per rank", "cannot train", "has no ")


def cli(*args: str) -> tuple[int, str, BaseException | None]:
    res = CliRunner().invoke(main, list(args))
    exc = res.exception if not isinstance(res.exception, SystemExit) else None
    return res.exit_code, res.output, exc


# ---- the corpus -------------------------------------------------------------------------------


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _mappings(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        yield path
        for k, v in node.items():
            yield from _mappings(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _mappings(v, (*path, i))


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        node = node[k]
    return node


def _mutations(v: Any) -> list[Any]:
    """Wrong types and out-of-range values for a leaf holding ``v``."""
    if isinstance(v, bool):
        return ["maybe", 2, None]
    if isinstance(v, int | float):
        return ["zzz", [1], None, -1, 0, 10**30, 1e18, float("inf"), float("nan")]
    return [7, [1], None, "", "x" * 300]


def corpus(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, mutated document) for every leaf mutation, unknown key and deleted key."""
    for path in _leaves(data):
        for m in _mutations(_get(data, path)):
            d = copy.deepcopy(data)
            _get(d, path[:-1])[path[-1]] = m
            yield f"{'.'.join(map(str, path))}={m!r:.20}", d
    for path in _mappings(data):
        d = copy.deepcopy(data)
        _get(d, path)["zz_unknown"] = 1
        yield f"{'.'.join(map(str, path)) or '(top)'}+unknown", d
        for k in _get(data, path):
            d = copy.deepcopy(data)
            del _get(d, path)[k]
            yield f"{'.'.join(map(str, (*path, k)))} deleted", d


def _topology_probe(tmp: Path, topo: Path) -> Path:
    cfg = {
        "name": "probe",
        "model": "gpt3-125m",
        "systems": [str(topo)],
        "nodes": [1],
        "simulation": {"steps": 1, "warmup_steps": 0},
    }
    p = tmp / "probe.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def all_cases() -> list[tuple[str, str]]:
    """(source file, label) of every corpus case, in a fixed order."""
    out = []
    for src in [*CONFIGS, TOPOLOGY]:
        for label, _ in corpus(yaml.safe_load(src.read_text())):
            out.append((src.name, label))
    return out


def _documents(src_name: str) -> dict[str, dict[str, Any]]:
    src = TOPOLOGY if src_name == TOPOLOGY.name else REPO / "configs" / src_name
    return dict(corpus(yaml.safe_load(src.read_text())))


def assert_clean(code: int, out: str, exc: BaseException | None, names: list[str]) -> None:
    """Exit 0, or exit 2 with one line naming one of ``names`` (with a line or --set) or an
    infeasible job; never an exception."""
    assert exc is None, f"{type(exc).__name__}: {exc}"
    assert code in (0, 2), (code, out)
    if code == 2:
        lines = out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out
        msg = lines[0]
        named = any(re.search(re.escape(n) + r"(:\d+|:| \(--set\))", msg) for n in names)
        # or the file the mutation led to (a topology, a library) with its line
        named = named or re.search(r"\.ya?ml:\d+: \S", msg) is not None
        assert named or any(s in msg for s in INFEASIBLE), msg


def run_case(tmp: Path, src_name: str, doc: dict[str, Any]) -> None:
    if src_name == TOPOLOGY.name:
        topo = tmp / "mut.yaml"
        topo.write_text(yaml.safe_dump(doc, sort_keys=False))
        target = _topology_probe(tmp, topo)
        names = [str(topo), str(target)]
    else:
        target = tmp / src_name
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        names = [str(target)]
    code, out, exc = cli("run", str(target), "--check")
    assert_clean(code, out, exc, names)


CASES = all_cases()
#: the default tier runs every SAMPLE-th case (a fixed spread over every file)
SAMPLE = 50


def _run_cases(tmp: Path, cases: list[tuple[str, str]]) -> None:
    by_file: dict[str, list[str]] = {}
    for f, label in cases:
        by_file.setdefault(f, []).append(label)
    bad = []
    for f, labels in by_file.items():
        docs = _documents(f)
        for label in labels:
            try:
                run_case(tmp, f, docs[label])
            except AssertionError as e:
                bad.append(f"{f} [{label}]: {str(e).splitlines()[0][:300]}")
    assert not bad, f"{len(bad)} of {len(cases)} cases:\n" + "\n".join(bad[:20])


def test_corpus_is_large_and_covers_every_file() -> None:
    files = {f for f, _ in CASES}
    assert files == {p.name for p in [*CONFIGS, TOPOLOGY]}
    assert len(CASES) > 1500


def test_corpus_sample(tmp_path) -> None:
    _run_cases(tmp_path, CASES[::SAMPLE])


@pytest.mark.slow
def test_corpus_whole(tmp_path) -> None:
    _run_cases(tmp_path, CASES)


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
)

HOSTILE = {
    "alias bomb": (BOMB, "alias bomb"),
    "deep nesting": ("model: " + "[" * 5000 + "]" * 5000 + "\n", "nesting deeper"),
    "deep block nesting": (
        "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n",
        "nesting deeper",
    ),
    "recursive alias": ("model: &m [1, *m]\nsystems: [dgx-a100]\nnodes: [1]\n", "alias *m"),
    "python tag": ("model: !!python/object/apply:os.system [ls]\n", "YAML syntax error"),
    "python name": ("model: !!python/name:os.system\n", "YAML syntax error"),
    "nan nodes": ("model: gpt3-125m\nsystems: [dgx-a100]\nnodes: [.nan]\n", "nodes[0]"),
    "inf budget": (
        "model: gpt3-125m\nsystems: [dgx-a100]\nnodes: [1]\ntraining: {token_budget: .inf}\n",
        "finite",
    ),
    "5000-digit int": (
        "model: gpt3-125m\nsystems: [dgx-a100]\nnodes: [" + "9" * 5000 + "]\n",
        "4,300",
    ),
    "huge int": ("model: gpt3-125m\nsystems: [dgx-a100]\nnodes: [" + "9" * 400 + "]\n", "nodes[0]"),
    "huge float": ("model: gpt3-125m\nsystems: [dgx-a100]\nnodes: [1e400]\n", "nodes[0]"),
    "binary": (bytes(range(256)) * 64, "binary"),
    "bom and tabs": ("\ufeffmodel:\tgpt3-125m\n\t- x\n", ""),
    "top-level scalar": ("42\n", "top level"),
    "control characters": ("model: \x07\x1b[31m\n", ""),
    "long scalar": ("model: " + "x" * 200_000 + "\n", "characters"),
}


@pytest.mark.parametrize("label", list(HOSTILE))
def test_hostile_yaml_is_one_line(tmp_path, label) -> None:
    text, fragment = HOSTILE[label]
    p = tmp_path / "hostile.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    code, out, exc = cli("run", str(p), "--check")
    assert_clean(code, out, exc, [str(p)])
    assert code == 2 and fragment in out, out


#: hostile documents the event-stream limits refuse, and how many parser events each may cost
#: at most: the deep ones stop at the first collection past MAX_YAML_DEPTH, the others read
#: their text once and never expand an alias. "deep nesting": libyaml (the fast first pass) stops
#: at its own depth limit a few events in, and the pure-Python re-read then refuses it as before
LIMITED = {
    "alias bomb": 200,
    "deep nesting": MAX_YAML_DEPTH + 16,
    "deep block nesting": 3 * MAX_YAML_DEPTH + 8,
    "recursive alias": 20,
    "long scalar": 10,
}


@pytest.mark.parametrize("label", list(LIMITED))
def test_hostile_yaml_is_refused_with_bounded_work(monkeypatch, label) -> None:
    """Instead of a wall-clock bound (no test asserts time): the refusal comes from the event
    stream after a bounded number of events, and the composer (which would expand aliases and
    recurse once per nesting level) never runs."""
    text, fragment = HOSTILE[label]
    events = 0
    parse = yaml.parse

    def counting_parse(*a, **k):
        nonlocal events
        for ev in parse(*a, **k):
            events += 1
            yield ev

    def no_compose(self):
        raise AssertionError("the composer ran")

    monkeypatch.setattr(yaml, "parse", counting_parse)
    monkeypatch.setattr(yaml.SafeLoader, "get_single_node", no_compose)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        parse_yaml(text, "hostile.yaml")
    assert 0 < events <= LIMITED[label]


def test_alias_bomb_in_a_set_value() -> None:
    levels = ["a: &a [x,x,x,x,x,x,x,x,x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(9)
    ]
    code, out, exc = cli(
        "run", str(CONFIGS[0]), "--check", "--set", f"description={{{', '.join(levels)}}}"
    )
    assert exc is None and code == 2 and "--set" in out and "alias bomb" in out, out
    with pytest.raises(ConfigError, match="alias bomb"):
        parse_yaml(BOMB, "x.yaml")


def test_yaml_limits_keep_bundled_files() -> None:
    for p in [
        *CONFIGS,
        *(REPO / "topologies").rglob("*.yaml"),
        *(REPO / "configs").rglob("*.yaml"),
    ]:
        parse_yaml(p.read_text(), str(p))  # none hits a limit
    with pytest.raises(ConfigError, match=f"deeper than {MAX_YAML_DEPTH}"):
        parse_yaml("a: " + "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1), "x")
    parse_yaml("a: " + "[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1), "x")


# ---- subprocesses under limits ----------------------------------------------------------------

GiB = 1024**3


def _limits() -> None:
    # address space as a hard stop (imports reserve more virtual memory than they touch);
    # the 1 GiB bound is asserted on the child's peak RSS
    resource.setrlimit(resource.RLIMIT_AS, (4 * GiB, 4 * GiB))


def run_limited(args: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str, float]:
    """Run ``scaling ARGS`` in a subprocess under a timeout: exit code, stderr, peak RSS (B)."""
    err_path = cwd / "stderr.txt"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scaling.app.cli", *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_limits,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode != -signal.SIGKILL, f"scaling {' '.join(args)[:80]} ran past {timeout} s"
    return proc.returncode, err_path.read_text(), usage.ru_maxrss * 1024


HUGE = {
    "alias bomb file": lambda d: ["run", str(_w(d, BOMB)), "--no-plot"],
    "65,536 nodes": lambda d: [
        "run", str(CONFIGS[0]), "--set", "nodes=[65536]", "--out", str(d / "o"),
    ],
    "1e18 nodes": lambda d: [
        "run", str(CONFIGS[0]), "--set", "nodes=[1000000000000000000]", "--out", str(d / "o"),
    ],
    "collective 100,000 nodes": lambda d: [
        "collective", "--system", "dgx-a100", "--nodes", "100000", "--sizes", "1M",
    ],
    "1e9 steps": lambda d: [
        "run", str(CONFIGS[0]), "--set", "simulation.steps=1000000000", "--out", str(d / "o"),
    ],
    "400-digit sizes": lambda d: ["collective", "--system", "dgx-a100", "--sizes", "1" * 400],
    "sweep of 10^8 points": lambda d: [
        "sweep", str(_w(d, _big_sweep())), "--out", str(d / "s"), "--jobs", "1",
    ],
}  # fmt: skip


def _w(d: Path, text: str) -> Path:
    p = d / "in.yaml"
    p.write_text(text)
    return p


def _big_sweep() -> str:
    axes = {"training.seq_len": list(range(1, 10_001)), "simulation.seed": list(range(10_001))}
    return yaml.safe_dump({"base_config": str(CONFIGS[0]), "axes": axes})


@pytest.mark.parametrize(
    "label",
    [pytest.param(k, marks=[] if k in ("alias bomb file",) else pytest.mark.slow) for k in HUGE],
)
def test_huge_input_refused_fast_and_small(tmp_path, label) -> None:
    code, err, rss = run_limited(HUGE[label](tmp_path), tmp_path)
    assert code == 2, (code, err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert rss < GiB, rss


# ---- Fix 1: size limits before building -------------------------------------------------------


def test_too_many_ranks_refused_with_estimate_and_knob() -> None:
    code, out, exc = cli("run", str(REPO / "configs" / "mlu-vs-gpu.yaml"), "--check",
                         "--set", "nodes=[1,65536]")  # fmt: skip
    assert exc is None and code == 2
    assert "nodes[1]" in out and "524,288 ranks" in out and "GiB" in out
    assert "simulation.max_ranks" in out
    # the knob raises it
    big = ["--set", "nodes=[65536]", "--set", "simulation.max_ranks=600000"]
    exp = load_experiment(REPO / "configs" / "mlu-vs-gpu.yaml", [s for s in big if s != "--set"])
    assert max(e["ranks"] for e in exp.estimates()) == 524_288


def test_limits_sit_above_the_benchmarks_and_leave_hashes_alone() -> None:
    assert DEFAULT_MAX_RANKS >= 32_768
    # 4,096 nodes of 8 (32,768 ranks, the largest collective benchmarked) is accepted
    d = {"model": "gpt3-1.3b", "systems": ["dgx-a100"], "nodes": [4096]}
    exp = experiment_from_dict(d)
    # the limits are not inputs: at their defaults they are not in the hash
    assert "max_ranks" not in exp.inputs()["experiment"]["simulation"]
    raised = experiment_from_dict({**d, "simulation": {"max_ranks": 10**6}})
    assert raised.config_hash() != exp.config_hash()  # a non-default limit is recorded


def test_micro_batch_limit() -> None:
    code, out, exc = cli(
        "run", str(CONFIGS[0]), "--check", "--set", "training.grad_accum_steps=5000"
    )
    assert exc is None and code == 2
    assert "micro-batches" in out and "simulation.max_micro_batches" in out


def test_schedule_step_limit() -> None:
    code, out, exc = cli("schedule", str(REPO / "configs" / "mlu-vs-gpu.yaml"), "--set",
                         "systems=[dgx-a100]", "--set", "nodes=[1]", "--set", "strategies=null",
                         "--step", "999999")  # fmt: skip
    assert exc is None and code == 2 and "simulation.max_micro_batches" in out


def test_collective_rank_limit_and_knob() -> None:
    code, out, _ = cli("collective", "--system", "dgx-a100", "--nodes", "100000", "--sizes", "1M")
    assert code == 2 and "800,000 ranks" in out and "--max-ranks" in out
    code, out, _ = cli("collective", "--system", "dgx-a100", "--nodes", "2", "--sizes", "1M",
                       "--max-ranks", "8")  # fmt: skip
    assert code == 2 and "16 ranks" in out


def test_topology_counts_are_bounded(tmp_path) -> None:
    doc = yaml.safe_load(TOPOLOGY.read_text())
    doc["node"]["nics"]["count"]["value"] = 10**6
    topo = tmp_path / "t.yaml"
    topo.write_text(yaml.safe_dump(doc))
    code, out, exc = cli("run", str(_topology_probe(tmp_path, topo)), "--check")
    assert exc is None and code == 2 and "node.nics.count.value" in out and str(topo) in out


# ---- Fix 2: one line where a traceback was ----------------------------------------------------


SMALL = ["--set", "systems=[dgx-a100]", "--set", "nodes=[1]", "--set", "strategies=null",
         "--set", "simulation.steps=1", "--set", "simulation.warmup_steps=0",
         "--set", "model=gpt3-125m", "--no-plot"]  # fmt: skip


def test_run_out_is_a_file_fails_before_simulating(tmp_path, monkeypatch) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    import scaling.app.api as api

    monkeypatch.setattr(api, "run_job", lambda job: pytest.fail("simulated before --out check"))
    code, out, exc = cli("run", str(CONFIGS[0]), *SMALL, "--out", str(f))
    assert exc is None and code == 2 and "is a file" in out and len(out.strip().splitlines()) == 1
    code, out, exc = cli("run", str(CONFIGS[0]), *SMALL, "--out", "/dev/null")
    assert exc is None and code == 2 and "/dev/null" in out


def test_run_write_failure_is_one_line(tmp_path, monkeypatch) -> None:
    import scaling.io.files as files

    real = files.atomic_write

    def full(path, write):
        if path.name == "resolved_config.yaml":
            raise files.write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        real(path, write)

    monkeypatch.setattr(files, "atomic_write", full)
    monkeypatch.setattr(files, "write_text_atomic", lambda p, t: full(p, None))
    code, out, exc = cli("run", str(CONFIGS[0]), *SMALL, "--out", str(tmp_path / "o"))
    assert exc is None and code == 2
    assert "No space left on device" in out and len(out.strip().splitlines()) == 1


def test_collective_out_to_a_full_device() -> None:
    code, out, exc = cli(
        "collective", "--system", "dgx-a100", "--sizes", "1M", "--out", "/dev/full"
    )
    assert exc is None and code == 2
    assert "/dev/full" in out and "No space left" in out


def test_report_checked_before_simulating(monkeypatch) -> None:
    import scaling.app.api as api

    monkeypatch.setattr(api, "run_job", lambda job: pytest.fail("simulated before the check"))
    code, out, exc = cli("run", str(CONFIGS[0]), *SMALL, "--set", "report=seed-table1")
    assert exc is None and code == 2 and "report" in out and "two or more systems" in out


def test_inf_in_a_topology_names_its_line(tmp_path) -> None:
    for field in (("node", "fabric", "link_bw_GBps"), ("device", "kernel_launch_us")):
        doc = yaml.safe_load(TOPOLOGY.read_text())
        _get(doc, field)["value"] = float("inf")
        topo = tmp_path / "t.yaml"
        topo.write_text(yaml.safe_dump(doc, sort_keys=False))
        code, out, exc = cli("run", str(_topology_probe(tmp_path, topo)), "--check")
        assert exc is None and code == 2
        assert re.search(re.escape(str(topo)) + r":\d+: " + re.escape(".".join(field)), out), out
        assert "finite" in out


def test_long_names_and_sizes() -> None:
    code, out, exc = cli("collective", "--system", "a" * 300, "--sizes", "1M")
    assert exc is None and code == 2 and "300 characters" in out
    code, out, exc = cli("run", str(CONFIGS[0]), "--check", "--set", f"systems=[{'b' * 300}]")
    assert exc is None and code == 2 and "systems" in out
    code, out, exc = cli("collective", "--system", "dgx-a100", "--sizes", "9" * 400)
    assert exc is None and code == 2 and "--sizes" in out and len(out) < 300


# ---- Fix 2: faults mid-sweep ------------------------------------------------------------------

TINY_SWEEP = {
    "name": "tiny",
    "base": {
        "model": "gpt3-125m",
        "systems": ["dgx-a100"],
        "nodes": [1, 2],
        "simulation": {"steps": 1, "warmup_steps": 0},
    },
    "axes": {"training.micro_batch_size": [1, 2]},
}


def test_full_disk_mid_sweep_stops_cleanly_and_resumes(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    real = runner.write_parquet
    written: list[Path] = []

    def filling(df, path):
        if len(written) >= 2 and path.parent.name == "runs":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(df, path)
        written.append(path)

    monkeypatch.setattr(runner, "write_parquet", filling)
    with pytest.raises(ConfigError) as info:
        run_sweep(TINY_SWEEP, out, SerialExecutor(), progress=False)
    msg = str(info.value)
    assert "No space left on device" in msg and "2 run(s)" in msg and "resume" in msg
    assert "\n" not in msg
    assert len(list((out / "runs").glob("*.parquet"))) == 2
    assert not list((out / "runs").glob(".*.tmp"))
    monkeypatch.setattr(runner, "write_parquet", real)
    rerun: list[str] = []
    df = run_sweep(TINY_SWEEP, out, SerialExecutor(), progress=False,
                   on_run=lambda r, _: rerun.append(r.key))  # fmt: skip
    assert len(rerun) == 2 and (df["status"] == "ok").all() and len(df) == 4


def test_sweep_cli_full_disk_is_one_line(tmp_path, monkeypatch) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(TINY_SWEEP))

    def full(df, path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(runner, "write_parquet", full)
    code, out, exc = cli("sweep", str(spec), "--out", str(tmp_path / "o"), "--jobs", "1",
                         "--no-progress", "--no-plot")  # fmt: skip
    assert exc is None and code == 2
    assert "Read-only file system" in out and "resume" in out


def test_a_row_that_cannot_be_stored_fails_only_its_run(tmp_path, monkeypatch) -> None:
    real = runner.write_parquet
    calls = {"n": 0}

    def overflow_once(df, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OverflowError("Python int too large to convert to C long")
        real(df, path)

    monkeypatch.setattr(runner, "write_parquet", overflow_once)
    df = run_sweep(TINY_SWEEP, tmp_path / "o", SerialExecutor(), progress=False)
    assert (df["status"] == "ok").sum() == 3
    bad = df[df["status"] == "failed"]
    assert len(bad) == 1 and "OverflowError" in bad["error"].iloc[0]
    assert bad["devices"].iloc[0] > 0  # identity kept


# ---- Fix 4: values that mean nothing ----------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--sizes", "0"], "0 B"),
        (["--sizes", "1M", "--nodes", "1", "--per-node", "1"], "1 rank"),
        (["--sizes", "0:1M"], "0 B"),
        (["--sizes", ",".join(["1M"] * 2000)], "at most"),
    ],
)
def test_collective_meaningless_values(args, fragment) -> None:
    code, out, exc = cli("collective", "--system", "dgx-a100", *args)
    assert exc is None and code == 2 and fragment in out, out


def test_algo_the_library_lacks_needs_what_if() -> None:
    base = ["collective", "--system", "mlu370-x8", "--nodes", "2", "--sizes", "1M", "--algo"]
    # CNCL has ring and tree (cncl.h, CNCL 1.25); recursive halving-doubling it lacks
    code, out, _ = cli(*base, "rhd")
    assert code == 2 and "cncl" in out and "--what-if" in out
    code, out, exc = cli(*base, "rhd", "--what-if")
    assert exc is None and code == 0 and "warning: --what-if" in out and "rhd/" in out
    code, out, _ = cli(*base, "ring")
    assert code == 0 and "warning" not in out


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("training.token_budget=.inf", "finite"),
        ("training.token_budget=1.0e+18", "training.token_budget"),
        ("simulation.compute_jitter_cv=.nan", "finite"),
        ("name=/abs/dir", "name"),
        ("name=../x", "name"),
        ("name=" + "n" * 300, "name"),
        ("simulation.seed=100000000000000000000", "simulation.seed"),
        ("failures={mtbf_per_device_h: .inf, checkpoint_write_s: 1}", "finite"),
        ("nodes=[" + ",".join(map(str, range(1, 1202))) + "]", "at most 1000 items"),
        ("simulation.max_ranks=.inf", "simulation.max_ranks"),
    ],
)
def test_config_meaningless_values(override, fragment) -> None:
    code, out, exc = cli("run", str(CONFIGS[0]), "--check", "--set", "strategies=null",
                         "--set", override)  # fmt: skip
    assert exc is None and code == 2 and fragment in out, out
    assert "(--set)" in out


def test_sweep_name_is_a_safe_folder(tmp_path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**TINY_SWEEP, "name": "../../etc"}))
    code, out, exc = cli("sweep", str(spec), "--jobs", "1", "--no-plot")
    assert exc is None and code == 2 and "name" in out
    assert not (tmp_path / "etc").exists()


def test_jobs_capped_at_the_cpu_count() -> None:
    cpus = os.cpu_count() or 1
    ex = make_executor(jobs=1000)
    assert ex.workers == cpus and "capped" in ex.describe() and "--oversubscribe" in ex.describe()
    assert make_executor(jobs=1000, oversubscribe=True).workers == 1000
    assert make_executor(jobs=1).note == ""


# ---- Fix 5: no orphans after kill -9 ----------------------------------------------------------


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (nothing may reap it in a container)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_kill_9_of_the_parent_leaves_no_worker(tmp_path) -> None:
    spec = tmp_path / "s.yaml"
    big = copy.deepcopy(TINY_SWEEP)
    big["base"].update(model="gpt3-1.3b", nodes=[64, 128, 256], systems=["dgx-a100", "mlu370-x8"])
    spec.write_text(yaml.safe_dump(big))
    cmd = [sys.executable, "-m", "scaling.app.sweep_cmd", "sweep", str(spec), "--out",
           str(tmp_path / "o"), "--jobs", "2", "--oversubscribe", "--no-plot", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        kids: set[int] = set()
        while len(kids) < 2:  # two workers (and, when spawned, the resource tracker)
            assert proc.poll() is None and time.monotonic() < deadline, "no pool started"
            kids |= _children(proc.pid)
            time.sleep(0.1)
        time.sleep(3.0)  # workers are past their initializer (spawn imports take a while)
        kids |= _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [k for k in kids if _alive(k)]
    finally:
        for k in _children(proc.pid) | kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
    assert not left, f"{len(left)} process(es) of the sweep left 10 s after kill -9 of its parent"


# ---- Fix 6: integrity -------------------------------------------------------------------------


def test_edited_run_file_is_detected_and_run_again(tmp_path) -> None:
    out = tmp_path / "o"
    first = run_sweep(TINY_SWEEP, out, SerialExecutor(), progress=False)
    files = sorted((out / "runs").glob("*.parquet"))
    assert files and all(checksum_ok(p) for p in files)
    # edited keeping the checksum metadata: the content no longer matches it
    t = pq.read_table(files[0])
    assert CHECKSUM_KEY in t.schema.metadata
    df = t.to_pandas()
    df["step_time_s"] = 123.0
    import pyarrow as pa

    pq.write_table(pa.Table.from_pandas(df).replace_schema_metadata(t.schema.metadata), files[0])
    assert not checksum_ok(files[0])
    # rewritten by pandas (no checksum at all); a truncated one
    pd.read_parquet(files[1]).assign(step_time_s=7.0).to_parquet(files[1])
    files[2].write_bytes(files[2].read_bytes()[:100])
    rerun: list[str] = []
    again = run_sweep(TINY_SWEEP, out, SerialExecutor(), progress=False,
                      on_run=lambda r, _: rerun.append(r.key))  # fmt: skip
    assert sorted(rerun) == sorted(p.stem for p in files[:3])
    pd.testing.assert_frame_equal(again, first)


def test_resolved_config_and_results_written_atomically(tmp_path, monkeypatch) -> None:
    import scaling.io.files as files

    out = tmp_path / "o"
    assert cli("run", str(CONFIGS[0]), *SMALL, "--out", str(out))[0] == 0
    before = {n: (out / n).read_text() for n in ("results.csv", "resolved_config.yaml")}
    real = files.atomic_write

    def half_then_full(path, write):
        def partial(tmp):
            write(tmp)
            tmp.write_text(tmp.read_text()[:10])  # half written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        real(path, partial)

    monkeypatch.setattr(files, "atomic_write", half_then_full)
    monkeypatch.setattr(
        files, "write_text_atomic", lambda p, t: half_then_full(p, lambda q: q.write_text(t))
    )
    for _ in range(2):  # the CSV fails first; then, with the CSV written, the YAML
        code, text, exc = cli("run", str(CONFIGS[0]), *SMALL, "--out", str(out))
        assert exc is None and code == 2 and "No space left" in text
        assert {n: (out / n).read_text() for n in before} == before
        assert not list(out.glob(".*.tmp"))
        monkeypatch.setattr(files, "atomic_write", real)
