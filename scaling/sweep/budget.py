"""What one point will cost to simulate, estimated before anything is built, and the budget
that refuses the points that would take minutes or gigabytes.

The simulator's work is SimPy events (each costs ~1–10 µs of Python) and, on the flow network,
max-min solves over flows whose number grows with the ranks. Measured on the project's
development machine (``benchmarks/bench_budget.py`` prints estimate against measurement):

* events per micro-batch per transformer layer per simulated process: DDP ~28, FSDP ~37,
  Megatron (every pipeline stage in one process) ~22 — :data:`EVENTS_PER_MB_LAYER` takes the
  largest with margin;
* CPU per event: ~4 µs with closed-form collectives (``network: analytic``) —
  :data:`CPU_S_PER_EVENT` — and ~20–30 µs on the flow network at a few nodes
  (:data:`FLOW_CPU_S_PER_EVENT`: rate changes and their max-min solves);
* the flow network adds, per micro-batch, layer and rank, up to ~5 µs (DDP at 2,048 ranks;
  FSDP ~2.5, Megatron ~0.2: its collectives span a node or a pipeline pair) —
  :data:`FLOW_CPU_S_PER_MB_LAYER_RANK` — and building it ~0.6 ms per rank
  (:data:`FLOW_BUILD_S_PER_RANK`);
* memory: the records a run keeps, ~140–170 B per event (:data:`BYTES_PER_EVENT`), the flow
  network's ~13 kB per rank (:data:`~scaling.io.config.NETWORK_BYTES_PER_RANK`), and the
  interpreter with numpy, pandas and SimPy (:data:`BASE_BYTES`).

The estimate is an upper bound for DDP and FSDP within ~2× and pessimistic for Megatron on the
flow network (its collectives are small); a faster or slower machine scales the CPU figure.
A point beyond the budget (default :data:`DEFAULT_BUDGET`: 60 CPU-s and 1 GiB) is refused
before anything is simulated with its estimate and the option that raises the budget
(``--budget CPU_S,GiB``).
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.io.config import NETWORK_BYTES_PER_RANK
from scaling.io.errors import ConfigError
from scaling.model.job import Job

#: SimPy events per micro-batch, transformer layer and simulated process (upper bound)
EVENTS_PER_MB_LAYER = 40.0
#: CPU seconds per SimPy event (closed-form collectives)
CPU_S_PER_EVENT = 5e-6
#: CPU seconds per SimPy event on the flow network (a few nodes: before the per-rank term)
FLOW_CPU_S_PER_EVENT = 2e-5
#: CPU seconds the flow network adds per micro-batch, layer and rank
FLOW_CPU_S_PER_MB_LAYER_RANK = 5e-6
#: CPU seconds to build the flow network, per rank
FLOW_BUILD_S_PER_RANK = 6e-4
#: bytes of records kept per SimPy event
BYTES_PER_EVENT = 200.0
#: the process before it simulates (interpreter, numpy, pandas, SimPy, the catalog)
BASE_BYTES = 128 * 2**20


@dataclass(frozen=True, slots=True)
class PointCost:
    """The estimated cost of simulating one point.

    Attributes:
        events: SimPy events.
        cpu_s: CPU time, s.
        mem_bytes: peak memory of the process, bytes.
    """

    events: float
    cpu_s: float
    mem_bytes: float

    @property
    def mem_GiB(self) -> float:
        """Peak memory, GiB."""
        return self.mem_bytes / 2**30


@dataclass(frozen=True, slots=True)
class Budget:
    """The most one point may cost: CPU seconds and GiB of memory (``inf`` = no limit)."""

    cpu_s: float
    mem_GiB: float


#: The default per point: a minute of CPU and 1 GiB (issue 30: no run over 60 s or 1 GiB
#: unasked); every bundled config is far inside (the largest, ~9 CPU-s and 0.3 GiB estimated).
DEFAULT_BUDGET = Budget(cpu_s=60.0, mem_GiB=1.0)


def estimate(job: Job) -> PointCost:
    """The cost of simulating ``job`` (see the module docstring for the rates)."""
    sim = job.sim
    micro_batches = (sim.steps + sim.warmup_steps) * job.training.grad_accum
    processes = job.devices if sim.simulate_all_ranks else 1
    layers = job.shape.n_layers
    events = EVENTS_PER_MB_LAYER * micro_batches * layers * processes
    flow = sim.network == "flow"
    cpu = events * (FLOW_CPU_S_PER_EVENT if flow else CPU_S_PER_EVENT)
    mem = BASE_BYTES + events * BYTES_PER_EVENT
    if flow:
        cpu += job.devices * FLOW_BUILD_S_PER_RANK
        cpu += micro_batches * layers * job.devices * FLOW_CPU_S_PER_MB_LAYER_RANK
        mem += job.devices * NETWORK_BYTES_PER_RANK
    return PointCost(events, cpu, mem)


def parse_budget(text: str | None) -> Budget:
    """``CPU_S,GiB`` (either may be ``inf``; one number: CPU seconds) as a :class:`Budget`;
    None: :data:`DEFAULT_BUDGET`. Anything else is a one-line :class:`ConfigError`."""
    if text is None:
        return DEFAULT_BUDGET
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 2 or any(not v > 0 for v in values):
        raise ConfigError(
            f"--budget {text}: expected CPU_S or CPU_S,GiB with positive numbers (inf: no "
            f"limit), e.g. --budget 3600,32 (default {DEFAULT_BUDGET.cpu_s:g},"
            f"{DEFAULT_BUDGET.mem_GiB:g})"
        )
    return Budget(values[0], values[1] if len(values) == 2 else DEFAULT_BUDGET.mem_GiB)


def describe(job: Job) -> str:
    """One line of a point's size and estimated cost (``scaling run --check``)."""
    c = estimate(job)
    sim = job.sim
    mbs = (sim.steps + sim.warmup_steps) * job.training.grad_accum
    net = f", network ~{job.devices * NETWORK_BYTES_PER_RANK / 2**30:.3g} GiB"
    return (
        f"{job.system.name} x{job.nodes} nodes ({job.strategy.label}): {job.devices:,} ranks, "
        f"{mbs:,} micro-batches per rank{net if sim.network == 'flow' else ''}; estimated "
        f"~{c.cpu_s:.3g} CPU-s, ~{c.mem_GiB:.3g} GiB"
    )


