"""What one round of the oracle carries, on the study's held-out rollout: how far its seed alone moves the result, and
whether DPO, which also uses each prompt's rejected clip, carries more than keeping the best clip.

    python experiments/oracle_variants.py --dpo_betas 20       # resumable; results/alignment/oracle_variants.json
    python experiments/oracle_variants.py --num_generations 8 --top_k 0.125 --seeds 0 \\
        --results_name oracle_variants_n8.json                                      # best of 8 instead
    python experiments/oracle_variants.py --rollout_prompts 768 --seeds 0 --continue_steps 1200 1800 2400 \\
        --results_name oracle_steps_768.json                                        # longer runs on more prompts
    python experiments/oracle_variants.py --seeds 0 --learning_rates 3e-4 1e-3 \
        --results_name oracle_learning_rates.json                                   # faster fine-tunes
    python experiments/oracle_variants.py --seeds 0 --rounds 5 \
        --results_name oracle_rounds.json                                           # more online rounds
    python experiments/oracle_variants.py --seeds 0 --rounds 4 --round_reference previous \
        --compare_rounds outputs/align-heldout/rounds --results_name oracle_rounds_previous.json  # moving reference

Takes `alignment_study.py`'s settings (the rollout, steps, batch, learning rate, β, loss, evaluated prompts) and
makes, each skipped when complete:
1. the study's rollout (`<output_dir>/rollout`; point it at an existing study's rollout to reuse it);
2. the oracle's round 1 (each prompt's best `--top_k` of its clips by the verifier, `--weighting topk`) once per
   `--seeds` fine-tune seed, the rollout's seed unchanged;
3. with `--continue_steps`, the first seed's run continued from its last checkpoint to each of those step counts in
   turn (the learning rate is constant after warm-up, so this is the longer run's own trajectory); with
   `--learning_rates`, the first seed's run again at each of those learning rates; with `--rounds`, the first
   seed's run carried on as online rounds 2 … R (`finetune.py --rounds`: round k rolls the same prompts out with
   round k - 1's model, the rollout's seed + k - 1, and tunes from its weights; the reference stays the base, or
   with `--round_reference previous` is round k - 1's model; `--compare_rounds` pairs each round with the same round
   of an earlier `--rounds` run of this script, read from that run's evaluation);
4. DPO on each prompt's best and worst clip by the verifier (`--objective dpo --pairs reward`, the same loss) once
   per `--dpo_betas`, with `--batch_size / 2` pairs per step so that every run sees as many clips per step;
5. the base and every run on the study's held-out prompts, each against the base and the first seed's run, paired by
   prompt.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.alignment_study import (  # noqa: E402
    StudyArguments,
    evaluate_models,
    finetune_run,
    logged_means,
    make_rollout,
    paired_between_eval_files,
    paired_difference,
    rollout_paired,
    rollout_spread,
)


@dataclass
class VariantArguments(StudyArguments):
    output_dir: str = field(default="outputs/oracle_variants", metadata={"help": "Rollout, runs and evaluation."})
    results_dir: str = field(default="experiments/results/alignment", metadata={"help": "Committed JSON ('' skips)."})
    results_name: str = field(default="oracle_variants.json", metadata={"help": "File name in --results_dir."})
    rollout_split: str = field(default="heldout", metadata={"help": "Split the rollout's prompts come from."})
    rollout_first_prompt: int = field(default=1000, metadata={"help": "First prompt of the rollout split rolled out."})
    loss_cfg_scale: float = field(default=3.0, metadata={"help": "Every run's --loss_cfg_scale."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Fine-tune seeds of the oracle."})
    learning_rates: list[float] = field(
        default_factory=list,
        metadata={
            "help": "Further learning rates of the first seed's run, each a run of its own (none: no such run)."
        },
    )
    dpo_betas: list[float] = field(
        default_factory=list, metadata={"help": "--dpo_beta of each DPO run (none: no DPO run)."}
    )

    rounds: int = field(
        default=1, metadata={"help": "Online rounds of the first seed's run (1: round 1 only, no further rounds)."}
    )
    round_reference: str = field(
        default="start",
        metadata={"help": "The rounds' --round_reference: 'start' (the base) or 'previous' (round k-1's model)."},
    )
    compare_rounds: str = field(
        default="",
        metadata={
            "help": "--output_dir of an earlier --rounds run of this script to pair each round with ('': none)."
        },
    )
    continue_steps: list[int] = field(
        default_factory=list,
        metadata={"help": "Step counts above --max_steps to continue the first seed's run to, each evaluated."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.seeds:
            raise ValueError(
                "--seeds needs at least one fine-tune seed (the first is what the others are paired with)."
            )
        if self.batch_size < 2:
            raise ValueError(
                f"--batch_size must be >= 2 (DPO runs take --batch_size / 2 pairs), got {self.batch_size}."
            )
        if self.continue_steps and (
            self.continue_steps != sorted(set(self.continue_steps)) or self.continue_steps[0] <= self.max_steps
        ):
            raise ValueError(
                f"--continue_steps must rise and start above --max_steps {self.max_steps}, got {self.continue_steps}."
            )
        if any(not lr > 0 for lr in self.learning_rates) or self.learning_rate in self.learning_rates:
            raise ValueError(
                f"--learning_rates must all be > 0 and differ from --learning_rate {self.learning_rate:g} (whose run "
                f"is the first seed's), got {self.learning_rates}."
            )
        if self.rounds < 1:
            raise ValueError(f"--rounds must be >= 1 (1: the first seed's run only), got {self.rounds}.")
        if self.compare_rounds and not (Path(self.compare_rounds) / "eval-main.json").is_file():
            raise FileNotFoundError(
                f"--compare_rounds {self.compare_rounds}: no eval-main.json there; pass the --output_dir of a finished "
                "--rounds run of this script, or '' for no comparison."
            )
        if any(not b > 0 for b in self.dpo_betas):
            raise ValueError(f"--dpo_betas must all be > 0, got {self.dpo_betas}.")


def continue_from(start: Path, folder: Path) -> None:
    """Seeds the run folder `folder` with the newest complete checkpoint of the run in `start`, unless `folder` has a
    checkpoint of its own already (a continuation that was cut off resumes from there)."""
    from base_model.training import latest_complete_checkpoint

    if latest_complete_checkpoint(folder) is not None:
        return
    last = latest_complete_checkpoint(start)
    if last is None:
        raise FileNotFoundError(f"{start} has no complete checkpoint to continue from.")
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{Path(last).name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(last, partial)
    partial.rename(folder / Path(last).name)


def main(a: VariantArguments) -> dict:
    from base_model.files import atomic_write_json
    from experiments.results_io import publish_json

    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rollout = make_rollout(a, a.model, out / "rollout", a.seed, prompts=f"synthcaps:{a.rollout_split}",
                           first_prompt=a.rollout_first_prompt)  # fmt: skip
    topk = {"reward": "verifier", "weighting": "topk", "top_k": a.top_k}
    finals = {f"oracle-seed{s}": finetune_run(a, f"verifier-topk-seed{s}", {**topk, "seed": s}, rollout, out)
              for s in a.seeds}  # fmt: skip
    start = out / "runs" / f"verifier-topk-seed{a.seeds[0]}"
    for steps in a.continue_steps:
        name = f"verifier-topk-seed{a.seeds[0]}-steps{steps}"
        continue_from(start, out / "runs" / name)
        finals[f"oracle-seed{a.seeds[0]}-steps{steps}"] = finetune_run(
            replace(a, max_steps=steps, continue_steps=[]), name, {**topk, "seed": a.seeds[0]}, rollout, out
        )
        start = out / "runs" / name
    for lr in a.learning_rates:
        finals[f"oracle-seed{a.seeds[0]}-lr{lr:g}"] = finetune_run(
            a,
            f"verifier-topk-seed{a.seeds[0]}-lr{lr:g}",
            {**topk, "seed": a.seeds[0], "learning_rate": lr},
            rollout,
            out,
        )
    rounds = online_rounds(a, rollout, out, topk)
    halved = replace(a, batch_size=a.batch_size // 2)
    for b in a.dpo_betas:
        fields = {"objective": "dpo", "pairs": "reward", "reward": "verifier", "dpo_beta": b}
        finals[f"dpo-beta{b:g}"] = finetune_run(halved, f"verifier-dpo-beta{b:g}", fields, rollout, out)
    report = evaluate_models(a, [a.model, *finals.values(), *rounds.values()], out, "main")
    first = finals[f"oracle-seed{a.seeds[0]}"]
    result: dict = {"settings": asdict(a), "base": report["models"][a.model], "metric_info": report["metric_info"],
                    "rollout_best_of_n": rollout_spread(rollout, "reward/verifier"), "runs": {}}  # fmt: skip
    for name, folder in finals.items():
        dpo = name.startswith("dpo-")
        keys = (
            ("loss/dpo", "dpo/implicit_accuracy", "loss/flow_w", "loss/flow_l")
            if dpo
            else ("loss/flow", "loss/reference")
        )
        result["runs"][name] = {
            "model": report["models"][folder],
            "paired_vs_base": report["paired_vs_first"][folder],
            "paired_vs_first_seed": None if folder == first else paired_difference(a, folder, first),
            "train": {**json.loads((Path(folder) / "metrics.json").read_text()), "last_logs": logged_means(folder, keys)},
        }  # fmt: skip
    if rounds:
        result["rounds"] = round_readings(a, rollout, out, report, {1: first} | rounds)
        if a.compare_rounds:
            result["rounds_vs_compared"] = paired_with_compared(a, out, {1: first} | rounds)
    atomic_write_json(out / "results.json", result)
    publish_json(result, a.results_dir, a.results_name)
    return result


def rounds_name(a: VariantArguments, round_reference: str | None = None) -> str:
    """The rounds' run folder under `runs/`: `verifier-topk-seed<s>-rounds`, `…-rounds-previous` with
    `--round_reference previous`."""
    reference = round_reference or a.round_reference
    return f"verifier-topk-seed{a.seeds[0]}-rounds" + ("" if reference == "start" else f"-{reference}")


def online_rounds(a: VariantArguments, rollout: str, out: Path, topk: dict) -> dict[int, str]:
    """Rounds 2 … `--rounds` of the first seed's run (`runs/<rounds_name>/round-<k>`, its round 1 a link to the
    first seed's run): `k -> final folder`."""
    if a.rounds < 2:
        return {}
    fields = {**topk, "seed": a.seeds[0], "rounds": a.rounds, "round_reference": a.round_reference}
    finetune_run(a, rounds_name(a), fields, rollout, out)
    return {k: str(out / "runs" / rounds_name(a) / f"round-{k}" / "final") for k in range(2, a.rounds + 1)}


