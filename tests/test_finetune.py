"""Reward-weighted fine-tuning: weights, the trainer (all params change, LoRA keeps the base, reference at init),
bitwise resume after a kill, NaN losses, and every bad input the issue lists."""

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import TrainerCallback

from rewardflow.finetune import main, make_parser
from rewardflow.finetune_config import RewardFlowConfig
from rewardflow.objectives import effective_sample_size, finite_rows, resolve_reward, reward_weights
from rewardflow.rollout_table import put_column

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max_steps", "3", "--per_device_train_batch_size", "4", "--logging_steps", "1", "--save_steps", "100"]


# ------------------------------------------------------------------------------------------------ weights
def test_exp_weights_are_the_papers():
    r = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(reward_weights(r, [0, 0, 1], tau=0.1, weighting="exp"), np.exp(0.1 * r))


def test_exp_overflow_is_a_clear_error_and_safe_modes_stay_finite():
    r = np.array([0.0, 500.0, 1000.0])
    with pytest.raises(ValueError, match="self_normalized"):
        reward_weights(r, [0, 0, 0], tau=10.0, weighting="exp")
    for mode in ("self_normalized", "standardized", "clipped"):
        w = reward_weights(r, [0, 0, 0], tau=10.0, weighting=mode)
        assert np.isfinite(w).all() and w.min() >= 0 and math.isclose(w.mean(), 1.0), mode
    # self-normalised weights are exp(τ r) up to a constant, computed without overflow
    r = np.array([0.2, 0.4, 0.7])
    w = reward_weights(r, [0, 1, 2], tau=3.0, weighting="self_normalized")
    np.testing.assert_allclose(w / w[0], np.exp(3.0 * (r - r[0])))


@pytest.mark.parametrize("mode", ["exp", "self_normalized", "standardized", "advantage", "clipped", "topk"])
def test_equal_rewards_give_uniform_weights(mode):
    w = reward_weights(np.full(6, 0.37), [0, 0, 0, 1, 1, 1], tau=5.0, weighting=mode, top_k=1.0)
    assert np.isfinite(w).all() and np.ptp(w) == 0 and w[0] > 0
    assert effective_sample_size(w) == pytest.approx(1.0)


def test_standardized_is_per_prompt_and_clipped_is_bounded():
    r = np.array([0.0, 1.0, 10.0, 11.0])  # prompt 1's rewards are 10 higher, same spread
    w = reward_weights(r, ["a", "a", "b", "b"], tau=1.0, weighting="standardized")
    assert w[0] == pytest.approx(w[2]) and w[1] == pytest.approx(w[3]) and w[1] > w[0]
    w = reward_weights(np.linspace(-100, 100, 9), [0] * 9, tau=1.0, weighting="clipped", weight_clip=4.0)
    assert w.max() / w.min() == pytest.approx(16.0)


def test_advantage_weights_are_standardized_with_mean_one_per_prompt():
    r = np.array([0.0, 1.0, 3.0, 10.0, 30.0, 0.2])
    groups = ["a", "a", "a", "b", "b", "c"]
    w = reward_weights(r, groups, tau=1.5, weighting="advantage")
    assert w[:3].mean() == pytest.approx(1.0) and w[3:5].mean() == pytest.approx(1.0) and w[5] == 1.0
    assert w[0] < w[1] < w[2] and w[3] < w[4]
    s = reward_weights(r, groups, tau=1.5, weighting="standardized")  # the same weights, scaled per prompt
    np.testing.assert_allclose(w[:3] / s[:3], w[0] / s[0])
    np.testing.assert_allclose(w[3:5] / s[3:5], w[3] / s[3])


def test_topk_keeps_the_best_of_each_prompt():
    r = np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.8])
    w = reward_weights(r, [0, 0, 0, 1, 1, 1], tau=1.0, weighting="topk", top_k=0.34)  # ceil(0.34*3) = 2 each
    np.testing.assert_array_equal(w, [0, 1, 1, 1, 0, 1])


def test_nan_rows_dropped_with_count_or_error_past_threshold():
    r = np.array([0.1, np.nan, 0.3, np.inf])
    keep, dropped = finite_rows(r, max_nan_fraction=0.5)
    assert dropped == 2 and keep.tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="max_nan_fraction"):
        finite_rows(r, max_nan_fraction=0.25)


def test_reward_spec_resolution():
    table = {"reward/clap": np.array([0.5, 0.7]), "reward/aesthetics/PQ": np.array([4.0, 6.0])}
    r, _ = resolve_reward("clap:1,aesthetics/PQ:0.5", table)
    np.testing.assert_allclose(r, [2.5, 3.7])
    with pytest.raises(ValueError, match=r"Available: aesthetics/PQ, clap"):
        resolve_reward("loudness", table)


