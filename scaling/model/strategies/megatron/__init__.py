"""Megatron-LM tensor + pipeline + data parallelism as SimPy processes (one per pipeline stage).

What is modelled, with the rule's source:

* **Tensor parallelism** (Shoeybi et al. 2019 §3; Megatron-LM ``megatron/core/tensor_parallel/
  layers.py``): per block, the QKV and MLP-in linears are column-parallel, the attention
  projection and MLP-out row-parallel, the heads split ``t`` ways; every rank computes ``1/t``
  of each GEMM. Without sequence parallelism each block's forward ends each of its two halves
  with an all-reduce of the ``b·s·h`` activation (the ``g`` operator) and its backward issues two
  all-reduces of the same size (the ``f`` operator's backward), each overlapped with the
  weight-gradient GEMM of the column-parallel linear it follows
  (``LinearWithGradAccumulationAndAsyncCommunication``: the all-reduce is launched before the
  wgrad GEMM and waited for after it). With **sequence parallelism** (Korthikanti et al. 2022
  §4.2.2) each all-reduce becomes a reduce-scatter and an all-gather of the same total volume:
  forward all-gather before QKV / MLP-in and reduce-scatter after the projection / MLP-out;
  backward the reverse; layer norms, dropout and residuals run on ``1/t`` of the tokens. The
  backward re-gathers each column-parallel linear's sequence-sharded input for its weight
  gradient, launched before the dgrad GEMM and waited for after it (Megatron-LM saves the
  shard). **TP communication overlap** (``--tp-comm-overlap``, Transformer Engine userbuffers;
  ``overlap``): ring-exchange all-gathers into the column-parallel GEMMs (and the row-parallel
  dgrad), pipelined reduce-scatters out of the row-parallel GEMMs, bulk overlap of the re-gather
  with the dgrad GEMM and of the reduce-scatter with the wgrad GEMM; the overlapped GEMM chunks
  are slowed by the SMs the communication kernels take (``ops.UB_NUM_SM``). The last stage's
  vocabulary-parallel cross-entropy all-reduces its per-token maximum and (predicted logit, sum
  of exponentials) over TP (``tensor_parallel/cross_entropy.py``).
* **Pipeline parallelism** (Narayanan et al. SC'21 §2.2; ``megatron/core/pipeline_parallel/
  schedules.py``): ``forward_backward_pipelining_without_interleaving`` (1F1B: stage ``k`` runs
  ``min(p−k−1, m)`` warm-up forwards, then one forward / one backward, then the cool-down
  backwards) and ``forward_backward_pipelining_with_interleaving`` (``v`` model chunks per stage;
  warm-up ``2(p−k−1) + (v−1)p`` micro-steps; micro-step ``i`` runs chunk ``(i mod pv) // p``
  forward, ``v−1−`` that backward, micro-batch ``(i // pv)·p + i mod p``). Activations (and
  their gradients) are sent point to point to the next (previous) virtual stage as soon as they
  are computed and waited for by the receiver only (the ``overlap_p2p_comm`` behaviour); each
  TP rank sends ``1/t`` of the ``b·s·h`` tensor (SC'21 §4.1 scatter/gather optimisation; with
  sequence parallelism the tensor is already sharded). The all-gather that re-assembles a
  scattered tensor on the receiver is not modelled.
* **Data parallelism** (``megatron/core/distributed``): after the pipeline flush each stage
  all-reduces its gradients (one buffer per model chunk, in the parameter dtype: fp32 main
  gradients under mixed precision) over the ``d`` replicas of the stage, the ``t`` TP ranks'
  groups running side by side; with the **distributed optimizer** (ZeRO-1, ``docs/source/
  distrib_optimizer.md``) a reduce-scatter of the gradients and, after the optimizer step on the
  ``1/d`` shard, an all-gather of the updated 16-bit parameters. The optimizer step updates the
  rank's parameters (``1/d`` of them with the distributed optimizer). ``--overlap-grad-reduce``
  reduces a block's gradients as the last micro-batch's backward produces them;
  ``--overlap-param-gather`` dispatches the parameter all-gather bucket by bucket after the
  optimizer and lets the next step's forward wait for each block's bucket. With tied embeddings
  over ``p > 1`` stages the first and the last stage all-reduce the word-embedding gradients
  before the optimizer (``finalize_model_grads.py``).
* **Context parallelism** (``context.py``; Transformer Engine ``AttnFuncWithCPAndKVP2P``):
  each rank runs its blocks on ``1/c`` of the sequence; attention by a ring of ``c − 1`` K/V
  exchanges (K/V and dK/dV backward), each overlapped with one attention step; gradients
  reduced (and the distributed optimizer sharded) over ``d·c`` ranks.
* **Uneven stages** (``--decoder-first/last-pipeline-num-layers``, Megatron-Core
  ``get_num_layers_to_build``): the first and last stage may hold a given number of blocks,
  the others the rest evenly (non-interleaved schedule only); memory takes the busiest stage.
* **Placement**: rank ``r`` has coordinates (tp, cp, pp, dp) with TP innermost and CP next; ``order`` chooses
  whether PP (``tp-pp-dp``, the default here: consecutive stages on neighbouring devices) or DP
  (``tp-dp-pp``, Megatron-LM's ``initialize_model_parallel`` order ``tp-cp-ep-dp-pp``) comes
  next. Each collective runs on the devices it spans (``placement.group_of``); groups whose
  ranks are not consecutive (a DP group strided over nodes) are priced as the same number of
  consecutive nodes with the same ranks per node, which crosses the same link classes; the
  stand-ins of stages whose groups share nodes take disjoint local devices there, as the real
  groups do.
  A placement whose DP groups would straddle nodes unevenly (the inner block, ``t·p`` under
  ``tp-pp-dp``, a DP group's stride, or ``t·d`` under ``tp-dp-pp``, a DP group's span, neither
  a divisor nor a multiple of the devices per node) is refused by the config
  (``MegatronSpec.placement_error``).

Representative processes: every TP rank and every DP replica of a stage does the same work, so
one process per pipeline stage is simulated (``MegatronWork.representatives``: ``p`` processes,
rank ``(tp 0, stage k, dp 0)`` each, standing for the stage's ``t·d`` ranks); its collectives
span their whole groups, as DDP's and FSDP's single simulated rank does. Each stage has its own
compute stream, so rank noise, slow ranks and host noise reach every stage (with noise on, each
stage's ranks run as one rank ensemble). A step ends when every stage has finished its optimizer
step (Megatron's end-of-step gradient-norm and ``found_inf`` reductions span the model-parallel
group); the next one starts then on every stage.

* **Expert parallelism** (``experts.py``; Megatron-Core ``transformer/moe/``): a MoE model's
  routed experts over ``EP`` ranks (and expert-TP) in Megatron-Core's ``etp-ep-edp-pp`` order,
  dispatch and combine all-to-alls per MoE block, routing imbalance, the experts' gradients
  over the expert-data-parallel group.

Modules: ``spec`` (the knobs, config rules, compute by kernel kind), ``memory``, ``context``
(ring attention), ``experts`` (expert parallelism), ``ops`` (one TP
rank's kernels and their segments), ``placement`` (ranks → groups), ``schedule`` (1F1B and
interleaved orders), ``work`` (the plan, representatives, closed forms), ``stage`` (the SimPy
process of one stage) and ``overlap`` (its overlapped segments).
"""

from scaling.model.strategies.megatron.context import ContextRing, ring_bytes_per_layer
from scaling.model.strategies.megatron.memory import (
    MASTER_AND_MOMENTS_BYTES,
    MOMENTS_BYTES,
    in_flight_micro_batches,
    layer_activation_bytes,
    megatron_memory,
)
from scaling.model.strategies.megatron.ops import BlockCost, block_cost, tp_block_ops, tp_head_ops
from scaling.model.strategies.megatron.placement import rank_of
from scaling.model.strategies.megatron.schedule import stage_order
from scaling.model.strategies.megatron.spec import ORDERS, MegatronSpec
from scaling.model.strategies.megatron.stage import STREAMS
from scaling.model.strategies.megatron.work import MegatronWork

__all__ = [
    "MASTER_AND_MOMENTS_BYTES",
    "MOMENTS_BYTES",
    "ORDERS",
    "STREAMS",
    "BlockCost",
    "ContextRing",
    "MegatronSpec",
    "MegatronWork",
    "block_cost",
    "in_flight_micro_batches",
    "layer_activation_bytes",
    "megatron_memory",
    "rank_of",
    "ring_bytes_per_layer",
    "stage_order",
    "tp_block_ops",
    "tp_head_ops",
]
