"""The ``scaling`` command line.

Bad input exits with code 2 and one line naming the file, line, field, value and what was
expected — never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scaling._version import __version__
from scaling.app.entry import set_verbosity, verbosity_options
from scaling.app.errors import fail, user_errors
from scaling.app.output import (
    Printer,
    check_out_dir,
    config_argument,
    format_option,
    is_stdout,
    jobs_option,
    out_file_option,
    progress_bar,
    progress_option,
    short_reason,
    want_progress,
)
from scaling.io.results import results_cells
from scaling.model.comm.ops import ALGORITHMS, CollectiveOp
from scaling.model.job import InfeasibleJobError

_fail = fail
_user_errors = user_errors
_set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override a config field, e.g. --set nodes=[1,8,64] --set training.micro_batch_size=2.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scaling")
@verbosity_options
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Simulate distributed training (DDP) on GPU, MLU and NPU clusters and compare scaling."""
    set_verbosity(ctx, verbose, quiet)


def _gap_summary(df: Any) -> list[str]:
    """At the largest node count: each system's efficiency vs the best, per strategy."""
    top = df["nodes"].max()
    out: list[str] = []
    for strategy, g in df[df["nodes"] == top].groupby("strategy", sort=False):
        last = g.sort_values("scaling_efficiency", ascending=False)
        if len(last) < 2:
            continue
        best = last.iloc[0]
        out.append(
            f"At {top} nodes with {strategy}, scaling efficiency (1.000 = perfect weak scaling):"
        )
        for _, r in last.iterrows():
            gap = (r["scaling_efficiency"] - best["scaling_efficiency"]) * 100
            rel = (
                ""
                if r["system"] == best["system"]
                else f"  ({gap:+.1f} points vs {best['system']})"
            )
            out.append(f"  {r['system']:<12} {r['scaling_efficiency']:.3f}{rel}")
    return out


def _refuse_points(exp: Any, strict: bool) -> None:
    """Before simulating: when every point (or, ``strict``, any) cannot run, a short note per
    refused point and one error line (exit 2)."""
    from scaling.app.api import refusals

    reasons = refusals(exp)
    jobs = exp.jobs()
    if not reasons or (len(reasons) < len(jobs) and not strict):
        return
    for i, why in reasons.items():
        j = jobs[i]
        short = short_reason(why.removeprefix(f"{j.system.name}: "))
        click.echo(
            f"refused: {j.system.name} x{j.nodes} nodes ({j.strategy.label}): {short}", err=True
        )
    first = next(iter(reasons.values()))
    which = "every point" if len(reasons) == len(jobs) else "--strict"
    _fail(f"{which}: {len(reasons)} of {len(jobs)} point(s) refused, nothing simulated; {first}")