def paired_with_compared(a: VariantArguments, out: Path, finals: dict[int, str]) -> dict:
    """Each round k > 1 minus the same round of the `--compare_rounds` run, paired by prompt across the two
    evaluations, with the largest per-prompt difference between the two evaluations of the base (the same clips
    were generated twice: it should be zero)."""
    mine, theirs = out / "eval-main.json", Path(a.compare_rounds) / "eval-main.json"
    mine_base = json.loads(mine.read_text())["per_prompt"][a.model]
    their_models = json.loads(theirs.read_text())["per_prompt"]
    if mine_base["prompt_ids"] != their_models[a.model]["prompt_ids"]:
        raise ValueError(f"--compare_rounds {a.compare_rounds} evaluated other prompts: its rounds cannot be paired.")
    result = {"base_max_abs_difference": max(abs(x - y) for x, y in zip(
        mine_base["verifier"], their_models[a.model]["verifier"], strict=True))}  # fmt: skip
    for k, folder in finals.items():
        other = str(Path(a.compare_rounds) / "runs" / rounds_name(a, "start") / f"round-{k}" / "final")
        if k > 1 and other in their_models:
            result[f"round-{k}"] = paired_between_eval_files((mine, folder), (theirs, other))
    return result


def round_readings(a: VariantArguments, rollout: str, out: Path, report: dict, finals: dict[int, str]) -> dict:
    """Per online round k: the model against the base and against round k - 1 on the evaluated prompts; the rollout it
    was tuned on (the verifier's mean, best of n and spread within a prompt); and, when round k + 1 was rolled out, the
    model on the tuned prompts (that rollout) against the base's first rollout, paired by prompt."""
    tuned = {k: out / "runs" / rounds_name(a) / f"round-{k + 1}" / "rollout"
             for k in finals if k + 1 in finals}  # fmt: skip
    readings = {}
    for k, folder in finals.items():
        readings[f"round-{k}"] = {
            "model": report["models"][folder],
            "paired_vs_base": report["paired_vs_first"][folder],
            "paired_by_attribute": report["paired_by_attribute"][folder],
            "paired_vs_previous": paired_difference(a, folder, finals[k - 1]) if k > 1 else None,
            "rollout": rollout_spread(rollout if k == 1 else tuned[k - 1], "reward/verifier"),
            "tuned_prompts_vs_base": rollout_paired(rollout, tuned[k], "reward/verifier") if k in tuned else None,
            "train": json.loads((Path(folder) / "metrics.json").read_text()),
        }
    return readings


def make_parser():
    from trl import TrlParser

    return TrlParser((VariantArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
