"""PyTorch DistributedDataParallel as a SimPy process per rank.

What is modelled, with the rule's source (PyTorch 2.x ``torch/nn/parallel/distributed.py``,
``torch/csrc/distributed/c10d/reducer.cpp``):

* **Bucket assignment** (``_compute_bucket_assignment_by_size``): tensors are taken in a given
  order and added to the open bucket of their dtype; a bucket closes once its size reaches its
  limit (a tensor is never split). The limits are a list whose last entry repeats.
* **Which limits** (``DistributedDataParallel.__init__`` / ``_ddp_init_helper``): the
  construction-time buckets use ``[sys.maxsize]`` — one bucket holding every parameter — unless
  ``find_unused_parameters=True`` (and not ``static_graph``), which uses the real limits. The
  real limits are ``[first, bucket_cap]`` where ``first`` is
  ``dist._DEFAULT_FIRST_BUCKET_BYTES`` (1 MiB) **only when ``bucket_cap_mb`` is not passed**;
  passing it makes ``first`` equal to the cap.
* **Order**: construction-time buckets are formed in registration order and then reversed;
  after iteration 0 the reducer rebuilds them (``Reducer::rebuild_buckets``, only without
  ``find_unused_parameters`` or with ``static_graph``) in the order gradients became ready —
  reverse registration order here (a block's gradients are taken as ready together when its
  backward ends) — and rank 0 broadcasts the new assignment (``sync_bucket_indices``: an int32
  tensor of ``tensors + 1`` elements, then an int32 tensor of one size per bucket).
* A bucket's all-reduce is launched when its last gradient is produced, in bucket order
  (``mark_bucket_ready``: "buckets are reduced in sequence"), on one in-order communication
  stream, overlapping the rest of backward.
* **Dtypes**: buckets hold gradients in the parameter dtype (fp32 under AMP, so the bucket cap
  counts 4-byte elements); a compression comm hook (``bf16_compress_hook``,
  ``fp16_compress_hook``) halves what goes on the wire, not the bucket.
* ``find_unused_parameters=True`` (and ``static_graph``'s first iteration) all-reduces the
  ``local_used_map`` (one int32 per parameter tensor) once the last bucket is launched
  (``Reducer::mark_variable_ready`` → ``all_reduce_local_used_map``).
* With gradient accumulation, non-final micro-batches skip communication (``no_sync``).
* The optimizer step starts once every bucket is reduced.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import simpy

from scaling.model.comm.collectives import CollectiveKey, Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import (
    DTYPE_BYTES,
    ComputeModel,
    MicroBatchCompute,
    PhaseCost,
)
from scaling.model.hardware.memory import MemoryBreakdown, ddp_memory
from scaling.model.hardware.workload import TransformerShape
from scaling.model.strategies.base import StrategyBase, WorkBase
from scaling.model.strategies.rank import ComputeStream
from scaling.units import MiB

if TYPE_CHECKING:
    from scaling.model.job import Job

#: The step number of what a strategy communicates before iteration 0 (``phase: setup``).
SETUP_STEP = -1
#: ``dist._DEFAULT_FIRST_BUCKET_BYTES`` (torch/distributed/distributed_c10d.py).
DEFAULT_FIRST_BUCKET_BYTES = 1 * MiB
#: DDP's default ``bucket_cap_mb`` (distributed.py), in bytes.
DEFAULT_BUCKET_CAP_BYTES = 25 * MiB
#: ``sys.maxsize``: the construction-time limit that puts every parameter in one bucket.
_ONE_BUCKET = float(2**63 - 1)
#: ``local_used_map`` and bucket-index tensors are int32.
_INT32 = 4
#: ``_sync_module_states``' broadcast bucket (``broadcast_bucket_size``, distributed.py).
_BROADCAST_BUCKET = 250 * MiB


class CommHook(StrEnum):
    """DDP communication hooks that change what goes on the wire
    (``torch.distributed.algorithms.ddp_comm_hooks.default_hooks``)."""

    NONE = "none"
    BF16_COMPRESS = "bf16_compress"  # cast the bucket to bf16, all-reduce, cast back
    FP16_COMPRESS = "fp16_compress"

    @property
    def wire_dtype(self) -> str | None:
        """The dtype the all-reduce runs in, or None for the bucket's own dtype."""
        return {"bf16_compress": "bf16", "fp16_compress": "fp16"}.get(self.value)


