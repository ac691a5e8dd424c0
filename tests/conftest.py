"""Shared fixtures: small experiments built in memory from the bundled catalog."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _private_system_cache() -> Iterator[None]:
    """The test session's commands (in process and in subprocesses, which inherit the
    environment) keep validated systems (scaling/io/system_cache.py) in a folder of their own,
    removed at the end, never in the user's ``~/.cache/scaling``; a test that sets
    ``SCALING_CACHE_DIR`` or ``SCALING_NO_CACHE`` itself still wins inside it."""
    before = os.environ.get("SCALING_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="scaling-test-cache-") as folder:
        os.environ["SCALING_CACHE_DIR"] = folder
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("SCALING_CACHE_DIR", None)
            else:
                os.environ["SCALING_CACHE_DIR"] = before


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def small_exp() -> dict:
    """GPT-3 1.3B DDP on the two headline systems, a few node counts, 1 measured step."""
    return {
        "name": "small",
        "model": "gpt3-1.3b",
        "systems": ["dgx-a100", "mlu370-x8"],
        "nodes": [1, 2, 8, 32],
        "training": {"micro_batch_size": 4, "seq_len": 2048},
        "simulation": {"steps": 1, "warmup_steps": 2},
    }
