"""Per-window uncertainty of the emotion probabilities: ``emotion_entropy`` and ``emotion_top_p``.

Both are functions of a window's probability vector alone
(:data:`ser.data.schema.UNCERTAINTY_COLUMNS`), so a window table written before they
existed gets them from its stored ``p_<label>`` columns (:func:`add_uncertainty`) instead
of being recomputed from the audio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ser.data.schema import UNCERTAINTY_COLUMNS


def emotion_uncertainty(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised entropy and top probability of each row of emotion probabilities.

    The entropy is Shannon's, ``-sum(p * log p)`` (``0 * log 0 = 0``), divided by
    ``log(n_labels)`` so that it lies in [0, 1] whatever the number of labels: 0 when one
    label has probability 1, 1 when every label has ``1 / n_labels``. With a single label
    it is 0.

    Args:
        probs: shape ``(n_windows, n_labels)``, rows summing to 1 (a model's output).
            A row with a missing (NaN) probability gives NaN in both results.

    Returns:
        ``(entropy, top_p)``, two float64 arrays of shape ``(n_windows,)``: the
        normalised entropy (unitless, 0-1) and the largest probability (1/n_labels-1).

    Raises:
        ValueError: ``probs`` is not 2-D or has no label column.

    Example:
        >>> emotion_uncertainty(np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]]))
        (array([1., 0.]), array([0.25, 1.  ]))
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"emotion probabilities must have shape (n_windows, n_labels >= 1); "
                         f"got shape {p.shape}")
    n_labels = p.shape[1]
    missing = np.isnan(p).any(axis=1)
    q = np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q), 0.0)
    entropy = (np.clip(-terms.sum(axis=1) / math.log(n_labels), 0.0, 1.0) if n_labels > 1
               else np.zeros(len(p)))
    top_p = q.max(axis=1)
    entropy[missing] = np.nan
    top_p[missing] = np.nan
    return entropy, top_p


def add_uncertainty(windows: pd.DataFrame, *, columns: Sequence[str]) -> pd.DataFrame:
    """A window table written before the uncertainty columns, brought up to ``columns``.

    When ``windows`` has exactly ``columns`` less :data:`ser.data.schema.UNCERTAINTY_COLUMNS`
    (a table of an earlier version of stage 04 or ``ser predict``), returns a copy with those
    columns computed from its ``p_<label>`` columns (:func:`emotion_uncertainty`) and placed
    as in ``columns``; any other table is returned as it is (the caller compares its
    columns and refuses a mismatch).

    Args:
        windows: a window table read back from disk.
        columns: the columns this run writes (with the uncertainty columns).

    Returns:
        The table, with the uncertainty columns when they could be added.
    """
    columns = list(columns)
    older = [c for c in columns if c not in UNCERTAINTY_COLUMNS]
    if older == columns or list(windows.columns) != older:
        return windows
    probs = [c for c in columns if c.startswith("p_")]
    entropy, top_p = emotion_uncertainty(windows[probs].to_numpy(dtype=np.float64))
    return windows.assign(emotion_entropy=entropy, emotion_top_p=top_p)[columns]
