"""Which torch.distributed dispatcher ops are collectives, and how each one's size is counted.

Every collective that reaches a process group, from Python or from C++ (DDP's reducer, FSDP),
goes through one of the ``c10d`` dispatcher ops (``torch/csrc/distributed/c10d/Ops.cpp``); the
functional collectives (DTensor, FSDP2's gradient-norm reduction) through ``_c10d_functional``
(``torch/csrc/distributed/c10d/Functional.cpp``). Sizes follow ``scaling schedule``: all-reduce,
broadcast and all-to-all the tensor; all-gather the gathered output; reduce-scatter the full
input. No torch import here: the tables are plain data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OpRule:
    """How to read one dispatcher op.

    Attributes:
        op: the collective's name in the recording (``all_reduce``, ``all_gather``, …).
        counted: index of the argument whose tensors are counted (a tensor, a list of tensors or
            a list of lists); -1 = none (a barrier moves no bytes).
        dtype_arg: index of the argument whose first tensor gives the dtype.
        group_arg: index of the process group (a ``ProcessGroup`` script object for ``c10d``, a
            group name for ``_c10d_functional``).
        scale_by_group: the counted tensor is one rank's share (functional all-gather input):
            multiply by the group size.
    """

    op: str
    counted: int
    dtype_arg: int
    group_arg: int
    scale_by_group: bool = False


#: ``c10d::<name>`` -> rule (schemas: ``torch.ops.c10d.<name>.default._schema``)
C10D: dict[str, OpRule] = {
    "allreduce_": OpRule("all_reduce", 0, 0, 1),
    "allreduce_coalesced_": OpRule("all_reduce", 0, 0, 1),
    "allgather_": OpRule("all_gather", 0, 1, 2),
    "_allgather_base_": OpRule("all_gather", 0, 1, 2),
    "allgather_coalesced_": OpRule("all_gather", 0, 1, 2),
    "allgather_into_tensor_coalesced_": OpRule("all_gather", 0, 1, 2),
    "reduce_scatter_": OpRule("reduce_scatter", 1, 1, 2),
    "_reduce_scatter_base_": OpRule("reduce_scatter", 1, 1, 2),
    "reduce_scatter_tensor_coalesced_": OpRule("reduce_scatter", 1, 1, 2),
    "broadcast_": OpRule("broadcast", 0, 0, 1),
    "reduce_": OpRule("reduce", 0, 0, 1),
    "gather_": OpRule("gather", 1, 1, 2),
    "scatter_": OpRule("scatter", 0, 0, 2),
    "alltoall_": OpRule("all_to_all", 1, 1, 2),
    "alltoall_base_": OpRule("all_to_all", 1, 1, 2),
    "barrier": OpRule("barrier", -1, 0, 1),
    "send": OpRule("send", 0, 0, 1),
    "recv_": OpRule("recv", 0, 0, 1),
}

#: ``_c10d_functional::<name>`` -> rule (the group is given by name)
FUNCTIONAL: dict[str, OpRule] = {
    "all_reduce": OpRule("all_reduce", 0, 0, 2),
    "all_reduce_": OpRule("all_reduce", 0, 0, 2),
    "all_reduce_coalesced": OpRule("all_reduce", 0, 0, 2),
    "all_gather_into_tensor": OpRule("all_gather", 0, 0, 2, scale_by_group=True),
    "all_gather_into_tensor_coalesced": OpRule("all_gather", 0, 0, 2, scale_by_group=True),
    "reduce_scatter_tensor": OpRule("reduce_scatter", 0, 0, 3),
    "reduce_scatter_tensor_coalesced": OpRule("reduce_scatter", 0, 0, 3),
    "broadcast": OpRule("broadcast", 0, 0, 2),
    "all_to_all_single": OpRule("all_to_all", 0, 0, 3),
}
