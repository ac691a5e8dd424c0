"""Physical sanity of scaling curves, with the scenario-specific parts declared as data.

The generic rules hold for any weak-scaling curve (system, model, strategy) at a fixed per-device
batch: scaling efficiency is finite and > 0, at most 1, and does not rise with nodes. What a
particular set of curves may deviate from that, and what it must show, is declared in a YAML file
(``configs/golden/invariants.yaml`` for the golden set)::

    superlinear_allowance:        # strategy kind (or full label) -> how far efficiency may
      fsdp:                       # exceed 1, and rise between node counts
        value: 0.02
        reason: the sharded optimizer step shrinks as 1/p ...
    slower_than:                  # in any table holding both: the first system's efficiency
      - slower: mlu370-x8         # lies below the second's at the largest node count they
        faster: dgx-a100          # share, for every strategy and model
        reason: the seed scenario ...

Every input error is a :class:`~scaling.io.errors.ConfigError` naming file, line and field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from scaling.io.errors import read_yaml, validate

#: Float slack of "≤ 1 and non-increasing" for a strategy with no declared allowance: efficiency
#: is a ratio of two simulated rates, so equal rates may differ in the last bits.
FLOAT_SLACK = 1e-9

#: The invariants file beside the golden configs (not itself a golden experiment).
INVARIANTS_FILE = "invariants.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Allowance(_Strict):
    value: Annotated[float, Field(ge=0, lt=1)]
    reason: str = Field(min_length=1)


class _SlowerThan(_Strict):
    slower: str = Field(min_length=1)
    faster: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class _InvariantsFile(_Strict):
    superlinear_allowance: dict[str, _Allowance] = {}
    slower_than: list[_SlowerThan] = []


@dataclass(frozen=True)
class Invariants:
    """What curves must satisfy beyond the generic rules (the default: nothing beyond them).

    Attributes:
        superlinear_allowance: strategy kind (the label up to its first ``-``: ``fsdp``) or full
            label → how far scaling efficiency may exceed 1 and rise between node counts
            (a fraction); any other strategy gets :data:`FLOAT_SLACK`.
        slower_than: (slower, faster) system pairs: in a table holding both, the first one's
            efficiency lies below the second's at the largest node count they share.
        source: where these came from (named in messages).
    """

    superlinear_allowance: Mapping[str, float] = field(default_factory=dict)
    slower_than: tuple[tuple[str, str], ...] = ()
    source: str = "generic rules"

    def allowance(self, strategy: str) -> float:
        """How far ``strategy``'s efficiency may exceed 1 (and rise): its declared allowance
        (full label first, then its kind), else :data:`FLOAT_SLACK`."""
        a = self.superlinear_allowance
        return a.get(strategy, a.get(strategy.split("-", 1)[0], FLOAT_SLACK))


def load_invariants(path: str | Path) -> Invariants:
    """Read an invariants file (see the module doc)."""
    p = Path(path)
    data, lines = read_yaml(p, "invariants file")
    doc: _InvariantsFile = validate(_InvariantsFile, data, str(p), lines)
    return Invariants(
        {k: a.value for k, a in doc.superlinear_allowance.items()},
        tuple((s.slower, s.faster) for s in doc.slower_than),
        str(p),
    )


def invariants_for(config_dir: str | Path) -> Invariants:
    """The invariants declared beside a folder of configs (its :data:`INVARIANTS_FILE`), or the
    generic rules alone when it has none."""
    p = Path(config_dir) / INVARIANTS_FILE
    return load_invariants(p) if p.is_file() else Invariants()


def check_invariants(table: pd.DataFrame, invariants: Invariants | None = None) -> list[str]:
    """Check every curve of ``table``; returns one message per violation (empty: all hold).

    Per curve (system, model, strategy), weak scaling at a fixed per-device batch:

    * scaling efficiency is finite and > 0;
    * efficiency ≤ 1 + allowance, and no point exceeds an earlier (smaller-N) point by more than
      the allowance — the strategy's declared super-linear allowance, else float slack;
    * for each declared (slower, faster) pair present in the table, the first system's
      efficiency lies below the second's at the largest node count both ran, per strategy.
    """
    inv = invariants or Invariants()
    out: list[str] = []
    if table.empty:
        return out
    need = ["system", "model", "strategy", "nodes", "scaling_efficiency"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        return [f"table lacks column(s) {', '.join(missing)}"]
    for (system, model, strategy), g in table.groupby(["system", "model", "strategy"], sort=False):
        g = g.sort_values("nodes")
        curve = f"{system} {strategy} {model}"
        eff = g["scaling_efficiency"].astype(float).to_numpy()
        nodes = g["nodes"].astype(int).to_numpy()
        if "global_batch" in g and "devices" in g:
            per_dev = (g["global_batch"] / g["devices"]).unique()
            if len(per_dev) > 1:
                out.append(
                    f"{curve}: per-device batch varies ({per_dev.tolist()}): not weak scaling"
                )
                continue
        tol = inv.allowance(str(strategy))
        declared = tol > FLOAT_SLACK
        for n, e in zip(nodes, eff, strict=True):
            if not (math.isfinite(e) and e > 0):
                out.append(f"{curve} nodes={n}: scaling efficiency {e} is not in (0, 1]")
            elif e > 1 + tol:
                what = f"1 + {tol:g} ({strategy}'s super-linear allowance)" if declared else "1"
                out.append(f"{curve} nodes={n}: scaling efficiency {e:.6f} > {what}")
        for j in range(1, len(eff)):
            i = int(np.argmin(eff[:j]))  # the lowest efficiency at fewer nodes
            if eff[j] > eff[i] + tol:
                out.append(
                    f"{curve}: scaling efficiency rises from {eff[i]:.6f} at {nodes[i]} nodes "
                    f"to {eff[j]:.6f} at {nodes[j]} nodes"
                    + (f" (more than the allowance {tol:g})" if declared else "")
                )
    for slow, fast in inv.slower_than:
        for (strategy, model), g in table.groupby(["strategy", "model"], sort=False):
            a, b = g[g["system"] == slow], g[g["system"] == fast]
            common = sorted(set(a["nodes"]) & set(b["nodes"]))
            if not common:
                continue
            n = common[-1]
            ea = float(a.loc[a["nodes"] == n, "scaling_efficiency"].iloc[0])
            eb = float(b.loc[b["nodes"] == n, "scaling_efficiency"].iloc[0])
            if not ea < eb:
                out.append(
                    f"{slow} {strategy} {model}: scaling efficiency {ea:.6f} at {n} nodes is not "
                    f"below {fast}'s {eb:.6f} (declared in {inv.source})"
                )
    return out
