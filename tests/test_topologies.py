"""The bundled catalog: every file loads, every number has provenance, specs are coherent."""

from __future__ import annotations

import pytest

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
