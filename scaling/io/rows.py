"""Results tables without pandas: what ``scaling run`` prints and writes (issue 29).

Importing pandas costs ~0.25 s CPU, half a one-point ``scaling run``. :class:`Rows` holds the
same table as ``pd.DataFrame(records)`` would — columns in first-seen order, each with the dtype
pandas infers, a missing cell NaN — and writes it byte for byte as pandas does: CSV as
``DataFrame.to_csv(index=False)`` (numpy's shortest float text, ``''`` for NaN, Python's csv
quoting), Parquet as :func:`scaling.io.results.write_parquet` via ``pa.Table.from_pandas``
(the same Arrow types, nulls and ``pandas`` schema metadata).

It holds only what it can reproduce exactly: ``int``, ``float``, ``bool`` and ``str`` cells.
Anything else (``None`` among values, numpy integers, a bool among numbers, pandas other than
3) makes :attr:`Rows.exact` false, and callers build the table with pandas instead.
tests/test_rows.py compares both on real result tables and on edge values.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

NAN = float("nan")
_MISSING = object()

#: Column kinds, as numpy's ``dtype.kind`` (``O``: a pandas ``str`` column; ``N``: every cell
#: ``None``, an object column)
INT, FLOAT, BOOL, STR, NONE = "i", "f", "b", "O", "N"

#: (pandas_type, numpy_type) of each kind in the ``pandas`` Parquet metadata (pandas 3)
_PANDAS_TYPES = {
    INT: ("int64", "int64"),
    FLOAT: ("float64", "float64"),
    BOOL: ("bool", "bool"),
    STR: ("object", "str"),
    NONE: ("empty", "object"),
}

_INT64 = 2**63


def _type_name(t: type) -> str | None:
    if t is bool or t is int or t is str:
        return t.__name__
    if issubclass(t, float):  # float and numpy's float64
        return "float"
    return "none" if t is type(None) else None


def _kind(values: Sequence[Any]) -> str | None:
    """The dtype kind pandas gives a column of ``values`` (``_MISSING``: a row without the key,
    NaN), or None when this module cannot mirror it exactly."""
    missing = any(v is _MISSING for v in values)
    names = {_type_name(type(v)) for v in values if v is not _MISSING}
    if not names or None in names:
        return None
    if names == {"int"} and not missing:
        return INT if all(-_INT64 <= v < _INT64 for v in values) else None
    if names <= {"int", "float"}:
        ok = all(-_INT64 <= v < _INT64 for v in values if type(v) is int)
        return FLOAT if ok else None
    if names == {"bool"} and not missing:
        return BOOL
    if names == {"str"}:
        return STR
    if names == {"none"} and not missing:
        return NONE
    return None


class Rows:
    """A table of ``records`` (dicts, one per row) as pandas holds ``pd.DataFrame(records)``.

    Attributes:
        records: the rows as given.
        columns: every key, in first-seen order.
        kinds: each column's dtype kind (:data:`INT`, :data:`FLOAT`, :data:`BOOL`, :data:`STR`,
            :data:`NONE`).
        data: each column's cells (floats in a float column, NaN where missing).
        exact: whether every column is one this module mirrors; if not, use pandas.
    """

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.records = list(records)
        order: dict[str, None] = {}
        for r in self.records:
            order.update(dict.fromkeys(r))
        self.columns: list[str] = list(order)
        self.kinds: dict[str, str] = {}
        self.data: dict[str, list[Any]] = {}
        self.exact = _pandas_major() == 3
        for c in self.columns:
            cells = [r.get(c, _MISSING) for r in self.records]
            kind = _kind(cells)
            if kind is None:
                self.exact = False
                continue
            self._set(c, kind, cells)

    def _set(self, column: str, kind: str, cells: Sequence[Any]) -> None:
        if kind == FLOAT:
            vals = [NAN if v is _MISSING else float(v) for v in cells]
        else:
            vals = [NAN if v is _MISSING else v for v in cells]
        self.kinds[column] = kind
        self.data[column] = vals

    def copy(self) -> Rows:
        """A copy whose columns can be added without changing this table."""
        new = Rows([])
        new.records = self.records
        new.columns = list(self.columns)
        new.kinds = dict(self.kinds)
        new.data = dict(self.data)
        new.exact = self.exact
        return new

    def __len__(self) -> int:
        return len(self.records)

    def add_column(self, column: str, cells: Sequence[Any], at: int | None = None) -> None:
        """Set ``column`` to ``cells`` (a new one goes at position ``at``, default last), its
        kind inferred as pandas does for a list."""
        kind = _kind(list(cells))
        if column not in self.columns:
            self.columns.insert(len(self.columns) if at is None else at, column)
        if kind is None:
            self.exact = False
            return
        self._set(column, kind, list(cells))

    def row_dicts(self) -> list[dict[str, Any]]:
        """Each row as ``DataFrame.to_dict("records")`` gives it (NaN where missing)."""
        cols = [(c, self.data[c]) for c in self.columns]
        return [{c: v[i] for c, v in cols} for i in range(len(self))]

    def to_csv(self) -> str:
        """The table as ``DataFrame.to_csv(index=False)`` writes it."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(self.columns)
        cols = [_csv_cells(self.kinds[c], self.data[c]) for c in self.columns]
        w.writerows(zip(*cols, strict=True))
        return buf.getvalue()

    def write_parquet(
        self, path: Path, arrow_types: dict[str, str], unit: Callable[[str], str | None]
    ) -> None:
        """Write the table as :func:`scaling.io.results.write_parquet` does through pandas:
        the columns of ``arrow_types`` always (a missing one appended, all null) and in those
        Arrow types, other columns as ``pa.Table.from_pandas`` infers them; field metadata
        ``unit`` from ``unit(column)``; the ``pandas`` schema metadata pandas would write."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = list(self.columns)
        kinds = dict(self.kinds)
        data = dict(self.data)
        for c in arrow_types:
            if c not in kinds:
                names.append(c)
                kinds[c] = NONE
                data[c] = [None] * len(self)
        inferred = {INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_()}
        inferred |= {STR: pa.large_string(), NONE: pa.null()}  # from_pandas' types
        fields, arrays = [], []
        for c in names:
            typ = pa.type_for_alias(arrow_types[c]) if c in arrow_types else inferred[kinds[c]]
            if pa.types.is_null(typ):
                typ = pa.float64()
            u = unit(c)
            fields.append(pa.field(c, typ, True, {"unit": u} if u else None))
            arrays.append(_arrow_array(kinds[c], data[c], typ))
        meta = {"pandas": json.dumps(_pandas_metadata(names, kinds, pa.__version__))}
        schema = pa.schema(fields, metadata=meta)
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


def _arrow_array(kind: str, values: list[Any], typ: Any) -> Any:
    """A column as Arrow type ``typ``: what ``pa.Table.from_pandas`` makes of it (NaN and
    missing strings null) cast to ``typ``. Built from buffers: ``pa.array`` imports pandas to
    check what it was given, and a cast imports ``pyarrow.compute`` (~40 ms CPU together), so
    only a pair this does not build goes through ``cast``."""
    import numpy as np
    import pyarrow as pa

    n = len(values)
    if kind == NONE:
        return pa.nulls(n, typ)
    if kind == INT and typ == pa.int64():
        ints = pa.py_buffer(np.array(values, dtype=np.int64))
        return pa.Array.from_buffers(typ, n, [None, ints], null_count=0)
    if kind == BOOL and typ == pa.bool_():
        bits = np.packbits(np.array(values, dtype=np.bool_), bitorder="little")
        return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(bits)], null_count=0)
    if kind == FLOAT:
        arr = np.array(values, dtype=np.float64)
        valid = ~np.isnan(arr)
        nulls = int(n - valid.sum())
        if typ == pa.float64():
            return pa.Array.from_buffers(typ, n, [_validity(valid), pa.py_buffer(arr)], nulls)
        whole = np.where(valid, arr, 0.0)
        # a safe cast: whole numbers in range (else cast raises, as through pandas)
        if typ == pa.int64() and bool(((whole == np.trunc(whole)) & (abs(whole) < 2.0**63)).all()):
            ints = pa.py_buffer(whole.astype(np.int64))
            return pa.Array.from_buffers(typ, n, [_validity(valid), ints], nulls)
        floats = pa.Array.from_buffers(pa.float64(), n, [_validity(valid), pa.py_buffer(arr)])
        return floats.cast(typ)
    if kind == STR:
        valid = np.array([not isinstance(v, float) for v in values], dtype=np.bool_)
        encoded = [v.encode() if isinstance(v, str) else b"" for v in values]
        size = sum(len(b) for b in encoded)
        wide = typ != pa.string()
        if typ in (pa.large_string(), pa.string()) and (wide or size < 2**31):
            offsets = np.zeros(n + 1, dtype=np.int64 if wide else np.int32)
            np.cumsum([len(b) for b in encoded], out=offsets[1:])
            data = pa.py_buffer(b"".join(encoded))
            bufs = [_validity(valid), pa.py_buffer(offsets), data]
            return pa.Array.from_buffers(typ, n, bufs, null_count=int(n - valid.sum()))
    inferred = {INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_(), STR: pa.large_string()}
    return _arrow_array(kind, values, inferred[kind]).cast(typ)


def _validity(valid: Any) -> Any:
    """Arrow's validity bitmap of a boolean array (None when nothing is null)."""
    import numpy as np
    import pyarrow as pa

    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _csv_cells(kind: str, values: list[Any]) -> list[str]:
    """A column's CSV text as pandas writes it: numpy's ``astype(str)`` of a float column
    (its shortest round-trip text: ``repr``), NaN as ``''``."""
    if kind == FLOAT:
        return ["" if math.isnan(v) else repr(v) for v in values]
    if kind == STR:
        return ["" if isinstance(v, float) else v for v in values]
    if kind == NONE:
        return [""] * len(values)
    return [str(v) for v in values]


