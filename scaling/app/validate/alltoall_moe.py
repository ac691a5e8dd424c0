"""The MoE all-to-all studies of ``scaling validate``: DeepEP's dispatch and combine bandwidths
on H800 nodes (deepseek-ai/DeepEP, reference/deepep_bandwidth.csv) and nccl-tests alltoall on one
H100 node (NVIDIA/nccl#2169, reference/nccl_busbw.csv), all held out: no constant was fitted to
them. The model runs the library tuner's uniform all-to-all alone on the cluster.

How a DeepEP figure maps onto an all-to-all (tests/test_validate_alltoall_moe.py checks each
rule):

* DeepEP's benchmark (tests/test_intranode.py, tests/test_internode.py of the V1 tree; the V2
  README says so in words) reports a *logical* bandwidth: the bytes a rank receives (intranode)
  or sends to nodes (internode) **including its own share**, over the kernel time. That is
  nccl-tests' algbw = S/t of an all-to-all of S bytes per rank, where S is those bytes.
* S per rank: tokens × targets × hidden × bytes per element, where targets is the number of
  ranks (intranode) or nodes (internode) a token is sent to once: intranode, the expected
  number of distinct ranks among top-k experts drawn from ``experts`` spread evenly over the
  ranks (the test draws random scores, no group limit); internode, ``min(nodes,
  topk_groups)`` (node-limited routing picks that many nodes; a selected node left without an
  expert is rare with 32+ experts per node, and at these sizes algbw moves < 1 % per 10 % of
  S). FP8 carries one fp32 scale per 128 channels: (1 + 4/128) bytes per element, as the test
  counts it; BF16 two.
* The routing is uniform (random scores; Megatron's benchmark recipes force-balance it), so a
  uniform all-to-all moves the same bytes over each NIC: S·(N−1)/N per GPU on N nodes, which
  is what DeepEP's RDMA leg carries (its NVLink forward is 3× faster than the NIC and not the
  bottleneck; DeepSeek-V3 report sec. 3.2.2).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

from scaling.app.validate.data import VALIDATION_DIR, DeviceOverrides, result
from scaling.app.validate.report import Point, StudyResult
from scaling.io.reference import nccl_busbw, reference_rows
from scaling.io.topology import load_system
from scaling.model.comm.ops import CollectiveOp

#: bytes per element as DeepEP's benchmark counts them: FP8 with one fp32 scale per 128
#: channels (tests/test_internode.py ``fp8_factor = (1 + 4 / 128) / 2`` of BF16's 2 bytes)
ELEMENT_BYTES = {"fp8": 1.0 + 4.0 / 128.0, "bf16": 2.0}
#: DeepEP's V1 test defaults where a row leaves them blank (tests/test_internode.py: 256
#: experts, ``num_topk_groups = min(num_nodes, 4)``)
DEFAULT_EXPERTS = 256
DEFAULT_GROUP_LIMIT = 4


@dataclass(frozen=True, slots=True)
class DeepEPRow:
    """One DeepEP figure (reference/deepep_bandwidth.csv) and the run that models it
    (scaling/data/validation/alltoall_deepep.csv)."""

    label: str
    study: str
    system: str
    algorithm: str | None
    ep: int
    nodes: int
    per_node: int
    tokens: int
    hidden: int
    topk: int
    topk_groups: int | None
    experts: int
    dtype: str
    measured_GBps: float
    source: str


def expected_distinct_ranks(ranks: int, experts: int, topk: int) -> float:
    """Expected number of distinct ranks among ``topk`` experts drawn without replacement from
    ``experts`` spread evenly over ``ranks`` (1 − C(E − E/r, k)/C(E, k) per rank)."""
    per_rank = experts // ranks
    miss = math.prod((experts - per_rank - i) / (experts - i) for i in range(topk))
    return ranks * (1.0 - miss)


def deepep_bytes_per_rank(row: DeepEPRow) -> float:
    """S (bytes) of the all-to-all that moves what DeepEP's benchmark counts for ``row``: its
    logical bytes per rank, own share included (module docstring)."""
    if row.nodes == 1:
        targets = expected_distinct_ranks(row.ep, row.experts, row.topk)
    else:
        limit = row.topk_groups if row.topk_groups is not None else DEFAULT_GROUP_LIMIT
        targets = float(min(row.nodes, limit))
    return row.tokens * targets * row.hidden * ELEMENT_BYTES[row.dtype]


def deepep_rows() -> list[DeepEPRow]:
    """Every DeepEP figure a study compares with (alltoall_deepep.csv keys into
    reference/deepep_bandwidth.csv by dataset, EP size and phase)."""
    ref = {(r["dataset"], r["ep"], r["phase"]): r for r in reference_rows("deepep_bandwidth.csv")}
    out = []
    with open(VALIDATION_DIR / "alltoall_deepep.csv", newline="") as f:
        for r in csv.DictReader(f):
            m = ref[(r["dataset"], r["ep"], r["phase"])]
            out.append(
                DeepEPRow(
                    label=r["label"],
                    study=r["study"],
                    system=r["system"],
                    algorithm=r["algorithm"] or None,
                    ep=int(m["ep"]),
                    nodes=int(m["nodes"]),
                    per_node=int(m["gpus_per_node"]),
                    tokens=int(m["tokens"]),
                    hidden=int(m["hidden"]),
                    topk=int(m["topk"]),
                    topk_groups=int(m["topk_groups"]) if m["topk_groups"] else None,
                    experts=int(m["experts"]) if m["experts"] else DEFAULT_EXPERTS,
                    dtype=m["dtype"],
                    measured_GBps=float(m["logical_GBps"]),
                    source=m["source"],
                )
            )
    return out


def a2a_algbw(
    system: str, nodes: int, per_node: int, size: float, algorithm: str | None = None
) -> float:
    """algbw (GB/s, nccl-tests' S/t) of an all-to-all of ``size`` bytes per rank on ``nodes`` x
    ``per_node`` ranks of ``system``, alone on the cluster (the tuner's uncontended time: a run
    alone on the flow network takes exactly it, tests/test_tuner_modes.py)."""
    from scaling.app.collective import collective_table

    table = collective_table(
        load_system(system).spec,
        nodes,
        CollectiveOp.ALL_TO_ALL,
        [int(size)],
        algorithm=algorithm,
        per_node=per_node,
        network="analytic",
    )
    return float(table.algbw_GBps.iloc[0])


#: the studies of this module, in report order
DEEPEP_STUDIES = ("a2a-deepep-h800-intranode", "a2a-deepep-internode", "a2a-deepep-v1-ep16")
NCCL_H100_STUDY = "nccl-alltoall-h100-1node-4gpu"
NCCL_H100_DATASET = "NVIDIA_nccl2169_alltoall_1node_h100x4"


def study_deepep(_: DeviceOverrides | None = None) -> list[StudyResult]:
    """DeepEP dispatch/combine logical bandwidth vs the model's all-to-all algbw, by study."""
    pts: dict[str, list[Point]] = {name: [] for name in DEEPEP_STUDIES}
    sources: dict[str, str] = {}
    for row in deepep_rows():
        size = deepep_bytes_per_rank(row)
        got = a2a_algbw(row.system, row.nodes, row.per_node, size, row.algorithm)
        pts[row.study].append(Point(row.label, row.measured_GBps, got, False))
        sources.setdefault(row.study, row.source)
    return [result(name, tuple(pts[name]), sources[name]) for name in DEEPEP_STUDIES]


def study_nccl_alltoall_h100(_: DeviceOverrides | None = None) -> list[StudyResult]:
    """nccl-tests alltoall busbw on 4 H100 of one node (NVIDIA/nccl#2169), held out."""
    ref = nccl_busbw().query("dataset == @NCCL_H100_DATASET")
    pts = []
    for row in ref.itertuples():
        ranks, size = int(row.gpus_num), float(row.msg_bytes_num)
        algbw = a2a_algbw("dgx-h100", 1, ranks, size)
        label = f"1 node x {ranks}, {int(size) >> 20} MiB"
        pts.append(Point(label, float(row.busbw_GBps_num), algbw * (ranks - 1) / ranks, False))
    return [result(NCCL_H100_STUDY, tuple(pts), str(ref.source.iloc[0]))]
