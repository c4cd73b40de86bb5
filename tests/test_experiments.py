"""Experiment scripts at toy size: each writes its result with every figure or an explicit n/a."""

import dataclasses
import json
import math

import pytest


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

    from bundled.train_synthcaps_clap import (
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

    from bundled.train_synthcaps_clap import main as clap_main
    from bundled.train_synthcaps_clap import make_parser as clap_parser

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
    from bundled.train_synthcaps_clap import recorded_command

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

    from bundled.train_synthcaps_clap import _map, _render, _render_one, _rows, roundtrip

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

    from bundled.train_synthcaps_clap import main as clap_main
    from bundled.train_synthcaps_clap import make_parser as clap_parser

    args, data = clap_parser().parse_args_and_config(
        args=["--output_dir", str(tmp_path), "--measure_only", "true", "--report_to", "none"]
    )
    with pytest.raises(FileNotFoundError, match="train it first"):
        clap_main(args, data)


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


def test_masking_ablation_tiny(tmp_path):
    from experiments.masking_ablation import AblationArguments, configurations
    from experiments.masking_ablation import main as ablation_main

    a = AblationArguments(output_dir=str(tmp_path / "abl"), results_dir=str(tmp_path / "published"), ratios=[0.6],
                          spans=[1, 4], max_steps=2, train_examples=16, eval_prompts=3, hidden_size=32, num_layers=1,
                          parallel=False)  # fmt: skip
    assert [r["name"] for r in configurations(a)] == ["p0.6-l1", "p0.6-l4", "pcos-l4"]
    result = ablation_main(a)
    assert result["reference"] == "p0.6-l4" and set(result["runs"]) == {"p0.6-l1", "p0.6-l4", "pcos-l4"}
    for name, row in result["runs"].items():
        assert 0 <= row["verifier"] <= 1 and row["mel_frechet"] >= 0 and row["train"]["steps"] == 2
        assert (row["verifier_vs_reference"] is None) == (name == "p0.6-l4")  # the reference has no difference
    assert json.loads((tmp_path / "published" / "results.json").read_text())["runs"] == result["runs"]


def test_head_ablation_pairs_each_attribute_over_the_prompts_that_name_it():
    import numpy as np

    from experiments.head_ablation import paired

    nan = float("nan")
    this = {"verifier": np.array([0.5, 1.0, 0.0]), "tempo": np.array([1.0, nan, 0.0]), "colour": np.full(3, nan)}
    ref = {"verifier": np.array([0.25, 0.5, 0.0]), "tempo": np.array([0.0, nan, 0.0]), "colour": np.full(3, nan)}
    d = paired(this, ref)
    assert set(d) == {"verifier", "tempo"}  # no prompt names a colour: no difference, not a NaN
    assert d["verifier"]["prompts"] == 3 and d["verifier"]["mean"] == pytest.approx(0.25)
    assert d["tempo"]["prompts"] == 2 and d["tempo"]["mean"] == pytest.approx(0.5)
    assert d["tempo"]["low"] <= d["tempo"]["mean"] <= d["tempo"]["high"]


@pytest.mark.slow
def test_head_ablation_tiny(tmp_path, monkeypatch):
    from experiments import render_results
    from experiments.head_ablation import HeadAblationArguments, main

    a = HeadAblationArguments(output_dir=str(tmp_path / "abl"), results_dir=str(tmp_path / "results" / "head_ablation"),
                              max_steps=2, train_examples=16, eval_prompts=3, hidden_size=32, num_layers=1,
                              num_steps=2, parallel=False)  # fmt: skip
    result = main(a)
    runs = result["runs"]
    assert list(runs) == ["masked-mlp", "masked-transformer", "cfm"] and result["reference"] == "masked-mlp"
    assert [r["decoding_iterations"] for r in runs.values()] == [8, 8, 1]
    assert runs["masked-transformer"]["parameters"] > runs["masked-mlp"]["parameters"]
    assert all(r["train"]["steps"] == 2 and 0 <= r["verifier"] <= 1 for r in runs.values())
    assert "vs_reference" not in runs["masked-mlp"] and runs["cfm"]["vs_reference"]["verifier"]["prompts"] == 3
    published = json.loads((tmp_path / "results" / "head_ablation" / "results.json").read_text())
    assert published["runs"] == json.loads(json.dumps(runs))
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    table = render_results.head_ablation()
    assert "MaskAudioFlow, transformer head" in table and "Each: 2 steps, 32 wide × 1 layers" in table


def test_alignment_study_tau_weightings_pick_the_safer_runs():
    """`--tau_weightings` names which safer weightings run beside exp(τ·r) (`none`: only the τ values, the control
    and top-k), `--safer_tau` their τ (named in the run when not 1); bad values are refused with the flag before
    anything runs."""
    from experiments.alignment_study import SAFER_WEIGHTINGS, StudyArguments, needed, runs

    every = needed(StudyArguments(questions=["tau"]))
    assert [n for n in every if n.removeprefix("clap-") in SAFER_WEIGHTINGS] == [f"clap-{w}" for w in SAFER_WEIGHTINGS]
    only = needed(StudyArguments(questions=["tau"], tau_weightings=["none"]))
    assert only == ["control", "clap-topk", "clap-exp-tau0.1", "clap-exp-tau1", "clap-exp-tau10"]
    assert needed(StudyArguments(questions=["tau"], tau_weightings=["advantage"])) == [*only, "clap-advantage"]
    with pytest.raises(ValueError, match="--tau_weightings: unknown bogus; use any of standardized, .*, or none"):
        StudyArguments(tau_weightings=["advantage", "bogus"])
    hot = StudyArguments(questions=["tau"], taus=[0.0], tau_weightings=["self_normalized"], safer_tau=10.0)
    assert needed(hot) == ["control", "clap-topk", "clap-self_normalized-tau10"]  # a τ other than 1 is in the name
    assert runs(hot)["clap-self_normalized-tau10"] == {"reward": "clap", "weighting": "self_normalized", "tau": 10.0}
    with pytest.raises(ValueError, match="--safer_tau must be a finite number >= 0"):
        StudyArguments(safer_tau=float("nan"))


def test_alignment_study_pair_seeds_train_the_pair_again_and_average_over_seeds(tmp_path, monkeypatch):
    """`--pair_seeds` adds the CLAP and control runs at each further fine-tune seed (the seed reaches the trainer);
    `paired_over_seeds` averages each prompt's difference over the pairs and reports the pairs' spread."""
    import experiments.alignment_study as study
    import rewardflow.finetune

    a = study.StudyArguments(questions=["clap_vs_control"], pair_seeds=[42, 1], output_dir=str(tmp_path))
    assert study.needed(a) == ["control", "clap-topk", "verifier-topk", "clap-topk-seed42", "control-seed42",
                               "clap-topk-seed1", "control-seed1"]  # fmt: skip
    assert study.runs(a)["control-seed1"] == {**study.runs(a)["control"], "seed": 1}
    assert "control-seed1" not in study.needed(study.StudyArguments(questions=["clap_vs_control"]))
    for bad in ([0], [1, 1]):
        with pytest.raises(ValueError, match="--pair_seeds must be distinct and leave out --seed 0"):
            study.StudyArguments(pair_seeds=bad)
    seen = []
    monkeypatch.setattr(rewardflow.finetune, "finetune", lambda args: seen.append((args.seed, args.output_dir)))
    for name in ("control-seed1", "control"):
        study.finetune_run(a, name, dict(study.runs(a)[name]), "rollout", tmp_path)
    assert seen == [(1, str(tmp_path / "runs" / "control-seed1")), (0, str(tmp_path / "runs" / "control"))]

    cols = ("verifier", "clap", "aesthetics", "kl")
    scores = {"c0": [1.0, 0.0, 1.0], "k0": [0.0, 0.0, 1.0], "c1": [0.0, 1.0, 1.0], "k1": [0.0, 0.0, 0.0]}
    per_prompt = {m: dict.fromkeys(cols, v) for m, v in scores.items()}
    (tmp_path / "eval-main.json").write_text(json.dumps({"per_prompt": per_prompt}))
    over = study.paired_over_seeds(tmp_path, [("c0", "k0"), ("c1", "k1")])
    # per prompt: (1 + 0) / 2, (0 + 1) / 2, (0 + 1) / 2; the pairs' means 1/3 and 2/3
    assert over["pairs"] == 2 and over["verifier"]["mean"] == pytest.approx(0.5)
    assert over["verifier"]["seed_std"] == pytest.approx(math.sqrt(2) / 6)
    assert over["verifier"]["ci95"] == [pytest.approx(0.5), pytest.approx(0.5)]  # every prompt's average is 0.5


def test_alignment_study_tiny(tmp_path, monkeypatch):
    """Every question on a toy budget: runs, rounds, evaluations, degradation reading, guardrail, committed JSON."""
    from experiments.alignment_study import StudyArguments, main, needed

    a = StudyArguments(output_dir=str(tmp_path / "study"), results_dir=str(tmp_path / "published"),
                       rollout_prompts=3, num_generations=2, max_steps=2, batch_size=4, oracle_rounds=2,
                       taus=[0.0, 1.0], best_of=[2], eval_prompts=3, guard_every=1, processes=1)  # fmt: skip
    assert needed(a)[0] == "control" and "clap-exp-tau1" in needed(a)
    result = main(a)
    assert {"control", "clap-topk", "verifier-topk", "oracle-round-2", "clap-topk-guarded"} <= set(result["runs"])
    for name, run in result["runs"].items():
        assert 0 <= run["model"]["verifier"] <= 1 and "verifier" in run["paired_vs_base"], name
    assert set(result["clap_minus_control"]) == {"verifier", "clap", "aesthetics", "kl"}
    assert set(result["oracle_round_gains"]) == {"round-2"} and "verifier" in result["oracle_round_gains"]["round-2"]
    spread = result["oracle_round_rollouts"]
    assert set(spread) == {"round-1", "round-2"} and all(s["clips"] == 6 for s in spread.values())
    assert all(0 <= s["mean"] <= s["best_of_n"] <= 1 for s in spread.values())
    tuned = result["oracle_on_tuned_prompts"]  # round 2's rollout: round 1's model on the tuned prompts
    assert set(tuned) == {"round-1"} and tuned["round-1"]["vs_base"]["prompts"] == 3
    assert tuned["round-1"]["vs_base"]["mean"] == pytest.approx(spread["round-2"]["mean"] - spread["round-1"]["mean"])
    deg = result["degradation"]
    assert 0 <= deg["base"]["degraded"] <= 1 and "degraded_minus_base" not in deg["base"]
    paired = deg["aesthetics-topk"]["degraded_minus_control"]  # one clip per prompt: a share difference per prompt
    assert paired["prompts"] == 3
    assert paired["mean"] == pytest.approx(deg["aesthetics-topk"]["degraded"] - deg["control"]["degraded"])
    assert paired["ci95"][0] <= paired["mean"] <= paired["ci95"][1] and "degraded_minus_control" not in deg["control"]
    # the reading is the evaluation's own (one classifier pass over the evaluated clips): its shares are `degraded`
    for name in ("control", "aesthetics-topk"):
        assert deg[name]["degraded"] == result["runs"][name]["model"]["degraded"], name
        assert sum(deg[name][k] for k in ("none", "hiss", "clipping", "muffled")) == pytest.approx(1.0), name
    assert deg["base"]["degraded"] == result["base"]["degraded"] and deg["base"]["clips"] == 3
    assert set(result["best_of_n"]) == {"clap-2", "verifier-2", "clap-2-matched"}
    assert all(
        "verifier" in b["tuned_minus_this"] and "clap" in b["tuned_minus_this"] for b in result["best_of_n"].values()
    )
    evals = {k: json.loads((tmp_path / "study" / f"eval-best-of-2-{k}.json").read_text())
             for k in ("clap", "verifier", "clap-matched")}  # fmt: skip
    assert evals["clap"]["shares_candidates_with"] == ["best-of-2 by verifier"]  # one generation for both rewards
    assert (
        evals["verifier"]["settings"]["rerank_reward"] == "verifier" and evals["verifier"]["settings"]["best_of"] == 2
    )
    assert (
        "shares_candidates_with" not in evals["clap-matched"]
        and evals["clap-matched"]["settings"]["num_iterations"] == 4
    )
    assert [r["step"] for r in result["guardrail"]["history"]] == [0, 1, 2]
    assert "verifier" in result["guardrail"]["kept_minus_last"]  # against clap-topk, the same run unguarded
    import rewardflow.evaluate

    def unexpected(*args):
        raise AssertionError("the evaluations are read back, not made again")

    monkeypatch.setattr(rewardflow.evaluate, "evaluate_selections", unexpected)  # the main one and best-of-N
    assert main(a)["degradation"] == result["degradation"]  # a rerun reads everything back
    assert json.loads((tmp_path / "published" / "results.json").read_text())["runs"].keys() == result["runs"].keys()
    # every table of the record renders from that JSON
    from experiments import render_results

    (tmp_path / "results" / "alignment").mkdir(parents=True)
    (tmp_path / "published" / "results.json").rename(tmp_path / "results" / "alignment" / "results.json")
    published = json.loads((tmp_path / "results" / "alignment" / "results.json").read_text())
    for name, settings in (("rollout_cfg1.json", {"rollout_cfg_scale": 1.0}),  # the other studies the record renders
                           ("rollout_cfg1_n8.json", {"rollout_cfg_scale": 1.0, "num_generations": 8, "top_k": 0.125})):  # fmt: skip
        study = {**published, "settings": {**published["settings"], **settings}}
        (tmp_path / "results" / "alignment" / name).write_text(json.dumps(study))
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    for name in ("oracle", "clap-control", "aesthetics", "tau", "best-of-n", "guardrail"):
        table = render_results.RENDERERS[name]()
        assert table.count("\n") >= 3 and "| " in table, name
    assert "Degraded share, aesthetics-tuned − control, paired by prompt: " in render_results.aesthetics()
    assert [r.split(" | ")[0] for r in render_results.tau().splitlines()[3:5]] == ["| exp(τ·r), τ = 0 (uniform)",
                                                                                    "| exp(τ·r), τ = 1"]  # fmt: skip
    oracle_rows = render_results.oracle().splitlines()
    assert sum(r.startswith("On the 3 prompts it was tuned on") and "round-1 model" in r for r in oracle_rows) == 3
    for label in ("CFG 3, best of 2", "CFG 1, best of 2", "CFG 1, best of 8"):  # each study named by its rollout
        rows = [r for r in oracle_rows if r.startswith(f"| {label} | verifier as reward, round 2 |")]
        assert len(rows) == 1 and "[" in rows[0].split(" | ")[4]  # round 2 against round 1, with its interval
        assert rows[0].split(" | ")[-1].strip(" |") == f"{spread['round-2']['best_of_n']:.3f}"  # what it trained on


def test_music_alignment_tiny(tmp_path, monkeypatch):
    """The music loop on a toy budget (the bundled SynthCaps pipeline stands in for the SynthMusic one): a SynthMusic
    rollout scored by the music verifier, runs against the control, the held-out evaluation, committed JSON."""
    import pytest

    from experiments.music_alignment import MusicAlignmentArguments, main

    with pytest.raises(ValueError, match="--runs"):
        MusicAlignmentArguments(runs=["clap-exp"])
    with pytest.raises(ValueError, match="--loss_cfg_scale must be a finite number >= 0"):
        MusicAlignmentArguments(loss_cfg_scale=float("nan"))
    a = MusicAlignmentArguments(output_dir=str(tmp_path / "music"), results_dir=str(tmp_path / "published"),
                                model="synthcaps", runs=["control", "verifier-topk"], rollout_prompts=3,
                                num_generations=2, max_steps=2, batch_size=4, eval_prompts=3, processes=1)  # fmt: skip
    result = main(a)
    rollout = tmp_path / "music" / "rollout"
    assert json.loads((rollout / "run.json").read_text())["settings"]["prompts"] == "synthmusic:train"
    assert result["rollout"]["prompts"] == "synthmusic:train" and "verifier" in result["agreement"]
    ev = result["evaluation"]
    assert ev["settings"]["prompts"] == "synthmusic:heldout" and list(ev["models"]) == [
        "synthcaps",
        *result["runs"].values(),
    ]
    assert {"tempo", "mode", "timbre"} <= set(ev["verifier_by_attribute"]["synthcaps"])
    assert set(result["versus_control"]) == {"verifier-topk"}
    assert set(result["versus_control"]["verifier-topk"]) == {"verifier", "clap", "aesthetics", "kl"}
    assert json.loads((tmp_path / "published" / "music_alignment.json").read_text())["runs"] == result["runs"]
    again = main(a)  # everything read back
    assert again["evaluation"] == result["evaluation"]
    from experiments import render_results

    (tmp_path / "results").mkdir()
    (tmp_path / "published").rename(tmp_path / "results" / "synthmusic")
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    table = render_results.RENDERERS["music-alignment"]()
    assert table.count("\n| ") == 4 and "music verifier, best of 2 (oracle) − control" in table
    assert {"tempo", "mode", "timbre"} <= set(table.splitlines()[0].replace(" ", "").split("|"))


def test_measure_bundled_pair_small(tmp_path):
    """The generator's measurement of any masked/CFM pair writes what the generator tables render."""
    import pytest

    from bundled.measure_synthcaps import MeasureArguments
    from bundled.measure_synthcaps import main as measure_main

    a = MeasureArguments(output_dir=str(tmp_path / "m"), results_dir="", small=True)
    report = measure_main(a)
    assert json.loads((tmp_path / "m" / "report.json").read_text()) == report
    assert report["eval_prompts"] == 4 and report["models"] == {"masked": "synthcaps", "cfm": "synthcaps-cfm"}
    for key in ("real_audio", "real_mel_vocoder", "real_mel_vae_vocoder"):
        assert 0 <= report["decoder_ceiling"][key]["verifier"] <= 1, key
    lo, hi = report["own_minus_shuffled"][1:]
    assert lo <= report["own_minus_shuffled"][0] <= hi
    with pytest.raises(ValueError, match="--eval_prompts"):
        MeasureArguments(eval_prompts=1)


@pytest.mark.slow  # 74-88 s on 2 cores; `make test-slow` runs it
def test_preference_loop_tiny(tmp_path, monkeypatch):
    """The whole loop on a toy budget: rollout, simulated labels through the page's API, one reward model per budget,
    the fresh-prompt agreement, the three fine-tunes and their paired comparisons; a rerun resumes."""
    from experiments.preference_loop import LoopArguments, main

    a = LoopArguments(output_dir=str(tmp_path / "loop"), results_dir=str(tmp_path / "published"), label_prompts=3,
                      num_generations=3, budgets=[4, 8, 50], fresh_prompts=2, first_prompt=2, eval_prompts=2,
                      confirm_first_prompt=4, confirm_prompts=2, max_steps=2, batch_size=4, processes=1)  # fmt: skip
    result = main(a)
    assert result["labelled_pairs"] == 9  # 3 prompts x 3 pairs: the page ran out before 50
    assert set(result["reward_models"]) == {4, 8} and result["best_budget"] in (4, 8)
    assert {"clap", "preference-4", "preference-8"} == set(result["agreement"]) == set(result["agreement_confirm"])
    assert result["agreement_confirm"]["clap"]["prompts"] == 2
    assert set(result["runs"]) == {
        "clap-topk",
        "preference-topk",
        "dpo-preferences-beta2000",
        "dpo-preferences-beta200",
    }
    assert "verifier" in result["runs"]["dpo-preferences-beta200"]["paired_vs_clap"]
    published = json.loads((tmp_path / "published" / "results.json").read_text())
    assert published["labelled_pairs"] == 9
    from experiments import render_results

    (tmp_path / "results" / "preference").mkdir(parents=True)
    (tmp_path / "published" / "results.json").rename(tmp_path / "results" / "preference" / "results.json")
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    for name in ("preference-agreement", "preference-finetune"):
        table = render_results.RENDERERS[name]()
        assert table.count("\n") >= 4 and "| " in table, name
    again = main(a)  # everything is on disk: nothing is labelled or trained twice
    assert again["labelled_pairs"] == 9 and json.dumps(again["agreement"]) == json.dumps(
        result["agreement"]
    )  # NaN-safe
    runs = sorted(p.name for p in (tmp_path / "loop" / "runs").iterdir())
    assert [r for r in runs if r.startswith("preference-topk-")] and "preference-topk" not in runs  # named by model
    # a reward model made with other trainer settings is made again, not reused
    metrics = tmp_path / "loop" / "reward-4" / "metrics.json"
    stale = {**json.loads(metrics.read_text()), "settings": {"steps": 1}}
    metrics.write_text(json.dumps(stale))
    main(a)
    assert json.loads(metrics.read_text())["settings"]["steps"] != 1
    agreement_only = main(LoopArguments(**{**vars(a), "finetune": False}))  # stops before the rescore and the runs
    assert agreement_only["runs"] == {} and set(agreement_only["agreement_confirm"]) == set(result["agreement"])


def test_synthmusic_verifier_calibration_tiny(tmp_path, monkeypatch):
    """The music verifier's calibration on a few clips: real audio reads back, the table renders from the JSON."""
    import pytest

    from experiments import render_results
    from experiments.synthmusic_verifier import MusicVerifierArguments, main

    with pytest.raises(ValueError, match="--clips"):
        MusicVerifierArguments(clips=1)
    with pytest.raises(ValueError, match="--vae"):
        MusicVerifierArguments(vae="")
    result = main(MusicVerifierArguments(clips=4, results_dir=str(tmp_path / "results" / "synthmusic")))
    for split in ("train", "heldout"):
        row = result["splits"][split]
        assert row["clips"] == 4 and row["real_audio"]["verifier"] >= 0.9
        assert 0 <= row["shuffled_attributes"]["verifier"] <= 1 and 0 <= row["real_mel_vocoder"]["verifier"] <= 1
        assert 0 <= row["real_mel_vae_vocoder"]["verifier"] <= 1 and row["vae_mel_l1"] > 0  # the bundled VAE's trip
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    table = render_results.RENDERERS["synthmusic-verifier"]()
    assert table.count("\n") == 10 and table.count("SynthCaps VAE") == 2  # header, rule, four rows per split


def test_oracle_diagnostics_names_the_missing_study_before_any_evaluation(tmp_path):
    from experiments import oracle_diagnostics

    with pytest.raises(SystemExit, match="--study .*alignment_study.py --questions oracle"):
        oracle_diagnostics.main(["--study", str(tmp_path)])


def test_oracle_diagnostics_checks_the_rollouts_prompts_and_reuses_its_reports(tmp_path, monkeypatch):
    """The first set is the study's own rollout (here held-out prompts from 1000); a report already there with the
    same settings is read back, one with other settings is made again; the table follows the models present."""
    import rewardflow.evaluate
    from experiments import oracle_diagnostics, render_results

    study = tmp_path / "study"
    (study / "rollout").mkdir(parents=True)
    settings = {"prompts": "synthcaps:heldout", "first_prompt": 1000, "cfg_scale": 3.0}
    (study / "rollout" / "run.json").write_text(json.dumps({"settings": settings}))
    first = study / "runs" / "verifier-topk" / "final"
    first.mkdir(parents=True)
    (first / "metrics.json").write_text("{}")
    sets = oracle_diagnostics.prompt_sets(settings)
    assert sets[0] == ("held-out prompts tuned on (fresh seeds)", "eval-heldout-tuned", "synthcaps:heldout", 1000, 3.0)
    models = ["synthcaps", str(first)]
    pair = {"verifier": {"mean": 0.05, "ci95": [0.01, 0.09]}, "clap": {"mean": 0.0, "ci95": [-0.01, 0.01]},
            "kl": {"mean": -0.1, "ci95": [-0.2, 0.0]}}  # fmt: skip

    def report(label, stem, prompts, start, cfg, max_prompts=4):
        s = {"models": models, "prompts": prompts, "first_prompt": start, "max_prompts": max_prompts, "cfg_scale": cfg}
        return {"settings": s, "models": {m: {"verifier": 0.6} for m in models},
                "paired_vs_first": {first.as_posix(): pair}, "verifier_by_attribute": {}}  # fmt: skip

    for i, row in enumerate(sets):  # the second is stale: made for another number of prompts
        (study / f"{row[1]}.json").write_text(json.dumps(report(*row, max_prompts=8 if i == 1 else 4)))
    made = []
    monkeypatch.setattr(rewardflow.evaluate, "evaluate", lambda cfg: made.append(cfg.first_prompt) or report(
        *next(r for r in sets if r[3] == cfg.first_prompt and r[4] == cfg.cfg_scale)))  # fmt: skip
    out = oracle_diagnostics.main(["--study", str(study), "--max_prompts", "4", "--results_json",
                                   str(tmp_path / "results" / "alignment" / "d.json")])  # fmt: skip
    assert made == [oracle_diagnostics.TRAIN_UNSEEN] and len(out["sets"]) == 3
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    table = render_results.oracle_diagnostics("d.json")
    assert "| held-out prompts tuned on (fresh seeds) | 3 | 0.600 | **+0.050 [+0.010, +0.090]** | +0.000" in table
    assert "round 3" not in table and table.count("\n") == 5


def test_alignment_study_refuses_a_heldout_rollout_that_reaches_the_evaluated_prompts():
    """`--rollout_split heldout`: a rollout range that reaches the evaluated prompts is refused before anything runs."""
    from experiments.alignment_study import StudyArguments

    with pytest.raises(ValueError, match="overlap the evaluated ones 128-383; set --rollout_first_prompt to 384"):
        StudyArguments(rollout_split="heldout", rollout_first_prompt=300)
    with pytest.raises(ValueError, match="--rollout_split must be train or heldout"):
        StudyArguments(rollout_split="validation")
    with pytest.raises(ValueError, match="--loss_cfg_scale must be a finite number >= 0"):
        StudyArguments(loss_cfg_scale=-1.0)


@pytest.mark.slow  # 99 s on 2 cores; `make test-slow` runs it
def test_alignment_study_heldout_rollout_is_read_without_shared_prompts(tmp_path, monkeypatch):
    """A tiny `--rollout_split heldout` study fits the guided velocity, an `--oracle_betas` run differs in β alone and
    is read on the tuned prompts too, and `disjoint_from_rollout` leaves out exactly the evaluated prompts whose
    attributes a rolled-out prompt has."""
    import numpy as np

    import experiments.alignment_study as study
    from experiments.alignment_study import StudyArguments, main

    a = StudyArguments(output_dir=str(tmp_path / "study"), results_dir="", questions=["oracle"], rollout_prompts=3,
                       num_generations=2, max_steps=2, batch_size=4, oracle_rounds=1, eval_prompts=3, processes=1,
                       rollout_split="heldout", rollout_first_prompt=400, loss_cfg_scale=3.0,
                       oracle_betas=[0.5])  # fmt: skip
    result = main(a)
    for name, scale, beta in (("control", 3.0, 1.0), ("verifier-topk", 3.0, 1.0),
                              ("verifier-topk-paper-loss", 1.0, 1.0), ("verifier-topk-beta0.5", 3.0, 0.5)):  # fmt: skip
        run = json.loads((tmp_path / "study" / "runs" / name / "finetune_run.json").read_text())
        assert run["objective"]["loss_cfg_scale"] == scale and run["objective"]["beta"] == beta, name
    betas = result["oracle_beta"]["runs"]
    assert set(betas) == {"1", "0.5"} and betas["1"]["paired_vs_study_beta"] is None
    assert betas["1"]["on_tuned_prompts"]["vs_study_beta"] is None  # the study's β against itself is no reading
    assert (
        "verifier" in betas["0.5"]["paired_vs_study_beta"]
        and betas["0.5"]["on_tuned_prompts"]["vs_base"]["prompts"] == 3
    )
    for folder in ("verifier-topk", "verifier-topk-beta0.5"):  # the tuned prompts again, with round 2's seed
        again = json.loads((tmp_path / "study" / "runs" / folder / "tuned-rollout" / "run.json").read_text())
        assert (again["settings"]["seed"], again["settings"]["first_prompt"]) == (1, 400), folder
    rollout = json.loads((tmp_path / "study" / "rollout" / "run.json").read_text())["settings"]
    assert rollout["prompts"] == "synthcaps:heldout" and rollout["first_prompt"] == 400
    assert set(result["disjoint_from_rollout"]["paired_vs_base"]) == {
        "control",
        "clap-topk",
        "verifier-topk",
        "verifier-topk-paper-loss",
    }
    from experiments import render_results

    (tmp_path / "results" / "alignment").mkdir(parents=True)
    (tmp_path / "results" / "alignment" / "heldout_rollout_guided.json").write_text(json.dumps(result))
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    table = render_results.heldout_rollout()
    assert sum(r.startswith("| verifier, best of 2 (oracle) | ") for r in table.splitlines()) == 2  # both losses
    assert "| guided, s = 3 |" in table and "the paper's (v_c)" in table and "held-out prompts 400–402" in table
    table = render_results.oracle_beta()
    assert [r.split(" | ")[0] for r in table.splitlines()[2:4]] == ["| 1", "| 0.5"] and "3 tuned prompts" in table
    # the subset: evaluated prompt 129 is given the attributes of a rolled-out prompt, so it is the one left out
    from rewardflow import prompts as prompts_module

    original = prompts_module.load_prompts

    def shared(source, max_prompts=0, first_prompt=0, **kw):
        rows = original(source, max_prompts, first_prompt=first_prompt, **kw)
        if first_prompt == 128:
            rows[1] = {**rows[1], "attributes": original(source, 1, first_prompt=400)[0]["attributes"]}
        return rows

    monkeypatch.setattr(prompts_module, "load_prompts", shared)
    tuned = str(tmp_path / "study" / "runs" / "verifier-topk" / "final")
    disjoint = study.disjoint_from_rollout(a, {"verifier-topk": tuned})
    assert (disjoint["prompts"], disjoint["of"]) == (2, 3)
    per_prompt = json.loads((tmp_path / "study" / "eval-main.json").read_text())["per_prompt"]
    keep = [0, 2]
    diff = np.asarray(per_prompt[tuned]["verifier"])[keep]
    diff = diff - np.asarray(per_prompt["synthcaps"]["verifier"])[keep]
    assert disjoint["paired_vs_base"]["verifier-topk"]["verifier"]["mean"] == pytest.approx(diff.mean())


def test_oracle_variants_continues_from_the_newest_complete_checkpoint(tmp_path):
    from experiments.oracle_variants import VariantArguments, continue_from

    for steps in ([600], [1800, 1200], [1200, 1200]):
        with pytest.raises(ValueError, match="--continue_steps must rise and start above --max_steps 600"):
            VariantArguments(continue_steps=steps)
    with pytest.raises(ValueError, match="--rounds must be >= 1"):
        VariantArguments(rounds=0)
    with pytest.raises(FileNotFoundError, match="--compare_rounds .* no eval-main.json there"):
        VariantArguments(compare_rounds=str(tmp_path / "nothing"))
    start, folder = tmp_path / "run", tmp_path / "longer"
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        continue_from(start, folder)
    for step, complete in ((200, True), (400, True), (600, False)):  # 600 was cut off while being written
        (start / f"checkpoint-{step}").mkdir(parents=True)
        (start / f"checkpoint-{step}" / "model.safetensors").write_text(str(step))
        if complete:
            (start / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    continue_from(start, folder)
    assert [p.name for p in folder.iterdir()] == ["checkpoint-400"]
    assert (folder / "checkpoint-400" / "model.safetensors").read_text() == "400"
    (start / "checkpoint-600" / "trainer_state.json").write_text("{}")
    continue_from(start, folder)  # the continuation has a checkpoint of its own: left as it is
    assert [p.name for p in folder.iterdir()] == ["checkpoint-400"]


@pytest.mark.slow  # 94-174 s on 2 cores beside a running study; the guided DPO loss is in the default suite
def test_oracle_variants_tiny(tmp_path, monkeypatch):
    """The seeds' runs differ from each other in the fine-tune's seed alone (the rollout is shared), a further learning
    rate's run from the first seed's in its learning rate alone, the DPO run takes half the batch in pairs with the
    same loss, and every run is paired with the base and with the first seed's."""
    from experiments.oracle_variants import VariantArguments, main

    with pytest.raises(ValueError, match="--seeds needs at least one"):
        VariantArguments(seeds=[])
    with pytest.raises(ValueError, match="--dpo_betas must all be > 0"):
        VariantArguments(dpo_betas=[0.0])
    with pytest.raises(ValueError, match="--learning_rates must all be > 0 and differ from --learning_rate 0.0001"):
        VariantArguments(learning_rates=[1e-4])
    a = VariantArguments(output_dir=str(tmp_path / "v"), results_dir="", rollout_prompts=4, num_generations=3,
                         max_steps=2, batch_size=4, eval_prompts=3, processes=1, rollout_first_prompt=400,
                         seeds=[0, 1], dpo_betas=[20.0], continue_steps=[4], learning_rates=[1e-3])  # fmt: skip
    result = main(a)
    # The continued run is the longer run's own trajectory: a straight 4-step run ends at the same weights.
    from dataclasses import replace
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from experiments.alignment_study import finetune_run

    straight = finetune_run(replace(a, max_steps=4, continue_steps=[]), "straight", {"reward": "verifier",
                            "weighting": "topk", "top_k": a.top_k}, str(tmp_path / "v" / "rollout"), tmp_path / "s")  # fmt: skip
    longer = load_file(tmp_path / "v" / "runs" / "verifier-topk-seed0-steps4" / "final" / "flow" / "model.safetensors")
    shorter = load_file(tmp_path / "v" / "runs" / "verifier-topk-seed0" / "final" / "flow" / "model.safetensors")
    for k, v in load_file(Path(straight) / "flow" / "model.safetensors").items():
        torch.testing.assert_close(longer[k], v, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(longer[k], v) for k, v in shorter.items())
    runs = {n: json.loads((tmp_path / "v" / "runs" / n / "finetune_run.json").read_text())
            for n in ("verifier-topk-seed0", "verifier-topk-seed1", "verifier-dpo-beta20",
                      "verifier-topk-seed0-lr0.001")}  # fmt: skip
    strip = {"seed", "command", "versions"}
    seed0, seed1 = ({k: v for k, v in r.items() if k not in strip} for r in list(runs.values())[:2])
    assert seed0 == seed1 and runs["verifier-topk-seed1"]["seed"] == 1
    faster = {k: v for k, v in runs["verifier-topk-seed0-lr0.001"].items() if k not in strip}
    assert faster.pop("learning_rate") == 1e-3 and seed0.pop("learning_rate") == 1e-4 and faster == seed0
    assert runs["verifier-topk-seed0"]["objective"]["weighting"] == "topk"
    dpo = runs["verifier-dpo-beta20"]
    assert (dpo["objective"]["objective"], dpo["objective"]["dpo_beta"], dpo["objective"]["loss_cfg_scale"]) == (
        "dpo",
        20.0,
        3.0,
    )
    assert dpo["batch_size"] == 2 and runs["verifier-topk-seed0"]["batch_size"] == 4
    assert set(result["runs"]) == {"oracle-seed0", "oracle-seed1", "oracle-seed0-steps4", "oracle-seed0-lr0.001",
                                   "dpo-beta20"}  # fmt: skip
    assert result["runs"]["oracle-seed0-steps4"]["train"]["steps"] == 4
    assert result["runs"]["oracle-seed0"]["paired_vs_first_seed"] is None
    assert all("verifier" in result["runs"][n]["paired_vs_first_seed"]
               for n in ("oracle-seed1", "oracle-seed0-steps4", "oracle-seed0-lr0.001", "dpo-beta20"))  # fmt: skip
    assert result["rollout_best_of_n"]["clips"] == 12 and result["base"]["verifier"] >= 0
    from experiments import render_results

    (tmp_path / "results" / "alignment").mkdir(parents=True)
    (tmp_path / "results" / "alignment" / "oracle_variants.json").write_text(json.dumps(result))
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    rows = render_results.oracle_variants().splitlines()
    assert [r.split(" | ")[:2] for r in rows[2:6]] == [
        ["| oracle (best of 3), seed 0, 2 steps", "4 clips, 2.0 passes"],
        ["| oracle (best of 3), seed 1, 2 steps", "4 clips, 2.0 passes"],
        ["| oracle (best of 3), seed 0, 4 steps", "4 clips, 4.0 passes"],
        ["| oracle (best of 3), seed 0, 2 steps, learning rate 0.001", "4 clips, 2.0 passes"],
    ]
    assert rows[6].startswith("| DPO, best vs worst by the verifier, β = 20 | ")
    assert "learning rate 0.0001 unless the row says another," in rows[-1]
    seed1_vs_seed0 = render_results._bci(result["runs"]["oracle-seed1"]["paired_vs_first_seed"]["verifier"])
    assert rows[2].split(" | ")[3] == "" and rows[3].split(" | ")[3] == seed1_vs_seed0  # none against itself


@pytest.mark.slow
def test_oracle_variants_rounds_tiny(tmp_path, monkeypatch):
    """`--rounds 3`: round k rolls the tuned prompts out with round k - 1's model at the rollout's seed + k - 1 and
    tunes from its weights; each round is read against the base and the round before, and on the prompts it was tuned
    on (the next round's rollout) where there is one. Then `--round_reference previous --compare_rounds`."""
    import numpy as np
    from safetensors.torch import load_file

    from experiments import render_results
    from experiments.oracle_variants import VariantArguments, main

    a = VariantArguments(output_dir=str(tmp_path / "v"), results_dir="", rollout_prompts=4, num_generations=2,
                         max_steps=2, batch_size=4, eval_prompts=3, processes=1, rollout_first_prompt=400,
                         seeds=[0], rounds=3)  # fmt: skip
    result = main(a)
    root = tmp_path / "v" / "runs" / "verifier-topk-seed0-rounds"
    assert (root / "round-1").resolve() == (tmp_path / "v" / "runs" / "verifier-topk-seed0").resolve()
    for k in (2, 3):
        meta = json.loads((root / f"round-{k}" / "rollout" / "run.json").read_text())["settings"]
        assert (meta["model"], meta["seed"], meta["first_prompt"]) == (str(root / f"round-{k - 1}" / "final"), k - 1,
                                                                       400)  # fmt: skip
    weights = [load_file(root / f"round-{k}" / "final" / "flow" / "model.safetensors") for k in (1, 2, 3)]
    assert all(any(not np.array_equal(w[n], v) for n, v in prev.items()) for prev, w in zip(weights, weights[1:]))
    rounds = result["rounds"]
    assert list(rounds) == ["round-1", "round-2", "round-3"] and set(result["runs"]) == {"oracle-seed0"}
    per_prompt = json.loads((tmp_path / "v" / "eval-main.json").read_text())["per_prompt"]
    diff = np.subtract(per_prompt[str(root / "round-3" / "final")]["verifier"],
                       per_prompt[str(root / "round-2" / "final")]["verifier"])  # fmt: skip
    assert rounds["round-3"]["paired_vs_previous"]["verifier"]["mean"] == pytest.approx(diff.mean())
    assert rounds["round-1"]["paired_vs_previous"] is None and rounds["round-3"]["tuned_prompts_vs_base"] is None
    assert rounds["round-2"]["tuned_prompts_vs_base"]["prompts"] == 4 and rounds["round-2"]["rollout"]["clips"] == 8
    (tmp_path / "results" / "alignment").mkdir(parents=True)
    (tmp_path / "results" / "alignment" / "oracle_rounds.json").write_text(json.dumps(result))
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    rows = render_results.oracle_rounds().splitlines()
    assert [r.split(" | ")[0] for r in rows[2:5]] == ["| 1", "| 2", "| 3"]
    assert rows[2].split(" | ")[2] == "" and rows[4].split(" | ")[3] == ""  # nothing before round 1 or after round 3
    assert rows[3].split(" | ")[2] == render_results._bci(rounds["round-2"]["paired_vs_previous"]["verifier"])
    attributes = list(rounds["round-3"]["paired_by_attribute"])  # those the evaluated prompts name
    by_attribute = rows[rows.index(render_results._row(["round", *(f"Δ {x}" for x in attributes)])) :]
    first = rounds["round-3"]["paired_by_attribute"][attributes[0]]
    assert by_attribute[4].split(" | ")[1] == render_results._bci(first)

    # `--round_reference previous`: round 2's reference is round 1's model; each round is paired with the same round
    # of the run above (reference the base), read from its evaluation.
    moved = main(dataclasses.replace(a, output_dir=str(tmp_path / "p"), rounds=2, round_reference="previous",
                         compare_rounds=a.output_dir))  # fmt: skip
    proot = tmp_path / "p" / "runs" / "verifier-topk-seed0-rounds-previous"
    assert (
        f"reference = frozen {proot / 'round-1' / 'final'} |"
        in (proot / "round-2" / "final" / "README.md").read_text()
    )
    vs = moved["rounds_vs_compared"]
    assert set(vs) == {"base_max_abs_difference", "round-2"} and vs["base_max_abs_difference"] < 1e-9
    mine = json.loads((tmp_path / "p" / "eval-main.json").read_text())["per_prompt"][str(proot / "round-2" / "final")]
    diff = np.subtract(mine["verifier"], per_prompt[str(root / "round-2" / "final")]["verifier"])
    assert vs["round-2"]["verifier"]["mean"] == pytest.approx(diff.mean())
    (tmp_path / "results" / "alignment" / "oracle_rounds_previous.json").write_text(json.dumps(moved))
    rows = render_results.oracle_rounds("oracle_rounds_previous.json").splitlines()
    assert rows[0].split(" | ")[3] == "Δ verifier vs the same round, reference the base"
    assert rows[3].split(" | ")[3] == render_results._bci(vs["round-2"]["verifier"]) and rows[2].split(" | ")[3] == ""
    assert "the reference being round k − 1's model" in rows[5]


def test_alignment_demo_checks_its_rollout_before_running():
    from experiments.alignment_demo import DemoArguments

    with pytest.raises(ValueError, match="overlap the evaluated ones 384-639; set --rollout_first_prompt to 640"):
        DemoArguments(rollout_split="heldout", rollout_first_prompt=400)
    with pytest.raises(ValueError, match="--rollout_split must be train or heldout"):
        DemoArguments(rollout_split="test")
    with pytest.raises(ValueError, match="--loss_cfg_scale must be a finite number >= 0"):
        DemoArguments(loss_cfg_scale=float("inf"))
    with pytest.raises(ValueError, match="--listen_prompts 1 must be >= 2"):
        DemoArguments(listen_prompts=1)
    DemoArguments(rollout_split="heldout", rollout_first_prompt=1000)


def test_alignment_demo_tiny(tmp_path):
    """`make demo` end to end on a toy budget: a held-out rollout, a guided fine-tune, the evaluation, WAVs and the
    report; a rerun keeps the tuned model."""
    from experiments.alignment_demo import DemoArguments, main

    a = DemoArguments(output_dir=str(tmp_path / "demo"), max_prompts=2, num_generations=2, max_steps=2,
                      eval_prompts=2, listen_prompts=2, rollout_split="heldout", rollout_first_prompt=1000,
                      loss_cfg_scale=3.0, processes=1, seed=7)  # fmt: skip
    result = main(a)
    assert set(result["paired"]) >= {"clap", "aesthetics", "verifier", "kl"}
    run = json.loads((tmp_path / "demo" / "finetune" / "finetune_run.json").read_text())
    assert run["objective"]["loss_cfg_scale"] == 3.0 and run["seed"] == 7
    rollout = json.loads((tmp_path / "demo" / "rollout" / "run.json").read_text())["settings"]
    assert rollout["prompts"] == "synthcaps:heldout" and rollout["first_prompt"] == 1000
    assert (tmp_path / "demo" / "listen" / "report.html").is_file()
    assert main(a)["seconds"]["finetune"] == 0.0  # the rerun keeps the tuned model


def test_reward_hearing_splits_each_attribute_by_whether_the_prompt_sets_it(tmp_path, monkeypatch):
    """experiments/reward_hearing.py on a tiny real rollout: the verifier as its own reward orders every pair alike,
    reversed none; fade and loudness pairs split into prompts that set them and prompts that leave the default,
    which add up; the renderer makes a row per check. Bad arguments are refused before any work."""
    import numpy as np

    from experiments import render_results, reward_hearing
    from rewardflow.rollout import main as rollout_main
    from rewardflow.rollout import make_parser as rollout_parser

    out = tmp_path / "r"
    argv = ["--output_dir", str(out), "--max_prompts", "6", "--num_generations", "3", "--num_iterations", "2"]
    argv += ["--num_steps", "4", "--batch_size", "9", "--rewards", "verifier", "--audio_format", "none"]
    rollout_main(*rollout_parser().parse_args_and_config(args=argv))
    with pytest.raises(SystemExit, match="one label per rollout"):
        reward_hearing.main(["--rollouts", str(out), "--labels", "a", "b"])
    with pytest.raises(SystemExit, match="no run.json"):
        reward_hearing.main(["--rollouts", str(tmp_path), "--labels", "a"])
    (tmp_path / "alignment").mkdir()
    path = tmp_path / "alignment" / "reward_hearing.json"
    args = ["--rollouts", str(out), "--labels", "tiny", "--rewards", "verifier", "verifier:-1", "--bootstrap", "200"]
    result = reward_hearing.main([*args, "--results_json", str(path)])
    tiny = result["rollouts"]["tiny"]
    assert json.loads(path.read_text()) == json.loads(json.dumps(result)) and tiny["settings"]["max_prompts"] == 6
    for name in ("fade", "loudness"):
        whole = tiny["by_part"]["verifier"][name]["pairs"]
        split = [tiny["by_default"]["verifier"][f"{name}, {w}"]["pairs"] for w in ("set", "default")]
        assert sum(split) == whole
    assert set(tiny["pick_by_part"]) == {"verifier", "verifier:-1"} and "fade" in tiny["pick_by_part"]["verifier"]
    # picking by the fade check itself gains the most any pick can on fade: the prompt's best minus its mean
    picks = reward_hearing.hearing(str(out), ["verifier/fade"], 100)["pick_by_part"]
    fade = tiny["by_part"]["verifier"]["fade"]["pairs"]
    assert picks["verifier/fade"]["fade"][0] >= picks["verifier"]["fade"][0] and (
        fade == 0 or picks["verifier/fade"]["fade"][0] > 0
    )
    shares = [a["share"][0] for a in tiny["by_part"]["verifier"].values() if a["pairs"]]
    assert shares and set(shares) == {1.0}
    reversed_ = [a["share"][0] for a in tiny["by_part"]["verifier:-1"].values() if a["pairs"]]
    assert set(reversed_) == {0.0}
    attrs = [json.dumps({"fade": f, "loudness": "normal"}) for f in ("in", "none", "none")]
    split = reward_hearing.split_by_default(attrs, np.array([1.0, 0.0, 1.0]), "fade")
    assert np.isnan(split["set"][1:]).all() and split["set"][0] == 1.0 and np.isnan(split["default"][0])
    # the renderer reads CLAP and aesthetics: stand the verifier and its reverse in for them
    for key in ("rewards", "by_part", "by_default"):
        tiny[key] = {"clap": tiny[key]["verifier"], "aesthetics": tiny[key]["verifier:-1"]}
    tiny["pick_by_part"]["clap"] = tiny["pick_by_part"].pop("verifier:-1")
    path.write_text(json.dumps(result))
    monkeypatch.setattr(render_results, "RESULTS", tmp_path)
    table = render_results.reward_hearing()
    assert "| fade: the prompt sets it |" in table and "| loudness: left at the default |" in table
    picks = render_results.reward_hearing_picks()
    assert picks.count("\n") == 2 + len(tiny["pick_by_part"]["verifier"]) and "| fade |" in picks
    pairs = tiny["by_part"]["aesthetics"]["verifier"]["pairs"]
    assert 0 < pairs < render_results.PAIRS_FOR_INTERVAL and "aesthetics orders the verifier's pairs 0.00." in table
    monkeypatch.setattr(render_results, "PAIRS_FOR_INTERVAL", 1)  # enough pairs: an interval, bold off 0.5
    assert "aesthetics orders the verifier's pairs **0.00 [0.00, 0.00]**" in render_results.reward_hearing()


def test_sampler_sweep_picks_on_one_set_confirms_on_another_and_resumes(tmp_path, monkeypatch):
    import experiments.sampler_sweep as sw
    from experiments import render_results

    with pytest.raises(ValueError, match="--temperature must be a finite number > 0"):
        sw.SweepArguments(values=[1.0, 0.0])
    with pytest.raises(ValueError, match="--values must be two or more distinct"):
        sw.SweepArguments(setting="cfg_scale", values=[3.0, 3.0])
    with pytest.raises(ValueError, match="--confirm_first 10 overlaps"):
        sw.SweepArguments(decide_prompts=64, confirm_first=10)
    assert sw.SweepArguments(setting="cfg_scale").values[0] == 3.0  # the sampler's default is the reference
    a = sw.SweepArguments(values=[1.0, 0.5], decide_prompts=3, confirm_first=100, confirm_prompts=3, samples=1,
                          num_steps=2, output_dir=str(tmp_path / "out"),
                          results_dir=str(tmp_path / "results" / "generator"))  # fmt: skip
    result = sw.main(a)
    decide, confirm = result["decide"], result["confirm"]
    assert set(result["picked"]) == set(a.models) and confirm["prompts"] == [100, 102]
    confirmed = {"1"} | {f"{v:g}" for v in result["picked"].values()}
    for model in a.models:
        assert set(decide[model]) == {"1", "0.5"} and set(confirm[model]) == confirmed
        assert "vs_reference" not in decide[model]["1"]
        d = decide[model]["0.5"]["vs_reference"]["verifier"]  # paired over the same prompts: the means' difference
        assert d["prompts"] == 3
        assert d["mean"] == pytest.approx(decide[model]["0.5"]["verifier"] - decide[model]["1"]["verifier"], abs=2e-4)
        best = max(decide[model], key=lambda v: decide[model][v]["verifier"])
        assert decide[model][best]["verifier"] == decide[model][f"{result['picked'][model]:g}"]["verifier"]
    assert [decide[m]["1"]["decoding_iterations"] for m in a.models] == [8, 1]
    assert "synthcaps-cfm_minus_synthcaps" in confirm["controls_at_1"]
    monkeypatch.setattr(sw, "run_one", lambda *args, **kw: pytest.fail("a finished run was generated again"))
    assert sw.main(a) == result
    with pytest.raises(RuntimeError, match="made with other prompts, --samples or --num_steps"):
        sw.main(dataclasses.replace(a, samples=2))  # a finished run is not reused for other settings
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    table = render_results.sampler_sweep("temperature")
    assert "| 0–2 (picked on) | MaskAudioFlow | 0.5 |" in table and "| 100–102 (fresh) | CFM baseline | 1 |" in table
    assert "Fresh prompts at temperature 1: MaskAudioFlow − the same clips against shuffled prompts" in table


def test_continued_pretraining_tiny(tmp_path, monkeypatch):
    import experiments.continued_pretraining as cp
    from experiments import render_results
    from rewardflow import evaluate

    with pytest.raises(ValueError, match="--flow must be one of masked, cfm"):
        cp.ContinueArguments(flow="dit")
    with pytest.raises(ValueError, match="--warmup_steps must be in"):
        cp.ContinueArguments(max_steps=10, warmup_steps=10)
    a = cp.ContinueArguments(max_steps=2, warmup_steps=0, batch_size=4, num_train_examples=16, render_workers=1,
                             save_steps=1, decide_prompts=2, decide_samples=2, confirm_first=100, confirm_prompts=2,
                             confirm_samples=1, num_steps=2, output_dir=str(tmp_path / "out"),
                             cache_dir=str(tmp_path / "cache"),
                             results_dir=str(tmp_path / "results" / "generator"))  # fmt: skip
    result = cp.main(a)
    assert result["run"]["sittings"][-1]["to_step"] == 2 and "--init_from synthcaps" in result["run"]["command"]
    assert result["confirm"]["per_prompt"][str(tmp_path / "out" / "run" / "final")]["prompt_ids"] == [
        "synthcaps-heldout-000100",
        "synthcaps-heldout-000101",
    ]
    import torch
    from safetensors.torch import load_file

    bundled = load_file(str(cp.ROOT / "base_model" / "pretrained" / "synthcaps" / "flow" / "model.safetensors"))
    continued = load_file(str(tmp_path / "out" / "run" / "final" / "flow" / "model.safetensors"))
    assert bundled.keys() == continued.keys() and not all(torch.equal(bundled[k], continued[k]) for k in bundled)
    # A finished run resumes without training or generating again, and is not resumed with other settings.
    monkeypatch.setattr("base_model.pretrain.main", lambda *x: pytest.fail("a finished run was trained again"))
    monkeypatch.setattr(evaluate, "evaluate", lambda *x: pytest.fail("a finished report was generated again"))
    assert json.dumps(cp.main(a), sort_keys=True) == json.dumps(result, sort_keys=True)
    with pytest.raises(RuntimeError, match="max_steps: 2 -> 3"):
        cp.main(dataclasses.replace(a, max_steps=3))
    monkeypatch.setattr(render_results, "RESULTS", tmp_path / "results")
    table = render_results.continued_pretraining("masked")
    assert "| 100–101, 1 clips each | continued − bundled, paired |" in table
    assert "| 0–1, 2 clips each | synthcaps (bundled) |" in table and "for 2 steps × 4 clips" in table
