"""SynthCaps corpus, the signal-analysis verifier, and the AudioCaps-style loader."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from base_model.data.captions import load_caption_audio
from base_model.data.synthcaps import (
    SynthCapsConfig,
    active_rms_db,
    audio_counterfactual_attributes,
    counterfactual_attributes,
    example,
    is_heldout,
    load_synthcaps,
    render_audio,
)
from reward_models.verifier import SynthCapsVerifier, verify_clip


def test_corpus_is_deterministic_and_json_able():
    a, b = example(7, "train"), example(7, "train")
    assert a == b
    assert json.loads(json.dumps(a["attributes"])) == a["attributes"]
    np.testing.assert_array_equal(render_audio(a["attributes"], a["seed"]), render_audio(b["attributes"], b["seed"]))
    assert example(7, "train", SynthCapsConfig(seed=1)) != a  # the corpus seed matters
    assert example(8, "train") != a


def test_heldout_split_holds_unseen_compositions():
    train = [example(i, "train")["attributes"] for i in range(400)]
    val = [example(i, "validation")["attributes"] for i in range(200)]
    held = [example(i, "heldout")["attributes"] for i in range(200)]
    assert not any(is_heldout(x) for x in train + val)
    assert all(is_heldout(x) for x in held)
    assert len({tuple(sorted(e["type"] for e in x["events"])) for x in held}) >= 3


def test_captions_vary_and_name_the_events():
    rows = [example(i) for i in range(300)]
    assert len({r["caption"] for r in rows}) > 250
    # the template skeletons (event words removed) are many per structure
    for structure in ("single", "sequence", "overlap"):
        caps = [r["caption"].lower() for r in rows if r["attributes"]["structure"] == structure]
        assert len(caps) > 30
    for r in rows[:50]:
        first = r["attributes"]["events"][0]
        word = {
            "tone": ["tone", "hum", "note"],
            "beeps": ["beep"],
            "sweep": ["sweep"],
            "noise": ["noise"],
            "clicks": ["click"],
        }[first["type"]]
        assert any(w in r["caption"].lower() for w in word), r["caption"]


@pytest.mark.parametrize("seconds", [4.0, 10.0])
def test_clip_length_and_level(seconds):
    e = example(3, "train", SynthCapsConfig(seconds=seconds))
    wav = render_audio(e["attributes"], e["seed"], seconds)
    assert wav.shape == (int(seconds * 16000),) and wav.dtype == np.float32
    assert np.abs(wav).max() <= 1.0


def test_dataset_columns_and_lazy_audio():
    ds = load_synthcaps("validation", 5, with_audio=True)
    assert len(ds) == 5 and {"id", "caption", "attributes", "seed", "quality"} <= set(ds.column_names)
    row = ds[2]
    assert len(row["audio"]) == 64000
    assert json.loads(row["attributes"])["structure"] in ("single", "sequence", "overlap")


def test_verifier_accuracy_on_clean_ground_truth():
    per = {}
    n = 0
    for split in ("train", "heldout"):
        for i in range(150):
            e = example(i, split)
            if e["attributes"]["degradation"] != "none":
                continue
            n += 1
            for k, v in verify_clip(render_audio(e["attributes"], e["seed"]), e["attributes"]).items():
                per.setdefault(k.split(".")[-1], []).append(v)
    assert n > 100
    acc = {k: float(np.mean(v)) for k, v in per.items()}
    assert min(acc.values()) >= 0.95, acc


def _visible(attrs: dict) -> dict:
    return {"structure": attrs["structure"], "fade": attrs["fade"], "events": attrs["events"]}


def test_counterfactuals_change_one_visible_attribute():
    changed = {"events": 0, "structure": 0, "fade": 0}
    for split in ("train", "heldout"):
        for i in range(200):
            e = example(i, split)
            a = e["attributes"]
            rng = np.random.default_rng(i)
            c = counterfactual_attributes(a, rng)
            assert a == example(i, split)["attributes"]  # the input is not modified
            assert c == counterfactual_attributes(a, np.random.default_rng(i))  # deterministic in the generator
            assert (c["loudness"], c["degradation"]) == (a["loudness"], a["degradation"])
            assert len(c["events"]) == len(a["events"]) and c != a
            diff = [k for k in _visible(a) if _visible(a)[k] != _visible(c)[k]]
            assert len(diff) == 1, (a, c)
            if diff == ["events"]:
                before, after = a["events"], c["events"]
                n_changed = sum(x != y for x, y in zip(before, after))
                assert n_changed == 1 or (len(before) == 2 and after == before[::-1]), (a, c)
                assert len({ev["type"] for ev in after}) == len(after)  # never two events of one type
            changed[diff[0]] += 1
    assert min(changed.values()) > 20, changed  # every kind of edit happens


def test_audio_counterfactuals_change_one_attribute_and_favour_the_envelope():
    kinds = {"loudness": 0, "fade": 0, "other": 0}
    for i in range(300):
        a = example(i, "train")["attributes"]
        c = audio_counterfactual_attributes(a, np.random.default_rng(i))
        assert c == audio_counterfactual_attributes(a, np.random.default_rng(i)) and c != a
        assert a == example(i, "train")["attributes"]  # the input is not modified
        diff = [k for k in ("structure", "events", "fade", "loudness", "degradation") if a[k] != c[k]]
        assert len(diff) == 1 and diff != ["degradation"], (a, c)
        kinds[diff[0] if diff[0] == "loudness" else ("fade" if diff == ["fade"] else "other")] += 1
    # loudness 1/3, fade 1/3 + a share of the caption-visible edits, the rest 1/3 less that share
    assert 70 < kinds["loudness"] < 130 and kinds["fade"] > kinds["loudness"] and kinds["other"] > 50, kinds
    # the verifier tells the counterfactual clip from the real one
    right, wrong = [], []
    for i in range(40):
        e = example(i, "train")
        a = e["attributes"]
        c = audio_counterfactual_attributes(a, np.random.default_rng(i))
        right.append(np.mean(list(verify_clip(render_audio(a, e["seed"]), a).values())))
        wrong.append(np.mean(list(verify_clip(render_audio(c, e["seed"]), a).values())))
    assert np.mean(right) > np.mean(wrong) + 0.1, (np.mean(right), np.mean(wrong))


def test_verifier_rejects_counterfactual_attributes():
    right, wrong = [], []
    for i in range(60):
        e = example(i, "train")
        if e["attributes"]["degradation"] != "none":
            continue
        wav = render_audio(e["attributes"], e["seed"])
        c = counterfactual_attributes(e["attributes"], np.random.default_rng(i))
        right.append(np.mean(list(verify_clip(wav, e["attributes"]).values())))
        wrong.append(np.mean(list(verify_clip(wav, c).values())))
    assert np.mean(right) > np.mean(wrong) + 0.1, (np.mean(right), np.mean(wrong))


def test_verifier_rejects_the_wrong_prompt():
    e = example(0, "heldout")
    wav = torch.from_numpy(render_audio(e["attributes"], e["seed"]))[None]
    other = dict(e["attributes"], loudness="quiet" if e["attributes"]["loudness"] != "quiet" else "loud")
    v = SynthCapsVerifier()
    right = v(wav, 16000, ["x"], attributes=[e["attributes"]])["verifier"]
    wrong = v(wav, 16000, ["x"], attributes=[other])["verifier"]
    assert right.item() > wrong.item()


def test_verifier_nan_and_errors():
    v = SynthCapsVerifier()
    out = v(torch.zeros(2, 16000), 16000, ["a", "b"], attributes=[None, json.dumps(example(0)["attributes"])])
    assert math.isnan(out["verifier"][0]) and not math.isnan(out["verifier"][1])
    bad = torch.full((1, 16000), float("nan"))
    assert math.isnan(v(bad, 16000, ["a"], attributes=[example(0)["attributes"]])["verifier"][0])
    with pytest.raises(ValueError, match="prompts"):
        v(torch.zeros(2, 100), 16000, ["a"])


def test_active_loudness_definition():
    x = np.zeros(16000)
    x[:1024] = 0.1  # one loud frame, the rest silent: active RMS is that frame's level
    assert abs(active_rms_db(x) - 20 * np.log10(0.1)) < 0.01


def test_caption_table_loader(tmp_path):
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "a.wav", np.sin(2 * np.pi * 440 * t).astype(np.float32), 8000)  # 8 kHz mono
    stereo = np.stack([np.sin(2 * np.pi * 220 * np.arange(44100) / 44100)] * 2, axis=1).astype(np.float32)
    sf.write(tmp_path / "b.flac", stereo, 44100)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    (tmp_path / "captions.csv").write_text(
        "file,text\na.wav,a tone\nb.flac,a low tone\nbroken.wav,broken\nmissing.wav,missing\n"
    )
    corpus = load_caption_audio(str(tmp_path / "captions.csv"), "file", "text", seconds=2.0)
    assert corpus.captions == ["a tone", "a low tone"]
    assert all(a.shape == (32000,) for a in corpus.audio)
    assert corpus.unreadable == ["broken.wav", "missing.wav"]
    assert np.abs(corpus.audio[0][16000:]).max() == 0  # 1 s clip zero-padded to 2 s
    (tmp_path / "c.jsonl").write_text(json.dumps({"audio": "a.wav", "caption": "x"}) + "\n")
    assert load_caption_audio(str(tmp_path / "c.jsonl"), seconds=0.5).captions == ["x"]
    with pytest.raises(ValueError, match="columns are"):
        load_caption_audio(str(tmp_path / "captions.csv"), "audio", "caption")
    with pytest.raises(FileNotFoundError, match="local"):
        load_caption_audio("no-such-org/no-such-dataset-offline")
