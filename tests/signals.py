"""Synthetic test signals shared by the test modules (imported as ``signals``)."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter


def voiced(seconds: float, *, f0: float = 200.0, sr: int = 16000, seed: int = 0,
           n_harmonics: int = 29) -> np.ndarray:
    """Harmonic, formant-filtered bursts (1.2 s on / 0.8 s off) over faint noise.

    Args:
        seconds: length in seconds.
        f0: fundamental frequency in Hz (with a slow ±10 % vibrato).
        sr: sample rate in Hz.
        seed: seed of the noise floor.
        n_harmonics: number of harmonics summed.

    Returns:
        float32 signal, peak 0.4.
    """
    t = np.arange(int(round(seconds * sr))) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.3 * t))) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, n_harmonics + 1))
    r, th = np.exp(-np.pi * 100 / sr), 2 * np.pi * 700 / sr
    y = lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], y)
    y = 0.4 * y / np.abs(y).max() * ((t % 2.0) < 1.2)
    y += 1e-3 * np.random.default_rng(seed).standard_normal(len(t))
    return y.astype(np.float32)
