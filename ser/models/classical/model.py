"""Classical SER: acoustic functionals + SVM / random forest, tuned by speaker-grouped CV.

The classical baselines of the SER literature, kept next to the deep models so that
every figure has a reference point:

- **Features** (:func:`extract_features`), one vector per utterance or window:
  ``compare`` (openSMILE ComParE_2016 functionals, 6373 values), ``egemaps``
  (openSMILE eGeMAPSv02 functionals, 88 values) and ``mfcc_stats`` (librosa MFCC
  + deltas + delta-deltas, summarised by mean, std and percentiles, 300 values).
  Audio is read with :func:`ser.signal.audio.load` at ``sample_rate`` and the features are
  computed from the signal, exactly as :class:`ClassicalBundle` does on windows.
  Features are cached on disk per file, keyed by the file's SHA-256, the feature
  set, its configuration and the sample rate, so each file is processed once.
- **Model** (:class:`ClassicalModel`): optional per-speaker standardisation →
  mean imputation → :class:`~sklearn.preprocessing.StandardScaler` → SVM (linear or
  RBF, :class:`KernelSVC`: libsvm on a BLAS-computed Gram matrix), random forest or
  logistic regression, all class-balanced. Hyper-parameters are chosen by
  :meth:`ClassicalModel.fit_grid` with a speaker-*grouped* inner cross-validation
  (:class:`~sklearn.model_selection.GroupKFold` over the training speakers only),
  scored by UAR (balanced accuracy). SVM probabilities are one-vs-rest Platt
  sigmoids fitted on the held-out decision values of those same grouped folds.
- **Evaluation** (:func:`evaluate_loso`): outer leave-one-speaker-out
  (:func:`ser.data.splits.loso_splits`), the inner grouped CV on the training speakers of
  each fold, so nothing is tuned on the test speaker. :func:`evaluate_loso_ensemble`
  does the same for a probability-averaging ensemble (:class:`ClassicalEnsemble`,
  :func:`fit_ensemble`) whose weights, when tuned, are chosen on held-out
  predictions of the training speakers; :func:`combine_predictions` and
  :func:`summarize_predictions` work on saved prediction frames.
- **Bundle** (:func:`save_classical_bundle`, :func:`load_classical_bundle`):
  ``model.json`` + ``model.joblib``; :class:`ClassicalBundle` has the same
  ``predict_proba(windows)`` contract as the deep model bundles.

Per-speaker normalisation (``speaker_norm=True``) z-scores each speaker's features
with that speaker's own mean and standard deviation. It never uses labels, but it
is *transductive*: the statistics of the test speaker come from that speaker's own
(unlabelled) test audio. This is a standard, legitimate technique for
speaker-independent SER (the deployed system sees all of a caregiver's audio
before scoring it), but results with it must be reported as such, next to the
results without it. A bundle trained with it needs a reference of the new
speaker's audio (:meth:`ClassicalBundle.with_speaker_reference`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, ParameterGrid, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from tqdm import tqdm

from ser.core import atomic, provenance
from ser.data.splits import loso_splits
from ser.signal import audio

#: Feature sets :func:`extract_features` knows.
FEATURE_SETS: tuple[str, ...] = ("compare", "egemaps", "mfcc_stats")
#: Estimators :class:`ClassicalModel` knows.
ESTIMATORS: tuple[str, ...] = ("svm_linear", "svm_rbf", "rf", "logreg")
#: Bumped whenever a feature computation changes, so stale cache entries are not reused.
CACHE_VERSION: int = 1
#: MFCC-statistics configuration (25 ms frames, 10 ms hop at 16 kHz).
MFCC_CONFIG: Mapping[str, Any] = {
    "n_mfcc": 20, "n_mels": 40, "win_s": 0.025, "hop_s": 0.010,
    "percentiles": (10, 50, 90), "delta_width": 9,
}
#: Columns of the errors table.
ERROR_COLUMNS: tuple[str, ...] = ("path", "reason")
#: Columns of the per-fold table of :func:`evaluate_loso`.
FOLD_COLUMNS: tuple[str, ...] = (
    "fold", "test_speaker", "n_test", "uar", "macro_f1", "accuracy", "best_params",
    "inner_uar", "fit_s",
)
#: Smallest standard deviation used when z-scoring (constant features become 0).
_STD_FLOOR: float = 1e-8


# ------------------------------------------------------------------------- features

def _check_feature_set(feature_set: str) -> None:
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set={feature_set!r} is unknown; use one of {', '.join(FEATURE_SETS)}")


def _check_sample_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise ValueError(f"sample_rate={sample_rate!r} must be an integer >= 8000 Hz (e.g. 16000)")


def feature_config(feature_set: str, *, sample_rate: int) -> dict[str, Any]:
    """The full configuration of a feature set (stored in bundles and cache keys).

    Raises:
        ValueError: unknown feature set or a sample rate below 8 kHz.
    """
    _check_feature_set(feature_set)
    _check_sample_rate(sample_rate)
    cfg: dict[str, Any] = {"feature_set": feature_set, "sample_rate": int(sample_rate),
                           "cache_version": CACHE_VERSION}
    if feature_set == "compare":
        cfg.update(tool="opensmile", opensmile_feature_set="ComParE_2016", level="Functionals")
    elif feature_set == "egemaps":
        cfg.update(tool="opensmile", opensmile_feature_set="eGeMAPSv02", level="Functionals")
    else:
        cfg.update(tool="librosa", **{k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in MFCC_CONFIG.items()})
    return cfg


class _Extractor:
    """Computes one feature set from signals; holds its openSMILE object (per process)."""

    def __init__(self, feature_set: str, sample_rate: int) -> None:
        _check_feature_set(feature_set)
        _check_sample_rate(sample_rate)
        self.feature_set, self.sample_rate = feature_set, int(sample_rate)
        self._smile: Any = None

    def _opensmile(self) -> Any:
        if self._smile is None:
            import opensmile  # imported lazily: only the openSMILE sets need it

            fs = {"compare": opensmile.FeatureSet.ComParE_2016,
                  "egemaps": opensmile.FeatureSet.eGeMAPSv02}[self.feature_set]
            self._smile = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals)
        return self._smile

    def names(self) -> list[str]:
        if self.feature_set == "mfcc_stats":
            stats = ["mean", "std"] + [f"p{p}" for p in MFCC_CONFIG["percentiles"]]
            return [f"{kind}{i}_{s}" for kind in ("mfcc", "dmfcc", "ddmfcc")
                    for i in range(MFCC_CONFIG["n_mfcc"]) for s in stats]
        return list(self._opensmile().feature_names)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """Feature vector ``float32[d]`` of a mono signal ``y`` at ``self.sample_rate``."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"expected a non-empty mono signal; got shape {y.shape}")
        if self.feature_set == "mfcc_stats":
            return _mfcc_stats(y, self.sample_rate)
        out = self._opensmile().process_signal(y, self.sample_rate)
        return out.to_numpy(dtype=np.float32).reshape(-1)


def _mfcc_stats(y: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa

    cfg = MFCC_CONFIG
    n_fft = int(round(cfg["win_s"] * sample_rate))
    hop = int(round(cfg["hop_s"] * sample_rate))
    if y.size < n_fft:  # documented rule: shorter than one frame → zero-padded to one frame
        y = np.pad(y, (0, n_fft - y.size))
    m = librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=cfg["n_mfcc"], n_fft=n_fft,
                             hop_length=hop, n_mels=cfg["n_mels"], center=True)
    d1 = librosa.feature.delta(m, width=cfg["delta_width"], order=1, mode="nearest")
    d2 = librosa.feature.delta(m, width=cfg["delta_width"], order=2, mode="nearest")
    stats = []
    for block in (m, d1, d2):  # [n_mfcc, frames]
        pct = np.percentile(block, cfg["percentiles"], axis=1)  # [n_pct, n_mfcc]
        stats.append(np.concatenate([block.mean(axis=1)[:, None], block.std(axis=1)[:, None],
                                     pct.T], axis=1).reshape(-1))  # per coefficient: mean,std,pcts
    return np.concatenate(stats).astype(np.float32)


