"""``scaling schedule --compare`` and ``--step all``: the simulated schedule against a recording.

The job is simulated once, far enough for every recorded iteration; each iteration of the
recorded rank is compared with the simulated one, collective by collective, on op, bytes, dtype,
group ranks, phase, micro-batch (with accumulation), DDP bucket (index and parameters) and FSDP
unit. The user's parameter names are mapped to the simulator's by the recording's
``named_parameters()`` list (same tensors in the same registration order) or by a name map.
Anything the recording's format cannot recover is left unchecked and said so.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import click

from scaling.app.exits import fail
from scaling.io.errors import read_yaml
from scaling.io.recordings import (
    SETUP,
    WHOLE,
    RecordedCall,
    Recording,
    RecordingError,
    load_recording,
)
from scaling.model.analysis.schedule import TORCH_DTYPES, rank_schedule
from scaling.model.job import Job
from scaling.model.simulation import one_process_stands_for_all, run_job_detailed
from scaling.model.strategies.ddp import SETUP_STEP

StepKey = int | str


@dataclass(frozen=True, slots=True)
class StepResult:
    """How one iteration compares.

    Attributes:
        step: the iteration (``setup`` for wrapper construction).
        recorded / simulated: collectives in each.
        exact: every collective equal in every checked field.
        count: as many collectives.
        nbytes: the same bytes per op (sums).
        order: the same op and group sequence.
        first: the first difference, one line (None when exact).
    """

    step: StepKey
    recorded: int
    simulated: int
    exact: bool
    count: bool
    nbytes: bool
    order: bool
    first: str | None


def name_map_of(recording: Recording, job: Job, map_file: Path | None) -> dict[str, str]:
    """The user's parameter name -> the simulator's.

    With ``map_file`` (YAML or JSON mapping user name -> simulator name), that; otherwise the
    recording's parameter list paired in order with the simulator's, which must hold the same
    tensor sizes. Raises :class:`RecordingError` when the models differ.
    """
    sim = job.shape.param_tensors()
    if map_file is not None:
        data, _ = read_yaml(map_file, "name map")
        known = {n for n, _ in sim}
        bad = [v for v in data.values() if v not in known]
        if bad:
            raise RecordingError(
                f"{map_file}: {bad[0]!r} is not a parameter of the config's model "
                f"(expected names like {sim[0][0]!r})"
            )
        return {str(k): str(v) for k, v in data.items()}
    if not recording.params:
        return {n: n for n, _ in sim}  # unnamed recording: the simulator's names
    rec_sizes = [k for _, k in recording.params]
    sim_sizes = [k for _, k in sim]
    if rec_sizes != sim_sizes:
        where = next(
            (i for i, (a, b) in enumerate(zip(rec_sizes, sim_sizes, strict=False)) if a != b),
            min(len(rec_sizes), len(sim_sizes)),
        )
        rec_at = recording.params[where] if where < len(rec_sizes) else ("(none)", 0)
        sim_at = sim[where] if where < len(sim) else ("(none)", 0)
        raise RecordingError(
            f"{recording.path}: other model: recorded {len(rec_sizes)} parameter tensors "
            f"({sum(rec_sizes):,} elements), the config's model has {len(sim_sizes)} "
            f"({sum(sim_sizes):,}); tensor {where} is {rec_at[0]} ({rec_at[1]:,}) vs "
            f"{sim_at[0]} ({sim_at[1]:,}) (give --name-map if the order differs)"
        )
    return {u: s for (u, _), (s, _) in zip(recording.params, sim, strict=True)}


def _unit_of(params: tuple[str, ...], names: dict[str, str], fallback: str | None) -> str | None:
    """The simulator's unit (``root`` or ``h{i}``) holding these user parameters."""
    mapped = {names.get(p, p) for p in params}
    blocks = {m.split(".", 1)[0] for m in mapped if m.startswith("h") and "." in m}
    if mapped and len(blocks) == 1 and all(m.startswith(next(iter(blocks)) + ".") for m in mapped):
        return next(iter(blocks))
    return "root" if mapped else fallback


def _recorded_row(c: RecordedCall, names: dict[str, str], accum: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "op": c.op,
        "bytes": c.nbytes,
        "dtype": TORCH_DTYPES.get(c.dtype or "", c.dtype),
        "group": list(c.group),
        "phase": c.phase,
    }
    if accum and c.phase != "setup":
        row["micro_batch"] = c.micro
    if c.bucket is not None:
        row["bucket"] = {"index": c.bucket, "params": [names.get(p, p) for p in c.params]}
    if c.unit is not None:
        row["unit"] = _unit_of(c.params, names, c.unit)
    return row


