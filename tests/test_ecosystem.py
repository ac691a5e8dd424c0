"""Fitting the ecosystem (issue 18): optional extras, one results schema, output formats, the
Python API, packaging and startup."""

from __future__ import annotations

import importlib.util
import logging

import pytest
from click.testing import CliRunner

from scaling.app.cli import main

GOOD = (
    "model: gpt3-125m\nsystems: [dgx-a100]\nnodes: [1]\nsimulation: {steps: 1, warmup_steps: 1}\n"
)


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


# --- 1. Dask is an extra ---------------------------------------------------------------------


@pytest.mark.parametrize("option", [["--dask-local", "2"], ["--scheduler", "tcp://h:8786"]])
def test_sweep_without_dask_refuses_in_one_line(tmp_path, monkeypatch, option):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("dask", "distributed") else real(name, *a),
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    code, out = cli("sweep", str(cfg), "--out", str(tmp_path / "o"), *option)
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert option[0] in lines[0] and "'dask' extra" in lines[0] and "pip install" in lines[0]
    assert not (tmp_path / "o").exists()  # refused before anything ran


def test_scheduler_check_names_missing_package_on_cluster(monkeypatch):
    distributed = pytest.importorskip("distributed")
    from scaling.io.errors import ConfigError
    from scaling.sweep import executors

    cluster = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    with cluster, distributed.Client(cluster) as client:
        executors.check_cluster(client, "A")  # this package is installed here: passes
        monkeypatch.setattr(executors, "DISTRIBUTION", "no-such-distribution-xyz")
        with pytest.raises(ConfigError) as e:
            executors.check_cluster(client, "A")
    msg = str(e.value)
    assert msg.startswith("--scheduler A:") and "\n" not in msg
    assert "the scheduler has no" in msg and "1 of 1 worker(s)" in msg
    assert "not from PyPI" in msg or "another project" in msg
