"""VAE training and flow pretraining on Trainer: metrics, resume (same final weights), EMA, samples, build script."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from base_model import pretrain, train_vae

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_vae(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    args = train_vae.make_parser().parse_args_and_config(
        args=[
            "--output_dir",
            str(out),
            "--max_steps",
            "6",
            "--num_train_examples",
            "32",
            "--num_eval_examples",
            "8",
            "--hidden_channels",
            "32",
            "--per_device_train_batch_size",
            "8",
            "--save_steps",
            "100",
            "--report_to",
            "none",
            "--cache_dir",
            str(out / "cache"),
        ]
    )
    metrics = train_vae.main(*args)
    return out / "final", metrics


def test_vae_training_writes_a_scaled_model(small_vae):
    final, metrics = small_vae
    assert (final / "model.safetensors").is_file()
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["latent_scale"] != 1.0  # set from the training latents
    assert cfg["mel_mean"] < -1.0 and cfg["mel_std"] > 1.0  # input standardisation from the training log-mels
    assert metrics["latent_shape_per_clip"] == [125, 20]
    assert 0.5 < metrics["eval_latent_std"] < 2.0


def _pretrain_args(out, vae, steps, extra=()):
    return pretrain.make_parser().parse_args_and_config(
        args=[
            "--output_dir",
            str(out),
            "--vae",
            str(vae),
            "--max_steps",
            str(steps),
            "--num_train_examples",
            "16",
            "--per_device_train_batch_size",
            "4",
            "--save_steps",
            "2",
            "--logging_steps",
            "1",
            "--report_to",
            "none",
            "--hidden_size",
            "32",
            "--head_hidden_size",
            "32",
            "--seed",
            "3",
            "--cache_dir",
            str(Path(vae).parent / "cache"),
            "--warmup_steps",
            "0",
            *extra,
        ]
    )


def test_pretrain_resume_gives_the_same_weights_and_ema(small_vae, tmp_path):
    vae, _ = small_vae
    full = tmp_path / "full"
    pretrain.main(*_pretrain_args(full, vae, 4))
    # A run of the same command killed right after its step-2 checkpoint leaves exactly that checkpoint behind;
    # a later half-written checkpoint (no trainer_state.json) must be skipped by "latest".
    part = tmp_path / "part"
    shutil.copytree(full / "checkpoint-2", part / "checkpoint-2")
    (part / "checkpoint-3").mkdir()
    resumed = pretrain.main(*_pretrain_args(part, vae, 4, ["--resume_from_checkpoint", "latest"]))
    assert resumed["steps"] == 4
    a = load_file(str(full / "checkpoint-4" / "model.safetensors"))
    b = load_file(str(part / "checkpoint-4" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = (load_file(str(p / "checkpoint-4" / "ema.safetensors")) for p in (full, part))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    # the final pipeline holds the EMA weights, not the raw ones
    final = load_file(str(full / "final" / "flow" / "model.safetensors"))
    k = "head.final_layer.linear.weight"
    torch.testing.assert_close(final[k], ea[k])
    assert not torch.equal(final[k], a[k])


def test_pretrain_cfm_with_samples(small_vae, tmp_path):
    vae, _ = small_vae
    metrics = pretrain.main(*_pretrain_args(tmp_path, vae, 2, ["--flow_type", "cfm", "--sample_every", "2"]))
    assert (tmp_path / "samples" / "step-2" / "spectrograms.png").is_file()
    assert len(list((tmp_path / "samples" / "step-2").glob("*.wav"))) == 2
    assert metrics["peak_rss_gib"] > 0 and metrics["seconds_per_step"] > 0
    from base_model import MaskAudioFlowPipeline

    pipe = MaskAudioFlowPipeline.from_pretrained(tmp_path / "final")
    assert pipe.model.config.flow_type == "cfm"


def test_pretrain_without_vae_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_vae.py"):
        pretrain.main(*_pretrain_args(tmp_path, tmp_path / "novae", 1))


@pytest.mark.slow
def test_build_script_small_measures_and_resumes(tmp_path):
    cmd = [sys.executable, str(ROOT / "bundled/build_synthcaps.py"), "--small", "true", "--output_dir", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["decoder_ceiling"]["real_audio"]["verifier"] > 0.9
    for key in ("masked_8_iterations", "cfm_25_steps", "own_minus_shuffled", "cfm_minus_masked", "files_mb"):
        assert key in report, key
    measured = json.loads((tmp_path / "flow-masked" / "measured.json").read_text())
    assert [r["step"] for r in measured] and all(0 <= r["verifier"] <= 1 for r in measured)
    card = (tmp_path / "flow-masked" / "final" / "README.md").read_text()
    assert "bundled/build_synthcaps.py" in card and "train_vae.py" in card and "Sittings" in card
    for name in ("generated_vs_real.png", "vae_round_trip.png"):
        assert (tmp_path / "flow-masked" / "final" / name).stat().st_size > 0
    # the same command again: every stage is found finished, nothing is trained twice
    again = subprocess.run(cmd + ["--stages", "vae", "flow"], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    sittings = json.loads((tmp_path / "flow-masked" / "sittings.json").read_text())
    assert len(sittings) == 1
    # measuring again finds the report newer than both models and reuses it; retraining a model would not
    made = (tmp_path / "report.json").stat().st_mtime_ns
    again = subprocess.run(cmd + ["--stages", "measure"], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "report.json").stat().st_mtime_ns == made
    # the record so far: the VAE's ceiling and every flow run's checkpoints, also copied to --results_dir
    cmd_progress = cmd + ["--stages", "progress", "--results_dir", str(tmp_path / "published")]
    res = subprocess.run(cmd_progress, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((tmp_path / "published" / "build_progress.json").read_text())
    assert (
        record["vae_ceiling"]["prompts"] == 4 and 0 <= record["vae_ceiling"]["real_mel_vae_vocoder"]["verifier"] <= 1
    )
    assert set(record["runs"]) == {"flow-masked", "flow-cfm"}
    assert record["runs"]["flow-masked"]["checkpoints"] == measured


@pytest.mark.slow
def test_build_script_small_builds_the_music_pair(tmp_path):
    """`--corpus synthmusic`: the same stages on SynthMusic, measured by the music verifier, cards saying so."""
    cmd = [sys.executable, str(ROOT / "bundled/build_synthcaps.py"), "--small", "true", "--corpus", "synthmusic",
           "--output_dir", str(tmp_path)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["corpus"] == "synthmusic"
    assert {"tempo", "mode", "timbre"} <= set(report["decoder_ceiling"]["real_audio"])  # the music verifier's
    assert report["decoder_ceiling"]["real_audio"]["verifier"] > 0.9
    card = (tmp_path / "flow-masked" / "final" / "README.md").read_text()
    assert "SynthMusic checkpoint" in card and card.count("--dataset synthmusic") == 2


def test_bundled_names_that_are_not_built_say_how_to_build_them(tmp_path, monkeypatch):
    from base_model import pipeline

    monkeypatch.setitem(pipeline.BUNDLED_PIPELINES, "synthmusic", tmp_path / "synthmusic")
    with pytest.raises(FileNotFoundError, match="--corpus synthmusic .*--install true"):
        pipeline.resolve_pipeline_path("synthmusic")


def test_build_rejects_an_unknown_corpus():
    sys.path.insert(0, str(ROOT))
    from bundled.build_synthcaps import BuildArguments

    with pytest.raises(ValueError, match="--corpus must be one of synthcaps, synthmusic"):
        BuildArguments(corpus="synthjazz")


def _continue_args(out, init, steps, extra=()):
    return pretrain.make_parser().parse_args_and_config(
        args=["--output_dir", str(out), "--init_from", str(init), "--max_steps", str(steps),
              "--num_train_examples", "16", "--per_device_train_batch_size", "4", "--save_steps", "100",
              "--report_to", "none", "--seed", "3", "--warmup_steps", "0", "--cache_dir", str(out / "cache"), *extra]
    )  # fmt: skip


def test_init_from_continues_a_trained_pipeline(small_vae, tmp_path):
    from base_model import MaskAudioFlowPipeline

    vae, _ = small_vae
    pretrain.main(*_pretrain_args(tmp_path / "base", vae, 2))
    base = tmp_path / "base" / "final"
    before = load_file(str(base / "flow" / "model.safetensors"))
    meta = json.loads((base / "pipeline.json").read_text())
    meta["text_encoder"]["max_length"] = 24  # a pipeline whose text encoder is not at its defaults
    (base / "pipeline.json").write_text(json.dumps(meta))
    # No --hidden_size or --vae: the 32-wide architecture and the VAE come from the pipeline. With a zero learning
    # rate its weights come through unchanged (EMA included); with a positive one they move.
    pretrain.main(*_continue_args(tmp_path / "still", base, 2, ["--learning_rate", "0"]))
    still = load_file(str(tmp_path / "still" / "final" / "flow" / "model.safetensors"))
    assert before.keys() == still.keys() and all(torch.equal(before[k], still[k]) for k in before)
    pretrain.main(*_continue_args(tmp_path / "moved", base, 2, ["--learning_rate", "1e-2"]))
    pipe = MaskAudioFlowPipeline.from_pretrained(tmp_path / "moved" / "final")
    assert pipe.model.config.hidden_size == 32 and pipe.text_encoder.to_config() == meta["text_encoder"]
    moved = pipe.model.state_dict()
    assert not all(torch.equal(before[k], moved[k]) for k in before)
    assert (tmp_path / "moved" / "final" / "vae" / "model.safetensors").read_bytes() == (
        base / "vae" / "model.safetensors"
    ).read_bytes()


def test_init_from_refuses_flags_that_disagree(small_vae, tmp_path):
    vae, _ = small_vae
    pretrain.main(*_pretrain_args(tmp_path / "base", vae, 1))
    base = tmp_path / "base" / "final"
    for extra, flag in (
        (["--hidden_size", "64"], "--hidden_size 64"),
        (["--flow_type", "cfm"], "--flow_type cfm"),
        (["--vae", str(ROOT / "base_model" / "pretrained" / "synthcaps" / "vae")], "--vae"),
        (["--text_encoder", "other/encoder"], "--text_encoder other/encoder"),
    ):
        with pytest.raises(ValueError, match=f"{flag}.*leave --"):
            pretrain.main(*_continue_args(tmp_path / "x", base, 1, extra))
    # the same value as the checkpoint's is not a disagreement
    assert pretrain.main(*_continue_args(tmp_path / "ok", base, 1, ["--hidden_size", "32"]))["steps"] == 1


def test_pretrain_time_budget_stops_on_a_checkpoint(small_vae, tmp_path):
    vae, _ = small_vae
    # A zero-second budget ends the sitting at the first step's end, with a checkpoint (EMA included) to resume from.
    metrics = pretrain.main(*_pretrain_args(tmp_path, vae, 50, ["--max_train_seconds", "1e-9", "--save_steps", "100"]))
    assert metrics["steps"] == 1
    assert (tmp_path / "checkpoint-1" / "ema.safetensors").is_file()
    assert pretrain.main(*_pretrain_args(tmp_path, vae, 3, ["--resume_from_checkpoint", "latest"]))["steps"] == 3


def test_parallel_rendering_matches_one_process(tmp_path):
    from base_model.training import synthcaps_mels

    one, rows = synthcaps_mels("validation", 130, cache_dir=tmp_path / "a", workers=1)
    two, rows2 = synthcaps_mels("validation", 130, cache_dir=tmp_path / "b", workers=2)
    assert rows == rows2 and one.shape == two.shape == (130, 80, 251)
    # Each chunk of 64 clips is the same computation in either mode; only the thread count differs.
    assert float(abs(one.astype("float32") - two.astype("float32")).max()) < 1e-2


def test_corpus_text_encoding_matches_one_prompt_at_a_time():
    from base_model.text_encoders import TransformersTextEncoder
    from base_model.training import encode_texts

    enc = TransformersTextEncoder()
    captions = ["a quiet beep", "brown noise followed by a rising sweep", "a quiet beep", "a loud click, then hiss"]
    batched = encode_texts(enc, captions)
    assert len(batched) == 4 and torch.equal(batched[0], batched[2])
    for caption, hidden in zip(captions, batched):
        one = enc([caption])
        torch.testing.assert_close(hidden.float(), one.hidden_states[0][one.padding_mask[0]], atol=2e-3, rtol=0)


def test_build_flow_flags_reach_pretraining(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bundled.build_synthcaps import BuildArguments, flow_argv

    a = BuildArguments(batch_size=256, learning_rate=8e-4, lr_schedule="constant_with_warmup", flow_seconds=320,
                       flow_save_steps=500, render_workers=15, text_encoder="my/encoder")  # fmt: skip
    args, model, data = pretrain.make_parser().parse_args_and_config(args=flow_argv(a, tmp_path, tmp_path, "masked"))
    assert (args.per_device_train_batch_size, args.learning_rate, args.max_train_seconds) == (256, 8e-4, 320)
    assert args.lr_scheduler_type == "constant_with_warmup" and args.save_steps == 500 and not args.bf16
    assert (data.render_workers, model.text_encoder) == (15, "my/encoder")
