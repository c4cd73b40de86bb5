"""Experiment scripts at toy size: the reward comparison writes one row per run, every metric or an explicit n/a."""

import json

from experiments.compare_rewards import METRICS, CompareArguments, main, plan


def test_plan_puts_the_control_first():
    runs = plan(CompareArguments(rewards=["clap", "aesthetics"], taus=[0.1, 1.0]))
    assert runs[0] == ("control-tau0", "clap", 0.0)
    assert [n for n, _, _ in runs[1:]] == ["clap-tau0.1", "clap-tau1", "aesthetics-tau0.1", "aesthetics-tau1"]


def test_compare_rewards_tiny(tmp_path):

    from rewardflow.rollout import main as rollout_main
    from rewardflow.rollout import make_parser

    ro = tmp_path / "rollout"
    argv = ["--output_dir", str(ro), "--max_prompts", "4", "--num_generations", "2", "--num_iterations", "2"]
    argv += ["--num_steps", "2", "--batch_size", "4", "--rewards", "verifier", "--audio_format", "none"]
    rollout_main(*make_parser().parse_args_and_config(args=argv))
    out = tmp_path / "cmp"
    a = CompareArguments(
        output_dir=str(out),
        rollout=str(ro),
        rewards=["verifier"],
        taus=[1.0, 100.0],  # τ·r up to 100: raw exp weights refused, the row says why
        weighting="exp",
        max_steps=2,
        per_device_train_batch_size=4,
        eval_max_prompts=3,
        num_steps=2,
        results_dir=str(tmp_path / "published"),
    )
    results = main(a)
    assert sorted(p.name for p in (tmp_path / "published").iterdir()) == sorted(
        ["results.json", "tau_ablation.md", "table.md", "tradeoff.png", "training_curves.png"]
    )
    assert list(results["runs"]) == ["base", "control-tau0", "verifier-tau1", "verifier-tau100"]
    rows = [ln for ln in (out / "table.md").read_text().splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert len(rows) == 4
    assert results["runs"]["verifier-tau100"]["clap"].startswith("n/a: not trained: --weighting exp")
    for ln in rows:
        cells = [c.strip() for c in ln.strip("|").split("|")][3:]
        assert len(cells) == len(METRICS) and all(c for c in cells)  # a number or "n/a", never blank
    assert results["runs"]["base"]["kl"] >= 0 and results["runs"]["verifier-tau1"]["fd_classifier"] >= 0
    assert (out / "tradeoff.png").stat().st_size > 0 and (out / "training_curves.png").stat().st_size > 0
    abl = (out / "tau_ablation.md").read_text()
    assert "| none (τ = 0: self-training control) | 0 |" in abl and "| verifier | 1 |" in abl
    agree = results["agreement"]["verifier"]  # the verifier as reward picks exactly the verifier's best samples
    assert agree["top1_gain"] == agree["oracle_gain"] and f"{agree['top1_gain'][0]:+.3f} [" in abl
    assert json.loads((out / "results.json").read_text())["runs"]["control-tau0"]["train"]["weights_ess"] == 1.0


def test_decoding_scaling_tiny(tmp_path):
    from experiments.decoding_scaling import ScalingArguments
    from experiments.decoding_scaling import main as scaling_main

    a = ScalingArguments(
        output_dir=str(tmp_path),
        iterations=[1, 2],
        best_of_budget=2,
        max_prompts=2,
        num_steps=2,
        rerank_reward="verifier",
        results_dir="",  # never overwrite the committed experiments/results/
    )
    rows = scaling_main(a)
    assert list(rows) == [
        "masked, 1 iterations",
        "masked, 2 iterations",
        "masked, best-of-2 by verifier, 1 iterations",
        "CFM baseline, 2 steps",
    ]
    best, single = rows["masked, best-of-2 by verifier, 1 iterations"], rows["masked, 1 iterations"]
    assert best["selection"] == "best-of-2 by verifier" and best["verifier"] >= single["verifier"]
    assert (tmp_path / "scaling.png").stat().st_size > 0 and "| CFM baseline, 2 steps | 2 |" in (
        tmp_path / "table.md"
    ).read_text()


def test_clap_training_pieces():
    """The bundled CLAP's trainer: hard negatives enter the loss, the reduced vocabulary covers every SynthCaps
    caption (counterfactuals too), and the round-trip choice follows its probability."""
    import numpy as np
    import torch

    from experiments.train_synthcaps_clap import (
        AMODEL,
        ClipDataset,
        ContrastiveClap,
        _render,
        _rows,
        counterfactual_captions,
        counterfactual_clips,
        model_config,
        synthcaps_token_ids,
    )
    from reward_models.clap import build_clap, clap_transformer_tokens, token_map

    ids = synthcaps_token_ids(300)
    rows = _rows("heldout", 40) + _rows("validation", 40)
    negatives = counterfactual_captions(rows)
    assert negatives == counterfactual_captions(rows) and negatives != [r["caption"] for r in rows]
    lookup = token_map(ids)
    mapped = lookup[clap_transformer_tokens([r["caption"] for r in rows] + negatives, 32)]
    assert not (mapped == 1).any()  # no unknown token

    torch.manual_seed(0)
    clap, _ = build_clap(model_config(len(ids) + 2), AMODEL + "-test", "transformer")
    model = ContrastiveClap(clap).eval()
    wav = torch.randn(4, 64000) * 0.1
    tokens = mapped[:4]
    with torch.no_grad():
        plain = model(wav, tokens)["loss"]
        hard = model(wav, tokens, mapped[len(rows) : len(rows) + 4])["loss"]
    assert hard > plain  # more columns in the audio-to-text softmax can only raise its cross-entropy
    other = torch.randn(4, 64000) * 0.1
    with torch.no_grad():
        clips = model(wav, tokens, negative_waveform=other, negative_valid=torch.ones(4, dtype=torch.bool))["loss"]
        masked = model(wav, tokens, negative_waveform=other, negative_valid=torch.zeros(4, dtype=torch.bool))["loss"]
    assert clips > plain  # the same for the text-to-audio side's counterfactual clips
    # left-out negatives change nothing (batch norm is in eval mode here, so the extra clips do not either)
    torch.testing.assert_close(masked, plain)

    clean = np.zeros((3, 8), np.float16)
    rt = np.ones((2, 8), np.float16)
    always = ClipDataset(clean, tokens[:3], None, rt, roundtrip_probability=1.0)
    never = ClipDataset(clean, tokens[:3], None, rt, roundtrip_probability=0.0)
    assert [float(always[i]["waveform"][0]) for i in range(3)] == [1.0, 1.0, 0.0]  # only the first 2 have one
    assert all(float(never[i]["waveform"][0]) == 0.0 for i in range(3)) and "negative_tokens" not in never[0]
    # a counterfactual clip stands beside clean clips only
    with_clips = ClipDataset(clean, tokens[:3], None, rt, roundtrip_probability=1.0, negative_wavs=clean + 2)
    assert [bool(with_clips[i]["negative_valid"]) for i in range(3)] == [False, False, True]
    assert float(with_clips[2]["negative_waveform"][0]) == 2.0
    first = counterfactual_clips(rows[:3])
    np.testing.assert_array_equal(first, counterfactual_clips(rows[:3]))  # deterministic in the row ids
    assert first.shape == (3, 64000) and not np.array_equal(first, _render(rows[:3]))


def test_clap_training_with_negative_clips_and_init_from(tmp_path):
    """A tiny run with counterfactual clips, continued by a second run from its folder (the CLAP v3 recipe); a
    folder with another vocabulary is refused."""
    import json

    import pytest

    from experiments.train_synthcaps_clap import main as clap_main
    from experiments.train_synthcaps_clap import make_parser as clap_parser

    def run(out, *extra):
        common = ["--train_examples", "8", "--roundtrip_examples", "0", "--eval_examples", "8", "--max_steps", "2"]
        common += ["--per_device_train_batch_size", "4", "--report_to", "none", "--audio_negatives", "true"]
        return clap_main(*clap_parser().parse_args_and_config(args=["--output_dir", str(out), *common, *extra]))

    first = run(tmp_path / "a")
    assert first["audio_negatives"] and 0 <= first["heldout_audio_counterfactual_accuracy"] <= 1
    second = run(tmp_path / "b", "--init_from", str(tmp_path / "a" / "final"), "--model_id", "synthcaps-clap-v3")
    assert second["init_from"] == str(tmp_path / "a" / "final")
    config = json.loads((tmp_path / "b" / "final" / "clap_config.json").read_text())
    assert config["model_id"] == "synthcaps-clap-v3"
    card = (tmp_path / "b" / "final" / "README.md").read_text()
    assert "counterfactual clip" in card and "CPU cores" in card
    # the recorded command rebuilds the run: non-default batch size and name are in it
    assert "--per_device_train_batch_size 4" in card and "--model_id synthcaps-clap-v3" in card
    # the loader's worker count decides which clips are drawn round-tripped, so a card records it when changed
    from experiments.train_synthcaps_clap import recorded_command

    args, data = clap_parser().parse_args_and_config(
        args=["--output_dir", str(tmp_path / "d"), "--dataloader_num_workers", "6"]
    )
    assert "--dataloader_num_workers 6" in recorded_command(args, data)
    assert "dataloader_num_workers" not in recorded_command(
        *clap_parser().parse_args_and_config(args=["--output_dir", "x"])
    )

    bad = tmp_path / "a" / "final" / "clap_config.json"
    bad.write_text(json.dumps({**json.loads(bad.read_text()), "token_ids": [1, 2, 3]}))
    with pytest.raises(ValueError, match="another text vocabulary"):
        run(tmp_path / "c", "--init_from", str(tmp_path / "a" / "final"))


def test_clap_data_workers_give_the_same_clips(tmp_path):
    """`--workers N` renders and round-trips in N processes; the clips are the ones one process makes."""
    import numpy as np

    from experiments.train_synthcaps_clap import _map, _render, _render_one, _rows, roundtrip

    rows = _rows("train", 6)
    jobs = [(r["attributes"], r["seed"]) for r in rows]
    np.testing.assert_array_equal(np.stack(_map(_render_one, jobs, workers=2, chunksize=2)), _render(rows))
    wavs = _render(rows[:4])
    one = roundtrip(wavs, tmp_path / "one.npy", batch_size=2)
    two = roundtrip(wavs, tmp_path / "two.npy", batch_size=2, workers=2)
    np.testing.assert_array_equal(one, two)
    assert one.shape == wavs.shape and not np.array_equal(one, wavs)
    np.testing.assert_array_equal(np.load(tmp_path / "two.npy"), two)  # cached


def test_clap_measure_only_needs_a_trained_folder(tmp_path):
    import pytest

    from experiments.train_synthcaps_clap import main as clap_main
    from experiments.train_synthcaps_clap import make_parser as clap_parser

    args, data = clap_parser().parse_args_and_config(
        args=["--output_dir", str(tmp_path), "--measure_only", "true", "--report_to", "none"]
    )
    with pytest.raises(FileNotFoundError, match="train it first"):
        clap_main(args, data)


def test_reward_vs_referee_tiny(tmp_path):
    """One tiny rollout, the agreement table, a reward run and the referee run, both splits evaluated; rerun keeps
    every finished piece."""
    from experiments.reward_vs_referee import RefereeArguments
    from experiments.reward_vs_referee import main as referee_main
    from rewardflow.rollout import main as rollout_main
    from rewardflow.rollout import make_parser

    ro = tmp_path / "rollout"
    argv = ["--output_dir", str(ro), "--max_prompts", "4", "--num_generations", "2", "--num_iterations", "2"]
    argv += ["--num_steps", "2", "--batch_size", "8", "--rewards", "verifier", "aesthetics", "--audio_format", "none"]
    rollout_main(*make_parser().parse_args_and_config(args=argv))
    a = RefereeArguments(
        output_dir=str(tmp_path / "out"),
        rollout=str(ro),
        rewards=["aesthetics", "verifier"],
        runs=["aesthetics:standardized", "verifier:topk"],
        top_k=0.5,
        max_steps=2,
        per_device_train_batch_size=4,
        eval_max_prompts=3,
        num_steps=2,
        results_dir=str(tmp_path / "published"),
    )
    results = referee_main(a)
    assert sorted(p.name for p in (tmp_path / "published").iterdir()) == ["results.json", "summary.md"]
    assert results["agreement"]["verifier"]["top1_gain"] == results["agreement"]["verifier"]["oracle_gain"]
    text = (tmp_path / "out" / "summary.md").read_text()
    for split in ("heldout", "validation"):
        assert f"## {split} prompts" in text
        for run in ("aesthetics:standardized", "verifier:topk"):
            d = results["runs"][run][split]["verifier"]
            assert f"| {run} | " in text and f"{d['mean']:+.4f} [{d['ci95'][0]:+.3f}" in text
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("evaluation-*.json")}
    assert len(stamp) == 2
    again = referee_main(a)  # nothing retrained or re-evaluated
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp and again["runs"] == results["runs"]


