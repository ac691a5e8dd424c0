"""The free parameters of a collective library profile that a benchmark table can fit.

Each is a field of the library file (``topologies/libraries/*.yaml``) with its unit, fitting
bounds and the measurement that pins it down. Latencies of a library with several wire protocols
(NCCL's LL, LL128, Simple) are fitted as one shift applied to every protocol (a table of one
collective cannot tell the protocols' constants apart); the value reported is the first
protocol's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from scaling.model.hardware.system import LibraryProfile, LinkClass
from scaling.units import us

#: Widest latency (file unit, µs) a fit may reach beyond the profile's value: a per-call or per-step
#: latency of milliseconds would be a host/socket path, not the library's (CNCL's slowest
#: documented example, the 2-MLU host path, runs 19 ms per 25 M-element call: bandwidth-bound).
MAX_LATENCY_SHIFT_US = 1000.0
#: Lowest bandwidth efficiency a fit may reach: below 5 % of the link's rate the table measures
#: another path (host copies, TCP) than the topology describes.
MIN_FRACTION = 0.05


@dataclass(frozen=True)
class Param:
    """One fittable field of a library profile.

    Attributes:
        path: its field path in the library file (``step_latency_us.network``).
        unit: what the file's number is in (``us`` or ``fraction``).
        lo, hi: bounds of the fit, file unit.
        scale: a typical magnitude (file unit): an interval wider than the value or this scale
            is not an identification.
        read: the profile's value, file unit.
        write: the profile with the value set (file unit).
        hint: the measurement that would identify it.
    """

    path: str
    unit: str
    lo: float
    hi: float
    scale: float
    read: Callable[[LibraryProfile], float]
    write: Callable[[LibraryProfile, float], LibraryProfile]
    hint: str


def _call_read(lib: LibraryProfile) -> float:
    return lib.protocols[0].call_latency_s / us


def _call_write(lib: LibraryProfile, v: float) -> LibraryProfile:
    d = v * us - lib.protocols[0].call_latency_s
    protos = tuple(
        dataclasses.replace(p, call_latency_s=max(p.call_latency_s + d, 0.0)) for p in lib.protocols
    )
    return dataclasses.replace(lib, protocols=protos)


def _step_read(cls: LinkClass) -> Callable[[LibraryProfile], float]:
    return lambda lib: lib.protocols[0].step_latency_s[cls] / us


def _step_write(cls: LinkClass) -> Callable[[LibraryProfile, float], LibraryProfile]:
    def write(lib: LibraryProfile, v: float) -> LibraryProfile:
        d = v * us - lib.protocols[0].step_latency_s[cls]
        protos = tuple(
            dataclasses.replace(
                p, step_latency_s={**p.step_latency_s, cls: max(p.step_latency_s[cls] + d, 0.0)}
            )
            for p in lib.protocols
        )
        return dataclasses.replace(lib, protocols=protos)

    return write


def _eff_read(cls: LinkClass) -> Callable[[LibraryProfile], float]:
    return lambda lib: lib.bw_efficiency[cls]


def _eff_write(cls: LinkClass) -> Callable[[LibraryProfile, float], LibraryProfile]:
    return lambda lib, v: dataclasses.replace(lib, bw_efficiency={**lib.bw_efficiency, cls: v})


_STEP_HINT = {
    LinkClass.SCALE_UP: "small sizes (<= 64 KiB) on one node at two device counts (--per-node)",
    LinkClass.PCIE: "small sizes (<= 64 KiB) on one node across its PCIe/MLU-Link groups",
    LinkClass.NETWORK: "small sizes (<= 64 KiB) at two or more node counts",
}
_EFF_HINT = {
    LinkClass.SCALE_UP: "large sizes (>= 256 MiB) on one node",
    LinkClass.PCIE: "large sizes (>= 256 MiB) on one node across its PCIe/MLU-Link groups",
    LinkClass.NETWORK: "large sizes (>= 256 MiB) on two or more nodes",
}


def free_params(lib: LibraryProfile) -> list[Param]:
    """The profile's fittable parameters: per-call latency, per-step latency and bandwidth
    efficiency per link class, and (a library with the tree) the tree's bandwidth factor and
    level latency."""
    lo_call = _call_read(lib) - min(p.call_latency_s for p in lib.protocols) / us
    out = [
        Param(
            "call_latency_us",
            "us",
            lo_call,
            _call_read(lib) + MAX_LATENCY_SHIFT_US,
            max(_call_read(lib), 5.0),
            _call_read,
            _call_write,
            "small sizes (<= 64 KiB) at two or more node counts (the per-call and per-step "
            "latencies separate only where the step count changes)",
        )
    ]
    for cls in LinkClass:
        read = _step_read(cls)
        lo = read(lib) - min(p.step_latency_s[cls] for p in lib.protocols) / us
        out.append(
            Param(
                f"step_latency_us.{cls.value}",
                "us",
                lo,
                read(lib) + MAX_LATENCY_SHIFT_US,
                max(read(lib), 2.0),
                read,
                _step_write(cls),
                _STEP_HINT[cls],
            )
        )
    for cls in LinkClass:
        out.append(
            Param(
                f"bw_efficiency.{cls.value}",
                "fraction",
                MIN_FRACTION,
                1.0,
                0.2,
                _eff_read(cls),
                _eff_write(cls),
                _EFF_HINT[cls],
            )
        )
    if "tree" in lib.algorithms:
        out += [
            Param(
                "tree_bw_factor",
                "fraction",
                MIN_FRACTION,
                1.0,
                0.2,
                lambda lib: lib.tree_bw_factor,
                lambda lib, v: dataclasses.replace(lib, tree_bw_factor=v),
                "large all_reduce sizes (>= 256 MiB) at a node count where the tree is chosen",
            ),
            Param(
                "tree_level_latency_us",
                "us",
                0.0,
                lib.tree_level_latency_s / us + MAX_LATENCY_SHIFT_US,
                max(lib.tree_level_latency_s / us, 5.0),
                lambda lib: lib.tree_level_latency_s / us,
                lambda lib, v: dataclasses.replace(lib, tree_level_latency_s=v * us),
                "mid all_reduce sizes (1-64 MiB) at two node counts >= 4 (the tree's depth "
                "changes)",
            ),
        ]
    return out
