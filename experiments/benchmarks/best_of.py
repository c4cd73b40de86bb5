"""Best-of-N reranking: every selection generated on its own against one shared generation of the candidates.

    python experiments/benchmarks/best_of.py                   # the study's set: N 2, 4, 8 by CLAP and the verifier

`alignment_study.py --questions best_of_n` reports the base model's best of N by CLAP and by the verifier for each N.
Run one at a time, each selection generates its own candidates: N per clip for each N and reward. Shared
(`rewardflow.evaluate.evaluate_selections`), each clip's candidates are generated and scored once, up to the largest
N, and every selection picks from them. Both ways run side by side in one process, alternating, `--repeats` times;
the report gives their medians, the ratio and the largest difference between the two ways' metrics (each selection
picks the same clips, so they agree to round-off).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


@dataclass
class BestOfBenchArguments:
    best_of: list[int] = field(default_factory=lambda: [2, 4, 8], metadata={"help": "N of each selection."})
    rerank_rewards: list[str] = field(
        default_factory=lambda: ["clap", "verifier"], metadata={"help": "Rewards each N is reranked by."}
    )
    prompts: int = field(default=8, metadata={"help": "Held-out SynthCaps prompts (one clip each)."})
    repeats: int = field(default=3, metadata={"help": "Timed runs of each way (median), alternating."})
    output: str = field(default="experiments/benchmarks/results/best_of.json", metadata={"help": "JSON results."})

    def __post_init__(self):
        if not self.best_of or min(self.best_of) < 1 or not self.rerank_rewards:
            raise ValueError(f"--best_of needs values >= 1 and --rerank_rewards one or more, got {self.best_of}, "
                             f"{self.rerank_rewards}.")  # fmt: skip
        if self.prompts < 2 or self.repeats < 1:
            raise ValueError(f"--prompts must be >= 2 (Fréchet distances) and --repeats >= 1, got {self.prompts}, "
                             f"{self.repeats}.")  # fmt: skip


def main(a: BestOfBenchArguments) -> dict:
    import torch

    from base_model.files import atomic_write_json
    from rewardflow.evaluate import EvaluateConfig, evaluate_selections

    selections = [(r, n) for n in a.best_of for r in a.rerank_rewards]
    cfg = EvaluateConfig(models=["synthcaps"], max_prompts=a.prompts, rewards=sorted(set(a.rerank_rewards) | {"clap"}),
                         bootstrap=200, cache_dir="none")  # fmt: skip
    times: dict[str, list[float]] = {"separate": [], "shared": []}
    reports: dict[str, dict] = {}
    evaluate_selections(cfg, [selections[0]])  # warm-up: model loading, reward models, references
    for _ in range(a.repeats):
        start = time.perf_counter()
        reports["separate"] = {s: evaluate_selections(cfg, [s])[s] for s in selections}
        times["separate"].append(time.perf_counter() - start)
        start = time.perf_counter()
        reports["shared"] = evaluate_selections(cfg, selections)
        times["shared"].append(time.perf_counter() - start)
    gap = max(
        abs(v - reports["shared"][s]["models"]["synthcaps"][k])
        for s in selections
        for k, v in reports["separate"][s]["models"]["synthcaps"].items()
        if k != "seconds_per_clip"
    )
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "settings": asdict(a),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },  # fmt: skip
        "candidates_generated_per_clip": {"separate": sum(n for _, n in selections), "shared": max(a.best_of)},
        "seconds": times,
        "median_seconds": medians,
        "speedup": medians["separate"] / medians["shared"],
        "largest_metric_difference": gap,
    }
    print(json.dumps({k: result[k] for k in ("candidates_generated_per_clip", "median_seconds", "speedup",
                                             "largest_metric_difference")}, indent=2))  # fmt: skip
    if a.output:
        atomic_write_json(Path(a.output), result)
    return result


if __name__ == "__main__":
    from trl import TrlParser

    main(*TrlParser((BestOfBenchArguments,)).parse_args_and_config())
