"""Plots of scaling results (matplotlib's object API: no display and no pyplot needed).

Every plot has accelerators on a log2 x axis (and nodes on the top axis when every series has
the same accelerators per node) and one line per (system, strategy) — and, for a sweep, per
value of its axes (the table's axis columns, named in the legend). Lines and bands join
simulated points only where they are neighbours (at most :data:`JOIN_FACTOR` apart); a wider
gap is a thin dotted line, since nothing was simulated between (:func:`draw_simulated`).

In a notebook, :func:`plot_metric` (and :func:`plot_efficiency`) draw on a given ``ax=`` or a new
figure and return the :class:`~matplotlib.figure.Figure`; the ``plot_*`` functions that take
paths write files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from scaling.io.files import write_output
from scaling.io.results import META_COLUMNS
from scaling.model.analysis.metrics import RunResult

_KNOWN_COLUMNS = {*RunResult.__dataclass_fields__, "scaling_efficiency", *META_COLUMNS}

#: The sweep plots: file stem → (column, y label, y limits, shown as a percentage)
SWEEP_PLOTS: dict[str, tuple[str, str, tuple[float, float] | None, bool]] = {
    "scaling_efficiency": (
        "scaling_efficiency",
        "scaling efficiency (per-device throughput / smallest run)",
        (0, 1.05),
        False,
    ),
    "tokens_per_device": ("tokens_per_s_per_device", "tokens/s per accelerator", None, False),
    "exposed_comm": ("exposed_comm_share", "exposed communication (% of step time)", None, True),
}


#: simulated points at most this factor apart (a power-of-two sweep's neighbours) are joined by
#: a line and a band; a wider gap only by a dotted line
JOIN_FACTOR = 2.0
#: the legend entry of the dotted joins
GAP_LABEL = "dotted: not simulated between"


def draw_simulated(
    ax: Axes,
    x: Sequence[float],
    y: Sequence[float],
    color: Any,
    label: str | None = None,
    lo: Sequence[float] | None = None,
    hi: Sequence[float] | None = None,
    linestyle: str = "-",
    marker: str = "o",
    hatch: str = "",
    band_alpha: float = 0.2,
) -> bool:
    """Draw simulated points ``(x, y)`` (x increasing) honestly: a marker at each, joined by a
    line — and, with ``lo``/``hi``, a shaded band between — only between neighbours at most
    :data:`JOIN_FACTOR` apart; a wider gap is a thin dotted line with no band, and each point's
    ``lo``-``hi`` interval is also an error bar (so an isolated point shows its interval).
    Returns whether a dotted gap was drawn (the caller adds :data:`GAP_LABEL` once)."""
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    los = None if lo is None else [float(v) for v in lo]
    his = None if hi is None else [float(v) for v in hi]
    runs: list[list[int]] = []
    for i in range(len(xs)):
        if runs and xs[i] <= xs[runs[-1][-1]] * JOIN_FACTOR:
            runs[-1].append(i)
        else:
            runs.append([i])
    gap = False
    for k, run in enumerate(runs):
        rx, ry = [xs[i] for i in run], [ys[i] for i in run]
        ax.plot(
            rx, ry, color=color, linestyle=linestyle, marker=marker, markersize=3,
            label=label if k == 0 else None,
        )  # fmt: skip
        if los is not None and his is not None:
            rlo, rhi = [los[i] for i in run], [his[i] for i in run]
            if len(run) > 1:
                ax.fill_between(
                    rx, rlo, rhi, color=color, alpha=band_alpha, linewidth=0, hatch=hatch
                )
            ax.errorbar(
                rx, ry, yerr=[[a - b for a, b in zip(ry, rlo, strict=True)],
                              [b - a for a, b in zip(ry, rhi, strict=True)]],
                fmt="none", ecolor=color, elinewidth=0.8, capsize=2.5, alpha=0.8,
            )  # fmt: skip
        if k + 1 < len(runs):
            a, b = run[-1], runs[k + 1][0]
            ax.plot([xs[a], xs[b]], [ys[a], ys[b]], color=color, linestyle=":", linewidth=0.8)
            gap = True
    return gap


def nodes_axis(ax: Axes, per_node: int | None) -> None:
    """With one accelerator count per node for every series, nodes on the top x axis."""
    if per_node:
        g = float(per_node)

        def to_nodes(a: Any) -> Any:
            return a / g

        def to_accelerators(n: Any) -> Any:
            return n * g

        top = ax.secondary_xaxis("top", functions=(to_nodes, to_accelerators))
        top.xaxis.set_major_locator(LogLocator(base=2))  # as the accelerators below
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        top.set_xlabel(f"nodes ({per_node} accelerators each)", fontsize="small")


def per_node_of(df: pd.DataFrame) -> int | None:
    """The accelerators per node shared by every row of a results table; None if they differ."""
    if not {"devices", "nodes"} <= set(df.columns) or df.empty:
        return None
    per = (df["devices"] // df["nodes"]).unique()
    return int(per[0]) if len(per) == 1 else None


def axis_columns(df: pd.DataFrame) -> list[str]:
    """A results table's sweep-axis columns: every column that is not a metric, the run's
    identity or a bookkeeping column (``config_hash``, ``run_key``, ``point``, ``status``, ``error``)."""
    return [c for c in df.columns if c not in _KNOWN_COLUMNS and not c.startswith("Unnamed:")]


def _short(col: str) -> str:
    return col.removeprefix("axis.").rsplit(".", 1)[-1]


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df.columns else df


def _series(df: pd.DataFrame, axes: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    keys = ["system", "strategy"]
    if "model" in df.columns and df["model"].nunique() > 1:
        keys.insert(1, "model")
    keys += [a for a in axes if a not in keys]
    shorts = [_short(a) for a in axes]
    names = shorts if len(set(shorts)) == len(shorts) else [a.removeprefix("axis.") for a in axes]
    out = []
    for values, g in df.groupby(keys, sort=False, dropna=False):
        vals = dict(zip(keys, values, strict=True))
        head = vals["system"] + (f" {vals['model']}" if "model" in vals else "")
        label = f"{head} ({vals['strategy']})"
        if axes:
            label += ": " + ", ".join(
                f"{n}={_fmt(vals[a])}" for n, a in zip(names, axes, strict=True)
            )
        out.append((label, g.sort_values("devices")))
    return out


def plot_metric(
    df: pd.DataFrame,
    column: str = "scaling_efficiency",
    ax: Axes | None = None,
    title: str = "",
    axes: Sequence[str] | None = None,
    ylabel: str | None = None,
    ylim: tuple[float, float] | None = None,
    percent: bool | None = None,
) -> Figure:
    """Draw ``column`` of a results table vs accelerators (log2 x), one line per (system,
    strategy, sweep-axis values), on ``ax`` or on a new figure; return the figure.

    ``ylabel``, ``ylim`` and ``percent`` (y shown x100) default to the sweep plots' settings for
    their columns (:data:`SWEEP_PLOTS`). Refused and failed rows are left out.
    """
    known = {c: (lab, lim, pct) for c, lab, lim, pct in SWEEP_PLOTS.values()}
    lab, lim, pct = known.get(column, (column, None, False))
    ylabel = lab if ylabel is None else ylabel
    ylim = lim if ylim is None else ylim
    percent = pct if percent is None else percent
    df = _ok_rows(df)
    axes = axis_columns(df) if axes is None else list(axes)
    series = _series(df, axes)
    many = len(series) > 6
    if ax is None:
        fig = Figure(figsize=(11 if many else 7, 4.5), dpi=120)
        ax = fig.subplots()
    else:
        root = ax.get_figure(root=True)
        if root is None:  # an Axes always belongs to a figure
            raise ValueError("ax belongs to no figure")
        fig = root
    cmap = colormaps["tab10" if len(series) <= 10 else "tab20"]
    markers = "osD^v<>ph*"
    gaps = False
    for k, (label, g) in enumerate(series):
        y = g[column] * (100 if percent else 1)
        gaps |= draw_simulated(
            ax, g["devices"], y, cmap(k % cmap.N), label,
            marker=markers[k % len(markers)] if many else "o",
        )  # fmt: skip
    if gaps:
        ax.plot([], [], color="gray", linestyle=":", linewidth=0.8, label=GAP_LABEL)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("accelerators")
    nodes_axis(ax, per_node_of(df))
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    else:
        ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        if many:
            ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
        else:
            ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_efficiency(df: pd.DataFrame, ax: Axes | None = None, title: str = "") -> Figure:
    """Scaling efficiency vs accelerators on ``ax`` (or a new figure); returns the figure."""
    return plot_metric(df, "scaling_efficiency", ax, title)


def plot_vs_devices(
    df: pd.DataFrame,
    column: str,
    paths: Sequence[Path],
    ylabel: str,
    title: str = "",
    axes: Sequence[str] | None = None,
    ylim: tuple[float, float] | None = None,
    percent: bool = False,
) -> list[Path]:
    """:func:`plot_metric` saved to each of ``paths`` (format from the suffix: ``.png``,
    ``.svg``, ``.pdf``)."""
    fig = plot_metric(df, column, None, title, axes, ylabel, ylim, percent)
    for p in paths:  # atomic: no partial image on a full disk (io.files)
        fmt = Path(p).suffix[1:] or "png"

        def save(f: Path, fmt: str = fmt) -> None:
            fig.savefig(f, format=fmt)

        write_output(Path(p), save)
    return list(paths)


def plot_sweep(
    df: pd.DataFrame,
    out_dir: Path,
    title: str = "",
    formats: Sequence[str] = ("png", "svg"),
    axes: Sequence[str] | None = None,
) -> list[Path]:
    """The three sweep plots — scaling efficiency, tokens/s per accelerator and exposed-
    communication share vs accelerators — in each of ``formats``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, (column, ylabel, ylim, percent) in SWEEP_PLOTS.items():
        paths = [out_dir / f"{stem}.{fmt}" for fmt in formats]
        written += plot_vs_devices(df, column, paths, ylabel, title, axes, ylim, percent)
    return written


