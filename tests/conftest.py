import os

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