def test_clap_level_probe_renders_three_levels_and_scores_the_captioned_one(tmp_path):
    """The probe's renders differ only in level (-30 / -20 / -11 dBFS), its summary counts the captioned level, and a
    tiny run writes results.json."""
    import json

    import numpy as np

    from base_model.data.synthcaps import active_rms_db
    from experiments.clap_level_probe import ProbeArguments, main, probe_rows, renders, summarise

    a = ProbeArguments(output_dir=str(tmp_path), num_named=2, num_unnamed=1, results_dir="")
    rows = probe_rows(a)
    assert [r["named"] for r in rows] == [True, True, False] and rows[2]["attributes"]["loudness"] == "normal"
    assert all(any(w in r["caption"].lower().split() for w in ("loud", "quiet", "soft")) for r in rows[:2])
    wavs = renders(rows[:1])
    assert np.allclose([active_rms_db(w) for w in wavs[0]], [-30, -20, -11], atol=1.5)
    # a row is right when its captioned level scores highest; the margin is over the best other level
    fake = [{"attributes": {"loudness": "loud"}, "named": True}, {"attributes": {"loudness": "quiet"}, "named": True}]
    s = summarise(np.array([[0.1, 0.2, 0.5], [0.3, 0.4, 0.1]]), fake)
    assert s["named_level_accuracy"] == 0.5 and s["named_margin_mean"] == round(((0.5 - 0.2) + (0.3 - 0.4)) / 2, 4)
    result = main(a)
    assert json.loads((tmp_path / "results.json").read_text())["clean"] == result["clean"]
    assert result["clean"]["named_count"] == 2 and 0 <= result["clean"]["unnamed_level_accuracy"] <= 1
