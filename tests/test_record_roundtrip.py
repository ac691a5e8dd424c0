"""A user's own job, recorded with scaling.record, compared with ``scaling schedule --compare``.

Real PyTorch (CPU, gloo, 2 processes) trains a small language model of the user's own naming
(not a GPT preset, not the simulator's module names) under DDP for 4 iterations with
``scaling.record`` on. The recording must compare exact with the config describing that job,
iteration by iteration (setup, 0, 1, steady), under both network modes; a config with another
bucket cap must be reported with the first differing bucket; a recording that does not fit
(truncated, foreign, other world size, other model) is refused in one line. Needs torch (the
``record`` extra): skipped without it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from scaling.app.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIMS = {"vocab": 192, "hidden": 32, "layers": 3, "heads": 2, "ffn": 96, "max_positions": 16}
STEPS = 4


def _model() -> Any:
    """The user's model: the simulator's tensors in its order, under the user's own names."""
    nn = torch.nn
    h, f = DIMS["hidden"], DIMS["ffn"]

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm_a = nn.LayerNorm(h)
            self.qkv = nn.Linear(h, 3 * h)
            self.out = nn.Linear(h, h)
            self.norm_b = nn.LayerNorm(h)
            self.up = nn.Linear(h, f)
            self.down = nn.Linear(f, h)

        def forward(self, x: Any) -> Any:
            q, k, v = self.qkv(self.norm_a(x)).chunk(3, dim=-1)
            att = torch.softmax(q @ k.transpose(-1, -2) / h**0.5, dim=-1)
            x = x + self.out(att @ v)
            return x + self.down(torch.relu(self.up(self.norm_b(x))))

    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(DIMS["vocab"], h)
            self.pos = nn.Embedding(DIMS["max_positions"], h)
            self.layers = nn.ModuleList([Layer() for _ in range(DIMS["layers"])])
            self.norm = nn.LayerNorm(h)

        def forward(self, idx: Any) -> Any:
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            for layer in self.layers:
                x = layer(x)
            return self.norm(x) @ self.tok.weight.t()  # tied output layer

    return TinyLM()


def _train(rank: int, world: int, port: int, out: str, cap_mb: float, kind: str = "ddp") -> None:
    import scaling.record

    # Flight Recorder on too (gloo keeps one on CPU since torch 2.x): a second, independent
    # recording of the same run for its importer
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCH_FR_BUFFER_SIZE="4096")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = _model()
    # and the profiler (Kineto), a third recording of the same run
    prof = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
    )
    prof.start()
    rec = scaling.record.start(out, model=model)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        policy = ModuleWrapPolicy({type(model.layers[0])})
        cpu = torch.device("cpu")
        ddp = FullyShardedDataParallel(model, auto_wrap_policy=policy, device_id=cpu)
    else:
        ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=cap_mb)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(rank)
    for _ in range(STEPS):
        idx = torch.randint(0, DIMS["vocab"], (2, DIMS["max_positions"] + 1), generator=gen)
        logits = ddp(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, DIMS["vocab"]), idx[:, 1:].reshape(-1)
        )
        loss.backward()
        opt.step()
        opt.zero_grad()
    rec.stop()
    prof.stop()
    prof.export_chrome_trace(str(Path(out, f"kineto_rank_{rank}.json")))
    c10d = torch._C._distributed_c10d
    if hasattr(c10d, "_dump_fr_trace_json"):
        dump = c10d._dump_fr_trace_json(True, True)
        Path(out, f"fr_rank_{rank}.json").write_bytes(
            dump if isinstance(dump, bytes) else dump.encode()
        )
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rec")
    torch.multiprocessing.spawn(_train, args=(2, _free_port(), str(out), 0.02), nprocs=2)
    return out


