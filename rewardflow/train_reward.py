"""Train a preference reward model (Bradley–Terry) from the A/B judgements beside one or more rollouts.

    python rewardflow/train_reward.py --rollouts outputs/rollout --output_dir outputs/preference-rm
    python rewardflow/rollout.py --output_dir outputs/rollout --rescore true --rewards preference:outputs/preference-rm

A small head over frozen CLAP audio and text embeddings (`reward_models/preference.py`) learns
`P(a preferred to b) = sigmoid(r(a, t) - r(b, t))` from the answered pairs (a tie counts as half a win each way;
skips are left out). A share of the prompts is held out (`--heldout_fraction`, by prompt, so no held-out pair's
prompt was trained on) and the held-out pair accuracy is reported. The result is a `save_pretrained` folder with a
model card and `metrics.json`, loadable as `load_reward("preference:<dir>")` and usable in rollout, fine-tuning
(`--reward preference`) and the agreement diagnostic.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class RewardTrainingConfig:
    rollouts: list[str] = field(
        default_factory=lambda: ["outputs/rollout"], metadata={"help": "Rollouts with preferences/."}
    )
    output_dir: str = field(default="outputs/preference-rm", metadata={"help": "Where the reward model goes."})
    clap_checkpoint: str = field(
        default="", metadata={"help": "CLAP whose embeddings the head reads (default: bundled)."}
    )
    labellers: list[str] = field(default_factory=list, metadata={"help": "Use only these labellers (default: all)."})
    hidden_size: int = field(default=128, metadata={"help": "Head width."})
    steps: int = field(default=600, metadata={"help": "Adam steps (full batch)."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=1e-3, metadata={"help": "AdamW weight decay."})
    heldout_fraction: float = field(default=0.2, metadata={"help": "Share of prompts held out for pair accuracy."})
    max_pairs: int = field(default=0, metadata={"help": "Use the first N answered pairs by time (0: all)."})
    seed: int = field(default=0, metadata={"help": "Seed of the split and the head's init."})

    def __post_init__(self):
        if not self.rollouts:
            raise ValueError("--rollouts needs at least one rollout folder with a preferences/ table.")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"--heldout_fraction must be in [0, 1), got {self.heldout_fraction}.")
        if self.steps < 1 or self.hidden_size < 1 or self.max_pairs < 0:
            raise ValueError("--steps and --hidden_size must be >= 1, --max_pairs >= 0.")


def pair_table(cfg: RewardTrainingConfig) -> list[dict]:
    """Answered pairs with their clips' audio rows: `[{"prompt", "prompt_id", "a", "b", "target"}]`, `target` the
    probability that `a` is preferred (1, 0, or 0.5 for a tie)."""
    from rewardflow.preferences import clip_id, load_preferences
    from rewardflow.rollout_table import load_rollout

    pairs = []
    for rollout in cfg.rollouts:
        prefs = load_preferences(rollout)
        table = load_rollout(rollout)
        rows = {clip_id(r["prompt_id"], r["sample_index"]): {"rollout": rollout, **r} for r in table}
        for p in sorted(prefs, key=lambda p: p["timestamp"]):
            if cfg.labellers and p["labeller"] not in cfg.labellers:
                continue
            target = {"a": 1.0, "b": 0.0, "tie": 0.5}[p["choice"]]
            pairs.append({"prompt": p["prompt"], "prompt_id": p["prompt_id"], "a": rows[p["clip_a"]],
                          "b": rows[p["clip_b"]], "target": target, "labeller": p["labeller"]})  # fmt: skip
    if cfg.max_pairs:
        pairs = pairs[: cfg.max_pairs]
    if len(pairs) < 2:
        raise ValueError(
            f"only {len(pairs)} answered pair(s) in {cfg.rollouts}: label some first (`rewardflow label --rollout ...`)."
        )
    return pairs


def embed_pairs(pairs: list[dict], clap) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CLAP embeddings of every pair's two clips and prompt: `(audio_a, audio_b, text)`, each `(P, E)`."""
    from rewardflow.rollout_table import read_audio

    clips, order = {}, []
    for p in pairs:
        for side in ("a", "b"):
            key = (p[side]["rollout"], p[side]["audio_path"])
            if key not in clips:
                wav, sr = read_audio(Path(key[0]) / key[1])  # as stored: what the listener heard and judged
                clips[key] = (torch.from_numpy(np.asarray(wav, dtype=np.float32)), sr)
                order.append(key)
    rates = {s for _, s in clips.values()}
    if len(rates) != 1:
        raise ValueError(f"the rollouts mix sample rates {sorted(rates)}; train on rollouts of one generator.")
    rate = rates.pop()
    emb = {}
    for i in range(0, len(order), 32):
        keys = order[i : i + 32]
        n = max(len(clips[k][0]) for k in keys)
        batch = torch.stack([torch.nn.functional.pad(clips[k][0], (0, n - len(clips[k][0]))) for k in keys])
        emb.update(zip(keys, torch.as_tensor(clap.embed_audio(batch, rate))))
    prompts = sorted({p["prompt"] for p in pairs})
    text = dict(zip(prompts, torch.as_tensor(clap.embed_text(prompts))))
    a = torch.stack([emb[(p["a"]["rollout"], p["a"]["audio_path"])] for p in pairs]).float()
    b = torch.stack([emb[(p["b"]["rollout"], p["b"]["audio_path"])] for p in pairs]).float()
    return a, b, torch.stack([text[p["prompt"]] for p in pairs]).float()


