"""The ``scaling`` console entry point: ``scaling --help`` and ``scaling --version`` in a
fraction of a second.

The commands are registered in :data:`REGISTRY` (one line each) and live in their own modules,
whose imports pull in numpy, pandas and pydantic; :mod:`scaling.app.cli` builds the full group
from the registry, and this group imports only the one command that runs or shows its own help. The
group's help lists each command's first docstring paragraph from :data:`COMMANDS`, a copy that
tests/test_ecosystem.py checks against the commands themselves.
"""

from __future__ import annotations

import os

#: The thread count the command line gives numpy's BLAS (OpenBLAS) unless the user set one.
#: The simulator's numpy work is small vectors (per-event rates, path signatures), where a
#: thread pool never helps, yet OpenBLAS starts one per core at ``import numpy`` (~0.05 CPU-s
#: per process on 2 cores, more on bigger hosts, in every spawned sweep worker too: issue 29).
#: Set here, before anything imports numpy; only by the command line, never by ``import
#: scaling`` (a script's environment is its own), and never over ``OPENBLAS_NUM_THREADS`` or
#: ``OMP_NUM_THREADS`` the user gave.
BLAS_THREADS = "1"
if "OPENBLAS_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OPENBLAS_NUM_THREADS"] = BLAS_THREADS

import gc  # noqa: E402  (after the BLAS setting: nothing below may import numpy first)
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib import import_module  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from scaling._version import __version__  # noqa: E402

#: Every command, registered here and nowhere else: name → (the module that defines it, the
#: command object's name there, the first paragraph of its help). ``scaling --help`` lists the
#: help copies without importing anything; :mod:`scaling.app.cli` imports each module to build
#: the full group, and tests/test_ecosystem.py checks each copy against its command. Adding a
#: command: its module, and one line here.
REGISTRY: dict[str, tuple[str, str, str]] = {
    "baseline": (
        "scaling.app.golden_cmd",
        "baseline",
        "Golden scaling curves (regression baselines): regenerate them with `update`.",
    ),
    "calibrate": (
        "scaling.app.calibrate_cmd",
        "calibrate",
        "Fit a collective library profile to a measured benchmark TABLE, or (--decide CONFIG) "
        "name the cheap measurement that decides a split answer.",
    ),
    "collective": (
        "scaling.app.collective_cmd",
        "collective",
        "nccl-tests-like table for one collective on a system: size, time, algbw, busbw.",
    ),
    "compare": (
        "scaling.app.golden_cmd",
        "compare",
        "Compare RESULTS with BASELINE point by point (system, strategy, model, nodes).",
    ),
    "examples": (
        "scaling.app.catalog_cmd",
        "examples",
        "List the bundled example experiments and sweeps; run one by name.",
    ),
    "explain": (
        "scaling.app.explain_cmd",
        "explain",
        "Where each point's step went (compute, exposed communication by collective and tier).",
    ),
    "metrics": (
        "scaling.app.catalog_cmd",
        "metrics",
        "Print every result column's name, unit and definition: metrics, then the others.",
    ),
    "plan": (
        "scaling.app.plan_cmd",
        "plan",
        "Each system's fastest feasible configurations at each node count of CONFIG.",
    ),
    "plot": (
        "scaling.app.sweep_cmd",
        "plot",
        "Plot a results table: RESULTS is a results.parquet/.csv file or a run/sweep folder.",
    ),
    "replay": (
        "scaling.app.replay_cmd",
        "replay",
        "Run a recorded job's collective schedule on any catalog system, with explain rows.",
    ),
    "run": (
        "scaling.app.run_cmd",
        "run",
        "Run every (system, nodes) point of an experiment CONFIG; print and save the table.",
    ),
    "schedule": (
        "scaling.app.schedule_cmd",
        "schedule",
        "The ordered collectives one rank issues in one step, to check against a PyTorch job.",
    ),
    "schema": (
        "scaling.app.catalog_cmd",
        "schema",
        "Print the JSON Schema of an input file KIND: experiment, sweep, topology or library.",
    ),
    "sensitivity": (
        "scaling.app.uncertainty_cmd",
        "sensitivity",
        "Which uncertain inputs decide a metric: one-at-a-time elasticities and a tornado chart.",
    ),
    "sweep": (
        "scaling.app.sweep_cmd",
        "sweep",
        "Run a parameter sweep SPEC (or a plain experiment: one point) point by point.",
    ),
    "systems": (
        "scaling.app.catalog_cmd",
        "systems",
        "List the system catalog with the confidence of each headline number.",
    ),
    "trace": (
        "scaling.app.trace_cmd",
        "trace",
        "Write one steady-state step as Chrome Trace Event JSON (open it in ui.perfetto.dev).",
    ),
    "validate": (
        "scaling.app.validate.command",
        "validate",
        "Compare the model with every published measurement the package holds.",
    ),
}

