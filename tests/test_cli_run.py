"""`scaling run` end to end on a reduced main job: table, CSV, resolved config with hash, plot."""

from __future__ import annotations

import pandas as pd
import yaml
from click.testing import CliRunner

from scaling.app.cli import main


def test_run_main_config_writes_outputs(repo, tmp_path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        [
            "run",
            str(repo / "configs" / "mlu-vs-gpu.yaml"),
            "--out",
            str(out),
            "--set",
            "nodes=[1,4,16]",
        ],
    )
    assert res.exit_code == 0, res.output
    for col in (
        "system",
        "nodes",
        "accel",
        "step (s)",
        "tok/s/accel",
        "scaling eff",
        "exposed comm",
    ):
        assert col in res.output
    assert "points vs dgx-a100" in res.output
    df = pd.read_csv(out / "results.csv")
    # 2 systems x 2 strategies (DDP, FSDP) x 3 node counts
    assert len(df) == 12 and set(df.system) == {"dgx-a100", "mlu370-x8"}
    assert set(df.strategy) == {"ddp", "fsdp-full_shard"}
    assert df.config_hash.nunique() == 1
    resolved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert resolved["config_hash"] == df.config_hash.iloc[0]
    assert resolved["experiment"]["nodes"] == [1, 4, 16]
    png = (out / "scaling_efficiency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_systems_and_metrics_commands() -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["systems"])
    assert res.exit_code == 0 and "mlu370-x8" in res.output and "[assumption]" in res.output
    res = runner.invoke(main, ["metrics"])
    assert res.exit_code == 0 and "scaling_efficiency [1]" in res.output


def test_readme_metric_table_matches_the_definitions(repo) -> None:
    from scaling.model.analysis.metrics import METRICS

    readme = (repo / "docs" / "reference" / "metrics.md").read_text()
    for m in METRICS.values():
        assert f"| `{m.name}` | {m.unit} | {m.definition} |" in readme, m.name
