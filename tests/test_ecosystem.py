"""Fitting the ecosystem (issue 18): optional extras, one results schema, output formats, the
Python API, packaging and startup."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

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
    res = CliRunner().invoke(main, list(args), prog_name="scaling")
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
        "run": ["run", *one, "--out", str(tmp_path / "r"), "--no-plot"],
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
        if name not in ("metrics", "collective", "compare"):
            continue  # the same renderer: the cheap commands cover json and markdown
        code, out, _ = _split(*args, "--format", "json")
        assert json.loads(out) and isinstance(json.loads(out), list), name
        assert len(json.loads(out)) == len(frame), name
        code, out, _ = _split(*args, "--format", "markdown")
        lines = out.strip().splitlines()
        assert lines[0].startswith("| ") and set(lines[1]) <= set("|-: "), name
        assert len(lines) == len(frame) + 2, name


def test_out_dash_is_stdout(tmp_path):
    import io

    import pandas as pd

    code, out, err = _split("collective", "--system", "dgx-a100", "--sizes", "1M,4M", "--out", "-")
    assert code == 0
    assert list(pd.read_csv(io.StringIO(out))["size_bytes"]) == [2**20, 2**22]
    assert "busbw" in err  # the text table went to stderr
    code, out, err = _split("collective", "--system", "dgx-a100", "--out", "-", "--format", "json")
    assert code == 2 and "both write to stdout" in err


# --- 5. the Python API for notebooks ---------------------------------------------------------

MIXED = {  # dgx-a100 runs; the Enflame T20 cannot train (seed article): refused rows
    "name": "mixed",
    "model": "gpt3-125m",
    "systems": ["dgx-a100", "enflame-t20"],
    "nodes": [1, 2],
    "simulation": {"steps": 1, "warmup_steps": 1},
}


def test_top_level_api_and_partial_results():
    import scaling
    from scaling import ConfigError, InfeasibleJobError, run_experiment, run_sweep, simulate

    assert callable(run_sweep) and callable(simulate)
    assert issubclass(ConfigError, Exception) and issubclass(InfeasibleJobError, Exception)
    assert {"run_experiment", "plot_efficiency", "run_series"} <= set(dir(scaling))
    res = run_experiment(MIXED)
    assert list(res.table["status"]) == ["ok", "ok", "refused", "refused"]
    assert len(res.runs) == 2 and res.refused["error"].str.contains("cannot train").all()
    assert res.refused["tokens_per_s_per_device"].isna().all()
    assert res.ok["scaling_efficiency"].iloc[0] == 1.0
    assert "2 ok, 2 refused" in repr(res)
    with pytest.raises(InfeasibleJobError):
        run_experiment(MIXED, strict=True)
    with pytest.raises(InfeasibleJobError):  # every point refused: nothing to return
        run_experiment(MIXED, {"systems": ["enflame-t20"]})


def test_overrides_as_python_values_equal_set_strings():
    from scaling import ConfigError, run_series, simulate

    a = simulate(MIXED, {"systems": ["dgx-a100"], "nodes": [2], "training.seq_len": 1024})
    b = simulate(MIXED, ["systems=[dgx-a100]", "nodes=[2]", "training.seq_len=1024"])
    assert a.scalars() == b.scalars() and a.nodes == 2 and a.tokens_per_step % 1024 == 0
    text = repr(a)
    assert text.startswith("RunResult(dgx-a100 x2 nodes = 16 accel") and "tokens/s/accel" in text
    s = run_series(a)
    assert s["step_time_s"] == a.step_time_s and s.name == "dgx-a100 x2"
    with pytest.raises(ConfigError):
        simulate(MIXED, {"nodes": float("nan")})


def test_plot_helpers_draw_on_a_given_axes_and_return_the_figure():
    from matplotlib.figure import Figure

    from scaling import plot_efficiency, plot_metric, run_experiment

    table = run_experiment(MIXED).table
    fig = plot_efficiency(table)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].lines) == 1  # one line: dgx-a100 (refused rows left out)
    mine = Figure()
    ax = mine.subplots()
    assert plot_metric(table, "mfu", ax=ax) is mine and ax.get_ylabel() == "mfu"
    assert list(ax.lines[0].get_xdata()) == [8, 16]


# --- 6. packaging ----------------------------------------------------------------------------


def test_examples_by_name_module_entry_license_version_and_schema(tmp_path):
    import json
    import re
    import subprocess
    import sys
    import tomllib

    import jsonschema
    import yaml

    from scaling import __version__
    from scaling.app.catalog_cmd import json_schema
    from scaling.io.examples import bundled_configs, resolve_config

    repo = Path(__file__).resolve().parents[1]
    assert resolve_config("mlu-vs-gpu") == bundled_configs()["mlu-vs-gpu"]
    assert resolve_config("configs/sweeps/ddp-buckets.yaml").name == "ddp-buckets.yaml"
    # the Python API takes the same names as the CLI (README: run_experiment("mlu-vs-gpu"))
    from scaling.io.config import as_experiment

    exp = as_experiment("mlu-vs-gpu", ["nodes=[1]"])
    assert Path(exp.where).name == "mlu-vs-gpu.yaml" and exp.config.nodes == [1]
    code, out, _ = _split("examples", "--format", "json")
    assert code == 0 and "mlu-vs-gpu" in {r["name"] for r in json.loads(out)}
    code, out, err = _split("run", "mlu-vs-gpu", "--check", "--set", "nodes=[1]")
    assert code == 0 and "mlu-vs-gpu.yaml: ok" in out, err  # the bundled file, by name
    r = subprocess.run(
        [sys.executable, "-m", "scaling", "--version"], capture_output=True, text=True, check=True
    )
    assert r.stdout.strip() == f"scaling, version {__version__}"
    assert "Apache License" in (repo / "LICENSE").read_text()[:200]
    meta = tomllib.loads((repo / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["hatch"]["version"]["path"] == "scaling/_version.py"
    assert meta["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]["configs"]

    # the experiment schema accepts every bundled experiment and catches a typo'd field
    class Yaml12(yaml.SafeLoader):  # an editor reads YAML 1.2: 1.0e12 is a number there
        pass

    Yaml12.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
        list("-+0123456789."),
    )
    schema = json_schema("experiment")
    for path in bundled_configs().values():
        doc = yaml.load(path.read_text(), Yaml12)  # a SafeLoader subclass
        if "axes" not in doc and "base" not in doc:
            jsonschema.validate(doc, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": "gpt3-125m", "systems": ["dgx-a100"], "nodez": [1]}, schema)
    code, out, _ = _split("schema", "topology")
    assert code == 0 and json.loads(out)["title"] == "scaling topology"


# --- 8. refused points, output folders, options that need another ---------------------------


def test_run_records_refused_points_and_fails_only_when_all_are(tmp_path):
    import pandas as pd
    import yaml

    cfg = tmp_path / "mixed.yaml"
    cfg.write_text(yaml.safe_dump(MIXED))
    out = tmp_path / "o"
    code, stdout, err = _split("run", str(cfg), "--out", str(out), "--no-plot")
    assert code == 0, err
    notes = [ln for ln in stdout.splitlines() if ln.startswith("refused: ")]
    assert len(notes) == 2 and all(len(n) < 250 for n in notes)
    assert notes[0].startswith("refused: enflame-t20 x1 nodes (ddp): Enflame T20 cannot train")
    table = pd.read_csv(out / "results.csv")
    assert list(table["status"]) == ["ok", "ok", "refused", "refused"]
    assert table.loc[table["status"] == "refused", "error"].str.contains("inference only").all()
    # every point refused, or any with --strict: exit 2, one short note per point, one error line
    for extra in (["--set", "systems=[enflame-t20]"], ["--strict"]):
        code, stdout, err = _split("run", str(cfg), "--out", str(tmp_path / "x"), *extra)
        assert code == 2 and stdout == ""
        lines = err.strip().splitlines()
        assert lines[-1].startswith("error: ") and "nothing simulated" in lines[-1]
        assert len(lines[-1]) < 600 and all(ln.startswith("refused: ") for ln in lines[:-1])
        assert not (tmp_path / "x").exists()


def test_out_folder_of_another_experiment_needs_force(tmp_path, small_run):
    import yaml

    cfg = small_run[0]  # experiment 't'

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**MIXED, "name": "other", "systems": ["dgx-a100"]}))
    target = small_run[1] / "o"  # written by experiment 't'
    code, _, err = _split("run", str(cfg), "--out", str(target), "--no-plot", "--set", "nodes=[1]")
    assert code == 0, err  # the same experiment rewrites its own folder
    code, _, err = _split("run", str(other), "--out", str(target), "--no-plot")
    assert code == 2 and "holds the results of experiment 't'" in err and "--force" in err
    code, _, err = _split("sweep", str(other), "--out", str(target), "--no-plot", "-j", "1")
    assert code == 2 and "this is sweep 'other'" in err
    code, _, err = _split("run", str(other), "--out", str(target), "--no-plot", "--force")
    assert code == 0, err
    # an option that does nothing without another is refused
    code, _, err = _split("explain", str(cfg), "--out", str(tmp_path / "e"))
    assert code == 2 and "--out: only used with --vs" in err
    code, _, err = _split("run", str(cfg), "--jobs", "2", "--out", str(tmp_path / "j"))
    assert code == 2 and "only used with --replicas" in err and not (tmp_path / "j").exists()


# --- 7. start-up, and every command's help and a minimal run ---------------------------------


def test_entry_point_loads_no_heavy_package_and_lists_every_command_as_it_describes_itself():
    # Start-up speed is what this guards; its figure is benchmarks/bench_startup.py (no test
    # asserts wall-clock time). The behaviour behind it: --help and --version import click
    # only, never numpy, pandas, pydantic, yaml or matplotlib.
    import subprocess
    import sys

    import click

    from scaling.app import cli, entry

    ctx = click.Context(cli.main)
    names = cli.main.list_commands(ctx)
    assert sorted(entry.COMMANDS) == names and cli.main.help == entry.HELP
    for n in names:
        real = cli.main.get_command(ctx, n)
        for limit in (45, 60, 200):
            assert entry.short_help(n, limit) == real.get_short_help_str(limit), n
    for flag in ("--help", "--version"):
        probe = (
            "import sys; from scaling.app.entry import main\n"
            f"try: main(['{flag}'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('numpy', 'pandas', 'pydantic', 'yaml', 'matplotlib') "
            "if m in sys.modules))"
        )
        r = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        assert r.stdout.strip().endswith("[]"), (flag, r.stdout)  # none of the heavy packages
        if flag == "--help":
            assert all(f"  {n} " in r.stdout for n in names)


def test_every_command_help_has_an_example_and_minimal_runs_never_trace_back(small_run, tmp_path):
    import click

    from scaling.app.entry import main as entry_main

    ctx = click.Context(main)

    def walk(group, prefix):
        for n in group.list_commands(ctx):
            cmd = group.get_command(ctx, n)
            yield [*prefix, n], cmd
            if isinstance(cmd, click.Group):
                yield from walk(cmd, [*prefix, n])

    for path, _cmd in walk(main, []):
        code, out, err = _split(*path, "--help")
        assert code == 0 and out.startswith("Usage: scaling"), path
        assert "Example: scaling" in out or "e.g." in out, path
        res = CliRunner().invoke(entry_main, [*path, "--help"], prog_name="scaling")
        assert res.exit_code == 0 and res.stdout == out, path  # the entry point: the same help
    cfg, d, _, _ = small_run
    one = [str(cfg), "--set", "systems=[dgx-a100]", "--set", "nodes=[1]"]
    minimal = [  # the commands test_every_table_command_speaks_every_format does not run
        ["trace", *one, "--out", str(tmp_path / "t.json")],
        ["schedule", *one, "--out", str(tmp_path / "s.json")],
        ["plot", str(d / "o"), "--image-format", "png"],
        ["baseline", "update", "--only", "no-such-baseline", "--dir", str(tmp_path / "g")],
        ["schema"],
        ["examples"],
    ]
    for args in minimal:
        code, _, err = _split(*args)  # _split asserts no exception escaped
        assert code == 0 or (code == 2 and err.count("\n") == 1), (args, err)


# --- 4. progress bars and verbosity ----------------------------------------------------------

#: the commands that run more than a few simulations (or collectives)
PROGRESS_COMMANDS = [
    ["run"],
    ["sweep"],
    ["explain"],
    ["collective"],
    ["sensitivity"],
    ["baseline", "update"],
]


def test_progress_and_verbosity_options(small_run, tmp_path):
    from scaling.app.entry import main as entry_main

    for path in PROGRESS_COMMANDS:
        code, out, _ = _split(*path, "--help")
        assert code == 0 and "--progress / --no-progress" in out, path
    for group in (main, entry_main):  # the group-level options, on both groups
        res = CliRunner().invoke(group, ["--help"])
        assert "-q, --quiet" in res.output and "-v, --verbose" in res.output
        res = CliRunner().invoke(group, ["-q", "-v", "metrics"])
        assert res.exit_code == 2 and "-q and -v" in res.output
    coll = ["collective", "--system", "dgx-a100", "--sizes", "1M:16M", "--format", "csv"]
    code, out, err = _split(*coll, "--progress")
    assert code == 0 and "all_reduce sizes:" in err and "/5 [" in err  # the bar, on stderr
    code, out2, err = _split(*coll, "--no-progress")
    assert code == 0 and "sizes:" not in err and out2 == out  # stdout: only the table
    cfg = small_run[0]
    one = [str(cfg), "--set", "systems=[dgx-a100]", "--no-plot", "--format", "csv"]
    code, _, err = _split("run", *one, "--out", str(tmp_path / "r"), "--progress")
    assert code == 0 and "simulating:" in err and "/2 [" in err
    code, _, err = _split("-q", "run", *one, "--out", str(tmp_path / "r"))
    assert code == 0 and err == ""  # -q: no notes, no bar
    sweep = ["sweep", *one, "--out", str(tmp_path / "s"), "-j", "1"]
    code, _, err = _split("-v", *sweep, "--progress")
    assert code == 0 and "sweep t:" in err and "/2 [" in err
    assert "INFO scaling.sweep.executors: runs execute in process" in err  # -v
    # baseline update: one step per golden experiment
    golden = tmp_path / "golden"
    golden.mkdir()
    (golden / "tiny.yaml").write_text(GOOD.replace("nodes: [1]", "nodes: [1, 2]"))
    args = ["baseline", "update", "--configs", str(golden), "--dir", str(tmp_path / "g")]
    code, out, err = _split(*args, "--progress")
    assert code == 0 and "baseline update:" in err and "/1 [" in err and "tiny: 2 points" in out
    code, out, err = _split(*args, "--no-progress")
    assert code == 0 and err == "running tiny ...\n"


def test_local_dask_cluster_is_silent_about_a_taken_dashboard_port():
    pytest.importorskip("distributed")
    import socket
    import warnings

    from scaling.sweep.executors import DaskExecutor

    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 8787))
        taken.listen()
    except OSError:
        pass  # something else holds it: the case under test all the same
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with DaskExecutor(local_workers=1) as ex:
                assert sorted(v for _, _, v in ex.imap_unordered(abs, [-1, -2])) == [1, 2]
    finally:
        taken.close()
    assert not [w for w in seen if "already in use" in str(w.message)]


def test_notebook_extra_names_jupyter():
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    meta = tomllib.loads((repo / "pyproject.toml").read_text())
    assert any(
        d.startswith("jupyter") for d in meta["project"]["optional-dependencies"]["notebooks"]
    )


def test_notebooks_find_their_configs_from_any_folder():
    import json

    repo = Path(__file__).resolve().parents[1]
    books = sorted((repo / "notebooks").glob("*.ipynb"))
    assert len(books) >= 5
    for nb in books:
        code = "\n".join(
            "".join(c["source"])
            for c in json.loads(nb.read_text())["cells"]
            if c["cell_type"] == "code"
        )
        # bundled examples by name (resolve_config), never paths relative to the working folder
        assert '".."' not in code and "'..'" not in code and "configs/" not in code, nb.name


def test_shell_completion_as_the_readme_documents():
    from scaling.app.entry import main as entry_main

    repo = Path(__file__).resolve().parents[1]
    assert (
        "_SCALING_COMPLETE=bash_source scaling"
        in (repo / "docs" / "guides" / "running.md").read_text()
    )

    def complete(words: str, cword: int, mode: str = "bash_complete") -> str:
        env = {"_SCALING_COMPLETE": mode, "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        res = CliRunner().invoke(entry_main, [], prog_name="scaling", env=env)
        assert res.exit_code == 0, res.output
        return res.output

    assert "_scaling_completion()" in complete("", 0, "bash_source")
    assert complete("scaling ru", 1) == "plain,run\n"
    assert "plain,--progress" in complete("scaling explain x --prog", 3)