@main.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder (default: results/<experiment name>).",
)
@_set_option
@click.option("--no-plot", is_flag=True, help="Skip the PNG plot.")
@click.option(
    "--replicas",
    type=click.IntRange(min=1, max=10_000),
    default=1,
    show_default=True,
    help="Monte-Carlo replicas per point (fresh seeds: jitter, slow ranks, failures); writes "
    "replicas.csv and replica_summary.csv (medians and 95 % intervals).",
)
@jobs_option(
    "With --replicas or --uncertainty: processes to run them on (default: one per CPU; "
    "1 = in process)."
)
@click.option(
    "--check",
    is_flag=True,
    help="Only check CONFIG: validate it, refuse what cannot run, print each point's size "
    "(ranks, simulated micro-batches, network memory); simulate nothing, write nothing.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse the whole run (exit 2, nothing simulated) if any point cannot run; by default "
    "such points are 'refused' rows with their reason and the others run.",
)
@click.option(
    "--force", is_flag=True, help="Overwrite an --out folder holding another experiment's results."
)
@click.option(
    "--uncertainty",
    type=click.IntRange(min=0, max=4096),
    default=0,
    help="N samples of the systems' assumption/secondary numbers (their low-high ranges) and "
    "run seeds: median and 5-95 % interval per metric, uncertainty_*.csv and a band plot.",
)
@click.option(
    "--seed",
    "sample_seed",
    type=click.IntRange(min=0),
    default=0,
    help="With --uncertainty: the sampling seed.",
)
@progress_option
@format_option
@_user_errors
def run(
    config: Path,
    out_dir: Path | None,
    overrides: tuple[str, ...],
    no_plot: bool,
    replicas: int,
    n_jobs: int | None,
    strict: bool,
    force: bool,
    check: bool,
    fmt: str,
    progress: bool | None,
    uncertainty: int = 0,
    sample_seed: int = 0,
) -> None:
    """Run every (system, nodes) point of an experiment CONFIG; print and save the table.

    A point that cannot run (out of memory, a device that cannot train) is a 'refused' row with
    its reason and a one-line note; the exit code is 2 only if every point is refused (or any,
    with --strict). CONFIG is a YAML file or the name of a bundled example (scaling run --list).

    \b
    Example: scaling run configs/mlu-vs-gpu.yaml --set nodes=[1,8] --out results/x --format json
    """
    from scaling.app.api import feasibility_errors, run_experiment
    from scaling.io.config import load_experiment
    from scaling.io.files import atomic_write, make_dir
    from scaling.io.results import write_outputs

    if n_jobs is not None and replicas == 1 and not uncertainty:
        _fail(f"--jobs {n_jobs}: only used with --replicas N (N > 1); a plain run is one process")
    if not uncertainty:
        from scaling.app.uncertainty_cmd import option_given

        if option_given("sample_seed"):
            _fail(f"--seed {sample_seed}: only used with --uncertainty N (the sampling seed)")
    loaded = load_experiment(config, list(overrides))
    if check:
        errs = feasibility_errors(loaded)
        if errs:
            raise InfeasibleJobError("; ".join(errs))
        for e in loaded.estimates():
            click.echo(
                f"{e['system']} x{e['nodes']} nodes: {e['ranks']:,} ranks, "
                f"{e['micro_batches']:,} micro-batches per rank, network ~{e['network_GiB']:.3g} GiB"
            )
        click.echo(f"{config}: ok ({len(loaded.jobs())} run(s))")
        return
    name = loaded.config.name
    check_out_dir(out_dir or Path("results") / name, "experiment", name, force)
    _refuse_points(loaded, strict)
    # the output folder before simulating: a bad --out fails now, not after the whole run
    make_dir(out_dir or Path("results") / loaded.config.name)
    res = run_experiment(loaded, progress=want_progress(progress), strict=strict)
    exp = res.experiment
    out = out_dir or Path("results") / exp.config.name
    h = exp.config_hash()
    paths = write_outputs(out, res.table, exp.resolved(), h)
    p = Printer(fmt)
    p.say(
        f"{exp.config.name}: {exp.config.model_name}, "
        f"{'/'.join(sorted({st.kind.upper() for st in exp.config.all_strategies()}))}, "
        f"micro-batch {exp.config.training.micro_batch_size} x seq {exp.config.training.seq_len}"
        f" per accelerator (weak scaling); config hash {h}"
    )
    p.table(res.table, results_cells(res.table))
    for r in res.refused.itertuples():
        why = short_reason(str(r.error).removeprefix(f"{r.system}: "))
        p.say(f"refused: {r.system} x{r.nodes} nodes ({r.strategy}): {why}")
    if len(res.refused):
        p.say(f"({len(res.refused)} of {len(res.table)} points refused; reasons in results.csv)")
    for line in _gap_summary(res.ok):
        p.say(line)
    if exp.config.report is not None:
        from scaling.app import seed

        if exp.config.report == "seed-table1":
            t = seed.table1(res.ok)
            p.say(seed.format_table1(t))
        else:
            t = seed.table2(res.ok)
            p.say(seed.format_table2(t))
        atomic_write(out / f"{exp.config.report}.csv", lambda f: t.to_csv(f, index=False))
    if not no_plot:
        from scaling.io.plots import plot_scaling_efficiency  # matplotlib: only when plotting

        paths["plot"] = plot_scaling_efficiency(
            res.table, out / "scaling_efficiency.png", f"{exp.config.name}: {exp.config.model_name}"
        )
    if replicas > 1 and len(res.refused):
        _fail(
            f"--replicas {replicas}: {len(res.refused)} point(s) are refused; narrow the experiment"
        )
    if replicas > 1:
        from scaling.sweep.executors import make_executor
        from scaling.sweep.replicas import format_summary, run_replicas

        with make_executor(jobs=n_jobs) as ex:
            table, summary = run_replicas(exp, replicas, ex, [r.scalars() for r in res.runs])
        p.say(f"{replicas} replicas per point:")
        p.say(format_summary(summary))
        for name, df in (("replicas", table), ("replica_summary", summary)):

            def write(f: Path, df: Any = df) -> None:
                df.to_csv(f, index=False)

            atomic_write(out / f"{name}.csv", write)
            paths[name] = out / f"{name}.csv"
    if uncertainty:
        from scaling.app.uncertainty_cmd import run_uncertainty_cli

        paths |= run_uncertainty_cli(
            exp, res, uncertainty, sample_seed, n_jobs, out, p, no_plot, progress
        )
    p.say("wrote " + ", ".join(str(f) for f in paths.values()))


