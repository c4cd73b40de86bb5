"""How much of a preference reward model's agreement is its recipe, and how much is chance? Trains the reward trainer
(`rewardflow/train_reward.py`) with several recipes, budgets and seeds on one labelled rollout, and scores each
model's within-prompt top-1 gain on the verifier (the agreement diagnostic) on two sets of fresh prompts, as a
multiple of CLAP's on the same clips.

    python experiments/reward_recipes.py --loop_dir outputs/preference-512       # after preference_loop.py
    python experiments/reward_recipes.py --loop_dir outputs/preference-512 --recipes fixed_100 --seeds 0 100

`--loop_dir` is a `preference_loop.py` output folder: its `rollout-label/` (with the simulated listener's
`preferences/`), `rollout-fresh/` (the first set) and `rollout-confirm/` (the confirmation set). Every clip is
embedded once per run and each model is trained on those embeddings (`train_reward.train_model`), so a cell costs
seconds to minutes, not a rollout. Each finished cell is written at once (atomically) to `--output_dir`'s
`results.json`; a rerun skips the cells already there with the same settings.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# named recipes: RewardTrainingConfig fields, each written out in full so a recipe means the same whatever the
# trainer's defaults become
RECIPES = {
    "select_step": {"select_step": True, "steps": 1000},  # each head keeps its best step on its held-out prompts
    "ensemble10": {"select_step": True, "steps": 1000, "ensemble": 10},
    "fixed_100": {"select_step": False, "steps": 100},  # no step choice: 100 steps, the last kept
    "no_descriptors": {"select_step": True, "steps": 1000, "descriptors": False},
}


@dataclass
class RecipeArguments:
    loop_dir: str = field(default="outputs/preference-512", metadata={"help": "A preference_loop.py output folder."})
    output_dir: str = field(default="outputs/reward-recipes", metadata={"help": "Where results.json goes."})
    results_dir: str = field(
        default="experiments/results/reward_recipes", metadata={"help": "Committed JSON ('' skips)."}
    )
    recipes: list[str] = field(default_factory=lambda: list(RECIPES), metadata={"help": f"Of {list(RECIPES)}."})
    budgets: list[int] = field(default_factory=lambda: [3000, 7500], metadata={"help": "Labelled pairs used."})
    seeds: list[int] = field(
        default_factory=lambda: [0, 100, 200],
        metadata={"help": "Trainer seeds per cell; head k of seed s uses s + k, so seeds lie an ensemble apart."},
    )
    bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples over prompts."})
    large_prompts: int = field(
        default=0,
        metadata={
            "help": "Held-out prompts of a third, larger fresh set (rollout-large/, made here if missing; 0: none)."
        },
    )
    large_first_prompt: int = field(
        default=1024, metadata={"help": "First held-out prompt of that set (after every prompt the loop used)."}
    )
    large_seed: int = field(default=3, metadata={"help": "Rollout seed of that set (the loop's sets use 1 and 2)."})

    def __post_init__(self):
        unknown = [r for r in self.recipes if r not in RECIPES]
        if unknown:
            raise ValueError(f"--recipes {unknown} unknown: choose from {list(RECIPES)}.")
        if not self.budgets or min(self.budgets) < 2 or not self.seeds:
            raise ValueError(
                f"--budgets needs counts >= 2 and --seeds at least one seed, got {self.budgets}, {self.seeds}."
            )
        from rewardflow.train_reward import RewardTrainingConfig

        heads = max(RECIPES[r].get("ensemble", RewardTrainingConfig.ensemble) for r in self.recipes)
        ordered = sorted(self.seeds)
        if any(b - a < heads for a, b in zip(ordered, ordered[1:])):
            raise ValueError(
                f"--seeds {self.seeds} share heads: head k of seed s trains with seed s + k, so with up to {heads} "
                f"heads space the seeds at least {heads} apart (e.g. 0 100 200)."
            )
        missing = [
            s for s in ("rollout-label", "rollout-fresh", "rollout-confirm") if not (Path(self.loop_dir) / s).is_dir()
        ]
        if missing:
            raise ValueError(
                f"--loop_dir {self.loop_dir} lacks {missing}: run experiments/preference_loop.py "
                f"--output_dir {self.loop_dir} (with --confirm_prompts > 0) first."
            )
        if self.large_prompts:
            loop = self.loop_settings()
            used = max(
                loop["first_prompt"] + loop["eval_prompts"], loop["confirm_first_prompt"] + loop["confirm_prompts"]
            )
            if self.large_first_prompt < used:
                raise ValueError(
                    f"--large_first_prompt {self.large_first_prompt} overlaps the loop's held-out prompts (up to "
                    f"{used}): start it at or after {used}."
                )

    def loop_settings(self) -> dict:
        path = Path(self.loop_dir) / "results.json"
        if not path.is_file():
            raise ValueError(f"--loop_dir {self.loop_dir} has no results.json: let preference_loop.py finish first.")
        return json.loads(path.read_text())["settings"]

    def sets(self) -> list[str]:
        return ["fresh", "confirm"] + (["large"] if self.large_prompts else [])


def eval_set(rollout: Path, clap, with_descriptors: bool) -> dict:
    """The fresh set's clips as the heads read them, with their prompt ids, CLAP and verifier scores and CLAP's
    per-prompt top-1 gains."""
    from rewardflow.rollout_table import load_rollout
    from rewardflow.train_reward import clip_features

    table = load_rollout(str(rollout))
    rows = [
        {"rollout": str(rollout), "audio_path": p, "prompt": q} for p, q in zip(table["audio_path"], table["prompt"])
    ]
    out = {"features": clip_features(rows, clap, with_descriptors), "groups": list(table["prompt_id"]),
           "clap": np.asarray(table["reward/clap"], dtype=np.float64),
           "verifier": np.asarray(table["reward/verifier"], dtype=np.float64)}  # fmt: skip
    out["clap_top1"] = top1(out["clap"], out)  # per prompt, once: every model is paired against it
    return out


def top1(scores: np.ndarray, s: dict) -> np.ndarray:
    """Per-prompt top-1 gains on the verifier of `scores` on set `s`, in one prompt order for any scores."""
    from rewardflow.agreement import per_prompt

    return np.asarray(per_prompt(scores, s["verifier"], s["groups"])["top1"])


def first_pairs(clips: dict, n: int) -> dict:
    """`embed_clips`'s table cut to its first `n` pairs and the clips they name: clips are numbered in order of first
    appearance, so those are a prefix, exactly what `embed_clips` gives for the first `n` pairs alone."""
    a, b = clips["a"][:n], clips["b"][:n]
    m = int(max(a.max(), b.max())) + 1
    return {**{k: v[:m] for k, v in clips.items() if k not in ("a", "b")}, "a": a, "b": b}


def ratio(mine: np.ndarray, clap: np.ndarray) -> float | None:
    """Mean top-1 gain as a multiple of CLAP's on the same prompts (None when CLAP's is not above zero)."""
    return float(mine.mean() / clap.mean()) if clap.mean() > 0 else None


def paired(mine: np.ndarray, clap: np.ndarray, bootstrap: int) -> dict:
    """Paired by prompt: the model's top-1 gain minus CLAP's, and minus twice CLAP's, each `[mean, low, high]`."""
    from rewardflow.metrics import bootstrap_interval

    return {"top1_minus_clap": list(bootstrap_interval(mine - clap, bootstrap)),
            "top1_minus_2clap": list(bootstrap_interval(mine - 2 * clap, bootstrap))}  # fmt: skip


