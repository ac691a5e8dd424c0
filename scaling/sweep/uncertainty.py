"""Uncertainty over the catalog's assumptions: sample them, simulate, summarise; rank them.

Every ``assumption`` and ``secondary`` number of a topology or collective-library file carries a
plausible range (``low``, ``high``, ``dist``; :mod:`scaling.io.topology`), and a structural
assumption its ``alternatives``. This module turns those into *uncertain inputs* of an
experiment's systems, draws quasi-random samples of them (scrambled Sobol, or Latin hypercube
when the count is not a power of two; seeded), builds perturbed copies of the systems (the
validated documents patched and converted again: no global state, the loaded experiment is not
touched) and simulates every point of the experiment per sample on a sweep executor (in
process, a local pool or Dask). Each sample also draws its own run seed, which salts the ECMP
hash (and any jitter): the intervals include the ECMP spread.

Speed: a run without noise (no compute jitter, no variability) reaches its steady state after a
fixed number of steps. :func:`steady_plans` finds, per point, the fewest simulated steps
(``warmup_steps`` w, ``steps`` 1) whose measured step equals the configured run's to 1e-9 at
the nominal inputs; the samples then simulate that many, and :func:`run_uncertainty` checks the
shortcut again on the first sample (every point also simulated with the configured steps) and
reports the largest deviation. Points with noise simulate the configured steps.

Resume: with a ``journal`` file, the plans and every finished sample run are appended to it as
they finish (:mod:`scaling.io.journal`), and a re-run of the same experiment, seed, sample
count and code simulates only the runs it lacks, giving the same tables.

Where a structural alternative splits a result, the samples are grouped by the option they drew
and reported per branch (:mod:`scaling.sweep.branches`). The ranking of the inputs
(``scaling sensitivity``) is :mod:`scaling.sweep.sensitivity`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaling.io.config import LoadedExperiment, _with_economics
from scaling.io.errors import ConfigError
from scaling.io.journal import Journal, code_version
from scaling.io.results import KEY_COLUMNS, add_scaling_efficiency, job_identity
from scaling.io.topology import (
    LibrarySchema,
    LoadedSystem,
    SystemSchema,
    apply_alternative,
    ranged_quantities,
    to_system_spec,
)
from scaling.model.job import Job
from scaling.sweep.batch import RunMemo, run_all
from scaling.sweep.branches import P_HI, P_LO, AlternativeColumn, branch_table, shaped_summary
from scaling.sweep.executors import SweepExecutor
from scaling.sweep.qmc import latin_hypercube, sobol
from scaling.sweep.runner import OK

#: metrics summarised per point (median and central 90 %)
UNCERTAINTY_METRICS = (
    "scaling_efficiency",
    "tokens_per_s_per_device",
    "step_time_s",
    "mfu",
    "exposed_comm_share",
)
#: fields that feed only the energy and cost metrics (not step time, throughput or efficiency)
ECONOMICS_ONLY = frozenset(
    {
        "device.power_idle_W",
        "device.power_busy_W",
        "device.price_per_hour_USD",
        "node.power_overhead_W",
    }
)
#: fields that decide only whether a point fits in memory
FEASIBILITY_ONLY = frozenset({"device.mem_GB", "device.reserved_mem_GiB"})
#: the relative step-time difference below which a shorter run counts as the same steady state
STEADY_RTOL = 1e-9
#: the interval reported (P_LO-P_HI, scaling.sweep.branches): the central 90 % of the samples


@dataclass(frozen=True)
class UncertainInput:
    """One uncertain input of one system.

    Attributes:
        system: the system's name as the experiment lists it.
        doc: ``"topology"`` or ``"library"`` (the collective-library file).
        path: field path in that document (``node.nics.count``); for an alternative, the group
            name ``alternatives``.
        value: nominal value (file unit: GB/s, µs, TFLOPS, fraction, count).
        low, high: plausible bounds (file unit).
        dist: ``uniform``, ``triangular`` (mode at ``value``) or ``loguniform``.
        confidence: the number's confidence label.
        integer: a count (sampled values rounded).
        options: for a structural alternative: ``("nominal", name, ...)``; empty for a number.
    """

    system: str
    doc: str
    path: str
    value: float
    low: float
    high: float
    dist: str
    confidence: str
    integer: bool = False
    options: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``system: file-prefix path``, e.g. ``mlu370-x8: cncl.step_latency_us.network``."""
        return f"{self.system}: {self.doc_label}{self.path}"

    @property
    def doc_label(self) -> str:
        """``""`` for the topology, ``"<library>."`` for the library (set by the builder)."""
        return "" if self.doc == "topology" else f"{self.doc}."

    @property
    def is_alternative(self) -> bool:
        """A discrete choice between the nominal structure and its alternatives."""
        return bool(self.options)

    def from_unit(self, u: float) -> Any:
        """The input's value at the quantile ``u`` in [0, 1) of its distribution (for an
        alternative: the option name)."""
        u = min(max(float(u), 0.0), math.nextafter(1.0, 0.0))
        if self.options:
            return self.options[int(u * len(self.options))]
        lo, hi = self.low, self.high
        if hi <= lo:
            return self.value
        if self.dist == "uniform":
            x = lo + u * (hi - lo)
        elif self.dist == "loguniform":
            x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:  # triangular, mode at the nominal value
            c = (self.value - lo) / (hi - lo)
            x = (
                lo + math.sqrt(u * c) * (hi - lo)
                if u < c
                else hi - math.sqrt((1 - u) * (1 - c)) * (hi - lo)
            )
        x = min(max(x, lo), hi)
        return round(x) if self.integer else x