@main.command()
@click.option(
    "--system", "system_name", required=True, help="System name (topologies/) or YAML path."
)
@click.option(
    "--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes in the group."
)
@click.option(
    "--per-node",
    type=click.IntRange(min=1),
    default=None,
    help="Ranks per node (default: all devices).",
)
@click.option(
    "--op",
    type=click.Choice([o.value for o in CollectiveOp]),
    default="all_reduce",
    show_default=True,
)
@click.option(
    "--sizes", default="32K:16G", show_default=True, help="MIN:MAX (x2 steps), or a comma list."
)
@click.option(
    "--factor", type=click.IntRange(min=2), default=2, show_default=True, help="Size step factor."
)
@click.option(
    "--algo",
    default=None,
    help=f"Force an algorithm: {', '.join(ALGORITHMS)} (default: the library's tuner; one the "
    "library does not list needs --what-if).",
)
@click.option(
    "--proto",
    default=None,
    help="Force a protocol of the system's library, e.g. LL, LL128 or Simple for NCCL "
    "(topologies/libraries/*.yaml; default: the library's tuner).",
)
@click.option(
    "--what-if",
    is_flag=True,
    help="Allow an --algo the library's profile does not list (a what-if; warns).",
)
@click.option(
    "--max-ranks",
    type=click.IntRange(min=2),
    default=None,
    help="Refuse groups above this many ranks (default: the simulation.max_ranks default).",
)
@out_file_option("Write the table as CSV (- = stdout; the text table then goes to stderr).")
@progress_option
@format_option
@_user_errors
def collective(
    system_name: str,
    nodes: int,
    per_node: int | None,
    op: str,
    sizes: str,
    factor: int,
    algo: str | None,
    proto: str | None,
    what_if: bool,
    max_ranks: int | None,
    out_file: Path | None,
    fmt: str,
    progress: bool | None,
) -> None:
    """nccl-tests-like table for one collective on a system: size, time, algbw, busbw.

    \b
    Example: scaling collective --system dgx-a100 --nodes 8 --sizes 1M:1G --algo ring --out -
    """
    from scaling.app.collective import collective_table, format_collective_table, size_range
    from scaling.io.topology import load_system

    if is_stdout(out_file) and fmt != "table":
        _fail(f"--out - and --format {fmt}: both write to stdout; give one of them")
    loaded = load_system(system_name)
    spec = loaded.spec
    if per_node is not None and per_node > spec.devices_per_node:
        _fail(f"--per-node {per_node}: {spec.name} has {spec.devices_per_node} devices per node")
    if algo is not None and algo not in ALGORITHMS:
        _fail(f"--algo {algo!r}: expected one of {', '.join(ALGORITHMS)}")
    if algo is not None and algo not in spec.library.algorithms:
        have = ", ".join(spec.library.algorithms)
        if not what_if:
            _fail(
                f"--algo {algo}: got an algorithm {spec.library.name} does not have; expected "
                f"one of {have} (add --what-if to run it anyway as a what-if)"
            )
        click.echo(
            f"warning: --what-if: {spec.library.name} has no {algo} (has {have}); the table "
            "is a what-if, not what the library runs",
            err=True,
        )
    from scaling.io.config import DEFAULT_MAX_RANKS, run_size_error

    too_big = run_size_error(
        nodes, per_node or spec.devices_per_node, max_ranks or DEFAULT_MAX_RANKS, "--max-ranks"
    )
    if too_big:
        _fail(f"--nodes {nodes}: got {too_big}")
    table = collective_table(
        spec,
        nodes,
        CollectiveOp(op),
        size_range(sizes, factor),
        algo,
        proto,
        per_node,
        progress=want_progress(progress),
    )
    ranks = int(table.ranks.iloc[0])
    p = Printer(fmt, stdout_taken=is_stdout(out_file))
    p.say(
        f"# {op} on {spec.name}: {nodes} node(s) x {per_node or spec.devices_per_node} = {ranks} ranks, "
        f"library {spec.library.name}"
    )
    p.table(table, text=format_collective_table(table))
    if is_stdout(out_file):
        click.echo(table.to_csv(index=False), nl=False)
    elif out_file is not None:
        # written in place, not by rename: --out may be a device (/dev/stdout)
        try:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(out_file, index=False)
        except OSError as e:
            from scaling.io.files import write_error

            raise write_error(out_file, e) from None
        p.say(f"wrote {out_file}")