def _simulated_row(c: dict[str, Any], accum: bool) -> dict[str, Any]:
    keep = ["op", "bytes", "dtype", "group", "phase", "bucket", "unit"]
    row = {k: c[k] for k in keep if k in c}
    if accum and c["phase"] != "setup":
        row["micro_batch"] = c["micro_batch"]
    return row


def _show(row: dict[str, Any] | None, user: dict[str, str]) -> str:
    if row is None:
        return "nothing"
    text = f"{row['op']} {row['bytes']:,} B {row.get('dtype')} group {row.get('group')}"
    if "phase" in row:
        text += f" {row['phase']}"
    if "micro_batch" in row:
        text += f" micro {row['micro_batch']}"
    if "bucket" in row:
        ps = [user.get(p, p) for p in row["bucket"]["params"]]
        shown = ", ".join(ps[:3]) + (f", … ({len(ps)})" if len(ps) > 3 else "")
        text += f" bucket {row['bucket']['index']} [{shown}]"
    if "unit" in row:
        text += f" unit {row['unit']}"
    return text


def compare_step(
    step: StepKey,
    recorded: list[dict[str, Any]],
    simulated: list[dict[str, Any]],
    user: dict[str, str],
) -> StepResult:
    """Compare one iteration (rows as built by the recorded/simulated row functions)."""
    first = None
    for i in range(max(len(recorded), len(simulated))):
        a = recorded[i] if i < len(recorded) else None
        b = simulated[i] if i < len(simulated) else None
        if a != b:
            fields = sorted(k for k in (a or b or {}) if (a or {}).get(k) != (b or {}).get(k))
            first = (
                f"#{i} differs in {', '.join(fields)}: recorded {_show(a, user)}; "
                f"simulated {_show(b, user)}"
            )
            break

    def per_op(rows: list[dict[str, Any]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in rows:
            out[r["op"]] = out.get(r["op"], 0) + r["bytes"]
        return out

    def seq(rows: list[dict[str, Any]]) -> list[tuple[str, tuple[int, ...]]]:
        return [(r["op"], tuple(r["group"])) for r in rows]

    return StepResult(
        step,
        len(recorded),
        len(simulated),
        first is None,
        len(recorded) == len(simulated),
        per_op(recorded) == per_op(simulated),
        seq(recorded) == seq(simulated),
        first,
    )


def simulate_steps(job: Job, last: int, rank: int) -> dict[StepKey, list[dict[str, Any]]]:
    """Simulate ``job`` once through iteration ``last``; rank ``rank``'s schedule of the setup
    and of every iteration 0 … ``last``."""
    sim = replace(job.sim, warmup_steps=0, steps=max(last + 1, 1))
    if rank and not one_process_stands_for_all(job):
        sim = replace(sim, simulate_all_ranks=True)  # another rank's own groups and order
    _, tl = run_job_detailed(replace(job, sim=sim), trace=True)
    out: dict[StepKey, list[dict[str, Any]]] = {SETUP: rank_schedule(tl, SETUP_STEP, rank)}
    for k in range(last + 1):
        out[k] = rank_schedule(tl, k, rank)
    return out


def compare_recording(
    job: Job, recording: Recording, map_file: Path | None, only: StepKey | None = None
) -> tuple[list[str], bool]:
    """The comparison report (lines) and whether every compared iteration is exact.

    Raises:
        RecordingError: the recording does not fit the job (world size, model, rank, steps).
    """
    if recording.world_size != job.devices:
        raise RecordingError(
            f"{recording.path}: other world size: recorded {recording.world_size} ranks, the "
            f"config's job has {job.devices} ({job.nodes} nodes x {job.system.devices_per_node})"
        )
    if not 0 <= recording.rank < job.devices:
        raise RecordingError(f"{recording.path}: rank {recording.rank} is not in the job")
    names = name_map_of(recording, job, map_file)
    user = {s: u for u, s in names.items()}
    if WHOLE in recording.steps:
        return _compare_whole(job, recording, names, user)
    numbered = [k for k in recording.steps if isinstance(k, int)]
    if only is not None and only not in recording.steps:
        raise RecordingError(f"{recording.path}: step {only} was not recorded")
    shown = [only] if only is not None else list(recording.steps)
    last = max([k for k in shown if isinstance(k, int)] or [0])
    sim = simulate_steps(job, last, recording.rank)
    accum = job.training.grad_accum > 1
    lines = [
        f"recording {recording.path} ({recording.importer}): rank {recording.rank} of "
        f"{recording.world_size}, {len(numbered)} iterations"
    ]
    if recording.cannot_recover:
        lines.append(f"not in this format (unchecked): {', '.join(recording.cannot_recover)}")
    results = []
    for k in shown:
        rec_rows = [_recorded_row(c, names, accum) for c in recording.steps[k]]
        sim_rows = [_simulated_row(c, accum) for c in sim[k]]
        r = compare_step(k, rec_rows, sim_rows, user)
        results.append(r)
        groups = sorted({tuple(x["group"]) for x in rec_rows + sim_rows})
        what = "exact" if r.exact else f"first difference {r.first}"
        lines.append(
            f"step {k}: {r.recorded} recorded, {r.simulated} simulated, groups "
            f"{', '.join(str(list(g)) for g in groups) or '-'}: {what}"
        )
    n = len(results)

    def tally(flag: str) -> str:
        return f"{flag} {sum(getattr(r, flag) for r in results)}/{n}"

    lines.append(
        "summary: "
        + ", ".join(tally(f) for f in ("exact", "count", "nbytes", "order")).replace(
            "nbytes", "bytes"
        )
    )
    return lines, all(r.exact for r in results)


def _restrict(row: dict[str, Any], checked: tuple[str, ...] | None) -> dict[str, Any]:
    return row if checked is None else {k: v for k, v in row.items() if k in checked}


def _compare_whole(
    job: Job, recording: Recording, names: dict[str, str], user: dict[str, str]
) -> tuple[list[str], bool]:
    """A recording without iterations: its calls against the simulated setup and iterations
    laid end to end, cut where the simulated iterations end."""
    calls = recording.steps[WHOLE]
    accum = job.training.grad_accum > 1
    checked = recording.checked
    rec_rows = [_restrict(_recorded_row(c, names, accum), checked) for c in calls]
    sim = simulate_steps(job, 2, recording.rank)
    counts = [len(v) for v in sim.values()]
    if len(rec_rows) > sum(counts):
        more = -(-(len(rec_rows) - sum(counts)) // max(counts[-1], 1))
        sim = simulate_steps(job, 2 + more, recording.rank)
    lines = [
        f"recording {recording.path} ({recording.importer}): rank {recording.rank} of "
        f"{recording.world_size}, {len(rec_rows)} collectives, no iteration boundaries "
        "(cut where the simulated iterations end)",
        f"not in this format (unchecked): {', '.join(recording.cannot_recover)}",
    ]
    results = []
    at = 0
    for k, sim_calls in sim.items():
        if at >= len(rec_rows):
            break
        sim_rows = [_restrict(_simulated_row(c, accum), checked) for c in sim_calls]
        part = rec_rows[at : at + len(sim_rows)]
        at += len(sim_rows)
        r = compare_step(k, part, sim_rows, user)
        results.append(r)
        what = "exact" if r.exact else f"first difference {r.first}"
        if len(part) < len(sim_rows):
            what += " (the recording ends inside this iteration)"
        groups = sorted({tuple(x.get("group", ())) for x in part + sim_rows})
        lines.append(
            f"step {k}: {r.recorded} recorded, {r.simulated} simulated, groups "
            f"{', '.join(str(list(g)) for g in groups) or '-'}: {what}"
        )
    n = len(results)
    tallies = [
        f"{label} {sum(getattr(r, f) for r in results)}/{n}"
        for label, f in (("exact", "exact"), ("count", "count"), ("bytes", "nbytes"))
    ]
    tallies.append(f"order {sum(r.order for r in results)}/{n}")
    lines.append("summary: " + ", ".join(tallies))
    return lines, all(r.exact for r in results)


def all_steps_document(job: Job, rank: int, steps: int = 3) -> str:
    """``--step all`` without a recording: every iteration's schedule, simulated once (JSON)."""
    sim = simulate_steps(job, steps - 1, rank)
    return json.dumps({"rank": rank, "steps": {str(k): v for k, v in sim.items()}}, indent=1)


def schedule_extra(
    job: Job,
    recording: Path | None,
    name_map: Path | None,
    step: str | None,
    rank: int,
    out_file: Path | None = None,
) -> NoReturn:
    """The ``schedule`` command with ``--compare`` or ``--step all``: print (``--step all``:
    to ``out_file`` unless it is stdout), then exit (code 1 on a mismatch, 2 on a recording
    that does not fit)."""
    if recording is None:
        text = all_steps_document(job, rank) + "\n"
        if out_file is None or str(out_file) == "-":
            click.echo(text, nl=False)
        else:
            from scaling.io.files import write_output_text  # atomic, as the one-step output

            write_output_text(out_file, text)
            click.echo(f"wrote {out_file}: every iteration of rank {rank}", err=True)
        sys.exit(0)
    only: StepKey | None = None
    if step not in (None, "all"):
        only = SETUP if step == "setup" else int(step) if (step or "").isdigit() else -1
        if only == -1:
            fail(f"--step {step!r}: expected an iteration number, 'setup' or 'all'")
    try:
        rec = load_recording(recording)
        lines, ok = compare_recording(job, rec, name_map, only)
    except RecordingError as e:
        fail(str(e))
    for line in lines:
        click.echo(line)
    sys.exit(0 if ok else 1)
