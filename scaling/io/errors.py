"""Reading YAML with line numbers, and turning validation failures into one-line errors.

Every user-facing input error is a :class:`ConfigError` whose message names the file, the line,
the field path, the bad value and what was expected, e.g.::

    configs/x.yaml:12: strategy.bucket_cap_MB: got -5; expected a number > 0
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scaling.io.config_error import ConfigError

if TYPE_CHECKING:  # pydantic is imported where a schema validates (start-up: issue 29)
    from pydantic import BaseModel, ValidationError


def _path_str(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


class LineMap:
    """Maps a field path (tuple of keys / indices) to its 1-based line in the source file."""

    def __init__(self) -> None:
        self._lines: dict[tuple[Any, ...], int] = {}
        self._overridden: set[tuple[Any, ...]] = set()

    def mark_overridden(self, path: tuple[Any, ...]) -> None:
        """The value at ``path`` came from the command line (``--set``), not from the file."""
        self._overridden.add(tuple(path))

    def overridden(self, path: tuple[Any, ...]) -> bool:
        """Whether ``path`` (or a parent) was set by --set rather than the file."""
        return any(tuple(path[:i]) in self._overridden for i in range(len(path) + 1))

    def add(self, path: tuple[Any, ...], line: int) -> None:
        """Record that the key at ``path`` starts on ``line``."""
        self._lines[path] = line

    def line_of_exact(self, path: tuple[Any, ...]) -> int | None:
        """Line of exactly ``path``, or None."""
        return self._lines.get(tuple(path))

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """Line of ``path`` or of its nearest recorded parent, or None."""
        # Fall back to the closest ancestor that has a line (a missing field → its parent).
        for i in range(len(path), -1, -1):
            hit = self._lines.get(tuple(path[:i]))
            if hit is not None:
                return hit
        return None


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: LineMap, where: str) -> None:
    # A key's own line wins over its value's (a block mapping starts at its first child).
    if lines.line_of_exact(path) is None:
        lines.add(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = k.value
            if key in seen:
                raise ConfigError(
                    f"{where}:{k.start_mark.line + 1}: {_path_str((*path, key))}: duplicate key"
                )
            seen.add(key)
            lines.add((*path, key), k.start_mark.line + 1)
            _walk(v, (*path, key), lines, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, (*path, i), lines, where)


def read_bounded(path: str | Path, limit: int, noun: str, too_big: str = "") -> bytes:
    """The bytes of ``path`` — a regular file, or a pipe such as ``<(cmd)`` — read up to
    ``limit`` bytes and no further; anything else (missing, a folder, a device such as
    ``/dev/zero``, a socket, more than ``limit`` bytes, unreadable) is a one-line
    :class:`ConfigError` naming the file and what it should be, ``noun`` (e.g. ``"YAML config"``);
    ``too_big`` replaces the size refusal's "expected ..." part."""
    p = Path(path)
    too_big = too_big or f"expected a {noun} of at most {limit:,} bytes"
    try:
        if not p.exists():
            raise ConfigError(f"{p}: no such file ({noun} expected)")
        if p.is_dir():
            raise ConfigError(f"{p}: is a directory; expected a {noun} file")
        mode = p.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):  # a pipe: <(cat x.yaml)
            kind = "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"
            raise ConfigError(f"{p}: is {kind}; expected a regular {noun} file")
        if p.stat().st_size > limit:
            raise ConfigError(f"{p}: {p.stat().st_size:,} bytes; {too_big}")
        with p.open("rb") as fh:  # bounded: a pipe or /proc file has no size to check first
            raw = fh.read(limit + 1)
        if len(raw) > limit:
            raise ConfigError(f"{p}: more than {limit:,} bytes; {too_big}")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    return raw


def read_yaml(path: str | Path, what: str = "config") -> tuple[dict[str, Any], LineMap]:
    """Read a YAML mapping from ``path`` with a line map; every failure is a :class:`ConfigError`."""
    p = Path(path)
    limit = MAX_YAML_CHARS * 4  # UTF-8: at most 4 bytes a character
    too_big = f"expected a YAML {what} of at most {MAX_YAML_CHARS:,} characters"
    raw = read_bounded(p, limit, f"YAML {what}", too_big)
    if b"\x00" in raw:
        raise ConfigError(f"{p}: is a binary file (NUL bytes); expected a YAML {what} file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: is not UTF-8 text (byte {e.start}); expected a YAML {what} file"
        ) from None
    return parse_yaml(text, str(p), what)


