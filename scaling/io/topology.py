"""System catalog: YAML files in ``topologies/`` → validated schemas → model ``SystemSpec``.

Every number in a topology or library file is a *quantity*: ``{value, source, confidence}`` and an
optional ``note``. Confidence is one of ``vendor spec``, ``measured``, ``secondary``,
``assumption`` or ``calibrated``; an assumption must say its reasoning in ``note``. The catalog
keeps this provenance so ``scaling systems`` can show how much to trust each number.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from scaling.io.catalog_files import available_systems, bundled_topology_dir, search_dirs
from scaling.io.catalog_files import find_file as _find
from scaling.io.errors import ConfigError, LineMap, read_yaml, validate
from scaling.io.library import LibrarySchema, ProtocolSchema, to_library_profile
from scaling.io.quantities import (
    RANGED,
    AlternativeSchema,
    CountQ,
    FracQ,
    NonNegQ,
    OversubQ,
    PosQ,
    _check_alternatives,
    _Strict,
    apply_alternative,
    quantities,
    ranged_quantities,
)
from scaling.model.hardware.fabrics import fabric_of
from scaling.model.hardware.system import (
    DeviceSpec,
    FabricKind,
    FabricSpec,
    NicSpec,
    ScaleOutSpec,
    SystemSpec,
)
from scaling.units import GB, TFLOPS, GBps, Gbps, GiB, us


class DeviceSchema(_Strict):
    name: str
    peak_TFLOPS: dict[Literal["fp32", "tf32", "bf16", "fp16", "fp8"], PosQ] = Field(min_length=1)
    matmul_efficiency: FracQ
    mem_GB: PosQ
    mem_bw_GBps: PosQ
    mem_bw_efficiency: FracQ
    kernel_launch_us: NonNegQ
    # compute-model facts of this device (model.hardware.compute); required so that no device
    # inherits another's unit count or calibration silently
    compute_units: CountQ
    sustained_matmul_fraction: FracQ
    attention_efficiency: FracQ
    host_launch_us: NonNegQ
    reserved_mem_GiB: NonNegQ
    power_idle_W: PosQ
    power_busy_W: PosQ
    price_per_hour_USD: PosQ
    can_train: bool = True
    cannot_train_reason: str = ""
    sparsity_speedup: OversubQ | None = None
    # best-shape FP8 GEMM fraction of the fp8 peak (model.hardware.precision); without it a job
    # in fp8 is refused on this device
    fp8_matmul_efficiency: FracQ | None = None
    # cuDNN fused attention's forward fraction of the 16-bit peak in a training loop
    # (model.hardware.compute); without it a job with attention_kernel cudnn is refused
    cudnn_attention_efficiency: FracQ | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_optional(self, handler: Any) -> Any:
        # the optional compute facts are left out of dumps when a device does not give them, so
        # that the config hashes of the systems without them stay what they were
        d = handler(self)
        if isinstance(d, dict):
            for k in ("fp8_matmul_efficiency", "cudnn_attention_efficiency"):
                if d.get(k) is None:
                    d.pop(k, None)
        return d


class FabricSchema(_Strict):
    kind: FabricKind
    link_bw_GBps: PosQ
    link_latency_us: NonNegQ
    link_efficiency: FracQ
    group_size: CountQ | None = None
    inter_group_bw_GBps: PosQ | None = None
    pcie_latency_us: NonNegQ | None = None
    pcie_efficiency: FracQ | None = None
    in_switch_reduction: bool = False
    # the switch's reduction rate per device (NVLS: what one GPU's reduced traffic reaches)
    switch_reduction_GBps: PosQ | None = None
    # what an in-switch reduction costs beyond its two NVLink steps (NVLS latency)
    switch_reduction_latency_us: NonNegQ | None = None

    @model_validator(mode="after")
    def _reduction_rate(self) -> FabricSchema:
        if self.in_switch_reduction and self.switch_reduction_GBps is None:
            raise ValueError("in_switch_reduction: true needs fabric.switch_reduction_GBps")
        for fld in ("switch_reduction_GBps", "switch_reduction_latency_us"):
            if not self.in_switch_reduction and getattr(self, fld) is not None:
                raise ValueError(f"fabric.{fld} needs in_switch_reduction: true")
        return self


class NicSchema(_Strict):
    count: CountQ
    rate_Gbps: PosQ
    latency_us: NonNegQ
    efficiency: FracQ


class NodeSchema(_Strict):
    devices: CountQ
    fabric: FabricSchema
    nics: NicSchema
    power_overhead_W: NonNegQ

    @model_validator(mode="after")
    def _groups(self) -> NodeSchema:
        f = self.fabric
        grouped = fabric_of(f.kind).grouped
        for fld in ("group_size", "inter_group_bw_GBps", "pcie_latency_us", "pcie_efficiency"):
            if grouped and getattr(f, fld) is None:
                raise ValueError(f"fabric kind {f.kind.value!r} needs fabric.{fld}")
            if not grouped and getattr(f, fld) is not None:
                # no link of a switch / full-mesh node is a PCIe peer path: it would be ignored
                raise ValueError(
                    f"fabric kind {f.kind.value!r} has no PCIe groups; remove fabric.{fld}"
                )
        return self


class ScaleOutSchema(_Strict):
    nodes_per_leaf: CountQ
    oversubscription: OversubQ
    rail_optimized: bool
    spine_latency_us: NonNegQ
    # hash: per-flow ECMP salted with the run seed; ideal: perfectly balanced spine load
    ecmp: Literal["hash", "ideal"] = "hash"


class SystemSchema(_Strict):
    name: str
    description: str
    device: DeviceSchema
    node: NodeSchema
    scale_out: ScaleOutSchema
    collective_library: str
    # structural assumptions' alternatives (e.g. scale_out.ecmp: ideal), for the uncertainty and
    # sensitivity commands; never part of the nominal result
    alternatives: list[AlternativeSchema] = Field(default_factory=list)

    @model_validator(mode="after")
    def _alternatives_valid(self) -> SystemSchema:
        _check_alternatives(self, self.alternatives)
        return self


# ---- catalog -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedSystem:
    """A system with its validated source documents, their paths and a content hash."""

    spec: SystemSpec
    schema: SystemSchema
    library: LibrarySchema
    path: Path
    library_path: Path
    content_hash: str


def _canon_hash(*docs: dict[str, Any]) -> str:
    blob = json.dumps(docs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_library(name: str, extra: list[Path] | None = None) -> tuple[LibrarySchema, Path, dict]:
    """Load and validate a collective-library profile by name or path."""
    path = _find(name, "collective library", extra, sub="libraries")
    data, lines = read_yaml(path, "collective library")
    return validate(LibrarySchema, data, str(path), lines), path, data


def load_system(name: str, extra: list[Path] | None = None) -> LoadedSystem:
    """Load a system by catalog name (``dgx-a100``) or by path to a YAML file."""
    path = _find(name, "system", extra)
    data, lines = read_yaml(path, "topology")
    schema: SystemSchema = validate(SystemSchema, data, str(path), lines)
    lib_dirs = [path.parent, *(extra or [])]
    try:
        lib, lib_path, lib_data = load_library(schema.collective_library, lib_dirs)
    except ConfigError as e:
        if not str(e).startswith(("unknown collective library", "collective library")):
            raise  # an error inside the library file names that file
        line = lines.line_of(("collective_library",))
        raise ConfigError(f"{path}:{line}: collective_library: {e}") from None
    return LoadedSystem(
        to_system_spec(schema, lib), schema, lib, path, lib_path, _canon_hash(data, lib_data)
    )


def system_from_dict(
    name: str, data: Mapping[str, Any], extra: list[Path] | None = None
) -> LoadedSystem:
    """A system defined in memory (the same document as a ``topologies/*.yaml`` file, validated
    by the same schema): ``name`` is how experiments refer to it; the document's own ``name``,
    when given, must equal it. ``collective_library`` is a catalog name or a path. Every
    failure is a one-line :class:`ConfigError` naming ``systems[name]`` and the field."""
    where = f"systems[{name!r}]"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping (a topology document); got {data!r:.60}")
    doc = json.loads(json.dumps(dict(data), default=str))  # a copy: the caller's dict is kept
    given = doc.setdefault("name", name)
    if given != name:
        raise ConfigError(f"{where}: name: got {given!r}; expected {name!r} (the key it is under)")
    schema: SystemSchema = validate(SystemSchema, doc, where, None)
    try:
        lib, lib_path, lib_data = load_library(schema.collective_library, extra)
    except ConfigError as e:
        if not str(e).startswith(("unknown collective library", "collective library")):
            raise  # an error inside the library file names that file
        raise ConfigError(f"{where}: collective_library: {e}") from None
    return LoadedSystem(
        to_system_spec(schema, lib), schema, lib, Path(where), lib_path, _canon_hash(doc, lib_data)
    )


def system_document(name: str) -> dict[str, Any]:
    """The topology document of catalog system ``name`` (or a YAML path) as a fresh mapping,
    provenance included: a starting point to edit and pass back as an in-memory system."""
    path = _find(name, "system", None)
    data, _ = read_yaml(path, "topology")
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return out


def to_system_spec(s: SystemSchema, lib: LibrarySchema) -> SystemSpec:
    """Strip provenance and convert to the model layer's SI dataclasses."""
    d, n, f = s.device, s.node, s.node.fabric
    dev = DeviceSpec(
        name=d.name,
        peak_flops={k: q.value * TFLOPS for k, q in d.peak_TFLOPS.items()},
        matmul_efficiency=d.matmul_efficiency.value,
        mem_bytes=d.mem_GB.value * GB,
        mem_bw_Bps=d.mem_bw_GBps.value * GBps,
        mem_bw_efficiency=d.mem_bw_efficiency.value,
        kernel_launch_s=d.kernel_launch_us.value * us,
        compute_units=d.compute_units.value,
        sustained_matmul_fraction=d.sustained_matmul_fraction.value,
        attention_efficiency=d.attention_efficiency.value,
        host_launch_s=d.host_launch_us.value * us,
        reserved_mem_bytes=d.reserved_mem_GiB.value * GiB,
        power_idle_W=d.power_idle_W.value,
        power_busy_W=d.power_busy_W.value,
        price_per_hour=d.price_per_hour_USD.value,
        can_train=d.can_train,
        cannot_train_reason=d.cannot_train_reason,
        sparsity_speedup=d.sparsity_speedup.value if d.sparsity_speedup else 1.0,
        fp8_matmul_efficiency=(d.fp8_matmul_efficiency.value if d.fp8_matmul_efficiency else None),
        cudnn_attention_efficiency=(
            d.cudnn_attention_efficiency.value if d.cudnn_attention_efficiency else None
        ),
    )
    devices = n.devices.value
    fabric = FabricSpec(
        kind=f.kind,
        link_bw_Bps=f.link_bw_GBps.value * GBps,
        link_latency_s=f.link_latency_us.value * us,
        link_efficiency=f.link_efficiency.value,
        group_size=f.group_size.value if f.group_size else devices,
        inter_group_bw_Bps=(f.inter_group_bw_GBps.value * GBps) if f.inter_group_bw_GBps else 0.0,
        pcie_latency_s=(f.pcie_latency_us.value * us) if f.pcie_latency_us else 0.0,
        pcie_efficiency=f.pcie_efficiency.value if f.pcie_efficiency else 1.0,
        in_switch_reduction=f.in_switch_reduction,
        switch_reduction_Bps=(
            f.switch_reduction_GBps.value * GBps if f.switch_reduction_GBps else float("inf")
        ),
        switch_reduction_latency_s=(
            f.switch_reduction_latency_us.value * us if f.switch_reduction_latency_us else 0.0
        ),
    )
    nics = NicSpec(
        n.nics.count.value,
        n.nics.rate_Gbps.value * Gbps,
        n.nics.latency_us.value * us,
        n.nics.efficiency.value,
    )
    so = s.scale_out
    scale_out = ScaleOutSpec(
        nodes_per_leaf=so.nodes_per_leaf.value,
        oversubscription=so.oversubscription.value,
        rail_optimized=so.rail_optimized,
        spine_latency_s=so.spine_latency_us.value * us,
        ecmp=so.ecmp,
    )
    return SystemSpec(
        name=s.name,
        description=s.description,
        device=dev,
        devices_per_node=devices,
        fabric=fabric,
        nics=nics,
        scale_out=scale_out,
        library=to_library_profile(lib),
        node_power_overhead_W=n.power_overhead_W.value,
    )


__all__ = [
    "RANGED",
    "AlternativeSchema",
    "LibrarySchema",
    "LineMap",
    "LoadedSystem",
    "ProtocolSchema",
    "apply_alternative",
    "available_systems",
    "bundled_topology_dir",
    "load_library",
    "load_system",
    "quantities",
    "ranged_quantities",
    "search_dirs",
    "system_document",
    "system_from_dict",
    "to_library_profile",
]
