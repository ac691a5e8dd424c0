"""`scaling trace` (Chrome Trace Event JSON) and `scaling explain` (where the step went)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from scaling.app.cli import main
from scaling.io.config import experiment_from_dict
from scaling.model.analysis.explain import explain_step
from scaling.model.simulation import run_job_detailed


def test_fsdp_16_rank_trace_structure(repo, tmp_path) -> None:
    out = tmp_path / "trace.json"
    res = CliRunner().invoke(
        main, ["trace", str(repo / "configs" / "fsdp-mlu-16.yaml"), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    procs = {
        e["pid"]: e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == "process_name"
    }
    assert set(procs) == set(range(17)) and procs[16] == "network"  # 16 ranks, the links
    threads = {
        (e["pid"], e["args"]["name"])
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert {(0, "compute"), (0, "comm")} <= threads
    slices = [e for e in events if e["ph"] == "X"]
    for e in slices:
        assert {"name", "ph", "ts", "dur", "pid", "tid"} <= e.keys()
        assert e["dur"] >= 0 and e["ts"] >= -1e-6
    colls = [e for e in slices if e["cat"] == "collective"]
    assert {e["name"] for e in colls} == {"all_gather", "reduce_scatter"}
    for e in colls:
        assert (
            e["args"]["bytes"] > 0
            and "/" in e["args"]["algorithm"]
            and e["args"]["group_size"] == 16
        )
    # every rank sees the same collectives (one FSDP group)
    per_rank = {p: sum(1 for e in colls if e["pid"] == p) for p in range(16)}
    assert len(set(per_rank.values())) == 1
    assert doc["otherData"]["strategy"] == "fsdp-full_shard"


@pytest.mark.parametrize(
    "strategy",
    [
        {"kind": "ddp"},
        {"kind": "fsdp", "sharding": "full_shard", "backward_prefetch": "none"},
        {"kind": "fsdp", "sharding": "hybrid_shard"},
    ],
)
def test_explain_parts_add_up_to_the_step(strategy) -> None:
    job = experiment_from_dict(
        {
            "model": "gpt3-1.3b",
            "systems": ["mlu370-x8"],
            "nodes": [64],
            "strategy": strategy,
            "training": {"micro_batch_size": 4},
            "simulation": {"steps": 1},
        }
    ).jobs()[0]
    res, tl = run_job_detailed(job, trace=True)
    b = explain_step(tl, len(res.steps) - 1)
    total = sum(t for _, t in b.parts())
    # the parts are a partition of the step: they add up to it exactly (up to float rounding)
    assert total == pytest.approx(b.step_s, rel=1e-12)
    assert b.step_s == pytest.approx(res.step_time_s, rel=1e-12)
    assert b.compute_s == pytest.approx(res.compute_time_s, rel=1e-12)
    # what is not compute is exposed communication, waiting for other ranks, or idle
    assert b.exposed_s + b.idle_s == pytest.approx(res.exposed_comm_s, rel=1e-9)
    assert b.exposed_s > 0


def test_explain_cli_names_the_exposed_buckets(repo) -> None:
    res = CliRunner().invoke(
        main,
        [
            "explain",
            str(repo / "configs" / "mlu-vs-gpu.yaml"),
            "--set",
            "nodes=[128]",
            "--set",
            "systems=[mlu370-x8]",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "exposed all_reduce" in res.output and "bucket" in res.output and "total" in res.output


def test_trace_needs_one_point(repo, tmp_path) -> None:
    res = CliRunner().invoke(
        main,
        ["trace", str(repo / "configs" / "mlu-vs-gpu.yaml"), "--out", str(tmp_path / "t.json")],
    )
    assert res.exit_code == 2 and "needs one point" in res.output


# --- issue 18.9: flow events, integer bytes, strict JSON -------------------------------------


def test_trace_flow_events_link_waits_and_ranks(repo, tmp_path) -> None:
    out = tmp_path / "trace.json"
    res = CliRunner().invoke(
        main, ["trace", str(repo / "configs" / "fsdp-mlu-16.yaml"), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text)
    events = doc["traceEvents"]
    flows: dict[int, dict[str, dict]] = {}
    for e in events:
        if e["ph"] in ("s", "f"):
            assert e["ph"] not in flows.setdefault(e["id"], {})  # one start, one finish per id
            flows[e["id"]][e["ph"]] = e
    assert flows and all(set(pair) == {"s", "f"} for pair in flows.values())
    slices = [e for e in events if e["ph"] == "X"]

    def enclosing(ev):  # the slice a flow event binds to: same track, ts inside it
        hits = [
            s
            for s in slices
            if (s["pid"], s["tid"]) == (ev["pid"], ev["tid"])
            and s["ts"] <= ev["ts"] <= s["ts"] + s["dur"]
        ]
        assert hits, ev
        return hits[0]

    waits = [e for e in slices if e["cat"] == "wait"]
    by_cat: dict[str, list] = {"wait": [], "collective": []}
    for pair in flows.values():
        assert pair["s"]["cat"] == pair["f"]["cat"] and pair["f"]["bp"] == "e"
        by_cat[pair["s"]["cat"]].append(pair)
    # every wait of every rank is linked to the collective it waited on, on the same rank
    assert waits and len(by_cat["wait"]) == len(waits)
    for pair in by_cat["wait"]:
        coll, wait = enclosing(pair["s"]), enclosing(pair["f"])
        assert coll["cat"] == "collective" and wait["cat"] == "wait"
        assert coll["pid"] == wait["pid"] and wait["name"].startswith(f"wait:{coll['name']}")
        assert abs((coll["ts"] + coll["dur"]) - (wait["ts"] + wait["dur"])) < 1e-3
    # the 16 ranks of each collective are chained: 15 links per collective
    colls = [e for e in slices if e["cat"] == "collective"]
    assert len(by_cat["collective"]) == len(colls) // 16 * 15
    for pair in by_cat["collective"][:50]:
        a, b = enclosing(pair["s"]), enclosing(pair["f"])
        assert a["cat"] == b["cat"] == "collective" and b["pid"] == a["pid"] + 1
        assert (a["name"], a["ts"], a["args"]["bytes"]) == (b["name"], b["ts"], b["args"]["bytes"])
    assert all(isinstance(e["args"]["bytes"], int) for e in colls)


def test_chrome_trace_keeps_numbers_finite() -> None:
    from scaling.io.trace import finite

    doc = finite({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": (2, -float("inf"))}})
    assert doc == {"a": None, "b": [1.0, None], "c": {"d": [2, None]}}
    json.dumps(doc, allow_nan=False)


# --- issue 18.8: explain --vs on the sweep executors -----------------------------------------


@pytest.mark.parametrize(
    ("training", "nodes", "simulated", "pool"),
    [
        ({}, 2, 32, True),  # both memories fit every micro-batch: the capacity swaps are twins
        ({"micro_batch_size": 40, "seq_len": 2048}, 1, 64, False),  # 48 GB does not fit 40
    ],
)
def test_explain_vs_pool_gives_the_serial_numbers(training, nodes, simulated, pool) -> None:
    from scaling.io.topology import load_system
    from scaling.model.analysis.attribution import attribute
    from scaling.model.analysis.attribution_plan import attribute_many, hybrid_plan
    from scaling.sweep.executors import LocalPoolExecutor, SerialExecutor

    base = experiment_from_dict(
        {
            "model": "gpt3-125m",
            "systems": ["dgx-a100"],
            "nodes": [nodes],
            "training": training,
            "simulation": {"steps": 1, "warmup_steps": 1},
        }
    ).jobs()[0]
    a, b = load_system("dgx-a100").spec, load_system("mlu370-x8").spec
    run, twins = hybrid_plan(base, a, b, [nodes])
    assert len(run) == simulated and len(run) + len(twins) == 64
    serial = attribute(base, a, b)
    with LocalPoolExecutor(2) if pool else SerialExecutor() as ex:
        (pooled,) = attribute_many(base, a, b, [nodes], ex)
    assert pooled == serial  # the same floats, not approximately
    assert serial.gap > 0 and sum(serial.parts.values()) == pytest.approx(serial.gap)
    assert (serial.parts["memory capacity"] == 0) == (simulated == 32)


def test_explain_vs_cli_shows_progress_and_refuses_jobs_without_vs(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: gpt3-125m\nsystems: [dgx-a100]\nnodes: [1]\n"
        "simulation: {steps: 1, warmup_steps: 1}\n"
    )
    args = ["explain", str(cfg), "--vs", "dgx-a100", "mlu370-x8", "-j", "1", "--format", "csv"]
    res = CliRunner().invoke(main, ["-v", *args, "--progress"])
    assert res.exit_code == 0, res.output
    assert "32 simulations for 1 node count(s) x 64 hybrids" in res.stderr
    assert "on in process" in res.stderr
    assert "mlu370-x8 vs dgx-a100:" in res.stderr and "/32 [" in res.stderr  # the bar
    assert res.stdout.splitlines()[0].startswith("nodes,system_a,system_b")
    quiet = CliRunner().invoke(main, ["-q", *args])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == res.stdout
    res = CliRunner().invoke(main, ["explain", str(cfg), "-j", "2"])
    assert res.exit_code == 2 and "--jobs: only used with --vs" in res.output


# --- review: Megatron's wait names, waits found by bisection / a sweep, not a scan -----------


def _rec(kind: str, op: str, start: float, end: float, issue: int):
    from scaling.model.comm.collectives import CollectiveKey, CollectiveRecord
    from scaling.model.comm.ops import CollectiveOp, Group

    key = CollectiveKey(0, "backward", kind, issue, label=f"{kind.upper()} {op} #{issue}")
    return CollectiveRecord(key, CollectiveOp(op), 1.0, Group(1, 8), start, end, "ring", issue)


def test_a_megatron_wait_links_to_the_collective_of_its_kind_and_op() -> None:
    """``wait:tp all_reduce`` names the kind (tp, pp, dp) before the op (Megatron's
    ``wait_target``): the arrow goes to the TP all-reduce, not to a DP bucket or PP send that
    happened to end at the same instant."""
    from scaling.io.trace import _awaited, _ByEnd
    from scaling.model.strategies.ddp import DDPSpec
    from scaling.model.strategies.megatron import MegatronSpec

    meg, ddp = MegatronSpec(2, 2).wait_target, DDPSpec().wait_target

    tp = _rec("tp", "all_reduce", 0.2, 1.0, 1)
    dp = _rec("dp", "reduce_scatter", 0.0, 1.0, 2)  # ends with it, issued later
    pp = _rec("pp", "broadcast", 0.5, 1.0, 3)
    early = _rec("tp", "all_reduce", 0.0, 0.1, 0)  # ended before the wait began
    colls = _ByEnd([pp, dp, early, tp])
    assert _awaited(meg("wait:tp all_reduce"), 0.5, 1.0, colls) is tp
    assert _awaited(meg("wait:dp reduce_scatter"), 0.5, 1.0, colls) is dp
    # a PP receive waits on the neighbour's send: no op of that name, the kind decides
    assert _awaited(meg("wait:pp recv activation"), 0.5, 1.0, colls) is pp
    assert _awaited(meg("wait:tp head"), 0.5, 1.0, colls) is tp
    # DDP / FSDP names: the op alone (and the last one to end when none has the op)
    assert _awaited(ddp("wait:reduce_scatter"), 0.5, 1.0, colls) is dp
    assert _awaited(ddp("wait:all_gather:unit3"), 0.5, 1.0, colls) is pp
    assert _awaited(ddp("wait:all_reduce"), 0.11, 0.4, colls) is None


def test_overlap_sweep_finds_what_a_scan_finds() -> None:
    """``explain``'s sweep over a rank's collectives gives, for waits in time order (and a wait
    that goes back), the same collectives in the same order as a scan of every one."""
    import random

    from scaling.model.analysis.explain import _Overlaps

    rng = random.Random(7)
    recs = []
    for i in range(400):
        s = rng.uniform(0, 100)
        recs.append(_rec("dp", "all_reduce", s, s + rng.choice([0.0, 0.01, 0.5, 3.0, 40.0]), i))
    index = _Overlaps(recs)
    waits = sorted((rng.uniform(0, 100), rng.uniform(0, 2)) for _ in range(300))
    waits += [(5.0, 1.0), (60.0, 30.0), (60.0, 0.0)]  # back in time: the sweep restarts
    for a, d in waits:
        want = [r for r in recs if r.end_s > a and r.start_s < a + d]
        assert index.during(a, a + d) == want


def test_explain_of_megatron_is_the_scan_s_breakdown(monkeypatch) -> None:
    """The sweep changes how the collectives in flight are found, not the numbers: a
    Megatron step (TP, PP and overlapped DP) breaks down exactly as with the scan."""
    from scaling.model.analysis import explain as ex
    from scaling.model.strategies.megatron import MegatronSpec

    job = experiment_from_dict(
        {
            "model": "gpt3-1.3b",
            "systems": ["dgx-a100"],
            "nodes": [4],
            "strategy": {
                "kind": "megatron",
                "parallelism": {"tensor": 8, "pipeline": 2},
                "overlap_grad_reduce": True,
            },
            "training": {"grad_accum_steps": 4, "seq_len": 512},
            "simulation": {"steps": 1, "warmup_steps": 0},
        }
    ).jobs()[0]
    assert isinstance(job.strategy, MegatronSpec)
    _, tl = run_job_detailed(job, trace=True)
    fast = explain_step(tl, 0)
    # the scan: every collective tested against every wait
    monkeypatch.setattr(
        ex._Overlaps,
        "during",
        lambda self, a, b: [r for r in self.colls if r.end_s > a and r.start_s < b],
    )
    slow = explain_step(tl, 0)
    assert fast == slow and fast.parts() == slow.parts()
    assert fast.exposed_s > 0 and fast.bubble_s > 0
