"""The planner: one system's channel walks and ring orders, and schedules by algorithm name.

Ring orders. Channel ``c`` enters node ``n`` at local device ``s_c`` and walks the node's devices
in order, reversing direction on odd nodes, so the edge from node n to n+1 joins two devices with
the same local index — the same NIC rail (NCCL builds its rings so that each crosses every node
boundary once per channel on one rail). On fabrics with groups (MLU-Link bridges, PCIe switches)
``s_c`` is a group's first device, so a ring crosses each group boundary once per node.
"""

from __future__ import annotations

import math

import numpy as np

from scaling.model.comm.algos.base import NotApplicable, Phase, Schedule, algorithm
from scaling.model.comm.algos.latency import ring_steps_per_pass
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.hardware.fabrics import fabric_of
from scaling.model.hardware.system import LinkClass, SystemSpec


def _fold_of(phases: list[Phase]) -> np.ndarray | None:
    """The ``fold`` codes of phases laid end to end (None where none of them folds)."""
    if all(p.fold is None for p in phases):
        return None
    return np.concatenate(
        [p.fold if p.fold is not None else np.zeros(p.src.size, np.int8) for p in phases]
    )


class Planner:
    """Builds schedules for one system: the channel walks and ring orders every algorithm
    shares, and :meth:`build` by name through the registry."""

    def __init__(self, system: SystemSpec, channels: int) -> None:
        self.system = system
        self.g = system.devices_per_node
        self.channels = channels
        fab = system.fabric
        #: the fabric kind's behaviour (:mod:`scaling.model.hardware.fabrics`)
        self.fabric = fabric_of(fab.kind)
        self.grouped = self.fabric.grouped
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

    def distinct_walks(self, k: int) -> dict[tuple[int, ...], tuple[int, int]]:
        """Each distinct local walk of the channels inside a node of ``k`` ranks -> (the first
        channel taking it, how many channels take it), in first-seen order. Channels of one
        walk add the same flows, so a schedule builds each walk once, weighted by its channels
        (:func:`~scaling.model.comm.algos.base.phase_of_arrays`: the same entries, first seen in
        the same order)."""
        walks: dict[tuple[int, ...], tuple[int, int]] = {}
        for c in range(self.channels):
            walk = tuple(self.local_walk(k, c))
            first, times = walks.get(walk, (c, 0))
            walks[walk] = (first, times + 1)
        return walks

    def _candidates(self, k: int, c: int) -> list[list[int]]:
        """Valid walks for channel ``c``: their cyclic structure is fixed by the fabric; where
        the walk is cut (its entry and exit devices) is free."""
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
                if self.fabric.direct_peers and size > 2:
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
        if self.fabric.direct_peers and k > 2:
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
        # the two walks' local ids once (a 4,096-rank ring has 512 nodes of the same two),
        # laid out node by node as one array expression (rings are built per channel, group
        # and run: a Python loop per node was a tenth of a cold structure's cost)
        ahead = np.array([group.local_base + d for d in fwd], dtype=np.int64)
        back = np.array([group.local_base + fwd[(-1 - j) % k] for j in range(k)], dtype=np.int64)
        i = np.arange(group.nodes, dtype=np.int64)
        local = np.where(((i % 2 == 1) & reverse_odd)[:, None], back, ahead)
        order: list[int] = ((group.first_node + i)[:, None] * g + local).ravel().tolist()
        return order

    def class_steps(self, group: Group, passes: int) -> dict[LinkClass, float]:
        """Sequential ring steps per link class, × passes."""
        return {c: passes * k for c, k in ring_steps_per_pass(self.system, group).items()}

    @property
    def intra_class(self) -> LinkClass:
        """The link class of a step between two devices of one node."""
        return self.fabric.intra_class

    # ---- algorithms ----------------------------------------------------------------------
    def build(self, name: str, op: CollectiveOp, group: Group) -> Schedule:
        """Schedule of the named algorithm; NotApplicable if it does not exist here."""
        if group.lanes > 1:
            # sibling communicators at once: the union of their flows, phase by phase
            return _union([self.build(name, op, group.lane(j)) for j in range(group.lanes)])
        if group.strided:
            return self._moved(self.build(name, op, group.standin()), group)
        try:
            algo = algorithm(name)
        except KeyError:
            raise NotApplicable(f"unknown algorithm {name!r}") from None
        if op not in algo.ops:
            have = ", ".join(sorted(o.value for o in algo.ops))
            raise NotApplicable(f"{name} exists for {have}")
        return algo.schedule(self, op, group)

    def _moved(self, sched: Schedule, group: Group) -> Schedule:
        """``sched`` (built on ``group``'s stand-in) moved onto ``group``'s real devices: the
        stand-in's rank i becomes the group's rank i, so every flow runs between the devices
        that really exchange it and is routed over their links (NICs, leaves, spines, PCIe
        switches). Latency steps are the stand-in's: the same shape takes the same steps."""
        fro = group.standin_devices(self.g)
        to = group.devices(self.g)
        move = np.arange(max(int(fro.max()), int(to.max())) + 1)
        move[fro] = to

        def moved(p: Phase) -> Phase:
            return Phase(move[p.src], move[p.dst], p.coeff, p.mult, p.fold)

        return Schedule(
            sched.algorithm,
            tuple(moved(p) for p in sched.phases),
            sched.steps,
            sched.wire_per_rank,
            sched.cross_rail,
        )

    def build_v(self, name: str, group: Group, sizes: PeerSizes) -> Schedule:
        """Schedule of the named algorithm's uneven all-to-all; NotApplicable if it has none
        or the sizes are not for this group. Sibling communicators (``lanes``) each run the
        same sizes (the union of their flows)."""
        if sizes.ranks != group.size:
            raise NotApplicable(f"peer sizes for {sizes.ranks} ranks, group of {group.size}")
        if group.lanes > 1:
            return _union([self.build_v(name, group.lane(j), sizes) for j in range(group.lanes)])
        try:
            algo = algorithm(name)
        except KeyError:
            raise NotApplicable(f"unknown algorithm {name!r}") from None
        if CollectiveOp.ALL_TO_ALL not in algo.ops:
            raise NotApplicable(f"{name} has no all-to-all")
        if group.strided:
            return self._moved(algo.schedule_v(self, group.standin(), sizes), group)
        return algo.schedule_v(self, group, sizes)


def _union(parts: list[Schedule]) -> Schedule:
    """Sibling communicators' schedules run at once: the union of their flows, phase by phase."""
    phases = tuple(
        Phase(
            np.concatenate([p.phases[i].src for p in parts]),
            np.concatenate([p.phases[i].dst for p in parts]),
            np.concatenate([p.phases[i].coeff for p in parts]),
            np.concatenate([p.phases[i].mult for p in parts]),
            _fold_of([p.phases[i] for p in parts]),
        )
        for i in range(len(parts[0].phases))
    )
    first = parts[0]
    return Schedule(first.algorithm, phases, first.steps, first.wire_per_rank, first.cross_rail)
