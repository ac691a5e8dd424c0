"""Groups with a stride are priced on the links they really use (issues 25 and 27).

A strided group (HSDP's shard group on a shard-major 2-D DeviceMesh, a Megatron DP group under
``tp-pp-dp``) is a :class:`Group` with ``node_stride`` / ``local_stride``; the planner builds an
algorithm's flows on the stand-in of the same shape and moves them onto the real devices. Closed
forms: a ring all-reduce over ``n`` nodes crosses each node boundary once per channel in each
pass, so the bytes through NIC transmit links sum to ``n · 2(p−1)/p · S`` for a group spanning
``n`` nodes, and zero for a group inside one node.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import simpy

from scaling.io.config import experiment_from_dict
from scaling.io.errors import ConfigError
from scaling.io.topology import load_system
from scaling.model.analysis.schedule import group_ranks, rank_schedule
from scaling.model.comm.algos.latency import hop_latency_s
from scaling.model.comm.flowcoll import FlowCollectives
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.system import LinkClass
from scaling.model.simulation import run_job, run_job_detailed
from scaling.model.strategies.fsdp_mesh import HSDPMesh

AR = CollectiveOp.ALL_REDUCE


def _nic_bytes(fc: FlowCollectives, group: Group, kind: str = "nic_tx") -> tuple[float, set[int]]:
    """(bytes per byte of S through links of ``kind``, devices the flows run between)."""
    sched = fc.schedule("ring", AR, group)
    assert sched is not None
    total, devs = 0.0, set()
    for ph in sched.phases:
        devs |= set(ph.src.tolist()) | set(ph.dst.tolist())
        pids, coeff, mult = fc.flows(ph)
        for pid, c, m in zip(pids.tolist(), coeff.tolist(), mult.tolist(), strict=True):
            links = fc.net.solver.path_links(pid)
            if any(fc.cluster.links[int(x)].key[0] == kind for x in links):
                total += c * m
    return total, devs


def test_of_ranks_reads_strides_and_refuses_uneven_sets() -> None:
    g = Group.of_ranks([0, 2, 4, 6], 4)
    assert g == Group(2, 2, 0, 0, 1, node_stride=1, local_stride=2)
    assert g.devices(4).tolist() == [0, 2, 4, 6]
    assert g.standin_devices(4).tolist() == [0, 1, 4, 5]
    assert Group.of_ranks([0, 4], 2) == Group(2, 1, 0, 0, node_stride=2)
    assert Group.of_ranks([0, 1, 2, 3], 8) == Group(1, 4)  # contiguous: no stride
    with pytest.raises(ValueError, match="evenly spaced"):
        Group.of_ranks([0, 1, 4], 4)  # two ranks on node 0, one on node 1


def test_strided_ranks_of_every_rank() -> None:
    # the group recorded for rank 0 stands for its siblings: each rank gets its own
    g = Group.of_ranks([0, 2, 4, 6], 4)
    assert [group_ranks(g, r, 4) for r in range(8)] == [[0, 2, 4, 6], [1, 3, 5, 7]] * 4
    lanes = Group.of_ranks([0, 4], 2, lanes=2)
    assert [group_ranks(lanes, r, 2) for r in range(4)] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    # the lane a device is in (trace rows): interleaved for a strided group
    assert [Group.of_ranks([0, 2, 4, 6], 4, lanes=2).lane_of(r, 4) for r in range(4)] == [0, 1] * 2
    assert [lanes.lane_of(r, 2) for r in range(4)] == [0, 1, 0, 1]


def test_strided_all_reduce_crosses_the_nics_a_contiguous_one_does_not() -> None:
    system = load_system("dgx-a100").spec
    fc = FlowCollectives(simpy.Environment(), system, 2)
    p = 8
    strided = Group.of_ranks(list(range(0, 16, 2)), 8)  # {0, 2, …, 14}: 4 per node, 2 nodes
    contiguous = Group(1, 8)  # {0, …, 7}: one node
    nic, devs = _nic_bytes(fc, strided)
    assert nic == pytest.approx(2 * 2 * (p - 1) / p)  # n · 2(p−1)/p, n = 2 nodes
    assert devs == set(range(0, 16, 2))  # flows only between the group's own devices
    nic, devs = _nic_bytes(fc, contiguous)
    assert nic == 0.0 and devs == set(range(8))
    # the same shape, whatever the stride, on a switched node: the same time
    size = 2.0**28
    t_strided = fc.predict(AR, size, strided, "ring").time_s
    assert t_strided == pytest.approx(fc.predict(AR, size, Group(2, 4), "ring").time_s)
    assert t_strided > 2 * fc.predict(AR, size, contiguous, "ring").time_s


def test_a_group_strided_over_pods_crosses_the_spine() -> None:
    system = load_system("dgx-a100").spec
    npl = system.scale_out.nodes_per_leaf
    fc = FlowCollectives(simpy.Environment(), system, 2 * npl)
    far = Group.of_ranks([0, npl * 8], 8)  # node 0 and the first node of the next pod
    near = Group(2, 1)  # nodes 0 and 1, one leaf per rail
    assert _nic_bytes(fc, far, "l2s")[0] > 0
    assert _nic_bytes(fc, near, "l2s")[0] == 0
    spine = system.scale_out.spine_latency_s
    net = LinkClass.NETWORK
    assert hop_latency_s(system, far)[net] == pytest.approx(
        hop_latency_s(system, near)[net] + spine
    )


def _hsdp(nodes: int, mesh: dict[str, Any] | None, network: str = "analytic") -> Any:
    strategy: dict[str, Any] = {"kind": "fsdp", "sharding": "hybrid_shard", **(mesh or {})}
    return experiment_from_dict(
        {
            "model": "gpt3-125m",
            "systems": ["dgx-a100"],
            "nodes": [nodes],
            "strategy": strategy,
            "training": {"micro_batch_size": 1, "seq_len": 256},
            "simulation": {"steps": 1, "warmup_steps": 0, "network": network},
        }
    ).jobs()[0]


@pytest.mark.parametrize("network", ["analytic", "flow"])
def test_shard_major_mesh_shards_across_nodes(network: str) -> None:
    # 16 ranks, init_device_mesh((8, 2), ("shard", "replicate")): shard over {0, 2, …, 14}
    # (across both nodes), replicate over {0, 1} (inside node 0)
    job = _hsdp(2, {"mesh_shape": [8, 2], "mesh_dim_names": ["shard", "replicate"]}, network)
    assert job.strategy.mesh == HSDPMesh(2, 8, shard_major=True)
    _, timeline = run_job_detailed(job, trace=True)
    calls = rank_schedule(timeline, 0)
    groups = {(c["op"], tuple(c["group"])) for c in calls}
    assert ("reduce_scatter", tuple(range(0, 16, 2))) in groups
    assert ("all_reduce", (0, 1)) in groups
    assert all(c["group"] != list(range(8)) for c in calls)
    # the shard traffic crosses the NICs: slower than sharding inside each node
    node_sharded = run_job(_hsdp(2, None, network)).step_time_s
    assert run_job(job).step_time_s > node_sharded


def test_node_major_mesh_is_the_default_hybrid_shard() -> None:
    # init_device_mesh((2, 8), ("replicate", "shard")) on 2 nodes of 8 = shard inside a node
    explicit = run_job(_hsdp(2, {"mesh_shape": [2, 8]})).step_time_s
    assert explicit == run_job(_hsdp(2, None)).step_time_s


@pytest.mark.parametrize(
    ("mesh", "needle"),
    [
        ({"mesh_shape": [4, 2]}, "mesh_shape: got 8 ranks; expected the job's 16 devices"),
        ({"mesh_shape": [3, 2], "sharding": "full_shard"}, "set sharding: hybrid_shard"),
        ({"mesh_dim_names": ["shard", "replicate"]}, "set mesh_shape"),
    ],
)
def test_bad_mesh_is_one_line(mesh: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        _hsdp(2, mesh)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg.strip()


def test_mesh_error_names_uneven_groups() -> None:
    # 24 ranks on 3 nodes of 8, shard-major (8, 3): shard group {0, 3, …, 21} sits on local
    # devices 0, 3, 6 of node 0 but 1, 4, 7 of node 1
    assert "unevenly" in HSDPMesh(3, 8, shard_major=True).error(24, 8)
    assert HSDPMesh(2, 8, shard_major=True).error(16, 8) == ""
    assert np.array_equal(
        Group.of_ranks(HSDPMesh(2, 8, shard_major=True).replicate_ranks(5), 8).devices(8),
        [4, 5],
    )