@dataclass(frozen=True, slots=True)
class DDPSpec(StrategyBase):
    """DDP knobs (names as in ``torch.nn.parallel.DistributedDataParallel``).

    Attributes:
        bucket_cap_bytes: ``bucket_cap_mb`` × MiB, or None when it is not passed (25 MiB, and
            the first bucket capped at ``first_bucket_bytes``).
        first_bucket_bytes: ``dist._DEFAULT_FIRST_BUCKET_BYTES``; used only when
            ``bucket_cap_bytes`` is None, as in PyTorch.
        overlap: launch each bucket as soon as it is ready (True, PyTorch's behaviour) or only
            after the whole backward (False, for what-if comparisons).
        gradient_as_bucket_view: gradients alias the bucket buffers (saves one gradient copy).
        find_unused_parameters: registration-order buckets that are never rebuilt, plus the
            used-parameter bitmap all-reduce every iteration.
        static_graph: one bucket in iteration 0 with the bitmap all-reduce, rebuilt after it.
        comm_hook: a compression hook (the all-reduce runs in bf16/fp16).
    """

    bucket_cap_bytes: float | None = None
    first_bucket_bytes: float = DEFAULT_FIRST_BUCKET_BYTES
    overlap: bool = True
    gradient_as_bucket_view: bool = False
    find_unused_parameters: bool = False
    static_graph: bool = False
    comm_hook: CommHook = CommHook.NONE

    @property
    def label(self) -> str:
        """``ddp``."""
        return "ddp"

    @property
    def collective_ops(self) -> frozenset[CollectiveOp]:
        """Gradient all-reduces (and the used-parameter map's), and ``__init__``'s shape
        all-gather and parameter broadcasts (:func:`setup_broadcasts`), rebuilt buckets'
        broadcasts: no all-to-all."""
        return frozenset({CollectiveOp.ALL_REDUCE, CollectiveOp.ALL_GATHER, CollectiveOp.BROADCAST})

    @property
    def size_limits(self) -> tuple[float, ...]:
        """The reducer's real bucket size limits, bytes (the last one repeats)."""
        if self.bucket_cap_bytes is None:
            return (self.first_bucket_bytes, DEFAULT_BUCKET_CAP_BYTES)
        return (self.bucket_cap_bytes,)

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
            param_bytes=DTYPE_BYTES[t.param_dtype],
            compute_bytes=DTYPE_BYTES[t.dtype],
        )

    def plan(self, job: Job, compute: ComputeModel, mb: MicroBatchCompute) -> DDPWork:
        """Buckets per iteration over the whole cluster; every rank updates every parameter."""
        shape = job.shape
        param_dtype = job.training.param_dtype
        wire = self.comm_hook.wire_dtype or param_dtype
        # torch.autocast runs when the compute dtype is narrower than the parameters
        autocast = DTYPE_BYTES[job.training.dtype] < DTYPE_BYTES[param_dtype]
        plans, setup = _plans(shape, self, param_dtype, wire, autocast, job.devices)
        return DDPWork(
            mb,
            compute.optimizer_cost(shape.params()),
            shape.n_layers,
            job.training.grad_accum,
            Group(job.nodes, job.system.devices_per_node),
            self,
            wire,
            plans,
            setup,
        )


@functools.lru_cache(maxsize=64)
def _plans(
    shape: TransformerShape,
    spec: DDPSpec,
    param_dtype: str,
    wire: str,
    autocast: bool,
    world: int,
) -> tuple[tuple[IterationPlan, ...], tuple[tuple, ...]]:
    """:func:`iteration_plans` and :func:`setup_broadcasts`, kept per process: they read the
    model shape, the spec and the dtypes only (equal inputs, equal plans), and the runs of a
    loop over systems, seeds or samples (``explain --vs``, uncertainty) share them. Nothing
    changes a plan after it is made (frozen buckets; rank processes only read them)."""
    plans = iteration_plans(shape, spec, param_dtype, wire, autocast)
    return plans, tuple(setup_broadcasts(shape, param_dtype, world))


