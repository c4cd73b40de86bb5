"""Which of a prompt's differences does a reward hear? The agreement check by the verifier's attributes, on rollouts.

CLAP-tuning barely beats its uniform-weight control (experiments/README section 2) and the agreement check says why
in one number: on the held-out rollout CLAP's pick of each prompt's best clip gains nothing on the verifier. This
script asks which attributes that number is made of. For each rollout and reward it runs `rewardflow/agreement.py`
(the referee `verifier`, with its per-attribute pairs, `by_part`), and splits fade and loudness by whether the
prompt sets them (a fade in or out, a loud or quiet level) or leaves them at SynthCaps' default (no fade, normal
level), which is most prompts and which their captions do not mention. `pick_by_part` says what each prompt's best
clip by a reward (the verifier's pick is the oracle's) gains on each check over the prompt's mean:

    python experiments/reward_hearing.py --rollouts outputs/align-heldout/lr/rollout outputs/agreement-fresh/rollout \\
        outputs/align-heldout/cfm/rollout --labels "MaskAudioFlow, prompts 1000-1191" \\
        "MaskAudioFlow, fresh prompts 7000-7191" "CFM baseline, prompts 1000-1191" \\
        --results_json experiments/results/alignment/reward_hearing.json

Rollouts come from `rewardflow/rollout.py` with `--rewards clap aesthetics verifier` on SynthCaps prompts; the
script reads their tables only (no audio, no model).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# attribute -> SynthCaps' default value (the one a caption leaves unsaid)
DEFAULTS = {"fade": "none", "loudness": "normal"}


@dataclass
class HearingArguments:
    rollouts: list[str] = field(default_factory=list, metadata={"help": "Rollout folders (rewardflow/rollout.py)."})
    labels: list[str] = field(default_factory=list, metadata={"help": "One table label per rollout."})
    rewards: list[str] = field(default_factory=lambda: ["clap", "aesthetics"], metadata={"help": "Rewards to check."})
    bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples over prompts."})
    results_json: str = field(default="", metadata={"help": "Where the result goes ('' skips)."})


def split_by_default(attributes: list[str], values: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """`values` (one attribute's verifier column) twice: only the rows whose prompt sets `name` away from its
    default (`set`), and only the rows that leave it at the default (`default`); the other rows NaN."""
    default = np.array([json.loads(a)[name] == DEFAULTS[name] for a in attributes])
    return {"set": np.where(default, np.nan, values), "default": np.where(default, values, np.nan)}


def hearing(rollout: str, rewards: list[str], bootstrap: int) -> dict:
    """The agreement result for one rollout plus `by_default`: fade and loudness pairs split as above."""
    from rewardflow.agreement import AgreementConfig, agreement, pairwise_agreement, within_prompt_agreement
    from rewardflow.objectives import resolve_reward
    from rewardflow.rollout_table import load_rollout

    ds = load_rollout(rollout)
    run = json.loads((Path(rollout) / "run.json").read_text())
    result = agreement(AgreementConfig(rollout=rollout, referee="verifier", rewards=rewards, bootstrap=bootstrap), ds)
    table = {c: np.asarray(ds[c], dtype=np.float64) for c in ds.column_names if c.startswith("reward/")}
    groups, attributes = list(ds["prompt_id"]), list(ds["attributes"])
    scores = {spec: resolve_reward(spec, table)[0] for spec in ["verifier", *rewards]}
    result["by_default"] = {
        spec: {
            f"{name}, {which}": pairwise_agreement(scores[spec], values, groups, bootstrap)
            for name in DEFAULTS
            for which, values in split_by_default(attributes, table[f"reward/verifier/{name}"], name).items()
        }
        for spec in rewards
    }
    # what each prompt's best clip by a reward gains on each check over the prompt's mean: what a best-of-n round
    # offers the fine-tune, check by check (the verifier's pick is the oracle's)
    parts = {c.removeprefix("reward/verifier/"): v for c, v in table.items() if c.startswith("reward/verifier/")}
    result["pick_by_part"] = {
        spec: {
            part: within_prompt_agreement(r, values, groups, bootstrap)["top1_gain"] for part, values in parts.items()
        }
        for spec, r in scores.items()
    }
    result["settings"] = run["settings"]
    result["model"] = run["model"]
    result.pop("table")
    return result


def main(argv: list[str] | None = None) -> dict:
    from trl import TrlParser

    (a,) = TrlParser((HearingArguments,)).parse_args_and_config(args=argv)
    if not a.rollouts or len(a.labels) != len(a.rollouts):
        raise SystemExit(f"--rollouts and --labels: one label per rollout, got {len(a.rollouts)} and {len(a.labels)}.")
    for rollout in a.rollouts:
        run = Path(rollout) / "run.json"
        if not run.is_file():
            raise SystemExit(f"--rollouts {rollout}: no run.json; make it with rewardflow/rollout.py first.")
        settings = json.loads(run.read_text())["settings"]
        if not settings["prompts"].startswith("synthcaps:"):
            raise SystemExit(
                f"--rollouts {rollout}: prompts {settings['prompts']}; the split needs SynthCaps prompts."
            )
    from base_model.files import atomic_write_json

    result = {"rollouts": {label: hearing(r, a.rewards, a.bootstrap) for label, r in zip(a.labels, a.rollouts)}}
    if a.results_json:
        atomic_write_json(Path(a.results_json), result)
    return result


if __name__ == "__main__":
    main()
