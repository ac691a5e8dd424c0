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


# --- 2. one schema for every row -------------------------------------------------------------


def test_sweep_runs_folder_reads_as_one_dataset_with_units(tmp_path):
    import pandas as pd
    import pyarrow.dataset as ds

    from scaling.io.results import column_units, run_columns
    from scaling.model.analysis.metrics import METRICS
    from scaling.sweep import SerialExecutor, run_sweep, sweep_from_dict

    spec = {  # gpt3-13b does not fit one T20 rank: refused; gpt3-125m on dgx-a100 runs
        "base": {
            "model": "gpt3-125m",
            "systems": ["dgx-a100"],
            "nodes": [1],
            "simulation": {"steps": 1, "warmup_steps": 1},
        },
        "axes": {"model": ["gpt3-125m", "gpt3-13b"], "systems": [["dgx-a100"], ["enflame-t20"]]},
    }
    df = run_sweep(sweep_from_dict(spec), tmp_path, SerialExecutor(), progress=False)
    assert set(df["status"]) == {"ok", "refused"}
    files = sorted((tmp_path / "runs").glob("*.parquet"))
    schemas = {tuple(ds.dataset(f).schema.names) for f in files}
    assert len(schemas) == 1  # refused and ok rows: the same columns, in the same order
    table = ds.dataset(tmp_path / "runs", format="parquet").to_table()
    assert set(run_columns()) <= set(table.column_names)
    assert table.num_rows == len(files)
    runs = table.to_pandas()
    ok = runs[runs["status"] == "ok"]
    refused = runs[runs["status"] == "refused"]
    assert ok["tokens_per_s_per_device"].gt(0).all() and ok["mfu"].gt(0).all()
    assert refused["tokens_per_s_per_device"].isna().all() and (refused["error"] != "").all()
    # pandas on the folder sees every column too, and the units travel with the file
    assert "step_time_s" in pd.read_parquet(tmp_path / "runs").columns
    units = column_units(files[0])
    assert units["step_time_s"] == METRICS["step_time_s"].unit == "s"
    assert units["tokens_per_s_per_device"] == "tokens/s"
    assert column_units(tmp_path / "results.parquet")["scaling_efficiency"] == "1"


# --- 3. --format on every command that prints a table ----------------------------------------


def _split(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmt")
    cfg = d / "t.yaml"
    cfg.write_text(
        "name: t\nmodel: gpt3-125m\nsystems: [dgx-a100, mlu370-x8]\nnodes: [1, 2]\n"
        "simulation: {steps: 1, warmup_steps: 1}\n"
    )
    code, out, err = _split("run", str(cfg), "--out", str(d / "o"), "--no-plot", "--format", "json")
    assert code == 0, err
    return cfg, d, out, err


def test_run_json_stdout_is_only_the_table(small_run):
    import json

    from scaling.io.results import run_columns

    _, _, out, err = small_run
    rows = json.loads(out)  # nothing but the table on stdout
    assert len(rows) == 4 and {r["system"] for r in rows} == {"dgx-a100", "mlu370-x8"}
    assert set(run_columns()) - {"run_key", "status", "error"} <= set(rows[0])
    base = [r for r in rows if r["nodes"] == 1]
    assert all(r["scaling_efficiency"] == 1.0 for r in base)
    assert "config hash" in err and "wrote" in err  # the notes went to stderr


def test_every_table_command_speaks_every_format(small_run, tmp_path):
    import io
    import json

    import pandas as pd

    cfg, d, _, _ = small_run
    one = [str(cfg), "--set", "systems=[dgx-a100]", "--set", "nodes=[1]"]
    commands = {
        "run": ["run", str(cfg), "--out", str(tmp_path / "r"), "--no-plot"],
        "sweep": ["sweep", *one, "--out", str(tmp_path / "s"), "--no-plot", "-j", "1"],
        "collective": ["collective", "--system", "dgx-a100", "--sizes", "1M,4M"],
        "explain": ["explain", *one],
        "compare": ["compare", str(d / "o"), str(d / "o")],
        "systems": ["systems"],
        "metrics": ["metrics"],
        "validate": ["validate", "--study", "nccl-a100"],
    }
    for name, args in commands.items():
        code, out, err = _split(*args, "--format", "csv")
        assert code == 0, (name, err)
        frame = pd.read_csv(io.StringIO(out))
        assert len(frame) >= 1 and len(frame.columns) >= 3, name
        code, out, _ = _split(*args, "--format", "json")
        assert json.loads(out) and isinstance(json.loads(out), list), name
        code, out, _ = _split(*args, "--format", "markdown")
        lines = out.strip().splitlines()
        assert lines[0].startswith("| ") and set(lines[1]) <= set("|-: "), name


def test_out_dash_is_stdout(tmp_path):
    import io

    import pandas as pd

    code, out, err = _split("collective", "--system", "dgx-a100", "--sizes", "1M,4M", "--out", "-")
    assert code == 0
    assert list(pd.read_csv(io.StringIO(out))["size_bytes"]) == [2**20, 2**22]
    assert "busbw" in err  # the text table went to stderr
    code, out, err = _split("collective", "--system", "dgx-a100", "--out", "-", "--format", "json")
    assert code == 2 and "both write to stdout" in err
