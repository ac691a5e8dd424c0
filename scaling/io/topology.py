"""System catalog: YAML files in ``topologies/`` → validated schemas → model ``SystemSpec``.

Every number in a topology or library file is a *quantity*: ``{value, source, confidence}`` and an
optional ``note``. Confidence is one of ``vendor spec``, ``measured``, ``secondary``,
``assumption`` or ``calibrated``; an assumption must say its reasoning in ``note``. The catalog
keeps this provenance so ``scaling systems`` can show how much to trust each number.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import scaling
from scaling.io.errors import ConfigError, LineMap, read_yaml, validate
from scaling.model.comm.ops import AlgorithmName
from scaling.model.hardware.system import (
    DeviceSpec,
    FabricKind,
    FabricSpec,
    LibraryProfile,
    LinkClass,
    NicSpec,
    Protocol,
    ScaleOutSpec,
    SystemSpec,
)
from scaling.units import GB, MB, TFLOPS, GBps, Gbps, GiB, us

Confidence = Literal["vendor spec", "measured", "secondary", "assumption", "calibrated"]


class _Strict(BaseModel):
    # an infinite or NaN bandwidth, latency or count means nothing: refused (``.inf`` in YAML)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: The largest value of a quantity in its file unit (GB/s, µs, TFLOPS, GB, W, USD): a billion
#: of any of them is beyond every real part, so a larger one is a typo (1e18 GB/s).
MAX_QUANTITY = 1e9
#: The largest count (devices or NICs per node, compute units, nodes per leaf, channels):
#: the network is built per device and NIC, so this bounds a node's size; real parts are <= 132.
MAX_QUANTITY_COUNT = 4096


#: Confidences whose numbers must carry a plausible range (``low``, ``high``): the inputs
#: ``scaling run --uncertainty`` samples and ``scaling sensitivity`` ranks.
RANGED: frozenset[str] = frozenset({"assumption", "secondary"})
#: How a ranged number is drawn between ``low`` and ``high`` (default ``triangular``, its mode at
#: ``value``: the nominal figure is the best guess; ``loguniform`` for a factor-of-several span).
Dist = Literal["uniform", "triangular", "loguniform"]


class _Q(_Strict):
    source: str = Field(min_length=1)
    confidence: Confidence
    note: str = ""
    # plausible bounds of the number, in the file unit (reasoning in ``note``); required for an
    # assumption or a secondary figure, optional otherwise; low == high: not varied
    low: float | None = None
    high: float | None = None
    dist: Dist | None = None

    @model_validator(mode="after")
    def _assumption_has_reason(self) -> _Q:
        if self.confidence == "assumption" and not self.note.strip():
            raise ValueError("an assumption needs a 'note' giving its reasoning")
        return self

    @model_validator(mode="after")
    def _range(self) -> _Q:
        value = float(self.value)  # type: ignore[attr-defined]
        if self.low is None or self.high is None:
            if self.confidence in RANGED:
                raise ValueError(
                    f"a range for this {self.confidence} number: 'low' and 'high' (its "
                    "plausible bounds, the reasoning in 'note')"
                )
            if self.low is not None or self.high is not None or self.dist is not None:
                raise ValueError("both 'low' and 'high', or neither")
            return self
        if not self.low <= value <= self.high:
            raise ValueError(
                f"low <= value <= high; got value {value:g} outside its range "
                f"[low {self.low:g}, high {self.high:g}]"
            )
        if self.dist == "loguniform" and self.low <= 0:
            raise ValueError(f"low > 0 for dist loguniform; got low {self.low:g}")
        for end in (self.low, self.high):  # each bound must be a valid value of this field
            try:
                type(self)(value=end, source="range", confidence="measured")  # type: ignore[call-arg]
            except ValidationError as e:
                why = e.errors()[0]["msg"]
                raise ValueError(
                    f"range bounds that are valid values; got {end:g}: {why}"
                ) from None
        return self


class PosQ(_Q):
    value: Annotated[float, Field(gt=0, le=MAX_QUANTITY)]


class NonNegQ(_Q):
    value: Annotated[float, Field(ge=0, le=MAX_QUANTITY)]


class FracQ(_Q):
    value: Annotated[float, Field(gt=0, le=1)]


class Frac0Q(_Q):
    value: Annotated[float, Field(ge=0, lt=1)]


class CountQ(_Q):
    value: Annotated[int, Field(ge=1, le=MAX_QUANTITY_COUNT)]


class OversubQ(_Q):
    value: Annotated[float, Field(ge=1, le=MAX_QUANTITY)]


class AlternativeSchema(_Strict):
    """A structural assumption's alternative: what the file would say instead (``set``: dotted
    field path → value; a number becomes an ``assumption`` of that value) and why it is
    plausible (``note``). The patched file must validate."""

    name: str = Field(min_length=1, max_length=64)
    note: str = Field(min_length=1)
    set: dict[str, Any] = Field(min_length=1)


def apply_alternative(doc: dict[str, Any], alt: AlternativeSchema, where: str) -> dict[str, Any]:
    """``doc`` (a topology or library dump, not changed) with ``alt``'s fields set; a number is
    written as an ``assumption`` quantity citing the alternative."""
    out = json.loads(json.dumps(doc))
    out.pop("alternatives", None)
    for path, value in alt.set.items():
        keys = path.split(".")
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise ValueError(f"alternatives[{alt.name}] to set fields of {where}; got {path}")
            node = node[k]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = {
                "value": value,
                "source": f"alternative {alt.name!r}",
                "confidence": "assumption",
                "note": alt.note,
                "low": value,
                "high": value,
            }
        node[keys[-1]] = value
    return out


def _check_alternatives(doc: BaseModel, alts: list[AlternativeSchema]) -> None:
    names = [a.name for a in alts]
    if len(set(names)) != len(names):
        raise ValueError(f"unique alternative names; got {names}")
    base = doc.model_dump(mode="json", exclude={"alternatives"})
    for a in alts:
        patched = apply_alternative(base, a, type(doc).__name__)
        try:
            type(doc).model_validate(patched)
        except ValidationError as e:
            err = e.errors()[0]
            at = ".".join(str(x) for x in err["loc"])
            raise ValueError(
                f"alternatives[{a.name}] to give a valid file; {at}: {err['msg']}"
            ) from None


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
        grouped = f.kind in (FabricKind.BRIDGE_GROUPS, FabricKind.PCIE)
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
    alternatives: list[AlternativeSchema] = []

    @model_validator(mode="after")
    def _alternatives_valid(self) -> SystemSchema:
        _check_alternatives(self, self.alternatives)
        return self


class ProtocolSchema(_Strict):
    name: str
    call_latency_us: NonNegQ
    step_latency_us: dict[LinkClass, NonNegQ]
    bw_fraction: FracQ
    max_busbw_GBps: PosQ | None = None


class LibrarySchema(_Strict):
    name: str
    version: str = ""
    description: str = ""
    call_latency_us: NonNegQ | None = None
    step_latency_us: dict[LinkClass, NonNegQ] | None = None
    bw_efficiency: dict[LinkClass, FracQ]
    channels: CountQ
    algorithms: list[AlgorithmName] = Field(min_length=1)
    tree_bw_factor: FracQ | None = None
    tree_level_latency_us: NonNegQ | None = None
    compute_interference: Frac0Q
    protocols: list[ProtocolSchema] = []
    call_overhead_us: NonNegQ | None = None
    ramp_half_MB: PosQ | None = None
    ramp_exponent: PosQ | None = None
    # structural assumptions' alternatives (e.g. algorithms: [ring, tree]); see SystemSchema
    alternatives: list[AlternativeSchema] = []

    @model_validator(mode="after")
    def _alternatives_valid(self) -> LibrarySchema:
        _check_alternatives(self, self.alternatives)
        return self

    @model_validator(mode="after")
    def _tree_factor(self) -> LibrarySchema:
        if "tree" in self.algorithms and self.tree_bw_factor is None:
            raise ValueError("a library with the 'tree' algorithm needs tree_bw_factor")
        if "tree" not in self.algorithms and self.tree_level_latency_us is not None:
            raise ValueError("tree_level_latency_us is for the 'tree' algorithm; remove it")
        return self

    @model_validator(mode="after")
    def _latencies_once(self) -> LibrarySchema:
        # One place for the latencies: the protocols' own, or (no protocols) the top level's.
        top = [f for f in ("call_latency_us", "step_latency_us") if getattr(self, f) is not None]
        if self.protocols and top:
            raise ValueError(
                f"{' and '.join(top)} would be ignored: with protocols, each protocol carries its "
                "own call and step latencies; remove the top-level ones"
            )
        if not self.protocols and len(top) < 2:
            raise ValueError(
                "a library without protocols needs call_latency_us and step_latency_us"
            )
        return self

    @model_validator(mode="after")
    def _all_classes(self) -> LibrarySchema:
        tables: list[tuple[str, Mapping[LinkClass, Any]]] = [("bw_efficiency", self.bw_efficiency)]
        if self.step_latency_us is not None:
            tables.append(("step_latency_us", self.step_latency_us))
        tables += [
            (f"protocols[{p.name}].step_latency_us", p.step_latency_us) for p in self.protocols
        ]
        for fld, table in tables:
            missing = [c.value for c in LinkClass if c not in table]
            if missing:
                raise ValueError(f"{fld} needs an entry for every link class; missing {missing}")
        return self


# ---- catalog -------------------------------------------------------------------------------


def bundled_topology_dir() -> Path:
    """The catalog shipped with the package (wheel) or the source checkout's ``topologies/``."""
    pkg = Path(scaling.__file__).resolve().parent
    wheel = pkg / "_topologies"
    return wheel if wheel.is_dir() else pkg.parent / "topologies"