#: Limits on one YAML document, checked on the parser's event stream before anything is built:
#: a 350-byte file of nested aliases ("billion laughs") would otherwise expand past gigabytes,
#: and nesting deeper than Python's recursion limit crashes the composer. Every bundled config
#: and topology is far inside them (the largest: ~30 KiB, ~1,500 nodes, depth 8).
MAX_YAML_CHARS = 4 * 1024 * 1024
MAX_YAML_NODES = 200_000  # scalars and collections after alias expansion
MAX_YAML_DEPTH = 64  # nested mappings/sequences
#: a scalar longer than this is refused (a 5,000-digit integer makes ``int()`` raise)
MAX_YAML_SCALAR_CHARS = 100_000


def check_yaml_limits(text: str, where: str, loader: type[Any] = yaml.SafeLoader) -> None:
    """Refuse YAML beyond :data:`MAX_YAML_CHARS`, :data:`MAX_YAML_NODES` (aliases expanded),
    :data:`MAX_YAML_DEPTH` or with a recursive alias, as a :class:`ConfigError` naming the line.
    Works on the event stream, so the cost is linear in the text whatever the aliases expand to.
    """
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(
            f"{where}: document is {len(text):,} characters; expected at most "
            f"{MAX_YAML_CHARS:,} (a config or topology is a few KiB)"
        )
    sizes: dict[str, int] = {}  # anchor -> nodes it expands to
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, nodes so far)
    total = 0

    def add(n: int, line: int) -> None:
        nonlocal total
        total += n
        if stack:
            a, c = stack[-1]
            stack[-1] = (a, c + n)
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"{where}:{line}: aliases expand the document past {MAX_YAML_NODES:,} nodes; "
                "expected a plain config (an alias bomb?)"
            )

    for ev in yaml.parse(text, Loader=loader):
        line = ev.start_mark.line + 1 if ev.start_mark else 0
        if isinstance(ev, yaml.CollectionStartEvent):
            if len(stack) >= MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{where}:{line}: nesting deeper than {MAX_YAML_DEPTH} levels; expected a "
                    "config a few levels deep"
                )
            add(1, line)
            stack.append((ev.anchor, 0))
        elif isinstance(ev, yaml.CollectionEndEvent):
            anchor, n = stack.pop()
            if anchor is not None:
                sizes[anchor] = n + 1
            if stack:
                a, c = stack[-1]
                stack[-1] = (a, c + n)
        elif isinstance(ev, yaml.ScalarEvent):
            if len(ev.value) > MAX_YAML_SCALAR_CHARS:
                raise ConfigError(
                    f"{where}:{line}: a value of {len(ev.value):,} characters; expected at most "
                    f"{MAX_YAML_SCALAR_CHARS:,}"
                )
            add(1, line)
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
        elif isinstance(ev, yaml.AliasEvent):
            if ev.anchor in {a for a, _ in stack}:
                raise ConfigError(
                    f"{where}:{line}: alias *{ev.anchor} refers to a mapping or list that "
                    "contains it; expected a tree"
                )
            add(sizes.get(ev.anchor or "", 1), line)


def parse_yaml(text: str, where: str, what: str = "config") -> tuple[dict[str, Any], LineMap]:
    """Parse YAML text (``where`` names it in errors) into a mapping and its line map; refused
    beyond the limits of :func:`check_yaml_limits`."""
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise ConfigError(f"{where}: file is empty; expected a YAML {what} mapping")
    if _FAST_LOADER is not None:
        try:
            return _parse_checked(text, where, what, _FAST_LOADER)
        except ConfigError:
            raise  # the limits, duplicate keys, empty or non-mapping: libyaml's marks are exact
        except Exception:
            # libyaml words its syntax errors differently: the pure-Python parser below re-reads
            # the text and reports the failure exactly as it always has (file, line, message)
            pass
    try:
        return _parse_checked(text, where, what, yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        msg = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise ConfigError(f"{where}{line}: YAML syntax error: {msg}") from None
    except yaml.reader.ReaderError as e:
        at = text[: e.position].count("\n") + 1
        raise ConfigError(
            f"{where}:{at}: not valid YAML: character {e.character!r} is not allowed "
            "(control characters other than tab and newline)"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None
    except (ValueError, OverflowError, RecursionError) as e:
        # a scalar the constructor cannot convert (Python refuses int() of > 4,300 digits)
        first = " ".join(str(e).split())[:200]
        if "integer string conversion" in first:
            first = "an integer of more than 4,300 digits"
        raise ConfigError(f"{where}: cannot read a value: {first}") from None


#: libyaml's loader where PyYAML was built with it (several times faster on the bundled
#: topologies); it builds the same nodes, marks and values as :class:`yaml.SafeLoader`
_FAST_LOADER: type[Any] | None = getattr(yaml, "CSafeLoader", None)


def _parse_checked(
    text: str, where: str, what: str, loader_cls: type[Any]
) -> tuple[dict[str, Any], LineMap]:
    """:func:`parse_yaml`'s work with one loader class; YAML and conversion errors propagate."""
    check_yaml_limits(text, where, loader_cls)
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{where}: file is empty; expected a YAML {what} mapping")
        lines = LineMap()
        _walk(node, (), lines, where)
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}:1: top level is a {type(data).__name__}; expected a YAML {what} mapping"
        )
    return data, lines


