"""Importers of recorded collective schedules (``scaling schedule --compare``).

One module per format, each an :class:`~scaling.io.recordings.base.Importer`, registered in
:data:`IMPORTERS` below; :func:`load_recording` picks the one that recognises the file.
"""

from __future__ import annotations

from pathlib import Path

from scaling.io.recordings.base import (
    SETUP,
    WHOLE,
    Importer,
    RecordedCall,
    Recording,
    RecordingError,
)
from scaling.io.recordings.flight_recorder import FlightRecorderImporter
from scaling.io.recordings.kineto import KinetoImporter
from scaling.io.recordings.nccl_log import NcclLogImporter
from scaling.io.recordings.scaling_record import ScalingRecordImporter

#: every importer, asked in this order
IMPORTERS: tuple[Importer, ...] = (
    ScalingRecordImporter(),
    FlightRecorderImporter(),
    KinetoImporter(),
    NcclLogImporter(),
)

__all__ = [
    "IMPORTERS",
    "SETUP",
    "WHOLE",
    "Importer",
    "RecordedCall",
    "Recording",
    "RecordingError",
    "load_recording",
]


def load_recording(path: Path) -> Recording:
    """Read a recording in any known format (a folder: its ``rank0.jsonl``).

    Raises:
        RecordingError: unreadable, of no known format, or inconsistent (one line).
    """
    if path.is_dir():
        path = path / "rank0.jsonl"
    try:
        with path.open("rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except OSError as e:
        raise RecordingError(f"{path}: cannot read: {e.strerror or e}") from None
    for imp in IMPORTERS:
        if imp.recognises(path, head):
            return imp.load(path)
    known = ", ".join(i.name for i in IMPORTERS)
    raise RecordingError(f"{path}: not a recording of a known format (expected one of: {known})")
