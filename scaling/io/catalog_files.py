"""Where the catalog's files are: the search path of system and library names (``extra``
folders, ``$SCALING_TOPOLOGY_PATH``, the bundled ``topologies/``) and name → file. Plain file
look-ups without the schemas, so that :mod:`scaling.io.system_cache` can find a system's files
without importing pydantic (start-up: issue 29); :mod:`scaling.io.topology` validates them."""

from __future__ import annotations

import os
from pathlib import Path

import scaling
from scaling.io.config_error import ConfigError

__all__ = ["available_systems", "bundled_topology_dir", "find_file", "search_dirs"]


def bundled_topology_dir() -> Path:
    """The catalog shipped with the package (wheel) or the source checkout's ``topologies/``."""
    pkg = Path(scaling.__file__).resolve().parent
    wheel = pkg / "_topologies"
    return wheel if wheel.is_dir() else pkg.parent / "topologies"


def search_dirs(extra: list[Path] | None = None) -> list[Path]:
    """Where system names are looked up: ``extra`` dirs, ``$SCALING_TOPOLOGY_PATH``, bundled."""
    dirs = list(extra or [])
    env = os.environ.get("SCALING_TOPOLOGY_PATH", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(bundled_topology_dir())
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def available_systems(extra: list[Path] | None = None) -> list[str]:
    """Names of every system file found on the search path."""
    names: set[str] = set()
    for d in search_dirs(extra):
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_file(name: str, kind: str, extra: list[Path] | None, sub: str = "") -> Path:
    """The file of ``name``: a path as given (``.yaml``/``.yml`` or with a separator), else
    ``<dir>/<sub>/<name>.yaml`` in the first of :func:`search_dirs` that has it; ``kind``
    (``system``, ``collective library``) names it in the one-line error when none does."""
    is_path = name.endswith((".yaml", ".yml")) or os.sep in name
    if not 0 < len(name) <= (4096 if is_path else 255):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise ConfigError(
            f"{kind} {shown!r}: a name of {len(name)} characters; expected a catalog name of "
            "1-255 characters or a path of at most 4,096"
        )
    if is_path:
        return Path(name)
    for d in search_dirs(extra):
        cand = d / sub / f"{name}.yaml" if sub else d / f"{name}.yaml"
        try:
            if cand.is_file():
                return cand
        except OSError:  # a name the file system cannot hold: not in this folder
            continue
    known = sorted(
        {p.stem for d in search_dirs(extra) for p in (d / sub if sub else d).glob("*.yaml")}
    )
    raise ConfigError(f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}")
