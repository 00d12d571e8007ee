"""Acoustic functionals of utterances and windows, their disk cache, per-speaker standardisation.

Feature sets (:func:`extract_features`), one vector per utterance or window:
``compare`` (openSMILE ComParE_2016 functionals, 6373 values), ``egemaps``
(openSMILE eGeMAPSv02 functionals, 88 values), ``mfcc_stats`` (librosa MFCC
+ deltas + delta-deltas, summarised by mean, std and percentiles, 300 values), and the
pooled LLD sets ``compare_lld_pooled`` (650 values) and ``egemaps_lld_pooled`` (250),
whose LLDs a long recording computes once per block and pools per window
(:mod:`ser.models.classical.pooled`).
Audio is read with :func:`ser.signal.audio.load` at ``sample_rate`` and the features are
computed from the signal, exactly as :class:`ser.models.classical.bundle.ClassicalBundle`
does on windows. Features are cached on disk per file, keyed by the file's SHA-256, the
feature set, its configuration and the sample rate, so each file is processed once.

Per-speaker normalisation (:func:`speaker_standardize`) z-scores each speaker's features
with that speaker's own mean and standard deviation. It never uses labels, but it
is *transductive*: the statistics of the test speaker come from that speaker's own
(unlabelled) test audio. This is a standard, legitimate technique for
speaker-independent SER (the deployed system sees all of a caregiver's audio
before scoring it), but results with it must be reported as such, next to the
results without it. A bundle trained with it needs a reference of the new
speaker's audio (:meth:`ser.models.classical.bundle.ClassicalBundle.with_speaker_reference`,
or :class:`RunningMoments` over a stream of windows and ``with_reference``; stage 04 and
``ser predict`` do this per caregiver, :mod:`ser.inference.speaker_norm`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from tqdm import tqdm

from ser.core import atomic, provenance
from ser.models.classical import pooled
from ser.signal import audio

#: Feature sets :func:`extract_features` knows.
FEATURE_SETS: tuple[str, ...] = ("compare", "egemaps", "mfcc_stats", *pooled.POOLED_SETS)
#: Estimators :class:`ClassicalModel` knows.
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
#: Smallest standard deviation used when z-scoring (constant features become 0).
_STD_FLOOR: float = 1e-8


def check_feature_set(feature_set: str) -> None:
    """Raise ``ValueError`` unless ``feature_set`` is one of :data:`FEATURE_SETS`."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set={feature_set!r} is unknown; use one of {', '.join(FEATURE_SETS)}")


def check_sample_rate(sample_rate: int) -> None:
    """Raise ``ValueError`` unless ``sample_rate`` is an integer >= 8000 Hz."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise ValueError(f"sample_rate={sample_rate!r} must be an integer >= 8000 Hz (e.g. 16000)")


def feature_config(feature_set: str, *, sample_rate: int) -> dict[str, Any]:
    """The full configuration of a feature set (stored in bundles and cache keys).

    Raises:
        ValueError: unknown feature set or a sample rate below 8 kHz.
    """
    check_feature_set(feature_set)
    check_sample_rate(sample_rate)
    cfg: dict[str, Any] = {"feature_set": feature_set, "sample_rate": int(sample_rate),
                           "cache_version": CACHE_VERSION}
    if feature_set == "compare":
        cfg.update(tool="opensmile", opensmile_feature_set="ComParE_2016", level="Functionals")
    elif feature_set == "egemaps":
        cfg.update(tool="opensmile", opensmile_feature_set="eGeMAPSv02", level="Functionals")
    elif pooled.is_pooled(feature_set):
        cfg.update(tool="opensmile", opensmile_feature_set=pooled.POOLED_SETS[feature_set],
                   level="LowLevelDescriptors", pooled=list(pooled.STATISTICS),
                   frame_step_s=pooled.FRAME_STEP_S, delta_width=pooled.DELTA_WIDTH)
    else:
        cfg.update(tool="librosa", **{k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in MFCC_CONFIG.items()})
    return cfg


class _Extractor:
    """Computes one feature set from signals; holds its openSMILE object (per process)."""

    def __init__(self, feature_set: str, sample_rate: int) -> None:
        check_feature_set(feature_set)
        check_sample_rate(sample_rate)
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
        if pooled.is_pooled(self.feature_set):
            return pooled.feature_names(self.feature_set)
        return list(self._opensmile().feature_names)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """Feature vector ``float32[d]`` of a mono signal ``y`` at ``self.sample_rate``."""
        y = np.ascontiguousarray(y, dtype=np.float32)
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"expected a non-empty mono signal; got shape {y.shape}")
        if self.feature_set == "mfcc_stats":
            return _mfcc_stats(y, self.sample_rate)
        if pooled.is_pooled(self.feature_set):
            return pooled.pooled_signal(y, self.sample_rate, feature_set=self.feature_set)
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
        feature_set: one of :data:`FEATURE_SETS` (``"compare"``, ``"egemaps"``, ``"mfcc_stats"``,
            ``"compare_lld_pooled"``, ``"egemaps_lld_pooled"``).
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
    check_feature_set(feature_set)
    check_sample_rate(sample_rate)
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
        out[rows] = zscore(X[rows], *moments(X[rows]))
    return out


def moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of ``X [n, d]`` for z-scoring, NaN ignored.

    An all-NaN column gets mean 0; a standard deviation that is not finite or not above
    the floor becomes 1 (the column is then only centred).
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column → NaN stats
        mean = np.nanmean(X, axis=0)
        std = np.nanstd(X, axis=0)
    return np.nan_to_num(mean), np.where(np.isfinite(std) & (std > _STD_FLOOR), std, 1.0)


def zscore(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(X - mean) / std`` with the statistics of :func:`moments`."""
    return (X - mean) / std


