"""HCCL's NB (nonuniform Bruck) between servers: Bruck's log-step pattern moves what a ring
moves, on any server count, and HCCL's structural alternative lists it."""

from __future__ import annotations

import math

import pytest

from scaling.io.topology import load_system
from scaling.model.comm.algos import NotApplicable, Planner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.comm.uncontended import AnalyticCostModel
from scaling.model.hardware.system import LinkClass

AG, AR = CollectiveOp.ALL_GATHER, CollectiveOp.ALL_REDUCE


@pytest.mark.parametrize("n", [2, 3, 5, 8, 12, 16])
def test_bruck_steps_move_what_a_ring_moves(n: int) -> None:
    spec = load_system("atlas-800t-a2").spec
    plan = Planner(spec, spec.library.channels)
    s = plan.build("nb", AG, Group(n, 1))
    assert len(s.phases) == math.ceil(math.log2(n))
    assert s.steps == {LinkClass.NETWORK: math.ceil(math.log2(n))}
    first = s.phases[0].src[0]
    sent = sum(float(ph.coeff[ph.src == first].sum()) for ph in s.phases)
    assert sent == pytest.approx((n - 1) / n)
    # all-reduce of k ranks per server: the servers' shards S/k, Bruck both ways, per rail
    ar = plan.build("nb", AR, Group(n, 8))
    inter = ar.phases[1:-1]
    assert len(inter) == 2 * math.ceil(math.log2(n))
    dev = inter[0].src[0]
    assert sum(float(ph.coeff[ph.src == dev].sum()) for ph in inter) == pytest.approx(
        2 * (n - 1) / n / 8
    )
    with pytest.raises(NotApplicable):
        plan.build("nb", AG, Group(n, 8))


def test_nb_is_hccls_alternative_and_wins_on_latency() -> None:
    ls = load_system("atlas-800t-a2")
    (alt,) = [a for a in ls.library.alternatives if a.name == "nb-inter-server"]
    assert "nb" in alt.set["algorithms"] and "nb" not in ls.spec.library.algorithms
    model = AnalyticCostModel(ls.spec)
    group = Group(16, 8)
    nb = model.price(AR, 2.0**20, group, "nb")
    hier = model.price(AR, 2.0**20, group, "hierarchical")
    # 2·log2(16) = 8 network steps against the ring's 2·15 = 30 between servers
    assert nb.time_s < hier.time_s
