from pathlib import Path

import numpy as np


def mel(sr, n_fft, n_mels, fmin, fmax):
    f = Path(__file__).with_name(f"mel_{sr}_{n_fft}_{n_mels}_{int(fmin)}_{int(fmax)}.npy")
    return np.load(f)