def search_dirs(extra: list[Path] | None = None) -> list[Path]:
    """Where system names are looked up: ``extra`` dirs, ``$SCALING_TOPOLOGY_PATH``, bundled."""
    dirs = list(extra or [])
    env = os.environ.get("SCALING_TOPOLOGY_PATH", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(bundled_topology_dir())
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def available_systems(extra: list[Path] | None = None) -> list[str]:
    """Names of every system file found on the search path."""
    names: set[str] = set()
    for d in search_dirs(extra):
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


@dataclass(frozen=True)
class LoadedSystem:
    """A system with its validated source documents, their paths and a content hash."""

    spec: SystemSpec
    schema: SystemSchema
    library: LibrarySchema
    path: Path
    library_path: Path
    content_hash: str


def _find(name: str, kind: str, extra: list[Path] | None, sub: str = "") -> Path:
    is_path = name.endswith((".yaml", ".yml")) or os.sep in name
    if not 0 < len(name) <= (4096 if is_path else 255):
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise ConfigError(
            f"{kind} {shown!r}: a name of {len(name)} characters; expected a catalog name of "
            "1-255 characters or a path of at most 4,096"
        )
    if is_path:
        return Path(name)
    for d in search_dirs(extra):
        cand = d / sub / f"{name}.yaml" if sub else d / f"{name}.yaml"
        try:
            if cand.is_file():
                return cand
        except OSError:  # a name the file system cannot hold: not in this folder
            continue
    known = sorted(
        {p.stem for d in search_dirs(extra) for p in (d / sub if sub else d).glob("*.yaml")}
    )
    raise ConfigError(f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}")


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


def to_library_profile(lib: LibrarySchema) -> LibraryProfile:
    """Strip provenance and convert to SI units."""
    if lib.protocols:
        protocols = tuple(
            Protocol(
                name=p.name,
                call_latency_s=p.call_latency_us.value * us,
                step_latency_s={c: q.value * us for c, q in p.step_latency_us.items()},
                bw_fraction=p.bw_fraction.value,
                max_busbw_Bps=p.max_busbw_GBps.value * GBps if p.max_busbw_GBps else float("inf"),
            )
            for p in lib.protocols
        )
    else:
        assert lib.call_latency_us is not None and lib.step_latency_us is not None  # validated
        protocols = (
            Protocol(
                "simple",
                lib.call_latency_us.value * us,
                {c: q.value * us for c, q in lib.step_latency_us.items()},
            ),
        )
    return LibraryProfile(
        name=lib.name,
        protocols=protocols,
        bw_efficiency={c: q.value for c, q in lib.bw_efficiency.items()},
        channels=lib.channels.value,
        algorithms=tuple(lib.algorithms),
        tree_bw_factor=lib.tree_bw_factor.value if lib.tree_bw_factor else 1.0,
        tree_level_latency_s=(
            lib.tree_level_latency_us.value * us if lib.tree_level_latency_us else 0.0
        ),
        call_overhead_s=lib.call_overhead_us.value * us if lib.call_overhead_us else 0.0,
        ramp_half_bytes=lib.ramp_half_MB.value * MB if lib.ramp_half_MB else 0.0,
        ramp_exponent=lib.ramp_exponent.value if lib.ramp_exponent else 1.0,
        compute_interference=lib.compute_interference.value,
    )


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


def quantities(doc: BaseModel, prefix: str = "") -> list[tuple[str, float, str, str, str]]:
    """Flatten a validated document into (field path, value, confidence, source, note) rows."""
    rows: list[tuple[str, float, str, str, str]] = []
    for name in type(doc).model_fields:
        val = getattr(doc, name)
        path = f"{prefix}{name}"
        if isinstance(val, _Q):
            rows.append((path, val.value, val.confidence, val.source, val.note))  # type: ignore[attr-defined]
        elif isinstance(val, BaseModel):
            rows += quantities(val, path + ".")
        elif isinstance(val, dict):
            for k, v in val.items():
                if isinstance(v, _Q):
                    key = k.value if hasattr(k, "value") else k
                    rows.append((f"{path}.{key}", v.value, v.confidence, v.source, v.note))  # type: ignore[attr-defined]
        elif isinstance(val, list):
            for i, item in enumerate(val):
                if isinstance(item, BaseModel):
                    rows += quantities(item, f"{path}[{i}].")
    return rows


def ranged_quantities(doc: BaseModel, prefix: str = "") -> list[tuple[str, _Q]]:
    """Every quantity of a validated document that carries a range, as (field path, quantity);
    paths as :func:`quantities` writes them (``protocols[0].step_latency_us.network``)."""
    rows: list[tuple[str, _Q]] = []
    for name in type(doc).model_fields:
        val = getattr(doc, name)
        path = f"{prefix}{name}"
        if isinstance(val, _Q):
            if val.low is not None:
                rows.append((path, val))
        elif isinstance(val, BaseModel):
            rows += ranged_quantities(val, path + ".")
        elif isinstance(val, dict):
            for k, v in val.items():
                if isinstance(v, _Q) and v.low is not None:
                    rows.append((f"{path}.{k.value if hasattr(k, 'value') else k}", v))
        elif isinstance(val, list):
            for i, item in enumerate(val):
                if isinstance(item, BaseModel) and not isinstance(item, AlternativeSchema):
                    rows += ranged_quantities(item, f"{path}[{i}].")
    return rows


__all__ = [
    "AlternativeSchema",
    "LineMap",
    "LoadedSystem",
    "available_systems",
    "bundled_topology_dir",
    "load_library",
    "load_system",
    "quantities",
    "ranged_quantities",
]
