"""Hostile input on the newer surfaces (issue 30): every command's every option, and the
goodput, Megatron and custom-model fields of configs that are *run*, not only checked.

Two generated corpora:

* **CLI**: each command of ``scaling`` from a cheap valid invocation, one option at a time set
  to values chosen by its type (negative, zero, huge, NaN, empty, 5,000 characters, special files,
  a missing folder, an unknown choice, ``--set`` values past the limits);
* **configs**: small runnable versions of the bundled goodput, Megatron and custom-``model:``
  experiments, one field at a time set to hostile numbers, wrong types and nulls, each
  simulated (``scaling run``) — not just ``--check``: goodput's overflow and the Megatron runs
  that took minutes only showed when run.

Each case must end with exit 0, or with a one-line ``error: ...`` (or click's own usage error),
exit 1 or 2 — never a traceback. The default tier runs every :data:`SAMPLE`-th case of each
corpus in process; ``-m slow`` runs every case in a subprocess under a 60 s timeout, asserting
no traceback and a peak RSS under 1 GiB (:func:`tests.test_bad_input.run_limited`).
"""

from __future__ import annotations

import copy
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from scaling.app.cli import main
from tests.test_bad_input import GiB, run_limited
from tests.test_calibrate import _arxiv, _nccl_tests_text

REPO = Path(__file__).resolve().parents[1]
#: the default tier runs every SAMPLE-th case of each corpus (a fixed spread)
SAMPLE = 12

# ---- the files every case starts from ---------------------------------------------------------

TINY = {
    "name": "tiny",
    "model": "gpt3-1.3b",
    "systems": ["dgx-a100"],
    "nodes": [1, 2],
    "strategy": {"kind": "ddp"},
    "training": {"seq_len": 512, "micro_batch_size": 1},
    "simulation": {"steps": 1, "warmup_steps": 1, "network": "analytic"},
}


def _small(name: str, **over: Any) -> dict[str, Any]:
    """A bundled config made cheap to run: one system, few nodes, one step, analytic network."""
    doc = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    doc["systems"] = doc["systems"][:1]
    doc.setdefault("simulation", {}).update({"steps": 1, "warmup_steps": 0, "network": "analytic"})
    doc.update(over)
    return doc


BASES: dict[str, dict[str, Any]] = {
    "goodput": _small("goodput-mlu-vs-gpu", nodes=[2, 4]),
    "failures": _small("llama3-405b-failures"),  # 2,048 nodes: 405B needs them to fit
    "megatron": _small("gpt3-175b-tp-pp", nodes=[8]),
    # a custom model mapping with every field, small enough to run on one node
    "model": {
        **TINY,
        "nodes": [1],
        "model": {
            "name": "m",
            "vocab": 32000,
            "hidden": 1024,
            "layers": 4,
            "heads": 16,
            "kv_heads": 4,
            "ffn": 2816,
            "max_positions": 0,
            "tied_embeddings": False,
            "bias": False,
            "norm": "rmsnorm",
            "gated_mlp": True,
            "head_bias": None,
        },
    },
}
#: the fields mutated, per base
FIELDS: dict[str, list[tuple[str, ...]]] = {
    "goodput": [
        *[("failures", k) for k in BASES["goodput"]["failures"]],
        *[("variability", k) for k in BASES["goodput"]["variability"]],
        ("training", "token_budget"),
        ("simulation", "compute_jitter_cv"),
    ],
    "failures": [("failures", k) for k in BASES["failures"]["failures"]],
    "megatron": [
        *[("strategy", "parallelism", k) for k in BASES["megatron"]["strategy"]["parallelism"]],
        ("strategy", "sequence_parallel"),
        ("strategy", "order"),
        ("training", "grad_accum_steps"),
        ("training", "micro_batch_size"),
        ("simulation", "steps"),
    ],
    "model": [("model", k) for k in BASES["model"]["model"]],
}
#: hostile values of a config field (YAML-safe: no NaN objects, which YAML writes as .nan)
VALUES: list[Any] = [
    0, -1, 2, 1e-300, 1e15, 1e308, float("inf"), float("nan"), "x", None, [], 10_000,
]  # fmt: skip