def _pandas_metadata(names: list[str], kinds: dict[str, str], arrow: str) -> dict[str, Any]:
    """The ``pandas`` schema metadata ``pa.Table.from_pandas(df, preserve_index=False)`` writes
    for a table of these column kinds."""
    cols = []
    for c in names:
        ptype, ntype = _PANDAS_TYPES[kinds[c]]
        cols.append(
            {
                "name": c,
                "field_name": c,
                "pandas_type": ptype,
                "numpy_type": ntype,
                "metadata": None,
            }
        )
    return {
        "index_columns": [],
        "column_indexes": [],
        "columns": cols,
        "attributes": {},
        "creator": {"library": "pyarrow", "version": arrow},
        "pandas_version": pandas_version(),
    }


_VERSION: list[str | None] = []


def pandas_version() -> str | None:
    """The installed pandas' version without importing it (its ``.dist-info`` folder's name
    next to the package; ``importlib.metadata`` costs ~35 ms CPU), None if it cannot tell."""
    if not _VERSION:
        got = None
        spec = importlib.util.find_spec("pandas")
        if spec is not None and spec.origin is not None:
            site = Path(spec.origin).parent.parent
            found = list(site.glob("pandas-*.dist-info"))
            if len(found) == 1:
                got = found[0].name.removeprefix("pandas-").removesuffix(".dist-info")
        _VERSION.append(got)
    return _VERSION[0]


def _pandas_major() -> int | None:
    v = pandas_version()
    try:
        return int(v.split(".")[0]) if v else None
    except ValueError:
        return None
