"""``scaling trace``: one steady-state step of a one-point config as Chrome Trace Event JSON; and
:func:`one_job`, the one point that ``trace`` and ``schedule`` look at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scaling.app.exits import fail, user_errors
from scaling.app.output import (
    config_argument,
    is_stdout,
    out_file_option,
    set_option,
)


def _parse_ranks(text: str | None, devices: int) -> list[int]:
    """The ranks of ``--ranks`` (default: the first 16)."""
    if not text:
        return list(range(min(devices, 16)))
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            fail(f"--ranks {text!r}: expected ranks like 0-15 or 0,8,16")
        if not 0 <= a <= b < devices:
            fail(f"--ranks {text!r}: ranks must lie in 0..{devices - 1}")
        out += range(a, b + 1)
    return sorted(set(out))


def one_job(config: Path, overrides: tuple[str, ...], what: str) -> tuple[Any, Any]:
    """The experiment of ``config`` and its one job, tracing every rank when there are at most
    512; exits 2 when the config has more than one point (``what`` names the command)."""
    from dataclasses import replace

    from scaling.io.config import load_experiment

    exp = load_experiment(config, list(overrides))
    jobs = exp.jobs()
    if len(jobs) != 1:
        fail(
            f"{config}: {what} needs one point but the config has {len(jobs)} (systems x nodes); "
            "narrow it, e.g. --set systems=[mlu370-x8] --set nodes=[64]"
        )
    job = jobs[0]
    # trace every rank when there are not too many: noise and HSDP groups differ per rank
    if job.devices <= 512:
        job = replace(job, sim=replace(job.sim, simulate_all_ranks=True))
    return exp, job


@click.command()
@click.argument("config", type=click.Path(path_type=Path), callback=config_argument)
@out_file_option("Trace JSON to write (- = stdout).", required=True)
@click.option(
    "--ranks", default=None, help="Ranks to include, e.g. 0-15 or 0,8 (default: the first 16)."
)
@click.option(
    "--links",
    "n_links",
    type=click.IntRange(min=0, max=1000),
    default=8,
    show_default=True,
    help="Counter tracks of the N busiest links' rates (GB/s) over the step (flow network; "
    "0 = none).",
)
@set_option
@user_errors
def trace(
    config: Path, out_file: Path, ranks: str | None, n_links: int, overrides: tuple[str, ...]
) -> None:
    """Write one steady-state step as Chrome Trace Event JSON (open it in ui.perfetto.dev).

    A process per traced rank (compute and communication tracks) and, on the flow network, a
    ``network`` process with a counter track per busiest link.

    \b
    Example: scaling trace mlu-vs-gpu --set systems=[dgx-a100] --set nodes=[2] --out step.json
    """
    import json

    from scaling.io.trace import chrome_trace
    from scaling.model.simulation import run_job_detailed

    exp, job = one_job(config, overrides, "trace")
    res, tl = run_job_detailed(job, trace=True, links=n_links > 0)
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
    doc = chrome_trace(tl, step, chosen, meta, n_links)
    text = json.dumps(doc, allow_nan=False)  # strict JSON: chrome_trace keeps numbers finite
    if is_stdout(out_file):
        click.echo(text)
    else:
        from scaling.io.files import write_output_text  # atomic: no partial file on a full disk

        write_output_text(out_file, text)
    click.echo(
        f"wrote {out_file}: step {step} of {res.system} x{res.nodes} nodes ({res.strategy}), "
        f"{len(chosen)} ranks, {len(doc['traceEvents'])} events; open it in ui.perfetto.dev",
        err=is_stdout(out_file),
    )
