"""``scaling validate``: every comparison of the model against the published measurements the
package holds (scaling/data/reference/), with the points used for fitting kept apart.

A *study* is one published series compared point by point. Each point says whether it was used
to fit a constant (``fitted``: a calibration point) or not (a validation point). A study declares
its tolerance: the largest mean absolute percentage error (MAPE) over its validation points — or
over all of its points when every point was fitted (a check that the calibration still holds) —
and optionally the largest error of any single such point. ``scaling validate`` exits 1 when a
study misses its tolerance; studies without one are reported for information.

The studies and their data are CSV: each study's metric, source, tolerance and notes in
scaling/data/validation/studies.csv, its inputs beside it, and every published figure in the
package's reference copies (scaling/data/reference/). Modules: :mod:`.report` (points, verdicts,
report formats), :mod:`.data` (the CSVs), :mod:`.collectives` and :mod:`.training` (the
studies), :mod:`.command` (``scaling validate``).

Groups:

* **collectives**: nccl-tests busbw (8x A100 curve, fitted by tools/fit_nccl_profile.py;
  multi-node plateaus and busbw vs nodes, not fitted); all-to-all: nccl-tests alltoall (2 A100
  nodes, 4 H100 of one node) and DeepEP's MoE dispatch/combine bandwidths on H800 nodes
  (:mod:`.alltoall_moe`), none fitted.
* **compute**: single-node training throughput of MosaicML's MPT benchmarks (A100, H100; 8 GPUs
  in one node, FSDP), whose calibration points fitted the device's two in-loop compute constants
  (``sustained_matmul_fraction``, ``attention_efficiency``; tools/fit_compute.py) and whose other
  points validate them; the FlashAttention-2 paper's GPT3-1.3B run.
* **end-to-end**: multi-node training results (Megatron-LM SC'21 GPT 1.7B on 32 A100 with DDP,
  and its TP / TP x PP rows 3.6B-145.6B on 64-1,536 A100 with the Megatron strategy; the MPT
  H100 rows on 2-8 nodes; the PyTorch FSDP paper's T5-11B FULL_SHARD per-GPU change from 8 to
  512 A100, :mod:`.fsdp_scaling`), none fitted; MoE: Megatron-Core's Mixtral 8x7B on 64 H100
  (held out) and Megatron Bridge's Qwen3-30B-A3B FP8 rows (information; :mod:`.moe_throughput`);
  Ascend 910B rows for information.
"""

from __future__ import annotations

from collections.abc import Callable

from scaling.app.validate.alltoall_moe import (
    DEEPEP_STUDIES,
    NCCL_H100_STUDY,
    study_deepep,
    study_nccl_alltoall_h100,
)
from scaling.app.validate.collectives import (
    SCALE_NODES,
    SCALE_SPLIT,
    scale_curves,
    study_nccl_a100_curve,
    study_nccl_alltoall,
    study_nccl_plateaus,
    study_nccl_scale,
)
from scaling.app.validate.data import DeviceOverrides, study_specs
from scaling.app.validate.fsdp_scaling import FSDP_SCALING_STUDIES, study_fsdp_scaling
from scaling.app.validate.megatron_core import study_megatron_core
from scaling.app.validate.moe_throughput import MOE_STUDIES, study_moe_throughput
from scaling.app.validate.report import (
    Point,
    Report,
    StudyResult,
    format_text,
    markdown_report,
    points_frame,
    summary_table,
    write_report,
)
from scaling.app.validate.training import (
    COMPUTE_CALIBRATION,
    MEGATRON_TABLE1,
    compute_points,
    fa2_gpt3_point,
    megatron_tp_pp_point,
    mpt_rows,
    mpt_shape,
    study_ascend,
    study_compute_mpt,
    study_fa2,
    study_megatron,
    study_megatron_tp_pp,
    study_mpt_multinode,
)

__all__ = [
    "COMPUTE_CALIBRATION",
    "MEGATRON_TABLE1",
    "SCALE_SPLIT",
    "STUDIES",
    "DeviceOverrides",
    "Point",
    "Report",
    "StudyResult",
    "compute_points",
    "fa2_gpt3_point",
    "format_text",
    "markdown_report",
    "megatron_tp_pp_point",
    "mpt_rows",
    "mpt_shape",
    "points_frame",
    "run_validation",
    "scale_curves",
    "study_specs",
    "summary_table",
    "write_report",
]

#: Every study, in report order: the names of the results a study function returns (each a row
#: of studies.csv), and it.
STUDIES: tuple[
    tuple[tuple[str, ...], Callable[[DeviceOverrides | None], list[StudyResult]]], ...
] = (
    (("nccl-a100-8gpu-curve-large", "nccl-a100-8gpu-curve-small"), study_nccl_a100_curve),
    (("nccl-multinode-plateaus",), study_nccl_plateaus),
    (
        (
            *(f"nccl-scale-h100-x{n}-{p}" for n in SCALE_NODES for p in ("large", "small")),
            "nccl-scale-h100-ratio-512-4",
        ),
        study_nccl_scale,
    ),
    (("nccl-alltoall-a100-2node",), study_nccl_alltoall),
    (DEEPEP_STUDIES, study_deepep),
    ((NCCL_H100_STUDY,), study_nccl_alltoall_h100),
    (("compute-a100-mpt", "compute-h100-mpt"), study_compute_mpt),
    (("compute-a100-flashattention2-gpt3-1.3b",), study_fa2),
    (("e2e-megatron-gpt1.7b-32a100",), study_megatron),
    (("e2e-megatron-sc21-table1-tp-pp",), study_megatron_tp_pp),
    (("e2e-h100-mpt-multinode",), study_mpt_multinode),
    (("e2e-megatron-core-h100", "e2e-megatron-core-h100-strong"), study_megatron_core),
    (FSDP_SCALING_STUDIES, study_fsdp_scaling),
    (MOE_STUDIES, study_moe_throughput),
    (("info-ascend910b-llama2-7b",), study_ascend),
)


def run_validation(
    overrides: DeviceOverrides | None = None,
    prefixes: tuple[str, ...] = (),
    progress: bool = False,
) -> Report:
    """Run every study of :data:`STUDIES`, or those with a name starting with one of
    ``prefixes`` (deterministic; about 15 s on two cores for all). ``progress``: a bar on
    stderr (a widget in Jupyter) counting the studies run, the current one named."""
    from scaling.app.output import progress_bar

    rep = Report()
    todo = [
        (names, fn)
        for names, fn in STUDIES
        if not prefixes or any(n.startswith(p) for n in names for p in prefixes)
    ]
    with progress_bar(total=len(todo), desc="validate", unit="study", enabled=progress) as bar:
        for names, fn in todo:
            if progress:
                bar.set_postfix_str(names[0])
            results = fn(overrides)
            if [r.name for r in results] != list(names):
                raise RuntimeError(f"study {fn.__name__} returned {[r.name for r in results]}")
            rep.studies += [r for r in results if not prefixes or r.name.startswith(prefixes)]
            bar.update(1)
    return rep
