"""What inference needs from a model bundle: the :class:`ModelBundle` protocol.

:class:`ser.models.bundle.Bundle` (log-mel networks and transformers) and the classical
bundle (:mod:`ser.models.classical`) both provide it; test doubles do too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class ModelBundle(Protocol):
    """What inference needs from a model bundle (see :class:`ser.models.bundle.Bundle`).

    Attributes:
        labels: emotion labels, in the order of the probability columns.
        sample_rate: the model's input rate (Hz).
        window_s: window length (s).
        window_samples: window length in samples at :attr:`sample_rate`.
        path: the bundle folder (its name names the model in the outputs).
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (always ``"fp32"`` for classical models).
        heavy: the model keeps every core busy by itself (a transformer backbone), so the
            features run inline rather than in worker processes.
        preferred_batch_size: windows per forward pass when the caller gives none.
        pitch_norm_hz: register (Hz) the model wants its input pitch-normalised to
            (:mod:`ser.signal.pitchnorm`); 0.0 when off.
    """

    labels: list[str]
    sample_rate: int
    window_s: float
    window_samples: int
    path: Path
    precision: str
    heavy: bool
    preferred_batch_size: int
    pitch_norm_hz: float

    def predict_proba(self, windows: np.ndarray, *, batch_size: int) -> np.ndarray:
        """float32 ``[n, window_samples]`` → float32 ``[n, n_labels]``."""
        ...

    def predict_proba_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                             batch_size: int) -> np.ndarray:
        """The probabilities of ``signal[s:s + window_samples]`` for each start sample ``s``
        (as :meth:`predict_proba` of those windows; a model may share work between
        overlapping windows)."""
        ...