def config_cases() -> list[tuple[str, tuple[str, ...], int]]:
    """(base, field path, index into VALUES) of every config case, in a fixed order."""
    return [(b, f, i) for b in BASES for f in FIELDS[b] for i in range(len(VALUES))]


def config_doc(base: str, path: tuple[str, ...], i: int) -> dict[str, Any]:
    doc = copy.deepcopy(BASES[base])
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = VALUES[i]
    return doc


# ---- the CLI corpus ---------------------------------------------------------------------------


def _fixtures(d: Path) -> dict[str, Path]:
    """Files the commands read: a tiny experiment, a sweep, an nccl-tests table, a results
    table, a recording and a read-only folder."""
    f = {
        "tiny": d / "tiny.yaml",
        "sweep": d / "sweep.yaml",
        "table": d / "ar.txt",
        "results": d / "results.csv",
        "ro": d / "ro",
        # a real NCCL_DEBUG=INFO log of 2 ranks (read only)
        "recording": Path(__file__).parent / "fixtures/nccl_logs/nvidia_nccl_issue_203.log",
    }
    f["tiny"].write_text(yaml.safe_dump(TINY))
    f["sweep"].write_text(
        yaml.safe_dump({"name": "s", "base_config": str(f["tiny"]), "axes": {"nodes": [[1]]}})
    )
    f["table"].write_text(_nccl_tests_text(4, 8, _arxiv(4)[::2]))  # 5 sizes: a quick fit
    if not f["results"].exists():  # the tiny experiment's own results (one cheap run)
        res = CliRunner().invoke(main, ["run", str(f["tiny"]), "--out", str(d / "r"), "--no-plot"])
        assert res.exit_code == 0, res.output
        (d / "r" / "results.csv").rename(f["results"])
    f["full"] = full_device(d)
    f["ro"].mkdir(exist_ok=True)
    f["ro"].chmod(stat.S_IRUSR | stat.S_IXUSR)
    return f


def full_device(d: Path) -> Path:
    """A ``/dev/full`` of the test's own (a character device 1,7 in ``d``) where the process
    may make one (root): a command that renames over its output would replace it with a file,
    and doing that to the real ``/dev/full`` as root breaks it for the whole machine (calibrate
    did). Elsewhere the real one: a non-root process cannot replace it."""
    p = d / "full"
    if p.exists():
        return p
    try:
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except (PermissionError, OSError):
        return Path("/dev/full")
    return p


#: a cheap valid invocation per command ({name} is a fixture path, {out} a fresh folder)
BASE_ARGS: dict[str, list[str]] = {
    "calibrate": ["calibrate", "{table}", "--system", "dgx-h100", "--out", "{out}/lib.yaml",
                  "--samples", "2"],
    "collective": ["collective", "--system", "dgx-a100", "--nodes", "2", "--sizes", "1M"],
    "compare": ["compare", "{results}", "{results}"],
    "examples": ["examples"],
    "explain": ["explain", "{tiny}"],
    "metrics": ["metrics"],
    "plan": ["plan", "{tiny}", "--strategies", "ddp", "--micro-batches", "1",
             "--checkpointing", "none", "--tp", "1", "--pp", "1", "--jobs", "1"],
    "plot": ["plot", "{results}", "--out", "{out}"],
    "replay": ["replay", "{recording}", "--system", "dgx-a100", "--nodes", "1",
               "--devices-per-node", "2"],
    "run": ["run", "{tiny}", "--out", "{out}", "--no-plot"],
    "schedule": ["schedule", "{tiny}", "--out", "{out}/s.json", "--set", "nodes=[2]"],
    "schema": ["schema", "experiment"],
    "sensitivity": ["sensitivity", "{tiny}", "--only", "spine_latency", "--out", "{out}",
                    "--no-plot", "--jobs", "1"],
    "sweep": ["sweep", "{sweep}", "--out", "{out}", "--jobs", "1", "--no-plot"],
    "systems": ["systems"],
    "trace": ["trace", "{tiny}", "--out", "{out}/t.json", "--set", "nodes=[2]"],
    "validate": ["validate", "--study", "nccl-a100-8gpu-curve-large"],
}  # fmt: skip

