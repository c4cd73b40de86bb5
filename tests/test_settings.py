"""Settings checked before work: one test per class of mistake. Each entry point must stop within seconds, before it
loads a model or generates anything, with a message that names the flag and the fix, and leave what was already
written untouched."""

import json
import time
from pathlib import Path

import pytest

from rewardflow import evaluate as evaluate_cli
from rewardflow import finetune as finetune_cli
from rewardflow import rollout as rollout_cli


def _run(cli, *argv):
    parsed = cli.make_parser().parse_args_and_config(args=[str(a) for a in argv])
    return cli.main(*parsed)


def _refused(cli, argv, error, match, within=20.0):
    start = time.perf_counter()
    with pytest.raises(error, match=match):
        _run(cli, *argv)
    assert time.perf_counter() - start < within  # refused before any long work (not a timing claim: a bound)


@pytest.mark.parametrize(
    "cli, argv, match",
    [
        (rollout_cli, ["--cfg_scale", "nan"], "--cfg_scale must be a finite number"),
        (rollout_cli, ["--num_steps", "0"], "--num_steps must be an integer >= 1"),
        (evaluate_cli, ["--temperature", "0"], "--temperature must be a finite number > 0"),
        (rollout_cli, ["--method", "leapfrog"], "--method 'leapfrog' is not a torchdiffeq solver"),
        (rollout_cli, ["--max_nan_fraction", "2"], r"--max_nan_fraction must be in \[0, 1\]"),
        (rollout_cli, ["--num_generations", "0"], "--num_generations must be an integer >= 1"),
        (finetune_cli, ["--tau", "inf"], "--tau must be a finite number >= 0"),
        (finetune_cli, ["--beta", "-1"], "--beta must be a finite number >= 0"),
        (finetune_cli, ["--top_k", "0"], "--top_k is the fraction"),
        (evaluate_cli, ["--num_samples", "0"], "--num_samples and --best_of must be >= 1"),
        (evaluate_cli, ["--first_prompt", "-3"], "--first_prompt must be >= 0"),
    ],
)
def test_values_out_of_range_or_not_finite(cli, argv, match, tmp_path):
    _refused(cli, [*argv, "--output_dir", tmp_path / "out"], ValueError, match)
    assert not (tmp_path / "out").exists()


def test_paths_of_the_wrong_kind(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    _refused(
        rollout_cli, ["--output_dir", a_file, "--max_prompts", "1"], NotADirectoryError, "--output_dir .* is a file"
    )
    _refused(rollout_cli, ["--model", a_file, "--max_prompts", "1", "--output_dir", tmp_path / "r"], FileNotFoundError,
             "that is a file; pass the pipeline's folder")  # fmt: skip
    _refused(
        finetune_cli,
        ["--rollout", a_file, "--output_dir", tmp_path / "f"],
        NotADirectoryError,
        "--rollout .* is a file",
    )
    _refused(rollout_cli, ["--clap_checkpoint", tmp_path / "missing.pt", "--output_dir", tmp_path / "r"],
             FileNotFoundError, "--clap_checkpoint .* no such file")  # fmt: skip
    assert a_file.read_text() == "not a folder"


def test_rewards_the_prompts_cannot_support(tmp_path):
    table = tmp_path / "captions.csv"
    table.write_text("caption\na dog barks\nrain on a roof\n")
    _refused(rollout_cli, ["--prompts", table, "--rewards", "clap", "verifier", "--output_dir", tmp_path / "r"],
             ValueError, "drop 'verifier' from --rewards")  # fmt: skip
    _refused(rollout_cli, ["--prompts", table, "--caption_column", "text", "--output_dir", tmp_path / "r"],
             ValueError, "no column 'text' \\(--caption_column\\)")  # fmt: skip
    _refused(
        rollout_cli,
        ["--prompts", "synthcaps:test", "--output_dir", tmp_path / "r"],
        ValueError,
        "SynthCaps has the splits",
    )
    assert not (tmp_path / "r").exists()


def test_checkpoints_that_are_damaged_or_of_another_kind(tmp_path):
    import shutil

    from base_model.pipeline import resolve_pipeline_path

    damaged = tmp_path / "damaged"
    shutil.copytree(resolve_pipeline_path("synthcaps"), damaged)
    (damaged / "flow" / "model.safetensors").write_bytes(b"\x00" * 64)
    _refused(
        rollout_cli, ["--model", damaged, "--output_dir", tmp_path / "r"], ValueError, "not a readable safetensors"
    )
    other = tmp_path / "other"
    shutil.copytree(resolve_pipeline_path("synthcaps"), other)
    shutil.rmtree(other / "flow")
    shutil.copytree(other / "vae", other / "flow")  # a VAE where the flow model belongs
    _refused(
        rollout_cli,
        ["--model", other, "--output_dir", tmp_path / "r"],
        ValueError,
        "holds a 'mel_vae' model where a 'maskaudioflow'",
    )
    assert not (tmp_path / "r").exists()


def test_settings_that_contradict_a_rollout_being_resumed(tmp_path):
    out = tmp_path / "r"
    (out / "data").mkdir(parents=True)
    settings = rollout_cli.RolloutConfig(output_dir=str(out), max_prompts=1).generation_settings()
    (out / "run.json").write_text(json.dumps({"settings": settings}))
    (out / "data" / "shard-00000.parquet").write_bytes(b"kept")
    _refused(rollout_cli, ["--output_dir", out, "--max_prompts", "1", "--cfg_scale", "2"], RuntimeError,
             "cfg_scale: 3.0 -> 2.0[\\s\\S]*--overwrite true[\\s\\S]*Nothing was changed")  # fmt: skip
    assert json.loads((out / "run.json").read_text())["settings"] == settings
    assert (out / "data" / "shard-00000.parquet").read_bytes() == b"kept"


def test_finetune_refuses_a_missing_rollout_with_the_command_that_makes_it(tmp_path):
    _refused(finetune_cli, ["--rollout", tmp_path / "none", "--output_dir", tmp_path / "f"], FileNotFoundError,
             "rewardflow/rollout.py --output_dir")  # fmt: skip
    assert not Path(tmp_path / "f").exists()
