"""Every command answers --help, and runs end to end into tmp_path."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "base_model/generate.py",
    "base_model/train_vae.py",
    "base_model/pretrain.py",
    "rewardflow/rollout.py",
    "rewardflow/finetune.py",
    "bundled/build_synthcaps.py",
    "bundled/train_synthcaps_clap.py",
    "bundled/train_synthcaps_aesthetics.py",
    "bundled/measure_synthcaps.py",
    "experiments/alignment_demo.py",
    "experiments/alignment_study.py",
    "experiments/decoding_scaling.py",
    "experiments/masking_ablation.py",
    "experiments/head_ablation.py",
    "experiments/clap_level_probe.py",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    res = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "--output_dir" in res.stdout


@pytest.mark.parametrize(
    "script,flag",
    [
        ("rewardflow/evaluate.py", "--models"),
        ("rewardflow/agreement.py", "--referee"),
        ("experiments/benchmarks/finetune_step.py", "--preset"),
        ("experiments/benchmarks/vocoder.py", "--batch_size"),
        ("experiments/benchmarks/generation.py", "--lengths"),
        ("rewardflow/label.py", "--rollout"),
        ("rewardflow/train_reward.py", "--rollouts"),
        ("experiments/report.py", "--eval_dir"),
    ],
)
def test_help_other_commands(script, flag):
    res = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert flag in res.stdout


def test_generate_end_to_end(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "base_model/generate.py"),
            "--model",
            "random-tiny",
            "--num_steps",
            "2",
            "--num_iterations",
            "2",
            "--seconds",
            "0.5",
            "--prompts",
            "a beep",
            "white noise",
            "--output_dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [c["prompt"] for c in summary["clips"]] == ["a beep", "white noise"]
    import soundfile as sf

    for c in summary["clips"]:
        data, sr = sf.read(c["wav"])
        assert sr == 16000 and len(data) > 4000
    assert (tmp_path / "spectrograms.png").stat().st_size > 1000


def test_unknown_flag_is_an_error(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "base_model/generate.py"), "--nonsense", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode != 0


def test_console_command_dispatches():
    res = subprocess.run(
        [sys.executable, "-m", "rewardflow.cli", "evaluate", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "--models" in res.stdout
    res = subprocess.run([sys.executable, "-m", "rewardflow.cli", "train"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown command 'train'" in res.stderr


def test_the_flags_reference_in_docs_is_current():
    from rewardflow.cli import flags_reference

    assert (ROOT / "docs" / "cli.md").read_text() == flags_reference(), "run: rewardflow reference > docs/cli.md"