def _parse_ranks(text: str | None, devices: int) -> list[int]:
    if not text:
        return list(range(min(devices, 16)))
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            _fail(f"--ranks {text!r}: expected ranks like 0-15 or 0,8,16")
        if not 0 <= a <= b < devices:
            _fail(f"--ranks {text!r}: ranks must lie in 0..{devices - 1}")
        out += range(a, b + 1)
    return sorted(set(out))


def _one_job(config: Path, overrides: tuple[str, ...], what: str):
    from dataclasses import replace

    from scaling.io.config import load_experiment

    exp = load_experiment(config, list(overrides))
    jobs = exp.jobs()
    if len(jobs) != 1:
        _fail(
            f"{config}: {what} needs one point but the config has {len(jobs)} (systems x nodes); "
            "narrow it, e.g. --set systems=[mlu370-x8] --set nodes=[64]"
        )
    job = jobs[0]
    # trace every rank when there are not too many: noise and HSDP groups differ per rank
    if job.devices <= 512:
        job = replace(job, sim=replace(job.sim, simulate_all_ranks=True))
    return exp, job


@main.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@out_file_option("Trace JSON to write (- = stdout).", required=True)
@click.option(
    "--ranks", default=None, help="Ranks to include, e.g. 0-15 or 0,8 (default: the first 16)."
)
@_set_option
@_user_errors
def trace(config: Path, out_file: Path, ranks: str | None, overrides: tuple[str, ...]) -> None:
    """Write one steady-state step as Chrome Trace Event JSON (open it in ui.perfetto.dev).

    \b
    Example: scaling trace mlu-vs-gpu --set systems=[dgx-a100] --set nodes=[2] --out step.json
    """
    import json

    from scaling.io.trace import chrome_trace
    from scaling.model.simulation import run_job_detailed

    exp, job = _one_job(config, overrides, "trace")
    res, tl = run_job_detailed(job, trace=True)
    chosen = _parse_ranks(ranks, job.devices)
    step = len(res.steps) - 1
    meta = {
        "config_hash": exp.config_hash(),
        "system": res.system,
        "model": res.model,
        "strategy": res.strategy,
        "nodes": res.nodes,
        "step": step,
        "step_time_s": res.step_time_s,
    }
    doc = chrome_trace(tl, step, chosen, meta)
    text = json.dumps(doc, allow_nan=False)  # strict JSON: chrome_trace keeps numbers finite
    if is_stdout(out_file):
        click.echo(text)
    else:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(text)
    click.echo(
        f"wrote {out_file}: step {step} of {res.system} x{res.nodes} nodes ({res.strategy}), "
        f"{len(chosen)} ranks, {len(doc['traceEvents'])} events; open it in ui.perfetto.dev",
        err=is_stdout(out_file),
    )


