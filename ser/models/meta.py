"""What every model bundle reads from its ``model.json``: labels, rate, window, pitch register."""

from __future__ import annotations

from typing import Any

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
