"""A guardrail against reward hacking: evaluate the policy every N steps on fixed held-out prompts, keep the best
checkpoint by a rule that bounds fidelity loss, and stop when it stops improving.

    accelerate launch rewardflow/finetune.py --reward clap --guard_every 100 --guard_max_fd_increase 0.1

Every `--guard_every` steps (and at step 0, the starting model) the policy generates one clip for each of
`--guard_num_prompts` prompts with fixed seeds and is scored on:
- fidelity: the Fréchet distance of mel statistics to the prompts' reference clips (`mel_frechet`), and the KL of
  the SynthCaps attribute classifier's labels when the prompts are SynthCaps (`kl`);
- the training reward (`--reward`) and `--guard_rewards` (by default one reward not used in training).
The kept checkpoint is the one with the highest `--guard_select` score among evaluations whose `mel_frechet` is at
most `(1 + --guard_max_fd_increase)` times the starting model's (the start always qualifies, so a run that only
hacks its reward keeps the starting weights). After `--guard_patience` evaluations without a new best, training
stops early. Everything is logged to `report_to` as `guard/<metric>`, kept in `<output_dir>/guardrail.json`, and
written into the model card; the kept weights replace the last ones in `final/`.

The guard prompts default to held-out SynthCaps prompts 5000 onwards, away from the ranges evaluations use, so
choosing a checkpoint on them does not peek at the test prompts.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from base_model.files import atomic_write_json

logger = logging.getLogger("rewardflow.guardrail")


@dataclass
class GuardRule:
    """Which evaluation wins: the highest `select` score with `fidelity <= start * (1 + max_increase)`."""

    select: str
    fidelity: str = "mel_frechet"
    max_increase: float = 0.1

    def admissible(self, record: dict, start: dict) -> bool:
        return record[self.fidelity] <= start[self.fidelity] * (1.0 + self.max_increase)

    def best(self, history: list[dict]) -> dict:
        start = history[0]
        candidates = [r for r in history if self.admissible(r, start) and math.isfinite(r[self.select])]
        return max(candidates, key=lambda r: (r[self.select], -r["step"])) if candidates else start

    def describe(self) -> str:
        return f"highest {self.select} with {self.fidelity} <= start x {1 + self.max_increase:g}"


class GuardEvaluator:
    """Generates the guard prompts' clips with a model and scores them (fidelity + rewards)."""

    def __init__(
        self,
        pipe,
        prompts: list[dict],
        reference: np.ndarray,
        rewards: dict,
        sampling: dict,
        select: str = "",
        seed: int = 7,
    ):
        from base_model import MelSpectrogram
        from rewardflow.metrics import mel_statistics
        from rewardflow.prompts import sample_seed

        self.pipe, self.prompts, self.rewards, self.sampling, self.select = pipe, prompts, rewards, sampling, select
        self.seeds = [sample_seed(seed, p["prompt_id"], 0) for p in prompts]
        self.mel_fn = MelSpectrogram()
        self.reference = torch.from_numpy(np.asarray(reference, dtype=np.float32))
        self.ref_stats = mel_statistics(self.mel_fn(self.reference))
        self.classifier = None
        if all(p["attributes"] for p in prompts):
            from reward_models.classifiers import load_classifier

            self.classifier = load_classifier("synthcaps")
            self.ref_probs = self.classifier.probs(self.reference, 16000).numpy()

    @torch.inference_mode()
    def __call__(self, model) -> dict:
        from reward_models.classifiers import kl_divergence
        from rewardflow.metrics import frechet_distance, mel_statistics
        from rewardflow.scoring import score_batch

        self.pipe.model = model
        texts = [p["prompt"] for p in self.prompts]
        wavs = []
        for i in range(0, len(texts), 16):
            wavs.append(self.pipe(texts[i : i + 16], **self.sampling, seed=self.seeds[i : i + 16]).waveforms.cpu())
        wav = torch.cat(wavs)
        scored = wav
        if self.pipe.sample_rate != 16000:  # the fidelity front ends and the references are at 16 kHz
            from reward_models.base import resample

            wav = resample(wav, self.pipe.sample_rate, 16000)
        n = min(wav.shape[1], self.reference.shape[1])
        out = {"mel_frechet": frechet_distance(mel_statistics(self.mel_fn(wav[:, :n])), self.ref_stats)}
        if self.classifier is not None:
            out["kl"] = float(kl_divergence(self.ref_probs, self.classifier.probs(wav, 16000).numpy()).mean())
        cols = score_batch(self.rewards, scored, self.pipe.sample_rate, texts, [p["attributes"] for p in self.prompts])
        out.update({k.removeprefix("reward/"): float(np.nanmean(v)) for k, v in cols.items() if k.count("/") == 1})
        if self.select and self.select not in out:  # a composition of rewards: linear, so of their means
            from rewardflow.objectives import resolve_reward

            value, _ = resolve_reward(self.select, {f"reward/{k}": np.array([v]) for k, v in out.items()})
            out[self.select] = float(value[0])
        return out


