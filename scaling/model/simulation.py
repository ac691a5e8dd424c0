"""One simulated training job as a short pipeline of named stages.

``run_job(job) -> RunResult`` is pure: the same ``Job`` (including its seed) gives bit-identical
results. The stages: check the job fits (:func:`check_feasible`), price one micro-batch of
compute, let the strategy plan its ranks' work, set up the SimPy environment with the
collective runner (flow network, closed form, or a given cost model), run the ranks, then turn
what was measured into metrics (``analysis.metrics.run_result``). Ranks that nothing
distinguishes (no compute noise) are simulated once — the collective still spans the whole
group — which gives the result of simulating every rank (equal up to the rounding of means
across ranks; a test checks this) at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import simpy

from scaling.model.analysis.metrics import Measured, RunResult, StepRecord, run_result
from scaling.model.comm.collectives import (
    AnalyticCostModel,
    CollectiveCostModel,
    CollectiveKey,
    CollectiveRecord,
    Communicator,
    timed_runner,
)
from scaling.model.comm.degraded import DegradedNicCostModel, degraded_flow_network
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.failures import failures_refusal
from scaling.model.hardware.compute import ComputeModel, MicroBatchCompute, micro_batch_compute
from scaling.model.hardware.memory import MemoryBreakdown
from scaling.model.job import InfeasibleJobError, Job
from scaling.model.strategies.base import RankWork
from scaling.model.strategies.ensemble import EnsembleStream
from scaling.model.strategies.rank import ComputeStream, RankLog
from scaling.model.variability import ENSEMBLE_STREAM, Layout, layout, stream
from scaling.units import GiB


def check_feasible(job: Job) -> MemoryBreakdown:
    """Raise :class:`InfeasibleJobError` with the numbers if ``job`` cannot run; else return the
    peak memory of one rank."""
    dev = job.system.device
    if not dev.can_train:
        raise InfeasibleJobError(
            f"{job.system.name}: {dev.name} cannot train: {dev.cannot_train_reason}"
        )
    if job.training.dtype not in dev.peak_flops:
        have = ", ".join(sorted(dev.peak_flops))
        raise InfeasibleJobError(
            f"{job.system.name}: {dev.name} has no {job.training.dtype} peak (has {have})"
        )
    if why := failures_refusal(job.failures, job.devices):
        raise InfeasibleJobError(f"{job.system.name} x{job.nodes} nodes: {why}")
    mem = job.strategy.memory(job)
    if mem.total > dev.mem_bytes:
        hint = (
            "try a smaller micro-batch, activation checkpointing, or a sharded strategy (FSDP)"
            if not hasattr(job.strategy, "model_parallel")
            else "try activation checkpointing, a larger tensor or pipeline size, "
            "sequence_parallel or distributed_optimizer"
        )
        raise InfeasibleJobError(
            f"{job.system.name}: {job.shape.name} with {job.strategy.label} on "
            f"{job.devices} devices needs {mem.total / GiB:.1f} GiB per rank "
            f"but {dev.name} has {dev.mem_bytes / GiB:.1f} GiB ({mem.describe()} GiB); {hint}"
        )
    return mem


@dataclass(frozen=True)
class Timeline:
    """What happened in a run, for traces and explanations.

    Attributes:
        logs: per simulated rank (rank id = index), its steps and spans (when traced).
        collectives: every collective, with its group and times (s).
        bottleneck: link class that bounded each collective (by record key), where known.
        devices_per_node: to place ranks on nodes.
        all_ranks: every rank was simulated (else rank 0 stands for all identical ranks).
        details: what the strategy says about each collective (DDP: its bucket's parameters;
            FSDP: its unit), when traced.
    """

    logs: tuple[RankLog, ...]
    collectives: tuple[CollectiveRecord, ...]
    bottleneck: dict[CollectiveKey, str]
    devices_per_node: int
    all_ranks: bool
    details: dict[CollectiveKey, dict[str, object]] = field(default_factory=dict)

    def step_window(self, step: int) -> tuple[float, float]:
        """Start and end (s) of ``step`` across the simulated ranks."""
        return (
            min(lg.step_start[step] for lg in self.logs),
            max(lg.step_end[step] for lg in self.logs),
        )

    def rank_collectives(self, rank: int) -> list[CollectiveRecord]:
        """Collectives rank ``rank`` took part in."""
        return [r for r in self.collectives if r.group.contains(rank, self.devices_per_node)]


def run_job(job: Job, cost_model: CollectiveCostModel | None = None) -> RunResult:
    """Simulate ``job`` and return its steady-state metrics."""
    return run_job_detailed(job, cost_model)[0]


def run_job_detailed(
    job: Job, cost_model: CollectiveCostModel | None = None, trace: bool = False
) -> tuple[RunResult, Timeline]:
    """Simulate ``job``; return its metrics and its timeline (spans recorded when ``trace``).

    ``cost_model`` replaces the network with uncontended per-call costs (tests, what-ifs).
    """
    mem = check_feasible(job)
    compute = ComputeModel(job.system.device, job.training.dtype, sparse=job.training.sparsity)
    mb = micro_batch_compute(
        compute,
        job.shape,
        job.training.micro_batch,
        job.training.seq_len,
        job.training.checkpointing,
        job.training.flash_attention,
    )
    work = job.strategy.plan(job, compute, mb)
    env = simpy.Environment()
    pricing, comm = _communicator(env, job, cost_model)
    logs = _run_ranks(env, job, work, comm, trace)
    steps = _step_records(job, logs)
    measured = _measure(job, steps, comm, pricing, mb, work, mem)
    timeline = Timeline(
        tuple(logs),
        tuple(comm.records),
        {r.key: str(pricing.cost(r.op, r.nbytes, r.group).bottleneck or "") for r in comm.records}
        if trace
        else {},
        job.system.devices_per_node,
        len(logs) == job.devices,
        {r.key: work.describe(r.key) for r in comm.records} if trace else {},
    )
    return run_result(job, measured), timeline


def _ranks_differ(job: Job) -> bool:
    """Whether ranks differ in their compute (jitter, slow ranks, host noise)."""
    var = job.sim.variability
    return job.sim.compute_jitter_cv > 0 or (var is not None and var.per_rank)


def _simulated_ranks(job: Job) -> int:
    """Every rank when asked; else one process: one rank standing for identical ranks, or the
    rank ensemble of distinct ones (``strategies.ensemble``)."""
    return job.devices if job.sim.simulate_all_ranks else 1


def _communicator(
    env: simpy.Environment, job: Job, cost_model: CollectiveCostModel | None
) -> tuple[CollectiveCostModel, Communicator]:
    """The collective runner the ranks meet in, and the model that prices a call (for bytes
    and bottleneck reports)."""
    var = job.sim.variability
    lay = _layout(job)
    degraded = var is not None and var.degraded_nics
    if cost_model is None and job.sim.network == "flow":
        flows = FlowCollectives(env, job.system, job.nodes, job.sim.seed)
        if degraded:
            assert var is not None
            flows.net = degraded_flow_network(
                env, flows, lay.degraded, var.degraded_nic_bw_fraction
            )
        return flows, Communicator(env, flows.start, _simulated_ranks(job))
    pricing: CollectiveCostModel
    if cost_model is not None:
        pricing = cost_model
    elif degraded:
        assert var is not None
        pricing = DegradedNicCostModel(job.system, lay.degraded_nodes, var.degraded_nic_bw_fraction)
    else:
        pricing = AnalyticCostModel(job.system)
    return pricing, Communicator(env, timed_runner(env, pricing), _simulated_ranks(job))


def _layout(job: Job) -> Layout:
    """The run's draw of slow ranks and degraded NICs (none without variability)."""
    s = job.system
    return layout(job.sim.variability, job.nodes, s.devices_per_node, s.nics.count, job.sim.seed)


