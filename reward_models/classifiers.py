"""Audio classifiers for the paper's KL metric: label distributions of a generated clip and its paired reference.

* `SynthCapsClassifier`: a small conv net over log-mels that predicts SynthCaps' attributes as 28 multi-label
  probabilities (event types, pitch bands, tempi, sweep directions, noise colours, structure, fade, loudness,
  degradation). The bundled one (`reward_models/pretrained/synthcaps-classifier/`) is trained by
  `bundled/train_synthcaps_classifier.py`; `load_classifier("synthcaps")` loads it offline.
* The same net trained on SynthMusic's 30 labels (tempo, key, mode, rhythm, timbre, dynamics, parts):
  `reward_models/pretrained/synthmusic-classifier/`, `load_classifier("synthmusic")`, by
  `bundled/train_synthcaps_classifier.py --corpus synthmusic`.
* `PannsClassifier`: PANNs Cnn14 (527 AudioSet labels), the classifier AudioLDM's evaluation uses for KL, from a
  local checkpoint (`Cnn14_mAP=0.431.pth` at 32 kHz or `Cnn14_16k_mAP=0.438.pth`), built with laion-clap's copy of
  the PANNs model code. `load_classifier("panns:/path/Cnn14_mAP=0.431.pth")`. Its 2048-d clip embedding gives a
  PANNs FAD as well.

Every classifier maps waveforms `(B, N)` at any rate to `probs (B, K)` in [0, 1] and `embed (B, D)`.
`kl_divergence` turns paired probabilities into the paper's KL.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from reward_models.base import file_hash, resample

logger = logging.getLogger(__name__)

BUNDLED_CLASSIFIER = Path(__file__).resolve().parent / "pretrained" / "synthcaps-classifier"
BUNDLED_CLASSIFIERS = {
    "synthcaps": BUNDLED_CLASSIFIER,
    "synthmusic": BUNDLED_CLASSIFIER.with_name("synthmusic-classifier"),
}


def synthcaps_labels() -> list[str]:
    """The 28 `attribute=value` labels of SynthCaps, in a fixed order."""
    from base_model.data.synthcaps import DEGRADATIONS, EVENT_TYPES, NOISE_COLOURS, PITCH_BANDS, TEMPI

    groups = {
        "type": EVENT_TYPES,
        "pitch": tuple(PITCH_BANDS),
        "tempo": tuple(TEMPI),
        "direction": ("rising", "falling"),
        "colour": NOISE_COLOURS,
        "structure": ("single", "sequence", "overlap"),
        "fade": ("none", "in", "out"),
        "loudness": ("quiet", "normal", "loud"),
        "degradation": DEGRADATIONS,
    }
    return [f"{k}={v}" for k, values in groups.items() for v in values]


def synthcaps_targets(attributes: dict, labels: list[str]) -> np.ndarray:
    """Multi-hot target of one SynthCaps example's attributes over `labels`."""
    on = {f"structure={attributes['structure']}", f"fade={attributes['fade']}"}
    on |= {f"loudness={attributes['loudness']}", f"degradation={attributes['degradation']}"}
    for event in attributes["events"]:
        on |= {f"{k}={v}" for k, v in event.items()}
    unknown = on - set(labels)
    if unknown:
        raise ValueError(f"attributes {sorted(unknown)} are not among the classifier's labels.")
    return np.array([lab in on for lab in labels], dtype=np.float32)


def synthmusic_labels() -> list[str]:
    """The 30 `attribute=value` labels of SynthMusic, in a fixed order."""
    from base_model.data.synthmusic import DYNAMICS_DB, MODES, PITCH_CLASSES, RHYTHMS, TEMPI, TIMBRES

    groups = {"tempo": tuple(TEMPI), "key": PITCH_CLASSES, "mode": tuple(MODES), "rhythm": RHYTHMS,
              "timbre": TIMBRES, "dynamics": tuple(DYNAMICS_DB), "parts": ("1", "2")}  # fmt: skip
    return [f"{k}={v}" for k, values in groups.items() for v in values]


def synthmusic_targets(attributes: dict, labels: list[str]) -> np.ndarray:
    """Multi-hot target of one SynthMusic example's attributes over `labels` (its key whether or not the caption
    names it: the audio is in that key either way)."""
    on = {f"{k}={attributes[k]}" for k in ("tempo", "key", "mode", "rhythm", "timbre", "dynamics", "parts")}
    unknown = on - set(labels)
    if unknown:
        raise ValueError(f"attributes {sorted(unknown)} are not among the classifier's labels.")
    return np.array([lab in on for lab in labels], dtype=np.float32)


CORPUS_LABELS = {
    "synthcaps": (synthcaps_labels, synthcaps_targets),
    "synthmusic": (synthmusic_labels, synthmusic_targets),
}


