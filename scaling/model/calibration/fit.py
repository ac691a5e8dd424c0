"""Fit a library profile's free parameters to a measured collective table, with intervals, and
compare candidate profiles (algorithm sets) by how well they fit.

Least squares on log time (a relative error weighs a 10 µs row like a 100 ms one), bounded
(:mod:`scaling.model.calibration.params`), through the simulator's own collective cost
(:func:`~scaling.model.calibration.measure.predict_rows`). Intervals come from the fit's Jacobian
(Gauss-Newton covariance ``s² (JᵀJ)⁻¹``; Student-t quantile on the residual degrees of freedom).
A parameter the table cannot pin down is not fitted and not guessed: it keeps the profile's value
and is reported with the measurement that would identify it, when

* no row's predicted time moves with it (the table does not exercise it), or
* it lies along a degenerate direction of ``JᵀJ`` (two parameters trade off exactly: at one node
  count the per-call and per-step latencies add up the same way), or
* its interval reaches further than half its value either side (:data:`MAX_REL_HALF_WIDTH`).

Candidates (the nominal profile and its structural alternatives, e.g. CNCL ring-only vs with a
tree) are compared as their files state them — numbers an alternative fixes stay fixed, the others
are fitted inside the profile's plausible ranges — and ranked by AICc (Akaike with the small-sample
correction; Burnham & Anderson 2002): the residual error with a penalty per fitted parameter. The
structure the table supports is then refitted with every parameter free (:func:`calibrate`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from scaling.model.calibration.measure import Measurement, predict_rows
from scaling.model.calibration.params import Param, free_params
from scaling.model.hardware.system import SystemSpec

#: Relative timing noise assumed at least (rms of log time): nccl-tests repeats vary by a few per
#: cent run to run, so a table fitted to better than this is not believed tighter.
NOISE_FLOOR = 0.02
#: A parameter whose change by its scale moves no row's log time by this much is not exercised.
MIN_EFFECT = 1e-3
#: An interval half-width beyond half the value (or of the parameter's scale) is no identification:
#: a number known only to within a factor of three is still an assumption.
MAX_REL_HALF_WIDTH = 0.5
#: Eigenvalue ratio of the scaled ``JᵀJ`` below which a direction is degenerate (finite differences
#: leave exact trade-offs at ~1e-9; the weakest real direction of a useful table is ~1e-2).
DEGENERATE = 1e-6
#: Two-sided confidence of the reported intervals.
CONFIDENCE = 0.95
#: AICc lead of the best candidate over the next for the table to decide between them (a
#: difference above 6 is "strong" evidence, Burnham & Anderson 2002 §2.6).
DECISIVE_AICC = 6.0
#: The residual rms below which fits count as equally good in AICc (a noiseless synthetic table).
AIC_FLOOR = 0.002
#: Log-time rms beyond which a fit is no description of the table: timing noise is a few per cent
#: and the model's validation error on published curves at most ~12 % (README, scaling validate);
#: a profile missing a table by more measured another system, group or unit than it was told.
MAX_RMS = 0.25
#: Function evaluations per least-squares solve (each prices every row once).
MAX_NFEV = 60


@dataclass(frozen=True)
class ParamFit:
    """A parameter after the fit.

    Attributes:
        path, unit: the library file's field and its unit.
        prior: the profile's value before the fit.
        value, low, high: the fitted value and its interval (file unit); the prior and no
            interval where not identified.
        identified: fitted from the table.
        why: where not identified: why, and what to measure.
    """

    path: str
    unit: str
    prior: float
    value: float
    low: float
    high: float
    identified: bool
    why: str = ""


@dataclass(frozen=True)
class CandidateFit:
    """One candidate profile fitted to the table.

    Attributes:
        name: the candidate (``nominal`` or a structural alternative's name).
        system: the system with the fitted library.
        params: every free parameter, fitted or not.
        rms: rms of the log-time residuals (≈ relative error).
        aicc: small-sample Akaike criterion (lower is better).
        chosen: the tuner's ``algorithm/protocol`` of each row under the fit.
        predicted_s: the fitted time of each row, s.
    """

    name: str
    system: SystemSpec
    params: tuple[ParamFit, ...]
    rms: float
    aicc: float
    chosen: tuple[str, ...]
    predicted_s: tuple[float, ...]

    @property
    def fitted(self) -> list[ParamFit]:
        """The parameters the table identified."""
        return [p for p in self.params if p.identified]


@dataclass(frozen=True)
class Calibration:
    """Every candidate fitted to one table, best (lowest AICc) first, and the final fit.

    Attributes:
        rows: the table.
        candidates: each structure as its file states it, best first.
        final: the structure the table supports (the nominal one if it does not decide),
            refitted with every parameter free: what a calibrated profile holds.
    """

    rows: tuple[Measurement, ...]
    candidates: tuple[CandidateFit, ...]
    final: CandidateFit

    @property
    def best(self) -> CandidateFit:
        """The candidate the table supports best."""
        return self.candidates[0]

    @property
    def decided(self) -> bool:
        """Whether the best candidate leads the next by :data:`DECISIVE_AICC` (always with one)."""
        if len(self.candidates) < 2:
            return True
        return self.candidates[1].aicc - self.candidates[0].aicc >= DECISIVE_AICC


def _with(system: SystemSpec, params: Sequence[Param], x: np.ndarray) -> SystemSpec:
    lib = system.library
    for p, v in zip(params, x, strict=True):
        lib = p.write(lib, float(v))
    return dataclasses.replace(system, library=lib)


def _aicc(res: np.ndarray, k: int) -> float:
    n = len(res)
    ms = max(float(np.mean(res**2)), AIC_FLOOR**2)
    return n * math.log(ms) + 2 * k + 2 * k * (k + 1) / max(n - k - 1, 1)


class _Problem:
    """Log-time residuals of a system's rows as a function of its free parameters."""

    def __init__(
        self,
        system: SystemSpec,
        rows: Sequence[Measurement],
        fixed: frozenset[str] = frozenset(),
        ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.system = system
        self.rows = rows
        self.params = [p for p in free_params(system.library) if p.path not in fixed]
        self.y = np.log([r.time_s for r in rows])
        self.prior = np.array([p.read(system.library) for p in self.params])
        self.scale = np.array([p.scale for p in self.params])
        rng = ranges or {}
        self.lo = np.array([max(p.lo, rng.get(p.path, (p.lo, p.hi))[0]) for p in self.params])
        self.hi = np.array([min(p.hi, rng.get(p.path, (p.lo, p.hi))[1]) for p in self.params])

    def predict(self, x: np.ndarray) -> list[tuple[float, str]]:
        return predict_rows(_with(self.system, self.params, x), self.rows)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        return np.log([t for t, _ in self.predict(x)]) - self.y

    def jacobian(self, x: np.ndarray, active: list[int], r0: np.ndarray) -> np.ndarray:
        """d(log time)/d(parameter / scale) by forward differences of 1 % of the scale, taken
        toward the inside of the bounds."""
        cols = []
        for i in active:
            h = 0.01 * self.scale[i]
            if x[i] + h > self.hi[i]:
                h = -h
            z = x.copy()
            z[i] += h
            cols.append((self.residuals(z) - r0) / (h / self.scale[i]))
        return np.stack(cols, axis=1) if cols else np.zeros((len(r0), 0))

    def solve(self, x: np.ndarray, active: list[int]) -> np.ndarray:
        def f(z: np.ndarray) -> np.ndarray:
            full = x.copy()
            full[active] = z
            return self.residuals(full)

        z0 = np.clip(x[active], self.lo[active], self.hi[active])
        sol = optimize.least_squares(
            f,
            z0,
            bounds=(self.lo[active], self.hi[active]),
            x_scale=self.scale[active],
            diff_step=1e-2,
            max_nfev=MAX_NFEV,
        )
        out = x.copy()
        out[active] = sol.x
        return out


def fit_candidate(
    name: str,
    system: SystemSpec,
    rows: Sequence[Measurement],
    fixed: frozenset[str] = frozenset(),
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> CandidateFit:
    """Fit ``system``'s library to ``rows``: every identifiable free parameter with its interval;
    the rest keep the profile's value, each with why and what to measure. ``fixed``: parameter
    paths held at the profile's value (not reported); ``ranges``: bounds (file unit) narrower
    than the parameters' own. Raises ``ValueError`` where the library cannot run a row's
    collective."""
    pb = _Problem(system, rows, fixed, ranges)
    n = len(rows)
    why: dict[int, str] = {}
    x = pb.prior.copy()
    r0 = pb.residuals(x)
    j0 = pb.jacobian(x, list(range(len(pb.params))), r0)
    active = []
    for i, p in enumerate(pb.params):
        if float(np.max(np.abs(j0[:, i]))) < MIN_EFFECT:
            why[i] = f"no row of this table depends on it: measure {p.hint}"
        else:
            active.append(i)
    half = np.zeros(len(pb.params))
    res = r0
    while active:
        x = pb.solve(x, active)
        res = pb.residuals(x)
        jac = pb.jacobian(x, active, res)
        jtj = jac.T @ jac
        w, v = np.linalg.eigh(jtj)
        if w[0] <= DEGENERATE * max(w[-1], 1e-300):
            # the most involved parameter of the degenerate direction goes (back to its prior)
            k = active[int(np.argmax(np.abs(v[:, 0])))]
            partners = [
                pb.params[active[j]].path
                for j in np.argsort(-np.abs(v[:, 0]))[1:3]
                if abs(v[j, 0]) > 0.1
            ]
            tied = f" (trades off with {', '.join(partners)})" if partners else ""
            why[k] = f"not identifiable from this table{tied}: measure {pb.params[k].hint}"
            active.remove(k)
            x[k] = pb.prior[k]
            continue
        dof = n - len(active)
        s2_res = float(res @ res) / dof if dof > 0 else 0.0
        if s2_res > NOISE_FLOOR**2:
            s2, q = s2_res, float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))
        else:
            s2, q = NOISE_FLOOR**2, float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
        se = np.sqrt(np.diag(np.linalg.inv(jtj)) * s2) * pb.scale[active]
        hw = q * se
        rel = hw / np.maximum(np.abs(x[active]), pb.scale[active])
        worst = int(np.argmax(rel))
        if rel[worst] > MAX_REL_HALF_WIDTH:
            k = active[worst]
            why[k] = (
                f"not identifiable from this table (interval ±{hw[worst]:.3g} {pb.params[k].unit} "
                f"around {x[k]:.3g}): measure {pb.params[k].hint}"
            )
            active.remove(k)
            x[k] = pb.prior[k]
            continue
        half[active] = hw
        break
    if not active:
        res = pb.residuals(x)
    pred = pb.predict(x)
    params = tuple(
        ParamFit(
            p.path,
            p.unit,
            float(pb.prior[i]),
            float(x[i]),
            float(max(x[i] - half[i], p.lo)) if i in active else float(pb.prior[i]),
            float(min(x[i] + half[i], p.hi)) if i in active else float(pb.prior[i]),
            i in active,
            why.get(i, ""),
        )
        for i, p in enumerate(pb.params)
    )
    return CandidateFit(
        name,
        _with(system, pb.params, x),
        params,
        float(np.sqrt(np.mean(res**2))),
        _aicc(res, len(active)),
        tuple(a for _, a in pred),
        tuple(t for t, _ in pred),
    )


def calibrate(
    rows: Sequence[Measurement],
    candidates: Mapping[str, SystemSpec],
    fixed: Mapping[str, frozenset[str]] | None = None,
    ranges: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Compare the candidate structures (nominal profile, structural alternatives) on ``rows``,
    then fit the one the table supports.

    Each structure is compared as its file states it: the numbers its alternative fixes
    (``fixed[name]``, e.g. an alternative tree's bandwidth factor) stay fixed, and the others
    are fitted inside the profile's plausible ranges (``ranges[name]``: path → (low, high),
    file unit) — a structure that matches the table only by leaving those ranges is not
    supported by it (and ``scaling calibrate --decide`` ranks measurements over the same
    ranges). The winner (or, if the table does not decide, the nominal structure) is then
    refitted with everything free and the ranges released: :attr:`Calibration.final`, what a
    written profile holds. A candidate whose library cannot run a row's collective is left out;
    ``ValueError`` if none can."""
    fixed = fixed or {}
    ranges = ranges or {}
    fits, errors = [], []
    for name, system in candidates.items():
        if progress:
            progress(name)
        try:
            fits.append(
                fit_candidate(
                    name, system, rows, fixed.get(name, frozenset()), ranges.get(name, {})
                )
            )
        except ValueError as e:
            errors.append(f"{name}: {e}")
    if not fits:
        raise ValueError("; ".join(errors))
    fits.sort(key=lambda c: c.aicc)
    cal = Calibration(tuple(rows), tuple(fits), fits[0])
    pick = cal.best if cal.decided else next((c for c in fits if c.name == "nominal"), fits[0])
    if progress:
        progress(f"{pick.name} (final, ranges released)")
    final = fit_candidate(pick.name, candidates[pick.name], rows)
    return dataclasses.replace(cal, final=final)
