"""The bundled catalog: every file loads, every number has provenance, specs are coherent."""

from __future__ import annotations

import pytest

from scaling.io.errors import ConfigError
from scaling.io.topology import available_systems, load_system, quantities

REQUIRED = {"dgx-a100", "dgx-h100", "mlu370-x8", "mlu370-s4"}


def test_required_systems_present() -> None:
    assert set(available_systems()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_number_has_source_and_confidence(name: str) -> None:
    loaded = load_system(name)
    rows = quantities(loaded.schema) + quantities(loaded.library)
    assert len(rows) > 20
    for path, _value, confidence, source, note in rows:
        assert source.strip(), path
        assert confidence in {"vendor spec", "measured", "secondary", "assumption", "calibrated"}
        if confidence == "assumption":
            assert note.strip(), f"{name}: {path} is an assumption without reasoning"


def test_dgx_a100_matches_the_issue() -> None:
    s = load_system("dgx-a100").spec
    assert s.devices_per_node == 8
    assert s.fabric.kind.value == "switch" and s.fabric.link_bw_Bps == 300e9
    assert s.nics.count == 8 and s.nics.bw_Bps == 200e9 / 8
    assert s.scale_out.oversubscription == 1.0


def test_mlu370_x8_is_two_bridge_groups() -> None:
    s = load_system("mlu370-x8").spec
    assert s.fabric.kind.value == "bridge_groups" and s.fabric.group_size == 4
    assert s.devices_per_node == 8
    assert s.library.name == "cncl"


def test_mlu370_s4_is_pcie_only() -> None:
    assert load_system("mlu370-s4").spec.fabric.kind.value == "pcie"


def test_content_hash_changes_with_content(tmp_path) -> None:
    src = load_system("dgx-a100")
    text = src.path.read_text().replace("value: 1500", "value: 1501")
    (tmp_path / "x.yaml").write_text(text)
    (tmp_path / "libraries").mkdir()
    (tmp_path / "libraries" / "nccl.yaml").write_text(src.library_path.read_text())
    assert load_system(str(tmp_path / "x.yaml")).content_hash != src.content_hash


def _copy_catalog(tmp_path, edit_system=None, edit_library=None):
    """dgx-a100 and nccl copied to ``tmp_path`` with optional text edits; returns the path."""
    src = load_system("dgx-a100")
    text, lib = src.path.read_text(), src.library_path.read_text()
    (tmp_path / "libraries").mkdir()
    (tmp_path / "x.yaml").write_text(edit_system(text) if edit_system else text)
    (tmp_path / "libraries" / "nccl.yaml").write_text(edit_library(lib) if edit_library else lib)
    return str(tmp_path / "x.yaml")


def test_top_level_latencies_beside_protocols_are_refused(tmp_path) -> None:
    # nccl has protocols: a top-level step latency would be ignored, so it is refused
    def add(lib: str) -> str:
        return lib.replace(
            "bw_efficiency:",
            'call_latency_us: {value: 8.4, source: "x", confidence: secondary, low: 8, high: 9}'
            "\nbw_efficiency:",
            1,
        )

    with pytest.raises(ConfigError, match="call_latency_us would be ignored"):
        load_system(_copy_catalog(tmp_path, edit_library=add))


def test_pcie_fields_on_a_switch_node_are_refused(tmp_path) -> None:
    def add(text: str) -> str:
        return text.replace(
            "    link_efficiency:",
            '    pcie_latency_us: {value: 1.0, source: "x", confidence: secondary, low: 1, high: 1}\n'
            "    link_efficiency:",
            1,
        )

    with pytest.raises(ConfigError, match=r"remove fabric\.pcie_latency_us"):
        load_system(_copy_catalog(tmp_path, edit_system=add))


# ---- issue 24: the catalog follows the vendor's own evidence --------------------------------------

_ROW = __import__("re").compile(r"reference/(\w+\.csv) rows? ((?:'[^']+'(?:, )?)+)")


def test_cited_evidence_rows_exist_in_the_package_reference_data() -> None:
    """A source or note citing ``reference/<file>.csv row(s) '<item>'[, '<item>']`` names rows that
    exist in the package's copy (scaling/data/reference, source column intact)."""
    from scaling.io.reference import reference_rows

    seen = 0
    for name in available_systems():
        loaded = load_system(name)
        docs = [loaded.schema, loaded.library]
        texts = [t for d in docs for _p, _v, _c, src, note in quantities(d) for t in (src, note)]
        texts += [a.note for d in docs for a in d.alternatives]
        for text in texts:
            for file, items in _ROW.findall(text):
                rows = reference_rows(file)
                assert all("source" in r for r in rows), f"{file}: no source column"
                keys = {r.get("item") for r in rows}
                for item in __import__("re").findall(r"'([^']+)'", items):
                    assert item in keys, f"{name}: {item!r} is no row of {file}"
                    seen += 1
    assert seen >= 6  # the CNCL and MLU370-X8 citations


def test_cncl_has_a_tree_with_ring_only_as_the_named_alternative() -> None:
    """cncl.h (CNCL 1.25) builds ring and tree topologies: both nominal; ring-only is the
    alternative (all-to-all keeps its assumed p2p in both); compute interference from the serial
    buffer copy is non-zero across its range."""
    lib = load_system("mlu370-x8").library
    assert list(lib.algorithms) == ["ring", "tree", "p2p"] and lib.tree_bw_factor is not None
    alt = {a.name: a for a in lib.alternatives}["cncl-1.x-ring-only"]
    assert alt.set["algorithms"] == ["ring", "p2p"]
    ci = lib.compute_interference
    assert ci.low is not None and 0 < ci.low < ci.value < (ci.high or 0)


def test_mlu370_x8_bf16_range_is_the_dense_ladder() -> None:
    """96 TFLOPS is dense (the per-core FP16:INT8 ratio of mlu-ops); the range reaches the dense
    roofline 127.8 and no longer the 'sparse' 48."""
    q = load_system("mlu370-x8").schema.device.peak_TFLOPS["bf16"]
    assert q.value == 96 and 85 <= (q.low or 0) < 96 and 120 <= (q.high or 0) <= 130
    assert q.dist == "triangular"


def test_mlu370_x8_two_devices_per_card_alternative_halves_the_card() -> None:
    """The 16-rank reading (vendor scripts launch 16 MLUs per node) is the alternative: twice
    the devices, each with half the card's memory, bandwidth and peak rate."""
    from scaling.io.topology import SystemSchema, apply_alternative

    ls = load_system("mlu370-x8")
    alt = {a.name: a for a in ls.schema.alternatives}["two-devices-per-card"]
    doc = apply_alternative(ls.schema.model_dump(mode="json"), alt, "mlu370-x8")
    two = SystemSchema.model_validate(doc)
    one = ls.schema
    assert two.node.devices.value == 2 * one.node.devices.value == 16
    for get in (
        lambda s: s.device.mem_GB.value,
        lambda s: s.device.mem_bw_GBps.value,
        lambda s: s.device.peak_TFLOPS["bf16"].value,
        lambda s: s.device.compute_units.value,
    ):
        assert get(two) == pytest.approx(get(one) / 2)
