"""Rollout: table contents, resume after a crash, 1 vs 2 processes, rescoring, and every bad input it must survive."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rewardflow.rollout import main, make_parser
from rewardflow.rollout_table import latents_of, load_rollout

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--num_iterations", "2", "--num_steps", "2", "--batch_size", "4", "--num_generations", "2"]

REWARDS_PY = """
import math
import torch

def energy(waveforms, sample_rate, prompts, **kw):
    return waveforms.pow(2).mean(1)

def half_nan(waveforms, sample_rate, prompts, **kw):
    out = waveforms.pow(2).mean(1)
    out[::2] = math.nan
    return out

def all_nan(waveforms, sample_rate, prompts, **kw):
    return torch.full((len(prompts),), math.inf)

def wrong_count(waveforms, sample_rate, prompts, **kw):
    return torch.zeros(len(prompts) + 1)
"""


@pytest.fixture(autouse=True)
def user_rewards(tmp_path, monkeypatch):
    (tmp_path / "userrewards.py").write_text(REWARDS_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def run(out, *extra):
    (cfg,) = make_parser().parse_args_and_config(args=["--output_dir", str(out), *FAST, *extra])
    return main(cfg)


def test_rollout_table(tmp_path):
    out = tmp_path / "r"
    summary = run(out, "--max_prompts", "3", "--rewards", "verifier", "userrewards:energy")
    ds = load_rollout(out)
    assert len(ds) == summary["rows"] == 6
    assert len({(r["prompt_id"], r["sample_index"]) for r in ds}) == 6
    for col in (
        "prompt_id",
        "prompt",
        "sample_index",
        "seed",
        "latent",
        "audio_path",
        "attributes",
        "reward/verifier",
        "reward/energy",
    ):
        assert col in ds.column_names, col
    row = ds[0]
    lat = latents_of(row)
    assert lat.dtype == np.float16 and lat.shape[1] == 20
    assert (out / row["audio_path"]).is_file() and row["audio_path"].endswith(".flac")
    meta = json.loads(ds.info.description)
    assert meta["model"]["hash"] and meta["rewards"]["verifier"]["model_id"] == "synthcaps-verifier-v1"
    assert meta["settings"]["num_generations"] == 2 and "torch" in meta["versions"]
    assert set(summary["seconds_main_process"]) == {"generate", "decode", "vocode", "score", "write"}
    assert json.loads(row["attributes"])["events"]
    # the two samples of a prompt differ (different seeds)
    a, b = (latents_of(r) for r in ds if r["prompt_id"] == row["prompt_id"])
    assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() > 1e-2


def test_killed_rollout_resumes_without_duplicates_or_gaps(tmp_path):
    ref = tmp_path / "ref"
    run(ref, "--max_prompts", "5", "--rewards", "verifier")
    out = tmp_path / "out"
    run(out, "--max_prompts", "5", "--rewards", "verifier")
    shards = sorted((out / "data").glob("shard-*.parquet"))
    assert len(shards) == 3  # 10 items in chunks of 4
    shards[1].unlink()  # a shard never written ...
    shards[2].write_bytes(shards[2].read_bytes()[:100])  # ... and one torn mid-write
    (out / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_rollout(out)
    run(out, "--max_prompts", "5", "--rewards", "verifier")
    a, b = load_rollout(ref), load_rollout(out)
    assert len(b) == 10 and len({(r["prompt_id"], r["sample_index"]) for r in b}) == 10
    assert a["latent"] == b["latent"] and a["seed"] == b["seed"]


def test_two_processes_write_the_single_process_table(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--max_prompts", "3", "--rewards", "verifier", *FAST]  # 6 items, chunks of 4: uneven over 2 ranks
    run(one, *args[:4])
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # torchrun underneath; on a machine without GPUs the processes join one CPU group (gloo)
        "--num_processes",
        "2",
        str(ROOT / "rewardflow/rollout.py"),
        "--output_dir",
        str(two),
        *args,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_rollout(one), load_rollout(two)
    assert len(b) == 6
    assert json.loads((two / "summary.json").read_text())["processes"] == 2  # really two ranks, not one alone
    for col in ("prompt_id", "sample_index", "seed"):
        assert a[col] == b[col], col
    # Each rank batches its own share, so the clips come from other batch shapes: equal within float16 noise.
    for x, y in zip(a["latent"], b["latent"]):
        np.testing.assert_allclose(np.frombuffer(x, np.float16), np.frombuffer(y, np.float16), atol=2e-2)
    # The verifier reads attributes from the audio; a clip this close to its twin checks the same ones.
    np.testing.assert_allclose(a["reward/verifier"], b["reward/verifier"], atol=0.2)


def test_reward_nan_rows_kept_and_counted_then_abort(tmp_path):
    summary = run(tmp_path / "a", "--max_prompts", "2", "--rewards", "userrewards:half_nan")
    assert summary["reward/half_nan"]["nan"] == 2 and len(load_rollout(tmp_path / "a")) == 4
    assert math.isfinite(summary["reward/half_nan"]["mean"])
    with pytest.raises(RuntimeError, match="max_nan_fraction"):
        run(tmp_path / "b", "--max_prompts", "2", "--rewards", "userrewards:all_nan")


def test_reward_with_wrong_count_names_the_reward(tmp_path):
    with pytest.raises(ValueError, match="userrewards:wrong_count"):
        run(tmp_path, "--max_prompts", "1", "--rewards", "userrewards:wrong_count")


@pytest.mark.parametrize(
    "csv,match",
    [
        ("id,caption\na,a beep\nb,   \n", "empty or whitespace"),
        ("id,caption\na,a beep\na,a tone\n", "duplicate prompt ids"),
        ("id,text\na,a beep\n", "columns are"),
    ],
)
def test_bad_prompt_tables_fail_before_generation(tmp_path, csv, match):
    table = tmp_path / "prompts.csv"
    table.write_text(csv)
    with pytest.raises(ValueError, match=match):
        run(tmp_path / "out", "--prompts", str(table), "--id_column", "id", "--rewards", "verifier")
    assert not (tmp_path / "out" / "data").exists()


def test_other_settings_refused_with_a_diff_unless_overwrite(tmp_path):
    run(tmp_path, "--max_prompts", "1", "--rewards", "verifier")
    with pytest.raises(RuntimeError, match=r"cfg_scale: 3.0 -> 2.0"):
        run(tmp_path, "--max_prompts", "1", "--rewards", "verifier", "--cfg_scale", "2.0")
    run(tmp_path, "--max_prompts", "1", "--rewards", "verifier", "--cfg_scale", "2.0", "--overwrite", "true")
    settings = json.loads((tmp_path / "run.json").read_text())["settings"]
    assert settings["cfg_scale"] == 2.0 and "temperature" not in settings  # recorded only when not the trained 1
    with pytest.raises(RuntimeError, match=r"temperature: None -> 0.8"):
        run(tmp_path, "--max_prompts", "1", "--rewards", "verifier", "--cfg_scale", "2.0", "--temperature", "0.8")


def test_more_prompts_grow_a_rollout_in_place(tmp_path):
    """A larger --max_prompts keeps the shards already made and adds the rest; the table equals a fresh run's."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    run(ref, "--max_prompts", "5", "--rewards", "verifier")
    run(out, "--max_prompts", "3", "--rewards", "verifier")  # 6 items: one full shard of 4 and a shorter one
    first = (out / "data" / "shard-00000.parquet").stat().st_mtime_ns
    grown = run(out, "--max_prompts", "5", "--rewards", "verifier")
    assert grown["clips_generated_by_main_process"] == 6  # the short shard again (2 + 2) and the new one (2)
    assert (out / "data" / "shard-00000.parquet").stat().st_mtime_ns == first
    a, b = load_rollout(ref), load_rollout(out)
    assert len(b) == 10 and a["prompt_id"] == b["prompt_id"] and a["latent"] == b["latent"]
    assert json.loads((out / "run.json").read_text())["settings"]["max_prompts"] == 5
    with pytest.raises(RuntimeError, match=r"max_prompts: 5 -> 4"):  # fewer prompts would leave shards behind
        run(out, "--max_prompts", "4", "--rewards", "verifier")


