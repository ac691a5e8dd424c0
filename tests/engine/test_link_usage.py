"""Per-link counters of the flow engine (issue 30, per-link utilisation): busy time, bytes and
rates over a time window, integrated per interval of constant rates, and results unchanged by
recording them."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from scaling.engine.network import FlowNetwork
from tests.engine.test_network import run_transfers

GB = 1e9


def _two_flows(record: bool) -> tuple[FlowNetwork, list[float]]:
    # A (8 GB on link 0) from t=0; B (2 GB on links 0+1, link 1 at 1 GB/s) from t=1:
    # link 0 carries 4 GB/s alone, then A 3 GB/s + B 1 GB/s; A ends at 1 + 4/3, B at 3;
    # link 2 never carries anything.
    env = simpy.Environment()
    net = FlowNetwork(env, [4 * GB, GB, GB])
    if record:
        net.record_intervals()
    a, b = net.path_id([0]), net.path_id([0, 1])
    return net, run_transfers(net, [(0.0, a, 8 * GB, 1), (1.0, b, 2 * GB, 1)])


def test_busy_time_and_bytes_per_link_over_the_whole_run() -> None:
    net, t = _two_flows(record=True)
    assert t == [pytest.approx(1 + 4 / 3, rel=1e-12), pytest.approx(3.0, rel=1e-12)]
    np.testing.assert_allclose(net.busy_s_per_link, [3.0, 2.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(net.bytes_per_link, [10 * GB, 2 * GB, 0.0], rtol=1e-12)
    carried, busy = net.link_usage(0.0, 3.0)  # the window over the whole run: the same
    np.testing.assert_allclose(carried, net.bytes_per_link, rtol=1e-9)
    np.testing.assert_allclose(busy, net.busy_s_per_link, rtol=1e-12)


def test_usage_over_a_window_is_rate_times_overlap() -> None:
    net, _ = _two_flows(record=True)
    carried, busy = net.link_usage(0.5, 2.0)
    # link 0: 4 GB/s over [0.5, 1] + 4 GB/s (3 + 1) over [1, 2]; link 1: 1 GB/s over [1, 2]
    np.testing.assert_allclose(carried, [6 * GB, 1 * GB, 0.0], rtol=1e-12)
    np.testing.assert_allclose(busy, [1.5, 1.0, 0.0], rtol=1e-12)
    util = carried / (net.capacity * 1.5)
    assert util.max() <= 1 + 1e-12 and util[0] == pytest.approx(1.0)
    assert net.link_usage(5.0, 6.0)[0].sum() == 0.0  # after the run: nothing


def test_link_rates_are_a_step_function_that_ends_at_zero() -> None:
    net, _ = _two_flows(record=True)
    times, rates = net.link_rates([1, 0], 0.0, 3.0)
    np.testing.assert_allclose(times, [0.0, 1.0, 1 + 4 / 3, 3.0], rtol=1e-12)
    np.testing.assert_allclose(rates[:, 0], [0.0, GB, GB, 0.0], rtol=1e-12)
    np.testing.assert_allclose(rates[:, 1], [4 * GB, 4 * GB, GB, 0.0], rtol=1e-12)
    # integrating the step function gives link_usage's bytes
    carried, _ = net.link_usage(0.0, 3.0)
    integral = (rates[:-1] * np.diff(times)[:, None]).sum(axis=0)
    np.testing.assert_allclose(integral, carried[[1, 0]], rtol=1e-12)


def test_an_idle_gap_shows_as_zero() -> None:
    env = simpy.Environment()
    net = FlowNetwork(env, [GB])
    net.record_intervals()
    p = net.path_id([0])
    run_transfers(net, [(0.0, p, GB, 1), (3.0, p, GB, 1)])
    times, rates = net.link_rates([0], 0.0, 4.0)
    np.testing.assert_allclose(times, [0.0, 1.0, 3.0, 4.0])
    np.testing.assert_allclose(rates[:, 0], [GB, 0.0, GB, 0.0])
    assert net.busy_s_per_link[0] == pytest.approx(2.0)


def test_recording_changes_no_result_and_is_needed_for_windows() -> None:
    plain, t_plain = _two_flows(record=False)
    rec, t_rec = _two_flows(record=True)
    assert t_plain == t_rec  # bit-identical
    assert plain.bytes_per_link.tolist() == rec.bytes_per_link.tolist()
    with pytest.raises(RuntimeError, match="record_intervals"):
        plain.link_usage(0.0, 1.0)
