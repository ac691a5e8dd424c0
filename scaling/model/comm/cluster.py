"""A cluster's links as a graph: node fabric, NICs and a two-tier leaf-spine, with routing.

Devices are numbered ``node * devices_per_node + local``. Every link is directed and carries an
*achievable* capacity: raw bandwidth × the hardware's efficiency (topology file) × the collective
library's efficiency for that link class (library file). Links carry no latency: a collective's
latency is priced per sequential step (``comm.algos.latency.hop_latency_s``). Per node (DESIGN §3.2):

* ``switch`` (NVSwitch): device → switch and switch → device links of ``link_bw`` each.
* ``full_mesh`` (HCCS): one link per ordered device pair of ``link_bw``.
* ``bridge_groups`` (MLU-Link): inside a group, one link per ordered pair carrying an equal share
  of the device's ``link_bw`` (assumption: the bridge splits a card's bandwidth evenly over its
  peers); between groups, device → PCIe switch → host → PCIe switch → device, the device and
  uplink legs at ``inter_group_bw`` (PCIe x16).
* ``pcie``: device ↔ PCIe switch at ``link_bw``; switch ↔ host at ``inter_group_bw``.

NIC ``k`` serves devices ``k·g/nics … (k+1)·g/nics − 1`` (its PCIe neighbours); where a node
has more NICs than devices (16 × 200 Gb/s for 8 GPUs), device ``d`` owns NICs
``d·nics/g … (d+1)·nics/g − 1`` and its traffic to another node is spread evenly over them
(NCCL gives each of a GPU's NICs its own channels: ``ncclTopoGetLocalNet`` in
src/graph/topo.cc picks among the GPU's closest NICs by channel), one path per NIC
(:meth:`ClusterNetwork.routes`). On ``switch`` and
``full_mesh`` nodes a device reaches its NIC over its own PCIe switch, which is not a bottleneck
(GPUDirect RDMA; not modelled as a link). On ``bridge_groups``/``pcie`` nodes the path to the NIC
crosses the device's PCIe switch link and, for a NIC under another switch, the host.

Scale-out: nodes are grouped ``nodes_per_leaf`` to a pod. Rail-optimized fabrics give every NIC
index its own leaf per pod (rail ``k`` of pod ``P``); otherwise all NICs of a pod share one leaf.
Each leaf has ``ceil(down-ports / oversubscription)`` uplinks at the NIC rate, one to each spine
(so the spine count follows from the leaf's ports and the oversubscription). Routing between
leaves follows the topology's ``scale_out.ecmp``:

* ``hash``: per-flow ECMP, the spine a hash of (source NIC, destination NIC) salted with the run
  seed — replicas of a run differ in their collisions as real ones do, and a sweep over seeds
  shows the spread the hash alone causes;
* ``ideal``: perfectly balanced spine load — each leaf's uplinks (and downlinks) are one bundle
  of their summed capacity (adaptive routing / packet spraying at its limit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np

from scaling.model.comm.linkkeys import LinkIds, LinkKeys
from scaling.model.hardware.fabrics import fabric_of
from scaling.model.hardware.system import LinkClass, SystemSpec


@dataclass(frozen=True, slots=True)
class Link:
    """One directed link: its key (kind, then indices), achievable capacity (bytes/s), its
    class. :attr:`name` (``"nic_tx/3/0"``) is built on demand: a 4,096-node cluster has ~200k
    links and only diagnostics read names."""

    key: tuple[object, ...]
    capacity_Bps: float
    cls: LinkClass

    @property
    def name(self) -> str:
        """The link's name for diagnostics: its key joined by ``/``."""
        return "/".join(map(str, self.key))


