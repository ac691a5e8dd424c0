"""The collective studies of ``scaling validate``: nccl-tests all_reduce busbw on one 8x A100
node (the curve NCCL's profile constants were fitted to), multi-node plateaus, and busbw vs node
count from 4 to 512 DGX H100 nodes (arXiv:2411.13055)."""

from __future__ import annotations

import dataclasses

from scaling.app.validate.data import DeviceOverrides, nccl_plateaus, result
from scaling.app.validate.report import Point, StudyResult
from scaling.io.reference import nccl_busbw
from scaling.io.topology import load_system
from scaling.model.comm.ops import CollectiveOp
from scaling.model.hardware.system import SystemSpec


def _busbw(system: SystemSpec, nodes: int, sizes: list[int], **kw: object) -> list[float]:
    from scaling.app.collective import collective_table

    table = collective_table(system, nodes, CollectiveOp.ALL_REDUCE, sizes, **kw)  # type: ignore[arg-type]
    return [float(x) for x in table.busbw_GBps]


def study_nccl_a100_curve(_: DeviceOverrides | None = None) -> list[StudyResult]:
    """8x A100 all_reduce busbw vs size: the curve NCCL's three profile constants were fitted to
    (tools/fit_nccl_profile.py), so every point is a calibration point; split at 1 MiB."""
    ref = nccl_busbw()
    ref = ref[ref.dataset == "A100_1node_allreduce_curve"].sort_values("msg_bytes_num")
    sizes = ref.msg_bytes_num.astype(int).tolist()
    model = _busbw(load_system("dgx-a100").spec, 1, sizes)
    pts = [
        Point(f"{s} B", float(m), p, True)
        for s, m, p in zip(sizes, ref.busbw_GBps_num, model, strict=True)
    ]
    src = str(ref.source.iloc[0])
    big = tuple(p for p, s in zip(pts, sizes, strict=True) if s >= 2**20)
    small = tuple(p for p, s in zip(pts, sizes, strict=True) if s < 2**20)
    return [
        result("nccl-a100-8gpu-curve-large", big, src),
        result("nccl-a100-8gpu-curve-small", small, src),
    ]


def study_nccl_plateaus(_: DeviceOverrides | None = None) -> list[StudyResult]:
    """Large-message busbw vs node count (DGX A100, DGX H100) and the one-NIC node cap, not
    fitted (scaling/data/validation/nccl_plateaus.csv)."""
    pts = []
    for row in nccl_plateaus():
        spec = load_system(row.system).spec
        if row.nics is not None:
            spec = dataclasses.replace(spec, nics=dataclasses.replace(spec.nics, count=row.nics))
        kw = {} if row.algorithm is None else {"algorithm": row.algorithm}
        got = _busbw(spec, row.nodes, [row.msg_bytes], **kw)[0]
        pts.append(Point(row.label, row.measured, got, False))
    return [result("nccl-multinode-plateaus", tuple(pts))]


#: arXiv:2411.13055 nccl-tests all_reduce curves (reference/nccl_busbw.csv), read from a plot
#: (±10 GB/s): the node counts, and the study names' size split (nccl-tests' busbw, bytes).
SCALE_DATASET = "arXiv2411.13055_nccltests_4_to_512_nodes"
SCALE_NODES = (4, 64, 512)
#: The curve NCCL's ``tree_level_latency_us`` was fitted to (topologies/libraries/nccl.yaml): its
#: points are calibration points; the 4- and 512-node curves validate the fit.
SCALE_FITTED_NODES = 64
SCALE_SPLIT = 128 * 2**20


def _busbw_alone(system: SystemSpec, nodes: int, sizes: list[int]) -> list[float]:
    """busbw (GB/s) of the tuner's all_reduce of each size, alone on one cluster's network
    (uncontended, a run takes exactly its prediction: comm.flowcoll), one network for all
    sizes — at 512 nodes building it once per size would cost a minute."""
    import simpy

    from scaling.model.comm.flowcoll import FlowCollectives
    from scaling.model.comm.ops import Group, busbw_factor

    fc = FlowCollectives(simpy.Environment(), system, nodes)
    group = Group(nodes, system.devices_per_node)
    op = CollectiveOp.ALL_REDUCE
    return [
        s * busbw_factor(op, group.size) / fc.predict(op, float(s), group).time_s / 1e9
        for s in sizes
    ]


