"""Evaluation: paired by id, reproducible, honest about what it cannot compute, cached by content."""

import csv
import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from rewardflow.embeddings import EmbeddingCache
from rewardflow.evaluate import main, make_parser, paired_interval, verifier_by_attribute
from rewardflow.metrics import frechet_distance

FAST = ["--num_steps", "2", "--num_iterations", "2", "--bootstrap", "200", "--cache_dir", "none"]


def evaluate(*argv):
    (cfg,) = make_parser().parse_args_and_config(args=[*FAST, *argv])
    return main(cfg)


def test_paired_interval_matches_a_direct_computation():
    a, b = np.array([0.1, 0.2, 0.4, np.nan]), np.array([0.3, 0.1, 0.8, 0.5])
    mean, lo, hi = paired_interval(a, b, n=4000)
    assert mean == pytest.approx(np.mean([0.2, -0.1, 0.4]))  # the NaN pair is excluded
    assert -0.1 - 1e-12 <= lo <= mean <= hi <= 0.4 + 1e-12  # within the smallest and largest difference


@pytest.fixture(scope="module")
def clap():
    from reward_models import load_reward

    return load_reward("clap")


@pytest.fixture(scope="module")
def renders():
    from base_model.data.synthcaps import example, render_audio

    return torch.from_numpy(np.stack([render_audio(e["attributes"], e["seed"]) for e in map(example, range(24))]))


