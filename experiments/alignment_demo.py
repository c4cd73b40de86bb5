"""The embedded alignment run behind `make demo`: rollout -> how well the reward agrees with the verifier on the
rollout -> reward-weighted fine-tuning -> evaluation of the base and the tuned model on fresh held-out SynthCaps
prompts (never trained on, never used to choose the recipe), printed as a table with paired 95 % intervals, and WAVs
+ spectrograms of both models (`<output_dir>/listen/report.html`).

    python experiments/alignment_demo.py                     # into outputs/demo/
    python experiments/alignment_demo.py --reward verifier   # any reward column of the rollout

It only wires the three entry points together, printing each command it runs, so every stage can be rerun by hand.
Rerunning resumes: the rollout completes its missing shards, a finished fine-tune is kept (an unfinished one resumes
from its newest complete checkpoint), and the evaluation is recomputed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `experiments.alignment_study` when run as a script


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where the rollout, model and report go."})
    max_prompts: int = field(default=192, metadata={"help": "SynthCaps prompts rolled out."})
    rollout_split: str = field(
        default="heldout", metadata={"help": "SynthCaps split rolled out: train, or heldout (other prompts than the "
                                           "evaluated ones, from --rollout_first_prompt)."}
    )  # fmt: skip
    rollout_first_prompt: int = field(
        default=1000, metadata={"help": "First prompt of the rollout split rolled out (past the evaluated ones)."}
    )
    num_generations: int = field(default=4, metadata={"help": "Clips per prompt."})
    cfg_scale: float = field(
        default=3.0, metadata={"help": "Guidance of the rollout (the evaluation uses the pipeline's default, 3)."}
    )
    reward: str = field(default="clap", metadata={"help": "Reward to fine-tune on."})
    weighting: str = field(
        default="topk", metadata={"help": "Reward weighting (see finetune.py); the default keeps the best clip of 4."}
    )
    top_k: float = field(default=0.25, metadata={"help": "Share of each prompt's clips kept by `topk`."})
    tau: float = field(default=1.0, metadata={"help": "Temperature τ (the exp-based weightings)."})
    beta: float = field(default=1.0, metadata={"help": "Reference regulariser weight."})
    loss_cfg_scale: float = field(
        default=3.0, metadata={"help": "Fit the guided velocity at this scale (1: the paper's loss; finetune.py)."}
    )
    max_steps: int = field(default=600, metadata={"help": "Fine-tuning steps."})
    seed: int = field(
        default=42, metadata={"help": "Fine-tune seed (finetune.py's default); the rollout's is rollout.py's, 0."}
    )
    eval_prompts: int = field(default=256, metadata={"help": "Held-out prompts evaluated."})
    first_prompt: int = field(
        default=384, metadata={"help": "First held-out prompt evaluated: after the prompts the recipe was chosen on."}
    )
    listen_prompts: int = field(default=6, metadata={"help": "Prompts whose clips are kept as WAVs + spectrograms."})
    results_dir: str = field(
        default="", metadata={"help": "Also copy results.json here (the committed record: experiments/results/demo)."}
    )
    processes: int = field(default=0, metadata={"help": "Rollout processes (0: 2 on a CPU machine, else 1)."})

    def __post_init__(self):
        from rewardflow.finetune_config import check_loss_cfg_scale

        check_loss_cfg_scale(self.loss_cfg_scale)
        if self.eval_prompts < 2 or self.listen_prompts < 2:
            raise ValueError(
                f"--eval_prompts {self.eval_prompts} and --listen_prompts {self.listen_prompts} must be >= 2 (paired "
                "intervals and Fréchet distances need two clips or more)."
            )
        from experiments.alignment_study import check_rollout_range

        # the evaluated prompts, and the listened ones among them, stay fresh
        check_rollout_range(self.rollout_split, self.rollout_first_prompt, self.max_prompts, self.first_prompt,
                            max(self.eval_prompts, self.listen_prompts))  # fmt: skip


def _run(cmd: list[str]) -> float:
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start


def main(a: DemoArguments) -> dict:
    import torch

    from base_model.files import atomic_write_json

    out = Path(a.output_dir)
    nproc = a.processes or (1 if torch.cuda.is_available() else min(2, os.cpu_count() or 1))
    py = sys.executable
    launch = [py] if nproc == 1 else [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    seconds = {}
    seconds["rollout"] = _run(
        [*launch, "rewardflow/rollout.py", "--output_dir", str(out / "rollout"), "--max_prompts", str(a.max_prompts)]
        + ["--prompts", f"synthcaps:{a.rollout_split}", "--first_prompt", str(a.rollout_first_prompt)]
        + ["--num_generations", str(a.num_generations), "--cfg_scale", str(a.cfg_scale)]
    )
    # Before fine-tuning: does the reward pick a prompt's better samples by the verifier's (independent) judgement?
    seconds["agreement"] = _run(
        [py, "rewardflow/agreement.py", "--rollout", str(out / "rollout"), "--referee", "verifier"]
        + ["--rewards", a.reward]
    )
    tuned = out / "finetune" / "final"
    if (tuned / "metrics.json").is_file():
        print(f"\n{tuned} exists: keeping it (delete it to fine-tune again)")
        seconds["finetune"] = 0.0
    else:
        seconds["finetune"] = _run(
            [py, "rewardflow/finetune.py", "--rollout", str(out / "rollout"), "--output_dir", str(out / "finetune")]
            + ["--reward", a.reward, "--weighting", a.weighting, "--top_k", str(a.top_k), "--tau", str(a.tau)]
            + ["--beta", str(a.beta), "--loss_cfg_scale", str(a.loss_cfg_scale)]
            + ["--max_steps", str(a.max_steps), "--seed", str(a.seed), "--save_steps", "50"]
            + ["--resume_from_checkpoint", "latest"]
        )
    report_file = out / "evaluation.json"
    seconds["evaluate"] = _run(
        [py, "rewardflow/evaluate.py", "--models", "synthcaps", str(tuned), "--max_prompts", str(a.eval_prompts)]
        + ["--first_prompt", str(a.first_prompt), "--output_json", str(report_file)]
    )
    seconds["listen"] = _run(
        [py, "rewardflow/evaluate.py", "--models", "synthcaps", str(tuned), "--max_prompts", str(a.listen_prompts)]
        + ["--first_prompt", str(a.first_prompt), "--rewards", "clap", "verifier", "--save_audio", "true"]
        + ["--output_dir", str(out / "listen")]
    )
    _run([py, "experiments/report.py", "--eval_dir", str(out / "listen")])
    report = json.loads(report_file.read_text())
    agreement = json.loads((out / "rollout" / "agreement-verifier.json").read_text())
    result = {"settings": vars(a), "seconds": seconds, "agreement": agreement["rewards"], "models": report["models"],
              "paired": report["paired_vs_first"][str(tuned)], "metric_info": report["metric_info"],
              "train": json.loads((tuned / "metrics.json").read_text())}  # fmt: skip
    atomic_write_json(out / "results.json", result)
    if a.results_dir:
        dest = ROOT / a.results_dir
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_json(dest / "results.json", result)
    print(f"\n== alignment demo: base vs {a.reward}-tuned on {a.eval_prompts} fresh held-out SynthCaps prompts ==")
    print(report["table"])
    print("\nseconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"report: {report_file}; tuned model: {tuned}; listen: {out / 'listen' / 'report.html'}")
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((DemoArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
