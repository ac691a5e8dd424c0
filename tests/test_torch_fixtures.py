"""The recorded PyTorch collective schedules (tests/fixtures/torch_schedules) are self-consistent.

The fixtures come from ``tools/record_torch_schedule.py`` (real PyTorch DDP / FSDP on CPU gloo).
These checks need no torch: they validate each recording's structure and the invariants any real
recording must satisfy (every member of a group issues the same collectives on it; DDP buckets
partition the parameters and their all-reduce sizes are the parameters' bytes; FSDP all-gather
and reduce-scatter sizes are the unit's padded flat size), so that a broken re-recording is
caught before the simulator is compared with it.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "torch_schedules"
FIXTURES = sorted(FIXTURE_DIR.glob("*.json"))
OPS = {"all_reduce", "all_gather", "reduce_scatter", "broadcast", "barrier"}
PHASES = {"setup", "forward", "backward", "optimizer"}
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2, "int64": 8, "int32": 4}
META_KEYS = {
    "format",
    "variant",
    "torch_version",
    "world_size",
    "model",
    "strategy",
    "training",
    "steps_recorded",
    "iteration0_step",
    "first_steady_step",
    "ranks",
}


@cache
def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def of_kind(*kinds: str) -> list[Path]:
    return [p for p in FIXTURES if load(p)["strategy"]["kind"] in kinds]


def all_collectives(doc: dict[str, Any]) -> list[tuple[int, int | None, dict[str, Any]]]:
    """(rank, step or None for setup, collective) over the whole recording."""
    out = []
    for r in doc["ranks"]:
        out += [(r["rank"], None, e) for e in r["setup"]]
        for k, step in enumerate(r["steps"]):
            out += [(r["rank"], k, e) for e in step]
    return out


def test_fixture_set_covers_the_variants() -> None:
    kinds = Counter(load(p)["strategy"]["kind"] for p in FIXTURES)
    assert kinds["ddp"] >= 8 and kinds["fsdp1"] >= 8 and kinds["fsdp2"] >= 2, kinds
    assert {load(p)["world_size"] for p in FIXTURES} == {2, 4, 8}
    # FSDP's padding to the shard-group size is exercised by both FSDP1 and FSDP2 recordings
    for kind in ("fsdp1", "fsdp2"):
        units = [u for p in of_kind(kind) for u in load(p)["strategy"]["units"]]
        assert any(u["padded_numel"] > u["numel"] for u in units), kind


@pytest.mark.parametrize("path", FIXTURES, ids=ids(FIXTURES))
def test_structure(path: Path) -> None:
    doc = load(path)
    assert doc.keys() >= META_KEYS
    assert doc["variant"] == path.stem
    ws = doc["world_size"]
    assert [r["rank"] for r in doc["ranks"]] == list(range(ws))
    assert doc["iteration0_step"] == 0
    assert all(len(r["steps"]) == doc["steps_recorded"] for r in doc["ranks"])
    steady = doc["first_steady_step"]
    assert steady is None or 1 <= steady < doc["steps_recorded"]
    names = [n for n, _ in doc["model"]["params"]]
    assert len(names) == len(set(names))
    for rank, step, e in all_collectives(doc):
        assert e["op"] in OPS
        assert isinstance(e["bytes"], int) and e["bytes"] >= 0
        assert e["phase"] in PHASES
        assert (e["phase"] == "setup") == (step is None)
        assert e["group_size"] == len(e["group"]) and rank in e["group"]
        assert set(e["group"]) <= set(range(ws))
        if e["op"] != "barrier":
            assert e["bytes"] % ITEMSIZE[e["dtype"]] == 0


@pytest.mark.parametrize("path", FIXTURES, ids=ids(FIXTURES))
def test_group_members_issue_the_same_collectives(path: Path) -> None:
    """A collective needs every member of its group: each member's sequence on a group agrees."""
    doc = load(path)
    seqs: dict[tuple[int, ...], dict[int, list[tuple[Any, ...]]]] = {}
    for rank, step, e in all_collectives(doc):
        g = tuple(e["group"])
        seqs.setdefault(g, {}).setdefault(rank, []).append((step, e["op"], e["bytes"], e["dtype"]))
    for g, per_rank in seqs.items():
        assert set(per_rank) == set(g), g
        first = per_rank[g[0]]
        assert all(s == first for s in per_rank.values()), g


