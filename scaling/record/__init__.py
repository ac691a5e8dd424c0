"""Record your own PyTorch job's collectives, to compare with the simulator (``scaling.record``).

Add two lines to a training script (after ``init_process_group``, before wrapping the model)::

    import scaling.record
    rec = scaling.record.start("recording/", model=model)   # one rank<R>.jsonl per rank
    ...  # build DDP / FSDP, train as usual
    rec.stop()                                              # or leave it to the end of the run

or, without touching the script, run it under the recorder (``SCALING_RECORD`` names the
folder, ``SCALING_RECORD_STEPS`` how many iterations to keep)::

    SCALING_RECORD=recording/ torchrun --nproc-per-node 8 -m scaling.record train.py ARGS

and compare: ``scaling schedule CONFIG --compare recording/rank0.jsonl --step all``. The file
format is in docs/guides/recording.md. torch is needed only here (``pip install scaling[record]``);
importing this package does not import it: :func:`start` does.
"""

from __future__ import annotations

import atexit
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scaling.record._recorder import Recorder

#: environment variables read by :func:`from_env`
ENV_DIR = "SCALING_RECORD"
ENV_STEPS = "SCALING_RECORD_STEPS"


def start(out_dir: str | os.PathLike[str], model: Any = None, steps: int | None = None) -> Recorder:
    """Start recording this process's collectives into ``out_dir/rank<R>.jsonl``.

    Args:
        out_dir: folder of the recording.
        model: the user's model (wrapped or not): its ``named_parameters()`` name the DDP
            buckets and FSDP units; optional.
        steps: stop after this many iterations (None: at ``stop()`` or at exit).

    Returns:
        The running :class:`~scaling.record._recorder.Recorder` (``.stop()`` ends it).
    """
    from scaling.record._recorder import Recorder

    rec = Recorder(out_dir, model, steps).start()
    atexit.register(rec.stop)
    return rec


def from_env(model: Any = None) -> Recorder | None:
    """:func:`start` if ``SCALING_RECORD`` names a folder (``SCALING_RECORD_STEPS``: steps)."""
    out = os.environ.get(ENV_DIR)
    if not out:
        return None
    steps = os.environ.get(ENV_STEPS)
    return start(out, model, int(steps) if steps else None)
