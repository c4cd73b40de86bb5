"""SynthMusic: the corpus is a function of (seed, split, index), its captions name what its audio carries, and its
verifier reads those attributes back from real renders and refuses wrong ones."""

import json
import re

import numpy as np
import pytest
import torch

from base_model.data.synthmusic import (
    HELDOUT_COMBINATIONS,
    SAMPLE_RATE,
    example,
    is_heldout,
    load_synthmusic,
    note_events,
    render_audio,
)
from reward_models import load_reward
from reward_models.music_verifier import verify_clip


def test_examples_are_deterministic_and_splits_hold_out_combinations():
    assert example(3, "train") == example(3, "train") and example(3, "train") != example(4, "train")
    assert all(not is_heldout(example(i, "train")["attributes"]) for i in range(200))
    held = [example(i, "heldout")["attributes"] for i in range(30)]
    assert all((a["timbre"], a["tempo"], a["mode"]) in HELDOUT_COMBINATIONS for a in held)
    with pytest.raises(ValueError, match="splits|split"):
        example(0, "test")


def test_captions_name_mode_and_key_when_told():
    for i in range(60):
        e = example(i)
        a, c = e["attributes"], e["caption"].lower()
        assert a["mode"] in c
        named = re.search(rf"\b{re.escape(a['key'].lower())} {a['mode']}", c) is not None
        assert named == a["key_named"], c
        assert ("bass" in c) == (a["parts"] == 2), c
        assert not c.startswith("a a ") and " a a" not in c, c


def test_render_is_deterministic_and_follows_its_notes():
    e = example(0)
    x = render_audio(e["attributes"], e["seed"])
    assert x.dtype == np.float32 and x.shape == (4 * SAMPLE_RATE,) and np.isfinite(x).all()
    assert np.array_equal(x, render_audio(e["attributes"], e["seed"])) and np.abs(x).max() <= 1.0
    notes = note_events(e["attributes"], 4.0, np.random.default_rng(e["seed"]))
    assert notes[-1][0] + notes[-1][1] <= 4.0 + 1e-9  # the closing tonic is whole


def test_verifier_reads_real_renders():
    """Every attribute on 24 real clips of both splits, read back at >= 0.9 each (measured: >= 0.99 on 200)."""
    rows = [example(i, s) for s in ("train", "heldout") for i in range(12)]
    checks = [verify_clip(render_audio(r["attributes"], r["seed"]), r["attributes"]) for r in rows]
    for key in ("tempo", "rhythm", "mode", "timbre", "dynamics", "parts", "key"):
        vals = [c[key] for c in checks if key in c]
        assert vals and np.mean(vals) >= 0.9, (key, np.mean(vals))


def test_verifier_refuses_wrong_attributes():
    """The same audio against a caption that changes one attribute fails that attribute."""
    swaps = {"tempo": {"slow": "fast", "moderate": "slow", "fast": "slow"}, "mode": {"major": "minor", "minor": "major"},
             "timbre": {"plucked": "flute", "organ": "brass", "flute": "organ", "brass": "plucked"},
             "rhythm": {"steady": "dotted", "dotted": "steady"}, "parts": {1: 2, 2: 1}}  # fmt: skip
    for i in range(8):
        r = example(i)
        audio = render_audio(r["attributes"], r["seed"])
        for key, swap in swaps.items():
            wrong = {**r["attributes"], key: swap[r["attributes"][key]]}
            assert not verify_clip(audio, wrong)[key], (i, key)


