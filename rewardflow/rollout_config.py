"""Settings of a rollout (`rewardflow/rollout.py`), parsed by `trl.TrlParser` (YAML via `--config`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from base_model.sampling import SamplingConfig
from rewardflow.scoring import RewardArguments


@dataclass
class RolloutConfig(RewardArguments, SamplingConfig):
    """Which model, which prompts, how many clips each, how they are sampled and scored, and where they go.

    The sampler fields (`num_iterations`, `num_steps`, `method`, `cfg_scale`) come from `SamplingConfig` and the
    reward fields (`rewards`, `clap_checkpoint`, `aesthetics_checkpoint`) from `RewardArguments`.
    """

    model: str = field(default="synthcaps", metadata={"help": "Pipeline folder or bundled name ('synthcaps')."})
    prompts: str = field(
        default="synthcaps:train",
        metadata={"help": "'synthcaps:<split>' or a caption table: .csv/.jsonl/datasets folder/Hub id."},
    )
    caption_column: str = field(default="caption", metadata={"help": "Caption column of a prompt table."})
    id_column: str = field(default="", metadata={"help": "Prompt id column (default: the row number)."})
    max_prompts: int = field(default=64, metadata={"help": "Use the first N prompts (0: all)."})
    first_prompt: int = field(default=0, metadata={"help": "Skip the prompts before this one."})
    num_generations: int = field(default=2, metadata={"help": "Clips per prompt."})
    seed: int = field(default=0, metadata={"help": "Run seed; each clip's seed derives from it and its ids."})
    output_dir: str = field(default="outputs/rollout", metadata={"help": "Where the table and audio go."})
    batch_size: int = field(default=8, metadata={"help": "Clips generated (and scored) per batch and shard."})
    audio_format: str = field(default="flac", metadata={"help": "flac, wav, or none (keep latents only)."})
    max_nan_fraction: float = field(
        default=0.5, metadata={"help": "Abort when more than this fraction of a reward's scores are NaN/inf."}
    )
    cpu_threads: int = field(
        default=1,
        metadata={
            "help": "torch threads per process on CPU. BLAS results depend on the thread count, so the default "
            "of 1 keeps tables bitwise identical for any number of processes: use more processes for more cores."
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace a rollout made with other settings."})
    rescore: bool = field(default=False, metadata={"help": "Add reward columns to an existing table from its audio."})

    def __post_init__(self):
        super().__post_init__()  # the sampler settings
        if self.audio_format not in ("flac", "wav", "none"):
            raise ValueError(f"--audio_format must be flac, wav or none, got {self.audio_format!r}.")
        for flag in ("num_generations", "batch_size", "cpu_threads"):
            if not isinstance(getattr(self, flag), int) or getattr(self, flag) < 1:
                raise ValueError(f"--{flag} must be an integer >= 1, got {getattr(self, flag)!r}.")
        if self.max_prompts < 0:
            raise ValueError(f"--max_prompts must be >= 0 (0: every prompt), got {self.max_prompts}.")
        if self.first_prompt < 0:
            raise ValueError(f"--first_prompt must be >= 0, got {self.first_prompt}.")
        if not math.isfinite(self.max_nan_fraction) or not 0.0 <= self.max_nan_fraction <= 1.0:
            raise ValueError(f"--max_nan_fraction must be in [0, 1], got {self.max_nan_fraction}.")

    def generation_settings(self) -> dict:
        """The settings that decide what is generated: a rerun with other values is a different rollout."""
        keys = ("model", "prompts", "caption_column", "id_column", "max_prompts", "num_generations", "seed",
                "batch_size", "num_iterations", "num_steps", "method", "cfg_scale", "audio_format")  # fmt: skip
        d = asdict(self)
        out = {k: d[k] for k in keys}
        if self.first_prompt:  # recorded only when set, so rollouts made from the first prompt keep their settings
            out["first_prompt"] = self.first_prompt
        if self.temperature != 1.0:  # likewise: rollouts at the trained noise keep their settings
            out["temperature"] = self.temperature
        return out
