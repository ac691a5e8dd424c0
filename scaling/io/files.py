"""Writing output files safely: atomically (temp file + rename), with a one-line error.

Every result file of ``scaling run`` and ``scaling sweep`` goes through :func:`atomic_write`, so
a reader — or a resume after a crash, a full disk or ``kill -9`` — sees the old file or the whole
new one, never a partial one. A write that fails (no space, read-only, a file where a folder
should be) is a :class:`~scaling.io.errors.ConfigError` naming the path and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scaling.io.errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's files are 0600


def write_error(path: Path | str, exc: OSError, what: str = "write") -> ConfigError:
    """One line for a failed write of ``path``: its reason (``No space left on device``) and
    what to do."""
    reason = exc.strerror or type(exc).__name__
    return ConfigError(
        f"{path}: cannot {what}: {reason}; expected a writable path with free space (--out)"
    )


def make_dir(path: Path) -> None:
    """Create folder ``path`` (and parents); a failure is a one-line :class:`ConfigError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{path}: is a file; expected a folder (--out)") from None
    except OSError as e:
        raise write_error(path, e, "create the output folder") from None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file in ``path``'s folder, then ``os.replace`` it onto
    ``path`` (atomic on POSIX). On any failure the temp file is removed and ``path`` keeps its
    old content; an ``OSError`` becomes a one-line :class:`ConfigError`."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`atomic_write` of a text file."""

    def write(p: Path) -> None:
        p.write_text(text)

    atomic_write(path, write)


#: Parquet schema-metadata key of a file's content checksum (:func:`stamp_checksum`)
CHECKSUM_KEY = b"scaling.checksum"


def table_checksum(table: Any) -> str:
    """SHA-256 (16 hex digits) of an Arrow table's columns, types and values — not of its
    schema metadata, where the checksum itself is kept."""
    doc = {
        "schema": [(f.name, str(f.type)) for f in table.schema],
        "rows": table.to_pylist(),
    }
    blob = json.dumps(doc, sort_keys=True, default=str, allow_nan=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stamp_checksum(path: Path) -> None:
    """Rewrite the Parquet file ``path`` with the checksum of its content in its schema
    metadata (:data:`CHECKSUM_KEY`); :func:`checksum_ok` checks it."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    meta[CHECKSUM_KEY] = table_checksum(table).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def checksum_ok(path: Path) -> bool:
    """Whether the Parquet file ``path`` holds the checksum of its content: false for a file
    without one (written by another tool, or edited by hand) or whose content changed."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception:  # truncated, not Parquet: not trusted
        return False
    stored = (table.schema.metadata or {}).get(CHECKSUM_KEY)
    return stored is not None and stored.decode() == table_checksum(table)