def split_by_prompt(pairs: list[dict], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out pairs: a fixed share of prompts (by a hash of the prompt id and the seed)."""

    def bucket(pid: str) -> float:
        return int(hashlib.sha256(f"{seed}/{pid}".encode()).hexdigest()[:8], 16) / 2**32

    return np.array([bucket(p["prompt_id"]) < fraction for p in pairs])


def fit(model, a, b, t, target, cfg: RewardTrainingConfig) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    losses = []
    for _ in range(cfg.steps):
        logit = model(a, t) - model(b, t)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def pair_accuracy(model, a, b, t, target) -> float:
    """Share of decided pairs (not ties) where the model prefers the labeller's choice; NaN when there are none."""
    decided = target != 0.5
    if not decided.any():
        return float("nan")
    pred = (model(a, t) - model(b, t)) > 0
    return float((pred[decided] == (target[decided] > 0.5)).float().mean())


def main(cfg: RewardTrainingConfig) -> dict:
    from base_model.files import atomic_write_json, atomic_write_text
    from reward_models.clap import ClapReward
    from reward_models.preference import PreferenceRewardConfig, PreferenceRewardModel

    torch.manual_seed(cfg.seed)
    pairs = pair_table(cfg)  # checked before CLAP loads
    clap = ClapReward(checkpoint=cfg.clap_checkpoint or None)
    start = time.perf_counter()
    a, b, t = embed_pairs(pairs, clap)
    target = torch.tensor([p["target"] for p in pairs], dtype=torch.float32)
    held = split_by_prompt(pairs, cfg.heldout_fraction, cfg.seed)
    train = ~held
    config = PreferenceRewardConfig(embed_dim=a.shape[1], hidden_size=cfg.hidden_size, clap_checkpoint=cfg.clap_checkpoint,
                                    clap_model_id=clap.model_id, clap_hash=clap.checkpoint_hash)  # fmt: skip
    model = PreferenceRewardModel(config)
    losses = fit(model, a[train], b[train], t[train], target[train], cfg)
    model.eval()
    metrics = {
        "pairs": len(pairs), "train_pairs": int(train.sum()), "heldout_pairs": int(held.sum()),
        "train_pair_accuracy": pair_accuracy(model, a[train], b[train], t[train], target[train]),
        "heldout_pair_accuracy": pair_accuracy(model, a[held], b[held], t[held], target[held]) if held.any() else None,
        "final_train_loss": losses[-1], "seconds": round(time.perf_counter() - start, 1),
        "labellers": sorted({p["labeller"] for p in pairs}),
    }  # fmt: skip
    out = Path(cfg.output_dir)
    model.save_pretrained(out)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "README.md", model_card(cfg, metrics, clap))
    print(json.dumps(metrics, indent=2))
    return metrics


def model_card(cfg: RewardTrainingConfig, metrics: dict, clap) -> str:
    return f"""# Preference reward model (Bradley–Terry over CLAP embeddings)

Trained by `python rewardflow/train_reward.py {" ".join(sys.argv[1:])}` on {metrics["pairs"]} answered A/B pairs
from {", ".join(cfg.rollouts)} (labellers: {", ".join(metrics["labellers"])}); embeddings from {clap.model_id}
(checkpoint {clap.checkpoint_hash}). {metrics["heldout_pairs"]} pairs of held-out prompts were kept out of training.

```json
{json.dumps({"settings": asdict(cfg), "metrics": metrics}, indent=2)}
```

Load it with `load_reward("preference:<this folder>")`; its score is `preference`.
"""


def make_parser():
    from trl import TrlParser

    return TrlParser((RewardTrainingConfig,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
