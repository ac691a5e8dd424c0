"""One simulated training job as a short pipeline of named stages.

``run_job(job) -> RunResult`` is pure: the same ``Job`` (including its seed) gives bit-identical
results. The stages: check the job fits (:func:`check_feasible`), price one micro-batch of
compute, let the strategy plan its ranks' work, set up the SimPy environment with the
collective runner (flow network, closed form, or a given cost model), run the ranks, then turn
what was measured into metrics (``analysis.metrics.run_result``). The work names its
representative processes (``RankWork.representatives``: rank 0 for DDP/FSDP, one rank per
pipeline stage for Megatron), each standing for a set of ranks that do the same work; a
collective still spans its whole group. Without rank noise a representative is each of its
ranks; with it, its ranks run as one rank ensemble (``strategies.ensemble``). Either gives the
result of simulating every rank (``simulate_all_ranks``; equal up to the rounding of means
across ranks without noise, a test checks this for every strategy) at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import simpy

from scaling.model.analysis.metrics import Measured, RunResult, StepRecord, run_result
from scaling.model.comm.collectives import (
    CollectiveCostModel,
    CollectiveKey,
    CollectiveRecord,
    Communicator,
    timed_runner,
)
from scaling.model.comm.degraded import DegradedNicCostModel, degraded_flow_network
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.linkload import LinkLoad
from scaling.model.comm.uncontended import AnalyticCostModel
from scaling.model.failures import failures_refusal
from scaling.model.hardware.compute import ComputeModel, MicroBatchCompute, micro_batch_compute
from scaling.model.hardware.memory import MemoryBreakdown
from scaling.model.job import InfeasibleJobError, Job
from scaling.model.strategies.base import RankWork, Representative, Strategy
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
        hint = job.strategy.memory_hint
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
        logs: per simulated process, its steps and spans (when traced).
        collectives: every collective, with its group and times (s).
        bottleneck: link class that bounded each collective (by record key), where known.
        devices_per_node: to place ranks on nodes.
        all_ranks: every rank was simulated (else representatives stand for sets of ranks).
        strategy: the job's strategy (what ``explain`` and traces ask it: dimensions, streams).
        log_index: per rank, the index in ``logs`` of the process that stands for it.
        details: what the strategy says about each collective (DDP: its bucket's parameters;
            FSDP: its unit), when traced.
        links: the flow network's per-link load over any window of the run, when asked for
            (``run_job_detailed(links=True)`` on the flow network); else None.
    """

    logs: tuple[RankLog, ...]
    collectives: tuple[CollectiveRecord, ...]
    bottleneck: dict[CollectiveKey, str]
    devices_per_node: int
    all_ranks: bool
    strategy: Strategy
    log_index: tuple[int, ...]
    details: dict[CollectiveKey, dict[str, object]] = field(default_factory=dict)
    links: LinkLoad | None = None

    def log_of(self, rank: int) -> RankLog:
        """The log of the process that ran rank ``rank`` (its own, or its representative's)."""
        return self.logs[self.log_index[rank]]

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
    job: Job,
    cost_model: CollectiveCostModel | None = None,
    trace: bool = False,
    links: bool = False,
) -> tuple[RunResult, Timeline]:
    """Simulate ``job``; return its metrics and its timeline (spans recorded when ``trace``;
    with ``links`` on the flow network, the per-link load: ``Timeline.links``).

    ``cost_model`` replaces the network with uncontended per-call costs (tests, what-ifs).
    Neither ``trace`` nor ``links`` changes a result.
    """
    mem = check_feasible(job)
    mb, work = _plan(job)
    reps = work.representatives(job)
    env = simpy.Environment()
    pricing, comm = _communicator(env, job, work, len(reps), cost_model)
    load = (
        LinkLoad(pricing.cluster, pricing.net)
        if links and isinstance(pricing, FlowCollectives)
        else None
    )
    logs, log_index = _run_ranks(env, job, work, reps, comm, trace)
    steps = _step_records(job, logs)
    measured = _measure(job, steps, comm, pricing, mb, work, mem)
    timeline = Timeline(
        tuple(logs),
        tuple(comm.records),
        {r.key: str(pricing.cost(r.op, r.nbytes, r.group).bottleneck or "") for r in comm.records}
        if trace
        else {},
        job.system.devices_per_node,
        job.sim.simulate_all_ranks,
        job.strategy,
        log_index,
        {r.key: work.describe(r.key) for r in comm.records} if trace else {},
        load,
    )
    return run_result(job, measured), timeline


def _plan(job: Job) -> tuple[MicroBatchCompute, RankWork]:
    """The job's micro-batch compute and its strategy's plan."""
    compute = ComputeModel(job.system.device, job.training.dtype, sparse=job.training.sparsity)
    mb = micro_batch_compute(
        compute,
        job.shape,
        job.training.micro_batch,
        job.training.seq_len,
        job.training.checkpointing,
        job.training.flash_attention,
    )
    return mb, job.strategy.plan(job, compute, mb)


def one_process_stands_for_all(job: Job) -> bool:
    """Whether one simulated rank stands for every rank of ``job``: its ranks have no noise or
    slow ranks of their own and its strategy's representatives are one set of all ranks (DDP,
    FSDP/HSDP; not Megatron's pipeline stages). Then every rank issues the same program (the
    same calls in the same order; its groups are rank 0's moved to its node and lane)."""
    if _ranks_differ(job):
        return False
    reps = _plan(job)[1].representatives(job)
    return len(reps) == 1 and len(reps[0].members) == job.devices


