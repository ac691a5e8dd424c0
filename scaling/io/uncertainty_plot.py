"""Plots of the uncertainty and sensitivity results: metric curves with 5-95 % bands, and a
tornado chart of one-at-a-time swings (matplotlib's object API: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from scaling.io.files import atomic_write
from scaling.io.plots import GAP_LABEL, draw_simulated, nodes_axis


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path


def plot_bands(
    summary: pd.DataFrame,
    path: Path,
    title: str,
    metric: str = "scaling_efficiency",
    label: str = "scaling efficiency (per-device throughput / 1 node)",
    per_node: Mapping[str, int] | None = None,
) -> Path:
    """One panel per strategy: per system and branch (``summary`` with ``branch`` /
    ``assumption`` / ``has_nominal`` / ``split`` columns, :func:`scaling.sweep.branches.
    branch_table`; without them, one branch), the median of ``metric`` (solid for the branch
    holding the nominal structure, dashed for the others), its 5-95 % band (shaded, and an
    error bar at each sampled point; other branches hatched) and the nominal inputs' value
    (dash-dot), joined between neighbouring sampled points only (a wider gap is dotted:
    nothing was sampled between; :func:`scaling.io.plots.draw_simulated`). The x axis is
    accelerators as in the main plot when ``per_node`` gives each system's accelerators per
    node (nodes on the top axis where they agree), else nodes (log2 axis); written to ``path``
    (PNG)."""
    df = summary[summary["metric"] == metric]
    if "branch" not in df:
        df = df.assign(branch="all", assumption="", has_nominal=True, split=False)
    strategies = list(dict.fromkeys(df["strategy"]))
    fig = Figure(figsize=(6.5 * max(1, len(strategies)), 4.8), dpi=110)
    axes = fig.subplots(1, max(1, len(strategies)), squeeze=False)[0]
    systems = list(dict.fromkeys(df["system"]))
    colors = colormaps["tab10"]
    hatches = ("", "//", "xx", "..")
    scale = {s: (per_node or {}).get(s, 1) for s in systems}
    on_devices = per_node is not None and all(s in per_node for s in systems)
    for ax, strat in zip(axes, strategies, strict=False):
        gaps = False
        for k, system in enumerate(systems):
            s = df[(df["strategy"] == strat) & (df["system"] == system)]
            if s.empty:
                continue
            c = colors(k % 10)
            split = bool(s["split"].any())
            names = list(dict.fromkeys(s.sort_values("has_nominal", ascending=False)["branch"]))
            for j, name in enumerate(names):
                g = s[s["branch"] == name].sort_values("nodes")
                g = g[g["median"].notna()]
                if g.empty:
                    continue
                who = g["assumption"].iloc[0].split(": ", 1)[-1]
                tag = f" {who} = {name}" if split else ""
                gaps |= draw_simulated(
                    ax, g["nodes"] * scale[system], g["median"], c, f"{system}{tag} median",
                    lo=g["p5"], hi=g["p95"],
                    linestyle="-" if bool(g["has_nominal"].iloc[0]) else "--",
                    hatch=hatches[j % len(hatches)], band_alpha=0.22,
                )  # fmt: skip
            g = s[s["has_nominal"]].drop_duplicates("nodes").sort_values("nodes")
            g = g[g["nominal"].notna()]
            if len(g):
                gaps |= draw_simulated(
                    ax, g["nodes"] * scale[system], g["nominal"], c, f"{system} nominal",
                    linestyle="-.", marker="x",
                )  # fmt: skip
        if gaps:
            ax.plot([], [], color="gray", linestyle=":", linewidth=0.8, label=GAP_LABEL)
        ax.set_xscale("log", base=2)
        if on_devices:
            ax.set_xlabel("accelerators")
            shared = set(scale.values())
            nodes_axis(ax, shared.pop() if len(shared) == 1 else None)
        else:
            ax.set_xlabel("nodes")
        ax.set_ylabel(label)
        ax.set_title(f"{strat}: median, 5-95 % band per branch", fontsize="medium")
        if metric == "scaling_efficiency":
            ax.set_ylim(0, 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)


#: bar ends that agree to this relative tolerance count as the same value
SAME_VALUE_RTOL = 1e-4


def shared_values(
    values: Sequence[float], owners: Sequence[object], nominal: float, least: int = 2
) -> set[int]:
    """Indices of ``values`` (bar ends; ``owners[i]`` the input of each) that land on the same
    value as ends of at least ``least`` different inputs, away from ``nominal``: on the flow
    network a discrete switch — an ECMP hash collision appearing or vanishing, the tuner
    changing algorithm — gives every input that flips it the same result, so those bars measure
    the switch, not the inputs' own effect (issue 30: three inputs at 0.3788)."""
    v = np.asarray(values, dtype=float)
    tol = SAME_VALUE_RTOL * max(abs(nominal), 1e-12)
    out: set[int] = set()
    for x in v:
        if not np.isfinite(x) or abs(x - nominal) <= tol:
            continue
        same = np.flatnonzero(np.abs(v - x) <= tol)
        if len({owners[int(j)] for j in same}) >= least:
            out.update(int(j) for j in same)
    return out


