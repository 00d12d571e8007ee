"""Evaluation: SER metrics, per-class tables, confusion matrices and their figures.

Naming follows the SER literature: *UAR* (unweighted average recall, a.k.a.
unweighted accuracy or balanced accuracy) is the mean of the per-class recalls and
is the headline metric, because emotion corpora are unbalanced; *weighted accuracy*
is plain accuracy (each utterance counts once). Labels may be strings or integers.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm import tqdm

from ser import audio, provenance
from ser.models import Bundle, fit_window

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Columns of ``runs.csv``, one row per (model_name, split).
RUNS_COLUMNS = ["model_name", "split", "arch", "window_s", "n_train_speakers", "test_speakers",
                "n_utterances", "uar", "macro_f1", "accuracy", "created"]


def _labels_and_index(y_true: Sequence[Any], y_pred: Sequence[Any],
                      labels: Sequence[Any] | None) -> tuple[list[Any], np.ndarray, np.ndarray]:
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape != yp.shape or yt.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and equally long; got {yt.shape} and {yp.shape}")
    labs = list(labels) if labels is not None else sorted(set(yt.tolist()) | set(yp.tolist()))
    index = {lab: i for i, lab in enumerate(labs)}
    unknown = sorted({str(v) for v in (*yt.tolist(), *yp.tolist()) if v not in index})
    if unknown:
        raise ValueError(f"values {unknown} are not in labels {labs}; pass all classes in labels")
    return labs, np.array([index[v] for v in yt.tolist()], dtype=int), \
        np.array([index[v] for v in yp.tolist()], dtype=int)


def confusion(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any] | None = None,
              normalize: str | None = None) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class.

    Args:
        y_true: true labels ``[n]``.
        y_pred: predicted labels ``[n]``.
        labels: class order (``None``: sorted union of both).
        normalize: ``None`` (counts), ``"true"`` (rows sum to 1), ``"pred"`` (columns sum
            to 1) or ``"all"``; empty rows/columns stay 0.

    Returns:
        ``[k, k]`` int counts, or float shares when normalised.

    Raises:
        ValueError: a value outside ``labels`` or a bad ``normalize``.
    """
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all'; got {normalize!r}")
    labs, t, p = _labels_and_index(y_true, y_pred, labels)
    k = len(labs)
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    if normalize is None:
        return cm
    axis = {"true": 1, "pred": 0, "all": None}[normalize]
    denom = cm.sum(axis=axis, keepdims=axis is not None).astype(float)
    return np.divide(cm, denom, out=np.zeros((k, k)), where=denom > 0)


def uar(y_true: Sequence[Any], y_pred: Sequence[Any], *, labels: Sequence[Any] | None = None) -> float:
    """Unweighted average recall: mean recall over the classes present in ``y_true``.

    Equals :func:`sklearn.metrics.balanced_accuracy_score`. Chance level is ``1 / k``.

    Returns:
        UAR in [0, 1]; NaN for empty input.
    """
    if len(y_true) == 0:
        return float("nan")
    cm = confusion(y_true, y_pred, labels)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def weighted_accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Weighted accuracy (SER usage): plain accuracy, the share of correct predictions.

    Returns:
        Accuracy in [0, 1]; NaN for empty input.
    """
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred must be equally long; got {yt.shape} and {yp.shape}")
    return float(np.mean(yt == yp)) if len(yt) else float("nan")


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(float)
    n_pred, n_true = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    s = precision + recall
    f1 = np.divide(2 * precision * recall, s, out=np.zeros_like(tp), where=s > 0)
    return precision, recall, f1


def macro_f1(y_true: Sequence[Any], y_pred: Sequence[Any], *, labels: Sequence[Any] | None = None) -> float:
    """Macro-averaged F1 over the classes that occur in ``y_true`` or ``y_pred``.

    A class never predicted has precision 0 (as sklearn with ``zero_division=0``).
    Equals ``sklearn.metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)``.

    Returns:
        Macro-F1 in [0, 1]; NaN for empty input.
    """
    if len(y_true) == 0:
        return float("nan")
    cm = confusion(y_true, y_pred, labels)
    occurs = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(np.mean(_per_class(cm)[2][occurs]))


def classification_table(y_true: Sequence[Any], y_pred: Sequence[Any],
                         labels: Sequence[Any]) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support.

    Returns:
        DataFrame with one row per label: ``label, precision, recall, f1, support, n_pred``.
    """
    cm = confusion(y_true, y_pred, labels)
    precision, recall, f1 = _per_class(cm)
    return pd.DataFrame({"label": list(labels), "precision": precision, "recall": recall, "f1": f1,
                         "support": cm.sum(axis=1), "n_pred": cm.sum(axis=0)})


def summary_metrics(y_true: Sequence[Any], y_pred: Sequence[Any],
                    labels: Sequence[Any]) -> dict[str, float]:
    """``{"uar", "macro_f1", "accuracy"}`` for one set of predictions."""
    return {"uar": uar(y_true, y_pred, labels=labels), "macro_f1": macro_f1(y_true, y_pred, labels=labels),
            "accuracy": weighted_accuracy(y_true, y_pred)}


