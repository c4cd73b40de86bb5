"""From listeners to rewards: the A/B labelling server, the preference table, the simulated listener, the
Bradley–Terry reward model and the DPO objective."""

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from rewardflow.label import LabelConfig, serve
from rewardflow.preferences import load_preferences, pair_id
from rewardflow.rollout import main as rollout_main
from rewardflow.rollout import make_parser as rollout_parser


@pytest.fixture(scope="module")
def rollout_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("feedback") / "ro"
    argv = ["--output_dir", str(out), "--max_prompts", "4", "--num_generations", "3", "--num_iterations", "2",
            "--num_steps", "2", "--batch_size", "6", "--rewards", "verifier", "clap"]  # fmt: skip
    rollout_main(*rollout_parser().parse_args_and_config(args=argv))
    return out


def fresh_copy(rollout_dir, tmp_path):
    import shutil

    dst = tmp_path / "ro"
    shutil.copytree(rollout_dir, dst, ignore=shutil.ignore_patterns("preferences"))
    return dst


def call(base, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"},
                                 method="POST" if data is not None else "GET")  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start(rollout, **kw):
    httpd = serve(LabelConfig(rollout=str(rollout), port=0, **kw))
    host, port = httpd.server_address[:2]
    return httpd, f"http://{host}:{port}"


def test_page_pairs_answers_and_restart(rollout_dir, tmp_path):
    ro = fresh_copy(rollout_dir, tmp_path)
    httpd, base = start(ro)
    assert httpd.server_address[0] == "127.0.0.1"  # this machine only, unless --host says otherwise
    status, page = call(base, "/")
    assert status == 200 and b"Which clip fits the prompt better?" in page
    status, body = call(base, "/api/next?labeller=ana")
    pair = json.loads(body)
    assert status == 200 and pair["progress"] == {"done": 0, "total": 4}  # cover each of the 4 prompts once
    assert pair["a"]["clip_id"].rsplit("/", 1)[0] == pair["b"]["clip_id"].rsplit("/", 1)[0]  # one prompt's clips
    status, audio = call(base, pair["a"]["audio_url"])
    assert status == 200 and audio[:4] == b"fLaC"
    status, png = call(base, pair["b"]["spectrogram_url"])
    assert status == 200 and png[:4] == b"\x89PNG"
    status, _ = call(base, "/api/answer", {"labeller": "ana", "clip_a": pair["a"]["clip_id"],
                                           "clip_b": pair["b"]["clip_id"], "choice": "a"})  # fmt: skip
    assert status == 200
    httpd.shutdown()
    table = load_preferences(ro)
    assert len(table) == 1 and table[0]["choice"] == "a" and table[0]["labeller"] == "ana"
    assert table[0]["pair_id"] == pair_id(pair["a"]["clip_id"], pair["b"]["clip_id"])
    # a restart reads back what was answered: the same pair is never asked again, another prompt comes next
    httpd, base = start(ro)
    nxt = json.loads(call(base, "/api/next?labeller=ana")[1])
    assert nxt["progress"]["done"] == 1 and nxt["pair_id"] != pair["pair_id"]
    assert nxt["a"]["clip_id"].rsplit("/", 1)[0] != pair["a"]["clip_id"].rsplit("/", 1)[0]
    httpd.shutdown()


def test_bad_ids_bodies_and_paths_get_clear_4xx(rollout_dir, tmp_path):
    ro = fresh_copy(rollout_dir, tmp_path)
    httpd, base = start(ro)
    pair = json.loads(call(base, "/api/next?labeller=bo")[1])
    good = {"labeller": "bo", "clip_a": pair["a"]["clip_id"], "clip_b": pair["b"]["clip_id"], "choice": "b"}
    cases = [
        (dict(good, clip_a="nope/0"), 404, "unknown clip id"),
        (dict(good, choice="maybe"), 400, "choice must be one of"),
        (dict(good, labeller="../etc"), 400, "labeller name"),
        (dict(good, clip_b=good["clip_a"]), 400, "two different clips of one prompt"),
    ]
    for body, code, message in cases:
        status, raw = call(base, "/api/answer", body)
        assert status == code and message in json.loads(raw)["error"], (body, raw)
    assert call(base, "/api/answer", raw=b"{not json")[0] == 400
    assert call(base, "/api/answer", raw=b"[1, 2]")[0] == 400
    assert call(base, "/api/answer", raw=b"x" * 5000)[0] == 413
    assert call(base, "/audio/../../run.json")[0] == 404  # audio only by clip id, never by path
    assert call(base, "/api/next?labeller=")[0] == 400
    assert call(base, "/elsewhere")[0] == 404
    httpd.shutdown()
    assert len(load_preferences(ro, answered_only=False)) == 0  # nothing bad was written


