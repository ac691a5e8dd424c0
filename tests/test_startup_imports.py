"""What the commands users wait on import (issue 29): a one-point ``scaling run`` and a
``scaling collective`` print and write their tables without pandas (~0.25 s CPU to import),
matplotlib or scipy, nor the sweep executors and runner (multiprocessing); ``collective`` also
without pyarrow and the job model (it builds no job). Each runs in a fresh interpreter and lists
the heavy modules it ended up with. The command line (not ``import scaling``) also gives numpy's
BLAS one thread unless the user chose a count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "pandas",
    "matplotlib",
    "scipy",
    "pyarrow",
    "scaling.io.results",
    "scaling.model.job",
    "scaling.sweep.executors",
    "scaling.sweep.runner",
    "multiprocessing",
)


def _imported(args: list[str]) -> list[str]:
    code = (
        "import sys; from scaling.app.entry import main\n"
        f"try: main({args!r})\n"
        "except SystemExit as e: assert not e.code, e\n"
        f"import json; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_one_point_run_imports_no_pandas(tmp_path) -> None:
    got = _imported(
        ["run", "configs/mlu-vs-gpu.yaml", "--no-plot", "--set", "systems=[dgx-a100]",
         "--set", "nodes=[1]", "--set", "simulation.steps=1", "--out", str(tmp_path)]
    )  # fmt: skip
    # pyarrow writes results.parquet; the job model runs the point
    assert got == ["pyarrow", "scaling.io.results", "scaling.model.job"]
    assert (tmp_path / "results.parquet").is_file() and (tmp_path / "results.csv").is_file()


def test_collective_imports_no_table_library_or_job_model(tmp_path) -> None:
    out = tmp_path / "c.csv"
    got = _imported(["collective", "--system", "dgx-a100", "--sizes", "1M", "--out", str(out)])
    assert got == []
    assert out.read_text().startswith("size_bytes,")


def _blas_env(code: str, **env: str) -> str:
    """``OPENBLAS_NUM_THREADS`` as a fresh interpreter sees it after running ``code``, with
    ``env`` set and no BLAS/OpenMP thread count inherited from this process."""
    clean = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    }
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport os; print(os.environ.get('OPENBLAS_NUM_THREADS'))"],
        cwd=ROOT, capture_output=True, text=True, check=True, env=clean | env,
    )  # fmt: skip
    return out.stdout.splitlines()[-1]


def test_command_line_gives_blas_one_thread_unless_the_user_chose() -> None:
    entry = "import scaling.app.entry"
    assert _blas_env(entry) == "1"
    assert _blas_env(entry, OPENBLAS_NUM_THREADS="4") == "4"
    assert _blas_env(entry, OMP_NUM_THREADS="3") == "None"  # OpenBLAS reads it: left alone
    # the Python API leaves the environment alone, and numpy is not imported before the entry
    assert _blas_env("import scaling, scaling.app.api") == "None"
    assert _blas_env("import sys, scaling.app.entry; assert 'numpy' not in sys.modules") == "1"
