import os
from pathlib import Path

import pytest
import torch

TEST_SEED = 1234
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(2)


def gen(seed: int = TEST_SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize_zero_init(model: torch.nn.Module, std: float = 0.1, seed: int = TEST_SEED) -> torch.nn.Module:
    """AdaLN-Zero heads output exactly 0 at init; tests of sampling need a head that does something."""
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="session")
def text_encoder():
    from base_model.text_encoders import TransformersTextEncoder

    return TransformersTextEncoder()


# ------------------------------------------------------------------------------------ headless Chromium
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]  # fmt: skip


@pytest.fixture
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: these checks need Debian's chromium (`apt-get install chromium`).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("these checks need playwright: `pip install playwright` (no browser download: Debian's is used).")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