def _lib_doc(ls: LoadedSystem) -> str:
    return ls.library.name


def uncertain_inputs(
    exp: LoadedExperiment, systems: Sequence[str] | None = None
) -> list[UncertainInput]:
    """The uncertain inputs of the experiment's systems (or of ``systems``): every ranged number
    with ``low < high`` (a degenerate range is a number the file says not to vary) and every
    group of structural alternatives. The library's inputs are per system (two systems sharing
    a library sample it independently)."""
    out: list[UncertainInput] = []
    names = list(systems) if systems is not None else list(dict.fromkeys(exp.config.systems))
    for name in names:
        ls = exp.systems[name]
        for doc, tag in ((ls.schema, "topology"), (ls.library, _lib_doc(ls))):
            for path, q in ranged_quantities(doc):
                assert q.low is not None and q.high is not None  # ranged
                if q.high <= q.low:
                    continue
                value = q.value  # type: ignore[attr-defined]
                out.append(
                    UncertainInput(
                        system=name,
                        doc=tag,
                        path=path,
                        value=float(value),
                        low=q.low,
                        high=q.high,
                        dist=q.dist or "triangular",
                        confidence=q.confidence,
                        integer=isinstance(value, int),
                    )
                )
            alts = doc.alternatives
            if alts:
                out.append(
                    UncertainInput(
                        system=name,
                        doc=tag,
                        path="alternatives",
                        value=0.0,
                        low=0.0,
                        high=float(len(alts)),
                        dist="uniform",
                        confidence="assumption",
                        options=("nominal", *(a.name for a in alts)),
                    )
                )
    return out


_INDEX = re.compile(r"^(\w+)\[(\d+)\]$")


def _set_value(doc: dict[str, Any], path: str, value: Any) -> None:
    node: Any = doc
    for part in path.split("."):
        m = _INDEX.match(part)
        node = node[m.group(1)][int(m.group(2))] if m else node[part]
    node["value"] = value


def perturbed_system(ls: LoadedSystem, changes: dict[tuple[str, str], Any]) -> Any:
    """The :class:`~scaling.model.hardware.system.SystemSpec` of ``ls`` with ``changes``
    applied: ``(doc, path) → value`` for numbers (``doc`` ``"topology"`` or the library's
    name), ``(doc, "alternatives") → option name`` for structure. The patched documents are
    validated again (a sample outside a field's bounds is an error, not a silent clip)."""
    topo = ls.schema.model_dump(mode="json")
    lib = ls.library.model_dump(mode="json")
    docs = {"topology": topo, _lib_doc(ls): lib}
    for (doc, path), v in changes.items():
        if path != "alternatives":
            _set_value(docs[doc], path, v)
    for (doc, path), v in changes.items():
        if path == "alternatives" and v != "nominal":
            model = ls.schema if doc == "topology" else ls.library
            alt = next(a for a in model.alternatives if a.name == v)
            patched = apply_alternative(docs[doc], alt, doc)
            docs[doc].clear()
            docs[doc].update(patched)
    schema = SystemSchema.model_validate(docs["topology"])
    library = LibrarySchema.model_validate(docs[_lib_doc(ls)])
    return to_system_spec(schema, library)