class RunningMoments:
    """The :func:`moments` of rows that arrive in batches, without keeping the rows.

    Per column it keeps the count of finite values, their mean and the sum of squared
    deviations, and merges each batch in with Chan, Golub and LeVeque's pairwise update,
    so the moments of a stream of windows (a caregiver's hours of audio) take the memory
    of one batch. :meth:`result` equals :func:`moments` of all rows stacked (to rounding).

    Attributes:
        n_rows: rows seen (NaN rows included).
    """

    def __init__(self) -> None:
        self.n_rows = 0
        self._count: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def _merge(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        if self._count is None or self._mean is None or self._m2 is None:
            self._count, self._mean, self._m2 = count, mean, m2
            return
        if count.shape != self._count.shape:
            raise ValueError(f"RunningMoments: rows of {count.shape[0]} columns after rows of "
                             f"{self._count.shape[0]}")
        total = self._count + count
        safe = np.maximum(total, 1)
        delta = mean - self._mean
        self._mean = self._mean + delta * (count / safe)
        self._m2 = self._m2 + m2 + delta ** 2 * (self._count * count / safe)
        self._count = total

    def update(self, X: np.ndarray) -> RunningMoments:
        """Add the rows of ``X [n, d]`` (NaN ignored per column, as :func:`moments`); returns self.

        Raises:
            ValueError: ``X`` is not 2-D or has another number of columns than earlier rows.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"RunningMoments.update: X must be [n, d]; got shape {X.shape}")
        if len(X) == 0:
            return self
        finite = np.isfinite(X)
        count = finite.sum(axis=0).astype(np.float64)
        z = np.where(finite, X, 0.0)
        mean = np.divide(z.sum(axis=0), count, out=np.zeros(X.shape[1]), where=count > 0)
        m2 = (np.square(z - mean) * finite).sum(axis=0)
        self._merge(count, mean, m2)
        self.n_rows += len(X)
        return self

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Add the rows another accumulator has seen; returns self."""
        if other._count is not None and other._mean is not None and other._m2 is not None:
            self._merge(other._count.copy(), other._mean.copy(), other._m2.copy())
        self.n_rows += other.n_rows
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation per column, with the rules of :func:`moments`.

        Raises:
            ValueError: no row was added.
        """
        if self._count is None or self._mean is None or self._m2 is None:
            raise ValueError("RunningMoments.result: no rows were added")
        has = self._count > 0
        mean = np.where(has, self._mean, 0.0)
        std = np.sqrt(np.divide(self._m2, self._count, out=np.full(len(has), np.nan), where=has))
        return mean, np.where(np.isfinite(std) & (std > _STD_FLOOR), std, 1.0)
