"""Prompts for rollouts and evaluation: SynthCaps splits or any caption table, and each clip's seed.

A prompt row is `{"prompt_id", "prompt", "attributes"}` (`attributes`: the SynthCaps attributes as JSON, or "" for
a caption table). Rows are validated before anything is generated.
"""

from __future__ import annotations

import hashlib
import json


def load_prompts(
    source: str, max_prompts: int = 0, caption_column: str = "caption", id_column: str = "", first_prompt: int = 0
) -> list[dict]:
    """Prompt rows `first_prompt ... first_prompt + max_prompts - 1` (all after `first_prompt` when 0).

    Args:
        source: `"synthcaps:<split>"`, `"synthmusic:<split>"` or a caption table (`.csv`, `.jsonl`, a datasets folder or a Hub id).
        caption_column / id_column: the table's caption and id columns (ids default to the row number).

    Raises `ValueError`, naming the flag, for a missing column, empty prompts, duplicate ids or an empty range.
    """
    if max_prompts < 0 or first_prompt < 0:
        raise ValueError(f"--max_prompts and --first_prompt must be >= 0, got {max_prompts} and {first_prompt}.")
    from base_model.data import corpus_of_source

    procedural = corpus_of_source(source)
    if procedural:
        SPLITS, example = procedural.module.SPLITS, procedural.module.example
        split = source.split(":", 1)[1]
        if split not in SPLITS:
            raise ValueError(f"--prompts {source!r}: {procedural.name} has the splits {', '.join(SPLITS)}.")
        stop = first_prompt + (max_prompts or 1000)
        rows = [example(i, split) for i in range(first_prompt, stop)]
        prompts = [
            {"prompt_id": r["id"], "prompt": r["caption"], "attributes": json.dumps(r["attributes"])} for r in rows
        ]
    else:
        prompts = _table_prompts(source, max_prompts, caption_column, id_column, first_prompt)
    if not prompts:
        raise ValueError(f"--prompts {source!r} has no prompts after --first_prompt {first_prompt}.")
    bad = [p["prompt_id"] for p in prompts if not isinstance(p["prompt"], str) or not p["prompt"].strip()]
    if bad:
        raise ValueError(
            f"empty or whitespace prompts for prompt ids {bad[:10]} ({len(bad)} in all); fix or drop them."
        )
    seen, dups = set(), set()
    for p in prompts:
        (dups if p["prompt_id"] in seen else seen).add(p["prompt_id"])
    if dups:
        raise ValueError(f"duplicate prompt ids {sorted(dups)[:10]}: rows are keyed by (prompt_id, sample_index).")
    return prompts


def _table_prompts(source: str, max_prompts: int, caption_column: str, id_column: str, first_prompt: int):
    from base_model.data.captions import load_caption_table

    table, _ = load_caption_table(source)
    for flag, column in (("--caption_column", caption_column), ("--id_column", id_column)):
        if column and column not in table.column_names:
            raise ValueError(f"{source} has no column {column!r} ({flag}); its columns are {table.column_names}.")
    stop = len(table) if not max_prompts else min(first_prompt + max_prompts, len(table))
    return [
        {
            "prompt_id": str(table[i][id_column]) if id_column else str(i),
            "prompt": table[i][caption_column],
            "attributes": "",
        }
        for i in range(first_prompt, stop)
    ]


def sample_seed(run_seed: int, prompt_id: str, sample_index: int) -> int:
    """A clip's seed: a hash of the run seed and its ids (independent of process count, batch and order)."""
    digest = hashlib.sha256(f"{run_seed}/{prompt_id}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
