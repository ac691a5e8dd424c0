"""nccl-tests-style collective benchmark of a system: size, time, algbw, busbw, algorithm."""

from __future__ import annotations

import csv
import io
import re
from typing import TYPE_CHECKING, Any

import simpy

from scaling.io.config_error import ConfigError
from scaling.io.text_table import format_table
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group, busbw_factor
from scaling.model.hardware.system import SystemSpec

if TYPE_CHECKING:
    import pandas as pd
else:  # the command prints its table without pandas (start-up: issue 29)
    from scaling.lazy import lazy_module

    pd = lazy_module("pandas")

#: the table's columns, in order (nccl-tests' size, count, type, redop, root first)
COLUMNS = (
    "size_bytes",
    "count",
    "type",
    "redop",
    "root",
    "ranks",
    "time_us",
    "algbw_GBps",
    "busbw_GBps",
    "algorithm",
    "protocol",
)

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
#: the largest message size (B): 1 TiB, 64x nccl-tests' usual 16G maximum
MAX_SIZE = 1024**4
#: the most sizes in one table
MAX_SIZES = 1000


#: nccl-tests' default data type (``-d float``): the element of the ``count`` column. The
#: simulation moves bytes, so the type only names the element count; 4-byte elements.
ELEMENT_TYPE = "float"
ELEMENT_BYTES = 4


def redop(op: CollectiveOp) -> str:
    """nccl-tests' ``redop`` column: ``sum`` (its default ``-o sum``) for a reducing
    collective, ``none`` for one that only moves data."""
    return "sum" if op in (CollectiveOp.ALL_REDUCE, CollectiveOp.REDUCE_SCATTER) else "none"


def root(op: CollectiveOp) -> int:
    """nccl-tests' ``root`` column: rank 0 for a rooted collective (broadcast), else -1."""
    return 0 if op is CollectiveOp.BROADCAST else -1


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_size(text: str, option: str = "--sizes") -> int:
    """``32K`` → 32768 (binary prefixes, as nccl-tests' -b/-e); from 1 B to :data:`MAX_SIZE`.
    ``option``: the option named in a refusal."""
    m = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,20})?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(
            f"{option}: got {_shown(text)}; expected a size such as 32K, 256M, 16G (up to 1T)"
        )
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if not 1 <= size <= MAX_SIZE:
        raise ConfigError(
            f"{option}: got {_shown(text)} = {size} B; expected a size from 1 B to 1T "
            "(a 0-byte collective moves nothing: no time, no bandwidth)"
        )
    return size


def size_range(spec: str, factor: int = 2) -> list[int]:
    """``32K:16G`` → 32K, 64K, … 16G (each ×``factor``); ``1M`` → [1M]; ``1M,4M`` → both."""
    if "," in spec:
        parts = spec.split(",")
        if len(parts) > MAX_SIZES:
            raise ConfigError(f"--sizes: got {len(parts)} sizes; expected at most {MAX_SIZES}")
        return [parse_size(s) for s in parts]
    if ":" not in spec:
        return [parse_size(spec)]
    lo, hi = (parse_size(s) for s in spec.split(":", 1))
    if lo <= 0 or hi < lo:
        raise ConfigError(f"--sizes {spec!r}: expected MIN:MAX with 0 < MIN <= MAX")
    out, s = [], lo
    while s <= hi:
        out.append(s)
        s *= factor
    return out


def collective_table(
    system: SystemSpec,
    nodes: int,
    op: CollectiveOp,
    sizes: list[int],
    algorithm: str | None = None,
    protocol: str | None = None,
    per_node: int | None = None,
    progress: bool = False,
    network: str = "flow",
) -> pd.DataFrame:
    """:func:`collective_rows` as a table (one row per size, columns :data:`COLUMNS`)."""
    rows = collective_rows(
        system, nodes, op, sizes, algorithm, protocol, per_node, progress, network
    )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def collective_rows(
    system: SystemSpec,
    nodes: int,
    op: CollectiveOp,
    sizes: list[int],
    algorithm: str | None = None,
    protocol: str | None = None,
    per_node: int | None = None,
    progress: bool = False,
    network: str = "flow",
) -> list[dict[str, Any]]:
    """Run each size once, alone on the cluster's flow network (as nccl-tests does), or
    (``network="analytic"``) take the tuner's uncontended prediction without running it;
    ``progress``: a bar on stderr, one step per size."""
    from scaling.app.output import progress_bar

    per_node = per_node or system.devices_per_node
    group = Group(nodes, per_node)
    if group.size < 2:
        raise ConfigError(
            f"--nodes {nodes} --per-node {per_node}: got a group of 1 rank; expected 2 or more "
            "(a collective of one rank moves no data)"
        )
    rows = []
    for size in progress_bar(sizes, desc=f"{op.value} sizes", unit="size", enabled=progress):
        env = simpy.Environment()
        fc = FlowCollectives(env, system, nodes)
        try:
            choice = fc.predict(op, float(size), group, algorithm, protocol)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if network == "analytic":
            t = choice.time_s
        else:
            proc = env.process(fc.run(op, float(size), group, algorithm, protocol))
            env.run(proc)
            t = env.now
        algbw = size / t / 1e9 if t > 0 else float("inf")
        rows.append(
            {
                "size_bytes": size,
                "count": size // ELEMENT_BYTES,
                "type": ELEMENT_TYPE,
                "redop": redop(op),
                "root": root(op),
                "ranks": group.size,
                "time_us": t * 1e6,
                "algbw_GBps": algbw,
                "busbw_GBps": algbw * busbw_factor(op, group.size),
                "algorithm": choice.algorithm,
                "protocol": choice.protocol,
            }
        )
    return rows


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV, exactly as ``pandas.DataFrame.to_csv(index=False)`` writes them
    (shortest round-trip floats, ``inf``), without importing pandas."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([repr(v) if isinstance(v, float) else v for v in (r[c] for c in COLUMNS)])
    return buf.getvalue()


def format_collective_table(df: pd.DataFrame | list[dict[str, Any]]) -> str:
    """The table as nccl-tests prints it: size, element count, type, redop, root, time, algbw,
    busbw, and the algorithm/protocol the tuner chose."""
    header = [
        "size (B)",
        "count",
        "type",
        "redop",
        "root",
        "time (us)",
        "algbw (GB/s)",
        "busbw (GB/s)",
        "algorithm",
    ]
    if isinstance(df, list):
        cols: dict[str, list[Any]] = {c: [r[c] for r in df] for c in COLUMNS}
    else:
        cols = {c: list(df[c]) for c in COLUMNS}
    rows = [
        [
            f"{size:d}",
            f"{count:d}",
            str(dtype),
            str(op),
            f"{rt:d}",
            f"{t:.1f}",
            f"{alg:.2f}",
            f"{bus:.2f}",
            f"{algo}/{proto}",
        ]
        for size, count, dtype, op, rt, t, alg, bus, algo, proto in zip(
            (int(v) for v in cols["size_bytes"]),
            (int(v) for v in cols["count"]),
            cols["type"],
            cols["redop"],
            (int(v) for v in cols["root"]),
            cols["time_us"],
            cols["algbw_GBps"],
            cols["busbw_GBps"],
            cols["algorithm"],
            cols["protocol"],
            strict=True,
        )
    ]
    return format_table(header, rows, align="rrllrrrrl")