def test_concurrent_labellers_lose_and_duplicate_nothing(rollout_dir, tmp_path):
    ro = fresh_copy(rollout_dir, tmp_path)
    httpd, base = start(ro, cover_prompts=False)
    errors = []

    def labeller(name):
        try:
            for _ in range(5):
                p = json.loads(call(base, f"/api/next?labeller={name}")[1])
                body = {"labeller": name, "clip_a": p["a"]["clip_id"], "clip_b": p["b"]["clip_id"], "choice": "tie"}
                assert call(base, "/api/answer", body)[0] == 200
                assert call(base, "/api/answer", body)[0] == 200  # the same answer twice (a double click)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=labeller, args=(f"l{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    httpd.shutdown()
    assert not errors
    table = load_preferences(ro)
    assert len(table) == 20 and len({(r["labeller"], r["pair_id"]) for r in table}) == 20


def test_simulated_listener_answers_through_the_api(rollout_dir, tmp_path):
    from rewardflow.listeners import SimulatedListener
    from rewardflow.rollout_table import load_rollout

    ro = fresh_copy(rollout_dir, tmp_path)
    attrs = {r["prompt_id"]: r["attributes"] for r in load_rollout(ro)}
    httpd, base = start(ro, cover_prompts=False)
    assert SimulatedListener(base, attrs, error_rate=0.0).label(6) == 6
    assert SimulatedListener(base, attrs, name="loud", bias="louder", bias_strength=1.0).label(100) == 12
    httpd.shutdown()
    table = load_preferences(ro, answered_only=False)
    assert sorted({r["labeller"] for r in table}) == ["simulated:loud", "simulated:verifier"]


def test_reward_model_learns_a_known_preference(rollout_dir, tmp_path):
    """A listener who always prefers the louder clip: the Bradley–Terry head learns it (held-out pairs), and the
    trained model loads through load_reward and ranks loudness the same way."""
    from reward_models import load_reward
    from reward_models.verifier import active_rms_db
    from rewardflow.listeners import SimulatedListener
    from rewardflow.rollout_table import load_rollout, read_audio
    from rewardflow.train_reward import RewardTrainingConfig
    from rewardflow.train_reward import main as train_main

    ro = fresh_copy(rollout_dir, tmp_path)
    table = load_rollout(ro)
    httpd, base = start(ro, cover_prompts=False)
    SimulatedListener(base, {r["prompt_id"]: r["attributes"] for r in table}, name="loud", bias="louder",
                      bias_strength=1.0).label(100)  # fmt: skip
    httpd.shutdown()
    out = tmp_path / "rm"
    metrics = train_main(
        RewardTrainingConfig(
            rollouts=[str(ro)], output_dir=str(out), steps=300, heldout_fraction=0.0, select_step=False, ensemble=2
        )  # fmt: skip
    )
    assert metrics["pairs"] == 12 and metrics["labelled_pair_accuracy"] >= 0.9
    assert metrics["descriptors"] and [h["seed"] for h in metrics["heads"]] == [0, 1]
    card = (out / "README.md").read_text()  # the command that remakes it, whoever called the trainer
    assert f"python rewardflow/train_reward.py --rollouts {ro} --output_dir {out} --ensemble 2 --steps 300" in card
    assert "--ensemble 2" in card and "--heldout_fraction 0.0" in card
    reward = load_reward(f"preference:{out}")
    wavs = [read_audio(ro / r["audio_path"])[0] for r in table]  # as stored: what the listener heard
    n = max(len(w) for w in wavs)
    batch = torch.stack([torch.nn.functional.pad(torch.from_numpy(w), (0, n - len(w))) for w in wavs])
    scores = reward(batch, 16000, list(table["prompt"]))["preference"].numpy()
    loud = np.array([active_rms_db(w) for w in wavs])
    agree = [np.sign(scores[i] - scores[j]) == np.sign(loud[i] - loud[j])
             for i in range(len(wavs)) for j in range(len(wavs)) if i < j and table[i]["prompt_id"] == table[j]["prompt_id"]]  # fmt: skip
    assert np.mean(agree) >= 0.9
    assert (out / "README.md").is_file() and json.loads((out / "metrics.json").read_text())["pairs"] == 12
    # each head holds out its own prompts and keeps its best step on them
    held = train_main(RewardTrainingConfig(rollouts=[str(ro)], output_dir=str(tmp_path / "rm-held"), steps=60,
                                           heldout_fraction=0.5, ensemble=3, descriptors=False,
                                           select_step=True))  # fmt: skip
    heads = held["heads"]
    assert all(h["step"] % 25 == 0 or h["step"] == 60 for h in heads)
    assert all(0 <= h["heldout_pair_accuracy"] <= 1 for h in heads if h["heldout_pairs"])
    assert len({h["heldout_pairs"] for h in heads}) > 1 or len(heads) == 1  # different prompts held out per head
    assert not held["descriptors"] and load_reward(f"preference:{tmp_path / 'rm-held'}").head.config.num_heads == 3
    with pytest.raises(ValueError, match="--select_step true picks a step on held-out prompts"):
        RewardTrainingConfig(heldout_fraction=0.0, select_step=True)


