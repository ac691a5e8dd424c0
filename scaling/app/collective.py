"""nccl-tests-style collective benchmark of a system: size, time, algbw, busbw, algorithm."""

from __future__ import annotations

import re

import pandas as pd
import simpy

from scaling.io.errors import ConfigError
from scaling.io.results import format_table
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group, busbw_factor
from scaling.model.hardware.system import SystemSpec

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """``32K`` → 32768 (binary prefixes, as nccl-tests' -b/-e)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(f"--sizes: cannot read size {text!r}; expected e.g. 32K, 256M, 16G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def size_range(spec: str, factor: int = 2) -> list[int]:
    """``32K:16G`` → 32K, 64K, … 16G (each ×``factor``); ``1M`` → [1M]; ``1M,4M`` → both."""
    if "," in spec:
        return [parse_size(s) for s in spec.split(",")]
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
) -> pd.DataFrame:
    """Run each size once, alone on the cluster's flow network (as nccl-tests does)."""
    per_node = per_node or system.devices_per_node
    group = Group(nodes, per_node)
    rows = []
    for size in sizes:
        env = simpy.Environment()
        fc = FlowCollectives(env, system, nodes)
        try:
            choice = fc.predict(op, float(size), group, algorithm, protocol)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        proc = env.process(fc.run(op, float(size), group, algorithm, protocol))
        env.run(proc)
        t = env.now
        algbw = size / t / 1e9 if t > 0 else float("inf")
        rows.append(
            {
                "size_bytes": size,
                "ranks": group.size,
                "time_us": t * 1e6,
                "algbw_GBps": algbw,
                "busbw_GBps": algbw * busbw_factor(op, group.size),
                "algorithm": choice.algorithm,
                "protocol": choice.protocol,
            }
        )
    return pd.DataFrame(rows)


def format_collective_table(df: pd.DataFrame) -> str:
    """The table as nccl-tests prints it: size, element count (4-byte elements), time, algbw,
    busbw, and the algorithm/protocol the tuner chose."""
    header = ["size (B)", "count", "time (us)", "algbw (GB/s)", "busbw (GB/s)", "algorithm"]
    rows = [
        [
            f"{size:d}",
            f"{size // 4:d}",
            f"{t:.1f}",
            f"{alg:.2f}",
            f"{bus:.2f}",
            f"{algo}/{proto}",
        ]
        for size, t, alg, bus, algo, proto in zip(
            df["size_bytes"].astype(int),
            df["time_us"],
            df["algbw_GBps"],
            df["busbw_GBps"],
            df["algorithm"],
            df["protocol"],
            strict=True,
        )
    ]
    return format_table(header, rows, align="rrrrrl")
