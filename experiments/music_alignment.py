"""Does the alignment loop carry over to music? The bundled SynthMusic generator, rolled out on SynthMusic training
prompts, scored by CLAP, aesthetics and the music verifier, fine-tuned on each reward and on uniform weights (the
control), and evaluated on held-out compositions.

    python experiments/music_alignment.py                      # resumable
    python experiments/music_alignment.py --runs control clap-topk verifier-topk --eval_prompts 128

The recipe is the SynthCaps alignment study's (best of 4 by the reward, β = 1, 600 steps, batch 16, learning rate
1e-4, seed 0, an unguided rollout of 192 prompts × 4), so the two corpora's results read side by side. The rollout's
agreement diagnostic says beforehand how much of the music verifier's within-prompt gain each reward can recover. CLAP
is the bundled SynthCaps CLAP (no music CLAP is bundled), so its vocabulary of music words is on trial too.
Every step resumes: a finished rollout, run or evaluation is read back.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {
    "control": {"reward": "clap", "weighting": "exp", "tau": 0.0},  # exp(0 · r) = 1: uniform weights
    "clap-topk": {"reward": "clap", "weighting": "topk", "top_k": 0.25},
    "aesthetics-topk": {"reward": "aesthetics", "weighting": "topk", "top_k": 0.25},
    "verifier-topk": {"reward": "verifier", "weighting": "topk", "top_k": 0.25},  # the music verifier: the oracle
}
REWARDS = ("clap", "aesthetics", "music_verifier")


@dataclass
class MusicAlignmentArguments:
    output_dir: str = field(default="outputs/music-alignment", metadata={"help": "Rollout, runs, evaluation."})
    results_dir: str = field(
        default="experiments/results/synthmusic", metadata={"help": "Where music_alignment.json goes ('' skips)."}
    )
    model: str = field(default="synthmusic", metadata={"help": "The base pipeline."})
    runs: list[str] = field(default_factory=lambda: list(RUNS), metadata={"help": f"Which of {', '.join(RUNS)}."})
    rollout_prompts: int = field(default=192, metadata={"help": "SynthMusic train prompts rolled out."})
    num_generations: int = field(default=4, metadata={"help": "Clips per prompt."})
    rollout_cfg_scale: float = field(default=1.0, metadata={"help": "Guidance of the rollout."})
    loss_cfg_scale: float = field(
        default=1.0, metadata={"help": "Every run fits the guided velocity at this scale (1: the paper's loss)."}
    )
    max_steps: int = field(default=600, metadata={"help": "Fine-tuning steps of every run."})
    batch_size: int = field(default=16, metadata={"help": "Fine-tuning batch."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Fine-tuning learning rate."})
    beta: float = field(default=1.0, metadata={"help": "Reference term weight β of every run."})
    first_prompt: int = field(default=128, metadata={"help": "First held-out prompt evaluated."})
    eval_prompts: int = field(default=256, metadata={"help": "Held-out prompts evaluated."})
    processes: int = field(default=2, metadata={"help": "Rollout processes (torchrun on CPU)."})
    seed: int = field(default=0, metadata={"help": "Seed of the rollout and fine-tunes."})

    def __post_init__(self):
        from rewardflow.finetune_config import check_loss_cfg_scale

        check_loss_cfg_scale(self.loss_cfg_scale)
        unknown = [r for r in self.runs if r not in RUNS]
        if unknown or not self.runs:
            raise ValueError(f"--runs {unknown or '(none)'}: choose from {', '.join(RUNS)}.")
        if self.eval_prompts < 2 or self.rollout_prompts < 1:
            raise ValueError("--eval_prompts must be >= 2 and --rollout_prompts >= 1.")


def main(a: MusicAlignmentArguments) -> dict:
    from base_model.files import atomic_write_json
    from experiments.alignment_study import finetune_run, make_rollout
    from experiments.results_io import cached_evaluate, evaluation_summary, paired_between, publish_json
    from rewardflow.agreement import AgreementConfig, agreement
    from rewardflow.evaluate import EvaluateConfig

    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rollout = make_rollout(a, a.model, out / "rollout", a.seed, prompts="synthmusic:train", rewards=REWARDS)
    agree = agreement(AgreementConfig(rollout=rollout, referee="verifier", rewards=["clap", "aesthetics", "verifier"]))
    finals = {name: finetune_run(a, name, dict(RUNS[name]), rollout, out) for name in a.runs}
    cfg = EvaluateConfig(models=[a.model, *finals.values()], prompts="synthmusic:heldout", rewards=list(REWARDS),
                         first_prompt=a.first_prompt, max_prompts=a.eval_prompts,
                         output_json=str(out / "eval-heldout.json"))  # fmt: skip
    report = cached_evaluate(cfg)
    versus_control = {
        name: paired_between(report["per_prompt"], folder, finals["control"])
        for name, folder in finals.items()
        if name != "control" and "control" in finals
    }
    result = {
        "settings": asdict(a),
        "runs": finals,
        "agreement": agree["rewards"],
        "rollout": json.loads((Path(rollout) / "run.json").read_text())["settings"],
        "evaluation": evaluation_summary(report),
        "versus_control": versus_control,
    }
    atomic_write_json(out / "results.json", result)
    publish_json(result, a.results_dir, "music_alignment.json")
    print(report["table"])
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((MusicAlignmentArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