@dataclass(frozen=True, slots=True)
class Bucket:
    """A gradient bucket.

    Attributes:
        nbytes: bytes all-reduced (elements × the wire dtype's size).
        ready_stage: backward stage after which it is ready: 0 = head backward done, k = k
            blocks done (the last block first), ``n_layers`` = whole backward done.
        params: names of its parameter tensors, in bucket order.
    """

    nbytes: float
    ready_stage: int
    params: tuple[str, ...]

    @property
    def n_tensors(self) -> int:
        """Parameter tensors in the bucket."""
        return len(self.params)


def param_tensors_with_stage(shape: TransformerShape) -> list[tuple[str, int, int]]:
    """(name, elements, ready stage) of every parameter tensor in registration order.

    Stages: the head (final norm, untied output layer) is ready after the head's backward
    (stage 0); block i after the ``n_layers − i`` blocks above it; the embeddings only when the
    whole backward is done (stage ``n_layers``).
    """
    return shape.tensors_with_stage()


def assign_buckets(
    tensors: list[tuple[str, int, int]],
    limits: tuple[float, ...],
    elem_bytes: float,
    wire_bytes: float,
) -> list[Bucket]:
    """``_compute_bucket_assignment_by_size`` over ``tensors`` (name, elements, stage) in the
    given order: close a bucket once it reaches the current limit (the last limit repeats).
    Sizes count ``elem_bytes`` per element; ``nbytes`` of a bucket counts ``wire_bytes``."""
    buckets: list[Bucket] = []
    names: list[str] = []
    size, elems, stage = 0.0, 0, 0
    for name, n, st in tensors:
        names.append(name)
        size += n * elem_bytes
        elems += n
        stage = max(stage, st)
        if size >= limits[min(len(buckets), len(limits) - 1)]:
            buckets.append(Bucket(elems * wire_bytes, stage, tuple(names)))
            names, size, elems, stage = [], 0.0, 0, 0
    if names:
        buckets.append(Bucket(elems * wire_bytes, stage, tuple(names)))
    return buckets


def ddp_buckets(shape: TransformerShape, spec: DDPSpec, grad_bytes: float) -> list[Bucket]:
    """Steady-state (rebuilt) buckets in launch order: reverse registration order, with the
    real size limits; sizes and bytes in ``grad_bytes`` per element."""
    order = list(reversed(param_tensors_with_stage(shape)))
    return assign_buckets(order, spec.size_limits, grad_bytes, grad_bytes)


@dataclass(frozen=True, slots=True)
class IterationPlan:
    """What DDP communicates in one iteration.

    Attributes:
        buckets: in launch order.
        stage_buckets: bucket indices that become ready when each backward stage ends.
        rebuild_broadcasts: int32 broadcasts (bytes) at the start of the iteration's forward
            (``sync_bucket_indices`` after a rebuild).
        used_map_bytes: bytes of the ``local_used_map`` all-reduce, or 0.
        used_map_first: the bitmap goes before the buckets (static graph's iteration 0), not
            after the last one.
    """

    buckets: tuple[Bucket, ...]
    stage_buckets: dict[int, list[int]]
    rebuild_broadcasts: tuple[float, ...] = ()
    used_map_bytes: float = 0.0
    used_map_first: bool = False

    @classmethod
    def of(
        cls,
        buckets: list[Bucket],
        rebuild_broadcasts: tuple[float, ...] = (),
        used_map_bytes: float = 0.0,
        used_map_first: bool = False,
    ) -> IterationPlan:
        """Index ``buckets`` by the backward stage that makes them ready."""
        by_stage: dict[int, list[int]] = {}
        for i, b in enumerate(buckets):
            by_stage.setdefault(b.ready_stage, []).append(i)
        return cls(tuple(buckets), by_stage, rebuild_broadcasts, used_map_bytes, used_map_first)


