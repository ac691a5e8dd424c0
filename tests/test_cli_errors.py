"""Every class of bad input: exit code 2, one line naming file, line, field, value and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scaling.app.cli import main

GOOD = "model: gpt3-125m\nsystems: [dgx-a100]\nnodes: [1]\n"


def run_cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output  # click >= 8.2 mixes stderr into output


def write(tmp_path: Path, text: str | bytes, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


CASES = [
    # (label, file content, expected fragments of the message)
    (
        "unknown field",
        GOOD + "strategy:\n  bucket_cap_mb: 25\n",
        [":5:", "strategy.bucket_cap_mb", "no such field"],
    ),
    (
        "wrong type",
        GOOD + "training:\n  micro_batch_size: four\n",
        [":5:", "training.micro_batch_size", "'four'", "an integer"],
    ),
    (
        "negative nodes",
        "model: gpt3-125m\nsystems: [dgx-a100]\nnodes: [1, -4]\n",
        [":3:", "nodes[1]", "-4", "> 0"],
    ),
    (
        "zero nodes",
        "model: gpt3-125m\nsystems: [dgx-a100]\nnodes: 0\n",
        [":3:", "nodes[0]", "got 0", "> 0"],
    ),
    (
        "unknown system",
        "model: gpt3-125m\nsystems: [dgx-a1000]\nnodes: [1]\n",
        [":2:", "systems[0]", "dgx-a1000", "known:", " dgx-a100,"],
    ),
    (
        "unknown model",
        "model: gpt5\nsystems: [dgx-a100]\nnodes: [1]\n",
        [":1:", "model", "'gpt5'", "gpt3-1.3b"],
    ),
    ("empty file", "", ["file is empty"]),
    ("comments only", "# nothing here\n\n", ["file is empty"]),
    (
        "yaml syntax",
        "model: gpt3-125m\nsystems: [dgx-a100\nnodes: [1]\n",
        [":3:", "YAML syntax error"],
    ),
    ("binary garbage", bytes(range(256)) * 4, ["binary file"]),
    ("not utf-8", b"model: gpt3-125m\n\xff\xfe\xfd\n", ["not UTF-8"]),
    ("top-level list", "- a\n- b\n", [":1:", "top level is a list"]),
    ("duplicate key", GOOD + "nodes: [2]\n", [":4:", "nodes", "duplicate key"]),
    ("missing field", "systems: [dgx-a100]\nnodes: [1]\n", ["model", "required"]),
    (
        "bad enum",
        GOOD + "training:\n  activation_checkpointing: sometimes\n",
        [":5:", "activation_checkpointing", "'sometimes'"],
    ),
]


@pytest.mark.parametrize(("label", "content", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_exits_2_with_one_line(tmp_path, label, content, fragments) -> None:
    path = write(tmp_path, content)
    code, out = run_cli("run", str(path), "--out", str(tmp_path / "o"), "--no-plot")
    assert code == 2, out
    line = out.strip()
    assert "\n" not in line, f"{label}: more than one line:\n{out}"
    assert "Traceback" not in out
    assert line.startswith(f"error: {path}")
    for frag in fragments:
        assert frag in line, f"{label}: {frag!r} not in {line!r}"


def test_missing_path(tmp_path) -> None:
    code, out = run_cli("run", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file" in out and "Traceback" not in out


def test_directory(tmp_path) -> None:
    code, out = run_cli("run", str(tmp_path))
    assert code == 2 and "is a directory" in out


def test_bad_override(tmp_path) -> None:
    path = write(tmp_path, GOOD)
    code, out = run_cli("run", str(path), "--set", "training.micro_batch_size=-1")
    assert code == 2 and "(--set)" in out and "training.micro_batch_size" in out
    code, out = run_cli("run", str(path), "--set", "nodes")
    assert code == 2 and "PATH=VALUE" in out
    # list items by index, as sweep axes: a bad index names the list and its length
    code, out = run_cli("run", str(path), "--set", "nodes.3=4")
    assert code == 2 and out.count("\n") == 1
    assert "nodes.3: nodes is a list of 1; expected an index 0..0, got '3'" in out
    code, out = run_cli("run", str(path), "--set", "model.x=1")
    assert code == 2 and "model is not a mapping; cannot set 'x'" in out


def test_out_of_memory_refused_with_numbers(tmp_path) -> None:
    path = write(tmp_path, "model: gpt3-175b\nsystems: [dgx-a100]\nnodes: [1, 8]\n")
    code, out = run_cli("run", str(path), "--no-plot", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "needs" in out and "GiB per rank but" in out and "FSDP" in out
    assert not (tmp_path / "o").exists(), "an infeasible job must not be simulated"


def test_bad_topology_file_names_its_line(tmp_path) -> None:
    topo = Path(__file__).resolve().parents[1] / "topologies" / "dgx-a100.yaml"
    text = topo.read_text().replace("rate_Gbps: {value: 200", "rate_Gbps: {value: -200")
    (tmp_path / "topologies").mkdir()
    (tmp_path / "topologies" / "broken.yaml").write_text(text)
    lib = topo.parent / "libraries" / "nccl.yaml"
    (tmp_path / "topologies" / "libraries").mkdir()
    (tmp_path / "topologies" / "libraries" / "nccl.yaml").write_text(lib.read_text())
    path = write(tmp_path, "model: gpt3-125m\nsystems: [broken]\nnodes: [1]\n")
    code, out = run_cli("run", str(path), "--no-plot")
    assert code == 2
    line_no = next(i for i, ln in enumerate(text.splitlines(), 1) if "value: -200" in ln)
    assert f"broken.yaml:{line_no}: node.nics.rate_Gbps.value: got -200" in out


def test_assumption_without_reason_is_rejected(tmp_path) -> None:
    topo = Path(__file__).resolve().parents[1] / "topologies" / "dgx-a100.yaml"
    text = topo.read_text().replace(
        'mem_bw_efficiency: {value: 0.85, source: "project assumption", confidence: assumption, note: "streaming',
        'mem_bw_efficiency: {value: 0.85, source: "project assumption", confidence: assumption, xnote: "streaming',
    )
    (tmp_path / "t.yaml").write_text(text)
    from scaling.io.errors import ConfigError
    from scaling.io.topology import load_system

    with pytest.raises(ConfigError, match=r"device\.mem_bw_efficiency"):
        load_system(str(tmp_path / "t.yaml"))
