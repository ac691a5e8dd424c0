"""Metric definitions — the one place where each metric's name, unit and formula live.

Every table, plot and report uses these names; the README's metric table is generated from
:data:`METRICS` (``scaling metrics``) so documentation and code cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from scaling.model.failures import goodput_of
from scaling.model.routing import RoutingStats
from scaling.model.variability import FAILURE_STREAM, stream
from scaling.units import GiB

if TYPE_CHECKING:
    from scaling.model.job import Job


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric: its column name, unit and one-line definition."""

    name: str
    unit: str
    definition: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "step_time_s",
            "s",
            "wall time of one steady-state training step (mean over measured steps)",
        ),
        Metric("tokens_per_s", "tokens/s", "global batch tokens / step_time_s, whole cluster"),
        Metric("tokens_per_s_per_device", "tokens/s", "tokens_per_s / number of accelerators"),
        Metric(
            "scaling_efficiency",
            "1",
            "tokens_per_s_per_device at N / tokens_per_s_per_device at the smallest N of the "
            "same system in the sweep (weak scaling: fixed per-device batch)",
        ),
        Metric(
            "mfu",
            "1",
            "model FLOP/s per device (6·N·tokens + attention, no recomputation) / dense peak FLOP/s "
            "of the training dtype",
        ),
        Metric(
            "compute_time_s",
            "s",
            "time the compute stream of a rank is busy in one step (forward, backward, optimizer)",
        ),
        Metric(
            "exposed_comm_s",
            "s",
            "step_time_s − compute_time_s: time compute waits on communication (or on slower ranks)",
        ),
        Metric("exposed_comm_share", "1", "exposed_comm_s / step_time_s"),
        Metric(
            "comm_time_s",
            "s",
            "sum of the durations of the collectives one rank took part in during one step",
        ),
        Metric(
            "overlap_fraction",
            "1",
            "1 − exposed_comm_s / comm_time_s: share of communication hidden behind compute",
        ),
        Metric(
            "comm_bytes_per_rank",
            "bytes",
            "bytes one rank puts on the wire per step (ring all-reduce: 2(p−1)/p per gradient byte)",
        ),
        Metric(
            "peak_mem_GiB",
            "GiB",
            "peak memory of one rank (weights, grads, optimizer, activations, buffers)",
        ),
        Metric(
            "mem_bw_util",
            "1",
            "bytes moved to/from device memory by compute / (step_time_s · peak memory bandwidth)",
        ),
        Metric(
            "avg_board_power_W",
            "W",
            "accelerator board power: idle + (busy − idle) · compute_time_s/step_time_s",
        ),
        Metric(
            "avg_power_per_device_W",
            "W",
            "idle + (busy − idle) · compute_time_s/step_time_s, plus the node's non-accelerator "
            "power divided among its accelerators",
        ),
        Metric(
            "energy_per_token_J",
            "J",
            "avg_power_per_device_W / tokens_per_s_per_device",
        ),
        Metric(
            "cost_per_million_tokens_USD",
            "USD",
            "price per accelerator-hour / 3600 / tokens_per_s_per_device · 1e6",
        ),
        Metric("token_budget", "tokens", "tokens to train for (default 20 per parameter)"),
        Metric("time_to_train_h", "h", "token_budget / tokens_per_s / 3600"),
        Metric(
            "goodput",
            "1",
            "useful training time / wall time under the failure process (failures: checkpoint "
            "writes, work lost since the last checkpoint, restarts; one seeded draw over the "
            "whole training); 1 without a failure model (then job_mtbf_h and the checkpoint "
            "intervals are infinite)",
        ),
        Metric(
            "effective_time_to_train_h",
            "h",
            "wall time to train token_budget with failures: time_to_train_h / goodput",
        ),
        Metric(
            "job_mtbf_h",
            "h",
            "mean time between failures of the job: per-device MTBF / number of accelerators",
        ),
        Metric(
            "checkpoint_interval_min",
            "min",
            "training time between checkpoints: the configured interval (default "
            "checkpoint_interval_opt_min), rounded up to whole steps",
        ),
        Metric(
            "checkpoint_interval_opt_min",
            "min",
            "Young's optimal checkpoint interval sqrt(2 · checkpoint write time · job_mtbf_h)",
        ),
        Metric(
            "moe_rank_load",
            "1",
            "MoE routing: token-copies the busiest expert-parallel rank receives / the mean "
            "(tokens·top_k/EP), averaged over the MoE layers (one seeded draw per layer, "
            "capacity drops applied); it scales the expert GEMMs and dispatch all-to-alls; 1 "
            "for a dense model or a perfect balance",
        ),
        Metric(
            "moe_rank_load_max",
            "1",
            "moe_rank_load of the worst MoE layer",
        ),
        Metric(
            "moe_expert_load",
            "1",
            "MoE routing: token-copies the busiest expert keeps / the mean (tokens·top_k/E), "
            "averaged over the MoE layers; 1 for a dense model",
        ),
        Metric(
            "moe_dropped_share",
            "1",
            "MoE routing: share of the token-copies the capacity factor drops, averaged over "
            "the MoE layers; 0 when dropless or for a dense model",
        ),
    )
}

