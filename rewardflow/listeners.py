"""A simulated listener for offline proof of the feedback loop: it answers the labelling page's HTTP API as a person
would, judging two clips of one prompt by the SynthCaps verifier on some attributes, with a configurable error rate
and, optionally, a bias (e.g. preferring the louder clip).

    >>> listener = SimulatedListener("http://127.0.0.1:8765", attributes_by_prompt, error_rate=0.1)  # doctest: +SKIP
    >>> listener.label(200)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import math
import urllib.request

import numpy as np


class SimulatedListener:
    """Answers `/api/next` + `/api/answer` like a labeller.

    Args:
        base_url: the label server.
        attributes_by_prompt: `{prompt_id: SynthCaps attributes (dict or JSON)}` — what the simulated person hears.
        name: the labeller name it answers under (`simulated:<name>`).
        checks: verifier attributes it listens for (`type`, `pitch`, `tempo`, `direction`, `colour`, `fade`,
            `loudness`); None: all of them.
        error_rate: probability of flipping a decided answer.
        bias: `"louder"` prefers the louder clip with probability `bias_strength` whatever the attributes say.
        tie_margin: verifier differences below this are ties.
    """

    def __init__(self, base_url: str, attributes_by_prompt: dict, name: str = "verifier", checks=None,
                 error_rate: float = 0.0, bias: str | None = None, bias_strength: float = 0.0,
                 tie_margin: float = 1e-6, seed: int = 0):  # fmt: skip
        if not 0 <= error_rate <= 0.5 or not 0 <= bias_strength <= 1:
            raise ValueError("error_rate must be in [0, 0.5] and bias_strength in [0, 1].")
        if bias not in (None, "louder"):
            raise ValueError(f"bias must be None or 'louder', got {bias!r}.")
        self.url, self.name = base_url.rstrip("/"), f"simulated:{name}"
        self.attributes = {k: json.loads(v) if isinstance(v, str) else v for k, v in attributes_by_prompt.items()}
        self.checks, self.error_rate, self.bias, self.bias_strength = checks, error_rate, bias, bias_strength
        self.tie_margin = tie_margin
        self.rng = np.random.default_rng(seed)

    def _get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return r.read()

    def _audio(self, url: str) -> tuple[np.ndarray, int]:
        import soundfile as sf

        wav, sr = sf.read(io.BytesIO(self._get(url)), dtype="float32")
        return wav, sr

    def judge(self, prompt_id: str, a: np.ndarray, b: np.ndarray, sr: int) -> str:
        from reward_models.verifier import active_rms_db, verify_clip

        if self.bias == "louder" and self.rng.random() < self.bias_strength:
            return "a" if active_rms_db(a) > active_rms_db(b) else "b"
        attrs = self.attributes[prompt_id]
        scores = []
        for wav in (a, b):
            checks = verify_clip(wav, attrs, sr)
            kept = [v for k, v in checks.items() if self.checks is None or k.split(".")[-1] in self.checks]
            scores.append(float(np.mean(kept)) if kept else math.nan)
        if not all(math.isfinite(s) for s in scores) or abs(scores[0] - scores[1]) <= self.tie_margin:
            return "tie"
        choice = "a" if scores[0] > scores[1] else "b"
        if self.rng.random() < self.error_rate:
            choice = "b" if choice == "a" else "a"
        return choice

    def label(self, n: int) -> int:
        """Answers up to `n` pairs (fewer when the page runs out); returns how many it answered."""
        done = 0
        while done < n:
            pair = json.loads(self._get(f"/api/next?labeller={self.name}"))
            if pair.get("done"):
                break
            (a, sr), (b, _) = self._audio(pair["a"]["audio_url"]), self._audio(pair["b"]["audio_url"])
            prompt_id = pair["a"]["clip_id"].rsplit("/", 1)[0]
            body = {"labeller": self.name, "clip_a": pair["a"]["clip_id"], "clip_b": pair["b"]["clip_id"],
                    "choice": self.judge(prompt_id, a, b, sr)}  # fmt: skip
            req = urllib.request.Request(self.url + "/api/answer", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
            with urllib.request.urlopen(req, timeout=60):
                done += 1
        return done
