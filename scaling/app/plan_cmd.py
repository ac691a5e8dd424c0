"""``scaling plan``: each system's fastest feasible configuration at each node count."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import click

from scaling.app.exits import fail, user_errors
from scaling.app.output import (
    Printer,
    config_argument,
    format_option,
    jobs_option,
    progress_bar,
    progress_option,
    set_option,
    want_progress,
)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _ints(opt: str, text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"{opt} {text!r}: expected comma-separated positive integers, e.g. 1,2,4")
    if not vals or min(vals) < 1:
        fail(f"{opt} {text!r}: expected comma-separated positive integers, e.g. 1,2,4")
    return vals


def _words(opt: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    vals = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in vals if v not in allowed]
    if not vals or bad:
        got = bad[0] if bad else text
        fail(f"{opt} {got!r}: expected a comma-separated subset of {','.join(allowed)}")
    return vals


@click.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@set_option
@click.option(
    "--strategies", default="ddp,fsdp,megatron", show_default=True, help="Strategy kinds to try."
)
@click.option("--micro-batches", default="1,2,4,8", show_default=True, help="Micro-batch sizes.")
@click.option(
    "--checkpointing",
    default="none,full",
    show_default=True,
    help="Activation checkpointing modes to try.",
)
@click.option(
    "--sharding",
    default="full_shard,shard_grad_op,hybrid_shard",
    show_default=True,
    help="FSDP sharding strategies to try.",
)
@click.option("--tp", default="1,2,4,8", show_default=True, help="Megatron tensor sizes.")
@click.option("--pp", default="1,2,4,8,16", show_default=True, help="Megatron pipeline sizes.")
@click.option(
    "--ep",
    default=None,
    help="Megatron expert-parallel sizes for a MoE model (default: every divisor of its routed "
    "experts that divides the data-parallel size).",
)
@click.option(
    "--global-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Sequences per step for every candidate (default: the experiment's own at each node "
    "count, as its first strategy runs it: weak scaling).",
)
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="Candidates per point simulated on the flow network after the analytic prune.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output folder (default: results/<experiment name>/plan); a rerun resumes from it.",
)
@click.option(
    "--uncertainty",
    type=click.IntRange(min=0, max=4096),
    default=0,
    show_default=True,
    help="Re-run each system's --top configurations over N samples of its assumption ranges: "
    "the best's interval, how often the winner changes, best-vs-best with intervals.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --uncertainty: seed of the samples.",
)
@jobs_option("Processes to run on (default: one per CPU; 1 = in process).")
@progress_option
@format_option
@user_errors
def plan(
    config: Path,
    overrides: tuple[str, ...],
    strategies: str,
    micro_batches: str,
    checkpointing: str,
    sharding: str,
    tp: str,
    pp: str,
    ep: str | None,
    global_batch: int | None,
    top: int,
    keep: int,
    out_dir: Path | None,
    uncertainty: int,
    seed: int,
    n_jobs: int | None,
    progress: bool | None,
    fmt: str,
) -> None:
    """Each system's fastest feasible configurations at each node count of CONFIG.

    Enumerates DDP, FSDP (sharding strategies) and Megatron TP x PP x DP with ZeRO-1 (and
    expert parallelism for a MoE model) over
    micro-batch sizes and activation checkpointing at the same global batch, refuses what the
    config rules or memory rule out (counted by reason), prunes on the analytic network (the
    same tuner, no contention), simulates the --keep best on the flow network and prints the
    --top per system and node count, then each system's best against the others'. Writes
    plan.csv (every evaluation), best.csv and configs/<system>-n<nodes>-<rank>.yaml, which
    `scaling run` takes back.

    \b
    Example: scaling plan configs/mlu-vs-gpu.yaml --set nodes=[1,8,64] --strategies ddp,fsdp
    """
    import pandas as pd
    import yaml

    from scaling.io.config import load_experiment
    from scaling.io.files import atomic_write, make_dir
    from scaling.plan import PlanSpace
    from scaling.plan import plan as run_plan
    from scaling.plan.search import RANK_BY, best_vs_best, candidate_config
    from scaling.sweep.executors import make_executor

    try:
        space = PlanSpace(
            strategies=_words("--strategies", strategies, ("ddp", "fsdp", "megatron")),
            micro_batches=_ints("--micro-batches", micro_batches),
            checkpointing=_words("--checkpointing", checkpointing, ("none", "full")),
            fsdp_sharding=_words(
                "--sharding", sharding, ("full_shard", "shard_grad_op", "hybrid_shard")
            ),
            tensor=_ints("--tp", tp),
            pipeline=_ints("--pp", pp),
            expert_parallel=None if ep is None else _ints("--ep", ep),
        )
    except ValueError as err:
        fail(str(err))
    exp = load_experiment(config, list(overrides))
    out = out_dir or Path("results") / exp.config.name / "plan"
    make_dir(out)
    pr = Printer(fmt)
    bar = progress_bar(total=None, desc="planning", unit="sim", enabled=want_progress(progress))
    if seed and not uncertainty:
        fail(f"--seed {seed}: only used with --uncertainty N (the sampling seed)")
    intervals: list[dict[str, Any]] = []
    with make_executor(jobs=n_jobs) as ex, bar:
        result = run_plan(
            exp,
            space,
            global_batch=global_batch,
            keep=keep,
            executor=ex,
            out_dir=out,
            progress=bar.update,
        )
        if uncertainty:
            from scaling.plan.intervals import interval_rows, plan_intervals

            intervals = interval_rows(plan_intervals(result, top, uncertainty, seed, ex))
    best = pd.DataFrame(result.best_rows(top))
    cfg_dir = out / "configs"
    make_dir(cfg_dir)
    paths = []
    for p in result.points:
        for rank, e in enumerate(p.flow[:top], start=1):
            path = cfg_dir / f"{p.system}-n{p.nodes}-{rank}.yaml"
            doc = candidate_config(result.base, e.candidate, "flow")
            atomic_write(path, partial(_write_text, text=yaml.safe_dump(doc, sort_keys=False)))
            paths.append(path)
    best["config"] = [str(p) for p in paths]
    all_rows = pd.DataFrame(result.rows())
    atomic_write(out / "plan.csv", lambda t: all_rows.to_csv(t, index=False))
    atomic_write(out / "best.csv", lambda t: best.to_csv(t, index=False))
    bvb = pd.DataFrame(best_vs_best(result))
    if fmt != "table":
        pr.table(best)
        return
    for p in result.points:
        refused = sum(p.refused.values())
        pr.say(
            f"{p.system} at {p.nodes} nodes (global batch {p.global_batch} sequences): "
            f"{p.candidates} candidates, {refused} ruled out"
            + (
                " (" + ", ".join(f"{k}: {v}" for k, v in p.refused.most_common()) + ")"
                if refused
                else ""
            )
            + f", {len(p.analytic)} priced on the analytic network, {len(p.flow)} simulated on the flow network"
        )
        analytic = {e.candidate: e for e in p.analytic}
        shown = p.flow[:top] + [
            e for e in p.flow[top:] if e.candidate.configured and e.status == "ok"
        ]
        for e in shown:
            rank = p.flow.index(e) + 1
            m = e.metrics
            a = analytic[e.candidate].metrics.get("tokens_per_s_per_device", float("nan"))
            pr.say(
                f"  {rank}. {e.candidate.label:<44} {m['tokens_per_s_per_device']:>10,.0f} tok/s/dev"
                f"  MFU {m['mfu']:5.1%}  mem {m['peak_mem_GiB']:6.1f} GiB"
                f"  exposed comm {m['exposed_comm_share']:5.1%}  (analytic {a:,.0f})"
            )
        if p.best is not None:
            for e in p.flow:
                if e.candidate.configured and e.status == "ok" and e is not p.best:
                    gain = p.best.metrics[RANK_BY] / e.metrics[RANK_BY] - 1
                    pr.say(
                        f"     as configured, {e.candidate.label.removesuffix(' (as configured)')}"
                        f": {e.metrics[RANK_BY]:,.0f} tok/s/dev; the best is {gain:+.1%} faster"
                    )
    if len(bvb) > 1:
        pr.say("")
        pr.say(
            "best against best (tokens/s per device; efficiency against each system's own best at its fewest nodes):"
        )
        ratio = next(c for c in bvb.columns if c.startswith("ratio_to_"))
        for row in bvb.to_dict("records"):
            pr.say(
                f"  {row['system']:<14} {row['nodes']:>5} nodes  {row['tokens_per_s_per_device']:>10,.0f}"
                f"  efficiency {row['best_scaling_efficiency']:.3f}  {ratio} {row[ratio]:.3f}  ({row['best']})"
            )
        atomic_write(out / "best_vs_best.csv", lambda t: bvb.to_csv(t, index=False))
    if intervals:
        iv = pd.DataFrame(intervals)
        atomic_write(out / "plan_intervals.csv", lambda t: iv.to_csv(t, index=False))
        ratio = next(c for c in iv.columns if c.startswith("ratio_to_")).removesuffix("_median")
        pr.say("")
        pr.say(
            f"over {uncertainty} samples of the assumption ranges (median, 5-95 %), each system's "
            f"--top {top} re-run per sample:"
        )
        for r in intervals:
            pr.say(
                f"  {r['system']:<14} {r['nodes']:>5} nodes  best {r['best_median']:>10,.0f} "
                f"({r['best_p5']:,.0f}-{r['best_p95']:,.0f}) tok/s/dev  efficiency "
                f"{r['efficiency_median']:.3f} ({r['efficiency_p5']:.3f}-{r['efficiency_p95']:.3f})"
                f"  {ratio} {r[ratio + '_median']:.3f} ({r[ratio + '_p5']:.3f}-{r[ratio + '_p95']:.3f})"
                f"  winner unchanged in {r['winner_share']:.0%} of {r['samples_ok']} samples"
            )
    pr.say(f"wrote {out / 'plan.csv'}, {out / 'best.csv'} and {len(paths)} configs in {cfg_dir}")
