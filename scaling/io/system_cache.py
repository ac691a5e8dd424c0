"""A cache of validated systems, so that a repeated ``scaling collective`` starts without
pydantic (issue 29: importing pydantic and building the topology schemas is ~0.1 CPU-s of a
~0.5 CPU-s process; validating one file is ~0.01).

An entry is the model-layer :class:`~scaling.model.hardware.system.SystemSpec` that
:func:`scaling.io.topology.load_system` made, keyed by everything that decides it:

* the topology file's resolved path and bytes (the key);
* its collective library: the name is resolved again on every use (the search path or
  ``$SCALING_TOPOLOGY_PATH`` may now find another file) and the file's bytes must match;
* the code that validates and converts them: every ``.py`` file of ``scaling/``,
  ``scaling/io/`` and ``scaling/model/``, the Python version and the pydantic, pydantic-core
  and PyYAML versions.

Anything else is a miss: the system is loaded and validated as without the cache, with the
same errors, and the entry written for next time. Only successes are stored. A file modified
while it was being loaded (mtime within :data:`RACY_S` of the load) is not stored, as git does
for racy index entries, so an entry never pairs new bytes with an old result. A cache folder
that cannot be created or written, a corrupt or foreign entry (not owned by this user, or
writable by others: entries are pickles), all fall back to loading: the cache changes start-up
time, never a result or a message.

Where: ``$SCALING_CACHE_DIR``, else ``$XDG_CACHE_HOME/scaling``, else ``~/.cache/scaling``
(folder ``systems/``, at most :data:`MAX_ENTRIES` entries; safe to delete). ``SCALING_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import scaling
from scaling.io.catalog_files import find_file
from scaling.io.config_error import ConfigError
from scaling.model.hardware.system import SystemSpec

__all__ = ["NO_CACHE_ENV", "cache_dir", "code_digest", "load_system_spec"]

#: set to anything but ``""``/``0`` to turn the cache off
NO_CACHE_ENV = "SCALING_NO_CACHE"
#: the cache's folder (its ``systems/`` holds the entries)
CACHE_DIR_ENV = "SCALING_CACHE_DIR"
#: a file whose mtime is this close to its load (s) may have changed during it: not stored
RACY_S = 2.0
#: the most entries kept: a miss that stores one beyond it removes the least recently stored
#: (each code change keys new entries; ~2 kB each)
MAX_ENTRIES = 64
#: the entry format; bumped when an entry's fields change
FORMAT = b"scaling-system-cache 1"


def cache_dir() -> Path | None:
    """The folder of the entries, or ``None`` when :data:`NO_CACHE_ENV` turns the cache off."""
    if os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        return None
    base = os.environ.get(CACHE_DIR_ENV)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "scaling")
    return Path(base) / "systems"


@functools.cache
def code_digest() -> bytes:
    """A digest of the code and library versions a cached spec depends on (see the module)."""
    from importlib.metadata import PackageNotFoundError, version

    pkg = Path(scaling.__file__).resolve().parent
    files = [*sorted(pkg.glob("*.py")), *sorted(pkg.glob("io/*.py"))]
    files += sorted((pkg / "model").rglob("*.py"))
    h = hashlib.sha256(FORMAT)
    for f in files:
        h.update(f"\0{f.relative_to(pkg)}\0".encode())
        h.update(f.read_bytes())
    for dist in ("pydantic", "pydantic-core", "PyYAML"):
        try:
            h.update(f"\0{dist} {version(dist)}".encode())
        except PackageNotFoundError:  # a vendored copy: no version to key on
            h.update(f"\0{dist} ?".encode())
    h.update(f"\0{sys.version}".encode())
    return h.digest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_entry(path: Path) -> dict[str, Any] | None:
    """The entry at ``path``, or ``None``: missing, unreadable, corrupt, or not safe to
    unpickle (another user's file, or one others may write)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if os.name == "posix" and (st.st_uid != os.getuid() or st.st_mode & 0o022):
                return None
            entry = pickle.load(f)
    except Exception:  # a corrupt pickle raises anything (EOFError, ImportError...): a miss
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("spec"), SystemSpec):
        return None
    return entry


def _write_entry(folder: Path, path: Path, entry: dict[str, Any]) -> None:
    """Store ``entry`` at ``path`` atomically (temp file + rename); a failure stores nothing."""
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(entry, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        tmp = None
        entries = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime_ns)
        for old in entries[: max(0, len(entries) - MAX_ENTRIES)]:
            old.unlink()
    except (OSError, pickle.PicklingError):
        pass  # an unwritable or full cache folder: the next run loads again
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _library_file(entry: dict[str, Any], topology: Path) -> Path | None:
    """The library file ``entry``'s name resolves to now, if it still has the stored bytes."""
    try:
        lib = find_file(entry["library"], "collective library", [topology.parent], "libraries")
        if str(lib.resolve()) != entry["library_path"]:
            return None
        return lib if _sha(lib.read_bytes()) == entry["library_sha"] else None
    except (ConfigError, OSError, KeyError, TypeError):
        return None


def load_system_spec(name: str) -> SystemSpec:
    """``load_system(name).spec`` (a catalog name or a YAML path), from the cache when an entry
    for the same files and code exists; same result, same errors."""
    folder = cache_dir()
    path = find_file(name, "system", None)  # a bad name: the error load_system gives
    try:
        data = path.read_bytes() if folder is not None else None
    except OSError:
        data = None  # load_system reports it
    if folder is None or data is None:
        return _load(name)
    key = hashlib.sha256(code_digest() + str(path.resolve()).encode() + b"\0" + data)
    entry_path = folder / f"{key.hexdigest()}.pickle"
    entry = _read_entry(entry_path)
    if entry is not None and _library_file(entry, path) is not None:
        spec: SystemSpec = entry["spec"]
        return spec
    from scaling.io.topology import load_system

    started = time.time()
    loaded = load_system(name)
    try:  # store only what the bytes above gave, with neither file changed during the load
        lib_bytes = loaded.library_path.read_bytes()
        racy = any(os.stat(p).st_mtime >= started - RACY_S for p in (path, loaded.library_path))
        if racy or path.read_bytes() != data:
            return loaded.spec
    except OSError:
        return loaded.spec
    entry = {
        "library": loaded.schema.collective_library,
        "library_path": str(loaded.library_path.resolve()),
        "library_sha": _sha(lib_bytes),
        "spec": loaded.spec,
    }
    _write_entry(folder, entry_path, entry)
    return loaded.spec


def _load(name: str) -> SystemSpec:
    from scaling.io.topology import load_system

    return load_system(name).spec