def test_dpo_moves_likelihood_toward_winners(rollout_dir, tmp_path):
    """On pairs ranked by a reward, a few DPO steps lower the policy's flow loss on winners relative to losers, as
    measured against the frozen reference on the same draws."""
    from base_model.generators import load_generator
    from rewardflow.finetune import encode_prompts, load_pair_table
    from rewardflow.finetune import main as finetune_main
    from rewardflow.finetune import make_parser as finetune_parser
    from rewardflow.finetune_trainer import paired

    out = tmp_path / "dpo"
    argv = ["--rollout", str(rollout_dir), "--output_dir", str(out), "--objective", "dpo", "--pairs", "reward",
            "--reward", "verifier", "--dpo_beta", "50", "--max_steps", "40", "--learning_rate", "1e-3",
            "--per_device_train_batch_size", "4", "--logging_steps", "5", "--save_steps", "100", "--report_to", "none"]  # fmt: skip
    args, model_args = finetune_parser().parse_args_and_config(args=argv)
    metrics = finetune_main(args, model_args)
    assert metrics["steps"] == 40 and "dpo/implicit_accuracy" in metrics["last_log"]
    base, tuned = load_generator("synthcaps"), load_generator(out / "final")
    data = load_pair_table(args, rollout_dir, base)
    text = encode_prompts(base.text_encoder, data["prompts"])
    from base_model.training import collate_latent_text

    batch = collate_latent_text([{"latents": w.float(), "text": t.float()} for w, t in zip(data["latents"], text)])
    P = len(text)
    margins = []
    g = torch.Generator().manual_seed(0)
    for _ in range(8):  # average over draws: the flow loss is noisy per draw
        drawn = base.model.draw_flow_inputs(batch["latents"], generator=g, drop_text=False)
        drawn = {k: paired(v, P) for k, v in drawn.items()}
        drawn["text_drop_mask"] = torch.zeros(2 * P, dtype=torch.bool)
        both = {"latents": torch.cat([data["latents"].float(), data["latents_l"].float()]),
                "text_hidden_states": torch.cat([batch["text_hidden_states"]] * 2),
                "text_padding_mask": torch.cat([batch["text_padding_mask"]] * 2)}  # fmt: skip
        with torch.no_grad():
            lt = tuned.model.eval()(**both, **drawn).loss
            lr = base.model.eval()(**both, **drawn).loss
        margins.append(float(((lt[:P] - lt[P:]) - (lr[:P] - lr[P:])).mean()))
    assert np.mean(margins) < 0, margins  # winners became likelier than losers, relative to the reference