class GuardrailCallback(TrainerCallback):
    """Runs a [`GuardEvaluator`] every `every` steps, keeps the best weights by a [`GuardRule`] and stops early.

    `bind(trainer)` gives it the trainer (to log and to reach the model); `restore_best(model)` loads the kept
    weights before the final pipeline is saved. History and kept weights live in `out_dir` and survive a resume.
    """

    def __init__(
        self, evaluator, rule: GuardRule, every: int, patience: int, out_dir: str | Path, is_main: bool = True
    ):
        if every < 1:
            raise ValueError(f"--guard_every must be >= 1 to guard a run, got {every}.")
        self.evaluator, self.rule, self.every, self.patience = evaluator, rule, every, patience
        self.out, self.is_main = Path(out_dir), is_main  # every rank evaluates (same result); one writes
        self.history: list[dict] = []
        self.trainer = None

    @property
    def history_file(self) -> Path:
        return self.out / "guardrail.json"

    def weights_file(self, step: int) -> Path:
        """Every evaluation that became the best keeps its weights (a later resume may fall back to it)."""
        return self.out / "guardrail" / f"step-{step}.safetensors"

    def bind(self, trainer) -> GuardrailCallback:
        self.trainer = trainer
        return self

    def _evaluate(self, step: int, model) -> None:
        from rewardflow.finetune_trainer import base_model_of

        policy = base_model_of(model)
        was_training = policy.training
        record = {"step": step, **self.evaluator(policy.eval())}
        policy.train(was_training)
        self.history.append(record)
        best = self.rule.best(self.history)
        if best is record and self.is_main:
            self._save_weights(step, model)
        if self.trainer is not None:
            self.trainer.log(
                {f"guard/{k}": v for k, v in record.items() if k != "step"} | {"guard/best_step": best["step"]}
            )
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.history_file, {"rule": self.rule.describe(), "history": self.history, "best": best})
        logger.info("guardrail at step %d: %s (kept: step %d)", step, record, best["step"])

    def _save_weights(self, step: int, model) -> None:
        from safetensors.torch import save_file

        from rewardflow.finetune_trainer import unwrap_engine

        path = self.weights_file(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in unwrap_engine(model).state_dict().items()}
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(state, str(tmp))
        tmp.replace(path)

    def restore_best(self, model) -> dict:
        """Loads the kept weights into `model` (the last ones when the last evaluation is the best); returns the
        kept evaluation."""
        from safetensors.torch import load_file

        from rewardflow.finetune_trainer import unwrap_engine

        best = self.rule.best(self.history)
        unwrap_engine(model).load_state_dict(load_file(str(self.weights_file(best["step"]))))
        return best

    # ---------------------------------------------------------------------------------------- Trainer hooks
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # On resume, the evaluations up to the resumed step stand; any after it are made again.
        if self.history_file.is_file():
            kept = json.loads(self.history_file.read_text())["history"]
            self.history = [r for r in kept if r["step"] <= state.global_step]
            if self.history and not self.weights_file(self.rule.best(self.history)["step"]).is_file():
                self.history = []  # the kept weights are gone: start the record again
        if not self.history:
            self._evaluate(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 and state.global_step > self.history[-1]["step"]:
            self._evaluate(state.global_step, model)
            best = self.rule.best(self.history)
            evaluations_since = sum(1 for r in self.history if r["step"] > best["step"])
            if self.patience and evaluations_since >= self.patience:
                logger.info(
                    "guardrail: no new best in %d evaluations; stopping at step %d",
                    evaluations_since,
                    state.global_step,
                )
                control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.global_step > self.history[-1]["step"]:
            self._evaluate(state.global_step, model)

    def summary(self) -> dict:
        best = self.rule.best(self.history)
        return {"rule": self.rule.describe(), "best_step": best["step"], "best": best, "every": self.every,
                "prompts": len(self.evaluator.prompts) if hasattr(self.evaluator, "prompts") else None,
                "evaluations": len(self.history)}  # fmt: skip
