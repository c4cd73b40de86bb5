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