# --------------------------------------------------------------------------- bundles


def sliding_windows(wave: np.ndarray, n_samples: int, hop: int) -> np.ndarray:
    """All windows of ``n_samples`` every ``hop`` samples, the last one flush with the end.

    An utterance shorter than one window gives one centred, zero-padded window
    (:func:`ser.models.fit_window`).

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


def evaluate_bundle(
    bundle: Bundle, utterances: pd.DataFrame, *, split: str = "test", sliding: bool = False,
    hop_s: float | None = None, batch_size: int = 64, progress: bool = True,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Predict every utterance of one partition and score the predictions.

    Each utterance is read at the bundle's sample rate; by default the model sees its
    centre window (:func:`ser.models.fit_window`, as in validation). With ``sliding``
    the class probabilities are averaged over windows every ``hop_s`` seconds (default
    half a window). Rows whose label is not one of the model's labels are ignored;
    unreadable files are kept in the predictions with their ``error`` and left out of
    the metrics.

    Args:
        bundle: a loaded model (:func:`ser.models.load_bundle`).
        utterances: table with ``path, label, speaker, split``.
        split: partition to evaluate (``"test"``, ``"val"`` ...).
        sliding: average over sliding windows instead of the centre window.
        hop_s: hop between sliding windows in seconds.
        batch_size: windows per forward pass.
        progress: show a tqdm bar.

    Returns:
        ``(metrics, predictions)``: metrics ``{split, aggregation, n_utterances, n_speakers,
        n_failed, n_ignored_labels, uar, macro_f1, accuracy}``; predictions one row per
        utterance: ``path, speaker, label, pred, correct, p_<label>..., n_windows, error``.

    Raises:
        ValueError: missing columns or no rows for ``split`` with a model label.
    """
    missing = [c for c in ("path", "label", "speaker", "split") if c not in utterances.columns]
    if missing:
        raise ValueError(f"utterances table lacks columns {missing}; it must come from stage 01_preprocess")
    labels = bundle.labels
    part = utterances[utterances["split"] == split]
    rows = part[part["label"].isin(labels)]
    if rows.empty:
        raise ValueError(f"no utterances with split == {split!r} and a label in {labels}; "
                         f"splits present: {sorted(map(str, utterances['split'].dropna().unique()))}")
    n, hop = bundle.window_samples, int(round((hop_s or bundle.window_s / 2) * bundle.sample_rate))
    records = []
    for r in tqdm(rows.itertuples(index=False), total=len(rows), desc=f"evaluate {split}",
                  unit="utt", disable=not progress):
        rec: dict[str, Any] = {"path": str(r.path), "speaker": r.speaker, "label": r.label}
        try:
            wave = audio.load(r.path, sample_rate=bundle.sample_rate)[0]
        except (audio.AudioError, OSError, ValueError) as err:
            records.append({**rec, "pred": None, "n_windows": 0, "error": f"{type(err).__name__}: {err}"})
            continue
        windows = sliding_windows(wave, n, hop) if sliding else fit_window(wave, n)[None]
        proba = bundle.predict_proba(windows, batch_size=batch_size).mean(axis=0)
        records.append({**rec, "pred": labels[int(np.argmax(proba))], "n_windows": len(windows),
                        "error": None, **{f"p_{lab}": float(p) for lab, p in zip(labels, proba)}})
    cols = ["path", "speaker", "label", "pred", "correct", *(f"p_{lab}" for lab in labels),
            "n_windows", "error"]
    pred = pd.DataFrame(records)
    pred["correct"] = pred["pred"] == pred["label"]
    pred = pred.reindex(columns=cols)
    ok = pred[pred["error"].isna()]
    metrics = {"split": split, "aggregation": "sliding_mean" if sliding else "centre",
               "n_utterances": len(ok), "n_speakers": int(ok["speaker"].nunique()),
               "n_failed": int(pred["error"].notna().sum()),
               "n_ignored_labels": int(len(part) - len(rows)),
               **summary_metrics(ok["label"].tolist(), ok["pred"].tolist(), labels)}
    return metrics, pred


def runs_row(bundle: Bundle, metrics: Mapping[str, Any], *, model_name: str,
             speakers: Sequence[str]) -> dict[str, Any]:
    """One row of ``runs.csv`` for an evaluated bundle.

    Args:
        bundle: the evaluated model.
        metrics: output of :func:`evaluate_bundle`.
        model_name: bundle name.
        speakers: speakers of the evaluated partition.
    """
    return {"model_name": model_name, "split": metrics["split"], "arch": bundle.meta.get("arch"),
            "window_s": bundle.window_s,
            "n_train_speakers": len(bundle.meta.get("split", {}).get("train", [])),
            "test_speakers": " ".join(sorted(map(str, speakers))), "n_utterances": metrics["n_utterances"],
            "uar": metrics["uar"], "macro_f1": metrics["macro_f1"], "accuracy": metrics["accuracy"],
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
    provenance.atomic_write_csv(p, table)
    return table


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
