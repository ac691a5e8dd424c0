"""The recorder: a torch dispatch mode that sees every collective, plus a few hooks for context.

Only imported once torch is (``scaling.record.start``); nothing in the simulator imports it.

How it sees collectives. A ``TorchDispatchMode`` is called for every dispatcher op of the thread
that entered it (and of autograd's backward, which carries the thread's dispatch state). Every
collective reaches a process group through a ``c10d::`` or ``_c10d_functional::`` op, whether
Python issued it or C++ (DDP's reducer buckets and its unused-parameter map, the constructor's
shape check and broadcasts, FSDP1/FSDP2), so one mode sees them all in the order this rank
issued them, with their tensors (bytes, dtype) and process group (its global ranks).

Context, from public hooks: the global module forward hooks (inside the outermost module's
forward = ``forward``; a new outermost forward after a backward = the next micro-batch; after an
optimizer step = the next iteration), autograd's current graph task (``backward``), and what is
left (``setup`` before the first forward, ``optimizer`` after the backward). Names, from
internals where there is no public hook (each optional; absent in another torch version = that
annotation is left out and the header says so): DDP buckets from the reducer's
``_get_zeros_like_grad_buckets`` (index, parameters), FSDP1 units by wrapping
``FlatParamHandle.unshard`` and ``_runtime_utils._reduce_grad`` / ``_reduce_grad_no_shard``,
FSDP2 units by wrapping ``FSDPParamGroup.unshard`` / ``post_backward``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from scaling.record._ops import C10D, FUNCTIONAL, OpRule

FORMAT = "scaling-record"
VERSION = 1
_WRAPPERS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A parameter or module name without the wrappers' inserted segments (DDP's ``module.``,
    FSDP1's ``_fsdp_wrapped_module.``, activation checkpointing's, torch.compile's)."""
    for w in _WRAPPERS:
        name = name.replace(w, "")
    return name.removeprefix("module.")


def _tensors(x: Any) -> list[Any]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, tuple)):
        return list(x[0])  # one list per local device: the first is this rank's
    return [t for t in x if isinstance(t, torch.Tensor)] if isinstance(x, (list, tuple)) else []


def _group_ranks(obj: Any) -> list[int]:
    """Global ranks of a process group given as a script object or a functional group name."""
    from torch.distributed import distributed_c10d as c10d

    resolve: Any = c10d._resolve_process_group
    pg = resolve(obj) if isinstance(obj, str) else dist.ProcessGroup.unbox(obj)
    return list(dist.get_process_group_ranks(pg))


class _Mode(TorchDispatchMode):
    def __init__(self, on_collective: Callable[[OpRule, tuple[Any, ...]], None]) -> None:
        super().__init__()
        self.on_collective = on_collective
        self.in_funcol = 0  # inside a wrapped functional collective: it records itself

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        ns = func.namespace
        if ns == "c10d" or (ns == "_c10d_functional" and not self.in_funcol):
            table = C10D if ns == "c10d" else FUNCTIONAL
            rule = table.get(func._overloadpacket.__name__)
            if rule is not None:
                self.on_collective(rule, tuple(args))
        return func(*args, **(kwargs or {}))