def test_verifier_by_attribute_counts_checked_clips_and_bootstraps_over_prompts():
    nan = float("nan")
    keys = [(p, s) for p in range(4) for s in range(2)]
    # "mood" named by prompts 0-1 only; "type" by all four, right on prompts 0 and 2 only
    mood = {0: [1.0, 0.0], 1: [1.0, 1.0], 2: [nan, nan], 3: [nan, nan]}
    scores = {(p, s): {"reward/verifier/mood": mood[p][s], "reward/verifier/type": float(p % 2 == 0)} for p, s in keys}
    out = verifier_by_attribute(scores, keys, n=500)
    assert out["mood"]["checked"] == 4 and out["mood"]["accuracy"] == 0.75
    assert out["type"]["checked"] == 8 and out["type"]["accuracy"] == 0.5
    lo, hi = out["type"]["ci95"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0  # four prompts of 0 or 1: the interval is wide, not a clip-level one
    same = {k: {"reward/verifier/type": 1.0} for k in keys}
    assert verifier_by_attribute(same, keys, n=100)["type"]["ci95"] == [1.0, 1.0]


def test_attribute_differences_are_paired_over_the_prompts_that_name_the_attribute():
    """`_paired` with the verifier's checks: a model right on prompt 0's second clip too gains 0.5 there and 0 on
    prompt 1, so +0.25 over the two prompts naming the attribute, not +0.125 over all four; the default columns
    leave the checks out."""
    from types import SimpleNamespace

    from rewardflow.evaluate import _paired

    nan = float("nan")
    keys = [(p, s) for p in range(4) for s in range(2)]
    first = {0: [1.0, 0.0], 1: [1.0, 1.0], 2: [nan, nan], 3: [nan, nan]}
    later = {0: [1.0, 1.0], 1: [1.0, 1.0], 2: [nan, nan], 3: [nan, nan]}
    per_clip = {
        model: {(p, s): {"reward/verifier": 0.5, "reward/verifier/mood": by[p][s]} for p, s in keys}
        for model, by in (("a", first), ("b", later))
    }
    cfg = SimpleNamespace(models=["a", "b"], num_samples=2, bootstrap=200)
    rows = [{"prompt_id": p} for p in range(4)]
    by_attribute = _paired(cfg, per_clip, keys, rows, keep=lambda c: c.startswith("reward/verifier/"))
    assert by_attribute["b"]["verifier/mood"]["mean"] == 0.25
    assert _paired(cfg, per_clip, keys, rows)["b"] == {"verifier": {"mean": 0.0, "ci95": [0.0, 0.0]}}


def test_fad_is_zero_against_itself_and_grows_with_noise(clap, renders):
    ref = clap.embed_audio(renders, 16000).numpy()
    assert frechet_distance(ref, ref) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    fads = [
        frechet_distance(
            clap.embed_audio(renders + level * torch.randn(renders.shape, generator=g), 16000).numpy(), ref
        )
        for level in (0.003, 0.03, 0.3)
    ]
    assert 0 < fads[0] < fads[1] < fads[2], fads


def test_cache_is_keyed_by_content_not_name(clap, renders, tmp_path):
    cache = EmbeddingCache(clap.embed_audio, "clap:test", tmp_path)
    first = cache.embed(renders[:4], 16000)
    assert cache.computed == 4
    again = EmbeddingCache(clap.embed_audio, "clap:test", tmp_path).embed(renders[:4], 16000)
    np.testing.assert_array_equal(first, again)
    changed = renders[:4].clone()
    changed[2] *= 0.5  # "regenerated audio under the same name"
    cache2 = EmbeddingCache(clap.embed_audio, "clap:test", tmp_path)
    out = cache2.embed(changed, 16000)
    assert cache2.computed == 1 and not np.allclose(out[2], first[2]) and np.array_equal(out[0], first[0])
    other_model = EmbeddingCache(clap.embed_audio, "clap:another-checkpoint", tmp_path)
    other_model.embed(renders[:4], 16000)
    assert other_model.computed == 4


def test_model_against_its_copy_and_best_of(tmp_path, monkeypatch):
    from base_model.pipeline import resolve_pipeline_path
    from reward_models.classifiers import SynthCapsAttributeClassifier

    passes = []  # KL and the classifier's Fréchet distance share one classifier pass per set of clips
    one_pass = SynthCapsAttributeClassifier.probs_and_embed
    monkeypatch.setattr(
        SynthCapsAttributeClassifier,
        "probs_and_embed",
        lambda self, w, sr: passes.append(len(w)) or one_pass(self, w, sr),
    )
    copy = tmp_path / "copy"
    shutil.copytree(resolve_pipeline_path("synthcaps"), copy)  # same weights, generated in a second pass
    out = tmp_path / "eval"
    report = evaluate("--models", "synthcaps", str(copy), "--max_prompts", "4", "--output_dir", str(out))
    assert passes == [4, 4, 4]  # the references, then each model's clips
    assert json.loads((out / "report.json").read_text())["table"] == report["table"]
    assert (out / "report.md").read_text().strip() == report["table"]
    m, c = report["models"]["synthcaps"], report["models"][str(copy)]
    assert 0 <= m["verifier"] <= 1 and math.isfinite(m["fad_clap"]) and m["mel_frechet"] > 0
    assert {k: v for k, v in m.items() if k != "seconds_per_clip"} == {
        k: v for k, v in c.items() if k != "seconds_per_clip"
    }
    for key in ("aesthetics/PQ", "aesthetics/PC", "aesthetics/CE", "aesthetics/CU", "clap", "kl", "degraded"):
        assert math.isfinite(m[key]), key
        assert report["paired_vs_first"][str(copy)][key] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    assert m["kl"] > 0 and m["fd_classifier"] > 0  # generated clips are not their references
    by_attr = report["verifier_by_attribute"]
    assert by_attr["synthcaps"] == by_attr[str(copy)] and by_attr["synthcaps"]["type"]["checked"] == 4  # every clip
    assert all(0 <= v["accuracy"] <= 1 and 1 <= v["checked"] <= 4 for v in by_attr["synthcaps"].values())
    assert all(v["ci95"][0] <= v["accuracy"] <= v["ci95"][1] for v in by_attr["synthcaps"].values())
    # the same weights: every attribute's paired difference is exactly zero, and only the attributes checked appear
    paired = report["paired_by_attribute"][str(copy)]
    assert set(paired) == set(by_attr["synthcaps"]) and "type" in paired
    assert all(v == {"mean": 0.0, "ci95": [0.0, 0.0]} for v in paired.values())
    assert not any(k.startswith("verifier/") for k in report["paired_vs_first"][str(copy)])
    assert "synthcaps-classifier" in report["metric_info"]["kl"]
    assert "synthcaps-classifier" in report["metric_info"]["fd_classifier"]
    assert m["degraded"] in (0, 0.25, 0.5, 0.75, 1) and "degradation" in report["metric_info"]["degraded"]
    assert "laion" in report["metric_info"]["fad_clap"] or "clap" in report["metric_info"]["fad_clap"]
    best = evaluate("--models", "synthcaps", "--max_prompts", "4", "--best_of", "2", "--rerank_reward", "verifier")
    assert best["selection"] == "best-of-2 by verifier" and "best-of-2 by verifier" in best["table"]
    assert best["models"]["synthcaps"]["verifier"] >= m["verifier"]  # candidate 0 is the single sample


def test_degraded_is_the_share_of_clips_whose_most_probable_degradation_is_not_none(monkeypatch):
    """The classifier is made to hear clipping on every other generated clip (and never on a reference): `degraded`
    is the share of those clips, each prompt's mean over its clips is kept for pairing like every other score, and
    `degradation_by_kind` gives each kind's share."""
    from reward_models.classifiers import SynthCapsAttributeClassifier

    one_pass = SynthCapsAttributeClassifier.probs_and_embed
    calls = []

    def hears_clipping(self, w, sr):
        probs, emb = one_pass(self, w, sr)
        none, hiss, clipping, muffled = [i for i, lab in enumerate(self.labels) if lab.startswith("degradation=")]
        probs[:, [hiss, clipping, muffled]], probs[:, none] = 0.1, 0.5
        if calls:  # the first pass is the reference clips'
            probs[1::2, clipping] = 0.9
        calls.append(len(w))
        return probs, emb

    monkeypatch.setattr(SynthCapsAttributeClassifier, "probs_and_embed", hears_clipping)
    report = evaluate("--models", "synthcaps", "--max_prompts", "3", "--num_samples", "2", "--rewards", "clap")
    assert calls == [3, 6] and report["models"]["synthcaps"]["degraded"] == 0.5
    assert report["per_prompt"]["synthcaps"]["degraded"] == [0.5, 0.5, 0.5]  # one of each prompt's two clips
    kinds = {"none": 0.5, "hiss": 0.0, "clipping": 0.5, "muffled": 0.0}
    assert report["degradation_by_kind"] == {"synthcaps": kinds}
    assert not any(k.startswith("degradation/") for k in report["models"]["synthcaps"])  # kinds are not columns


def test_selections_share_candidates_and_report_what_each_run_alone_reports(monkeypatch):
    """Best of 1, 2 and 3 by two rewards from one generation of 3 candidates per clip: each report is the one its own
    `evaluate` run gives (same seeds, same batches; stated tolerance 1e-6), and the shared run calls the pipeline 3
    times per batch where the separate runs call it 1 + 2 + 3 + 3 times."""
    from base_model.pipeline import MaskAudioFlowPipeline
    from rewardflow.evaluate import evaluate_selections

    calls = []
    one_call = MaskAudioFlowPipeline.__call__
    monkeypatch.setattr(
        MaskAudioFlowPipeline, "__call__", lambda self, *a, **k: calls.append(1) or one_call(self, *a, **k)
    )
    args = [*FAST, "--models", "synthcaps", "--max_prompts", "3", "--rewards", "clap", "verifier"]
    (cfg,) = make_parser().parse_args_and_config(args=args)
    selections = [("clap", 1), ("clap", 2), ("verifier", 3), ("clap", 3)]
    shared = evaluate_selections(cfg, selections)
    assert len(calls) == 3 and list(shared) == selections  # one batch of 3 clips, 3 candidates each
    calls.clear()
    for reward, n in selections:
        alone = evaluate(*args, "--rerank_reward", reward, "--best_of", str(n))
        report = shared[(reward, n)]
        assert report["selection"] == alone["selection"] and report["settings"] == alone["settings"]
        assert report["shares_candidates_with"] == [
            f"best-of-{m} by {q}" for q, m in selections if (q, m) != (reward, n)
        ]
        for metric, value in alone["models"]["synthcaps"].items():
            if metric != "seconds_per_clip":
                assert report["models"]["synthcaps"][metric] == pytest.approx(value, rel=1e-6, abs=1e-6), metric
        ids = alone["per_prompt"]["synthcaps"].pop("prompt_ids")
        assert report["per_prompt"]["synthcaps"]["prompt_ids"] == ids
        for metric, value in alone["per_prompt"]["synthcaps"].items():
            assert report["per_prompt"]["synthcaps"][metric] == pytest.approx(value, rel=1e-6, abs=1e-6), metric
    assert len(calls) == 1 + 2 + 3 + 3
    clap = [shared[("clap", n)]["models"]["synthcaps"]["clap"] for n in (1, 2, 3)]
    assert clap == sorted(clap) and clap[2] > clap[0]  # more candidates, a CLAP-best clip at least as good
    with pytest.raises(ValueError, match="--save_audio saves one selection's clips"):
        evaluate_selections(make_parser().parse_args_and_config(args=[*args, "--save_audio", "--output_dir", "x"])[0],
                            selections)  # fmt: skip
    with pytest.raises(ValueError, match="best_of >= 1"):
        evaluate_selections(cfg, [("clap", 0)])


def _caption_table(folder, rows, with_audio=True):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "captions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip_id", "caption"] + (["audio"] if with_audio else []))
        for clip_id, caption, wav in rows:
            if with_audio:
                sf.write(folder / f"{clip_id}.wav", wav, 16000)
            w.writerow([clip_id, caption] + ([f"{clip_id}.wav"] if with_audio else []))
    return folder / "captions.csv"