# ------------------------------------------------------------------------------------------------ resume checks
def _run_record(**objective):
    from rewardflow.finetune_config import RewardFlowConfig

    cfg = RewardFlowConfig(output_dir="unused", **objective)
    return {"model_config": {"model_type": "mask_audio_flow", "latent_channels": 8}, "use_peft": False,
            "objective": cfg.objective_settings(), "rollout": "outputs/rollout"}  # fmt: skip


def test_check_resume_reads_a_missing_setting_as_its_default(tmp_path, caplog):
    from rewardflow.finetune import check_resume

    old = _run_record()
    del old["objective"]["loss_cfg_scale"]  # a run written before the setting existed
    (tmp_path / "finetune_run.json").write_text(json.dumps(old))
    with caplog.at_level(logging.WARNING, logger="rewardflow.finetune"):
        check_resume(tmp_path, _run_record(), resuming=True)
    assert "changed objective" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="rewardflow.finetune"):
        check_resume(tmp_path, _run_record(loss_cfg_scale=3.0), resuming=True)
    assert "loss_cfg_scale: 1.0 -> 3.0" in caplog.text


def test_check_resume_stops_on_another_model_shape(tmp_path):
    from rewardflow.finetune import check_resume

    (tmp_path / "finetune_run.json").write_text(json.dumps(_run_record()))
    other = _run_record()
    other["model_config"]["latent_channels"] = 16
    with pytest.raises(ValueError, match="latent_channels: 8 -> 16"):
        check_resume(tmp_path, other, resuming=True)
    check_resume(tmp_path, other, resuming=False)  # a fresh start does not compare


# ------------------------------------------------------------------------------------ a real rollout table
@pytest.fixture(scope="module")
def rollout_dir(tmp_path_factory):
    """A real (tiny) rollout of the bundled model, scored by the verifier and a fake CLAP-like column."""
    from rewardflow.rollout import main as rollout_main
    from rewardflow.rollout import make_parser as rollout_parser

    out = tmp_path_factory.mktemp("rollout") / "r"
    argv = ["--output_dir", str(out), "--max_prompts", "4", "--num_generations", "2", "--num_iterations", "2"]
    argv += ["--num_steps", "2", "--batch_size", "4", "--rewards", "verifier", "--audio_format", "none"]
    (cfg,) = rollout_parser().parse_args_and_config(args=argv)
    rollout_main(cfg)
    return out


def edit_table(src: Path, dst: Path, fn) -> Path:
    """Copies a rollout and applies `fn(pyarrow.Table) -> Table` to every shard."""
    shutil.copytree(src, dst)
    for shard in (dst / "data").glob("shard-*.parquet"):
        pq.write_table(fn(pq.read_table(shard)), shard)
    return dst


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    values = pa.array(list(values), type=table.schema.field(name).type if name in table.column_names else None)
    return put_column(table, name, values)


def run(rollout, out, *extra, callbacks=None):
    args, model_args = make_parser().parse_args_and_config(
        args=["--rollout", str(rollout), "--output_dir", str(out), "--reward", "verifier", *FAST, *extra]
    )
    return main(args, model_args, callbacks=callbacks)


def state_of(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "flow" / "model.safetensors"))


class Snapshots(TrainerCallback):
    """Parameters before training and after each step (copies), for assertions."""

    def __init__(self):
        self.before, self.after = None, []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {k: v.detach().clone() for k, v in model.named_parameters()}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after.append({k: v.detach().clone() for k, v in model.named_parameters()})