def _ranks_differ(job: Job) -> bool:
    """Whether ranks differ in their compute (jitter, slow ranks, host noise)."""
    var = job.sim.variability
    return job.sim.compute_jitter_cv > 0 or (var is not None and var.per_rank)


def _communicator(
    env: simpy.Environment,
    job: Job,
    work: RankWork,
    n_reps: int,
    cost_model: CollectiveCostModel | None,
) -> tuple[CollectiveCostModel, Communicator]:
    """The collective runner the ranks meet in, and the model that prices a call (for bytes
    and bottleneck reports). Processes: every rank, or the ``n_reps`` representatives."""
    var = job.sim.variability
    lay = _layout(job)
    degraded = var is not None and var.degraded_nics
    n_sim = job.devices if job.sim.simulate_all_ranks else n_reps
    if cost_model is None and job.sim.network == "flow":
        flows = FlowCollectives(env, job.system, job.nodes, job.sim.seed)
        if degraded:
            assert var is not None
            flows.net = degraded_flow_network(
                env, flows, lay.degraded, var.degraded_nic_bw_fraction
            )
        # the network decides how it prices a node-local call; the work only says whether its
        # node-local calls can contend with anything (RankWork.node_local_calls_contend)
        flows.node_local_uncontended = not work.node_local_calls_contend
        # and whether its all-to-alls can (RankWork.all_to_all_calls_contend); a degraded NIC
        # is seen only by flows
        flows.all_to_all_uncontended = not work.all_to_all_calls_contend and not degraded
        return flows, Communicator(env, flows.start, n_sim)
    pricing: CollectiveCostModel
    if cost_model is not None:
        pricing = cost_model
    elif degraded:
        assert var is not None
        pricing = DegradedNicCostModel(job.system, lay.degraded_nodes, var.degraded_nic_bw_fraction)
    else:
        pricing = AnalyticCostModel(job.system, job.nodes, job.sim.seed)
    return pricing, Communicator(env, timed_runner(env, pricing), n_sim)


def _layout(job: Job) -> Layout:
    """The run's draw of slow ranks and degraded NICs (none without variability)."""
    s = job.system
    return layout(job.sim.variability, job.nodes, s.devices_per_node, s.nics.count, job.sim.seed)


def _run_ranks(
    env: simpy.Environment,
    job: Job,
    work: RankWork,
    reps: tuple[Representative, ...],
    comm: Communicator,
    trace: bool,
) -> tuple[list[RankLog], tuple[int, ...]]:
    """Start every simulated process and run to the end; return their logs and, per rank, the
    index of the log that stands for it. Every rank (``simulate_all_ranks``) each with its own
    seeded noise; else each representative, as one rank when its ranks are identical, or as
    the rank ensemble of its distinct ranks (each representative its own random stream)."""
    sim = job.sim
    steps = sim.warmup_steps + sim.steps
    var = sim.variability
    rate, dur = (var.host_noise_rate_per_s, var.host_noise_duration_s) if var else (0.0, 0.0)
    interference = job.system.library.compute_interference
    differ = _ranks_differ(job)
    slowdown = _layout(job).slowdown if differ else None
    if not sim.simulate_all_ranks:
        logs = [RankLog(spans=[] if trace else None) for _ in reps]
        index = [0] * job.devices
        for i, rep in enumerate(reps):
            for r in rep.members:
                index[r] = i
        streams: list[ComputeStream | EnsembleStream]
        if differ:
            assert slowdown is not None
            base = stream(sim.seed, ENSEMBLE_STREAM)
            rngs = [base] if len(reps) == 1 else base.spawn(len(reps))
            streams = [
                EnsembleStream(
                    env,
                    comm,
                    rngs[i],
                    sim.compute_jitter_cv,
                    interference,
                    slowdown[np.asarray(rep.members)],
                    rate,
                    dur,
                    logs[i],
                )
                for i, rep in enumerate(reps)
            ]
        else:
            streams = [
                ComputeStream(env, comm, None, sim.compute_jitter_cv, interference, lg)
                for lg in logs
            ]
        for rep, cs in zip(reps, streams, strict=True):
            env.process(work.run(env, rep.rank, comm, steps, cs))  # type: ignore[arg-type]
        env.run()
        return logs, tuple(index)
    n_sim = job.devices
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
    return logs, tuple(range(n_sim))


def _step_records(job: Job, logs: list[RankLog]) -> tuple[StepRecord, ...]:
    """Per step: wall time (a step ends when its slowest rank ends) and mean compute-busy time
    over the simulated processes (the mean over ranks: every representative stands for as many
    ranks as any other)."""
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
    sim = job.sim
    # rank 0's collectives (other nodes' HSDP shard groups are their own business)
    dpn = job.system.devices_per_node
    mine = [r for r in comm.records if r.group.contains(0, dpn) and r.key.step >= sim.warmup_steps]
    # a model-parallel strategy (Megatron) knows one rank's share of the model's work itself
    flops = work.model_flops_per_device(job, mb)
    comp_bytes = work.compute_bytes_per_step(job, mb)
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