def test_reward_interface_and_prompts():
    from rewardflow.prompts import load_prompts

    prompts = load_prompts("synthmusic:heldout", 2)
    assert [p["prompt_id"] for p in prompts] == ["synthmusic-heldout-000000", "synthmusic-heldout-000001"]
    attrs = [json.loads(p["attributes"]) for p in prompts]
    wav = torch.from_numpy(np.stack([render_audio(a, 0) for a in attrs]))
    v = load_reward("music_verifier")
    scores = v(torch.cat([wav, wav[:1]]), 16000, [p["prompt"] for p in prompts] + ["no attributes"],
               attributes=[*attrs, None])  # fmt: skip
    assert scores["verifier"][:2].min() >= 0.8 and torch.isnan(scores["verifier"][2])
    assert set(scores) == set(v.names)
    with pytest.raises(ValueError, match="SynthMusic has the splits"):
        load_prompts("synthmusic:nope", 2)
    assert load_synthmusic("validation", 3).column_names == ["id", "caption", "attributes", "seed"]


def test_music_caption_tables_load_by_path(tmp_path):
    """LP-MusicCaps- and MusicCaps-shaped tables (their own column names) are prompts by path."""
    import pandas as pd

    from rewardflow.prompts import load_prompts

    lp = tmp_path / "lp_musiccaps.csv"
    pd.DataFrame({"track_id": ["TRAAA", "TRBBB"], "caption_writing": ["A mellow jazz piano trio.", "Loud rock."],
                  "caption_summary": ["jazz", "rock"]}).to_csv(lp, index=False)  # fmt: skip
    rows = load_prompts(str(lp), caption_column="caption_writing", id_column="track_id")
    assert [(r["prompt_id"], r["prompt"]) for r in rows] == [("TRAAA", "A mellow jazz piano trio."),
                                                             ("TRBBB", "Loud rock.")]  # fmt: skip
    mc = tmp_path / "musiccaps.jsonl"
    mc.write_text('{"ytid": "-0Gj8-vB1q4", "caption": "An upbeat pop song.", "aspect_list": "[\'pop\']"}\n')
    assert load_prompts(str(mc), id_column="ytid")[0]["prompt"] == "An upbeat pop song."
    with pytest.raises(ValueError, match="--caption_column"):
        load_prompts(str(lp), caption_column="caption")


def test_training_corpus_takes_synthmusic(tmp_path):
    """`--dataset synthmusic` gives the VAE and flow trainers SynthMusic's clips and captions, cached apart from
    SynthCaps' under the same settings."""
    from base_model.data.synthmusic import example, render_audio
    from base_model.mel import MelSpectrogram
    from base_model.train_vae import CorpusArguments, corpus_mels

    data = CorpusArguments(dataset="synthmusic", clip_seconds=1.0, cache_dir=str(tmp_path))
    mels, captions, rows = corpus_mels(data, "validation", 3, 4)
    want = [example(i, "validation") for i in range(3)]
    assert captions == [r["caption"] for r in want] and [r["id"] for r in rows] == [r["id"] for r in want]
    assert mels.shape[0] == 3 and mels.shape[-1] % 4 == 0
    first = render_audio(want[0]["attributes"], want[0]["seed"], 1.0)
    direct = MelSpectrogram()(torch.from_numpy(first[None])).numpy()[..., : mels.shape[-1]]
    np.testing.assert_allclose(mels[0].astype(np.float32), direct[0], atol=2e-2)  # float16 cache
    assert [p.name.split("-")[0] for p in tmp_path.glob("*.npz")] == ["synthmusic"]
    again, _, _ = corpus_mels(data, "validation", 3, 4)  # read back from the cache
    np.testing.assert_array_equal(again, mels)
    caps = corpus_mels(CorpusArguments(clip_seconds=1.0, cache_dir=str(tmp_path)), "validation", 3, 4)[1]
    assert caps != captions and len(list(tmp_path.glob("*.npz"))) == 2


def test_verifiers_are_refused_on_the_other_corpus_before_any_work():
    from rewardflow.prompts import load_prompts
    from rewardflow.scoring import check_rewards_apply

    music, caps = load_prompts("synthmusic:heldout", 2), load_prompts("synthcaps:heldout", 2)
    check_rewards_apply(["clap", "music_verifier"], music)
    check_rewards_apply(["verifier"], caps)
    with pytest.raises(ValueError, match="--rewards verifier .* music_verifier for these synthmusic prompts"):
        check_rewards_apply(["clap", "verifier"], music)
    with pytest.raises(ValueError, match="--rewards music_verifier .* verifier for these synthcaps prompts"):
        check_rewards_apply(["music_verifier"], caps)
    table = [{**p, "attributes": ""} for p in caps]
    with pytest.raises(ValueError, match="drop 'music_verifier' from --rewards"):
        check_rewards_apply(["music_verifier"], table)


