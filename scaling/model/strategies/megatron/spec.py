"""Megatron-LM's parallelism knobs as a strategy: label, memory, config rules (Megatron-LM's
``arguments.py`` / ``initialize_model_parallel``), what ``explain`` and traces show, and rank 0's
compute by kernel kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scaling.model.hardware.breakdown import op_category
from scaling.model.hardware.compute import ComputeModel, MicroBatchCompute, Op
from scaling.model.hardware.memory import MemoryBreakdown
from scaling.model.hardware.moe import MoEShape
from scaling.model.hardware.workload import Checkpointing, TransformerShape
from scaling.model.routing import RoutingKind, RoutingSpec, layer_loads
from scaling.model.strategies.base import StrategyBase
from scaling.model.strategies.megatron.experts import moe_ops, moe_tokens, stage_blocks
from scaling.model.strategies.megatron.memory import megatron_memory
from scaling.model.strategies.megatron.ops import tp_block_ops, tp_head_ops, ub_error
from scaling.model.strategies.megatron.stage import STREAMS
from scaling.model.strategies.megatron.work import MegatronWork

if TYPE_CHECKING:
    from scaling.model.hardware.system import DeviceSpec
    from scaling.model.job import Job, TrainingSpec

#: The parallel dimension ``explain`` reports each kind of collective under.
PARALLEL_DIMS = {"tp": "TP", "cp": "CP", "pp": "PP", "dp": "DP",
                 # expert parallelism: the dispatch / combine all-to-alls, expert-TP, and the
                 # experts' gradient reduction over the expert-data-parallel group
                 "ep": "EP", "etp": "ETP", "edp": "EDP"}  # fmt: skip
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
        context: context-parallel size ``c`` (``--context-parallel-size``): each micro-batch's
            sequence split ``c`` ways, attention by ring exchange of K/V (``megatron.context``).
        first_stage_layers, last_stage_layers: blocks on the first / last pipeline stage
            (``--decoder-first-pipeline-num-layers`` / ``--decoder-last-pipeline-num-layers``;
            None: the even share); the other stages split the rest evenly.
        account_for_embedding, account_for_loss: count the embedding as one layer of the
            first stage / the output layer and loss as one of the last
            (``--account-for-embedding-in-pipeline-split`` /
            ``--account-for-loss-in-pipeline-split``): every stage then holds
            ``(L + e + l)/p`` layers, the first and last one block fewer (interleaved: every
            chunk ``(L + e + l)/(p·v)``, the first stage's first chunk and the last stage's
            last chunk one fewer, :meth:`chunk_layers`).
        tp_comm_overlap: Transformer Engine's userbuffer overlap of the sequence-parallel
            all-gathers / reduce-scatters with the GEMMs of the linears (``--tp-comm-overlap``;
            :data:`~scaling.model.strategies.megatron.ops.UB_NUM_SM`).
        overlap_param_gather: the distributed optimizer's parameter all-gather dispatched after
            the optimizer step, bucket by bucket, and waited for by the next step's forward
            before the block that uses it (``--overlap-param-gather``).
        expert_parallel: expert-parallel size ``EP`` (``--expert-model-parallel-size``;
            ``megatron.experts``): each rank holds ``E/EP`` of a MoE block's routed experts.
        expert_tensor_parallel: expert-TP size (``--expert-tensor-parallel-size``; None: the
            tensor size, Megatron-Core's default).
        moe_shared_expert_overlap: the shared experts computed during the dispatch and combine
            all-to-alls (``--moe-shared-expert-overlap``).
        routing: the token-to-expert distribution and capacity factor (``model.routing``).
    """

    tensor: int = 1
    pipeline: int = 1
    virtual_stages: int = 1
    sequence_parallel: bool = False
    order: str = "tp-pp-dp"
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    data: int | None = None
    context: int = 1
    first_stage_layers: int | None = None
    last_stage_layers: int | None = None
    account_for_embedding: bool = False
    account_for_loss: bool = False
    tp_comm_overlap: bool = False
    overlap_param_gather: bool = False
    expert_parallel: int = 1
    expert_tensor_parallel: int | None = None
    moe_shared_expert_overlap: bool = False
    routing: RoutingSpec = field(default_factory=RoutingSpec)

    @property
    def etp(self) -> int:
        """The expert-TP size in effect (the tensor size unless given)."""
        return self.expert_tensor_parallel or self.tensor

    @property
    def model_parallel(self) -> int:
        """Ranks one model replica spans (``t·c·p``: the ``c`` context-parallel ranks share one
        micro-batch's sequence, so they count toward a replica, not toward the data size)."""
        return self.tensor * self.context * self.pipeline

    @property
    def uneven_stages(self) -> bool:
        """Whether the stages' blocks are set otherwise than ``L/p`` each."""
        given = self.first_stage_layers is not None or self.last_stage_layers is not None
        return given or self.account_for_embedding or self.account_for_loss

    def stage_layers(self, n_layers: int) -> list[int]:
        """Blocks on each pipeline stage: ``first_stage_layers`` / ``last_stage_layers`` where
        given, the rest split evenly over the other stages (Megatron-Core
        ``transformer_block.get_num_layers_to_build``); with the embedding / loss accounted as
        a layer, ``(L + e + l)/p`` per stage less that layer on the first / last stage
        (``TransformerConfig.account_for_embedding_in_pipeline_split``). Assumes
        :meth:`model_error` passed."""
        p = self.pipeline
        first, last = self.first_stage_layers, self.last_stage_layers
        if p == 1:
            return [n_layers]
        e, lo = int(self.account_for_embedding), int(self.account_for_loss)
        if e or lo:
            per = (n_layers + e + lo) // p
            first, last = per - e, per - lo
        fixed = {0: first, p - 1: last}
        free = [k for k in range(p) if fixed.get(k) is None]
        rest = n_layers - sum(x for x in fixed.values() if x is not None)
        each = rest // len(free) if free else 0
        return [fixed[k] if fixed.get(k) is not None else each for k in range(p)]  # type: ignore[misc]

    def chunk_layers(self, n_layers: int) -> list[list[int]]:
        """Blocks of each model chunk of each stage, ``[stage][chunk]`` (chunk ``c`` of stage
        ``k`` is virtual stage ``c·p + k``): a stage's blocks split evenly over its ``v``
        chunks; with the embedding / loss accounted as a layer, ``(L + e + l)/(p·v)`` per
        chunk less that layer on the first chunk of the first stage / the last chunk of the
        last (Megatron-Core ``transformer_block.get_num_layers_to_build``: the per-rank share
        over ``vp_size``, then ``is_vp_first_stage`` / ``is_vp_last_stage``). Assumes
        :meth:`model_error` passed."""
        p, v = self.pipeline, self.virtual_stages
        e, lo = int(self.account_for_embedding), int(self.account_for_loss)
        if (e or lo) and p > 1:
            per = (n_layers + e + lo) // (p * v)
            out = [[per] * v for _ in range(p)]
            out[0][0] -= e
            out[p - 1][v - 1] -= lo
            return out
        return [[n // v] * v for n in self.stage_layers(n_layers)]

    @property
    def label(self) -> str:
        """``megatron-tT-pP[-vV][-sp][-zero1][-overlap][-ORDER]``: the order (e.g.
        ``-tp-dp-pp``) only when it is not the default ``tp-pp-dp``, so that strategies differing
        only in placement have different labels (the results' ``strategy`` key)."""
        out = f"megatron-t{self.tensor}-p{self.pipeline}"
        if self.context > 1:
            out += f"-c{self.context}"
        if self.first_stage_layers is not None or self.last_stage_layers is not None:
            out += "-l" + "-".join(map(str, self.stage_layers_label))
        if self.account_for_embedding:
            out += "-acc-emb"
        if self.account_for_loss:
            out += "-acc-loss"
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
        return out + self._expert_label

    @property
    def _expert_label(self) -> str:
        """``-eE[-etX][-seo][-zipfS|-hist][-cfC]``: expert parallelism and routing."""
        out = f"-e{self.expert_parallel}" if self.expert_parallel > 1 else ""
        if self.expert_tensor_parallel is not None and self.expert_tensor_parallel != self.tensor:
            out += f"-et{self.expert_tensor_parallel}"
        if self.moe_shared_expert_overlap:
            out += "-seo"
        r = self.routing
        if r.kind is RoutingKind.ZIPF:
            out += f"-zipf{r.zipf_s:g}"
        elif r.kind is RoutingKind.HISTOGRAM:
            out += "-hist"
        if r.capacity_factor is not None:
            out += f"-cf{r.capacity_factor:g}"
        return out

    @property
    def stage_layers_label(self) -> tuple[str, str]:
        """(first, last) stage blocks as the label shows them (``even`` when not given)."""
        f, last = self.first_stage_layers, self.last_stage_layers
        return ("even" if f is None else str(f), "even" if last is None else str(last))

    def data_parallel(self, devices: int) -> int:
        """Replicas ``d = devices / (t·c·p)``."""
        return devices // self.model_parallel

    def memory(self, job: Job) -> MemoryBreakdown:
        """Peak memory of the busiest rank (the larger of the first and the last stage)."""
        return megatron_memory(job, self)

    @property
    def memory_hint(self) -> str:
        """Model-parallel remedies."""
        return (
            "try activation checkpointing, a larger tensor or pipeline size, "
            "sequence_parallel, distributed_optimizer, parallelism.context (splits the "
            "activations by the sequence) or fewer layers on the first stage "
            "(parallelism.first_stage_layers)"
        )

    @property
    def parallel_dims(self) -> Mapping[str, str]:
        """TP, PP and DP by the collective's kind."""
        return PARALLEL_DIMS

    @property
    def trace_streams(self) -> tuple[str, ...]:
        """The streams of its collectives (:data:`STREAMS`), in order of first use (the
        all-to-alls' track only with expert parallelism)."""
        kinds = [k for k in STREAMS if k != "ep" or self.expert_parallel > 1]
        return tuple(dict.fromkeys(STREAMS[k] for k in kinds))

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
        if shape.encoder_decoder:
            # Megatron's T5 (megatron/core/models/T5) splits encoder and decoder across its
            # own pipeline layout; this strategy builds the decoder-only GPT model only
            return (
                f"model: got encoder-decoder {shape.name!r}; expected a decoder-only model "
                "(the Megatron strategy has no encoder-decoder TP/PP; use ddp or fsdp)"
            )
        t, p, v, c = self.tensor, self.pipeline, self.virtual_stages, self.context
        m = training.grad_accum
        uneven = self.uneven_stages
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
            (uneven or shape.n_layers % (p * v) == 0, f"parallelism.pipeline: got pipeline {p}"
             f" x virtual_stages {v} = {p * v}; expected a divisor of the model's "
             f"{shape.n_layers} layers (or parallelism.first_stage_layers / last_stage_layers)"),
            (p == 1 or m >= p, f"training.grad_accum_steps: got {m} micro-batches per step; "
             f"expected at least parallelism.pipeline = {p} (else the pipeline never fills)"),
            (v == 1 or m % p == 0, f"training.grad_accum_steps: got {m}; expected a multiple "
             f"of parallelism.pipeline = {p} for the interleaved schedule (Megatron-LM's rule)"),
            (not self.sequence_parallel or training.seq_len % (t * c) == 0, f"training.seq_len:"
             f" got {training.seq_len}; expected a multiple of parallelism.tensor x context = "
             f"{t * c} for sequence_parallel"),
            # Megatron-LM get_batch_on_this_cp_rank: the sequence in 2c chunks, rank i taking
            # chunks i and 2c-1-i (causal load balance)
            (c == 1 or training.seq_len % (2 * c) == 0, f"training.seq_len: got "
             f"{training.seq_len}; expected a multiple of 2 x parallelism.context = {2 * c} "
             "(the sequence is split into 2 x context chunks)"),
            (not self.tp_comm_overlap or self.sequence_parallel, "tp_comm_overlap: got true "
             "without sequence_parallel; expected sequence_parallel: true (Megatron-LM's "
             "arguments.py: the userbuffer overlap splits the sequence-parallel collectives)"),
            (not self.overlap_param_gather or (self.distributed_optimizer
             and self.overlap_grad_reduce), "overlap_param_gather: got true; expected "
             "distributed_optimizer: true and overlap_grad_reduce: true (Megatron-LM's "
             "arguments.py)"),
        ]  # fmt: skip
        first = next((msg for ok, msg in checks if not ok), "")
        return first or self._stages_error(shape) or self._experts_error(shape)

    def _experts_error(self, shape: TransformerShape) -> str:
        """Why the experts cannot be split this way ("" when they can): Megatron-LM's
        ``arguments.py`` rules for MoE."""
        ep, etp, t = self.expert_parallel, self.etp, self.tensor
        if not isinstance(shape, MoEShape):
            given = {
                "parallelism.expert_parallel": (ep, ep > 1, 1),
                "parallelism.expert_tensor_parallel": (
                    self.expert_tensor_parallel, self.expert_tensor_parallel is not None, None),
                "moe.shared_expert_overlap": (self.moe_shared_expert_overlap,
                                              self.moe_shared_expert_overlap, False),
                "moe.routing": (self.routing.kind.value, self.routing != RoutingSpec(),
                                "uniform, no capacity factor"),
            }  # fmt: skip
            for name, (got, on, want) in given.items():
                if on:
                    return (
                        f"{name}: got {got} with the dense model {shape.name!r}; expected "
                        f"{want} (expert options need a model with model.moe)"
                    )
            return ""
        m = shape.moe
        checks = [
            (m.experts % ep == 0, f"parallelism.expert_parallel: got {ep}; expected a divisor "
             f"of the model's {m.experts} routed experts"),
            (m.expert_ffn % etp == 0, f"parallelism.expert_tensor_parallel: got {etp}; expected"
             f" a divisor of the expert width {m.expert_ffn}"),
            (m.shared_width % t == 0, f"parallelism.tensor: got {t}; expected a divisor of the "
             f"shared experts' width {m.shared_width}"),
            (t == 1 or self.sequence_parallel, f"sequence_parallel: got false with "
             f"parallelism.tensor {t} on a MoE model; expected true (Megatron-LM arguments.py: "
             "expert parallelism with tensor parallelism needs sequence parallelism)"),
            (not self.tp_comm_overlap, "tp_comm_overlap: got true on a MoE model; expected "
             "false (the userbuffer overlap of the MoE blocks is not modelled yet)"),
            (not self.overlap_param_gather, "overlap_param_gather: got true on a MoE model; "
             "expected false (the experts' overlapped parameter gather is not modelled yet)"),
            (not self.moe_shared_expert_overlap or m.shared_experts > 0,
             "moe.shared_expert_overlap: got true; expected false for a model without shared "
             "experts"),
        ]  # fmt: skip
        return next((msg for ok, msg in checks if not ok), "") or self.routing.error(m.experts)

    def _stages_error(self, shape: TransformerShape) -> str:
        """Why ``first_stage_layers`` / ``last_stage_layers`` or the embedding / loss
        accounting cannot split ``shape`` ("" when they can): Megatron-Core's rules (the other
        stages take an equal, non-empty share of the rest; with accounting, ``p·v`` divides
        the accounted layers), and given first / last stages only without interleaving (a
        limit of this model: Megatron-Core splits them over ``vp_size`` chunks too)."""
        first, last = self.first_stage_layers, self.last_stage_layers
        p, n = self.pipeline, shape.n_layers
        acc = {"account_for_embedding": self.account_for_embedding,
               "account_for_loss": self.account_for_loss}  # fmt: skip
        if any(acc.values()):
            name = next(k for k, on in acc.items() if on)
            total = n + sum(acc.values())
            if first is not None or last is not None:
                return (
                    f"parallelism.{name}: got true with first_stage_layers / last_stage_layers "
                    "set; expected one of the two ways of splitting the stages"
                )
            # Megatron-Core asserts (L + e + l) % p == 0, then the per-rank share % vp_size
            pv = p * self.virtual_stages
            if p < 2 or total % pv or total // pv < 2:
                return (
                    f"parallelism.{name}: got true with pipeline {p} x virtual_stages "
                    f"{self.virtual_stages} = {pv}; expected pipeline >= 2 and {pv} "
                    f"dividing the {n} layers + {total - n} accounted = {total} (at least 2 each)"
                )
            return ""
        if first is None and last is None:
            return ""
        name = "first_stage_layers" if first is not None else "last_stage_layers"
        got = first if first is not None else last
        if p < 2 or self.virtual_stages > 1:
            return (
                f"parallelism.{name}: got {got} with pipeline {p} x virtual_stages "
                f"{self.virtual_stages}; expected pipeline >= 2 without interleaving "
                "(given first / last stages are modelled for the non-interleaved schedule; "
                "account_for_embedding / account_for_loss also interleave)"
            )
        given = sum(x for x in (first, last) if x is not None)
        free = p - sum(1 for x in (first, last) if x is not None)
        rest = n - given
        if free == 0 and rest != 0:
            return (
                f"parallelism.{name}: got first {first} + last {last} = {given} with pipeline "
                f"{p}; expected the model's {n} layers"
            )
        if free and (rest < free or rest % free):
            return (
                f"parallelism.{name}: got {given} layers on the given stage(s) of {n}; expected "
                f"the other {free} stages to split the remaining {rest} evenly (a multiple of "
                f"{free}, at least {free})"
            )
        return ""

    def placement_error(self, devices: int, devices_per_node: int) -> str:
        """Why the ranks cannot be placed on ``devices`` devices ("" when they can): ``t·p``
        divides the devices, the data size (if given) is what they give, TP fits the node, and
        no DP group straddles nodes unevenly (``placement.group_of`` prices groups of
        nodes × ranks per node)."""
        t, p, c = self.tensor, self.pipeline, self.context
        mp = t * c * p
        what = (
            f"tensor {t} x pipeline {p}" if c == 1 else f"tensor {t} x context {c} x pipeline {p}"
        )
        if devices % mp:
            return f"parallelism: got {what} = {mp} on {devices} devices; expected devices a multiple of {mp}"
        if self.data is not None and self.data * mp != devices:
            den = "tensor x pipeline" if c == 1 else "tensor x context x pipeline"
            return (
                f"parallelism.data: got {self.data}; expected devices / ({den}) = "
                f"{devices // mp} (or auto)"
            )
        if devices_per_node % t and t % devices_per_node:
            return (
                f"parallelism.tensor: got {t} on nodes of {devices_per_node} devices; expected "
                f"a divisor or a multiple of {devices_per_node}"
            )
        tc = t * c
        if c > 1 and devices_per_node % tc and tc % devices_per_node:
            # a CP group (c ranks t apart, Megatron's tp-cp-… order) would have more ranks on
            # some nodes than on others
            return (
                f"parallelism.context: got {c} with tensor {t} = {tc} devices per context-"
                f"parallel block on nodes of {devices_per_node} devices; expected tensor x "
                f"context a divisor or a multiple of {devices_per_node}"
            )
        # a DP group's ranks repeat every t·c·p devices (tp-pp-dp) or fill t·c·d consecutive
        # ones (tp-dp-pp): unless that block divides or is a multiple of the node, the group
        # has more ranks on some nodes than on others, which no group of nodes × ranks per
        # node prices
        d = devices // mp
        inner = {"tp-pp-dp": (tc * p, "pipeline", p), "tp-dp-pp": (tc * d, "data", d)}

        def uneven(order: str) -> bool:
            block = inner[order][0]
            return d > 1 and devices_per_node % block != 0 and block % devices_per_node != 0

        ep_error = self._expert_placement_error(devices, devices_per_node)
        if ep_error:
            return ep_error
        if uneven(self.order):
            block, name, size = inner[self.order]
            other = next(o for o in inner if o != self.order)
            alt = "" if uneven(other) else f", or order {other}"
            ctx = "" if c == 1 else f" x context {c}"
            return (
                f"order: got {self.order} with tensor {t}{ctx} x {name} {size} = {block} devices "
                f"per data-parallel block on nodes of {devices_per_node} devices; expected "
                f"tensor{' x context' if c > 1 else ''} x {name} a divisor or a multiple of "
                f"{devices_per_node} (else a data-parallel group straddles nodes unevenly){alt}"
            )
        return ""

    def device_error(self, device: DeviceSpec) -> str:
        """Userbuffer overlap needs more compute units than its communication kernels take."""
        return ub_error(device.compute_units) if self.tp_comm_overlap else ""

    def _expert_placement_error(self, devices: int, devices_per_node: int) -> str:
        """Megatron-Core's rule for the expert groups (``parallel_state.py``: ``EP × ETP``
        divides the ``t·c·d`` ranks of a stage, the rest being expert-data-parallel), and the
        groups' even spread over nodes."""
        ep, etp = self.expert_parallel, self.etp
        if ep == 1 and self.expert_tensor_parallel in (None, self.tensor):
            return ""  # the expert groups are the TP and DP groups
        stage = devices // self.pipeline
        if stage % (ep * etp):
            return (
                f"parallelism.expert_parallel: got expert_parallel {ep} x expert_tensor_parallel "
                f"{etp} = {ep * etp} on {devices} devices / pipeline {self.pipeline}; expected a "
                f"divisor of tensor x context x data = {stage} (Megatron-Core parallel_state: "
                "expert_parallel x expert_tensor_parallel x expert-data x pipeline = devices)"
            )
        if self.pipeline > 1 and self.order != "tp-dp-pp":
            return (
                f"order: got {self.order} with pipeline {self.pipeline} and expert parallelism; "
                "expected tp-dp-pp (Megatron-Core's tp-cp-ep-dp-pp order keeps a stage's expert "
                "groups in one block of ranks)"
            )
        span = ep * etp
        if devices_per_node % span and span % devices_per_node:
            return (
                f"parallelism.expert_parallel: got expert_parallel {ep} x expert_tensor_parallel "
                f"{etp} = {span} on nodes of {devices_per_node} devices; expected a divisor or a "
                f"multiple of {devices_per_node} (else an expert group straddles nodes unevenly)"
            )
        return ""

    def compute_breakdown(self, job: Job) -> list[tuple[str, float]]:
        """Rank 0's (stage 0, first TP rank) forward + backward device time in one step, s, by
        kind of kernel (``op_category``), largest first: its ``1/t`` of the kernels of its
        stage's blocks (and recomputation) and the embedding, and with one stage (``p == 1``,
        rank 0 is also the last stage) the output layer and loss, × the micro-batches."""
        tr = job.training
        cm = ComputeModel.for_job(job)
        e, t, c = cm.dtype_bytes, self.tensor, self.context
        seq = tr.seq_len // c  # context parallelism: 1/c of the sequence per rank
        first, second = tp_block_ops(
            job.shape, tr.micro_batch, seq, e, tr.flash_attention, t, self.sequence_parallel
        )
        emb, head = tp_head_ops(job.shape, tr.micro_batch, seq, e, t, self.sequence_parallel)
        attn = [op for op in first if op.name == "attention" or op.name.startswith("attn.")]
        rec_first: list[Op] = []
        full = tr.checkpointing is Checkpointing.FULL
        if full:
            rec_first = first + attn * (c - 1)
        elif tr.checkpointing is Checkpointing.SELECTIVE:
            rec_first = [op for op in first if op.name.startswith("attn.")] * c
        uneven = self.uneven_stages
        layers = (
            self.stage_layers(job.shape.n_layers)[0]
            if uneven
            else job.shape.n_layers // self.pipeline
        )
        # MoE blocks (megatron.experts) replace the MLP half by their experts' kernels
        moe = self._stage0_moe_ops(job, seq, e)
        dense = layers - len(moe)
        phases = [
            (cm.kernels(first), layers),
            (cm.kernels(first, backward=True), layers),
            (cm.kernels(second), dense),
            (cm.kernels(second, backward=True), dense),
            (cm.kernels(rec_first), layers),
            (cm.kernels(second if full else []), dense),
            # the ring's other c − 1 attention steps (context.py)
            (cm.kernels(attn * (c - 1)), layers),
            (cm.kernels(attn * (c - 1), backward=True), layers),
            (cm.kernels(emb), 1),
            (cm.kernels(emb, backward=True), 1),
        ]
        for ops in moe:
            phases += [(cm.kernels(ops), 1), (cm.kernels(ops, backward=True), 1)]
            if full:
                phases.append((cm.kernels(ops), 1))
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

    def _stage0_moe_ops(self, job: Job, seq: int, e: int) -> list[list[Op]]:
        """The MLP-half kernels of each MoE block of stage 0 (empty for a dense model), with
        the run's routing draw of each block."""
        shape, tr = job.shape, job.training
        if not isinstance(shape, MoEShape):
            return []
        m = shape.moe
        blocks = [i for i in range(shape.n_layers) if shape.is_moe_layer(i)]
        tl = moe_tokens(self, tr.micro_batch, seq)
        ep = self.expert_parallel
        loads = layer_loads(self.routing, m.experts, m.top_k, ep, tl * ep, len(blocks),
                            job.sim.seed)  # fmt: skip
        busiest = dict(zip(blocks, (ld.busiest for ld in loads), strict=True))
        out = []
        for i in (i for ch in stage_blocks(self, shape.n_layers, 0) for i in ch):
            if i in busiest:
                x = moe_ops(shape, self, tr.micro_batch, seq, e, busiest[i])
                out.append(x.pre + x.experts + x.post + x.shared_in + x.shared_out)
        return out

    def plan(self, job: Job, compute: ComputeModel, mb: MicroBatchCompute) -> MegatronWork:
        """Per-stage compute segments, groups and the pipeline order of every stage."""
        return MegatronWork.build(job, self, compute)