def test_every_parameter_changes_and_parts_are_logged(rollout_dir, tmp_path):
    from base_model import MaskAudioFlowPipeline

    snap = Snapshots()
    metrics = run(rollout_dir, tmp_path / "ft", "--tau", "1.0", callbacks=[snap])
    assert metrics["steps"] == 3 and metrics["rows"] == 8 and metrics["nan_loss_steps"] == 0
    for k, v in snap.before.items():
        assert not torch.equal(v, snap.after[-1][k]), f"{k} did not change"
    log = metrics["last_log"]
    for key in ("loss/flow", "loss/reference", "rewards/verifier/mean", "weights/ess", "weights/max_min_ratio"):
        assert key in log and math.isfinite(log[key]), key
    first = json.loads(sorted((tmp_path / "ft").glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    assert first["log_history"][0]["loss/reference"] == 0.0  # at step 1 the policy is the reference
    # the final pipeline loads and holds the trained weights; the reference is in no checkpoint
    pipe = MaskAudioFlowPipeline.from_pretrained(tmp_path / "ft" / "final")
    trained = dict(pipe.model.named_parameters())
    assert all(torch.equal(trained[k], v) for k, v in snap.after[-1].items())
    ckpt = sorted((tmp_path / "ft").glob("checkpoint-*"))[-1]
    from safetensors.torch import load_file

    assert set(load_file(str(ckpt / "model.safetensors"))) == set(trained)
    card = (tmp_path / "ft" / "final" / "README.md").read_text()
    assert "verifier" in card and "τ = 1.0" in card and str(rollout_dir) in card


def test_advantage_trains_on_reward_differences_only(rollout_dir, tmp_path):
    # Equal rewards: every clip is its prompt's average, the loss weight w - 1 is 0 and the policy is the reference,
    # so no parameter moves, bit for bit; plain reward weighting would train on the same clips.
    flat = edit_table(rollout_dir, tmp_path / "flat", lambda t: set_column(t, "reward/verifier", [0.5] * t.num_rows))
    snap = Snapshots()
    run(flat, tmp_path / "adv", "--weighting", "advantage", "--tau", "1.0", callbacks=[snap])
    assert all(torch.equal(v, snap.after[-1][k]) for k, v in snap.before.items())
    for name, extra in (("std", ["standardized"]), ("half", ["advantage", "--advantage_baseline", "0.5"])):
        snap = Snapshots()  # plain weighting, or keeping half of the self-training: the same clips train
        run(flat, tmp_path / name, "--tau", "1.0", "--weighting", *extra, callbacks=[snap])
        assert not any(torch.equal(v, snap.after[-1][k]) for k, v in snap.before.items()), name
    # different rewards within each prompt: every parameter moves
    rng = np.random.default_rng(0)
    varied = edit_table(
        rollout_dir, tmp_path / "varied", lambda t: set_column(t, "reward/verifier", rng.random(t.num_rows))
    )
    snap = Snapshots()
    metrics = run(varied, tmp_path / "adv2", "--weighting", "advantage", "--tau", "1.0", callbacks=[snap])
    assert metrics["rows"] == 8
    assert not any(torch.equal(v, snap.after[-1][k]) for k, v in snap.before.items())
    assert metrics["last_log"]["weights/max_min_ratio"] > 1  # logged on the positive weights w, not on w - 1


def test_lora_keeps_base_weights_and_changes_every_adapter(rollout_dir, tmp_path):
    snap = Snapshots()
    run(rollout_dir, tmp_path / "lora", "--use_peft", "--lora_r", "4", "--lora_alpha", "8", callbacks=[snap])
    lora = [k for k in snap.before if "lora_" in k]
    base = [k for k in snap.before if "lora_" not in k]
    assert lora and base
    for k in base:
        assert torch.equal(snap.before[k], snap.after[-1][k]), f"base weight {k} changed"
    for k in lora:
        assert not torch.equal(snap.before[k], snap.after[-1][k]), f"adapter {k} did not change"
    final = tmp_path / "lora" / "final"
    assert (final / "adapter" / "adapter_model.safetensors").is_file()
    assert not any("lora" in k for k in state_of(final))  # merged
    hist = json.loads(sorted((tmp_path / "lora").glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    assert hist["log_history"][0]["loss/reference"] == 0.0  # adapters start at B = 0: policy == reference


class KillAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("killed")


@pytest.mark.parametrize("lora", [False, True])
def test_resume_after_kill_is_bitwise(rollout_dir, tmp_path, lora):
    extra = ["--max_steps", "4", "--save_steps", "2", "--use_cpu"] + (["--use_peft", "--lora_r", "4"] if lora else [])
    assert run(rollout_dir, tmp_path / "a", *extra)["resumed_from_step"] == 0
    with pytest.raises(KeyboardInterrupt):
        run(rollout_dir, tmp_path / "b", *extra, callbacks=[KillAt(3)])
    assert not (tmp_path / "b" / "final").exists()
    # a half-written newer checkpoint (no trainer_state.json) must be skipped by "latest"
    (tmp_path / "b" / "checkpoint-3").mkdir()
    resumed = run(rollout_dir, tmp_path / "b", *extra, "--resume_from_checkpoint", "latest")
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4  # its time per step is over 2 steps
    a, b = state_of(tmp_path / "a" / "final"), state_of(tmp_path / "b" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_warns_on_changed_objective_and_stops_on_changed_shape(rollout_dir, tmp_path, caplog):
    out = tmp_path / "r"
    run(rollout_dir, out, "--max_steps", "2", "--save_steps", "1")
    with caplog.at_level(logging.WARNING, logger="rewardflow.finetune"):
        run(rollout_dir, out, "--max_steps", "3", "--tau", "2.0", "--resume_from_checkpoint", "latest")
    assert "tau: 0.1 -> 2.0" in caplog.text
    with pytest.raises(ValueError, match="use_peft: False -> True"):
        run(rollout_dir, out, "--use_peft", "--resume_from_checkpoint", "latest")
    run_file = out / "finetune_run.json"
    state = json.loads(run_file.read_text())
    state["model_config"]["hidden_size"] = 999
    run_file.write_text(json.dumps(state))
    bundled = json.loads((ROOT / "base_model/pretrained/synthcaps/flow/config.json").read_text())["hidden_size"]
    with pytest.raises(ValueError, match=f"hidden_size: 999 -> {bundled}"):
        run(rollout_dir, out, "--resume_from_checkpoint", "latest")


def test_nan_loss_step_skipped_then_abort_after_k_in_a_row(rollout_dir, tmp_path):
    def nan_latents(rows):
        def fn(table):
            lat = table.column("latent").to_pylist()
            for i in range(len(lat)):
                if (
                    rows is None
                    or (table.column("prompt_id")[i].as_py(), table.column("sample_index")[i].as_py()) in rows
                ):
                    lat[i] = np.full(len(lat[i]) // 2, np.nan, np.float16).tobytes()
            return set_column(table, "latent", lat)

        return fn

    one = edit_table(rollout_dir, tmp_path / "one", nan_latents({("synthcaps-train-000000", 0)}))
    snap = Snapshots()
    m = run(one, tmp_path / "ft1", "--per_device_train_batch_size", "1", "--max_steps", "8", callbacks=[snap])
    assert m["nan_loss_steps"] == 1 and m["steps"] == 8
    skipped = [i for i in range(1, 8) if all(torch.equal(snap.after[i - 1][k], v) for k, v in snap.after[i].items())]
    assert len(skipped) == 1  # exactly one step left every weight untouched
    assert all(torch.isfinite(v).all() for v in snap.after[-1].values())
    every = edit_table(rollout_dir, tmp_path / "all", nan_latents(None))
    with pytest.raises(RuntimeError, match="2 steps in a row had a NaN/inf loss or gradient"):
        run(every, tmp_path / "ft2", "--max_nan_loss_steps", "2")


def test_nan_reward_rows_are_dropped_and_counted(rollout_dir, tmp_path):
    def fn(table):
        v = table.column("reward/verifier").to_pylist()
        v[0] = float("nan")
        return set_column(table, "reward/verifier", v)

    bad = edit_table(rollout_dir, tmp_path / "nan", fn)
    m = run(bad, tmp_path / "ft", "--max_nan_fraction", "0.5")
    assert m["dropped_nan_rows"] == 2 and m["rows"] == 6  # one per shard, two shards
    with pytest.raises(ValueError, match="max_nan_fraction"):
        run(bad, tmp_path / "ft2", "--max_nan_fraction", "0.1")


def test_bad_inputs_fail_before_training(rollout_dir, tmp_path):
    with pytest.raises(ValueError, match=r"no score column 'clap'.*Available: verifier"):
        run(rollout_dir, tmp_path / "x", "--reward", "clap")

    def fewer_channels(table):
        lat = [
            np.frombuffer(b, np.float16).reshape(-1, 20)[:, :16].tobytes() for b in table.column("latent").to_pylist()
        ]
        shapes = [[s[0], 16] for s in table.column("latent_shape").to_pylist()]
        return set_column(set_column(table, "latent", lat), "latent_shape", shapes)

    with pytest.raises(ValueError, match="16-channel latents but the model expects 20"):
        run(edit_table(rollout_dir, tmp_path / "c16", fewer_channels), tmp_path / "y")

    def shorter(table):
        lat = [np.frombuffer(b, np.float16).reshape(-1, 20)[:10].tobytes() for b in table.column("latent").to_pylist()]
        return set_column(set_column(table, "latent", lat), "latent_shape", [[10, 20]] * len(lat))

    with pytest.raises(ValueError, match="10-frame latents"):
        run(edit_table(rollout_dir, tmp_path / "t10", shorter), tmp_path / "z")
    with pytest.raises(FileNotFoundError, match="rewardflow/rollout.py"):
        run(tmp_path / "missing", tmp_path / "w")
    with pytest.raises(ValueError, match="--weighting must be one of"):
        run(rollout_dir, tmp_path / "v", "--weighting", "softmax")
    with pytest.raises(ValueError, match="self_normalized"):
        run(rollout_dir, tmp_path / "u", "--weighting", "exp", "--tau", "1e9")
    with pytest.raises(ValueError, match=r"--weighting advantage needs --beta >= --advantage_baseline \(1.0\)"):
        run(rollout_dir, tmp_path / "s", "--weighting", "advantage", "--beta", "0.5")
    with pytest.raises(ValueError, match=r"--advantage_baseline must be in \[0, 1\]"):
        run(rollout_dir, tmp_path / "s", "--weighting", "advantage", "--advantage_baseline", "2")
    assert not any((tmp_path / d).exists() for d in ("x", "y", "z", "u", "s"))  # nothing trained, nothing written


def test_rounds_roll_out_with_the_newest_policy_and_resume(rollout_dir, tmp_path):
    out = tmp_path / "rounds"
    all_metrics = run(rollout_dir, out, "--rounds", "2", "--max_steps", "2")
    assert set(all_metrics) == {1, 2}
    meta = json.loads((out / "round-2" / "rollout" / "run.json").read_text())
    assert meta["model"]["id"] == str(out / "round-1" / "final")
    assert meta["settings"]["seed"] == 1
    assert (out / "round-2" / "final" / "metrics.json").is_file()
    before = (out / "round-2" / "final" / "metrics.json").stat().st_mtime_ns
    run(rollout_dir, out, "--rounds", "2", "--max_steps", "2")  # finished rounds are skipped
    assert (out / "round-2" / "final" / "metrics.json").stat().st_mtime_ns == before


class ReferenceTerms(TrainerCallback):
    """Each training run's logged reference terms, one list per run (an online round is a run)."""

    def __init__(self):
        self.runs = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.runs.append([])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss/reference" in logs:
            self.runs[-1].append(logs["loss/reference"])


def test_rounds_with_the_previous_reference_start_at_their_reference(rollout_dir, tmp_path):
    """`--round_reference previous`: round 2's reference is round 1's model, so its first step's reference term is
    zero (policy and reference are the same weights at the same inputs); with the default reference (the start
    model) it is not, as round 1 has moved away from it."""
    terms = {}
    for reference in ("start", "previous"):
        out, cb = tmp_path / reference, ReferenceTerms()
        run(rollout_dir, out, "--rounds", "2", "--max_steps", "2", "--round_reference", reference, callbacks=[cb])
        terms[reference] = cb.runs[-1][0]
        card = (out / "round-2" / "final" / "README.md").read_text()
        named = str(out / "round-1" / "final") if reference == "previous" else "synthcaps"
        assert f"reference = frozen {named} |" in card
    assert terms["previous"] < 1e-9 < terms["start"]


def test_round_reference_is_checked_before_anything_runs(rollout_dir, tmp_path):
    from rewardflow.finetune import round_reference

    args = RewardFlowConfig(output_dir=str(tmp_path / "o"), rounds=2, round_reference="previous")
    assert round_reference(args, "synthcaps", "r1/final") == "r1/final"
    assert round_reference(dataclasses.replace(args, round_reference="start"), "synthcaps", "r1/final") == "synthcaps"
    with pytest.raises(ValueError, match="--round_reference must be 'start' or 'previous'"):
        RewardFlowConfig(output_dir="o", rounds=2, round_reference="last")
    with pytest.raises(ValueError, match=r"it needs --rounds >= 2 \(got 1\)"):
        RewardFlowConfig(output_dir="o", round_reference="previous")
    with pytest.raises(ValueError, match="and no --reference_model"):
        RewardFlowConfig(output_dir="o", rounds=2, round_reference="previous", reference_model="synthcaps")
    with pytest.raises(ValueError, match="--round_reference previous needs full fine-tuning"):
        run(rollout_dir, tmp_path / "lora", "--rounds", "2", "--round_reference", "previous", "--use_peft")
    assert not (tmp_path / "lora").exists()


DDP_SCRIPT = """
import hashlib, json, os, sys
sys.path.insert(0, {root!r})
from transformers import TrainerCallback
from rewardflow.finetune import main, make_parser

class Checksums(TrainerCallback):
    def __init__(self):
        self.sums = []
    def on_step_end(self, args, state, control, model=None, **kw):
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(v.detach().cpu().numpy().tobytes())
        self.sums.append(h.hexdigest())

cb = Checksums()
args, model_args = make_parser().parse_args_and_config()
main(args, model_args, callbacks=[cb])
from accelerate import PartialState
rank = PartialState().process_index
with open(os.path.join(args.output_dir, f"sums-{{rank}}.json"), "w") as f:
    json.dump(cb.sums, f)
"""


def test_two_process_ranks_hold_identical_parameters(rollout_dir, tmp_path):
    script = tmp_path / "ddp_finetune.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT)))
    out = tmp_path / "ddp"
    # `--multi_gpu` is torchrun underneath; without GPUs the two ranks form one CPU (gloo) DDP group.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", str(script)]
    cmd += ["--rollout", str(rollout_dir), "--output_dir", str(out), "--reward", "verifier", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((out / "sums-0.json").read_text())
    b = json.loads((out / "sums-1.json").read_text())
    assert len(a) == 3 and a == b and len(set(a)) == 3  # identical on both ranks, and changing every step
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["world_size"] == 2


def test_command_line_end_to_end(rollout_dir, tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        str(ROOT / "rewardflow/finetune.py"),
        "--rollout",
        str(rollout_dir),
        "--output_dir",
        str(out),
    ]
    cmd += ["--reward", "verifier", "--weighting", "topk", "--max_steps", "2", "--per_device_train_batch_size", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "final" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["dropped_topk_rows"] == 4 and metrics["weights_ess"] == 0.5
    assert (out / "final" / "pipeline.json").is_file() and (out / "final" / "README.md").is_file()

    # The same run in-process, checkpointing and logging every step, ends where the command line did (finetune.py's
    # default seed is 42); the change it made is far from a run at another seed's.
    same = ["--weighting", "topk", "--max_steps", "2", "--per_device_train_batch_size", "2", "--seed", "42"]
    run(rollout_dir, tmp_path / "in-process", *same, "--save_steps", "1", "--logging_steps", "1")
    run(rollout_dir, tmp_path / "seed-0", *same, "--seed", "0")
    base = state_of(ROOT / "base_model" / "pretrained" / "synthcaps")
    cli = state_of(out / "final")

    def distance(folder):  # to the command line's weights, relative to how far they moved from the base
        other = state_of(folder / "final")
        num = sum(float((other[k] - cli[k]).double().pow(2).sum()) for k in cli)
        return math.sqrt(num / sum(float((cli[k] - base[k]).double().pow(2).sum()) for k in cli))

    assert distance(tmp_path / "in-process") < 1e-3 and distance(tmp_path / "seed-0") > 0.1


def test_infinite_gradients_skip_the_step(tmp_path):
    """A finite loss with overflowing gradients (weights ~1e30) must not reach the optimizer."""
    from base_model import MaskAudioFlowPipeline
    from rewardflow.finetune_config import RewardFlowConfig
    from rewardflow.finetune_trainer import RewardFlowTrainer, RewardLatentDataset

    pipe = MaskAudioFlowPipeline.from_pretrained("synthcaps")
    g = torch.Generator().manual_seed(0)
    n, T = 8, pipe.num_frames()
    data = RewardLatentDataset(
        torch.randn(n, T, 20, generator=g), [torch.randn(5, 384, generator=g)] * n, [1e30] * n, [0.5] * n
    )
    args = RewardFlowConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, save_strategy="no")
    args.max_nan_loss_steps = 3
    before = {k: v.clone() for k, v in pipe.model.named_parameters()}
    trainer = RewardFlowTrainer(pipe.model, args, data)
    with pytest.raises(RuntimeError, match="3 steps in a row"):
        trainer.train()
    assert trainer.nan_loss_steps == 3
    assert all(torch.equal(before[k], v) for k, v in pipe.model.named_parameters())


def test_exp_weights_that_would_break_float32_training_are_refused():
    r = np.array([4.5, 4.8])  # aesthetics-scale rewards
    reward_weights(r, [0, 0], tau=1.0, weighting="exp")  # e^4.8: fine
    with pytest.raises(ValueError, match="self_normalized"):
        reward_weights(r, [0, 0], tau=10.0, weighting="exp")  # e^48: the gradient norm overflows float32


def test_guardrail_keeps_the_earlier_checkpoint_when_fidelity_worsens(rollout_dir, tmp_path, monkeypatch):
    """A synthetic run whose reward keeps rising while its Fréchet distance worsens past the bound: the guardrail
    keeps the last checkpoint within the bound, puts its weights in final/, and says so in the card."""
    from rewardflow import guardrail

    script = {0: (10.0, 0.1), 2: (10.5, 0.2), 4: (12.0, 0.3), 6: (15.0, 0.4)}  # step: (mel FD, reward)
    seen = {}

    def fake_evaluation(self, model):
        step = 2 * len(seen)
        seen[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        fd, reward = script[step]
        return {"mel_frechet": fd, "verifier": reward, "clap": 0.0}

    monkeypatch.setattr(guardrail.GuardEvaluator, "__call__", fake_evaluation)
    out = tmp_path / "guarded"
    metrics = run(rollout_dir, out, "--max_steps", "6", "--guard_every", "2", "--guard_num_prompts", "2",
                  "--guard_rewards", "clap", "--guard_max_fd_increase", "0.1")  # fmt: skip
    assert sorted(seen) == [0, 2, 4, 6] and metrics["guardrail"]["best_step"] == 2
    final = state_of(out / "final")
    assert all(torch.equal(final[k], v) for k, v in seen[2].items())  # the kept weights, not the last ones
    assert not all(torch.equal(final[k], v) for k, v in seen[6].items())
    history = json.loads((out / "guardrail.json").read_text())
    assert [r["step"] for r in history["history"]] == [0, 2, 4, 6] and history["best"]["step"] == 2
    assert "kept step 2 of 6" in (out / "final" / "README.md").read_text()
    logged = json.loads(sorted(out.glob("checkpoint-*/trainer_state.json"))[-1].read_text())["log_history"]
    assert any("guard/mel_frechet" in h for h in logged)  # reported to report_to like every other metric


def test_guard_rule_and_early_stop():
    from rewardflow.guardrail import GuardRule

    rule = GuardRule(select="clap", max_increase=0.2)
    history = [{"step": 0, "clap": 0.1, "mel_frechet": 10.0}, {"step": 1, "clap": 0.5, "mel_frechet": 13.0},
               {"step": 2, "clap": 0.3, "mel_frechet": 11.5}]  # fmt: skip
    assert rule.best(history)["step"] == 2  # step 1 is better on the reward but breaks the bound
    assert GuardRule(select="clap", max_increase=0.0).best(history)["step"] == 0  # only the start qualifies


def test_oracle_steps_measures_checkpoints_as_pipelines(rollout_dir, tmp_path):
    """`experiments/oracle_steps.py`: a checkpoint becomes a loadable pipeline with its own flow weights, bad
    folders are refused before any work, and the rollout's kept clips are scored per attribute."""
    from safetensors.torch import load_file

    from base_model import MaskAudioFlowPipeline
    from base_model.pipeline import resolve_pipeline_path
    from experiments.oracle_steps import OracleStepsArguments, checkpoint_pipeline, rollout_selection

    out = tmp_path / "ft"
    run(rollout_dir, out, "--max_steps", "2", "--save_steps", "1")
    with pytest.raises(ValueError, match="--checkpoints"):
        OracleStepsArguments(checkpoints=[str(out / "final")])  # a pipeline, not a checkpoint
    OracleStepsArguments(checkpoints=[str(out / "checkpoint-2")])
    folder = checkpoint_pipeline(out / "checkpoint-2")
    stamp = (Path(folder) / "flow" / "model.safetensors").stat().st_mtime_ns
    assert checkpoint_pipeline(out / "checkpoint-2") == folder  # made once: read back
    assert (Path(folder) / "flow" / "model.safetensors").stat().st_mtime_ns == stamp
    weights = out / "checkpoint-2" / "model.safetensors"
    shutil.copyfile(weights, tmp_path / "step-2.safetensors")
    shutil.copyfile(out / "checkpoint-1" / "model.safetensors", weights)  # as a restarted run rewrites checkpoint-N
    checkpoint_pipeline(out / "checkpoint-2")
    assert (Path(folder) / "flow" / "model.safetensors").read_bytes() == weights.read_bytes()  # made again
    shutil.copyfile(tmp_path / "step-2.safetensors", weights)
    assert checkpoint_pipeline(out / "checkpoint-2") == folder
    pipe = MaskAudioFlowPipeline.from_pretrained(folder)
    ckpt = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    base = load_file(str(resolve_pipeline_path("synthcaps") / "flow" / "model.safetensors"))
    mine = pipe.model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in ckpt.items())
    assert any(not torch.equal(ckpt[k], base[k]) for k in base)  # two steps moved it away from the base
    sel = rollout_selection(str(rollout_dir))
    assert sel["verifier"]["checked"] == 8 and sel["verifier"]["best"] >= sel["verifier"]["all"]
    share = sel["type"]["within_prompt_share"]  # None when every clip scored the same
    assert sel["type"]["checked"] == 8 and (share is None or 0 <= share <= 1)


def test_real_clip_control_table_holds_real_renders_of_the_same_prompts(rollout_dir, tmp_path, monkeypatch):
    """`experiments/real_clip_control.py`: the copy keeps every prompt and seed, its latents decode real renders
    (the verifier passes them, unlike the tiny model's clips), finetune.py trains on it, and `--seed` is the
    fine-tune's."""
    import pandas as pd

    import rewardflow.finetune
    from experiments.real_clip_control import RealClipArguments, evaluation_sets, main, real_table

    with pytest.raises(ValueError, match="--rollout"):
        RealClipArguments(rollout=str(tmp_path))
    with pytest.raises(ValueError, match="--compare_labels"):
        RealClipArguments(rollout=str(rollout_dir), compare=["a"], compare_labels=["x", "y"])
    with pytest.raises(ValueError, match="--loss_cfg_scale"):
        RealClipArguments(rollout=str(rollout_dir), loss_cfg_scale=-1.0)
    # The rollout's own prompts are evaluated from its first prompt (a held-out rollout starts at 1000, say).
    made = {"prompts": "synthcaps:heldout", "first_prompt": 1000, "max_prompts": 192}
    sets = evaluation_sets(RealClipArguments(rollout=str(rollout_dir), first_prompt=128, eval_prompts=256), made)
    assert sets == [("heldout", "synthcaps:heldout", 128, 256), ("trained_prompts", "synthcaps:heldout", 1000, 192)]
    table = real_table(rollout_dir, tmp_path / "real", "synthcaps")

    def read(folder):
        return pd.concat([pd.read_parquet(f) for f in sorted((folder / "data").glob("*.parquet"))], ignore_index=True)

    gen, real = read(rollout_dir), read(table)
    assert list(real["prompt_id"]) == list(gen["prompt_id"]) and list(real["seed"]) == list(gen["seed"])
    assert (real["latent"] != gen["latent"]).all() and list(real["latent_shape"].map(list)) == list(
        gen["latent_shape"].map(list)
    )
    assert real["reward/verifier"].mean() >= 0.8 > gen["reward/verifier"].mean()
    m = run(table, tmp_path / "ft", "--weighting", "topk", "--top_k", "0.5")
    assert math.isfinite(m["train_loss"])
    seen = []

    def stop(cfg):
        seen.append((cfg.seed, cfg.rollout))
        raise RuntimeError("stopped before training")

    monkeypatch.setattr(rewardflow.finetune, "finetune", stop)
    with pytest.raises(RuntimeError, match="stopped before training"):
        main(RealClipArguments(rollout=str(rollout_dir), output_dir=str(tmp_path / "control"), seed=3))
    assert seen == [(3, str(tmp_path / "control" / "rollout"))]


def test_loss_cfg_scale_fits_the_guided_velocity_of_the_sampler():
    """`guided_flow_output` at scale s is v_u + s·(v_c − v_u) of two separate passes at the same draws, its loss is
    the flow loss of that velocity, and at s = 1 it is the plain conditional loss. The doubled batch is another
    BLAS shape, so the comparison has a tolerance."""
    from base_model.generators import load_generator
    from base_model.training import collate_latent_text, encode_texts
    from rewardflow.finetune_trainer import guided_flow_output

    pipe = load_generator("synthcaps")
    model = pipe.model.eval()
    text = encode_texts(pipe.text_encoder, ["a loud rising sweep", "soft pink noise", "fast high beeps"])
    T, C = 32, model.config.latent_channels
    latents = torch.randn(3, T, C, generator=torch.Generator().manual_seed(1))
    inputs = collate_latent_text([{"latents": x, "text": h.float()} for x, h in zip(latents, text)])
    with torch.no_grad():
        out, v_ref = guided_flow_output(
            model, inputs, 3.0, lambda i, d: model(**i, **d), torch.Generator().manual_seed(0)
        )
        drawn = model.draw_flow_inputs(latents, torch.Generator().manual_seed(0), drop_text=False)
        drawn.pop("text_drop_mask")
        cond = model(**inputs, **drawn, text_drop_mask=torch.zeros(3, dtype=torch.bool))
        uncond = model(**inputs, **drawn, text_drop_mask=torch.ones(3, dtype=torch.bool))
        want = uncond.v_t + 3.0 * (cond.v_t - uncond.v_t)
        torch.testing.assert_close(out.v_t, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(v_ref, want, atol=1e-4, rtol=1e-4)  # the reference here is the same network
        assert (want - cond.v_t).abs().max() > 1e-2  # guidance changes the velocity: the check can tell them apart
        assert torch.equal(out.u_t, cond.u_t) and torch.equal(out.infill_mask, cond.infill_mask)
        from base_model.flow import masked_flow_loss

        M = out.v_t.shape[0] // 3
        loss = masked_flow_loss(want, cond.u_t, cond.infill_mask.repeat(M, 1)).view(M, 3).mean(0)
        torch.testing.assert_close(out.loss, loss, atol=1e-4, rtol=1e-4)
        one, _ = guided_flow_output(model, inputs, 1.0, None, torch.Generator().manual_seed(0))
        torch.testing.assert_close(one.loss, cond.loss, atol=1e-5, rtol=1e-4)


def test_loss_cfg_scale_trains_and_is_recorded(rollout_dir, tmp_path):
    snap = Snapshots()
    metrics = run(rollout_dir, tmp_path / "g", "--loss_cfg_scale", "3", "--tau", "1.0", callbacks=[snap])
    assert metrics["steps"] == 3 and math.isfinite(metrics["last_log"]["loss/flow"])
    assert all(not torch.equal(v, snap.after[-1][k]) for k, v in snap.before.items())  # the null prompt's too
    run_json = json.loads((tmp_path / "g" / "finetune_run.json").read_text())
    assert run_json["objective"]["loss_cfg_scale"] == 3.0
    assert "guided, v_u + 3·(v_c − v_u)" in (tmp_path / "g" / "final" / "README.md").read_text()
    with pytest.raises(ValueError, match="--loss_cfg_scale must be a finite number >= 0"):
        run(rollout_dir, tmp_path / "bad", "--loss_cfg_scale", "-1")
    assert not (tmp_path / "bad").exists()


def test_dpo_with_loss_cfg_scale_shares_each_pairs_draw_with_the_reference(rollout_dir, tmp_path):
    """DPO on the guided velocity's losses: at the first step the policy is the reference, so with one draw shared by
    the policy and the reference the implicit margin is 0 and the DPO term is log 2 for every pair (a draw not shared
    would give other losses and another value); training then moves the weights and is recorded."""
    snap = Snapshots()
    metrics = run(rollout_dir, tmp_path / "gdpo", "--objective", "dpo", "--dpo_beta", "50", "--loss_cfg_scale", "3",
                  "--logging_steps", "1", callbacks=[snap])  # fmt: skip
    state = max((tmp_path / "gdpo").glob("checkpoint-*/trainer_state.json"), key=lambda p: p.stat().st_mtime)
    first = json.loads(state.read_text())["log_history"][0]
    assert first["step"] == 1 and abs(first["loss/dpo"] - math.log(2)) < 1e-4, first
    assert first["dpo/implicit_accuracy"] == 0.0  # a margin of exactly 0 is not > 0
    assert metrics["steps"] == 3 and math.isfinite(metrics["last_log"]["loss/dpo"])
    assert any(not torch.equal(v, snap.after[-1][k]) for k, v in snap.before.items())
    run_json = json.loads((tmp_path / "gdpo" / "finetune_run.json").read_text())
    assert run_json["objective"]["objective"] == "dpo" and run_json["objective"]["loss_cfg_scale"] == 3.0
