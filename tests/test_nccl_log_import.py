"""The ``NCCL_DEBUG=INFO`` log importer (issue 27 item 3).

On a real log (a verbatim excerpt from a public NCCL issue, tests/fixtures/nccl_logs) it reads
op, bytes and dtype of one rank's calls and says that the rank was not named. On a log written
here in NCCL's own line formats (src/enqueue.cc, src/init.cc) from a real PyTorch job's
schedule (tests/fixtures/torch_schedules), two ranks' lines interleaved, it picks rank 0 by its
init line and compares exact with the simulated job, setup included; a sub-communicator's call
has no group (the log gives only its size) and the comparison then leaves groups unchecked.
Broken logs are refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scaling.app.schedule_compare import compare_recording
from scaling.io.recordings import WHOLE, RecordingError, load_recording
from tests.test_torch_schedules import FIXTURES, _job, _load

LOGS = Path(__file__).parent / "fixtures" / "nccl_logs"
_NAME = {
    "all_reduce": "AllReduce",
    "all_gather": "AllGather",
    "reduce_scatter": "ReduceScatter",
    "broadcast": "Broadcast",
}
_DT = {"float32": (7, 4), "int64": (4, 8), "bfloat16": (9, 2), "int32": (2, 4)}


def _line(pid: int, dev: int, seq: int, op: str, nbytes: int, dtype: str, comm: str, n: int) -> str:
    code, size = _DT[dtype]
    per = n if op in ("all_gather", "reduce_scatter") else 1
    count = nbytes // (size * per)
    return (
        f"node0:{pid}:{pid + 7} [{dev}] NCCL INFO {_NAME[op]}: opCount {seq:x} sendbuff "
        f"0x7f00aa000000 recvbuff 0x7f00ab000000 count {count} datatype {code} op 0 root 0 "
        f"comm {comm} [nranks={n}] stream 0x55d0c0000000"
    )


def _init(pid: int, dev: int, comm: str, rank: int, n: int) -> str:
    return (
        f"node0:{pid}:{pid + 9} [{dev}] NCCL INFO comm {comm} rank {rank} nranks {n} cudaDev "
        f"{dev} nvmlDev {dev} busId {dev + 1}000 commId 0x5ae77eb5ea4ec1ee - Init COMPLETE"
    )


def _log_of(doc: dict[str, Any], path: Path) -> Path:
    """Both ranks of a fixture as an NCCL_DEBUG=INFO log, rank 1's process first."""
    n = doc["world_size"]
    per_rank = []
    for r in (1, 0):
        pid, comm = 4100 + r, f"0x55{r}0f0e0c000"
        calls = doc["ranks"][r]["setup"] + [c for s in doc["ranks"][r]["steps"] for c in s]
        lines = [_init(pid, r, comm, r, n)]
        lines += [
            _line(pid, r, i, c["op"], c["bytes"], c["dtype"], comm, n) for i, c in enumerate(calls)
        ]
        per_rank.append(lines)
    merged = [x for pair in zip(*per_rank, strict=True) for x in pair]
    path.write_text("NCCL version 2.21.5+cuda12.4\n" + "\n".join(merged) + "\n")
    return path


def test_a_real_log_excerpt_gives_one_ranks_calls() -> None:
    rec = load_recording(LOGS / "nvidia_nccl_issue_203.log")
    assert rec.importer == "nccl-debug-log" and rec.world_size == 2 and rec.rank == 0
    calls = rec.steps[WHOLE]
    # the first communicator's three calls, not the other GPU's four
    assert [(c.op, c.nbytes, c.dtype) for c in calls] == [
        ("all_reduce", 64 * 4, "float32"),
        ("all_reduce", 237184 * 4, "float32"),
        ("all_reduce", 386560 * 4, "float32"),
    ]
    assert all(c.group == (0, 1) for c in calls)
    assert any("taken as rank 0" in x for x in rec.cannot_recover)
    assert "parameter names" in rec.cannot_recover and "phase" in rec.cannot_recover


def test_a_generated_log_of_a_real_ddp_job_compares_exact(tmp_path: Path) -> None:
    doc = _load(FIXTURES / "ddp_bucket_cap.json")
    rec = load_recording(_log_of(doc, tmp_path / "nccl.log"))
    assert rec.rank == 0 and rec.world_size == 2
    assert not any("taken as rank 0" in x for x in rec.cannot_recover)  # the init line named it
    rank0 = doc["ranks"][0]
    assert len(rec.steps[WHOLE]) == len(rank0["setup"]) + sum(len(s) for s in rank0["steps"])
    assert rec.steps[WHOLE][0].op == "all_gather" and rec.steps[WHOLE][0].nbytes == 16
    lines, exact = compare_recording(_job(doc), rec, None)
    assert exact, "\n".join(lines)
    # a changed count is found
    rows = (tmp_path / "nccl.log").read_text().splitlines()
    at = next(i for i, x in enumerate(rows) if "[0]" in x and "count 8416 " in x)  # rank 0's
    rows[at] = rows[at].replace("count 8416 ", "count 8417 ")
    (tmp_path / "bad.log").write_text("\n".join(rows) + "\n")
    lines, exact = compare_recording(_job(doc), load_recording(tmp_path / "bad.log"), None)
    assert not exact and any("differs in bytes" in x for x in lines)


def test_a_sub_communicator_has_its_size_but_no_members(tmp_path: Path) -> None:
    lines = [
        _init(7, 0, "0xa0", 0, 4),
        _init(7, 0, "0xb0", 0, 2),
        _line(7, 0, 0, "all_gather", 4096, "bfloat16", "0xb0", 2),
        _line(7, 0, 0, "reduce_scatter", 8192, "bfloat16", "0xa0", 4),
    ]
    (tmp_path / "sub.log").write_text("\n".join(lines) + "\n")
    rec = load_recording(tmp_path / "sub.log")
    ag, rs = rec.steps[WHOLE]
    assert (ag.op, ag.nbytes, ag.group) == ("all_gather", 4096, ())
    assert (rs.op, rs.nbytes, rs.group) == ("reduce_scatter", 8192, (0, 1, 2, 3))
    assert rec.checked == ("op", "bytes", "dtype")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x:1:2 [0] NCCL INFO Bootstrap : Using eth0\n", "no collective lines"),
        (
            "x:1:2 [0] NCCL INFO AllToAllv: opCount 0 sendbuff 0x1 recvbuff 0x2 count 4 "
            "datatype 7 op 0 root 0 comm 0xa [nranks=2] stream 0xb\n",
            ":1: unknown NCCL collective 'AllToAllv'",
        ),
        (
            "x:1:2 [0] NCCL INFO AllReduce: opCount 0 sendbuff 0x1 recvbuff 0x2 count 4 "
            "datatype 42 op 0 root 0 comm 0xa [nranks=2] stream 0xb\n",
            ":1: datatype 42",
        ),
    ],
)
def test_broken_logs_are_refused_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "x.log"
    path.write_text(text)
    with pytest.raises(RecordingError) as e:
        load_recording(path)
    assert expected in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


def test_nccl_lines_after_the_scripts_own_output_are_found(tmp_path: Path) -> None:
    text = (LOGS / "nvidia_nccl_issue_203.log").read_text()
    path = tmp_path / "train.log"
    path.write_text("epoch 0 loss 2.31 (training script output)\n" * 200 + text)
    assert path.stat().st_size > 4096
    assert len(load_recording(path).steps[WHOLE]) == 3
