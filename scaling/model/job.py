"""One training job, fully resolved: the system, the model, the batch and numerics, the strategy
and how to simulate it. The description every stage of a run reads (feasibility, strategy plan,
SimPy setup, metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model.errors import InfeasibleJobError as InfeasibleJobError  # its home: errors
from scaling.model.failures import FailureSpec
from scaling.model.hardware.system import SystemSpec
from scaling.model.hardware.workload import Checkpointing, TransformerShape
from scaling.model.strategies.base import Strategy
from scaling.model.variability import VariabilitySpec


@dataclass(frozen=True, slots=True)
class TrainingSpec:
    """Per-rank batch and numerics.

    Attributes:
        micro_batch: sequences per micro-batch per rank.
        grad_accum: micro-batches per step per rank.
        seq_len: tokens per sequence.
        dtype: compute dtype (``bf16``, ``fp16`` …).
        checkpointing: activation checkpointing mode.
        flash_attention: fused attention kernel (no s×s activations stored or streamed).
        token_budget: tokens to train for the time-to-train metric; None = 20 per parameter
            (the compute-optimal ratio of Hoffmann et al. 2022).
        sparsity: run weight GEMMs on the structured-sparsity engine (the device's
            ``sparsity_speedup``); model FLOPs and MFU stay dense.
        param_dtype: dtype of the parameters and their gradients as the model holds them.
            ``fp32`` with ``dtype=bf16`` is PyTorch AMP (``torch.autocast``): fp32 weights,
            gradients and Adam states, bf16 matmuls — what DDP buckets and all-reduces.
        attention_kernel: the fused attention kernel (with ``flash_attention``): ``"flash"``,
            the FlashAttention-family kernel the device's ``attention_efficiency`` was fitted
            with, or ``"cudnn"``, cuDNN's fused attention (Transformer Engine's
            ``DotProductAttention`` on Hopper; the device's ``cudnn_attention_efficiency``).
    """

    micro_batch: int
    grad_accum: int
    seq_len: int
    dtype: str = "bf16"
    checkpointing: Checkpointing = Checkpointing.NONE
    flash_attention: bool = True
    token_budget: float | None = None
    sparsity: bool = False
    param_dtype: str = "fp32"
    attention_kernel: str = "flash"


@dataclass(frozen=True, slots=True)
class SimSpec:
    """How long and how to simulate.

    Attributes:
        steps: measured steady-state steps.
        warmup_steps: steps run first and discarded.
        seed: root of the run's random streams.
        compute_jitter_cv: coefficient of variation of per-rank, per-phase compute time noise.
        simulate_all_ranks: simulate every rank even when they are identical (for checks).
        network: ``"flow"`` runs collectives as flows on the cluster's links (contention,
            algorithm choice by the library's tuner); ``"analytic"`` prices each collective by
            the closed-form cut model and ignores contention.
        variability: slow ranks, degraded NICs, host noise (``model.variability``); None = none.

    Ranks that differ (jitter, slow ranks, host noise) run as one rank ensemble per
    representative process (``RankWork.representatives``)
    (``strategies.ensemble``) unless ``simulate_all_ranks`` asks for a process per rank.
    """

    steps: int = 2
    warmup_steps: int = 2
    seed: int = 0
    compute_jitter_cv: float = 0.0
    simulate_all_ranks: bool = False
    network: str = "flow"
    variability: VariabilitySpec | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A fully resolved training job on ``nodes`` nodes of ``system``; ``failures``: how it fails
    and recovers (goodput), None = it does not."""

    system: SystemSpec
    shape: TransformerShape
    nodes: int
    training: TrainingSpec
    strategy: Strategy
    sim: SimSpec
    failures: FailureSpec | None = None

    @property
    def devices(self) -> int:
        """Accelerators in the job (nodes × devices per node)."""
        return self.nodes * self.system.devices_per_node

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step across the cluster: per data-parallel replica
        ``micro_batch × grad_accum`` (a strategy with model parallelism, e.g. Megatron's
        ``t·p`` ranks per replica, says so by its ``model_parallel``)."""
        replicas = self.devices // self.strategy.model_parallel
        return replicas * self.training.micro_batch * self.training.grad_accum
