"""The bundled SynthCaps and SynthMusic checkpoints: present, small, loadable by name through the real loading
paths."""

import json
import logging
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = [
    ROOT / "base_model/pretrained/synthcaps",
    ROOT / "base_model/pretrained/synthcaps-cfm",
    ROOT / "reward_models/pretrained/synthcaps-clap",
    ROOT / "reward_models/pretrained/synthcaps-aesthetics",
    ROOT / "reward_models/pretrained/synthcaps-classifier",
    ROOT / "base_model/pretrained/synthmusic",
    ROOT / "base_model/pretrained/synthmusic-cfm",
    ROOT / "reward_models/pretrained/synthmusic-classifier",
]


@pytest.mark.parametrize("folder", BUNDLED, ids=lambda p: p.name)
def test_bundled_folder_has_weights_and_a_model_card(folder):
    assert folder.is_dir(), f"{folder} missing: rebuild with the scripts named in the README"
    assert list(folder.rglob("*.safetensors"))
    card = (folder / "README.md").read_text()
    assert "python bundled/" in card  # the command that made it
    assert not list(folder.rglob("*.pt")) and not list(folder.rglob("*.bin"))


def test_bundled_weights_fit_the_budget():
    total = sum(f.stat().st_size for d in BUNDLED for f in d.rglob("*.safetensors"))
    for folder in (BUNDLED[0], ROOT / "base_model/pretrained/synthmusic"):
        generator = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
        assert generator <= 30 * 2**20, (folder, generator)  # a bundled generator (VAE + MaskAudioFlow): <= 30 MB
    assert total <= 120 * 2**20, total


def test_synthcaps_pipeline_loads_by_name_and_generates():
    from base_model import MaskAudioFlowPipeline

    pipe = MaskAudioFlowPipeline.from_pretrained("synthcaps")
    out = pipe(["a high pitched beep repeating quickly"], num_iterations=4, num_steps=5, seed=0, vocode=False)
    assert out.latents.shape == (1, pipe.num_frames(), 20) and torch.isfinite(out.mel).all()
    metrics = json.loads((BUNDLED[0] / "metrics.json").read_text())
    assert metrics["steps"] > 0
    assert MaskAudioFlowPipeline.from_pretrained("synthcaps-cfm").model.config.flow_type == "cfm"


@pytest.mark.parametrize("name", ["clap", "aesthetics"])
def test_default_rewards_load_the_bundled_checkpoints_and_say_so(name, caplog):
    from reward_models import load_reward

    with caplog.at_level(logging.INFO):
        reward = load_reward(name)
    assert "bundled" in caplog.text
    wav = torch.randn(2, 64000, generator=torch.Generator().manual_seed(0)) * 0.05
    out = reward(wav, 16000, ["white noise", "a low tone"])
    assert torch.isfinite(out[name]).all()


def test_synthmusic_pipeline_generates_music_that_follows_its_prompts():
    """`from_pretrained("synthmusic")` generates; on held-out compositions its clips pass more of the music
    verifier's checks for their own prompts than for another prompt's (the build's own-vs-shuffled measurement, on
    fewer prompts and steps)."""
    import numpy as np

    from base_model import MaskAudioFlowPipeline
    from base_model.data.synthmusic import example
    from reward_models import load_reward

    pipe = MaskAudioFlowPipeline.from_pretrained("synthmusic")
    rows = [example(i, "heldout") for i in range(16)]
    with torch.inference_mode():
        wav = pipe([r["caption"] for r in rows], num_iterations=4, num_steps=10, seed=list(range(16))).waveforms
    assert (
        wav.shape[0] == 16 and wav.shape[1] >= 3.9 * 16000 and torch.isfinite(wav).all() and pipe.sample_rate == 16000
    )
    verifier = load_reward("music_verifier")
    own = verifier(wav, 16000, [r["caption"] for r in rows], attributes=[r["attributes"] for r in rows])["verifier"]
    shifted = [rows[(i + 5) % 16] for i in range(16)]
    other = verifier(wav, 16000, [r["caption"] for r in shifted], attributes=[r["attributes"] for r in shifted])
    assert float(own.mean()) - float(np.nanmean(other["verifier"].numpy())) > 0.15, (own.mean(), other["verifier"])
    assert json.loads((ROOT / "base_model/pretrained/synthmusic/metrics.json").read_text())["steps"] == 6000


def test_model_cards_say_what_their_measurements_and_corpus_call_for():
    """The cards' conditional paragraphs: the SynthMusic generator cards carry what a real music run needs (and the
    SynthCaps ones do not), and a classifier card names exactly the attributes it reads below chance on held-out
    compositions: the bundled SynthMusic one says it of mode, as its committed metrics do."""
    import re
    import sys

    sys.path.insert(0, str(ROOT))
    from bundled.measure_synthcaps import REAL_MUSIC_RUN
    from bundled.train_synthcaps_classifier import ClassifierArguments, ClassifierTrainingConfig, _card

    heading = REAL_MUSIC_RUN[1]
    for name in ("synthmusic", "synthmusic-cfm"):
        assert heading in (ROOT / "base_model" / "pretrained" / name / "README.md").read_text()
    for name in ("synthcaps", "synthcaps-cfm"):
        assert heading not in (ROOT / "base_model" / "pretrained" / name / "README.md").read_text()

    args = ClassifierTrainingConfig(output_dir="unused", report_to="none")
    music = ClassifierArguments(corpus="synthmusic")
    card = _card(args, music, {"heldout": {"mode_accuracy": 0.0, "tempo_accuracy": 0.9, "timbre_accuracy": 0.49}})
    assert "it reads mode, timbre below chance" in card
    assert "below chance" not in _card(args, music, {"heldout": {"mode_accuracy": 0.6}})
    committed = (ROOT / "reward_models" / "pretrained" / "synthmusic-classifier" / "README.md").read_text()
    metrics = json.loads(re.search(r"```json\n(.*?)\n```", committed, re.S).group(1))
    weak = sorted(
        k.removesuffix("_accuracy") for k, v in metrics["heldout"].items() if k.endswith("_accuracy") and v < 0.5
    )
    assert weak == ["mode"] and "it reads mode below chance" in committed
