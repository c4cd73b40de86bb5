"""From listeners to rewards, offline: a simulated listener labels pairs on the labelling page's API, a preference
reward model is trained on them, and the generator is tuned with it (reward-weighted) and on the pairs directly
(DPO), next to CLAP-tuning.

    python experiments/preference_loop.py                                   # resumable; results/preference/
    python experiments/preference_loop.py --budgets 200 1000 --error_rate 0.2 --bias louder --bias_strength 0.3

Steps, each skipped when its output is complete:
1. `rollout-label/`: a rollout with audio of `--label_prompts` SynthCaps train prompts, `--num_generations` each.
2. The label server (`rewardflow label`, the page's strategy and prompt cover) on it, and a simulated listener (the
   SynthCaps verifier with `--error_rate` flips and an optional bias) answering up to `max(--budgets)` pairs
   through HTTP, as a person would; the answers go to that rollout's `preferences/` table.
3. One preference reward model per budget (`rewardflow/train_reward.py --max_pairs B`, the first B answers), with
   its held-out pair accuracy.
4. The agreement diagnostic on fresh prompts (`rollout-fresh/`, held-out prompts `[0, --fresh_prompts)`): each
   reward's within-prompt top-1 gain on the verifier against the oracle's, CLAP's next to every budget's.
5. Fine-tuning from the labelled rollout with the same steps, batch and β: CLAP top-k, the preference model of the
   best budget top-k, and DPO on the listener's pairs at each `--dpo_betas`; evaluated on held-out prompts from `--first_prompt` (none of
   them seen by steps 1-4), each against the base and the preference runs against CLAP-tuning, paired by prompt.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class LoopArguments:
    output_dir: str = field(default="outputs/preference_loop", metadata={"help": "Rollouts, labels, runs."})
    results_dir: str = field(default="experiments/results/preference", metadata={"help": "Committed JSON ('' skips)."})
    model: str = field(default="synthcaps", metadata={"help": "The base pipeline."})
    label_prompts: int = field(default=256, metadata={"help": "SynthCaps train prompts rolled out for labelling."})
    num_generations: int = field(default=6, metadata={"help": "Clips per prompt (n clips give n(n-1)/2 pairs)."})
    rollout_cfg_scale: float = field(default=3.0, metadata={"help": "Guidance of the rollouts."})
    budgets: list[int] = field(default_factory=lambda: [200, 1000, 3000], metadata={"help": "Labelled pairs."})
    reward_steps: int = field(default=100, metadata={"help": "The reward trainer's --steps."})
    reward_select_step: bool = field(default=False, metadata={"help": "The reward trainer's --select_step."})
    error_rate: float = field(default=0.1, metadata={"help": "Simulated listener: chance of flipping an answer."})
    bias: str = field(default="", metadata={"help": "Simulated listener bias: '' or 'louder'."})
    bias_strength: float = field(default=0.0, metadata={"help": "Chance the bias decides an answer."})
    fresh_prompts: int = field(default=128, metadata={"help": "Held-out prompts of the agreement check."})
    confirm_first_prompt: int = field(
        default=512, metadata={"help": "First held-out prompt of the confirmation set (after the evaluation's)."}
    )
    confirm_prompts: int = field(
        default=128,
        metadata={"help": "Held-out prompts of a second agreement check, on prompts no choice saw (0: none)."},
    )
    max_steps: int = field(default=600, metadata={"help": "Fine-tuning steps of every run."})
    batch_size: int = field(default=16, metadata={"help": "Fine-tuning batch."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Fine-tuning learning rate."})
    top_k: float = field(default=0.25, metadata={"help": "Share of each prompt's clips the top-k runs keep."})
    beta: float = field(default=1.0, metadata={"help": "Reference term weight β of every run."})
    dpo_betas: list[float] = field(
        default_factory=lambda: [2000.0, 200.0], metadata={"help": "β of each DPO run (TangoFlux: 2000)."}
    )
    first_prompt: int = field(default=128, metadata={"help": "First held-out prompt of the final evaluation."})
    eval_prompts: int = field(default=256, metadata={"help": "Held-out prompts of the final evaluation."})
    finetune: bool = field(
        default=True, metadata={"help": "Fine-tune and evaluate too (false: stop after the agreement check)."}
    )
    processes: int = field(default=2, metadata={"help": "Rollout processes (torchrun on CPU)."})
    seed: int = field(default=0, metadata={"help": "Seed of rollouts, listener, reward models and fine-tunes."})

    def __post_init__(self):
        if not self.budgets or min(self.budgets) < 2:
            raise ValueError(f"--budgets needs labelled-pair counts of at least 2, got {self.budgets}.")
        if self.num_generations < 2:
            raise ValueError("--num_generations must be >= 2: a pair needs two clips of one prompt.")
        if self.bias not in ("", "louder"):
            raise ValueError(f"--bias must be '' or 'louder', got {self.bias!r}.")
        if self.fresh_prompts > self.first_prompt:
            raise ValueError(
                f"--fresh_prompts {self.fresh_prompts} overlaps the evaluation prompts from --first_prompt "
                f"{self.first_prompt}: keep fresh_prompts <= first_prompt."
            )
        if self.confirm_prompts and self.confirm_first_prompt < self.first_prompt + self.eval_prompts:
            raise ValueError(
                f"--confirm_first_prompt {self.confirm_first_prompt} overlaps the evaluation prompts "
                f"[{self.first_prompt}, {self.first_prompt + self.eval_prompts}): start it at or after their end."
            )
        if not self.dpo_betas or min(self.dpo_betas) <= 0:
            raise ValueError(f"--dpo_betas needs positive values, got {self.dpo_betas}.")
        if not 0 < self.top_k <= 1:
            raise ValueError(f"--top_k must be in (0, 1], got {self.top_k}.")
        self.budgets = sorted(set(self.budgets))


def label(a: LoopArguments, rollout: str) -> int:
    """Answers pairs through the label server until `max(budgets)` are answered or the page runs out."""
    from rewardflow.label import LabelConfig, serve
    from rewardflow.listeners import SimulatedListener
    from rewardflow.preferences import load_preferences
    from rewardflow.rollout_table import load_rollout

    name = f"verifier-e{a.error_rate:g}" + (f"-{a.bias}{a.bias_strength:g}" if a.bias else "")

    def answered() -> int:
        return sum(r["labeller"] == f"simulated:{name}" for r in load_preferences(rollout, answered_only=False))

    todo = max(a.budgets) - answered()
    if todo > 0:
        attrs = {r["prompt_id"]: r["attributes"] for r in load_rollout(rollout)}
        httpd = serve(LabelConfig(rollout=rollout, port=0, seed=a.seed))
        try:
            host, port = httpd.server_address[:2]
            listener = SimulatedListener(f"http://{host}:{port}", attrs, name=name, error_rate=a.error_rate,
                                         bias=a.bias or None, bias_strength=a.bias_strength, seed=a.seed)  # fmt: skip
            while todo > 0:  # in chunks of 100, so the log shows progress
                want = min(100, todo)
                got = listener.label(want)
                todo -= got
                print(f"labelled {max(a.budgets) - todo} pairs", flush=True)
                if got < want:
                    break  # the page has no more pairs
        finally:
            httpd.shutdown()
    return answered()


def train_reward_models(a: LoopArguments, rollout: str, out: Path, labelled: int) -> dict[int, dict]:
    from dataclasses import asdict

    from rewardflow.train_reward import RewardTrainingConfig
    from rewardflow.train_reward import main as train_main

    models = {}
    for budget in a.budgets:
        if budget > labelled:
            print(f"budget {budget} skipped: only {labelled} pairs could be labelled", flush=True)
            continue
        folder = out / f"reward-{budget}"
        cfg = RewardTrainingConfig(rollouts=[rollout], output_dir=str(folder), max_pairs=budget, seed=a.seed,
                                   steps=a.reward_steps, select_step=a.reward_select_step)  # fmt: skip
        made = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
        if made.get("settings") != asdict(cfg):  # missing, or made with other trainer settings: (re)train
            train_main(cfg)
        models[budget] = {"path": str(folder), **json.loads((folder / "metrics.json").read_text())}
    return models


def fresh_agreement(a: LoopArguments, rollout: str, models: dict[int, dict]) -> dict:
    """Within-prompt agreement with the verifier on fresh prompts: CLAP (its rollout column) and every budget's
    preference model (scored here from the stored audio)."""
    import torch

    from reward_models import load_reward
    from rewardflow.agreement import within_prompt_agreement
    from rewardflow.rollout_table import load_rollout, read_audio

    table = load_rollout(rollout)
    groups, referee = list(table["prompt_id"]), np.asarray(table["reward/verifier"], dtype=np.float64)
    result = {"clap": within_prompt_agreement(np.asarray(table["reward/clap"], dtype=np.float64), referee, groups)}
    wavs = [torch.from_numpy(read_audio(Path(rollout) / p)[0]) for p in table["audio_path"]]
    n = max(len(w) for w in wavs)
    batch = torch.stack([torch.nn.functional.pad(w, (0, n - len(w))) for w in wavs]).float()
    for budget, info in models.items():
        reward = load_reward(f"preference:{info['path']}")
        scores = np.concatenate([reward(batch[i : i + 64], 16000, list(table["prompt"][i : i + 64]))["preference"]
                                 .numpy() for i in range(0, len(batch), 64)])  # fmt: skip
        result[f"preference-{budget}"] = within_prompt_agreement(scores, referee, groups)
    return result


def dpo_name(beta: float) -> str:
    return f"dpo-preferences-beta{beta:g}"


def main(a: LoopArguments) -> dict:
    from base_model.files import atomic_write_json
    from experiments.alignment_study import (
        StudyArguments,
        evaluate_models,
        finetune_run,
        make_rollout,
        paired_difference,
    )
    from experiments.results_io import publish_json

    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    def finish(result: dict) -> dict:
        atomic_write_json(out / "results.json", result)
        publish_json(result, a.results_dir)
        return result

    study = StudyArguments(output_dir=str(out), results_dir="", model=a.model, rollout_prompts=a.label_prompts,
                           num_generations=a.num_generations, rollout_cfg_scale=a.rollout_cfg_scale,
                           max_steps=a.max_steps, batch_size=a.batch_size, learning_rate=a.learning_rate, beta=a.beta,
                           first_prompt=a.first_prompt, eval_prompts=a.eval_prompts, processes=a.processes,
                           seed=a.seed)  # fmt: skip
    rollout = make_rollout(study, a.model, out / "rollout-label", a.seed, audio_format="flac")
    labelled = label(a, rollout)
    models = train_reward_models(a, rollout, out, labelled)
    if not models:
        raise ValueError(f"no budget in --budgets {a.budgets} could be met: {labelled} pairs were labelled.")
    fresh = make_rollout(study, a.model, out / "rollout-fresh", a.seed + 1, audio_format="flac",
                         prompts="synthcaps:heldout", max_prompts=a.fresh_prompts, rewards=("clap", "verifier"))  # fmt: skip
    agree = fresh_agreement(a, fresh, models)
    confirm = None
    if a.confirm_prompts:  # the same check on prompts that no design choice was made on
        held = make_rollout(study, a.model, out / "rollout-confirm", a.seed + 2, audio_format="flac",
                            prompts="synthcaps:heldout", max_prompts=a.confirm_prompts,
                            first_prompt=a.confirm_first_prompt, rewards=("clap", "verifier"))  # fmt: skip
        confirm = fresh_agreement(a, held, models)
    best = max(models, key=lambda b: agree[f"preference-{b}"]["top1_gain"][0])
    result: dict = {"settings": asdict(a), "labelled_pairs": labelled, "reward_models": models, "agreement": agree,
                    "agreement_confirm": confirm, "best_budget": best, "runs": {}}  # fmt: skip
    clap_top1 = agree["clap"]["top1_gain"][0]
    result["top1_ratio_vs_clap"] = {
        b: (agree[f"preference-{b}"]["top1_gain"][0] / clap_top1 if clap_top1 > 0 else None) for b in models
    }
    if confirm:
        c = confirm["clap"]["top1_gain"][0]
        result["top1_ratio_vs_clap_confirm"] = {
            b: (confirm[f"preference-{b}"]["top1_gain"][0] / c if c > 0 else None) for b in models
        }
    if not a.finetune:
        return finish(result)
    # the preference model as a rollout column, then the three fine-tunes from one rollout
    from base_model.files import file_hash
    from rewardflow.rollout import main as rollout_main
    from rewardflow.rollout import make_parser as rollout_parser

    marker = out / "rollout-label" / "preference-column.json"
    column = {"path": models[best]["path"], "hash": file_hash(Path(models[best]["path"]) / "model.safetensors")}
    if not marker.is_file() or json.loads(marker.read_text()) != column:
        argv = ["--output_dir", rollout, "--rescore", "true", "--rewards", f"preference:{models[best]['path']}"]
        rollout_main(*rollout_parser().parse_args_and_config(args=argv))
        atomic_write_json(marker, column)
    topk = {"weighting": "topk", "top_k": a.top_k}
    runs = {
        "clap-topk": {"reward": "clap", **topk},
        "preference-topk": {"reward": "preference", **topk},
        **{dpo_name(b): {"objective": "dpo", "pairs": "preferences", "dpo_beta": b} for b in a.dpo_betas},
    }
    # a run tuned on the preference column is named by that column's model, so a retrained model is a new run
    folders = {name: name if name != "preference-topk" else f"{name}-{column['hash'][:8]}" for name in runs}
    finals = {name: finetune_run(study, folders[name], dict(fields), rollout, out) for name, fields in runs.items()}
    report = evaluate_models(study, [a.model, *finals.values()], out, "main")
    result["base"] = report["models"][a.model]
    for name, folder in finals.items():
        result["runs"][name] = {"model": report["models"][folder], "paired_vs_base": report["paired_vs_first"][folder]}
    for name in ("preference-topk", *map(dpo_name, a.dpo_betas)):
        result["runs"][name]["paired_vs_clap"] = paired_difference(study, finals[name], finals["clap-topk"])
    result["metric_info"] = report["metric_info"]
    return finish(result)


def make_parser():
    from trl import TrlParser

    return TrlParser((LoopArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
