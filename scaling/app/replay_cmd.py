"""``scaling replay``: a recorded job's collective schedule run on any catalog system.

The recording (any format ``schedule --compare`` reads) gives one rank's calls per iteration;
:mod:`scaling.io.recordings.replayable` turns them into the model's replayed calls and
:mod:`scaling.model.strategies.replay` runs them as a strategy on the target system, with the
compute between calls from the recording's kernel times (scaled by the devices' peak ratio),
from a described model (``--config``), or none. The output is ``explain``'s breakdown of each
iteration (compute, exposed communication per op and tier) and the most exposed calls; with
``--uncertainty N`` each row's median and 5-95 % interval over N samples of the target's
uncertain inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from scaling.app.exits import fail, user_errors
from scaling.app.output import Printer, format_option, set_option

#: the placeholder model of a replay without ``--config`` (its shape prices nothing: no
#: compute, no memory, no FLOPs come from it)
_PLACEHOLDER_MODEL = "gpt3-125m"


@dataclass(frozen=True)
class Replayed:
    """One replay: its job (strategy :class:`ReplaySpec`), the recording, and what it said."""

    job: Any
    recording: Any
    notes: tuple[str, ...]


def replay_job(
    recording: Path,
    system: str,
    nodes: int,
    devices_per_node: int | None = None,
    config: Path | None = None,
    recorded_on: str | None = None,
    network: str = "flow",
    overrides: tuple[str, ...] = (),
) -> tuple[Replayed, Any]:
    """The replay's job and the loaded experiment it was built from (for uncertainty samples).

    Raises:
        RecordingError: the recording is unreadable, cannot be replayed, or does not match the
            target (world size, model).
        ConfigError: an unknown system, a bad config or override.
    """
    from scaling.app.schedule_compare import name_map_of
    from scaling.io.config import experiment_from_dict, load_experiment
    from scaling.io.recordings import RecordingError, load_recording
    from scaling.io.recordings.replayable import replay_schedule
    from scaling.model.strategies.replay import ComputeSource, ReplaySpec

    rec = load_recording(recording)
    setup, steps, timed = replay_schedule(rec)
    sets = [f"systems=[{system}]", f"nodes=[{nodes}]", f"simulation.network={network}"]
    if config is not None:
        exp = load_experiment(config, [*overrides, *sets])
    else:
        base = {"model": _PLACEHOLDER_MODEL, "systems": [system], "nodes": [nodes]}
        exp = experiment_from_dict(base | {"strategy": {"kind": "ddp"}}, [*overrides, *sets])
    (job,) = exp.jobs()
    per_node = devices_per_node or job.system.devices_per_node
    notes = [f"not in the recording ({rec.importer}): {', '.join(rec.cannot_recover)}"]
    compute = ComputeSource.NONE
    peak = 0.0
    described = None
    if config is not None:
        if job.strategy.model_parallel != 1:
            raise RecordingError(
                f"{config}: strategy: got model-parallel size {job.strategy.model_parallel}; "
                "expected a data-parallel description (DDP, FSDP) for compute from the model"
            )
        if rec.params:
            name_map_of(rec, job, None)  # raises on another model
        compute, described = ComputeSource.MODEL, job.strategy
        notes.append(f"compute: {job.shape.name} on {system}'s device model ({config})")
    elif timed:
        if recorded_on is None:
            raise RecordingError(
                f"{recording}: the trace's kernel times were measured on "
                f"{rec.device or 'an unnamed device'}: give --recorded-on SYSTEM (its catalog "
                "system) to scale them, or --config to take compute from a model"
            )
        src = experiment_from_dict(
            {"model": _PLACEHOLDER_MODEL, "systems": [recorded_on], "nodes": [1]}
        ).jobs()[0]
        dtype = job.training.dtype
        peak = src.system.device.peak(dtype)
        compute = ComputeSource.TRACE
        ratio = peak / job.system.device.peak(dtype)
        notes.append(
            f"compute: the trace's kernel times x {ratio:.3g} ({recorded_on} "
            f"{peak / 1e12:.0f} / {system} {job.system.device.peak(dtype) / 1e12:.0f} "
            f"TFLOP/s {dtype} dense peak)"
        )
    else:
        if recorded_on is not None:
            raise RecordingError(f"{recording}: --recorded-on: the recording has no kernel times")
        notes.append("compute: none recorded (communication only; give --config for a model's)")
    spec = ReplaySpec(rec.rank, rec.world_size, per_node, setup, steps, compute, peak, described)
    if why := spec.placement_error(job.devices, job.system.devices_per_node):
        raise RecordingError(f"{recording}: {why}")
    sim = replace(job.sim, warmup_steps=0, steps=len(steps), simulate_all_ranks=False)
    job = replace(job, strategy=spec, sim=sim)
    return Replayed(job, rec, tuple(notes)), exp


def explain_replay(job: Any, top: int = 5) -> tuple[list[dict[str, Any]], Any]:
    """Simulate the replay; per iteration the rows of ``explain`` (kind ``step``: its parts,
    adding up to the step; ``exposed collective``: the ``top`` most exposed calls) and the
    timeline (its collectives in issue order: ``analysis.schedule.rank_schedule``)."""
    from scaling.model.analysis.explain import explain_step
    from scaling.model.simulation import run_job_detailed

    res, tl = run_job_detailed(job, trace=True)
    device = job.strategy.device(job.system.devices_per_node)
    rows: list[dict[str, Any]] = []
    for k in range(len(res.steps)):
        b = explain_step(tl, k, device)
        for label, t in b.parts():
            rows.append({"step": k, "kind": "step", "label": label, "time_s": t})
        rows.append({"step": k, "kind": "step", "label": "step time", "time_s": b.step_s})
        worst = sorted(b.exposed_by_collective.items(), key=lambda kv: -kv[1])[:top]
        for label, t in worst:
            rows.append({"step": k, "kind": "exposed collective", "label": label, "time_s": t})
    return rows, tl


def replayed_schedule(tl: Any, step: int, device: int) -> list[dict[str, Any]]:
    """The calls the recorded rank (on target device ``device``) issued in ``step``, in issue
    order (``rank_schedule``'s rows). The one simulated process is the recorded rank itself,
    not rank 0, so its own collectives are read, not rank 0's moved to it."""
    from scaling.model.analysis.schedule import rank_schedule

    return rank_schedule(replace(tl, all_ranks=True), step, device)


@click.command()
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--system", required=True, help="Catalog system to run the job on (scaling systems).")
@click.option("--nodes", type=click.IntRange(min=1), required=True, help="Nodes of that system.")
@click.option(
    "--devices-per-node",
    type=click.IntRange(min=1),
    default=None,
    help="Recorded ranks per node (default: the system's devices per node); nodes x this must "
    "be the recorded world size.",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    default=None,
    help="Experiment config describing the recorded job's model, training and strategy: "
    "compute between calls from its model on the target's device model (and the recording's "
    "parameters checked against it).",
)
@click.option(
    "--recorded-on",
    default=None,
    help="Catalog system a Kineto trace with kernel times was recorded on: its kernel times "
    "are scaled by that device's dense peak / the target's.",
)
@click.option(
    "--network",
    type=click.Choice(["flow", "analytic"]),
    default="flow",
    show_default=True,
    help="flow: concurrent calls share links (max-min fair); analytic: each call priced alone.",
)
@click.option(
    "--uncertainty",
    type=click.IntRange(min=2, max=4096),
    default=None,
    help="Samples of the target system's uncertain inputs: each row's median and 5-95 % interval.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --uncertainty.")
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Most exposed calls listed per iteration.",
)
@set_option
@format_option
@user_errors
def replay(
    recording: Path,
    system: str,
    nodes: int,
    devices_per_node: int | None,
    config: Path | None,
    recorded_on: str | None,
    network: str,
    uncertainty: int | None,
    seed: int,
    top: int,
    overrides: tuple[str, ...],
    fmt: str,
) -> None:
    """Run a recorded job's collective schedule on any catalog system, with explain rows.

    RECORDING is any file `schedule --compare` reads (scaling.record's rank<R>.jsonl, a
    Flight Recorder dump, a Kineto trace, an NCCL_DEBUG=INFO log). Its calls (op, bytes,
    group, order, phase per iteration) run on the system's network and collective library;
    compute between calls comes from the trace's kernel times scaled by the devices' peak
    ratio (--recorded-on), from a described model (--config), or is left out. Prints per
    iteration where the time went: compute, exposed communication per op and tier, the most
    exposed calls; --uncertainty N adds intervals.

    \b
    Example: scaling replay run/rank0.jsonl --system mlu370-x8 --nodes 1 --devices-per-node 2
    """
    import pandas as pd

    from scaling.io.recordings import RecordingError

    p = Printer(fmt)
    try:
        rp, exp = replay_job(
            recording, system, nodes, devices_per_node, config, recorded_on, network, overrides
        )
    except RecordingError as e:
        fail(str(e))
    rec, job = rp.recording, rp.job
    p.say(
        f"replay of {rec.path} ({rec.importer}): rank {rec.rank} of {rec.world_size}, "
        f"{len(job.strategy.steps)} iteration(s), on {system} x{nodes} nodes "
        f"({job.strategy.ranks_per_node} ranks per node, {network} network)"
    )
    for note in rp.notes:
        p.say(f"  {note}")
    rows, _ = explain_replay(job, top)
    df = pd.DataFrame(rows)
    if uncertainty:
        df = _with_intervals(df, exp, job, uncertainty, seed)
    p.table(df, text=_text(df))


