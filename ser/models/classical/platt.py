"""One-vs-rest Platt sigmoids: calibrated class probabilities from held-out decision values.

Used by :class:`~ser.models.classical.estimator.KernelSVC`, whose scores are not probabilities; what
``CalibratedClassifierCV(method="sigmoid")`` does, on decision values the caller held out.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression


def fit_platt(decision: np.ndarray, y: np.ndarray, classes: np.ndarray,
              sample_weight: np.ndarray | None = None) -> np.ndarray:
    """``[k, 2]`` slope and intercept of a one-vs-rest sigmoid per class (rows weighted by
    ``sample_weight [n]`` when given, e.g. the corpus balance of the fit)."""
    out = np.zeros((len(classes), 2))
    for j, c in enumerate(classes):
        t = (y == c).astype(int)
        if t.min() == t.max():  # class absent or alone: flat probability
            out[j] = (0.0, 0.0 if t.max() else -10.0)
            continue
        lr = LogisticRegression(C=1e4, max_iter=1000).fit(decision[:, [j]], t, sample_weight=sample_weight)
        out[j] = (lr.coef_[0, 0], lr.intercept_[0])
    return out


def apply_platt(platt: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """Probabilities ``[n, k]`` (rows sum to 1) of ``decision [n, k]`` under :func:`fit_platt`'s sigmoids."""
    p = expit(decision * platt[:, 0] + platt[:, 1])  # 1 / (1 + exp(-x)) without overflow
    p = np.clip(p, 1e-12, None)
    return p / p.sum(axis=1, keepdims=True)
