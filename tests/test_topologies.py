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