class _Links(Sequence[Link]):
    """The cluster's links by id, each :class:`Link` made when asked for (a 4,096-node cluster
    has ~200k links; routing needs keys and capacities, not objects)."""

    __slots__ = ("_caps", "_cls", "_keys")

    def __init__(
        self, keys: Sequence[tuple[object, ...]], caps: list[float], cls: list[LinkClass]
    ) -> None:
        self._keys, self._caps, self._cls = keys, caps, cls

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, i: int) -> Link: ...
    @overload
    def __getitem__(self, i: slice) -> list[Link]: ...
    def __getitem__(self, i: int | slice) -> Link | list[Link]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Link(self._keys[i], self._caps[i], self._cls[i])


@dataclass(slots=True)
class _Structure:
    """A cluster graph without its numbers: link keys in build order, their ids, and routes
    per ECMP salt. Shared by every :class:`ClusterNetwork` of the same structure in a process
    (uncertainty samples, seeds and strategies change capacities only)."""

    keys: LinkKeys
    index: LinkIds
    #: what the keys are made from (:meth:`ClusterNetwork._link_keys`): equal recipes, equal keys
    recipe: tuple[object, ...]
    routes: dict[int | None, dict[tuple[int, int], tuple[tuple[int, ...], ...]]] = field(
        default_factory=dict
    )


#: structures by :meth:`ClusterNetwork.structure_key`, oldest evicted first
_STRUCTURES: dict[tuple[object, ...], _Structure] = {}
_MAX_STRUCTURES = 8


def clear_structure_cache() -> None:
    """Forget every cached cluster structure (the next :class:`ClusterNetwork` builds afresh)."""
    _STRUCTURES.clear()


def _ecmp(a: int, b: int, n: int, salt: int = 0) -> int:
    """Deterministic ECMP choice among ``n`` next hops for a (source, destination) pair; the
    salt (the run seed) picks one of many equally plausible hash functions."""
    h = (a * 0x9E3779B1 + b * 0x85EBCA77 + salt * 0xC2B2AE3D) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & 0xFFFFFFFF
    h ^= h >> 12
    return h % n


def _ecmp_array(a: np.ndarray, b: np.ndarray, n: int, salt: int = 0) -> np.ndarray:
    """:func:`_ecmp` of many pairs at once (non-negative int64 ``a`` and ``b`` below 2**28):
    bits above the 32nd never reach the low 32 in sums and products, so the salt's term is
    reduced first and every intermediate stays below 2**63."""
    m = 0xFFFFFFFF
    h = (a * 0x9E3779B1 + b * 0x85EBCA77 + ((int(salt) * 0xC2B2AE3D) & m)) & m
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & m
    h ^= h >> 12
    return h % n


