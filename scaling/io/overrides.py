"""``--set PATH=VALUE`` overrides and sweep axes: dotted field paths into nested mappings."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from scaling.io.errors import ConfigError, LineMap, check_yaml_limits


def path_keys(path: str) -> tuple[str | int, ...]:
    """A dotted field path as the key tuple of a :class:`LineMap`: names for mapping keys,
    integers for list items (``strategies.1.sharding`` → ``("strategies", 1, "sharding")``)."""
    return tuple(int(k) if k.isdigit() else k for k in path.split("."))


def set_path(data: dict[str, Any], path: str, value: Any, where: str) -> tuple[str | int, ...]:
    """Set ``value`` (a copy) at the dotted ``path`` of a nested mapping, in place: mapping keys
    by name, list items by index (``strategies.1.backward_prefetch``); a missing (or null) mapping
    on the way is created. The one setter of ``--set`` and of sweep axes. Returns the path's key
    tuple; a bad path is a :class:`ConfigError` starting with ``where``."""
    keys = path.split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(f"{where}: empty field name in path {path!r}")
    node: Any = data
    used: list[str | int] = []
    for depth, k in enumerate(keys):
        last = depth == len(keys) - 1
        above = ".".join(keys[:depth]) or "(top level)"
        if isinstance(node, list):
            if not (k.isdigit() and int(k) < len(node)):
                raise ConfigError(
                    f"{where}: {path}: {above} is a list of {len(node)}; expected an index "
                    f"0..{len(node) - 1}, got {k!r}"
                )
            i = int(k)
            used.append(i)
            if last:
                node[i] = copy.deepcopy(value)
            else:
                node = node[i]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {path}: {above} is not a mapping; cannot set {k!r}")
        used.append(k)
        if last:
            node[k] = copy.deepcopy(value)
        else:
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
    return tuple(used)


def parse_override(item: str) -> tuple[str, Any]:
    """``PATH=VALUE`` (as ``--set``) → the path and the value parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected PATH=VALUE, e.g. --set nodes=[1,2,4]")
    path, raw = item.split("=", 1)
    shown = item if len(item) <= 80 else item[:77] + "..."
    try:
        check_yaml_limits(raw, f"--set {shown!r}")
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {shown!r}: value is not valid YAML") from None
    except (ValueError, OverflowError, RecursionError):
        raise ConfigError(f"--set {shown!r}: cannot read the value (a number too long?)") from None
    return path.strip(), value


def apply_overrides(
    data: dict[str, Any],
    overrides: list[str],
    lines: LineMap | None = None,
    prefix: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """Apply ``PATH=VALUE`` overrides (value parsed as YAML; list items by index, as sweep axes)
    to a nested mapping, in place. Each overridden path is marked in ``lines`` (under
    ``prefix``: the mapping's place in its file) so that an error names ``--set``, not a line."""
    for item in overrides:
        path, value = parse_override(item)
        keys = set_path(data, path, value, f"--set {item!r}")
        if lines is not None:
            lines.mark_overridden((*prefix, *keys))
    return data
