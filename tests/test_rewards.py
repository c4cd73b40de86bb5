"""Reward models: checkpoint layouts load exactly, resampling/batching/chunking consistency, bad input, composition."""

import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import gen
from safetensors.torch import save_file

from bundled.train_synthcaps_aesthetics import WAVLM_SMALL
from reward_models import combine_scores, load_reward, parse_reward_spec
from reward_models.aesthetics import AXES, AestheticsReward, build_aesthetics_model
from reward_models.clap import ClapReward, build_clap

SMALL_CLAP = {
    "embed_dim": 512,
    "audio_cfg": {
        "audio_length": 1024,
        "clip_samples": 32000,
        "mel_bins": 64,
        "sample_rate": 16000,
        "window_size": 512,
        "hop_size": 160,
        "fmin": 50,
        "fmax": 8000,
        "class_num": 527,
        "model_type": "PANN",
        "model_name": "Cnn6",
    },
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# the bundled quality predictor's WavLM settings, shrunk: only the sizes differ
SMALL_WAVLM = WAVLM_SMALL | {
    "encoder_layers": 1,
    "encoder_embed_dim": 32,
    "encoder_ffn_embed_dim": 64,
    "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    "conv_pos": 16,
}
AES_CFG = {
    "proj_num_layer": 1,
    "proj_ln": False,
    "proj_act_fn": "gelu",
    "proj_dropout": 0.0,
    "nth_layer": 2,
    "use_weighted_layer_sum": True,
    "precision": "32",
    "normalize_embed": True,
    "output_dim": 1,
    "wavlm_cfg": SMALL_WAVLM,
}
TT = {a: {"mean": 3.0 + i, "std": 0.5 + i / 4} for i, a in enumerate(AXES)}


def tone(freq=440.0, seconds=1.5, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return torch.from_numpy((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32))


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory):
    torch.manual_seed(0)
    model, _ = build_clap(SMALL_CLAP, "TestCLAP-Cnn6", "transformer")
    folder = tmp_path_factory.mktemp("clap")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "clap_config.json").write_text(
        json.dumps(
            {"amodel": "TestCLAP-Cnn6", "tmodel": "transformer", "model_cfg": SMALL_CLAP, "model_id": "test-clap"}
        )
    )
    return folder, model.eval()


@pytest.fixture(scope="module")
def clap(clap_folder):
    return ClapReward(clap_folder[0])


def test_clap_folder_scores_equal_direct_model(clap_folder, clap):
    _, model = clap_folder
    wav = torch.stack([tone(440, 2.0), tone(2000, 2.0)])
    prompts = ["a tone", "a high beep"]
    got = clap(wav, 16000, prompts)["clap"]
    with torch.no_grad():
        a = F.normalize(model.audio_projection(model.audio_branch(wav)["embedding"]), dim=-1)
        from reward_models.clap import clap_module

        tok = clap_module().tokenizer.tokenize(prompts, context_length=77)[:, :16]
        t = F.normalize(model.encode_text(tok, device="cpu"), dim=-1)
    torch.testing.assert_close(got, (a * t).sum(-1), atol=1e-5, rtol=1e-5)
    assert clap.model_id == "test-clap" and len(clap.checkpoint_hash) == 16


