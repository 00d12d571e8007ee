"""What inference needs from a model bundle: the :class:`ModelBundle` protocol.

:class:`ser.models.bundle.Bundle` (log-mel networks and transformers), the classical
bundle (:mod:`ser.models.classical`) and the dimensional bundle
(:mod:`ser.models.dimensional`) provide it; test doubles do too. What a model outputs per
window is named by :attr:`ModelBundle.output_prefix` and :attr:`ModelBundle.labels`
(:func:`output_columns`): ``p_<label>`` emotion probabilities, or ``d_<dimension>``
(arousal, dominance, valence) for a dimensional model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class ModelBundle(Protocol):
    """What inference needs from a model bundle (see :class:`ser.models.bundle.Bundle`).

    Attributes:
        labels: emotion labels (or dimensions), in the order of the output columns.
        output_prefix: prefix of the output columns: ``"p_"`` (probabilities, rows sum to
            1) or ``"d_"`` (dimensional values on the model's scale).
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
    output_prefix: str
    sample_rate: int
    window_s: float
    window_samples: int
    path: Path
    precision: str
    heavy: bool
    preferred_batch_size: int
    pitch_norm_hz: float

    def predict_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                       batch_size: int) -> np.ndarray:
        """The outputs float32 ``[N, n_labels]`` (columns :func:`output_columns`) of
        ``signal[s:s + window_samples]`` for each start sample ``s``, as the model gives
        them for those windows alone (a model may share work between overlapping windows)."""
        ...


def output_columns(bundle: ModelBundle) -> list[str]:
    """The window-table columns of a bundle's outputs: ``<output_prefix><label>`` per label,
    e.g. ``p_happy`` or ``d_arousal``."""
    return [f"{bundle.output_prefix}{lab}" for lab in bundle.labels]