class Recorder:
    """Logs every collective of this process, per iteration, to ``<out_dir>/rank<R>.jsonl``.

    Args:
        out_dir: folder of the recording (one file per rank; created if missing).
        model: the user's model, before or after wrapping: names parameters and FSDP units as
            the user's ``named_parameters()`` does. Optional (DDP/FSDP modules are found by the
            forward hooks; FSDP1 names need it).
        steps: stop by itself after this many iterations (None: at :meth:`stop` or exit).
    """

    def __init__(
        self, out_dir: str | os.PathLike[str], model: Any = None, steps: int | None = None
    ) -> None:
        self.out_dir = Path(out_dir)
        self.model = model
        self.max_steps = steps
        self.step: int | None = None  # None = setup (before the first forward)
        self.micro = 0
        self.depth = 0  # module forward nesting
        self.backward_seen = False  # this micro-batch has run backward
        self.stepped = False  # an optimizer stepped since the last forward
        self.seq = 0
        self.pending: list[dict[str, Any]] = []
        self.unit: list[tuple[str, list[str]]] = []  # FSDP unit being unsharded/reduced
        self.ddps: dict[int, Any] = {}
        self.file: Any = None
        self.header: dict[str, Any] = {}
        self.params: list[list[Any]] = []
        self.flushed: int | None = None  # the last iteration written
        self.annotations = {"ddp_buckets": True, "fsdp1_units": False, "fsdp2_units": False}
        self.steps_written = 0
        self.total = 0
        self._mode = _Mode(self._collective)
        self._undo: list[Callable[[], None]] = []
        self.active = False

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> Recorder:
        """Install the hooks and the dispatch mode (on this thread)."""
        from torch.nn.modules import module as nn_module
        from torch.optim import optimizer as optim_mod

        # the names and sizes now, before FSDP1 replaces the parameters by flat shards
        if self.model is not None:
            self.params = [[clean_name(n), p.numel()] for n, p in self.model.named_parameters()]
        h1 = nn_module.register_module_forward_pre_hook(self._fwd_pre)
        h2 = nn_module.register_module_forward_hook(self._fwd_post, always_call=True)
        h3 = optim_mod.register_optimizer_step_post_hook(self._opt_post)
        self._undo += [h1.remove, h2.remove, h3.remove]
        self._patch_fsdp()
        self._patch_funcol()
        self._mode.__enter__()
        self.active = True
        return self

    def stop(self) -> None:
        """Write what is pending and the closing record; remove every hook. Idempotent."""
        if not self.active:
            return
        self.active = False
        self._mode.__exit__(None, None, None)
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self._flush()
        self._write({"record": "end", "steps": self.steps_written, "collectives": self.total})
        if self.file is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- context hooks --------------------------------------------------------------------
    def _fwd_pre(self, module: Any, _args: Any) -> None:
        if self.depth == 0:
            self._new_forward(module)
        self.depth += 1

    def _fwd_post(self, _module: Any, _args: Any, out: Any) -> None:
        self.depth = max(0, self.depth - 1)
        if self.depth == 0:
            # a backward that issues no collective (under no_sync) still ends the micro-batch:
            # mark it when the gradient reaches the outermost module's output
            from torch.utils._pytree import tree_leaves

            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    t.register_hook(self._saw_backward)
                    break

    def _saw_backward(self, grad: Any) -> None:
        self.backward_seen = True

    def _opt_post(self, *_: Any) -> None:
        if self.step is not None:
            self.stepped = True

    def _new_forward(self, module: Any) -> None:
        from torch.nn.parallel import DistributedDataParallel

        if isinstance(module, DistributedDataParallel):
            self.ddps.setdefault(id(module), module)
        if self.step is None:
            self._flush()  # the setup collectives
            self.step, self.micro = 0, 0
        elif self.stepped:
            self._flush()
            if self.max_steps is not None and self.steps_written >= self.max_steps:
                self.stop()
                return
            self.step, self.micro = self.step + 1, 0
        elif self.backward_seen:
            self.micro += 1
        else:
            return  # another module called at top level in the same micro-batch (a loss)
        self.stepped = self.backward_seen = False

    def _phase(self) -> str:
        if torch._C._current_graph_task_id() != -1:
            self.backward_seen = True
            return "backward"
        if self.depth > 0:
            return "forward"
        if self.step is None:
            return "setup"
        return "optimizer" if self.backward_seen or self.stepped else "forward"

    # ---- collectives ----------------------------------------------------------------------
    def _collective(self, rule: OpRule, args: tuple[Any, ...]) -> None:
        counted = _tensors(args[rule.counted]) if rule.counted >= 0 else []
        dtyped = _tensors(args[rule.dtype_arg]) if rule.counted >= 0 else []
        group = _group_ranks(args[rule.group_arg])
        nbytes = sum(t.numel() * t.element_size() for t in counted)
        if rule.scale_by_group:
            nbytes *= len(group)
        self.seq += 1
        e: dict[str, Any] = {
            "record": "collective",
            "step": "setup" if self.step is None else self.step,
            "micro": self.micro,
            "seq": self.seq,
            "op": rule.op,
            "bytes": nbytes,
            "dtype": str(dtyped[0].dtype).removeprefix("torch.") if dtyped else None,
            "group": group,
            "phase": self._phase(),
        }
        if self.unit:
            e["unit"], e["params"] = self.unit[-1]
        elif rule.op == "all_reduce" and e["phase"] == "backward" and counted:
            e["_numel"] = sum(t.numel() for t in counted)  # a DDP bucket? resolved at flush
        self.pending.append(e)

    def _flush(self) -> None:
        """Name the pending iteration's DDP buckets and write its records."""
        if not self.pending and self.step in (None, self.flushed):
            return  # nothing in setup, or this iteration was written already (stop after it)
        self.flushed = self.step
        self._name_buckets()
        for e in self.pending:
            e.pop("_numel", None)
            self._write(e)
        self.total += len(self.pending)
        if self.step is not None:
            self._write(
                {
                    "record": "step",
                    "step": self.step,
                    "micro_batches": self.micro + 1,
                    "collectives": len(self.pending),
                }
            )
            self.steps_written += 1
        self.pending = []

    def _name_buckets(self) -> None:
        # The reducer launches buckets in index order (reducer.cpp ``mark_bucket_ready``), one
        # all-reduce each; the assignment read now is the one this iteration used (a rebuild
        # happens in the next forward).
        for ddp in self.ddps.values():
            reducer = getattr(ddp, "reducer", None)
            if reducer is None:
                continue
            names = {p.data_ptr(): clean_name(n) for n, p in ddp.module.named_parameters()}
            buckets = [
                (
                    b.index(),
                    [names.get(p.data_ptr(), "?") for p in b.parameters()],
                    b.buffer().numel(),
                )
                for b in _grad_buckets(reducer)
            ]
            by_micro: dict[int, int] = {}
            for e in self.pending:
                numel = e.get("_numel")
                k = by_micro.get(e["micro"], 0)
                if numel is not None and k < len(buckets) and numel == buckets[k][2]:
                    e["bucket"] = buckets[k][0]
                    e["params"] = buckets[k][1]
                    by_micro[e["micro"]] = k + 1

    def _write(self, rec: dict[str, Any]) -> None:
        if self.file is None:
            self._open()
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()

    def _open(self) -> None:
        rank = dist.get_rank() if dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_initialized() else 1
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.file = (self.out_dir / f"rank{rank}.jsonl").open("w")
        self.header = {
            "record": "header",
            "format": FORMAT,
            "version": VERSION,
            "rank": rank,
            "world_size": world,
            "torch": torch.__version__,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "params": self.params,
            "annotations": self.annotations,
        }
        self.file.write(json.dumps(self.header) + "\n")

    # ---- FSDP unit names ------------------------------------------------------------------
    def _module_names(self) -> dict[int, str]:
        if self.model is None:
            return {}
        return {id(m): clean_name(n) or "root" for n, m in self.model.named_modules()}

    def _wrap(self, owner: Any, attr: str, unit_of: Callable[..., tuple[str, list[str]]]) -> bool:
        original = getattr(owner, attr, None)
        if original is None:
            return False

        @functools.wraps(original)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self._in_unit(unit_of(*args)):
                return original(*args, **kwargs)

        setattr(owner, attr, wrapped)
        self._undo.append(lambda: setattr(owner, attr, original))
        return True

    @contextlib.contextmanager
    def _in_unit(self, unit: tuple[str, list[str]]) -> Iterator[None]:
        self.unit.append(unit)
        try:
            yield
        finally:
            self.unit.pop()

    def _patch_funcol(self) -> None:
        """Wrap the Python functional collectives. A tensor subclass's dispatch (DTensor turning
        a Partial into a Replicate, e.g. FSDP2's clip_grad_norm_ norm) calls them while this
        mode is off (a mode does not see ops issued inside a dispatch)."""
        from torch.distributed import _functional_collectives as funcol

        def wrap(name: str, rule: OpRule, to_args: Callable[..., tuple[Any, ...]]) -> None:
            original = getattr(funcol, name, None)
            if original is None:
                return

            @functools.wraps(original)
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                group = funcol._resolve_group_name(kwargs.get("group", args[-1]))
                self._collective(rule, to_args(group, *args))
                self._mode.in_funcol += 1
                try:
                    return original(*args, **kwargs)
                finally:
                    self._mode.in_funcol -= 1

            setattr(funcol, name, wrapped)
            self._undo.append(lambda: setattr(funcol, name, original))

        wrap("all_reduce", FUNCTIONAL["all_reduce"], lambda g, t, *_: (t, None, g))
        wrap(
            "all_gather_tensor",
            FUNCTIONAL["all_gather_into_tensor"],
            lambda g, t, *_: (t, None, g),
        )
        wrap(
            "reduce_scatter_tensor",
            FUNCTIONAL["reduce_scatter_tensor"],
            lambda g, t, *_: (t, None, None, g),
        )

    def _patch_fsdp(self) -> None:
        names = self._module_names()
        with contextlib.suppress(ImportError):
            from torch.distributed.fsdp import _flat_param, _runtime_utils

            def fsdp1_unit(h: Any, *_: Any) -> tuple[str, list[str]]:
                name = names.get(id(h._fully_sharded_module), "?")
                prefix = "" if name == "root" else f"{name}."
                return name, [prefix + clean_name(f) for f in h.flat_param._fqns]

            ok = self._wrap(_flat_param.FlatParamHandle, "unshard", fsdp1_unit)
            for fn in ("_reduce_grad", "_reduce_grad_no_shard"):
                ok &= self._wrap(_runtime_utils, fn, lambda _s, h, *_: fsdp1_unit(h))
            self.annotations["fsdp1_units"] = ok and bool(names)
        with contextlib.suppress(ImportError):
            from torch.distributed.fsdp._fully_shard import _fsdp_param_group as pg_mod

            def fsdp2_unit(g: Any, *_: Any) -> tuple[str, list[str]]:
                fqn = clean_name(g._module_fqn or "") or "root"
                params = []
                for p in g.fsdp_params:
                    mod = names.get(id(p._module_info.module), "")
                    base = "" if mod in ("", "root") else f"{mod}."
                    params.append(base + p._module_info.param_name)
                return fqn, params

            ok = self._wrap(pg_mod.FSDPParamGroup, "unshard", fsdp2_unit)
            ok &= self._wrap(pg_mod.FSDPParamGroup, "post_backward", fsdp2_unit)
            self.annotations["fsdp2_units"] = ok


def _grad_buckets(reducer: Any) -> list[Any]:
    """The reducer's current buckets (zero-filled copies: transient memory of one gradient set)."""
    try:
        return list(reducer._get_zeros_like_grad_buckets())
    except (AttributeError, RuntimeError):
        return []
