"""Collectives on the flow-level network: the library's tuner, and contention-aware execution.

:class:`FlowCollectives` is the network a job runs on. For each call it

1. *chooses* an algorithm and protocol the way NCCL's tuner does — by predicted time, from the
   library's latencies and the algorithm's uncontended bandwidth on this topology (each phase's
   max-min rates solved alone, memoised, so a prediction is ``S · Σ_phase max(coeff/rate)``);
2. *runs* it: each phase's flows enter the shared :class:`~scaling.engine.network.FlowNetwork`
   as one bundle and share links max-min fairly with everything else in flight (other
   collectives of the same job, other groups); then the latency term elapses.

Uncontended, the run takes exactly the predicted time. A protocol's ``bw_fraction`` and the
library's size-efficiency ramp are modelled as extra bytes on the wire (time scales by their
inverse); the latency term (library step latency + hardware hop latency per sequential step,
:func:`~scaling.model.comm.algos.latency.latency_s`) is not bandwidth and is added after the
phases: the engine's links carry no latency of their own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Generator
from dataclasses import dataclass, fields

import numpy as np
import simpy

from scaling.engine.network import FlowNetwork
from scaling.model.comm.algos import NotApplicable, Phase, Schedule
from scaling.model.comm.algos import algorithm as algorithm_of
from scaling.model.comm.cluster import ClusterNetwork
from scaling.model.comm.collectives import CollectiveCost
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes, busbw_factor
from scaling.model.comm.shared import routing_of, structure_of
from scaling.model.hardware.system import LinkClass, SystemSpec


@dataclass(frozen=True, slots=True)
class Choice:
    """What the tuner picked for one call, and its uncontended prediction (s)."""

    algorithm: str
    protocol: str
    time_s: float
    latency_s: float
    bw_s_per_byte: float  # Σ over phases of max(coeff/rate), seconds per byte of S
    scale: float  # bytes on the wire per byte of S from protocol and size ramp (≥ 1)
    wire_per_rank: float
    bottleneck: str = ""  # link class of the slowest phase's bottleneck link


_ChoiceKey = tuple[CollectiveOp, float, Group, str | None, str | None, PeerSizes | None]

# ---- tuner prices shared across runs in one process ------------------------------------------
#: The tuner's choices by (price context, call): the context is every field of the system but
#: its device (its repr: capacities, latencies, efficiencies, library constants and
#: algorithms; nothing in ``scaling.model.comm`` reads the device), the node count, the ECMP
#: salt (the seed, unless ECMP is ideal) and a digest of the network's link capacities (a
#: degraded-NIC network differs), so an entry is reused only where every input of the price
#: is the same (runs of several strategies, seeds or commands of one system, and samples that
#: perturb only the device). Oldest entries go first.
_PRICES: dict[tuple[tuple[str, int, int | None, bytes], _ChoiceKey], Choice] = {}
_MAX_PRICES = 65_536


def _remember_price(key: tuple[tuple[str, int, int | None, bytes], _ChoiceKey], c: Choice) -> None:
    if len(_PRICES) >= _MAX_PRICES:
        del _PRICES[next(iter(_PRICES))]
    _PRICES[key] = c


def clear_price_cache() -> None:
    """Forget every tuner price shared across runs (the next prediction prices afresh)."""
    _PRICES.clear()


class FlowCollectives:
    """Prices and runs collectives of one system's cluster on a shared flow network."""

    def __init__(
        self, env: simpy.Environment, system: SystemSpec, nodes: int, seed: int = 0
    ) -> None:
        """``seed``: the run seed (salts the topology's ``hash`` ECMP)."""
        self.env = env
        self.system = system
        self.lib = system.library
        self.cluster = ClusterNetwork(system, nodes, seed)
        # schedules and routes are the structure's, shared by every run of it in the process
        # (shared.py says why that cannot change a result); this run keeps its own references
        self._shared = structure_of(system)
        self.algos = self._shared.planner
        self._routing = routing_of(self.cluster)
        SchedKey = tuple[str, CollectiveOp, Group, PeerSizes | None]
        self._sched: dict[SchedKey, Schedule | None] = {}
        self._why: dict[SchedKey, str] = {}  # why a schedule is None
        # every number and name of the system but the device's (capacities, latencies,
        # library constants, algorithm list): the part of a price's key that the system gives
        # (see _PRICES)
        self._system_key = repr(
            tuple(getattr(system, f.name) for f in fields(system) if f.name != "device")
        )
        self.net = FlowNetwork(env, self.cluster.capacity())

    @property
    def net(self) -> FlowNetwork:
        """The flow network the collectives run on."""
        return self._net

    @net.setter
    def net(self, net: FlowNetwork) -> None:
        # path ids, uncontended rates and tuner choices belong to one network (a degraded-NIC
        # run replaces it): a new one starts them afresh; schedules do not depend on it
        self._net = net
        self._phase_flows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # this network's path id of each structure-wide path id (-1: not registered yet)
        self._pid_of = np.full(max(len(self._routing.links), 64), -1, dtype=np.int64)
        self._phase_k: dict[int, tuple[float, str]] = {}
        self._choice: dict[_ChoiceKey, Choice] = {}
        # per call signature: the choice and its schedule's phases (run)
        self._runs: dict[_ChoiceKey, tuple[Choice, tuple[Phase, ...]]] = {}
        salt = None if self.cluster.ideal_ecmp else self.cluster.seed
        self._digest = hashlib.blake2b(np.ascontiguousarray(net.capacity).tobytes()).digest()
        self._price_ctx = (self._system_key, self.cluster.nodes, salt, self._digest)

    # ---- schedules and their uncontended cost --------------------------------------------
    def schedule(
        self, algorithm: str, op: CollectiveOp, group: Group, sizes: PeerSizes | None = None
    ) -> Schedule | None:
        """The algorithm's schedule on ``group`` (its uneven all-to-all of ``sizes`` where
        given), or None where it does not apply (memoised)."""
        key = (algorithm, op, group, sizes)
        if key in self._sched:
            return self._sched[key]
        shared = self._shared
        try:
            sched = shared.schedules[key]
            why = shared.why.get(key, "")
        except KeyError:
            why = ""
            try:
                if sizes is not None:
                    if op is not CollectiveOp.ALL_TO_ALL:
                        raise NotApplicable("peer sizes are for all_to_all only")
                    sched = self.algos.build_v(algorithm, group, sizes)
                else:
                    sched = self.algos.build(algorithm, op, group)
            except NotApplicable as e:
                sched, why = None, str(e)
            shared.remember_schedule(key, sched, why)  # (made read-only there)
        self._sched[key] = sched
        if sched is None:
            self._why[key] = why
        return sched

    def flows(self, phase: Phase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The phase as engine flows: (path id, coeff, multiplicity) per flow. A transfer
        between nodes whose devices own several NICs is split evenly over its paths
        (:meth:`ClusterNetwork.routes`); a folded entry takes its mirrored paths
        (:meth:`ClusterNetwork.folded_routes`). Memoised per phase."""
        hit = self._phase_flows.get(id(phase))
        if hit is None:
            routing = self._routing
            pp = routing.phase_paths(phase, self.cluster)
            pid_of = self._pid_of
            if pid_of.size < len(routing.links):
                grown = np.full(max(len(routing.links), 2 * pid_of.size), -1, dtype=np.int64)
                grown[: pid_of.size] = pid_of
                pid_of = self._pid_of = grown
            new = pp.order[pid_of[pp.order] < 0]
            if new.size:
                # register the phase's new paths in first appearance, as a fresh network
                # does: the engine's path ids (and so its solve order) are a cold run's.
                # The trusted entry: the routing's paths are distinct and cross no link
                # twice (checked once per structure), and `new` only those not yet here
                pid_of[new] = self.net.solver.register_checked_csr(*routing.csr(new))
            coeff = np.ascontiguousarray(pp.coeff, dtype=np.float64)
            mult = np.ascontiguousarray(pp.mult, dtype=np.int64)
            # checked once here, so every run of the phase enters the engine through its
            # trusted entry (FlowNetwork.transfer_checked_many: no per-call re-validation)
            if coeff.size and (not np.isfinite(coeff).all() or coeff.min() < 0 or mult.min() < 1):
                raise ValueError("a phase needs finite coefficients >= 0 and multiplicities >= 1")
            hit = (pid_of[pp.flow], coeff, mult)
            self._phase_flows[id(phase)] = hit
        return hit

    def phase_seconds_per_byte(self, phase: Phase) -> float:
        """max over the phase's flows of coeff / rate with the phase alone on the network."""
        return self._phase_info(phase)[0]

    def _phase_info(self, phase: Phase) -> tuple[float, str]:
        """(max coeff/rate, link class of the slowest flow's bottleneck), phase alone; memoised."""
        hit = self._phase_k.get(id(phase))
        if hit is None:
            pids, coeff, fmult = self.flows(phase)
            # the same phase on the same capacities with the same engine path ids (so the
            # same solver order) in an earlier run of this structure: the same floats
            key = (self._digest, id(phase), pids.tobytes())
            hit = self._routing.info(key, phase)
            if hit is not None:
                pass
            elif not pids.size:
                hit = (0.0, "")
            else:
                uniq, inv = np.unique(pids, return_inverse=True)
                mult = np.bincount(inv, weights=fmult).astype(np.int64)
                sol = self.net.solver.solve_arrays(uniq, mult)
                rate = sol.rates[inv]
                ratio = coeff / rate
                slow = int(np.argmax(ratio))
                # the slowest flow's bottleneck: its link with the least capacity per flow
                load = self.net.solver.link_flows(uniq, mult)
                links = self.net.solver.path_links(int(pids[slow]))
                share = self.net.capacity[links] / load[links]
                cls = self.cluster.links[int(links[int(np.argmin(share))])].cls.value
                hit = (float(ratio[slow]), cls)
                self._routing.remember_info(key, phase, hit)
            self._phase_k[id(phase)] = hit
        return hit

    def predict(
        self,
        op: CollectiveOp,
        nbytes: float,
        group: Group,
        algorithm: str | None = None,
        protocol: str | None = None,
        sizes: PeerSizes | None = None,
    ) -> Choice:
        """The tuner: the fastest (algorithm, protocol) the library has for this call, or the
        named ones. Raises ``ValueError`` if nothing applies."""
        key = (op, nbytes, group, algorithm, protocol, sizes)
        hit = self._choice.get(key)
        if hit is None:
            hit = _PRICES.get((self._price_ctx, key))
            if hit is not None:
                self._choice[key] = hit
        if hit is not None:
            return hit
        algos = [algorithm] if algorithm else list(self.lib.algorithms)
        protos = [p for p in self.lib.protocols if protocol in (None, p.name)]
        if not protos:
            have = ", ".join(p.name for p in self.lib.protocols)
            raise ValueError(f"{self.lib.name} has no protocol {protocol!r} (has {have})")
        ramp = self.lib.size_efficiency(nbytes)
        best: Choice | None = None
        p = group.size
        for name in algos:
            sched = self.schedule(name, op, group, sizes)
            if sched is None:
                continue
            algo = algorithm_of(name)
            bound = algo.max_call_ranks
            if algorithm is None and bound is not None and p * group.lanes > bound:
                # the lanes run at once: a 64-server group on 8 lanes as direct is 32,256
                # flows with ~1,000 distinct rates, one re-solve per finishing flow
                continue
            infos = [self._phase_info(ph) for ph in sched.phases]
            k = sum(i[0] for i in infos)
            neck = max(infos, key=lambda i: i[0])[1] if infos else ""
            algo_eff = algo.efficiency(self.system, op, group)
            for proto in protos:
                if not algo.allows_protocol(proto, len(protos)):
                    # NCCL runs NVLS, NVLSTree and PAT with the Simple protocol only (tuning.cc
                    # ncclTopoTuneModel skips LL/LL128 for them)
                    continue
                scale = 1.0 / (proto.bw_fraction * ramp * algo_eff)
                bw_time = nbytes * k * scale
                if math.isfinite(proto.max_busbw_Bps) and nbytes > 0:
                    # the protocol's bus-bandwidth cap bounds the algorithm bandwidth
                    bw_time = max(bw_time, nbytes * busbw_factor(op, p) / proto.max_busbw_Bps)
                    scale = bw_time / (nbytes * k) if k > 0 else scale
                if nbytes * k > 0:
                    # a bound that is not a link's (a switch's reduction rate)
                    floor = algo.bandwidth_floor_s(self.system, op, nbytes, proto, ramp)
                    if floor > bw_time:
                        bw_time, scale = floor, floor / (nbytes * k)
                lat = algo.latency_s(self.system, proto, group, sched)
                c = Choice(
                    name, proto.name, lat + bw_time, lat, k, scale, sched.wire_per_rank, neck
                )
                if best is None or c.time_s < best.time_s:
                    best = c
        if best is None and algorithm:
            why = self._why.get((algorithm, op, group, sizes), "")
            raise ValueError(
                f"{self.lib.name} has no {algorithm} for {op.value} on "
                f"{group.nodes}x{group.per_node} ranks" + (f": {why}" if why else "")
            )
        if best is None:
            raise ValueError(
                f"{self.lib.name} has no algorithm for {op.value} on {group.nodes}x{group.per_node} "
                f"ranks (library algorithms: {', '.join(self.lib.algorithms)})"
            )
        self._choice[key] = best
        _remember_price((self._price_ctx, key), best)
        return best

    def cost(
        self,
        op: CollectiveOp,
        nbytes: float,
        group: Group,
        algorithm: str | None = None,
        protocol: str | None = None,
        sizes: PeerSizes | None = None,
    ) -> CollectiveCost:
        """Uncontended cost of the tuner's choice, or of the named algorithm/protocol (the
        ``CollectiveCostModel`` interface)."""
        if group.size == 1:
            return CollectiveCost(0.0, 0.0, math.inf, None, "none", 0.0)
        ch = self.predict(op, nbytes, group, algorithm, protocol, sizes)
        bw_time = ch.time_s - ch.latency_s
        busbw = nbytes * busbw_factor(op, group.size) / bw_time if bw_time > 0 else math.inf
        return CollectiveCost(
            ch.time_s,
            ch.latency_s,
            busbw,
            LinkClass(ch.bottleneck) if ch.bottleneck else None,
            f"{ch.algorithm}/{ch.protocol}",
            ch.wire_per_rank * nbytes,
        )

    # ---- execution -------------------------------------------------------------------------
    #: run calls inside one node (one lane) at the tuner's uncontended time instead of as
    #: flows (:meth:`start`): a pricing policy for jobs whose node-local calls share no link
    #: with anything else in flight (Megatron's tensor-parallel groups, TP innermost)
    node_local_uncontended: bool = False
    #: run all-to-alls at the tuner's uncontended time instead of as flows: a pricing policy
    #: for jobs whose all-to-alls share no link with other traffic in flight (Megatron's
    #: expert-parallel groups, each on its stage's own nodes)
    all_to_all_uncontended: bool = False

    def start(
        self, op: CollectiveOp, nbytes: float, group: Group, sizes: PeerSizes | None = None
    ) -> simpy.Event:
        """Start one collective now (a :data:`~scaling.model.collectives.Runner`; an uneven
        all-to-all of ``sizes`` where given); the event's value is ``"algorithm/protocol"``.
        Under :attr:`node_local_uncontended` a call inside one node takes the tuner's
        uncontended time without entering the network."""
        local = self.node_local_uncontended and group.nodes == 1 and group.lanes == 1
        if local or (self.all_to_all_uncontended and op is CollectiveOp.ALL_TO_ALL):
            c = self.cost(op, nbytes, group, sizes=sizes)
            return self.env.timeout(c.time_s, value=c.algorithm)
        return self.env.process(self._run_named(op, nbytes, group, sizes))

    def _run_named(
        self, op: CollectiveOp, nbytes: float, group: Group, sizes: PeerSizes | None
    ) -> Generator[simpy.Event, object, str]:
        ch = yield from self.run(op, nbytes, group, sizes=sizes)
        return f"{ch.algorithm}/{ch.protocol}" if ch else "none"

    def run(
        self,
        op: CollectiveOp,
        nbytes: float,
        group: Group,
        algorithm: str | None = None,
        protocol: str | None = None,
        sizes: PeerSizes | None = None,
    ) -> Generator[simpy.Event, object, Choice | None]:
        """SimPy process body: run one collective on the shared network (the tuner's choice,
        or the named algorithm/protocol); returns the choice."""
        if group.size == 1 or nbytes <= 0:
            return None
        key = (op, nbytes, group, algorithm, protocol, sizes)
        hit = self._runs.get(key)
        if hit is None:
            # a run repeats its calls (every step, every bucket of one size): the tuner's
            # choice and its schedule once per call signature
            ch = self.predict(op, nbytes, group, algorithm, protocol, sizes)
            sched = self.schedule(ch.algorithm, op, group, sizes)
            assert sched is not None
            hit = (ch, sched.phases)
            self._runs[key] = hit
        ch, phases = hit
        for ph in phases:
            # each phase's flows when it starts (a new path is registered then, as a cold
            # run does)
            pids, coeff, mult = self.flows(ph)
            per_byte = nbytes * ch.scale
            if not math.isfinite(per_byte):
                raise ValueError(f"{op.value} of {nbytes} B: no finite transfer size")
            yield self.net.transfer_checked_many(pids, coeff * per_byte, mult)
        yield self.env.timeout(ch.latency_s)
        return ch
