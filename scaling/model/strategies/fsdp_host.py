"""What an FSDP1 rank's host thread adds to its forward all-gathers: the rate limiter's stall.

``FullyShardedDataParallel(limit_all_gathers=True)`` keeps at most two units unsharded: before
issuing a unit's all-gather, ``_runtime_utils._unshard`` dequeues the free event recorded when
the unit two places earlier was resharded and calls ``event.synchronize()`` on it
(``_limiter_utils._FreeEventQueue``, ``_max_num_inflight_all_gathers = 2``). The CPU thread
therefore blocks until the GPU has finished that unit's forward, and only then runs the rest of
``_unshard`` (the unsharded buffer's allocation, the mixed-precision copy, the collective's
launch). That host path is measured at 235 µs from the synchronisation returning to the new
all-gather's launch on Meta's A100 hosts (pytorch/pytorch#108234, "[FSDP] New rate limiter and
memory reuse system", its "Overhead (zoomed in)" trace: "This overhead would turn into GPU
utilization gap"). With the CPU blocked there the run-ahead is gone, so the all-gather of unit
u starts that long after unit u−2's forward ends and has ``forward(u−1) − resume`` to hide in:
exposed when ``resume + all_gather(u) > forward(u−1)``. The all-gather grows with the ranks (the
ring's latency, ``(p−1)`` steps, and its bandwidth across nodes: NCCL ``tuning.cc``), so the
same host cost that hides at 8 ranks can show at 512.

FSDP2 (``fully_shard``) has no CPU-synchronising limiter (the all-gather stream waits on the
reshard event on the device: ``_fsdp_param_group.FSDPParamGroup.wait_for_unshard``), so nothing
is added there. Backward all-gathers are issued here when the previous unit's backward starts
on the device, already later than the CPU's limiter-gated issue, so nothing is added there
either.
"""

from __future__ import annotations

from collections.abc import Generator

import simpy

#: CPU time from the limiter's ``event.synchronize()`` returning to the next all-gather's
#: launch, s (pytorch/pytorch#108234, measured on A100 hosts with PyTorch FSDP1).
LIMITER_RESUME_S = 235e-6


def after_limiter(
    env: simpy.Environment, gate: simpy.Event | None, resume_s: float
) -> simpy.Event | None:
    """The event a limiter-gated all-gather may start at: ``resume_s`` after ``gate`` (the free
    event it synchronises on) has fired; ``gate`` itself when there is no host cost, None when
    the all-gather is not gated (the first ``limit`` units of a forward)."""
    if gate is None or resume_s <= 0:
        return gate
    out = env.event()

    def resume() -> Generator[simpy.Event, object, None]:
        if not gate.processed:
            yield gate
        yield env.timeout(resume_s)
        out.succeed()

    env.process(resume())
    return out