@main.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@out_file_option("File to write (- = stdout).", default="-")
@click.option(
    "--step",
    default=None,
    help="Iteration to show: 0 = the first (DDP's single bucket), 'setup' = the DDP "
    "constructor's collectives; default the steady state (2).",
)
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True
)
@_set_option
@_user_errors
def schedule(
    config: Path,
    out_file: Path,
    step: str | None,
    rank: int,
    fmt: str,
    overrides: tuple[str, ...],
) -> None:
    """The ordered collectives one rank issues in one step, to check against a PyTorch job.

    One record per collective: op, bytes (all-reduce/broadcast: the tensor; all-gather: the
    gathered output; reduce-scatter: the full input), dtype, group_size, phase, and the DDP
    bucket (index, parameter names) or FSDP unit. Example:
    scaling schedule configs/mlu-vs-gpu.yaml --set systems=[dgx-a100] --set nodes=[1]
    --set strategies=null --step 0 --out ddp0.json
    """
    import csv
    import io
    import json
    from dataclasses import replace

    from scaling.model.analysis.schedule import rank_schedule
    from scaling.model.simulation import run_job_detailed

    exp, job = _one_job(config, overrides, "schedule")
    if rank >= job.devices:
        _fail(f"--rank {rank}: the job has {job.devices} ranks (0-{job.devices - 1})")
    # iterations 0 and 1 differ from the rest (DDP's first bucket and its rebuild): simulate
    # far enough that the default shows a steady-state iteration
    from scaling.model.strategies.ddp import SETUP_STEP

    if step is None or step == "setup" or (step.isdigit() and len(step) < 7):
        shown = 2 if step is None else SETUP_STEP if step == "setup" else int(step)
    else:
        _fail(f"--step {step!r}: expected an iteration number (0, 1, …) or 'setup'")
    limit = exp.config.simulation.max_micro_batches
    if (shown + 1) * job.training.grad_accum > limit:
        _fail(
            f"--step {step}: simulating steps 0-{shown} x grad_accum_steps "
            f"{job.training.grad_accum} is more than simulation.max_micro_batches ({limit:,}) "
            "micro-batches; raise it with --set simulation.max_micro_batches=N"
        )
    job = replace(job, sim=replace(job.sim, warmup_steps=0, steps=max(shown + 1, 3)))
    res, tl = run_job_detailed(job, trace=True)
    calls = rank_schedule(tl, shown, rank)
    if fmt == "json":
        doc = {
            "config_hash": exp.config_hash(),
            "system": res.system,
            "model": res.model,
            "strategy": res.strategy,
            "nodes": res.nodes,
            "world_size": res.devices,
            "rank": rank,
            "step": "setup" if shown == SETUP_STEP else shown,
            "collectives": calls,
        }
        text = json.dumps(doc, indent=1) + "\n"
    else:
        buf = io.StringIO()
        cols = ["index", "op", "bytes", "dtype", "group_size", "phase", "micro_batch"]
        cols += ["bucket", "params", "unit", "label"]
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for i, c in enumerate(calls):
            bucket = c.get("bucket") or {}
            w.writerow(
                {k: c.get(k, "") for k in cols}
                | {
                    "index": i,
                    "bucket": bucket.get("index", ""),
                    "params": ";".join(bucket.get("params", [])),
                }
            )
        text = buf.getvalue()
    if is_stdout(out_file):
        click.echo(text, nl=False)
    else:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(text)
        click.echo(
            f"wrote {out_file}: {len(calls)} collectives of rank {rank} in step {shown} "
            f"({res.system} x{res.nodes} nodes, {res.strategy})",
            err=True,
        )


def _hybrid_point(arg: tuple[Any, Any, Any, tuple[str, ...]]) -> float:
    """One value of the attribution (runs in a worker): tokens/s per device of ``job`` on
    system A with the components in ``from_b`` taken from B."""
    from dataclasses import replace

    from scaling.model.analysis.attribution import hybrid, throughput_per_device

    job, a, b, from_b = arg
    return throughput_per_device(replace(job, system=hybrid(a, b, frozenset(from_b))))


def _feasible_micro_batches(job: Any) -> tuple[bool, ...]:
    """Which micro-batches 1 … the job's fit in memory (what the attribution's search for the
    largest fitting micro-batch looks at)."""
    from dataclasses import replace

    from scaling.model.job import InfeasibleJobError
    from scaling.model.simulation import check_feasible

    out = []
    for mb in range(1, job.training.micro_batch + 1):
        try:
            check_feasible(replace(job, training=replace(job.training, micro_batch=mb)))
        except InfeasibleJobError:
            out.append(False)
        else:
            out.append(True)
    return tuple(out)


#: above this configured micro-batch explain --vs does not look for memory-capacity twins
_MAX_TWIN_MICRO_BATCH = 256


def hybrid_plan(
    base: Any, a: Any, b: Any, counts: list[int]
) -> tuple[
    list[tuple[int, frozenset[str]]], dict[tuple[int, frozenset[str]], tuple[int, frozenset[str]]]
]:
    """The hybrid simulations the attribution at ``counts`` needs: ``(to run, twins)``.

    Memory capacity enters a run only through the micro-batch that fits (capacity and reserved
    memory are read by the feasibility check and reported, nothing else; the seeds do not
    depend on the system's name). A hybrid with B's memory capacity whose micro-batches fit
    exactly as they do with A's is therefore the same simulation as the hybrid without it:
    ``twins`` maps it to that one, and only ``to run`` (largest node count first) is simulated.
    """
    import itertools
    from dataclasses import replace

    from scaling.model.analysis.attribution import COMPONENTS, hybrid

    mem = "memory capacity"
    subsets = [
        frozenset(c)
        for k in range(len(COMPONENTS) + 1)
        for c in itertools.combinations(COMPONENTS, k)
    ]
    run: list[tuple[int, frozenset[str]]] = []
    twins: dict[tuple[int, frozenset[str]], tuple[int, frozenset[str]]] = {}
    for n in sorted(counts, reverse=True):
        job = replace(base, nodes=n)
        look = mem in COMPONENTS and job.training.micro_batch <= _MAX_TWIN_MICRO_BATCH
        for s in subsets:
            if look and mem in s:
                other = s - {mem}
                fits = _feasible_micro_batches(replace(job, system=hybrid(a, b, s)))
                if fits == _feasible_micro_batches(replace(job, system=hybrid(a, b, other))):
                    twins[(n, s)] = (n, other)
                    continue
            run.append((n, s))
    return run, twins


