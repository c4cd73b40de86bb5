"""Every table of figures in README.md and experiments/README.md equals its rendering from the committed JSON."""

import json

import pytest

from experiments import render_results


def test_committed_documents_equal_their_rendering():
    assert render_results.main(["--check"]) == 0


VOCODER = {
    "settings": {"batch_size": 16, "default_vocoder": {"n_iter": 16, "nnls_iter": 32}},
    "seconds_per_batch": {"librosa": 8.0, "torch": 0.5, "default": 0.4},
    "speedup_vs_librosa": 16.0,
    "default_speedup_vs_librosa": 20.0,
    "spectral_convergence": {"librosa": 0.42, "torch": 0.38, "default": 0.37},
    "verifier_round_trip": {
        "real_audio": {"verifier": 0.94},
        "librosa": {"verifier": 0.94},
        "torch": {"verifier": 0.95},
        "default": {"verifier": 0.95},
    },
    "sweep": [],
}


def test_a_changed_number_is_caught(tmp_path, monkeypatch):
    src = tmp_path / "vocoder.json"
    real = dict(VOCODER)
    monkeypatch.setattr(render_results, "BENCH", tmp_path)
    src.write_text(json.dumps(real))
    doc = "x\n<!-- table:vocoder -->\nold\n<!-- /table:vocoder -->\ny\n"
    first = render_results.render(doc)
    assert "old" not in first and str(real["speedup_vs_librosa"]) in first
    real["speedup_vs_librosa"] = 123.45
    src.write_text(json.dumps(real))
    assert render_results.render(first) != first and "123.45" in render_results.render(first)


def test_unknown_tables_and_missing_sources_are_errors(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="no renderer"):
        render_results.render("<!-- table:nope -->\n<!-- /table:nope -->")
    monkeypatch.setattr(render_results, "BENCH", tmp_path)
    with pytest.raises(FileNotFoundError, match="vocoder.json is missing"):
        render_results.render("<!-- table:vocoder -->\n<!-- /table:vocoder -->")
    with pytest.raises(ValueError, match="by='prompts': 'rollout' or 'evaluation'"):
        render_results.rollout_guidance(by="prompts")  # refused before any file is read


def test_a_share_of_a_loss_is_not_reported_as_a_share():
    assert render_results._share(0.02, 0.04) == "0.50"
    # the oracle below its control: a ratio of two losses (-0.016 / -0.010) is not a share of a gain
    assert render_results._share(-0.016, -0.010) == "n/a"
    assert render_results._share(0.01, 0.0) == "n/a"


def test_topk_labels_follow_the_study_settings():
    assert render_results._kept({"num_generations": 8, "top_k": 0.125}) == "best of 8"
    assert render_results._kept({"num_generations": 6, "top_k": 1 / 3}) == "best 2 of 6"
    assert render_results._kept({"num_generations": 4}) == "best of 4"  # records made before --top_k


def test_generator_seeds_pairs_a_further_setting_by_prompt_and_refuses_other_prompts(tmp_path, monkeypatch):
    """The masked model at another setting is set against the first report prompt by prompt; a report made on other
    prompts is refused rather than paired."""
    first = json.loads((render_results.RESULTS / "generator" / "eight_seeds.json").read_text())
    model = first["settings"]["models"][0]
    more = json.loads(json.dumps(first))
    more["settings"] |= {"models": [model], "num_iterations": 16}
    more["per_prompt"][model]["verifier"] = [v + 0.1 for v in first["per_prompt"][model]["verifier"]]
    (tmp_path / "generator").mkdir()
    (tmp_path / "generator" / "a.json").write_text(json.dumps(first))
    (tmp_path / "generator" / "b.json").write_text(json.dumps(more))
    monkeypatch.setattr(render_results, "RESULTS", tmp_path)
    table = render_results.generator_seeds("a.json", ("b.json",))
    assert "| 16 − 8 iterations, paired | **+0.100 [+0.100, +0.100]** |" in table
    more["per_prompt"][model]["prompt_ids"] = more["per_prompt"][model]["prompt_ids"][::-1]
    (tmp_path / "generator" / "b.json").write_text(json.dumps(more))
    with pytest.raises(ValueError, match="b.json was not evaluated on a.json's prompts"):
        render_results.generator_seeds("a.json", ("b.json",))


def test_real_clips_names_the_fine_tune_seed_when_the_record_has_one(tmp_path, monkeypatch):
    """Records made before `--seed` existed were trained at seed 0 and are labelled as before; later ones say it."""
    record = json.loads((render_results.RESULTS / "alignment" / "real_clips_heldout_seed1.json").read_text())
    (tmp_path / "alignment").mkdir()
    monkeypatch.setattr(render_results, "RESULTS", tmp_path)
    (tmp_path / "alignment" / "r.json").write_text(json.dumps(record))
    table = render_results.real_clips("r.json")
    assert "| tuned on real renders (verifier 0.96), fine-tune seed 1 |" in table
    assert "- tuned on real renders, fine-tune seed 0: type " in table  # each attribute's paired change, per model
    del record["settings"]["seed"]
    del record["evaluations"]["heldout"]["paired_by_attribute"]  # as in records made before evaluate.py kept it
    (tmp_path / "alignment" / "r.json").write_text(json.dumps(record))
    table = render_results.real_clips("r.json")
    assert "| tuned on real renders (verifier 0.96) |" in table and "fine-tune seed 1" not in table
    assert "paired by prompt" not in table
