"""The bundled SynthCaps checkpoints: present, small, loadable by name through the real loading paths."""

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
    generator = sum(f.stat().st_size for f in BUNDLED[0].rglob("*.safetensors"))
    assert generator <= 30 * 2**20, generator  # the bundled generator (VAE + MaskAudioFlow): at most 30 MB
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