def _config(tmp: Path, cap_mb: float, network: str = "analytic", per_node: int = 2) -> Path:
    """The same job for the simulator: a 2-device node (a copy of dgx-a100 with 2 devices)."""
    topo = tmp / "topologies"
    topo.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "topologies" / "dgx-a100.yaml").read_text()
    text = text.replace("name: dgx-a100", "name: cpu-pair", 1)
    text = text.replace("devices: {value: 8,", f"devices: {{value: {per_node},", 1)
    (topo / "cpu-pair.yaml").write_text(text)
    cfg = {
        "model": {"name": "tiny-lm", **DIMS, "tied_embeddings": True, "bias": True},
        "systems": ["cpu-pair"],
        "nodes": [1],
        "strategy": {"kind": "ddp", "bucket_cap_MB": cap_mb},
        "training": {
            "micro_batch_size": 2,
            "seq_len": DIMS["max_positions"],
            "param_dtype": "fp32",
            "dtype": "fp32",
        },
        "simulation": {"network": network},
    }
    path = tmp / f"job-{cap_mb}-{network}-{per_node}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _compare(cfg: Path, rec: Path, *extra: str) -> Any:
    return CliRunner().invoke(main, ["schedule", str(cfg), "--compare", str(rec), *extra])


def test_recording_format(recording: Path) -> None:
    lines = [json.loads(x) for x in (recording / "rank0.jsonl").read_text().splitlines()]
    head, end = lines[0], lines[-1]
    assert head["format"] == "scaling-record" and head["world_size"] == 2
    assert head["params"][0] == ["tok.weight", DIMS["vocab"] * DIMS["hidden"]]
    assert end == {"record": "end", "steps": STEPS, "collectives": end["collectives"]}
    calls = [x for x in lines if x["record"] == "collective"]
    assert {c["phase"] for c in calls} == {"setup", "forward", "backward"}  # forward: rebuild
    # DDP's C++ reducer buckets (no comm hook registered), named with the user's names
    named = [c for c in calls if "bucket" in c]
    assert named and all(c["group"] == [0, 1] for c in named)
    assert "layers.2.down.bias" in named[-1]["params"] or "tok.weight" in named[-1]["params"]


@pytest.mark.parametrize("network", ["analytic", "flow"])
def test_round_trip_is_exact(recording: Path, tmp_path: Path, network: str) -> None:
    res = _compare(_config(tmp_path, 0.02, network), recording / "rank0.jsonl")
    assert res.exit_code == 0, res.output
    assert "summary: exact 5/5, count 5/5, bytes 5/5, order 5/5" in res.output
    assert "groups [0, 1]" in res.output


def test_changed_bucket_cap_is_the_first_difference(recording: Path, tmp_path: Path) -> None:
    res = _compare(_config(tmp_path, 0.05), recording)
    assert res.exit_code == 1, res.output
    lines = {x.split(":", 1)[0]: x for x in res.output.splitlines()}
    # iteration 1: the rebuild broadcasts the new bucket sizes, one int32 per bucket: 5 vs 3
    assert "first difference #1 differs in bytes: recorded broadcast 20 B" in lines["step 1"]
    # steady state: the first bucket all-reduce is larger under the larger cap
    steady = lines["step 2"]
    assert "first difference #0 differs in bucket, bytes: recorded all_reduce" in steady
    assert "bucket 0 [" in steady and "tok.weight" not in steady.split(";")[0]
    # setup and iteration 0 (one bucket before the rebuild) still match
    assert "summary: exact 2/5, count 2/5" in res.output


