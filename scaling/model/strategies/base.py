"""The interface every training strategy implements.

A strategy (DDP, FSDP, …) is a frozen spec object that knows four things about itself: its
label for tables, the peak memory of one of its ranks, the collectives it will issue, and the
SimPy process each rank runs. :func:`scaling.model.simulation.run_job` asks only these
questions, so a new strategy is one module implementing :class:`Strategy` plus its entry in the
config schema (``scaling.io.config``); nothing else changes.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import simpy

if TYPE_CHECKING:
    from scaling.model.comm.collectives import CollectiveKey, Communicator
    from scaling.model.hardware.compute import ComputeModel, MicroBatchCompute, PhaseCost
    from scaling.model.hardware.memory import MemoryBreakdown
    from scaling.model.job import Job
    from scaling.model.strategies.rank import ComputeStream


class RankWork(Protocol):
    """What a strategy precomputes once per job for its ranks, and the process they run."""

    @property
    def optimizer(self) -> PhaseCost:
        """One optimizer step of one rank (time and bytes)."""
        ...

    def run(
        self,
        env: simpy.Environment,
        rank: int,
        comm: Communicator,
        steps: int,
        cs: ComputeStream,
    ) -> Generator[simpy.Event, object, None]:
        """SimPy process of rank ``rank`` for ``steps`` training steps."""
        ...

    def describe(self, key: CollectiveKey) -> dict[str, object]:
        """What the strategy knows about one of its collectives, for schedules (JSON-ready)."""
        ...


@runtime_checkable
class Strategy(Protocol):
    """A training strategy: label, memory model and the work its ranks do."""

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