def _cache_folder(cache_dir: Path, feature_set: str, sample_rate: int) -> Path:
    cfg = json.dumps(feature_config(feature_set, sample_rate=sample_rate), sort_keys=True)
    digest = hashlib.sha256(cfg.encode()).hexdigest()[:12]
    return cache_dir / f"{feature_set}_{sample_rate}hz_{digest}"




def _compute_file(path: str, feature_set: str, sample_rate: int,
                  extractor: _Extractor | None = None) -> np.ndarray:
    """Features of one audio file (read and resampled with :func:`ser.signal.audio.load`)."""
    y, _ = audio.load(path, sample_rate=sample_rate)
    return (extractor or _Extractor(feature_set, sample_rate))(y)


def _compute_chunk(paths: Sequence[str], feature_set: str,
                   sample_rate: int) -> list[tuple[str, np.ndarray | None, str | None]]:
    extractor = _Extractor(feature_set, sample_rate)
    out: list[tuple[str, np.ndarray | None, str | None]] = []
    for p in paths:
        try:
            vec = _compute_file(p, feature_set, sample_rate, extractor)
            if not np.all(np.isfinite(vec)):
                vec = np.where(np.isfinite(vec), vec, np.nan).astype(np.float32)
            out.append((p, vec, None))
        except Exception as e:  # noqa: BLE001  (per-file failure → errors table, carry on)
            out.append((p, None, f"{type(e).__name__}: {e}"))
    return out


def extract_features(
    paths: Iterable[str | os.PathLike[str]],
    *,
    feature_set: str = "compare",
    sample_rate: int = 16000,
    cache_dir: str | os.PathLike[str] | None = None,
    n_jobs: int = 2,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One feature vector per audio file, cached on disk.

    Args:
        paths: audio files (any format :func:`ser.signal.audio.load` reads).
        feature_set: ``"compare"``, ``"egemaps"`` or ``"mfcc_stats"``.
        sample_rate: audio is resampled to this rate (Hz) before feature extraction.
        cache_dir: folder of the feature cache (created); ``None`` disables caching.
            Entries are keyed by the file's SHA-256, the feature set and its
            configuration (:func:`feature_config`) and the sample rate.
        n_jobs: worker processes for files not yet cached (joblib; 1 = in-process).
        progress: show a tqdm bar over the files to compute.

    Returns:
        ``(features, errors)``: ``features`` is ``float32 [n_ok, d]`` with index = the
        given paths as strings (input order, failures left out) and one column per
        feature; ``errors`` has :data:`ERROR_COLUMNS`, one row per file that failed
        (missing, unreadable, empty, …), with the reason. ``features.attrs`` holds
        ``n_computed`` (files processed in this call) and ``n_cached`` (read from the cache).

    Raises:
        ValueError: unknown feature set, bad sample rate or ``n_jobs < 1``.

    Example:
        >>> X, err = extract_features(table["path"], feature_set="egemaps",
        ...                           cache_dir="results/cache/features")  # doctest: +SKIP
    """
    _check_feature_set(feature_set)
    _check_sample_rate(sample_rate)
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs={n_jobs} must be >= 1")
    paths = [str(p) for p in paths]
    names = _Extractor(feature_set, sample_rate).names()
    vectors: dict[str, np.ndarray] = {}
    errors: list[dict[str, str]] = []
    keys: dict[str, str] = {}
    folder = None
    if cache_dir is not None:
        folder = _cache_folder(Path(cache_dir), feature_set, sample_rate)
        folder.mkdir(parents=True, exist_ok=True)
    todo: list[str] = []
    n_cached = 0
    for p in dict.fromkeys(paths):  # unique, order kept
        if folder is not None:
            try:
                keys[p] = provenance.file_sha256(p)
            except OSError as e:
                errors.append({"path": p, "reason": f"cannot read file: {e.strerror or e}"})
                continue
            entry = folder / f"{keys[p]}.npy"
            if entry.is_file():
                try:
                    vec = np.load(entry)
                    if vec.shape == (len(names),):
                        vectors[p] = vec
                        n_cached += 1
                        continue
                except (OSError, ValueError):
                    pass  # damaged entry: recompute
        todo.append(p)
    if todo:
        chunk = max(1, min(16, len(todo) // (4 * int(n_jobs)) or 1))
        chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
        bar = tqdm(total=len(todo), desc=f"features {feature_set}", unit="file", disable=not progress)
        if int(n_jobs) == 1:
            results: Iterable[list[Any]] = (_compute_chunk(c, feature_set, sample_rate) for c in chunks)
        else:
            results = joblib.Parallel(n_jobs=int(n_jobs), return_as="generator")(
                joblib.delayed(_compute_chunk)(c, feature_set, sample_rate) for c in chunks)
        for res in results:
            for p, vec, reason in res:
                if vec is None or vec.shape != (len(names),):
                    errors.append({"path": p, "reason": reason or
                                   f"feature vector has shape {getattr(vec, 'shape', None)}, "
                                   f"expected ({len(names)},)"})
                    continue
                vectors[p] = vec
                if folder is not None:
                    atomic.atomic_save_npy(folder / f"{keys[p]}.npy", vec)
            bar.update(len(res))
        bar.close()
    ok = [p for p in paths if p in vectors]
    data = np.stack([vectors[p] for p in ok]) if ok else np.zeros((0, len(names)), np.float32)
    features = pd.DataFrame(data.astype(np.float32, copy=False), index=pd.Index(ok, name="path"),
                            columns=names)
    features.attrs["n_computed"] = len(todo)
    features.attrs["n_cached"] = n_cached
    err = pd.DataFrame(errors, columns=list(ERROR_COLUMNS))
    return features, err


def signal_features(
    signals: np.ndarray,
    *,
    feature_set: str,
    sample_rate: int,
) -> np.ndarray:
    """Features of in-memory signals (windows), as :func:`extract_features` computes them.

    Args:
        signals: ``float32 [n, samples]`` mono signals at ``sample_rate``.
        feature_set: one of :data:`FEATURE_SETS`.
        sample_rate: their rate (Hz).

    Returns:
        ``float32 [n, d]``.

    Raises:
        ValueError: ``signals`` is not 2-D or a feature set is unknown.
    """
    signals = np.asarray(signals, dtype=np.float32)
    if signals.ndim != 2 or signals.shape[1] == 0:
        raise ValueError(f"signals must be float32 [n, samples]; got shape {signals.shape}")
    ex = _Extractor(feature_set, sample_rate)
    if len(signals) == 0:
        return np.zeros((0, len(ex.names())), np.float32)
    return np.stack([ex(s) for s in signals]).astype(np.float32)


# -------------------------------------------------------------- speaker normalisation

def speaker_standardize(X: np.ndarray, groups: Sequence[Any]) -> np.ndarray:
    """Z-score each speaker's rows with that speaker's own mean and standard deviation.

    Unsupervised (labels are never used) but transductive for a test speaker: its
    statistics come from its own unlabelled audio. Rows of one speaker only depend
    on rows of the same speaker. Constant features become 0; NaN are ignored in the
    statistics and stay NaN.

    Args:
        X: ``[n, d]`` features.
        groups: ``[n]`` speaker ids.

    Returns:
        ``float64 [n, d]``.

    Raises:
        ValueError: ``groups`` is not as long as ``X``.
    """
    X = np.asarray(X, dtype=np.float64)
    g = np.asarray(groups)
    if X.ndim != 2 or g.shape != (len(X),):
        raise ValueError(f"speaker_standardize: X must be [n, d] and groups [n]; got {X.shape} and {g.shape}")
    out = np.empty_like(X)
    for s in pd.unique(g):
        rows = g == s
        out[rows] = _zscore(X[rows], *_moments(X[rows]))
    return out


def _moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column → NaN stats
        mean = np.nanmean(X, axis=0)
        std = np.nanstd(X, axis=0)
    return np.nan_to_num(mean), np.where(np.isfinite(std) & (std > _STD_FLOOR), std, 1.0)


def _zscore(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (X - mean) / std


# ----------------------------------------------------------------------------- model

def default_param_grid(estimator: str, *, n_features: int) -> dict[str, list[Any]]:
    """The grid :meth:`ClassicalModel.fit_grid` searches when none is given.

    Keys are parameters of the final estimator (without the pipeline prefix).
    RBF ``gamma`` is given relative to ``1 / n_features`` (features are standardised).

    Raises:
        ValueError: unknown estimator.
    """
    if estimator == "svm_linear":
        return {"C": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]}
    if estimator == "svm_rbf":
        g = 1.0 / max(1, n_features)
        return {"C": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
                "gamma": [g / 16, g / 8, g / 4, g / 2, g, g * 2]}
    if estimator == "rf":
        return {"max_features": ["sqrt", 0.05], "min_samples_leaf": [1, 3]}
    if estimator == "logreg":
        return {"C": [1e-4, 1e-3, 1e-2, 1e-1, 1.0]}
    raise ValueError(f"estimator={estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}")


def _kernel_from_dots(dots: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray, *,
                      kernel: str, gamma: float) -> np.ndarray:
    """Linear or RBF Gram matrix from dot products ``A @ B.T`` and squared row norms."""
    if kernel == "linear":
        return dots
    sq = sq_a[:, None] + sq_b[None, :] - 2.0 * dots
    return np.exp(-gamma * np.maximum(sq, 0.0))


class KernelSVC(ClassifierMixin, BaseEstimator):
    """Class-balanced SVC whose linear/RBF Gram matrix is computed with BLAS.

    Same decision function as ``SVC(kernel="linear"|"rbf", class_weight="balanced")``
    (libsvm, one-vs-one), but the kernel is computed by matrix products and passed to
    libsvm as ``kernel="precomputed"``: on functionals with thousands of dimensions
    this is much faster than libsvm's own kernel loop. Only the support vectors are
    kept after fitting.

    Probabilities (:meth:`predict_proba`) need :meth:`calibrate`: one-vs-rest Platt
    sigmoids fitted on out-of-fold decision values, renormalised to sum 1 (what
    ``CalibratedClassifierCV(method="sigmoid")`` does).

    Args:
        kernel: ``"linear"`` or ``"rbf"``.
        C: soft-margin penalty.
        gamma: RBF width (``None``: ``1 / n_features``, sklearn's ``"scale"`` for
            standardised features).
        class_weight: passed to :class:`~sklearn.svm.SVC`.
    """

    def __init__(self, kernel: str = "linear", C: float = 1.0, gamma: float | None = None,
                 class_weight: Any = "balanced") -> None:
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight

    def fit(self, X: np.ndarray, y: Sequence[Any]) -> KernelSVC:
        """Fit on ``X [n, d]`` and labels ``y [n]``."""
        if self.kernel not in ("linear", "rbf"):
            raise ValueError(f"KernelSVC: kernel={self.kernel!r} must be 'linear' or 'rbf'")
        X = np.asarray(X, dtype=np.float64)
        self.gamma_ = float(self.gamma) if self.gamma is not None else 1.0 / max(1, X.shape[1])
        sq = (X * X).sum(axis=1)
        self.svc_ = SVC(kernel="precomputed", C=self.C, class_weight=self.class_weight)
        self.svc_.fit(_kernel_from_dots(X @ X.T, sq, sq, kernel=self.kernel, gamma=self.gamma_),
                      np.asarray(y))
        self.n_fit_ = len(X)
        self.support_vectors_ = X[self.svc_.support_].copy()
        self.classes_ = self.svc_.classes_
        self.n_features_in_ = X.shape[1]
        self.platt_: np.ndarray | None = None
        return self

    def _test_gram(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        sv = self.support_vectors_
        K = np.zeros((len(X), self.n_fit_))
        K[:, self.svc_.support_] = _kernel_from_dots(X @ sv.T, (X * X).sum(axis=1), (sv * sv).sum(axis=1),
                                                     kernel=self.kernel, gamma=self.gamma_)
        return K

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """One-vs-rest aggregated decision values ``[n, n_classes]``."""
        return self.svc_.decision_function(self._test_gram(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class per row (libsvm one-vs-one vote)."""
        return self.svc_.predict(self._test_gram(X))

    def calibrate(self, decision: np.ndarray, y: Sequence[Any]) -> KernelSVC:
        """Fit one Platt sigmoid per class on held-out ``decision [n, k]`` values and labels."""
        self.platt_ = _fit_platt(decision, np.asarray(y), self.classes_)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``[n, n_classes]`` (rows sum to 1).

        Raises:
            RuntimeError: :meth:`calibrate` was not called.
        """
        if getattr(self, "platt_", None) is None:
            raise RuntimeError("KernelSVC.predict_proba needs calibrate() on held-out decision values")
        return _apply_platt(self.platt_, self.decision_function(X))


def _fit_platt(decision: np.ndarray, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``[k, 2]`` slope and intercept of a one-vs-rest sigmoid per class."""
    out = np.zeros((len(classes), 2))
    for j, c in enumerate(classes):
        t = (y == c).astype(int)
        if t.min() == t.max():  # class absent or alone: flat probability
            out[j] = (0.0, 0.0 if t.max() else -10.0)
            continue
        lr = LogisticRegression(C=1e4, max_iter=1000).fit(decision[:, [j]], t)
        out[j] = (lr.coef_[0, 0], lr.intercept_[0])
    return out


def _apply_platt(platt: np.ndarray, decision: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-(decision * platt[:, 0] + platt[:, 1])))
    p = np.clip(p, 1e-12, None)
    return p / p.sum(axis=1, keepdims=True)


