"""Per-link utilisation (issue 30, Build 3): bytes conserved on the NICs against the ring
all-reduce's closed form, utilisation and busy time within [0, 1] on a real step, no result
moved by recording it, ``scaling explain --links`` and the trace's link counters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import simpy
import yaml
from click.testing import CliRunner

from scaling.app.cli import main
from scaling.io.config import experiment_from_dict
from scaling.io.topology import load_system
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.linkload import LinkLoad
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.simulation import run_job_detailed

#: 2 MLU370-X8 nodes, FSDP: NIC, bridge and PCIe links all carry traffic
SMALL = {
    "name": "small",
    "model": "gpt3-125m",
    "systems": ["mlu370-x8"],
    "nodes": [2],
    "strategies": [{"kind": "fsdp"}],
    "training": {"seq_len": 512, "micro_batch_size": 1},
    "simulation": {"steps": 1, "warmup_steps": 1},
}


def _split(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args), prog_name="scaling")
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


@pytest.mark.parametrize(
    ("system", "nodes", "per_node"),
    [("dgx-a100", 4, 8), ("mlu370-x8", 4, 8), ("atlas-800t-a2", 2, 8), ("dgx-a100", 2, 1)],
)
def test_nic_bytes_of_a_ring_all_reduce_match_the_closed_form(
    system: str, nodes: int, per_node: int
) -> None:
    """A ring all-reduce of S bytes over p ranks: every rank sends 2(p-1)/p·S (each chunk
    reduce-scattered then all-gathered around the ring, Patarasuk & Yuan 2009); the ranks laid
    out node by node, one ring edge per node crosses the network (each channel's ring crosses
    each node boundary once, with its share of S). So the NIC tx links of the cluster carry
    nodes·2(p-1)/p·S in all (times the protocol's wire overhead), and the rx links as much."""
    spec = load_system(system).spec
    env = simpy.Environment()
    fc = FlowCollectives(env, spec, nodes)
    load = LinkLoad(fc.cluster, fc.net)
    size, group = float(1 << 30), Group(nodes, per_node)
    proc = env.process(fc.run(CollectiveOp.ALL_REDUCE, size, group, "ring"))
    env.run(proc)
    choice = proc.value
    assert choice is not None and choice.algorithm == "ring"
    used = load.usage(0.0, env.now)
    tx = sum(u.bytes for u in used if u.cls == "NIC tx")
    rx = sum(u.bytes for u in used if u.cls == "NIC rx")
    p = group.size
    assert tx == pytest.approx(nodes * 2 * (p - 1) / p * size * choice.scale, rel=1e-9)
    assert rx == pytest.approx(tx, rel=1e-12)
    # the window's integral equals the engine's exact per-link counter
    by_link = fc.net.bytes_per_link
    for u in used:
        assert u.bytes == pytest.approx(by_link[u.link], rel=1e-9)
        assert 0 < u.utilisation <= 1 + 1e-9 and u.busy_fraction <= 1 + 1e-12


def test_utilisation_of_a_training_step_is_within_capacity_and_moves_no_result() -> None:
    job = experiment_from_dict(SMALL).jobs()[0]
    plain, _ = run_job_detailed(job)
    res, tl = run_job_detailed(job, links=True)
    assert dataclasses.asdict(res) == dataclasses.asdict(plain)  # recording moves nothing
    assert tl.links is not None
    t0, t1 = tl.step_window(len(res.steps) - 1)
    used = tl.links.usage(t0, t1)
    classes = {u.cls for u in used}
    assert {"NIC tx", "NIC rx", "scale-up bridge link (bridge_groups)"} <= classes, classes
    for u in used:
        assert u.window_s == pytest.approx(t1 - t0)
        assert 0 < u.utilisation <= 1 + 1e-9, u
        assert u.busy_fraction <= 1 + 1e-9, u
        # while busy a link carries at most its capacity
        assert u.bytes <= u.capacity_Bps * u.busy_s * (1 + 1e-9), u
    utils = [u.utilisation for u in used]
    assert utils == sorted(utils, reverse=True)  # busiest first
    assert tl.links.busiest(t0, t1, 3) == used[:3]


def test_explain_links_lists_the_busiest_links(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    code, out, err = _split("explain", str(cfg), "--links", "--top", "4", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 4
    assert {"link_class", "where", "bytes", "busy_s", "utilisation", "step_time_s"} <= set(rows[0])
    assert rows[0]["link_class"] in ("NIC tx", "NIC rx")  # the scale-out NICs bound FSDP here
    assert [r["utilisation"] for r in rows] == sorted(
        (r["utilisation"] for r in rows), reverse=True
    )
    for r in rows:
        want = r["bytes"] / (r["capacity_GBps"] * 1e9 * r["step_time_s"])
        assert r["utilisation"] == pytest.approx(want, rel=1e-9) and r["utilisation"] <= 1
    code, out, _ = _split("explain", str(cfg), "--links")
    assert code == 0 and "busiest" in out and "utilisation" in out and "NIC tx" in out
    for bad, msg in (
        (["--set", "simulation.network=analytic"], "--links:"),
        (["--vs", "dgx-a100", "mlu370-x8"], "--links and --vs"),
    ):
        code, _, err = _split("explain", str(cfg), "--links", *bad)
        assert code == 2 and err.count("\n") == 1 and msg in err, err


def test_trace_has_a_counter_track_per_busiest_link(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "t.json"
    code, _, err = _split("trace", str(cfg), "--out", str(out), "--links", "3")
    assert code == 0, err
    doc = json.loads(out.read_text())
    counters = [e for e in doc["traceEvents"] if e["ph"] == "C"]
    names = list(dict.fromkeys(e["name"] for e in counters))
    assert len(names) == 3 and len(doc["otherData"]["busiest_links"]) == 3
    pid = {e["pid"] for e in counters}
    assert pid == {16}  # the network's own process, past the 16 ranks
    caps = [b["capacity_GBps"] for b in doc["otherData"]["busiest_links"]]
    for name, cap in zip(names, caps, strict=True):
        series = [e for e in counters if e["name"] == name]
        assert all(0 <= e["args"]["GB/s"] <= cap * (1 + 1e-9) for e in series)
        assert series[-1]["args"]["GB/s"] == 0.0  # ends idle at the step's end
    code, _, _ = _split("trace", str(cfg), "--out", str(out), "--links", "0")
    doc = json.loads(out.read_text())
    assert code == 0 and not [e for e in doc["traceEvents"] if e["ph"] == "C"]
