"""Preference judgements beside a rollout: which pairs of one prompt's clips to ask about, and the table of answers.

Layout: `<rollout>/preferences/<labeller>/<pair_id>.parquet`, one row per answer, written atomically (temporary name,
then rename). A pair's id is a hash of its two clip ids in sorted order, so a labeller answering the same pair again
replaces their answer instead of adding one, two labellers never write the same file, and a restart reads back what
was answered and does not ask it again. `load_preferences(rollout)` gathers every answer as one `datasets.Dataset`:

| column | content |
|---|---|
| `pair_id` | hash of the two clip ids |
| `prompt_id`, `prompt` | the prompt both clips were generated for |
| `clip_a`, `clip_b` | `<prompt_id>/<sample_index>` of the two clips, in the order they were shown |
| `choice` | `a`, `b`, `tie` or `skip` |
| `labeller` | who answered (a name; simulated listeners are `simulated:<...>`) |
| `timestamp` | seconds since the epoch, UTC |
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np

CHOICES = ("a", "b", "tie", "skip")
NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def clip_id(prompt_id: str, sample_index: int) -> str:
    return f"{prompt_id}/{sample_index}"


def pair_id(clip_a: str, clip_b: str) -> str:
    return hashlib.sha256("|".join(sorted((clip_a, clip_b))).encode()).hexdigest()[:16]


def check_labeller(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"labeller name {name!r}: use 1-64 letters, digits and . _ : - (it names a folder).")
    return name


def write_answer(rollout: str | os.PathLike, record: dict) -> Path:
    """Stores one answer (see the module docstring for its columns) atomically; returns its file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if record.get("choice") not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {record.get('choice')!r}.")
    folder = Path(rollout) / "preferences" / check_labeller(record["labeller"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['pair_id']}.parquet"
    row = {k: [record[k]] for k in ("pair_id", "prompt_id", "prompt", "clip_a", "clip_b", "choice", "labeller")}
    row["timestamp"] = [float(record.get("timestamp", time.time()))]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    pq.write_table(pa.table(row), tmp)
    os.replace(tmp, path)
    return path


def load_preferences(*rollouts: str | os.PathLike, answered_only: bool = True):
    """Every answer under the rollouts' `preferences/` folders as one `datasets.Dataset` (skips dropped unless
    `answered_only=False`); an empty table when there is none."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for r in rollouts for p in (Path(r) / "preferences").glob("*/*.parquet"))
    tables = [pq.read_table(f) for f in files]
    if not tables:
        cols = {
            k: [] for k in ("pair_id", "prompt_id", "prompt", "clip_a", "clip_b", "choice", "labeller", "timestamp")
        }
        return datasets.Dataset.from_dict(cols)
    table = pa.concat_tables(tables)
    ds = datasets.Dataset(table)
    return ds.filter(lambda c: c != "skip", input_columns="choice") if answered_only else ds


class PairChooser:
    """Which pair of one prompt's clips to ask about next.

    Strategies: `disagree` (the rewards order the two clips differently, the largest disagreement first), `close`
    (the smallest difference of the first reward), `random`. With `cover_prompts`, every prompt gets one pair before
    any gets a second. Pairs a labeller has answered (or skipped) are never asked again.
    """

    def __init__(
        self, table, rewards: list[str], strategy: str = "disagree", cover_prompts: bool = True, seed: int = 0
    ):
        if strategy not in ("disagree", "close", "random"):
            raise ValueError(f"--strategy must be disagree, close or random, got {strategy!r}.")
        self.strategy, self.cover = strategy, cover_prompts
        self.rng = np.random.default_rng(seed)
        self.clips: dict[str, dict] = {}
        by_prompt: dict[str, list[str]] = {}
        for row in table:
            cid = clip_id(row["prompt_id"], row["sample_index"])
            self.clips[cid] = {"prompt_id": row["prompt_id"], "prompt": row["prompt"], "audio_path": row["audio_path"],
                               "audio_gain": row.get("audio_gain") or 1.0,
                               "scores": [float(row.get(f"reward/{r}", np.nan)) for r in rewards]}  # fmt: skip
            by_prompt.setdefault(row["prompt_id"], []).append(cid)
        self.candidates = []  # (prompt_id, clip_a, clip_b, priority: lower first)
        for pid, cids in by_prompt.items():
            for i in range(len(cids)):
                for j in range(i + 1, len(cids)):
                    self.candidates.append((pid, cids[i], cids[j], self._priority(cids[i], cids[j])))

    def _priority(self, a: str, b: str) -> float:
        sa, sb = np.asarray(self.clips[a]["scores"]), np.asarray(self.clips[b]["scores"])
        if self.strategy == "close" and np.isfinite(sa[0] - sb[0]):
            return float(abs(sa[0] - sb[0]))
        if self.strategy == "disagree" and len(sa) > 1 and np.isfinite(sa - sb).all():
            d = np.sign(sa - sb)
            return -float(np.abs(d[:, None] - d[None, :]).sum() + 1e-3 * np.abs(sa - sb).sum())
        return float(self.rng.random())

    def next_pair(self, answered: set[str]) -> tuple[str, str] | None:
        """The next unanswered pair (shown order randomised), or None when every pair is answered."""
        asked_prompts = {self.clips[c]["prompt_id"] for p in answered for c in self._pair_clips.get(p, ())}
        open_pairs = [c for c in self.candidates if pair_id(c[1], c[2]) not in answered]
        if not open_pairs:
            return None
        if self.cover:
            fresh = [c for c in open_pairs if c[0] not in asked_prompts]
            open_pairs = fresh or open_pairs
        best = min(open_pairs, key=lambda c: c[3])
        return (best[1], best[2]) if self.rng.random() < 0.5 else (best[2], best[1])

    @property
    def _pair_clips(self) -> dict[str, tuple[str, str]]:
        if not hasattr(self, "_pairs_cache"):
            self._pairs_cache = {pair_id(a, b): (a, b) for _, a, b, _ in self.candidates}
        return self._pairs_cache

    def total(self) -> int:
        return len({c[0] for c in self.candidates}) if self.cover else len(self.candidates)