def plot_tornado(oat: pd.DataFrame, path: Path, title: str, top: int = 12) -> Path:
    """One panel per (system, strategy): the ``top`` inputs by swing, a bar from the metric at
    the input's low to the metric at its high (an alternative: nominal to its farthest
    option), around the nominal value (vertical line); bars of different inputs ending on the
    same value (:func:`shared_values`) are hatched, and the panel says why: the inputs flip
    one discrete switch of the network (an ECMP collision, an algorithm choice) rather than
    move the metric by their own size. Written to ``path`` (PNG)."""
    groups = list(oat.groupby(["system", "strategy"], sort=False))
    fig = Figure(figsize=(7.5, 0.35 * top * len(groups) + 1.2 * len(groups)), dpi=110)
    # one metric in every panel: a shared x axis keeps the swings comparable (issue 30: panels
    # scaled 0.003 and 0.7 wide looked alike)
    axes = fig.subplots(max(1, len(groups)), 1, squeeze=False, sharex=True)[:, 0]
    for ax, ((system, strat), g) in zip(axes, groups, strict=False):
        g = g.reindex(g["swing"].abs().sort_values(ascending=False).index).head(top)[::-1]
        m0 = float(g["at_nominal"].iloc[0]) if len(g) else 0.0
        ys = range(len(g))
        lo = g["at_low"].to_numpy(dtype=float)
        hi = g["at_high"].to_numpy(dtype=float)
        bars_hi = ax.barh(ys, hi - m0, left=m0, color="tab:blue", label="input at high (alt.: max)")
        bars_lo = ax.barh(
            ys, lo - m0, left=m0, color="tab:orange", label="input at low (alt.: min)"
        )
        ax.axvline(m0, color="black", linewidth=0.8)
        n = len(g)
        # ends: hi of each input, then lo of each; only ends that matter at this panel's scale
        # (5 % of its widest swing: compute inputs that set one product also coincide)
        ends = [*hi, *lo]
        floor = 0.05 * float(np.nanmax(np.abs(np.array(ends) - m0))) if n else 0.0
        shared = {
            i for i in shared_values(ends, [*range(n), *range(n)], m0) if abs(ends[i] - m0) >= floor
        }
        handles, _ = ax.get_legend_handles_labels()
        for i in shared:
            bar = bars_hi[i] if i < n else bars_lo[i - n]
            bar.set_hatch("////")
            bar.set_edgecolor("black")
        if shared:
            same = sorted({round(float(ends[i]), 4) for i in shared})
            handles.append(
                Patch(
                    facecolor="white", edgecolor="black", hatch="////",
                    label="hatched: inputs landing on one value ("
                    + ", ".join(f"{v:g}" for v in same)
                    + "): one switch they all flip\n(an ECMP collision, the tuner's algorithm),"
                    " not each input's own effect",
                )
            )  # fmt: skip
        names = [
            s.split(": ", 1)[-1] + (f" ({lo_v})" if isinstance(lo_v, str) and hi_v == "" else "")
            for s, lo_v, hi_v in zip(g["input"], g["low_value"], g["high_value"], strict=True)
        ]
        ax.set_yticks(list(ys), names, fontsize="x-small")
        ax.set_title(
            f"{system} {strat}: {g['metric'].iloc[0]} (nominal {m0:.3g})", fontsize="small"
        )
        ax.legend(handles=handles, fontsize="xx-small", loc="best")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)
