"""What every model bundle reads from its ``model.json``: labels, rate, window, pitch register,
and the calibration (temperature) it applies to its probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np

from ser.models.window import window_samples


class BundleMeta:
    """Properties of a bundle read from its parsed ``model.json`` (:attr:`meta`).

    Shared by :class:`ser.models.bundle.Bundle` and
    :class:`ser.models.dimensional.DimensionalBundle`, so each reads them the same way.
    """

    meta: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        """Output names (class labels), in the column order of the model's outputs."""
        return list(self.meta["labels"])

    @property
    def sample_rate(self) -> int:
        """Sampling rate in Hz that windows must have."""
        return int(self.meta["sample_rate"])

    @property
    def window_s(self) -> float:
        """Window length in seconds the model expects (its training window)."""
        return float(self.meta["window_s"])

    @property
    def window_samples(self) -> int:
        """Window length in samples: ``round(window_s * sample_rate)``."""
        return window_samples(self.window_s, self.sample_rate)

    @property
    def pitch_norm_hz(self) -> float:
        """Register (Hz) every speaker/recording is pitch-normalised to before the model
        (:mod:`ser.signal.pitchnorm`); 0 when the model was trained without normalisation."""
        return float(self.meta.get("pitch_norm_hz") or 0.0)


def calibration_temperature(meta: dict[str, Any]) -> float:
    """Softmax temperature stored in ``meta["calibration"]["temperature"]`` (1.0 when absent)."""
    return float((meta.get("calibration") or {}).get("temperature", 1.0))


def without_calibration(meta: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``meta`` without its ``calibration`` entry (the raw model's outputs)."""
    return {k: v for k, v in meta.items() if k != "calibration"}


def tempered_proba(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of probabilities: ``softmax(log(p) / T)`` per row.

    For a network ``log(softmax(z))`` differs from ``z`` by a constant per row, so this
    equals ``softmax(z / T)``; for models that give only probabilities (classical models,
    ensembles) the log-probabilities play the part of the logits.

    Args:
        proba: float ``[n, k]``, rows summing to 1.
        temperature: ``T > 0``; 1 returns the input (as float32).

    Returns:
        float32 ``[n, k]``, rows sum to 1.
    """
    p = np.asarray(proba, dtype=np.float64)
    if float(temperature) == 1.0 or p.size == 0:
        return p.astype(np.float32)
    z = np.log(np.clip(p, 1e-12, None)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
