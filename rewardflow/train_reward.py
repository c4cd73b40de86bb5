"""Train a preference reward model (Bradley–Terry) from the A/B judgements beside one or more rollouts.

    python rewardflow/train_reward.py --rollouts outputs/rollout --output_dir outputs/preference-rm
    python rewardflow/rollout.py --output_dir outputs/rollout --rescore true --rewards preference:outputs/preference-rm

Small heads over frozen CLAP audio and text embeddings, and with `--descriptors true` the clip's signal descriptors
(level, envelope, modulation rates, spectral shape: `reward_models/descriptors.py`), learn
`P(a preferred to b) = sigmoid(r(a, t) - r(b, t))` from the answered pairs (a tie counts as half a win each way;
skips are left out; `reward_models/preference.py`).

`--ensemble K` trains K heads, each with its own seed and its own held-out share of the prompts
(`--heldout_fraction`, by prompt, so no held-out pair's prompt was trained on by that head); the model's score is
their mean. Each head trains `--steps` full-batch steps (default 100) and reports its pair accuracy on its held-out
prompts, which chose nothing and so is an honest estimate. `--select_step true` instead keeps each head's step with
the best held-out accuracy (checked every 25 steps), which makes that accuracy optimistic; on the embedded default the
fixed 100 steps ranked clips better and varied less with the seed (`experiments/README.md` §6, recipe study).
The result is a `save_pretrained` folder with a model card and `metrics.json`, loadable as
`load_reward("preference:<dir>")` and usable in rollout, fine-tuning (`--reward preference`) and the agreement
diagnostic.
"""

from __future__ import annotations

