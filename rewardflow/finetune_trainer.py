"""`RewardFlowTrainer`: reward-weighted flow matching against a frozen reference (paper §4, Algorithm 2, step 2).

A `transformers.Trainer` that overrides four hooks, each for one reason:
- `compute_loss`: draws the flow inputs once, runs the policy and the reference on them and hands both to the
  objective (`rewardflow/objectives.py`); with `--loss_cfg_scale s` both velocities are the guided ones that
  sampling at `--cfg_scale s` follows ([`guided_flow_output`]); a step whose loss is not finite is marked to be
  skipped.
- `create_optimizer`: wraps the optimizer in [`SkipNonFiniteStep`], so a skipped step leaves the weights, Adam's
  moments and weight decay untouched (zero gradients alone would still move them).
- `_clip_grad_norm`: a gradient norm that overflows (huge weights, finite loss) skips the step too.
- `log`: adds the averaged loss parts, batch reward stats and weight diagnostics to Trainer's logs.
Everything else (accumulation, mixed precision, DDP/FSDP/DeepSpeed, checkpoints, `report_to`) is Trainer's.
`save_final` writes the tuned pipeline with its model card.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer

from base_model.flow import masked_flow_loss

from .finetune_config import RewardFlowConfig
from .objectives import PreferenceObjective, RewardWeightedObjective, effective_sample_size

logger = logging.getLogger("rewardflow.finetune")


class RewardLatentDataset(torch.utils.data.Dataset):
    """Rollout rows: latent `x_1` `(T, C)`, the prompt's text hidden states `(L, D)`, loss weight and reward."""

    def __init__(self, latents: torch.Tensor, text_hidden: list[torch.Tensor], weights, rewards):
        n = len(latents)
        if not (len(text_hidden) == len(weights) == len(rewards) == n):
            raise ValueError("latents, text encodings, weights and rewards must have one entry per row.")
        self.latents, self.text_hidden = latents, text_hidden
        self.weights = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
        self.rewards = torch.as_tensor(np.asarray(rewards), dtype=torch.float32)

    def __len__(self):
        return len(self.latents)

    def __getitem__(self, i):
        return {
            "latents": self.latents[i].float(),
            "text": self.text_hidden[i].float(),
            "weights": self.weights[i],
            "rewards": self.rewards[i],
        }


class PairDataset(torch.utils.data.Dataset):
    """Preference pairs of one prompt's clips: winner `latents` and loser `latents_l` `(T, C)`, the prompt's text."""

    def __init__(self, winners: torch.Tensor, losers: torch.Tensor, text_hidden: list[torch.Tensor]):
        if not (len(winners) == len(losers) == len(text_hidden)):
            raise ValueError("winners, losers and text encodings must have one entry per pair.")
        self.winners, self.losers, self.text_hidden = winners, losers, text_hidden

    def __len__(self):
        return len(self.winners)

    def __getitem__(self, i):
        return {
            "latents": self.winners[i].float(),
            "latents_l": self.losers[i].float(),
            "text": self.text_hidden[i].float(),
        }


def collate_reward_batch(rows: list[dict]) -> dict:
    from base_model.training import collate_latent_text

    batch = collate_latent_text(rows)
    for key in ("weights", "rewards", "latents_l"):
        if key in rows[0]:
            batch[key] = torch.stack([r[key] for r in rows])
    return batch


def paired(value, batch: int):
    """One draw shared by a pair: a tensor whose leading dim is `M * batch` (M flow times per sample) repeated so the
    loser half gets the winner half's values: `(M * batch, ...) -> (M * 2 * batch, ...)`."""
    if value is None:
        return None
    M = value.shape[0] // batch
    v = value.reshape(M, batch, *value.shape[1:])
    return torch.cat([v, v], dim=1).reshape(M * 2 * batch, *value.shape[1:])


