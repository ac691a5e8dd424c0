"""The public API (``from scaling import ...``): typed for type checkers, complete for notebooks
(explain, replicas, in-memory systems), and what ``scaling run`` writes and documents."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

import scaling

REPO = Path(__file__).resolve().parents[1]

SMALL = {
    "name": "api-small",
    "model": "gpt3-1.3b",
    "systems": ["dgx-a100"],
    "nodes": [1, 2],
    "strategy": {"kind": "ddp"},
    "training": {"micro_batch_size": 4, "seq_len": 2048},
    "simulation": {"steps": 1, "warmup_steps": 1},
}


def _type_checking_imports() -> dict[str, str]:
    """Public name → module, from the ``if TYPE_CHECKING:`` block of ``scaling/__init__.py``."""
    tree = ast.parse((REPO / "scaling" / "__init__.py").read_text())
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                for alias in imp.names:
                    assert alias.asname == alias.name  # re-exported explicitly (`x as x`)
                    out[alias.name] = imp.module
    return out


def test_type_checking_imports_are_the_lazy_table():
    assert _type_checking_imports() == scaling._API
    assert set(scaling.__all__) == {"__version__", *scaling._API}
    import pkgutil  # a public name equal to a subpackage is shadowed once that is imported

    assert not {m.name for m in pkgutil.iter_modules(scaling.__path__)} & set(scaling._API)
    for name in scaling._API:  # each resolves at run time to the object the checker sees
        assert getattr(scaling, name) is getattr(
            __import__(scaling._API[name], fromlist=[name]), name
        )


def test_mypy_sees_the_public_functions_typed(tmp_path):
    api = pytest.importorskip("mypy.api")
    ini = tmp_path / "mypy.ini"
    ini.write_text("[mypy]\nignore_missing_imports = True\n")
    snippet = (
        "from scaling import run_experiment, simulate, system_spec\n"
        "reveal_type(run_experiment)\nreveal_type(simulate)\nreveal_type(system_spec)\n"
    )
    cache = REPO / ".mypy_cache" / "public-api-test"  # warm after the first run
    out, err, rc = api.run(["--config-file", str(ini), "--cache-dir", str(cache), "-c", snippet])
    assert rc == 0, out + err
    revealed = [ln for ln in out.splitlines() if "Revealed type" in ln]
    assert len(revealed) == 3
    assert "def (" in revealed[0] and "-> scaling.app.api.ExperimentResult" in revealed[0]
    assert "-> scaling.model.analysis.metrics.RunResult" in revealed[1]
    assert "-> scaling.model.hardware.system.SystemSpec" in revealed[2]
    assert revealed[0].rsplit("is ", 1)[-1].strip('"') != "Any"


def test_in_memory_system_is_validated_by_the_catalog_schema():
    from scaling import ConfigError, run_experiment, system_document

    slow = system_document("dgx-a100")
    slow.pop("name")
    slow["node"]["fabric"]["link_bw_GBps"]["value"] /= 8  # NVLink at 1/8: DDP's all-reduce slows
    cfg = {**SMALL, "systems": ["dgx-a100", "slow-nvlink"], "nodes": [1]}
    res = run_experiment(cfg, systems={"slow-nvlink": slow})
    t = res.table.set_index("system").step_time_s
    assert t["slow-nvlink"] > t["dgx-a100"]
    assert system_document("dgx-a100")["node"] != slow["node"]  # the catalog is not changed
    bad = {
        "name": {**slow, "name": "other"},
        "node": {**slow, "node": 3},
        "collective_library": {**slow, "collective_library": "no-such-lib"},
    }
    for field, doc in bad.items():
        with pytest.raises(ConfigError) as e:
            run_experiment(cfg, systems={"slow-nvlink": doc})
        msg = str(e.value)
        assert "\n" not in msg and "systems['slow-nvlink']" in msg and field in msg, msg
    with pytest.raises(ConfigError, match="not one of the experiment's systems"):
        run_experiment(cfg, systems={"slow-nvlink": slow, "unused": slow})


def test_system_spec_applies_a_named_structural_alternative():
    from scaling import ConfigError, system_spec

    assert "tree" in system_spec("mlu370-x8").library.algorithms
    ring_only = system_spec("mlu370-x8", "cncl-1.x-ring-only").library.algorithms
    assert "tree" not in ring_only and "ring" in ring_only
    with pytest.raises(ConfigError, match=r"cncl-1\.x-ring-only"):
        system_spec("mlu370-x8", "no-such-option")


def test_explain_parts_add_up_to_the_step():
    from scaling import explain, simulate

    df = explain(SMALL, {"nodes": [2]})
    steps = df[df.kind == "step"]
    assert {"compute: forward", "compute: backward", "idle"} <= set(steps.label)
    assert steps.time_s.sum() == pytest.approx(steps.step_time_s.iloc[0], rel=1e-9)
    # the breakdown's step is the point's last step, as simulate runs it
    assert steps.step_time_s.iloc[0] == pytest.approx(
        simulate(SMALL, {"nodes": [2]}).steps[-1].step_time_s, rel=1e-9
    )


def test_run_writes_parquet_beside_csv_with_units(tmp_path):
    from click.testing import CliRunner

    from scaling.app.cli import main
    from scaling.io.results import column_units

    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(cfg), "--out", str(out), "--no-plot"])
    assert res.exit_code == 0, res.output
    csv, pq = pd.read_csv(out / "results.csv"), pd.read_parquet(out / "results.parquet")
    assert list(pq.nodes) == list(csv.nodes) == [1, 2]
    assert pq.step_time_s.tolist() == pytest.approx(csv.step_time_s.tolist(), rel=1e-12)
    assert column_units(out / "results.parquet")["step_time_s"] == "s"


def test_every_result_column_is_documented_by_scaling_metrics():
    from click.testing import CliRunner

    from scaling import run_experiment
    from scaling.app.cli import main
    from scaling.io.results import run_columns

    listed = CliRunner().invoke(main, ["metrics"]).output
    documented = {ln.split(" [", 1)[0] for ln in listed.splitlines() if " [" in ln}
    table = run_experiment(SMALL).table
    columns = {"config_hash", *table.columns, *run_columns(), "point", "replica", "seed"}
    assert columns - documented == set()


def test_progress_from_python_draws_a_bar_on_stderr(capsys):
    from scaling import run_experiment

    run_experiment(SMALL, progress=False)
    assert "simulating" not in capsys.readouterr().err
    run_experiment(SMALL, progress=True)
    assert "simulating" in capsys.readouterr().err


def test_run_uncertainty_reports_the_nominal_run_of_each_point():
    from scaling import run_experiment, run_uncertainty

    u = run_uncertainty(SMALL, 2, jobs=1)
    eff = u.summary[u.summary.metric == "tokens_per_s_per_device"].set_index("nodes").nominal
    plain = run_experiment(SMALL).table.set_index("nodes").tokens_per_s_per_device
    assert eff.to_dict() == pytest.approx(plain.to_dict(), rel=1e-12)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({"hidden": -3}, "model.hidden: got -3"),
        ({"hiden": 3}, "model.hiden"),
        ({"layers": None}, "model.layers"),
    ],
)
def test_an_invalid_described_model_names_its_field(model, field):
    from scaling import ConfigError, simulate

    described = {"name": "tiny", "vocab": 32000, "hidden": 1024, "layers": 8, "heads": 16}
    described = {k: v for k, v in {**described, **model}.items() if v is not None}
    with pytest.raises(ConfigError) as e:
        simulate({**SMALL, "nodes": [1], "model": described})
    assert field in str(e.value) and "str" not in str(e.value) and "\n" not in str(e.value)


def test_run_plan_from_python_ranks_the_configured_strategy():
    from scaling import PlanSpace, run_plan

    space = PlanSpace(strategies=("ddp",), micro_batches=(2, 4), checkpointing=("none",))
    result = run_plan({**SMALL, "nodes": [1]}, space=space, keep=2)
    best = result.best_rows(2)
    assert [r["rank"] for r in best] == [1, 2]
    assert best[0]["tokens_per_s_per_device"] >= best[1]["tokens_per_s_per_device"]
