"""Synthetic test signals shared by the test modules (imported as ``signals``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
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


def tone_corpus(root: Path, *, split: Mapping[str, str], f0: Mapping[str, float], sr: int,
                n_per: int, max_s: float, seed: int = 0) -> pd.DataFrame:
    """A labelled corpus of harmonic tones whose pitch codes the class (``f0``: label → Hz),
    with a per-speaker pitch offset (±10 %), 0.3-``max_s`` s each, written under ``root``.

    Returns:
        ``path, speaker, label, split, duration_s, sample_rate`` (``split``: speaker → partition).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for spk, part in split.items():
        offset = rng.uniform(0.9, 1.1)
        for lab, hz in f0.items():
            for k in range(n_per):
                t = np.arange(int(rng.uniform(0.3, max_s) * sr)) / sr
                phase = 2 * np.pi * hz * offset * t
                y = sum(np.sin(h * phase) / h for h in (1, 2, 3)) * rng.uniform(0.05, 0.3)
                y = y + 0.005 * rng.standard_normal(len(t))
                path = Path(root) / f"{spk}_{lab}_{k}.wav"
                sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
                rows.append({"path": str(path), "speaker": spk, "label": lab, "split": part,
                             "duration_s": len(t) / sr, "sample_rate": sr})
    return pd.DataFrame(rows)