def unit_design(n: int, d: int, seed: int) -> np.ndarray:
    """``n`` quasi-random points in [0, 1)^d: scrambled Sobol when ``n`` is a power of two (its
    balance properties hold then), Latin hypercube otherwise; both seeded by ``seed``: SciPy's
    ``qmc`` designs, drawn by :mod:`scaling.sweep.qmc` without importing ``scipy.stats``."""
    if n < 1:
        raise ConfigError(f"--uncertainty {n}: expected at least 1 sample")
    if d == 0:
        return np.zeros((n, 0))
    if n & (n - 1) == 0:
        return sobol(int(math.log2(n)), d, seed)
    return latin_hypercube(n, d, seed)


def run_seeds(n: int, seed: int) -> list[int]:
    """One run seed per sample (salts the ECMP hash and any jitter), from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(15,)))
    return [int(x) for x in rng.integers(0, 2**31 - 1, size=n)]


def _point_systems(exp: LoadedExperiment) -> list[str]:
    """The experiment's system name of each job of ``exp.jobs()`` (the same order)."""
    cfg = exp.config
    per = len(cfg.all_strategies()) * len(set(cfg.nodes))
    return [name for name in cfg.systems for _ in range(per)]


def _with_steps(job: Job, plan: tuple[int, int] | None) -> Job:
    if plan is None:
        return job
    w, s = plan
    return dataclasses.replace(job, sim=dataclasses.replace(job.sim, warmup_steps=w, steps=s))


def _noisy(job: Job) -> bool:
    return job.sim.compute_jitter_cv > 0 or job.sim.variability is not None


def perturbed_spec(
    exp: LoadedExperiment,
    name: str,
    changes: dict[tuple[str, str], Any],
    memo: RunMemo | None = None,
) -> Any:
    """:func:`perturbed_system` of ``exp``'s system ``name`` with ``changes`` and the
    experiment's economics; built once per distinct ``changes`` in ``memo``."""
    # the value's type is part of the key: a count 1 and a fraction 1.0 validate differently
    key = (name, tuple((k, type(v).__name__, v) for k, v in sorted(changes.items())))

    def build() -> Any:
        spec = perturbed_system(exp.systems[name], changes)
        return _with_economics(spec, exp.config.economics.get(name))

    return (memo or RunMemo()).system(key, build)


def structure_rank(inputs: Sequence[UncertainInput], values: Sequence[Any]) -> tuple[Any, ...]:
    """The values of the discrete inputs (counts, structural alternatives) among ``values``
    (one per input): what changes a cluster's structure rather than its capacities. Runs
    sorted by it follow one another per structure, so the model's per-structure caches
    (schedules, routes) are reused (issue 29)."""
    return tuple(v for inp, v in zip(inputs, values, strict=True) if inp.integer or inp.options)


def _shortest(
    executor: SweepExecutor,
    jobs: list[Job],
    nominal: list[dict[str, Any]],
    memo: RunMemo | None = None,
) -> list[tuple[int, int] | None]:
    """Per job: the shortest ``(w, 1)`` whose step time equals ``nominal``'s, or None."""
    trials: list[tuple[int, int]] = []
    for p, job in enumerate(jobs):
        total = job.sim.warmup_steps + job.sim.steps
        if not _noisy(job) and nominal[p].get("status", OK) == OK:
            trials += [(p, w) for w in (1, 2) if w + 1 < total]
    got = run_all(executor, [_with_steps(jobs[p], (w, 1)) for p, w in trials], memo=memo)
    plans: list[tuple[int, int] | None] = [None] * len(jobs)
    for (p, w), r in sorted(zip(trials, got, strict=True), key=lambda t: t[0][1]):
        if plans[p] is not None or r.get("status") != OK:
            continue
        if abs(float(r["step_time_s"]) / float(nominal[p]["step_time_s"]) - 1) <= STEADY_RTOL:
            plans[p] = (w, 1)
    return plans


