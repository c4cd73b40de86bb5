"""The classifiers behind the paper's KL: SynthCaps labels, the bundled classifier, PANNs loading, the KL itself."""

import numpy as np
import pytest
import torch

from reward_models.classifiers import (
    SynthCapsClassifier,
    SynthCapsClassifierConfig,
    degradation_kinds,
    kl_divergence,
    load_classifier,
    synthcaps_labels,
    synthcaps_targets,
)


def test_synthcaps_targets_mark_exactly_the_attributes():
    labels = synthcaps_labels()
    assert len(labels) == len(set(labels)) == 28
    attrs = {
        "structure": "sequence",
        "events": [{"type": "sweep", "direction": "rising"}, {"type": "beeps", "pitch": "low", "tempo": "slow"}],
        "fade": "out",
        "loudness": "loud",
        "degradation": "hiss",
    }
    on = {labels[i] for i in np.flatnonzero(synthcaps_targets(attrs, labels))}
    assert on == {
        "structure=sequence", "type=sweep", "direction=rising", "type=beeps", "pitch=low", "tempo=slow",
        "fade=out", "loudness=loud", "degradation=hiss",
    }  # fmt: skip
    with pytest.raises(ValueError, match="not among the classifier's labels"):
        synthcaps_targets({**attrs, "fade": "sideways"}, labels)


def test_kl_is_zero_for_identical_rows_and_matches_the_formula():
    rng = np.random.default_rng(0)
    p, q = rng.uniform(size=(5, 28)), rng.uniform(size=(5, 28))
    np.testing.assert_allclose(kl_divergence(p, p), 0.0, atol=1e-12)
    pn, qn = (p + 1e-6) / (p + 1e-6).sum(1, keepdims=True), (q + 1e-6) / (q + 1e-6).sum(1, keepdims=True)
    np.testing.assert_allclose(kl_divergence(p, q), (pn * np.log(pn / qn)).sum(1), rtol=1e-10)
    assert (kl_divergence(p, q) > 0).all()
    with pytest.raises(ValueError, match="paired probabilities"):
        kl_divergence(p, q[:3])


def test_degradation_kinds_take_the_most_probable_degradation_label():
    labels = ["type=tone", "degradation=none", "degradation=hiss", "degradation=clipping", "degradation=muffled"]
    probs = np.array([[0.9, 0.4, 0.1, 0.2, 0.3], [0.0, 0.2, 0.1, 0.7, 0.3], [0.5, 0.1, 0.6, 0.2, 0.3]])
    assert degradation_kinds(probs, labels) == ["none", "clipping", "hiss"]  # the type label plays no part
    assert degradation_kinds(probs[:, :1], labels[:1]) is None  # no degradation group (SynthMusic, PANNs)


@pytest.fixture(scope="module")
def bundled():
    return load_classifier("synthcaps")


def test_bundled_classifier_reads_heldout_attributes(bundled):
    from base_model.data.synthcaps import example, render_audio

    rows = [example(i, "heldout") for i in range(48)]
    wav = torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"]) for r in rows]))
    probs = bundled.probs(wav, 16000).numpy()
    targets = np.stack([synthcaps_targets(r["attributes"], bundled.labels) for r in rows])
    assert probs.shape == (48, 28) and ((probs >= 0) & (probs <= 1)).all()
    # label accuracy on unseen compositions, against the trivial "no label is on" answer (0.87 vs 0.72 on 300 clips)
    trivial = (targets == 0).mean()
    assert ((probs > 0.5) == targets.astype(bool)).mean() > trivial + 0.12
    # each clip's most probable degradation is the rendered one on most clips (0.875 of these 48, where always
    # answering `none` gets 0.667)
    kinds, rendered = degradation_kinds(probs, bundled.labels), [r["attributes"]["degradation"] for r in rows]
    assert np.mean([k == r for k, r in zip(kinds, rendered)]) > np.mean([r == "none" for r in rendered]) + 0.1
    # the same clip at 48 kHz is resampled to the classifier's rate and reads the same
    import librosa

    up = torch.from_numpy(librosa.resample(wav[:4].numpy(), orig_sr=16000, target_sr=48000, axis=-1))
    assert ((bundled.probs(up, 48000).numpy() > 0.5) == (probs[:4] > 0.5)).mean() > 0.95


def test_kl_against_references_is_zero_and_grows_with_noise(bundled):
    from base_model.data.synthcaps import example, render_audio

    rows = [example(i, "validation") for i in range(24)]
    ref = torch.from_numpy(np.stack([render_audio(r["attributes"], r["seed"]) for r in rows]))
    p_ref = bundled.probs(ref, 16000).numpy()
    assert kl_divergence(p_ref, p_ref).max() < 1e-9
    g = torch.Generator().manual_seed(0)
    kls = [
        kl_divergence(p_ref, bundled.probs(ref + level * torch.randn(ref.shape, generator=g), 16000).numpy()).mean()
        for level in (0.003, 0.03, 0.3)
    ]
    assert 0 < kls[0] < kls[1] < kls[2], kls


def test_classifier_save_load_and_clear_errors(tmp_path):
    model = SynthCapsClassifier(SynthCapsClassifierConfig(hidden_channels=16, mel_mean=-5.0, mel_std=3.0))
    model.save_pretrained(tmp_path / "cls")
    loaded = load_classifier(f"synthcaps:{tmp_path / 'cls'}")
    mel = torch.randn(2, 80, 40)
    torch.testing.assert_close(loaded.model(mel).logits, model.eval()(mel).logits)
    with pytest.raises(FileNotFoundError, match="train_synthcaps_classifier.py"):
        load_classifier(f"synthcaps:{tmp_path / 'nothing'}")
    with pytest.raises(FileNotFoundError, match="Cnn14_mAP=0.431.pth"):
        load_classifier(f"panns:{tmp_path / 'Cnn14_mAP=0.431.pth'}")
    with pytest.raises(ValueError, match="unknown classifier"):
        load_classifier("vggish")


@pytest.mark.slow
def test_panns_checkpoint_in_the_release_layout(tmp_path):
    """A random Cnn14 saved as the PANNs release saves it ({'model': state_dict}) scores like the model itself."""
    from reward_models.clap import clap_module

    torch.manual_seed(0)
    net = clap_module().pann_model.Cnn14(16000, 512, 160, 64, 50, 8000, 527).eval()
    path = tmp_path / "Cnn14_16k_mAP=0.438.pth"
    torch.save({"model": net.state_dict(), "iteration": 0}, path)
    panns = load_classifier(f"panns:{path}")
    wav = torch.randn(2, 16000) * 0.1
    with torch.inference_mode():
        direct = net({"waveform": wav})
    torch.testing.assert_close(panns.probs(wav, 16000), direct["clipwise_output"])
    torch.testing.assert_close(panns.embed(wav, 16000), direct["embedding"])
    assert panns.probs(wav, 16000).shape == (2, 527) and panns.sample_rate == 16000
    torch.save({"model": {"fc1.weight": torch.zeros(3, 3)}}, tmp_path / "Cnn14_bad.pth")
    with pytest.raises(ValueError, match="does not fit PANNs Cnn14"):
        load_classifier(f"panns:{tmp_path / 'Cnn14_bad.pth'}")
