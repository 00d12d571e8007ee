"""Base class of the model-bundle test doubles (ser.inference.protocol.ModelBundle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class BundleDouble:
    """The bundle attributes a test double does not vary: a float32 model of probabilities
    (``p_<label>`` columns) without pitch normalisation, and :meth:`predict_starts` cutting
    the windows for ``predict_proba``.

    Subclasses set ``labels``, ``sample_rate``, ``window_s``, ``window_samples`` and define
    ``predict_proba(windows, *, batch_size)``.
    """

    path = Path("bundle_double")
    precision = "fp32"
    heavy = False
    preferred_batch_size = 64
    pitch_norm_hz = 0.0
    output_prefix = "p_"
    speaker_norm = False

    def predict_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                       batch_size: int = 64) -> np.ndarray:
        """:meth:`predict_proba_starts` (the bundle interface's name)."""
        return self.predict_proba_starts(signal, starts, batch_size=batch_size)

    def predict_proba_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                             batch_size: int = 64) -> np.ndarray:
        """``predict_proba`` of the windows ``signal[s:s + window_samples]``."""
        view = np.lib.stride_tricks.sliding_window_view(signal, self.window_samples)
        windows = np.ascontiguousarray(view[np.asarray(starts, dtype=np.int64)])
        return self.predict_proba(windows, batch_size=batch_size)