def test_first_prompt_starts_the_rollout_later(tmp_path):
    """--first_prompt skips the prompts before it: its clips are the same prompts' clips in a rollout from 0, and
    it is a setting of the rollout (a rerun with another start is refused)."""
    run(tmp_path / "whole", "--max_prompts", "3", "--rewards", "verifier")
    whole = load_rollout(tmp_path / "whole")
    late = tmp_path / "late"
    run(late, "--max_prompts", "2", "--first_prompt", "1", "--rewards", "verifier")
    tail = load_rollout(late)
    assert list(tail["prompt_id"]) == list(whole["prompt_id"])[2:] and list(tail["seed"]) == list(whole["seed"])[2:]
    for a, b in zip(tail["latent"], list(whole["latent"])[2:]):  # other batch shapes: equal within float16 noise
        np.testing.assert_allclose(np.frombuffer(a, np.float16), np.frombuffer(b, np.float16), atol=2e-2)
    assert "first_prompt" not in json.loads((tmp_path / "whole" / "run.json").read_text())["settings"]
    with pytest.raises(RuntimeError, match=r"first_prompt: 1 -> None"):
        run(late, "--max_prompts", "2", "--rewards", "verifier")
    with pytest.raises(ValueError, match="--first_prompt must be >= 0"):
        run(tmp_path / "bad", "--first_prompt", "-1", "--rewards", "verifier")


