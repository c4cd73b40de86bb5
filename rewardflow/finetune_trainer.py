"""`RewardFlowTrainer`: reward-weighted flow matching against a frozen reference (paper §4, Algorithm 2, step 2).

A `transformers.Trainer` that overrides four hooks, each for one reason:
- `compute_loss`: draws the flow inputs once, weights the model's per-sample loss by the reward weights and adds
  `beta · ‖v_θ − v_ref‖²` with the reference at the same `(x_t, t, z)`; skips a step whose loss is not finite.
- `create_optimizer`: lets a skipped step leave the optimizer untouched (no moment update, no weight decay);
- `_clip_grad_norm`: a gradient norm that overflows (huge weights, finite loss) skips the step too.
- `log`: adds the averaged loss parts, batch reward stats and weight diagnostics to Trainer's logs.
Everything else (accumulation, mixed precision, DDP/FSDP/DeepSpeed, checkpoints, `report_to`) is Trainer's.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict

import numpy as np
import torch
from transformers import Trainer

from base_model.flow import masked_flow_loss

from .finetune_config import RewardFlowConfig
from .weighting import effective_sample_size

logger = logging.getLogger("rewardflow.finetune")

# LoRA targets when `--lora_target_modules` is not given: the backbone's attention and MLP projections and the
# head's MLPs (PEFT reads a string as a regular expression over module names).
DEFAULT_LORA_TARGETS = r".*blocks\.\d+\.(self_attn\.(q|kv|out)|cross_attn\.(q|kv|out)|mlp\.(0|2))"


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


def collate_reward_batch(rows: list[dict]) -> dict:
    from base_model.training import collate_latent_text

    batch = collate_latent_text(rows)
    batch["weights"] = torch.stack([r["weights"] for r in rows])
    batch["rewards"] = torch.stack([r["rewards"] for r in rows])
    return batch


def _unwrap_engine(model):
    """The module under DDP / FSDP / DeepSpeed wrapping (a PEFT model stays a PEFT model)."""
    while hasattr(model, "module"):
        model = model.module
    return model


def _base_model(model):
    """The `MaskAudioFlow` under any DDP / PEFT wrapping."""
    model = _unwrap_engine(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class RewardFlowTrainer(Trainer):
    r"""Fine-tunes a MaskAudioFlow on a rollout table with reward-weighted flow matching.

    Args:
        model: the policy (`MaskAudioFlow`), or a PEFT model wrapping one.
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
        if args.beta > 0 and not self.use_peft and ref_model is None:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.requires_grad_(False).eval()
        kwargs.setdefault("data_collator", collate_reward_batch)
        super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        # Kept outside the trained engine: a plain module on this process's device.
        self.ref_model = ref_model.to(self.accelerator.device) if ref_model is not None else None
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._skip_step = False
        self.nan_loss_steps = 0  # skipped steps in total
        self._nan_in_a_row = 0

    # ------------------------------------------------------------------------------------------- hooks
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Why: the loss is the reward-weighted per-sample flow loss plus the reference regulariser, with one draw
        # of (infill mask, t, noise, text dropout) shared by the policy and the reference.
        weights, rewards = inputs.pop("weights"), inputs.pop("rewards")
        base = _base_model(model)
        M, B = base.config.flow_batch_mul, inputs["latents"].shape[0]
        drawn = base.draw_flow_inputs(inputs["latents"], drop_text=True)
        out = model(**inputs, **drawn)
        flow = out.loss  # (B,)
        # `advantage` (RewardFlowConfig): the prompt's average clip (weight 1) is the baseline, subtracted in share b
        loss_weights = weights - self.args.advantage_baseline if self.args.weighting == "advantage" else weights
        loss = (loss_weights * flow).mean()
        reg = torch.zeros_like(flow)
        if self.args.beta > 0:
            with torch.no_grad():
                v_ref = self._reference_velocity(model, inputs, drawn)
            # ‖v_θ − v_ref‖² on the frames being generated, normalised like the flow loss.
            reg = masked_flow_loss(out.v_t, v_ref, out.infill_mask.repeat(M, 1)).view(M, B).mean(0)  # (B,)
            loss = loss + self.args.beta * reg.mean()

        bad = torch.tensor(float(not torch.isfinite(loss.detach())), device=loss.device)
        if self.accelerator.num_processes > 1:  # every rank must agree to skip, or their weights would diverge
            bad = self.accelerator.reduce(bad, "sum")
        if bad.item() > 0:
            self._skip_step = True
            # A zero loss with a finite graph: every trainable parameter gets a zero gradient (DDP still syncs).
            loss = sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)
        else:
            self._log_batch(flow, reg, weights, loss_weights, rewards)
        return (loss, out) if return_outputs else loss

    def create_optimizer(self):
        # Why: a step whose loss was not finite must not touch the weights; zero gradients alone would still move
        # them through Adam's moments and weight decay, so the optimizer's step is skipped outright.
        optimizer = super().create_optimizer()
        if getattr(optimizer, "_rewardflow_guarded", False):
            return optimizer
        step = optimizer.step

        def guarded_step(*args, **kwargs):
            # A finite loss can still give infinite gradients (huge weights); after DDP's all-reduce every rank sees
            # the same gradients, so every rank takes the same decision.
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads and not torch.isfinite(torch.stack([g.detach().abs().amax() for g in grads])).all():
                self._skip_step = True
            if self._skip_step:
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
                return None
            self._nan_in_a_row = 0
            return step(*args, **kwargs)

        optimizer.step = guarded_step
        optimizer._rewardflow_guarded = True
        return optimizer

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
    def _reference_velocity(self, model, inputs, drawn) -> torch.Tensor:
        # The reference is not in the prepared engine, so it gets the run's mixed precision explicitly.
        with self.accelerator.autocast():
            return self._reference_forward(model, inputs, drawn)

    def _reference_forward(self, model, inputs, drawn) -> torch.Tensor:
        if self.use_peft and self.ref_model is None:
            peft_model = _unwrap_engine(model)
            with peft_model.disable_adapter():
                return peft_model(**inputs, **drawn).v_t
        return self.ref_model(**inputs, **drawn).v_t

    def _log_batch(self, flow, reg, weights, loss_weights, rewards) -> None:
        stats = torch.stack([flow.detach(), reg.detach(), (loss_weights * flow).detach(), weights, rewards], dim=1)
        stats = self.accelerator.gather_for_metrics(stats).float().cpu().numpy()  # (global B, 5)
        flow_, reg_, wflow, w, r = stats.T
        self._metrics["loss/flow"].append(float(wflow.mean()))
        self._metrics["loss/flow_unweighted"].append(float(flow_.mean()))
        self._metrics["loss/reference"].append(float(reg_.mean()))
        self._metrics[f"rewards/{self.args.reward}/mean"].append(float(r.mean()))
        self._metrics[f"rewards/{self.args.reward}/std"].append(float(r.std()))
        self._metrics["weights/max_min_ratio"].append(float(w.max() / w.min()) if w.min() > 0 else float("inf"))
        self._metrics["weights/ess"].append(effective_sample_size(w))
