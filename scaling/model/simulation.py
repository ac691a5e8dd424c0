"""One simulated training job: feasibility checks, the SimPy run, and its result record.

``run_job(job) -> RunResult`` is pure: the same ``Job`` (including its seed) gives bit-identical
results. Ranks that nothing distinguishes (no compute noise) are simulated once — the collective
still spans the whole group — which gives the result of simulating every rank (equal up to the
rounding of means across ranks; a test checks this) at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import simpy

from scaling.model.analysis.metrics import (
    RunResult,
    StepRecord,
    average_power_per_device,
    cost_per_million_tokens,
    energy_per_token,
    exposed_share,
    overlap_fraction,
    time_to_train_h,
)
from scaling.model.comm.collectives import (
    AnalyticCostModel,
    CollectiveCostModel,
    CollectiveRecord,
    Communicator,
    timed_runner,
)
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import Group
from scaling.model.hardware.compute import ComputeModel, micro_batch_compute
from scaling.model.hardware.memory import GRAD_BYTES, MemoryBreakdown, ddp_memory, fsdp_memory
from scaling.model.job import InfeasibleJobError, Job
from scaling.model.strategies.ddp import DDPSpec, DDPWork, ddp_buckets, ddp_rank
from scaling.model.strategies.fsdp import (
    FSDPSpec,
    FSDPWork,
    ShardingStrategy,
    fsdp_rank,
    unit_params,
)
from scaling.model.strategies.rank import ComputeStream, RankLog
from scaling.units import GiB


def strategy_name(spec: DDPSpec | FSDPSpec) -> str:
    """Short label of a strategy for tables: ``ddp`` or ``fsdp-full_shard`` etc."""
    return "ddp" if isinstance(spec, DDPSpec) else f"fsdp-{spec.sharding.value}"


def memory_of(job: Job) -> MemoryBreakdown:
    """Peak memory of one rank of ``job``."""
    t = job.training
    if isinstance(job.strategy, FSDPSpec):
        sp = job.strategy
        shard = (
            job.system.devices_per_node
            if sp.sharding is ShardingStrategy.HYBRID_SHARD
            else job.devices
        )
        return fsdp_memory(
            job.shape,
            sp.sharding.value,
            shard,
            sp.limit_all_gathers,
            t.micro_batch,
            t.seq_len,
            t.checkpointing,
            t.flash_attention,
            job.system.device.reserved_mem_bytes,
            sp.param_bytes,
        )
    return ddp_memory(
        job.shape,
        t.micro_batch,
        t.seq_len,
        t.checkpointing,
        t.flash_attention,
        job.system.device.reserved_mem_bytes,
        job.strategy.gradient_as_bucket_view,
    )


def check_feasible(job: Job) -> MemoryBreakdown:
    """Raise :class:`InfeasibleJobError` with the numbers if ``job`` cannot run."""
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
    mem = memory_of(job)
    if mem.total > dev.mem_bytes:
        raise InfeasibleJobError(
            f"{job.system.name}: {job.shape.name} with {strategy_name(job.strategy)} on "
            f"{job.devices} devices needs {mem.total / GiB:.1f} GiB per rank "
            f"but {dev.name} has {dev.mem_bytes / GiB:.1f} GiB ({mem.describe()} GiB); try a smaller "
            "micro-batch, activation checkpointing, or a sharded strategy (FSDP)"
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
    """

    logs: tuple[RankLog, ...]
    collectives: tuple[CollectiveRecord, ...]
    bottleneck: dict[tuple, str]
    devices_per_node: int
    all_ranks: bool

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
    """Simulate ``job``; return its metrics and its timeline (spans recorded when ``trace``)."""
    mem = check_feasible(job)
    sysm, shape, tr, sim = job.system, job.shape, job.training, job.sim
    cm = ComputeModel(sysm.device, tr.dtype, sparse=tr.sparsity)
    mb = micro_batch_compute(
        cm, shape, tr.micro_batch, tr.seq_len, tr.checkpointing, tr.flash_attention
    )
    group = Group(job.nodes, sysm.devices_per_node)
    spec = job.strategy
    if isinstance(spec, FSDPSpec):
        # the optimizer updates only this rank's shard
        shard = {
            ShardingStrategy.NO_SHARD: 1,
            ShardingStrategy.HYBRID_SHARD: sysm.devices_per_node,
        }.get(spec.sharding, job.devices)
        opt = cm.optimizer_cost(shape.params() / shard)
        fwork = FSDPWork(
            mb, opt, unit_params(shape), tr.grad_accum, job.nodes, sysm.devices_per_node, spec
        )
        rank_process = partial(fsdp_rank, work=fwork)
    else:
        opt = cm.optimizer_cost(shape.params())
        buckets = ddp_buckets(shape, spec, GRAD_BYTES)
        dwork = DDPWork.build(mb, opt, shape.n_layers, tr.grad_accum, buckets, group, spec)
        rank_process = partial(ddp_rank, work=dwork)

    env = simpy.Environment()
    noisy = sim.compute_jitter_cv > 0
    n_sim = group.size if (noisy or sim.simulate_all_ranks) else 1
    if cost_model is not None:
        pricing: CollectiveCostModel = cost_model
        runner = timed_runner(env, cost_model)
    elif sim.network == "analytic":
        pricing = AnalyticCostModel(sysm)
        runner = timed_runner(env, pricing)
    else:
        flows = FlowCollectives(env, sysm, job.nodes)
        pricing, runner = flows, flows.start
    comm = Communicator(env, runner, n_sim)
    seeds = np.random.SeedSequence(sim.seed).spawn(n_sim)
    total_steps = sim.warmup_steps + sim.steps
    logs = [RankLog(spans=[] if trace else None) for _ in range(n_sim)]
    for r in range(n_sim):
        rng = np.random.default_rng(seeds[r]) if noisy else None
        cs = ComputeStream(
            env, comm, rng, sim.compute_jitter_cv, sysm.library.compute_interference, logs[r]
        )
        env.process(rank_process(env, r, comm=comm, steps=total_steps, cs=cs))
    env.run()

    ends = np.array([lg.step_end for lg in logs])  # [ranks, steps]
    boundary = np.concatenate([[0.0], ends.max(axis=0)])
    step_times = np.diff(boundary)
    busy = np.array([lg.compute_busy for lg in logs]).mean(axis=0)
    records = tuple(
        StepRecord(k, float(step_times[k]), float(busy[k]), k < sim.warmup_steps)
        for k in range(total_steps)
    )
    measured = slice(sim.warmup_steps, total_steps)
    step_time = float(step_times[measured].mean())
    compute = float(busy[measured].mean())
    exposed = max(step_time - compute, 0.0)

    # rank 0's collectives (other nodes' HSDP shard groups are their own business)
    mine = [r for r in comm.records if r.group.contains(0, sysm.devices_per_node)]
    per_step = [r for r in mine if r.key[1] >= sim.warmup_steps]
    comm_time = sum(r.end_s - r.start_s for r in per_step) / sim.steps
    comm_bytes = (
        sum(pricing.cost(r.op, r.nbytes, r.group).bytes_sent_per_rank for r in per_step) / sim.steps
    )

    tokens_per_step = job.global_batch * tr.seq_len
    tps = tokens_per_step / step_time
    model_flops_per_device = mb.model_flops * tr.grad_accum
    compute_bytes = (
        tr.grad_accum * (mb.head_fwd.bytes + mb.head_bwd.bytes)
        + tr.grad_accum * shape.n_layers * (mb.block_fwd.bytes + mb.block_bwd.bytes)
        + opt.bytes
    )
    dev = sysm.device
    power = average_power_per_device(
        dev.power_idle_W,
        dev.power_busy_W,
        compute / step_time,
        sysm.node_power_overhead_W / sysm.devices_per_node,
    )
    budget = tr.token_budget or 20.0 * shape.params()
    timeline = Timeline(
        tuple(logs),
        tuple(comm.records),
        {
            r.key: str(pricing.cost(r.op, r.nbytes, r.group).bottleneck or "")
            for r in (comm.records if trace else ())
        },
        sysm.devices_per_node,
        n_sim == group.size,
    )
    result = RunResult(
        system=sysm.name,
        model=shape.name,
        strategy=strategy_name(spec),
        nodes=job.nodes,
        devices=job.devices,
        global_batch=job.global_batch,
        tokens_per_step=tokens_per_step,
        step_time_s=step_time,
        tokens_per_s=tps,
        tokens_per_s_per_device=tps / job.devices,
        mfu=model_flops_per_device / step_time / dev.peak(tr.dtype),
        compute_time_s=compute,
        exposed_comm_s=exposed,
        exposed_comm_share=exposed_share(exposed, step_time),
        comm_time_s=comm_time,
        overlap_fraction=overlap_fraction(exposed, comm_time),
        comm_bytes_per_rank=comm_bytes,
        n_collectives_per_step=len(per_step) // sim.steps,
        peak_mem_GiB=mem.total / GiB,
        mem_capacity_GiB=dev.mem_bytes / GiB,
        mem_bw_util=compute_bytes / (step_time * dev.mem_bw_Bps),
        avg_board_power_W=power - sysm.node_power_overhead_W / sysm.devices_per_node,
        avg_power_per_device_W=power,
        energy_per_token_J=energy_per_token(power, tps / job.devices),
        cost_per_million_tokens_USD=cost_per_million_tokens(dev.price_per_hour, tps / job.devices),
        token_budget=budget,
        time_to_train_h=time_to_train_h(budget, tps),
        steps=records,
    )
    return result, timeline