#: The headline plot's panels: column, y label, log y axis
HEADLINE_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("scaling_efficiency", "scaling efficiency (per-device throughput / 1 node)", False),
    ("tokens_per_s_per_device", "tokens/s per accelerator (log)", True),
)


def plot_headline(
    df: pd.DataFrame, path: Path, title: str = "", branches: pd.DataFrame | None = None
) -> Path:
    """The main plot of ``scaling run``: scaling efficiency (left) and absolute tokens/s per
    accelerator on a log axis (right; efficiency alone hides where each system starts) vs
    accelerators (nodes on the top axis), one colour per (system, strategy), the nominal run a
    solid line. With ``branches`` (:func:`scaling.sweep.branches.branch_table`): per series and
    branch, the 5-95 % band and the median (dashed; a split series' other branches hatched),
    the nominal line labelled with the branch it belongs to. Lines and bands join neighbouring
    simulated points only (:func:`draw_simulated`). Written to ``path`` (format from the
    suffix)."""
    ok = _ok_rows(df)
    fig = Figure(figsize=(13, 4.8), dpi=110)
    axes = fig.subplots(1, 2)
    keys = ["system", "strategy"]
    series = list(dict.fromkeys(ok[keys].itertuples(index=False, name=None)))
    cmap = colormaps["tab10" if len(series) <= 10 else "tab20"]
    hatches = ("", "//", "xx", "..", "\\\\")
    for ax, (column, ylabel, log) in zip(axes, HEADLINE_PANELS, strict=True):
        gaps = False
        for k, (system, strat) in enumerate(series):
            c = cmap(k % cmap.N)
            g = ok[(ok["system"] == system) & (ok["strategy"] == strat)].sort_values("nodes")
            per_node = int(g["devices"].iloc[0] // g["nodes"].iloc[0])
            label = f"{system} ({strat})"
            b = None
            if branches is not None and len(branches):
                sel = (
                    (branches["system"] == system)
                    & (branches["strategy"] == strat)
                    & (branches["metric"] == column)
                )
                b = branches[sel]
            if b is not None and len(b):
                split = bool(b["split"].any())
                names = list(dict.fromkeys(b.sort_values("has_nominal", ascending=False)["branch"]))
                for j, name in enumerate(names):
                    r = b[b["branch"] == name].sort_values("nodes")
                    r = r[r["median"].notna()]
                    if r.empty:
                        continue
                    who = r["assumption"].iloc[0].split(": ", 1)[-1]
                    gaps |= draw_simulated(
                        ax, r["nodes"] * per_node, r["median"], c,
                        f"{system} ({strat}) {who} = {name}: median, 5-95 %" if split else None,
                        lo=r["p5"], hi=r["p95"], linestyle="--", marker="",
                        hatch=hatches[j % len(hatches)], band_alpha=0.18,
                    )  # fmt: skip
                if split:
                    nom = b[b["has_nominal"]]["branch"].iloc[0]
                    label += f": nominal run (branch {nom})"
            gaps |= draw_simulated(ax, g["devices"], g[column], c, label)
        if gaps:
            ax.plot([], [], color="gray", linestyle=":", linewidth=0.8, label=GAP_LABEL)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("accelerators")
        nodes_axis(ax, per_node_of(ok))
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1.05)
        ax.grid(True, which="both", alpha=0.3)
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    handles, labels = list(seen.values()), list(seen)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="medium")
    bottom = min(0.45, 0.06 + 0.035 * ((len(labels) + 1) // 2))
    fig.tight_layout(rect=(0, bottom, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
