"""``scaling.run_collective``: the ``scaling collective`` table from Python, on catalog systems
or on ``dataclasses.replace`` variants of them (notebook 03's oversubscription panels)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

from scaling import ConfigError, run_collective, system_spec
from scaling.app.cli import main


def test_same_numbers_as_the_cli() -> None:
    df = run_collective("dgx-a100", 2, "all_reduce", "1M:4M")
    res = CliRunner().invoke(
        main, ["collective", "--system", "dgx-a100", "--nodes", "2", "--sizes", "1M:4M",
               "--format", "csv"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln and not ln.startswith("#")]
    assert len(df) == 3 == len(lines) - 1
    cols = lines[0].split(",")
    for row, line in zip(df.itertuples(), lines[1:], strict=True):
        cli = dict(zip(cols, line.split(","), strict=True))
        assert int(cli["size_bytes"]) == row.size_bytes
        assert float(cli["busbw_GBps"]) == pytest.approx(row.busbw_GBps, rel=1e-9)


def test_oversubscription_bites_all_to_all_not_a_ring() -> None:
    """A ring enters and leaves each leaf once per channel: with a perfectly balanced spine its
    few flows never fill even 8:1 uplinks; all-to-all sends most bytes across leaves, so its
    bus bandwidth falls with the ratio."""
    mlu = system_spec("mlu370-x8")

    def busbw(ratio: float, op: str, algo: str | None) -> float:
        so = replace(mlu.scale_out, oversubscription=ratio, ecmp="ideal")
        df = run_collective(replace(mlu, scale_out=so), 128, op, [64 << 20], algorithm=algo)
        return float(df.busbw_GBps.iloc[0])

    assert busbw(8, "all_reduce", "ring") == pytest.approx(busbw(1, "all_reduce", "ring"))
    a2a = [busbw(r, "all_to_all", None) for r in (1, 2, 4)]
    assert a2a[0] > 1.5 * a2a[1] > 1.5 * 1.5 * a2a[2]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"op": "allreduce"}, "op='allreduce': expected one of all_reduce"),
        ({"network": "fast"}, "network='fast'"),
        ({"nodes": 100_000}, "nodes=100000: got 800,000 ranks"),
        ({"sizes": "0:1M"}, "a 0-byte collective moves nothing"),
        ({"sizes": [1024, -5]}, "sizes: got '-5'"),
    ],
)
def test_bad_arguments_are_one_line(kwargs, fragment) -> None:
    args = {"system": "dgx-a100", "nodes": 2, **kwargs}
    with pytest.raises(ConfigError) as e:
        run_collective(**args)
    assert fragment in str(e.value) and "\n" not in str(e.value)
