"""The interface every training strategy implements, and the defaults a strategy inherits.

A strategy (DDP, FSDP, Megatron …) is a frozen spec object. :class:`Strategy` declares every
question the rest of the program asks it — its label, the peak memory of a rank, its
model-parallel size, its rank's compute by kernel kind, the config rules it imposes, the
dimensions ``explain`` reports and the streams a trace shows — and the work it plans
(:class:`RankWork`): the set of representative processes the simulation runs, the SimPy process
each runs, and one rank's FLOPs and memory traffic per step. :class:`StrategyBase` and
:class:`WorkBase` give the answers of a data-parallel strategy (every rank identical, rank 0
stands for all), so a new strategy is one module subclassing them plus its entry in the config
schema (``scaling.io.strategy_config``); nothing else changes, and nothing probes a strategy
with ``getattr``/``hasattr``.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import simpy

from scaling.model.comm.ops import CollectiveOp
from scaling.model.hardware.moe import MoEShape
from scaling.model.routing import RoutingStats

if TYPE_CHECKING:
    from scaling.model.comm.collectives import CollectiveKey, Communicator
    from scaling.model.hardware.compute import ComputeModel, MicroBatchCompute, PhaseCost
    from scaling.model.hardware.memory import MemoryBreakdown
    from scaling.model.hardware.system import DeviceSpec
    from scaling.model.hardware.workload import TransformerShape
    from scaling.model.job import Job, TrainingSpec
    from scaling.model.strategies.rank import ComputeStream


@dataclass(frozen=True, slots=True)
class Representative:
    """One simulated process standing for a set of ranks that do the same work.

    Attributes:
        rank: the global rank the process is (its collectives and timeline are this rank's).
        members: every rank it stands for (itself included); with rank noise on they run as one
            rank ensemble (``strategies.ensemble``), else the process is each of them.
    """

    rank: int
    members: Sequence[int]


class RankWork(Protocol):
    """What a strategy precomputes once per job for its ranks, and the processes they run."""

    @property
    def optimizer(self) -> PhaseCost:
        """One optimizer step of one rank (time and bytes)."""
        ...

    def representatives(self, job: Job) -> tuple[Representative, ...]:
        """The processes that stand for every rank of ``job`` (a partition of its ranks into
        sets of identical ranks, one process each): a DP rank for DDP/FSDP, one per pipeline
        stage for Megatron. ``simulate_all_ranks`` runs every rank instead, as a check."""
        ...

    def run(
        self,
        env: simpy.Environment,
        rank: int,
        comm: Communicator,
        steps: int,
        cs: ComputeStream,
    ) -> Generator[simpy.Event, object, None]:
        """SimPy process of rank ``rank`` (a representative, or any rank when every rank is
        simulated: ``comm.simulated_ranks`` says how many processes run) for ``steps`` steps."""
        ...

    def describe(self, key: CollectiveKey) -> dict[str, object]:
        """What the strategy knows about one of its collectives, for schedules (JSON-ready)."""
        ...

    def model_flops_per_device(self, job: Job, mb: MicroBatchCompute) -> float:
        """Model FLOPs of rank 0 per step (no recomputation; MFU's numerator)."""
        ...

    def compute_bytes_per_step(self, job: Job, mb: MicroBatchCompute) -> float:
        """Bytes rank 0's compute moves to and from device memory per step."""
        ...

    @property
    def node_local_calls_contend(self) -> bool:
        """Whether collectives inside one node may share links with each other or with
        inter-node traffic; when not, the flow network prices them by its uncontended
        prediction instead of running flows (``simulation._communicator``)."""
        ...

    @property
    def all_to_all_calls_contend(self) -> bool:
        """Whether its all-to-alls may share links with other traffic in flight; when not, the
        flow network prices them by its uncontended prediction (``simulation._communicator``)."""
        ...

    @property
    def routing(self) -> RoutingStats:
        """The run's token routing over its MoE layers (``model.routing``; a perfect balance
        without experts): the results' ``moe_*`` columns."""
        ...


class _HasOptimizer(Protocol):
    @property
    def optimizer(self) -> PhaseCost: ...


class WorkBase:
    """Defaults of :class:`RankWork` for a data-parallel strategy: rank 0 stands for every rank,
    and does the whole model's compute per micro-batch."""

    __slots__ = ()

    def representatives(self, job: Job) -> tuple[Representative, ...]:
        """Rank 0 for every rank."""
        return (Representative(0, range(job.devices)),)

    def model_flops_per_device(self, job: Job, mb: MicroBatchCompute) -> float:
        """The model FLOPs of a micro-batch × micro-batches per step."""
        return mb.model_flops * job.training.grad_accum

    def compute_bytes_per_step(self: _HasOptimizer, job: Job, mb: MicroBatchCompute) -> float:
        """Blocks and head, forward and backward, per micro-batch, plus the optimizer step."""
        ga = job.training.grad_accum
        fwd, bwd = mb.all_blocks(job.shape.n_layers)
        return ga * (mb.head_fwd.bytes + mb.head_bwd.bytes + fwd.bytes + bwd.bytes) + (
            self.optimizer.bytes
        )

    @property
    def node_local_calls_contend(self) -> bool:
        """Yes: DDP's and FSDP's node-local calls overlap each other (prefetch, HSDP)."""
        return True

    @property
    def all_to_all_calls_contend(self) -> bool:
        """Yes (a strategy without all-to-alls has nothing to price otherwise)."""
        return True

    @property
    def routing(self) -> RoutingStats:
        """No experts: a perfect balance, nothing dropped."""
        return RoutingStats()


@runtime_checkable
class Strategy(Protocol):
    """A training strategy: label, memory model, the work its ranks do, and what it tells the
    config, ``explain`` and traces (defaults: :class:`StrategyBase`)."""

    @property
    def label(self) -> str:
        """Short name for tables: ``ddp``, ``fsdp-full_shard`` …"""
        ...

    def memory(self, job: Job) -> MemoryBreakdown:
        """Peak memory of one rank of ``job`` (bytes, by part)."""
        ...

    def plan(self, job: Job, compute: ComputeModel, mb: MicroBatchCompute) -> RankWork:
        """Everything a rank needs (buckets or units, optimizer cost), computed once per job."""
        ...

    @property
    def model_parallel(self) -> int:
        """Ranks one model replica spans (1 for data parallelism)."""
        ...

    @property
    def memory_hint(self) -> str:
        """What to try when a rank does not fit (ends the out-of-memory refusal)."""
        ...

    def compute_breakdown(self, job: Job) -> list[tuple[str, float]]:
        """Rank 0's forward + backward device time in one step (s) by kind of kernel, largest
        first (the optimizer step is not included)."""
        ...

    def model_error(self, shape: TransformerShape, training: TrainingSpec) -> str:
        """Why the strategy cannot split ``shape`` with this batch ("" when it can): a config
        rule, as ``field: got X; expected Y``."""
        ...

    def placement_error(self, devices: int, devices_per_node: int) -> str:
        """Why the strategy cannot place its ranks on ``devices`` devices of nodes of
        ``devices_per_node`` ("" when it can), as ``field: got X; expected Y``."""
        ...

    def device_error(self, device: DeviceSpec) -> str:
        """Why the strategy's options cannot run on ``device`` ("" when they can), as
        ``field: got X; expected Y``."""
        ...

    @property
    def parallel_dims(self) -> Mapping[str, str]:
        """Collective ``kind`` → the parallel dimension ``explain`` reports it under (``TP`` …);
        kinds not listed are reported by op alone."""
        ...

    @property
    def bubble_waits(self) -> tuple[str, ...]:
        """Prefixes of wait spans that wait for another pipeline stage (``explain`` counts
        them as the bubble when nothing of the rank is in flight)."""
        ...

    @property
    def trace_streams(self) -> tuple[str, ...]:
        """The communication streams (``CollectiveKey.stream``) a trace shows, in track order
        after ``compute``."""
        ...

    def wait_target(self, name: str) -> tuple[str, str]:
        """The collective kind (``""``: any) and op a wait span named ``name`` waits for."""
        ...

    @property
    def collective_ops(self) -> frozenset[CollectiveOp]:
        """Every collective operation a run of this strategy may issue (``Communicator.call``):
        a superset is safe, a missing one is a defect (tests/test_read_view.py records the
        calls). :func:`scaling.model.reads.read_view` leaves the library constants of an
        algorithm that implements none of them out of a job's key."""
        ...


class StrategyBase:
    """Defaults of the optional :class:`Strategy` hooks, those of a data-parallel strategy."""

    __slots__ = ()

    @property
    def model_parallel(self) -> int:
        """1: every rank holds the whole model."""
        return 1

    @property
    def memory_hint(self) -> str:
        """Data-parallel remedies."""
        return "try a smaller micro-batch, activation checkpointing, or a sharded strategy (FSDP)"

    def compute_breakdown(self, job: Job) -> list[tuple[str, float]]:
        """The whole model's kernels per micro-batch × micro-batches per step."""
        from scaling.model.hardware.breakdown import replica_compute_breakdown

        return replica_compute_breakdown(job)

    def model_error(self, shape: TransformerShape, training: TrainingSpec) -> str:
        """Any dense model and batch; a MoE model (``hardware.moe.MoEShape``) needs a strategy
        that places its experts (``kind: megatron``), which overrides this."""
        if isinstance(shape, MoEShape):
            return (
                f"model: got the MoE model {shape.name!r}; expected strategy kind megatron (its "
                "expert parallelism places the experts; this strategy has no experts)"
            )
        return ""

    def placement_error(self, devices: int, devices_per_node: int) -> str:
        """None: any number of devices."""
        return ""

    def device_error(self, device: DeviceSpec) -> str:
        """None: any device that trains."""
        return ""

    @property
    def parallel_dims(self) -> Mapping[str, str]:
        """None: collectives are reported by op."""
        return {}

    @property
    def bubble_waits(self) -> tuple[str, ...]:
        """None: no pipeline."""
        return ()

    @property
    def trace_streams(self) -> tuple[str, ...]:
        """The communication stream and HSDP's replicate stream."""
        return ("comm", "comm:replicate")

    def wait_target(self, name: str) -> tuple[str, str]:
        """``wait:<op>[:<detail>]`` (``wait:all_gather:unit3`` → ``("", "all_gather")``)."""
        return "", name.removeprefix("wait:").split(":")[0].split(" ")[0]

    @property
    def collective_ops(self) -> frozenset[CollectiveOp]:
        """Every operation (nothing is known of a strategy that does not say)."""
        return frozenset(CollectiveOp)
