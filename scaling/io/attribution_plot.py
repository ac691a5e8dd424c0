"""Bar chart of a Shapley attribution of the throughput gap between two systems, per scale."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from scaling.io.files import write_output
from scaling.model.analysis.attribution import COMPONENTS, Attribution


def plot_attribution(results: list[Attribution], path: Path) -> Path:
    """Stacked bars: each component's share of the gap, one bar per node count."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    labels = [f"{r.nodes} node{'s' if r.nodes > 1 else ''}" for r in results]
    left_pos = [0.0] * len(results)
    left_neg = [0.0] * len(results)
    for comp in COMPONENTS:
        vals = [r.shares().get(comp, 0.0) * 100 for r in results]
        lefts = [lp if v >= 0 else ln for v, lp, ln in zip(vals, left_pos, left_neg, strict=True)]
        ax.barh(labels, vals, left=lefts, label=comp)
        for i, v in enumerate(vals):
            if v >= 0:
                left_pos[i] += v
            else:
                left_neg[i] += v
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("share of the per-device throughput gap (%)")
    r0 = results[0]
    ax.set_title(f"why {r0.b} trails {r0.a} (Shapley over swapped components)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize="small")
    fig.tight_layout()
    write_output(Path(path), lambda f: fig.savefig(f, format=Path(path).suffix[1:] or "png"))
    plt.close(fig)
    return path
