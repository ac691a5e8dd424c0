"""No dead knobs: every number of every catalog file changes some result of a small probe.

Each numeric leaf (``value:``) of every topology file and collective-library profile is scaled
(×2, else ×0.5, else +1 within the schema's bounds; a zero becomes a positive value), the system
is rebuilt through the io layer's own validation, and a probe is re-run; the test fails when no
result moved. Probes are tiered, cheapest first, and stop at the first that moves:

1. collectives priced directly (``FlowCollectives.predict`` for every algorithm × protocol the
   library has, all-reduce and all-gather at 1 KiB and 64 MiB, on one node, a sub-node group,
   two nodes and two nodes of one rank; the uncontended ring across two pods of the leaf-spine);
2. a one-step FSDP job (1 node, micro-batch 1) — compute, memory, power and cost metrics;
3. the same job with the dtype or structured sparsity that the field is for.

A library's fields are probed with the library on one system of every fabric kind (NCCL's PCIe
step latencies never occur on an NVSwitch node, but do on a PCIe-only node).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import simpy

from scaling.io.config import experiment_from_dict
from scaling.io.errors import ConfigError, read_yaml, validate
from scaling.io.topology import (
    LibrarySchema,
    SystemSchema,
    bundled_topology_dir,
    to_system_spec,
)
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.comm.uncontended import AnalyticCostModel
from scaling.model.hardware.fabrics import fabric_of
from scaling.model.hardware.system import FabricKind, SystemSpec
from scaling.model.job import Job
from scaling.model.simulation import run_job

#: Deliberate exceptions: (file name, field path) -> why no probe can see the field.
#: ``(file, "*")`` covers every device field of that file.
ALLOWED: dict[tuple[str, str], str] = {
    ("enflame-t20", "node.power_overhead_W"): "power of a node that cannot train (see below)",
    ("enflame-t20", "*"): "can_train: false (inference part, SEED.md Table 2): every training job"
    " is refused before its device is priced; the numbers describe the part in `scaling systems`"
    " and take effect as soon as a user sets can_train: true",
    ("nccl", "algorithm_params.nvls.max_arity"): "NCCL_MAX_NVLS_ARITY (32 local ranks) bounds NVLS"
    " all-gather / reduce-scatter on nodes larger than any catalog node (8 devices at most); it"
    " takes effect on a node of more than 32 devices",
}

TOPO_DIR = bundled_topology_dir()
LIB_DIR = TOPO_DIR / "libraries"
AR = CollectiveOp.ALL_REDUCE
#: one system of each fabric kind, to probe library fields on
KIND_SYSTEMS = {
    FabricKind.SWITCH: "dgx-a100",
    FabricKind.FULL_MESH: "atlas-800t-a2",
    FabricKind.BRIDGE_GROUPS: "mlu370-x8",
    FabricKind.PCIE: "mlu370-s4",
}


# ---- documents ----------------------------------------------------------------------------


@cache
def _raw(path: Path) -> dict[str, Any]:
    return read_yaml(path, "catalog file")[0]


def _leaves(doc: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every numeric ``value`` leaf of a document."""
    out: list[tuple] = []
    if isinstance(doc, dict):
        v = doc.get("value")
        if isinstance(v, int | float) and not isinstance(v, bool):
            return [path]
        for k, sub in doc.items():
            out += _leaves(sub, (*path, k))
    elif isinstance(doc, list):
        for i, sub in enumerate(doc):
            out += _leaves(sub, (*path, i))
    return out


def _get(doc: Any, path: tuple) -> dict[str, Any]:
    for k in path:
        doc = doc[k]
    return doc


def _name(path: tuple) -> str:
    return ".".join(str(k) for k in path)


def _spec(system: dict, library: dict) -> SystemSpec:
    return to_system_spec(
        validate(SystemSchema, system, "<probe>", None),
        validate(LibrarySchema, library, "<probe>", None),
    )


