"""``scaling schedule``: the ordered collectives one rank issues in one step of a one-point
config, to check against a PyTorch job."""

from __future__ import annotations

from pathlib import Path

import click

from scaling.app.exits import fail, user_errors
from scaling.app.output import (
    config_argument,
    is_stdout,
    out_file_option,
    set_option,
)
from scaling.app.trace_cmd import one_job


@click.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@out_file_option("File to write (- = stdout).", default="-")
@click.option(
    "--step",
    default=None,
    help="Iteration to show: 0 = the first (DDP's single bucket), 'setup' = the DDP "
    "constructor's collectives, 'all' = every iteration, simulated once; default the steady "
    "state (2).",
)
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True
)
@click.option(
    "--compare",
    "recording",
    type=click.Path(path_type=Path),
    default=None,
    help="Compare with a recording (scaling.record's rank<R>.jsonl or its folder): per "
    "iteration the first difference and a summary; exit 1 on a mismatch. With --step all "
    "(the default here) every recorded iteration.",
)
@click.option(
    "--name-map",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML/JSON mapping your parameter names to the simulator's (default: the recording's "
    "named_parameters() paired in order).",
)
@set_option
@user_errors
def schedule(
    config: Path,
    out_file: Path,
    step: str | None,
    rank: int,
    fmt: str,
    recording: Path | None,
    name_map: Path | None,
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
    from scaling.model.simulation import one_process_stands_for_all, run_job_detailed

    exp, job = one_job(config, overrides, "schedule")
    if rank >= job.devices:
        fail(f"--rank {rank}: the job has {job.devices} ranks (0-{job.devices - 1})")
    if job.sim.simulate_all_ranks and one_process_stands_for_all(job):
        # the schedule is a rank's program (calls, bytes, groups, order; no times), the same on
        # every rank of such a job: one process instead of all (512 GPUs of GPT-3 175B FSDP:
        # ~1/500 of the events); rank_schedule moves rank 0's groups to the asked rank's
        job = replace(job, sim=replace(job.sim, simulate_all_ranks=False))
    if recording is not None or step == "all":
        from scaling.app.schedule_compare import schedule_extra

        schedule_extra(job, recording, name_map, step, rank, out_file)
    # iterations 0 and 1 differ from the rest (DDP's first bucket and its rebuild): simulate
    # far enough that the default shows a steady-state iteration
    from scaling.model.strategies.ddp import SETUP_STEP

    if step is None or step == "setup" or (step.isdigit() and len(step) < 7):
        shown = 2 if step is None else SETUP_STEP if step == "setup" else int(step)
    else:
        fail(f"--step {step!r}: expected an iteration number (0, 1, …) or 'setup'")
    limit = exp.config.simulation.max_micro_batches
    if (shown + 1) * job.training.grad_accum > limit:
        fail(
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
        from scaling.io.files import write_output_text  # atomic: no partial file on a full disk

        write_output_text(out_file, text)
        click.echo(
            f"wrote {out_file}: {len(calls)} collectives of rank {rank} in step {shown} "
            f"({res.system} x{res.nodes} nodes, {res.strategy})",
            err=True,
        )
