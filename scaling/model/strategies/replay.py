"""A recorded job's collective schedule, replayed on any system (``scaling replay``).

The recording gives one rank's program: per iteration, its collectives in issue order (op,
bytes, the global ranks of the group, phase) and, where the recording has them (a Kineto trace
of a GPU job), the device time of the compute kernels between two calls. Replaying it on
another system keeps that program and re-prices what depends on the hardware:

* **Communication**: each call runs on the target's network as the simulator prices any
  collective (library profile, algorithms, flows). Every rank is taken to run the recorded
  rank's program on its own groups (SPMD, as DDP, FSDP/HSDP and Megatron are): a group that
  takes part of each of several nodes has sibling groups on the rest of those nodes running at
  the same time (priced as lanes, as HSDP's replicate groups are), since they share the NICs.
* **Streams**: calls on one process group run in order on that group's stream and different
  groups' calls may overlap (PyTorch's ProcessGroupNCCL: one NCCL communicator and stream per
  group and device, torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp ``getNCCLComm``).
* **Dependencies**, which no recording format carries, follow what PyTorch's wrappers wait for:
  the output of an all-gather, broadcast or all-to-all feeds the next compute (FSDP's unit
  parameters, DDP's constructor broadcast), so the compute after it waits for it; an
  all-reduce or reduce-scatter of gradients is waited for at the end of the iteration, before
  the optimizer (DDP's ``finalize_backward``, FSDP's post-backward final callback); an
  all-reduce right after a reduce-scatter on another group reduces that reduce-scatter's output
  (HSDP) and starts after it. Calls are numbered in program order (a call's place in the
  schedule), whenever their stream gets to them. Setup calls run before iteration 0, each
  waited for.
* **Compute** between calls: ``trace`` — the recorded kernel seconds x the recorded device's
  dense peak / the target's (same dtype); ``model`` — a described model's forward, backward and
  optimizer on the target's device model, forward spread evenly over the gaps before the
  forward-phase calls (all before the first call when forward has none, as in DDP), backward
  over the backward-phase gaps (before the first backward call when there are none), the
  optimizer after the last call (without recorded phases, forward and backward are spread over
  every gap); ``none`` — communication only.

Not modelled: memory (a replay without a described model does not know what a rank holds),
point-to-point sends (Megatron's pipeline), and anything the recording does not hold.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

import simpy

from scaling.model.comm.collectives import CollectiveKey, Communicator
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import ComputeModel, MicroBatchCompute, PhaseCost
from scaling.model.hardware.memory import MemoryBreakdown
from scaling.model.strategies.base import (
    RankWork,
    Representative,
    Strategy,
    StrategyBase,
    WorkBase,
)
from scaling.model.strategies.rank import ComputeStream

if TYPE_CHECKING:
    from scaling.model.job import Job

#: the step number of the calls before iteration 0 (as DDP's constructor's, ``phase: setup``)
REPLAY_SETUP_STEP = -1
#: ops whose output the next compute consumes (waited for before it)
_FEEDS_COMPUTE = frozenset(
    {CollectiveOp.ALL_GATHER, CollectiveOp.BROADCAST, CollectiveOp.ALL_TO_ALL}
)


#: compute in one gap between calls: (span name, seconds on the target) parts
Segment = tuple[tuple[str, float], ...]


class ComputeSource(StrEnum):
    """Where the compute between a replayed job's calls comes from."""

    TRACE = "trace"
    MODEL = "model"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ReplayedCall:
    """One recorded collective to replay.

    Attributes:
        op: the collective.
        nbytes: bytes as ``scaling schedule`` counts them (all-gather: the output;
            reduce-scatter: the input).
        ranks: the recorded group's global ranks.
        phase: ``forward``, ``backward``, ``optimizer``, ``setup`` or "" (not recorded).
        dtype: element type (torch name) or None.
        compute_before_s: recorded compute (s, on the recorded device) between the previous
            call (or the iteration's start) and this one; 0 when not recorded.
    """

    op: CollectiveOp
    nbytes: float
    ranks: tuple[int, ...]
    phase: str = ""
    dtype: str | None = None
    compute_before_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplayedStep:
    """One recorded iteration: its calls in issue order and the recorded compute after the
    last one (s, on the recorded device)."""

    calls: tuple[ReplayedCall, ...]
    compute_after_s: float = 0.0


