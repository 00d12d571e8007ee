"""What inference needs from a model bundle: the :class:`ModelBundle` protocol, and
:class:`SpeakerNormBundle` for a bundle that z-scores its features with a speaker reference.

:class:`ser.models.bundle.Bundle` (log-mel networks and transformers), the classical
bundle (:mod:`ser.models.classical`) and the dimensional bundle
(:mod:`ser.models.dimensional`) provide :class:`ModelBundle`; test doubles do too. What a
model outputs per window is named by :attr:`ModelBundle.output_prefix` and
:attr:`ModelBundle.labels` (:func:`output_columns`): ``p_<label>`` emotion
probabilities, or ``d_<dimension>`` (arousal, dominance, valence) for a dimensional
model. A classical bundle trained with ``speaker_norm`` also provides
:class:`SpeakerNormBundle` (:func:`needs_reference`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

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
        speaker_norm: its features are z-scored with statistics of the speaker's own
            audio, so it needs a reference first (:class:`SpeakerNormBundle`).
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
    speaker_norm: bool

    def predict_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                       batch_size: int) -> np.ndarray:
        """The outputs float32 ``[N, n_labels]`` (columns :func:`output_columns`) of
        ``signal[s:s + window_samples]`` for each start sample ``s``, as the model gives
        them for those windows alone (a model may share work between overlapping windows)."""
        ...


class SpeakerNormBundle(ModelBundle, Protocol):
    """A bundle whose features are z-scored with statistics of the speaker's own audio
    (:class:`ser.models.classical.bundle.ClassicalBundle` trained with ``speaker_norm``).

    Attributes:
        reference: the statistics in use, ``{feature_set: (mean, std)}``, or None.
    """

    reference: Mapping[str, tuple[np.ndarray, np.ndarray]] | None

    def window_features(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """``{feature_set: float32 [n, d]}`` of float32 ``[n, window_samples]`` windows."""
        ...

    def features_at(self, signal: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
        """``{feature_set: float32 [N, d]}`` of the windows ``signal[s:s + window_samples]``,
        as :meth:`ModelBundle.predict_starts` computes them (block-pooled sets from one
        pass over ``signal``)."""
        ...

    def with_reference(self, reference: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> SpeakerNormBundle:
        """A copy that z-scores the features with ``{feature_set: (mean, std)}``."""
        ...


@runtime_checkable
class FeatureJobBundle(ModelBundle, Protocol):
    """A bundle whose window features are computed apart from the model (the classical
    bundle): windowed inference runs :attr:`block_features` in the feature worker
    processes, beside the prosody, and the model on their result in the main process.

    Attributes:
        block_features: a picklable callable ``(signal, starts) -> {feature_set: [N, d]}``
            (the features of ``signal[s:s + window_samples]``).
    """

    block_features: Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]

    def predict_features(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        """The outputs float32 ``[N, n_labels]`` from :attr:`block_features`' result."""
        ...


def needs_reference(bundle: ModelBundle) -> bool:
    """Whether ``bundle`` needs a speaker reference (a :class:`SpeakerNormBundle` with
    ``speaker_norm`` true)."""
    return bool(bundle.speaker_norm)


def output_columns(bundle: ModelBundle) -> list[str]:
    """The window-table columns of a bundle's outputs: ``<output_prefix><label>`` per label,
    e.g. ``p_happy`` or ``d_arousal``."""
    return [f"{bundle.output_prefix}{lab}" for lab in bundle.labels]