def kl_divergence(p_ref: np.ndarray, p_gen: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per pair `KL(P_ref || P_gen)` `(B,)` between label distributions.

    Each row of classifier probabilities `(B, K)` is normalised to sum to one (a multi-label classifier's
    probabilities do not), so the KL compares where each clip puts its label mass. 0 for identical rows.

    >>> p = np.array([[0.9, 0.1, 0.5]])
    >>> float(kl_divergence(p, p)[0])
    0.0
    """
    p = np.asarray(p_ref, dtype=np.float64) + eps
    q = np.asarray(p_gen, dtype=np.float64) + eps
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"paired probabilities must both be (B, K), got {p.shape} and {q.shape}.")
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    return np.maximum((p * np.log(p / q)).sum(1), 0.0)


def degradation_labels(labels: list[str]) -> dict[int, str]:
    """`{label index: kind}` of the `degradation=<kind>` labels among `labels` (`none`, `hiss`, `clipping`,
    `muffled` for SynthCaps); empty where there are none (SynthMusic, PANNs)."""
    return {i: lab.split("=", 1)[1] for i, lab in enumerate(labels) if lab.startswith("degradation=")}


def degradation_kinds(probs, labels: list[str]) -> list[str] | None:
    """Each clip's most probable `degradation=<kind>` label from classifier probabilities `(B, K)` over `labels`;
    None where the labels have no degradation group. The evaluation's `degraded` is read with it."""
    kinds = degradation_labels(labels)
    if not kinds:
        return None
    names = list(kinds.values())
    return [names[j] for j in np.asarray(probs)[:, list(kinds)].argmax(1)]


class SynthCapsClassifierConfig(PretrainedConfig):
    r"""Configuration of [`SynthCapsClassifier`].

    Args:
        labels (`list[str]`): the label names, `attribute=value`.
        n_mels (`int`, defaults to 80): mel bins of the input (the project's 16 kHz log-mel front end).
        hidden_channels (`int`, defaults to 96): conv width.
        num_layers (`int`, defaults to 3): stride-2 conv blocks.
        mel_mean / mel_std (`float`): input standardisation, set from the training data.
    """

    model_type = "synthcaps_classifier"

    def __init__(
        self,
        labels: list[str] | None = None,
        n_mels: int = 80,
        hidden_channels: int = 96,
        num_layers: int = 3,
        mel_mean: float = 0.0,
        mel_std: float = 1.0,
        **kwargs,
    ):
        self.labels = list(labels) if labels is not None else synthcaps_labels()
        self.n_mels = n_mels
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.mel_mean = mel_mean
        self.mel_std = mel_std
        super().__init__(**kwargs)


class SynthCapsClassifier(PreTrainedModel):
    """Log-mel conv net: `(B, n_mels, F)` -> logits `(B, K)`; pooled over time, so any length works.

    >>> model = SynthCapsClassifier(SynthCapsClassifierConfig(hidden_channels=16))
    >>> model(torch.randn(2, 80, 64)).logits.shape
    torch.Size([2, 28])
    """

    config_class = SynthCapsClassifierConfig
    main_input_name = "mel"

    def __init__(self, config: SynthCapsClassifierConfig):
        super().__init__(config)
        H = config.hidden_channels
        layers: list[nn.Module] = [nn.Conv1d(config.n_mels, H, 5, padding=2)]
        for _ in range(config.num_layers):
            layers += [nn.GroupNorm(8, H), nn.SiLU(), nn.Conv1d(H, H, 5, stride=2, padding=2)]
        layers += [nn.GroupNorm(8, H), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * H + config.n_mels, len(config.labels))
        self.post_init()

    def embed_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """`(B, 2 * hidden + n_mels)`: conv features mean- and max-pooled over time, and the clip's mean log-mel
        (the group norms remove level, which loudness and degradation labels need)."""
        x = (mel - self.config.mel_mean) / self.config.mel_std
        h = self.features(x)
        return torch.cat([h.mean(-1), h.amax(-1), x.mean(-1)], dim=1)

    def forward(self, mel: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> SequenceClassifierOutput:
        """Logits `(B, K)`; with multi-hot `labels`, the per-sample binary cross-entropy `loss` `(B,)`."""
        logits = self.head(self.embed_mel(mel))
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class _Resampling:
    """Shared input handling; subclasses define `probs_and_embed` (one forward pass gives both)."""

    sample_rate: int

    def probs(self, waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.probs_and_embed(waveforms, sample_rate)[0]

    def embed(self, waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.probs_and_embed(waveforms, sample_rate)[1]

    def _prepare(self, waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
        wav = torch.as_tensor(waveforms, dtype=torch.float32)
        if wav.ndim != 2:
            raise ValueError(f"waveforms must be (B, N) mono, got shape {tuple(wav.shape)}.")
        return resample(wav, sample_rate, self.sample_rate)


class SynthCapsAttributeClassifier(_Resampling):
    """Waveforms -> SynthCaps (or SynthMusic) label probabilities and embeddings, through the project's 16 kHz log-mel
    front end."""

    def __init__(
        self, path: str | os.PathLike = BUNDLED_CLASSIFIER, device: str | torch.device = "cpu", corpus="synthcaps"
    ):
        from base_model.mel import MelSpectrogram

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"no {corpus} classifier at {path} (config.json + model.safetensors); build it with "
                f"`python bundled/train_synthcaps_classifier.py --corpus {corpus} --install true`."
            )
        self.model = SynthCapsClassifier.from_pretrained(path).to(device).eval()
        self.labels = list(self.model.config.labels)
        self.mel = MelSpectrogram().to(device)
        self.device, self.sample_rate = device, self.mel.config.sample_rate
        self.model_id = f"{corpus}-classifier"
        self.checkpoint_hash = file_hash(path / "model.safetensors")

    @torch.inference_mode()
    def probs_and_embed(self, waveforms: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(probs (B, K), embed (B, D))` from one forward pass, on the CPU."""
        mel = self.mel(self._prepare(waveforms, sample_rate).to(self.device))
        emb = self.model.embed_mel(mel)
        return torch.sigmoid(self.model.head(emb)).cpu(), emb.cpu()


class PannsClassifier(_Resampling):
    """PANNs Cnn14 from a local checkpoint file (the `model` state dict of the PANNs release).

    The rate and mel settings follow the file name as PANNs publishes them: `Cnn14_16k*` is the 16 kHz model
    (window 512, hop 160, 50-8000 Hz), anything else the 32 kHz one (window 1024, hop 320, 50-14000 Hz).
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device = "cpu"):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"PANNs checkpoint {str(path)!r} not found. Download Cnn14_mAP=0.431.pth (32 kHz) or "
                "Cnn14_16k_mAP=0.438.pth from https://zenodo.org/record/3987831 on a machine with internet and pass "
                "its path as panns:<path>; offline, use the bundled SynthCaps classifier ('synthcaps')."
            )
        from reward_models.clap import clap_module

        Cnn14 = clap_module().pann_model.Cnn14
        sixteen = "16k" in path.name
        self.sample_rate = 16000 if sixteen else 32000
        self.model = Cnn14(
            sample_rate=self.sample_rate,
            window_size=512 if sixteen else 1024,
            hop_size=160 if sixteen else 320,
            mel_bins=64,
            fmin=50,
            fmax=8000 if sixteen else 14000,
            classes_num=527,
            enable_fusion=False,
        )
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("model", state)
        fix = "pass a Cnn14 checkpoint of the PANNs release (its 'model' state dict)"
        try:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches
            raise ValueError(f"{path} does not fit PANNs Cnn14 ({str(err).splitlines()[-1].strip()}); {fix}.") from err
        missing = [k for k in missing if "fusion" not in k]
        if missing or unexpected:
            raise ValueError(
                f"{path} does not fit PANNs Cnn14: missing {missing[:5]}, unexpected {unexpected[:5]}; {fix}."
            )
        self.model.to(device).eval()
        self.device = device
        self.model_id = f"panns-{path.stem}"
        self.checkpoint_hash = file_hash(path)

    @torch.inference_mode()
    def probs_and_embed(self, waveforms: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(probs (B, 527), embed (B, 2048))` from one forward pass, on the CPU."""
        out = self.model({"waveform": self._prepare(waveforms, sample_rate).to(self.device)}, device=self.device)
        return out["clipwise_output"].float().cpu(), out["embedding"].float().cpu()


def load_classifier(spec: str = "synthcaps", device: str | torch.device = "cpu"):
    """`'synthcaps'` / `'synthmusic'` (bundled), `'synthcaps:<folder>'` / `'synthmusic:<folder>'`, or
    `'panns:<Cnn14 checkpoint file>'`."""
    kind, _, arg = spec.partition(":")
    if kind in BUNDLED_CLASSIFIERS:
        return SynthCapsAttributeClassifier(arg or BUNDLED_CLASSIFIERS[kind], device, corpus=kind)
    if kind == "panns":
        if not arg:
            raise ValueError("'panns' needs a checkpoint file: panns:/path/to/Cnn14_mAP=0.431.pth")
        return PannsClassifier(arg, device)
    raise ValueError(
        f"unknown classifier {spec!r}; use 'synthcaps', 'synthmusic' (optionally ':<folder>') or 'panns:<checkpoint>'."
    )
