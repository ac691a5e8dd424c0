"""What a job's simulation reads: :func:`read_view`, the job with every input its simulation
never reads set to a fixed value, so that two jobs that differ only there compare equal (the
sweep layer's memo key, ``scaling.sweep.batch.job_key``: a sampled input that cannot reach a
job is then not simulated again; issue 29). The view is a key only: the original job is what
runs.

Each rule below says which fields it drops, why the model never reads them for such a job
(the model code that makes it so), and tests/test_read_view.py (with
tests/test_sweep_loops.py) simulates every topology with each dropped field moved and
checks that the results are bitwise equal and the key too, so a model change that starts
reading one of them fails there. Add a rule here, with its reason and a perturbation in that
test, never a copy of one elsewhere.

Rules:

1. *Dense peaks of other dtypes.* ``DeviceSpec.peak_flops`` is read (``DeviceSpec.peak``)
   only for the job's compute dtype and its activation dtype (``ComputeModel``, the MFU
   metric, the replay strategy); the other dtypes' values are dropped, their keys kept (the
   feasibility check reads which dtypes exist).
2. *Sparsity speed-up of a dense job.* ``DeviceSpec.sparsity_speedup`` is read only by
   ``ComputeModel`` for a job with ``training.sparsity``.
3. *A one-node job's network numbers.* With ``nodes == 1`` no transfer leaves the node:
   ``ClusterNetwork`` builds NIC links only for ``nodes > 1`` and leaf/spine links only for
   more than one leaf (none at one node), and routes between nodes are the only readers of
   the leaf-spine shape and the ECMP mode; ``hop_latency_s`` prices the network hop only for a
   group over more than one node; every schedule charges a group inside one node no network
   steps (``ring_steps_per_pass``: ``nodes - 1``; trees ``2·log2(nodes)``; …), so the
   protocols' network step latency and the library's ``tree_level_latency_s`` (both
   multiplied by that step count) add an exact ``0.0``. Dropped: the NICs' bandwidth,
   latency and efficiency, the leaf-spine's nodes per leaf, oversubscription, spine latency
   and ECMP mode, the library's network bandwidth efficiency, each protocol's network step
   latency and the tree level latency. Kept, because a one-node run reads them:
   ``nics.count`` (the planner cuts each channel's walk inside the node so that the
   channels' exits spread over the NICs, ``Planner._build_walks``; the degraded-NIC draw of
   ``model.variability.layout`` counts NICs) and ``scale_out.rail_optimized`` (direct-link
   fabrics walk only strides below half the ring when odd nodes walk backwards,
   ``Planner.mesh_strides``). ``node_power_overhead_W`` is not a network number: it changes
   the energy of any run.
4. *Constants of algorithms the job never calls.* ``algorithm_params[a]`` is read only by
   algorithm ``a``'s hooks (``Algorithm.param``), and those run only on a schedule of an
   operation ``a`` implements (``Planner.build`` refuses the others before ``schedule``; the
   tuner prices only algorithms with a schedule). A job calls only the operations its
   strategy declares (``Strategy.collective_ops``), so the constants of an algorithm whose
   ``ops`` share none of them are dropped: CNCL's ``p2p.peers_in_flight`` (all-to-all) for a
   DDP or FSDP job.
"""

from __future__ import annotations

import dataclasses

from scaling.model.comm.algos import algorithm, algorithm_names
from scaling.model.comm.ops import CollectiveOp
from scaling.model.hardware.precision import activation_dtype
from scaling.model.hardware.system import (
    DeviceSpec,
    LibraryProfile,
    LinkClass,
    SystemSpec,
)
from scaling.model.job import Job

_NET = LinkClass.NETWORK


def read_view(job: Job) -> Job:
    """``job`` with the inputs its simulation never reads (the module's rules) set to fixed
    values; ``job`` itself where no rule applies. A key, never a job to run."""
    system = job.system
    view = dataclasses.replace(
        system,
        device=_device_view(job, system.device),
        library=_params_view(system.library, job.strategy.collective_ops),
    )
    if job.nodes == 1:
        view = _one_node_view(view)
    if view == system:
        return job
    return dataclasses.replace(job, system=view)


def _device_view(job: Job, dev: DeviceSpec) -> DeviceSpec:
    """Rules 1 and 2: the peaks of the dtypes the job computes in, the sparsity speed-up of a
    sparse job; the rest zero / 1."""
    used = {job.training.dtype, activation_dtype(job.training.dtype)}
    peaks = {k: (v if k in used else 0.0) for k, v in dev.peak_flops.items()}
    speedup = dev.sparsity_speedup if job.training.sparsity else 1.0
    if peaks == dev.peak_flops and speedup == dev.sparsity_speedup:
        return dev
    return dataclasses.replace(dev, peak_flops=peaks, sparsity_speedup=speedup)


def _params_view(lib: LibraryProfile, issued: frozenset[CollectiveOp]) -> LibraryProfile:
    """Rule 4: ``lib`` without the constants of the algorithms that implement none of the
    ``issued`` operations (an unregistered name's stay: nothing is known of it)."""
    known = set(algorithm_names())
    kept = {
        name: params
        for name, params in lib.algorithm_params.items()
        if name not in known or algorithm(name).ops & issued
    }
    if kept == lib.algorithm_params:
        return lib
    return dataclasses.replace(lib, algorithm_params=kept)


def _one_node_view(system: SystemSpec) -> SystemSpec:
    """Rule 3: ``system`` with the numbers only a transfer between nodes reads fixed (the NIC
    count and the rail layout stay: a one-node run reads them)."""
    nics = dataclasses.replace(system.nics, bw_Bps=0.0, latency_s=0.0, efficiency=0.0)
    scale_out = dataclasses.replace(
        system.scale_out, nodes_per_leaf=1, oversubscription=1.0, spine_latency_s=0.0, ecmp="hash"
    )
    return dataclasses.replace(
        system, nics=nics, scale_out=scale_out, library=_library_view(system.library)
    )


def _library_view(lib: LibraryProfile) -> LibraryProfile:
    """Rule 3 for the library: the network's bandwidth efficiency, step latencies and tree
    level latency zero (keys kept, so the view's dicts keep their order)."""
    protocols = tuple(
        dataclasses.replace(p, step_latency_s=_zero_network(p.step_latency_s))
        for p in lib.protocols
    )
    return dataclasses.replace(
        lib,
        bw_efficiency=_zero_network(lib.bw_efficiency),
        protocols=protocols,
        tree_level_latency_s=0.0,
    )


def _zero_network(by_class: dict[LinkClass, float]) -> dict[LinkClass, float]:
    """``by_class`` with the network class's value 0 (where it has one), in the same order."""
    return {c: (0.0 if c is _NET else v) for c, v in by_class.items()}
