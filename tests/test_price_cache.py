"""Tuner prices shared across runs in one process (scaling.model.comm.flowcoll._PRICES, issue 29):
reused only where every input of the price is the same, never stale."""

from __future__ import annotations

import dataclasses

import simpy

from scaling.io.topology import load_system
from scaling.model.comm import flowcoll
from scaling.model.comm.flowcoll import FlowCollectives, clear_price_cache
from scaling.model.comm.ops import CollectiveOp, Group

AR = CollectiveOp.ALL_REDUCE


def _price(system, nodes: int = 4, nbytes: float = 2**28, seed: int = 0) -> flowcoll.Choice:
    fc = FlowCollectives(simpy.Environment(), system, nodes, seed)
    return fc.predict(AR, nbytes, Group(nodes, system.devices_per_node))


def test_same_inputs_reuse_a_bit_identical_price() -> None:
    spec = load_system("dgx-a100").spec
    clear_price_cache()
    fresh = _price(spec)
    assert len(flowcoll._PRICES) == 1
    again = _price(spec)
    assert again is fresh  # from the shared cache
    clear_price_cache()
    assert _price(spec) == fresh  # priced afresh: the same bits


def test_a_perturbed_capacity_or_latency_gives_its_own_price() -> None:
    spec = load_system("dgx-a100").spec
    clear_price_cache()
    base = _price(spec)
    slower = dataclasses.replace(
        spec, nics=dataclasses.replace(spec.nics, bw_Bps=spec.nics.bw_Bps / 2)
    )
    half = _price(slower)
    assert half.time_s > base.time_s
    laggy = dataclasses.replace(
        spec, nics=dataclasses.replace(spec.nics, latency_s=spec.nics.latency_s * 10)
    )
    assert _price(laggy, nbytes=2**12).time_s > _price(spec, nbytes=2**12).time_s
    # the cached prices are still those of their own systems
    clear_price_cache()
    assert _price(slower) == half and _price(spec) == base


def test_node_count_and_a_replaced_network_are_part_of_the_key() -> None:
    spec = load_system("dgx-a100").spec
    clear_price_cache()
    four, eight = _price(spec, nodes=4), _price(spec, nodes=8)
    assert four != eight
    fc = FlowCollectives(simpy.Environment(), spec, 4)
    from scaling.engine.network import FlowNetwork

    fc.net = FlowNetwork(fc.env, fc.cluster.capacity() / 4)  # every link at a quarter
    quarter = fc.predict(AR, 2**28, Group(4, spec.devices_per_node))
    assert quarter.time_s > four.time_s


def test_a_device_only_change_shares_the_price_and_its_bits() -> None:
    """Nothing in the collective model reads the device: a system that differs only there
    (a sample that perturbs a device input) takes the price already made, which is the one
    a cold process computes for it."""
    spec = load_system("mlu370-x8").spec
    slow_chip = dataclasses.replace(
        spec,
        device=dataclasses.replace(
            spec.device, matmul_efficiency=spec.device.matmul_efficiency / 2
        ),
    )
    clear_price_cache()
    base = _price(spec)
    assert _price(slow_chip) is base and len(flowcoll._PRICES) == 1
    clear_price_cache()
    assert _price(slow_chip) == base
    # a NIC's rate is not the device's: its own price
    wide = dataclasses.replace(
        spec, nics=dataclasses.replace(spec.nics, bw_Bps=2 * spec.nics.bw_Bps)
    )
    assert _price(wide).time_s < base.time_s and len(flowcoll._PRICES) == 2