#: hostile values by parameter type; "{...}" are fixture paths
HOSTILE: dict[str, list[str]] = {
    "int": ["-1", "0", "99999999999999999999", "nan"],
    "float": ["-1", "nan", "inf"],
    "text": ["", "x" * 5000, "\u202e;rm"],
    "choice": ["bogus"],
    # no FIFO: a pipe is a supported input (<(cmd)), and one without a writer blocks as cat does
    "read": ["/dev/zero", "/", "{missing}", "{ro}"],
    "write": ["{full}", "{ro}/x", "x" * 300],
    "set": ["nodes=[1e18]", "simulation.steps=1e9", "failures.mtbf_per_device_h=2",
            "training.grad_accum_steps=100000", "nodes", "nodes=[[[]]]", "model.hidden=-1"],
}  # fmt: skip
#: options whose path is written, not read
WRITES = {"out", "system_out", "out_dir"}


def _kind(p: click.Parameter) -> str | None:
    t = p.type
    if p.name in ("overrides",) or (p.opts and p.opts[0] == "--set"):
        return "set"
    if isinstance(t, click.Choice):
        return "choice"
    if isinstance(t, click.Path | click.File):
        return "write" if p.name in WRITES else "read"
    if isinstance(t, click.types.IntParamType | click.IntRange):
        return "int"
    if isinstance(t, click.types.FloatParamType | click.FloatRange):
        return "float"
    if isinstance(t, click.types.StringParamType):
        return "text"
    return None


def cli_cases() -> list[tuple[str, str, str]]:
    """(command, parameter name, hostile value) of every CLI case, in a fixed order."""
    out = []
    ctx = click.Context(main)
    for name in sorted(BASE_ARGS):
        cmd = main.get_command(ctx, name)
        assert cmd is not None
        for p in cmd.params:
            if isinstance(p, click.Option) and (p.is_flag or p.name == "help"):
                continue
            kind = _kind(p)
            if kind is None:
                continue
            out += [(name, str(p.name), v) for v in HOSTILE[kind]]
    return out


def cli_args(command: str, param: str, value: str, fx: dict[str, Path], out: Path) -> list[str]:
    """The base invocation of ``command`` with ``param`` set to ``value``."""
    fill = {k: str(v) for k, v in fx.items()}
    fill.update(out=str(out), missing=str(out.parent / "no" / "such"))
    value = value.format(**fill) if "{" in value else value
    base = [a.format(**fill) for a in BASE_ARGS[command]]
    cmd = main.get_command(click.Context(main), command)
    assert cmd is not None
    p = next(q for q in cmd.params if q.name == param)
    if isinstance(p, click.Argument):
        # the command's first argument (the config/table/results) replaced
        args = [a for a in cmd.params if isinstance(a, click.Argument)]
        i = 1 + args.index(p)
        return [*base[:i], value, *base[i + 1 :]]
    opt = max(p.opts, key=len)
    if opt in base:  # replace the base's own value of this option
        i = base.index(opt)
        return [*base[:i], opt, value, *base[i + 2 :]]
    return [*base, opt, value]


# ---- what every case must end with ------------------------------------------------------------


def check_output(code: int, err: str, label: str) -> None:
    """Exit 0; or exit 1/2 with a one-line ``error:`` or click's usage error — no traceback."""
    assert "Traceback" not in err, f"{label}: {err[-1500:]}"
    assert code in (0, 1, 2), f"{label}: exit {code}: {err[-800:]}"
    if code == 2:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        usage = bool(lines) and lines[-1].startswith("Error: ")  # click's own usage error
        # click wraps a long usage line: its continuation is indented
        usage = usage and all(ln.startswith(("Usage:", "Try ", " ")) for ln in lines[:-1])
        # one error line, after notes: a refused point ("refused: ..."), progress ("# ...")
        notes = all(ln.startswith(("refused: ", "warning: ", "# ")) for ln in lines[:-1])
        one = bool(lines) and lines[-1].startswith("error: ") and notes
        assert usage or one, f"{label}: {err[-800:]}"