#: every command → the first paragraph of its help (what ``scaling --help`` lists)
COMMANDS: dict[str, str] = {name: help for name, (_, _, help) in REGISTRY.items()}

#: where the group's ``-q``/``-v`` are kept (``ctx.meta``): -1 quiet, 0 default, 1 info, 2 debug
VERBOSITY = "scaling.verbosity"


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (click's test runner swaps it)."""

    @property
    def stream(self) -> Any:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


class _LevelFilter(logging.Filter):
    """Lets through a record at or above its logger's threshold: the ``scaling`` loggers'
    level, else the libraries' (distributed, asyncio). Needed because a library that sets its
    own loggers' level (distributed sets ``distributed.*`` to INFO from its config) passes its
    INFO records on to the root handlers whatever the root's level is."""

    def __init__(self) -> None:
        super().__init__()
        self.ours = logging.WARNING
        self.libraries = logging.WARNING

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` reaches stderr."""
        mine = record.name == "scaling" or record.name.startswith("scaling.")
        return record.levelno >= (self.ours if mine else self.libraries)


def configure_logging(verbose: int, quiet: bool) -> int:
    """Log to stderr at the level ``-q``/``-v`` ask for; return the verbosity: -1 quiet (errors
    only, no progress bars), 0 warnings, 1 ``-v`` (the ``scaling`` loggers' info: what runs
    where, how long), 2 ``-vv`` (debug, the libraries' too: distributed, asyncio). Below
    ``-vv`` the libraries' info is dropped (a local Dask cluster logs ~50 INFO lines)."""
    level = -1 if quiet else min(verbose, 2)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_LevelFilter())
        root.addHandler(handler)
    libraries = {-1: logging.ERROR, 2: logging.DEBUG}.get(level, logging.WARNING)
    ours = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(level, logging.DEBUG)
    for f in handler.filters:
        if isinstance(f, _LevelFilter):
            f.ours, f.libraries = ours, libraries
    root.setLevel(libraries)
    logging.getLogger("scaling").setLevel(ours)
    return level


def set_verbosity(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """The group's callback for ``-q``/``-v``: configure logging, keep the level in ``ctx.meta``."""
    if quiet and verbose:
        raise click.UsageError("-q and -v: give one of them")
    ctx.meta[VERBOSITY] = configure_logging(verbose, quiet)


def verbosity_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The group's ``-v``/``--verbose`` (repeatable) and ``-q``/``--quiet`` options."""
    fn = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="Only errors on stderr: no notes, no log messages, no progress bars.",
    )(fn)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        help="More messages on stderr (-v: what runs where and how long; -vv: debug).",
    )(fn)


#: the group's help (the same as :func:`scaling.app.cli.main`'s, checked by a test)
HELP = (
    "Simulate distributed training (PyTorch DDP, FSDP, Megatron tensor/pipeline parallelism) "
    "on GPU, MLU and NPU clusters: scaling curves, collective benchmarks, plans of the fastest "
    "configuration, library calibration from measurements, and validation against published "
    "data."
)


def short_help(name: str, limit: int) -> str:
    """Command ``name``'s help line in ``scaling --help``, cut to ``limit`` as click cuts it."""
    return click.Command(name, help=COMMANDS[name]).get_short_help_str(limit)


class LazyGroup(click.Group):
    """A group whose commands are :mod:`scaling.app.cli`'s, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, in the order of the full CLI."""
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, importing only its own module now (keeps --help and start-up fast:
        the full CLI, :mod:`scaling.app.cli`, imports every command's dependencies)."""
        if cmd_name not in COMMANDS:
            return None
        module, attr, _ = REGISTRY[cmd_name]
        cmd: click.Command = getattr(import_module(module), attr)
        # The command's modules (numpy, pydantic schemas, the model: ~10^5 objects) now live
        # until exit: moved out of the collector's generations, no collection traverses them
        # again (a `collective` at 4,096 ranks spent ~70 ms CPU in ~150 collections walking
        # them). Python's gc.freeze docs recommend the same before forking workers, which the
        # sweep pools do; the Python API (no CLI) is left alone.
        gc.freeze()
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List each command with its first help paragraph, without importing it."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, short_help(n, limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scaling")
@verbosity_options
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """The ``scaling`` console entry point."""
    set_verbosity(ctx, verbose, quiet)