def test_file_order_changes_no_metric_and_missing_references_say_why(tmp_path, renders):
    from base_model.data.synthcaps import example

    rows = [(f"clip{i}", example(i)["caption"], renders[i].numpy()) for i in range(5)]
    common = ["--models", "synthcaps", "--id_column", "clip_id", "--audio_column", "audio", "--rewards", "clap"]
    common += ["--kl_classifier", "synthcaps"]  # the table's clips are SynthCaps renders
    a = evaluate(*common, "--prompts", str(_caption_table(tmp_path / "a", rows)))
    b = evaluate(*common, "--prompts", str(_caption_table(tmp_path / "b", rows[::-1])))
    ma, mb = a["models"]["synthcaps"], b["models"]["synthcaps"]
    assert "verifier_by_attribute" not in a  # no verifier among --rewards: nothing per attribute
    # Each clip is generated at another batch position, so BLAS may sum in another order (it does on some AMD EPYC
    # machines): the clips agree to float32 round-off, not bitwise. Stated tolerances: 1e-4 relative, and 1e-3 for
    # KL, whose log of near-zero label probabilities magnifies round-off (seen: 1.6e-4).
    for k in ("clap", "fad_clap", "mel_frechet", "kl", "fd_classifier"):
        assert mb[k] == pytest.approx(ma[k], rel=1e-3 if k == "kl" else 1e-4), k
    auto = evaluate(*common[:-2], "--max_prompts", "2", "--prompts", str(tmp_path / "a" / "captions.csv"))
    assert auto["models"]["synthcaps"]["kl"].startswith("n/a: these prompts need an AudioSet classifier")
    no_audio = ["--models", "synthcaps", "--prompts", str(_caption_table(tmp_path / "c", rows, False))]
    c = evaluate(*no_audio, "--rewards", "clap")
    assert c["models"]["synthcaps"]["fad_clap"].startswith("n/a: no reference audio") and "n/a" in c["table"]
    # the verifier needs SynthCaps attributes: refused before any generation, with the fix named
    with pytest.raises(ValueError, match="drop 'verifier' from --rewards"):
        evaluate(*no_audio, "--rewards", "clap", "verifier")


