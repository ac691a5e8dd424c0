"""Megatron-Core's communication overlap: Transformer Engine's userbuffer TP overlap
(``--tp-comm-overlap``) in closed form, ``--overlap-param-gather``, and the collectives Megatron
always issues (tied-embedding gradient all-reduce, cross-entropy all-reduces)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import simpy

from scaling.io.topology import load_system
from scaling.model.comm.collectives import CollectiveCost, Communicator, timed_runner
from scaling.model.comm.ops import CollectiveOp, Group
from scaling.model.hardware.compute import ComputeModel
from scaling.model.hardware.workload import Checkpointing, TransformerShape
from scaling.model.job import Job, SimSpec, TrainingSpec
from scaling.model.simulation import run_job, run_job_detailed
from scaling.model.strategies.megatron import MegatronSpec, MegatronWork
from scaling.model.strategies.megatron.ops import UB_NUM_SM, UB_PIPELINE_SPLITS
from scaling.model.strategies.rank import ComputeStream, RankLog


class PerByte:
    """Every collective costs ``s_per_byte`` per nccl-tests byte (no latency)."""

    def __init__(self, s_per_byte: float) -> None:
        self.s_per_byte = s_per_byte

    def cost(self, op: CollectiveOp, nbytes: float, group: Group) -> CollectiveCost:
        return CollectiveCost(nbytes * self.s_per_byte, 0.0, math.inf, None, "per-byte", 0.0)


def _shape(layers: int = 4, hidden: int = 1024) -> TransformerShape:
    return TransformerShape("toy", layers, hidden, 16, 4 * hidden, 128, 2048, 16)


def _job(spec: MegatronSpec, nodes: int = 1, m: int = 1, steps: int = 1, warm: int = 0,
         system: str = "dgx-h100", shape: TransformerShape | None = None) -> Job:  # fmt: skip
    return Job(
        load_system(system).spec,
        shape or _shape(),
        nodes,
        TrainingSpec(1, m, 2048, checkpointing=Checkpointing.NONE),
        spec,
        SimSpec(steps=steps, warmup_steps=warm),
    )


def _stage(spec: MegatronSpec, s_per_byte: float) -> tuple[Any, simpy.Environment, Any, Any]:
    job = _job(spec)
    work = MegatronWork.build(job, spec, ComputeModel(job.system.device, "bf16"))
    env = simpy.Environment()
    comm = Communicator(env, timed_runner(env, PerByte(s_per_byte)), 1)
    cs = ComputeStream(env, comm, None, 0.0, 0.0, RankLog())
    return work, env, comm, cs


@pytest.mark.parametrize("comm_over_gemm", [0.2, 1.0, 3.0])
def test_ring_exchange_gather_is_max_of_gemm_and_comm_per_chunk(comm_over_gemm: float) -> None:
    """TE ring exchange: ``t`` GEMM chunks, ``t − 1`` exchange steps of ``c``; the GEMM ends
    after ``(t − 1)·max(g', c) + g`` (every chunk but the last overlaps a step; the last runs
    once the last shard has arrived)."""
    spec = MegatronSpec(8, 1, sequence_parallel=True, tp_comm_overlap=True)
    gemm = 1e-3
    t = spec.tensor
    g = gemm / t
    c = comm_over_gemm * g  # one exchange step
    work, env, comm, cs = _stage(spec, 1.0)
    work_bytes = work.act_bytes
    comm.runner = timed_runner(env, PerByte((t - 1) * c / work_bytes))
    env.process(work._ring_gather_gemm(comm, cs, 0, "forward", 0, 0, 0, 1, gemm))
    env.run()
    slow = g / (1 - UB_NUM_SM["ring_exchange"] / 132)  # H100: 132 SMs
    assert env.now == pytest.approx((t - 1) * max(slow, c) + g, rel=1e-12)


@pytest.mark.parametrize("comm_over_gemm", [0.2, 1.0, 3.0])
def test_pipelined_scatter_is_first_chunk_then_max_per_chunk_then_last_scatter(
    comm_over_gemm: float,
) -> None:
    """TE pipelined reduce-scatter: ``n`` GEMM chunks of ``g``; chunk ``i``'s reduce-scatter
    (``r``) overlaps GEMM chunk ``i + 1``: ``g + (n − 1)·max(g', r) + r``."""
    spec = MegatronSpec(8, 1, sequence_parallel=True, tp_comm_overlap=True)
    gemm = 1e-3
    n = UB_PIPELINE_SPLITS
    g = gemm / n
    r = comm_over_gemm * g
    work, env, comm, cs = _stage(spec, 1.0)
    comm.runner = timed_runner(env, PerByte(r / (work.act_bytes / n)))
    env.process(work._pipelined_gemm_scatter(comm, cs, 0, "forward", 0, 0, 0, 1, gemm))
    env.run()
    slow = g / (1 - UB_NUM_SM["pipeline"] / 132)
    assert env.now == pytest.approx(g + (n - 1) * max(slow, r) + r, rel=1e-12)


def test_tp_comm_overlap_hides_tp_communication() -> None:
    """A TP8 block on a DGX H100: the userbuffer overlap hides most of the exposed TP
    communication of sequence parallelism, and the step is faster."""
    base = MegatronSpec(8, 1, sequence_parallel=True)
    ub = MegatronSpec(8, 1, sequence_parallel=True, tp_comm_overlap=True)
    shape = _shape(layers=4, hidden=8192)

    def tp_wait(spec: MegatronSpec) -> tuple[float, float]:
        res, tl = run_job_detailed(_job(spec, shape=shape), None, True)
        spans = [s for r in tl.logs for s in (r.spans or []) if s.name.startswith("wait:tp")]
        return res.step_time_s, sum(s.end_s - s.start_s for s in spans)

    t0, w0 = tp_wait(base)
    t1, w1 = tp_wait(ub)
    assert t1 < t0
    assert w1 < 0.5 * w0


def test_tp_comm_overlap_needs_sequence_parallel() -> None:
    spec = MegatronSpec(8, 1, tp_comm_overlap=True)
    assert "sequence_parallel" in spec.model_error(_shape(), TrainingSpec(1, 1, 2048))


def test_overlap_param_gather_needs_the_distributed_optimizer() -> None:
    spec = MegatronSpec(2, 1, overlap_param_gather=True)
    assert "distributed_optimizer" in spec.model_error(_shape(), TrainingSpec(1, 1, 2048))


def test_overlap_param_gather_moves_the_gather_into_the_next_forward() -> None:
    """``--overlap-param-gather``: the all-gather is dispatched after the optimizer bucket by
    bucket and waited for by the next step's forward, block by block; the steady-state step is
    no slower and the gathers start before the next step's forward ends."""
    kw = dict(distributed_optimizer=True, overlap_grad_reduce=True)
    off = MegatronSpec(8, 1, sequence_parallel=True, **kw)  # type: ignore[arg-type]
    on = MegatronSpec(8, 1, sequence_parallel=True, overlap_param_gather=True, **kw)  # type: ignore[arg-type]
    shape = _shape(layers=4, hidden=4096)
    r_off = run_job(_job(off, nodes=4, m=2, steps=1, warm=1, shape=shape))
    res, tl = run_job_detailed(_job(on, nodes=4, m=2, steps=1, warm=1, shape=shape), None, True)
    assert res.step_time_s < r_off.step_time_s
    gathers = [r for r in tl.collectives if r.op is CollectiveOp.ALL_GATHER and r.key.kind == "dp"]
    assert len(gathers) == 2 * 4  # one bucket per block, per step
    assert all("bucket" in r.key.label for r in gathers)


def test_tied_embedding_gradients_all_reduced_between_first_and_last_stage() -> None:
    """Megatron's ``_allreduce_word_embedding_grads``: with tied embeddings over ``p > 1``
    stages, one all-reduce of the word-embedding gradients (``V/t × h``, gradient dtype) per
    step between the first and the last stage; none with one stage or untied embeddings."""
    shape = _shape()
    spec = MegatronSpec(2, 2)
    _, tl = run_job_detailed(_job(spec, m=2), trace=True)
    emb = [r for r in tl.collectives if "embedding gradient" in r.key.label]
    assert len(emb) == 1
    assert emb[0].op is CollectiveOp.ALL_REDUCE
    assert emb[0].nbytes == shape.vocab * shape.hidden / 2 * 4  # fp32 main gradients
    assert emb[0].group.size == 2
    _, tl1 = run_job_detailed(_job(MegatronSpec(2, 1)), trace=True)
    assert not [r for r in tl1.collectives if "embedding gradient" in r.key.label]


def test_every_rank_simulated_gives_the_representatives_step_with_every_overlap() -> None:
    """``simulate_all_ranks``: every rank of a stage waits for its parameter buckets and joins
    every chunked TP call, so the step is the representatives' one."""
    spec = MegatronSpec(
        2,
        2,
        sequence_parallel=True,
        distributed_optimizer=True,
        overlap_grad_reduce=True,
        overlap_param_gather=True,
        tp_comm_overlap=True,
    )
    job = _job(spec, nodes=2, m=2, steps=1, warm=1)
    rep = run_job(job)
    every = run_job(
        dataclasses.replace(job, sim=dataclasses.replace(job.sim, simulate_all_ranks=True))
    )
    assert every.step_time_s == pytest.approx(rep.step_time_s, rel=1e-9)


def test_the_overlap_fields_of_the_config_change_the_result() -> None:
    """``strategy: {kind: megatron, tp_comm_overlap, overlap_param_gather}`` reach the model
    (each changes the step), and each is refused without what Megatron-LM requires."""
    from tests.test_megatron import _step

    sp = {"parallelism": {"tensor": 2, "pipeline": 2}, "sequence_parallel": True}
    assert _step({**sp, "tp_comm_overlap": True}) != _step(sp)
    zero = {**sp, "distributed_optimizer": True, "overlap_grad_reduce": True}
    assert _step({**zero, "overlap_param_gather": True}) != _step(zero)


@pytest.mark.parametrize(
    ("strategy", "needle"),
    [
        ({"tp_comm_overlap": True}, "tp_comm_overlap: got true without sequence_parallel"),
        ({"overlap_param_gather": True}, "overlap_param_gather: got true; expected"),
    ],
)
def test_overlap_without_its_prerequisite_is_one_line(
    strategy: dict[str, Any], needle: str
) -> None:
    from scaling.io.config import experiment_from_dict
    from scaling.io.errors import ConfigError
    from tests.test_megatron import _cfg

    with pytest.raises(ConfigError) as e:
        experiment_from_dict(_cfg({"parallelism": {"tensor": 2}, **strategy})).jobs()
    assert "\n" not in str(e.value) and needle in str(e.value)


def test_userbuffer_overlap_refused_where_its_kernels_take_every_compute_unit() -> None:
    """TE's pipelined reduce-scatter takes 24 SMs: a 20-core Ascend 910B has none left for the
    GEMM it overlaps (the slowdown 1/(1 − 24/20) would be negative); a 132-SM H100 runs it."""
    from scaling.model.simulation import InfeasibleJobError, check_feasible

    ub = MegatronSpec(8, 1, sequence_parallel=True, tp_comm_overlap=True)
    check_feasible(_job(ub))  # dgx-h100: fits and runs
    with pytest.raises(InfeasibleJobError, match="tp_comm_overlap: got true on a device of 20"):
        check_feasible(_job(ub, system="atlas-800t-a2"))
    plain = MegatronSpec(8, 1, sequence_parallel=True)
    check_feasible(_job(plain, system="atlas-800t-a2"))
