"""Reading a classical model bundle (``model.json`` + ``model.joblib``) as a
:class:`ClassicalBundle`, which has the deep bundles' interface
(:class:`ser.models.bundle.Bundle`). Written by
:func:`ser.models.classical.writer.save_classical_bundle`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import joblib
import numpy as np

from ser.models.classical import pooled
from ser.models.classical.classes import aligned_proba
from ser.models.classical.features import (
    moments,
    signal_features,
    zscore,
)
from ser.models.meta import calibration_temperature, tempered_proba, without_calibration
from ser.models.window import checked_starts, window_samples, windows_at


@dataclass(frozen=True)
class BlockFeatures:
    """The model features of windows of a block of audio: a small, picklable job (windowed
    inference runs it in the feature worker processes, the model then runs on its result
    with :meth:`ClassicalBundle.predict_features`).

    Pooled sets (:mod:`ser.models.classical.pooled`) take the block's LLDs once and pool
    them per window; the other sets run on each window cut out of the block.

    Attributes:
        feature_sets: the bundle's feature sets, in order.
        sample_rate: Hz.
        window_samples: window length in samples.
    """

    feature_sets: tuple[str, ...]
    sample_rate: int
    window_samples: int

    def __call__(self, signal: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
        """``{feature_set: float32 [N, d]}`` of the windows ``signal[s:s + window_samples]``.

        Raises:
            ValueError: a window outside ``signal``.
        """
        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim != 1:
            raise ValueError(f"signal must be mono [T]; got shape {signal.shape}")
        starts = checked_starts(starts, signal_samples=len(signal), window_samples=self.window_samples)
        cut = None
        out: dict[str, np.ndarray] = {}
        for s in self.feature_sets:
            if pooled.is_pooled(s):
                out[s] = pooled.block_pooled(signal, self.sample_rate, starts_n=starts,
                                             window_n=self.window_samples, feature_set=s)
            else:
                if cut is None:
                    cut = windows_at(signal, starts, window_samples=self.window_samples)
                out[s] = signal_features(cut, feature_set=s, sample_rate=self.sample_rate)
        return out


@runtime_checkable
class PreparedPredictor(Protocol):
    """The model inside a classical bundle: a fitted
    :class:`ser.models.classical.estimator.ClassicalModel` or
    :class:`ser.models.classical.ensemble.ClassicalEnsemble`.

    Loading a bundle needs only this interface, so it does not import scikit-learn
    until ``model.joblib`` itself is read (scikit-learn takes seconds to import, and a
    log-mel bundle never needs it).
    """

    classes_: np.ndarray
    speaker_norm: bool

    def predict_proba_prepared(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities ``[n, n_classes]`` from ``{feature_set: [n, d]}`` tables."""


