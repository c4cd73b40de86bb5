"""Evaluation: same prompts and seeds for every model, so a model compared with itself differs by exactly zero."""

import json
import math

import numpy as np
import pytest

from rewardflow.evaluate import main, make_parser, paired_interval


def test_paired_interval_matches_a_direct_computation():
    a, b = np.array([0.1, 0.2, 0.4, np.nan]), np.array([0.3, 0.1, 0.8, 0.5])
    mean, lo, hi = paired_interval(a, b, n=4000)
    assert mean == pytest.approx(np.mean([0.2, -0.1, 0.4]))  # the NaN pair is excluded
    assert -0.1 - 1e-12 <= lo <= mean <= hi <= 0.4 + 1e-12  # within the smallest and largest difference


def test_model_against_its_copy(tmp_path):
    import shutil

    from base_model.pipeline import resolve_pipeline_path

    copy = tmp_path / "copy"
    shutil.copytree(resolve_pipeline_path("synthcaps"), copy)  # same weights, generated in a second pass
    out = tmp_path / "eval.json"
    argv = ["--models", "synthcaps", str(copy), "--max_prompts", "4", "--num_steps", "2", "--num_iterations", "2"]
    argv += ["--rewards", "verifier", "--output_json", str(out), "--bootstrap", "200"]
    (cfg,) = make_parser().parse_args_and_config(args=argv)
    report = main(cfg)
    assert json.loads(out.read_text())["table"] == report["table"]
    m = report["models"]["synthcaps"]
    assert 0 <= m["reward/verifier"] <= 1 and math.isfinite(m["mel_frechet"]) and m["mel_frechet"] > 0
    assert report["models"][str(copy)] == {**m, "seconds_per_clip": report["models"][str(copy)]["seconds_per_clip"]}
    diff = report["paired_vs_first"][str(copy)]["reward/verifier"]
    assert diff["mean"] == 0 and diff["ci95"] == [0, 0]
    assert "| `synthcaps` |" in report["table"]
