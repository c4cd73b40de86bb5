"""Does reward feedback work here, against honest controls? The alignment record of the embedded default.

    python experiments/alignment_study.py                      # every question, resumable
    python experiments/alignment_study.py --questions oracle clap_vs_control

Questions (each a committed result under `experiments/results/alignment/`):
1. `oracle`: the verifier itself as the reward (an oracle, the ceiling), online rounds of rollout -> fine-tune ->
   rollout; does each round add to the last? With `--loss_cfg_scale` other than 1 it is also run with the paper's
   loss (`verifier-topk-paper-loss`), on the same rollout; `--oracle_betas` adds round-1 runs at other β.
2. `clap_vs_control`: CLAP-tuned against the control that differs only in the weights (same rollout, same steps,
   uniform weights); how much of the oracle's gain CLAP recovers, next to the agreement diagnostic's prediction.
   `--pair_seeds` repeats the pair at further fine-tune seeds: how much of CLAP − control is the seed's.
3. `aesthetics`: tuned on the aesthetics reward: fewer degraded clips (hiss, clipping, muffling, read from the audio
   by the SynthCaps attribute classifier), without losing prompt following beyond its interval?
4. `tau`: the paper's raw `exp(τ·r)` weights, τ ∈ {0, 0.1, 1, 10}, each with the reference term, and the safer
   weightings (standardized, self_normalized, clipped, topk, advantage) on the same axes (`--tau_weightings` picks which,
   `--safer_tau` their τ).
5. `best_of_n`: the tuned model against best-of-N reranking of the base by the same reward, at N× the inference
   compute and at matched compute, paired by prompt.
6. `guardrail`: one run with the guardrail, where the kept checkpoint is not the last one.

All runs fine-tune the bundled model on one rollout of SynthCaps training prompts (rounds roll out again) with the same
steps, batch, learning rate and β; `--rollout_split heldout` rolls out held-out-composition prompts instead (other
prompts than the evaluated ones, the same compositions), and `--loss_cfg_scale` makes every run fit the guided
velocity its samples follow. Every model is evaluated on the same held-out prompts and seeds (`--first_prompt`,
`--eval_prompts`): prompts no recipe was chosen on (the demo's recipe is chosen on `selection` prompts before them).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = ("oracle", "clap_vs_control", "aesthetics", "tau", "best_of_n", "guardrail")
SAFER_WEIGHTINGS = ("standardized", "self_normalized", "clipped", "advantage")


@dataclass
class StudyArguments:
    output_dir: str = field(default="outputs/alignment", metadata={"help": "Rollouts, runs and evaluations."})
    results_dir: str = field(default="experiments/results/alignment", metadata={"help": "Committed JSON ('' skips)."})
    questions: list[str] = field(default_factory=lambda: list(QUESTIONS), metadata={"help": "Which questions."})
    model: str = field(default="synthcaps", metadata={"help": "The base pipeline."})
    rollout_prompts: int = field(default=192, metadata={"help": "SynthCaps prompts rolled out."})
    rollout_split: str = field(
        default="train",
        metadata={"help": "SynthCaps split rolled out: train, or heldout (its prompts from --rollout_first_prompt, "
                  "which must not reach the evaluated ones)."},
    )  # fmt: skip
    rollout_first_prompt: int = field(default=0, metadata={"help": "First prompt of the rollout split rolled out."})
    loss_cfg_scale: float = field(
        default=1.0, metadata={"help": "Every run fits the guided velocity at this scale (1: the paper's loss)."}
    )
    num_generations: int = field(default=4, metadata={"help": "Clips per prompt."})
    top_k: float = field(default=0.25, metadata={"help": "`topk` runs: fraction of each prompt's clips kept."})
    rollout_cfg_scale: float = field(default=3.0, metadata={"help": "Guidance of the rollouts."})
    max_steps: int = field(default=600, metadata={"help": "Fine-tuning steps of every run (per round)."})
    batch_size: int = field(default=16, metadata={"help": "Fine-tuning batch."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Fine-tuning learning rate."})
    beta: float = field(default=1.0, metadata={"help": "Reference term weight β of every run."})
    oracle_rounds: int = field(default=3, metadata={"help": "Online rounds of the oracle."})
    oracle_betas: list[float] = field(
        default_factory=list,
        metadata={"help": "β of further round-1 oracle runs on the first rollout (`oracle`): how far the fine-tune "
                  "may move from the reference, on the evaluated prompts and on the tuned ones."},
    )  # fmt: skip
    taus: list[float] = field(default_factory=lambda: [0.0, 0.1, 1.0, 10.0], metadata={"help": "τ of exp(τ·r)."})
    tau_weightings: list[str] = field(
        default_factory=lambda: list(SAFER_WEIGHTINGS),
        metadata={"help": f"The safer weightings beside exp(τ·r) (`tau`): any of {', '.join(SAFER_WEIGHTINGS)}, "
                  "or none."},
    )  # fmt: skip
    safer_tau: float = field(
        default=1.0,
        metadata={"help": "τ of the safer weightings (`tau`); a run at a τ other than 1 carries it in its name."},
    )  # fmt: skip
    best_of: list[int] = field(default_factory=lambda: [2, 4, 8], metadata={"help": "N of best-of-N reranking."})
    first_prompt: int = field(default=128, metadata={"help": "First held-out prompt evaluated (fresh prompts)."})
    eval_prompts: int = field(default=256, metadata={"help": "Held-out prompts evaluated."})
    guard_every: int = field(default=100, metadata={"help": "Guardrail evaluation interval (the guardrail run)."})
    processes: int = field(default=2, metadata={"help": "Rollout processes (torchrun on CPU)."})
    seed: int = field(default=0, metadata={"help": "Seed of rollouts and fine-tunes."})
    pair_seeds: list[int] = field(
        default_factory=list,
        metadata={"help": "Further fine-tune seeds of the CLAP and control pair (`clap_vs_control`): each trains "
                  "`clap-topk-seed<s>` and `control-seed<s>` on the same rollout, and CLAP − control is read per "
                  "seed and averaged over the seeds."},
    )  # fmt: skip

    def __post_init__(self):
        from rewardflow.finetune_config import check_loss_cfg_scale

        check_loss_cfg_scale(self.loss_cfg_scale)
        if self.tau_weightings == ["none"]:
            self.tau_weightings = []
        if not math.isfinite(self.safer_tau) or self.safer_tau < 0:
            raise ValueError(f"--safer_tau must be a finite number >= 0, got {self.safer_tau}.")
        unknown = sorted(set(self.tau_weightings) - set(SAFER_WEIGHTINGS))
        if unknown:
            raise ValueError(f"--tau_weightings: unknown {', '.join(unknown)}; use any of "
                             f"{', '.join(SAFER_WEIGHTINGS)}, or none.")  # fmt: skip
        check_rollout_range(self.rollout_split, self.rollout_first_prompt, self.rollout_prompts, self.first_prompt,
                            self.eval_prompts)  # fmt: skip
        if self.seed in self.pair_seeds or len(set(self.pair_seeds)) != len(self.pair_seeds):
            raise ValueError(f"--pair_seeds must be distinct and leave out --seed {self.seed} (its pair is the "
                             f"study's own), got {self.pair_seeds}.")  # fmt: skip


def check_rollout_range(split: str, first: int, count: int, eval_first: int, eval_count: int) -> None:
    """`--rollout_split` is train or heldout; a held-out rollout (prompts `first`..) must not reach the evaluated
    held-out prompts (`eval_first`..): the error names the first safe `--rollout_first_prompt`."""
    if split not in ("train", "heldout"):
        raise ValueError(f"--rollout_split must be train or heldout, got {split!r}.")
    rolled, evaluated = range(first, first + count), range(eval_first, eval_first + eval_count)
    if split == "heldout" and rolled.start < evaluated.stop and evaluated.start < rolled.stop:
        raise ValueError(
            f"--rollout_split heldout: rolled-out prompts {rolled.start}-{rolled.stop - 1} overlap the evaluated "
            f"ones {evaluated.start}-{evaluated.stop - 1}; set --rollout_first_prompt to {evaluated.stop} or more."
        )


def runs(a: StudyArguments) -> dict[str, dict]:
    """Every fine-tune of the study on the first rollout: `name -> RewardFlowConfig fields`."""
    topk = {"weighting": "topk", "top_k": a.top_k}  # 0.25 of 4 clips: each prompt's best
    out = {
        "control": {"reward": "clap", "weighting": "exp", "tau": 0.0},  # exp(0 · r) = 1: uniform weights
        "clap-topk": {"reward": "clap", **topk},
        "aesthetics-topk": {"reward": "aesthetics", **topk},
        "verifier-topk": {"reward": "verifier", **topk},  # the oracle's first round
    }
    for tau in a.taus:
        if tau > 0:
            out[f"clap-exp-tau{tau:g}"] = {"reward": "clap", "weighting": "exp", "tau": tau}
    for w in a.tau_weightings:
        out[f"clap-{w}" + ("" if a.safer_tau == 1 else f"-tau{a.safer_tau:g}")] = {
            "reward": "clap", "weighting": w, "tau": a.safer_tau}  # fmt: skip
    if a.loss_cfg_scale != 1:  # the oracle with the paper's loss on the same rollout: what the guided velocity adds
        out["verifier-topk-paper-loss"] = {"reward": "verifier", **topk, "loss_cfg_scale": 1.0}
    out["clap-topk-guarded"] = {"reward": "clap", **topk, "guard_every": a.guard_every, "guard_patience": 0}
    for seed in a.pair_seeds:  # the same pair at another fine-tune seed (the rollout's unchanged)
        for name in ("clap-topk", "control"):
            out[f"{name}-seed{seed}"] = {**out[name], "seed": seed}
    return out


def needed(a: StudyArguments) -> list[str]:
    names = {"control"}
    if "oracle" in a.questions or "clap_vs_control" in a.questions:
        names |= {"verifier-topk", "clap-topk"}
    if "clap_vs_control" in a.questions:
        names |= {f"{n}-seed{s}" for s in a.pair_seeds for n in ("clap-topk", "control")}
    if "oracle" in a.questions and a.loss_cfg_scale != 1:
        names |= {"verifier-topk-paper-loss"}
    if "aesthetics" in a.questions:
        names |= {"aesthetics-topk"}
    if "tau" in a.questions:
        names |= {n for n in runs(a) if n.startswith("clap-") and n != "clap-topk-guarded"}
    if "best_of_n" in a.questions:
        names |= {"clap-topk", "verifier-topk"}
    if "guardrail" in a.questions:
        names |= {"clap-topk-guarded"}
    return [n for n in runs(a) if n in names]


@dataclass(frozen=True)
class RolloutSettings:
    """What `make_rollout` reads of a study's arguments, for a rollout made with settings other than the study's."""

    rollout_prompts: int
    num_generations: int
    rollout_cfg_scale: float
    processes: int


def make_rollout(
    a: StudyArguments | RolloutSettings,
    model: str,
    folder: Path,
    seed: int,
    audio_format: str = "none",
    prompts: str = "synthcaps:train",
    max_prompts: int = 0,
    rewards: tuple[str, ...] = ("clap", "aesthetics", "verifier"),
    first_prompt: int = 0,
) -> str:
    """Rolls out `model` into `folder` with `a.processes` processes (torchrun on CPU), unless it is complete there;
    `a` gives the prompts, clips per prompt, guidance and processes (a study's arguments or a `RolloutSettings`)."""
    import subprocess

    if not (folder / "manifest.json").is_file():
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={a.processes}",
               str(ROOT / "rewardflow" / "rollout.py"), "--model", model, "--output_dir", str(folder),
               "--prompts", prompts, "--max_prompts", str(max_prompts or a.rollout_prompts),
               "--num_generations", str(a.num_generations), "--cfg_scale", str(a.rollout_cfg_scale),
               "--first_prompt", str(first_prompt), "--seed", str(seed), "--audio_format", audio_format,
               "--rewards", *rewards]  # fmt: skip
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
    return str(folder)


