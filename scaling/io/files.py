"""Writing output files safely: atomically (temp file + rename), with a one-line error.

Every output file goes through :func:`atomic_write` (result folders) or :func:`write_output`
(a file a user names with ``--out``: the same, or in place for a device such as
``/dev/stdout``), so a reader — or a resume after a crash, a full disk or ``kill -9`` — sees the
old file or the whole new one, never a partial or empty one. A write that fails (no space,
read-only, a file where a folder should be) is a :class:`~scaling.io.errors.ConfigError` naming
the path and the reason, and leaves nothing behind.

A results folder is written by one process at a time: :func:`results_lock` holds an advisory
lock (``flock``) on ``OUT/.scaling.lock`` while a run or sweep writes there, and a second one is
refused with one line naming the holder. The kernel drops the lock when its process ends, even
by ``kill -9``, so a stale lock file never blocks a later run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
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
    old content; an ``OSError`` becomes a one-line :class:`ConfigError`. A device or FIFO at
    ``path`` is written in place, never renamed over: as root the rename would replace
    ``/dev/full`` or ``/dev/null`` with a regular file for every process on the machine
    (``scaling calibrate --out /dev/full`` did, issue 30's hostile corpus)."""
    path = Path(path)
    if _is_special(path):
        try:
            write(path)
        except OSError as e:
            raise write_error(path, e) from None
        return
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


def _is_special(path: Path) -> bool:
    """``path`` exists and is not a regular file or folder (a character device such as
    ``/dev/stdout`` or ``/dev/null``, a FIFO, a socket)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def write_output(path: Path, write: Callable[[Path], None]) -> None:
    """Write the output file ``path`` a user named (``--out``): its folder created, then
    :func:`atomic_write` — on failure (a full disk, read-only) nothing is left and ``path``
    keeps its old content. A device or FIFO (``/dev/stdout``) cannot be renamed onto: it is
    written in place. Every ``OSError`` is a one-line :class:`ConfigError`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a file name (--out)")
    if not _is_special(path):  # a device is written in place by atomic_write
        make_dir(path.parent)
    atomic_write(path, write)


def write_output_text(path: Path, text: str) -> None:
    """:func:`write_output` of a text file."""

    def write(p: Path) -> None:
        with open(p, "w") as fh:
            fh.write(text)

    write_output(path, write)


#: the lock file of a results folder (:func:`results_lock`)
LOCK_FILE = ".scaling.lock"


@contextlib.contextmanager
def results_lock(folder: Path | str) -> Iterator[None]:
    """Hold the results folder ``folder`` (created) for this process while the block runs;
    another process holding it is a one-line :class:`ConfigError` naming it. The lock file is
    left in place (removing it would let a third process lock a fresh file while a second
    still holds the old one)."""
    folder = Path(folder)
    make_dir(folder)
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    except OSError as e:
        raise write_error(path, e, "create the lock file") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(
                f"--out {folder}: {holder} is writing results here; wait for it to finish or "
                "give another --out"
            ) from None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        note = f"scaling (pid {os.getpid()}, since {stamp})".encode()
        with contextlib.suppress(OSError):  # the note is for people; the lock is the flock
            os.ftruncate(fd, 0)
            os.pwrite(fd, note, 0)
        yield
    finally:
        os.close(fd)  # releases the flock


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
