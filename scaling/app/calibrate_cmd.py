"""``scaling calibrate``: a collective library profile from a measured benchmark table, and
(``--decide``) the cheap measurement that would decide a split answer.

One command for both because they are the two halves of one loop: before measuring, ``--decide``
names the benchmark whose outcome the structural alternatives disagree on most; after measuring,
``calibrate TABLE`` fits the profile to it and says which alternative the table supports (and, if
none clearly, again what to measure).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from scaling.app.exits import fail, user_errors
from scaling.app.output import config_argument
from scaling.io.errors import ConfigError
from scaling.model.comm.ops import CollectiveOp

#: Probe sizes of ``--decide`` (bytes): nccl-tests' usual sweep points from latency- to
#: bandwidth-bound.
DECIDE_SIZES = (2**16, 2**20, 2**24, 2**26, 2**28, 2**30)
#: Ops ``--decide`` probes: those data- and fully-sharded training issue.
DECIDE_OPS = (CollectiveOp.ALL_REDUCE, CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER)
#: The nccl-tests binary of each op (the command a user runs).
PERF_BINARY = {
    CollectiveOp.ALL_REDUCE: "all_reduce_perf",
    CollectiveOp.ALL_GATHER: "all_gather_perf",
    CollectiveOp.REDUCE_SCATTER: "reduce_scatter_perf",
    CollectiveOp.BROADCAST: "broadcast_perf",
    CollectiveOp.ALL_TO_ALL: "alltoall_perf",
}


def size_text(b: float) -> str:
    """``67108864`` → ``64 MiB``."""
    for unit, k in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= k and b % k == 0:
            return f"{int(b // k)} {unit}"
    return f"{int(b)} B"


def _ranges(library: Any) -> dict[str, tuple[float, float]]:
    """The library's plausible ranges by fit-parameter path (a protocol library's first
    protocol stands for all, as the fit shifts them together)."""
    from scaling.io.topology import ranged_quantities

    out: dict[str, tuple[float, float]] = {}
    for path, q in ranged_quantities(library):
        assert q.low is not None and q.high is not None
        first = path.startswith("protocols[0].")
        if q.high > q.low and (first or not path.startswith("protocols[")):
            out[path.removeprefix("protocols[0].")] = (q.low, q.high)
    return out


def _candidates(loaded: Any) -> tuple[dict[str, Any], dict[str, frozenset[str]], dict[str, Any]]:
    """The nominal system and one per structural alternative of its library; the numbers each
    alternative fixes; each one's plausible ranges."""
    import dataclasses

    from scaling.io.topology import LibrarySchema, apply_alternative, to_library_profile

    systems = {"nominal": loaded.spec}
    fixed: dict[str, frozenset[str]] = {"nominal": frozenset()}
    ranges = {"nominal": _ranges(loaded.library)}
    base = json.loads(loaded.library.model_dump_json(exclude_none=True))
    for alt in loaded.library.alternatives:
        lib = LibrarySchema.model_validate(apply_alternative(base, alt, "library"))
        systems[alt.name] = dataclasses.replace(loaded.spec, library=to_library_profile(lib))
        fixed[alt.name] = frozenset(alt.set)
        ranges[alt.name] = _ranges(lib)
    return systems, fixed, ranges


def _fmt_param(p: Any) -> str:
    if p.identified:
        return (
            f"  {p.path:<28} {p.value:>10.4g} {p.unit:<8} [{p.low:.4g}, {p.high:.4g}]  "
            f"(was {p.prior:.4g})"
        )
    return f"  {p.path:<28} {p.prior:>10.4g} {p.unit:<8} kept: {p.why}"


