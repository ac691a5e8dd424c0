"""Optional dependencies (``pip`` extras): what to install when a command needs one.

The distribution is not on PyPI (the PyPI project named ``scaling`` is an unrelated package),
so the hint names the requirement itself and this package's own source folder or wheel.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

#: this package's distribution name (``pip show``)
DISTRIBUTION = "scaling"


def extra_requirements(extra: str) -> list[str]:
    """The requirements the installed package lists for ``extra`` (from its metadata)."""
    try:
        reqs = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return []
    tag = f"extra == '{extra}'"
    return [r.split(";")[0].strip() for r in reqs if tag in r.replace('"', "'")]


def _source_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def install_hint(extra: str) -> str:
    """``pip install …`` for ``extra``: its requirements, and this package with the extra."""
    reqs = " ".join(f"'{r}'" for r in extra_requirements(extra)) or f"(the '{extra}' extra)"
    root = _source_root()
    from scaling._version import __version__

    wheel = f"{DISTRIBUTION}-{__version__}-py3-none-any.whl"
    where = f"'{root}[{extra}]'" if root else f"'{wheel}[{extra}]'"
    return (
        f"pip install {reqs} (or this package with the extra: pip install {where}; not from PyPI)"
    )


def missing_extra(modules: tuple[str, ...], extra: str) -> str | None:
    """A one-line reason when any of ``modules`` is not importable, else ``None``.

    Checks with :func:`importlib.util.find_spec` (top-level names only), so nothing is imported.
    """
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return f"{'/'.join(absent)} not installed (the '{extra}' extra): {install_hint(extra)}"
