"""Megatron-LM's parallelism knobs as a strategy: label, memory, config rules (Megatron-LM's
``arguments.py`` / ``initialize_model_parallel``), what ``explain`` and traces show, and rank 0's
compute by kernel kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scaling.model.hardware.compute import ComputeModel, MicroBatchCompute, Op, op_category
from scaling.model.hardware.memory import MemoryBreakdown
from scaling.model.hardware.workload import Checkpointing, TransformerShape
from scaling.model.strategies.base import StrategyBase
from scaling.model.strategies.megatron.memory import megatron_memory
from scaling.model.strategies.megatron.ops import tp_block_ops, tp_head_ops
from scaling.model.strategies.megatron.stage import STREAMS
from scaling.model.strategies.megatron.work import MegatronWork

if TYPE_CHECKING:
    from scaling.model.job import Job, TrainingSpec

#: The parallel dimension ``explain`` reports each kind of collective under.
PARALLEL_DIMS = {"tp": "TP", "pp": "PP", "dp": "DP"}
#: Placements: the order of the parallel dimensions from innermost (consecutive ranks) out.
ORDERS = ("tp-pp-dp", "tp-dp-pp")


@dataclass(frozen=True, slots=True)
class MegatronSpec(StrategyBase):
    """Megatron-LM parallelism knobs (names as Megatron-LM's arguments).

    Attributes:
        tensor: tensor-parallel size ``t`` (``--tensor-model-parallel-size``).
        pipeline: pipeline stages ``p`` (``--pipeline-model-parallel-size``).
        virtual_stages: model chunks per stage ``v`` (``--num-virtual-stages-per-pipeline-rank``;
            1 = the non-interleaved 1F1B schedule).
        sequence_parallel: Korthikanti et al.'s sequence parallelism (``--sequence-parallel``).
        order: rank placement, innermost first (:data:`ORDERS`).
        distributed_optimizer: ZeRO-1 sharding of the optimizer over DP
            (``--use-distributed-optimizer``).
        overlap_grad_reduce: reduce each layer's gradients (one bucket per block) as soon as
            the last micro-batch's backward has produced them, overlapping the rest of the
            backward (``--overlap-grad-reduce``); else every gradient after the flush.
        data: the data-parallel size the config asked for (None: whatever the devices give);
            a size the devices do not give is refused (:meth:`placement_error`).
        tp_comm_overlap: Transformer Engine's userbuffer overlap of the sequence-parallel
            all-gathers / reduce-scatters with the GEMMs of the linears (``--tp-comm-overlap``;
            :data:`~scaling.model.strategies.megatron.ops.UB_NUM_SM`).
        overlap_param_gather: the distributed optimizer's parameter all-gather dispatched after
            the optimizer step, bucket by bucket, and waited for by the next step's forward
            before the block that uses it (``--overlap-param-gather``).
    """

    tensor: int = 1
    pipeline: int = 1
    virtual_stages: int = 1
    sequence_parallel: bool = False
    order: str = "tp-pp-dp"
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    data: int | None = None
    tp_comm_overlap: bool = False
    overlap_param_gather: bool = False

    @property
    def model_parallel(self) -> int:
        """Ranks one model replica spans (``t·p``)."""
        return self.tensor * self.pipeline

    @property
    def label(self) -> str:
        """``megatron-tT-pP[-vV][-sp][-zero1][-overlap][-ORDER]``: the order (e.g.
        ``-tp-dp-pp``) only when it is not the default ``tp-pp-dp``, so that strategies differing
        only in placement have different labels (the results' ``strategy`` key)."""
        out = f"megatron-t{self.tensor}-p{self.pipeline}"
        if self.virtual_stages > 1:
            out += f"-v{self.virtual_stages}"
        if self.sequence_parallel:
            out += "-sp"
        if self.distributed_optimizer:
            out += "-zero1"
        if self.overlap_grad_reduce:
            out += "-overlap"
        if self.overlap_param_gather:
            out += "-opg"
        if self.tp_comm_overlap:
            out += "-tpo"
        if self.order != ORDERS[0]:
            out += f"-{self.order}"
        return out

    def data_parallel(self, devices: int) -> int:
        """Replicas ``d = devices / (t·p)``."""
        return devices // self.model_parallel

    def memory(self, job: Job) -> MemoryBreakdown:
        """Peak memory of the busiest rank (the larger of the first and the last stage)."""
        return megatron_memory(job, self)

    @property
    def memory_hint(self) -> str:
        """Model-parallel remedies."""
        return (
            "try activation checkpointing, a larger tensor or pipeline size, "
            "sequence_parallel or distributed_optimizer"
        )

    @property
    def parallel_dims(self) -> Mapping[str, str]:
        """TP, PP and DP by the collective's kind."""
        return PARALLEL_DIMS

    @property
    def trace_streams(self) -> tuple[str, ...]:
        """The streams of its collectives (:data:`STREAMS`), in order of first use."""
        return tuple(dict.fromkeys(STREAMS.values()))

    @property
    def bubble_waits(self) -> tuple[str, ...]:
        """Waits for an activation or gradient from another stage (``wait:pp recv …``)."""
        return ("wait:pp",)

    def wait_target(self, name: str) -> tuple[str, str]:
        """``wait:<kind> <op>…`` (``wait:tp all_reduce`` → ``("tp", "all_reduce")``;
        ``wait:pp recv activation`` → ``("pp", "recv")``, an op no record has: the kind alone
        then decides)."""
        kind, _, rest = name.removeprefix("wait:").partition(" ")
        return kind, rest.split(" ")[0]

    def model_error(self, shape: TransformerShape, training: TrainingSpec) -> str:
        """Why this split of ``shape`` with this batch is impossible ("" when it is not): the
        rules of Megatron-LM's ``arguments.py`` / ``initialize_model_parallel``."""
        t, p, v = self.tensor, self.pipeline, self.virtual_stages
        m = training.grad_accum
        checks = [
            (v == 1 or p >= 2, f"parallelism.virtual_stages: got {v} with pipeline {p}; "
             "expected pipeline >= 2 for the interleaved schedule"),
            (not self.sequence_parallel or t >= 2, "sequence_parallel: got true with "
             "parallelism.tensor 1; expected tensor >= 2 (sequence parallelism splits along the "
             "tensor-parallel group)"),
            (shape.n_heads % t == 0, f"parallelism.tensor: got {t}; expected a divisor of the "
             f"model's {shape.n_heads} attention heads"),
            (shape.kv_heads % t == 0, f"parallelism.tensor: got {t}; expected a divisor of the "
             f"model's {shape.kv_heads} key/value heads"),
            (shape.ffn_hidden % t == 0, f"parallelism.tensor: got {t}; expected a divisor of the "
             f"MLP width {shape.ffn_hidden}"),
            (shape.n_layers % (p * v) == 0, f"parallelism.pipeline: got pipeline {p} x "
             f"virtual_stages {v} = {p * v}; expected a divisor of the model's {shape.n_layers} "
             "layers"),
            (p == 1 or m >= p, f"training.grad_accum_steps: got {m} micro-batches per step; "
             f"expected at least parallelism.pipeline = {p} (else the pipeline never fills)"),
            (v == 1 or m % p == 0, f"training.grad_accum_steps: got {m}; expected a multiple "
             f"of parallelism.pipeline = {p} for the interleaved schedule (Megatron-LM's rule)"),
            (not self.tp_comm_overlap or self.sequence_parallel, "tp_comm_overlap: got true "
             "without sequence_parallel; expected sequence_parallel: true (Megatron-LM's "
             "arguments.py: the userbuffer overlap splits the sequence-parallel collectives)"),
            (not self.overlap_param_gather or (self.distributed_optimizer
             and self.overlap_grad_reduce), "overlap_param_gather: got true; expected "
             "distributed_optimizer: true and overlap_grad_reduce: true (Megatron-LM's "
             "arguments.py)"),
            (not self.sequence_parallel or training.seq_len % t == 0, f"training.seq_len: got "
             f"{training.seq_len}; expected a multiple of parallelism.tensor = {t} for "
             "sequence_parallel"),
        ]  # fmt: skip
        return next((msg for ok, msg in checks if not ok), "")

    def placement_error(self, devices: int, devices_per_node: int) -> str:
        """Why the ranks cannot be placed on ``devices`` devices ("" when they can): ``t·p``
        divides the devices, the data size (if given) is what they give, TP fits the node, and
        no DP group straddles nodes unevenly (``placement.group_of`` prices groups of
        nodes × ranks per node)."""
        t, p = self.tensor, self.pipeline
        mp = t * p
        if devices % mp:
            return (
                f"parallelism: got tensor {t} x pipeline {p} = {mp} on "
                f"{devices} devices; expected devices a multiple of {mp}"
            )
        if self.data is not None and self.data * mp != devices:
            return (
                f"parallelism.data: got {self.data}; expected devices / (tensor x pipeline) = "
                f"{devices // mp} (or auto)"
            )
        if devices_per_node % t and t % devices_per_node:
            return (
                f"parallelism.tensor: got {t} on nodes of {devices_per_node} devices; expected "
                f"a divisor or a multiple of {devices_per_node}"
            )
        # a DP group's ranks repeat every t·p devices (tp-pp-dp) or fill t·d consecutive ones
        # (tp-dp-pp): unless that block divides or is a multiple of the node, the group has
        # more ranks on some nodes than on others, which no group of nodes × ranks per node
        # prices
        d = devices // mp
        inner = {"tp-pp-dp": (t * p, "pipeline", p), "tp-dp-pp": (t * d, "data", d)}

        def uneven(order: str) -> bool:
            block = inner[order][0]
            return d > 1 and devices_per_node % block != 0 and block % devices_per_node != 0

        if uneven(self.order):
            block, name, size = inner[self.order]
            other = next(o for o in inner if o != self.order)
            alt = "" if uneven(other) else f", or order {other}"
            return (
                f"order: got {self.order} with tensor {t} x {name} {size} = {block} devices "
                f"per data-parallel block on nodes of {devices_per_node} devices; expected "
                f"tensor x {name} a divisor or a multiple of {devices_per_node} (else a "
                f"data-parallel group straddles nodes unevenly){alt}"
            )
        return ""

    def compute_breakdown(self, job: Job) -> list[tuple[str, float]]:
        """Rank 0's (stage 0, first TP rank) forward + backward device time in one step, s, by
        kind of kernel (``op_category``), largest first: its ``1/t`` of the kernels of its
        stage's blocks (and recomputation) and the embedding, and with one stage (``p == 1``,
        rank 0 is also the last stage) the output layer and loss, × the micro-batches."""
        tr = job.training
        cm = ComputeModel(job.system.device, tr.dtype, sparse=tr.sparsity)
        e, t = cm.dtype_bytes, self.tensor
        first, second = tp_block_ops(
            job.shape, tr.micro_batch, tr.seq_len, e, tr.flash_attention, t, self.sequence_parallel
        )
        emb, head = tp_head_ops(job.shape, tr.micro_batch, tr.seq_len, e, t, self.sequence_parallel)
        fwd = first + second
        recompute: list[Op] = []
        if tr.checkpointing is Checkpointing.FULL:
            recompute = fwd
        elif tr.checkpointing is Checkpointing.SELECTIVE:
            recompute = [op for op in first if op.name.startswith("attn.")]
        layers = job.shape.n_layers // self.pipeline
        phases = [
            (cm.kernels(fwd), layers),
            (cm.kernels(fwd, backward=True), layers),
            (cm.kernels(recompute), layers),
            (cm.kernels(emb), 1),
            (cm.kernels(emb, backward=True), 1),
        ]
        if self.pipeline == 1:  # rank 0 runs the last (virtual) stage's head too
            phases += [(cm.kernels(head), 1), (cm.kernels(head, backward=True), 1)]
        out: dict[str, float] = {}
        gap = cm.device.kernel_launch_s
        for kernels, reps in phases:
            for k in kernels:
                label = op_category(k.name)
                out[label] = out.get(label, 0.0) + reps * (cm.op_time(k) - gap) * tr.grad_accum
                out["kernel gaps"] = out.get("kernel gaps", 0.0) + reps * gap * tr.grad_accum
        return sorted(out.items(), key=lambda kv: -kv[1])

    def plan(self, job: Job, compute: ComputeModel, mb: MicroBatchCompute) -> MegatronWork:
        """Per-stage compute segments, groups and the pipeline order of every stage."""
        return MegatronWork.build(job, self, compute)