#: The other columns of a results table (``scaling run``, a sweep, replicas, uncertainty
#: samples): what identifies a row and the job's sizes, with units ("1": a count or a label);
#: ``scaling metrics`` lists them after :data:`METRICS`. Sweep axis columns are named by the
#: sweep's own ``axes`` (the field path they set).
IDENTITY_COLUMNS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("system", "1", "system name (a topologies/*.yaml file or an in-memory system)"),
        Metric("model", "1", "model preset name, or the name of a model described in the config"),
        Metric(
            "strategy", "1", "the strategy's label: kind and the knobs that differ from defaults"
        ),
        Metric("nodes", "1", "nodes of the point"),
        Metric("devices", "1", "accelerators of the point: nodes x devices per node"),
        Metric("global_batch", "sequences", "sequences per optimizer step, whole cluster"),
        Metric("tokens_per_step", "tokens", "global_batch x training.seq_len"),
        Metric(
            "n_collectives_per_step",
            "1",
            "collectives rank 0 takes part in per measured step",
        ),
        Metric(
            "mem_capacity_GiB",
            "GiB",
            "memory capacity of one accelerator (device.mem_GB; peak_mem_GiB must fit in it less reserved_mem_GiB)",
        ),
        Metric("status", "1", "ok (ran), refused (cannot run: the reason in error) or failed"),
        Metric("error", "1", "why a point was refused or failed; empty when it ran"),
        Metric(
            "config_hash", "1", "hash of every input of a scaling run (equal hashes, equal inputs)"
        ),
        Metric("run_key", "1", "a sweep run's content hash: its file is runs/<run_key>.parquet"),
        Metric("point", "1", "a sweep run's index among the sweep's points (axis combinations)"),
        Metric("replica", "1", "replica index (--replicas; 0 = the configured seed)"),
        Metric("seed", "1", "the random seed a replica or sample ran with"),
        Metric("sample", "1", "uncertainty sample index (--uncertainty)"),
    )
}


def scaling_efficiency(
    per_device_throughput: float, baseline_per_device_throughput: float
) -> float:
    """Scaling efficiency (1 = perfect) of a point relative to its baseline point."""
    return per_device_throughput / baseline_per_device_throughput


def exposed_share(exposed_s: float, step_s: float) -> float:
    """Share of the step in which compute waited on communication."""
    return exposed_s / step_s if step_s > 0 else 0.0


def overlap_fraction(exposed_s: float, comm_s: float) -> float:
    """Share of communication time hidden behind compute (1 when there is no communication)."""
    if comm_s <= 0:
        return 1.0
    return min(max(1.0 - exposed_s / comm_s, 0.0), 1.0)


def average_power_per_device(
    idle_W: float, busy_W: float, compute_share: float, overhead_W: float
) -> float:
    """Average electrical power of one accelerator and its share of the node, W."""
    share = min(max(compute_share, 0.0), 1.0)
    return idle_W + (busy_W - idle_W) * share + overhead_W


def energy_per_token(power_W: float, tokens_per_s_per_device: float) -> float:
    """Joules per token."""
    return power_W / tokens_per_s_per_device


def cost_per_million_tokens(price_per_hour: float, tokens_per_s_per_device: float) -> float:
    """Currency per million tokens from the accelerator's hourly price."""
    return price_per_hour / 3600.0 / tokens_per_s_per_device * 1e6


def time_to_train_h(token_budget: float, tokens_per_s: float) -> float:
    """Hours to process ``token_budget`` tokens at the cluster's throughput."""
    return token_budget / tokens_per_s / 3600.0


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One simulated step (s)."""

    step: int
    step_time_s: float
    compute_time_s: float
    warmup: bool


@dataclass(frozen=True, slots=True)
class RunResult:
    """Scalars of one run (steady-state means; units in names) plus per-step records."""

    system: str
    model: str
    strategy: str
    nodes: int
    devices: int
    global_batch: int
    tokens_per_step: int
    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_device: float
    mfu: float
    compute_time_s: float
    exposed_comm_s: float
    exposed_comm_share: float
    comm_time_s: float
    overlap_fraction: float
    comm_bytes_per_rank: float
    n_collectives_per_step: int
    peak_mem_GiB: float
    mem_capacity_GiB: float
    mem_bw_util: float
    avg_board_power_W: float
    avg_power_per_device_W: float
    energy_per_token_J: float
    cost_per_million_tokens_USD: float
    token_budget: float
    time_to_train_h: float
    goodput: float = 1.0
    effective_time_to_train_h: float = math.inf
    job_mtbf_h: float = math.inf
    checkpoint_interval_min: float = math.inf
    checkpoint_interval_opt_min: float = math.inf
    moe_rank_load: float = 1.0
    moe_rank_load_max: float = 1.0
    moe_expert_load: float = 1.0
    moe_dropped_share: float = 0.0
    steps: tuple[StepRecord, ...] = field(default=())

    def scalars(self) -> dict[str, float | int | str]:
        """All scalar fields as a flat dict (per-step records excluded)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "steps"}

    def __repr__(self) -> str:
        return (
            f"RunResult({self.system} x{self.nodes} nodes = {self.devices} accel, {self.model}, "
            f"{self.strategy}: step {self.step_time_s:.4g} s, "
            f"{self.tokens_per_s_per_device:,.0f} tokens/s/accel, MFU {self.mfu:.1%}, "
            f"exposed comm {self.exposed_comm_share:.1%}, peak mem {self.peak_mem_GiB:.1f} GiB; "
            f"{len(self.steps)} steps; .scalars() for every metric)"
        )