def _run_ranks(
    env: simpy.Environment, job: Job, work: RankWork, comm: Communicator, trace: bool
) -> list[RankLog]:
    """Start every simulated rank's process (each with its own seeded noise) — or the one rank
    ensemble of distinct ranks — and run to the end."""
    sim = job.sim
    n_sim = comm.simulated_ranks
    steps = sim.warmup_steps + sim.steps
    var = sim.variability
    rate, dur = (var.host_noise_rate_per_s, var.host_noise_duration_s) if var else (0.0, 0.0)
    interference = job.system.library.compute_interference
    differ = _ranks_differ(job)
    slowdown = _layout(job).slowdown if differ else None
    if differ and n_sim == 1:
        log = RankLog(spans=[] if trace else None)
        assert slowdown is not None
        ens = EnsembleStream(
            env,
            comm,
            stream(sim.seed, ENSEMBLE_STREAM),
            sim.compute_jitter_cv,
            interference,
            slowdown,
            rate,
            dur,
            log,
        )
        env.process(work.run(env, 0, comm, steps, ens))  # type: ignore[arg-type]
        env.run()
        return [log]
    seeds = np.random.SeedSequence(sim.seed).spawn(n_sim)
    logs = [RankLog(spans=[] if trace else None) for _ in range(n_sim)]
    for r in range(n_sim):
        rng = np.random.default_rng(seeds[r]) if differ else None
        slow = 1.0 if slowdown is None else float(slowdown[r])
        cs = ComputeStream(
            env, comm, rng, sim.compute_jitter_cv, interference, logs[r], slow, rate, dur
        )
        env.process(work.run(env, r, comm, steps, cs))
    env.run()
    return logs


