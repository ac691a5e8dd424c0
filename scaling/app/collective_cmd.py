"""``scaling collective``: an nccl-tests-like table for one collective on a system (the table
itself: :mod:`scaling.app.collective`)."""

from __future__ import annotations

from pathlib import Path

import click

from scaling.app.exits import fail, user_errors
from scaling.app.output import (
    Printer,
    format_option,
    is_stdout,
    out_file_option,
    progress_option,
    want_progress,
)
from scaling.model.comm.algos import algorithm_names
from scaling.model.comm.ops import CollectiveOp

#: the sizes of a table when neither --sizes nor -b/-e is given
DEFAULT_SIZES = "32K:16G"


def _sizes_arg(sizes: str | None, minbytes: str | None, maxbytes: str | None) -> str:
    """The size range as ``--sizes`` spells it, from ``--sizes`` or nccl-tests' ``-b``/``-e``
    (refused together: two answers to one question)."""
    if sizes is not None and (minbytes is not None or maxbytes is not None):
        given = "-b" if minbytes is not None else "-e"
        fail(f"--sizes and {given}: both give the sizes; give --sizes, or -b/-e (nccl-tests)")
    if sizes is not None:
        return sizes
    from scaling.app.collective import parse_size

    lo, hi = DEFAULT_SIZES.split(":")
    lo, hi = minbytes or lo, maxbytes or hi
    # refused naming the options the user gave, not --sizes
    if parse_size(lo, "-b") > parse_size(hi, "-e"):
        fail(f"-b {lo} -e {hi}: expected minBytes <= maxBytes")
    return f"{lo}:{hi}"


@click.command()
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
    "--sizes",
    default=None,
    help=f"MIN:MAX (x --stepfactor steps), or a comma list [default: {DEFAULT_SIZES}].",
)
@click.option(
    "-b",
    "--minbytes",
    default=None,
    help="Smallest size, as nccl-tests' -b (8, 32K, 1M; K/M/G/T = 2^10/2^20/2^30/2^40) "
    f"[default: {DEFAULT_SIZES.split(':')[0]}].",
)
@click.option(
    "-e",
    "--maxbytes",
    default=None,
    help=f"Largest size, as nccl-tests' -e [default: {DEFAULT_SIZES.split(':')[1]}].",
)
@click.option(
    "-f",
    "--stepfactor",
    "--factor",
    "factor",
    type=click.IntRange(min=2),
    default=2,
    show_default=True,
    help="Size step factor, as nccl-tests' -f.",
)
@click.option(
    "--algo",
    default=None,
    help=f"Force an algorithm: {', '.join(algorithm_names())} (default: the library's tuner; one the "
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
@click.option(
    "--network",
    type=click.Choice(["flow", "analytic"]),
    default="flow",
    show_default=True,
    help="flow: run each size on the flow network; analytic: the tuner's instant uncontended "
    "estimate (the same tuner: equal on one call alone).",
)
@out_file_option("Write the table as CSV (- = stdout; the text table then goes to stderr).")
@progress_option
@format_option
@user_errors
def collective(
    system_name: str,
    nodes: int,
    per_node: int | None,
    op: str,
    sizes: str | None,
    minbytes: str | None,
    maxbytes: str | None,
    factor: int,
    algo: str | None,
    proto: str | None,
    what_if: bool,
    max_ranks: int | None,
    network: str,
    out_file: Path | None,
    fmt: str,
    progress: bool | None,
) -> None:
    """nccl-tests-like table for one collective on a system: size, time, algbw, busbw.

    The columns are nccl-tests' (size, count, type, redop, root, time, algbw, busbw) and the
    algorithm/protocol the tuner chose; sizes as all_reduce_perf takes them (-b, -e, -f) or
    as --sizes.

    \b
    Example: scaling collective --system dgx-a100 --nodes 8 -b 1M -e 1G -f 2 --algo ring --out -
    """
    from scaling.app.collective import (
        COLUMNS,
        collective_rows,
        format_collective_table,
        rows_csv,
        size_range,
    )
    from scaling.io.system_cache import load_system_spec  # no pydantic when cached

    if is_stdout(out_file) and fmt != "table":
        fail(f"--out - and --format {fmt}: both write to stdout; give one of them")
    spec = load_system_spec(system_name)
    if per_node is not None and per_node > spec.devices_per_node:
        fail(f"--per-node {per_node}: {spec.name} has {spec.devices_per_node} devices per node")
    if algo is not None and algo not in algorithm_names():
        fail(f"--algo {algo!r}: expected one of {', '.join(algorithm_names())}")
    if algo is not None and algo not in spec.library.algorithms:
        have = ", ".join(spec.library.algorithms)
        if not what_if:
            fail(
                f"--algo {algo}: got an algorithm {spec.library.name} does not have; expected "
                f"one of {have} (add --what-if to run it anyway as a what-if)"
            )
        click.echo(
            f"warning: --what-if: {spec.library.name} has no {algo} (has {have}); the table "
            "is a what-if, not what the library runs",
            err=True,
        )
    from scaling.io.limits import DEFAULT_MAX_RANKS, run_size_error

    too_big = run_size_error(
        nodes, per_node or spec.devices_per_node, max_ranks or DEFAULT_MAX_RANKS, "--max-ranks"
    )
    if too_big:
        fail(f"--nodes {nodes}: got {too_big}")
    rows = collective_rows(
        spec,
        nodes,
        CollectiveOp(op),
        size_range(_sizes_arg(sizes, minbytes, maxbytes), factor),
        algo,
        proto,
        per_node,
        progress=want_progress(progress),
        network=network,
    )
    ranks = int(rows[0]["ranks"])
    p = Printer(fmt, stdout_taken=is_stdout(out_file))
    p.say(
        f"# {op} on {spec.name}: {nodes} node(s) x {per_node or spec.devices_per_node} = {ranks} ranks, "
        f"library {spec.library.name}"
        + (", analytic (uncontended) network" if network == "analytic" else "")
    )
    text = format_collective_table(rows)
    if fmt == "table":
        p.table(None, text=text)  # the text alone: no pandas on this path
    else:
        import pandas as pd

        p.table(pd.DataFrame(rows, columns=list(COLUMNS)), text=text)
    if is_stdout(out_file):
        click.echo(rows_csv(rows), nl=False)
    elif out_file is not None:
        from scaling.io.files import write_output_text  # atomic; in place for a device

        write_output_text(out_file, rows_csv(rows))
        p.say(f"wrote {out_file}")
