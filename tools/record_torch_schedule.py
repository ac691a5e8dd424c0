"""Record the collective schedule of real PyTorch DDP / FSDP jobs on CPU (gloo).

This is the project's real-client check for ``scaling schedule``: it trains a few tiny GPT models
for some steps under PyTorch's own DDP, FSDP1 and FSDP2 on 2 or 4 local gloo processes and writes,
per rank and per step, the ordered list of collectives that were actually issued, in the same JSON
form as ``scaling schedule``. The recordings are committed as test fixtures under
``tests/fixtures/torch_schedules/`` (see ``tools/README.md`` for what each variant shows and the
PyTorch rules they exhibit).

PyTorch is a tool dependency only (``pip install torch``); nothing in ``scaling`` imports it.

How collectives are seen. Python monkeypatching of ``torch.distributed.all_reduce`` does not see
the C++ DDP reducer's bucket all-reduces, so every process group is a *recording backend*: a
Python subclass of c10d's ``Backend`` (pybind trampoline ``PyBackend``,
``torch/csrc/distributed/c10d/py/PyBackend.hpp``) registered with
``torch.distributed.Backend.register_backend`` that logs each call and forwards it to a real
``ProcessGroupGloo``. Everything that reaches a process group (DDP's C++ reducer, its
initialisation broadcasts, FSDP1/FSDP2, ``clip_grad_norm_``) goes through it. Annotations:

* ``phase`` is the phase of the training loop at the time of the call (setup = wrapper
  construction; forward; backward = ``loss.backward()`` including autograd's final callbacks;
  optimizer = gradient clipping, ``optimizer.step()`` and ``zero_grad``).
* DDP ``bucket``: a comm hook wrapper records ``GradBucket.index()`` and the names of
  ``GradBucket.parameters()`` and then runs the real hook (``allreduce_hook`` — the same single
  all-reduce of the bucket buffer as the C++ built-in — or ``bf16_compress_hook``).
* FSDP ``unit``: ``FlatParamHandle.unshard`` / ``_reduce_grad`` / ``_reduce_grad_no_shard``
  (FSDP1) and ``FSDPParamGroup.unshard`` / ``post_backward`` (FSDP2) are wrapped to name the unit
  whose collectives they issue (``root`` or the block's name ``h{i}``).
* FSDP ``issued_by``: the FSDP hook that issued the collective (``pre_forward:h0``,
  ``pre_backward:h1``, ``post_backward:h1``, ``final_callback``): BACKWARD_PRE and BACKWARD_POST,
  or forward prefetch on and off, can issue in the same order and differ only in this.

Usage::

    python tools/record_torch_schedule.py                 # all variants -> tests/fixtures/...
    python tools/record_torch_schedule.py --list
    python tools/record_torch_schedule.py --variant ddp_bucket_cap --out-dir /tmp/sched
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch._C._distributed_c10d import Backend as _CBackend
from torch._C._distributed_c10d import ProcessGroupGloo

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torch_schedules"
BACKEND_NAME = "recgloo"
FORMAT_VERSION = 1


# ---- models -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GPTDims:
    """Tiny GPT shape (the simulator's ``TransformerShape`` fields, GPT style: biases, LayerNorm)."""

    vocab: int
    hidden: int
    n_heads: int
    ffn_hidden: int
    n_layers: int
    max_seq: int
    tied_embeddings: bool = True
    head_bias: bool = False  # an untied lm_head with a bias (nn.Linear's default)


class Block(nn.Module):
    """Pre-norm GPT block; parameters registered in the simulator's order
    (``TransformerShape.layer_param_tensors``): ln1, attn.qkv (fused), attn.proj, ln2,
    mlp.fc_in, mlp.fc_out."""

    def __init__(self, d: GPTDims) -> None:
        super().__init__()
        self.n_heads = d.n_heads
        self.ln1 = nn.LayerNorm(d.hidden)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d.hidden, 3 * d.hidden)
        self.attn.proj = nn.Linear(d.hidden, d.hidden)
        self.ln2 = nn.LayerNorm(d.hidden)
        self.mlp = nn.Module()
        self.mlp.fc_in = nn.Linear(d.hidden, d.ffn_hidden)
        self.mlp.fc_out = nn.Linear(d.ffn_hidden, d.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.attn.qkv(self.ln1(x)).split(h, dim=-1)
        q, k, v = (t.view(b, s, self.n_heads, h // self.n_heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.proj(a.transpose(1, 2).reshape(b, s, h))
        return x + self.mlp.fc_out(F.gelu(self.mlp.fc_in(self.ln2(x))))


class GPT(nn.Module):
    """wte, wpe, h0 … h{L-1}, ln_f, [lm_head]: registration order = the simulator's
    ``param_tensors_with_stage`` (modules, so the names carry ``.weight`` / ``.bias``)."""

    def __init__(self, d: GPTDims) -> None:
        super().__init__()
        self.wte = nn.Embedding(d.vocab, d.hidden)
        self.wpe = nn.Embedding(d.max_seq, d.hidden)
        self.n_layers = d.n_layers
        for i in range(d.n_layers):  # h0, h1, … (not a ModuleList: names match the simulator's)
            self.add_module(f"h{i}", Block(d))
        self.ln_f = nn.LayerNorm(d.hidden)
        self.lm_head = (
            None if d.tied_embeddings else nn.Linear(d.hidden, d.vocab, bias=d.head_bias)
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for i in range(self.n_layers):
            x = getattr(self, f"h{i}")(x)
        x = self.ln_f(x)
        if self.lm_head is None:
            return x @ self.wte.weight.t()
        return self.lm_head(x)


TINY = GPTDims(vocab=256, hidden=32, n_heads=2, ffn_hidden=128, n_layers=2, max_seq=16)
SMALL_UNTIED = GPTDims(
    vocab=320, hidden=48, n_heads=4, ffn_hidden=192, n_layers=3, max_seq=16, tied_embeddings=False
)
#: sizes not divisible by 4: FSDP's padding to the shard-group size shows on 4 ranks
ODD = GPTDims(vocab=254, hidden=30, n_heads=2, ffn_hidden=91, n_layers=2, max_seq=15)
#: four blocks: FSDP1's forward prefetch shows only with more than two blocks
TINY4 = dataclasses.replace(TINY, n_layers=4)
#: ~0.9 M parameters (3.4 MiB of fp32 gradients): DDP's 1 MiB first bucket matters.
MEDIUM = GPTDims(vocab=512, hidden=128, n_heads=4, ffn_hidden=512, n_layers=4, max_seq=32)
#: untied lm_head with a bias (nn.Linear's default): the head's bias is the last parameter
UNTIED_BIAS = dataclasses.replace(SMALL_UNTIED, head_bias=True)
#: ~14.7 M parameters (56 MiB of fp32 gradients): more than one 25 MiB DDP bucket
LARGE = GPTDims(vocab=4096, hidden=512, n_heads=8, ffn_hidden=2048, n_layers=4, max_seq=16)
#: ~31.5 M parameters (120 MiB): a 100 MiB+ model under small explicit bucket caps
HUGE = GPTDims(vocab=4096, hidden=768, n_heads=12, ffn_hidden=3072, n_layers=4, max_seq=16)


# ---- variants -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One recorded job: strategy, its options, model, world size and training loop."""

    name: str
    description: str
    strategy: str  # ddp | fsdp1 | fsdp2
    world_size: int
    dims: GPTDims = TINY
    options: dict[str, Any] = field(default_factory=dict)
    micro_batch: int = 2
    seq_len: int = 16
    grad_accum: int = 1
    amp_bf16: bool = False
    clip_grad_norm: float | None = None
    steps: int = 4


_CAP = {"bucket_cap_mb": 0.02}
VARIANTS: list[Variant] = [
    Variant(
        "ddp_default",
        "DDP, bucket_cap_mb not passed: 1 MiB first bucket then 25 MiB (medium model)",
        "ddp",
        2,
        MEDIUM,
        {},
        seq_len=32,
    ),
    Variant(
        "ddp_bucket_cap_mb_25",
        "DDP, bucket_cap_mb=25 passed explicitly: the first bucket is 25 MiB too (medium model)",
        "ddp",
        2,
        MEDIUM,
        {"bucket_cap_mb": 25},
        seq_len=32,
    ),
    Variant("ddp_bucket_cap", "DDP, bucket_cap_mb=0.02 (20,971 B buckets)", "ddp", 2, TINY, _CAP),
    Variant(
        "ddp_bucket_cap_w4_untied",
        "DDP on 4 ranks, untied lm_head, bucket_cap_mb=0.05",
        "ddp",
        4,
        SMALL_UNTIED,
        {"bucket_cap_mb": 0.05},
    ),
    Variant(
        "ddp_find_unused",
        "DDP, find_unused_parameters=True: real caps from iteration 0, never rebuilt, "
        "plus the used-parameter map all-reduce",
        "ddp",
        2,
        TINY,
        {**_CAP, "find_unused_parameters": True},
    ),
    Variant(
        "ddp_find_unused_default_caps",
        "DDP, find_unused_parameters=True, default caps: the 1 MiB bucket is the one holding "
        "the first-registered parameters (launched last)",
        "ddp",
        2,
        MEDIUM,
        {"find_unused_parameters": True},
        seq_len=32,
    ),
    Variant(
        "ddp_static_graph",
        "DDP, static_graph=True: one bucket in iterations 0 and 1, rebuilt in iteration 2",
        "ddp",
        2,
        TINY,
        {**_CAP, "static_graph": True},
        steps=5,
    ),
    Variant(
        "ddp_grad_as_bucket_view",
        "DDP, gradient_as_bucket_view=True",
        "ddp",
        2,
        TINY,
        {**_CAP, "gradient_as_bucket_view": True},
    ),
    Variant(
        "ddp_bf16_compress_hook",
        "DDP with bf16_compress_hook: buckets all-reduced in bf16",
        "ddp",
        2,
        TINY,
        {**_CAP, "comm_hook": "bf16_compress"},
    ),
    Variant(
        "ddp_amp_bf16",
        "DDP, fp32 parameters + autocast(bf16): buckets stay fp32",
        "ddp",
        2,
        TINY,
        _CAP,
        amp_bf16=True,
    ),
    Variant(
        "ddp_no_sync_accum2",
        "DDP, 2 micro-batches per step, the first under no_sync()",
        "ddp",
        2,
        TINY,
        _CAP,
        grad_accum=2,
    ),
    Variant("fsdp1_full_shard", "FSDP1 FULL_SHARD (BACKWARD_PRE default)", "fsdp1", 2),
    Variant("fsdp1_full_shard_w4", "FSDP1 FULL_SHARD on 4 ranks", "fsdp1", 4),
    Variant(
        "fsdp1_full_shard_w4_odd",
        "FSDP1 FULL_SHARD on 4 ranks, odd sizes: flat parameters padded to a multiple of 4",
        "fsdp1",
        4,
        ODD,
        seq_len=15,
    ),
    Variant(
        "fsdp1_shard_grad_op",
        "FSDP1 SHARD_GRAD_OP",
        "fsdp1",
        2,
        options={"sharding_strategy": "SHARD_GRAD_OP"},
    ),
    Variant(
        "fsdp1_no_shard", "FSDP1 NO_SHARD", "fsdp1", 2, options={"sharding_strategy": "NO_SHARD"}
    ),
    Variant(
        "fsdp1_hybrid_shard_2x2",
        "FSDP1 HYBRID_SHARD on 4 ranks: shard groups {0,1},{2,3}, replicate groups {0,2},{1,3}",
        "fsdp1",
        4,
        options={"sharding_strategy": "HYBRID_SHARD", "mesh": [2, 2]},
    ),
    Variant(
        "fsdp1_backward_prefetch_post",
        "FSDP1 FULL_SHARD, backward_prefetch=BACKWARD_POST",
        "fsdp1",
        2,
        options={"backward_prefetch": "BACKWARD_POST"},
    ),
    Variant(
        "fsdp1_backward_prefetch_none",
        "FSDP1 FULL_SHARD, backward_prefetch=None",
        "fsdp1",
        2,
        options={"backward_prefetch": None},
    ),
    Variant(
        "fsdp1_forward_prefetch",
        "FSDP1 FULL_SHARD, forward_prefetch=True",
        "fsdp1",
        2,
        options={"forward_prefetch": True},
    ),
    Variant(
        "fsdp1_forward_prefetch_4blocks",
        "FSDP1 FULL_SHARD, forward_prefetch=True, 4 blocks: from iteration 1 each block's "
        "reduce-scatter in backward comes one slot later",
        "fsdp1",
        2,
        TINY4,
        {"forward_prefetch": True},
    ),
    Variant(
        "fsdp1_mp_bf16_reduce_bf16",
        "FSDP1 MixedPrecision(param_dtype=bf16, reduce_dtype=bf16)",
        "fsdp1",
        2,
        options={"param_dtype": "bfloat16", "reduce_dtype": "bfloat16"},
    ),
    Variant(
        "fsdp1_mp_bf16_reduce_fp32",
        "FSDP1 MixedPrecision(param_dtype=bf16, reduce_dtype=fp32)",
        "fsdp1",
        2,
        options={"param_dtype": "bfloat16", "reduce_dtype": "float32"},
    ),
    Variant(
        "fsdp1_clip_grad_norm",
        "FSDP1 FULL_SHARD with FullyShardedDataParallel.clip_grad_norm_(1.0)",
        "fsdp1",
        2,
        clip_grad_norm=1.0,
    ),
    Variant(
        "fsdp1_no_sync_accum2",
        "FSDP1 FULL_SHARD, 2 micro-batches per step, the first under no_sync()",
        "fsdp1",
        2,
        grad_accum=2,
    ),
    Variant(
        "fsdp2_default",
        "FSDP2 fully_shard per block and root, reshard_after_forward not passed "
        "(None: True for the blocks, False for the root)",
        "fsdp2",
        2,
    ),
    Variant(
        "fsdp2_default_w4_odd",
        "FSDP2 on 4 ranks, odd sizes: each parameter padded on dim 0 to a multiple of 4",
        "fsdp2",
        4,
        ODD,
        seq_len=15,
    ),
    Variant(
        "fsdp2_reshard_true",
        "FSDP2 fully_shard(reshard_after_forward=True) per block and root",
        "fsdp2",
        2,
        options={"reshard_after_forward": True},
    ),
    Variant(
        "fsdp2_reshard_false",
        "FSDP2 fully_shard(reshard_after_forward=False)",
        "fsdp2",
        2,
        options={"reshard_after_forward": False},
    ),
    Variant(
        "fsdp2_reshard_int2_w4",
        "FSDP2 on 4 ranks, reshard_after_forward=2 on the blocks and the root (each resharded "
        "to 2-rank groups after forward, the root too)",
        "fsdp2",
        4,
        options={"reshard_after_forward": 2},
    ),
    Variant(
        "fsdp2_mp_bf16",
        "FSDP2 MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32), clip_grad_norm_(1.0)",
        "fsdp2",
        2,
        options={"param_dtype": "bfloat16", "reduce_dtype": "float32"},
        clip_grad_norm=1.0,
    ),
    # ---- issue 27: the gaps of the first 30 recordings ---------------------------------------
    Variant(
        "ddp_builtin_untied_bias_w4",
        "DDP on 4 ranks, C++ built-in reducer (no comm hook), untied lm_head with a bias, "
        "bucket_cap_mb=0.05",
        "ddp",
        4,
        UNTIED_BIAS,
        {"bucket_cap_mb": 0.05, "comm_hook": "builtin"},
    ),
    Variant(
        "ddp_builtin_large_w4",
        "DDP on 4 ranks, built-in reducer, default caps, a 56 MiB model: 1 MiB first bucket "
        "then 25 MiB buckets",
        "ddp",
        4,
        LARGE,
        {"comm_hook": "builtin"},
    ),
    Variant(
        "ddp_builtin_huge_cap4",
        "DDP, built-in reducer, bucket_cap_mb=4 on a 120 MiB model (the embedding alone "
        "exceeds the cap)",
        "ddp",
        2,
        HUGE,
        {"bucket_cap_mb": 4, "comm_hook": "builtin"},
    ),
    Variant(
        "ddp_no_sync_accum4_w4",
        "DDP on 4 ranks, 4 micro-batches per step, the first three under no_sync()",
        "ddp",
        4,
        TINY,
        {**_CAP, "comm_hook": "builtin"},
        grad_accum=4,
    ),
    Variant(
        "ddp_static_graph_w4",
        "DDP on 4 ranks, static_graph=True, built-in reducer",
        "ddp",
        4,
        TINY,
        {**_CAP, "static_graph": True, "comm_hook": "builtin"},
        steps=5,
    ),
    Variant(
        "ddp_find_unused_w4",
        "DDP on 4 ranks, find_unused_parameters=True, built-in reducer",
        "ddp",
        4,
        TINY,
        {**_CAP, "find_unused_parameters": True, "comm_hook": "builtin"},
    ),
    Variant(
        "fsdp1_full_shard_4blocks_w4",
        "FSDP1 FULL_SHARD on 4 ranks, 4 blocks (5 units)",
        "fsdp1",
        4,
        TINY4,
    ),
    Variant(
        "fsdp1_backward_prefetch_post_4blocks_w4",
        "FSDP1 FULL_SHARD on 4 ranks, 4 blocks, backward_prefetch=BACKWARD_POST",
        "fsdp1",
        4,
        TINY4,
        {"backward_prefetch": "BACKWARD_POST"},
    ),
    Variant(
        "fsdp1_no_sync_accum4_w4",
        "FSDP1 FULL_SHARD on 4 ranks, 4 micro-batches per step, the first three under no_sync()",
        "fsdp1",
        4,
        grad_accum=4,
    ),
    Variant(
        "fsdp1_mp_bf16_4blocks_w4",
        "FSDP1 MixedPrecision(bf16, reduce fp32) on 4 ranks, 4 blocks, clip_grad_norm_(1.0)",
        "fsdp1",
        4,
        TINY4,
        {"param_dtype": "bfloat16", "reduce_dtype": "float32"},
        clip_grad_norm=1.0,
    ),
    Variant(
        "fsdp1_hybrid_shard_strided_2x2",
        "FSDP1 HYBRID_SHARD on the 2-D mesh [[0, 2], [1, 3]] (replicate, shard): shard groups "
        "{0,2},{1,3}, replicate groups {0,1},{2,3}",
        "fsdp1",
        4,
        options={
            "sharding_strategy": "HYBRID_SHARD",
            "mesh": [2, 2],
            "mesh_dim_names": ["shard", "replicate"],
        },
    ),
    Variant(
        "fsdp2_4blocks_w4",
        "FSDP2 on 4 ranks, 4 blocks (5 units)",
        "fsdp2",
        4,
        TINY4,
    ),
    Variant(
        "fsdp2_mp_bf16_4blocks_w4",
        "FSDP2 MixedPrecisionPolicy(bf16, fp32) on 4 ranks, 4 blocks, untied head with a bias",
        "fsdp2",
        4,
        dataclasses.replace(TINY4, tied_embeddings=False, head_bias=True),
        {"param_dtype": "bfloat16", "reduce_dtype": "float32"},
    ),
    Variant(
        "fsdp2_hsdp_2x2",
        "FSDP2 on the 2-D mesh init_device_mesh((2, 2), ('replicate', 'shard')): shard groups "
        "{0,1},{2,3}, replicate groups {0,2},{1,3}",
        "fsdp2",
        4,
        options={"mesh": [2, 2], "mesh_dim_names": ["replicate", "shard"]},
    ),
    Variant(
        "fsdp2_hsdp_strided_2x4",
        "FSDP2 on 8 ranks, init_device_mesh((4, 2), ('shard', 'replicate'))['replicate', "
        "'shard']: shard groups {0,2,4,6},{1,3,5,7} (strided), replicate groups {0,1},{2,3},…",
        "fsdp2",
        8,
        options={"mesh": [4, 2], "mesh_dim_names": ["shard", "replicate"]},
    ),
]
#: the 2-rank variants recorded again on 4 ranks (issue 27: most variants at 4 ranks)
_ON_FOUR = (
    "ddp_default",
    "ddp_amp_bf16",
    "ddp_bf16_compress_hook",
    "ddp_grad_as_bucket_view",
    "fsdp1_shard_grad_op",
    "fsdp1_no_shard",
    "fsdp1_backward_prefetch_none",
    "fsdp1_forward_prefetch_4blocks",
    "fsdp1_clip_grad_norm",
    "fsdp2_reshard_true",
    "fsdp2_reshard_false",
)
VARIANTS += [
    dataclasses.replace(v, name=f"{v.name}_w4", description=f"{v.description}; 4 ranks", world_size=4)
    for v in VARIANTS
    if v.name in _ON_FOUR
]
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}


# ---- recording state (one per process) -----------------------------------------------------------
@dataclass
class _Rec:
    phase: str = "setup"
    micro: int | None = None
    bucket: dict[str, Any] | None = None
    unit: list[str] = field(default_factory=list)  # innermost last
    trigger: list[str] = field(default_factory=list)  # FSDP hook running, e.g. pre_backward:h1
    log: list[dict[str, Any]] = field(default_factory=list)
    backends: list[RecordingBackend] = field(default_factory=list)  # keep the Python side alive


REC = _Rec()


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _red_op(opts: Any) -> str:
    op = getattr(opts, "reduceOp", None)
    if op is None:
        return ""
    name = str(getattr(op, "op", op))
    return name.rsplit(".", 1)[-1].lower()


class RecordingBackend(_CBackend):
    """A c10d backend that logs each collective, then forwards it to a real gloo backend."""

    def __init__(self, store: Any, rank: int, size: int, timeout: Any) -> None:
        super().__init__(rank, size)
        self.inner = ProcessGroupGloo(store, rank, size, timeout)
        self.group_size = size
        self.global_ranks: list[int] | None = None  # filled in once the group is registered
        REC.backends.append(self)

    def getBackendName(self) -> str:
        return BACKEND_NAME

    def _log(self, op: str, nbytes: int, t: torch.Tensor | None, **extra: Any) -> None:
        e: dict[str, Any] = {
            "op": op,
            "bytes": nbytes,
            "dtype": _dtype(t) if t is not None else None,
            "group_size": self.group_size,
            "group": self,  # replaced by the global ranks when the log is written
            "phase": REC.phase,
        }
        if REC.bucket is not None:
            e["bucket"] = REC.bucket
            REC.bucket = None  # a hook issues one collective per bucket
        if REC.unit:
            e["unit"] = REC.unit[-1]
        if REC.trigger:
            e["issued_by"] = REC.trigger[-1]
        if REC.micro is not None:
            e["micro"] = REC.micro
        e.update({k: v for k, v in extra.items() if v not in (None, "")})
        REC.log.append(e)

    # Logical sizes (the ``scaling schedule`` convention): all-reduce / broadcast = the tensor;
    # all-gather = the gathered output; reduce-scatter = the full input.
    def allreduce(self, tensors: list[torch.Tensor], opts: Any) -> Any:
        self._log("all_reduce", _nbytes(tensors), tensors[0], reduce_op=_red_op(opts))
        return self.inner.allreduce(tensors, opts)

    def allreduce_coalesced(self, tensors: list[torch.Tensor], opts: Any) -> Any:
        self._log("all_reduce", _nbytes(tensors), tensors[0], coalesced=len(tensors))
        return self.inner.allreduce_coalesced(tensors, opts)

    def broadcast(self, tensors: list[torch.Tensor], opts: Any) -> Any:
        self._log("broadcast", _nbytes(tensors), tensors[0], root=opts.rootRank)
        return self.inner.broadcast(tensors, opts)

    def allgather(self, outs: list[list[torch.Tensor]], ins: list[torch.Tensor], opts: Any) -> Any:
        self._log("all_gather", _nbytes(outs[0]), ins[0])
        return self.inner.allgather(outs, ins, opts)

    def all_gather_single(self, out: torch.Tensor, inp: torch.Tensor, opts: Any) -> Any:
        self._log("all_gather", _nbytes([out]), inp)
        return self.inner.all_gather_single(out, inp, opts)

    def all_gather_single_coalesced(
        self, outs: list[torch.Tensor], ins: list[torch.Tensor], opts: Any
    ) -> Any:
        self._log("all_gather", _nbytes(outs), ins[0], coalesced=len(outs))
        return self.inner.all_gather_single_coalesced(outs, ins, opts)

    def reduce_scatter(
        self, outs: list[torch.Tensor], ins: list[list[torch.Tensor]], opts: Any
    ) -> Any:
        self._log("reduce_scatter", _nbytes(ins[0]), outs[0], reduce_op=_red_op(opts))
        return self.inner.reduce_scatter(outs, ins, opts)

    def reduce_scatter_single(self, out: torch.Tensor, inp: torch.Tensor, opts: Any) -> Any:
        self._log("reduce_scatter", _nbytes([inp]), inp, reduce_op=_red_op(opts))
        return self.inner.reduce_scatter_single(out, inp, opts)

    def reduce_scatter_single_coalesced(
        self, outs: list[torch.Tensor], ins: list[torch.Tensor], opts: Any
    ) -> Any:
        self._log("reduce_scatter", _nbytes(ins), ins[0], coalesced=len(ins))
        return self.inner.reduce_scatter_single_coalesced(outs, ins, opts)

    def barrier(self, opts: Any) -> Any:
        self._log("barrier", 0, None)
        return self.inner.barrier(opts)


def _create_backend(store: Any, rank: int, size: int, timeout: Any) -> RecordingBackend:
    return RecordingBackend(store, rank, size, timeout)


def _resolve_groups() -> None:
    """Name each recording backend's global ranks (from c10d's group registry)."""
    from torch.distributed import distributed_c10d as c10d

    cpu = torch.device("cpu")
    for pg, ranks in c10d._world.pg_group_ranks.items():
        with contextlib.suppress(Exception):
            b = pg._get_backend(cpu)
            for rb in REC.backends:
                if b is rb:
                    rb.global_ranks = sorted(ranks)


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    REC.phase = name
    try:
        yield
    finally:
        REC.phase = "idle"


@contextlib.contextmanager
def _tag(stack: list[str], name: str) -> Iterator[None]:
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def _wrap_method(
    owner: Any, attr: str, label_of: Callable[..., str], stack: list[str] | None = None
) -> None:
    """Wrap ``owner.attr`` so that collectives issued inside it are tagged: with the unit whose
    parameters they move (``stack`` = ``REC.unit``, the default) or with the FSDP hook that
    issued them (``REC.trigger``)."""
    original = getattr(owner, attr)
    target = REC.unit if stack is None else stack

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _tag(target, label_of(*args)):
            return original(*args, **kwargs)

    setattr(owner, attr, wrapped)


# ---- strategies ---------------------------------------------------------------------------------
#: returns the strategy's metadata for the fixture, called after training
Meta = Callable[[], dict[str, Any]]


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): (n or "root") for n, m in model.named_modules()}


def _wrap_ddp(model: nn.Module, v: Variant) -> tuple[nn.Module, Meta]:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    opts = {k: val for k, val in v.options.items() if k != "comm_hook"}
    ddp = DDP(model, **opts)
    names = {p.data_ptr(): n for n, p in model.named_parameters()}
    inner = (
        default_hooks.bf16_compress_hook
        if v.options.get("comm_hook") == "bf16_compress"
        else default_hooks.allreduce_hook
    )

    # No annotations: DDP's _check_comm_hook compares them with dist.GradBucket / Future, which
    # string annotations (``from __future__ import annotations``) never equal.
    def hook(state, bucket):  # type: ignore[no-untyped-def]
        REC.bucket = {
            "index": bucket.index(),
            "params": [names[p.data_ptr()] for p in bucket.parameters()],
        }
        return inner(state, bucket)

    if v.options.get("comm_hook") != "builtin":  # "builtin": the C++ default (no annotations)
        ddp.register_comm_hook(None, hook)
    meta = {
        "first_bucket_bytes_cap": ddp._bucket_config.first_bucket_bytes_cap,
        "bucket_bytes_cap": ddp.bucket_bytes_cap,
        "comm_hook": v.options.get("comm_hook", "allreduce_hook (= the C++ default's collective)"),
    }
    return ddp, lambda: meta


def _fsdp1_patch(model: nn.Module) -> None:
    from torch.distributed.fsdp import _flat_param, _runtime_utils
    from torch.distributed.fsdp import fully_sharded_data_parallel as fsdp_mod

    names = _module_names(model)

    def unit(h: Any) -> str:
        return names[id(h._fully_sharded_module)]

    _wrap_method(_flat_param.FlatParamHandle, "unshard", unit)
    for fn in ("_reduce_grad", "_reduce_grad_no_shard"):
        _wrap_method(_runtime_utils, fn, lambda _s, h: unit(h))
    # the hooks that issue them (FullyShardedDataParallel.forward calls its own imports of
    # _pre_forward/_post_forward; the backward hooks are partials of _runtime_utils' globals,
    # built after this patch)
    t = REC.trigger
    _wrap_method(fsdp_mod, "_pre_forward", lambda _s, h, *_: f"pre_forward:{unit(h)}", t)
    _wrap_method(fsdp_mod, "_post_forward", lambda _s, h, *_: f"post_forward:{unit(h)}", t)
    _wrap_method(
        _runtime_utils, "_pre_backward_hook", lambda _s, _m, h, *_: f"pre_backward:{unit(h)}", t
    )
    _wrap_method(
        _runtime_utils, "_post_backward_hook", lambda _s, h, *_: f"post_backward:{unit(h)}", t
    )
    _wrap_method(_runtime_utils, "_post_backward_final_callback", lambda *_: "final_callback", t)


def _wrap_fsdp1(model: nn.Module, v: Variant) -> tuple[nn.Module, Meta]:
    from torch.distributed.fsdp import BackwardPrefetch, MixedPrecision, ShardingStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    o = v.options
    kw: dict[str, Any] = {
        "auto_wrap_policy": ModuleWrapPolicy({Block}),
        "sharding_strategy": ShardingStrategy[o.get("sharding_strategy", "FULL_SHARD")],
        "forward_prefetch": o.get("forward_prefetch", False),
        "use_orig_params": False,
        # FSDP1 refuses CPU unless told: _init_utils._init_device_handle
        "device_id": torch.device("cpu"),
    }
    bp = o.get("backward_prefetch", "BACKWARD_PRE")
    kw["backward_prefetch"] = BackwardPrefetch[bp] if bp else None
    if "param_dtype" in o:
        kw["mixed_precision"] = MixedPrecision(
            param_dtype=getattr(torch, o["param_dtype"]),
            reduce_dtype=getattr(torch, o["reduce_dtype"]),
        )
    if "mesh" in o:
        kw["device_mesh"] = _hsdp_mesh(o)
    names = _module_names(model)  # before wrapping: FSDP inserts "_fsdp_wrapped_module"
    _fsdp1_patch(model)
    fsdp = FSDP(model, **kw)
    shard_size = kw["device_mesh"].size(1) if "mesh" in o else dist.get_world_size()
    if o.get("sharding_strategy") == "NO_SHARD":
        shard_size = 1

    def units() -> dict[str, Any]:
        """The flat parameter of each unit (after training: FSDP fills some sizes lazily)."""
        out = []
        for m in FSDP.fsdp_modules(fsdp):
            h = m._handle
            if h is None:
                continue
            fp = h.flat_param
            numel = int(fp._unpadded_unsharded_size.numel())
            name = names[id(h._fully_sharded_module)]
            prefix = "" if name == "root" else f"{name}."  # _fqns are relative to the unit
            out.append(
                {
                    "unit": name,
                    "params": [prefix + f for f in fp._fqns],
                    "numel": numel,
                    # FlatParamHandle pads the flat parameter to a multiple of the shard group
                    # size (_flat_param.FlatParamHandle._get_shard_metadata / shard)
                    "padded_numel": int(fp._padded_unsharded_size.numel())
                    if hasattr(fp, "_padded_unsharded_size")
                    else -(-numel // shard_size) * shard_size,
                }
            )
        return {"units": out}

    return fsdp, units


def _hsdp_mesh(o: dict[str, Any]) -> Any:
    """The (replicate, shard) mesh FSDP gets. Names ("replicate", "shard") (the default):
    ``init_device_mesh(shape, names)``, shard groups contiguous. Names ("shard", "replicate"):
    the ranks laid out shard-major, ``arange(world).view(shape)``, handed to FSDP transposed as
    ``DeviceMesh(mesh.t(), ("replicate", "shard"))`` (torch 2.13's ``mesh["replicate", "shard"]``
    refuses to reorder dimensions): strided shard groups, contiguous replicate groups."""
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

    names = tuple(o.get("mesh_dim_names", ("replicate", "shard")))
    if names == ("replicate", "shard"):
        return init_device_mesh("cpu", tuple(o["mesh"]), mesh_dim_names=names)
    ranks = torch.arange(math.prod(o["mesh"])).view(*o["mesh"]).t().contiguous()
    return DeviceMesh("cpu", ranks, mesh_dim_names=("replicate", "shard"))


def _wrap_fsdp2(model: nn.Module, v: Variant) -> tuple[nn.Module, Meta]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group as pg_mod
    from torch.distributed.fsdp._fully_shard import _fsdp_state as st_mod

    o = v.options
    mesh = _hsdp_mesh(o) if "mesh" in o else init_device_mesh("cpu", (v.world_size,))
    shard_size = mesh.size(mesh.ndim - 1)  # the shard dimension is the last (FSDP2 HSDP)
    kw: dict[str, Any] = {"mesh": mesh}
    if "reshard_after_forward" in o:
        kw["reshard_after_forward"] = o["reshard_after_forward"]
    if "param_dtype" in o:
        kw["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=getattr(torch, o["param_dtype"]),
            reduce_dtype=getattr(torch, o["reduce_dtype"]),
        )

    def unit_of(group: Any, *_: Any) -> str:
        return group._module_fqn or "root"

    for attr in ("unshard", "post_backward"):
        _wrap_method(pg_mod.FSDPParamGroup, attr, unit_of)
    for attr in ("pre_forward", "post_forward", "pre_backward", "post_backward"):
        _wrap_method(
            pg_mod.FSDPParamGroup,
            attr,
            lambda g, *_, a=attr: f"{a}:{g._module_fqn or 'root'}",
            REC.trigger,
        )
    _wrap_method(
        st_mod.FSDPState,
        "_root_post_backward_final_callback",
        lambda *_: "final_callback",
        REC.trigger,
    )
    blocks = [getattr(model, f"h{i}") for i in range(model.n_layers)]  # type: ignore[arg-type]
    for b in blocks:
        fully_shard(b, **kw)
    # the root gets the same reshard_after_forward as the blocks, an int included (PyTorch 2.13
    # accepts it: _fully_shard.fully_shard -> _fsdp_init._get_post_forward_mesh_info)
    fully_shard(model, **kw)
    names = _module_names(model)

    def units() -> dict[str, Any]:
        return {"units": _fsdp2_units([*blocks, model], names, shard_size)}

    return model, units


def _fsdp2_units(mods: list[nn.Module], names: dict[int, str], ws: int) -> list[dict[str, Any]]:
    units = []
    for m in mods:
        state = m._get_fsdp_state()  # type: ignore[operator]
        g = state._fsdp_param_group
        if g is None:
            continue
        fps = g.fsdp_params
        units.append(
            {
                "unit": names[id(m)],
                "params": [
                    f"{names[id(fp._module_info.module)]}.{fp._module_info.param_name}"
                    for fp in fps
                ],
                "numel": sum(int(math.prod(fp._orig_size)) for fp in fps),
                "padded_numel": sum(
                    int(math.prod(fp.padded_sharded_param_size)) * ws for fp in fps
                ),
            }
        )
    for u in units:
        u["params"] = [p.removeprefix("root.") for p in u["params"]]
    return units


# ---- one rank -----------------------------------------------------------------------------------
def _backend_subclassable() -> bool:
    """Whether this torch lets Python subclass c10d's Backend (2.14 on; 2.13 has no trampoline)."""
    try:
        RecordingBackend.__new__(RecordingBackend)
        _CBackend.__init__(RecordingBackend.__new__(RecordingBackend), 0, 1)
    except TypeError:
        return False
    return True


def _from_scaling_record(path: Path, grad_accum: int) -> list[list[dict[str, Any]]]:
    """A scaling.record rank file as [setup, step 0, step 1, …] in this tool's entry form."""
    out: list[list[dict[str, Any]]] = [[]]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["record"] != "collective":
            continue
        step = 0 if r["step"] == "setup" else r["step"] + 1
        while len(out) <= step:
            out.append([])
        e = {k: r[k] for k in ("op", "bytes", "dtype")}
        e |= {"group_size": len(r["group"]), "group": r["group"], "phase": r["phase"]}
        if "bucket" in r:
            e["bucket"] = {"index": r["bucket"], "params": r["params"]}
        if "unit" in r:
            e["unit"] = r["unit"]
        if grad_accum > 1 and r["phase"] != "setup":
            e["micro"] = r["micro"]
        out[step].append(e)
    return out


def _train(rank: int, v: Variant, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # torch < 2.14: no Python c10d backend; the collectives are seen by scaling.record's
    # dispatch mode instead (same entries, without "issued_by")
    via_record = not _backend_subclassable()
    if via_record:
        dist.init_process_group("gloo", rank=rank, world_size=v.world_size)
    else:
        dist.Backend.register_backend(BACKEND_NAME, _create_backend, devices=["cpu"])
        dist.init_process_group(BACKEND_NAME, rank=rank, world_size=v.world_size)
    torch.manual_seed(0)
    model = GPT(v.dims)
    params = [(n, p.numel()) for n, p in model.named_parameters()]
    rec = None
    if via_record:
        import scaling.record

        rec = scaling.record.start(Path(out_dir, "record"), model=model)
    with _phase("setup"):
        wrapped, meta = {"ddp": _wrap_ddp, "fsdp1": _wrap_fsdp1, "fsdp2": _wrap_fsdp2}[v.strategy](
            model, v
        )
    opt = torch.optim.AdamW(wrapped.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1 + rank)
    steps: list[list[dict[str, Any]]] = []
    setup = REC.log
    for _step in range(v.steps):
        REC.log = []
        for micro in range(v.grad_accum):
            REC.micro = micro if v.grad_accum > 1 else None
            idx = torch.randint(0, v.dims.vocab, (v.micro_batch, v.seq_len + 1), generator=gen)
            last = micro == v.grad_accum - 1
            sync = contextlib.nullcontext() if last else wrapped.no_sync()  # type: ignore[operator]
            amp = (
                torch.autocast("cpu", dtype=torch.bfloat16)
                if v.amp_bf16
                else contextlib.nullcontext()
            )
            with sync:
                with _phase("forward"), amp:
                    logits = wrapped(idx[:, :-1])
                    loss = F.cross_entropy(
                        logits.float().reshape(-1, v.dims.vocab), idx[:, 1:].reshape(-1)
                    )
                with _phase("backward"):
                    loss.backward()
        REC.micro = None
        with _phase("optimizer"):
            if v.clip_grad_norm is not None:
                if v.strategy == "fsdp1":
                    wrapped.clip_grad_norm_(v.clip_grad_norm)  # type: ignore[operator]
                else:
                    torch.nn.utils.clip_grad_norm_(wrapped.parameters(), v.clip_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        steps.append(REC.log)
    if rec is not None:
        rec.stop()
        setup, *steps = _from_scaling_record(
            Path(out_dir, "record", f"rank{rank}.jsonl"), v.grad_accum
        )
        steps += [[] for _ in range(v.steps - len(steps))]
    else:
        _resolve_groups()

    def finish(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for e in log:
            b = e["group"]
            if isinstance(b, list):
                continue  # already global ranks (scaling.record)
            e["group"] = b.global_ranks if b.global_ranks is not None else list(range(b.group_size))
        return log

    out = {
        "rank": rank,
        "params": params,
        "meta": meta(),
        "setup": finish(setup),
        "steps": [finish(s) for s in steps],
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _key(e: dict[str, Any]) -> str:
    return json.dumps(e, sort_keys=True)


def first_steady_step(steps: list[list[dict[str, Any]]]) -> int | None:
    """The first step k >= 1 whose schedule equals that of every later recorded step."""
    for k in range(1, len(steps) - 1):
        if all(
            [_key(e) for e in steps[j]] == [_key(e) for e in steps[k]] for j in range(k, len(steps))
        ):
            return k
    return None


def record(v: Variant) -> dict[str, Any]:
    """Run variant ``v`` on ``v.world_size`` gloo processes; return its fixture document."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_train, args=(v, _free_port(), tmp), nprocs=v.world_size, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(v.world_size)]
    steady = [first_steady_step(r["steps"]) for r in ranks]
    return {
        "format": FORMAT_VERSION,
        "generator": "tools/record_torch_schedule.py",
        "variant": v.name,
        "description": v.description,
        "torch_version": torch.__version__,
        "backend": "gloo (CPU)",
        "world_size": v.world_size,
        "model": {**dataclasses.asdict(v.dims), "bias": True, "params": ranks[0]["params"]},
        "strategy": {"kind": v.strategy, **v.options, **ranks[0]["meta"]},
        "training": {
            "micro_batch": v.micro_batch,
            "seq_len": v.seq_len,
            "grad_accum": v.grad_accum,
            "amp": "autocast(cpu, bfloat16)" if v.amp_bf16 else None,
            "clip_grad_norm": v.clip_grad_norm,
            "optimizer": "AdamW",
        },
        "steps_recorded": v.steps,
        "iteration0_step": 0,
        "first_steady_step": max((s for s in steady if s is not None), default=None),
        "ranks": [{"rank": r["rank"], "setup": r["setup"], "steps": r["steps"]} for r in ranks],
    }


def _bare(doc: dict[str, Any]) -> list[list[list[tuple[Any, ...]]]]:
    """Per rank and step, the collectives without the hook's annotations."""
    return [
        [[(e["op"], e["bytes"], e["dtype"], e["group"], e["phase"]) for e in s] for s in r["steps"]]
        for r in doc["ranks"]
    ]


def dumps(doc: dict[str, Any]) -> str:
    """JSON with one collective per line (small diffs, readable)."""
    head = {k: val for k, val in doc.items() if k != "ranks"}
    lines = ["{"]
    for k, val in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(val)},")
    lines.append('  "ranks": [')
    for i, r in enumerate(doc["ranks"]):
        lines.append(f'    {{"rank": {r["rank"]}, "setup": [')
        lines.append(",\n".join(f"      {json.dumps(e)}" for e in r["setup"]))
        lines.append('    ], "steps": [')
        blocks = []
        for s in r["steps"]:
            body = ",\n".join(f"      {json.dumps(e)}" for e in s)
            blocks.append(f"     [\n{body}\n     ]" if s else "     []")
        lines.append(",\n".join(blocks))
        lines.append("    ]}" + ("," if i < len(doc["ranks"]) - 1 else ""))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(line for line in lines if line != "")
    json.loads(text)  # the hand-made layout must stay valid JSON
    return text + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", help="variant name (repeatable); default all")
    ap.add_argument("--out-dir", type=Path, default=FIXTURE_DIR)
    ap.add_argument("--list", action="store_true", help="list the variants and exit")
    ap.add_argument(
        "--check-builtin-hook",
        action="store_true",
        help="for DDP variants without a comm hook, also run with the C++ built-in all-reduce "
        "(no hook registered) and check that the collectives are the same as with the "
        "recording hook",
    )
    args = ap.parse_args(argv)
    if args.list:
        for v in VARIANTS:
            print(f"{v.name:32s} {v.strategy:6s} w{v.world_size}  {v.description}")
        return 0
    names = args.variant or [v.name for v in VARIANTS]
    unknown = [n for n in names if n not in VARIANTS_BY_NAME]
    if unknown:
        print(f"unknown variant(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for n in names:
        try:
            doc = record(VARIANTS_BY_NAME[n])
        except Exception as exc:  # report and go on: some variants may not run on CPU/gloo
            print(f"{n}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(n)
            continue
        v = VARIANTS_BY_NAME[n]
        if args.check_builtin_hook and v.strategy == "ddp" and "comm_hook" not in v.options:
            builtin = record(dataclasses.replace(v, options={**v.options, "comm_hook": "builtin"}))
            same = _bare(builtin) == _bare(doc)
            print(f"{n}: built-in hook issues the same collectives: {same}")
            if not same:
                failed.append(n)
        path = args.out_dir / f"{n}.json"
        path.write_text(dumps(doc))
        n_coll = sum(len(s) for s in doc["ranks"][0]["steps"])
        print(f"{n}: {n_coll} collectives on rank 0 in {doc['steps_recorded']} steps -> {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