def test_one_registry_names_every_procedural_corpus():
    """Prompt sources and prompt rows are recognised by `base_model.data`'s registry alone: every corpus's own rows
    map back to it, a caption table to none, and attributes of no known corpus are an error, not a guess."""
    from base_model.data import PROCEDURAL, corpus_of_attributes, corpus_of_source
    from rewardflow.prompts import load_prompts

    assert set(PROCEDURAL) == {"synthcaps", "synthmusic"}
    for key, corpus in PROCEDURAL.items():
        assert corpus_of_source(f"{key}:heldout") is corpus
        assert {corpus_of_attributes(p["attributes"]) for p in load_prompts(f"{key}:train", 8)} == {corpus}
        with pytest.raises(ValueError, match=f"{corpus.name} has the splits"):
            load_prompts(f"{key}:nosuchsplit", 1)
    assert corpus_of_source("captions.csv") is None and corpus_of_source("audiocaps:test") is None
    assert corpus_of_attributes("") is None
    with pytest.raises(ValueError, match="belong to no procedural corpus"):
        corpus_of_attributes({"colour": "red"})


def test_music_classifier_labels_and_evaluation_on_music_prompts(tmp_path):
    """SynthMusic prompts in `evaluate`: each prompt's reference is its own render, KL comes from the bundled
    SynthMusic classifier (a clip against its own reference scores ~0, against another prompt's more), and the music
    verifier's attributes are reported."""
    from reward_models.classifiers import load_classifier, synthmusic_labels, synthmusic_targets
    from rewardflow.evaluate import EvaluateConfig, evaluate, load_eval_prompts

    labels = synthmusic_labels()
    assert len(labels) == len(set(labels)) == 30
    attrs = [example(i, "heldout")["attributes"] for i in range(6)]
    assert all(synthmusic_targets(a, labels).sum() == 7 for a in attrs)
    with pytest.raises(ValueError, match="not among the classifier's labels"):
        synthmusic_targets({**attrs[0], "timbre": "kazoo"}, labels)
    cfg = EvaluateConfig(models=["synthcaps"], prompts="synthmusic:heldout", max_prompts=6, first_prompt=2)
    rows, reference, why = load_eval_prompts(cfg)
    assert why == "" and [r["prompt_id"] for r in rows] == list(reference)
    ex = example(2, "heldout")
    assert np.array_equal(reference[ex["id"]], render_audio(ex["attributes"], ex["seed"]))
    clf = load_classifier("synthmusic")
    assert clf.labels == labels and clf.model_id == "synthmusic-classifier"
    probs = clf.probs(torch.from_numpy(np.stack(list(reference.values()))), 16000).numpy()
    truth = np.stack([synthmusic_targets(json.loads(r["attributes"]), labels) for r in rows])
    assert ((probs > 0.5) == truth).mean() > 0.9  # it reads real renders' labels
    report = evaluate(
        EvaluateConfig(models=["synthcaps"], prompts="synthmusic:heldout", max_prompts=2, first_prompt=2,
                       rewards=["music_verifier"], output_json=str(tmp_path / "r.json"), cache_dir="none")
    )  # fmt: skip
    m = report["models"]["synthcaps"]
    assert 0 <= m["verifier"] <= 1 and m["kl"] > 0 and "synthmusic-classifier" in report["metric_info"]["kl"]
    assert "degraded" not in m and "degraded" not in report["metric_info"]  # music renders carry no degradation
    assert set(report["verifier_by_attribute"]["synthcaps"]) >= {"tempo", "mode", "timbre"}
