"""Deferred imports of heavy optional-at-start-up libraries (pandas and what it pulls in).

``pd = lazy_module("pandas")`` binds a stand-in that imports the real module on its first
attribute access, so a process that never touches a table (``simulate``, a sweep worker, a
command that prints a line) does not pay pandas' ~0.3 s CPU import. Type checkers see the real
module::

    if TYPE_CHECKING:
        import pandas as pd
    else:
        pd = lazy_module("pandas")
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["lazy_module"]


class _LazyModule:
    """Forwards attribute access to ``importlib.import_module(name)`` (imported once; later
    accesses read it from ``sys.modules``' cache through the bound module)."""

    __slots__ = ("_mod", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._mod: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        mod = self._mod
        if mod is None:
            mod = self._mod = importlib.import_module(self._name)
        return getattr(mod, attr)

    def __repr__(self) -> str:
        state = "imported" if self._mod is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it on first attribute access."""
    return _LazyModule(name)