def group_of(ranks: Sequence[int], per_node: int, devices_per_node: int) -> Group | str:
    """The simulator's group of recorded ``ranks`` when rank ``r`` is local device
    ``r % per_node`` of node ``r // per_node`` on nodes of ``devices_per_node`` devices, or why
    it cannot be placed (``""`` never). A group spanning several nodes with part of each has
    sibling lanes on the rest of the node's ``per_node`` devices (every rank runs the same
    program on its own groups)."""
    nodes = sorted({r // per_node for r in ranks})
    locals_ = sorted({r % per_node for r in ranks})
    k, base = len(locals_), locals_[0]
    block = (
        nodes == list(range(nodes[0], nodes[0] + len(nodes)))
        and locals_ == list(range(base, base + k))
        and len(ranks) == len(nodes) * k
        and len(set(ranks)) == len(ranks)
    )
    if not block:
        return (
            f"group {list(ranks)}: not a block of whole nodes x consecutive devices the simulator "
            f"can place ({per_node} ranks per node)"
        )
    group = Group(len(nodes), k, nodes[0], base)
    if len(nodes) > 1 and k < per_node and per_node % k == 0 and base % k == 0:
        group = replace(group, local_base=0, lanes=per_node // k)
    return group


@dataclass(frozen=True, slots=True)
class ReplaySpec(StrategyBase):
    """A recorded job's schedule as a strategy (its own program, nothing planned).

    Attributes:
        rank: the recorded rank (its program stands for every rank's).
        world_size: ranks in the recorded job.
        ranks_per_node: recorded ranks per node of the target (``--devices-per-node``).
        setup: calls before iteration 0.
        steps: recorded iterations; simulated step ``k`` replays ``steps[min(k, last)]``.
        compute: where the compute between calls comes from.
        recorded_peak_flops: dense peak of the recorded device at the job's dtype (FLOP/s), to
            scale ``trace`` compute; 0 otherwise.
        described: the described model's strategy (``model`` compute, memory, optimizer and
            FLOPs); None without a description.
    """

    rank: int
    world_size: int
    ranks_per_node: int
    setup: tuple[ReplayedCall, ...]
    steps: tuple[ReplayedStep, ...]
    compute: ComputeSource = ComputeSource.NONE
    recorded_peak_flops: float = 0.0
    described: Strategy | None = None

    @property
    def label(self) -> str:
        """``replay``."""
        return "replay"

    @property
    def trace_streams(self) -> tuple[str, ...]:
        """One communication stream per recorded group size (the world's is ``comm``)."""
        calls = (*self.setup, *(c for s in self.steps for c in s.calls))
        return tuple(dict.fromkeys(stream_of(c, self.world_size) for c in calls))

    def memory(self, job: Job) -> MemoryBreakdown:
        """The described strategy's; without a description nothing is known (zeros and the
        device's reserved memory): the replay does not check memory."""
        if self.described is not None:
            return self.described.memory(job)
        return MemoryBreakdown(0.0, 0.0, 0.0, 0.0, 0.0, job.system.device.reserved_mem_bytes)

    def placement_error(self, devices: int, devices_per_node: int) -> str:
        """The recorded world must fill the nodes at ``ranks_per_node`` each, and every group
        must be placeable."""
        nodes = devices // devices_per_node
        if self.ranks_per_node > devices_per_node:
            return (
                f"--devices-per-node: got {self.ranks_per_node}; expected at most "
                f"{devices_per_node} (the system's)"
            )
        if nodes * self.ranks_per_node != self.world_size:
            return (
                f"other world size: recorded {self.world_size} ranks, the replay places "
                f"{nodes} nodes x {self.ranks_per_node} = {nodes * self.ranks_per_node}"
            )
        for c in (*self.setup, *(c for s in self.steps for c in s.calls)):
            if not all(0 <= r < self.world_size for r in c.ranks):
                return (
                    f"group {list(c.ranks)}: ranks outside the recorded world of {self.world_size}"
                )
            g = group_of(c.ranks, self.ranks_per_node, devices_per_node)
            if isinstance(g, str):
                return g
        return ""

    def plan(self, job: Job, compute: ComputeModel, mb: MicroBatchCompute) -> ReplayWork:
        """Groups on the target, compute per gap on the target's device."""
        dpn = job.system.devices_per_node
        if why := self.placement_error(job.devices, dpn):
            raise ValueError(why)
        groups: dict[tuple[int, ...], Group] = {}
        for c in (*self.setup, *(c for s in self.steps for c in s.calls)):
            g = group_of(c.ranks, self.ranks_per_node, dpn)
            assert isinstance(g, Group)
            groups[c.ranks] = g
        described = self.described.plan(job, compute, mb) if self.described is not None else None
        optimizer = described.optimizer if described is not None else PhaseCost(0.0, 0.0, 0.0, 0)
        gaps = tuple(self._gaps(s, job, mb, optimizer) for s in self.steps)
        return ReplayWork(self, groups, gaps, optimizer, self.device(dpn), described)

    def device(self, devices_per_node: int) -> int:
        """The global device the recorded rank is placed on (its node, its local index)."""
        node, local = divmod(self.rank, self.ranks_per_node)
        return node * devices_per_node + local

    def _gaps(
        self, step: ReplayedStep, job: Job, mb: MicroBatchCompute, optimizer: PhaseCost
    ) -> tuple[Segment, ...]:
        """Compute on the target before each call, then after the last: (span name, s) parts."""
        n = len(step.calls)
        if self.compute is ComputeSource.TRACE:
            scale = self.recorded_peak_flops / job.system.device.peak(job.training.dtype)
            before = tuple(((_span(c.phase), c.compute_before_s * scale),) for c in step.calls)
            return (*before, (("compute", step.compute_after_s * scale),))
        if self.compute is ComputeSource.NONE:
            return ((),) * (n + 1)
        ga, L = job.training.grad_accum, job.shape.n_layers
        fwd = ga * (mb.head_fwd.time_s + L * mb.block_fwd.time_s)
        bwd = ga * (mb.head_bwd.time_s + L * mb.block_bwd.time_s)
        gaps: list[list[tuple[str, float]]] = [[] for _ in range(n + 1)]
        phases = [c.phase for c in step.calls]
        for part, t in (("forward", fwd), ("backward", bwd)):
            at = [k for k, p in enumerate(phases) if p == part]
            if not any(phases):  # no phases recorded: spread over every gap
                at = list(range(max(n, 1)))
            elif not at:  # no call in that phase: all of it before the next phase's first
                later = "backward" if part == "forward" else "optimizer"
                at = [next((k for k, p in enumerate(phases) if p == later), n)]
            for k in at:
                gaps[k].append((part, t / len(at)))
        gaps[n].append(("optimizer", optimizer.time_s))
        return tuple(tuple(g) for g in gaps)


@dataclass(frozen=True, slots=True)
class ReplayWork(WorkBase):
    """The planned replay: each call's group on the target and the compute of each gap.

    Attributes:
        spec: the replayed schedule.
        groups: recorded ranks -> the target's group.
        gaps: per recorded iteration, the compute before each call and after the last, as
            (span name, s) parts.
        optimizer: the described optimizer step (zero without a description).
        device: the target device the recorded rank is placed on.
        described: the described strategy's work (FLOPs and bytes per step), if any.
    """

    spec: ReplaySpec
    groups: dict[tuple[int, ...], Group]
    gaps: tuple[tuple[Segment, ...], ...]
    optimizer: PhaseCost
    device: int
    described: RankWork | None = None

    def representatives(self, job: Job) -> tuple[Representative, ...]:
        """The recorded rank (on its target device) stands for every rank."""
        return (Representative(self.device, range(job.devices)),)

    def model_flops_per_device(self, job: Job, mb: MicroBatchCompute) -> float:
        """The described model's; 0 without one (the recording holds no FLOPs)."""
        if self.described is None:
            return 0.0
        return self.described.model_flops_per_device(job, mb)

    def compute_bytes_per_step(self, job: Job, mb: MicroBatchCompute) -> float:
        """The described model's; 0 without one."""
        if self.described is None:
            return 0.0
        return self.described.compute_bytes_per_step(job, mb)

    def describe(self, key: CollectiveKey) -> dict[str, object]:
        """The call's position in the recorded iteration."""
        return {"recorded_index": key.index}

    def run(
        self,
        env: simpy.Environment,
        rank: int,
        comm: Communicator,
        steps: int,
        cs: ComputeStream,
    ) -> Generator[simpy.Event, object, None]:
        """Setup calls (each waited for), then per iteration: compute, issue each call on its
        group's stream, wait where the program needs the result, and for everything at the
        end before the optimizer."""
        for i, c in enumerate(self.spec.setup):
            key = self._key(REPLAY_SETUP_STEP, i, c)
            yield comm.call(key, c.op, c.nbytes, self.groups[c.ranks], dtype=c.dtype)
        for step in range(steps):
            k = min(step, len(self.spec.steps) - 1)
            rec, gaps = self.spec.steps[k], self.gaps[k]
            cs.begin_step(step)
            last: dict[tuple[int, ...], tuple[simpy.Event, CollectiveOp]] = {}
            needed: list[tuple[simpy.Event, CollectiveOp]] = []
            issued: list[simpy.Event] = []
            for i, c in enumerate(rec.calls):
                for ev, op in needed:
                    yield from cs.wait(ev, op.value)
                needed.clear()
                for name, t in gaps[i]:
                    if t > 0:
                        yield from cs.run(t, name)
                key = self._key(step, i, c)
                after = [last[c.ranks][0]] if c.ranks in last else []
                if i and _reduces_output_of(c, rec.calls[i - 1]):
                    after.append(issued[-1])
                # numbered now, in program order, whenever its stream gets to it
                done = env.process(self._on_stream(comm, after, key, c, comm.next_issue()))
                issued.append(done)
                last[c.ranks] = (done, c.op)
                if c.op in _FEEDS_COMPUTE:
                    needed.append((done, c.op))
            for ev, op in [*needed, *last.values()]:
                yield from cs.wait(ev, op.value)
            for name, t in gaps[-1]:
                if t > 0:
                    yield from cs.run(t, name)
            cs.end_step()

    def _key(self, step: int, i: int, c: ReplayedCall) -> CollectiveKey:
        stream = stream_of(c, self.spec.world_size)
        label = f"#{i} {c.op.value} {c.nbytes / 2**20:.2f} MiB ({len(c.ranks)} ranks)"
        return CollectiveKey(step, c.phase or "replay", "replay", i, stream=stream, label=label)

    def _on_stream(
        self,
        comm: Communicator,
        after: list[simpy.Event],
        key: CollectiveKey,
        c: ReplayedCall,
        issue: int,
    ) -> Generator[simpy.Event, object, None]:
        """One call on its group's stream: after the group's previous call (and the call whose
        output it carries)."""
        for ev in after:
            if not ev.processed:
                yield ev
        group = self.groups[c.ranks]
        yield comm.call(key, c.op, c.nbytes, group, dtype=c.dtype, issue=issue)


def _reduces_output_of(c: ReplayedCall, prev: ReplayedCall) -> bool:
    """Whether ``c`` carries ``prev``'s output: an all-reduce right after a reduce-scatter on
    another group (HSDP's replicate all-reduce of the shard just reduced; PyTorch FSDP
    ``_reduce_grad`` makes its all-reduce stream wait for the reduce-scatter's)."""
    return (
        c.op is CollectiveOp.ALL_REDUCE
        and prev.op is CollectiveOp.REDUCE_SCATTER
        and c.ranks != prev.ranks
    )


def stream_of(c: ReplayedCall, world_size: int) -> str:
    """The trace track of a replayed call: ``comm`` for the world's group, else ``comm:<size>``."""
    return "comm" if len(c.ranks) == world_size else f"comm:{len(c.ranks)}"


def _span(phase: str) -> str:
    """A compute span's name: the phase ``explain`` knows (forward, backward), else compute."""
    return phase if phase in ("forward", "backward") else "compute"