@pytest.mark.slow
def test_label_page_in_chromium(rollout_dir, tmp_path, browser):
    """A real browser: the page loads a pair, both clips play, spectrograms show, a click and a key press answer,
    and each answer is a row in the preferences table."""
    ro = fresh_copy(rollout_dir, tmp_path)
    httpd, base = start(ro)
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(base + "/?labeller=ana")
    page.wait_for_function("document.getElementById('progress').textContent.startsWith('0 of 4')", timeout=20000)
    first = page.inner_text("#prompt")
    page.wait_for_function(
        "['a', 'b'].every(s => document.getElementById('audio-' + s).readyState >= 1"
        " && document.getElementById('spec-' + s).complete && document.getElementById('spec-' + s).naturalWidth > 0)",
        timeout=30000,
    )
    durations = page.evaluate("['a', 'b'].map(s => document.getElementById('audio-' + s).duration)")
    assert all(d > 1.0 for d in durations), durations
    page.evaluate("document.getElementById('audio-a').play()")
    page.wait_for_function("document.getElementById('audio-a').currentTime > 0.05", timeout=20000)
    page.click("#btn-b")
    page.wait_for_function("document.getElementById('progress').textContent.startsWith('1 of 4')", timeout=20000)
    assert page.inner_text("#prompt") != first  # cover_prompts: the next pair is another prompt's
    page.keyboard.press("t")
    page.wait_for_function("document.getElementById('progress').textContent.startsWith('2 of 4')", timeout=20000)
    httpd.shutdown()
    table = load_preferences(ro, answered_only=False)
    assert sorted(r["choice"] for r in table) == ["b", "tie"] and {r["labeller"] for r in table} == {"ana"}
    assert errors == []


def test_head_step_selection_on_synthetic_pairs():
    """`fit` keeps the step with the best held-out pair accuracy; held-out pairs that are all ties choose nothing
    (the last step stays, its accuracy None), and without selection the last step's accuracy is reported."""
    from reward_models.preference import PreferenceRewardConfig, PreferenceRewardModel
    from rewardflow.train_reward import RewardTrainingConfig, fit

    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, generator=g)

    def pairs(n):  # the labeller prefers the clip whose embedding lies further along w
        a, b, t = (torch.randn(n, 8, generator=g) for _ in range(3))
        return a, b, t, ((a - b) @ w > 0).float()

    (ta, tb, tt, ty), (ha, hb, ht, hy) = pairs(256), pairs(128)
    # one clip table: the training pairs' clips, then the held-out pairs'; pairs name their two clips by index
    clips = {"audio": torch.cat([ta, tb, ha, hb]), "text": torch.cat([tt, tt, ht, ht])}
    train = {"a": torch.arange(256), "b": torch.arange(256, 512), "target": ty}
    held = {"a": torch.arange(512, 640), "b": torch.arange(640, 768), "target": hy}
    torch.manual_seed(0)
    model = PreferenceRewardModel(PreferenceRewardConfig(embed_dim=8, hidden_size=16))
    cfg = RewardTrainingConfig(steps=100, learning_rate=1e-2, select_step=True)
    _, best = fit(model, 0, clips, train, held, cfg)
    assert best["step"] % 25 == 0 and best["heldout_pair_accuracy"] > 0.75
    with torch.no_grad():
        margin = model(ha, ht) - model(hb, ht)
    assert ((margin > 0) == (hy > 0.5)).float().mean() == pytest.approx(best["heldout_pair_accuracy"])
    ties = {**held, "target": torch.full((128,), 0.5)}
    assert fit(model, 0, clips, train, ties, cfg)[1] == {"step": 100, "heldout_pair_accuracy": None}
    last = fit(model, 0, clips, train, held, RewardTrainingConfig(steps=30, select_step=False))[1]
    assert last["step"] == 30 and 0 <= last["heldout_pair_accuracy"] <= 1