@dataclass(frozen=True, slots=True)
class Measured:
    """What one simulation produced, before any metric is formed.

    Attributes:
        steps: every simulated step, warm-up included.
        comm_time_s: summed duration of the collectives rank 0 took part in, per measured step.
        comm_bytes_per_rank: bytes rank 0 put on the wire per measured step.
        n_collectives_per_step: collectives rank 0 took part in per measured step.
        model_flops_per_device: model FLOPs of one rank per step (no recomputation).
        compute_bytes: bytes one rank's compute moves to and from device memory per step.
        peak_mem_bytes: peak memory of one rank.
        routing: the token routing over the MoE layers (a perfect balance without experts).
    """

    steps: tuple[StepRecord, ...]
    comm_time_s: float
    comm_bytes_per_rank: float
    n_collectives_per_step: int
    model_flops_per_device: float
    compute_bytes: float
    peak_mem_bytes: float
    routing: RoutingStats = field(default_factory=RoutingStats)


def run_result(job: Job, m: Measured) -> RunResult:
    """Every metric of one run, by the definitions in :data:`METRICS`.

    ``step_time_s`` and ``compute_time_s`` are means over the measured (non-warm-up) steps.
    """
    measured = [s for s in m.steps if not s.warmup]
    step_time = float(np.mean([s.step_time_s for s in measured]))
    compute = float(np.mean([s.compute_time_s for s in measured]))
    exposed = max(step_time - compute, 0.0)
    sysm, dev, tr = job.system, job.system.device, job.training
    tokens_per_step = job.global_batch * tr.seq_len
    tps = tokens_per_step / step_time
    tps_dev = tps / job.devices
    overhead = sysm.node_power_overhead_W / sysm.devices_per_node
    power = average_power_per_device(
        dev.power_idle_W, dev.power_busy_W, compute / step_time, overhead
    )
    budget = tr.token_budget or 20.0 * job.shape.params()
    ttt = time_to_train_h(budget, tps)
    fail = job.failures
    gp = goodput_of(
        fail,
        job.devices,
        step_time,
        ttt,
        None if fail is None else stream(job.sim.seed, FAILURE_STREAM),
    )
    return RunResult(
        system=sysm.name,
        model=job.shape.name,
        strategy=job.strategy.label,
        nodes=job.nodes,
        devices=job.devices,
        global_batch=job.global_batch,
        tokens_per_step=tokens_per_step,
        step_time_s=step_time,
        tokens_per_s=tps,
        tokens_per_s_per_device=tps_dev,
        mfu=m.model_flops_per_device / step_time / dev.peak(tr.dtype),
        compute_time_s=compute,
        exposed_comm_s=exposed,
        exposed_comm_share=exposed_share(exposed, step_time),
        comm_time_s=m.comm_time_s,
        overlap_fraction=overlap_fraction(exposed, m.comm_time_s),
        comm_bytes_per_rank=m.comm_bytes_per_rank,
        n_collectives_per_step=m.n_collectives_per_step,
        peak_mem_GiB=m.peak_mem_bytes / GiB,
        mem_capacity_GiB=dev.mem_bytes / GiB,
        mem_bw_util=m.compute_bytes / (step_time * dev.mem_bw_Bps),
        avg_board_power_W=power - overhead,
        avg_power_per_device_W=power,
        energy_per_token_J=energy_per_token(power, tps_dev),
        cost_per_million_tokens_USD=cost_per_million_tokens(dev.price_per_hour, tps_dev),
        token_budget=budget,
        time_to_train_h=ttt,
        goodput=gp.goodput,
        effective_time_to_train_h=gp.effective_time_to_train_h,
        job_mtbf_h=gp.job_mtbf_h,
        checkpoint_interval_min=gp.checkpoint_interval_min,
        checkpoint_interval_opt_min=gp.checkpoint_interval_opt_min,
        moe_rank_load=m.routing.rank_load,
        moe_rank_load_max=m.routing.rank_load_max,
        moe_expert_load=m.routing.expert_load,
        moe_dropped_share=m.routing.dropped,
        steps=m.steps,
    )