def guided_flow_output(
    model, inputs: dict, scale: float, reference: Callable | None = None, generator=None, drawn: dict | None = None
):
    """`--loss_cfg_scale s`: the guided velocity `v_u + s·(v_c − v_u)` that sampling at `--cfg_scale s` follows, with
    its per-sample flow loss, at one draw of (mask, t, noise): one forward of the batch twice over, with its prompts
    and then with the null prompt. `reference(inputs, drawn)` gives the reference's output at the same doubled
    inputs; its guided velocity is returned too (None without a reference). Both passes get gradients. `drawn`:
    the batch's draw of (mask, t, noise) when the caller made it (DPO shares one between a winner and its loser);
    drawn here otherwise.

    Returns `(out, v_ref)`: `out` has `loss (B,)`, `v_t` and `u_t` `(M*B, T, C)` and `infill_mask (B, T)`, what
    [`RewardWeightedObjective`] reads.
    """
    from types import SimpleNamespace

    from base_model.sampling import classifier_free_guidance

    B = inputs["latents"].shape[0]
    if drawn is None:
        drawn = base_model_of(model).draw_flow_inputs(inputs["latents"], generator=generator, drop_text=False)
    drawn = {k: paired(v, B) for k, v in drawn.items() if k != "text_drop_mask"}
    drawn["text_drop_mask"] = torch.arange(2 * B, device=inputs["latents"].device) >= B  # [prompts; null prompt]
    both = {k: torch.cat([v, v]) for k, v in inputs.items()}

    def guided(v_t):  # (M*2B, T, C), rows (M, [prompts; null]) -> the sampler's [cond; uncond] halves -> (M*B, T, C)
        halves = v_t.reshape(-1, 2, B, *v_t.shape[1:]).transpose(0, 1).reshape(v_t.shape)
        return classifier_free_guidance(halves, scale)

    out = model(**both, **drawn)
    v_t = guided(out.v_t)
    u_t = out.u_t.reshape(-1, 2 * B, *out.u_t.shape[1:])[:, :B].reshape(v_t.shape)
    mask = out.infill_mask[:B]
    M = v_t.shape[0] // B
    loss = masked_flow_loss(v_t, u_t, mask.repeat(M, 1)).view(M, B).mean(0)
    v_ref = None
    if reference is not None:
        with torch.no_grad():
            v_ref = guided(reference(both, drawn).v_t)
    return SimpleNamespace(loss=loss, v_t=v_t, u_t=u_t, infill_mask=mask), v_ref


def unwrap_engine(model):
    """The module under DDP / FSDP / DeepSpeed wrapping (a PEFT model stays a PEFT model)."""
    while hasattr(model, "module"):
        model = model.module
    return model


