"""Shared fixtures: small experiments built in memory from the bundled catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