def scale_curves() -> dict[int, list[tuple[int, float, float]]]:
    """Per node count of the arXiv:2411.13055 curves: (size B, measured, model busbw GB/s) on
    DGX H100 nodes (8 GPUs, 8 x 400 Gb/s; the paper's plateau of ~350 GB/s says so)."""
    ref = nccl_busbw()
    ref = ref[ref.dataset == SCALE_DATASET]
    system = load_system("dgx-h100").spec
    out: dict[int, list[tuple[int, float, float]]] = {}
    for nodes in SCALE_NODES:
        r = ref[ref.nodes_num == nodes].sort_values("msg_bytes_num")
        sizes = r.msg_bytes_num.astype(int).tolist()
        model = _busbw_alone(system, nodes, sizes)
        out[nodes] = list(zip(sizes, r.busbw_GBps_num.astype(float), model, strict=True))
    return out


def study_nccl_scale(_: DeviceOverrides | None = None) -> list[StudyResult]:
    """all_reduce busbw vs size at 4, 64 and 512 nodes of 8 GPUs (arXiv:2411.13055), and how
    busbw falls off from 4 to 512 nodes per size. The 64-node points fitted NCCL's tree level
    latency (calibration); the 4- and 512-node points are held out."""
    curves = scale_curves()
    src = str(nccl_busbw().query("dataset == @SCALE_DATASET").source.iloc[0])
    out = []
    for nodes, rows in curves.items():
        for part, keep in (
            ("large", lambda s: s >= SCALE_SPLIT),
            ("small", lambda s: s < SCALE_SPLIT),
        ):
            name = f"nccl-scale-h100-x{nodes}-{part}"
            pts = tuple(
                Point(f"{nodes} nodes, {s >> 20} MiB", m, p, nodes == SCALE_FITTED_NODES)
                for s, m, p in rows
                if keep(s)
            )
            out.append(result(name, pts, src))
    four = {s: (m, p) for s, m, p in curves[4]}
    ratio = tuple(
        Point(f"{s >> 20} MiB, busbw(512)/busbw(4)", m / four[s][0], p / four[s][1], False)
        for s, m, p in curves[512]
        if s in four
    )
    out.append(result("nccl-scale-h100-ratio-512-4", ratio, src))
    return out


#: NVIDIA/nccl#1138 alltoall_perf on 2 nodes of 8 A100 with 4 x 200 Gb/s NICs (reference/nccl_busbw.csv)
ALLTOALL_DATASET = "NVIDIA_nccl1138_alltoall_2node_a100"


def study_nccl_alltoall(_: DeviceOverrides | None = None) -> list[StudyResult]:
    """all_to_all busbw of nccl-tests on 2 DGX-A100-class nodes with 4 NICs each, held out: the
    tuner's all-to-all alone on the network, busbw = algbw·(n−1)/n as nccl-tests reports it."""
    ref = nccl_busbw().query("dataset == @ALLTOALL_DATASET")
    spec = load_system("dgx-a100").spec
    pts = []
    for row in ref.itertuples():
        nics = dataclasses.replace(spec.nics, count=4)  # the reporter's 4 x 200 Gb/s per node
        got = _a2a_busbw(
            dataclasses.replace(spec, nics=nics), int(row.nodes_num), row.msg_bytes_num
        )
        label = f"{int(row.nodes_num)} nodes x 8, {int(row.msg_bytes_num) >> 30} GiB"
        pts.append(Point(label, float(row.busbw_GBps_num), got, False))
    return [result("nccl-alltoall-a100-2node", tuple(pts), str(ref.source.iloc[0]))]


def _a2a_busbw(system: SystemSpec, nodes: int, size: float) -> float:
    """busbw (GB/s) of the tuner's all_to_all of ``size`` bytes alone on the cluster."""
    import simpy

    from scaling.model.comm.flowcoll import FlowCollectives
    from scaling.model.comm.ops import Group, busbw_factor

    fc = FlowCollectives(simpy.Environment(), system, nodes)
    group = Group(nodes, system.devices_per_node)
    op = CollectiveOp.ALL_TO_ALL
    return size * busbw_factor(op, group.size) / fc.predict(op, size, group).time_s / 1e9