def attribute_many(
    base: Any, a: Any, b: Any, counts: list[int], executor: Any, bar: Any = None
) -> list[Any]:
    """:func:`scaling.model.analysis.attribution.attribute` at each node count, its hybrid
    simulations (of :func:`hybrid_plan`) run as independent calls on ``executor``: the same
    numbers as the serial function. ``bar``: a progress bar to advance per simulation."""
    from dataclasses import replace

    from scaling.model.analysis.attribution import COMPONENTS, Attribution, shapley

    run, twins = hybrid_plan(base, a, b, counts)
    args = [(replace(base, nodes=n), a, b, tuple(sorted(s))) for n, s in run]
    values: dict[tuple[int, frozenset[str]], float] = {}
    for i, ok, value in executor.imap_unordered(_hybrid_point, args):
        if not ok:
            n, s = run[i]
            what = "+".join(sorted(s)) or "none"
            _fail(f"--vs: the hybrid at {n} nodes with {what} from {b.name} failed: {value}")
        values[run[i]] = value
        if bar is not None:
            bar.update(1)
    for twin, same in twins.items():
        values[twin] = values[same]
    out = []
    for n in counts:
        # as attribute(): Shapley over v(S) - v(empty); the gap is v(empty) - v(all): negate
        def value(s: frozenset[str], n: int = n) -> float:
            return values[(n, s)]

        raw = shapley(value)
        parts = {k: -x for k, x in raw.items()}
        v_a, v_b = values[(n, frozenset())], values[(n, frozenset(COMPONENTS))]
        out.append(Attribution(a.name, b.name, n, v_a, v_b, parts))
    return out


def _explain_vs(
    config: Path,
    overrides: tuple[str, ...],
    vs: tuple[str, str],
    nodes: str | None,
    out: Path | None,
    p: Printer,
    jobs: int | None,
    progress: bool | None,
) -> None:
    """Shapley attribution of the throughput gap between two systems (see model.attribution)."""
    import logging
    import time

    from scaling.io.attribution_plot import plot_attribution
    from scaling.io.config import load_experiment, run_size_error
    from scaling.io.topology import load_system
    from scaling.model.analysis.attribution import COMPONENTS
    from scaling.sweep.executors import make_executor

    a_name, b_name = vs
    exp = load_experiment(config, [*overrides, f"systems=[{a_name}]"])
    base = exp.jobs()[0]
    a, b = load_system(a_name).spec, load_system(b_name).spec
    try:
        counts = [int(x) for x in nodes.split(",")] if nodes else sorted(set(exp.config.nodes))
    except ValueError:
        _fail(f"--nodes {nodes!r}: expected a comma list of node counts, e.g. 1,8,64,256")
    if any(c < 1 for c in counts):
        _fail(f"--nodes {nodes!r}: node counts must be >= 1")
    for c in counts:  # before any network is built (the config's own nodes are checked)
        too_big = run_size_error(c, base.system.devices_per_node, exp.config.simulation.max_ranks)
        if too_big:
            _fail(f"--nodes {nodes}: got {c} nodes: {too_big}")
    n_sims = len(hybrid_plan(base, a, b, counts)[0])
    t0 = time.perf_counter()
    with (
        make_executor(jobs=jobs) as ex,
        progress_bar(
            total=n_sims, desc=f"{b_name} vs {a_name}", unit="sim", enabled=want_progress(progress)
        ) as bar,
    ):
        logging.getLogger(__name__).info(
            "explain --vs: %d simulations for %d node count(s) x %d hybrids (the others differ "
            "only in a memory capacity that fits the same micro-batches) on %s",
            n_sims,
            len(counts),
            2 ** len(COMPONENTS),
            ex.describe(),
        )
        results = attribute_many(base, a, b, counts, ex, bar)
    logging.getLogger(__name__).info("explain --vs: %.1f s", time.perf_counter() - t0)
    p.say(
        f"{b_name} vs {a_name}: {base.shape.name}, {base.strategy.label}; per-device "
        "throughput (tokens/s) and each component's Shapley part of the gap (share)"
    )
    head = f"{'component':<22}" + "".join(f"{str(r.nodes) + ' nodes':>17}" for r in results)
    lines = [head, "-" * len(head)]
    lines.append(f"{a_name:<22}" + "".join(f"{r.value_a:>17,.0f}" for r in results))
    lines.append(f"{b_name:<22}" + "".join(f"{r.value_b:>17,.0f}" for r in results))
    lines.append(f"{'gap':<22}" + "".join(f"{r.gap:>17,.0f}" for r in results))
    for comp in COMPONENTS:
        cells = "".join(f"{r.parts[comp]:>10,.0f} {r.shares().get(comp, 0):>6.1%}" for r in results)
        lines.append(f"{comp:<22}{cells}")
    net = ("scale-up link", "scale-out network", "collective library")
    inter = [sum(r.shares().get(c, 0) for c in net) for r in results]
    lines.append(f"{'interconnect+library':<22}" + "".join(f"{x:>17.1%}" for x in inter))
    import pandas as pd

    frame = pd.DataFrame(
        [
            {
                "nodes": r.nodes,
                "system_a": a_name,
                "system_b": b_name,
                "tokens_per_s_per_device_a": r.value_a,
                "tokens_per_s_per_device_b": r.value_b,
                "gap_tokens_per_s_per_device": r.gap,
                "component": comp,
                "part_tokens_per_s_per_device": r.parts[comp],
                "share": r.shares().get(comp, 0.0),
            }
            for r in results
            for comp in COMPONENTS
        ]
    )
    p.table(frame, text="\n".join(lines))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        png = plot_attribution(results, out / f"attribution_{a_name}_vs_{b_name}.png")
        p.say(f"wrote {png}")