def base_model_of(model):
    """The generator's flow module under any DDP / PEFT wrapping."""
    model = unwrap_engine(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class SkipNonFiniteStep(torch.optim.Optimizer):
    """Wraps an optimizer so that a step can be skipped outright: `step()` does nothing when `should_skip()` says so
    or when a gradient is not finite. Everything else (param groups, state, state dicts) is the wrapped optimizer's,
    so schedulers and checkpoints see the real one.

    Why a wrapper: Trainer calls `optimizer.step()` unconditionally after accumulation, and a step with zero
    gradients still moves the weights through Adam's moments and weight decay. After DDP's all-reduce every rank
    sees the same gradients, so every rank takes the same decision.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        should_skip: Callable[[], bool],
        on_skip: Callable[[], None],
        on_step: Callable[[], None] = lambda: None,
    ):
        # Not `super().__init__`: this object shares the wrapped optimizer's groups and state instead of copying.
        self.optimizer, self.should_skip, self.on_skip, self.on_step = optimizer, should_skip, on_skip, on_step
        self.defaults = optimizer.defaults

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optimizer.param_groups = value

    @property
    def state(self):
        return self.optimizer.state

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        non_finite = bool(grads) and not torch.isfinite(torch.stack([g.detach().abs().amax() for g in grads])).all()
        if self.should_skip() or non_finite:
            self.on_skip()
            return None
        self.on_step()
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group):
        self.optimizer.add_param_group(param_group)


class RewardFlowTrainer(Trainer):
    r"""Fine-tunes a generator's flow module on a rollout table with reward-weighted flow matching.

    Args:
        model: the policy (a generator's flow module, e.g. `MaskAudioFlow`), or a PEFT model wrapping one.
        args (`RewardFlowConfig`).
        train_dataset (`RewardLatentDataset`).
        ref_model: the frozen reference; default a frozen copy of `model` (not with PEFT, where the reference is
            the same network with its adapters disabled). It is never in the optimizer, the checkpoints or the
            DDP/FSDP/DeepSpeed engine.
        peft_config: a `peft.LoraConfig`; the model is wrapped with it.

    Example:

    >>> trainer = RewardFlowTrainer(model, RewardFlowConfig(output_dir="out", tau=0.1), dataset)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(self, model, args: RewardFlowConfig, train_dataset, ref_model=None, peft_config=None, **kwargs):
        if peft_config is not None:
            from peft import get_peft_model
            from transformers import set_seed

            set_seed(args.seed)  # the adapters' random init must not depend on what ran before in this process
            model = get_peft_model(model, peft_config)
        self.use_peft = hasattr(model, "disable_adapter")
        if (args.beta > 0 or args.objective == "dpo") and not self.use_peft and ref_model is None:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.requires_grad_(False).eval()
        kwargs.setdefault("data_collator", collate_reward_batch)
        super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        # Kept outside the trained engine: a plain module on this process's device.
        self.ref_model = ref_model.to(self.accelerator.device) if ref_model is not None else None
        baseline = args.advantage_baseline if args.weighting == "advantage" else 0.0
        self.objective = RewardWeightedObjective(args.beta, baseline)
        self.preference_objective = PreferenceObjective(args.dpo_beta, args.dpo_sft_weight)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._skip_step = False
        self.nan_loss_steps = 0  # skipped steps in total
        self._nan_in_a_row = 0

    # ------------------------------------------------------------------------------------------- hooks
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Why: the loss is the objective's, with one draw of (infill mask, t, noise, text dropout) shared by the
        # policy and the reference so both see the same (x_t, t, z).
        pairs = "latents_l" in inputs
        if pairs:
            loss, out = self._preference_loss(model, inputs)
        else:
            weights, rewards = inputs.pop("weights"), inputs.pop("rewards")
            if self.args.loss_cfg_scale != 1:
                reference = (
                    (lambda both, drawn: self._reference_forward(model, both, drawn)) if self.args.beta > 0 else None
                )
                with self.accelerator.autocast():
                    out, v_ref = guided_flow_output(model, inputs, self.args.loss_cfg_scale, reference)
            else:
                drawn = base_model_of(model).draw_flow_inputs(inputs["latents"], drop_text=True)
                out = model(**inputs, **drawn)
                v_ref = None
                if self.args.beta > 0:
                    with torch.no_grad(), self.accelerator.autocast():  # the reference is outside the prepared engine
                        v_ref = self._reference_forward(model, inputs, drawn).v_t
            terms = self.objective(out, v_ref, weights)
            loss = terms.loss
        bad = torch.tensor(float(not torch.isfinite(loss.detach())), device=loss.device)
        if self.accelerator.num_processes > 1:  # every rank must agree to skip, or their weights would diverge
            bad = self.accelerator.reduce(bad, "sum")
        if bad.item() > 0:
            self._skip_step = True
            # A zero loss with a finite graph: every trainable parameter gets a zero gradient (DDP still syncs).
            loss = sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)
        elif not pairs:
            self._log_batch(terms, weights, rewards)
        return (loss, out) if return_outputs else loss

    def _preference_loss(self, model, inputs):
        """The DPO objective on a batch of pairs: winners and losers in one forward with the pair's draws shared."""
        losers = inputs.pop("latents_l")
        B = losers.shape[0]
        drawn = base_model_of(model).draw_flow_inputs(inputs["latents"], drop_text=False)
        drawn = {k: paired(v, B) for k, v in drawn.items()}
        if drawn.get("text_drop_mask") is None:  # no text dropout in DPO: policy and reference see every prompt
            drawn["text_drop_mask"] = torch.zeros(2 * B, dtype=torch.bool, device=losers.device)
        both = {"latents": torch.cat([inputs["latents"], losers]),
                "text_hidden_states": torch.cat([inputs["text_hidden_states"]] * 2),
                "text_padding_mask": torch.cat([inputs["text_padding_mask"]] * 2)}  # fmt: skip
        if self.args.loss_cfg_scale != 1:  # L is the guided velocity's loss, the policy's and the reference's
            with self.accelerator.autocast():  # guided_flow_output sets its own text_drop_mask over drawn's
                out, v_ref = guided_flow_output(model, both, self.args.loss_cfg_scale,
                                                lambda x, d: self._reference_forward(model, x, d), drawn=drawn)  # fmt: skip
            M = out.v_t.shape[0] // (2 * B)
            ref = masked_flow_loss(v_ref, out.u_t, out.infill_mask.repeat(M, 1)).view(M, 2 * B).mean(0)
        else:
            out = model(**both, **drawn)
            with torch.no_grad(), self.accelerator.autocast():
                ref = self._reference_forward(model, both, drawn).loss
        terms = self.preference_objective(out.loss, ref)
        if torch.isfinite(terms["loss"].detach()):
            for key, value in (("loss/dpo", terms["dpo"]), ("dpo/implicit_accuracy", terms["implicit_accuracy"]),
                               ("loss/flow_w", terms["flow_w"]), ("loss/flow_l", terms["flow_l"])):  # fmt: skip
                self._metrics[key].append(float(self.accelerator.gather_for_metrics(value.detach()).mean()))
        return terms["loss"], out

    def create_optimizer(self):
        # Why: a step whose loss or gradient was not finite must not touch the weights (see SkipNonFiniteStep).
        optimizer = super().create_optimizer()
        if not isinstance(optimizer, SkipNonFiniteStep):
            self.optimizer = SkipNonFiniteStep(
                optimizer, lambda: self._skip_step, self._count_skipped_step, self._count_step
            )
        else:
            self.optimizer = optimizer
        return self.optimizer

    def _clip_grad_norm(self, model):
        # Why: huge reward weights can give finite gradients whose norm overflows float32; clipping then scales every
        # gradient to 0 and the step silently learns nothing. A non-finite norm skips the step like a NaN loss.
        norm = super()._clip_grad_norm(model)
        if norm is not None and not torch.isfinite(torch.as_tensor(norm)).all():
            self._skip_step = True
        return norm

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Why: add the averaged loss parts and reward/weight diagnostics since the last log (as TRL's trainers do).
        if self._metrics and "loss" in logs:
            logs.update({k: float(np.mean(v)) for k, v in self._metrics.items()})
            self._metrics.clear()
        logs["nan_loss_steps"] = self.nan_loss_steps
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ helpers
    def _count_step(self) -> None:
        self._nan_in_a_row = 0

    def _count_skipped_step(self) -> None:
        self._skip_step = False
        self.nan_loss_steps += 1
        self._nan_in_a_row += 1
        logger.warning("non-finite loss or gradient: step %d skipped", self.state.global_step + 1)
        if self._nan_in_a_row >= self.args.max_nan_loss_steps:
            raise RuntimeError(
                f"{self._nan_in_a_row} steps in a row had a NaN/inf loss or gradient (--max_nan_loss_steps "
                f"{self.args.max_nan_loss_steps}). Lower --learning_rate or --tau, use a safe --weighting "
                "(self_normalized, standardized, clipped), and check the rollout latents for NaN."
            )

    def _reference_forward(self, model, inputs, drawn):
        """The reference's output at the policy's inputs: the frozen copy, or the policy with its adapters off."""
        if self.use_peft and self.ref_model is None:
            peft_model = unwrap_engine(model)
            with peft_model.disable_adapter():
                return peft_model(**inputs, **drawn)
        return self.ref_model(**inputs, **drawn)

    def _log_batch(self, terms, weights, rewards) -> None:
        parts = [terms.flow, terms.reference, terms.loss_weights * terms.flow, weights, rewards]
        stats = torch.stack([p.detach().float() for p in parts], dim=1)
        stats = self.accelerator.gather_for_metrics(stats).cpu().numpy()  # (global B, 5)
        flow, reference, weighted, w, r = stats.T
        self._metrics["loss/flow"].append(float(weighted.mean()))
        self._metrics["loss/flow_unweighted"].append(float(flow.mean()))
        self._metrics["loss/reference"].append(float(reference.mean()))
        self._metrics[f"rewards/{self.args.reward}/mean"].append(float(r.mean()))
        self._metrics[f"rewards/{self.args.reward}/std"].append(float(r.std()))
        self._metrics["weights/max_min_ratio"].append(float(w.max() / w.min()) if w.min() > 0 else float("inf"))
        self._metrics["weights/ess"].append(effective_sample_size(w))

    # --------------------------------------------------------------------------------------------- output
    def save_final(self, pipe, out: Path, run: dict, metrics: dict) -> Path:
        """`<out>/final`: the merged pipeline (+ `adapter/` with LoRA), model card and metrics, renamed into place
        so it exists only complete."""
        model = self.accelerator.unwrap_model(self.model)
        tmp = out / f".final.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if hasattr(model, "merge_and_unload"):
            model.save_pretrained(tmp / "adapter")
            model = model.merge_and_unload()
        pipe.model = model.eval()
        pipe.save_pretrained(tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (tmp / "README.md").write_text(model_card(run, metrics))
        final = out / "final"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        logger.info("saved the tuned pipeline to %s", final)
        return final


def model_card(run: dict, metrics: dict) -> str:
    """The tuned pipeline's README: what it was tuned from, on what, with which objective, and what it cost."""
    o = run["objective"]
    baseline = f", loss weight w − {o['advantage_baseline']} (baseline)" if o["weighting"] == "advantage" else ""
    scale = o.get("loss_cfg_scale", 1.0)
    velocity = "conditional, v_c (the paper's)" if scale == 1 else f"guided, v_u + {scale:g}·(v_c − v_u)"
    guard = metrics.get("guardrail")
    guard_rows = (
        f"| guardrail | kept step {guard['best_step']} of {metrics['steps']} ({guard['rule']}); evaluated every "
        f"{guard['every']} steps on {guard['prompts']} held-out prompts |\n"
        if guard
        else ""
    )
    return f"""---
library_name: rewardflow
tags: [text-to-audio, maskaudioflow, reward-weighted-flow-matching]
---
# Reward fine-tuned generator

Fine-tuned with `rewardflow/finetune.py` (reward-weighted flow matching against a frozen reference, Huang et al. §4).

| | |
|---|---|
| base model | `{run["model"]}` |
| rollout table | `{run["rollout"]}` ({metrics["rows"]} rows used, {metrics["dropped_nan_rows"]} dropped for NaN rewards) |
| reward | `{o["reward"]}` |
| weighting | `{o["weighting"]}`, τ = {o["tau"]}{baseline} |
| regulariser | β = {o["beta"]} · ‖v_θ − v_ref‖², reference = {run["reference"]} |
| velocity fitted | {velocity} |
| LoRA | {run["use_peft"]} |
| steps | {metrics["steps"]} at batch {run["batch_size"]}, lr {run["learning_rate"]}, seed {run["seed"]} |
| weights over the table | ESS {metrics["weights_ess"]:.3f} of N, max/min {metrics["weights_max_min_ratio"]:.4g} |
{guard_rows}| train time | {metrics["train_seconds"]} s ({metrics["seconds_per_step"]} s/step), peak memory \
{metrics["peak_memory_gib"]} GiB ({metrics["peak_memory_kind"]}) |

Command: `{run["command"]}`

`metrics.json` beside this card holds every figure; `adapter/` (LoRA runs) holds the adapter alone.
"""