def steady_plans(
    exp: LoadedExperiment,
    executor: SweepExecutor,
    nominal: list[dict[str, Any]] | None = None,
    memo: RunMemo | None = None,
) -> list[tuple[int, int] | None]:
    """Per point of ``exp.jobs()``: the shortest ``(warmup_steps, 1)`` (w = 1 or 2) whose step
    time equals the configured run's at the nominal inputs (relative 1e-9), or None (simulate
    as configured: noise, a refused point, or no shorter run matched). ``nominal``: the plain
    run's scalars per point (None: run here); ``memo``: as for :func:`~scaling.sweep.batch.run_all`."""
    jobs = exp.jobs()
    if nominal is None:
        nominal = run_all(executor, jobs, memo=memo)
    return _shortest(executor, jobs, nominal, memo)


@dataclass
class UncertaintyResult:
    """What :func:`run_uncertainty` returns.

    Attributes:
        inputs: the uncertain inputs sampled, in design-column order.
        samples: one row per sample: ``sample``, ``seed`` and each input's value (by label).
        runs: one row per (sample, point): identity, status, metrics, ``scaling_efficiency``.
        summary: one row per point and metric: nominal, median, p5, p95, samples ok/refused
            (pooled over every sample).
        branches: per point, metric and branch of the deciding structural alternative
            (:func:`scaling.sweep.branches.branch_table`; one ``all`` branch where none splits).
        shaped: ``summary`` with each split point's pooled row replaced by its branches' rows
            (:func:`scaling.sweep.branches.shaped_summary`): what the tables report.
        plans: per point, the (warmup, steps) the samples simulated (None = as configured).
        check_max_rel: the largest relative step-time deviation of the shortened runs from the
            configured ones on sample 0 (NaN when no point was shortened).
    """

    inputs: list[UncertainInput]
    samples: pd.DataFrame
    runs: pd.DataFrame
    summary: pd.DataFrame
    branches: pd.DataFrame = field(default_factory=pd.DataFrame)
    shaped: pd.DataFrame = field(default_factory=pd.DataFrame)
    plans: list[tuple[int, int] | None] = field(default_factory=list)
    check_max_rel: float = float("nan")


def sample_jobs(
    exp: LoadedExperiment,
    inputs: list[UncertainInput],
    design: np.ndarray,
    seeds: list[int],
    plans: list[tuple[int, int] | None] | None = None,
) -> tuple[list[Job], pd.DataFrame]:
    """Every point of ``exp`` per row of ``design`` (unit quantiles, one column per input),
    each with its sample's perturbed system and run seed; and the table of sampled values."""
    base = exp.jobs()
    names = _point_systems(exp)
    plans = plans or [None] * len(base)
    jobs: list[Job] = []
    rows = []
    for i, u in enumerate(design):
        values = {inp.label: inp.from_unit(u[k]) for k, inp in enumerate(inputs)}
        rows.append({"sample": i, "seed": seeds[i], **values})
        specs = {}
        for name in dict.fromkeys(names):
            changes = {
                (inp.doc, inp.path): values[inp.label] for inp in inputs if inp.system == name
            }
            spec = perturbed_system(exp.systems[name], changes)
            specs[name] = _with_economics(spec, exp.config.economics.get(name))
        for p, job in enumerate(base):
            j = dataclasses.replace(
                job, system=specs[names[p]], sim=dataclasses.replace(job.sim, seed=seeds[i])
            )
            jobs.append(_with_steps(j, plans[p]))
    return jobs, pd.DataFrame(rows)