class ClusterNetwork:
    """Links and routes of ``nodes`` nodes of ``system``.

    The graph's structure (link keys, ids, routes) is cached per :meth:`structure_key` within
    the process; each instance computes its own capacities by running the build, and reuses
    the cached structure only if the build's recipe of link keys (each node's links, node
    count, leaves, links per leaf; :meth:`_link_keys` makes the keys from it) is the cached
    one, so the keys are exactly the cached ones in the same order (:attr:`reused`) and a
    structure can never be reused for a different graph.
    """

    def __init__(self, system: SystemSpec, nodes: int, seed: int = 0) -> None:
        """``seed``: the run seed, the salt of the ``hash`` ECMP (unused with ``ideal``)."""
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.system = system
        self.seed = seed
        self.ideal_ecmp = system.scale_out.ecmp == "ideal"
        self.nodes = nodes
        self.g = system.devices_per_node
        self._caps: list[float] = []
        self._cls: list[LinkClass] = []
        lib = self._lib = system.library.bw_efficiency
        fab, nic = system.fabric, system.nics
        self._eff = {
            LinkClass.SCALE_UP: fab.link_efficiency * lib[LinkClass.SCALE_UP],
            LinkClass.PCIE: fab.pcie_efficiency * lib[LinkClass.PCIE],
            LinkClass.NETWORK: nic.efficiency * lib[LinkClass.NETWORK],
        }
        self._routes: dict[tuple[int, int], tuple[tuple[int, ...], ...]] = {}
        self._folded: dict[tuple[int, int, bool], tuple[tuple[int, ...], ...]] = {}
        # the path to a NIC crosses the device's PCIe switch (bridge groups / PCIe fabrics)
        self._nic_behind_switch = fabric_of(fab.kind).grouped
        self._nics_of = [self.nics_of(d) for d in range(self.g)]
        self._shape_memo: tuple[int, int, bool, int, int] | None = None
        self._intra_ids: dict[tuple[int, int], list[int]] = {}  # node 0's, by local pair
        self._build()
        self._share_structure()

    # ---- construction ------------------------------------------------------------------
    def structure_key(self) -> tuple[object, ...]:
        """Every input the graph's links and routes depend on other than capacities: nodes,
        devices per node, fabric kind and group size, NIC count, the leaf-spine shape and its
        ECMP mode. (The run seed salts routes only; they are cached per seed.)"""
        s = self.system
        so = s.scale_out
        return (
            self.nodes,
            self.g,
            s.fabric.kind,
            s.fabric.group_size,
            s.nics.count,
            so.nodes_per_leaf,
            so.oversubscription,
            so.rail_optimized,
            so.ecmp,
        )

    def _share_structure(self) -> None:
        """Take the cached structure if this build's link keys are exactly its keys (they are
        made from the same recipe, :meth:`_link_keys`), else make the keys, index them and cache
        this structure (:attr:`reused` says which)."""
        key = self.structure_key()
        hit = _STRUCTURES.get(key)
        self.reused = hit is not None and hit.recipe == self._recipe
        if hit is None or not self.reused:
            if len(_STRUCTURES) >= _MAX_STRUCTURES:
                del _STRUCTURES[next(iter(_STRUCTURES))]
            keys, index = self._link_keys()
            hit = _STRUCTURES[key] = _Structure(keys, index, self._recipe)
        self._keys = hit.keys
        self.links: Sequence[Link] = _Links(hit.keys, self._caps, self._cls)
        self._index = hit.index
        self._pos = hit.index.pos  # a node link's position in the node block
        self._routes = hit.routes.setdefault(None if self.ideal_ecmp else self.seed, {})

    def _build(self) -> None:
        """Capacities and classes of every link in build order, and the recipe of their keys:
        each node's links (the fabric kind's, then each NIC's), node by node, then each leaf's
        uplinks and downlinks (one pair per spine; one bundle pair under ideal ECMP)."""
        s, fab, g = self.system, self.system.fabric, self.g
        model = fabric_of(fab.kind)
        # one node's links in build order, as (key without the node, raw bandwidth, class,
        # hardware efficiency or None); every node repeats them
        per_node: list[tuple[tuple[object, ...], float, LinkClass, float | None]] = [
            ((kind, *rest), bw, cls, eff)
            for (kind, *rest), bw, cls, eff in model.node_links(fab, g)
        ]
        if self.nodes > 1:
            for k in range(s.nics.count):
                if self._nic_behind_switch:
                    # the NIC's x16 slot under its PCIe switch (see nic_switch)
                    per_node.append((("sw_nic", k), fab.inter_group_bw_Bps, LinkClass.PCIE, None))
                    per_node.append((("nic_sw", k), fab.inter_group_bw_Bps, LinkClass.PCIE, None))
                per_node.append((("nic_tx", k), s.nics.bw_Bps, LinkClass.NETWORK, None))
                per_node.append((("nic_rx", k), s.nics.bw_Bps, LinkClass.NETWORK, None))
        # capacity: raw bandwidth x hardware efficiency (default: the class's) x the library's
        caps = [
            bw * (self._eff[cls] if eff is None else eff * self._lib[cls])
            for _, bw, cls, eff in per_node
        ]
        self._node_block = len(per_node)
        self._caps.extend(caps * self.nodes)
        self._cls.extend([cls for _, _, cls, _ in per_node] * self.nodes)
        per_leaf = 0
        if self.n_leaves > 1:
            # under ideal ECMP all of a leaf's uplinks are one: any split of the load over spines
            per_leaf = 1 if self.ideal_ecmp else self.n_spines
            raw = self.n_spines * s.nics.bw_Bps if self.ideal_ecmp else s.nics.bw_Bps
            n_up = 2 * per_leaf * self.n_leaves
            self._caps.extend([raw * self._eff[LinkClass.NETWORK]] * n_up)
            self._cls.extend([LinkClass.NETWORK] * n_up)
        parts = tuple((key[0], key[1:]) for key, _, _, _ in per_node)
        self._recipe: tuple[object, ...] = (parts, self.nodes, self.n_leaves, per_leaf)

    def _link_keys(self) -> tuple[LinkKeys, LinkIds]:
        """Every link's key in build order, from the recipe :meth:`_build` left, and each
        key's id (its position; the last where one repeated), both computed from the recipe
        when asked (:mod:`scaling.model.comm.linkkeys`), not listed."""
        parts, nodes, n_leaves, per_leaf = self._recipe
        assert isinstance(parts, tuple) and isinstance(nodes, int)
        assert isinstance(n_leaves, int) and isinstance(per_leaf, int)
        index = LinkIds(parts, nodes, n_leaves, per_leaf)
        return LinkKeys(index), index

    # ---- shape -------------------------------------------------------------------------
    @property
    def n_devices(self) -> int:
        """Accelerators in the cluster."""
        return self.nodes * self.g

    @property
    def n_switches(self) -> int:
        """PCIe switches per node (bridge groups / PCIe fabrics)."""
        return math.ceil(self.g / self.system.fabric.group_size)

    def nics_of(self, local: int) -> range:
        """The NICs a device (local index) spreads its inter-node traffic over: one where the
        node has no more NICs than devices, else its ``nics/g`` own ones."""
        nics = self.system.nics.count
        lo = local * nics // self.g
        return range(lo, max(lo + 1, (local + 1) * nics // self.g))

    def nic_switch(self, k: int) -> int:
        """The PCIe switch NIC ``k`` sits under (bridge groups / PCIe fabrics)."""
        first_dev = -(-k * self.g // self.system.nics.count)  # ceil(k·g/nics)
        return first_dev // self.system.fabric.group_size

    @property
    def pods(self) -> int:
        """Pods of the leaf-spine fabric."""
        return math.ceil(self.nodes / self.system.scale_out.nodes_per_leaf)

    @property
    def leaves_per_pod(self) -> int:
        """Leaf switches per pod."""
        return self.system.nics.count if self.system.scale_out.rail_optimized else 1

    @property
    def n_leaves(self) -> int:
        """Leaf switches in the cluster."""
        return self.pods * self.leaves_per_pod if self.nodes > 1 else 0

    @property
    def n_spines(self) -> int:
        """Spine switches in the cluster."""
        so = self.system.scale_out
        per_leaf_nics = so.nodes_per_leaf * (1 if so.rail_optimized else self.system.nics.count)
        return max(1, math.ceil(per_leaf_nics / so.oversubscription))

    def leaf_of(self, node: int, nic: int) -> int:
        """The leaf switch NIC ``nic`` of ``node`` connects to."""
        pod = node // self.system.scale_out.nodes_per_leaf
        return pod * self.leaves_per_pod + (nic if self.system.scale_out.rail_optimized else 0)

    # ---- routing -----------------------------------------------------------------------
    def _l(self, kind: str, n: int, *rest: int) -> int:
        """The id of node ``n``'s link ``(kind, *rest)`` (its key ``(kind, n, *rest)``)."""
        return n * self._node_block + self._pos[(kind, *rest)]

    def _intra(self, n: int, a: int, b: int) -> list[int]:
        base = self._intra_ids.get((a, b))
        if base is None:  # the same local pair on every node: node 0's link ids once
            pos = self._pos
            base = self._intra_ids[(a, b)] = [
                pos[(kind, *rest)]
                for kind, *rest in fabric_of(self.system.fabric.kind).intra_route(
                    self.system.fabric, a, b
                )
            ]
        off = n * self.node_block
        return [i + off for i in base]

    @property
    def node_block(self) -> int:
        """Links per node: node ``n``'s own links (its fabric's, its NICs' and their PCIe legs)
        are node 0's with ids shifted by ``n`` × this, in the same order (:meth:`_build` adds
        every node's links alike), so a route inside node ``n`` is node 0's shifted."""
        return self._node_block

    def _to_nic(self, n: int, d: int, k: int) -> list[int]:
        if not self._nic_behind_switch:
            return []
        gs = self.system.fabric.group_size
        sd, sk = d // gs, self.nic_switch(k)
        path = [self._l("pci_up", n, d)]
        if sd != sk:
            path += [self._l("sw_up", n, sd), self._l("sw_dn", n, sk)]
        return [*path, self._l("sw_nic", n, k)]

    def _from_nic(self, n: int, k: int, d: int) -> list[int]:
        if not self._nic_behind_switch:
            return []
        gs = self.system.fabric.group_size
        sd, sk = d // gs, self.nic_switch(k)
        path = [self._l("nic_sw", n, k)]
        if sd != sk:
            path += [self._l("sw_up", n, sk), self._l("sw_dn", n, sd)]
        return [*path, self._l("pci_dn", n, d)]

    def route(self, src: int, dst: int) -> tuple[int, ...]:
        """Link ids from device ``src`` to device ``dst`` (global ids) over the first of their
        NIC pairings (:meth:`routes` has them all)."""
        return self.routes(src, dst)[0]

    def routes(self, src: int, dst: int) -> tuple[tuple[int, ...], ...]:
        """The paths (link ids) a transfer from device ``src`` to ``dst`` is split evenly over:
        one inside a node; between nodes one per NIC pairing — the j-th NIC of the source
        device to the j-th of the destination's (rails stay aligned). Memoised."""
        key = (src, dst)
        hit = self._routes.get(key)
        if hit is not None:
            return hit
        g = self.g
        ns, a = divmod(src, g)
        nd, b = divmod(dst, g)
        if src == dst:
            out: tuple[tuple[int, ...], ...] = ((),)
        elif ns == nd:
            out = (tuple(self._intra(ns, a, b)),)
        else:
            na, nb = self._nics_of[a], self._nics_of[b]
            if len(na) == 1 and len(nb) == 1:  # one NIC each (the common case): one path
                out = (self._net_path(ns, a, na[0], nd, b, nb[0]),)
            else:
                out = tuple(
                    self._net_path(ns, a, na[j % len(na)], nd, b, nb[j % len(nb)])
                    for j in range(max(len(na), len(nb)))
                )
        self._routes[key] = out
        return out

    def folded_routes(self, src: int, dst: int, far: bool) -> tuple[tuple[int, ...], ...]:
        """The paths of a *folded* transfer (:class:`~scaling.model.comm.algos.base.Phase`'s
        ``fold``): from device ``src`` to the devices of ``dst``'s local index on other nodes —
        in the same pod (``far`` False) or in other pods (``far`` True) — with the far half of
        each route (spine to leaf, receiving NIC, the path down to the device) mirrored onto
        ``src``'s own node. ``dst`` is a device of ``src``'s node.

        In a symmetric exchange (every node of a group sends the same pattern to every other
        node: a uniform all-to-all) each receiving link carries exactly the load its mirror
        image on the sender's node carries, so one flow class per (source, destination local
        index, near/far) with the number of peers as multiplicity loads every link as the
        ``p²`` real flows do. Spine: folded classes are dealt evenly over the spines (the
        balanced limit per-flow hashing reaches over hundreds of flows per NIC, whatever the
        topology's ``ecmp``); a far class always crosses it. One path per NIC pairing, as :meth:`routes`. Memoised."""
        key = (src, dst, far)
        hit = self._folded.get(key)
        if hit is not None:
            return hit
        g = self.g
        n, a = divmod(src, g)
        nd, b = divmod(dst, g)
        if nd != n or self.nodes < 2:
            raise ValueError(f"folded route from {src} to {dst}: needs two devices of one node")
        na, nb = self._nics_of[a], self._nics_of[b]
        out = []
        for j in range(max(len(na), len(nb))):
            ka, kb = na[j % len(na)], nb[j % len(nb)]
            path = [*self._to_nic(n, a, ka), self._l("nic_tx", n, ka)]
            la, lb = self.leaf_of(n, ka), self.leaf_of(n, kb)
            if (far or la != lb) and self.n_leaves > 1:
                sp = 0
                if not self.ideal_ecmp:
                    # deal evenly: the nodes of a leaf on consecutive spines, each (source NIC
                    # index, destination NIC index) pair a pod's width further on, so a leaf's
                    # uplinks and downlinks carry equal shares
                    S, nics = self.n_spines, self.system.nics.count
                    npl = self.system.scale_out.nodes_per_leaf
                    sp = (n % npl + (ka * nics + kb) * npl + (S // 2 if far else 0)) % S
                ids = self._index
                path += [ids.spine_link(True, la, sp), ids.spine_link(False, lb, sp)]
            path += [self._l("nic_rx", n, kb), *self._from_nic(n, kb, b)]
            if len(set(path)) != len(path):
                raise ValueError(f"folded route from {src} to {dst} crosses a link twice")
            out.append(tuple(path))
        res = tuple(out)
        self._folded[key] = res
        return res

    def _net_path(self, ns: int, a: int, ka: int, nd: int, b: int, kb: int) -> tuple[int, ...]:
        """Device ``a`` of node ``ns`` over NIC ``ka`` to device ``b`` of node ``nd`` at ``kb``."""
        # called per NIC pairing of every device pair a collective crosses nodes on (tens of
        # thousands at 4,096 ranks): the shape is read once (:meth:`_shape`), keys built inline
        pos, block = self._pos, self._node_block
        npl, lpp, rail, nics, spines = self._shape()
        la = ns // npl * lpp + (ka if rail else 0)  # leaf_of, inline
        lb = nd // npl * lpp + (kb if rail else 0)
        tx = ns * block + pos[("nic_tx", ka)]
        rx = nd * block + pos[("nic_rx", kb)]
        if la != lb:
            sp = 0 if self.ideal_ecmp else _ecmp(ns * nics + ka, nd * nics + kb, spines, self.seed)
            ids = self._index
            mid: tuple[int, ...] = (
                tx,
                ids.spine_link(True, la, sp),
                ids.spine_link(False, lb, sp),
                rx,
            )
        else:
            mid = (tx, rx)
        if not self._nic_behind_switch:
            return mid
        return (*self._to_nic(ns, a, ka), *mid, *self._from_nic(nd, kb, b))

    def net_paths(
        self, src: np.ndarray, dst: np.ndarray
    ) -> tuple[list[tuple[int, ...]], np.ndarray]:
        """:meth:`routes` of many device pairs on *different* nodes at once (issue 29: an
        uncertainty sample draws its own ECMP salt, so every inter-node pair of a phase is
        routed afresh): the paths of pair ``i`` are ``paths[o_i : o_i + count[i]]`` with
        ``o_i`` the sum of the counts before it, each the tuple of link ids ``routes(src[i],
        dst[i])`` holds, in its order (the ECMP hash is :func:`_ecmp`'s, with this run's salt).
        Returns (paths, count per pair)."""
        g = self.g
        ns, a = np.divmod(np.asarray(src, dtype=np.int64), g)
        nd, b = np.divmod(np.asarray(dst, dtype=np.int64), g)
        if bool((ns == nd).any()):
            raise ValueError("net_paths: every pair must cross nodes")
        nic_lo = np.array([r.start for r in self._nics_of], dtype=np.int64)
        nic_n = np.array([len(r) for r in self._nics_of], dtype=np.int64)
        count = np.maximum(nic_n[a], nic_n[b])
        # one row per NIC pairing j of each pair: the j-th NIC of each side (routes)
        rep = np.repeat(np.arange(a.size), count)
        j = np.arange(rep.size, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
        ns, a, nd, b = ns[rep], a[rep], nd[rep], b[rep]
        ka = nic_lo[a] + j % nic_n[a]
        kb = nic_lo[b] + j % nic_n[b]
        npl, lpp, rail, nics, spines = self._shape()
        la = ns // npl * lpp + (ka if rail else 0)
        lb = nd // npl * lpp + (kb if rail else 0)
        pos = self._pos
        off_s, off_d = ns * self.node_block, nd * self.node_block
        tx0 = np.array([pos[("nic_tx", k)] for k in range(nics)], dtype=np.int64)
        rx0 = np.array([pos[("nic_rx", k)] for k in range(nics)], dtype=np.int64)
        cols = [tx0[ka] + off_s]  # each path's link ids, column by column; -1: none there
        cross = la != lb
        if bool(cross.any()):
            sp = np.zeros_like(la)
            if not self.ideal_ecmp:
                sp = _ecmp_array(ns * nics + ka, nd * nics + kb, spines, self.seed)
            # ("l2s", leaf, sp) then ("s2l", sp, leaf), leaf by leaf, spine by spine
            # (_link_keys), one spine per leaf under ideal ECMP
            per_leaf = 1 if self.ideal_ecmp else spines
            up0 = self._index.leaf_base
            cols.append(np.where(cross, up0 + 2 * (la * per_leaf + sp), -1))
            cols.append(np.where(cross, up0 + 2 * (lb * per_leaf + sp) + 1, -1))
        cols.append(rx0[kb] + off_d)
        if self._nic_behind_switch:
            # device -> its PCIe switch (-> host -> the NIC's switch) -> NIC and back: node
            # 0's ids per (device, NIC), padded with -1 to four links
            to = np.array(
                [(self._to_nic(0, d, k) + [-1] * 4)[:4] for d in range(g) for k in range(nics)],
                dtype=np.int64,
            )[a * nics + ka]
            fr = np.array(
                [(self._from_nic(0, k, d) + [-1] * 4)[:4] for d in range(g) for k in range(nics)],
                dtype=np.int64,
            )[b * nics + kb]
            cols = [
                *np.where(to >= 0, to + off_s[:, None], -1).T,
                *cols,
                *np.where(fr >= 0, fr + off_d[:, None], -1).T,
            ]
        table = np.stack(cols, axis=1)
        have = table >= 0
        # paths with the same columns present at once: a few shapes (crossing the spine or
        # not, via the host or not)
        shape = have @ (1 << np.arange(have.shape[1], dtype=np.int64))
        found: list[tuple[int, ...]] = []  # the paths shape by shape …
        rows: list[np.ndarray] = []  # … and their rows
        for sh in sorted(set(shape.tolist())):  # np.unique's order, without numpy.ma
            at = np.flatnonzero(shape == sh)
            # tuples straight from the columns (zip): no list per path on the way
            found.extend(zip(*table[at][:, have[at[0]]].T.tolist(), strict=True))
            rows.append(at)
        where = np.empty(rep.size, dtype=np.int64)
        where[np.concatenate(rows)] = np.arange(rep.size)
        paths = list(map(found.__getitem__, where.tolist()))
        return paths, count

    def _shape(self) -> tuple[int, int, bool, int, int]:
        """(nodes per leaf, leaves per pod, rail-optimized, NICs per node, spines), memoised."""
        shape = self._shape_memo
        if shape is None:
            so = self.system.scale_out
            shape = self._shape_memo = (
                so.nodes_per_leaf,
                self.leaves_per_pod,
                so.rail_optimized,
                self.system.nics.count,
                self.n_spines,
            )
        return shape

    # ---- arrays for the flow engine ----------------------------------------------------
    def capacity(self) -> np.ndarray:
        """Achievable capacity per link, bytes/s."""
        return np.array(self._caps)
