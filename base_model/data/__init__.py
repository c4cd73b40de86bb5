"""Corpora: SynthCaps (procedural, offline) and AudioCaps-style caption tables."""