def test_reward_recipes_study(rollout_dir, tmp_path, monkeypatch):
    """The recipe study trains each recipe × budget × seed on one embedding, scores it on both fresh sets as a
    multiple of CLAP's top-1 gain, resumes cell by cell, and rejects unknown recipes and incomplete loop folders."""
    import shutil

    from experiments import reward_recipes
    from experiments.reward_recipes import RecipeArguments, first_pairs
    from reward_models.clap import ClapReward
    from rewardflow.listeners import SimulatedListener
    from rewardflow.rollout_table import load_rollout
    from rewardflow.train_reward import RewardTrainingConfig, embed_clips, pair_table

    loop = tmp_path / "loop"
    label = fresh_copy(rollout_dir, tmp_path)
    httpd, base = start(label, cover_prompts=False)
    SimulatedListener(base, {r["prompt_id"]: r["attributes"] for r in load_rollout(label)}, name="loud",
                      bias="louder", bias_strength=1.0).label(100)  # fmt: skip
    httpd.shutdown()
    shutil.move(label, loop / "rollout-label")
    with pytest.raises(ValueError, match="lacks \\['rollout-fresh', 'rollout-confirm'\\]"):
        RecipeArguments(loop_dir=str(loop))
    for name in ("fresh", "confirm"):  # the tiny rollout stands in for both fresh sets
        shutil.copytree(rollout_dir, loop / f"rollout-{name}", ignore=shutil.ignore_patterns("preferences"))
    with pytest.raises(ValueError, match="--recipes \\['wide'\\] unknown"):
        RecipeArguments(loop_dir=str(loop), recipes=["wide"])
    with pytest.raises(ValueError, match="--seeds \\[0, 1\\] share heads"):
        RecipeArguments(loop_dir=str(loop), seeds=[0, 1])
    with pytest.raises(ValueError, match="up to 10 heads space the seeds at least 10 apart"):
        RecipeArguments(loop_dir=str(loop), recipes=["select_step", "ensemble10"], seeds=[0, 5])
    with pytest.raises(ValueError, match="has no results.json"):
        RecipeArguments(loop_dir=str(loop), large_prompts=4)
    (loop / "results.json").write_text(json.dumps({"settings": {"first_prompt": 128, "eval_prompts": 256,
                                                                "confirm_first_prompt": 512, "confirm_prompts": 128}}))  # fmt: skip
    with pytest.raises(ValueError, match="--large_first_prompt 600 overlaps .* start it at or after 640"):
        RecipeArguments(loop_dir=str(loop), large_prompts=4, large_first_prompt=600)

    # the first n pairs' clips are a prefix of the whole table's: the same features embed_clips gives them alone
    clap = ClapReward()
    every = pair_table(RewardTrainingConfig(rollouts=[str(loop / "rollout-label")]))
    whole, alone = first_pairs(embed_clips(every, clap, True), 5), embed_clips(every[:5], clap, True)
    assert whole.keys() == alone.keys() and all(
        torch.allclose(whole[k].float(), alone[k].float(), atol=1e-5) for k in whole
    )

    args = RecipeArguments(loop_dir=str(loop), output_dir=str(tmp_path / "out"), results_dir="",
                           recipes=["select_step", "fixed_100"], budgets=[6, 12], seeds=[0], bootstrap=100)  # fmt: skip
    result = reward_recipes.main(args)
    assert [(c["recipe"], c["budget"]) for c in result["cells"]] == [("fixed_100", 6), ("fixed_100", 12),
                                                                      ("select_step", 6), ("select_step", 12)]  # fmt: skip
    for cell in result["cells"]:
        for name in ("fresh", "confirm"):
            clap_top1 = result["clap"][name]["top1_gain"][0]
            want = cell[name]["top1_gain"][0] / clap_top1 if clap_top1 > 0 else None
            assert cell[f"ratio_{name}"] == (pytest.approx(want) if want is not None else None)
        # the two fresh sets are one rollout here, so pooling them changes nothing
        gap = cell["fresh"]["top1_gain"][0] - result["clap"]["fresh"]["top1_gain"][0]
        assert cell["pooled"]["top1_minus_clap"][0] == pytest.approx(gap)
        assert cell["confirm"]["top1_minus_2clap"][0] == pytest.approx(gap - result["clap"]["fresh"]["top1_gain"][0])
        assert cell["ratio_pooled"] == (
            pytest.approx(cell["ratio_fresh"]) if cell["ratio_fresh"] is not None else None
        )
    assert [c["steps"] for c in result["cells"] if c["recipe"] == "fixed_100"] == [[100] * 5] * 2

    def untouched(*_, **__):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("rewardflow.train_reward.train_model", untouched)
    again = reward_recipes.main(args)
    assert [c["ratio_fresh"] for c in again["cells"]] == [c["ratio_fresh"] for c in result["cells"]]
