"""``python -m scaling.record SCRIPT ARGS``: run a training script with recording on.

The folder comes from ``SCALING_RECORD`` (default ``scaling-recording``), the number of
iterations from ``SCALING_RECORD_STEPS``. Parameter names are the wrapped modules' own (no
``model=`` here: pass it to :func:`scaling.record.start` in the script for FSDP1 unit names).
"""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
    """Start the recorder, then run ``sys.argv[1]`` as ``__main__`` with the rest as its argv."""
    if len(sys.argv) < 2:
        sys.exit("usage: python -m scaling.record SCRIPT [ARGS...]")
    import scaling.record

    os.environ.setdefault(scaling.record.ENV_DIR, "scaling-recording")
    scaling.record.from_env()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