def _text(df: Any) -> str:
    lines = []
    ranged = "p5_s" in df.columns
    for step, part in df.groupby("step", sort=True):
        total = float(part.loc[part.label == "step time", "time_s"].iloc[0])
        lines.append(f"iteration {step}: step {total * 1e3:.3f} ms")
        for r in part.itertuples():
            if r.label == "step time":
                continue
            indent = "    " if r.kind == "exposed collective" else "  "
            share = f"{r.time_s / total:6.1%}" if total > 0 and r.kind == "step" else "      "
            text = f"{indent}{r.label:<46} {r.time_s * 1e3:10.3f} ms {share}"
            if ranged:
                text += f"  [{r.p5_s * 1e3:.3f} - {r.p95_s * 1e3:.3f}]"
            lines.append(text)
    return "\n".join(lines)


def _with_intervals(df: Any, exp: Any, job: Any, n: int, seed: int) -> Any:
    """Each row's median and 5-95 % interval over ``n`` samples of the target's uncertain
    inputs (the nominal row's labels; a label absent from a sample counts 0 s there)."""
    import numpy as np

    from scaling.sweep.branches import P_HI, P_LO
    from scaling.sweep.uncertainty import run_seeds, sample_jobs, uncertain_inputs, unit_design

    inputs = uncertain_inputs(exp)
    design = unit_design(n, len(inputs), seed)
    jobs, _ = sample_jobs(exp, inputs, design, run_seeds(n, seed))
    samples = []
    for j in jobs:
        # every call's row, not only the most exposed: a sample's top calls may be others
        sampled = replace(job, system=j.system, sim=replace(job.sim, seed=j.sim.seed))
        rows, _ = explain_replay(sampled, top=10**9)
        samples.append({(r["step"], r["kind"], r["label"]): r["time_s"] for r in rows})
    keys = list(zip(df.step, df.kind, df.label, strict=True))
    values = np.array([[s.get(k, 0.0) for k in keys] for s in samples])
    df = df.copy()
    df["median_s"] = np.median(values, axis=0)
    df["p5_s"] = np.percentile(values, P_LO, axis=0)
    df["p95_s"] = np.percentile(values, P_HI, axis=0)
    return df