def _in_process(args: list[str], label: str) -> None:
    res = CliRunner().invoke(main, args)
    exc = res.exception
    if exc is not None and not isinstance(exc, SystemExit):
        raise AssertionError(f"{label}: {type(exc).__name__}: {exc}") from exc
    check_output(res.exit_code, res.stderr if hasattr(res, "stderr") else res.output, label)


def _collect(cases: list[Any], one: Callable[[Any], None]) -> None:
    bad = []
    for case in cases:
        try:
            one(case)
        except AssertionError as e:
            bad.append(str(e).splitlines()[0][:400])
    assert not bad, f"{len(bad)} of {len(cases)} cases:\n" + "\n".join(bad[:25])


CLI = cli_cases()
CONFIG = config_cases()


def test_corpora_are_large_and_cover_every_surface() -> None:
    assert len(CLI) >= 200 and {c for c, _, _ in CLI} == set(BASE_ARGS)
    assert len(CONFIG) >= 400 and {b for b, _, _ in CONFIG} == set(BASES)
    # every command of the CLI has a base invocation, but the golden baseline (no options)
    assert set(main.list_commands(click.Context(main))) - set(BASE_ARGS) <= {"baseline"}


def test_bases_run_clean(tmp_path, monkeypatch) -> None:
    """The cases start from invocations that work: a hostile value is what a case tests."""
    monkeypatch.chdir(tmp_path)
    fx = _fixtures(tmp_path)
    for command in BASE_ARGS:
        out = tmp_path / f"o-{command}"
        args = [a.format(out=out, **{k: str(v) for k, v in fx.items()}) for a in BASE_ARGS[command]]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, (command, res.output[-800:], res.exception)
    for base in BASES:
        p = tmp_path / f"{base}.yaml"
        p.write_text(yaml.safe_dump(BASES[base]))
        res = CliRunner().invoke(main, ["run", str(p), "--out", str(tmp_path / base), "--no-plot"])
        assert res.exit_code == 0, (base, res.output[-800:])


def _cli_one(tmp: Path, fx: dict[str, Path]) -> Callable[[tuple[str, str, str]], None]:
    def one(case: tuple[str, str, str]) -> None:
        command, param, value = case
        out = tmp / f"o{abs(hash(case)) % 10**8}"
        _in_process(cli_args(command, param, value, fx, out), f"{command} {param}={value[:40]!r}")

    return one


def _config_one(tmp: Path) -> Callable[[tuple[str, tuple[str, ...], int]], None]:
    def one(case: tuple[str, tuple[str, ...], int]) -> None:
        base, path, i = case
        p = tmp / f"{base}.yaml"
        p.write_text(yaml.safe_dump(config_doc(base, path, i)))
        label = f"{base} {'.'.join(path)}={VALUES[i]!r}"
        _in_process(["run", str(p), "--out", str(tmp / "o" / base), "--no-plot", "--force"], label)

    return one