def agreement(scores: np.ndarray, s: dict, bootstrap: int) -> dict:
    from rewardflow.agreement import within_prompt_agreement

    return within_prompt_agreement(scores, s["verifier"], s["groups"], bootstrap=bootstrap)


def main(a: RecipeArguments) -> dict:
    import torch

    from base_model.files import atomic_write_json
    from experiments.results_io import publish_json
    from reward_models.clap import ClapReward
    from rewardflow.train_reward import RewardTrainingConfig, embed_clips, pair_table, train_model

    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    loop = Path(a.loop_dir)
    label = str(loop / "rollout-label")
    clap = ClapReward()
    every = pair_table(RewardTrainingConfig(rollouts=[label]))
    with_desc = embed_clips(every, clap, with_descriptors=True)  # once; recipes without descriptors drop them
    clips = {True: with_desc, False: {k: v for k, v in with_desc.items() if k != "desc"}}
    if a.large_prompts:  # rolled out as the loop rolled out its fresh sets
        from experiments.alignment_study import RolloutSettings, make_rollout

        ls = a.loop_settings()
        like = RolloutSettings(a.large_prompts, ls["num_generations"], ls["rollout_cfg_scale"], ls["processes"])
        make_rollout(like, ls["model"], loop / "rollout-large", a.large_seed, audio_format="flac",
                     prompts="synthcaps:heldout", max_prompts=a.large_prompts, first_prompt=a.large_first_prompt,
                     rewards=("clap", "verifier"))  # fmt: skip
    sets = {name: eval_set(loop / f"rollout-{name}", clap, True) for name in a.sets()}
    result["settings"] = {**asdict(a), "recipe_fields": {r: RECIPES[r] for r in a.recipes}}
    result["clap"] = {name: agreement(s["clap"], s, a.bootstrap) for name, s in sets.items()}
    result["labelled_pairs"] = len(every)
    cells = {(c["recipe"], c["budget"], c["seed"]): c for c in result.get("cells", [])}

    def ordered() -> list[dict]:
        return [cells[k] for k in sorted(cells)]

    for recipe in a.recipes:
        fields = RECIPES[recipe]
        for budget in a.budgets:
            for seed in a.seeds:
                cfg = RewardTrainingConfig(rollouts=[label], max_pairs=budget, seed=seed, **fields)
                done = cells.get((recipe, budget, seed))
                if done and done["settings"] == asdict(cfg) and all(n in done for n in sets) and "pooled" in done:
                    continue
                pairs = every[:budget]
                part = first_pairs(clips[cfg.descriptors], budget)
                start = time.perf_counter()
                model, metrics = train_model(cfg, pairs, part, clap)
                cell = {"recipe": recipe, "budget": budget, "seed": seed, "settings": asdict(cfg),
                        "heldout_pair_accuracy": metrics["heldout_pair_accuracy"],
                        "steps": [h["step"] for h in metrics["heads"]], "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
                mine = {}
                for name, st in sets.items():
                    f = st["features"]
                    with torch.no_grad():
                        scores = model(f["audio"], f["text"], f.get("desc") if cfg.descriptors else None).numpy()
                    cell[name] = agreement(scores, st, a.bootstrap)
                    mine[name] = top1(scores, st)
                    cell[name].update(paired(mine[name], st["clap_top1"], a.bootstrap))
                    cell[f"ratio_{name}"] = ratio(mine[name], st["clap_top1"])
                every_mine = np.concatenate(list(mine.values()))
                every_clap = np.concatenate([st["clap_top1"] for st in sets.values()])
                cell["pooled"] = paired(every_mine, every_clap, a.bootstrap)
                cell["ratio_pooled"] = ratio(every_mine, every_clap)
                cells[(recipe, budget, seed)] = cell
                shown = " / ".join("n/a" if cell[f"ratio_{n}"] is None else f"{cell[f'ratio_{n}']:.2f}x" for n in sets)
                print(f"{recipe} {budget} seed {seed}: {shown} CLAP's top-1 gain ({cell['seconds']} s)", flush=True)
                result["cells"] = ordered()
                atomic_write_json(path, result)
    result["cells"] = ordered()
    atomic_write_json(path, result)  # every cell made so far; what is published and returned is this run's
    asked = [
        c for c in result["cells"] if c["recipe"] in a.recipes and c["budget"] in a.budgets and c["seed"] in a.seeds
    ]
    result = {**result, "cells": asked}
    publish_json(result, a.results_dir)
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((RecipeArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