import hashlib
import json
import math
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
    descriptors: bool = field(
        default=True, metadata={"help": "Also read the clip's signal descriptors (level, envelope, modulation)."}
    )
    ensemble: int = field(default=5, metadata={"help": "Heads, each with its own seed and held-out prompts."})
    hidden_size: int = field(default=32, metadata={"help": "Head width."})
    steps: int = field(default=100, metadata={"help": "Adam steps per head (full batch)."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay."})
    heldout_fraction: float = field(default=0.2, metadata={"help": "Share of prompts each head holds out."})
    select_step: bool = field(
        default=False, metadata={"help": "Keep each head's step with the best held-out pair accuracy (else the last)."}
    )
    max_pairs: int = field(default=0, metadata={"help": "Use the first N answered pairs by time (0: all)."})
    seed: int = field(default=0, metadata={"help": "Seed of the split and the head's init."})

    def __post_init__(self):
        if not self.rollouts:
            raise ValueError("--rollouts needs at least one rollout folder with a preferences/ table.")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"--heldout_fraction must be in [0, 1), got {self.heldout_fraction}.")
        if self.steps < 1 or self.hidden_size < 1 or self.ensemble < 1 or self.max_pairs < 0:
            raise ValueError("--steps, --hidden_size and --ensemble must be >= 1, --max_pairs >= 0.")
        if self.select_step and self.heldout_fraction == 0:
            raise ValueError("--select_step true picks a step on held-out prompts: set --heldout_fraction > 0.")


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


def clip_features(rows: list[dict], clap, with_descriptors: bool = False) -> dict[str, torch.Tensor]:
    """What the heads read of each clip (`rows[i]`: `{"rollout", "audio_path", "prompt"}`): `{"audio", "text"}` its
    CLAP audio embedding and its prompt's text embedding, each `(N, E)`, and with `with_descriptors` its signal
    descriptors `"desc"` `(N, D)`; each clip read as stored (what a listener heard and judged)."""
    from rewardflow.rollout_table import read_audio

    wavs, rates = [], set()
    for r in rows:
        wav, sr = read_audio(Path(r["rollout"]) / r["audio_path"])
        wavs.append(torch.from_numpy(np.asarray(wav, dtype=np.float32)))
        rates.add(sr)
    if len(rates) != 1:
        raise ValueError(f"the rollouts mix sample rates {sorted(rates)}; train on rollouts of one generator.")
    rate = rates.pop()
    audio = []
    for i in range(0, len(wavs), 32):
        n = max(len(w) for w in wavs[i : i + 32])
        batch = torch.stack([torch.nn.functional.pad(w, (0, n - len(w))) for w in wavs[i : i + 32]])
        audio.append(torch.as_tensor(clap.embed_audio(batch, rate)).float())
    prompts = sorted({r["prompt"] for r in rows})
    text = dict(zip(prompts, torch.as_tensor(clap.embed_text(prompts)).float()))
    out = {"audio": torch.cat(audio), "text": torch.stack([text[r["prompt"]] for r in rows])}
    if with_descriptors:
        from reward_models.descriptors import descriptors

        out["desc"] = torch.as_tensor(np.stack([descriptors(w.numpy(), rate) for w in wavs])).float()
    return out


def embed_clips(pairs: list[dict], clap, with_descriptors: bool = False) -> dict[str, torch.Tensor]:
    """Each clip the pairs name, once (`clip_features`), and the pairs as clip indices `{"a", "b"}`, each `(P,)`:
    training scores every clip once per step and compares pairs by index."""
    index, rows = {}, []
    for p in pairs:
        for side in ("a", "b"):
            key = (p[side]["rollout"], p[side]["audio_path"])
            if key not in index:
                index[key] = len(rows)
                rows.append({"rollout": key[0], "audio_path": key[1], "prompt": p["prompt"]})
    out = clip_features(rows, clap, with_descriptors)
    for side in ("a", "b"):
        out[side] = torch.tensor([index[(p[side]["rollout"], p[side]["audio_path"])] for p in pairs])
    return out


def split_by_prompt(pairs: list[dict], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out pairs: a fixed share of prompts (by a hash of the prompt id and the seed)."""

    def bucket(pid: str) -> float:
        return int(hashlib.sha256(f"{seed}/{pid}".encode()).hexdigest()[:8], 16) / 2**32

    return np.array([bucket(p["prompt_id"]) < fraction for p in pairs])


def fit(
    model, head: int, clips: dict, train: dict, held: dict | None, cfg: RewardTrainingConfig
) -> tuple[list[float], dict]:
    """Trains one head (`model.heads[head]`) on the `train` pairs (`{"a", "b", "target"}`, `a` and `b` indices into
    `clips`: `{"audio", "text", "desc"}` as `embed_clips` gives). With `held` pairs it checks their pair accuracy
    every 25 steps and, with `--select_step`, keeps the best step (a check with no decided pair counts for nothing);
    without, it reports the last step's. Returns the losses and `{"step", "heldout_pair_accuracy"}` (None without
    held-out pairs)."""
    net = model.heads[head]
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def margin(pairs: dict) -> torch.Tensor:  # every clip scored once, then compared by pair
        score = net(model.features(clips["audio"], clips["text"], clips.get("desc"))).squeeze(-1)
        return score[pairs["a"]] - score[pairs["b"]]

    losses, best, kept = [], {"step": cfg.steps, "heldout_pair_accuracy": None}, None
    for step in range(1, cfg.steps + 1):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(margin(train), train["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        check = held is not None and (step == cfg.steps or (cfg.select_step and step % 25 == 0))
        if not check:
            continue
        with torch.no_grad():
            acc = decided_accuracy(margin(held), held["target"])
        if not cfg.select_step:
            best = {"step": step, "heldout_pair_accuracy": None if math.isnan(acc) else acc}
        elif not math.isnan(acc) and (best["heldout_pair_accuracy"] is None or acc > best["heldout_pair_accuracy"]):
            best = {"step": step, "heldout_pair_accuracy": acc}
            kept = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if kept is not None:
        net.load_state_dict(kept)
    return losses, best


def decided_accuracy(margin: torch.Tensor, target: torch.Tensor) -> float:
    """Share of decided pairs (not ties) whose margin `r(a) - r(b)` sides with the labeller; NaN when none."""
    decided = target != 0.5
    if not decided.any():
        return float("nan")
    return float(((margin[decided] > 0) == (target[decided] > 0.5)).float().mean())


@torch.no_grad()
def pair_accuracy(model, clips: dict, target: torch.Tensor) -> float:
    """The whole model's pair accuracy (the mean of its heads' scores) on the pairs of `clips` (`embed_clips`)."""
    score = model(clips["audio"], clips["text"], clips.get("desc"))
    return decided_accuracy(score[clips["a"]] - score[clips["b"]], target)


def train_model(cfg: RewardTrainingConfig, pairs: list[dict], clips: dict, clap) -> tuple[object, dict]:
    """The heads trained on `pairs` whose clips `embed_clips` embedded with `clap`: `(model, metrics)`. No files;
    `main` saves them, and a study can call this many times on one embedding."""
    from reward_models.preference import PreferenceRewardConfig, PreferenceRewardModel

    data = {
        "a": clips["a"],
        "b": clips["b"],
        "target": torch.tensor([p["target"] for p in pairs], dtype=torch.float32),
    }
    desc = clips.get("desc")
    config = PreferenceRewardConfig(embed_dim=clips["audio"].shape[1], hidden_size=cfg.hidden_size,
                                    clap_checkpoint=cfg.clap_checkpoint, clap_model_id=clap.model_id,
                                    clap_hash=clap.checkpoint_hash, descriptor_dim=0 if desc is None else desc.shape[1],
                                    num_heads=cfg.ensemble)  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = PreferenceRewardModel(config)
    if desc is not None:  # standardised by the statistics of every clip in the table
        model.descriptor_mean.copy_(desc.mean(0))
        model.descriptor_scale.copy_(desc.std(0).clamp_min(1e-6))
    heads = []
    for k in range(cfg.ensemble):
        seed = cfg.seed + k
        torch.manual_seed(seed)
        for layer in model.heads[k]:
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
        held = torch.from_numpy(split_by_prompt(pairs, cfg.heldout_fraction, seed))
        train_part = {key: v[~held] for key, v in data.items()}
        held_part = {key: v[held] for key, v in data.items()} if held.any() else None
        losses, best = fit(model, k, clips, train_part, held_part, cfg)
        heads.append({"seed": seed, "train_pairs": int((~held).sum()), "heldout_pairs": int(held.sum()),
                      "final_train_loss": losses[-1], **best})  # fmt: skip
        print(f"head {k + 1}/{cfg.ensemble}: step {best['step']}, held-out pair accuracy "
              f"{best['heldout_pair_accuracy']}", flush=True)  # fmt: skip
    model.eval()
    held_acc = [h["heldout_pair_accuracy"] for h in heads if h["heldout_pair_accuracy"] is not None]
    metrics = {
        "pairs": len(pairs), "train_pairs": heads[0]["train_pairs"], "heldout_pairs": heads[0]["heldout_pairs"],
        "heads": heads, "descriptors": cfg.descriptors,
        # over every labelled pair, most of which each head trained on: how well the ensemble fits its labels
        "labelled_pair_accuracy": pair_accuracy(model, clips, data["target"]),
        "heldout_pair_accuracy": float(np.mean(held_acc)) if held_acc else None,
        "final_train_loss": float(np.mean([h["final_train_loss"] for h in heads])),
        "labellers": sorted({p["labeller"] for p in pairs}), "settings": asdict(cfg),
    }  # fmt: skip
    return model, metrics


def main(cfg: RewardTrainingConfig) -> dict:
    from base_model.files import atomic_write_json, atomic_write_text
    from reward_models.clap import ClapReward

    pairs = pair_table(cfg)  # checked before CLAP loads
    clap = ClapReward(checkpoint=cfg.clap_checkpoint or None)
    start = time.perf_counter()
    model, metrics = train_model(cfg, pairs, embed_clips(pairs, clap, with_descriptors=cfg.descriptors), clap)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(cfg.output_dir)
    model.save_pretrained(out)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "README.md", model_card(cfg, metrics, clap))
    print(json.dumps(metrics, indent=2))
    return metrics


def command_line(cfg: RewardTrainingConfig) -> str:
    """The command that makes this model, whoever called `main`: every setting that differs from its default."""
    default = asdict(RewardTrainingConfig())
    flags = []
    for key, value in asdict(cfg).items():
        if value != default[key]:
            shown = (
                " ".join(map(str, value))
                if isinstance(value, list)
                else str(value).lower()
                if isinstance(value, bool)
                else value
            )
            flags.append(f"--{key} {shown}")
    return " ".join(["python rewardflow/train_reward.py", *flags])


def _f3(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def model_card(cfg: RewardTrainingConfig, metrics: dict, clap) -> str:
    return f"""# Preference reward model (Bradley–Terry over CLAP embeddings{" and signal descriptors" if cfg.descriptors else ""})

Trained by `{command_line(cfg)}` on {metrics["pairs"]} answered A/B pairs
from {", ".join(cfg.rollouts)} (labellers: {", ".join(metrics["labellers"])}); embeddings from {clap.model_id}
(checkpoint {clap.checkpoint_hash}). {cfg.ensemble} head(s), each holding out its own {cfg.heldout_fraction:.0%} of the
prompts{" and keeping its best step on them (so their held-out pair accuracy is optimistic)" if cfg.select_step else ""};
mean held-out pair accuracy {_f3(metrics["heldout_pair_accuracy"])}.

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
