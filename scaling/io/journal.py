"""Journals: finished work appended to a JSONL file as it finishes, reused after a kill.

A journal is one line per finished unit of work, ``{"key": KEY, ...}``, appended and flushed as
each unit finishes, so a command stopped at any moment (Ctrl-C, ``kill -9``, a lost machine)
loses at most the units in flight and a re-run reuses the rest (``scaling plan``'s evaluations,
``scaling run --uncertainty``'s samples). A journal whose units are only valid together — the
samples of one design — starts with a header line ``{"journal": HEADER}`` naming what they
depend on (config hash, seed, sample count, :func:`code_version`); a journal with another header
is not reused: one note says which field differs, and it starts afresh.

A line cut by a kill mid-write (the file does not end in a newline) is dropped with a note, and
that unit runs again; the cut tail is removed before anything is appended, so the next line
does not fuse with it. The caller holds the results folder's lock
(:func:`~scaling.io.files.results_lock`): one writer per journal.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scaling.io.files import write_error


@functools.cache
def code_version() -> str:
    """The version of the code a simulated result depends on: the package version and a
    SHA-256 (12 hex digits) of the source of the engine, the models, the input layer and the
    sweep (``scaling/{engine,model,io,sweep}/**/*.py``). An edit there makes a journal from
    before it stale; an edit to the commands or plots does not."""
    from scaling._version import __version__

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for sub in ("engine", "model", "io", "sweep"):
        for p in sorted((root / sub).rglob("*.py")):
            digest.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def _differs(old: Any, new: dict[str, Any]) -> str:
    """Why a journal's header ``old`` is not ``new``: the first field that differs."""
    if not isinstance(old, dict):
        return "it has no header"
    for k, v in new.items():
        if old.get(k) != v:
            return f"it was written for {k} {old.get(k)!r}, this run has {v!r}"
    return "its header has other fields"


class Journal:
    """Finished units by key, appended to a JSONL file as they finish (``path`` None: in memory).

    Attributes:
        done: the finished units by key, each its record without ``key`` — as read back from
            JSON, so a unit run now and one reused from the file are the same values.
        reused: how many units were read from the file.
    """

    def __init__(
        self,
        path: Path | None,
        header: dict[str, Any] | None = None,
        note: Callable[[str], None] | None = None,
        allow_nan: bool = False,
    ) -> None:
        """Open (or create) the journal ``path``; ``header``: what its units depend on (None:
        units are self-keyed, no header); ``note``: receives one line per thing a user should
        know (a journal not reused and why, a cut line dropped); ``allow_nan``: store NaN and
        infinities (Python's JSON reads them back; strict JSON readers do not)."""
        self.path = path
        self.header = None if header is None else json.loads(json.dumps(header))
        self.note = note or (lambda msg: None)
        self.allow_nan = allow_nan
        self.done: dict[str, dict[str, Any]] = {}
        self.reused = 0
        if path is None:
            return
        try:
            self._load(path, path.read_bytes() if path.is_file() else b"")
        except OSError as e:
            raise write_error(path, e, "read or write the journal") from None
        self.reused = len(self.done)

    def _load(self, path: Path, raw: bytes) -> None:
        end = raw.rfind(b"\n") + 1  # 0 when no line is whole
        if end < len(raw):
            self.note(f"{path}: its last line was cut (a kill mid-write); that unit runs again")
            with path.open("r+b") as f:  # drop the cut tail: the next line must not fuse with it
                f.truncate(end)
        lines = raw[:end].decode(errors="replace").splitlines()
        if self.header is not None and lines:
            try:
                old = json.loads(lines[0]).get("journal")
            except (ValueError, AttributeError):
                old = None
            if old != self.header:
                self.note(f"{path}: not reused ({_differs(old, self.header)}); starting afresh")
                lines = []
        if self.header is not None and not lines:
            self._write(path, "w", json.dumps({"journal": self.header}))
            return
        bad = 0
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(rec, dict) and "key" in rec:
                key = rec.pop("key")
                self.done[str(key)] = rec
        if bad:
            self.note(f"{path}: {bad} unreadable line(s) ignored; those units run again")

    def _write(self, path: Path, mode: str, line: str) -> None:
        try:
            with path.open(mode) as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())  # on disk before the next unit starts: a crash keeps it
        except OSError as e:
            raise write_error(path, e, "append to the journal") from None

    def put(self, key: str, rec: dict[str, Any]) -> dict[str, Any]:
        """Record the finished unit ``key`` (appended now when the journal has a file); return
        it as it reads back."""
        line = json.dumps({"key": key, **rec}, allow_nan=self.allow_nan)
        if self.path is not None:
            self._write(self.path, "a", line)
        back = json.loads(line)
        back.pop("key")
        self.done[key] = back
        return back
