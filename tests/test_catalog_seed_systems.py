"""The seed article's field (SEED.md Table 2) is in the catalog and every entry runs or is refused.

(a) Every product of Table 2, plus the MLU370-S4/X8 and DGX A100/H100, has a system file that
    loads and whose every number carries a source (and a note when it is an assumption).
(b) Every system trains GPT-3 1.3B with DDP at 8 and 64 nodes, or is refused with a stated
    reason: the Enflame T20 as unable to train (inference only, per the article), a system whose
    memory is too small for DDP at micro-batch 1 with the GiB figures.

``pytest -s`` prints the table (tokens/s per device, scaling efficiency against one node).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from scaling.app.api import run_experiment
from scaling.io.topology import available_systems, load_system, quantities
from scaling.model.job import InfeasibleJobError
from scaling.units import GB, GiB

#: SEED.md Table 2 product -> catalog system (and a word its device name must contain).
TABLE2 = {
    "Huawei Ascend 910B": ("atlas-800t-a2", "910B"),
    "Biren BR100": ("br100", "BR100"),
    "Cambricon MLU590": ("mlu590", "MLU590"),
    "Enflame T20": ("enflame-t20", "T20"),
    "Moore Threads MTT S4000": ("mtt-s4000", "S4000"),
}
OTHERS = {
    "Cambricon MLU370-S4": ("mlu370-s4", "MLU370-S4"),
    "Cambricon MLU370-X8": ("mlu370-x8", "MLU370-X8"),
    "NVIDIA DGX A100": ("dgx-a100", "A100"),
    "NVIDIA DGX H100": ("dgx-h100", "H100"),
}
SYSTEMS = sorted(name for name, _ in (*TABLE2.values(), *OTHERS.values()))
CONFIDENCES = {"vendor spec", "measured", "secondary", "assumption", "calibrated"}
NODES = (8, 64)
_NEEDS = re.compile(r"needs ([\d.]+) GiB per rank but .+ has ([\d.]+) GiB")


# ---- (a) catalog and provenance ------------------------------------------------------------


def test_every_seed_system_is_in_the_catalog() -> None:
    missing = set(SYSTEMS) - set(available_systems())
    assert not missing, f"not in the catalog: {sorted(missing)}"


@pytest.mark.parametrize(("product", "entry"), sorted({**TABLE2, **OTHERS}.items()))
def test_system_loads_as_its_product(product: str, entry: tuple[str, str]) -> None:
    name, word = entry
    spec = load_system(name).spec
    assert spec.name == name
    assert word in spec.device.name, f"{name} is meant to be the {product}"
    assert spec.devices_per_node >= 1 and spec.nics.count >= 1


@pytest.mark.parametrize("name", SYSTEMS)
def test_every_number_has_provenance(name: str) -> None:
    loaded = load_system(name)
    rows = quantities(loaded.schema) + quantities(loaded.library)
    assert len(rows) > 20
    for path, _value, confidence, source, note in rows:
        assert source.strip(), f"{name}: {path} has no source"
        assert confidence in CONFIDENCES, f"{name}: {path} confidence {confidence!r}"
        if confidence == "assumption":
            assert note.strip(), f"{name}: {path} is an assumption without reasoning"
    dev = loaded.schema.device
    if not dev.can_train:
        assert dev.cannot_train_reason.strip(), f"{name}: cannot train but gives no reason"


def test_enflame_t20_is_marked_inference_only_citing_the_article() -> None:
    dev = load_system("enflame-t20").schema.device
    assert dev.can_train is False
    assert "inference only" in dev.cannot_train_reason
    assert "article" in dev.cannot_train_reason


# ---- (b) GPT-3 1.3B DDP at 8 and 64 nodes --------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One system's run at 1, 8 and 64 nodes (rows by node count) or its refusal."""

    system: str
    rows: dict[int, tuple[float, float]]  # nodes -> (tokens/s per device, scaling efficiency)
    refusal: str = ""


def _experiment(system: str) -> dict:
    return {
        "name": f"seed-{system}",
        "model": "gpt3-1.3b",
        "systems": [system],
        "nodes": [1, *NODES],  # one node is the scaling-efficiency baseline
        "strategy": {"kind": "ddp"},
        "training": {"micro_batch_size": 1},
        "simulation": {"steps": 1, "warmup_steps": 2},
    }


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    for name in SYSTEMS:
        try:
            table = run_experiment(_experiment(name)).table
        except InfeasibleJobError as e:
            out[name] = Outcome(name, {}, str(e))
            continue
        rows = {
            int(r.nodes): (float(r.tokens_per_s_per_device), float(r.scaling_efficiency))
            for r in table.itertuples()
        }
        out[name] = Outcome(name, rows)
    return out


def test_print_seed_field_table(outcomes: dict[str, Outcome]) -> None:
    print("\nGPT-3 1.3B, DDP, micro-batch 1, seq 2048, bf16 (scaling efficiency vs 1 node)")
    print(f"{'system':<14} {'nodes':>5} {'tokens/s/dev':>13} {'scaling eff':>11}")
    for name in SYSTEMS:
        o = outcomes[name]
        if o.refusal:
            kind = "cannot train" if "cannot train" in o.refusal else "out of memory"
            print(f"{name:<14} {'-':>5} REFUSED ({kind}): {o.refusal}")
            continue
        for n in NODES:
            tps, eff = o.rows[n]
            print(f"{name:<14} {n:>5} {tps:>13,.0f} {eff:>11.1%}")
    assert set(outcomes) == set(SYSTEMS)


@pytest.mark.parametrize("name", SYSTEMS)
def test_runs_or_is_refused_with_a_reason(name: str, outcomes: dict[str, Outcome]) -> None:
    o = outcomes[name]
    dev = load_system(name).schema.device
    if not o.refusal:
        assert dev.can_train, f"{name} cannot train but was simulated"
        assert set(o.rows) == {1, *NODES}
        for n in NODES:
            tps, eff = o.rows[n]
            assert tps > 0, f"{name} at {n} nodes"
            assert 0 < eff <= 1.0 + 1e-9, f"{name} at {n} nodes: efficiency {eff}"
        return
    assert name in o.refusal, "a refusal must name the system"
    if not dev.can_train:
        assert "cannot train" in o.refusal and dev.cannot_train_reason in o.refusal
        return
    # The only other reason a DDP job of this size may be refused: it does not fit in memory.
    m = _NEEDS.search(o.refusal)
    assert m, f"{name}: refusal gives no GiB figures: {o.refusal}"
    need, have = float(m.group(1)), float(m.group(2))
    assert need > have
    assert have == pytest.approx(dev.mem_GB.value * GB / GiB, abs=0.06)


def test_enflame_t20_is_refused_as_unable_to_train(outcomes: dict[str, Outcome]) -> None:
    refusal = outcomes["enflame-t20"].refusal
    assert "cannot train" in refusal and "inference only" in refusal


def test_large_memory_parts_are_not_refused(outcomes: dict[str, Outcome]) -> None:
    """GPT-3 1.3B DDP needs ~28 GiB at micro-batch 1: every trainable >= 40 GB part must run."""
    for name in SYSTEMS:
        dev = load_system(name).schema.device
        if dev.can_train and dev.mem_GB.value >= 40:
            assert not outcomes[name].refusal, f"{name}: {outcomes[name].refusal}"
