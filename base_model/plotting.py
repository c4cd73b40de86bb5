"""Spectrogram figures (paper Figure 4 style) written with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import torch


def save_spectrograms(
    path: str | Path, mels: list[torch.Tensor], titles: list[str], sample_rate: int = 16000, hop_length: int = 256
) -> None:
    """Stacks log-mels `(n_mels, frames)` vertically into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(mels), 1, figsize=(8, 2.0 * len(mels)), squeeze=False)
    for ax, mel, title in zip(axes[:, 0], mels, titles):
        mel = mel.detach().float().cpu()
        seconds = mel.shape[-1] * hop_length / sample_rate
        ax.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma", extent=[0, seconds, 0, mel.shape[0]])
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
