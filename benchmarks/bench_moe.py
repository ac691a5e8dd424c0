"""Simulation-speed benchmark of a 671B-class MoE step with expert parallelism across nodes
(prints figures; asserts nothing).

Target (issue #26): one step of DeepSeek-V3 671B (``configs/moe-deepseek-v3.yaml``: Megatron
PP 16 x EP 64 folded over DP 128, 8 nodes per expert group, 2,048 DGX H100 GPUs, 64
micro-batches per pipeline, full recomputation) in <= 10 s CPU (wall printed next to it) on the
flow network. One representative rank per pipeline stage is simulated (16 processes); each MoE
block issues its dispatch and combine all-to-alls over its 64-rank group forward, backward and
in recomputation (~22,000 all-to-alls per step), priced at the tuner's uncontended time
(``MegatronWork.all_to_all_calls_contend``). Median of 3 runs, one measured step, no warm-up.
"""

from __future__ import annotations

from timing import ROOT, line, measure

from scaling.app.api import simulate
from scaling.io.errors import read_yaml

CONFIG = ROOT / "configs" / "moe-deepseek-v3.yaml"


def main() -> None:
    cfg = read_yaml(CONFIG, "experiment config")[0]
    t = measure(lambda: simulate(cfg))
    print(line("DeepSeek-V3 671B PP16 x EP64 (2,048 H100), one step, flow network", t, 10.0))


if __name__ == "__main__":
    main()
