"""The seed scenario's tables (shared/SEED.md) side by side with the model.

Table 1 compares two systems (the config's first two) on the article's five rows; Table 2 gives
each system's per-device training throughput relative to the first system (the A100 reference)
and whether it falls in the article's range. Targets live in ``scaling/data/seed_tables.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from scaling.io.results import format_table
from scaling.io.topology import load_system, quantities

SEED_FILE = Path(__file__).resolve().parents[1] / "data" / "seed_tables.yaml"

#: Topology fields whose confidence is reported next to a Table 2 ratio: what drives it.
DRIVERS = (
    "device.peak_TFLOPS.bf16",
    "device.matmul_efficiency",
    "device.mem_bw_GBps",
    "node.fabric.link_bw_GBps",
    "node.nics.count",
    "node.nics.rate_Gbps",
)


def seed_tables() -> dict:
    """The article's tables as data."""
    return yaml.safe_load(SEED_FILE.read_text())


def table1(df: pd.DataFrame) -> pd.DataFrame:
    """Table 1's rows for the first two systems of a results table (one strategy, one N)."""
    spec = seed_tables()["table1"]
    systems = list(dict.fromkeys(df["system"]))
    if len(systems) < 2:
        raise ValueError("Table 1 needs two systems in the config (reference first)")
    ra = df[df.system == systems[0]].iloc[-1]
    rb = df[df.system == systems[1]].iloc[-1]
    rows = []
    for r in spec["rows"]:
        a, b = float(ra[r["key"]]), float(rb[r["key"]])
        if r.get("relative"):
            a, b = 1.0, b / a
        gap = (b / a - 1) * 100
        rows.append(
            {
                "metric": r["metric"],
                f"{systems[0]} (model)": a,
                f"{systems[1]} (model)": b,
                "gap model (%)": gap,
                "A100 (article)": r["a"],
                "MLU (article)": r["b"],
                "gap article (%)": r["gap_pct"],
                "error A (%)": (a / r["a"] - 1) * 100,
                "error B (%)": (b / r["b"] - 1) * 100,
                "gap error (pp)": gap - r["gap_pct"],
            }
        )
    return pd.DataFrame(rows)


def table2(df: pd.DataFrame) -> pd.DataFrame:
    """Per-device throughput of each system relative to the first, against the article."""
    spec = seed_tables()["table2"]
    systems = list(dict.fromkeys(df["system"]))
    ref = float(df[df.system == systems[0]]["tokens_per_s_per_device"].iloc[-1])
    rows = []
    for r in spec["rows"]:
        name = r["system"]
        line = {"vendor": r["vendor"], "product": r["product"], "system": name}
        got = df[df.system == name]
        if (
            got.empty
            or "tokens_per_s_per_device" not in got
            or got["tokens_per_s_per_device"].isna().all()
        ):
            line.update(ratio=None, article=_rng(r), verdict="not run (refused or not in config)")
        else:
            ratio = float(got["tokens_per_s_per_device"].iloc[-1]) / ref
            lo, hi = r["low"], r["high"]
            verdict = "no range" if lo is None else ("inside" if lo <= ratio <= hi else "outside")
            line.update(ratio=ratio, article=_rng(r), verdict=verdict)
        line["drivers"] = _drivers(name)
        rows.append(line)
    return pd.DataFrame(rows)


def _rng(r: dict) -> str:
    return "n/a" if r["low"] is None else f"{r['low']:.0%}-{r['high']:.0%}"


def _drivers(system: str) -> str:
    try:
        loaded = load_system(system)
    except Exception:  # a system missing from the catalog: nothing to report
        return ""
    rows = {p: (v, c) for p, v, c, _s, _n in quantities(loaded.schema)}
    return "; ".join(
        f"{p.split('.')[-1]}={rows[p][0]:g} [{rows[p][1]}]" for p in DRIVERS if p in rows
    )


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"


def format_table1(t: pd.DataFrame) -> str:
    """Table 1 as text: the model's two systems, the article's values, and the errors."""
    cols = list(t.columns)
    header = ["metric", cols[1], cols[2], "gap", "A100 art.", "MLU art.", "gap art."]
    header += ["err A", "err B", "gap err"]
    rows = [
        [
            r["metric"],
            _num(r[cols[1]]),
            _num(r[cols[2]]),
            f"{r['gap model (%)']:.1f}%",
            _num(r["A100 (article)"]),
            _num(r["MLU (article)"]),
            f"{r['gap article (%)']:.1f}%",
            f"{r['error A (%)']:.1f}%",
            f"{r['error B (%)']:.1f}%",
            f"{r['gap error (pp)']:.1f}pp",
        ]
        for _, r in t.iterrows()
    ]
    title = "Seed Table 1: model vs article (errors: model / article - 1; gap error in points)"
    return title + "\n" + format_table(header, rows, align="l")


def format_table2(t: pd.DataFrame) -> str:
    """Table 2 as text: each system's throughput relative to the first, against the article."""
    rows = [
        [
            r["product"],
            "-" if pd.isna(r["ratio"]) else f"{r['ratio']:.0%}",
            r["article"],
            r["verdict"],
            r["drivers"],
        ]
        for _, r in t.iterrows()
    ]
    title = "Seed Table 2 (training performance relative to the first system):"
    header = ["product", "ratio", "article", "verdict", "drivers"]
    return title + "\n" + format_table(header, rows, align="lrlll")
