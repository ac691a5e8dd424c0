"""Collective algorithms decomposed into phases of concurrent flows plus latency terms.

A phase is a set of flows ``(src device, dst device, bytes = coeff · S)`` that run concurrently;
a phase ends when its slowest flow ends. An algorithm is a sequence of phases and a number of
sequential steps per link class (its latency term). One step costs the library's software
latency for that class plus the hardware latency of the hop it crosses (:func:`hop_latency_s`):
latency lives here, per step, not in the flow engine, whose links carry bandwidth only.
Pipelined algorithms (ring, tree, chain broadcast) are one phase whose flows carry the total
bytes each link sees over the whole collective — so the uncontended time of a ring all-reduce is
exactly ``2(p−1)·α + 2(p−1)/p · S/B`` — and their step count carries the latency.

S follows nccl-tests: the per-rank buffer for all-reduce and broadcast, the full gathered size
for all-gather / reduce-scatter, the per-rank send buffer for all-to-all.

Ring orders. Channel ``c`` enters node ``n`` at local device ``s_c`` and walks the node's devices
in order, reversing direction on odd nodes, so the edge from node n to n+1 joins two devices with
the same local index — the same NIC rail (NCCL builds its rings so that each crosses every node
boundary once per channel on one rail). On fabrics with groups (MLU-Link bridges, PCIe switches)
``s_c`` is a group's first device, so a ring crosses each group boundary once per node.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import FabricKind, LinkClass, Protocol, SystemSpec
from scaling.units import us

# ---- NCCL 2.30.7 constants the library profile's protocols do not carry ----------------------
# NVIDIA/nccl @5067397c (2.30.7) src/graph/tuning.cc, ncclTunerConstantsDefaults and
# ncclTopoTuneModel (reference/nccl_tuning_constants.csv). They price the algorithms NCCL has
# beyond ring and tree; the ring/tree constants live in topologies/libraries/nccl.yaml.

#: hwLatencies[NET][NVLSTree][Simple] 20.9 us − hwLatencies[NET][Ring][Simple] 14.0 us: what an
#: NVLSTree step between nodes costs beyond the Simple protocol's network step (which, with the
#: hop's hardware latency, is tuning.cc's 14.0 us on a DGX), s.
NVLS_TREE_NET_STEP_EXTRA_S = (20.9 - 14.0) * us
#: ncclTopoTuneModel: "With ppn=1 latencies are fully exposed, use the Tree network latency":
#: on one rank per node a ring's network step costs hwLatencies[NET][Tree][p] (LL 5.0, LL128
#: 8.5, Simple 14 us) instead of the ring's (2.7, 4.0, 14.0 us); the extra, s, by protocol name.
PPN1_NET_STEP_EXTRA_S = {"LL": (5.0 - 2.7) * us, "LL128": (8.5 - 4.0) * us, "Simple": 0.0}
#: baseLatencies[PAT][Simple], s (PAT's own base latency, in place of the protocol's).
PAT_BASE_LATENCY_S = 8.0 * us
#: ncclTopoTuneModel: PAT's latency is ``log2i(nNodes) · interLat / 3.5 + nRanks · 2.8 us``
#: ("still a linear part; hopefully we'll manage to remove it at some point").
PAT_LEVEL_DIVISOR = 3.5
#: ... its linear part, s per rank.
PAT_RANK_LATENCY_S = 2.8 * us
#: ncclTopoTuneModel: ``if (a == NCCL_ALGO_PAT) busBw *= .75``.
PAT_BW_FACTOR = 0.75
#: nvlsEfficiency[Hopper] 0.85: NVLS bus bandwidth per channel relative to the NVLink graph's.
NVLS_EFFICIENCY = 0.85
#: src/include/device.h NCCL_MAX_NVLS_ARITY: enqueue.cc updateCollCostTable skips NVLS for
#: anything but all-reduce on nodes of more local ranks than this.
NVLS_MAX_ARITY = 32


@dataclass(frozen=True, slots=True)
class Phase:
    """Concurrent flows: ``src``/``dst`` global device ids, ``coeff`` bytes per byte of S, and
    ``mult`` identical flows per entry (several channels between the same two devices are
    separate flows: each gets its own max-min share)."""

    src: np.ndarray
    dst: np.ndarray
    coeff: np.ndarray
    mult: np.ndarray


@dataclass(frozen=True, slots=True)
class Schedule:
    """An algorithm instance on a group: its phases and its latency steps per link class."""

    algorithm: str
    phases: tuple[Phase, ...]
    steps: dict[LinkClass, float] = field(default_factory=dict)
    wire_per_rank: float = 0.0  # bytes each rank sends per byte of S
    cross_rail: bool = False  # network flows join NICs of different local indices (rails)


class NotApplicable(Exception):
    """This algorithm does not exist for this op, group or fabric."""


def _phase(edges: list[tuple[int, int, float]]) -> Phase:
    """Flows as a phase; identical (src, dst, bytes) flows become one entry with a multiplicity
    (first-seen order, so the result is deterministic)."""
    acc: dict[tuple[int, int, float], int] = {}
    for e in edges:
        acc[e] = acc.get(e, 0) + 1
    if not acc:
        z = np.zeros(0, dtype=np.int64)
        return Phase(z, z, np.zeros(0), z)
    keys = list(acc)
    a = np.array(keys, dtype=np.float64)
    return Phase(
        a[:, 0].astype(np.int64),
        a[:, 1].astype(np.int64),
        a[:, 2],
        np.array([acc[k] for k in keys], dtype=np.int64),
    )


def _phase_arrays(src: np.ndarray, dst: np.ndarray, coeff: np.ndarray) -> Phase:
    """:func:`_phase` for flows given as arrays (large groups: no Python loop per flow); the
    same entries in the same first-seen order."""
    if not src.size:
        z = np.zeros(0, dtype=np.int64)
        return Phase(z, z, np.zeros(0), z)
    # one integer key per (src, dst, coeff): a 1-D unique is far faster than a row-wise one
    cvals, cidx = np.unique(coeff, return_inverse=True)
    span = int(max(src.max(), dst.max())) + 1
    key = (src.astype(np.int64) * span + dst.astype(np.int64)) * cvals.size + cidx
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    keep = first[order]
    return Phase(
        src[keep].astype(np.int64),
        dst[keep].astype(np.int64),
        coeff[keep].astype(np.float64),
        counts[order].astype(np.int64),
    )


def _add_tree_edges(
    srcs: list[np.ndarray],
    dsts: list[np.ndarray],
    coeffs: list[np.ndarray],
    trees: list[np.ndarray],
    heads: np.ndarray,
    per_ch: float,
) -> None:
    """Append one channel's network edges of NCCL's double binary tree: for each tree (node
    ``i``'s parent ``parents[i]``, -1 at the root), every child-parent pair of head devices
    ``heads[i]`` both ways (reduce up, broadcast down, pipelined), each tree carrying half of
    the channel's share ``per_ch`` of the data."""
    for parents in trees:
        child = np.flatnonzero(parents >= 0)
        c_dev, p_dev = heads[child], heads[parents[child]]
        srcs.append(np.stack([c_dev, p_dev], axis=1).ravel())
        dsts.append(np.stack([p_dev, c_dev], axis=1).ravel())
        coeffs.append(np.full(2 * child.size, per_ch / 2))


def ring_steps_per_pass(system: SystemSpec, group: Group) -> dict[LinkClass, int]:
    """Sequential ring steps per pass (p−1 in all) by the class of link they cross.

    Following NCCL's tuner, a pass charges ``nodes−1`` steps to the network; steps that cross an
    MLU-Link group or PCIe-switch boundary inside a node are charged to PCIe; the rest to the
    scale-up link.
    """
    fab, k, n = system.fabric, group.per_node, group.nodes
    net = n - 1
    if fab.kind is FabricKind.PCIE:
        pcie = n * (k - 1)  # every intra-node hop crosses PCIe
    elif fab.kind is FabricKind.BRIDGE_GROUPS:
        pcie = n * (math.ceil(k / fab.group_size) - 1)
    else:
        pcie = 0
    up = group.size - 1 - net - pcie
    return {LinkClass.SCALE_UP: up, LinkClass.PCIE: pcie, LinkClass.NETWORK: net}


def hop_latency_s(
    system: SystemSpec, group: Group, *, cross_rail: bool = False
) -> dict[LinkClass, float]:
    """Hardware latency of one sequential step on ``group``, by the link class it crosses, s.

    All ranks take a step at once and the step ends with its slowest hop, so each class is
    charged the latency of the longest real path of that class the group uses:

    * scale-up: ``fabric.link_latency`` (through the NVSwitch, over the HCCS / MLU-Link link);
    * PCIe: ``fabric.pcie_latency`` where the path crosses PCIe switches through the host
      (between MLU-Link groups; between PCIe switches), else ``fabric.link_latency`` (two devices
      under one PCIe switch);
    * network: ``nics.latency`` (NIC tx, one leaf switch, NIC rx) plus
      ``scale_out.spine_latency`` when a hop leaves its leaf: the group spans several pods, or
      (``cross_rail``) its flows join different rails of a rail-optimized fabric.
    """
    fab, so = system.fabric, system.scale_out
    pcie = 0.0
    if fab.kind in (FabricKind.BRIDGE_GROUPS, FabricKind.PCIE):
        gs, k = fab.group_size, group.per_node
        lows = [group.local_base + j * k for j in range(group.lanes)]  # each lane's first device
        spans_switches = any(lo // gs != (lo + k - 1) // gs for lo in lows)
        if fab.kind is FabricKind.BRIDGE_GROUPS or spans_switches:
            pcie = fab.pcie_latency_s
        else:
            pcie = fab.link_latency_s
    net = 0.0
    if group.nodes > 1:
        npl = so.nodes_per_leaf
        pods = (group.first_node + group.nodes - 1) // npl - group.first_node // npl + 1
        rails = cross_rail and so.rail_optimized and system.nics.count > 1
        net = system.nics.latency_s + (so.spine_latency_s if pods > 1 or rails else 0.0)
    return {LinkClass.SCALE_UP: fab.link_latency_s, LinkClass.PCIE: pcie, LinkClass.NETWORK: net}


def latency_s(
    system: SystemSpec,
    proto: Protocol,
    group: Group,
    steps: dict[LinkClass, float],
    *,
    cross_rail: bool = False,
) -> float:
    """Latency term of one call on ``group``, s: the library's host overhead + the protocol's
    base latency + Σ over link classes of steps × (library step latency + hardware hop
    latency, :func:`hop_latency_s`)."""
    hop = hop_latency_s(system, group, cross_rail=cross_rail)
    total = sum(n * (proto.step_latency_s[c] + hop[c]) for c, n in steps.items())
    return system.library.call_overhead_s + proto.call_latency_s + total


def algorithm_latency_s(
    system: SystemSpec, name: str, proto: Protocol, group: Group, sched: Schedule
) -> float:
    """Latency term of one call of algorithm ``name`` with schedule ``sched``, s:
    :func:`latency_s` of its steps, plus what the algorithm adds (NCCL 2.30 tuning.cc
    ncclTopoTuneModel):

    * ring on one rank per node: NCCL's tree network latency per network step
      (:data:`PPN1_NET_STEP_EXTRA_S`);
    * tree: the library's calibrated ``tree_level_latency`` per network step;
    * nvls: the switch's reduction latency (tuning.cc's NVLS intraLat, 25 us on a DGX with the
      two NVLink steps);
    * nvls_tree: the switch's reduction latency once (``intraLat``), and per network step
      (``2·log2i(nNodes)`` of them) NVLSTree's NET latency 20.9 us — tuning.cc's ring step
      plus :data:`NVLS_TREE_NET_STEP_EXTRA_S` — and the library's tree level latency (a tree
      level across nodes costs the same at scale whichever tree it is);
    * pat: PAT's base latency in place of the protocol's, ``log2i(n)/3.5`` network steps, and
      2.8 us per rank.
    """
    lib = system.library
    lat = latency_s(system, proto, group, sched.steps, cross_rail=sched.cross_rail)
    net = sched.steps.get(LinkClass.NETWORK, 0.0)
    if name == "ring" and group.per_node == 1 and group.nodes > 1:
        lat += net * PPN1_NET_STEP_EXTRA_S.get(proto.name, 0.0)
    elif name == "tree":
        lat += net * lib.tree_level_latency_s
    elif name == "nvls":
        lat += system.fabric.switch_reduction_latency_s
    elif name == "nvls_tree":
        lat += system.fabric.switch_reduction_latency_s
        lat += net * (NVLS_TREE_NET_STEP_EXTRA_S + lib.tree_level_latency_s)
    elif name == "pat":
        lat += PAT_BASE_LATENCY_S - proto.call_latency_s + group.size * PAT_RANK_LATENCY_S
    return lat


def btree_parent(nranks: int, rank: int) -> int:
    """Parent of ``rank`` in NCCL's binary tree over ``nranks`` (root 0: −1).

    NCCL's ``ncclGetBtree`` (src/graph/trees.cc): a rank's lowest set bit ``b`` fixes its
    level; its parent is ``(rank ^ b) | (b << 1)``, or ``rank ^ b`` where that is out of range.
    Odd ranks are the leaves; rank 0 is the root, with one child.
    """
    if rank == 0:
        return -1
    bit = 1
    while bit < nranks and not bit & rank:
        bit <<= 1
    up = (rank ^ bit) | (bit << 1)
    return rank ^ bit if up >= nranks else up


def dtree_parents(n: int) -> tuple[list[int], list[int]]:
    """Parents of each rank in NCCL's two complementary trees over ``n`` ranks (root: −1).

    ``ncclGetDtree`` (src/graph/trees.cc): the first tree is :func:`btree_parent`'s; the second
    is its mirror (rank r ↔ n−1−r) when n is even, or the same tree shifted by one rank when n
    is odd. Either way the interior ranks of one tree are leaves of the other, so each rank sends
    and receives at most 2·S over the two halves of the data.
    """
    first = [btree_parent(n, r) for r in range(n)]
    if n % 2 == 0:
        second = []
        for r in range(n):
            u = btree_parent(n, n - 1 - r)
            second.append(-1 if u < 0 else n - 1 - u)
    else:
        second = []
        for r in range(n):
            u = btree_parent(n, (r - 1) % n)
            second.append(-1 if u < 0 else (u + 1) % n)
    return first, second


class Algorithms:
    """Builds schedules for one system; all methods raise :class:`NotApplicable` when needed."""

    def __init__(self, system: SystemSpec, channels: int) -> None:
        self.system = system
        self.g = system.devices_per_node
        self.channels = channels
        fab = system.fabric
        self.grouped = fab.kind in (FabricKind.BRIDGE_GROUPS, FabricKind.PCIE)
        self.gs = fab.group_size if self.grouped else self.g
        self._walks: dict[int, list[list[int]]] = {}

    # ---- helpers -------------------------------------------------------------------------
    def mesh_strides(self, k: int) -> list[int]:
        """Walk strides that give edge-disjoint Hamiltonian cycles over ``k`` directly linked
        devices (strides coprime with k). A reversed walk of stride d uses stride k−d, so where
        odd nodes walk backwards (rail-optimized fabrics) only d < k/2 is used."""
        strides = [d for d in range(1, k) if math.gcd(d, k) == 1] or [1]
        if self.system.scale_out.rail_optimized:
            strides = [d for d in strides if 2 * d < k] or [1]
        return strides

    def local_walk(self, k: int, c: int) -> list[int]:
        """Local device order of channel ``c`` inside one node of ``k`` ranks (entry first)."""
        walks = self._walks.get(k)
        if walks is None:
            walks = self._walks[k] = self._build_walks(k)
        return walks[c]

    def _candidates(self, k: int, c: int) -> list[list[int]]:
        """Valid walks for channel ``c``: their cyclic structure is fixed by the fabric; where
        the walk is cut (its entry and exit devices) is free."""
        fab = self.system.fabric
        if self.grouped and k > self.gs:
            # Whole groups one after another, so the ring crosses each group boundary once;
            # channels alternate the first group and, on MLU-Link bridges, the stride inside a
            # group (to use more of its peer links).
            n_groups = math.ceil(k / self.gs)
            first = c % n_groups
            parts: list[list[int]] = []
            for j in range(n_groups):
                base = ((first + j) % n_groups) * self.gs
                size = min(self.gs, k - base)
                st = 1
                if fab.kind is FabricKind.BRIDGE_GROUPS and size > 2:
                    strides = [d for d in range(1, size) if math.gcd(d, size) == 1]
                    st = strides[(c // n_groups) % len(strides)]
                parts.append([base + (i * st) % size for i in range(size)])
            # rotate the first and the last group's walk: choose entry and exit devices
            out = []
            for r0 in range(len(parts[0])):
                for r1 in range(len(parts[-1])) if len(parts) > 1 else [0]:
                    ps = [list(p) for p in parts]
                    ps[0] = ps[0][r0:] + ps[0][:r0]
                    if len(ps) > 1:
                        ps[-1] = ps[-1][r1:] + ps[-1][:r1]
                    out.append([d for p in ps for d in p])
            return out
        st = 1
        if fab.kind in (FabricKind.FULL_MESH, FabricKind.BRIDGE_GROUPS) and k > 2:
            strides = self.mesh_strides(k)
            st = strides[c % len(strides)]
        return [[(start + i * st) % k for i in range(k)] for start in range(k)]

    def _build_walks(self, k: int) -> list[list[int]]:
        """One walk per channel, cut so that the channels' exits (sends to the next node) and
        entries (receives from the previous node) spread evenly over the NICs."""
        nics = self.system.nics.count
        tx = [0] * nics
        rx = [0] * nics
        walks = []
        for c in range(self.channels):
            best, best_key = None, None
            for cand in self._candidates(k, c):
                ti, ri = cand[-1] * nics // self.g, cand[0] * nics // self.g
                key = (max(tx[ti] + 1, rx[ri] + 1), tx[ti] + rx[ri])
                if best_key is None or key < best_key:
                    best, best_key = cand, key
            assert best is not None
            tx[best[-1] * nics // self.g] += 1
            rx[best[0] * nics // self.g] += 1
            walks.append(best)
        return walks

    def ring_order(self, group: Group, c: int) -> list[int]:
        """Global device ids of channel ``c``'s ring, in ring order."""
        k, g = group.per_node, self.g
        fwd = self.local_walk(k, c)
        # On a rail-optimized fabric odd nodes walk backwards, starting where the previous node's
        # walk ended, so each inter-node edge stays on one rail.
        reverse_odd = self.system.scale_out.rail_optimized
        order: list[int] = []
        for i in range(group.nodes):
            node = group.first_node + i
            backwards = reverse_odd and i % 2 == 1
            local = [fwd[(-1 - j) % k] for j in range(k)] if backwards else fwd
            order += [node * g + group.local_base + d for d in local]
        return order

    def _class_steps(self, group: Group, passes: int) -> dict[LinkClass, float]:
        """Sequential ring steps per link class, × passes."""
        return {c: passes * k for c, k in ring_steps_per_pass(self.system, group).items()}

    def _intra_class(self) -> LinkClass:
        return LinkClass.PCIE if self.system.fabric.kind is FabricKind.PCIE else LinkClass.SCALE_UP

    # ---- algorithms ----------------------------------------------------------------------
    def ring(self, op: CollectiveOp, group: Group) -> Schedule:
        """Ring (multi-channel, rail-aligned) schedule of ``op`` on ``group``."""
        p = group.size
        if op is CollectiveOp.ALL_TO_ALL:
            raise NotApplicable("ring all-to-all is not implemented by any library profile")
        if op is CollectiveOp.BROADCAST:
            coeff, passes, wire = 1.0, 1, 1.0
        elif op is CollectiveOp.ALL_REDUCE:
            coeff, passes, wire = 2.0 * (p - 1) / p, 2, 2.0 * (p - 1) / p
        else:
            coeff, passes, wire = (p - 1) / p, 1, (p - 1) / p
        srcs, dsts = [], []
        for c in range(self.channels):
            order = np.array(self.ring_order(group, c), dtype=np.int64)
            hops = order.size if op is not CollectiveOp.BROADCAST else order.size - 1
            srcs.append(order[:hops])
            dsts.append(np.roll(order, -1)[:hops])
        src, dst = np.concatenate(srcs), np.concatenate(dsts)
        ph = _phase_arrays(src, dst, np.full(src.size, coeff / self.channels))
        return Schedule("ring", (ph,), self._class_steps(group, passes), wire)

    def tree(self, op: CollectiveOp, group: Group) -> Schedule:
        """NCCL-style tree all-reduce: a chain inside each node, a double binary tree across
        nodes; reduce and broadcast pipelined, so every edge carries its bytes both ways."""
        if op is not CollectiveOp.ALL_REDUCE or group.nodes < 2:
            raise NotApplicable("tree exists for all-reduce across more than one node")
        n, k, g = group.nodes, group.per_node, self.g
        base = group.local_base
        per_ch = 1.0 / self.channels
        # Double binary tree as NCCL builds it (dtree_parents), each tree carrying half of the
        # data; a node interior in one tree is a leaf of the other.
        trees = [np.array(p, dtype=np.int64) for p in dtree_parents(n)]
        node_base = base + (group.first_node + np.arange(n, dtype=np.int64)) * g
        srcs, dsts, coeffs = [], [], []
        for c in range(self.channels):
            chain = self.local_walk(k, c)
            # per node, in node order: each chain edge down (broadcast) then up (reduce)
            pairs = [(x, y) for a, b in itertools.pairwise(chain) for x, y in ((a, b), (b, a))]
            if pairs:
                pa = np.array(pairs, dtype=np.int64)
                srcs.append((node_base[:, None] + pa[:, 0]).ravel())
                dsts.append((node_base[:, None] + pa[:, 1]).ravel())
                coeffs.append(np.full(n * len(pairs), per_ch))
            _add_tree_edges(srcs, dsts, coeffs, trees, node_base + chain[0], per_ch)
        src, dst = np.concatenate(srcs), np.concatenate(dsts)
        steps = {
            self._intra_class(): 2.0 * (k - 1),
            LinkClass.NETWORK: 2.0 * math.log2(n),
        }
        return Schedule("tree", (_phase_arrays(src, dst, np.concatenate(coeffs)),), steps, 2.0)

    def rhd(self, op: CollectiveOp, group: Group) -> Schedule:
        """Recursive halving-doubling (Rabenseifner) all-reduce, p a power of two."""
        p = group.size
        if op is not CollectiveOp.ALL_REDUCE or p & (p - 1) or p < 2:
            raise NotApplicable("recursive halving-doubling: all-reduce on a power-of-two group")
        devs = group.devices(self.g)
        phases: list[Phase] = []
        steps: dict[LinkClass, float] = {}
        rounds = int(math.log2(p))
        dists = [p >> (r + 1) for r in range(rounds)]  # halving: far partners first
        for r, dist in enumerate(dists + dists[::-1]):
            frac = 1.0 / (2 ** (r + 1)) if r < rounds else 1.0 / (2 ** (2 * rounds - r))
            ranks = np.arange(p)
            partner = ranks ^ dist
            phases.append(
                Phase(devs[ranks], devs[partner], np.full(p, frac), np.ones(p, dtype=np.int64))
            )
            same_node = (ranks // group.per_node) == (partner // group.per_node)
            cls = self._intra_class() if bool(same_node.all()) else LinkClass.NETWORK
            steps[cls] = steps.get(cls, 0.0) + 1.0
        return Schedule("rhd", tuple(phases), steps, 2.0 * (p - 1) / p)

    def direct(self, op: CollectiveOp, group: Group) -> Schedule:
        """Direct (mesh): every rank exchanges its share with every other rank at once."""
        p = group.size
        if p > 64:
            raise NotApplicable("direct/mesh algorithms are limited to 64 ranks (p² flows)")
        devs = group.devices(self.g)
        src, dst = np.meshgrid(devs, devs, indexing="ij")
        mask = src != dst
        pairs = (src[mask], dst[mask])
        share = Phase(
            pairs[0], pairs[1], np.full(mask.sum(), 1.0 / p), np.ones(mask.sum(), dtype=np.int64)
        )
        cls = self._intra_class() if group.nodes == 1 else LinkClass.NETWORK
        cross = group.nodes > 1 and group.per_node > 1  # local rank a talks to local rank b != a
        if op is CollectiveOp.ALL_REDUCE:
            return Schedule("direct", (share, share), {cls: 2.0}, 2.0 * (p - 1) / p, cross)
        if op in (CollectiveOp.REDUCE_SCATTER, CollectiveOp.ALL_GATHER, CollectiveOp.ALL_TO_ALL):
            return Schedule("direct", (share,), {cls: 1.0}, (p - 1) / p, cross)
        raise NotApplicable("direct broadcast is not modelled")

    def hierarchical(self, op: CollectiveOp, group: Group) -> Schedule:
        """Intra-node ring reduce-scatter → inter-node ring all-reduce of S/g (one ring per
        local index, i.e. per rail) → intra-node ring all-gather."""
        if op is not CollectiveOp.ALL_REDUCE or group.nodes < 2 or group.per_node < 2:
            raise NotApplicable("hierarchical all-reduce needs several nodes of several ranks")
        n, k, g = group.nodes, group.per_node, self.g
        intra: list[tuple[int, int, float]] = []
        mesh = self.system.fabric.kind is FabricKind.FULL_MESH
        for i in range(n):
            node = group.first_node + i
            if mesh:
                # HCCL's intra-server Mesh: every rank exchanges its 1/k share with each peer.
                base = node * g + group.local_base
                intra += [
                    (base + a, base + b, 1.0 / k) for a in range(k) for b in range(k) if a != b
                ]
                continue
            sub = Group(1, k, node, group.local_base)
            for c in range(self.channels):
                order = self.ring_order(sub, c)
                for j in range(k):
                    intra.append((order[j], order[(j + 1) % k], (k - 1) / k / self.channels))
        inter: list[tuple[int, int, float]] = []
        for d in range(k):
            for i in range(n):
                a = (group.first_node + i) * g + group.local_base + d
                b = (group.first_node + (i + 1) % n) * g + group.local_base + d
                inter.append((a, b, 2.0 * (n - 1) / n / k))
        ph_intra = _phase(intra)
        steps = {
            self._intra_class(): 2.0 if mesh else 2.0 * (k - 1),
            LinkClass.NETWORK: 2.0 * (n - 1),
        }
        wire = 2.0 * (k - 1) / k + 2.0 * (n - 1) / n / k
        return Schedule("hierarchical", (ph_intra, _phase(inter), ph_intra), steps, wire)

    def _nvls_switch(self) -> bool:
        """Whether the node's fabric is a switch that reduces in-network (NVLS exists)."""
        fab = self.system.fabric
        return fab.kind is FabricKind.SWITCH and fab.in_switch_reduction

    def nvls(self, op: CollectiveOp, group: Group) -> Schedule:
        """In-switch reduction (NVLS) on one node; busbw may exceed the link rate.

        Where NCCL 2.30 runs it: all-reduce, all-gather and reduce-scatter (tuning.cc
        ncclTopoTuneModel: AG/RS take only PAT, ring, NVLS and CollNetDirect), Simple protocol
        only, on one node — across nodes NVLS needs CollNet (tuning.cc disables it when
        ``nNodes > 1`` without collnet; enqueue.cc updateCollCostTable: ``collNetSupport != 1 &&
        nNodes > 1``), which the model does not have; AG/RS only up to NCCL_MAX_NVLS_ARITY local
        ranks (enqueue.cc).

        All-reduce: each device sends S into the switch and receives the reduced S back.
        All-gather / reduce-scatter: each device's link carries the (p−1)/p·S of the other
        ranks' shards (multicast out, or the switch's reduced reads in); the flows load both
        directions alike, as a ring does.
        """
        ops = (CollectiveOp.ALL_REDUCE, CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER)
        if op not in ops or group.nodes != 1 or not self._nvls_switch() or group.size < 2:
            raise NotApplicable(
                "NVLS: all-reduce, all-gather or reduce-scatter on one node of a switch with "
                "in-switch reduction"
            )
        devs = group.devices(self.g)
        if op is CollectiveOp.ALL_REDUCE:
            nxt = np.roll(devs, -1)
            # A flow a→b uses a's up link and b's down link: each carries S once.
            return Schedule(
                "nvls",
                (Phase(devs, nxt, np.ones(devs.size), np.ones(devs.size, dtype=np.int64)),),
                {LinkClass.SCALE_UP: 2.0},
                1.0,
            )
        p = group.size
        if p > NVLS_MAX_ARITY:
            raise NotApplicable(f"NVLS all-gather/reduce-scatter: at most {NVLS_MAX_ARITY} ranks")
        src = np.repeat(devs, p - 1)
        dst = np.concatenate([np.roll(devs, -j) for j in range(1, p)]).reshape(p - 1, p).T.ravel()
        ph = Phase(src, dst, np.full(src.size, 1.0 / p), np.ones(src.size, dtype=np.int64))
        return Schedule("nvls", (ph,), {LinkClass.SCALE_UP: 2.0}, (p - 1) / p)

    def nvls_tree(self, op: CollectiveOp, group: Group) -> Schedule:
        """NVLSTree all-reduce: NVLS inside each node, NCCL's double binary tree across nodes.

        Where NCCL 2.30 runs it: all-reduce only (tuning.cc: AG/RS take only PAT, ring, NVLS and
        CollNetDirect; broadcast and reduce only ring), Simple protocol only, on 2+ nodes
        ("Disable NVLS Tree on a single node", tuning.cc), where NVLS exists. Pipelined, one
        phase: every device sends S into its switch and receives the reduced S back (the NVLS
        part); channel ``c``'s head device (the one whose NIC the channel leaves by) joins the
        nodes' two complementary trees, each carrying half of the channel's data both ways —
        the tree's network flows.
        """
        if (
            op is not CollectiveOp.ALL_REDUCE
            or group.nodes < 2
            or group.per_node < 2
            or not self._nvls_switch()
        ):
            raise NotApplicable(
                "NVLSTree: all-reduce across nodes of several ranks on switches with in-switch "
                "reduction"
            )
        n, k, g = group.nodes, group.per_node, self.g
        per_ch = 1.0 / self.channels
        trees = [np.array(p, dtype=np.int64) for p in dtree_parents(n)]
        node_base = group.local_base + (group.first_node + np.arange(n, dtype=np.int64)) * g
        local = np.arange(k, dtype=np.int64)
        devs = (node_base[:, None] + local[None, :]).ravel()
        nxt = (node_base[:, None] + np.roll(local, -1)[None, :]).ravel()
        srcs, dsts, coeffs = [devs], [nxt], [np.ones(devs.size)]
        for c in range(self.channels):
            heads = node_base + self.local_walk(k, c)[0]
            _add_tree_edges(srcs, dsts, coeffs, trees, heads, per_ch)
        src, dst = np.concatenate(srcs), np.concatenate(dsts)
        steps = {LinkClass.SCALE_UP: 2.0, LinkClass.NETWORK: 2.0 * math.log2(n)}
        ph = _phase_arrays(src, dst, np.concatenate(coeffs))
        return Schedule("nvls_tree", (ph,), steps, 1.0 + 2.0 / k)

    def pat(self, op: CollectiveOp, group: Group) -> Schedule:
        """PAT (Parallel Aggregated Trees, NCCL ≥ 2.23) all-gather / reduce-scatter.

        Where NCCL 2.30 runs it: all-gather and reduce-scatter only (tuning.cc: ``coll ==
        ncclFuncAllReduce && a == NCCL_ALGO_PAT`` is skipped), Simple protocol only, and only
        with one rank per node (tuning.cc ncclPatEnable: ``nNodes != nRanks`` → 0), so never on
        8-GPU nodes where every rank of a node is in the communicator. (enqueue.cc also skips it
        for a reduce-scatter with a pre-multiplied or post-divided sum — ``ncclAvg`` — an op the
        model does not see.)

        The data moves as in PatAGAlgorithm (src/include/collectives.h): ⌈log2 n⌉ steps, the
        step at distance 2^j carrying the min(2^j, n − 2^j) shards gathered so far; each rank
        sends (n−1)/n·S in all, as a ring does. Phases run one after the other.
        """
        if op not in (CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER):
            raise NotApplicable("PAT: all-gather or reduce-scatter")
        if group.per_node != 1 or group.nodes < 2:
            raise NotApplicable("PAT: one rank per node (NCCL's ncclPatEnable), 2+ nodes")
        n = group.nodes
        devs = group.devices(self.g)
        ranks = np.arange(n)
        phases = []
        d = 1
        while d < n:
            frac = min(d, n - d) / n
            phases.append(
                Phase(devs, devs[(ranks + d) % n], np.full(n, frac), np.ones(n, dtype=np.int64))
            )
            d *= 2
        levels = float(int(math.log2(n)))  # log2i: floor
        steps = {LinkClass.NETWORK: levels / PAT_LEVEL_DIVISOR}
        return Schedule("pat", tuple(phases), steps, (n - 1) / n)

    def build(self, name: str, op: CollectiveOp, group: Group) -> Schedule:
        """Schedule of the named algorithm; NotApplicable if it does not exist here."""
        if group.lanes > 1:
            # sibling communicators at once: the union of their flows, phase by phase
            parts = [self.build(name, op, group.lane(j)) for j in range(group.lanes)]
            phases = tuple(
                Phase(
                    np.concatenate([p.phases[i].src for p in parts]),
                    np.concatenate([p.phases[i].dst for p in parts]),
                    np.concatenate([p.phases[i].coeff for p in parts]),
                    np.concatenate([p.phases[i].mult for p in parts]),
                )
                for i in range(len(parts[0].phases))
            )
            first = parts[0]
            return Schedule(
                first.algorithm, phases, first.steps, first.wire_per_rank, first.cross_rail
            )
        fn = {
            "ring": self.ring,
            "tree": self.tree,
            "rhd": self.rhd,
            "direct": self.direct,
            "hierarchical": self.hierarchical,
            "nvls": self.nvls,
            "nvls_tree": self.nvls_tree,
            "pat": self.pat,
        }.get(name)
        if fn is None:
            raise NotApplicable(f"unknown algorithm {name!r}")
        return fn(op, group)
