"""The answer with its shape: when a structural alternative splits an uncertain result, one
branch per outcome instead of one median across modes.

A structural assumption (``alternatives`` of a topology or library file: CNCL ring-only vs ring
and tree, one or two devices per MLU370-X8 card) is a discrete input; each sample of
``scaling run --uncertainty`` drew one option of it. For a series (system, strategy, model) and a
metric, the samples are grouped by the option they drew, per alternatives input:

1. per point (node count) and option, the central 90 % interval of the metric over the option's
   samples that ran;
2. options whose intervals overlap are one branch (transitively: sorted by their 5th percentile,
   an option joins the branch before it when its p5 is at most that branch's highest p95); an
   option none of whose samples ran (all refused) is a branch of its own, but never makes a split
   by itself;
3. the input *splits* a point when it has two or more branches there; the deciding input of the
   series is the one that splits the most points (ties: the larger share of the metric's variance
   between its branches at the largest split point), its branches are the grouping at the largest
   point it splits, and every point of the series is reported per those branches, with ``split``
   saying whether their intervals are disjoint at that point.

No input splits a series: one branch, ``all``, over every sample (no split, the groups overlap).
The split is a statement about the samples drawn: with few samples per option an interval is
wide or degenerate (one sample: a point), so a split with ``n`` < 3 in a branch is weak evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from scaling.io.results import KEY_COLUMNS

#: interval reported per branch: the central 90 % of its samples
P_LO, P_HI = 5.0, 95.0
#: the branch name of a result no alternative splits
ALL = "all"
#: a series: the point keys without the node count
SERIES = tuple(k for k in KEY_COLUMNS if k != "nodes")


@dataclass(frozen=True)
class AlternativeColumn:
    """One structural-alternatives input as the samples table holds it.

    Attributes:
        system: the runs' ``system`` value (the system's name in its file) it belongs to.
        label: its column in the samples table (``mlu370-x8: cncl.alternatives``), the name the
            reports give the deciding assumption.
        options: ``("nominal", name, ...)``.
    """

    system: str
    label: str
    options: tuple[str, ...]


def _interval(x: np.ndarray) -> tuple[float, float, float]:
    """(median, p5, p95) of the finite values of ``x``; NaNs if none."""
    x = x[np.isfinite(x)]
    if not len(x):
        return (float("nan"),) * 3
    return (
        float(np.median(x)),
        float(np.percentile(x, P_LO)),
        float(np.percentile(x, P_HI)),
    )


def cluster_options(values: dict[str, np.ndarray]) -> list[tuple[str, ...]]:
    """Group options whose 5-95 % intervals overlap (transitively); an option without a finite
    value (every sample refused) is a group of its own, last. Options with no sample at all are
    left out. Groups keep the order of ``values`` inside, and are ordered by their median."""
    spans = []
    empty = []
    for opt, x in values.items():
        x = np.asarray(x, dtype=float)
        if not len(x):
            continue
        med, lo, hi = _interval(x)
        if np.isnan(med):
            empty.append((opt,))
        else:
            spans.append((lo, hi, opt))
    spans.sort()
    groups: list[list[str]] = []
    top = -np.inf
    for lo, hi, opt in spans:
        if groups and lo <= top:
            groups[-1].append(opt)
            top = max(top, hi)
        else:
            groups.append([opt])
            top = hi
    order = list(values)
    return [tuple(sorted(g, key=order.index)) for g in groups] + empty


def _disjoint(values: dict[str, np.ndarray], groups: Sequence[tuple[str, ...]]) -> bool:
    """Whether the groups' 5-95 % intervals (over their options' pooled values) are pairwise
    disjoint, counting only groups with a finite value; at least two such groups."""
    spans = []
    for g in groups:
        x = np.concatenate([np.asarray(values.get(o, []), dtype=float) for o in g] or [np.empty(0)])
        _, lo, hi = _interval(x)
        if np.isfinite(lo):
            spans.append((lo, hi))
    spans.sort()
    return len(spans) > 1 and all(b[0] > a[1] for a, b in pairwise(spans))


def _between_share(values: dict[str, np.ndarray], groups: Sequence[tuple[str, ...]]) -> float:
    """Share of the variance of the finite values that lies between the groups (0 … 1)."""
    parts = [np.concatenate([np.asarray(values[o], dtype=float) for o in g]) for g in groups]
    parts = [p[np.isfinite(p)] for p in parts]
    parts = [p for p in parts if len(p)]
    if len(parts) < 2:
        return 0.0
    allx = np.concatenate(parts)
    total = float(np.sum((allx - allx.mean()) ** 2))
    within = sum(float(np.sum((p - p.mean()) ** 2)) for p in parts)
    return 1.0 - within / total if total > 0 else 0.0


def _by_option(
    grp: pd.DataFrame, drawn: pd.Series, metric: str, options: Iterable[str]
) -> dict[str, np.ndarray]:
    """Per option: the metric of the point's samples that drew it (NaN where refused)."""
    opt = grp["sample"].map(drawn)
    x = grp[metric].where(grp["status"] == "ok").to_numpy(dtype=float)
    return {o: x[(opt == o).to_numpy()] for o in options}