def test_cli_corpus_sample(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _collect(CLI[::SAMPLE], _cli_one(tmp_path, _fixtures(tmp_path)))


def test_config_corpus_sample(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _collect(CONFIG[::SAMPLE], _config_one(tmp_path))


# ---- slow: every case in a subprocess under a timeout and memory accounting -----------------


def _limited(args: list[str], cwd: Path, label: str) -> None:
    try:
        code, err, rss = run_limited(args, cwd, timeout=60)
    except AssertionError as e:  # ran past the timeout
        raise AssertionError(f"{label}: {e}") from None
    check_output(code, err, label)
    assert rss < GiB, f"{label}: peak RSS {rss / GiB:.2f} GiB"


@pytest.mark.slow
def test_cli_corpus_whole_under_limits(tmp_path) -> None:
    fx = _fixtures(tmp_path)

    def one(case: tuple[str, str, str]) -> None:
        command, param, value = case
        out = tmp_path / f"o{abs(hash(case)) % 10**8}"
        _limited(cli_args(command, param, value, fx, out), tmp_path,
                 f"{command} {param}={value[:40]!r}")  # fmt: skip

    _collect(CLI, one)


@pytest.mark.slow
def test_config_corpus_whole_under_limits(tmp_path) -> None:
    def one(case: tuple[str, tuple[str, ...], int]) -> None:
        base, path, i = case
        p = tmp_path / f"{base}.yaml"
        p.write_text(yaml.safe_dump(config_doc(base, path, i)))
        label = f"{base} {'.'.join(path)}={VALUES[i]!r}"
        _limited(["run", str(p), "--out", str(tmp_path / "o" / base), "--no-plot", "--force"],
                 tmp_path, label)  # fmt: skip

    _collect(CONFIG, one)


def test_the_check_catches_a_traceback_and_a_long_error() -> None:
    with pytest.raises(AssertionError, match="Traceback"):
        check_output(1, "Traceback (most recent call last):\n  File x\nValueError: y", "t")
    with pytest.raises(AssertionError):
        check_output(2, "error: a\nerror: b", "t")
    with pytest.raises(AssertionError):
        check_output(2, "error: a\n  File x", "t")
    check_output(2, "refused: x: too big\nerror: every point refused", "t")
    with pytest.raises(AssertionError):
        check_output(3, "", "t")
    check_output(2, "error: one line naming x.yaml:3: field", "t")
    check_output(2, "Usage: scaling x\nTry 'scaling x --help' for help.\n\nError: bad", "t")
    # click wraps a long usage line (a long program name in a subprocess) with an indent
    check_output(2, "Usage: python -m scaling.app.cli schema [OPTIONS]\n"
                 "                  [experiment|sweep]\nTry 'x --help'.\n\nError: bad", "t")  # fmt: skip
    with pytest.raises(AssertionError):
        check_output(2, "Usage: x\nValueError: y\nError: bad", "t")
    assert re.match(r"^error: ", "error: x")


def test_an_empty_study_prefix_is_refused_not_every_study_run() -> None:
    res = CliRunner().invoke(main, ["validate", "--study", ""])
    assert res.exit_code == 2 and "--study: got an empty name" in res.output


@pytest.mark.parametrize(
    "args",
    [["run", "{x}"], ["calibrate", "--decide", "{x}"], ["explain", "{x}"], ["sweep", "{x}"],
     ["plan", "{x}"], ["calibrate", "{x}", "--system", "dgx-h100"]],
)  # fmt: skip
def test_a_name_too_long_for_the_os_is_one_line(args) -> None:
    """A 5,000-character config name raised ENAMETOOLONG from the bundled-example lookup, a
    traceback (found by the CLI corpus)."""
    long = "x" * 5000
    res = CliRunner().invoke(main, [a.format(x=long) for a in args])
    assert not isinstance(res.exception, OSError), res.exception
    check_output(res.exit_code, res.stderr, " ".join(args))
    assert res.exit_code == 2


def test_a_device_is_written_in_place_never_replaced(tmp_path) -> None:
    """``calibrate --out /dev/full`` renamed a temp file over the device: as root that turned
    the machine's /dev/full into a regular file. Every writer goes through atomic_write, which
    now writes a device in place (and a full one fails in one line)."""
    from scaling.io.errors import ConfigError
    from scaling.io.files import atomic_write

    dev = full_device(tmp_path)
    if dev == Path("/dev/full"):
        pytest.skip(
            "cannot make a device node here (not root); /dev/full cannot be replaced either"
        )
    with pytest.raises(ConfigError, match="No space left"):
        atomic_write(dev, lambda p: p.write_text("x"))
    assert stat.S_ISCHR(dev.stat().st_mode)
    table = tmp_path / "ar.txt"
    table.write_text(_nccl_tests_text(4, 8, _arxiv(4)[::2]))
    for opt in (["--out", str(dev)], ["--out", str(tmp_path / "l.yaml"), "--system-out", str(dev)]):
        res = CliRunner().invoke(
            main, ["calibrate", str(table), "--system", "dgx-h100", "--samples", "2", *opt]
        )
        assert res.exit_code == 2 and "No space left" in res.stderr, res.output
        assert stat.S_ISCHR(dev.stat().st_mode), opt