def finetune_run(a: StudyArguments, name: str, fields: dict, rollout: str, out: Path, **kw) -> str:
    from rewardflow.finetune import finetune, run_rounds
    from rewardflow.finetune_config import RewardFlowConfig

    folder = out / "runs" / name
    rounds = fields.pop("rounds", 1)
    fields.setdefault("loss_cfg_scale", a.loss_cfg_scale)
    fields.setdefault("beta", a.beta)
    seed = fields.pop("seed", a.seed)
    learning_rate = fields.pop("learning_rate", a.learning_rate)
    args = RewardFlowConfig(output_dir=str(folder), rollout=rollout, model=a.model, max_steps=a.max_steps,
                            per_device_train_batch_size=a.batch_size, learning_rate=learning_rate, seed=seed,
                            save_steps=max(a.max_steps // 3, 1), logging_steps=20, resume_from_checkpoint="latest",
                            disable_tqdm=True, report_to="none", rounds=rounds, **fields)  # fmt: skip
    if rounds > 1:
        first = out / "runs" / name.partition("-rounds")[0]
        if not (folder / "round-1").exists() and (first / "final" / "metrics.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "round-1").symlink_to(first.resolve())  # round 1 is the single run already made
        run_rounds(args)
        return str(folder / f"round-{rounds}" / "final")
    if not (folder / "final" / "metrics.json").is_file():
        finetune(args)
    return str(folder / "final")


def _cached_evaluation(path: Path, settings: dict) -> dict | None:
    """The study's evaluation report at `path` when it was made with `settings`, else None. A report made before
    `evaluate.py` read each clip's degradation (no `degradation_by_kind`) is made again: the study reads it."""
    if path.is_file() and (report := json.loads(path.read_text()))["study_settings"] == settings:
        return report if "degradation_by_kind" in report else None
    return None


def evaluate_models(a: StudyArguments, models: list[str], out: Path, name: str, **extra) -> dict:
    from base_model.files import atomic_write_json
    from rewardflow.evaluate import EvaluateConfig, evaluate

    path = out / f"eval-{name}.json"
    settings = {"models": models, "first_prompt": a.first_prompt, "max_prompts": a.eval_prompts, **extra}
    if (report := _cached_evaluation(path, settings)) is not None:
        return report
    report = evaluate(EvaluateConfig(prompts="synthcaps:heldout", output_json=str(path), **settings))
    report["study_settings"] = settings
    atomic_write_json(path, report)
    return report


def evaluate_reranked(a: StudyArguments, out: Path, names: dict[tuple[str, int], str], **extra) -> dict[str, dict]:
    """The base model's best of n by each reward, `names[(reward, n)]` naming each report: the reports
    `evaluate_models(a, [a.model], out, name, best_of=n, rerank_reward=reward, **extra)` would write (the same files
    and cache), made from one generation of each clip's candidates (`rewardflow.evaluate.evaluate_selections`)."""
    from base_model.files import atomic_write_json
    from rewardflow.evaluate import EvaluateConfig, evaluate_selections

    base = {"models": [a.model], "first_prompt": a.first_prompt, "max_prompts": a.eval_prompts, **extra}
    reports, missing = {}, {}
    for (reward, n), name in names.items():
        settings = {**base, "best_of": n, "rerank_reward": reward}
        if (report := _cached_evaluation(out / f"eval-{name}.json", settings)) is not None:
            reports[name] = report
        else:
            missing[(reward, n)] = (name, settings)
    if missing:
        made = evaluate_selections(EvaluateConfig(prompts="synthcaps:heldout", **base), list(missing))
        for selection, (name, settings) in missing.items():
            report = {**made[selection], "study_settings": settings}
            print(report["table"])
            atomic_write_json(out / f"eval-{name}.json", report)
            reports[name] = report
    return reports


def degradation_readings(report: dict, models: dict[str, str]) -> dict:
    """The share of each of `models`' (`name -> folder`) clips that the SynthCaps classifier reads as degraded (hiss,
    clipping, muffling), from the study's evaluation `report` (`evaluate.py`'s `degraded` and `degradation_by_kind`,
    one classifier pass over the evaluated clips); then every model but the base against the base, and every model
    but the base and the control against `control` (when one is given): the difference in the degraded share, paired
    by prompt (the same seeds), with a 95 % bootstrap interval."""
    import numpy as np

    from rewardflow.metrics import bootstrap_interval

    clips = report["settings"]["num_samples"] * len(report["per_prompt"][models["base"]]["prompt_ids"])
    rows = {n: {"clips": clips, **report["degradation_by_kind"][f], "degraded": report["models"][f]["degraded"]}
            for n, f in models.items()}  # fmt: skip

    def paired(first: str, second: str) -> dict:
        a, b = (report["per_prompt"][models[n]]["degraded"] for n in (first, second))
        mean, lo, hi = bootstrap_interval(np.subtract(a, b, dtype=np.float64))
        return {"mean": mean, "ci95": [lo, hi], "prompts": len(a)}

    for name in models:
        if name != "base":
            rows[name]["degraded_minus_base"] = paired(name, "base")
        if name not in ("base", "control") and "control" in models:
            rows[name]["degraded_minus_control"] = paired(name, "control")
    return rows


def rollout_spread(rollout: str | Path, column: str) -> dict:
    """A rollout's `column` over its clips (`mean`), each prompt's best clip (`best_of_n`, averaged over prompts) and
    the spread within a prompt (`within_prompt_std`): what best-of-n selection has to reinforce."""
    import numpy as np

    from rewardflow.objectives import group_indices
    from rewardflow.rollout_table import load_rollout

    table = load_rollout(rollout)
    values = np.asarray(table[column], dtype=np.float64)
    groups = [values[idx] for idx in group_indices(list(table["prompt_id"]))]
    return {"clips": len(values), "mean": float(np.nanmean(values)),
            "best_of_n": float(np.mean([np.nanmax(g) for g in groups])),
            "within_prompt_std": float(np.mean([np.nanstd(g) for g in groups]))}  # fmt: skip


def rollout_paired(first: str | Path, second: str | Path, column: str) -> dict:
    """`second - first` in `column`, each prompt's mean over its clips, paired by prompt with a 95 % bootstrap
    interval: two models' rollouts of the same prompts (with other seeds)."""
    import numpy as np

    from rewardflow.metrics import bootstrap_interval
    from rewardflow.objectives import group_indices
    from rewardflow.rollout_table import load_rollout

    means = []
    for folder in (first, second):
        table = load_rollout(folder)
        values, ids = np.asarray(table[column], dtype=np.float64), list(table["prompt_id"])
        means.append({ids[idx[0]]: float(np.nanmean(values[idx])) for idx in group_indices(ids)})
    if set(means[0]) != set(means[1]):
        raise ValueError(f"{first} and {second} roll out other prompts: they cannot be paired.")
    diff = np.array([means[1][k] - means[0][k] for k in sorted(means[0])])
    mean, lo, hi = bootstrap_interval(diff)
    return {"mean": mean, "ci95": [lo, hi], "prompts": len(diff)}


def main(a: StudyArguments) -> dict:
    from base_model.files import atomic_write_json
    from experiments.results_io import publish_json
    from rewardflow.agreement import AgreementConfig, agreement

    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rollout = make_rollout(a, a.model, out / "rollout", a.seed, prompts=f"synthcaps:{a.rollout_split}",
                           first_prompt=a.rollout_first_prompt)  # fmt: skip
    agree = agreement(AgreementConfig(rollout=rollout, referee="verifier", rewards=["clap", "aesthetics", "verifier"]))
    finals = {name: finetune_run(a, name, dict(runs(a)[name]), rollout, out) for name in needed(a)}
    result: dict = {"settings": asdict(a), "agreement": agree["rewards"], "runs": {}}
    if "oracle" in a.questions:
        rounds = {1: finals["verifier-topk"]}
        for k in range(2, a.oracle_rounds + 1):
            rounds[k] = finetune_run(a, "verifier-topk-rounds", {"reward": "verifier", "weighting": "topk",
                                     "top_k": a.top_k, "rounds": k}, rollout, out)  # fmt: skip
        finals.update({f"oracle-round-{k}": v for k, v in rounds.items() if k > 1})
    models = [a.model, *finals.values()]
    report = evaluate_models(a, models, out, "main")
    for name, folder in finals.items():
        train = Path(folder) / "metrics.json"
        result["runs"][name] = {"model": report["models"][folder], "paired_vs_base": report["paired_vs_first"][folder],
                                "train": json.loads(train.read_text()) if train.is_file() else None}  # fmt: skip
    result["base"] = report["models"][a.model]
    result["metric_info"] = report["metric_info"]
    if a.rollout_split == "heldout":  # the same compositions, other prompts: also read without any shared one
        result["disjoint_from_rollout"] = disjoint_from_rollout(a, finals)
    if "oracle" in a.questions and a.oracle_rounds > 1:  # does each round add to the last?
        result["oracle_round_gains"] = {
            f"round-{k}": paired_difference(a, rounds[k], rounds[k - 1]) for k in range(2, a.oracle_rounds + 1)
        }
        # what each round trained on: round 1 the study's rollout, round k the rollout of round k - 1's model
        result["oracle_round_rollouts"] = {
            f"round-{k}": rollout_spread(rollout if k == 1 else Path(rounds[k]).parent / "rollout", "reward/verifier")
            for k in range(1, a.oracle_rounds + 1)
        }
        # round k's rollout is round k - 1's model on the tuned prompts (fresh seeds, the rollout's CFG)
        tuned = {k: Path(rounds[k + 1]).parent / "rollout" for k in range(1, a.oracle_rounds)}
        result["oracle_on_tuned_prompts"] = {
            f"round-{k}": {"vs_base": rollout_paired(rollout, tuned[k], "reward/verifier"),
                           "vs_previous": rollout_paired(tuned[k - 1], tuned[k], "reward/verifier") if k > 1 else None}
            for k in tuned
        }  # fmt: skip
    if "oracle" in a.questions and a.oracle_betas:
        first_tuned = Path(rounds[2]).parent / "rollout" if a.oracle_rounds > 1 else None
        result["oracle_beta"] = oracle_beta(a, rollout, out, finals["verifier-topk"], first_tuned)
    if "aesthetics" in a.questions:
        result["degradation"] = degradation_readings(
            report, {"base": a.model, "aesthetics-topk": finals["aesthetics-topk"], "control": finals["control"]}
        )
    if "clap_vs_control" in a.questions:
        result["clap_minus_control"] = paired_difference(a, finals["clap-topk"], finals["control"])
        if a.pair_seeds:  # the pair at each fine-tune seed, and each prompt's difference averaged over the seeds
            pairs = {a.seed: ("clap-topk", "control")} | {
                s: (f"clap-topk-seed{s}", f"control-seed{s}") for s in a.pair_seeds
            }
            result["clap_minus_control_by_seed"] = {
                str(s): paired_difference(a, finals[c], finals[k]) for s, (c, k) in pairs.items()
            }
            over = {"clap_minus_control": [(finals[c], finals[k]) for c, k in pairs.values()],
                    "clap_minus_base": [(finals[c], a.model) for c, _ in pairs.values()],
                    "control_minus_base": [(finals[k], a.model) for _, k in pairs.values()]}  # fmt: skip
            result["over_seeds"] = {name: paired_over_seeds(out, p) for name, p in over.items()}
    if "aesthetics-topk" in finals:  # the control is in every study
        result["aesthetics_minus_control"] = paired_difference(a, finals["aesthetics-topk"], finals["control"])
    if "best_of_n" in a.questions:  # each against the model tuned on the same reward, paired by prompt

        def reranked(name: str, report: dict, reward: str) -> dict:
            tuned = ("main", finals[f"{reward}-topk"])
            return {**report["models"][a.model], "tuned_minus_this": paired_between_evals(out, tuned, (name, a.model))}

        # every N and reward at the sampler's settings from one generation of max(N) candidates per clip
        shared = {(reward, n): f"best-of-{n}-{reward}" for n in a.best_of for reward in ("clap", "verifier")}
        reports = evaluate_reranked(a, out, shared)
        result["best_of_n"] = {}
        for n in a.best_of:
            for reward in ("clap", "verifier"):
                name = shared[(reward, n)]
                result["best_of_n"][f"{reward}-{n}"] = reranked(name, reports[name], reward)
            matched = {"num_iterations": max(8 // n, 1)}  # matched compute: N candidates at 8 / N iterations each
            name = f"best-of-{n}-clap-matched"
            report = evaluate_reranked(a, out, {("clap", n): name}, **matched)[name]
            result["best_of_n"][f"clap-{n}-matched"] = reranked(name, report, "clap")
    if "guardrail" in a.questions:
        result["guardrail"] = json.loads((out / "runs" / "clap-topk-guarded" / "guardrail.json").read_text())
        if "clap-topk" in finals:  # the same run unguarded ends at the last step: the kept checkpoint against it
            result["guardrail"]["kept_minus_last"] = paired_difference(
                a, finals["clap-topk-guarded"], finals["clap-topk"]
            )
    atomic_write_json(out / "results.json", result)
    publish_json(result, a.results_dir)
    return result


def disjoint_from_rollout(a: StudyArguments, finals: dict) -> dict:
    """Each run against the base on the evaluated prompts whose attributes (the whole caption's, before wording)
    match no rolled-out prompt's: what a held-out rollout teaches beyond the prompts it saw."""
    import numpy as np

    from experiments.results_io import paired_between
    from rewardflow.prompts import load_prompts

    rolled = {p["attributes"] for p in load_prompts(f"synthcaps:{a.rollout_split}", a.rollout_prompts,
                                                    first_prompt=a.rollout_first_prompt)}  # fmt: skip
    evaluated = {p["prompt_id"]: p["attributes"] for p in load_prompts("synthcaps:heldout", a.eval_prompts,
                                                                     first_prompt=a.first_prompt)}  # fmt: skip
    per_prompt = json.loads((Path(a.output_dir) / "eval-main.json").read_text())["per_prompt"]
    keep = np.array([evaluated[i] not in rolled for i in per_prompt[a.model]["prompt_ids"]])
    subset = {m: {k: (np.asarray(v)[keep] if k != "prompt_ids" else v) for k, v in cols.items()}
              for m, cols in per_prompt.items()}  # fmt: skip
    return {"prompts": int(keep.sum()), "of": len(keep),
            "paired_vs_base": {n: paired_between(subset, f, a.model) for n, f in finals.items()}}  # fmt: skip


def tuned_rollout(a: StudyArguments, rollout: str, model: str) -> str:
    """`model` rolled out as an oracle round 2 would roll out after it (`round_rollout_settings`: the study's first
    rollout's prompts and settings, its seed + 1), into `<model>/../tuned-rollout`: how much of its rollout's
    best-of-n margin a fine-tune carries onto the prompts it was tuned on."""
    from rewardflow.finetune import round_rollout_settings

    meta = json.loads((Path(rollout) / "run.json").read_text())
    s = round_rollout_settings(meta, model, 2)
    like = RolloutSettings(s["max_prompts"], s["num_generations"], s["cfg_scale"], a.processes)
    return make_rollout(like, model, Path(model).parent / "tuned-rollout", s["seed"], prompts=s["prompts"],
                        first_prompt=s["first_prompt"], rewards=tuple(meta["rewards"]))  # fmt: skip


def logged_means(final: str, keys: tuple[str, ...], last: int = 10) -> dict:
    """Each of `keys` averaged over a run's last `last` logged values (from its last checkpoint's trainer state), a
    steadier reading than one logged batch; `logs` says how many were averaged."""
    folder = Path(final).parent
    state = max(folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    state = json.loads(state.read_text())
    out = {}
    for key in keys:
        values = [h[key] for h in state["log_history"] if key in h][-last:]
        out[key] = sum(values) / len(values) if values else None
    return {**out, "logs": len(values), "logging_steps": state.get("logging_steps")}


def oracle_beta(a: StudyArguments, rollout: str, out: Path, first_round: str, first_tuned: Path | None) -> dict:
    """Round-1 oracle runs at each `--oracle_betas` β on the study's rollout, against the base and against the
    study's β (`first_round`), on the evaluated prompts and on the tuned ones (`tuned_rollout`; `first_tuned` is
    the study's round-2 rollout, the same thing for `first_round`, when there is one)."""
    topk = {"reward": "verifier", "weighting": "topk", "top_k": a.top_k}
    folders = {
        b: finetune_run(a, f"verifier-topk-beta{b:g}", {**topk, "beta": b}, rollout, out) for b in a.oracle_betas
    }
    report = evaluate_models(a, [a.model, first_round, *folders.values()], out, "oracle-beta")
    first_tuned = str(first_tuned) if first_tuned else tuned_rollout(a, rollout, first_round)
    rows = {}
    for beta, folder in {a.beta: first_round, **folders}.items():
        tuned = first_tuned if folder == first_round else tuned_rollout(a, rollout, folder)
        rows[f"{beta:g}"] = {
            "beta": beta,
            "model": report["models"][folder],
            "paired_vs_base": report["paired_vs_first"][folder],
            "paired_vs_study_beta": None
            if folder == first_round
            else paired_difference(a, folder, first_round, "oracle-beta"),
            "train": logged_means(folder, ("loss/flow", "loss/reference")),
            "on_tuned_prompts": {"vs_base": rollout_paired(rollout, tuned, "reward/verifier"),
                                 "vs_study_beta": None if folder == first_round
                                 else rollout_paired(first_tuned, tuned, "reward/verifier")},
        }  # fmt: skip
    return {"study_beta": a.beta, "rollout_best_of_n": rollout_spread(rollout, "reward/verifier"), "runs": rows}


def paired_between_evals(out: Path, first: tuple[str, str], second: tuple[str, str]) -> dict:
    """`first - second` per score, paired by prompt with a 95 % bootstrap interval; each is `(evaluation, model)`,
    read from the per-prompt means `eval-<evaluation>.json` holds, and both must be on the same prompts."""
    return paired_between_eval_files(*((out / f"eval-{name}.json", model) for name, model in (first, second)))


def paired_between_eval_files(first: tuple[Path, str], second: tuple[Path, str]) -> dict:
    """`paired_between_evals` for two evaluation reports anywhere: each is `(report path, model)`."""
    from experiments.results_io import paired_between

    cols = {}
    for label, (path, model) in (("first", first), ("second", second)):
        cols[label] = json.loads(Path(path).read_text())["per_prompt"][model]
    if cols["first"]["prompt_ids"] != cols["second"]["prompt_ids"]:
        raise ValueError(f"{first[0]} and {second[0]} evaluate other prompts: they cannot be paired.")
    return paired_between(cols, "first", "second")


def paired_over_seeds(out: Path, pairs: list[tuple[str, str]], name: str = "main") -> dict:
    """`first - second` per score for each `(first, second)` pair of models in the study's evaluation `name`, each
    prompt's difference averaged over the pairs (the same recipe at several seeds), with a 95 % bootstrap interval
    over prompts; `seed_std` is the spread of the pairs' mean differences (sample std over pairs)."""
    import numpy as np

    from rewardflow.metrics import bootstrap_interval

    per_prompt = json.loads((out / f"eval-{name}.json").read_text())["per_prompt"]
    result: dict = {"pairs": len(pairs)}
    for c in ("verifier", "clap", "aesthetics", "kl"):
        diffs = np.array([np.subtract(per_prompt[f][c], per_prompt[s][c]) for f, s in pairs])  # pairs × prompts
        mean, lo, hi = bootstrap_interval(diffs.mean(0))
        result[c] = {"mean": mean, "ci95": [lo, hi],
                     "seed_std": float(diffs.mean(1).std(ddof=1)) if len(pairs) > 1 else 0.0}  # fmt: skip
    return result


def paired_difference(a: StudyArguments, first: str, second: str, name: str = "main") -> dict:
    """`first - second` per score within the study's evaluation `name`, paired by prompt."""
    return paired_between_evals(Path(a.output_dir), (name, first), (name, second))


def make_parser():
    from trl import TrlParser

    return TrlParser((StudyArguments,))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