def test_first_prompt_skips_prompts_and_their_reference_clips(tmp_path, renders):
    from base_model.data.synthcaps import example
    from rewardflow.evaluate import EvaluateConfig, load_eval_prompts

    full, ref_full, _ = load_eval_prompts(EvaluateConfig(max_prompts=5))
    tail, ref_tail, _ = load_eval_prompts(EvaluateConfig(max_prompts=3, first_prompt=2))
    assert tail == full[2:] and sorted(ref_tail) == sorted(r["prompt_id"] for r in tail)
    for r in tail:
        np.testing.assert_array_equal(ref_tail[r["prompt_id"]], ref_full[r["prompt_id"]])

    rows = [(f"clip{i}", example(i)["caption"], renders[i].numpy()) for i in range(5)]
    table = str(_caption_table(tmp_path, rows))
    common = {"prompts": table, "id_column": "clip_id", "audio_column": "audio"}
    full, ref_full, _ = load_eval_prompts(EvaluateConfig(max_prompts=5, **common))
    tail, ref_tail, _ = load_eval_prompts(EvaluateConfig(max_prompts=2, first_prompt=3, **common))
    assert [r["prompt_id"] for r in tail] == ["clip3", "clip4"] and tail == full[3:]
    np.testing.assert_array_equal(ref_tail["clip3"], ref_full["clip3"])
    with pytest.raises(ValueError, match="no prompts after --first_prompt 5"):
        load_eval_prompts(EvaluateConfig(max_prompts=0, first_prompt=5, **common))
    with pytest.raises(ValueError, match="gives one clip per model; the Fréchet distances need two or more"):
        EvaluateConfig(max_prompts=1)
    EvaluateConfig(max_prompts=1, num_samples=2)  # two clips of one prompt are enough
    with pytest.raises(ValueError, match="--first_prompt must be >= 0"):
        EvaluateConfig(first_prompt=-1)


def test_derangement_moves_every_clip():
    from rewardflow.metrics import derangement

    for n in (2, 3, 64):
        perm = derangement(n)
        assert sorted(perm.tolist()) == list(range(n)) and (perm != np.arange(n)).all()
