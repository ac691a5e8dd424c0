"""PyTorch DistributedDataParallel as a SimPy process per rank.

What is modelled (PyTorch ``torch/nn/parallel/distributed.py`` and ``reducer.cpp`` semantics):

* Gradient buckets are filled in *reverse* parameter-registration order; the first bucket is capped
  at 1 MiB (``dist._DEFAULT_FIRST_BUCKET_BYTES``), the others at ``bucket_cap_mb`` (default 25, in
  MiB). A tensor is never split: a bucket closes once its size reaches the cap.
* A bucket's all-reduce is launched when the last gradient in it is produced, in bucket order, on
  one in-order communication stream, overlapping the rest of backward.
* Gradients of a transformer block are all taken as ready when that block's backward ends
  (granularity: one block); head (final norm, untied output layer) gradients are ready after the
  head's backward, embedding gradients after the last block's backward.
* With gradient accumulation, non-final micro-batches skip communication (``no_sync``).
* The optimizer step starts once every bucket is reduced.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy

from scaling.model.comm.collectives import CollectiveKey, Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import ComputeModel, MicroBatchCompute, PhaseCost
from scaling.model.hardware.memory import GRAD_BYTES, MemoryBreakdown, ddp_memory
from scaling.model.hardware.workload import TransformerShape
from scaling.model.strategies.rank import ComputeStream
from scaling.units import MiB

if TYPE_CHECKING:
    from scaling.model.job import Job


@dataclass(frozen=True, slots=True)
class DDPSpec:
    """DDP knobs.

    Attributes:
        bucket_cap_bytes: bucket size cap, bytes (PyTorch ``bucket_cap_mb`` × MiB).
        first_bucket_bytes: cap of the first bucket, bytes.
        overlap: launch each bucket as soon as it is ready (True, PyTorch's behaviour) or only
            after the whole backward (False, for what-if comparisons).
        gradient_as_bucket_view: gradients alias the bucket buffers (saves one gradient copy).
    """

    bucket_cap_bytes: float = 25 * MiB
    first_bucket_bytes: float = 1 * MiB
    overlap: bool = True
    gradient_as_bucket_view: bool = False

    @property
    def label(self) -> str:
        """``ddp``."""
        return "ddp"

    def memory(self, job: Job) -> MemoryBreakdown:
        """A full replica of weights, gradients and Adam states per rank, plus the buckets."""
        t = job.training
        return ddp_memory(
            job.shape,
            t.micro_batch,
            t.seq_len,
            t.checkpointing,
            t.flash_attention,
            job.system.device.reserved_mem_bytes,
            self.gradient_as_bucket_view,
        )

    def plan(self, job: Job, compute: ComputeModel, mb: MicroBatchCompute) -> DDPWork:
        """Buckets in launch order over the whole cluster; every rank updates every parameter."""
        shape = job.shape
        return DDPWork.build(
            mb,
            compute.optimizer_cost(shape.params()),
            shape.n_layers,
            job.training.grad_accum,
            ddp_buckets(shape, self, GRAD_BYTES),
            Group(job.nodes, job.system.devices_per_node),
            self,
        )


@dataclass(frozen=True, slots=True)
class Bucket:
    """A gradient bucket: its size in bytes and the backward stage after which it is ready.

    Stages count backward progress: 0 = head backward done, k = k blocks done (the last block
    first), ``n_layers`` = whole backward done.
    """

    nbytes: float
    ready_stage: int
    n_tensors: int


def param_tensors_with_stage(shape: TransformerShape) -> list[tuple[str, int, int]]:
    """(name, elements, ready stage) of every parameter tensor in registration order."""
    n_layers = shape.n_layers
    tensors: list[tuple[str, int, int]] = [("wte", shape.vocab * shape.hidden, n_layers)]
    if shape.max_seq:
        tensors.append(("wpe", shape.max_seq * shape.hidden, n_layers))
    for i in range(n_layers):
        stage = n_layers - i  # block i finishes backward after the n_layers−i blocks above it
        tensors += [(f"h{i}.{name}", n, stage) for name, n in shape.layer_param_tensors()]
    tensors.append(("ln_f", shape.hidden * (2 if shape.bias else 1), 0))
    if not shape.tied_embeddings:
        tensors.append(("lm_head", shape.vocab * shape.hidden, 0))
    return tensors


def ddp_buckets(shape: TransformerShape, spec: DDPSpec, grad_bytes: float) -> list[Bucket]:
    """Bucket assignment in launch order (reverse registration order, size-capped)."""
    buckets: list[Bucket] = []
    size, stage, count = 0.0, 0, 0
    for _name, n, st in reversed(param_tensors_with_stage(shape)):
        size += n * grad_bytes
        stage = max(stage, st)
        count += 1
        cap = spec.first_bucket_bytes if not buckets else spec.bucket_cap_bytes
        if size >= cap:
            buckets.append(Bucket(size, stage, count))
            size, stage, count = 0.0, 0, 0
    if count:
        buckets.append(Bucket(size, stage, count))
    return buckets


@dataclass(frozen=True, slots=True)
class DDPWork:
    """Everything a DDP rank needs, precomputed once per job (implements ``RankWork``)."""

    mb: MicroBatchCompute
    optimizer: PhaseCost
    n_layers: int
    grad_accum: int
    buckets: list[Bucket]
    group: Group
    spec: DDPSpec
    #: bucket indices that become ready when each backward stage ends
    stage_buckets: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        mb: MicroBatchCompute,
        optimizer: PhaseCost,
        n_layers: int,
        grad_accum: int,
        buckets: list[Bucket],
        group: Group,
        spec: DDPSpec,
    ) -> DDPWork:
        """Index the buckets by the backward stage that makes them ready."""
        by_stage: dict[int, list[int]] = {}
        for i, b in enumerate(buckets):
            by_stage.setdefault(b.ready_stage, []).append(i)
        return cls(mb, optimizer, n_layers, grad_accum, buckets, group, spec, by_stage)

    def run(
        self,
        env: simpy.Environment,
        rank: int,
        comm: Communicator,
        steps: int,
        cs: ComputeStream,
    ) -> Generator[simpy.Event, object, None]:
        """SimPy process of one DDP rank for ``steps`` training steps."""
        mb, L = self.mb, self.n_layers
        fwd = mb.head_fwd.time_s + L * mb.block_fwd.time_s  # forward has no communication in DDP
        for step in range(steps):
            cs.begin_step(step)
            for micro in range(self.grad_accum):
                sync = micro == self.grad_accum - 1
                yield from cs.run(fwd, "forward", micro=micro)
                ready = [env.event() for _ in self.buckets] if sync else []
                done = env.event()
                if sync:
                    env.process(_comm_stream(env, step, self, comm, ready, done))
                stage_buckets = self.stage_buckets if (sync and self.spec.overlap) else {}
                yield from cs.run(mb.head_bwd.time_s, "backward:head", micro=micro)
                for b in stage_buckets.get(0, ()):
                    ready[b].succeed()
                for k in range(1, L + 1):
                    yield from cs.run(mb.block_bwd.time_s, f"backward:block{L - k}", micro=micro)
                    for b in stage_buckets.get(k, ()):
                        ready[b].succeed()
                if sync:
                    if not self.spec.overlap:
                        for ev in ready:
                            ev.succeed()
                    yield from cs.wait(done, "all_reduce")
            yield from cs.run(self.optimizer.time_s, "optimizer")
            cs.end_step()


def _comm_stream(
    env: simpy.Environment,
    step: int,
    work: DDPWork,
    comm: Communicator,
    ready: list[simpy.Event],
    done: simpy.Event,
) -> Generator[simpy.Event, object, None]:
    """The rank's communication stream: all-reduce buckets in order, each once it is ready."""
    for i, bucket in enumerate(work.buckets):
        yield ready[i]
        key = CollectiveKey(
            step,
            "backward",
            "bucket",
            i,
            label=f"bucket {i} ({bucket.nbytes / MiB:.1f} MiB all_reduce)",
        )
        yield comm.call(key, CollectiveOp.ALL_REDUCE, bucket.nbytes, work.group)
    done.succeed()