def budget_error(job: Job, budget: Budget) -> str:
    """Why simulating ``job`` exceeds ``budget``, with the estimate and how to override it;
    "" when it fits."""
    c = estimate(job)
    if c.cpu_s <= budget.cpu_s and c.mem_GiB <= budget.mem_GiB:
        return ""
    sim = job.sim
    return (
        f"{job.system.name} x{job.nodes} nodes ({job.strategy.label}): estimated "
        f"{c.cpu_s:,.0f} CPU-s and {c.mem_GiB:,.1f} GiB to simulate ({c.events:,.0f} events: "
        f"{(sim.steps + sim.warmup_steps) * job.training.grad_accum:,} micro-batches x "
        f"{job.shape.n_layers} layers, {job.devices:,} ranks, {sim.network} network); expected "
        f"at most {budget.cpu_s:,.0f} CPU-s and {budget.mem_GiB:,.1f} GiB per point (fewer "
        "nodes, simulation.steps or training.grad_accum_steps, simulation.network: analytic, "
        "or --budget CPU_S,GiB to allow more)"
    )


def check_budget(jobs: list[Job], budget: Budget, where: str) -> None:
    """Refuse (one-line :class:`ConfigError` starting with ``where``, the config) the first of
    ``jobs`` beyond ``budget``."""
    for job in jobs:
        msg = budget_error(job, budget)
        if msg:
            raise ConfigError(f"{where}: {msg}")
