"""Collective benchmark tables → :class:`~scaling.model.calibration.measure.Measurement` rows.

Three layouts, told apart by their headers:

* **nccl-tests** text output (``all_reduce_perf`` …; rccl-tests and any fork printing the same
  ``#  size  count  type  redop  root  time  algbw  busbw  #wrong …`` header): the out-of-place
  time (µs) of each size; the op from ``# Collective test starting: all_reduce_perf``; ranks
  and nodes from the ``#  Rank  N Group  G Pid  P on HOST device …`` lines (one host a node).
* **hccl_test** output (``data_size(Bytes): | aveg_time(us): | alg_bandwidth(GB/s): |
  check_result:``): the time column; its ``alg_bandwidth`` is size / time with no bus factor
  (hiascend.com HCCLpertest_16_0006, reference/huawei_hccl_algorithms.csv) and is not used. It
  names neither the op nor the ranks: ``--op`` and ``--nodes`` give them.
* **CSV** with named columns and units: ``size_B`` (or ``size_bytes``, ``size_KiB``, ``size_MiB``,
  ``size_GiB``), ``time_us`` (or ``time_ms``, ``time_s``) or ``busbw_GBps`` or ``algbw_GBps``,
  and optionally ``op``, ``nodes``, ``per_node`` or ``ranks`` (``scaling collective --out``
  writes such a file). Other columns are ignored. Cambricon's cncl_benchmark prints no published
  layout (reference/cambricon_cncl_benchmark_table.csv quotes one latency per call): bring its
  numbers as this CSV, or as nccl-tests text if your cncl-tests build prints that header.

Every refusal is one line naming the file, the line and what is missing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from scaling.io.errors import ConfigError, read_bounded
from scaling.model.calibration.measure import Measurement, time_from_busbw
from scaling.model.comm.ops import CollectiveOp

#: The largest table read (bytes): a nccl-tests sweep of 8 B-16 GiB over many runs is ~100 KB.
MAX_TABLE_BYTES = 16 * 2**20
#: Fewest distinct sizes a fit needs: a latency, a bandwidth and a switch of algorithm between
#: them cannot be told apart from fewer.
MIN_SIZES = 4

#: nccl-tests binaries → the collective they time (nccl-tests src/*.cu, one per binary).
NCCL_TESTS_OPS = {
    "all_reduce_perf": CollectiveOp.ALL_REDUCE,
    "all_gather_perf": CollectiveOp.ALL_GATHER,
    "reduce_scatter_perf": CollectiveOp.REDUCE_SCATTER,
    "broadcast_perf": CollectiveOp.BROADCAST,
    "alltoall_perf": CollectiveOp.ALL_TO_ALL,
}
_SIZE_UNITS = {"b": 1.0, "bytes": 1.0, "kib": 2.0**10, "mib": 2.0**20, "gib": 2.0**30}
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_BW_UNITS = {"gbps": 1.0}  # GB/s (1e9 bytes per second), as nccl-tests prints
_UNITLESS = ("size", "time", "busbw", "algbw", "bandwidth", "latency", "bw", "msg")


@dataclass(frozen=True)
class BenchmarkTable:
    """A parsed benchmark table with its provenance.

    Attributes:
        path: the file read.
        sha256: hex digest of its bytes.
        layout: ``nccl-tests``, ``hccl_test`` or ``csv``.
        rows: the measurements, in file order.
        dropped: rows of other ops left out (``--op``), by op.
    """

    path: str
    sha256: str
    layout: str
    rows: tuple[Measurement, ...]
    dropped: tuple[tuple[str, int], ...] = ()

    @property
    def line_span(self) -> tuple[int, int]:
        """First and last line of the rows used."""
        return min(r.line for r in self.rows), max(r.line for r in self.rows)


def _op(text: str, where: str) -> CollectiveOp:
    t = text.strip().lower().replace("-", "_")
    t = {
        "allreduce": "all_reduce",
        "allgather": "all_gather",
        "reducescatter": "reduce_scatter",
    }.get(t, t)
    try:
        return CollectiveOp(t)
    except ValueError:
        raise ConfigError(
            f"{where}: op {text.strip()!r}; expected one of {', '.join(o.value for o in CollectiveOp)}"
        ) from None


def _num(text: str, where: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {what} {text.strip()!r}; expected a number") from None
    if not v > 0 or v == float("inf"):
        raise ConfigError(f"{where}: {what} {text.strip()!r}; expected a positive number")
    return v


def _int(text: str, where: str, what: str) -> int:
    v = _num(text, where, what)
    if v != int(v):
        raise ConfigError(f"{where}: {what} {text.strip()!r}; expected a whole number")
    return int(v)


def _shape(
    where: str, nodes: int | None, per_node: int | None, ranks: int | None, how: str
) -> tuple[int, int]:
    if nodes is None:
        raise ConfigError(f"{where}: no node count: {how}; give --nodes")
    if per_node is None:
        if ranks is None:
            raise ConfigError(f"{where}: no rank count: {how}; give --per-node")
        if ranks % nodes:
            raise ConfigError(
                f"{where}: {ranks} ranks on {nodes} nodes; expected the same number on each node"
            )
        per_node = ranks // nodes
    if nodes * per_node < 2:
        raise ConfigError(f"{where}: a group of 1 rank; expected 2 or more (nothing to exchange)")
    return nodes, per_node


_RANK = re.compile(r"^#\s*Rank\s+\d+\s+Group\s+\d+\s+Pid\s+\d+\s+on\s+(\S+)\s+device", re.I)


@dataclass
class _Run:
    """One nccl-tests run of a file (a file may hold several, e.g. 2 and 4 nodes)."""

    line: int
    op: CollectiveOp | None = None
    hosts: list[str] = field(default_factory=list)
    cols: list[str] = field(default_factory=list)
    rows: list[tuple[int, int, float]] = field(default_factory=list)  # line, size B, time s


def _nccl_tests(
    path: str, lines: list[str], op: CollectiveOp | None, nodes: int | None, per_node: int | None
) -> tuple[list[Measurement], list[tuple[str, int]]]:
    runs: list[_Run] = []
    for i, raw in enumerate(lines, 1):
        line = raw.strip()
        m = re.search(r"Collective test starting:\s*(\S+)", line)
        if m:
            binary = m.group(1).rsplit("/", 1)[-1]
            if binary not in NCCL_TESTS_OPS:
                raise ConfigError(
                    f"{path}:{i}: a table of {binary}; expected one of "
                    f"{', '.join(NCCL_TESTS_OPS)} (a collective the model prices)"
                )
            runs.append(_Run(i, NCCL_TESTS_OPS[binary]))
            continue
        if re.match(r"^#\s*nThread\b", line):
            if not runs or runs[-1].rows or runs[-1].hosts:
                runs.append(_Run(i))  # a run without the 'starting' line (older nccl-tests)
            continue
        if not runs:
            runs.append(_Run(i))
        run = runs[-1]
        m = _RANK.match(line)
        if m:
            run.hosts.append(m.group(1))
            continue
        if line.startswith("#"):
            toks = line.lstrip("#").split()
            if "size" in toks and "time" in toks and ("busbw" in toks or "algbw" in toks):
                run.cols = toks
            continue
        cols = run.cols
        if not line or not cols or not line.split()[0].isdigit():
            continue
        toks = line.split()
        if len(toks) != len(cols):
            # nccl-tests prints every column of its header on every row (N/A where unchecked)
            raise ConfigError(
                f"{path}:{i}: a row of {len(toks)} fields; expected {len(cols)} "
                f"({' '.join(cols)}): a truncated or edited line?"
            )
        if "#wrong" in cols:
            wrong = toks[cols.index("#wrong")]
            if wrong.isdigit() and int(wrong) > 0:
                raise ConfigError(
                    f"{path}:{i}: {wrong} wrong results at size {toks[0]}; a run that failed "
                    "its data check is not a measurement"
                )
        size = _int(toks[cols.index("size")], f"{path}:{i}", "size (B)")
        t = _num(toks[cols.index("time")], f"{path}:{i}", "time (us)") * 1e-6
        run.rows.append((i, size, t))
    if not any(r.cols for r in runs):
        raise ConfigError(
            f"{path}:1: no nccl-tests header ('#  size  count  type  redop  root  time  algbw  "
            "busbw ...'); expected nccl-tests output"
        )
    out: list[Measurement] = []
    for run in runs:
        if not run.rows:
            continue
        if run.op is None and op is None:
            raise ConfigError(
                f"{path}:{run.line}: no 'Collective test starting: <binary>' line names the "
                "collective; give --op"
            )
        if run.op is not None and op is not None and run.op is not op:
            raise ConfigError(
                f"{path}:{run.line}: a table of {run.op.value}; --op asked for {op.value}"
            )
        host_nodes = len(dict.fromkeys(run.hosts)) or None
        if host_nodes and nodes and host_nodes != nodes:
            raise ConfigError(
                f"{path}:{run.line}: the run's Rank lines name {host_nodes} hosts; --nodes "
                f"said {nodes}"
            )
        n, k = _shape(
            f"{path}:{run.line}",
            host_nodes or nodes,
            per_node,
            len(run.hosts) or None,
            "no '#  Rank N Group G Pid P on HOST device ...' lines",
        )
        use = run.op or op
        assert use is not None
        out += [Measurement(use, n, k, size, t, i) for i, size, t in run.rows]
    return out, []


def _hccl_test(
    path: str, lines: list[str], op: CollectiveOp | None, nodes: int | None, per_node: int | None
) -> tuple[list[Measurement], list[tuple[str, int]]]:
    if op is None:
        raise ConfigError(f"{path}:1: hccl_test output does not name its collective; give --op")
    n, k = _shape(f"{path}:1", nodes, per_node, None, "hccl_test output does not print it")
    rows: list[Measurement] = []
    header = False
    for i, raw in enumerate(lines, 1):
        line = raw.strip()
        if "data_size(" in line:
            header = True
            continue
        toks = [t for t in re.split(r"[|\s]+", line) if t]
        if not header or not toks or not toks[0].isdigit():
            continue
        if len(toks) < 2:
            raise ConfigError(f"{path}:{i}: a row without its aveg_time(us) column")
        if len(toks) >= 4 and toks[3].lower() not in ("success", "null"):
            raise ConfigError(
                f"{path}:{i}: check_result {toks[3]!r} at size {toks[0]}; a run that failed its "
                "data check is not a measurement"
            )
        size = _int(toks[0], f"{path}:{i}", "data_size (B)")
        t = _num(toks[1], f"{path}:{i}", "aveg_time (us)") * 1e-6
        rows.append(Measurement(op, n, k, size, t, i))
    return rows, []


def _unit(col: str, stem: str, units: dict[str, float]) -> float | None:
    if col == stem:
        return None
    if col.startswith(stem + "_") and col[len(stem) + 1 :] in units:
        return units[col[len(stem) + 1 :]]
    return None


def _csv(
    path: str, text: str, op: CollectiveOp | None, nodes: int | None, per_node: int | None
) -> tuple[list[Measurement], list[tuple[str, int]]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ConfigError(f"{path}:1: an empty table") from None
    low = [h.lower() for h in header]
    size_col = time_col = bw_col = None
    size_u = time_u = 1.0
    bw_kind = ""
    for j, h in enumerate(low):
        su, tu = _unit(h, "size", _SIZE_UNITS), _unit(h, "time", _TIME_UNITS)
        if su is not None:
            size_col, size_u = j, su
        elif tu is not None:
            time_col, time_u = j, tu
        elif _unit(h, "busbw", _BW_UNITS) or _unit(h, "algbw", _BW_UNITS):
            bw_col, bw_kind = j, h.split("_")[0]
        elif h.split("_")[0] in _UNITLESS:
            raise ConfigError(
                f"{path}:1: column {header[j]!r} has no known unit; expected size_B (or "
                "size_KiB, size_MiB, size_GiB), time_us (or time_ms, time_s), busbw_GBps or "
                "algbw_GBps"
            )
    if size_col is None or (time_col is None and bw_col is None):
        missing = "a size column (size_B)" if size_col is None else "time_us or busbw_GBps"
        raise ConfigError(f"{path}:1: no {missing}; columns are {', '.join(header)}")
    idx = {h: j for j, h in enumerate(low)}
    rows: list[Measurement] = []
    dropped: dict[str, int] = {}
    for i, rec in enumerate(reader, 2):
        if not any(c.strip() for c in rec):
            continue
        if len(rec) != len(header):
            raise ConfigError(
                f"{path}:{i}: {len(rec)} fields; expected {len(header)} ({', '.join(header)})"
            )
        where = f"{path}:{i}"

        def cell(name: str, rec: list[str] = rec, where: str = where) -> str | None:
            if name not in idx:
                return None
            v = rec[idx[name]].strip()
            if not v:
                raise ConfigError(f"{where}: empty {header[idx[name]]!r}")
            return v

        op_cell = cell("op")
        row_op = _op(op_cell, where) if op_cell is not None else op
        if row_op is None:
            raise ConfigError(f"{where}: no op column and no --op: which collective is it?")
        if op is not None and row_op is not op:
            dropped[row_op.value] = dropped.get(row_op.value, 0) + 1
            continue
        n_cell, k_cell, r_cell = cell("nodes"), cell("per_node"), cell("ranks")
        n, k = _shape(
            where,
            _int(n_cell, where, "nodes") if n_cell is not None else nodes,
            _int(k_cell, where, "per_node") if k_cell is not None else per_node,
            _int(r_cell, where, "ranks") if r_cell is not None else None,
            "no nodes column",
        )
        size = _num(rec[size_col], where, header[size_col]) * size_u
        if time_col is not None:
            t = _num(rec[time_col], where, header[time_col]) * time_u
        else:
            assert bw_col is not None
            bw = _num(rec[bw_col], where, header[bw_col])
            if bw_kind == "algbw":
                t = size / (bw * 1e9)
            else:
                if row_op is CollectiveOp.ALL_TO_ALL:
                    raise ConfigError(f"{where}: all_to_all busbw; give time_us instead")
                t = time_from_busbw(row_op, n * k, size, bw)
        rows.append(Measurement(row_op, n, k, round(size), t, i))
    if not rows and dropped:
        assert op is not None
        raise ConfigError(
            f"{path}:2: a table of {', '.join(sorted(dropped))}; --op asked for {op.value}"
        )
    return rows, sorted(dropped.items())


def read_benchmark_table(
    path: str | Path,
    op: CollectiveOp | None = None,
    nodes: int | None = None,
    per_node: int | None = None,
) -> BenchmarkTable:
    """Read a benchmark table (layout sniffed from its header); ``op``, ``nodes``,
    ``per_node`` fill in what the file does not say and must agree with what it does. Refuses,
    with file and line, a table too small to fit (fewer than :data:`MIN_SIZES` sizes)."""
    p = Path(path)
    # bounded, devices refused: /dev/zero read whole took every byte of memory (issue 30)
    raw = read_bounded(p, MAX_TABLE_BYTES, "benchmark table")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}); expected a table") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    where = str(p)
    if any(ln.lstrip().startswith("#") and " size " in f" {ln} " and "time" in ln for ln in lines):
        layout, (rows, dropped) = "nccl-tests", _nccl_tests(where, lines, op, nodes, per_node)
    elif any("data_size(" in ln for ln in lines):
        layout, (rows, dropped) = "hccl_test", _hccl_test(where, lines, op, nodes, per_node)
    elif "," in first:
        layout, (rows, dropped) = "csv", _csv(where, text, op, nodes, per_node)
    else:
        raise ConfigError(
            f"{where}:1: not a benchmark table; expected nccl-tests output (its '#  size  count "
            "type ... busbw' header), hccl_test output ('data_size(Bytes): | aveg_time(us): "
            "...') or a CSV with columns size_B and time_us or busbw_GBps (op, nodes, per_node)"
        )
    if not rows:
        raise ConfigError(f"{where}:{len(lines)}: no measurement rows; expected one per size")
    sizes = sorted({r.size_B for r in rows})
    if len(sizes) < MIN_SIZES:
        last = max(r.line for r in rows)
        raise ConfigError(
            f"{where}:{last}: {len(sizes)} distinct size(s) ({', '.join(map(str, sizes))} B); "
            f"expected at least {MIN_SIZES} to tell latency from bandwidth: measure a sweep, "
            "e.g. nccl-tests -b 64K -e 1G -f 4"
        )
    return BenchmarkTable(
        where, hashlib.sha256(raw).hexdigest(), layout, tuple(rows), tuple(dropped)
    )