def test_checkpoint_hash_names_the_weights_not_the_card(tmp_path):
    """A folder's hash ignores its model card and metrics, and follows its weights and configuration."""
    from reward_models.base import file_hash

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    before = file_hash(tmp_path)
    (tmp_path / "README.md").write_text("# card")
    (tmp_path / "metrics.json").write_text("{}")
    assert file_hash(tmp_path) == before
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert file_hash(tmp_path) != before
    after = file_hash(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    assert file_hash(tmp_path) not in (before, after)
    assert file_hash(tmp_path / "README.md") != file_hash(tmp_path / "metrics.json")  # a file itself is hashed


def test_reduced_vocabulary_folder_maps_tokens_in_order(tmp_path):
    """A folder trained on a reduced vocabulary (`token_ids` in clap_config.json) scores as the model does on the
    mapped tokens; unknown words go to one token; the end-of-text token stays the highest id."""
    from reward_models.clap import clap_module, clap_transformer_tokens, token_map

    kept = sorted(set(clap_transformer_tokens(["a high tone", "a low beep"], 16).flatten().tolist()) - {0})
    lookup = token_map(kept)
    eot = clap_module().tokenizer._tokenizer.encoder["<end_of_text>"]
    assert lookup[0] == 0 and lookup[eot] == len(kept) + 1 == lookup[kept].max()
    assert (lookup[kept[:-1]] < lookup[kept[1:]]).all()  # order kept
    unknown = clap_transformer_tokens(["a zebra"], 16)[0]
    assert 1 in lookup[unknown].tolist()

    cfg = json.loads(json.dumps(SMALL_CLAP))
    cfg["text_cfg"]["vocab_size"] = len(kept) + 2
    torch.manual_seed(0)
    model, _ = build_clap(cfg, "TestCLAP-Cnn6-small-vocab", "transformer")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    meta = {"amodel": "TestCLAP-Cnn6-small-vocab", "tmodel": "transformer", "model_cfg": cfg, "token_ids": kept}
    (tmp_path / "clap_config.json").write_text(json.dumps(meta))
    reward = ClapReward(tmp_path)
    prompts = ["a high tone", "a low zebra"]
    wav = torch.stack([tone(440, 2.0), tone(2000, 2.0)])
    with torch.no_grad():
        a = F.normalize(model.eval().audio_projection(model.audio_branch(wav)["embedding"]), dim=-1)
        t = F.normalize(model.encode_text(lookup[clap_transformer_tokens(prompts, 16)], device="cpu"), dim=-1)
    torch.testing.assert_close(reward(wav, 16000, prompts)["clap"], (a * t).sum(-1), atol=1e-5, rtol=1e-5)


def test_long_prompts_keep_their_end_of_text_token():
    from reward_models.clap import clap_transformer_tokens

    tok = clap_transformer_tokens(["a tone", "a " * 40 + "beep"], 16)
    assert tok.shape == (2, 16)
    assert tok[0].argmax() == 3 and tok[1, -1] == 49407  # short prompt untouched; long one ends in <end_of_text>


def test_clap_long_clips_are_chunked_deterministically(clap):
    long = torch.cat([tone(300, 2.0), tone(3000, 2.0), tone(600, 1.0)])[None]  # 5 s, window 2 s -> 3 chunks
    a = clap(long, 16000, ["a tone"])["clap"]
    b = clap(long, 16000, ["a tone"])["clap"]
    assert torch.equal(a, b)
    windows = clap.embed_audio_windows(long, 16000)[0]
    assert windows.shape[0] == 3
    t = clap.embed_text(["a tone"])[0]
    torch.testing.assert_close(a[0], (windows @ t).mean(), atol=1e-6, rtol=1e-6)
    # a short clip is repeat-padded, so it scores like the clip repeated by hand
    short = tone(440, 0.5)
    torch.testing.assert_close(
        clap(short[None], 16000, ["x"])["clap"],
        clap(short.repeat(4)[None], 16000, ["x"])["clap"],
        atol=1e-5,
        rtol=1e-5,
    )


def test_clap_batch_and_resampling_consistency(clap):
    wavs = torch.stack([tone(200 + 150 * i, 2.0) for i in range(8)])
    prompts = [f"tone {i}" for i in range(8)]
    batch = clap(wavs, 16000, prompts)["clap"]
    one = torch.cat([clap(wavs[i : i + 1], 16000, prompts[i : i + 1])["clap"] for i in range(8)])
    torch.testing.assert_close(batch, one, atol=1e-5, rtol=1e-5)
    ref = clap(tone(440, 2.0, 16000)[None], 16000, ["a"])["clap"]
    for sr in (22050, 44100):
        other = clap(tone(440, 2.0, sr)[None], sr, ["a"])["clap"]
        assert abs(other.item() - ref.item()) < 0.02, (sr, other, ref)


def test_clap_bad_input(clap, tmp_path):
    out = clap(
        torch.stack([tone(), torch.full_like(tone(), float("nan")), torch.zeros_like(tone())]),
        16000,
        ["a", "b", "   "],
    )["clap"]
    assert math.isfinite(out[0]) and math.isnan(out[1]) and math.isnan(out[2])  # NaN audio, empty prompt
    assert math.isfinite(clap(torch.zeros(1, 16000), 16000, ["silence"])["clap"][0])  # silence is scored
    with pytest.raises(ValueError, match="prompts"):
        clap(torch.zeros(2, 100), 16000, ["a"])
    with pytest.raises(FileNotFoundError, match="630k-audioset-best"):
        ClapReward(tmp_path / "missing.pt")
    fake = tmp_path / "630k-audioset-best.pt"
    torch.save({"state_dict": {}}, fake)
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        ClapReward(fake, roberta_path=tmp_path)


def _aes_expected(model, wav):
    """The package's inference, restated: 10 s windows (one here), mask, de-normalise."""
    W = 160000
    x = F.pad(wav, (0, W - wav.shape[-1]))[:, None]
    m = torch.zeros_like(x, dtype=torch.bool)
    m[..., : wav.shape[-1]] = True
    with torch.no_grad():
        out = model({"wav": x, "mask": m})
    return {a: out[a] * TT[a]["std"] + TT[a]["mean"] for a in AXES}


@pytest.mark.parametrize("layout", ["checkpoint.pt", "hub_folder"])
def test_aesthetics_layouts_score_like_the_model(tmp_path, layout):
    torch.manual_seed(0)
    model = build_aesthetics_model(AES_CFG, TT).eval()
    if layout == "checkpoint.pt":
        path = tmp_path / "checkpoint.pt"
        torch.save(
            {
                "model_cfg": AES_CFG,
                "target_transform": TT,
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            },
            path,
        )
    else:
        path = tmp_path / "hub"
        path.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps({**AES_CFG, "target_transform": TT}))
    reward = AestheticsReward(path)
    wav = torch.stack([tone(300), tone(3000)])
    got = reward(wav, 16000, ["", ""])
    exp = _aes_expected(model, wav)
    for a in AXES:
        torch.testing.assert_close(got[f"aesthetics/{a}"], exp[a], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["aesthetics"], sum(exp[a] for a in AXES) / 4, atol=1e-4, rtol=1e-4)
    weighted = AestheticsReward(path, axis_weights={"PQ": 1.0})(wav, 16000, ["", ""])["aesthetics"]
    torch.testing.assert_close(weighted, exp["PQ"], atol=1e-4, rtol=1e-4)


