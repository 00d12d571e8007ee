"""Evaluation: scoring bundles on held-out speakers and other corpora, ``runs.csv``, figures.

The metrics themselves (UAR, macro-F1, weighted accuracy, confusion matrices, per-class
tables) are in :mod:`ser.train.metrics`.

:func:`evaluate_bundle` scores one partition of ``utterances.csv``;
:func:`evaluate_cross_corpus` scores a model on another corpus, optionally after the
per-corpus :class:`SpectralNormalizer`. Probability calibration lives in
:mod:`ser.train.calibration`.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import signal
from tqdm import tqdm

from ser.core import atomic
from ser.data import corpora
from ser.data.labels import resolve_label_map
from ser.models.bundle import Bundle
from ser.models.classical.features import moments
from ser.models.window import fit_window
from ser.signal import audio, pitchnorm
from ser.train.metrics import summary_metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Columns of ``runs.csv``, one row per (model_name, split).
RUNS_COLUMNS = ["model_name", "split", "corpus", "arch", "window_s", "aggregation", "n_train_speakers",
                "test_speakers", "n_utterances", "uar", "macro_f1", "accuracy", "temperature", "ece",
                "created"]
#: Columns of ``eval_cross_corpus.csv``, one row per (model, corpus, normalisation).
CROSS_CORPUS_COLUMNS = ["model_name", "train_corpus", "corpus", "normalization", "aggregation",
                        "n_utterances", "n_speakers", "n_classes", "n_failed", "n_read_errors",
                        "n_excluded_speakers", "chance_uar", "uar", "macro_f1", "accuracy"]
#: ``normalization`` value of :class:`SpectralNormalizer` rows in ``eval_cross_corpus.csv``.
SPECTRAL_NORM = "spectral_level"
WaveTransform = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- bundles


def sliding_windows(wave: np.ndarray, n_samples: int, hop: int) -> np.ndarray:
    """All windows of ``n_samples`` every ``hop`` samples, the last one flush with the end.

    An utterance shorter than one window gives one centred, zero-padded window
    (:func:`ser.models.window.fit_window`).

    Returns:
        float32 ``[n_windows, n_samples]``.
    """
    if hop <= 0:
        raise ValueError(f"hop must be > 0 samples; got {hop}")
    if len(wave) <= n_samples:
        return fit_window(wave, n_samples)[None]
    starts = list(range(0, len(wave) - n_samples + 1, hop))
    if starts[-1] != len(wave) - n_samples:
        starts.append(len(wave) - n_samples)
    return np.stack([wave[s:s + n_samples] for s in starts]).astype(np.float32, copy=False)


def speaker_reference(bundle: Any, windows: np.ndarray) -> Any:
    """``bundle`` z-scoring with the statistics of one speaker's ``windows`` (label-free,
    transductive), or ``bundle`` itself when it needs no reference."""
    if not getattr(bundle, "speaker_norm", False):
        return bundle
    feats = bundle.window_features(windows)
    return bundle.with_reference({s: moments(f.astype(np.float64)) for s, f in feats.items()})


def evaluate_bundle(
    bundle: Bundle, utterances: pd.DataFrame, *, split: str | None = "test", sliding: bool = False,
    hop_s: float | None = None, batch_size: int = 64, transform: WaveTransform | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Predict every utterance of one partition and score the predictions.

    Each utterance is read at the bundle's sample rate (and pitch-normalised per speaker
    when the bundle was trained so, :class:`ser.signal.pitchnorm.SpeakerLoader`); by default the
    model sees its centre window (:func:`ser.models.window.fit_window`, as in validation). With
    ``sliding`` the class probabilities are averaged over windows every ``hop_s`` seconds (default
    half a window). Rows whose label is not one of the model's labels are ignored;
    unreadable files are kept in the predictions with their ``error`` and left out of
    the metrics.

    Args:
        bundle: a loaded model (:func:`ser.models.bundle.load_bundle`).
        utterances: table with ``path, label, speaker`` and ``split`` (``split`` may be
            absent when ``split=None``).
        split: partition to evaluate (``"test"``, ``"val"`` ...); ``None``: every row
            (another corpus, see :func:`evaluate_cross_corpus`).
        sliding: average over sliding windows instead of the centre window.
        hop_s: hop between sliding windows in seconds.
        batch_size: windows per forward pass.
        transform: applied to each waveform (float32 ``[T]`` at the bundle's rate) before
            windowing, e.g. a :class:`SpectralNormalizer`.
        progress: show a tqdm bar.

    Returns:
        ``(metrics, predictions)``: metrics ``{split, aggregation, n_utterances, n_speakers,
        n_failed, n_ignored_labels, uar, macro_f1, accuracy}``; predictions one row per
        utterance: ``path, speaker, label, pred, correct, p_<label>..., n_windows, error``.

    Raises:
        ValueError: missing columns or no rows for ``split`` with a model label.
    """
    needed = ("path", "label", "speaker") + (("split",) if split is not None else ())
    missing = [c for c in needed if c not in utterances.columns]
    if missing:
        raise ValueError(f"utterances table lacks columns {missing}; it must come from stage 01_preprocess")
    labels = bundle.labels
    part = utterances if split is None else utterances[utterances["split"] == split]
    rows = part[part["label"].isin(labels)]
    if rows.empty:
        where = ("" if split is None else f"split == {split!r} and ") + f"a label in {labels}"
        present = ("" if split is None else
                   f"; splits present: {sorted(map(str, utterances['split'].dropna().unique()))}")
        raise ValueError(f"no utterances with {where}{present}")
    n, hop = bundle.window_samples, int(round((hop_s or bundle.window_s / 2) * bundle.sample_rate))
    records: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], np.ndarray]] = []  # utterances whose windows await a forward pass
    load = pitchnorm.SpeakerLoader(rows, sample_rate=bundle.sample_rate, target_hz=bundle.pitch_norm_hz)

    def flush(model: Any = bundle) -> None:  # one batched forward pass over the windows of several utterances
        if not pending:
            return
        proba = model.predict_proba(np.concatenate([w for _, w in pending]), batch_size=batch_size)
        start = 0
        for rec, w in pending:
            p = proba[start:start + len(w)].mean(axis=0)
            start += len(w)
            records.append({**rec, "pred": labels[int(np.argmax(p))], "n_windows": len(w), "error": None,
                            **{f"p_{lab}": float(v) for lab, v in zip(labels, p)}})
        pending.clear()

    norm = bool(getattr(bundle, "speaker_norm", False))  # z-scored with each speaker's own windows
    speakers = rows["speaker"].astype(str).to_numpy()
    order = np.argsort(speakers, kind="stable") if norm else np.arange(len(rows))
    for k, i in enumerate(tqdm(order, desc=f"evaluate {split or 'all'}", unit="utt", disable=not progress)):
        r = rows.iloc[int(i)]
        rec: dict[str, Any] = {"_row": int(i), "path": str(r["path"]), "speaker": r["speaker"],
                               "label": r["label"]}
        try:
            wave = load(r["path"], r["speaker"])
        except (audio.AudioError, OSError, ValueError) as err:
            records.append({**rec, "pred": None, "n_windows": 0, "error": f"{type(err).__name__}: {err}"})
        else:
            if transform is not None:
                wave = np.asarray(transform(wave), dtype=np.float32)
            pending.append((rec, sliding_windows(wave, n, hop) if sliding else fit_window(wave, n)[None]))
        last = k + 1 == len(order) or speakers[order[k + 1]] != speakers[i]
        if norm and last and pending:
            flush(speaker_reference(bundle, np.concatenate([w for _, w in pending])))
        elif not norm and sum(len(w) for _, w in pending) >= batch_size:
            flush()
    flush()
    records.sort(key=lambda rec: rec["_row"])  # back to table order (batches finish out of order)
    cols = ["path", "speaker", "label", "pred", "correct", *(f"p_{lab}" for lab in labels),
            "n_windows", "error"]
    pred = pd.DataFrame(records)
    pred["correct"] = pred["pred"] == pred["label"]
    pred = pred.reindex(columns=cols)
    ok = pred[pred["error"].isna()]
    metrics = {"split": split if split is not None else "all",
               "aggregation": "sliding_mean" if sliding else "centre",
               "n_utterances": len(ok), "n_speakers": int(ok["speaker"].nunique()),
               "n_failed": int(pred["error"].notna().sum()),
               "n_ignored_labels": int(len(part) - len(rows)),
               **summary_metrics(ok["label"].tolist(), ok["pred"].tolist(), labels)}
    return metrics, pred


