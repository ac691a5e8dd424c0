"""HSDP's 2-D device mesh: which ranks shard a unit together and which replicate it.

PyTorch builds a hybrid-sharded job on a 2-D ``DeviceMesh`` whose dimension 0 replicates and
dimension 1 shards: FSDP1 ``FullyShardedDataParallel(sharding_strategy=HYBRID_SHARD,
device_mesh=mesh)`` takes ``mesh.get_group(1)`` as the shard group and ``mesh.get_group(0)`` as
the replicate group (``torch/distributed/fsdp/_init_utils.py``
``_init_process_group_state_for_hybrid_shard``); FSDP2 ``fully_shard(mesh=mesh)`` on a 2-D mesh
is HSDP with the same roles (``torch/distributed/fsdp/_fully_shard/_fsdp_init.py``
``_get_device_mesh_info``: ``HSDPMeshInfo(shard_mesh_dim=1, replicate_mesh_dim=0)``).

``init_device_mesh(device, mesh_shape, mesh_dim_names)`` lays the ranks out row-major,
``arange(world).view(mesh_shape)`` (``torch/distributed/device_mesh.py``). With names
``("replicate", "shard")`` a shard group is a block of consecutive ranks (the usual "shard
inside a node"); with ``("shard", "replicate")`` the ranks are shard-major and the mesh is
handed to FSDP transposed, so a shard group is strided: on 8 ranks, mesh shape (4, 2) gives
shard groups {0, 2, 4, 6}, {1, 3, 5, 7} and replicate groups {0, 1}, {2, 3}, …

Each group is a :class:`~scaling.model.comm.ops.Group` with its real strides, so it is priced
on the links it really uses (a shard group strided over nodes crosses the NICs).
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model.comm.ops import Group

#: the two layouts ``mesh_dim_names`` can name (dimension 0 first)
CONTIGUOUS = ("replicate", "shard")
SHARD_MAJOR = ("shard", "replicate")


@dataclass(frozen=True, slots=True)
class HSDPMesh:
    """A (replicate × shard) mesh of ranks.

    Attributes:
        replicate: ranks holding the same shard (the replicate dimension's size).
        shard: ranks one unit is sharded over (the shard dimension's size).
        shard_major: ranks laid out shard-major (``mesh_dim_names`` ``("shard",
            "replicate")``): strided shard groups, consecutive replicate groups.
    """

    replicate: int
    shard: int
    shard_major: bool = False

    @classmethod
    def from_config(cls, shape: tuple[int, int], dim_names: tuple[str, str]) -> HSDPMesh:
        """The mesh of ``init_device_mesh(mesh_shape=shape, mesh_dim_names=dim_names)``."""
        if dim_names == CONTIGUOUS:
            return cls(shape[0], shape[1])
        return cls(shape[1], shape[0], shard_major=True)

    def shard_ranks(self, rank: int) -> list[int]:
        """The ranks ``rank`` shards its units with (its row of the mesh), ascending."""
        if self.shard_major:
            rep = rank % self.replicate
            return [rep + self.replicate * i for i in range(self.shard)]
        row = rank // self.shard
        return [row * self.shard + i for i in range(self.shard)]

    def replicate_ranks(self, rank: int) -> list[int]:
        """The ranks holding ``rank``'s shard (its column of the mesh), ascending."""
        if self.shard_major:
            col = rank // self.replicate
            return [col * self.replicate + i for i in range(self.replicate)]
        sh = rank % self.shard
        return [sh + self.shard * i for i in range(self.replicate)]

    def shard_group(self, rank: int, devices_per_node: int, one_call: bool) -> Group:
        """:meth:`shard_ranks` as a group (see :func:`placed`)."""
        return placed(self.shard_ranks(rank), devices_per_node, one_call)

    def replicate_group(self, rank: int, devices_per_node: int, one_call: bool) -> Group:
        """:meth:`replicate_ranks` as a group (see :func:`placed`)."""
        return placed(self.replicate_ranks(rank), devices_per_node, one_call)

    def error(self, devices: int, devices_per_node: int) -> str:
        """Why the mesh cannot be placed on ``devices`` devices ("" when it can)."""
        if self.replicate * self.shard != devices:
            return (
                f"mesh_shape: got {self.replicate * self.shard} ranks; expected the job's "
                f"{devices} devices"
            )
        for rank in range(min(devices, 2 * devices_per_node)):
            for ranks in (self.shard_ranks(rank), self.replicate_ranks(rank)):
                try:
                    Group.of_ranks(ranks, devices_per_node)
                except ValueError:
                    return (
                        f"mesh_shape: ranks {ranks[:6]} straddle nodes of {devices_per_node} "
                        "devices unevenly; expected groups with the same devices on every node"
                    )
        return ""


def placed(ranks: list[int], devices_per_node: int, one_call: bool) -> Group:
    """The group of ``ranks``. ``one_call``: it stands for every sibling group on the same
    nodes running the same collective at once (only one rank simulated), as ``lanes``; else it
    is its own call (every rank simulated, siblings rendezvous separately)."""
    g = Group.of_ranks(ranks, devices_per_node)
    if one_call and g.nodes > 1:
        return Group.of_ranks(ranks, devices_per_node, lanes=devices_per_node // g.per_node)
    return g