@main.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@_set_option
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Most exposed collectives to list.",
)
@click.option(
    "--vs", nargs=2, default=None, metavar="A B", help="Attribute the gap between systems A and B."
)
@click.option("--nodes", default=None, help="With --vs: node counts, e.g. 1,8,64,256.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="With --vs: folder for the bar chart.",
)
@jobs_option(
    "With --vs: processes for its 64 simulations per node count (default: one per CPU; "
    "1 = in process)."
)
@progress_option
@format_option
@_user_errors
def explain(
    config: Path,
    overrides: tuple[str, ...],
    top: int,
    vs: tuple[str, str] | None,
    nodes: str | None,
    out_dir: Path | None,
    n_jobs: int | None,
    progress: bool | None,
    fmt: str,
) -> None:
    """Where each point's step went (compute, exposed communication by collective and tier).

    With --vs A B: why B trails A — the per-device throughput gap split into peak compute,
    memory bandwidth, memory capacity, scale-up link, scale-out network and collective library by
    Shapley values over swapping those components between the systems.

    \b
    Example: scaling explain configs/mlu-vs-gpu.yaml --set nodes=[64] --vs dgx-a100 mlu370-x8
    """
    p = Printer(fmt)
    if vs:
        _explain_vs(config, overrides, vs, nodes, out_dir, p, n_jobs, progress)
        return
    for flag, given in (
        ("--out", out_dir is not None),
        ("--nodes", nodes is not None),
        ("--jobs", n_jobs is not None),
    ):
        if given:
            _fail(f"{flag}: only used with --vs A B (the attribution between two systems)")
    from scaling.app.api import feasibility_errors
    from scaling.io.config import load_experiment
    from scaling.model.analysis.explain import explain_step
    from scaling.model.hardware.compute import step_compute_breakdown
    from scaling.model.simulation import run_job_detailed

    exp = load_experiment(config, list(overrides))
    errs = feasibility_errors(exp)
    if errs:
        raise InfeasibleJobError("; ".join(errs))
    lines: list[str] = []
    rows: list[dict[str, Any]] = []
    bar = progress_bar(exp.jobs(), desc="explain", enabled=want_progress(progress))
    for job in bar:
        res, tl = run_job_detailed(job, trace=True)
        b = explain_step(tl, len(res.steps) - 1)
        point = {"system": res.system, "nodes": res.nodes, "devices": res.devices}
        point |= {"model": res.model, "strategy": res.strategy, "step_time_s": b.step_s}

        def row(kind: str, label: str, t: float, point: dict[str, Any] = point) -> None:
            rows.append(point | {"kind": kind, "label": label, "time_s": t})

        lines.append(
            f"{res.system} x{res.nodes} nodes ({res.devices} accel), {res.model}, {res.strategy}: "
            f"step {b.step_s * 1e3:.2f} ms"
        )
        for label, t in b.parts():
            lines.append(f"  {label:<40} {t * 1e3:10.2f} ms  {t / b.step_s:6.1%}")
            row("step", label, t)
        total = sum(t for _, t in b.parts())
        lines.append(f"  {'total':<40} {total * 1e3:10.2f} ms")
        lines.append("  compute by kernel kind (forward + backward, device time):")
        for lab, t in step_compute_breakdown(job):
            lines.append(f"    {lab:<38} {t * 1e3:10.2f} ms")
            row("kernel", lab, t)
        if top and b.exposed_by_collective:
            lines.append("  most exposed collectives:")
            for lab, t in sorted(b.exposed_by_collective.items(), key=lambda kv: -kv[1])[:top]:
                lines.append(f"    {lab:<46} {t * 1e3:8.2f} ms")
                row("exposed collective", lab, t)
    import pandas as pd

    p.table(pd.DataFrame(rows), text="\n".join(lines))


