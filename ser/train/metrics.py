"""SER metrics: confusion matrix, UAR, weighted accuracy, macro-F1, per-class table.

Naming follows the SER literature: *UAR* (unweighted average recall, a.k.a.
unweighted accuracy or balanced accuracy) is the mean of the per-class recalls and
is the headline metric, because emotion corpora are unbalanced; *weighted accuracy*
is plain accuracy (each utterance counts once). Labels may be strings or integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


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
