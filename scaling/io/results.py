"""Results tables: RunResults → tidy DataFrame with derived cross-run metrics; CSV/Parquet out."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scaling.io.errors import ConfigError
from scaling.io.rows import NAN, Rows
from scaling.io.text_table import FORMATS, format_table  # their home; here for render()
from scaling.lazy import lazy_module
from scaling.model.analysis.metrics import RunResult, scaling_efficiency
from scaling.model.job import Job

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")  # imported when a table is first built

#: Bookkeeping columns of results tables: ``scaling run`` writes the experiment's
#: ``config_hash`` on each row; ``scaling sweep`` keys each run by its ``run_key`` and adds its
#: point and outcome. Every other column that is not a :class:`RunResult` field or
#: ``scaling_efficiency`` is a sweep axis.
META_COLUMNS = ("config_hash", "run_key", "point", "status", "error")

#: Columns that identify a point of a scaling curve (what ``scaling compare`` matches on).
KEY_COLUMNS: tuple[str, ...] = ("system", "strategy", "model", "nodes")

#: A run's cross-run baseline group: efficiency compares runs of one system, model and strategy.
EFFICIENCY_GROUP = ("system", "model", "strategy")


def add_scaling_efficiency(df: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Add ``scaling_efficiency`` to a table of runs, in place, and return it.

    Each run is compared with the run with the fewest devices in its group — same system, model
    and strategy, plus the columns ``by`` (a sweep's point). Rows without a throughput (refused
    or failed sweep runs) get NaN and are never a baseline.
    """
    if df.empty:
        return df
    keys = [*by, *EFFICIENCY_GROUP]
    valid = df[df["tokens_per_s_per_device"].notna()]
    base: dict[tuple, float] = {}
    if not valid.empty:
        first = valid.loc[valid.groupby(keys, dropna=False)["devices"].idxmin()]
        base = dict(
            zip(
                first[keys].itertuples(index=False, name=None),
                first["tokens_per_s_per_device"],
                strict=True,
            )
        )
    df["scaling_efficiency"] = [
        scaling_efficiency(t, base[k]) if pd.notna(t) and k in base else float("nan")
        for t, k in zip(
            df["tokens_per_s_per_device"], df[keys].itertuples(index=False, name=None), strict=True
        )
    ]
    return df


def efficiency_rows(records: list[dict[str, Any]]) -> Rows:
    """What ``add_scaling_efficiency(pd.DataFrame(records))`` holds — with a NaN
    ``tokens_per_s_per_device`` column when no row has one, as :func:`run_experiment
    <scaling.app.api.run_experiment>` builds it — as :class:`Rows`, without pandas. Not
    :attr:`~Rows.exact` when pandas is needed (a cell type or group key it cannot mirror)."""
    rows = Rows(records)
    if "tokens_per_s_per_device" not in rows.columns:
        rows.add_column("tokens_per_s_per_device", [NAN] * len(rows))
    if not rows.exact or not len(rows):
        return rows
    cols = [rows.data[c] for c in EFFICIENCY_GROUP]
    keys = list(zip(*cols, strict=True))
    if any(isinstance(v, float) for k in keys for v in k):  # a NaN key: pandas' groupby rules
        rows.exact = False
        return rows
    tput, devices = rows.data["tokens_per_s_per_device"], rows.data["devices"]
    # each group's baseline: its first row with the fewest devices (groupby idxmin)
    base: dict[tuple, tuple[float, float]] = {}
    for k, t, d in zip(keys, tput, devices, strict=True):
        if math.isnan(t) or d != d:
            continue
        if k not in base or d < base[k][0]:
            base[k] = (d, t)
    rows.add_column(
        "scaling_efficiency",
        [
            scaling_efficiency(t, base[k][1]) if not math.isnan(t) and k in base else NAN
            for t, k in zip(tput, keys, strict=True)
        ],
    )
    return rows


def run_series(result: RunResult) -> pd.Series:
    """One run's scalars as a :class:`pandas.Series` indexed by metric name (for notebooks;
    the model layer does not import pandas, so this lives here)."""
    return pd.Series(result.scalars(), name=f"{result.system} x{result.nodes}", dtype=object)


def job_identity(job: Job) -> dict[str, Any]:
    """A job's identifying columns (system, model, strategy, nodes, devices, global batch):
    what a results row holds for a job that did not run (a refused point or sample)."""
    return {
        "system": job.system.name,
        "model": job.shape.name,
        "strategy": job.strategy.label,
        "nodes": job.nodes,
        "devices": job.devices,
        "global_batch": job.global_batch,
    }


def results_frame(results: list[RunResult]) -> pd.DataFrame:
    """One row per run, plus ``scaling_efficiency`` relative to each system's smallest run."""
    return add_scaling_efficiency(pd.DataFrame([r.scalars() for r in results]))


