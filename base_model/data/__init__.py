"""Corpora: the procedural ones (SynthCaps, SynthMusic), rendered offline, and AudioCaps-style caption tables.

The procedural corpora are registered here once: their display name, module (`SPLITS`, `example`, ...), the
verifier that checks their attributes, and the attribute key that marks a prompt row as theirs. Everything that
asks "which corpus is this?" (prompt loading, evaluation references, which verifier applies) asks this table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class ProceduralCorpus:
    key: str  # "synthcaps": the prefix of `--prompts synthcaps:<split>` and the bundled pipeline's name
    name: str  # display name
    verifier: str  # the reward that checks a clip against this corpus's attributes
    marker: str  # an attribute key only this corpus's prompt rows have

    @property
    def module(self):
        return import_module(f"base_model.data.{self.key}")


PROCEDURAL = {
    c.key: c
    for c in (
        ProceduralCorpus("synthcaps", "SynthCaps", verifier="verifier", marker="events"),
        ProceduralCorpus("synthmusic", "SynthMusic", verifier="music_verifier", marker="tempo"),
    )
}


def corpus_of_source(source: str) -> ProceduralCorpus | None:
    """The corpus of a `--prompts <corpus>:<split>` source, or None (a caption table)."""
    key, sep, _ = source.partition(":")
    return PROCEDURAL.get(key) if sep else None


def corpus_of_attributes(attributes: str | dict | None) -> ProceduralCorpus | None:
    """The corpus a prompt row's attributes (JSON or dict) come from, or None (no attributes: a caption table)."""
    attrs = json.loads(attributes) if isinstance(attributes, str) and attributes else attributes
    if not attrs:
        return None
    for corpus in PROCEDURAL.values():
        if corpus.marker in attrs:
            return corpus
    raise ValueError(
        f"prompt attributes with keys {sorted(attrs)} belong to no procedural corpus ({', '.join(PROCEDURAL)})."
    )