def _perturbed(doc: dict, path: tuple, check) -> list[dict]:
    """Copies of ``doc`` with the leaf scaled, every candidate that validates."""
    v = _get(doc, path)["value"]
    if v == 0:
        cands: list[float] = [1.0, 0.5]
    elif isinstance(v, int):
        cands = [v * 2, max(1, v // 2), v + 1]
    else:
        cands = [v * 2, v * 0.5, v + 1]
    out = []
    for c in dict.fromkeys(cands):  # distinct candidates, in order
        new = copy.deepcopy(doc)
        q = _get(new, path)
        q["value"] = c
        if "low" in q:  # a ranged number: the probe goes beyond its range on purpose
            q["low"], q["high"] = min(q["low"], c), max(q["high"], c)
        try:
            check(new)
        except ConfigError:
            continue
        out.append(new)
    return out


def _library_of(system: dict) -> dict:
    return _raw(LIB_DIR / f"{system['collective_library']}.yaml")


# ---- probes -------------------------------------------------------------------------------


def _comm_probe(spec: SystemSpec) -> tuple[float, ...]:
    g = spec.devices_per_node
    # one rank per node too: PAT and the ring's one-rank-per-node latency exist only there
    groups = [Group(1, g), Group(2, g), Group(2, 1)]
    if fabric_of(spec.fabric.kind).grouped:
        groups.append(Group(1, min(g, spec.fabric.group_size)))  # inside one PCIe switch
    fc = FlowCollectives(simpy.Environment(), spec, 2)
    out: list[float] = []
    for group in groups:
        if group.size < 2:
            continue
        for size in (1024.0, 64 * 2.0**20):
            for algo in spec.library.algorithms:
                for proto in spec.library.protocols:
                    # all-gather: what exists only beside all-reduce (PAT, NVLS's AG rating)
                    for op in (AR, CollectiveOp.ALL_GATHER):
                        try:
                            ch = fc.predict(op, size, group, algo, proto.name)
                        except ValueError:
                            continue
                        out += [ch.time_s, ch.latency_s]
    # all-to-all's own algorithms (p2p, pxn, pairwise) over four nodes: more peers than a
    # library has in flight at once
    fc4 = FlowCollectives(simpy.Environment(), spec, 4)
    for algo in spec.library.algorithms:
        try:
            ch = fc4.predict(CollectiveOp.ALL_TO_ALL, 2.0**20, Group(4, g), algo)
        except ValueError:
            continue
        out += [ch.time_s, ch.latency_s]
    # across two pods of the leaf-spine (nodes_per_leaf, oversubscription, spine latency)
    nodes = _BASE_NODES_PER_LEAF.get(spec.name, spec.scale_out.nodes_per_leaf) + 1
    am = AnalyticCostModel(spec)
    for size in (1024.0, 2.0**30):
        out.append(am.price(AR, size, Group(nodes, g), "ring").time_s)
    return tuple(out)


def _far_probe(spec: SystemSpec) -> tuple[float, ...]:
    """Two full pods, one rank per node, all-to-all: the spine's uplink count matters."""
    nodes = 2 * _BASE_NODES_PER_LEAF.get(spec.name, spec.scale_out.nodes_per_leaf)
    far = FlowCollectives(simpy.Environment(), spec, nodes)
    return (far.predict(CollectiveOp.ALL_TO_ALL, 2.0**30, Group(nodes, 1), "direct").time_s,)


def _lanes_probe(spec: SystemSpec) -> tuple[float, ...]:
    """The same with one communicator per local device (every NIC busy): a leaf that is not
    per rail needs this load before its uplinks bind. Costly (~0.1-2 s), so it runs last."""
    nodes = 2 * _BASE_NODES_PER_LEAF.get(spec.name, spec.scale_out.nodes_per_leaf)
    far = FlowCollectives(simpy.Environment(), spec, nodes)
    group = Group(nodes, 1, lanes=spec.devices_per_node)
    return (far.predict(CollectiveOp.ALL_TO_ALL, 2.0**30, group, "direct").time_s,)


_BASE_NODES_PER_LEAF: dict[str, int] = {}


@cache
def _job() -> Job:
    """FSDP on one node: the cheapest job to simulate, and its all-gathers overlap compute
    (where the library's compute_interference acts)."""
    exp = experiment_from_dict(
        {
            "model": "gpt3-125m",
            "systems": ["dgx-a100"],
            "nodes": [1],
            "strategies": [{"kind": "fsdp"}],
            "training": {"micro_batch_size": 1, "seq_len": 256},
            "simulation": {"steps": 1, "warmup_steps": 0},
        }
    )
    return exp.jobs()[0]


def _job_of(spec: SystemSpec, path: tuple) -> Job:
    """The probe job on ``spec``, in the variant that shows the field at ``path``."""
    job = dataclasses.replace(_job(), system=spec)
    if "peak_TFLOPS" in path:
        dtype = str(path[-1])
        job = dataclasses.replace(job, training=dataclasses.replace(job.training, dtype=dtype))
    if "sparsity_speedup" in path:
        job = dataclasses.replace(job, training=dataclasses.replace(job.training, sparsity=True))
    if "host_launch_us" in path:
        # the host's issue cost shows where kernels are short: a 32-token micro-batch
        job = dataclasses.replace(job, training=dataclasses.replace(job.training, seq_len=32))
    if "fp8_matmul_efficiency" in path:
        job = dataclasses.replace(job, training=dataclasses.replace(job.training, dtype="fp8"))
    if "attention_efficiency" in path or "cudnn_attention_efficiency" in path:
        # 1 x 256 tokens leaves a fast device host-bound (kernels shorter than their launch):
        # the attention kernel's rate shows on a longer sequence
        kernel = "cudnn" if "cudnn_attention_efficiency" in path else "flash"
        job = dataclasses.replace(
            job,
            training=dataclasses.replace(
                job.training, micro_batch=4, seq_len=2048, attention_kernel=kernel
            ),
        )
    return job


def _job_probe(job: Job) -> tuple[float, ...]:
    try:
        r = run_job(job)
    except Exception as e:  # an infeasible job is a result too: it must differ from the base
        return (type(e).__name__, str(e))  # type: ignore[return-value]
    vals = dataclasses.asdict(r) if dataclasses.is_dataclass(r) else vars(r)
    return tuple(v for v in vals.values() if isinstance(v, int | float) and math.isfinite(v))


def _moved(base: SystemSpec, new: SystemSpec, path: tuple, key: str) -> bool:
    """Whether some probe of ``new`` differs from the same probe of ``base`` (cheapest first;
    ``key`` names the base's files, for the cache of base results)."""
    # the collective models never read the device or the node's power: skip their probe there
    device = path[0] == "device" or path[-1] == "power_overhead_W"
    if not device and _comm_probe(new) != _base(("comm", key), lambda: _comm_probe(base)):
        return True
    far = path[0] == "scale_out" or "nics" in path
    if far and _far_probe(new) != _base(("far", key), lambda: _far_probe(base)):
        return True
    variant = _job_of(base, path)
    job_key = ("job", key, type(variant.strategy).__name__, repr(variant.training))
    if _job_probe(_job_of(new, path)) != _base(job_key, lambda: _job_probe(variant)):
        return True
    if path[-1] == "oversubscription":
        return _lanes_probe(new) != _base(("lanes", key), lambda: _lanes_probe(base))
    return False


_BASE: dict[tuple, tuple[float, ...]] = {}


def _base(key: tuple, run) -> tuple[float, ...]:
    """Probe results of an unperturbed system, cached by the names of its files."""
    if key not in _BASE:
        _BASE[key] = run()
    return _BASE[key]


# ---- cases --------------------------------------------------------------------------------


def _topology_cases() -> list[tuple[str, tuple]]:
    return [(p.stem, leaf) for p in sorted(TOPO_DIR.glob("*.yaml")) for leaf in _leaves(_raw(p))]


def _library_cases() -> list[tuple[str, tuple]]:
    return [(p.stem, leaf) for p in sorted(LIB_DIR.glob("*.yaml")) for leaf in _leaves(_raw(p))]


def test_every_topology_number_changes_a_result() -> None:
    dead: list[str] = []
    for name, leaf in _topology_cases():
        system = _raw(TOPO_DIR / f"{name}.yaml")
        lib = _library_of(system)
        base = _spec(system, lib)
        _BASE_NODES_PER_LEAF.setdefault(base.name, base.scale_out.nodes_per_leaf)
        if (name, _name(leaf)) in ALLOWED or ((name, "*") in ALLOWED and leaf[0] == "device"):
            continue
        new_docs = _perturbed(system, leaf, lambda d, lib=lib: _spec(d, lib))
        key = f"{name}|{system['collective_library']}"
        if not any(_moved(base, _spec(d, lib), leaf, key) for d in new_docs):
            dead.append(f"{name}.yaml: {_name(leaf)}")
    assert not dead, "fields that change no result:\n" + "\n".join(dead)


def test_every_library_number_changes_a_result() -> None:
    dead: list[str] = []
    hosts = {k: _raw(TOPO_DIR / f"{n}.yaml") for k, n in KIND_SYSTEMS.items()}
    own_host = {_raw(p)["collective_library"]: _raw(p) for p in sorted(TOPO_DIR.glob("*.yaml"))}
    for name, leaf in _library_cases():
        lib = _raw(LIB_DIR / f"{name}.yaml")
        if (name, _name(leaf)) in ALLOWED:
            continue
        systems = [own_host[name], *hosts.values()] if name in own_host else [*hosts.values()]
        moved = False
        for system in systems:
            new_docs = _perturbed(lib, leaf, lambda d, s=system: _spec(s, d))
            base = _spec(system, lib)
            _BASE_NODES_PER_LEAF.setdefault(base.name, base.scale_out.nodes_per_leaf)
            key = f"{system['name']}|{name}"
            if any(_moved(base, _spec(system, d), leaf, key) for d in new_docs):
                moved = True
                break
        if not moved:
            dead.append(f"libraries/{name}.yaml: {_name(leaf)}")
    assert not dead, "fields that change no result:\n" + "\n".join(dead)


@pytest.mark.parametrize("kind", list(KIND_SYSTEMS))
def test_probe_systems_have_the_kind(kind: FabricKind) -> None:
    # the library probe relies on one host per fabric kind
    assert _raw(TOPO_DIR / f"{KIND_SYSTEMS[kind]}.yaml")["node"]["fabric"]["kind"] == kind.value
