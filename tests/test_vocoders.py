"""Vocoders: the batched torch Griffin-Lim (the default), librosa's (kept for old pipelines) and how they load."""

import numpy as np
import pytest
import torch
from conftest import gen

from base_model import GriffinLimVocoder, MelConfig, MelSpectrogram
from base_model.data.synthcaps import example, render_audio
from base_model.vocoders import BigVGANVocoder, LibrosaGriffinLimVocoder, load_vocoder

# A clip decoded alone and inside a batch: equal within this fraction of the clip's peak. The only cross-clip
# computation is a batched matmul, whose summation order BLAS may choose by batch shape and processor.
BATCH_TOLERANCE = 1e-4


def _stft_mag(wav: torch.Tensor) -> torch.Tensor:
    win = torch.hann_window(1024)
    return torch.stft(wav, 1024, 256, 1024, win, center=True, pad_mode="constant", return_complex=True).abs()


def spectral_convergence(real: torch.Tensor, rebuilt: torch.Tensor) -> torch.Tensor:
    """`|| |STFT(real)| - |STFT(rebuilt)| ||_F / || |STFT(real)| ||_F` per clip (Griffin-Lim's usual figure)."""
    n = min(real.shape[1], rebuilt.shape[1])
    a, b = _stft_mag(real[:, :n]), _stft_mag(rebuilt[:, :n])
    return (a - b).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1)


@pytest.fixture(scope="module")
def real_clips():
    rows = [example(i, "heldout") for i in range(4)]
    return torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"], 2.0) for r in rows]))


def test_stft_pair_matches_torch_stft_and_istft():
    voc = GriffinLimVocoder()
    wav = torch.randn(3, 256 * 40, generator=gen())
    win = voc._operators(wav.device)["window"]
    ours = voc._stft(wav, win)
    ref = torch.stft(wav, 1024, 256, 1024, win, center=True, pad_mode="constant", return_complex=True)
    torch.testing.assert_close(ours, ref.transpose(1, 2), atol=1e-4, rtol=1e-5)
    ops = voc._operators(wav.device)
    back = voc._istft(ours, win, ops["window_sq"], wav.shape[1])
    torch.testing.assert_close(back, torch.istft(ref, 1024, 256, 1024, win, center=True, length=wav.shape[1]))
    torch.testing.assert_close(back, wav, atol=1e-5, rtol=1e-5)  # a perfect round trip with the true phase


def test_nnls_is_non_negative_and_fits_better_than_the_clamped_pseudo_inverse(real_clips):
    mel = MelSpectrogram()(real_clips)
    target = mel.exp()
    basis = torch.from_numpy(__import__("librosa").filters.mel(sr=16000, n_fft=1024, n_mels=80, fmax=8000.0))

    def residual(voc):
        S = voc.mel_to_linear(mel)  # (B, F, n_freq)
        assert (S >= 0).all() and S.shape == (4, mel.shape[-1], 513)
        return float((basis @ S.transpose(1, 2) - target).norm())

    r0, r8, r16 = (residual(GriffinLimVocoder(nnls_iter=n)) for n in (0, 8, 16))
    assert r16 < r8 < 0.9 * r0


def test_reconstruction_is_no_worse_than_librosa(real_clips):
    """The issue's bar on real SynthCaps clips: spectral convergence within 10 % of librosa's at the same settings."""
    mel = MelSpectrogram()(real_clips)
    ours = spectral_convergence(real_clips, GriffinLimVocoder(n_iter=32)(mel)).mean()
    theirs = spectral_convergence(real_clips, LibrosaGriffinLimVocoder(n_iter=32)(mel)).mean()
    assert ours <= 1.1 * theirs, (ours, theirs)
    assert ours < 0.6  # and a real reconstruction, not noise (noise with the right envelope scores about 1.0)


def test_a_tone_comes_back_at_its_pitch():
    t = np.arange(16000) / 16000
    wav = torch.from_numpy((0.5 * np.sin(2 * np.pi * 880 * t)).astype(np.float32))[None]
    mel = MelSpectrogram()(wav)
    rebuilt = GriffinLimVocoder()(mel)
    assert rebuilt.shape == (1, 256 * (mel.shape[-1] - 1))
    spec = np.abs(np.fft.rfft(rebuilt[0].numpy()))
    assert abs(np.argmax(spec) * 16000 / len(rebuilt[0]) - 880) < 10


def test_deterministic_and_batch_independent_within_the_stated_tolerance():
    mel = MelSpectrogram()(torch.randn(5, 8000, generator=gen()) * 0.1)
    voc = GriffinLimVocoder(n_iter=8)
    a = voc(mel)
    assert torch.equal(a, voc(mel))  # zero-phase start: the same mel gives the same audio
    for i in (0, 3):
        alone = voc(mel[i : i + 1])[0]
        assert (alone - a[i]).abs().max() <= BATCH_TOLERANCE * a[i].abs().max()
    moved = voc(torch.cat([mel[4:], mel[:4]]))[0]  # another position in another batch
    assert (moved - a[4]).abs().max() <= BATCH_TOLERANCE * a[4].abs().max()


def test_names_configs_and_old_pipelines():
    cfg = MelConfig()
    assert isinstance(load_vocoder("griffin_lim", cfg), GriffinLimVocoder)
    assert isinstance(load_vocoder("griffin_lim_librosa", cfg), LibrosaGriffinLimVocoder)
    # a pipeline saved before the torch vocoder wrote no backend: it keeps librosa's, so its clips stay the same
    assert isinstance(load_vocoder({"type": "griffin_lim", "n_iter": 32}, cfg), LibrosaGriffinLimVocoder)
    voc = GriffinLimVocoder(cfg, n_iter=12, nnls_iter=3, momentum=0.5)
    again = load_vocoder(voc.to_config(), cfg)
    assert (again.n_iter, again.nnls_iter, again.momentum) == (12, 3, 0.5)
    with pytest.raises(ValueError, match="backend"):
        load_vocoder({"type": "griffin_lim", "backend": "numpy"}, cfg)
    with pytest.raises(ValueError, match="momentum"):
        GriffinLimVocoder(momentum=1.0)
    with pytest.raises(ValueError, match="griffin_lim"):
        load_vocoder({"type": "wavenet"})


def test_bigvgan_without_weights_names_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="bigvgan_generator.pt"):
        BigVGANVocoder(tmp_path)