def _decide(
    series: pd.DataFrame, samples: pd.DataFrame, metric: str, alts: Sequence[AlternativeColumn]
) -> tuple[AlternativeColumn, list[tuple[str, ...]]] | None:
    """The deciding alternatives input of one series and its branches, or None (no split)."""
    best: tuple[tuple[int, float], AlternativeColumn, list[tuple[str, ...]]] | None = None
    by_sample = samples.set_index("sample") if alts else samples  # once, not per input
    for alt in alts:
        drawn = by_sample[alt.label]
        split_at: list[tuple[int, list[tuple[str, ...]], float]] = []
        for nodes, grp in series.groupby("nodes"):
            values = _by_option(grp, drawn, metric, alt.options)
            groups = cluster_options(values)
            finite = [g for g in groups if any(np.isfinite(values[o]).any() for o in g)]
            if len(finite) > 1:
                split_at.append((int(nodes), groups, _between_share(values, groups)))
        if not split_at:
            continue
        nodes, groups, share = max(split_at, key=lambda t: t[0])
        groups = sorted(groups, key=lambda g: "nominal" not in g)  # the plain run's branch first
        score = (len(split_at), share)
        if best is None or score > best[0]:
            best = (score, alt, groups)
    return None if best is None else (best[1], best[2])


def branch_table(
    runs: pd.DataFrame,
    samples: pd.DataFrame,
    alts: Sequence[AlternativeColumn],
    metrics: Sequence[str],
    nominal: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per point (:data:`~scaling.io.results.KEY_COLUMNS`), metric and branch: ``assumption``
    (the deciding input's label, ``""`` for no split), ``branch`` (its options joined by ``" / "``;
    :data:`ALL` for no split), ``has_nominal`` (the branch holds the nominal option, i.e. the
    plain run's structure), ``split`` (the branches' intervals are disjoint at this point),
    ``nominal`` (the plain run's value, on every row), ``median``, ``p5``, ``p95``, ``ok`` and
    ``refused`` sample counts, ``share`` (the branch's fraction of the samples)."""
    nom: dict[tuple, pd.Series] = {}
    if nominal is not None and len(nominal):
        nom = {tuple(r[k] for k in KEY_COLUMNS): r for _, r in nominal.iterrows()}
    rows = []
    by_sample = samples.set_index("sample")
    for key, series in runs.groupby(list(SERIES), sort=False):
        ident = dict(zip(SERIES, key, strict=True))
        mine = [a for a in alts if a.system == ident["system"]]
        for m in metrics:
            if m not in series:
                continue
            found = _decide(series, samples, m, mine)
            for nodes, grp in series.groupby("nodes", sort=True):
                point = {**ident, "nodes": nodes}
                n0 = nom.get(tuple(point[k] for k in KEY_COLUMNS))
                base = {
                    **point,
                    "metric": m,
                    "nominal": float(n0[m]) if n0 is not None and m in n0 else float("nan"),
                }
                if found is None:
                    groups: list[tuple[str, ...]] = [(ALL,)]
                    picks = [np.ones(len(grp), dtype=bool)]
                    label, split = "", False
                else:
                    alt, groups = found
                    drawn = grp["sample"].map(by_sample[alt.label])
                    picks = [drawn.isin(g).to_numpy() for g in groups]
                    values = _by_option(grp, by_sample[alt.label], m, alt.options)
                    label, split = alt.label, _disjoint(values, groups)
                ok_all = (grp["status"] == "ok").to_numpy()
                x_all = grp[m].to_numpy(dtype=float)
                for g, pick in zip(groups, picks, strict=True):
                    ok = pick & ok_all
                    med, lo, hi = _interval(x_all[ok])
                    rows.append(
                        base
                        | {
                            "assumption": label,
                            "branch": " / ".join(g),
                            "has_nominal": found is None or "nominal" in g,
                            "split": split,
                            "median": med,
                            "p5": lo,
                            "p95": hi,
                            "ok": int(ok.sum()),
                            "refused": int(pick.sum() - ok.sum()),
                            "share": float(pick.mean()) if len(pick) else float("nan"),
                        }
                    )
    return pd.DataFrame(rows)


def shaped_summary(summary: pd.DataFrame, branches: pd.DataFrame) -> pd.DataFrame:
    """The per-point summary with a split point's pooled row replaced by its branches' rows:
    columns of ``summary`` plus ``assumption``, ``branch``, ``split`` and ``has_nominal``
    (``""``, ``all``, False and True on a point no alternative splits)."""
    keys = [*KEY_COLUMNS, "metric"]
    out = summary.assign(assumption="", branch=ALL, split=False, has_nominal=True)
    if branches.empty:
        return out
    split = branches[branches["split"]]
    if split.empty:
        return out
    gone = set(split[keys].itertuples(index=False, name=None))
    keep = out[[k not in gone for k in out[keys].itertuples(index=False, name=None)]]
    cols = [c for c in out.columns if c in split.columns]
    merged = pd.concat([keep, split[cols]], ignore_index=True)
    order = {
        k: i for i, k in enumerate(dict.fromkeys(out[keys].itertuples(index=False, name=None)))
    }
    merged["_o"] = [
        order.get(k, len(order)) for k in merged[keys].itertuples(index=False, name=None)
    ]
    return merged.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)


def split_lines(branches: pd.DataFrame, metric: str = "scaling_efficiency") -> list[str]:
    """One line per series whose largest point is split on ``metric``: the deciding assumption
    and each branch's median and 5-95 % interval, the nominal run's branch named."""
    lines = []
    df = branches[branches["metric"] == metric]
    for _, s in df.groupby(list(SERIES), sort=False):
        last = s[s["nodes"] == s["nodes"].max()]
        if not last["split"].any():
            continue
        r0 = last.iloc[0]
        parts = []
        for r in last.itertuples():
            val = (
                f"{r.median:.3g} [{r.p5:.3g}, {r.p95:.3g}]"
                if np.isfinite(r.median)
                else "refused in every sample"
            )
            tag = " (the nominal run's branch)" if r.has_nominal else ""
            parts.append(f"{r.branch}{tag}: {val}, {r.ok} samples")
        lines.append(
            f"{r0['system']} {r0['strategy']} at {r0['nodes']} nodes: {metric.replace('_', ' ')} "
            f"splits on {r0['assumption']} — " + "; ".join(parts)
        )
    return lines