def _make_estimator(estimator: str, *, seed: int, params: Mapping[str, Any] | None = None) -> Any:
    if estimator in ("svm_linear", "svm_rbf"):
        clf: Any = KernelSVC(kernel=estimator.removeprefix("svm_"))
    elif estimator == "rf":
        clf = RandomForestClassifier(n_estimators=500, class_weight="balanced_subsample",
                                     random_state=seed, n_jobs=1)
    elif estimator == "logreg":
        clf = LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)
    else:
        raise ValueError(f"estimator={estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}")
    return clf.set_params(**dict(params or {}))


def _make_pipeline(estimator: str, *, seed: int, params: Mapping[str, Any] | None = None) -> Pipeline:
    """Mean imputation → standardisation → classifier."""
    return Pipeline([
        ("impute", SimpleImputer(strategy="mean", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("clf", _make_estimator(estimator, seed=seed, params=params)),
    ])


def grouped_inner_splits(groups: Sequence[Any], *, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Speaker-grouped inner CV folds: no speaker is in both parts of a fold.

    Args:
        groups: ``[n]`` speaker ids of the training rows.
        n_splits: wanted folds, capped at the number of speakers.

    Returns:
        ``[(train_idx, val_idx), ...]`` from :class:`~sklearn.model_selection.GroupKFold`.

    Raises:
        ValueError: fewer than 2 speakers or ``n_splits < 2``.
    """
    g = np.asarray(groups)
    n_groups = len(pd.unique(g))
    if n_groups < 2:
        raise ValueError(f"grouped inner CV needs at least 2 training speakers; got {n_groups}")
    if int(n_splits) < 2:
        raise ValueError(f"inner_folds={n_splits} must be >= 2")
    k = min(int(n_splits), n_groups)
    return list(GroupKFold(n_splits=k).split(np.zeros(len(g)), groups=g))


def _score_split(estimator: str, seed: int, fixed: Mapping[str, Any], combos: Sequence[Mapping[str, Any]],
                 X: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray,
                 classes: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    """UAR and held-out scores (SVM: decision values; else probabilities) of each combination.

    Preprocessing is fitted once per split; for SVMs the dot products are computed
    once and every (C, gamma) reuses them.
    """
    pre = _make_pipeline(estimator, seed=seed)[:-1].fit(X[tr])
    ztr, zva = pre.transform(X[tr]), pre.transform(X[va])
    uars, outs = [], []
    if estimator.startswith("svm"):
        kernel = estimator.removeprefix("svm_")
        d_tr, d_va = ztr @ ztr.T, zva @ ztr.T
        sq_tr, sq_va = (ztr * ztr).sum(axis=1), (zva * zva).sum(axis=1)
    for combo in combos:
        p = {**fixed, **combo}
        if estimator.startswith("svm"):
            gamma = float(p["gamma"]) if p.get("gamma") is not None else 1.0 / max(1, X.shape[1])
            svc = SVC(kernel="precomputed", C=p.get("C", 1.0), class_weight=p.get("class_weight", "balanced"))
            svc.fit(_kernel_from_dots(d_tr, sq_tr, sq_tr, kernel=kernel, gamma=gamma), y[tr])
            k_va = _kernel_from_dots(d_va, sq_va, sq_tr, kernel=kernel, gamma=gamma)
            pred, score = svc.predict(k_va), _aligned_proba(svc.decision_function(k_va), svc.classes_,
                                                            classes, fill=-1e3)
        else:
            clf = _make_estimator(estimator, seed=seed, params=p).fit(ztr, y[tr])
            pred, score = clf.predict(zva), _aligned_proba(clf.predict_proba(zva), clf.classes_, classes)
        uars.append(metrics(y[va], pred)["uar"])
        outs.append(score)
    return uars, outs


class ClassicalModel:
    """Functionals → (per-speaker z-score) → impute → scale → SVC / RF / logistic regression.

    The sklearn :class:`~sklearn.pipeline.Pipeline` (``pipeline_`` after fitting) holds
    mean imputation, standardisation and the classifier; per-speaker
    standardisation, which needs the speaker of each row, is applied before it
    (:func:`speaker_standardize`). SVMs are :class:`KernelSVC` with Platt
    probabilities calibrated on held-out (speaker-grouped) decision values.

    Args:
        estimator: one of :data:`ESTIMATORS`.
        speaker_norm: z-score each speaker's features with its own statistics (see the
            module docstring: transductive for test speakers, never uses labels).
        params: fixed parameters of the final estimator (used by :meth:`fit`, and
            kept by :meth:`fit_grid` unless the grid names them).
        seed: random seed of random forests / logistic regression and of ungrouped
            calibration folds.

    Attributes (after fitting):
        classes_: sorted class labels; columns of :meth:`predict_proba`.
        best_params_: chosen parameters; ``inner_uar_``: their mean inner-CV UAR.
        inner_splits_: the grouped inner folds (``(train_idx, val_idx)`` pairs).
        cv_results_: the grid search table (``params``, ``mean_uar``, ``split<i>_uar``).
        oof_proba_: ``[n, n_classes]`` held-out probabilities of the training rows
            with the chosen parameters (inner folds), for ensemble weighting.
        feature_names_: feature columns seen in fit, when ``X`` was a DataFrame.
    """

    def __init__(self, *, estimator: str = "svm_linear", speaker_norm: bool = False,
                 params: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator={estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}")
        self.estimator = estimator
        self.speaker_norm = bool(speaker_norm)
        self.params = dict(params or {})
        self.seed = int(seed)
        self.pipeline_: Pipeline | None = None
        self.classes_: np.ndarray | None = None
        self.best_params_: dict[str, Any] = dict(self.params)
        self.inner_uar_: float | None = None
        self.inner_splits_: list[tuple[np.ndarray, np.ndarray]] = []
        self.cv_results_: pd.DataFrame | None = None
        self.oof_proba_: np.ndarray | None = None
        self.feature_names_: list[str] | None = None

    # -- helpers
    def _prepare(self, X: Any, groups: Sequence[Any] | None, *, fitting: bool) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            if fitting:
                self.feature_names_ = [str(c) for c in X.columns]
            elif self.feature_names_ is not None and [str(c) for c in X.columns] != self.feature_names_:
                raise ValueError("feature columns differ from those the model was fitted on; "
                                 "extract the same feature_set as in training")
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"X must be a 2-D feature table [n, d]; got shape {arr.shape}")
        if self.speaker_norm:
            if groups is None:
                raise ValueError("this model uses speaker_norm: pass groups (the speaker of each row)")
            arr = speaker_standardize(arr, groups)
        return arr

    def _check_fitted(self) -> Pipeline:
        if self.pipeline_ is None:
            raise RuntimeError("ClassicalModel is not fitted; call fit or fit_grid first")
        return self.pipeline_

    def _search(self, arr: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                combos: list[dict[str, Any]], n_jobs: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """``uar [n_combos, n_splits]`` and held-out scores per combination ``[n, k]``."""
        classes = np.asarray(sorted(pd.unique(y).tolist()))
        fixed = {k: v for k, v in self.params.items() if k not in combos[0]}
        jobs = (joblib.delayed(_score_split)(self.estimator, self.seed, fixed, combos, arr, y, tr, va, classes)
                for tr, va in splits)
        res = joblib.Parallel(n_jobs=n_jobs)(jobs)
        uars = np.array([r[0] for r in res]).T
        held = [np.zeros((len(y), len(classes))) for _ in combos]
        for (_, va), (_, outs) in zip(splits, res, strict=True):
            for i, o in enumerate(outs):
                held[i][va] = o
        return uars, held

    def _finish(self, arr: np.ndarray, y: np.ndarray, held: np.ndarray) -> None:
        """Refit on all rows with ``best_params_``; calibrate an SVM on ``held`` decision values."""
        pipe = _make_pipeline(self.estimator, seed=self.seed, params=self.best_params_).fit(arr, y)
        clf = pipe.named_steps["clf"]
        if isinstance(clf, KernelSVC):
            clf.calibrate(held, y)
            self.oof_proba_ = _apply_platt(clf.platt_, held)
        else:
            self.oof_proba_ = held
        self.pipeline_, self.classes_ = pipe, pipe.classes_

    # -- fitting
    def fit(self, X: Any, y: Sequence[Any], groups: Sequence[Any] | None = None, *,
            calibration_folds: int = 5) -> ClassicalModel:
        """Fit with the fixed ``params`` (no search).

        An SVM's probabilities are calibrated on held-out decision values: folds
        grouped by speaker when ``groups`` holds 2+ speakers, else stratified folds.

        Args:
            X: ``[n, d]`` features (DataFrame or array).
            y: ``[n]`` class labels.
            groups: ``[n]`` speaker ids (required with ``speaker_norm``).
            calibration_folds: folds of the held-out predictions.

        Raises:
            ValueError: too few rows per class for the calibration folds.
        """
        arr = self._prepare(X, groups, fitting=True)
        y = np.asarray(y)
        if groups is not None and len(pd.unique(np.asarray(groups))) >= 2:
            splits = grouped_inner_splits(groups, n_splits=calibration_folds)
        else:
            k = int(min(calibration_folds, pd.Series(y).value_counts().min()))
            if k < 2:
                raise ValueError("fit needs at least 2 rows per class for held-out calibration "
                                 "(or groups with 2+ speakers)")
            splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=self.seed)
                          .split(np.zeros(len(y)), y))
        self.inner_splits_ = splits
        _, held = self._search(arr, y, splits, [{}], 1)
        self.best_params_ = dict(self.params)
        self._finish(arr, y, held[0])
        return self

    def fit_grid(
        self,
        X: Any,
        y: Sequence[Any],
        groups: Sequence[Any],
        *,
        param_grid: Mapping[str, Sequence[Any]] | None = None,
        inner_folds: int = 5,
        n_jobs: int = 1,
    ) -> ClassicalModel:
        """Choose parameters by speaker-grouped CV (UAR), then refit on all rows.

        The inner folds (:func:`grouped_inner_splits`) split ``groups``, so a speaker
        is never in both the inner training and validation part. Pass only the
        training speakers of an outer fold here. The score of a setting is the mean
        UAR over the inner folds; ties go to the first setting in grid order. An
        SVM's probabilities are then calibrated on its held-out decision values of
        the same folds.

        Args:
            X: ``[n, d]`` features.
            y: ``[n]`` class labels.
            groups: ``[n]`` speaker ids.
            param_grid: ``{param: [values]}`` of the final estimator (no prefix);
                default :func:`default_param_grid`.
            inner_folds: inner folds (capped at the number of speakers).
            n_jobs: inner folds evaluated in parallel (joblib processes).

        Returns:
            ``self``, refitted with ``best_params_``.

        Raises:
            ValueError: fewer than 2 speakers, or an unknown parameter in ``param_grid``.
        """
        arr = self._prepare(X, groups, fitting=True)
        y = np.asarray(y)
        grid = dict(param_grid) if param_grid is not None else default_param_grid(
            self.estimator, n_features=arr.shape[1])
        valid = _make_estimator(self.estimator, seed=self.seed).get_params()
        unknown = sorted(set(grid) - set(valid))
        if unknown:
            raise ValueError(f"param_grid: {unknown} are not parameters of {self.estimator}; "
                             f"valid: {', '.join(sorted(valid))}")
        combos = [dict(c) for c in ParameterGrid({k: list(v) for k, v in grid.items()})]
        self.inner_splits_ = grouped_inner_splits(groups, n_splits=inner_folds)
        uars, held = self._search(arr, y, self.inner_splits_, combos, n_jobs)
        mean = uars.mean(axis=1)
        best = int(np.argmax(mean))
        self.best_params_ = {**self.params, **combos[best]}
        self.inner_uar_ = float(mean[best])
        self.cv_results_ = pd.DataFrame({"params": [json.dumps(c, default=_jsonable, sort_keys=True)
                                                    for c in combos], "mean_uar": mean,
                                         **{f"split{i}_uar": uars[:, i] for i in range(uars.shape[1])}})
        self._finish(arr, y, held[best])
        return self

    # -- prediction
    def predict_proba(self, X: Any, groups: Sequence[Any] | None = None) -> np.ndarray:
        """Class probabilities ``float64 [n, n_classes]`` (columns: ``classes_``)."""
        pipe = self._check_fitted()
        return pipe.predict_proba(self._prepare(X, groups, fitting=False))

    def predict(self, X: Any, groups: Sequence[Any] | None = None) -> np.ndarray:
        """Most probable class per row ``[n]``."""
        proba = self.predict_proba(X, groups)
        return np.asarray(self.classes_)[proba.argmax(axis=1)]

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: estimator, speaker_norm, chosen parameters, inner UAR."""
        return {"estimator": self.estimator, "speaker_norm": self.speaker_norm,
                "params": {k: _jsonable(v) for k, v in self.best_params_.items()},
                "inner_uar": self.inner_uar_, "seed": self.seed}


def _jsonable(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


# ------------------------------------------------------------------------- metrics

def _recalls(y_true: np.ndarray, y_pred: np.ndarray) -> dict[Any, float]:
    return {c: float(np.mean(y_pred[y_true == c] == c)) for c in pd.unique(y_true)}


def metrics(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    """UAR (mean recall over the classes present in ``y_true``), macro-F1, accuracy.

    Macro-F1 averages over the classes present in ``y_true`` or ``y_pred``.
    """
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape != yp.shape or yt.ndim != 1 or yt.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty 1-D and equally long; got {yt.shape}, {yp.shape}")
    labels = sorted(set(yt.tolist()) | set(yp.tolist()))
    return {"uar": float(np.mean(list(_recalls(yt, yp).values()))),
            "macro_f1": float(f1_score(yt, yp, labels=labels, average="macro", zero_division=0)),
            "accuracy": float(np.mean(yt == yp))}


def _check_aligned(features: Any, labels: Sequence[Any], speakers: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    y, g = np.asarray(labels), np.asarray(speakers).astype(str)
    n = len(features)
    if y.shape != (n,) or g.shape != (n,):
        raise ValueError(f"labels ({y.shape}) and speakers ({g.shape}) must have one entry per "
                         f"feature row ({n})")
    if pd.isna(pd.Series(y)).any():
        raise ValueError("labels contain NA; drop the rows whose emotion is outside the label set")
    return y, g


def _summary(pred: pd.DataFrame, folds: pd.DataFrame) -> dict[str, Any]:
    pooled = metrics(pred["y_true"].to_numpy(), pred["y_pred"].to_numpy())
    return {**pooled,
            "uar_mean_fold": float(folds["uar"].mean()), "uar_std_fold": float(folds["uar"].std(ddof=0)),
            "macro_f1_mean_fold": float(folds["macro_f1"].mean()),
            "accuracy_mean_fold": float(folds["accuracy"].mean()),
            "n_folds": int(len(folds)), "n": int(len(pred))}


def _fold_row(i: int, test: Sequence[str], yt: np.ndarray, yp: np.ndarray,
              best: Any, inner: float | None, fit_s: float) -> dict[str, Any]:
    return {"fold": i, "test_speaker": ",".join(test), "n_test": int(len(yt)), **metrics(yt, yp),
            "best_params": json.dumps(best, default=_jsonable, sort_keys=True),
            "inner_uar": inner, "fit_s": round(fit_s, 3)}


def _pred_frame(index: pd.Index, speakers: np.ndarray, fold: int, yt: np.ndarray,
                proba: np.ndarray, classes: Sequence[Any]) -> pd.DataFrame:
    df = pd.DataFrame({"speaker": speakers, "fold": fold, "y_true": yt,
                       "y_pred": np.asarray(classes)[proba.argmax(axis=1)]}, index=index)
    for j, c in enumerate(classes):
        df[f"p_{c}"] = proba[:, j]
    return df


# ----------------------------------------------------------------------- evaluation

def evaluate_loso(
    features: pd.DataFrame,
    labels: Sequence[Any],
    speakers: Sequence[Any],
    *,
    estimator: str = "svm_linear",
    speaker_norm: bool = False,
    param_grid: Mapping[str, Sequence[Any]] | None = None,
    inner_folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Leave-one-speaker-out evaluation with speaker-grouped inner tuning.

    For each speaker: fit :meth:`ClassicalModel.fit_grid` on the other speakers
    (inner grouped CV over them only), predict the held-out speaker. With
    ``speaker_norm`` the held-out speaker is z-scored by its own (unlabelled)
    statistics.

    Args:
        features: ``[n, d]`` feature table (e.g. from :func:`extract_features`).
        labels: ``[n]`` class labels aligned with the rows.
        speakers: ``[n]`` speaker ids aligned with the rows.
        estimator: one of :data:`ESTIMATORS`.
        speaker_norm: per-speaker standardisation (transductive, label-free).
        param_grid: grid of the final estimator; default :func:`default_param_grid`.
        inner_folds: inner grouped folds.
        seed: estimator seed.
        n_jobs: parallel fits inside each grid search.
        progress: tqdm bar over the folds.

    Returns:
        ``(per_fold, overall, predictions)``: ``per_fold`` has :data:`FOLD_COLUMNS`;
        ``overall`` holds pooled ``uar``, ``macro_f1``, ``accuracy`` over all
        predictions plus ``uar_mean_fold``, ``uar_std_fold``, ``macro_f1_mean_fold``,
        ``accuracy_mean_fold``, ``n_folds``, ``n``, ``fit_s``; ``predictions`` is
        indexed like ``features`` with ``speaker, fold, y_true, y_pred, p_<class>…``.

    Raises:
        ValueError: misaligned inputs, NA labels, fewer than 3 speakers.
    """
    y, g = _check_aligned(features, labels, speakers)
    splits = loso_splits(pd.DataFrame({"speaker": g}), n_val=0, seed=seed)
    if len(splits) < 3:
        raise ValueError(f"leave-one-speaker-out with inner CV needs at least 3 speakers; got {len(splits)}")
    X = features.to_numpy(dtype=np.float64) if isinstance(features, pd.DataFrame) else np.asarray(features)
    index = features.index if isinstance(features, pd.DataFrame) else pd.RangeIndex(len(X))
    classes = sorted(pd.unique(y).tolist())
    rows, preds = [], []
    t_all = time.perf_counter()
    for i, split in enumerate(tqdm(splits, desc=f"LOSO {estimator}", disable=not progress)):
        tr = np.isin(g, split.train + split.val)
        te = np.isin(g, split.test)
        t0 = time.perf_counter()
        model = ClassicalModel(estimator=estimator, speaker_norm=speaker_norm, seed=seed)
        model.fit_grid(X[tr], y[tr], g[tr], param_grid=param_grid, inner_folds=inner_folds, n_jobs=n_jobs)
        proba = _aligned_proba(model.predict_proba(X[te], g[te]), model.classes_, classes)
        fit_s = time.perf_counter() - t0
        p = _pred_frame(index[te], g[te], i, y[te], proba, classes)
        preds.append(p)
        rows.append(_fold_row(i, split.test, y[te], p["y_pred"].to_numpy(), model.best_params_,
                              model.inner_uar_, fit_s))
    folds = pd.DataFrame(rows, columns=list(FOLD_COLUMNS))
    pred = pd.concat(preds).loc[index]
    overall = {**_summary(pred, folds), "fit_s": round(time.perf_counter() - t_all, 3)}
    return folds, overall, pred


def _aligned_proba(proba: np.ndarray, have: Sequence[Any], want: Sequence[Any], *,
                   fill: float = 0.0) -> np.ndarray:
    """Scores re-ordered to ``want`` (classes absent from ``have`` get ``fill``)."""
    out = np.full((len(proba), len(want)), fill, dtype=np.float64)
    pos = {c: j for j, c in enumerate(want)}
    for j, c in enumerate(have):
        out[:, pos[c]] = proba[:, j]
    return out


@dataclass(frozen=True)
class Member:
    """One member of a classical ensemble: a feature set and a tuned estimator.

    Args:
        feature_set: key of the feature table (one of :data:`FEATURE_SETS`).
        estimator: one of :data:`ESTIMATORS`.
        speaker_norm: per-speaker standardisation.
        param_grid: grid of the final estimator (``None``: default grid).
    """

    feature_set: str
    estimator: str
    speaker_norm: bool = False
    param_grid: Mapping[str, Sequence[Any]] | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """E.g. ``compare+svm_linear+spknorm``."""
        return f"{self.feature_set}+{self.estimator}" + ("+spknorm" if self.speaker_norm else "")


def _weight_grid(n_members: int, *, step: float) -> np.ndarray:
    k = int(round(1 / step))
    combos = [c for c in itertools.product(range(k + 1), repeat=n_members) if sum(c) == k]
    return np.array(combos, dtype=float) / k


def choose_weights(probas: Sequence[np.ndarray], y: Sequence[Any], classes: Sequence[Any], *,
                   step: float = 0.1) -> tuple[np.ndarray, float]:
    """Ensemble weights on the simplex (grid ``step``) maximising UAR of the weighted mean.

    Meant for out-of-fold probabilities of *training* speakers; ties go to the
    weights closest to uniform.

    Returns:
        ``(weights [m], uar)``.
    """
    y = np.asarray(y)
    stack = np.stack(probas)  # [m, n, k]
    uniform = np.full(len(probas), 1 / len(probas))
    best, best_score = uniform, -1.0
    for w in _weight_grid(len(probas), step=step):
        score = metrics(y, np.asarray(classes)[np.tensordot(w, stack, axes=1).argmax(axis=1)])["uar"]
        if score > best_score + 1e-12 or (abs(score - best_score) <= 1e-12
                                          and np.abs(w - uniform).sum() < np.abs(best - uniform).sum()):
            best, best_score = w, score
    return best, float(best_score)


class ClassicalEnsemble:
    """Weighted mean of the class probabilities of several :class:`ClassicalModel`.

    Args:
        members: the members (feature set, estimator, speaker_norm).
        models: one fitted model per member.
        weights: one non-negative weight per member (normalised to sum 1).
    """

    def __init__(self, members: Sequence[Member], models: Sequence[ClassicalModel],
                 weights: Sequence[float] | None = None) -> None:
        if len(members) != len(models) or not members:
            raise ValueError("ClassicalEnsemble needs one fitted model per member (at least one)")
        w = np.full(len(members), 1.0) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (len(members),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {len(members)} non-negative numbers with a positive sum")
        classes = [list(m.classes_) for m in models]
        if any(c != classes[0] for c in classes):
            raise ValueError("ensemble members were fitted on different classes")
        self.members, self.models = list(members), list(models)
        self.weights = w / w.sum()
        self.classes_ = np.asarray(classes[0])

    @property
    def speaker_norm(self) -> bool:
        """Whether any member needs per-speaker statistics."""
        return any(m.speaker_norm for m in self.members)

    def predict_proba(self, features: Mapping[str, Any], groups: Sequence[Any] | None = None) -> np.ndarray:
        """Weighted mean probabilities ``[n, n_classes]``; ``features`` maps feature set → table."""
        out = None
        for w, mem, model in zip(self.weights, self.members, self.models, strict=True):
            if mem.feature_set not in features:
                raise ValueError(f"features lack the table {mem.feature_set!r} needed by member {mem.name}")
            p = w * model.predict_proba(features[mem.feature_set], groups)
            out = p if out is None else out + p
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the members and weights."""
        return {"members": [{"name": mem.name, **model.describe()}
                            for mem, model in zip(self.members, self.models, strict=True)],
                "weights": [float(w) for w in self.weights]}


def fit_ensemble(
    feature_tables: Mapping[str, pd.DataFrame],
    labels: Sequence[Any],
    speakers: Sequence[Any],
    *,
    members: Sequence[Member],
    combine: str = "mean",
    inner_folds: int = 5,
    weight_step: float = 0.1,
    seed: int = 0,
    n_jobs: int = 1,
) -> ClassicalEnsemble:
    """Fit a :class:`ClassicalEnsemble` on all given rows (e.g. the final model to deploy).

    Each member is tuned by :meth:`ClassicalModel.fit_grid` (speaker-grouped inner
    CV); with ``combine="weights"`` the weights come from :func:`choose_weights` on
    the members' held-out inner predictions, else they are equal.

    Raises:
        ValueError: as :func:`evaluate_loso_ensemble`.
    """
    if combine not in ("mean", "weights"):
        raise ValueError(f"combine={combine!r} is unknown; use 'mean' or 'weights'")
    if not members:
        raise ValueError("members is empty; give at least one Member")
    missing = [m.feature_set for m in members if m.feature_set not in feature_tables]
    if missing:
        raise ValueError(f"feature_tables lacks {missing}; have {', '.join(feature_tables)}")
    y, g = _check_aligned(feature_tables[members[0].feature_set], labels, speakers)
    classes = sorted(pd.unique(y).tolist())
    models = [ClassicalModel(estimator=m.estimator, speaker_norm=m.speaker_norm, seed=seed).fit_grid(
        feature_tables[m.feature_set], y, g, param_grid=m.param_grid, inner_folds=inner_folds, n_jobs=n_jobs)
        for m in members]
    if combine == "weights":
        w, _ = choose_weights([_aligned_proba(m.oof_proba_, m.classes_, classes) for m in models], y, classes,
                              step=weight_step)
    else:
        w = np.full(len(members), 1.0 / len(members))
    return ClassicalEnsemble(members, models, w)


def evaluate_loso_ensemble(
    feature_tables: Mapping[str, pd.DataFrame],
    labels: Sequence[Any],
    speakers: Sequence[Any],
    *,
    members: Sequence[Member],
    combine: str = "mean",
    inner_folds: int = 5,
    weight_step: float = 0.1,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, dict[str, pd.DataFrame]]:
    """Leave-one-speaker-out evaluation of a probability-averaging ensemble.

    In each outer fold every member is tuned by :meth:`ClassicalModel.fit_grid` on the
    training speakers, exactly as :func:`evaluate_loso` does (same folds, same seed,
    so each member's predictions equal that function's). ``combine="mean"`` averages
    the members' probabilities with equal weights (nothing to tune);
    ``combine="weights"`` chooses the weights by :func:`choose_weights` on held-out
    probabilities of the training speakers (the members' own grouped inner folds,
    with their chosen parameters), so the test speaker is never used.

    Args:
        feature_tables: ``{feature_set: [n, d] table}``, all with the same row index.
        labels: ``[n]`` class labels.
        speakers: ``[n]`` speaker ids.
        members: ensemble members.
        combine: ``"mean"`` or ``"weights"``.
        inner_folds: inner grouped folds.
        weight_step: grid step of the weights (``combine="weights"``).
        seed: estimator seed.
        n_jobs: inner folds evaluated in parallel.
        progress: tqdm bar over the folds.

    Returns:
        ``(per_fold, overall, predictions, member_predictions)``: the first three as
        :func:`evaluate_loso` (``best_params`` of a fold holds the weights and each
        member's parameters; ``overall["member_fit_s"]`` the seconds spent on each
        member); ``member_predictions`` maps :attr:`Member.name` to
        that member's predictions frame (summarise with :func:`summarize_predictions`).

    Raises:
        ValueError: unknown ``combine``, no or duplicated members, a missing or
            misaligned table.
    """
    if combine not in ("mean", "weights"):
        raise ValueError(f"combine={combine!r} is unknown; use 'mean' or 'weights'")
    if not members:
        raise ValueError("members is empty; give at least one Member")
    if len({m.name for m in members}) != len(members):
        raise ValueError(f"members must differ; got {[m.name for m in members]}")
    first = None
    for mem in members:
        if mem.feature_set not in feature_tables:
            raise ValueError(f"feature_tables lacks {mem.feature_set!r} (member {mem.name}); "
                             f"have {', '.join(feature_tables)}")
        idx = feature_tables[mem.feature_set].index
        if first is None:
            first = idx
        elif not idx.equals(first):
            raise ValueError(f"feature table {mem.feature_set!r} has other rows than "
                             f"{members[0].feature_set!r}; align them (same paths, same order)")
    y, g = _check_aligned(feature_tables[members[0].feature_set], labels, speakers)
    Xs = {k: feature_tables[k].to_numpy(dtype=np.float64) for k in {m.feature_set for m in members}}
    splits = loso_splits(pd.DataFrame({"speaker": g}), n_val=0, seed=seed)
    if len(splits) < 3:
        raise ValueError(f"leave-one-speaker-out with inner CV needs at least 3 speakers; got {len(splits)}")
    classes = sorted(pd.unique(y).tolist())
    rows, preds = [], []
    member_preds: dict[str, list[pd.DataFrame]] = {m.name: [] for m in members}
    member_s = dict.fromkeys(member_preds, 0.0)
    t_all = time.perf_counter()
    for i, split in enumerate(tqdm(splits, desc=f"LOSO ensemble ({combine})", disable=not progress)):
        tr = np.isin(g, split.train + split.val)
        te = np.isin(g, split.test)
        t0 = time.perf_counter()
        models, test_p, oof = [], [], []
        for mem in members:
            t_m = time.perf_counter()
            X = Xs[mem.feature_set]
            m = ClassicalModel(estimator=mem.estimator, speaker_norm=mem.speaker_norm, seed=seed)
            m.fit_grid(X[tr], y[tr], g[tr], param_grid=mem.param_grid, inner_folds=inner_folds, n_jobs=n_jobs)
            models.append(m)
            test_p.append(_aligned_proba(m.predict_proba(X[te], g[te]), m.classes_, classes))
            oof.append(_aligned_proba(m.oof_proba_, m.classes_, classes))
            member_preds[mem.name].append(_pred_frame(first[te], g[te], i, y[te], test_p[-1], classes))
            member_s[mem.name] += time.perf_counter() - t_m
        if combine == "weights":
            w, inner = choose_weights(oof, y[tr], classes, step=weight_step)
        else:
            w = np.full(len(members), 1 / len(members))
            inner = metrics(y[tr], np.asarray(classes)[np.tensordot(w, np.stack(oof), axes=1).argmax(axis=1)])["uar"]
        proba = np.tensordot(w, np.stack(test_p), axes=1)
        fit_s = time.perf_counter() - t0
        p = _pred_frame(first[te], g[te], i, y[te], proba, classes)
        preds.append(p)
        best = {"weights": [round(float(x), 3) for x in w],
                **{mem.name: m.best_params_ for mem, m in zip(members, models, strict=True)}}
        rows.append(_fold_row(i, split.test, y[te], p["y_pred"].to_numpy(), best, inner, fit_s))
    folds = pd.DataFrame(rows, columns=list(FOLD_COLUMNS))
    pred = pd.concat(preds).loc[first]
    overall = {**_summary(pred, folds), "fit_s": round(time.perf_counter() - t_all, 3),
               "member_fit_s": {k: round(v, 3) for k, v in member_s.items()}}
    return folds, overall, pred, {k: pd.concat(v).loc[first] for k, v in member_preds.items()}


def summarize_predictions(predictions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-fold table and overall metrics of a LOSO predictions frame.

    Args:
        predictions: frame with ``speaker, fold, y_true, y_pred`` (as returned by
            :func:`evaluate_loso` or :func:`combine_predictions`).

    Returns:
        ``(per_fold, overall)`` as :func:`evaluate_loso` (``best_params``,
        ``inner_uar`` and ``fit_s`` are NA; ``overall`` has no ``fit_s``).

    Raises:
        ValueError: a required column is missing.
    """
    missing = {"speaker", "fold", "y_true", "y_pred"} - set(predictions.columns)
    if missing:
        raise ValueError(f"predictions lack column(s) {sorted(missing)}")
    rows = []
    for fold, part in predictions.groupby("fold", sort=True):
        row = _fold_row(int(fold), sorted(pd.unique(part["speaker"].astype(str))), part["y_true"].to_numpy(),
                        part["y_pred"].to_numpy(), None, None, float("nan"))
        rows.append({**row, "best_params": None, "fit_s": None})
    folds = pd.DataFrame(rows, columns=list(FOLD_COLUMNS))
    return folds, _summary(predictions, folds)


def combine_predictions(predictions: Sequence[pd.DataFrame], *,
                        weights: Sequence[float] | None = None) -> pd.DataFrame:
    """Weighted mean of the ``p_<class>`` columns of LOSO predictions on the same rows.

    With equal weights this is exactly ``combine="mean"`` of
    :func:`evaluate_loso_ensemble` (whose members are fitted as in :func:`evaluate_loso`).

    Raises:
        ValueError: no frames, different rows/classes, or bad weights.
    """
    if not predictions:
        raise ValueError("combine_predictions needs at least one predictions frame")
    base = predictions[0]
    cols = [c for c in base.columns if c.startswith("p_")]
    for p in predictions[1:]:
        if not p.index.equals(base.index) or [c for c in p.columns if c.startswith("p_")] != cols \
                or not (p["y_true"].to_numpy() == base["y_true"].to_numpy()).all():
            raise ValueError("predictions must cover the same rows, labels and classes (p_<class> columns)")
    w = np.full(len(predictions), 1.0) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(predictions),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(predictions)} non-negative numbers with a positive sum")
    w = w / w.sum()
    proba = sum(wi * p[cols].to_numpy(dtype=np.float64) for wi, p in zip(w, predictions, strict=True))
    lookup = {str(v): v for v in pd.unique(pd.concat([base["y_true"], base["y_pred"]]))}
    classes = [lookup.get(c.removeprefix("p_"), c.removeprefix("p_")) for c in cols]
    out = base[["speaker", "fold", "y_true"]].copy()
    out["y_pred"] = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    for j, c in enumerate(cols):
        out[c] = proba[:, j]
    return out


# --------------------------------------------------------------------------- bundle

def save_classical_bundle(
    out_dir: str | os.PathLike[str],
    model: ClassicalModel | ClassicalEnsemble,
    *,
    labels: Sequence[str],
    feature_set: str | Sequence[str],
    sample_rate: int,
    window_s: float,
    metrics: Mapping[str, Any] | None = None,
    split: Mapping[str, Sequence[str]] | None = None,
    train_params: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.json`` and ``model.joblib`` for windowed inference.

    Args:
        out_dir: bundle folder (created), e.g. ``results/models/emodb_compare_svm``.
        model: a fitted :class:`ClassicalModel` (or :class:`ClassicalEnsemble`).
        labels: class labels in the order of ``predict_proba`` columns; must equal the
            model's classes as a set (the bundle reorders to this order).
        feature_set: the model's feature set (an ensemble: its members' sets, in order).
        sample_rate: audio rate (Hz) the features were computed at.
        window_s: analysis window length (s) the bundle expects.
        metrics: evaluation figures to keep (e.g. the LOSO ``overall``).
        split: speakers per partition (``{"train": [...], "val": [...], "test": [...]}``).
        train_params: anything else about the training run.

    Returns:
        The bundle folder.

    Raises:
        ValueError: unfitted model, labels that differ from the model's classes, a
            feature set that does not match an ensemble's members, or a bad window.
    """
    labels = [str(x) for x in labels]
    if getattr(model, "classes_", None) is None:
        raise ValueError("save_classical_bundle: the model is not fitted")
    if sorted(labels) != sorted(str(c) for c in model.classes_):
        raise ValueError(f"labels {labels} differ from the model's classes {list(model.classes_)}")
    _check_sample_rate(sample_rate)
    if not float(window_s) > 0:
        raise ValueError(f"window_s={window_s} must be > 0 seconds")
    if isinstance(model, ClassicalEnsemble):
        sets = [m.feature_set for m in model.members]
        given = [feature_set] if isinstance(feature_set, str) else list(feature_set)
        if given != sets:
            raise ValueError(f"feature_set {given} must list the ensemble members' sets {sets}")
        arch = "classical:ensemble(" + ",".join(m.name for m in model.members) + ")"
        arch_params = model.describe()
    else:
        if not isinstance(feature_set, str):
            raise ValueError("a single ClassicalModel has one feature_set (a string)")
        sets = [feature_set]
        arch = f"classical:{model.estimator}"
        arch_params = model.describe()
    for s in sets:
        _check_feature_set(s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "labels": labels,
        "sample_rate": int(sample_rate),
        "window_s": float(window_s),
        "features": {"kind": "functionals", "feature_sets": sets,
                     "configs": [feature_config(s, sample_rate=sample_rate) for s in sets]},
        "arch": arch,
        "arch_params": arch_params,
        "speaker_norm": bool(model.speaker_norm),
        "train_params": dict(train_params or {}),
        "split": {k: list(v) for k, v in (split or {}).items()},
        "metrics": dict(metrics or {}),
        "git_commit": provenance.git_commit(),
        "packages": provenance.package_versions(("scikit-learn", "opensmile", "librosa", "numpy")),
    }
    atomic.atomic_write(out / "model.joblib", lambda f: joblib.dump(model, f))
    atomic.atomic_write_json(out / "model.json", meta)
    return out


class ClassicalBundle:
    """A saved classical model with the deep bundles' ``predict_proba(windows)`` contract.

    Attributes:
        labels: class labels (columns of :meth:`predict_proba`).
        sample_rate: audio rate (Hz); window_s: window length (s);
        window_samples: ``round(window_s * sample_rate)``.
        meta: the whole ``model.json``.
    """

    def __init__(self, model: ClassicalModel | ClassicalEnsemble, meta: Mapping[str, Any],
                 reference: Mapping[str, np.ndarray] | None = None) -> None:
        self.model = model
        self.meta = dict(meta)
        self.labels: list[str] = list(meta["labels"])
        self.sample_rate: int = int(meta["sample_rate"])
        self.window_s: float = float(meta["window_s"])
        self.window_samples: int = int(round(self.window_s * self.sample_rate))
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
        """``{feature_set: float32 [n, d]}`` of the windows."""
        w = self._check_windows(windows)
        return {s: signal_features(w, feature_set=s, sample_rate=self.sample_rate) for s in self.feature_sets}

    def with_speaker_reference(self, windows: np.ndarray) -> ClassicalBundle:
        """A copy that z-scores features with the statistics of one speaker's windows.

        Needed when the model was trained with ``speaker_norm``: pass (many) windows of
        the speaker whose audio will be scored, e.g. all windows of a caregiver.

        Raises:
            ValueError: wrong window length, or fewer than 2 windows.
        """
        feats = self.window_features(windows)
        if len(windows) < 2:
            raise ValueError("a speaker reference needs at least 2 windows of that speaker's audio")
        return ClassicalBundle(self.model, self.meta, {s: np.stack(_moments(f.astype(np.float64)))
                                                      for s, f in feats.items()})

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """Class probabilities of each window.

        Args:
            windows: ``float32 [n, window_samples]`` mono audio at ``sample_rate``.

        Returns:
            ``float32 [n, n_labels]`` (columns: ``labels``; rows sum to 1).

        Raises:
            ValueError: wrong window shape, or a ``speaker_norm`` model without a
                speaker reference.
        """
        w = self._check_windows(windows)
        if self.speaker_norm and self._reference is None:
            raise ValueError("this classical model was trained with speaker_norm: call "
                             "bundle.with_speaker_reference(<windows of the speaker>) first")
        if len(w) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        feats = self.window_features(w)
        if self._reference is not None:  # z-score here; the model then sees one "speaker"
            feats = {s: _zscore(f.astype(np.float64), *self._reference[s]) for s, f in feats.items()}
        proba = _predict_prepared(self.model, feats)
        proba = _aligned_proba(proba, [str(c) for c in self.model.classes_], self.labels)
        proba = np.clip(proba, 0.0, None)
        return (proba / proba.sum(axis=1, keepdims=True)).astype(np.float32)


def _predict_prepared(model: ClassicalModel | ClassicalEnsemble, feats: Mapping[str, np.ndarray]) -> np.ndarray:
    """Predict from features already speaker-normalised (or needing none)."""
    def one(m: ClassicalModel, X: np.ndarray) -> np.ndarray:
        return m._check_fitted().predict_proba(np.asarray(X, dtype=np.float64))

    if isinstance(model, ClassicalEnsemble):
        return sum(w * one(m, feats[mem.feature_set])
                   for w, mem, m in zip(model.weights, model.members, model.models, strict=True))
    (X,) = feats.values()
    return one(model, X)


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
    if not isinstance(model, (ClassicalModel, ClassicalEnsemble)):
        raise ValueError(f"{path / 'model.joblib'} holds a {type(model).__name__}, not a classical model")
    return ClassicalBundle(model, meta)