def read_results(
    path: str | Path, what: str = "results", require: Sequence[str] = KEY_COLUMNS
) -> pd.DataFrame:
    """The one reader of results tables: a ``.csv`` or ``.parquet`` file written by ``scaling
    run``, ``scaling sweep`` or ``scaling baseline update``, or a folder holding
    ``results.parquet`` or ``results.csv`` (the Parquet file first: it keeps every type).

    ``what`` names the table in errors (``BASELINE``); ``require`` lists the columns it must
    have (default: the point keys :data:`KEY_COLUMNS`). Every failure is a :class:`ConfigError`.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("results.parquet", "results.csv"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise ConfigError(f"{p}: folder holds no results.csv or results.parquet ({what})")
    elif not p.exists():
        raise ConfigError(f"{p}: no such file ({what}: a results CSV/Parquet file or its folder)")
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(p)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raise ConfigError(
                f"{p}: unknown results format {suffix or '(none)'!r}; expected .csv or .parquet"
            )
    except ConfigError:
        raise
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{p}: file is empty; expected a results table ({what})") from None
    except Exception as e:  # parser, pyarrow and OS errors: unreadable input
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{p}: cannot read as a results table ({what}): {first}") from None
    missing = [c for c in require if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{p}: not a results table ({what}): missing column(s) {', '.join(missing)}; "
            f"expected {', '.join(require)} and metric columns"
        )
    return df


_ARROW_TYPES = {"str": "string", "int": "int64", "float": "float64", "bool": "bool"}


def run_columns() -> dict[str, str]:
    """Every column a run's row can have, with its Arrow type name: the bookkeeping columns
    ``run_key``, ``status``, ``error``, then each :class:`RunResult` scalar (identity and metrics)
    in field order. A refused or failed run has the same columns, its metrics null."""
    cols = {"run_key": "string", "status": "string", "error": "string"}
    for name, f in RunResult.__dataclass_fields__.items():
        if name != "steps":
            cols[name] = _ARROW_TYPES[str(f.type).split("|")[0].strip()]
    return cols


def _unit_of(column: str) -> str | None:
    from scaling.model.analysis.metrics import METRICS

    m = METRICS.get(column)
    return m.unit if m is not None else None


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write a results table as Parquet with one schema for every row: the columns of
    :func:`run_columns` always (null where a run has no such metric) and in their Arrow types,
    other columns (sweep axes, ``point``, ``scaling_efficiency``) as pandas infers them; each
    metric column carries its unit from :data:`METRICS` as field metadata ``unit``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    known = run_columns()
    frame = df.copy()
    for c in known:  # the missing columns of a refused run go last, in the order of an ok row
        if c not in frame.columns:
            frame[c] = None
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = []
    for f in table.schema:
        typ = pa.type_for_alias(known[f.name]) if f.name in known else f.type
        if pa.types.is_null(typ):  # a column of nulls only (a lone refused row's axis)
            typ = pa.float64()
        unit = _unit_of(f.name)
        fields.append(pa.field(f.name, typ, True, {"unit": unit} if unit else None))
    schema = pa.schema(fields, metadata=table.schema.metadata)
    pq.write_table(table.cast(schema), path)


def column_units(path: str | Path) -> dict[str, str]:
    """The unit of each column of a Parquet results file (its field metadata ``unit``)."""
    import pyarrow.parquet as pq

    out = {}
    for f in pq.read_schema(path):
        if f.metadata and b"unit" in f.metadata:
            out[f.name] = f.metadata[b"unit"].decode()
    return out


def write_outputs(
    out_dir: Path, df: pd.DataFrame | Rows, resolved: dict[str, Any], config_hash: str
) -> dict[str, Path]:
    """Write the results as CSV and Parquet (typed, units in the field metadata, as a sweep's:
    :func:`write_parquet`) and the resolved config (with its hash) into ``out_dir``, each
    atomically (a crash leaves the old file or the new one); a failed write is a one-line
    :class:`ConfigError`. ``df``: a DataFrame, or :attr:`~Rows.exact` :class:`Rows` (written
    without pandas, the same bytes)."""
    from scaling.io.files import atomic_write, make_dir, write_text_atomic

    make_dir(out_dir)
    paths = {
        "results": out_dir / "results.csv",
        "parquet": out_dir / "results.parquet",
        "config": out_dir / "resolved_config.yaml",
    }
    if isinstance(df, Rows):
        if not df.exact:
            raise ValueError("write_outputs: Rows that pandas must build; pass the DataFrame")
        rows = df.copy()
        rows.add_column("config_hash", [config_hash] * len(rows), at=0)
        csv_bytes = rows.to_csv().encode()  # to_csv's default encoding, UTF-8

        def write_csv(p: Path) -> None:
            with open(p, "wb") as fh:
                fh.write(csv_bytes)

        atomic_write(paths["results"], write_csv)
        cols = run_columns()
        atomic_write(paths["parquet"], lambda p: rows.write_parquet(p, cols, _unit_of))
    else:
        frame = df.copy()
        frame.insert(0, "config_hash", config_hash)
        atomic_write(paths["results"], lambda p: frame.to_csv(p, index=False))
        atomic_write(paths["parquet"], lambda p: write_parquet(frame, p))
    doc = {"config_hash": config_hash, **json.loads(json.dumps(resolved))}
    text = f"# resolved config; hash {config_hash}\n" + dump_yaml(doc)
    write_text_atomic(paths["config"], text)
    return paths


#: a mapping key the C emitter writes as the Python one does (tests/test_yaml_dump.py)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}\Z")


def dump_yaml(doc: Any) -> str:
    """``yaml.safe_dump(doc, sort_keys=False)``, through libyaml's emitter (6x less CPU: 25 ms
    of a one-point run's resolved config) when ``doc`` holds only what both emitters write
    alike: keys of letters, digits, ``_.-`` (up to 40), printable ASCII strings, numbers, bools
    and None. Anything else (unicode, newlines, long or odd keys: the emitters then fold and
    quote differently) goes through the Python emitter."""
    dumper = getattr(yaml, "CSafeDumper", None)
    if dumper is None or not _plain_yaml(doc):
        return yaml.safe_dump(doc, sort_keys=False)
    return yaml.dump(doc, Dumper=dumper, sort_keys=False)


def _plain_yaml(doc: Any) -> bool:
    stack = [doc]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is dict:
            for k, x in v.items():
                if type(k) is not str or not _PLAIN_KEY.match(k):
                    return False
                stack.append(x)
        elif t is list:
            stack.extend(v)
        elif t is str:
            if not (v.isascii() and v.isprintable()):
                return False
        elif not (v is None or t is bool or t is int or t is float):
            return False
    return True


def frame_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A table's rows as plain Python values for JSON: NaN and ±inf become ``None`` (null)."""
    out = []
    for rec in df.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if hasattr(v, "item"):  # numpy scalar
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            row[str(k)] = v
        out.append(row)
    return out


