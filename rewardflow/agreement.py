"""Does a reward rank a prompt's own samples the way an independent referee does? A check to run on a rollout
before spending compute on fine-tuning.

    python rewardflow/agreement.py --rollout outputs/rollout --referee verifier
    python rewardflow/agreement.py --rollout outputs/rollout --referee verifier --rewards clap aesthetics 'clap:1,aesthetics:0.5'

Reward-weighted fine-tuning only ever compares samples of one prompt (with `--weighting standardized` or `topk`
literally, with `exp` up to the prompt's mean): what it can learn is bounded by how well the reward picks the better
of a prompt's samples. Per reward, over the prompts of the table:

- `spearman`: mean within-prompt Spearman correlation between the reward and the referee (prompts where either is
  constant are skipped; `prompts_ranked` says how many were left);
- `top1_gain`: the referee of each prompt's best-by-reward sample minus the prompt's mean referee, averaged: what
  best-of-n selection by this reward buys on the referee, i.e. what `--weighting topk --top_k 1/n` trains toward;
- `oracle_gain`: the same with the referee choosing (the most any reward could buy from this table).

Each with a 95 % percentile-bootstrap interval over prompts. A reward whose `top1_gain` interval covers 0 gives
fine-tuning nothing to learn about the referee's criterion from this table.

`by_part` says where a prompt's samples differ and whether the reward hears it: for the referee and each of its parts
(the verifier's `verifier/<attribute>` columns), the pairs of one prompt's samples that it tells apart and the share
of them the reward orders the same way (a reward tie counts half; chance 0.5), with an interval over prompts.

The result is also written (atomically) to `<rollout>/agreement-<referee>.json`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewardflow.metrics import bootstrap_interval  # noqa: E402
from rewardflow.objectives import group_indices, resolve_reward, reward_columns  # noqa: E402


@dataclass
class AgreementConfig:
    rollout: str = field(default="outputs/rollout", metadata={"help": "Rollout output_dir (rewardflow/rollout.py)."})
    referee: str = field(default="verifier", metadata={"help": "Score column that plays the independent referee."})
    rewards: list[str] = field(
        default_factory=list,
        metadata={"help": "Reward specs to check (as finetune's --reward); default: every other top-level column."},
    )
    bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples over prompts."})
    seed: int = field(default=0, metadata={"help": "Bootstrap seed."})


def _interval(values: list, n: int, seed: int) -> list[float]:
    return list(bootstrap_interval(np.asarray(values, dtype=np.float64), n, seed))


def per_prompt(reward: np.ndarray, referee: np.ndarray, groups: list) -> dict[str, list[float]]:
    """`within_prompt_agreement`'s per-prompt values, in `group_indices` order: `top1` and `oracle` (one per prompt
    with two or more samples left, so two rewards scored on one table line up prompt by prompt) and `spearman`
    (only the prompts where neither value is constant)."""
    r, q = np.asarray(reward, dtype=np.float64), np.asarray(referee, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1 or len(groups) != len(r):
        raise ValueError(f"reward {r.shape}, referee {q.shape} and groups ({len(groups)}) must all be (N,).")
    keep = np.isfinite(r) & np.isfinite(q)
    rho, top1, oracle = [], [], []
    for idx in group_indices(list(groups)):
        idx = idx[keep[idx]]
        if len(idx) < 2:
            continue
        gr, gq = r[idx], q[idx]
        best = np.flatnonzero(gr == gr.max())  # ties: the referee's mean over the tied samples
        top1.append(gq[best].mean() - gq.mean())
        oracle.append(gq.max() - gq.mean())
        if np.ptp(gr) > 0 and np.ptp(gq) > 0:
            rho.append(float(spearmanr(gr, gq).statistic))
    return {"top1": top1, "oracle": oracle, "spearman": rho}


def pair_orders(reward: np.ndarray, referee: np.ndarray, groups: list) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt with at least one pair (in `group_indices` order): how many pairs of its samples the referee tells
    apart, and how many of them the reward orders the same way (a tie in the reward counts half). NaN rows are
    left out."""
    r, q = np.asarray(reward, dtype=np.float64), np.asarray(referee, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1 or len(groups) != len(r):
        raise ValueError(f"reward {r.shape}, referee {q.shape} and groups ({len(groups)}) must all be (N,).")
    keep = np.isfinite(r) & np.isfinite(q)
    agree, pairs = [], []
    for idx in group_indices(list(groups)):
        idx = idx[keep[idx]]
        upper = np.triu(np.ones((len(idx), len(idx)), dtype=bool), 1)
        dq = np.sign(np.subtract.outer(q[idx], q[idx]))[upper]
        dr = np.sign(np.subtract.outer(r[idx], r[idx]))[upper]
        told = dq != 0
        if told.any():
            pairs.append(int(told.sum()))
            agree.append(float((dr[told] == dq[told]).sum() + 0.5 * (dr[told] == 0).sum()))
    return np.asarray(agree), np.asarray(pairs)


def pairwise_agreement(reward: np.ndarray, referee: np.ndarray, groups: list, bootstrap: int = 2000, seed: int = 0):
    """`{"share": [mean, low, high], "pairs", "prompts"}`: of the pairs of one prompt's samples that `referee` tells
    apart, the share `reward` orders the same way (0.5: it does not hear the difference), pooled over prompts, with
    a 95 % percentile-bootstrap interval over prompts."""
    agree, pairs = pair_orders(reward, referee, groups)
    if len(pairs) == 0:
        return {"share": [float("nan")] * 3, "pairs": 0, "prompts": 0}
    pick = np.random.default_rng(seed).integers(0, len(pairs), size=(bootstrap, len(pairs)))
    shares = agree[pick].sum(1) / pairs[pick].sum(1)
    share = float(agree.sum() / pairs.sum())
    low, high = np.percentile(shares, [2.5, 97.5])
    return {"share": [share, float(low), float(high)], "pairs": int(pairs.sum()), "prompts": len(pairs)}


def within_prompt_agreement(
    reward: np.ndarray, referee: np.ndarray, groups: list, bootstrap: int = 2000, seed: int = 0
) -> dict:
    """Agreement of `reward` with `referee` (both `(N,)`) within the groups (`groups[i]`: sample i's prompt id).

    Rows where either value is NaN are left out; groups with fewer than two samples left count for nothing.
    Returns `{"spearman", "top1_gain", "oracle_gain"}` as `[mean, low, high]` plus `prompts` and `prompts_ranked`.
    """
    v = per_prompt(reward, referee, groups)
    rho, top1, oracle = v["spearman"], v["top1"], v["oracle"]
    return {
        "spearman": _interval(rho, bootstrap, seed),
        "top1_gain": _interval(top1, bootstrap, seed),
        "oracle_gain": _interval(oracle, bootstrap, seed),
        "prompts": len(top1),
        "prompts_ranked": len(rho),
    }


def agreement(cfg: AgreementConfig, ds=None) -> dict:
    """The agreement table for `cfg.rollout`; `ds` is that rollout's table when the caller has it loaded already."""
    from base_model.files import atomic_write_text
    from rewardflow.rollout_table import load_rollout

    ds = load_rollout(cfg.rollout) if ds is None else ds
    available = reward_columns(ds.column_names)
    if cfg.referee not in available:
        raise ValueError(
            f"--referee {cfg.referee!r}: no score column of that name in {cfg.rollout}. Available: "
            f"{', '.join(available) or '(none)'}."
        )
    specs = cfg.rewards or [c for c in available if "/" not in c and c != cfg.referee]
    table = {c: np.asarray(ds[c], dtype=np.float64) for c in ds.column_names if c.startswith("reward/")}
    referee = table[f"reward/{cfg.referee}"]
    groups = list(ds["prompt_id"])
    parts = {cfg.referee: referee}
    parts |= {c.split("/")[-1]: v for c, v in table.items() if c.startswith(f"reward/{cfg.referee}/")}
    result = {"rollout": str(cfg.rollout), "referee": cfg.referee, "rows": len(ds), "rewards": {}, "by_part": {}}
    for spec in specs:
        r, _ = resolve_reward(spec, table)
        result["rewards"][spec] = within_prompt_agreement(r, referee, groups, cfg.bootstrap, cfg.seed)
        result["by_part"][spec] = {
            part: pairwise_agreement(r, values, groups, cfg.bootstrap, cfg.seed) for part, values in parts.items()
        }
    path = Path(cfg.rollout) / f"agreement-{cfg.referee.replace('/', '_')}.json"
    atomic_write_text(path, json.dumps(result, indent=2))
    result["table"] = format_table(result)
    print(result["table"])
    return result


def format_table(result: dict) -> str:
    def cell(v):
        return f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"

    lines = [
        f"Within-prompt agreement with the referee `{result['referee']}` ({result['rows']} rows, 95% CI over prompts)",
        "",
        "| reward | spearman | top1_gain | oracle_gain | prompts (ranked) |",
        "|---|---|---|---|---|",
    ]
    for spec, a in result["rewards"].items():
        lines.append(
            f"| {spec} | {cell(a['spearman'])} | {cell(a['top1_gain'])} | {cell(a['oracle_gain'])} | "
            f"{a['prompts']} ({a['prompts_ranked']}) |"
        )
    by_part = result.get("by_part", {})
    if by_part:
        specs = list(by_part)
        lines += [
            "",
            f"Pairs of one prompt's samples that `{result['referee']}` or one of its parts tells apart: the share each "
            "reward orders the same way (a tie counts half; chance 0.5)",
            "",
            "| part | pairs | " + " | ".join(specs) + " |",
            "|---|---|" + "---|" * len(specs),
        ]
        for part, first in by_part[specs[0]].items():
            cells = []
            for spec in specs:
                a = by_part[spec][part]
                extra = f" of {a['pairs']}" if a["pairs"] != first["pairs"] else ""
                low_high = f"[{a['share'][1]:.3f}, {a['share'][2]:.3f}]"
                cells.append(f"{a['share'][0]:.3f} {low_high}{extra}")
            lines.append(f"| {part} | {first['pairs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_parser():
    from trl import TrlParser

    return TrlParser((AgreementConfig,))


def main(cfg: AgreementConfig) -> dict:
    return agreement(cfg)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
