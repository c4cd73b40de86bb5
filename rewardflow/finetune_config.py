"""Settings of reward-weighted fine-tuning (`rewardflow/finetune.py`), parsed by `trl.TrlParser` with TRL's
`ModelConfig` for the LoRA fields (`--use_peft --lora_r 16 --lora_alpha 32 --lora_target_modules ...`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

WEIGHTINGS = ("exp", "self_normalized", "standardized", "advantage", "clipped", "topk")
OBJECTIVES = ("reward_weighted", "dpo")


def check_loss_cfg_scale(scale: float) -> None:
    """`--loss_cfg_scale` must be finite and >= 0 (also checked by the studies before their rollouts)."""
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"--loss_cfg_scale must be a finite number >= 0 (1: no guidance), got {scale}.")


@dataclass
class RewardFlowConfig(TrainingArguments):
    r"""Reward-weighted flow matching (paper §4, Algorithm 2):

    `L = mean_b[w_b · ‖v_θ − u_t‖²_b] + beta · mean_b[‖v_θ − v_ref‖²_b]`, both norms averaged over the masked frames
    of each sample, `w_b` from the rollout's reward `r_b` by `weighting`:

    - `exp`: `w = exp(tau · r)`, the paper's raw weights (an error, naming the safe modes, when they overflow).
    - `self_normalized`: `w = N · softmax(tau · r)` over the table (log-sum-exp): `exp` up to a constant, always
      finite, mean 1.
    - `standardized`: `w ∝ exp(tau · (r − mean_p) / (std_p + 1e-4))` with the mean and std over the prompt's own
      samples (GRPO's group scaling), mean 1.
    - `advantage`: `standardized` normalised to mean 1 within each prompt, and the loss weights `w_b − 1` instead of
      `w_b`. A clip as good as its prompt's average then pulls the model to the reference, not to itself: training
      on the model's own samples no longer moves it by itself, only the reward does (better clips pull, worse ones
      push). `advantage_baseline` b < 1 weighs `w_b − b`, keeping a share `1 − b` of that self-training. Needs
      `beta >= b`, so that each sample's `(w_b − b)·‖v − u‖² + beta·‖v − v_ref‖²` keeps a minimum.
    - `clipped`: `w ∝ exp(clip(tau · (r − mean r), −log c, log c))` with `c = weight_clip`, mean 1.
    - `topk`: weight 1 on the best `ceil(top_k · n_p)` of each prompt's `n_p` samples, the rest dropped (expert
      iteration / RAFT).
    """

    # --- data and model
    rollout: str = field(default="outputs/rollout", metadata={"help": "Rollout output_dir (rewardflow/rollout.py)."})
    model: str = field(
        default="", metadata={"help": "Pipeline to fine-tune (folder or bundled name); default: the rollout's model."}
    )
    reference_model: str = field(
        default="",
        metadata={
            "help": "Frozen reference for the regulariser (default: the starting model; with LoRA: adapters off)."
        },
    )
    # --- objective
    objective: str = field(
        default="reward_weighted",
        metadata={
            "help": "reward_weighted (the paper's exp(τ·r)-weighted flow matching) or dpo (Diffusion-DPO on pairs)."
        },
    )
    pairs: str = field(
        default="reward",
        metadata={
            "help": "dpo: pairs from ranking each prompt's clips by --reward (best vs worst, CRPO) or from the "
            "rollout's preferences/ table of listeners' answers ('preferences')."
        },  # fmt: skip
    )
    dpo_beta: float = field(default=2000.0, metadata={"help": "dpo: β of −log σ(−β/2 · Δ) (TangoFlux: 2000)."})
    dpo_sft_weight: float = field(default=1.0, metadata={"help": "dpo: weight λ of the winners' own flow loss."})
    reward: str = field(
        default="clap",
        metadata={"help": "Score column or composition: clap, aesthetics, aesthetics/PQ, 'clap:1,aesthetics:0.5'."},
    )
    tau: float = field(default=0.1, metadata={"help": "Temperature τ of w = exp(τ·r) (paper: 0.1)."})
    beta: float = field(default=1.0, metadata={"help": "Weight λ of ‖v_θ − v_ref‖² (paper: 1; 0 disables it)."})
    loss_cfg_scale: float = field(
        default=1.0,
        metadata={
            "help": "Fit the guided velocity v_u + s·(v_c − v_u) that sampling at --cfg_scale s follows, in both "
            "the flow and the reference term, or in DPO's per-clip losses (1: the conditional velocity alone, the "
            "paper's loss)."
        },
    )
    weighting: str = field(default="exp", metadata={"help": f"Reward weighting: {', '.join(WEIGHTINGS)}."})
    weight_clip: float = field(default=10.0, metadata={"help": "`clipped`: weights stay within [1/c, c]."})
    top_k: float = field(default=0.5, metadata={"help": "`topk`: fraction of each prompt's samples kept."})
    advantage_baseline: float = field(
        default=1.0,
        metadata={
            "help": "`advantage`: the loss weighs w - b; b = 1 trains on reward differences only, b = 0 is "
            "`standardized` within each prompt. Needs --beta >= b."
        },
    )
    max_nan_fraction: float = field(
        default=0.1, metadata={"help": "Rows with a NaN reward are dropped; abort above this fraction."}
    )
    max_nan_loss_steps: int = field(
        default=5, metadata={"help": "A step with a NaN/inf loss is skipped; abort after this many in a row."}
    )
    # --- online rounds (beyond the paper, after ORW-CFM)
    rounds: int = field(
        default=1,
        metadata={
            "help": "Alternate rollout and fine-tuning N times; round k > 1 rolls out with the round k-1 policy, "
            "using the first rollout's generation settings (seed + k - 1). Folders: <output_dir>/round-<k>/."
        },
    )
    round_reference: str = field(
        default="start",
        metadata={
            "help": "The regulariser's reference in round k > 1: 'start' (the starting model, every round) or "
            "'previous' (round k-1's tuned model, a trust region that moves with the rounds; full fine-tuning only).",
            "choices": ["start", "previous"],
        },
    )
    # --- guardrail against reward hacking (beyond the paper; rewardflow/guardrail.py)
    guard_every: int = field(
        default=0,
        metadata={
            "help": "Evaluate the policy every N steps on fixed held-out prompts and keep the best "
            "checkpoint by --guard_select under a fidelity bound (0: off)."
        },  # fmt: skip
    )
    guard_prompts: str = field(
        default="synthcaps:heldout", metadata={"help": "Guard prompts: 'synthcaps:<split>' or a table."}
    )
    guard_first_prompt: int = field(
        default=5000, metadata={"help": "First guard prompt: keep them away from the prompts evaluations use."}
    )
    guard_num_prompts: int = field(default=32, metadata={"help": "Guard prompts, one clip each, fixed seeds."})
    guard_rewards: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Rewards the guard scores besides --reward's (default: clap and aesthetics, so one not "
            "used in training is among them)."
        },  # fmt: skip
    )
    guard_select: str = field(
        default="", metadata={"help": "Score the kept checkpoint maximises (default: --reward)."}
    )
    guard_max_fd_increase: float = field(
        default=0.1, metadata={"help": "Kept checkpoints have mel Fréchet distance <= start x (1 + this)."}
    )
    guard_patience: int = field(
        default=0, metadata={"help": "Stop after N evaluations without a new best (0: never)."}
    )
    # --- TrainingArguments defaults suited to this job
    output_dir: str = field(default="outputs/finetune", metadata={"help": "Checkpoints and the final pipeline."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Batch size per device."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_steps: int = field(default=200, metadata={"help": "Training steps (per round)."})
    warmup_steps: int = field(default=10, metadata={"help": "Linear warm-up steps."})
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata={"help": "Learning-rate schedule."})
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep our columns."})

    def __post_init__(self):
        from rewardflow.distributed import use_cpu

        # Without a GPU, say so before TrainingArguments sets up the process group: only then do processes
        # started by torchrun train as one DDP group on CPU (gloo) instead of each alone.
        self.use_cpu = self.use_cpu or use_cpu()
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}.")
        if self.pairs not in ("reward", "preferences"):
            raise ValueError(f"--pairs must be 'reward' or 'preferences', got {self.pairs!r}.")
        if (
            not math.isfinite(self.dpo_beta)
            or self.dpo_beta <= 0
            or not math.isfinite(self.dpo_sft_weight)
            or self.dpo_sft_weight < 0
        ):
            raise ValueError(
                f"--dpo_beta must be > 0 and --dpo_sft_weight >= 0, got {self.dpo_beta}, {self.dpo_sft_weight}."
            )
        check_loss_cfg_scale(self.loss_cfg_scale)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}.")
        if not math.isfinite(self.tau) or self.tau < 0:
            raise ValueError(f"--tau must be a finite number >= 0, got {self.tau}.")
        if not math.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"--beta must be a finite number >= 0, got {self.beta}.")
        if not 0 <= self.advantage_baseline <= 1:
            raise ValueError(f"--advantage_baseline must be in [0, 1], got {self.advantage_baseline}.")
        if self.weighting == "advantage" and self.beta < self.advantage_baseline:
            raise ValueError(
                f"--weighting advantage needs --beta >= --advantage_baseline ({self.advantage_baseline}), got "
                f"{self.beta}: a clip's loss weight w - b goes down to -b, and below that the regulariser no longer "
                "bounds the loss. Raise --beta or lower --advantage_baseline."
            )
        if self.weight_clip < 1:
            raise ValueError(f"--weight_clip must be >= 1 (weights stay within [1/c, c]), got {self.weight_clip}.")
        if not 0 < self.top_k <= 1:
            raise ValueError(f"--top_k is the fraction of each prompt's samples kept, in (0, 1]; got {self.top_k}.")
        if not 0 <= self.max_nan_fraction <= 1:
            raise ValueError(f"--max_nan_fraction must be in [0, 1], got {self.max_nan_fraction}.")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {self.rounds}.")
        if self.round_reference not in ("start", "previous"):
            raise ValueError(f"--round_reference must be 'start' or 'previous', got {self.round_reference!r}.")
        if self.round_reference == "previous" and (self.rounds < 2 or self.reference_model):
            raise ValueError(
                "--round_reference previous makes round k-1's model the reference of round k: it needs --rounds >= 2 "
                f"(got {self.rounds}) and no --reference_model (got {self.reference_model!r}). Drop one of them."
            )
        if self.guard_every < 0 or self.guard_num_prompts < 2 or self.guard_patience < 0:
            raise ValueError(
                f"--guard_every and --guard_patience must be >= 0 and --guard_num_prompts >= 2 (a Fréchet distance "
                f"needs two clips), got {self.guard_every}, {self.guard_patience}, {self.guard_num_prompts}."
            )
        if not math.isfinite(self.guard_max_fd_increase) or self.guard_max_fd_increase < 0:
            raise ValueError(
                f"--guard_max_fd_increase must be a finite number >= 0, got {self.guard_max_fd_increase}."
            )
        if self.max_nan_loss_steps < 1:
            raise ValueError(f"--max_nan_loss_steps must be >= 1, got {self.max_nan_loss_steps}.")

    def objective_settings(self) -> dict:
        """What defines the objective: resuming with other values warns with the difference."""
        keys = ("objective", "pairs", "dpo_beta", "dpo_sft_weight", "reward", "tau", "beta", "weighting", "weight_clip",
                "top_k", "advantage_baseline", "loss_cfg_scale")  # fmt: skip
        return {k: getattr(self, k) for k in keys}