@main.command()
@format_option
@_user_errors
def systems(fmt: str) -> None:
    """List the system catalog with the confidence of each headline number.

    \b
    Example: scaling systems --format csv > systems.csv
    """
    from scaling.io.topology import available_systems, load_system

    p = Printer(fmt)
    lines: list[str] = []
    rows: list[dict[str, Any]] = []
    for name in available_systems():
        s = load_system(name)
        d, n = s.schema.device, s.schema.node
        peak = d.peak_TFLOPS.get("bf16") or next(iter(d.peak_TFLOPS.values()))
        rows.append(
            {
                "system": name,
                "description": s.schema.description,
                "peak_bf16_TFLOPS": peak.value,
                "peak_confidence": peak.confidence,
                "mem_GB": d.mem_GB.value,
                "mem_bw_GBps": d.mem_bw_GBps.value,
                "devices_per_node": n.devices.value,
                "device": d.name,
                "fabric": n.fabric.kind.value,
                "link_bw_GBps": n.fabric.link_bw_GBps.value,
                "nics": n.nics.count.value,
                "nic_rate_Gbps": n.nics.rate_Gbps.value,
                "power_busy_W": d.power_busy_W.value,
                "library": s.library.name,
                "algorithms": ",".join(s.library.algorithms),
            }
        )
        echo = lines.append
        echo(f"{name}: {s.schema.description}")
        echo(
            f"  peak bf16 {peak.value:g} TFLOPS [{peak.confidence}]; memory {d.mem_GB.value:g} GB "
            f"[{d.mem_GB.confidence}] at {d.mem_bw_GBps.value:g} GB/s [{d.mem_bw_GBps.confidence}]"
        )
        echo(
            f"  node: {n.devices.value} x {d.name}, {n.fabric.kind.value} "
            f"{n.fabric.link_bw_GBps.value:g} GB/s/dir [{n.fabric.link_bw_GBps.confidence}]; "
            f"{n.nics.count.value} x {n.nics.rate_Gbps.value:g} Gb/s NICs [{n.nics.count.confidence}]"
        )
        echo(
            f"  power {d.power_busy_W.value:g} W busy [{d.power_busy_W.confidence}]; "
            f"library {s.library.name} ({', '.join(s.library.algorithms)})"
        )
    import pandas as pd

    p.table(pd.DataFrame(rows), text="\n".join(lines))


@main.command()
@format_option
def metrics(fmt: str) -> None:
    """Print every metric's name, unit and definition.

    \b
    Example: scaling metrics --format markdown
    """
    import pandas as pd

    from scaling.model.analysis.metrics import METRICS

    text = "\n".join(f"{m.name} [{m.unit}]: {m.definition}" for m in METRICS.values())
    frame = pd.DataFrame(
        [{"name": m.name, "unit": m.unit, "definition": m.definition} for m in METRICS.values()]
    )
    Printer(fmt).table(frame, (list(frame.columns), frame.values.tolist(), "lll"), text=text)


from scaling.app.catalog_cmd import examples as examples_command  # noqa: E402
from scaling.app.catalog_cmd import schema as schema_command  # noqa: E402
from scaling.app.golden_cmd import baseline, compare  # noqa: E402
from scaling.app.sweep_cmd import plot as plot_command  # noqa: E402
from scaling.app.sweep_cmd import sweep as sweep_command  # noqa: E402
from scaling.app.uncertainty_cmd import sensitivity as sensitivity_command  # noqa: E402
from scaling.app.validate import validate as validate_command  # noqa: E402

main.add_command(baseline)
main.add_command(compare)
main.add_command(sweep_command)
main.add_command(plot_command)
main.add_command(validate_command)
main.add_command(schema_command)
main.add_command(examples_command)
main.add_command(sensitivity_command)


if __name__ == "__main__":  # pragma: no cover
    main()
