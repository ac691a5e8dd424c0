"""The example experiments and sweeps shipped with the package, reachable by name.

``scaling run mlu-vs-gpu`` runs ``configs/mlu-vs-gpu.yaml``: from the wheel (where the
``configs/`` folder is installed as ``scaling/_configs``) or from a source checkout.
"""

from __future__ import annotations

from pathlib import Path

import scaling


def bundled_config_dir() -> Path:
    """The examples shipped with the package (wheel) or the source checkout's ``configs/``."""
    pkg = Path(scaling.__file__).resolve().parent
    wheel = pkg / "_configs"
    return wheel if wheel.is_dir() else pkg.parent / "configs"


def bundled_configs() -> dict[str, Path]:
    """Every bundled example by name: ``mlu-vs-gpu``, ``sweeps/ddp-buckets``, ``golden/…``."""
    root = bundled_config_dir()
    if not root.is_dir():
        return {}
    out = {}
    for p in sorted(root.rglob("*.yaml")):
        name = p.relative_to(root).with_suffix("").as_posix()
        if p.name != "invariants.yaml":  # golden invariants: not an experiment
            out[name] = p
    return out


def resolve_config(config: str | Path) -> Path:
    """A config argument as a path: an existing file as is; else the bundled example of that
    name (``mlu-vs-gpu``, ``sweeps/ddp-buckets``; a ``.yaml`` suffix or ``configs/`` prefix is
    allowed); else the argument unchanged, for the loader to report as missing."""
    p = Path(config)
    try:
        if p.exists():
            return p
    except OSError:  # a name the OS refuses (too long): the loader reports it in one line
        return p
    key = p.as_posix().removeprefix("configs/").removesuffix(".yaml").removesuffix(".yml")
    found = bundled_configs().get(key)
    return found if found is not None else p
