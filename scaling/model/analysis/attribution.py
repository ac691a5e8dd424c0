"""Why system B trains slower than system A: Shapley attribution over swapped components.

A system is split into components; a *hybrid* takes some components from B and the rest from A.
The value of a hybrid is its simulated throughput per device (tokens/s) on the job; the gap is
``v(A) − v(all from B)``. Each component's Shapley value is its average marginal contribution to
the gap over every order of swapping components in, so the parts add up to the gap exactly.

Components (DESIGN §3, issue #8):

* ``peak compute``: dense peak FLOP/s per dtype, best-shape matmul efficiency, kernel launch cost,
  structured-sparsity speed-up, compute units, in-loop matmul and attention fractions, host
  launch cost;
* ``memory bandwidth``: peak bandwidth and its achievable fraction;
* ``memory capacity``: capacity and reserved memory — it decides the micro-batch that fits (the
  largest power of two up to the configured one; a job that fits with none is worth 0);
* ``scale-up link``: devices per node and the node fabric;
* ``scale-out network``: NICs and the leaf-spine;
* ``collective library``: the library profile (latencies, efficiencies, algorithms, tuner).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from scaling.model.hardware.system import SystemSpec
from scaling.model.job import InfeasibleJobError, Job
from scaling.model.simulation import check_feasible, run_job

COMPONENTS = (
    "peak compute",
    "memory bandwidth",
    "memory capacity",
    "scale-up link",
    "scale-out network",
    "collective library",
)

_DEVICE_FIELDS = {
    "peak compute": (
        "peak_flops",
        "matmul_efficiency",
        "kernel_launch_s",
        "sparsity_speedup",
        "compute_units",
        "sustained_matmul_fraction",
        "attention_efficiency",
        "host_launch_s",
    ),
    "memory bandwidth": ("mem_bw_Bps", "mem_bw_efficiency"),
    "memory capacity": ("mem_bytes", "reserved_mem_bytes"),
}


def hybrid(a: SystemSpec, b: SystemSpec, from_b: frozenset[str]) -> SystemSpec:
    """System ``a`` with the components in ``from_b`` taken from ``b``."""
    dev_changes = {f: getattr(b.device, f) for comp in from_b for f in _DEVICE_FIELDS.get(comp, ())}
    out = dataclasses.replace(a, device=dataclasses.replace(a.device, **dev_changes))
    if "scale-up link" in from_b:
        out = dataclasses.replace(out, devices_per_node=b.devices_per_node, fabric=b.fabric)
    if "scale-out network" in from_b:
        out = dataclasses.replace(out, nics=b.nics, scale_out=b.scale_out)
    if "collective library" in from_b:
        out = dataclasses.replace(out, library=b.library)
    name = a.name if not from_b else f"{a.name}+{b.name}[{','.join(sorted(from_b))}]"
    return dataclasses.replace(out, name=name)


def throughput_per_device(job: Job) -> float:
    """Tokens/s per device with the largest micro-batch (≤ the job's) that fits; 0 if none."""
    mb = job.training.micro_batch
    while mb >= 1:
        trial = dataclasses.replace(job, training=dataclasses.replace(job.training, micro_batch=mb))
        try:
            check_feasible(trial)
        except InfeasibleJobError:
            mb //= 2
            continue
        return run_job(trial).tokens_per_s_per_device
    return 0.0


@dataclass(frozen=True)
class Attribution:
    """Shapley parts of ``value(A) − value(B)`` (tokens/s per device) at one node count.

    ``devices`` follows A's devices per node; a swapped scale-up link may change it (nodes stay).
    """

    a: str
    b: str
    nodes: int
    value_a: float
    value_b: float
    parts: dict[str, float]

    @property
    def gap(self) -> float:
        """Per-device throughput of A minus that of B (tokens/s)."""
        return self.value_a - self.value_b

    def shares(self) -> dict[str, float]:
        """Each part as a share of the gap (sums to 1)."""
        return {k: v / self.gap for k, v in self.parts.items()} if self.gap else {}


def shapley(
    value: Callable[[frozenset[str]], float], players: tuple[str, ...] = COMPONENTS
) -> dict[str, float]:
    """Exact Shapley values of ``players`` for a value function over coalitions.

    φ_i = Σ_{S ⊆ N∖{i}} |S|!(n−|S|−1)!/n! · (v(S ∪ {i}) − v(S)); ``value`` is memoised.
    """
    n = len(players)
    memo: dict[frozenset[str], float] = {}

    def v(s: frozenset[str]) -> float:
        if s not in memo:
            memo[s] = value(s)
        return memo[s]

    out = {}
    for p in players:
        others = [q for q in players if q != p]
        total = 0.0
        for k in range(n):
            w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for combo in itertools.combinations(others, k):
                s = frozenset(combo)
                total += w * (v(s | {p}) - v(s))
        out[p] = total
    return out


def attribute(job: Job, a: SystemSpec, b: SystemSpec) -> Attribution:
    """Attribute the per-device throughput gap between ``a`` and ``b`` on ``job``'s workload."""

    def value(from_b: frozenset[str]) -> float:
        sysm = hybrid(a, b, from_b)
        return throughput_per_device(dataclasses.replace(job, system=sysm))

    # Shapley measures contributions to v(S) − v(∅); the gap is v(∅) − v(all), so negate.
    raw = shapley(value)
    parts = {k: -x for k, x in raw.items()}
    v_a, v_b = value(frozenset()), value(frozenset(COMPONENTS))
    return Attribution(a.name, b.name, job.nodes, v_a, v_b, parts)
