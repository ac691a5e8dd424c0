"""Routing statistics in the results (``moe_*`` columns, explain rows, replica intervals) and
the expert-parallel all-to-alls as the uneven ``all_to_allv`` the routing implies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling.model.analysis.metrics import METRICS
from scaling.model.comm.ops import CollectiveOp, Group, PeerSizes
from scaling.model.comm.uncontended import AnalyticCostModel
from scaling.model.routing import RoutingKind, RoutingLoad, RoutingSpec, RoutingStats, layer_loads
from scaling.model.simulation import run_job, run_job_detailed
from scaling.model.strategies.megatron.experts import a2a_sizes, dispatch_bytes
from tests.test_moe_megatron import SEQ, _cfg, _job, _shape, _spec

ZIPF = RoutingSpec(RoutingKind.ZIPF, 1.0)


def test_result_columns_are_the_routing_draws() -> None:
    """The moe_* columns are the mean / max over the MoE layers of the run's own draws."""
    shape = _shape()
    res = run_job(_job(_spec(expert_parallel=8, routing=ZIPF), seed=5))
    blocks = shape.n_layers - shape.moe.dense_layers
    loads = layer_loads(ZIPF, 16, 2, 8, 8 * SEQ, blocks, seed=5)
    assert res.moe_rank_load == pytest.approx(np.mean([x.busiest for x in loads]))
    assert res.moe_rank_load_max == max(x.busiest for x in loads)
    assert res.moe_expert_load == pytest.approx(np.mean([x.expert_peak for x in loads]))
    assert res.moe_dropped_share == 0.0 and res.moe_rank_load > 1.5
    for name in ("moe_rank_load", "moe_rank_load_max", "moe_expert_load", "moe_dropped_share"):
        assert name in METRICS and name in res.scalars()


def test_dense_model_reports_a_perfect_balance() -> None:
    from scaling.io.config import experiment_from_dict

    cfg = _cfg()
    cfg["model"] = "gpt3-125m"
    (job,) = experiment_from_dict(cfg).jobs()
    res = run_job(job)
    assert (res.moe_rank_load, res.moe_expert_load, res.moe_dropped_share) == (1.0, 1.0, 0.0)
    assert RoutingStats.of([]) == RoutingStats()
    assert run_job(_job(_spec())).moe_expert_load > 1.0  # a MoE model draws one even at EP=1


@settings(max_examples=40, deadline=None)
@given(
    s=st.floats(0.0, 2.5),
    seed=st.integers(0, 10_000),
    ep=st.sampled_from([1, 2, 4, 8]),
    top_k=st.integers(1, 4),
)
def test_no_drops_at_a_capacity_factor_at_or_above_the_max_load(
    s: float, seed: int, ep: int, top_k: int
) -> None:
    """Dropped share is 0 when the capacity factor is at least the busiest expert's load over
    the mean, and positive below it; the same seed draws the same loads."""
    spec = RoutingSpec(RoutingKind.ZIPF, s)
    free = layer_loads(spec, 16, top_k, ep, 512, 1, seed)[0]
    assert free == layer_loads(spec, 16, top_k, ep, 512, 1, seed)[0]
    assert free.dropped == 0.0 and max(free.received) == free.busiest
    assert sum(free.received) == pytest.approx(ep)
    at = layer_loads(replace(spec, capacity_factor=free.expert_peak), 16, top_k, ep, 512, 1, seed)
    assert at[0].dropped == 0.0 and at[0].busiest == pytest.approx(free.busiest)
    if free.expert_peak > 1.01:
        cf = free.expert_peak * 0.9
        below = layer_loads(replace(spec, capacity_factor=cf), 16, top_k, ep, 512, 1, seed)
        assert below[0].dropped > 0.0


def test_uniform_shares_give_the_uniform_all_to_all() -> None:
    """Loads of exactly 1 are the closed form: nccl-tests size tokens·k·h·bytes, no per-peer
    sizes, (EP−1)/EP of it leaving each rank; a skewed load keeps the size and sends each rank
    its share."""
    s = dispatch_bytes(SEQ, 2, 1024, 2)
    assert a2a_sizes(RoutingLoad(1.0, 0.0, 1.0, (1.0,) * 8), s) == (s, None)
    cost = AnalyticCostModel(_job(_spec()).system).cost(CollectiveOp.ALL_TO_ALL, s, Group(1, 8))
    assert cost.bytes_sent_per_rank == pytest.approx(s * 7 / 8)
    skew = (2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5)
    n, sizes = a2a_sizes(RoutingLoad(2.0, 0.0, 2.0, skew), s)
    assert n == s and sizes is not None
    assert np.array_equal(sizes.weights, np.tile(skew, (8, 1)))


