"""The scaling-record importer and the comparison, without torch.

The committed real-PyTorch fixtures (tests/fixtures/torch_schedules) are written out in the
scaling-record format (docs/guides/recording.md), read back by the importer and compared with the
simulator: exact for every recorded iteration, on rank 0 and on a rank of another node (HSDP).
Broken files are refused with one line naming the file, the line and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scaling.app.schedule_compare import compare_recording
from scaling.io.recordings import SETUP, RecordingError, load_recording
from tests.test_torch_schedules import FIXTURES, _job, _load


def _as_scaling_record(doc: dict[str, Any], rank: int, path: Path) -> Path:
    """One rank of a fixture in the scaling-record JSON-lines format."""
    r = doc["ranks"][rank]
    lines: list[dict[str, Any]] = [
        {
            "record": "header",
            "format": "scaling-record",
            "version": 1,
            "rank": rank,
            "world_size": doc["world_size"],
            "params": doc["model"]["params"],
        }
    ]
    seq = 0
    for step, calls in [("setup", r["setup"]), *enumerate(r["steps"])]:
        for e in calls:
            seq += 1
            c = {k: e[k] for k in ("op", "bytes", "dtype", "group", "phase")}
            c |= {"record": "collective", "step": step, "micro": e.get("micro", 0), "seq": seq}
            if "bucket" in e:
                c |= {"bucket": e["bucket"]["index"], "params": e["bucket"]["params"]}
            if "unit" in e:
                unit = next(u for u in doc["strategy"]["units"] if u["unit"] == e["unit"])
                c |= {"unit": e["unit"], "params": unit["params"]}
            lines.append(c)
        if step != "setup":
            lines.append({"record": "step", "step": step, "collectives": len(calls)})
    lines.append({"record": "end", "steps": len(r["steps"]), "collectives": seq})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.mark.parametrize(
    ("variant", "rank"),
    [("ddp_bucket_cap", 0), ("fsdp1_hybrid_shard_2x2", 0), ("fsdp1_hybrid_shard_2x2", 3)],
)
def test_fixture_round_trips_exact(variant: str, rank: int, tmp_path: Path) -> None:
    doc = _load(FIXTURES / f"{variant}.json")
    rec = load_recording(_as_scaling_record(doc, rank, tmp_path / "rank.jsonl"))
    assert rec.rank == rank and next(iter(rec.steps)) == SETUP
    lines, exact = compare_recording(_job(doc), rec, None)
    n = len(rec.steps)
    assert exact, "\n".join(lines)
    assert lines[-1] == f"summary: exact {n}/{n}, count {n}/{n}, bytes {n}/{n}, order {n}/{n}"


def test_a_changed_collective_is_the_first_difference(tmp_path: Path) -> None:
    doc = _load(FIXTURES / "ddp_bucket_cap.json")
    doc["ranks"][0]["steps"][2][1]["bytes"] += 4  # the second bucket of iteration 2
    rec = load_recording(_as_scaling_record(doc, 0, tmp_path / "rank0.jsonl"))
    lines, exact = compare_recording(_job(doc), rec, None)
    assert not exact
    step2 = next(x for x in lines if x.startswith("step 2:"))
    assert "first difference #1 differs in bytes" in step2
    assert lines[-1].startswith("summary: exact 4/5, count 5/5, bytes 4/5, order 5/5")


def _bad(tmp_path: Path, edit: Any) -> str:
    doc = _load(FIXTURES / "ddp_bucket_cap.json")
    path = _as_scaling_record(doc, 0, tmp_path / "rank0.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(RecordingError) as err:
        load_recording(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_broken_files_are_refused_in_one_line(tmp_path: Path) -> None:
    assert "truncated: no 'end' record" in _bad(tmp_path, lambda x: x[:-3])
    assert "cut short" in _bad(tmp_path, lambda x: [*x[:-1], x[-1][:10]])
    assert ":1: version: expected 1" in _bad(
        tmp_path, lambda x: [x[0].replace('"version": 1', '"version": 7'), *x[1:]]
    )
    assert "counts" in _bad(tmp_path, lambda x: [y for y in x if '"seq": 5}' not in y])
    assert ":3: not JSON" in _bad(tmp_path, lambda x: [x[0], x[1], "{oops", *x[2:]])


def test_recording_of_another_world_size_or_model_is_refused(tmp_path: Path) -> None:
    doc = _load(FIXTURES / "ddp_bucket_cap.json")
    rec = load_recording(_as_scaling_record(doc, 0, tmp_path / "rank0.jsonl"))
    w4 = _load(FIXTURES / "ddp_bucket_cap_w4_untied.json")
    with pytest.raises(RecordingError, match="other world size: recorded 2 ranks"):
        compare_recording(_job(w4), rec, None)
    odd = _load(FIXTURES / "fsdp1_full_shard.json")
    odd["model"]["ffn_hidden"] = 64
    with pytest.raises(RecordingError, match=r"other model: .* tensor 10 is h0\.mlp\.fc_in"):
        compare_recording(_job(odd), rec, None)


def _fr(tmp_path: Path, entries: list[dict[str, Any]], name: str = "fr_rank_1.json") -> Path:
    doc = {"version": "2.10", "entries": entries}
    doc["pg_config"] = {"0": {"name": "0", "desc": "default_pg", "ranks": "[0, 1]"}}
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _fr_entry(i: int, op: str, shape: list[int], dtype: str = "Float") -> dict[str, Any]:
    return {
        "record_id": i,
        "profiling_name": f"nccl:{op}",
        "process_group": ["0", "default_pg"],
        "input_sizes": [shape],
        "input_dtypes": [dtype],
        "output_sizes": [[2, *shape]],
        "output_dtypes": [dtype],
    }


def test_flight_recorder_dump_reads_sizes_groups_and_rank(tmp_path: Path) -> None:
    path = _fr(tmp_path, [_fr_entry(0, "all_reduce", [8, 4]), _fr_entry(1, "all_gather", [3])])
    rec = load_recording(path)
    assert (rec.importer, rec.rank, rec.world_size) == ("flight-recorder", 1, 2)
    a, g = rec.steps["whole"]
    assert (a.op, a.nbytes, a.dtype, a.group) == ("all_reduce", 128, "float32", (0, 1))
    assert (g.op, g.nbytes) == ("all_gather", 24)  # the gathered output: 2 ranks x 3 x 4 B
    assert "phase" in rec.cannot_recover and rec.checked == ("op", "bytes", "dtype", "group")


def test_broken_flight_recorder_dumps_are_one_line(tmp_path: Path) -> None:
    cases = {
        "ring buffer overflowed (5 calls lost": [_fr_entry(5, "all_reduce", [1])],
        "unknown collective 'nccl:frobnicate'": [_fr_entry(0, "frobnicate", [1])],
        "no collectives recorded": [],
    }
    for why, entries in cases.items():
        with pytest.raises(RecordingError, match=why.replace("(", r"\(")):
            load_recording(_fr(tmp_path, entries))
    cut = _fr(tmp_path, [_fr_entry(0, "all_reduce", [1])])
    cut.write_text(cut.read_text()[:-20])
    with pytest.raises(RecordingError, match="not JSON"):
        load_recording(cut)


def test_kineto_nccl_trace_reads_record_param_comms(tmp_path: Path) -> None:
    # the NCCL form (no GPU here): record_param_comms events carry name, sizes, dtype, ranks
    def comms(ts: int, name: str, n_in: int, n_out: int, dtype: str) -> dict[str, Any]:
        args = {"Collective name": name, "In msg nelems": n_in, "Out msg nelems": n_out}
        args |= {"dtype": dtype, "Process Group Ranks": "[0, 2]"}
        return {"ph": "X", "name": "record_param_comms", "ts": ts, "dur": 1, "args": args}

    doc = {
        "schemaVersion": 1,
        "distributedInfo": {"backend": "nccl", "rank": 2, "world_size": 4, "pg_config": []},
        "traceEvents": [
            comms(5, "_allgather_base", 8, 16, "BFloat16"),
            comms(1, "allreduce", 6, 6, "Float"),
        ],
    }
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(doc))
    rec = load_recording(path)
    assert (rec.importer, rec.rank, rec.world_size) == ("kineto", 2, 4)
    a, g = rec.steps["whole"]
    assert (a.op, a.nbytes, a.dtype, a.group) == ("all_reduce", 24, "float32", (0, 2))
    assert (g.op, g.nbytes, g.dtype) == ("all_gather", 32, "bfloat16")  # the gathered output
    path.write_text(json.dumps({"schemaVersion": 1, "traceEvents": []}))
    with pytest.raises(RecordingError, match="no distributedInfo"):
        load_recording(path)
