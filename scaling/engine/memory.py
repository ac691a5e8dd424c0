"""Keep freed heap memory in the process (glibc), for the flow engine's per-event arrays.

Every event of :class:`~scaling.engine.network.FlowNetwork` allocates and frees arrays of up to
~10^5 entries (finished flows, their residues; the owed link bytes of a run, freed with the
network). glibc's malloc returns a freed block at the top of the heap to the kernel once more
than ``M_TRIM_THRESHOLD`` (128 KiB by default) is free there, and serves blocks of >= 128 KiB
(``M_MMAP_THRESHOLD``) by fresh ``mmap``: either way the next allocation touches new pages, one
minor page fault (~2.4 us of system CPU, zeroing included) per 4 KiB. Measured: one step of
GPT-3 1.3B DDP at 256 DGX A100 nodes took ~15,000 faults, ~36 ms of ~150 ms CPU; with the
thresholds below, ~20. The memory is kept for reuse, not leaked: the process's peak heap stays
mapped until exit.

See ``mallopt(3)``: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3 (glibc's ``malloc.h``); setting
either disables glibc's dynamic adjustment of both, so both are set. Elsewhere (musl, macOS,
Windows) this is a no-op. Results do not depend on it (no float changes): CPU time only.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: freed memory kept at the top of the heap before glibc returns it (bytes)
TRIM_THRESHOLD_B = 256 << 20
#: blocks at least this large are mmap-ed (glibc's largest allowed value on 64-bit: 32 MiB)
MMAP_THRESHOLD_B = 32 << 20

_done: list[bool] = []


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds once per process; True if they were set (now
    or before), False where the C library is not glibc or refuses."""
    if _done:
        return _done[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            # the symbols the interpreter is linked with, libc's among them (ctypes.util's
            # find_library would import tempfile & co.: ~20 ms of start-up)
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_B)) and bool(
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_B)
            )
    _done.append(ok)
    return ok
