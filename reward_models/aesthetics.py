"""audiobox-aesthetics reward: PQ, PC, CE, CU and their mean (the paper's reward), on the package's own model code.

Loads the official `checkpoint.pt` layout (`model_cfg`, `state_dict` with `model.` prefixes, `target_transform`),
read with `torch.load(weights_only=True)`, and the Hub folder layout (`config.json` + `model.safetensors`, as
`AesMultiOutput.save_pretrained` writes it). Our bundled SynthCaps quality predictor is a Hub-layout folder whose
config also names a smaller WavLM (`wavlm_cfg`), built with the package's own `WavLM` class.

Scoring follows the package's inference (`audiobox_aesthetics.infer`): 16 kHz mono, 10-second windows with a
10-second hop, zero-padded, each window's prediction weighted by its length, de-normalised by `target_transform`.
The package's `infer` module imports torchaudio (not installable beside this torch), so only its model code is used.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import RewardModel, file_hash, resample

logger = logging.getLogger(__name__)

AXES = ("CE", "CU", "PC", "PQ")
BUNDLED_AESTHETICS = Path(__file__).resolve().parent / "pretrained" / "synthcaps-aesthetics"
_CFG_KEYS = (
    "proj_num_layer",
    "proj_ln",
    "proj_act_fn",
    "proj_dropout",
    "nth_layer",
    "use_weighted_layer_sum",
    "precision",
    "normalize_embed",
    "output_dim",
)


def build_aesthetics_model(model_cfg: dict, target_transform: dict):
    """`AesMultiOutput` from a config; a `wavlm_cfg` entry swaps in a smaller WavLM of the package's own class."""
    from audiobox_aesthetics.model.aes import AesMultiOutput
    from audiobox_aesthetics.model.wavlm import WavLM, WavLMConfig

    model = AesMultiOutput(**{k: model_cfg[k] for k in _CFG_KEYS if k in model_cfg}, target_transform=target_transform)
    if model_cfg.get("wavlm_cfg"):
        from audiobox_aesthetics.model.utils import create_mlp_block

        model.wavlm_model = WavLM(WavLMConfig(model_cfg["wavlm_cfg"]))
        dim = model.wavlm_model.cfg.encoder_embed_dim
        # the projection heads follow the encoder width, built as AesMultiOutput.__post_init__ builds them
        model.proj_layer = torch.nn.ModuleDict(
            {
                a: torch.nn.Sequential(
                    *create_mlp_block(
                        dim,
                        model.output_dim,
                        model.proj_num_layer,
                        model.proj_act_fn,
                        model.proj_ln,
                        dropout=model.proj_dropout,
                    )
                )
                for a in model.axes_name
            }
        )
    return model


class AestheticsReward(RewardModel):
    """Scores `aesthetics` (mean of the four axes, or a weighted mean with `axis_weights`) and
    `aesthetics/PQ`, `aesthetics/PC`, `aesthetics/CE`, `aesthetics/CU`.

    Args:
        checkpoint: official `checkpoint.pt`, a Hub-layout folder, or None for the bundled SynthCaps predictor.
        axis_weights: e.g. `{"PQ": 1, "CE": 1}`; axes left out get weight 0. Default: equal weights (the paper).
    """

    names = ("aesthetics",) + tuple(f"aesthetics/{a}" for a in AXES)

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        axis_weights: dict[str, float] | None = None,
        window_seconds: float = 10.0,
        device="cpu",
    ):
        self.device = torch.device(device)
        if checkpoint is None:
            checkpoint = BUNDLED_AESTHETICS
            logger.info(
                "load_reward('aesthetics'): no checkpoint given, using the bundled SynthCaps quality predictor at %s",
                checkpoint,
            )
        checkpoint = Path(checkpoint)
        if not checkpoint.exists():
            raise FileNotFoundError(
                f"audiobox-aesthetics checkpoint {checkpoint} not found. Download checkpoint.pt (or the Hub folder "
                "facebook/audiobox-aesthetics) on a machine with internet access and pass its path, or omit the "
                "checkpoint to use the bundled SynthCaps predictor."
            )
        if checkpoint.is_dir():
            self.model = self._load_folder(checkpoint)
        else:
            ckpt = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
            missing = [k for k in ("model_cfg", "state_dict", "target_transform") if k not in ckpt]
            if missing:
                raise ValueError(f"{checkpoint} is not an audiobox-aesthetics checkpoint: it lacks {missing}.")
            self.model = build_aesthetics_model(ckpt["model_cfg"], ckpt["target_transform"])
            self.model.load_state_dict({re.sub("^model.", "", k): v for k, v in ckpt["state_dict"].items()})
        self.model.eval().requires_grad_(False).to(self.device)
        self.model_id = f"audiobox-aesthetics:{checkpoint.name}"
        self.checkpoint_hash = file_hash(checkpoint)
        weights = axis_weights or {a: 1.0 for a in AXES}
        unknown = set(weights) - set(AXES)
        if unknown:
            raise ValueError(f"unknown aesthetics axes {sorted(unknown)}; the axes are {AXES}.")
        if sum(weights.values()) <= 0:
            raise ValueError("axis_weights must have a positive sum.")
        self.axis_weights = {a: float(weights.get(a, 0.0)) for a in AXES}
        self.sample_rate = 16000
        self.window = int(window_seconds * self.sample_rate)

    @staticmethod
    def _load_folder(folder: Path):
        from safetensors.torch import load_file

        cfg_file = folder / "config.json"
        if not cfg_file.is_file() or not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"{folder} needs config.json and model.safetensors (the Hub folder layout).")
        cfg = json.loads(cfg_file.read_text())
        model = build_aesthetics_model(cfg, cfg["target_transform"])
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model

    def score(self, waveforms, sample_rate, prompts, **kwargs):
        wav = resample(waveforms, sample_rate, self.sample_rate)
        W = self.window
        windows, masks, weights, owner = [], [], [], []
        for b, w in enumerate(wav):  # the package's make_inference_batch: 10 s windows, 10 s hop, zero padding
            for start in range(0, max(w.shape[-1], 1), W):
                seg = w[start : start + W]
                n = seg.shape[-1]
                windows.append(F.pad(seg, (0, W - n)))
                m = torch.zeros(W, dtype=torch.bool)
                m[:n] = True
                masks.append(m)
                weights.append(n / W)
                owner.append(b)
        x = torch.stack(windows)[:, None].to(self.device)  # (K, 1, W)
        mask = torch.stack(masks)[:, None].to(self.device)
        preds = {a: [] for a in AXES}
        for i in range(0, len(x), 8):
            out = self.model({"wav": x[i : i + 8], "mask": mask[i : i + 8]})
            for a in AXES:
                tt = self.model.target_transform[a]
                preds[a].append(out[a].float() * tt["std"] + tt["mean"])
        weights_t, owner_t = torch.tensor(weights), torch.tensor(owner)
        result = {}
        for a in AXES:
            p = torch.cat(preds[a]).cpu()
            result[f"aesthetics/{a}"] = torch.stack(
                [
                    (p[owner_t == b] * weights_t[owner_t == b]).sum() / weights_t[owner_t == b].sum()
                    for b in range(len(wav))
                ]
            )
        total = sum(self.axis_weights.values())
        result["aesthetics"] = sum(self.axis_weights[a] * result[f"aesthetics/{a}"] for a in AXES) / total
        return result