def iteration_plans(
    shape: TransformerShape, spec: DDPSpec, param_dtype: str, wire_dtype: str, autocast: bool
) -> tuple[IterationPlan, ...]:
    """Plans for iterations 0, 1, … (the last entry repeats), as recorded from PyTorch 2.x
    (tests/fixtures/torch_schedules).

    * default: iteration 0 one bucket (``[sys.maxsize]``); iteration 1 starts with the rebuild's
      index broadcasts and uses buckets formed in gradient-ready order.
    * ``static_graph``: the used-parameter bitmap is all-reduced before the single bucket in
      iteration 0; iteration 1 still runs the single bucket; the rebuild comes in iteration 2.
    * ``find_unused_parameters``: registration-order buckets with the real limits, reversed,
      never rebuilt; the bitmap after the last bucket every iteration.
    """
    tensors = param_tensors_with_stage(shape)
    stage = {name: st for name, _, st in tensors}
    elem, wire = float(DTYPE_BYTES[param_dtype]), float(DTYPE_BYTES[wire_dtype])
    used_map = _INT32 * len(tensors)
    ready = [(n, k, stage[n]) for n, k in shape.grad_ready_order(autocast)]
    rebuilt = assign_buckets(ready, spec.size_limits, elem, wire)
    if spec.find_unused_parameters and not spec.static_graph:
        # registration-order buckets with the real limits, reversed, never rebuilt
        initial = list(reversed(assign_buckets(tensors, spec.size_limits, elem, wire)))
        return (IterationPlan.of(initial, used_map_bytes=used_map),)
    one = list(reversed(assign_buckets(tensors, (_ONE_BUCKET,), elem, wire)))
    sync = (_INT32 * (len(tensors) + 1), _INT32 * len(rebuilt))
    rebuild = IterationPlan.of(rebuilt, rebuild_broadcasts=sync)
    if spec.static_graph:
        first = IterationPlan.of(one, used_map_bytes=used_map, used_map_first=True)
        return (first, IterationPlan.of(one), rebuild, IterationPlan.of(rebuilt))
    return (IterationPlan.of(one), rebuild, IterationPlan.of(rebuilt))


def setup_broadcasts(shape: TransformerShape, param_dtype: str, world: int) -> list[tuple]:
    """What ``DistributedDataParallel.__init__`` communicates, as (op, bytes, dtype): the
    parameter-shape check (``_verify_param_shape_across_processes``: an all-gather of one int64
    per rank, then rank 0's sizes and strides of every parameter, int64) and the
    ``_sync_module_states`` broadcast of every parameter from rank 0 in buckets of 250 MiB
    (``_broadcast_coalesced``; a bucket closes before it would exceed the size — the recordings
    only cover models below one bucket)."""
    dims = sum(len(dims) for _, dims in shape.param_shapes())
    out: list[tuple] = [
        (CollectiveOp.ALL_GATHER, 8.0 * world, "int64"),
        (CollectiveOp.BROADCAST, 8.0 * 2 * dims, "int64"),
    ]
    size, limit = 0.0, float(_BROADCAST_BUCKET)
    for _, n in shape.param_tensors():
        nbytes = n * DTYPE_BYTES[param_dtype]
        if size and size + nbytes > limit:
            out.append((CollectiveOp.BROADCAST, size, param_dtype))
            size = 0.0
        size += nbytes
    out.append((CollectiveOp.BROADCAST, size, param_dtype))
    return out


