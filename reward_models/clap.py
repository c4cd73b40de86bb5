"""CLAP reward: cosine(text embedding, audio embedding) with laion-clap's own model code.

Models are built with `laion_clap.clap_module.create_model` and the weights are loaded here (laion-clap's
`CLAP_Module` downloads a tokenizer when constructed, which cannot work offline). Two checkpoint layouts:

* the published `.pt` files (`630k-audioset-best.pt`, `630k-best.pt`, the `*-fusion-*` variants): HTSAT-tiny audio
  + RoBERTa text. The RoBERTa tokenizer and config must be on disk (`roberta_path`: a folder with `config.json`,
  `vocab.json`, `merges.txt`, e.g. `roberta-base` saved with `save_pretrained`); the error says so otherwise.
  The key `text_branch.embeddings.position_ids`, which newer transformers reject, is dropped.
* our folder layout (`clap_config.json` + `model.safetensors`), used by the bundled SynthCaps CLAP: a model config
  registered with `add_model_config` and a 'transformer' text branch on the BPE vocabulary laion-clap ships.

Clips longer than the model's window are split into fixed consecutive windows and scored as the mean over them
(laion-clap picks a random crop, so the same clip would score differently: LAION-AI/CLAP issue 166); shorter clips
are repeat-padded as laion-clap's `repeatpad`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import RewardModel, file_hash, resample

logger = logging.getLogger(__name__)

BUNDLED_CLAP = Path(__file__).resolve().parent / "pretrained" / "synthcaps-clap"
ROBERTA_FILES = ("config.json", "vocab.json", "merges.txt")


def clap_module():
    """laion-clap's model package, imported without running `laion_clap/__init__.py`.

    That `__init__` imports `laion_clap.training.data`, which builds BERT/RoBERTa/BART tokenizers from the Hub at
    import time: offline it hangs on retries (or fails with HF_HUB_OFFLINE=1). The model code itself lives in the
    self-contained package `clap_module` beside it, which laion-clap also puts on `sys.path`; we import that.
    """
    import importlib
    import importlib.util
    import sys

    if "clap_module" not in sys.modules:
        spec = importlib.util.find_spec("laion_clap")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("CLAP rewards need laion-clap: pip install laion-clap")
        folder = str(next(iter(spec.submodule_search_locations)))
        if folder not in sys.path:
            sys.path.append(folder)
    return importlib.import_module("clap_module")


def clap_transformer_tokens(prompts: list[str], context_length: int) -> torch.Tensor:
    """laion-clap's BPE tokens cut to `context_length`, keeping the end-of-text token (the 'transformer' text branch
    reads its embedding at the highest id) as the last token of prompts that were cut."""
    tokenizer = clap_module().tokenizer
    tokens = tokenizer.tokenize(prompts, context_length=77)
    eot = tokenizer._tokenizer.encoder["<end_of_text>"]
    over = tokens.argmax(-1) >= context_length  # measured before the cut
    tokens = tokens[:, :context_length].clone()
    tokens[over, -1] = eot
    return tokens


def token_map(token_ids: list[int]) -> torch.Tensor:
    """Lookup `(V,)` from laion-clap's V BPE ids to a reduced vocabulary: padding 0 stays 0, unknown ids go to 1,
    the kept `token_ids` (ascending) to 2, 3, ... Order is kept, so the end-of-text token (the highest id, where the
    'transformer' text branch reads its embedding) stays the highest."""
    ids = torch.as_tensor(sorted(set(token_ids)), dtype=torch.long)
    lookup = torch.ones(len(clap_module().tokenizer._tokenizer.encoder), dtype=torch.long)
    lookup[0] = 0
    lookup[ids] = torch.arange(2, 2 + len(ids))
    return lookup


def build_clap(model_cfg: dict, amodel: str, tmodel: str, device="cpu", enable_fusion=False, fusion_type="None"):
    """A CLAP model from a config dict, via laion-clap's registry (`add_model_config` + `create_model`)."""
    cm = clap_module()
    add_model_config, create_model = cm.factory.add_model_config, cm.factory.create_model

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / f"{amodel}.json").write_text(json.dumps(model_cfg))
        add_model_config(d)
        model, cfg = create_model(
            amodel,
            tmodel,
            pretrained="",
            precision="fp32",
            device=torch.device(device),
            enable_fusion=enable_fusion,
            fusion_type=fusion_type,
        )
    _make_contiguous(model)
    return model, cfg


def _make_contiguous(model: torch.nn.Module) -> None:
    # torchlibrosa's STFT kernels are transposed views; safetensors (and Trainer checkpoints) need contiguous data.
    for t in list(model.parameters()) + list(model.buffers()):
        t.data = t.data.contiguous()