def test_step_all_lists_every_iteration(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["schedule", str(_config(tmp_path, 0.02)), "--step", "all"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert list(doc["steps"]) == ["setup", "0", "1", "2"]
    assert doc["steps"]["1"][0]["group"] == [0, 1]


def test_recording_that_does_not_fit_is_one_line(recording: Path, tmp_path: Path) -> None:
    good = (recording / "rank0.jsonl").read_text().splitlines()
    cfg = _config(tmp_path, 0.02)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(good[: len(good) // 2]) + "\n")
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"traceEvents": []}\n')
    cases = {
        cut: "truncated: no 'end' record",
        foreign: "not a recording of a known format",
    }
    for path, why in cases.items():
        res = _compare(cfg, path)
        assert res.exit_code == 2 and why in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    res = _compare(_config(tmp_path / "four", 0.02, per_node=4), recording)
    assert res.exit_code == 2 and "other world size: recorded 2 ranks" in res.output
    other = json.loads(cfg.read_text())
    other["model"]["ffn"] = 64
    cfg.write_text(json.dumps(other))
    res = _compare(cfg, recording)
    assert res.exit_code == 2 and "other model" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_flight_recorder_dump_compares_exact(recording: Path, tmp_path: Path) -> None:
    dump = recording / "fr_rank_1.json"
    if not dump.exists():
        pytest.skip("this torch has no Flight Recorder JSON dump")
    res = _compare(_config(tmp_path, 0.02), dump)
    assert res.exit_code == 0, res.output
    assert "(flight-recorder): rank 1 of 2" in res.output
    assert "(unchecked): iterations, phase" in res.output
    assert "summary: exact 5/5" in res.output
    # the other bucket cap: the first rebuilt iteration differs
    res = _compare(_config(tmp_path, 0.05), dump)
    assert res.exit_code == 1 and "step 1:" in res.output and "first difference #1" in res.output


def test_kineto_trace_compares_exact(recording: Path, tmp_path: Path) -> None:
    res = _compare(_config(tmp_path, 0.02), recording / "kineto_rank_0.json")
    assert res.exit_code == 0, res.output
    assert "(kineto): rank 0 of 2" in res.output
    assert "summary: exact 5/5" in res.output
    res = _compare(_config(tmp_path, 0.05), recording / "kineto_rank_0.json")
    assert res.exit_code == 1 and "first difference #1" in res.output


def test_fsdp1_units_map_through_the_users_names(tmp_path: Path) -> None:
    """FSDP1 units named by the user's modules (layers.0, …) compare as the simulator's h0, …"""
    out = tmp_path / "fsdp"
    torch.multiprocessing.spawn(_train, args=(2, _free_port(), str(out), 0, "fsdp1"), nprocs=2)
    units = {json.loads(x).get("unit") for x in (out / "rank0.jsonl").read_text().splitlines()}
    assert {"root", "layers.0", "layers.2"} <= units
    cfg = _config(tmp_path, 0.02)
    doc = json.loads(cfg.read_text())
    doc["strategy"] = {"kind": "fsdp", "param_dtype": None, "reduce_dtype": None}
    cfg.write_text(json.dumps(doc))
    res = _compare(cfg, out)
    assert res.exit_code == 0, res.output
    assert "summary: exact 5/5" in res.output


def test_recording_enabled_by_environment(tmp_path: Path) -> None:
    """``SCALING_RECORD=dir python -m scaling.record train.py``: no change to the script."""
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "import os, torch\n"
        "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=os.environ['PORT'])\n"
        "torch.distributed.init_process_group('gloo', rank=0, world_size=1)\n"
        "m = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 8))\n"
        "opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "for _ in range(3):\n"
        "    m(torch.randn(4, 8)).sum().backward(); opt.step(); opt.zero_grad()\n"
    )
    out = tmp_path / "rec"
    env = os.environ | {
        "SCALING_RECORD": str(out),
        "SCALING_RECORD_STEPS": "2",
        "PORT": str(_free_port()),
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run(
        [sys.executable, "-m", "scaling.record", str(script)], env=env, check=True, timeout=300
    )
    lines = [json.loads(x) for x in (out / "rank0.jsonl").read_text().splitlines()]
    assert lines[0]["world_size"] == 1 and lines[-1]["record"] == "end"
    assert [x["step"] for x in lines if x["record"] == "step"] == [0, 1]  # stopped after 2
