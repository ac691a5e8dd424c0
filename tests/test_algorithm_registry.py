"""A new collective algorithm is one class and a registration: a toy defined here runs through
the tuner, the flow network, ``scaling collective``'s table and a library file's schema with
nothing else edited. And the registry's invariants: every built-in declares its hooks on the
base, and a library's algorithm constants are checked against what each algorithm declares."""

from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np
import pytest

from scaling.app.collective import collective_table
from scaling.io.errors import ConfigError, read_yaml, validate
from scaling.io.library import LibrarySchema
from scaling.io.topology import bundled_topology_dir, load_system, to_library_profile
from scaling.model.comm.algos import (
    Algorithm,
    NotApplicable,
    Param,
    Phase,
    Planner,
    Schedule,
    algorithm,
    algorithm_names,
    register,
    unregister,
)
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LibraryProtocol, LinkClass, SystemSpec

AR = CollectiveOp.ALL_REDUCE


class Star(Algorithm):
    """Toy: every rank sends its S to rank 0, which sends the reduced S back (two phases)."""

    name = "toy_star"
    ops = frozenset({AR})
    params: ClassVar[dict[str, Param]] = {"root_extra_us": Param(unit=1e-6, required=False)}

    def schedule(self, plan: Planner, op: CollectiveOp, group: Group) -> Schedule:
        if group.size < 2:
            raise NotApplicable("a star needs two ranks")
        devs = group.devices(plan.g)
        leaves, root = devs[1:], np.full(devs.size - 1, devs[0])
        one = np.ones(leaves.size)
        mult = np.ones(leaves.size, dtype=np.int64)
        cls = plan.intra_class if group.nodes == 1 else LinkClass.NETWORK
        return Schedule(
            self.name,
            (Phase(leaves, root, one, mult), Phase(root, leaves, one, mult)),
            {cls: 2.0},
            1.0,
        )

    def latency_s(
        self, system: SystemSpec, proto: LibraryProtocol, group: Group, sched: Schedule
    ) -> float:
        return super().latency_s(system, proto, group, sched) + self.param(system, "root_extra_us")


@pytest.fixture(autouse=True)
def _toy_registered():
    """The toy is registered for this module's tests only: the registry outlives a test, and
    the CLI's help lists every registered algorithm."""
    register(Star)
    yield
    unregister(Star.name)


def test_a_toy_algorithm_runs_through_the_collective_table() -> None:
    spec = load_system("dgx-a100").spec
    df = collective_table(spec, 1, AR, [2**20, 2**24], algorithm="toy_star", protocol="Simple")
    assert list(df.algorithm) == ["toy_star", "toy_star"]
    # two phases, each bound by rank 0's one link carrying (p-1)·S: the star is slower than
    # the ring's 2(p-1)/p·S per link
    ring = collective_table(spec, 1, AR, [2**24], algorithm="ring", protocol="Simple")
    assert df.time_us.iloc[1] > 3 * ring.time_us.iloc[0]
    analytic = collective_table(
        spec, 1, AR, [2**24], algorithm="toy_star", protocol="Simple", network="analytic"
    )
    assert analytic.time_us.iloc[0] == pytest.approx(df.time_us.iloc[1], rel=1e-12)


def test_a_library_file_lists_the_toy_and_its_declared_constant() -> None:
    path = bundled_topology_dir() / "libraries" / "nccl.yaml"
    doc = copy.deepcopy(read_yaml(path, "library")[0])
    doc["algorithms"] = [*doc["algorithms"], "toy_star"]
    q = {"value": 5.0, "source": "test", "confidence": "measured"}
    doc["algorithm_params"]["toy_star"] = {"root_extra_us": q}
    lib = to_library_profile(validate(LibrarySchema, doc, "<toy>", None))
    assert lib.algorithm_params["toy_star"]["root_extra_us"] == pytest.approx(5e-6)
    # an undeclared constant, or one of an algorithm the library does not list, is refused
    bad = copy.deepcopy(doc)
    bad["algorithm_params"]["toy_star"] = {"root_latency_us": q}
    with pytest.raises(ConfigError, match="toy_star declares root_extra_us"):
        validate(LibrarySchema, bad, "<toy>", None)
    bad = copy.deepcopy(doc)
    bad["algorithms"].remove("toy_star")
    with pytest.raises(ConfigError, match="not in this library's algorithms"):
        validate(LibrarySchema, bad, "<toy>", None)
    bad = copy.deepcopy(doc)
    del bad["algorithm_params"]["pat"]["bw_factor"]
    with pytest.raises(ConfigError, match="pat needs bw_factor"):
        validate(LibrarySchema, bad, "<toy>", None)


def test_every_builtin_is_registered_and_fills_only_declared_hooks() -> None:
    builtin = {"ring", "tree", "rhd", "direct", "hierarchical", "nvls", "nvls_tree", "pat"}
    assert builtin <= set(algorithm_names())
    hooks = {n for n in [*vars(Algorithm), *Algorithm.__annotations__] if not n.startswith("_")}
    for name in builtin:
        cls = type(algorithm(name))
        assert cls.name == name
        own = {n for n in vars(cls) if not n.startswith("_")}
        assert own <= hooks, f"{name} defines undeclared {own - hooks}"