def _table(base: list[Job], results: list[dict[str, Any]], n: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        for p, job in enumerate(base):
            r = results[i * len(base) + p]
            rows.append({"sample": i, **job_identity(job), **r})
    df = pd.DataFrame(rows)
    if "tokens_per_s_per_device" not in df:
        df["tokens_per_s_per_device"] = float("nan")
    return add_scaling_efficiency(df, by=("sample",))


def summarize(runs: pd.DataFrame, nominal: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per point (system, strategy, model, nodes) and metric: ``nominal`` (from ``nominal``'s
    table where given), ``median``, ``p5``, ``p95``, ``ok`` and ``refused`` sample counts."""
    keys = list(KEY_COLUMNS)
    nom: dict[tuple, pd.Series] = {}
    if nominal is not None and len(nominal):
        nom = {tuple(r[k] for k in keys): r for _, r in nominal.iterrows()}
    out = []
    for key, grp in runs.groupby(keys, sort=False):
        ok = grp[grp["status"] == OK]
        for m in UNCERTAINTY_METRICS:
            if m not in grp:
                continue
            x = ok[m].to_numpy(dtype=float)
            x = x[np.isfinite(x)]
            row = dict(zip(keys, key, strict=True))
            n0 = nom.get(tuple(key))
            row |= {
                "metric": m,
                "nominal": float(n0[m]) if n0 is not None and m in n0 else float("nan"),
                "median": float(np.median(x)) if len(x) else float("nan"),
                "p5": float(np.percentile(x, P_LO)) if len(x) else float("nan"),
                "p95": float(np.percentile(x, P_HI)) if len(x) else float("nan"),
                "ok": len(ok),
                "refused": int(len(grp) - len(ok)),
            }
            out.append(row)
    return pd.DataFrame(out)


#: the journal of finished sample runs in an output folder (:func:`run_uncertainty`)
JOURNAL_FILE = "uncertainty_journal.jsonl"


def journal_header(exp: LoadedExperiment, n: int, seed: int) -> dict[str, Any]:
    """What a journal's sample runs depend on: the experiment's config hash, its systems'
    content hashes (ranges and alternatives included, which the config hash leaves out), the
    seed, the sample count (the design depends on it) and the code version."""
    return {
        "kind": "uncertainty",
        "config_hash": exp.config_hash(),
        "systems": {name: ls.content_hash for name, ls in exp.systems.items()},
        "seed": seed,
        "samples": n,
        "code": code_version(),
    }


def run_uncertainty(
    exp: LoadedExperiment,
    n: int,
    seed: int,
    executor: SweepExecutor,
    nominal: list[dict[str, Any]] | None = None,
    nominal_table: pd.DataFrame | None = None,
    on_done: Callable[[], None] | None = None,
    journal: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> UncertaintyResult:
    """``n`` samples of the uncertain inputs of ``exp``'s systems, every point simulated per
    sample on ``executor``; deterministic for a given ``seed``. ``nominal``: the plain run's
    scalars per point of ``exp.jobs()`` (saves re-running them); ``on_done``: called after each
    simulated or reused run (progress).

    ``journal``: a JSONL file (:class:`~scaling.io.journal.Journal`; the caller holds its
    folder's lock) where the steady-state plans and every finished sample run are appended as
    they finish; a re-run with the same experiment, ``n``, ``seed`` and code reuses them and
    simulates only the rest, with the same tables as an uninterrupted run. One from another
    experiment, seed, sample count or code version is not reused (``note`` says why)."""
    inputs = uncertain_inputs(exp)
    base = exp.jobs()
    memo = RunMemo()  # no job simulated twice in the command
    store = Journal(journal, journal_header(exp, n, seed), note, allow_nan=True)
    if store.reused:
        (note or (lambda m: None))(f"{journal}: resuming: {store.reused} finished unit(s) reused")
    if "plans" in store.done:
        plans = [
            None if p is None else (int(p[0]), int(p[1])) for p in store.done["plans"]["plans"]
        ]
    else:
        if nominal is None:
            nominal = run_all(executor, base, memo=memo)
        plans = steady_plans(exp, executor, nominal, memo)
        store.put("plans", {"plans": [None if p is None else list(p) for p in plans]})
    design = unit_design(n, len(inputs), seed)
    seeds = run_seeds(n, seed)
    jobs, samples = sample_jobs(exp, inputs, design, seeds, plans)
    # the shortcut checked again away from the nominal inputs: sample 0 as configured
    check = [p for p, plan in enumerate(plans) if plan is not None]
    full0 = [dataclasses.replace(jobs[p], sim=base[p].sim) for p in check]
    full0 = [dataclasses.replace(j, sim=dataclasses.replace(j.sim, seed=seeds[0])) for j in full0]
    keys = [f"sample {i} point {p}" for i in range(n) for p in range(len(base))]
    keys += [f"check point {p}" for p in check]
    todo = [i for i, k in enumerate(keys) if k not in store.done]
    for _ in range(len(keys) - len(todo)):
        if on_done is not None:
            on_done()

    def put(t: int, value: dict[str, Any]) -> dict[str, Any]:
        return store.put(keys[todo[t]], {"result": value})

    every = jobs + full0
    # per run: its system's discrete draws, then its sample (a sample's runs share routes)
    names = _point_systems(exp)
    own = {name: [k for k, inp in enumerate(inputs) if inp.system == name] for name in set(names)}

    def rank(i: int, p: int) -> tuple[Any, ...]:
        ks = own[names[p]]
        draws = [inputs[k].from_unit(design[i][k]) for k in ks]
        return (structure_rank([inputs[k] for k in ks], draws), i)

    ranks = [rank(i, p) for i in range(n) for p in range(len(base))]
    ranks += [rank(0, p) for p in check]
    run_all(executor, [every[i] for i in todo], on_done, put, memo, [ranks[i] for i in todo])
    results = [store.done[k]["result"] for k in keys]
    got, ref = results[: len(jobs)], results[len(jobs) :]
    dev = [
        abs(float(got[p]["step_time_s"]) / float(r["step_time_s"]) - 1)
        for p, r in zip(check, ref, strict=True)
        if r.get("status") == OK and got[p].get("status") == OK
    ]
    runs = _table(base, got, n)
    summary = summarize(runs, nominal_table)
    alts = [
        AlternativeColumn(exp.systems[i.system].spec.name, i.label, i.options)
        for i in inputs
        if i.is_alternative
    ]
    branches = branch_table(runs, samples, alts, UNCERTAINTY_METRICS, nominal_table)
    return UncertaintyResult(
        inputs,
        samples,
        runs,
        summary,
        branches,
        shaped_summary(summary, branches),
        plans,
        max(dev) if dev else float("nan"),
    )


def format_summary(summary: pd.DataFrame, metrics: Sequence[str] | None = None) -> str:
    """The summary as a fixed-width text table: per point, nominal, median and [p5, p95]; a
    point a structural alternative splits (``summary`` from :func:`shaped_summary`) gives a
    line naming the deciding assumption and one line per branch instead of a pooled median."""
    metrics = metrics or ("scaling_efficiency", "tokens_per_s_per_device")
    lines = [
        f"{'system':<12} {'strategy':<16} {'nodes':>5}  {'metric':<24} {'nominal':>10} "
        f"{'median':>10}  {'5-95 % interval':>23}  {'n':>4}"
    ]
    said: set[tuple] = set()
    for d in summary[summary["metric"].isin(metrics)].to_dict("records"):
        head = f"{d['system']:<12} {d['strategy']:<16} {d['nodes']:>5}  {d['metric']:<24} "
        tail = f"  {d['ok']:>4}" + (f" ({d['refused']} refused)" if d["refused"] else "")
        if d.get("split"):
            key = (d["system"], d["strategy"], d["nodes"], d["metric"])
            if key not in said:
                said.add(key)
                lines.append(f"{head}{d['nominal']:>10.4g}  split by {d['assumption']}:")
            name = d["branch"] + (" (plain run)" if d.get("has_nominal") else "")
            lines.append(
                f"{'':<37}= {name:<33.33} {d['median']:>10.4g}  "
                f"[{d['p5']:>9.4g}, {d['p95']:>9.4g}]{tail}"
            )
            continue
        lines.append(
            f"{head}{d['nominal']:>10.4g} {d['median']:>10.4g}  [{d['p5']:>9.4g}, {d['p95']:>9.4g}]"
            + tail
        )
    return "\n".join(lines)