def test_all_to_all_follows_the_busiest_receiver() -> None:
    """The EP all-to-alls carry the routing's per-peer sizes: on one NVSwitch node each
    rank's in-link takes what it receives, so the call is (near) busiest× the uniform one's
    bandwidth time and more skew never makes it faster."""
    times = []
    for s in (0.0, 1.0, 2.0):
        job = _job(_spec(expert_parallel=8, routing=RoutingSpec(RoutingKind.ZIPF, s)), seed=1)
        _, tl = run_job_detailed(job, trace=True)
        a2a = [r for r in tl.collectives if r.key.kind == "ep"]
        times.append(float(np.mean([r.end_s - r.start_s for r in a2a])))
    assert times == sorted(times) and times[2] > 2.5 * times[0], times
    # one call against the pricing model directly: the uneven one against the uniform one
    load = layer_loads(RoutingSpec(RoutingKind.ZIPF, 2.0), 16, 2, 8, 8 * SEQ, 1, seed=1)[0]
    s = dispatch_bytes(SEQ, 2, 1024, 2)
    pricing = AnalyticCostModel(_job(_spec()).system)
    n, sizes = a2a_sizes(load, s)
    even = pricing.cost(CollectiveOp.ALL_TO_ALL, s, Group(1, 8))
    uneven = pricing.cost(CollectiveOp.ALL_TO_ALL, n, Group(1, 8), sizes=sizes)
    bw_even = even.time_s - even.latency_s
    bw_uneven = uneven.time_s - uneven.latency_s
    # rank d receives received[d]·S/8 from each of the 7 others (its own share stays): the
    # busiest receiver's in-link carries busiest× the uniform one's
    assert bw_uneven / bw_even == pytest.approx(load.busiest, rel=0.15)
    assert bw_uneven > 3 * bw_even


def test_uneven_all_to_all_on_sibling_communicators() -> None:
    """EP groups with several lanes (sibling EP groups inside a node) run the uneven
    all-to-all on each lane."""
    pricing = AnalyticCostModel(_job(_spec()).system)
    sizes = PeerSizes(np.tile([2.0, 1.0, 0.5, 0.5], (4, 1)))
    one = pricing.cost(CollectiveOp.ALL_TO_ALL, 1e8, Group(1, 4), sizes=sizes)
    two = pricing.cost(CollectiveOp.ALL_TO_ALL, 1e8, Group(1, 4, lanes=2), sizes=sizes)
    assert two.time_s == pytest.approx(one.time_s, rel=1e-9)


def _replica_summary(moe: dict[str, Any], n: int = 4) -> Any:
    from scaling.io.config import experiment_from_dict
    from scaling.sweep.executors import make_executor
    from scaling.sweep.replicas import run_replicas

    exp = experiment_from_dict(_cfg(moe=moe, expert_parallel=8))
    with make_executor(jobs=1) as ex:
        return run_replicas(exp, n, ex)


def test_replicas_give_the_interval_of_the_routing() -> None:
    """Each replica's seed draws its own routing: the summary has the routing metrics and a
    spread of the step time that the skew implies."""
    table, summary = _replica_summary({"routing": "zipf", "zipf_s": 1.2})
    assert table["moe_rank_load"].nunique() == 4
    rows = summary.set_index("metric")
    assert {"moe_rank_load", "moe_expert_load", "moe_dropped_share"} <= set(rows.index)
    st_row = rows.loc["step_time_s"]
    assert st_row["p97.5"] > st_row["p2.5"]
    lo, hi = rows.loc["moe_rank_load", "p2.5"], rows.loc["moe_rank_load", "p97.5"]
    assert 1.0 < lo < hi


def test_explain_has_routing_rows() -> None:
    from scaling.app.api_analysis import explain_rows
    from scaling.io.config import experiment_from_dict

    exp = experiment_from_dict(_cfg(moe={"routing": "zipf", "zipf_s": 1.0}, expert_parallel=8))
    rows, lines = explain_rows(exp, top=0)
    routing = {r["label"]: r["value"] for r in rows if r["kind"] == "routing"}
    assert set(routing) == {"moe_rank_load", "moe_rank_load_max", "moe_expert_load",
                            "moe_dropped_share"}  # fmt: skip
    assert routing["moe_rank_load"] > 1.0
    assert any("MoE routing" in ln for ln in lines)


def test_dropped_tokens_are_not_sent() -> None:
    """Bytes on the wire follow the uneven sizes: rank 0 sends each peer its share, and what a
    capacity factor drops is not dispatched."""
    zipf = RoutingSpec(RoutingKind.ZIPF, 1.5)
    free = run_job(_job(_spec(expert_parallel=8, routing=zipf)))
    cut = run_job(_job(_spec(expert_parallel=8, routing=replace(zipf, capacity_factor=1.0))))
    assert cut.moe_dropped_share > 0.2
    assert cut.comm_bytes_per_rank < free.comm_bytes_per_rank
