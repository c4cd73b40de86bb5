"""Does continued pretraining on this CPU, the learning rate annealed to zero, make the bundled generator follow its
prompts better?

    python experiments/continued_pretraining.py               # the masked model: 70 min of training on 2 cores
    python experiments/continued_pretraining.py --flow cfm    # its CFM baseline, the same recipe
    python experiments/continued_pretraining.py --max_steps 2 --num_train_examples 16 --batch_size 4 \
        --decide_prompts 2 --decide_samples 2 --confirm_prompts 2 --num_steps 2 --output_dir /tmp/c --results_dir ''

The bundled pair was trained at a constant learning rate (8e-4) and stopped by its GPU build's time budget with the
loss still falling. Here `base_model/pretrain.py --init_from <bundled pipeline>` continues one of them for
`--max_steps` steps of `--batch_size` clips from the first `--num_train_examples` of the same corpus (bf16), warming
up over `--warmup_steps` and then decaying linearly to zero: the cool-down a warmup-stable-decay schedule ends
with. The final weights are an EMA (`--ema_decay`). Training checkpoints every `--save_steps` and resumes when the
command is rerun. The continued model is then evaluated against the model it started from with
`rewardflow/evaluate.py` (the SynthCaps verifier, KL, mel Fréchet; 8 iterations x `--num_steps` steps, CFG 3): on
the generator table's prompts, several clips each, then on fresh held-out prompts. Both reports, the run's losses
and its sittings go to `<results_dir>/continued_<flow>.json`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUNDLED = {"masked": "synthcaps", "cfm": "synthcaps-cfm"}


@dataclass
class ContinueArguments:
    flow: str = field(default="masked", metadata={"help": "Bundled model continued.", "choices": list(BUNDLED)})
    max_steps: int = field(default=500, metadata={"help": "Continued training steps."})
    batch_size: int = field(default=256, metadata={"help": "Clips per step (the GPU build's)."})
    learning_rate: float = field(default=8e-4, metadata={"help": "Peak learning rate (the GPU build's constant)."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up of the fresh optimizer."})
    ema_decay: float = field(default=0.99, metadata={"help": "EMA decay of the final weights."})
    num_train_examples: int = field(default=40000, metadata={"help": "Training clips (the corpus' first N)."})
    render_workers: int = field(default=2, metadata={"help": "Processes rendering the corpus the first time."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every N steps."})
    cache_dir: str = field(default="", metadata={"help": "Corpus cache (default ~/.cache/rewardflow)."})
    decide_prompts: int = field(default=64, metadata={"help": "The generator table's held-out prompts (from 0)."})
    decide_samples: int = field(default=8, metadata={"help": "Clips per prompt there."})
    confirm_first: int = field(default=2000, metadata={"help": "First held-out prompt of the fresh set."})
    confirm_prompts: int = field(default=128, metadata={"help": "Fresh held-out prompts."})
    confirm_samples: int = field(default=2, metadata={"help": "Clips per fresh prompt."})
    num_steps: int = field(default=25, metadata={"help": "ODE steps per decoding iteration."})
    output_dir: str = field(default="", metadata={"help": "Run and reports (default outputs/continued/<flow>)."})
    results_dir: str = field(default="experiments/results/generator", metadata={"help": "Committed JSON ('' skips)."})

    def __post_init__(self):
        if self.flow not in BUNDLED:
            raise ValueError(f"--flow must be one of {', '.join(BUNDLED)}, not {self.flow!r}.")
        for name in ("max_steps", "batch_size", "num_train_examples", "save_steps", "num_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, not {getattr(self, name)}.")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError(f"--warmup_steps must be in [0, --max_steps), not {self.warmup_steps}.")
        if self.decide_prompts * self.decide_samples < 2 or self.confirm_prompts * self.confirm_samples < 2:
            raise ValueError("Each prompt set needs two or more clips (the Fréchet distances): raise its prompts.")
        self.output_dir = self.output_dir or f"outputs/continued/{self.flow}"


def pretrain_argv(a: ContinueArguments) -> list[str]:
    """The `base_model/pretrain.py` flags of the continued run."""
    return [
        "--init_from", BUNDLED[a.flow], "--output_dir", str(Path(a.output_dir) / "run"),
        "--num_train_examples", str(a.num_train_examples), "--render_workers", str(a.render_workers),
        "--per_device_train_batch_size", str(a.batch_size), "--learning_rate", str(a.learning_rate),
        "--lr_scheduler_type", "linear", "--warmup_steps", str(a.warmup_steps), "--max_steps", str(a.max_steps),
        "--ema_decay", str(a.ema_decay), "--save_steps", str(a.save_steps), "--save_total_limit", "2",
        "--logging_steps", str(min(10, a.max_steps)), "--seed", "0", "--report_to", "none", "--resume_from_checkpoint", "latest",
        "--bf16", "true", *([] if torch.cuda.is_available() else ["--use_cpu", "true"]),
        *(["--cache_dir", a.cache_dir] if a.cache_dir else []),
    ]  # fmt: skip


def train(a: ContinueArguments) -> dict:
    """Runs (or resumes) the continued pretraining; a finished run is not retrained. Its losses and sittings."""
    from base_model import pretrain

    run = Path(a.output_dir) / "run"
    done = run / "final" / "metrics.json"
    if not (done.is_file() and json.loads(done.read_text())["steps"] >= a.max_steps):
        pretrain.main(*pretrain.make_parser().parse_args_and_config(args=pretrain_argv(a)))
    state = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    history = json.loads(state[-1].read_text())["log_history"] if state else []
    return {
        "command": "python base_model/pretrain.py " + " ".join(pretrain_argv(a)),
        "loss": [[h["step"], round(h["loss"], 4)] for h in history if "loss" in h],
        "sittings": json.loads((run / "sittings.json").read_text()),
        "parameters": json.loads(done.read_text())["parameters"],
    }


def evaluate_pair(a: ContinueArguments, first: int, prompts: int, samples: int, name: str) -> dict:
    """The bundled model and its continuation on one prompt set (a saved report is reused)."""
    from rewardflow import evaluate

    out = Path(a.output_dir) / name
    if (out / "report.json").is_file():
        return json.loads((out / "report.json").read_text())
    models = [BUNDLED[a.flow], str(Path(a.output_dir) / "run" / "final")]
    cfg = evaluate.EvaluateConfig(
        models=models, rewards=["verifier"], first_prompt=first, max_prompts=prompts, num_samples=samples,
        num_steps=a.num_steps, output_dir=str(out),
    )  # fmt: skip
    return evaluate.evaluate(cfg)


def check_resumable(a: ContinueArguments) -> None:
    """Records the settings a run starts with in `<output_dir>/settings.json` and refuses to resume it with others
    (the schedule depends on `--max_steps`, the reports on the prompt sets)."""
    from base_model.files import atomic_write_json

    path = Path(a.output_dir) / "settings.json"
    now = {k: v for k, v in asdict(a).items() if k != "results_dir"}
    if path.is_file():
        was = json.loads(path.read_text())
        diff = [f"{k}: {was.get(k)} -> {v}" for k, v in now.items() if was.get(k) != v]
        if diff:
            raise RuntimeError(
                f"{a.output_dir} holds a run made with other settings ({'; '.join(diff)}): rerun with its settings "
                "to resume it, or pass another --output_dir."
            )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, now)


def main(a: ContinueArguments) -> dict:
    from base_model.files import atomic_write_json

    check_resumable(a)
    run = train(a)
    result = {
        "settings": asdict(a),
        "run": run,
        "decide": evaluate_pair(a, 0, a.decide_prompts, a.decide_samples, "decide"),
        "confirm": evaluate_pair(a, a.confirm_first, a.confirm_prompts, a.confirm_samples, "confirm"),
    }
    for part in ("decide", "confirm"):
        r = result[part]
        base, tuned = r["settings"]["models"]
        print(f"{part}: verifier {r['models'][base]['verifier']:.3f} -> {r['models'][tuned]['verifier']:.3f}, "
              f"paired {r['paired_vs_first'][tuned]['verifier']}")  # fmt: skip
    if a.results_dir:
        Path(a.results_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(a.results_dir) / f"continued_{a.flow}.json", result)
    return result


def make_parser():
    from trl import TrlParser

    return TrlParser((ContinueArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
