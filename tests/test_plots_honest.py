"""The figures draw only what was simulated, on one x axis (issue 30): lines and 5-95 % bands
join neighbouring simulated points only (a wider gap is a dotted line, no band), every plot has
accelerators on x (nodes on top where the series agree), and tornado panels share their x
axis."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from scaling.io import uncertainty_plot
from scaling.io.plots import GAP_LABEL, draw_simulated, plot_headline, plot_metric


def _axes(fig: Figure):
    return [a for a in fig.axes if a.get_xlabel() in ("accelerators", "nodes")]


def _band_spans(ax) -> list[tuple[float, float]]:
    """(min x, max x) of every shaded band on ``ax``."""
    out = []
    for c in ax.collections:
        if isinstance(c, PolyCollection) and c.get_paths():
            v = np.concatenate([p.vertices for p in c.get_paths()])
            out.append((float(v[:, 0].min()), float(v[:, 0].max())))
    return out


def test_draw_simulated_joins_neighbours_only() -> None:
    fig = Figure()
    ax = fig.subplots()
    x = [1, 2, 4, 64, 128, 512]
    y = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    gap = draw_simulated(ax, x, y, "C0", "s", lo=[v - 0.1 for v in y], hi=[v + 0.1 for v in y])
    assert gap
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
    dotted = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
    assert [list(ln.get_xdata()) for ln in solid] == [[1, 2, 4], [64, 128], [512]]
    assert [list(ln.get_xdata()) for ln in dotted] == [[4, 64], [128, 512]]
    # bands only over the joined runs: never across 4 -> 64 or 128 -> 512
    assert sorted(_band_spans(ax)) == [(1.0, 4.0), (64.0, 128.0)]
    assert solid[0].get_label() == "s"  # labelled once


def test_dense_sweep_has_no_gap() -> None:
    fig = Figure()
    ax = fig.subplots()
    assert not draw_simulated(ax, [1, 2, 4, 8], [1, 1, 1, 1], "C0")
    assert len(ax.lines) == 1


def _table(nodes: list[int], per_node: int = 8) -> pd.DataFrame:
    rows = []
    for system, f in (("dgx-a100", 1.0), ("mlu370-x8", 0.25)):
        for n in nodes:
            rows.append({"system": system, "strategy": "ddp", "nodes": n, "devices": n * per_node,
                         "scaling_efficiency": 1 - 0.01 * np.log2(n),
                         "tokens_per_s_per_device": 2e4 * f, "status": "ok"})  # fmt: skip
    return pd.DataFrame(rows)


def _branches(nodes: list[int]) -> pd.DataFrame:
    rows = []
    for metric in ("scaling_efficiency", "tokens_per_s_per_device"):
        for n in nodes:
            rows.append({"system": "mlu370-x8", "strategy": "ddp", "nodes": n, "metric": metric,
                         "branch": "all", "assumption": "", "has_nominal": True, "split": False,
                         "nominal": 0.9, "median": 0.9, "p5": 0.8, "p95": 0.95})  # fmt: skip
    return pd.DataFrame(rows)


def test_headline_x_is_accelerators_with_nodes_on_top_and_no_band_over_a_gap(
    tmp_path, monkeypatch
) -> None:
    captured = {}
    real = Figure.savefig

    def grab(self, *a, **k):
        captured["fig"] = self
        return real(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", grab)
    plot_headline(_table([1, 2, 4, 512]), tmp_path / "h.png", "t", _branches([1, 512]))
    fig = captured["fig"]
    axes = _axes(fig)
    assert [a.get_xlabel() for a in axes] == ["accelerators", "accelerators"]
    for ax in axes:
        assert any("nodes (8 accelerators each)" in c.get_xlabel() for c in ax.child_axes)
        assert _band_spans(ax) == []  # sampled at 1 and 512 only: error bars, no band between
        xs = sorted({x for ln in ax.lines if ln.get_linestyle() == ":" for x in ln.get_xdata()})
        assert xs == [8, 32, 4096]  # the gaps 4 -> 512 nodes (nominal) and 1 -> 512 (median)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert GAP_LABEL in labels


def test_bands_on_the_main_plots_axis(tmp_path, monkeypatch) -> None:
    captured = {}
    real = Figure.savefig
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda self, *a, **k: (captured.setdefault("f", self), real(self, *a, **k))[1],
    )
    uncertainty_plot.plot_bands(
        _branches([1, 2, 4]), tmp_path / "b.png", "t", per_node={"mlu370-x8": 8}
    )
    ax = _axes(captured["f"])[0]
    assert ax.get_xlabel() == "accelerators"
    assert _band_spans(ax) == [(8.0, 32.0)]
    captured.clear()  # without per_node (the public API's old call): nodes
    uncertainty_plot.plot_bands(_branches([1, 2, 4]), tmp_path / "c.png", "t")
    assert _axes(captured["f"])[0].get_xlabel() == "nodes"


def test_plot_metric_puts_nodes_on_top_only_when_series_agree() -> None:
    t = _table([1, 2, 4])
    fig = plot_metric(t)
    assert fig.axes[0].get_xlabel() == "accelerators" and fig.axes[0].child_axes
    t.loc[t.system == "mlu370-x8", "devices"] *= 2
    fig = plot_metric(t)
    assert not fig.axes[0].child_axes


def test_tornado_panels_share_x(tmp_path, monkeypatch) -> None:
    rows = []
    for system, width in (("dgx-a100", 0.003), ("mlu370-x8", 0.7)):
        for i in range(3):
            rows.append({"system": system, "strategy": "ddp", "input": f"in{i}", "metric": "scaling_efficiency",
                         "at_nominal": 0.5, "at_low": 0.5 - width * (i + 1) / 3, "at_high": 0.5,
                         "swing": width * (i + 1) / 3, "low_value": 1.0, "high_value": 2.0})  # fmt: skip
    captured = {}
    real = Figure.savefig
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda self, *a, **k: (captured.setdefault("f", self), real(self, *a, **k))[1],
    )
    uncertainty_plot.plot_tornado(pd.DataFrame(rows), tmp_path / "t.png", "t")
    a, b = captured["f"].axes[:2]
    assert a.get_xlim() == b.get_xlim()


def test_tornado_marks_inputs_that_land_on_one_value(tmp_path, monkeypatch) -> None:
    """Three inputs at 0.3788 (issue 30): one switch of the network flipped by each, hatched
    and named; an input whose low and high coincide alone is not."""
    assert uncertainty_plot.shared_values([0.3788, 0.5, 0.3788], [0, 1, 2], 0.42) == {0, 2}
    assert uncertainty_plot.shared_values([0.3788, 0.3788, 0.5], [0, 0, 1], 0.42) == set()
    assert uncertainty_plot.shared_values([0.42, 0.42], [0, 1], 0.42) == set()  # at nominal
    rows = [
        {"system": "mlu370-x8", "strategy": "fsdp", "input": f"in{i}", "metric": "scaling_efficiency",
         "at_nominal": 0.4188, "at_low": lo, "at_high": 0.4188, "swing": 0.4188 - lo,
         "low_value": 1.0, "high_value": 2.0}
        for i, lo in enumerate([0.3788, 0.3788, 0.3788, 0.30])
    ]  # fmt: skip
    captured = {}
    real = Figure.savefig
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda self, *a, **k: (captured.setdefault("f", self), real(self, *a, **k))[1],
    )
    uncertainty_plot.plot_tornado(pd.DataFrame(rows), tmp_path / "t.png", "t")
    ax = captured["f"].axes[0]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 3
    assert any("0.3788" in t.get_text() for t in ax.get_legend().get_texts())