@dataclass(frozen=True, slots=True)
class DDPWork(WorkBase):
    """Everything a DDP rank needs, precomputed once per job (implements ``RankWork``)."""

    mb: MicroBatchCompute
    optimizer: PhaseCost
    n_layers: int
    grad_accum: int
    group: Group
    spec: DDPSpec
    #: dtype of the gradient all-reduces on the wire
    wire_dtype: str
    #: iteration 0, 1, … (the last entry repeats)
    plans: tuple[IterationPlan, ...] = field(default=())
    #: what the constructor communicates before iteration 0: (op, bytes, dtype)
    setup: tuple[tuple, ...] = ()

    def plan_of(self, step: int) -> IterationPlan:
        """The communication plan of iteration ``step``."""
        return self.plans[min(step, len(self.plans) - 1)]

    @property
    def buckets(self) -> tuple[Bucket, ...]:
        """Steady-state buckets in launch order."""
        return self.plans[-1].buckets

    def describe(self, key: CollectiveKey) -> dict[str, object]:
        """A bucket all-reduce: its index and parameter names."""
        if key.kind != "bucket":
            return {}
        bucket = self.plan_of(key.step).buckets[key.index]
        return {"bucket": {"index": key.index, "params": list(bucket.params)}}

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
        # forward has no communication in DDP
        fwd = mb.head_fwd.time_s + mb.all_blocks(L)[0].time_s
        for i, (op, nbytes, dtype) in enumerate(self.setup):
            # the constructor's shape check and parameter broadcast, before iteration 0
            key = CollectiveKey(SETUP_STEP, "setup", "init", i, label="DDP constructor")
            yield comm.call(key, op, nbytes, self.group, dtype=dtype)
        for step in range(steps):
            cs.begin_step(step)
            plan = self.plan_of(step)
            for i, nbytes in enumerate(plan.rebuild_broadcasts):
                # the rebuild's index broadcasts block the forward (``->wait()`` in reducer.cpp)
                key = CollectiveKey(step, "forward", "rebuild", i, label="bucket rebuild indices")
                yield from cs.wait(
                    comm.call(key, CollectiveOp.BROADCAST, nbytes, self.group, dtype="int32"),
                    "broadcast",
                )
            for micro in range(self.grad_accum):
                sync = micro == self.grad_accum - 1
                yield from cs.run(fwd, "forward", micro=micro)
                ready = [env.event() for _ in plan.buckets] if sync else []
                done = env.event()
                if sync:
                    env.process(_comm_stream(step, micro, plan, self, comm, ready, done))
                stage_buckets = plan.stage_buckets if (sync and self.spec.overlap) else {}
                yield from cs.run(mb.head_bwd.time_s, "backward:head", micro=micro)
                for b in stage_buckets.get(0, ()):
                    ready[b].succeed()
                for k in range(1, L + 1):
                    bwd = mb.block(L - k)[1].time_s
                    yield from cs.run(bwd, f"backward:block{L - k}", micro=micro)
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
    step: int,
    micro: int,
    plan: IterationPlan,
    work: DDPWork,
    comm: Communicator,
    ready: list[simpy.Event],
    done: simpy.Event,
) -> Generator[simpy.Event, object, None]:
    """The rank's communication stream: all-reduce buckets in order, each once it is ready,
    then (``find_unused_parameters``) the used-parameter bitmap."""
    wire = work.wire_dtype
    used_map = CollectiveKey(step, "backward", "used_map", 0, micro, label="local_used_map")
    if plan.used_map_bytes and plan.used_map_first:
        yield ready[0]  # issued with the first gradient hook, before any bucket
        yield comm.call(
            used_map, CollectiveOp.ALL_REDUCE, plan.used_map_bytes, work.group, dtype="int32"
        )
    for i, bucket in enumerate(plan.buckets):
        yield ready[i]
        key = CollectiveKey(
            step,
            "backward",
            "bucket",
            i,
            micro,
            label=f"bucket {i} ({bucket.nbytes / MiB:.1f} MiB all_reduce)",
        )
        yield comm.call(key, CollectiveOp.ALL_REDUCE, bucket.nbytes, work.group, dtype=wire)
    if plan.used_map_bytes and not plan.used_map_first:
        yield comm.call(
            used_map, CollectiveOp.ALL_REDUCE, plan.used_map_bytes, work.group, dtype="int32"
        )
    done.succeed()