class ClassicalBundle:
    """A saved classical model with the attributes and methods of :class:`ser.models.bundle.Bundle`
    that inference uses.

    Attributes:
        path: the bundle folder.
        labels: class labels (columns of :meth:`predict_proba`).
        sample_rate: audio rate (Hz); window_s: window length (s);
        window_samples: ``round(window_s * sample_rate)``.
        meta: the whole ``model.json``.
        precision: always ``"fp32"`` (the precision option of deep bundles does not apply).
        heavy: always False (the features, not the model, take the time).
        preferred_batch_size: windows per call that suit it (64).
        pitch_norm_hz: ``model.json["pitch_norm_hz"]``, 0 (no pitch normalisation) when absent.
        output_prefix: ``"p_"``: the window columns are ``p_<label>`` probabilities.
    """

    output_prefix: str = "p_"
    precision: str = "fp32"
    heavy: bool = False
    preferred_batch_size: int = 64

    def __init__(self, model: PreparedPredictor, meta: Mapping[str, Any],
                 reference: Mapping[str, np.ndarray] | None = None, *, path: str | os.PathLike[str]) -> None:
        self.model = model
        self.meta = dict(meta)
        self.path = Path(path)
        self.labels: list[str] = list(meta["labels"])
        self.sample_rate: int = int(meta["sample_rate"])
        self.window_s: float = float(meta["window_s"])
        self.window_samples: int = window_samples(self.window_s, self.sample_rate)
        self.pitch_norm_hz: float = float(meta.get("pitch_norm_hz") or 0.0)
        self.feature_sets: list[str] = list(meta["features"]["feature_sets"])
        self._reference = dict(reference) if reference is not None else None

    @property
    def speaker_norm(self) -> bool:
        """Whether the model needs a speaker reference (:meth:`with_speaker_reference`)."""
        return bool(self.meta.get("speaker_norm", False))

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        w = np.asarray(windows, dtype=np.float32)
        if w.ndim != 2 or w.shape[1] != self.window_samples:
            raise ValueError(f"windows must be float32 [n, {self.window_samples}] (model trained on "
                             f"{self.window_s} s windows at {self.sample_rate} Hz); got shape {w.shape}")
        return w

    def window_features(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """``{feature_set: float32 [n, d]}`` of the windows, each analysed alone (as training
        analyses each utterance)."""
        w = self._check_windows(windows)
        return {s: signal_features(w, feature_set=s, sample_rate=self.sample_rate) for s in self.feature_sets}

    @property
    def block_features(self) -> BlockFeatures:
        """The picklable job computing this bundle's features of windows in a block."""
        return BlockFeatures(tuple(self.feature_sets), self.sample_rate, self.window_samples)

    def features_at(self, signal: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
        """``{feature_set: float32 [N, d]}`` of the windows ``signal[s:s + window_samples]``
        (:class:`BlockFeatures`: pooled sets from one LLD pass over ``signal``; the same as
        :meth:`window_features` of the windows cut out for the other sets)."""
        return self.block_features(signal, starts)

    @property
    def reference(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """The speaker reference features are z-scored with: ``{feature_set: (mean, std)}``
        (float64 ``[d]`` each), or None when there is none."""
        if self._reference is None:
            return None
        return {s: (m[0].copy(), m[1].copy()) for s, m in self._reference.items()}

    def with_speaker_reference(self, windows: np.ndarray) -> ClassicalBundle:
        """A copy that z-scores features with the statistics of one speaker's windows.

        Needed when the model was trained with ``speaker_norm``: pass (many) windows of
        the speaker whose audio will be scored, e.g. all windows of a caregiver. For more
        audio than fits in memory, accumulate :meth:`window_features` in a
        :class:`ser.models.classical.features.RunningMoments` per feature set and use
        :meth:`with_reference`.

        Raises:
            ValueError: wrong window length, or fewer than 2 windows.
        """
        feats = self.window_features(windows)
        if len(windows) < 2:
            raise ValueError("a speaker reference needs at least 2 windows of that speaker's audio")
        return self.with_reference({s: moments(f.astype(np.float64)) for s, f in feats.items()})

    def with_reference(self, reference: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> ClassicalBundle:
        """A copy that z-scores features with given statistics (the model is shared, not copied).

        Args:
            reference: ``{feature_set: (mean, std)}`` for every feature set of the bundle,
                each float ``[d]`` with ``std > 0`` (e.g. from
                :meth:`ser.models.classical.features.RunningMoments.result`).

        Raises:
            ValueError: a feature set missing, or statistics of the wrong shape.
        """
        missing = [s for s in self.feature_sets if s not in reference]
        if missing:
            raise ValueError(f"speaker reference lacks feature sets {missing} of {self.path}")
        ref: dict[str, np.ndarray] = {}
        for s in self.feature_sets:
            mean, std = (np.asarray(a, dtype=np.float64) for a in reference[s])
            if mean.ndim != 1 or mean.shape != std.shape or not np.all(std > 0):
                raise ValueError(f"speaker reference of {s}: mean and std must be [d] with std > 0; "
                                 f"got shapes {mean.shape} and {std.shape}")
            ref[s] = np.stack([mean, std])
        return ClassicalBundle(self.model, self.meta, ref, path=self.path)

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """Class probabilities of each window.

        Args:
            windows: ``float32 [n, window_samples]`` mono audio at ``sample_rate``.
            batch_size: accepted for the interface of :class:`ser.models.bundle.Bundle` and
                ignored (the features are computed window by window).

        Returns:
            ``float32 [n, n_labels]`` (columns: ``labels``; rows sum to 1), tempered by the
            stored calibration (:attr:`temperature`, :func:`ser.models.meta.tempered_proba`).

        Raises:
            ValueError: wrong window shape, or a ``speaker_norm`` model without a
                speaker reference.
        """
        w = self._check_windows(windows)
        self._check_reference()
        if len(w) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return self.predict_features(self.window_features(w))

    def _check_reference(self) -> None:
        if self.speaker_norm and self._reference is None:
            raise ValueError("this classical model was trained with speaker_norm: call "
                             "bundle.with_speaker_reference(<windows of the speaker>) first")

    def predict_features(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        """Class probabilities from the windows' features (:meth:`features_at` or
        :meth:`window_features`), float32 ``[n, n_labels]``, rows sum to 1.

        Raises:
            ValueError: a ``speaker_norm`` model without a speaker reference.
        """
        self._check_reference()
        n = len(next(iter(feats.values()))) if feats else 0
        if n == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self._reference is not None:  # z-score here; the model then sees one "speaker"
            feats = {s: zscore(f.astype(np.float64), *self._reference[s]) for s, f in feats.items()}
        proba = self.model.predict_proba_prepared(feats)
        proba = aligned_proba(proba, [str(c) for c in self.model.classes_], self.labels)
        proba = np.clip(proba, 0.0, None)
        proba = proba / proba.sum(axis=1, keepdims=True)
        return tempered_proba(proba, self.temperature)  # temperature 1 when uncalibrated

    @property
    def temperature(self) -> float:
        """Temperature applied to the log-probabilities (``model.json["calibration"]``; 1.0 when absent)."""
        return calibration_temperature(self.meta)

    def uncalibrated(self) -> ClassicalBundle:
        """A copy that gives the model's probabilities before any stored calibration."""
        return ClassicalBundle(self.model, without_calibration(self.meta), self._reference, path=self.path)

    def predict_proba_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                             batch_size: int = 64) -> np.ndarray:
        """Class probabilities of the windows ``signal[s:s + window_samples]``.

        Equal to :meth:`predict_proba` of those windows stacked (as
        :meth:`ser.models.bundle.Bundle.predict_proba_starts`), except for pooled feature
        sets, whose LLDs are computed once over ``signal`` (:meth:`features_at`): the
        frames near a window's edges then have the audio around it as context.

        Args:
            signal: float mono audio ``[T]`` at :attr:`sample_rate`; every window must fit.
            starts: window start samples ``[N]`` (integers).
            batch_size: ignored (see :meth:`predict_proba`).

        Returns:
            float32 ``[N, n_labels]``, rows sum to 1.

        Raises:
            ValueError: a window outside ``signal``, or as :meth:`predict_proba`.
        """
        self._check_reference()
        if len(starts) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        return self.predict_features(self.features_at(signal, starts))

    def predict_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                       batch_size: int = 64) -> np.ndarray:
        """The bundle interface's name (:class:`ser.inference.protocol.ModelBundle`) of
        :meth:`predict_proba_starts`."""
        return self.predict_proba_starts(signal, starts, batch_size=batch_size)


def load_classical_bundle(path: str | os.PathLike[str]) -> ClassicalBundle:
    """Load a bundle written by :func:`save_classical_bundle`.

    Raises:
        FileNotFoundError: ``model.json`` or ``model.joblib`` is missing (names the file).
        ValueError: ``model.json`` lacks a required key or is not a classical bundle.
    """
    path = Path(path)
    for name in ("model.json", "model.joblib"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing; write the bundle with save_classical_bundle")
    meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
    missing = [k for k in ("labels", "sample_rate", "window_s", "features", "arch") if k not in meta]
    if missing:
        raise ValueError(f"{path / 'model.json'} lacks {missing}; it is not a classical model bundle")
    if not str(meta["arch"]).startswith("classical:"):
        raise ValueError(f"{path / 'model.json'}: arch {meta['arch']!r} is not classical; "
                         "load it with ser.models.bundle.load_bundle")
    model = joblib.load(path / "model.joblib")
    if not isinstance(model, PreparedPredictor):
        raise ValueError(f"{path / 'model.joblib'} holds a {type(model).__name__}, not a classical model")
    return ClassicalBundle(model, meta, path=path)
