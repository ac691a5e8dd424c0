"""Collective-library profiles (``topologies/libraries/*.yaml``): schema and conversion to the
model's :class:`~scaling.model.hardware.system.LibraryProfile`.

A library names the algorithms it has (each registered in :mod:`scaling.model.comm.algos`) and
gives, under ``algorithm_params.<algorithm>``, the constants those algorithms declare
(``Algorithm.params``): an undeclared key, a constant of an algorithm the library does not list,
or a missing required one is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from scaling.io.quantities import (
    AlternativeSchema,
    CountQ,
    Frac0Q,
    FracQ,
    NonNegQ,
    PosQ,
    _check_alternatives,
    _Strict,
)
from scaling.model.comm.algos import algorithm, algorithm_names
from scaling.model.hardware.system import LibraryProfile, LibraryProtocol, LinkClass
from scaling.units import MB, GBps, us

__all__ = ["LibrarySchema", "ProtocolSchema", "to_library_profile"]

#: a constant of ``algorithm_params``: one number, or one per protocol name
ParamValue = NonNegQ | dict[str, NonNegQ]


class ProtocolSchema(_Strict):
    """One wire protocol of a library file (``protocols:``)."""

    name: str
    call_latency_us: NonNegQ
    step_latency_us: dict[LinkClass, NonNegQ]
    bw_fraction: FracQ
    max_busbw_GBps: PosQ | None = None


class LibrarySchema(_Strict):
    """A collective-library file (``topologies/libraries/*.yaml``)."""

    name: str
    version: str = ""
    description: str = ""
    call_latency_us: NonNegQ | None = None
    step_latency_us: dict[LinkClass, NonNegQ] | None = None
    bw_efficiency: dict[LinkClass, FracQ]
    channels: CountQ
    algorithms: list[str] = Field(min_length=1)
    tree_bw_factor: FracQ | None = None
    tree_level_latency_us: NonNegQ | None = None
    compute_interference: Frac0Q
    protocols: list[ProtocolSchema] = Field(default_factory=list)
    call_overhead_us: NonNegQ | None = None
    ramp_half_MB: PosQ | None = None
    ramp_exponent: PosQ | None = None
    # each listed algorithm's constants (comm.algos: Algorithm.params), by algorithm then key
    algorithm_params: dict[str, dict[str, ParamValue]] = Field(default_factory=dict)
    # structural assumptions' alternatives (e.g. algorithms: [ring, tree]); see SystemSchema
    alternatives: list[AlternativeSchema] = Field(default_factory=list)

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, names: list[str]) -> list[str]:
        known = algorithm_names()
        bad = [n for n in names if n not in known]
        if bad:
            raise ValueError(f"algorithms from {', '.join(known)}; got {', '.join(bad)}")
        return names

    @model_validator(mode="after")
    def _algorithm_params(self) -> LibrarySchema:
        protos = {p.name for p in self.protocols} or {"simple"}
        for name, given in self.algorithm_params.items():
            if name not in self.algorithms:
                raise ValueError(
                    f"algorithm_params.{name}: {name} is not in this library's algorithms "
                    f"({', '.join(self.algorithms)}); remove it or list the algorithm"
                )
            declared = algorithm(name).params
            for key, val in given.items():
                spec = declared.get(key)
                if spec is None:
                    have = ", ".join(declared) or "none"
                    raise ValueError(f"algorithm_params.{name}.{key}: {name} declares {have}")
                if spec.per_protocol != isinstance(val, dict):
                    want = "one value per protocol" if spec.per_protocol else "one quantity"
                    raise ValueError(f"algorithm_params.{name}.{key}: expected {want}")
                if isinstance(val, dict) and set(val) != protos:
                    raise ValueError(
                        f"algorithm_params.{name}.{key}: a value for each protocol "
                        f"({', '.join(sorted(protos))}); got {', '.join(sorted(val))}"
                    )
                vals = val.values() if isinstance(val, dict) else [val]
                if spec.integer and any(float(q.value) != int(q.value) for q in vals):
                    raise ValueError(f"algorithm_params.{name}.{key}: a whole number")
        for name in self.algorithms:
            given = self.algorithm_params.get(name, {})
            missing = [
                k for k, sp in algorithm(name).params.items() if sp.required and k not in given
            ]
            if missing:
                raise ValueError(
                    f"algorithm_params.{name} needs {', '.join(missing)} (the algorithm's "
                    "constants, with source and confidence)"
                )
        return self

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


def to_library_profile(lib: LibrarySchema) -> LibraryProfile:
    """Strip provenance and convert to SI units."""
    if lib.protocols:
        protocols = tuple(
            LibraryProtocol(
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
            LibraryProtocol(
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
        algorithm_params={
            name: _si_params(name, given) for name, given in lib.algorithm_params.items()
        },
    )


def _si_params(name: str, given: Mapping[str, Any]) -> dict[str, float]:
    """One algorithm's constants in SI units, a per-protocol one as ``key.protocol``."""
    declared = algorithm(name).params
    out: dict[str, float] = {}
    for key, val in given.items():
        unit = declared[key].unit
        if isinstance(val, dict):
            out.update({f"{key}.{proto}": q.value * unit for proto, q in val.items()})
        else:
            out[key] = val.value * unit
    return out