#: Fields that were accepted once and changed nothing, with why they are refused now.
RETIRED_FIELDS: dict[str, str] = {}


def _expected(err: Mapping[str, Any]) -> str:
    t, ctx = err["type"], err.get("ctx") or {}
    if t == "extra_forbidden":
        loc = err.get("loc") or ()
        if loc and str(loc[-1]) in RETIRED_FIELDS:
            return RETIRED_FIELDS[str(loc[-1])]
        return "no such field (check the spelling; see the schema in the docs)"
    if t == "missing":
        return "this field is required"
    if t in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[t]
        bound = next(iter(ctx.values()))
        return f"a number {op} {bound}"
    if t == "literal_error" or t == "enum":
        return f"one of {ctx.get('expected', '')}"
    simple = {
        "int_parsing": "an integer",
        "int_type": "an integer",
        "int_from_float": "a whole number",
        "float_parsing": "a number",
        "float_type": "a number",
        "bool_parsing": "true or false",
        "bool_type": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "too_short": "a non-empty list",
        "finite_number": "a finite number",
    }
    if t in simple:
        return simple[t]
    if t == "too_long":
        return f"a list of at most {ctx.get('max_length')} items"
    if t == "value_error":
        return err["msg"].removeprefix("Value error, ")
    if t == "union_tag_invalid":
        return f"kind to be one of {ctx.get('expected_tags', '')}"
    if t == "union_tag_not_found":
        return f"a '{ctx.get('discriminator', 'kind').strip(chr(39))}' field"
    return err["msg"][0].lower() + err["msg"][1:]


#: prefix of the tags of a union whose member is chosen by a callable discriminator (pydantic
#: puts the tag in an error's location; it is no path into the data and is dropped)
UNION_TAG = "member:"


def data_path(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """The error location as a path into the data: pydantic inserts a tagged union's member
    name (``strategy.fsdp.sharding``); it equals the mapping's ``kind`` value and is dropped."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def validation_error(
    exc: ValidationError,
    where: str,
    lines: LineMap | None,
    prefix: tuple[Any, ...] = (),
    data: Any = None,
) -> ConfigError:
    """Turn the first pydantic error into a one-line :class:`ConfigError`."""
    err = exc.errors(include_url=False)[0]
    loc = (*prefix, *err["loc"])
    loc = tuple(
        p for p in loc if not (isinstance(p, str) and p.startswith(("function-", UNION_TAG)))
    )
    data_loc = data_path(loc, data) if data is not None else loc
    if lines is not None and lines.overridden(data_loc):
        head = f"{where} (--set)"
    else:
        line = lines.line_of(data_loc) if lines else None
        head = f"{where}:{line}" if line else where
    got = ""
    if err["type"] not in ("missing",) and "input" in err:
        val = err["input"]
        if not isinstance(val, dict | list):
            got = f"got {val!r}; "
        elif isinstance(val, dict) and err["type"] == "extra_forbidden":
            got = ""
    extra = len(exc.errors()) - 1
    more = f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else ""
    return ConfigError(f"{head}: {_path_str(data_loc)}: {got}expected {_expected(err)}{more}")


def validate(model: type[BaseModel], data: dict[str, Any], where: str, lines: LineMap | None):
    """Validate ``data`` as ``model``; raise :class:`ConfigError` naming file, line and field."""
    from pydantic import ValidationError  # imported already: ``model`` is a pydantic model

    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, where, lines, data=data) from None