def frame_cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]], str]:
    """Every column of a table as text cells: (header, rows, align) for :func:`format_table`."""
    cols = [str(c) for c in df.columns]
    rows = [[_cell(v, "{:.6g}" if isinstance(v, float) else "{}") for v in r] for r in df.values]
    align = "".join("r" if df[c].dtype.kind in "iuf" else "l" for c in df.columns)
    return cols, rows, align


def render(
    df: pd.DataFrame,
    fmt: str,
    cells: tuple[Sequence[str], Sequence[Sequence[str]], str] | None = None,
) -> str:
    """The one renderer of ``--format``: ``csv`` and ``json`` (an array of row objects) carry
    every column of ``df``; ``table`` and ``markdown`` show ``cells`` (header, rows, align), the
    command's chosen columns, or every column when not given. No trailing newline."""
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return json.dumps(frame_records(df), indent=1)
    if fmt not in ("table", "markdown"):
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    header, rows, align = cells if cells is not None else frame_cells(df)
    return format_table(header, rows, align, style="markdown" if fmt == "markdown" else "text")


def _cell(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def _short_axis(col: str) -> str:
    return col.removeprefix("axis.").rsplit(".", 1)[-1]


def format_results_table(df: Any, axes: Sequence[str] = ()) -> str:
    """A results table as aligned text: axis values, identity, headline metrics, status."""
    return format_table(*results_cells(df, axes))


def results_cells(df: Any, axes: Sequence[str] = ()) -> tuple[list[str], list[list[str]], str]:
    """The cells of :func:`format_results_table`: (header, rows, align). ``df``: a DataFrame
    or :class:`Rows`."""
    if isinstance(df, Rows):
        columns, kind, records = df.columns, df.kinds.__getitem__, df.row_dicts()
    else:
        columns, records = df.columns, df.to_dict("records")

        def kind(c: str) -> str:
            return str(df[c].dtype.kind)

    cols = [(a, _short_axis(a), "{:g}" if kind(a) == "f" else "{}") for a in axes]
    cols += [
        ("system", "system", "{}"),
        ("strategy", "strategy", "{}"),
        ("nodes", "nodes", "{:d}"),
        ("devices", "accel", "{:d}"),
        ("step_time_s", "step (s)", "{:.4f}"),
        ("tokens_per_s_per_device", "tok/s/accel", "{:,.0f}"),
        ("scaling_efficiency", "scaling eff", "{:.3f}"),
        ("exposed_comm_share", "exposed comm", "{:.1%}"),
        ("mfu", "MFU", "{:.1%}"),
        ("status", "status", "{}"),
    ]
    cols = [c for c in cols if c[0] in columns]
    text_cols = {"system", "strategy", "status"} | {a for a in axes if kind(a) not in "iuf"}
    rows = [[_cell(rec[c], fmt) for c, _, fmt in cols] for rec in records]
    align = "".join("l" if c in text_cols else "r" for c, _, _ in cols)
    return [h for _, h, _ in cols], rows, align