def _synced_buckets(step: list[dict[str, Any]], accum: int) -> list[dict[str, Any]]:
    return [e for e in step if "bucket" in e and e.get("micro", accum - 1) == accum - 1]


@pytest.mark.parametrize("path", of_kind("ddp"), ids=ids(of_kind("ddp")))
def test_ddp_buckets_partition_the_parameters(path: Path) -> None:
    """Each step's bucket all-reduces cover every parameter once, sized as the parameters."""
    doc = load(path)
    numel = dict(doc["model"]["params"])
    accum = doc["training"]["grad_accum"]
    for r in doc["ranks"]:
        for step in r["steps"]:
            buckets = _synced_buckets(step, accum)
            assert [b["bucket"]["index"] for b in buckets] == list(range(len(buckets)))
            names = [n for b in buckets for n in b["bucket"]["params"]]
            assert sorted(names) == sorted(numel)
            for b in buckets:
                assert b["op"] == "all_reduce" and b["phase"] == "backward"
                elems = sum(numel[n] for n in b["bucket"]["params"])
                assert b["bytes"] == elems * ITEMSIZE[b["dtype"]]
            # no bucket traffic from the micro-batches run under no_sync()
            assert not [e for e in step if "bucket" in e and e not in buckets]


@pytest.mark.parametrize("path", of_kind("ddp"), ids=ids(of_kind("ddp")))
def test_ddp_steady_buckets_close_at_their_cap(path: Path) -> None:
    """A bucket closes as soon as it reaches its cap (first bucket: first_bucket_bytes_cap).

    Rebuilt buckets (the default, and static_graph) are filled in gradient-ready order, launch
    order = fill order. With find_unused_parameters (never rebuilt) the iteration-0 buckets are
    filled in registration order and launched in reverse, so the fill goes from the last
    launched bucket to the first.
    """
    doc = load(path)
    numel = dict(doc["model"]["params"])
    s = doc["strategy"]
    steady = doc["first_steady_step"]
    assert steady is not None
    step = doc["ranks"][0]["steps"][steady]
    buckets = _synced_buckets(step, doc["training"]["grad_accum"])
    rebuilt = s.get("static_graph", False) or not s.get("find_unused_parameters", False)
    fill = buckets if rebuilt else buckets[::-1]
    for i, b in enumerate(fill):
        cap = s["first_bucket_bytes_cap"] if i == 0 else s["bucket_bytes_cap"]
        # caps count the gradient bytes in the parameter dtype (fp32), before any compression
        fp32 = [numel[n] * 4 for n in b["bucket"]["params"]]
        # params are listed in fill order: the last one is the tensor that reached the cap
        assert sum(fp32) - fp32[-1] < cap
        if i < len(fill) - 1:
            assert sum(fp32) >= cap


@pytest.mark.parametrize("path", of_kind("fsdp1", "fsdp2"), ids=ids(of_kind("fsdp1", "fsdp2")))
def test_fsdp_unit_traffic_is_the_unit_flat_size(path: Path) -> None:
    """Units partition the parameters; each unit's all-gather / reduce-scatter moves its padded
    flat parameter (FSDP pads to a multiple of the shard group size)."""
    doc = load(path)
    numel = dict(doc["model"]["params"])
    units = {u["unit"]: u for u in doc["strategy"]["units"]}
    names = [n for u in units.values() for n in u["params"]]
    assert sorted(names) == sorted(numel)
    for u in units.values():
        assert u["numel"] == sum(numel[n] for n in u["params"])
        assert u["numel"] <= u["padded_numel"]
    for _rank, _step, e in all_collectives(doc):
        if doc["strategy"]["kind"] == "fsdp1" and e["op"] == "all_gather":
            # FSDP1 pads the whole flat parameter to a multiple of the shard-group size
            g, n = e["group_size"], units[e["unit"]]["numel"]
            assert units[e["unit"]]["padded_numel"] == -(-n // g) * g
        if e["op"] in ("all_gather", "reduce_scatter") and "unit" in e:
            u = units[e["unit"]]
            elems = e["bytes"] // ITEMSIZE[e["dtype"]]
            # HSDP / FSDP2 int reshard: the group is a subset of the world
            assert elems == u["padded_numel"] or elems * doc["world_size"] == (
                u["padded_numel"] * e["group_size"]
            ), (e, u)
