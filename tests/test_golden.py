"""Golden scaling curves: the model still produces the committed baselines (tests/golden/), a 5 %
change of one link bandwidth or one library latency is caught and named, `scaling baseline update`
regenerates the committed files, `scaling compare` exit codes, and the curves' invariants.

If a test here fails after an intended model change: run `scaling baseline update`, review the diff
of tests/golden/ and commit it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from scaling.app.api import run_experiment
from scaling.app.golden_cmd import baseline, compare
from scaling.golden import (
    DEFAULT_RTOL,
    INPUTS_FILE,
    INVARIANTS_FILE,
    META_FILE,
    RESULTS_FILE,
    GoldenRun,
    Invariants,
    check_invariants,
    compare_frames,
    golden_configs,
    load_baseline,
    load_invariants,
)
from scaling.golden.baseline import _meta, frames_equal, inputs_text
from scaling.io.config import load_experiment
from scaling.io.errors import ConfigError
from scaling.io.topology import available_systems, bundled_topology_dir
from scaling.testing import assert_scaling_curve_matches, assert_scaling_invariants

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
CONFIGS = REPO / "configs" / "golden"
CONFIG_FILES = golden_configs(CONFIGS)
CATALOG = CONFIGS / "catalog-gpt3-1.3b.yaml"
INVARIANTS = load_invariants(CONFIGS / INVARIANTS_FILE)
TOPO = bundled_topology_dir()


# ---- (a) the current model reproduces every committed baseline ---------------------------------


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_model_matches_golden_baseline(config: Path) -> None:
    assert_scaling_curve_matches(config, GOLDEN / config.stem)


def test_golden_set_covers_catalog_and_headline() -> None:
    assert {p.stem for p in CONFIG_FILES} == {
        d.name for d in GOLDEN.iterdir() if (d / META_FILE).is_file()
    }, "every configs/golden/*.yaml needs a baseline and vice versa: run `scaling baseline update`"
    catalog = load_experiment(CATALOG).config
    missing = set(available_systems()) - set(catalog.systems)
    assert not missing, f"add {sorted(missing)} to {CATALOG} and run `scaling baseline update`"
    head = load_experiment(REPO / "configs" / "mlu-vs-gpu.yaml").config
    pinned = load_experiment(CONFIGS / "mlu-vs-gpu.yaml").config
    assert head == pinned, (
        "configs/mlu-vs-gpu.yaml changed: copy it to configs/golden/mlu-vs-gpu.yaml and run "
        "`scaling baseline update`"
    )
    meta = yaml.safe_load((GOLDEN / "catalog-gpt3-1.3b" / META_FILE).read_text())
    refused = {(r["system"], r["strategy"]) for r in meta["refused"]}
    assert ("enflame-t20", "ddp") in refused  # a refusal is recorded, not dropped
    assert meta["scaling_version"] and meta["created"] and len(meta["config_hash"]) == 16


# ---- (b) a 5 % change of one input is caught, and the message names the points ----------------


def _perturbed_system(tmp: Path, where: str, path: tuple[str, ...], factor: float) -> Path:
    """Copy mlu370-x8.yaml and its library cncl.yaml into ``tmp``, scaling one value."""
    (tmp / "libraries").mkdir(parents=True)
    system = yaml.safe_load((TOPO / "mlu370-x8.yaml").read_text())
    library = yaml.safe_load((TOPO / "libraries" / "cncl.yaml").read_text())
    node = system if where == "system" else library
    for k in path:
        node = node[k]
    node["value"] *= factor
    (tmp / "mlu370-x8.yaml").write_text(yaml.safe_dump(system, sort_keys=False))
    (tmp / "libraries" / "cncl.yaml").write_text(yaml.safe_dump(library, sort_keys=False))
    return tmp / "mlu370-x8.yaml"


def _mlu_experiment(system_file: Path):
    return load_experiment(CATALOG, [f"systems=[{system_file}]"])


def _mlu_baseline() -> pd.DataFrame:
    table = load_baseline(GOLDEN / "catalog-gpt3-1.3b").table
    return table[table.system == "mlu370-x8"]


def test_unperturbed_copy_matches(tmp_path) -> None:
    """Control: the copied files themselves reproduce the baseline."""
    f = _perturbed_system(tmp_path, "system", ("node", "nics", "rate_Gbps"), 1.0)
    cmp = assert_scaling_curve_matches(_mlu_experiment(f), _mlu_baseline())
    assert cmp.n_points == 6


@pytest.mark.parametrize(
    ("where", "path", "label"),
    [
        ("system", ("node", "nics", "rate_Gbps"), "topology.node.nics.rate_Gbps"),
        ("library", ("step_latency_us", "network"), "library.step_latency_us.network"),
    ],
    ids=["nic-bandwidth", "cncl-network-latency"],
)
def test_five_percent_input_change_fails_naming_points(tmp_path, where, path, label) -> None:
    f = _perturbed_system(tmp_path, where, path, 1.05)
    exp = _mlu_experiment(f)
    # the baseline as a folder (this system's rows): the helper also names the changed input
    base_dir = tmp_path / "baseline"
    base_dir.mkdir()
    _mlu_baseline().to_csv(base_dir / RESULTS_FILE, index=False)
    shutil.copy(GOLDEN / "catalog-gpt3-1.3b" / INPUTS_FILE, base_dir / INPUTS_FILE)
    shutil.copy(GOLDEN / "catalog-gpt3-1.3b" / META_FILE, base_dir / META_FILE)
    with pytest.raises(AssertionError) as info:
        assert_scaling_curve_matches(exp, base_dir)
    msg = str(info.value)
    print(f"\n--- perturbed {label} x1.05 ---\n{msg}")
    # every multi-node point moves beyond the default rtol; single-node points (no network) do not
    for strategy in ("ddp", "fsdp-full_shard"):
        for nodes in (8, 64):
            assert f"mlu370-x8 {strategy} gpt3-1.3b nodes={nodes}" in msg
        assert f"mlu370-x8 {strategy} gpt3-1.3b nodes=1" not in msg
    assert "step_time_s" in msg and "scaling_efficiency" in msg
    assert f"systems.mlu370-x8.{label}" in msg  # the changed input is named
    # the same with the structured comparison: which points fail, by how much
    cmp = compare_frames(run_experiment(exp).table, _mlu_baseline())
    assert {(s, st, n) for s, st, _, n in cmp.failing_points} == {
        ("mlu370-x8", st, n) for st in ("ddp", "fsdp-full_shard") for n in (8, 64)
    }
    step = cmp.failures[cmp.failures.metric == "step_time_s"]
    assert step.rel_diff.abs().min() > 100 * DEFAULT_RTOL  # far beyond tolerance, not marginal


# ---- (c) `scaling baseline update` regenerates the committed baselines -------------------------


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_committed_inputs_and_metadata_are_what_the_configs_give(config: Path) -> None:
    """The fast half of regenerating a baseline, without running the model: its inputs file and
    metadata (config hash, files) are what the config resolves to now. The values, the points
    and the refusals are checked by test_model_matches_golden_baseline."""
    old = GOLDEN / config.stem
    exp = load_experiment(config)
    run = GoldenRun(config.stem, pd.DataFrame(), (), exp.inputs(), exp)  # not run: no points
    assert (old / INPUTS_FILE).read_text() == inputs_text(run)
    drop = ("created", "scaling_version", "points", "refused")
    meta_old = yaml.safe_load((old / META_FILE).read_text())
    meta_new = _meta(run, "")
    assert {k: v for k, v in meta_new.items() if k not in drop} == {
        k: v for k, v in meta_old.items() if k not in drop
    }
    assert meta_old["config_hash"] == exp.config_hash()


@pytest.mark.slow  # runs every golden experiment again (~40 s); the fast halves are above
def test_baseline_update_regenerates_committed(tmp_path) -> None:
    res = CliRunner().invoke(
        baseline, ["update", "--dir", str(tmp_path), "--configs", str(CONFIGS)]
    )
    assert res.exit_code == 0, res.output
    assert "invariants hold" in res.output
    for config in CONFIG_FILES:
        new, old = tmp_path / config.stem, GOLDEN / config.stem
        assert (new / INPUTS_FILE).read_text() == (old / INPUTS_FILE).read_text()
        assert frames_equal(pd.read_csv(new / RESULTS_FILE), pd.read_csv(old / RESULTS_FILE))
        drop = ("created", "scaling_version")
        m_new, m_old = (yaml.safe_load((d / META_FILE).read_text()) for d in (new, old))
        assert {k: v for k, v in m_new.items() if k not in drop} == {
            k: v for k, v in m_old.items() if k not in drop
        }


@pytest.fixture
def tiny_configs(tmp_path) -> Path:
    d = tmp_path / "configs"
    d.mkdir()
    (d / "tiny.yaml").write_text(
        "name: tiny\nmodel: gpt3-125m\nsystems: [dgx-a100, enflame-t20]\nnodes: [1, 2]\n"
        "simulation: {steps: 1, warmup_steps: 1}\n"
    )
    return d


def test_baseline_update_is_idempotent_and_reports_changes(tmp_path, tiny_configs) -> None:
    out = tmp_path / "golden"
    args = ["update", "--dir", str(out), "--configs", str(tiny_configs)]
    res = CliRunner().invoke(baseline, args)
    assert res.exit_code == 0, res.output
    assert "tiny: 2 points; refused enflame-t20 ddp at nodes [1, 2]" in res.output
    assert "new" in res.output
    files = {p.name: p.read_bytes() for p in (out / "tiny").iterdir()}
    assert set(files) == {RESULTS_FILE, INPUTS_FILE, META_FILE}
    meta = yaml.safe_load(files[META_FILE])
    assert meta["config"].endswith("tiny.yaml") and meta["regenerate"] == "scaling baseline update"
    (out / "tiny" / META_FILE).write_text(
        files[META_FILE].decode().replace(meta["created"], "2000-01-01")
    )
    res = CliRunner().invoke(baseline, args)
    assert res.exit_code == 0 and "unchanged" in res.output, res.output
    assert "2000-01-01" in (out / "tiny" / META_FILE).read_text()  # untouched, date kept
    # an input change: the baseline is rewritten and the changes are shown
    (tiny_configs / "tiny.yaml").write_text(
        (tiny_configs / "tiny.yaml").read_text() + "training: {micro_batch_size: 2}\n"
    )
    res = CliRunner().invoke(baseline, args)
    assert res.exit_code == 0 and "updated" in res.output, res.output
    assert "changes vs the previous baseline" in res.output and "step_time_s" in res.output
    assert "2000-01-01" not in (out / "tiny" / META_FILE).read_text()


def test_baseline_update_refuses_to_write_when_an_invariant_fails(
    tmp_path, tiny_configs, monkeypatch
) -> None:
    import scaling.golden.baseline as golden

    monkeypatch.setattr(golden, "check_invariants", lambda t, inv: ["dgx-a100 ddp: made up"])
    res = CliRunner().invoke(
        baseline, ["update", "--dir", str(tmp_path / "g"), "--configs", str(tiny_configs)]
    )
    assert res.exit_code == 1 and "made up" in res.output
    assert not (tmp_path / "g").exists()


def test_baseline_update_bad_input(tmp_path, tiny_configs) -> None:
    res = CliRunner().invoke(baseline, ["update", "--configs", str(tmp_path / "nope")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "no such folder" in res.output
    res = CliRunner().invoke(baseline, ["update", "--configs", str(tiny_configs), "--only", "x"])
    assert res.exit_code == 2 and "known: tiny" in res.output


# ---- (d) `scaling compare` -----------------------------------------------------------------------


HEAD = GOLDEN / "mlu-vs-gpu"


def _invoke(*args: str):
    return CliRunner().invoke(compare, [str(a) for a in args])


def test_compare_identical_exit_0_with_table() -> None:
    res = _invoke(HEAD, HEAD / RESULTS_FILE)
    assert res.exit_code == 0, res.output
    head = res.output.splitlines()
    assert any(ln.split()[:4] == ["system", "strategy", "model", "nodes"] for ln in head)
    assert "scaling_efficiency" in res.output and "peak_mem_GiB" in res.output
    assert "OK: all 40 common points within tolerance" in res.output


def test_compare_difference_exit_1_names_point_metric_values(tmp_path) -> None:
    df = pd.read_csv(HEAD / RESULTS_FILE)
    i = df.index[(df.system == "mlu370-x8") & (df.strategy == "ddp") & (df.nodes == 128)][0]
    old = df.loc[i, "step_time_s"]
    df.loc[i, "step_time_s"] = old * 1.01
    df.to_parquet(tmp_path / "results.parquet")
    res = _invoke(tmp_path / "results.parquet", HEAD)
    assert res.exit_code == 1, res.output
    bad = [ln for ln in res.output.splitlines() if ln.startswith("mlu370-x8") and "*" in ln]
    assert len(bad) == 1 and bad[0].split()[:4] == ["mlu370-x8", "ddp", "gpt3-1.3b", "128"]
    fail = res.output.split("beyond tolerance:")[1]
    assert "step_time_s" in fail and f"{old:.6g}" in fail and f"{old * 1.01:.6g}" in fail
    assert "+1.00%" in fail and "DIFFERENT: 1 value(s) at 1 of 40 points" in res.output
    res = _invoke(tmp_path / "results.parquet", HEAD, "--failures-only")
    assert res.exit_code == 1 and "* = beyond tolerance" not in res.output
    assert len(res.output.splitlines()) == 6  # title, "beyond tolerance:", head, rule, row, verdict
    # a looser tolerance accepts it; so does leaving the metric out
    assert _invoke(tmp_path / "results.parquet", HEAD, "--rtol", "0.02").exit_code == 0
    assert (
        _invoke(tmp_path / "results.parquet", HEAD, "--metrics", "mfu,peak_mem_GiB").exit_code == 0
    )


def test_compare_missing_points(tmp_path) -> None:
    df = pd.read_csv(HEAD / RESULTS_FILE)
    df[df.nodes <= 8].to_csv(tmp_path / "r.csv", index=False)
    res = _invoke(tmp_path / "r.csv", HEAD)
    assert res.exit_code == 1 and "only in BASELINE" in res.output
    assert "mlu370-x8 ddp gpt3-1.3b nodes=16, 32, 64, 128, 256, 512" in res.output
    assert _invoke(tmp_path / "r.csv", HEAD, "--common-only").exit_code == 0


def test_compare_bad_input_exit_2(tmp_path) -> None:
    other = pd.read_csv(HEAD / RESULTS_FILE).assign(model="gpt3-175b")
    other.to_csv(tmp_path / "other.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "x.txt").write_text("a,b\n1,2\n")
    cases = [
        ((tmp_path / "missing.csv", HEAD), "no such file"),
        ((tmp_path, HEAD), "holds no results.csv"),
        ((tmp_path / "empty.csv", HEAD), "file is empty"),
        ((tmp_path / "x.txt", HEAD), "unknown results format"),
        ((tmp_path / "other.csv", HEAD), "no common points"),
        ((HEAD, HEAD, "--metrics", "step_time,mfu"), "unknown metric 'step_time'"),
        ((HEAD, HEAD, "--metrics", "system"), "metric 'system' is not numeric"),
        ((HEAD, HEAD, "--rtol", "-1"), "rtol"),
    ]
    for args, needle in cases:
        res = _invoke(*args)
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.output, (args, res.output)
        if needle != "rtol":  # click's own usage errors print a usage block
            assert res.output.startswith("error: ") and res.output.count("\n") == 1, res.output


def test_comparison_is_numpys_isclose_per_value() -> None:
    """The vectorised comparison is ``isclose`` with the baseline as reference, NaN equal to NaN,
    on every point x metric, in point-major order; the signed relative difference follows."""
    import numpy as np

    rng = np.random.default_rng(7)
    n, metrics = 50, ("step_time_s", "mfu", "peak_mem_GiB")
    base = pd.DataFrame(
        {"system": "s", "strategy": "ddp", "model": "m", "nodes": np.arange(1, n + 1)}
        | {m: rng.uniform(0.5, 2.0, n) for m in metrics}
    )
    res = base.copy()
    for m in metrics:
        res[m] = res[m] * (1 + rng.choice([0, 1e-7, -1e-5, 1e-3], n))
    special = [np.nan, np.inf, -np.inf, 0.0]
    for i, (b, v) in enumerate([(x, y) for x in special for y in special]):
        base.loc[i, "mfu"], res.loc[i, "mfu"] = b, v
    res = res.iloc[::-1]  # row order does not matter: points are matched by key
    cmp = compare_frames(res, base, metrics, rtol=1e-6, atol=1e-9)
    b = base[list(metrics)].to_numpy().ravel()
    v = res.iloc[::-1][list(metrics)].to_numpy().ravel()
    assert list(cmp.values["metric"]) == list(metrics) * n
    expect = np.isclose(v, b, rtol=1e-6, atol=1e-9, equal_nan=True)
    assert (cmp.values["ok"].to_numpy() == expect).all()
    finite = np.isfinite(b) & np.isfinite(v) & (b != 0)
    rel = cmp.values["rel_diff"].to_numpy()
    with np.errstate(invalid="ignore"):
        expect_rel = (v - b) / np.abs(b)
    assert np.allclose(rel[finite], expect_rel[finite], rtol=1e-12, atol=0)


# ---- the helper's other inputs --------------------------------------------------------------------


def test_helper_accepts_experiment_result_and_frames(small_exp) -> None:
    small_exp["nodes"] = [1, 2]
    res = run_experiment(small_exp)
    assert_scaling_curve_matches(res, res.table)
    assert_scaling_curve_matches(res.table, res.table, metrics="mfu,step_time_s")
    shifted = res.table.assign(mfu=res.table.mfu * (1 + 1e-3))
    with pytest.raises(AssertionError, match=r"dgx-a100 ddp gpt3-1.3b nodes=2"):
        assert_scaling_curve_matches(shifted, res.table)
    assert_scaling_curve_matches(shifted, res.table, rtol=2e-3)
    with pytest.raises(ConfigError, match="no such file"):
        assert_scaling_curve_matches(res, "nope/results.csv")
    with pytest.raises(TypeError):
        assert_scaling_curve_matches(42, res.table)


# ---- (e) invariants -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.stem for p in CONFIG_FILES])
def test_invariants_hold_on_baselines(name: str) -> None:
    assert_scaling_invariants(GOLDEN / name, CONFIGS / INVARIANTS_FILE)
    table = load_baseline(GOLDEN / name).table
    fsdp = table[table.strategy.str.startswith("fsdp")]
    assert fsdp.scaling_efficiency.max() <= 1 + INVARIANTS.allowance("fsdp-full_shard")


def _curve(system: str, strategy: str, effs: list[float], nodes=(1, 8, 64)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "system": system,
            "model": "m",
            "strategy": strategy,
            "nodes": list(nodes),
            "devices": [8 * n for n in nodes],
            "global_batch": [8 * n for n in nodes],
            "scaling_efficiency": effs,
        }
    )


def test_golden_invariants_are_declared_data() -> None:
    """What io/golden.py used to hard-code is read from configs/golden/invariants.yaml."""
    assert INVARIANTS.allowance("fsdp-full_shard") == 0.03  # by kind
    assert INVARIANTS.allowance("ddp") == INVARIANTS.allowance("toy") == 1e-9  # float slack
    assert INVARIANTS.slower_than == (("mlu370-x8", "dgx-a100"),)
    assert Invariants().slower_than == () and Invariants().allowance("fsdp-full_shard") == 1e-9
    assert INVARIANTS_FILE not in {p.name for p in CONFIG_FILES}  # not a golden experiment


def test_invariants_catch_violations() -> None:
    ok = pd.concat(
        [
            _curve("dgx-a100", "ddp", [1.0, 0.99, 0.98]),
            _curve("mlu370-x8", "ddp", [1.0, 0.9, 0.5]),
            _curve("dgx-a100", "fsdp-full_shard", [1.0, 1.014, 0.97]),  # super-linear: allowed
        ]
    )
    assert check_invariants(ok, INVARIANTS) == []
    # without the declared allowance the super-linear FSDP point is a violation
    assert check_invariants(ok) == [
        "dgx-a100 fsdp-full_shard m nodes=8: scaling efficiency 1.014000 > 1",
        "dgx-a100 fsdp-full_shard m: scaling efficiency rises from 1.000000 at 1 nodes to "
        "1.014000 at 8 nodes",
    ]
    cases = {
        "> 1": _curve("x", "ddp", [1.0, 1.001, 0.9]),
        "rises from 0.900000 at 8 nodes": _curve("x", "ddp", [1.0, 0.9, 0.95]),
        "fsdp-full_shard's super-linear allowance": _curve(
            "x", "fsdp-full_shard", [1.0, 1.04, 1.0]
        ),
        "more than the allowance 0.03": _curve("x", "fsdp-full_shard", [1.0, 0.9, 0.95]),
        "not in (0, 1]": _curve("x", "ddp", [1.0, 0.5, 0.0]),
        "not weak scaling": _curve("x", "ddp", [1.0, 0.9, 0.8]).assign(global_batch=[8, 64, 1024]),
        "is not below dgx-a100": pd.concat(
            [
                _curve("dgx-a100", "ddp", [1.0, 0.9, 0.5]),
                _curve("mlu370-x8", "ddp", [1.0, 0.9, 0.6]),
            ]
        ),
    }
    for needle, table in cases.items():
        bad = check_invariants(table, INVARIANTS)
        assert len(bad) >= 1 and any(needle in b for b in bad), (needle, bad)
    assert check_invariants(cases["is not below dgx-a100"]) == []  # a declared pair, not a rule
    with pytest.raises(AssertionError, match="invariants violated"):
        assert_scaling_invariants(cases["> 1"])


def test_invariants_file_errors_name_file_line_and_field(tmp_path) -> None:
    bad = tmp_path / INVARIANTS_FILE
    bad.write_text("superlinear_allowance:\n  fsdp:\n    value: 1.5\n    reason: r\n")
    with pytest.raises(ConfigError, match=r"invariants.yaml:3: superlinear_allowance.fsdp.value"):
        load_invariants(bad)
    bad.write_text("slower_than:\n  - {slower: a, faster: b, reason: r, why: x}\n")
    with pytest.raises(ConfigError, match=r":2: slower_than\[0\].why: got 'x'; expected no such"):
        load_invariants(bad)