def test_aesthetics_windows_and_bad_input(tmp_path):
    torch.manual_seed(0)
    model = build_aesthetics_model(AES_CFG, TT).eval()
    path = tmp_path / "hub"
    path.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({**AES_CFG, "target_transform": TT}))
    reward = AestheticsReward(path)
    long = torch.cat([tone(300, 10.0), tone(3000, 5.0)])[None]  # 15 s: a full window and a half window
    got = reward(long, 16000, [""])["aesthetics/PQ"]
    first, second = _aes_expected(model, long[:, :160000])["PQ"], _aes_expected(model, long[:, 160000:])["PQ"]
    torch.testing.assert_close(got, (first * 1.0 + second * 0.5) / 1.5, atol=1e-4, rtol=1e-4)
    ref = reward(tone(440, 1.5, 16000)[None], 16000, [""])["aesthetics"]
    assert abs(reward(tone(440, 1.5, 44100)[None], 44100, [""])["aesthetics"].item() - ref.item()) < 0.05
    with pytest.raises(ValueError, match="axes"):
        AestheticsReward(path, axis_weights={"XX": 1.0})
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="model_cfg"):
        AestheticsReward(bad)


def test_composition_and_user_rewards(tmp_path, monkeypatch):
    assert parse_reward_spec("clap:1,aesthetics:0.5") == [("clap", 1.0), ("aesthetics", 0.5)]
    assert parse_reward_spec("mypkg.rewards:loudness:2") == [("mypkg.rewards:loudness", 2.0)]
    assert parse_reward_spec("aesthetics/PQ") == [("aesthetics/PQ", 1.0)]
    s = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([5.0, 5.0, float("nan")])}
    torch.testing.assert_close(combine_scores(s, [("a", 2.0), ("b", 1.0)])[:2], torch.tensor([7.0, 9.0]))
    assert math.isnan(combine_scores(s, [("a", 1.0), ("b", 1.0)])[2])
    z = combine_scores({"a": torch.tensor([1.0, 3.0]), "c": torch.tensor([4.0, 4.0])}, [("a", 1), ("c", 1)], True)
    torch.testing.assert_close(z, torch.tensor([-1 / math.sqrt(2), 1 / math.sqrt(2)]))  # constant column adds 0
    (tmp_path / "myrewards.py").write_text(
        "import torch\n"
        "def loudness(waveforms, sample_rate, prompts, **kw):\n    return waveforms.pow(2).mean(1)\n"
        "def broken(waveforms, sample_rate, prompts, **kw):\n    return torch.zeros(1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    r = load_reward("myrewards:loudness")
    wav = torch.stack([tone(), 2 * tone()])
    out = r(wav, 16000, ["a", "b"])["loudness"]
    torch.testing.assert_close(out[1] / out[0], torch.tensor(4.0))
    comp = load_reward("myrewards:loudness:1,verifier:0")
    assert "reward" in comp(wav, 16000, ["a", "b"])
    with pytest.raises(ValueError, match="expected"):
        load_reward("myrewards:broken")(wav, 16000, ["a", "b"])
    with pytest.raises(ValueError, match="Unknown reward"):
        load_reward("bleu")


@pytest.mark.slow
def test_real_size_architectures_time_per_clip():
    """HTSAT-tiny + RoBERTa-base-sized CLAP and the full WavLM aesthetics model, random weights, a few 10 s clips."""
    from transformers import RobertaConfig

    from reward_models.clap import _local_roberta, clap_module

    wav = torch.randn(4, 160000, generator=gen()) * 0.1
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        RobertaConfig().save_pretrained(d)
        with _local_roberta(Path(d)):
            model, _ = clap_module().factory.create_model("HTSAT-tiny", "roberta", pretrained="")
    start = time.perf_counter()
    with torch.no_grad():
        wav48 = torch.nn.functional.interpolate(wav[:, None], scale_factor=3)[:, 0]
        model.encode_audio({"waveform": wav48[:, :480000], "longer": torch.zeros(4, dtype=torch.bool)}, "cpu")
    clap_s = (time.perf_counter() - start) / 4
    aes = build_aesthetics_model({k: v for k, v in AES_CFG.items() if k != "wavlm_cfg"} | {"nth_layer": 13}, TT).eval()
    start = time.perf_counter()
    with torch.no_grad():
        aes({"wav": wav[:, None], "mask": torch.ones(4, 1, 160000, dtype=torch.bool)})
    aes_s = (time.perf_counter() - start) / 4
    print(f"\nreal-size HTSAT-tiny audio tower: {clap_s:.2f} s/clip; WavLM-base aesthetics: {aes_s:.2f} s/clip (CPU)")
    assert clap_s > 0 and aes_s > 0


@pytest.mark.slow
def test_published_clap_pt_layout_scores_equal_direct_model(tmp_path):
    """A randomly initialised HTSAT-tiny + RoBERTa CLAP saved as laion-clap's .pt (module. prefixes, the stale
    position_ids key) loads through the published path and scores like the model called directly."""
    from transformers import RobertaConfig, RobertaTokenizer

    from reward_models.clap import _local_roberta, clap_module

    rob = tmp_path / "roberta"
    rob.mkdir()
    RobertaConfig(num_hidden_layers=1).save_pretrained(rob)
    vocab = {
        "<s>": 0,
        "<pad>": 1,
        "</s>": 2,
        "<unk>": 3,
        **{c: 4 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")},
    }
    (rob / "vocab.json").write_text(json.dumps(vocab))
    (rob / "merges.txt").write_text("#version: 0.2\n")
    torch.manual_seed(0)
    with _local_roberta(rob):
        model, _ = clap_module().factory.create_model("HTSAT-tiny", "roberta", pretrained="")
    model.eval()
    state = {f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514)[None]
    pt = tmp_path / "630k-audioset-best.pt"
    torch.save({"state_dict": state, "epoch": 1}, pt)
    reward = ClapReward(pt, roberta_path=rob)
    wav = torch.randn(2, 48000 * 3, generator=gen()) * 0.1
    got = reward(wav, 48000, ["a dog", "rain"])["clap"]
    tok = RobertaTokenizer.from_pretrained(str(rob))(
        ["a dog", "rain"], padding="max_length", truncation=True, max_length=77, return_tensors="pt"
    )
    with torch.no_grad():
        t = F.normalize(model.encode_text(dict(tok), device="cpu"), dim=-1)
        padded = wav.repeat(1, 4)[:, :480000]  # repeatpad to the 10 s window
        a = model.encode_audio({"waveform": padded, "longer": torch.zeros(2, dtype=torch.bool)}, "cpu")["embedding"]
        a = F.normalize(model.audio_projection(a), dim=-1)
    torch.testing.assert_close(got, (a * t).sum(-1), atol=1e-4, rtol=1e-4)
