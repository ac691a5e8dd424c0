"""Plots of scaling results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def plot_scaling_efficiency(df: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Scaling efficiency vs accelerators (log2 x axis), one line per system and strategy."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for (system, strategy), g in df.groupby(["system", "strategy"], sort=False):
        g = g.sort_values("devices")
        ax.plot(g["devices"], g["scaling_efficiency"], marker="o", label=f"{system} ({strategy})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("accelerators")
    ax.set_ylabel("scaling efficiency (per-device throughput / smallest run)")
    ax.set_ylim(0, 1.05)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
