"""Shapley attribution of the gap between two systems (scaling explain --vs)."""

from __future__ import annotations

import dataclasses

import pytest

from scaling.io.config import experiment_from_dict
from scaling.io.topology import load_system
from scaling.model.analysis.attribution import (
    COMPONENTS,
    attribute,
    hybrid,
    shapley,
    throughput_per_device,
)

NET = ("scale-up link", "scale-out network", "collective library")


def _job(nodes: int, model: str = "gpt3-350m"):
    return experiment_from_dict(
        {
            "model": model,
            "systems": ["dgx-a100"],
            "nodes": [nodes],
            "training": {"micro_batch_size": 4},
            "simulation": {"steps": 1, "warmup_steps": 2},
        }
    ).jobs()[0]


def test_shapley_of_an_additive_game_is_each_players_value() -> None:
    w = {"a": 1.0, "b": -2.5, "c": 4.0}
    phi = shapley(lambda s: sum(w[p] for p in s), ("a", "b", "c"))
    assert phi == pytest.approx(w)


def test_shapley_splits_an_interaction_evenly() -> None:
    phi = shapley(lambda s: 6.0 if {"a", "b"} <= s else 0.0, ("a", "b", "c"))
    assert phi == pytest.approx({"a": 3.0, "b": 3.0, "c": 0.0})


def test_parts_sum_to_the_gap() -> None:
    at = attribute(_job(4), load_system("dgx-a100").spec, load_system("mlu370-x8").spec)
    assert set(at.parts) == set(COMPONENTS)
    assert sum(at.parts.values()) == pytest.approx(at.gap, rel=1e-9)
    assert sum(at.shares().values()) == pytest.approx(1.0, rel=1e-9)


def test_hybrid_with_everything_swapped_performs_like_b() -> None:
    a, b = load_system("dgx-a100").spec, load_system("mlu370-x8").spec
    job = _job(2)
    full = hybrid(a, b, frozenset(COMPONENTS))
    assert throughput_per_device(dataclasses.replace(job, system=full)) == pytest.approx(
        throughput_per_device(dataclasses.replace(job, system=b)), rel=1e-12
    )
    assert hybrid(a, b, frozenset()) == a


def test_interconnect_and_library_share_grows_with_scale() -> None:
    a, b = load_system("dgx-a100").spec, load_system("mlu370-x8").spec
    shares = {}
    for n in (1, 32):
        at = attribute(_job(n), a, b)
        shares[n] = sum(at.shares()[c] for c in NET)
    print(
        f"\ninterconnect + library share of the mlu370-x8 gap: 1 node {shares[1]:.1%}, 32 nodes {shares[32]:.1%}"
    )
    assert shares[32] > shares[1]


@pytest.mark.slow
def test_interconnect_and_library_share_at_256_nodes_gpt3_1p3b() -> None:
    a, b = load_system("dgx-a100").spec, load_system("mlu370-x8").spec
    one = attribute(_job(1, "gpt3-1.3b"), a, b)
    big = attribute(_job(256, "gpt3-1.3b"), a, b)
    s1 = sum(one.shares()[c] for c in NET)
    s256 = sum(big.shares()[c] for c in NET)
    print(f"\nGPT-3 1.3B: interconnect + library share 1 node {s1:.1%}, 256 nodes {s256:.1%}")
    assert s256 > s1


# --- the plan of explain --vs (model.analysis.attribution_plan) --------------------------------


class _FailingMap:
    """Runs nothing: every call reports the same error line (as a crashed worker would)."""

    def imap_grouped(self, fn, args, keys):
        for i in range(len(args)):
            yield i, False, "RuntimeError: boom"


class _Bar:
    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n


def test_a_failed_hybrid_is_one_error_naming_it() -> None:
    from scaling.model.analysis.attribution_plan import HybridRunError, attribute_many

    a, b = load_system("dgx-a100").spec, load_system("mlu370-x8").spec
    with pytest.raises(HybridRunError) as e:
        attribute_many(_job(1, "gpt3-125m"), a, b, [1], _FailingMap())
    # the plan runs the largest node count's hybrids first, the empty swap (system A) first
    assert (
        str(e.value) == "the hybrid at 1 nodes with none from mlu370-x8 failed: RuntimeError: boom"
    )


def test_the_plan_runs_each_distinct_hybrid_once_and_counts_it() -> None:
    from scaling.model.analysis.attribution_plan import attribute_many, hybrid_plan
    from scaling.sweep.executors import SerialExecutor

    job = _job(1, "gpt3-125m")
    a, b = load_system("dgx-a100").spec, load_system("mlu370-x8").spec
    run, twins = hybrid_plan(job, a, b, [1, 2])
    assert len(run) + len(twins) == 2 * 2 ** len(COMPONENTS)
    assert [n for n, _ in run] == sorted((n for n, _ in run), reverse=True)
    # a twin differs from the hybrid it stands for only by the memory capacity
    assert all(s - t == {"memory capacity"} and n == m for (n, s), (m, t) in twins.items())
    bar = _Bar()
    with SerialExecutor() as ex:
        one, two = attribute_many(job, a, b, [1, 2], ex, bar)
    assert bar.n == len(run)
    assert (one.nodes, two.nodes) == (1, 2) and one == attribute(job, a, b)
    assert sum(two.parts.values()) == pytest.approx(two.gap)