def test_rescore_adds_columns_and_reports_unreadable_audio(tmp_path):
    run(tmp_path, "--max_prompts", "2", "--rewards", "verifier")
    before = load_rollout(tmp_path)
    broken = tmp_path / before[1]["audio_path"]
    broken.write_bytes(b"garbage")
    (cfg,) = make_parser().parse_args_and_config(
        args=[
            "--output_dir",
            str(tmp_path),
            *FAST,
            "--max_prompts",
            "2",
            "--rescore",
            "true",
            "--rewards",
            "userrewards:energy",
        ]
    )
    report = main(cfg)
    assert [(u["prompt_id"], u["sample_index"]) for u in report["unreadable"]] == [
        (before[1]["prompt_id"], before[1]["sample_index"])
    ]
    after = load_rollout(tmp_path)
    assert after["latent"] == before["latent"]  # nothing regenerated
    energy = after["reward/energy"]
    assert math.isnan(energy[1]) and all(math.isfinite(e) for i, e in enumerate(energy) if i != 1)
    assert after["reward/verifier"] == before["reward/verifier"]


def test_rescore_hears_clips_above_full_scale_at_the_scored_level(tmp_path, monkeypatch, caplog):
    """Clips louder than full scale are stored at peak 1 and the row keeps the gain: rescoring a level-sensitive
    reward gives back what the rollout scored. A table without the column is rescored with a warning."""
    import pyarrow.parquet as pq

    from base_model.vocoders import GriffinLimVocoder

    plain = GriffinLimVocoder.__call__

    def loud(self, mel):  # every clip peaks at 4x full scale
        wav = plain(self, mel)
        return 4.0 * wav / wav.abs().amax(1, keepdim=True).clamp_min(1e-6)

    monkeypatch.setattr(GriffinLimVocoder, "__call__", loud)
    out = tmp_path / "ro"
    run(out, "--max_prompts", "2", "--rewards", "userrewards:energy")
    before = load_rollout(out)
    gains = np.asarray(before["audio_gain"])
    assert (gains < 1).all()  # every clip was above full scale, so every one was scaled down when stored
    rescore_args = ["--output_dir", str(out), *FAST, "--max_prompts", "2", "--rescore", "true"]
    main(*make_parser().parse_args_and_config(args=[*rescore_args, "--rewards", "userrewards:energy"]))
    np.testing.assert_allclose(load_rollout(out)["reward/energy"], before["reward/energy"], rtol=1e-3)

    for shard in (out / "data").glob("shard-*.parquet"):  # the layout of tables written before the column
        pq.write_table(pq.read_table(shard).drop_columns(["audio_gain"]), shard)
    with caplog.at_level("WARNING", logger="rewardflow.rollout"):
        main(*make_parser().parse_args_and_config(args=[*rescore_args, "--rewards", "userrewards:energy"]))
    assert "predates the audio_gain column" in caplog.text
    quieter = np.asarray(load_rollout(out)["reward/energy"])
    np.testing.assert_allclose(quieter, np.asarray(before["reward/energy"]) * gains**2, rtol=1e-3)


def test_rollout_gives_the_caller_its_thread_count_back(tmp_path):
    """A rollout runs with --cpu_threads (1 by default), then restores the caller's count: online rounds fine-tune in
    the same process and would otherwise train on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run(tmp_path, "--max_prompts", "1", "--rewards", "verifier")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
