"""The validated-system cache of ``scaling collective`` (scaling/io/system_cache.py): a hit gives
the spec a fresh load gives, anything that could change it is a miss, and a broken cache folder
changes nothing but speed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import scaling.io.topology as topology
from scaling.io import system_cache
from scaling.io.errors import ConfigError
from scaling.io.system_cache import load_system_spec
from scaling.io.topology import available_systems, bundled_topology_dir, load_system

ROOT = Path(__file__).resolve().parents[1]
OLD = time.time() - 3600  # an mtime well before any load: not "racy"


@dataclass
class Cache:
    """The cache folder's entries and the real loads (names) made so far."""

    folder: Path
    loads: list[str]

    def entries(self) -> list[Path]:
        """The stored entries."""
        return list(self.folder.glob("*.pickle"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cache:
    """A fresh cache folder, turned on, counting the real loads."""
    monkeypatch.setenv(system_cache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(system_cache.NO_CACHE_ENV, raising=False)
    c = Cache(tmp_path / "cache" / "systems", [])
    real = topology.load_system

    def counting(name: str, extra: list[Path] | None = None) -> topology.LoadedSystem:
        c.loads.append(name)
        return real(name, extra)

    monkeypatch.setattr(topology, "load_system", counting)
    return c


def _own_system(tmp_path: Path, description: str = "mine") -> Path:
    """dgx-a100 with its own description and its own copy of its library, both old files."""
    (tmp_path / "libraries").mkdir(exist_ok=True)
    lib = tmp_path / "libraries" / "nccl.yaml"
    shutil.copy(bundled_topology_dir() / "libraries" / "nccl.yaml", lib)
    text = (bundled_topology_dir() / "dgx-a100.yaml").read_text()
    path = tmp_path / "sys.yaml"
    old = next(line for line in text.splitlines() if line.startswith("description:"))
    path.write_text(text.replace(old, f"description: {description}"))
    for p in (path, lib):
        os.utime(p, (OLD, OLD))
    return path


@pytest.mark.parametrize("name", available_systems())
def test_a_hit_is_the_fresh_spec(cache: Cache, name: str) -> None:
    fresh = load_system(name).spec
    first = load_system_spec(name)  # a miss: loads and stores
    second = load_system_spec(name)  # a hit
    assert first == fresh and second == fresh
    assert cache.loads == [name]  # the miss; the hit loaded nothing
    assert len(cache.entries()) == 1


def test_an_edited_topology_or_library_is_a_miss(cache: Cache, tmp_path: Path) -> None:
    path = _own_system(tmp_path)
    assert load_system_spec(str(path)).description == "mine"
    assert load_system_spec(str(path)).description == "mine" and len(cache.loads) == 1
    path.write_text(path.read_text().replace("description: mine", "description: edited"))
    os.utime(path, (OLD, OLD))
    assert load_system_spec(str(path)).description == "edited" and len(cache.loads) == 2
    lib = tmp_path / "libraries" / "nccl.yaml"
    lib.write_text(lib.read_text().replace("channels: {value: 16,", "channels: {value: 12,"))
    os.utime(lib, (OLD, OLD))
    spec = load_system_spec(str(path))
    assert len(cache.loads) == 3 and spec.library.channels == 12
    assert spec == load_system(str(path)).spec


def test_a_library_found_elsewhere_now_is_a_miss(cache: Cache, tmp_path: Path) -> None:
    path = _own_system(tmp_path)
    load_system_spec(str(path))
    (tmp_path / "libraries" / "nccl.yaml").unlink()  # now the bundled nccl.yaml is found
    spec = load_system_spec(str(path))
    assert len(cache.loads) == 2 and spec == load_system(str(path)).spec


def test_a_file_changed_during_its_load_is_not_stored(cache: Cache, tmp_path: Path) -> None:
    path = _own_system(tmp_path)
    os.utime(path)  # modified just now: it may still be being written
    load_system_spec(str(path))
    load_system_spec(str(path))
    assert len(cache.loads) == 2 and not cache.entries()


def test_corrupt_or_foreign_entries_are_misses(cache: Cache) -> None:
    load_system_spec("dgx-a100")
    (entry,) = cache.entries()
    entry.write_bytes(b"not a pickle")
    assert load_system_spec("dgx-a100") == load_system("dgx-a100").spec
    assert len(cache.loads) == 2  # the corrupt entry was a miss (and was stored again)
    load_system_spec("dgx-a100")
    assert len(cache.loads) == 2
    if os.name == "posix":
        entry.chmod(0o666)  # others may write it: never unpickled
        load_system_spec("dgx-a100")
        assert len(cache.loads) == 3


def test_an_unusable_cache_folder_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the cache folder should be
    monkeypatch.setenv(system_cache.CACHE_DIR_ENV, str(blocker))
    monkeypatch.delenv(system_cache.NO_CACHE_ENV, raising=False)
    assert load_system_spec("dgx-a100") == load_system("dgx-a100").spec
    monkeypatch.setenv(system_cache.NO_CACHE_ENV, "1")
    monkeypatch.setenv(system_cache.CACHE_DIR_ENV, str(tmp_path / "off"))
    assert load_system_spec("mlu370-x8") == load_system("mlu370-x8").spec
    assert not (tmp_path / "off").exists()


def test_errors_are_those_of_a_fresh_load(cache: Cache, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((bundled_topology_dir() / "dgx-a100.yaml").read_text() + "extra_field: 1\n")
    for name in ("no-such-system", str(bad), str(tmp_path / "missing.yaml")):
        with pytest.raises(ConfigError) as fresh:
            load_system(name)
        for _ in range(2):  # failures are not stored
            with pytest.raises(ConfigError) as cached:
                load_system_spec(name)
            assert str(cached.value) == str(fresh.value)
    assert not cache.entries()


def test_a_cached_collective_imports_no_pydantic_or_yaml(tmp_path: Path) -> None:
    env = dict(os.environ, **{system_cache.CACHE_DIR_ENV: str(tmp_path)})
    env.pop(system_cache.NO_CACHE_ENV, None)
    code = (
        "import sys; from scaling.app.entry import main\n"
        "try: main(['collective', '--system', 'dgx-a100', '--nodes', '2', '--sizes', '1M', "
        "'--out', '-'])\n"
        "except SystemExit as e: assert not e.code, e\n"
        "print(sorted(m for m in ('pydantic', 'yaml') if m in sys.modules))"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        ).stdout
        for _ in range(2)
    ]
    assert outs[0].splitlines()[-1] == "['pydantic', 'yaml']"  # the first run validates
    assert outs[1].splitlines()[-1] == "[]"
    assert outs[0].splitlines()[:-1] == outs[1].splitlines()[:-1]  # the same table, byte for byte


def test_the_cache_keeps_at_most_max_entries(
    cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(system_cache, "MAX_ENTRIES", 2)
    for name in ("dgx-a100", "mlu370-x8", "dgx-h100"):
        load_system_spec(name)
        time.sleep(0.01)  # distinct mtimes
    assert len(cache.entries()) == 2
    load_system_spec("dgx-a100")  # the oldest entry was removed: a miss again
    assert cache.loads == ["dgx-a100", "mlu370-x8", "dgx-h100", "dgx-a100"]
