"""NVLSTree, PAT and NVLS all-gather/reduce-scatter schedules (scaling.model.comm.algorithms):
their bytes, where they exist, and that a run takes what the tuner predicted."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from scaling.io.topology import load_system
from scaling.model.comm.algos import NotApplicable
from scaling.model.comm.algos import Planner as Algorithms
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group

AR, AG, RS = CollectiveOp.ALL_REDUCE, CollectiveOp.ALL_GATHER, CollectiveOp.REDUCE_SCATTER


@pytest.fixture(scope="module")
def h100_algos() -> Algorithms:
    spec = load_system("dgx-h100").spec
    return Algorithms(spec, spec.library.channels)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 32, 37, 64])
def test_pat_moves_what_a_ring_moves(h100_algos: Algorithms, n: int) -> None:
    """PAT sends (n−1)/n·S per rank over ⌈log2 n⌉ steps at power-of-two distances."""
    s = h100_algos.build("pat", AG, Group(n, 1))
    assert len(s.phases) == int(np.ceil(np.log2(n)))
    total = sum(float(ph.coeff[0]) for ph in s.phases)
    assert total == pytest.approx((n - 1) / n)
    for ph in s.phases:
        assert ph.src.size == n and len(set(ph.src.tolist())) == n  # one send per rank per step


def test_pat_only_one_rank_per_node(h100_algos: Algorithms) -> None:
    """ncclPatEnable: nNodes == nRanks; PAT is never an all-reduce (tuning.cc)."""
    with pytest.raises(NotApplicable):
        h100_algos.build("pat", AG, Group(4, 8))
    with pytest.raises(NotApplicable):
        h100_algos.build("pat", AR, Group(4, 1))
    with pytest.raises(NotApplicable):
        h100_algos.build("pat", AG, Group(1, 1))


@pytest.mark.parametrize("n", [2, 3, 4, 7, 16, 33, 64])
def test_nvls_tree_node_load_at_most_2s(h100_algos: Algorithms, n: int) -> None:
    """Across nodes each node sends and receives at most 2·S (the complementary trees); inside
    a node each device's NVLink up and down carry S (the NVLS part)."""
    g = 8
    (ph,) = h100_algos.build("nvls_tree", AR, Group(n, g)).phases
    w = ph.coeff * ph.mult
    cross = ph.src // g != ph.dst // g
    out = np.bincount(ph.src[cross] // g, weights=w[cross], minlength=n)
    inn = np.bincount(ph.dst[cross] // g, weights=w[cross], minlength=n)
    assert out.max() <= 2.0 + 1e-9 and inn.max() <= 2.0 + 1e-9
    if n == 2:
        assert out.max() == pytest.approx(1.0)  # two nodes: S each way (tuning.cc doubles it)
    up = np.bincount(ph.src[~cross], weights=w[~cross], minlength=n * g)
    dn = np.bincount(ph.dst[~cross], weights=w[~cross], minlength=n * g)
    assert np.allclose(up, 1.0) and np.allclose(dn, 1.0)


def test_nvls_where_nccl_has_it(h100_algos: Algorithms) -> None:
    """NVLS: AR/AG/RS on one node of an NVLS switch; NVLSTree: all-reduce on 2+ such nodes;
    neither on DGX A100 (no in-switch reduction)."""
    for op in (AR, AG, RS):
        h100_algos.build("nvls", op, Group(1, 8))
        with pytest.raises(NotApplicable):
            h100_algos.build("nvls", op, Group(2, 8))  # needs CollNet across nodes
    for op in (AG, RS, CollectiveOp.BROADCAST):
        with pytest.raises(NotApplicable):
            h100_algos.build("nvls_tree", op, Group(2, 8))
    with pytest.raises(NotApplicable):
        h100_algos.build("nvls_tree", AR, Group(1, 8))
    a100 = load_system("dgx-a100").spec
    algos = Algorithms(a100, a100.library.channels)
    for name, group in (("nvls", Group(1, 8)), ("nvls_tree", Group(4, 8))):
        with pytest.raises(NotApplicable):
            algos.build(name, AR, group)


@pytest.mark.parametrize(
    ("algorithm", "op", "group", "nodes"),
    [
        ("nvls_tree", AR, Group(4, 8), 4),
        ("pat", AG, Group(8, 1), 8),
        ("pat", RS, Group(5, 1, 0, 3), 5),
        ("nvls", AG, Group(1, 8), 1),
    ],
)
def test_uncontended_run_takes_the_prediction(
    algorithm: str, op: CollectiveOp, group: Group, nodes: int
) -> None:
    """On an empty network a forced run of each new algorithm takes exactly its prediction."""
    env = simpy.Environment()
    fc = FlowCollectives(env, load_system("dgx-h100").spec, nodes)
    size = 256.0 * 2**20
    pred = fc.predict(op, size, group, algorithm)
    assert pred.protocol == "Simple"
    env.run(env.process(fc.run(op, size, group, algorithm)))
    assert env.now == pytest.approx(pred.time_s, rel=1e-9)
