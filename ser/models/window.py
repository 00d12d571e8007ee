"""The model window: its length in samples, cutting an utterance to it, the feature config.

Shared by training, evaluation, calibration and inference, so that every stage cuts
utterances and configures the log-mel front end the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ser.signal.spectrogram import DEFAULT_FEATURES

#: Feature kind and per-window normalisation implemented by :class:`ser.models.nets.LogMelClassifier`.
FEATURE_KIND = "log_mel"
NORMALIZATION = "per_window_standardize"


def window_samples(window_s: float, sample_rate: int) -> int:
    """Window length in samples: ``round(window_s * sample_rate)`` (used by training and inference)."""
    n = int(round(float(window_s) * int(sample_rate)))
    if n <= 0:
        raise ValueError(f"window_s={window_s} at {sample_rate} Hz gives no samples; use window_s > 0")
    return n


def fit_window(wave: np.ndarray, n_samples: int, *,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Cut or pad one utterance to exactly one model window.

    The rule for utterances of any length (used by training, validation and evaluation):
    longer ones are cropped, shorter ones are zero-padded on both sides (an odd number of
    padding samples puts the extra zero at the end). Without ``rng`` the window is
    centred (deterministic: validation, evaluation); with ``rng`` the crop
    start, or the utterance's position inside the padded window, is uniform at random
    (training; this doubles as a time-shift augmentation).

    Args:
        wave: float32 ``[T]`` samples.
        n_samples: window length in samples.
        rng: numpy generator for a random position (``None``: centre).

    Returns:
        float32 ``[n_samples]`` (a new array).
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"fit_window: expected a mono waveform [T]; got shape {wave.shape}")
    extra = abs(len(wave) - n_samples)
    shift = extra // 2 if rng is None else int(rng.integers(0, extra + 1))
    if len(wave) >= n_samples:
        return wave[shift:shift + n_samples].copy()
    out = np.zeros(n_samples, dtype=np.float32)
    out[shift:shift + len(wave)] = wave
    return out


def features_config(**overrides: Any) -> dict[str, Any]:
    """Full log-mel feature config: :data:`ser.signal.spectrogram.DEFAULT_FEATURES` plus overrides.

    Returns:
        ``{"kind": "log_mel", "normalization": "per_window_standardize", n_mels, n_fft,
        hop_length, fmin, fmax, top_db}`` as stored in ``model.json``.
    """
    unknown = set(overrides) - set(DEFAULT_FEATURES) - {"kind", "normalization"}
    if unknown:
        raise ValueError(f"features: unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted(DEFAULT_FEATURES)}")
    cfg = {"kind": FEATURE_KIND, "normalization": NORMALIZATION, **DEFAULT_FEATURES, **overrides}
    if cfg["kind"] != FEATURE_KIND or cfg["normalization"] != NORMALIZATION:
        raise ValueError(f"features: only kind={FEATURE_KIND!r} with normalization="
                         f"{NORMALIZATION!r} is implemented; got {cfg['kind']!r}/{cfg['normalization']!r}")
    return cfg


def checked_starts(starts: np.ndarray, *, signal_samples: int, window_samples: int) -> np.ndarray:
    """Window start samples as int64, each window ``[s, s + window_samples)`` inside the signal.

    Raises:
        ValueError: a window outside a signal of ``signal_samples`` samples.
    """
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) and (starts.min() < 0 or starts.max() + window_samples > signal_samples):
        raise ValueError(f"window starts must lie in [0, {signal_samples - window_samples}] for a signal of "
                         f"{signal_samples} samples and {window_samples}-sample windows")
    return starts


def windows_at(signal: np.ndarray, starts: np.ndarray, *, window_samples: int) -> np.ndarray:
    """The windows ``signal[s:s + window_samples]`` stacked, contiguous ``[N, window_samples]``.

    Raises:
        ValueError: a window outside ``signal`` (:func:`checked_starts`).
    """
    starts = checked_starts(starts, signal_samples=len(signal), window_samples=window_samples)
    view = np.lib.stride_tricks.sliding_window_view(np.asarray(signal), window_samples)
    return np.ascontiguousarray(view[starts])


def float32_audio(windows: np.ndarray) -> np.ndarray:
    """Windows of float audio as float32, checked finite (the model's input contract).

    Raises:
        ValueError: integer samples (PCM not scaled to [-1, 1]), or NaN / inf samples.
    """
    arr = np.asarray(windows)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"windows must be float audio in [-1, 1]; got dtype {arr.dtype} "
                         "(convert PCM integers with x / 32768)")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError("windows contain NaN or inf samples; clean the audio first")
    return arr
