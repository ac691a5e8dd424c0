"""Hardware description used by the simulation: accelerator, node fabric, NICs, scale-out network.

These are plain frozen dataclasses in SI units (FLOP/s, bytes, bytes/s, seconds, watts). They are
built by the io layer from the YAML files in ``topologies/``, where every number carries its
source and confidence; the model layer only sees the values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FabricKind(StrEnum):
    """How the accelerators inside one node are connected (DESIGN §3.2)."""

    SWITCH = "switch"  # NVSwitch-like: one port per device into a non-blocking switch
    FULL_MESH = "full_mesh"  # HCCS-like: one direct link per device pair
    BRIDGE_GROUPS = "bridge_groups"  # MLU-Link-like: cards in groups; PCIe between groups
    PCIE = "pcie"  # no accelerator link: peer traffic crosses PCIe switches / the host


class LinkClass(StrEnum):
    """The kinds of link a collective step can cross; latencies and efficiencies are per class."""

    SCALE_UP = "scale_up"  # NVLink / HCCS / MLU-Link inside a node (or inside a bridge group)
    PCIE = "pcie"  # PCIe between devices of one node (between MLU-Link groups, PCIe-only nodes)
    NETWORK = "network"  # NIC + scale-out fabric between nodes


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One accelerator (the unit that holds one data-parallel rank).

    Attributes:
        name: marketing name.
        peak_flops: dense peak per dtype, FLOP/s (keys like ``"bf16"``, ``"fp16"``, ``"fp32"``).
        matmul_efficiency: achievable fraction of peak for large matmuls (0–1].
        mem_bytes: device memory capacity, bytes.
        mem_bw_Bps: peak memory bandwidth, bytes/s.
        mem_bw_efficiency: achievable fraction of ``mem_bw_Bps`` for streaming kernels (0–1].
        kernel_launch_s: device-side gap per kernel (launch latency, drain of the previous
            kernel), added to every kernel, s.
        compute_units: parallel units that each run one GEMM output tile at a time (NVIDIA SMs,
            MLU cores, Ascend AI cores …): the wave-quantisation scale of the GEMM model.
        sustained_matmul_fraction: GEMM rate inside a training loop relative to the isolated,
            best-shape burst rate (power/clock limits, in-loop losses), (0–1].
        attention_efficiency: fraction of dense peak a fused (flash) attention forward reaches in
            a training loop; the backward runs at a fixed share of it (model.hardware.compute).
        host_launch_s: CPU time to issue one kernel (framework dispatch + driver launch), s; a
            kernel shorter than this leaves the device waiting on the host.
        reserved_mem_bytes: memory the runtime/framework keeps for itself, bytes.
        power_idle_W / power_busy_W: board power when idle / when computing, W.
        price_per_hour: cost of one accelerator for one hour (currency of the catalog, USD).
        can_train: False for inference-only parts; ``cannot_train_reason`` says why.
        sparsity_speedup: GEMM speed-up of the structured-sparsity engine (A100 2:4 sparsity:
            2×); used only when a job asks for sparse training.
        fp8_matmul_efficiency: best-shape fraction of the FP8 peak an FP8 GEMM reaches (0–1], as
            ``matmul_efficiency`` is for 16-bit GEMMs; ``None``: unknown, and a job in ``fp8``
            is refused (model.hardware.precision).
        cudnn_attention_efficiency: as ``attention_efficiency``, for cuDNN's fused attention
            (a job's ``attention_kernel: cudnn``); ``None``: unknown, such a job is refused.
    """

    name: str
    peak_flops: dict[str, float]
    matmul_efficiency: float
    mem_bytes: float
    mem_bw_Bps: float
    mem_bw_efficiency: float
    kernel_launch_s: float
    compute_units: int
    sustained_matmul_fraction: float
    attention_efficiency: float
    host_launch_s: float
    reserved_mem_bytes: float
    power_idle_W: float
    power_busy_W: float
    price_per_hour: float
    can_train: bool = True
    cannot_train_reason: str = ""
    sparsity_speedup: float = 1.0
    fp8_matmul_efficiency: float | None = None
    cudnn_attention_efficiency: float | None = None

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; raises ``KeyError`` naming the dtypes it has."""
        try:
            return self.peak_flops[dtype]
        except KeyError:
            have = ", ".join(sorted(self.peak_flops))
            raise KeyError(
                f"{self.name} has no peak FLOP/s for dtype {dtype!r} (has: {have})"
            ) from None


@dataclass(frozen=True, slots=True)
class FabricSpec:
    """Intra-node accelerator fabric.

    Attributes:
        kind: see :class:`FabricKind`.
        link_bw_Bps: per direction, bytes/s. SWITCH: one device's port into the switch. FULL_MESH:
            one device-pair link. BRIDGE_GROUPS: one device's total scale-up bandwidth inside its
            group. PCIE: one device's PCIe link.
        link_latency_s: hardware latency of one device-to-device hop inside a node, s: through the
            switch (SWITCH), over the direct link (FULL_MESH, BRIDGE_GROUPS inside a group), or
            through the shared PCIe switch (PCIE, two devices under one switch). Added to every
            sequential algorithm step that crosses such a hop (``comm.algos.latency.hop_latency_s``).
        link_efficiency: achievable fraction of ``link_bw_Bps`` (protocol/encoding overheads).
        group_size: BRIDGE_GROUPS: devices per group; PCIE: devices per PCIe switch.
        inter_group_bw_Bps: bandwidth per direction of the path between two groups / PCIe switches
            (through the host), bytes/s.
        pcie_latency_s: hardware latency of one device-to-device hop that crosses PCIe switches
            through the host (BRIDGE_GROUPS between groups, PCIE between switches), s.
        pcie_efficiency: achievable fraction of PCIe bandwidth for peer traffic.
        in_switch_reduction: the switch can reduce in-network (NVLS).
        switch_reduction_Bps: rate at which the switch reduces one device's data (NVLS algbw
            bound: each device's S goes in and the reduced S comes out no faster), bytes/s.
        switch_reduction_latency_s: latency of an in-switch reduction on top of its two
            device-switch steps (NVLS), s.
    """

    kind: FabricKind
    link_bw_Bps: float
    link_latency_s: float
    link_efficiency: float
    group_size: int
    inter_group_bw_Bps: float
    pcie_latency_s: float
    pcie_efficiency: float
    in_switch_reduction: bool = False
    switch_reduction_Bps: float = float("inf")
    switch_reduction_latency_s: float = 0.0


@dataclass(frozen=True, slots=True)
class NicSpec:
    """Scale-out NICs of one node.

    Attributes:
        count: NICs per node.
        bw_Bps: line rate of one NIC per direction, bytes/s.
        latency_s: one-way NIC-to-NIC latency through one (leaf) switch, s: the hardware part of
            every sequential algorithm step that crosses the network.
        efficiency: achievable fraction of line rate (RDMA with GPU/accelerator-direct).
    """

    count: int
    bw_Bps: float
    latency_s: float
    efficiency: float


@dataclass(frozen=True, slots=True)
class ScaleOutSpec:
    """The network between nodes: a two-tier leaf-spine (folded Clos).

    Attributes:
        nodes_per_leaf: nodes whose NICs attach to one leaf switch (one rail when rail-optimized).
        oversubscription: leaf down-link / up-link bandwidth ratio (1.0 = non-blocking).
        rail_optimized: NIC i of every node goes to leaf i of its group (NVIDIA's layout).
        spine_latency_s: extra one-way latency when a path crosses the spine (leaf → spine →
            leaf), s; added to a network step when one of its hops leaves its leaf.
        ecmp: how flows between leaves pick a spine: ``"hash"`` (per-flow hash salted with the
            run seed, collisions included) or ``"ideal"`` (perfectly balanced spine load).
    """

    nodes_per_leaf: int
    oversubscription: float
    rail_optimized: bool
    spine_latency_s: float
    ecmp: str = "hash"


@dataclass(frozen=True, slots=True)
class LibraryProtocol:
    """A wire protocol of a collective library (NCCL: LL, LL128, Simple).

    Attributes:
        name: protocol name.
        call_latency_s: base latency of one call with this protocol, s.
        step_latency_s: the library's (software) part of one sequential algorithm step, by link
            class, s; the hardware part of the hop is the topology's (``hop_latency_s``).
        bw_fraction: share of the link bandwidth that carries data (LL: 4 data bytes per 8).
        max_busbw_Bps: cap on bus bandwidth with this protocol (NCCL's llMaxBw), bytes/s.
    """

    name: str
    call_latency_s: float
    step_latency_s: dict[LinkClass, float]
    bw_fraction: float = 1.0
    max_busbw_Bps: float = float("inf")


@dataclass(frozen=True, slots=True)
class LibraryProfile:
    """What the collective library's maturity changes (NCCL, CNCL, HCCL …).

    Attributes:
        name: library name.
        bw_efficiency: fraction of the link's achievable bandwidth the library reaches, by link
            class (0–1]; the hardware's own achievable fraction is in the fabric / NIC spec.
        channels: rings/trees run concurrently; each may leave the node through a different NIC.
        algorithms: algorithm names the library implements (registered in ``model.comm.algos``).
        tree_bw_factor: tree bandwidth relative to the ring's cut bound (NCCL: 0.92 × 0.9).
        tree_level_latency_s: extra latency of one tree step between nodes (each of the tree's
            ``2·log2(nodes)`` network steps, up and down), on top of the protocol's step latency
            and the hop's hardware latency, s: what a tree level costs at scale beyond a ring
            step (calibrated; 0 where the library file has none).
        compute_interference: fractional slowdown of compute that overlaps communication.
        protocols: wire protocols the tuner chooses among (at least one; a library file without
            a list describes one "simple" protocol with its top-level latencies).
        call_overhead_s: host-side cost of launching one collective, on top of the protocol's
            base latency, s.
        ramp_half_bytes / ramp_exponent: the size-efficiency ramp (:meth:`size_efficiency`).
        algorithm_params: each algorithm's constants from the library file, SI units, by
            algorithm name then key (``"ppn1_net_step_extra_us.LL"`` for a per-protocol one);
            the algorithm declares them (``comm.algos.base.Algorithm.params``).
    """

    name: str
    protocols: tuple[LibraryProtocol, ...]
    bw_efficiency: dict[LinkClass, float]
    channels: int
    algorithms: tuple[str, ...] = ("ring",)
    tree_bw_factor: float = 1.0
    tree_level_latency_s: float = 0.0
    compute_interference: float = 0.0
    call_overhead_s: float = 0.0
    ramp_half_bytes: float = 0.0
    ramp_exponent: float = 1.0
    algorithm_params: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.protocols:
            raise ValueError(f"library {self.name!r} needs at least one protocol")

    def size_efficiency(self, nbytes: float) -> float:
        """Share of the achievable bandwidth reached by a call of ``nbytes`` (0–1]:
        ``1 / (1 + (half/nbytes)^exponent)`` — fewer channels and pipeline fill for mid-size
        messages. 1 when the library has no ramp."""
        if self.ramp_half_bytes <= 0 or nbytes <= 0:
            return 1.0
        return 1.0 / (1.0 + (self.ramp_half_bytes / nbytes) ** self.ramp_exponent)


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """A cluster building block: ``devices_per_node`` accelerators per node, N nodes per job."""

    name: str
    description: str
    device: DeviceSpec
    devices_per_node: int
    fabric: FabricSpec
    nics: NicSpec
    scale_out: ScaleOutSpec
    library: LibraryProfile
    node_power_overhead_W: float = 0.0  # CPUs, NICs, fans per node, W