def _write_system_copy(loaded: Any, profile: Path, out: Path) -> None:
    """A copy of the system's topology file that uses the calibrated profile."""
    import yaml

    from scaling.io.errors import read_yaml
    from scaling.io.files import atomic_write
    from scaling.io.topology import SystemSchema

    data, _ = read_yaml(loaded.path, "topology")
    data["name"] = out.stem
    data["collective_library"] = str(profile.resolve())
    SystemSchema.model_validate(data)
    text = (
        f"# {loaded.path.name} with the collective library calibrated by scaling calibrate "
        f"({profile})\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(out, write)


def run_calibrate(
    table_path: Path,
    system_name: str,
    op: CollectiveOp | None,
    nodes: int | None,
    per_node: int | None,
    out: Path | None,
    system_out: Path | None,
) -> None:
    """Fit the system's library profile to the table and report (and write) it."""
    from scaling.io.benchmark_tables import read_benchmark_table
    from scaling.io.calibrated_profile import header_comment, profile_document, write_profile
    from scaling.io.topology import load_system
    from scaling.model.calibration.decide import probe_grid, rank_probes
    from scaling.model.calibration.fit import MAX_RMS, calibrate
    from scaling.model.calibration.measure import busbw_GBps

    loaded = load_system(system_name)
    spec = loaded.spec
    table = read_benchmark_table(table_path, op, nodes, per_node)
    for r in table.rows:
        if r.per_node > spec.devices_per_node:
            raise ConfigError(
                f"{table.path}:{r.line}: {r.per_node} ranks per node; {spec.name} has "
                f"{spec.devices_per_node} devices per node (give --per-node or another --system)"
            )
    shapes = sorted({(r.op.value, r.nodes, r.per_node) for r in table.rows})
    click.echo(
        f"# {table.layout} table {table.path}: {len(table.rows)} rows, "
        + "; ".join(f"{o} on {n} node(s) x {k}" for o, n, k in shapes)
        + f"; library {loaded.library.name} of {spec.name}",
        err=True,
    )
    for name, count in table.dropped:
        click.echo(f"# left out {count} row(s) of {name} (--op {op})", err=True)
    cands, fixed, ranges = _candidates(loaded)
    try:
        cal = calibrate(
            table.rows,
            cands,
            fixed,
            ranges,
            progress=lambda n: click.echo(f"# fitting {n} ...", err=True),
        )
    except ValueError as e:
        raise ConfigError(f"{table.path}: {e}") from None
    click.echo(
        f"structure (algorithm set) by fit quality, best first ({len(cal.candidates)}; each as "
        "its file states it, fitted inside the profile's ranges):"
    )
    for c in cal.candidates:
        algos = ",".join(c.system.library.algorithms)
        click.echo(
            f"  {c.name:<16} algorithms {algos:<24} rms {c.rms:6.1%}  AICc {c.aicc:8.1f}  "
            f"fitted {len(c.fitted)}"
        )
    best = cal.final
    if len(cal.candidates) > 1:
        if cal.decided:
            click.echo(f"the table supports {cal.best.name!r} (AICc lead >= 6)")
        else:
            click.echo("the table does not decide between the structures (AICc lead < 6)")
    click.echo(f"parameters of {best.name!r} (refitted, every parameter free; rms {best.rms:.1%}):")
    for p in best.params:
        click.echo(_fmt_param(p))
    click.echo("rows: size, measured busbw, fitted busbw (GB/s), the tuner's choice")
    for r, t, a in zip(table.rows, best.predicted_s, best.chosen, strict=True):
        fit_bw = busbw_GBps(r.op, r.ranks, r.size_B, t)
        click.echo(
            f"  {r.op.value} {size_text(r.size_B):>9} on {r.nodes}x{r.per_node}: "
            f"{r.busbw_GBps:8.2f} {fit_bw:8.2f}  {a}"
        )
    if not cal.decided:
        branches = {c.name: [c.system] for c in cal.candidates}
        top_nodes = max(4, max(r.nodes for r in table.rows))
        ranked = rank_probes(
            branches,
            probe_grid(
                [r.op for r in table.rows][:1], list(DECIDE_SIZES), top_nodes, spec.devices_per_node
            ),
        )
        click.echo("to decide, measure: " + _probe_line(ranked[0], spec.name))
    if best.rms > MAX_RMS:
        raise ConfigError(
            f"{table.path}: the best fit of {loaded.library.name} misses the table by "
            f"{best.rms:.0%} rms (more than {MAX_RMS:.0%}): a profile of {spec.name} does not "
            "describe it; check --system, the node and rank counts and the units; nothing written"
        )
    if not best.fitted and cal.decided and len(cal.candidates) == 1:
        raise ConfigError(
            f"{table.path}: no parameter of {loaded.library.name} is identifiable from this "
            "table (see above what to measure); nothing written"
        )
    if out is None:
        click.echo("(add --out FILE.yaml to write the calibrated profile)", err=True)
        return
    doc, fit = profile_document(loaded.library, cal, table)
    write_profile(out, doc, header_comment(cal, fit, table))
    click.echo(f"wrote {out} (structure {fit.name!r}, {len(fit.fitted)} calibrated numbers)")
    if system_out is not None:
        _write_system_copy(loaded, out, system_out)
        click.echo(f"wrote {system_out} (system {spec.name} with that library)")


def _what(p: Any, system: str = "") -> str:
    """``all-reduce 64 KiB on 4 nodes`` (a ratio: ``... on 4 nodes vs 2 nodes``)."""
    on = f" {system}" if system else ""
    head = f"{p.op.value.replace('_', '-')} {size_text(p.size_B)} on {p.nodes}{on} node"
    head += "s" if p.nodes > 1 else ""
    if p.versus_nodes:
        head += f" vs {p.versus_nodes}"
    return head


def _cmd(p: Any, nodes: int) -> str:
    lo, hi = max(p.size_B // 16, 1), p.size_B * 16
    short = {"GiB": "G", "MiB": "M", "KiB": "K", " ": ""}
    a, b = size_text(lo), size_text(hi)
    for k, v in short.items():
        a, b = a.replace(k, v), b.replace(k, v)
    return f"mpirun -np {nodes * p.per_node} {PERF_BINARY[p.op]} -b {a} -e {b} -f 2 -g 1"


def _probe_line(r: Any, system: str) -> str:
    p = r.probe
    unit = f"busbw ratio {p.nodes}/{p.versus_nodes} nodes" if p.versus_nodes else "GB/s busbw"
    preds = ", ".join(
        f"{b.branch} predicts {b.low_GBps:.3g}-{b.high_GBps:.3g} ({b.algorithm})"
        for b in r.branches
    )
    runs = [_cmd(p, p.nodes)] + ([_cmd(p, p.versus_nodes)] if p.versus_nodes else [])
    return (
        f"{_what(p, system)} ({p.per_node} ranks each), {unit}: {preds}; run "
        + " and ".join(f"`{c}`" for c in runs)
        + f", then `scaling calibrate TABLE --system {system}`"
    )


def _parse_at(at: str) -> int:
    key, _, val = at.partition("=")
    if key.strip() != "nodes" or not val.strip().isdigit() or int(val) < 1:
        raise ConfigError(f"--at {at!r}: expected nodes=N (the headline point's node count)")
    return int(val)


#: All-reduce sizes (bytes) at which ``--decide`` asks whether an alternative splits the
#: headline: DDP buckets (25 MiB default) to FSDP-unit scale.
HEADLINE_SIZES = (2**24, 2**26, 2**28)


class _Design:
    """The system's uncertain inputs drawn once (quasi-random, seeded): numbers over their
    ranges, and each group of structural alternatives as one more input; a branch fixes one
    group's option and keeps the draws of everything else (common random numbers)."""

    def __init__(self, ls: Any, name: str, exp: Any, samples: int, seed: int) -> None:
        from scaling.sweep.uncertainty import uncertain_inputs, unit_design

        self.ls = ls
        inputs = uncertain_inputs(exp, [name])
        self.numbers = [u for u in inputs if not u.is_alternative]
        self.groups = [u for u in inputs if u.is_alternative]
        self.design = unit_design(samples, len(self.numbers) + len(self.groups), seed)

    def systems(self, fixed: int | None = None, option: str = "") -> list[Any]:
        """One system per draw, group ``fixed`` (an index of :attr:`groups`) set to ``option``."""
        from scaling.sweep.uncertainty import perturbed_system

        out = []
        k = len(self.numbers)
        for row in self.design:
            changes: dict[tuple[str, str], Any] = {
                (u.doc, u.path): u.from_unit(x) for u, x in zip(self.numbers, row, strict=False)
            }
            for j, g in enumerate(self.groups):
                changes[(g.doc, "alternatives")] = option if j == fixed else g.from_unit(row[k + j])
            out.append(perturbed_system(self.ls, changes))
        return out


def _print_ranked(ranked: list[Any], max_nodes: int, top: int) -> None:
    order = "most decisive" if len(ranked[0].branches) > 1 else "widest prediction"
    click.echo(f"cheap measurements (<= {max_nodes} nodes), {order} first:")
    for i, r in enumerate(ranked[:top], 1):
        cells = "  ".join(f"{b.branch}: {b.low_GBps:.3g}-{b.high_GBps:.3g}" for b in r.branches)
        sep = "" if len(r.branches) == 1 else (" (disjoint)" if r.separates else " (overlap)")
        unit = "busbw ratio" if r.probe.versus_nodes else "GB/s busbw"
        click.echo(
            f"  {i}. {_what(r.probe)} ({r.probe.per_node} ranks each): {cells} {unit}, "
            f"score {r.score:+.2f}{sep}"
        )


def run_decide(
    config: Path,
    at: str,
    max_nodes: int,
    system_name: str | None,
    samples: int,
    seed: int,
    top: int,
) -> None:
    """For each system of the experiment: which structural alternatives split its headline
    point, and the cheap measurements that separate their branches best."""
    from scaling.io.config import load_experiment
    from scaling.model.calibration.decide import Probe, probe_grid, rank_probes

    head_nodes = _parse_at(at)
    exp = load_experiment(config)
    names = list(dict.fromkeys(exp.config.systems))
    if system_name is not None:
        if system_name not in names:
            raise ConfigError(f"--system {system_name}: not in {config} (has {', '.join(names)})")
        names = [system_name]
    for name in names:
        ls = exp.systems[name]
        dpn = ls.spec.devices_per_node
        design = _Design(ls, name, exp, samples, seed)
        click.echo(
            f"# {name} at {head_nodes} nodes: {len(design.numbers)} uncertain numbers, "
            f"{len(design.groups)} group(s) of structural alternatives, {samples} draws "
            f"(seed {seed})"
        )
        head_probes = [Probe(CollectiveOp.ALL_REDUCE, head_nodes, dpn, s) for s in HEADLINE_SIZES]
        split = False
        for gi, g in enumerate(design.groups):
            what = f"{g.doc_label or 'topology.'}alternatives"
            branches = {}
            for o in g.options:
                systems = design.systems(gi, o)
                algos = "+".join(systems[0].library.algorithms)
                branches[f"{o} ({algos})" if g.doc != "topology" else o] = systems
            head = rank_probes(branches, head_probes)
            worst = max(head, key=lambda r: r.score)
            said = ", ".join(
                f"{b.branch} {b.low_GBps:.3g}-{b.high_GBps:.3g} GB/s ({b.algorithm})"
                for b in worst.branches
            )
            if not worst.separates:
                click.echo(
                    f"{what} ({', '.join(g.options)}) do not split the headline: all_reduce "
                    f"{size_text(worst.probe.size_B)} on {head_nodes} nodes: {said}"
                )
                continue
            split = True
            click.echo(
                f"{what} split the headline: all_reduce {size_text(worst.probe.size_B)} on "
                f"{head_nodes} nodes: {said}"
            )
            per_node = min(s.devices_per_node for v in branches.values() for s in v)
            grid = probe_grid(list(DECIDE_OPS), list(DECIDE_SIZES), max_nodes, per_node)
            ranked = rank_probes(branches, grid)
            _print_ranked(ranked, max_nodes, top)
            verdict = "measure this" if ranked[0].separates else "no cheap measurement separates"
            click.echo(f"{verdict}: {_probe_line(ranked[0], name)}")
        if not split:
            # nothing structural splits it: measure where the model's prediction is widest
            branches = {"all draws": design.systems()}
            grid = probe_grid(list(DECIDE_OPS), list(DECIDE_SIZES), max_nodes, dpn)
            ranked = rank_probes(branches, grid)
            click.echo("no structural split; measure where the prediction is widest to shrink it")
            _print_ranked(ranked, max_nodes, min(top, 3))


@click.command("calibrate")
@click.argument("table", required=False, type=click.Path(path_type=Path))
@click.option("--system", "system_name", default=None, help="Catalog system (or YAML path).")
@click.option(
    "--op",
    type=click.Choice([o.value for o in CollectiveOp]),
    default=None,
    help="The table's collective where the file does not name it (hccl_test, CSV).",
)
@click.option("--nodes", type=click.IntRange(min=1), default=None, help="Nodes of the run.")
@click.option("--per-node", type=click.IntRange(min=1), default=None, help="Ranks per node.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the calibrated library profile YAML here.",
)
@click.option(
    "--system-out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write a copy of the system's topology that uses the calibrated profile.",
)
@click.option(
    "--decide",
    "decide_config",
    default=None,
    callback=config_argument,
    help="Experiment CONFIG: rank the cheap measurements that decide its split answer.",
)
@click.option("--at", default="nodes=512", show_default=True, help="The headline point.")
@click.option("--max-nodes", type=click.IntRange(min=1, max=64), default=4, show_default=True)
@click.option("--samples", type=click.IntRange(min=2, max=256), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True)
@user_errors
def calibrate(
    table: Path | None,
    system_name: str | None,
    op: str | None,
    nodes: int | None,
    per_node: int | None,
    out: Path | None,
    system_out: Path | None,
    decide_config: Path | None,
    at: str,
    max_nodes: int,
    samples: int,
    seed: int,
    top: int,
) -> None:
    """Fit a collective library profile to a measured benchmark TABLE, or (--decide CONFIG)
    name the cheap measurement that decides a split answer.

    \b
    TABLE: nccl-tests output (all_reduce_perf ...), hccl_test output (with --op, --nodes) or a
    CSV with size_B and time_us or busbw_GBps (op, nodes, per_node columns or options).
    Example: scaling calibrate ar.txt --system dgx-h100 --out my/nccl-calibrated.yaml
    Example: scaling calibrate --decide mlu-vs-gpu --at nodes=512 --max-nodes 4
    """
    if decide_config is not None:
        if table is not None:
            fail("give a TABLE to fit or --decide CONFIG, not both")
        run_decide(decide_config, at, max_nodes, system_name, samples, seed, top)
        return
    if table is None:
        fail("expected a benchmark TABLE to fit (or --decide CONFIG)")
    if system_name is None:
        fail("--system: which system's library the table measured, e.g. --system dgx-h100")
    run_calibrate(
        table,
        system_name,
        CollectiveOp(op) if op else None,
        nodes,
        per_node,
        out,
        system_out,
    )