@contextmanager
def _local_roberta(roberta_path: Path):
    """laion-clap calls `RobertaModel.from_pretrained('roberta-base')`; build the same architecture from local
    files instead (its weights come from the CLAP checkpoint)."""
    from transformers import RobertaConfig, RobertaModel

    clap_model = clap_module().model

    original = clap_model.RobertaModel
    shim = type(
        "RobertaFromLocal",
        (),
        {
            "from_pretrained": staticmethod(
                lambda *a, **k: RobertaModel(RobertaConfig.from_pretrained(str(roberta_path), local_files_only=True))
            )
        },
    )
    clap_model.RobertaModel = shim
    try:
        yield
    finally:
        clap_model.RobertaModel = original


class ClapReward(RewardModel):
    """CLAP score `cosine(text, audio)` in [-1, 1], key `"clap"`.

    Args:
        checkpoint: a published `.pt`, our folder layout, or None for the bundled SynthCaps CLAP.
        amodel: audio model name for `.pt` checkpoints (default `HTSAT-tiny`; `HTSAT-base` for the music ones).
        roberta_path: local folder with RoBERTa's `config.json`, `vocab.json`, `merges.txt` (published checkpoints).
        enable_fusion: the `*-fusion-*` checkpoints (detected from the file name when None).

    >>> reward = ClapReward()  # bundled SynthCaps CLAP  # doctest: +SKIP
    >>> reward(torch.zeros(1, 64000), 16000, ["white noise"])["clap"].shape  # doctest: +SKIP
    torch.Size([1])
    """

    names = ("clap",)

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        amodel: str = "HTSAT-tiny",
        roberta_path: str | Path | None = None,
        enable_fusion: bool | None = None,
        device="cpu",
    ):
        self.device = torch.device(device)
        if checkpoint is None:
            checkpoint = BUNDLED_CLAP
            logger.info("load_reward('clap'): no checkpoint given, using the bundled SynthCaps CLAP at %s", checkpoint)
        checkpoint = Path(checkpoint)
        if not checkpoint.exists():
            raise FileNotFoundError(
                f"CLAP checkpoint {checkpoint} not found. Download e.g. 630k-audioset-best.pt from the LAION-CLAP "
                "release (Hugging Face lukewys/laion_clap) on a machine with internet access and pass its path, or "
                "omit the checkpoint to use the bundled SynthCaps CLAP."
            )
        if checkpoint.is_dir():
            self._load_folder(checkpoint)
        else:
            self._load_published(checkpoint, amodel, roberta_path, enable_fusion)
        self.model.eval().requires_grad_(False).to(self.device)
        self.checkpoint_hash = file_hash(checkpoint)
        audio_cfg = self.model.audio_cfg
        self.sample_rate = int(audio_cfg.sample_rate)
        self.window = int(audio_cfg.clip_samples)

    # -------------------------------------------------------------------------------------------- loading
    def _load_folder(self, folder: Path) -> None:
        from safetensors.torch import load_file

        cfg_file = folder / "clap_config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{folder} has no clap_config.json: not a CLAP folder written by our trainer.")
        meta = json.loads(cfg_file.read_text())
        self.model, _ = build_clap(meta["model_cfg"], meta["amodel"], meta["tmodel"])
        self.model.load_state_dict(load_file(str(folder / "model.safetensors")))
        self.text_type = meta["tmodel"]
        self.model_id = meta.get("model_id", f"clap:{folder.name}")
        self.tokenizer = None
        # Folders trained on a reduced vocabulary store the BPE ids they kept (the token table is most of the file).
        self.token_map = token_map(meta["token_ids"]) if meta.get("token_ids") else None

    def _load_published(self, path: Path, amodel: str, roberta_path, enable_fusion) -> None:
        from transformers import RobertaTokenizer

        factory = clap_module().factory
        _MODEL_CONFIGS, create_model = factory._MODEL_CONFIGS, factory.create_model

        if roberta_path is None or not all((Path(roberta_path) / f).is_file() for f in ROBERTA_FILES):
            raise FileNotFoundError(
                f"The published CLAP checkpoints use RoBERTa's tokenizer and config, which must be on disk: pass "
                f"roberta_path=<folder with {', '.join(ROBERTA_FILES)}> (got {roberta_path!r}). Make it on a machine "
                "with internet access: transformers.RobertaTokenizer.from_pretrained('roberta-base')"
                ".save_pretrained(folder) and RobertaConfig.from_pretrained('roberta-base').save_pretrained(folder)."
            )
        if enable_fusion is None:
            enable_fusion = "fusion" in path.name
        if amodel not in _MODEL_CONFIGS:
            raise ValueError(f"Unknown laion-clap audio model {amodel!r}; known: {sorted(_MODEL_CONFIGS)}.")
        with _local_roberta(Path(roberta_path)):
            self.model, _ = create_model(
                amodel,
                "roberta",
                pretrained="",
                precision="fp32",
                device=torch.device("cpu"),
                enable_fusion=enable_fusion,
                fusion_type="aff_2d" if enable_fusion else "None",
            )
        _make_contiguous(self.model)
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        state = ckpt.get("state_dict", ckpt)
        state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
        state.pop("text_branch.embeddings.position_ids", None)  # rejected by newer transformers
        self.model.load_state_dict(state, strict=True)
        self.tokenizer = RobertaTokenizer.from_pretrained(str(roberta_path), local_files_only=True)
        self.text_type = "roberta"
        self.token_map = None
        self.model_id = f"laion-clap:{path.name}"

    # ----------------------------------------------------------------------------------------- embeddings
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings `(B, D)`."""
        if self.text_type == "transformer":
            tokens = clap_transformer_tokens(prompts, self.model.context_length)
            if self.token_map is not None:
                tokens = self.token_map[tokens]
            emb = self.model.encode_text(tokens.to(self.device), device=self.device)
        else:
            tok = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
            emb = self.model.encode_text({k: v.to(self.device) for k, v in tok.items()}, device=self.device)
        return F.normalize(emb, dim=-1)

    def _chunks(self, wav: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Fixed consecutive windows `(K, window)` of one clip; repeat-padded when shorter than a window."""
        n, W = wav.shape[-1], self.window
        if n <= W:
            reps = -(-W // max(n, 1))
            return wav.repeat(reps)[:W][None], 1
        k = -(-n // W)
        padded = F.pad(wav, (0, k * W - n))
        return padded.view(k, W), k

    def _embed_windows(self, windows: torch.Tensor) -> torch.Tensor:
        if self.model.audio_cfg.model_type == "PANN":
            emb = self.model.audio_branch(windows.to(self.device))["embedding"]
        else:  # HTSAT takes laion-clap's feature dicts; every window is exactly max_len, so nothing is random
            batch = {"waveform": windows.to(self.device), "longer": torch.zeros(len(windows), dtype=torch.bool)}
            if self.model.enable_fusion:
                batch["mel_fusion"] = self._mel_fusion(windows).to(self.device)
            emb = self.model.encode_audio(batch, device=self.device)["embedding"]
        return F.normalize(self.model.audio_projection(emb), dim=-1)

    def _mel_fusion(self, windows: torch.Tensor) -> torch.Tensor:
        """laion-clap's `get_mel` (torchaudio power mel, HTK scale, no norm, dB) stacked 4x as it does for clips
        that fit the window, computed with librosa so torchaudio is not needed."""
        import librosa
        import numpy as np

        c = self.model.audio_cfg
        mels = []
        for w in windows.cpu().numpy():
            m = librosa.feature.melspectrogram(
                y=w,
                sr=self.sample_rate,
                n_fft=c.window_size,
                hop_length=c.hop_size,
                win_length=c.window_size,
                center=True,
                pad_mode="reflect",
                power=2.0,
                n_mels=c.mel_bins,
                fmin=c.fmin,
                fmax=c.fmax,
                htk=True,
                norm=None,
            )
            mel = torch.from_numpy(10 * np.log10(np.maximum(m, 1e-10))).T.float()  # (T, n_mels)
            mels.append(torch.stack([mel] * 4))
        return torch.stack(mels)

    def embed_audio_windows(self, waveforms: torch.Tensor, sample_rate: int) -> list[torch.Tensor]:
        """Per clip, unit-norm embeddings of its windows `(K_i, D)`."""
        wav = resample(waveforms, sample_rate, self.sample_rate)
        chunks = [self._chunks(w) for w in wav]
        flat = torch.cat([c for c, _ in chunks])
        emb = torch.cat([self._embed_windows(flat[i : i + 32]) for i in range(0, len(flat), 32)])
        return list(emb.split([k for _, k in chunks]))

    @torch.inference_mode()
    def embed_audio(self, waveforms: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Unit-norm clip embeddings `(B, D)` (mean over windows, renormalised); FAD and evaluation reuse them."""
        return torch.stack([F.normalize(e.mean(0), dim=-1) for e in self.embed_audio_windows(waveforms, sample_rate)])

    def score(self, waveforms, sample_rate, prompts, **kwargs):
        # An empty prompt has no text to match: its score does not apply (NaN), it is not 0.
        keep = [i for i, p in enumerate(prompts) if p and p.strip()]
        out = torch.full((len(prompts),), float("nan"))
        if keep:
            text = self.embed_text([prompts[i] for i in keep])  # (B', D)
            per_clip = self.embed_audio_windows(waveforms[keep], sample_rate)
            out[keep] = torch.stack([(e @ t).mean() for e, t in zip(per_clip, text)]).cpu()
        return {"clap": out}