def runs_row(bundle: Bundle, metrics: Mapping[str, Any], *, model_name: str,
             speakers: Sequence[str], corpus: str | None = None) -> dict[str, Any]:
    """One row of ``runs.csv`` for an evaluated bundle.

    Args:
        bundle: the evaluated model (its ``meta["calibration"]`` gives ``temperature``
            and ``ece``, the ECE after calibration; NaN when uncalibrated).
        metrics: output of :func:`evaluate_bundle`.
        model_name: bundle name.
        speakers: speakers of the evaluated partition.
        corpus: corpus the partition comes from (``None``: unknown).
    """
    cal = bundle.meta.get("calibration") or {}
    return {"model_name": model_name, "split": metrics["split"], "corpus": corpus,
            "arch": bundle.meta.get("arch"), "window_s": bundle.window_s,
            "aggregation": metrics.get("aggregation"),
            "n_train_speakers": len(bundle.meta.get("split", {}).get("train", [])),
            "test_speakers": " ".join(sorted(map(str, speakers))), "n_utterances": metrics["n_utterances"],
            "uar": metrics["uar"], "macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
            "temperature": bundle.temperature, "ece": cal.get("ece_after", float("nan")),
            "created": bundle.meta.get("created_utc")
            or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def update_runs_table(path: str | os.PathLike[str], row: Mapping[str, Any]) -> pd.DataFrame:
    """Insert or replace the row for ``(model_name, split)`` in ``runs.csv`` (atomic).

    Returns:
        The updated table, sorted by model name and split.
    """
    p = Path(path)
    table = pd.read_csv(p) if p.is_file() else pd.DataFrame(columns=RUNS_COLUMNS)
    keep = ~((table["model_name"].astype(str) == str(row["model_name"]))
             & (table["split"].astype(str) == str(row["split"])))
    new = pd.DataFrame([dict(row)])
    table = new if not keep.any() else pd.concat([table[keep], new], ignore_index=True)
    table = table.reindex(columns=list(dict.fromkeys([*RUNS_COLUMNS, *table.columns])))
    table = table.sort_values(["model_name", "split"], ignore_index=True)
    atomic.atomic_write_csv(p, table)
    return table


# --------------------------------------------------------------------------- cross-corpus


def average_spectrum_db(waves: Iterable[np.ndarray], *, n_fft: int = 512) -> np.ndarray:
    """Long-term average power spectrum of a set of utterances, in dB.

    Welch's method per utterance (Hann, ``n_fft`` samples, 50 % overlap), then the mean
    power over utterances (each utterance weighs the same), then ``10 log10``.

    Args:
        waves: float32 ``[T]`` waveforms, all at the same sampling rate.
        n_fft: FFT length in samples.

    Returns:
        float64 ``[n_fft // 2 + 1]`` dB values (DC to Nyquist).

    Raises:
        ValueError: no waveform given.
    """
    acc, n = np.zeros(n_fft // 2 + 1), 0
    for w in waves:
        w = np.asarray(w, dtype=np.float64)
        if len(w) < n_fft:
            w = np.pad(w, (0, n_fft - len(w)))
        acc += signal.welch(w, nperseg=n_fft, noverlap=n_fft // 2, window="hann")[1]
        n += 1
    if n == 0:
        raise ValueError("average_spectrum_db: no waveforms given")
    return 10 * np.log10(acc / n + 1e-20)


def _rms_db(wave: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(wave, dtype=np.float64)) + 1e-12))


@dataclass
class SpectralNormalizer:
    """Per-corpus normalisation of another corpus' audio towards the training corpus.

    Corpora differ by microphone, room and recording chain: a fixed linear filter,
    i.e. an additive dB offset in each frequency band of the log-mel input. The models
    here already standardise every window over all bins (:func:`ser.signal.spectrogram.normalize_window`),
    which removes the recording level but not the spectral tilt. This normaliser equalises
    the *corpus-level mean log spectrum*: the difference between the long-term average
    spectra (:func:`average_spectrum_db`) of the training corpus (reference) and of the
    other corpus (target), centred on its median, smoothed and clipped to ±``max_gain_db``
    (bands where either corpus has no energy, 60 dB below its peak, are left alone), is
    applied as a linear-phase FIR filter; then the level is scaled so that the median
    utterance RMS matches the reference's (irrelevant for log-mel models, relevant for
    waveform models). It is per-corpus mean normalisation of log-mel statistics done in
    the waveform domain, so it works for any model behind :meth:`Bundle.predict_proba`;
    the variance is left to the per-window standardisation. Unsupervised: it uses the
    target corpus' audio, never its labels (cf. Schuller et al. 2010, per-corpus
    normalisation for cross-corpus emotion recognition).

    Build with :meth:`fit`; call on a waveform to normalise it.

    Attributes:
        gain_db: float64 ``[n_fft // 2 + 1]`` equaliser gain per FFT bin (dB).
        level_gain: linear gain applied after the filter.
        taps: float64 ``[n_fft + 1]`` FIR filter.
    """

    gain_db: np.ndarray
    level_gain: float
    taps: np.ndarray = field(repr=False)

    @classmethod
    def fit(cls, reference: Sequence[np.ndarray], target: Sequence[np.ndarray], *, n_fft: int = 512,
            max_gain_db: float = 12.0, smooth_bins: int = 9) -> SpectralNormalizer:
        """Fit the equaliser and level gain from waveforms of both corpora (same sampling rate).

        Args:
            reference: waveforms of the training corpus (its training speakers).
            target: waveforms of the corpus to normalise.
            n_fft: FFT length (the filter has ``n_fft + 1`` taps).
            max_gain_db: clip of the equaliser gain in dB.
            smooth_bins: moving-average width over FFT bins (odd; 1 = none).

        Raises:
            ValueError: an empty set, or bad options.
        """
        if not reference or not target:
            raise ValueError("SpectralNormalizer.fit needs waveforms of both the reference (training) "
                             f"and the target corpus; got {len(reference)} and {len(target)}")
        if n_fft < 16 or n_fft % 2 or smooth_bins < 1 or max_gain_db < 0:
            raise ValueError(f"need an even n_fft >= 16, smooth_bins >= 1 and max_gain_db >= 0; got "
                             f"n_fft={n_fft}, smooth_bins={smooth_bins}, max_gain_db={max_gain_db}")
        ref_db = average_spectrum_db(reference, n_fft=n_fft)
        tgt_db = average_spectrum_db(target, n_fft=n_fft)
        gain = ref_db - tgt_db
        valid = (ref_db > ref_db.max() - 60) & (tgt_db > tgt_db.max() - 60)
        gain = np.where(valid, gain - np.median(gain[valid]) if valid.any() else 0.0, 0.0)
        if smooth_bins > 1:
            kernel = np.ones(int(smooth_bins)) / int(smooth_bins)
            gain = np.convolve(np.pad(gain, smooth_bins // 2, mode="edge"), kernel, mode="valid")
        gain = np.clip(gain, -max_gain_db, max_gain_db)
        taps = signal.firwin2(n_fft + 1, np.linspace(0.0, 1.0, len(gain)), 10 ** (gain / 20))
        filtered = [signal.fftconvolve(np.asarray(w, np.float64), taps, mode="same") for w in target]
        level = 10 ** ((np.median([_rms_db(np.asarray(w)) for w in reference])
                        - np.median([_rms_db(w) for w in filtered])) / 20)
        return cls(gain_db=gain, level_gain=float(level), taps=taps)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """Normalised float32 ``[T]`` waveform (same length; not clipped to [-1, 1])."""
        out = signal.fftconvolve(np.asarray(wave, dtype=np.float64), self.taps, mode="same")
        return (out * self.level_gain).astype(np.float32)


def _sample_waves(files: Sequence[str], *, sample_rate: int, max_files: int, seed: int) -> list[np.ndarray]:
    """Read up to ``max_files`` of ``files`` (a seeded random subset); unreadable ones are skipped."""
    files = list(files)
    chosen = files if len(files) <= max_files else \
        list(np.random.default_rng(seed).choice(files, max_files, replace=False))
    waves = []
    for p in chosen:
        try:
            waves.append(audio.load(p, sample_rate=sample_rate)[0])
        except (audio.AudioError, OSError, ValueError):
            continue
    return waves


def evaluate_cross_corpus(
    bundle: Bundle, *, corpus: str, root: str | os.PathLike[str],
    label_map: Mapping[str, str | None] | None = None, exclude_speakers: Iterable[str] = (),
    normalize: bool = False, reference_paths: Sequence[str] = (), max_norm_files: int = 200,
    sliding: bool = False, seed: int = 0, batch_size: int = 64, progress: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Evaluate a bundle on another corpus (every speaker; none was seen in training).

    The corpus is read with :func:`ser.data.corpora.read_corpus`, its emotions mapped to the
    model's labels (default map restricted to ``bundle.labels``; other emotions are left
    out), and each utterance scored as in :func:`evaluate_bundle`. UAR averages over the
    model classes present in the corpus (``n_classes``; chance = ``1 / n_classes``).

    Args:
        bundle: the trained model.
        corpus: corpus name (:data:`ser.data.corpora.CORPORA`).
        root: folder of that corpus' audio.
        label_map: ``{corpus_emotion: label or None}`` (default: the corpus' default map).
        exclude_speakers: speaker ids to leave out (the training/validation speakers when
            ``corpus`` is the training corpus itself), as the corpus writes them or
            ``<corpus>/<speaker>`` (the ids of a multi-corpus ``utterances.csv``).
        normalize: apply a :class:`SpectralNormalizer` fitted on up to ``max_norm_files``
            files of ``reference_paths`` and of this corpus.
        reference_paths: audio of the training corpus (its training speakers); needed
            when ``normalize``.
        max_norm_files: files per corpus used to fit the normaliser (random, ``seed``).
        sliding: average over sliding windows instead of the centre window.
        seed: seed of the file sample for the normaliser.
        batch_size: windows per forward pass.
        progress: show tqdm bars.

    Returns:
        ``(metrics, predictions)``: metrics with the keys of :func:`evaluate_bundle` plus
        ``corpus, normalization, n_classes, chance_uar, n_read_errors, n_excluded_speakers``;
        predictions as in :func:`evaluate_bundle` plus ``corpus``.

    Raises:
        ValueError: unknown corpus, no utterance with a model label, or ``normalize``
            without ``reference_paths``.
        FileNotFoundError: ``root`` is not a folder.
    """
    if normalize and not reference_paths:
        raise ValueError("cross-corpus normalisation needs reference_paths: audio of the training "
                         "corpus (the train split of utterances.csv)")
    lmap = dict(label_map) if label_map is not None else resolve_label_map(corpus, labels=bundle.labels)
    table, errors = corpora.read_corpus(corpus, root, label_map=lmap)
    excluded = {str(s) for s in exclude_speakers}
    spk = table["speaker"].astype(str)
    seen = spk.isin(excluded) | (f"{corpus}/" + spk).isin(excluded)  # a merged table keys corpus/speaker
    keep = table["label"].isin(bundle.labels) & ~seen
    rows = table[keep]
    if rows.empty:
        raise ValueError(f"corpus {corpus!r} at {root}: no utterance with a label in {bundle.labels} "
                         f"({len(table)} files read, {len(errors)} errors, "
                         f"{len(excluded)} speakers excluded); check root and label_map")
    transform = None
    if normalize:
        ref = _sample_waves(reference_paths, sample_rate=bundle.sample_rate, max_files=max_norm_files,
                            seed=seed)
        tgt = _sample_waves(rows["path"].tolist(), sample_rate=bundle.sample_rate,
                            max_files=max_norm_files, seed=seed)
        transform = SpectralNormalizer.fit(ref, tgt)
    metrics, pred = evaluate_bundle(bundle, rows, split=None, sliding=sliding, batch_size=batch_size,
                                    transform=transform, progress=progress)
    n_classes = int(rows["label"].nunique())
    n_excluded = int(table.loc[seen, "speaker"].nunique())
    metrics = {"corpus": corpus, "normalization": SPECTRAL_NORM if normalize else "none", **metrics,
               "n_classes": n_classes, "chance_uar": 1 / n_classes, "n_read_errors": len(errors),
               "n_excluded_speakers": n_excluded}
    return metrics, pred.assign(corpus=corpus)


# --------------------------------------------------------------------------- figures


def plot_confusion_matrix(cm: np.ndarray, labels: Sequence[str], ax: Axes | None = None, *,
                          title: str | None = None) -> Axes:
    """Heat map of a confusion matrix with the value in each cell.

    Args:
        cm: ``[k, k]`` counts or shares (rows = true class).
        labels: class names in matrix order.
        ax: axes to draw on (``None``: a new figure).
        title: axes title.

    Returns:
        The axes.
    """
    cm = np.asarray(cm)
    if cm.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(labels)} labels")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 1.1 * len(labels) + 1.5))
    shares = np.issubdtype(cm.dtype, np.floating)
    vmax = 1.0 if shares and cm.max() <= 1 else max(cm.max(), 1)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=vmax)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]:.2f}" if shares else f"{cm[i, j]:d}", ha="center", va="center",
                    color="white" if cm[i, j] > 0.6 * vmax else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_history(history: pd.DataFrame) -> Figure:
    """Training curves: train/val loss and validation UAR per epoch (best epoch marked).

    Args:
        history: ``history.csv`` of a bundle (``epoch, train_loss, val_loss, val_uar, ...``).

    Returns:
        A figure with two panels.
    """
    missing = [c for c in ("epoch", "train_loss", "val_loss", "val_uar") if c not in history.columns]
    if missing:
        raise ValueError(f"history table lacks columns {missing}; expected a bundle's history.csv")
    fig, (ax_loss, ax_uar) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    ax_loss.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("weighted cross-entropy")
    ax_loss.legend()
    ax_uar.plot(history["epoch"], history["val_uar"], marker="o", color="C2")
    best = history.loc[history["val_uar"].idxmax()]
    ax_uar.axvline(best["epoch"], color="grey", ls=":", label=f"best epoch {int(best['epoch'])}")
    ax_uar.set_xlabel("epoch")
    ax_uar.set_ylabel("validation UAR")
    ax_uar.set_ylim(0, 1)
    ax_uar.legend()
    fig.tight_layout()
    return fig
