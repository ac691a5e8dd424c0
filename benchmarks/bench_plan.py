"""Speed benchmark of ``scaling plan`` (prints figures; asserts nothing).

Target (issue 28): the plan of GPT-3 175B on 64-512 DGX A100 nodes at SC'21's global batch of
1,536 sequences (configs/plan-gpt3-175b.yaml: Megatron TP {4, 8} x PP {4, 8, 16}, micro-batch
{1, 2}, recomputation none/full, plus the configured TP8 x PP8) in <= 120 s of CPU on 2 cores,
median of 3, in process (``-j 1``: CPU time is this process's). Each run plans into a fresh
folder so nothing is resumed. Prints CPU seconds next to wall: wall time on a shared machine
says little.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from timing import line, measure

from scaling.io.config import load_experiment
from scaling.plan import PlanSpace, plan

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "plan-gpt3-175b.yaml"
SPACE = PlanSpace(
    strategies=("megatron",), micro_batches=(1, 2), tensor=(4, 8), pipeline=(4, 8, 16)
)


def main() -> None:
    results = []

    def once() -> None:
        exp = load_experiment(CONFIG)
        with tempfile.TemporaryDirectory() as out:
            results.append(plan(exp, SPACE, global_batch=1536, out_dir=Path(out)))

    t = measure(once)
    for p in results[-1].points:
        own = next(e for e in p.flow if e.candidate.configured)
        assert p.best is not None
        gain = p.best.metrics["tokens_per_s_per_device"] / own.metrics["tokens_per_s_per_device"]
        print(
            f"  {p.nodes:>4} nodes: best {p.best.candidate.label} "
            f"({gain:.2f}x SC'21's TP8 x PP8 as configured; {len(p.flow)} flow simulations)"
        )
    print(line("plan GPT-3 175B, 64-512 DGX A100 nodes", t, 120.0))


if __name__ == "__main__":
    main()