def _step_records(job: Job, logs: list[RankLog]) -> tuple[StepRecord, ...]:
    """Per step: wall time (a step ends when its slowest rank ends) and mean compute-busy time."""
    ends = np.array([lg.step_end for lg in logs])  # [ranks, steps]
    # iteration 0 starts after the strategy's setup (DDP's constructor broadcasts)
    start = min(lg.step_start[0] for lg in logs)
    step_times = np.diff(np.concatenate([[start], ends.max(axis=0)]))
    busy = np.array([lg.compute_busy for lg in logs]).mean(axis=0)
    warm = job.sim.warmup_steps
    return tuple(
        StepRecord(k, float(step_times[k]), float(busy[k]), k < warm)
        for k in range(len(step_times))
    )


def _measure(
    job: Job,
    steps: tuple[StepRecord, ...],
    comm: Communicator,
    pricing: CollectiveCostModel,
    mb: MicroBatchCompute,
    work: RankWork,
    mem: MemoryBreakdown,
) -> Measured:
    """Collect what the metrics need: rank 0's communication per measured step, the compute's
    FLOPs and memory traffic per step."""
    sim, tr = job.sim, job.training
    # rank 0's collectives (other nodes' HSDP shard groups are their own business)
    dpn = job.system.devices_per_node
    mine = [r for r in comm.records if r.group.contains(0, dpn) and r.key.step >= sim.warmup_steps]
    ga, n_layers = tr.grad_accum, job.shape.n_layers
    # a model-parallel strategy (Megatron) knows one rank's share of the model's work itself
    flops = getattr(work, "model_flops_per_device", mb.model_flops * tr.grad_accum)
    comp_bytes = getattr(work, "compute_bytes_per_step", None)
    if comp_bytes is None:
        comp_bytes = (
            ga * (mb.head_fwd.bytes + mb.head_bwd.bytes)
            + ga * n_layers * (mb.block_fwd.bytes + mb.block_bwd.bytes)
            + work.optimizer.bytes
        )
    return Measured(
        steps=steps,
        comm_time_s=sum(r.end_s - r.start_s for r in mine) / sim.steps,
        comm_bytes_per_rank=sum(
            pricing.cost(r.op, r.nbytes, r.group).bytes_sent_per_rank for r in mine
        )
        / sim.steps,
        n_collectives_per_step=len(mine) // sim.steps,
        model_flops_per_device=flops,
        compute_bytes=comp_bytes,
        peak_mem_bytes=mem.total,
    )
