"""Shrinkage linear discriminant analysis for functionals with far more features than rows.

:class:`ShrinkageLDA` is Gaussian LDA with one pooled within-class covariance, shrunk
towards a scaled identity, ``Sigma = (1 - a) * S + a * mu * I`` (``S``: pooled
within-class covariance of the training rows, ``mu``: its mean variance, ``a``: the
``shrinkage``), and uniform class priors (class-balanced, like the SVMs). With ComParE
functionals (6,373 values) and a few hundred utterances, ``Sigma`` is never formed: the
Woodbury identity solves ``Sigma^-1 M`` (``M``: class means) in sample space,
``O(n^2 d)`` instead of ``O(d^3)``.

Scores (:meth:`ShrinkageLDA.decision_function`) are the log-posteriors under that
Gaussian model; they are far too confident in high dimension, so
:class:`~ser.models.classical.estimator.ClassicalModel` calibrates them on held-out scores
of the speaker-grouped inner folds (:meth:`ShrinkageLDA.calibrate`) with one temperature
(``softmax(score / T)``, ``T`` minimising the held-out log-loss). A temperature keeps the
arg-max, so calibration never changes a prediction; one-vs-rest Platt sigmoids, as the SVMs
use, did (on EmoDB they turned a 0.90 UAR fold into 0.74, saturated log-posteriors
being mapped by per-class intercepts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.base import BaseEstimator, ClassifierMixin


class ShrinkageLDA(ClassifierMixin, BaseEstimator):
    """LDA with a shrunk pooled covariance and uniform priors, solved in sample space.

    Args:
        shrinkage: weight ``a`` in ``(0, 1)`` of the scaled identity in the covariance.

    Attributes (after fitting):
        classes_: sorted class labels.
        coef_: ``[n_classes, d]`` rows of ``Sigma^-1 M^T`` transposed.
        intercept_: ``[n_classes]``, ``-0.5 * m_c^T Sigma^-1 m_c``.
        temperature_: the temperature of :meth:`calibrate` (1.0 before: the model's own posteriors).
    """

    def __init__(self, shrinkage: float = 0.5) -> None:
        self.shrinkage = shrinkage

    def fit(self, X: np.ndarray, y: Sequence[Any], sample_weight: np.ndarray | None = None) -> ShrinkageLDA:
        """Fit on ``X [n, d]`` (standardised features) and labels ``y [n]``.

        ``sample_weight [n]`` (positive) weighs the rows in the class means and the pooled
        covariance (a row of weight 2 counts as two copies of it); default equal weights.

        Raises:
            ValueError: ``shrinkage`` outside ``(0, 1)``, fewer than 2 classes, rows and
                labels of different length, or weights that are not ``n`` positive numbers.
        """
        a = float(self.shrinkage)
        if not 0.0 < a < 1.0:
            raise ValueError(f"ShrinkageLDA: shrinkage={self.shrinkage!r} must lie in (0, 1)")
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        if X.ndim != 2 or y.shape != (len(X),):
            raise ValueError(f"ShrinkageLDA.fit: X must be [n, d] and y [n]; got {X.shape} and {y.shape}")
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"ShrinkageLDA.fit needs at least 2 classes; got {classes.tolist()}")
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w.shape != y.shape or not np.isfinite(w).all() or (w <= 0).any():
            raise ValueError(f"ShrinkageLDA.fit: sample_weight must be {len(y)} positive finite weights")
        w = w * (len(w) / w.sum())                                                    # mean 1
        means = np.stack([np.average(X[codes == j], axis=0, weights=w[codes == j])
                          for j in range(len(classes))])                              # [k, d]
        resid = (X - means[codes]) * np.sqrt(w)[:, None]                              # [n, d]
        n, d = resid.shape
        mu = max(float((resid * resid).sum()) / (n * d), 1e-12)
        lam = a * mu
        # Sigma = lam I + (1 - a)/n R^T R  =>  Sigma^-1 B = (B - R^T (n lam/(1-a) I + R R^T)^-1 R B) / lam
        gram = resid @ resid.T
        gram[np.diag_indices(n)] += n * lam / (1.0 - a)
        sol = means.T - resid.T @ np.linalg.solve(gram, resid @ means.T)
        self.coef_ = (sol / lam).T                                                     # [k, d]
        self.intercept_ = -0.5 * np.einsum("kd,kd->k", means, self.coef_)
        self.classes_ = classes
        self.n_features_in_ = d
        self.temperature_ = 1.0
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log-posteriors ``[n, n_classes]`` under the Gaussian model (uniform priors)."""
        return log_softmax(np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_, axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class with the largest discriminant per row."""
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    def calibrate(self, decision: np.ndarray, y: Sequence[Any],
                  sample_weight: np.ndarray | None = None) -> ShrinkageLDA:
        """Fit the temperature on held-out ``decision [n, n_classes]`` scores (columns:
        ``classes_``) and their labels ``y [n]``: the ``T`` in ``[1e-2, 1e4]`` minimising the
        log-loss of ``softmax(decision / T)`` (each row's loss weighted by ``sample_weight [n]``
        when given).

        Raises:
            ValueError: a label outside ``classes_`` or a shape mismatch.
        """
        d, y = np.asarray(decision, dtype=np.float64), np.asarray(y)
        if d.shape != (len(y), len(self.classes_)):
            raise ValueError(f"ShrinkageLDA.calibrate: decision must be [n, {len(self.classes_)}] for {len(y)} "
                             f"labels; got {d.shape}")
        if not np.isin(y, self.classes_).all():
            raise ValueError(f"ShrinkageLDA.calibrate: labels outside the classes {self.classes_.tolist()}")
        target = np.searchsorted(self.classes_, y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)

        def nll(log_t: float) -> float:
            return float(-np.average(log_softmax(d / np.exp(log_t), axis=1)[np.arange(len(y)), target], weights=w))

        res = minimize_scalar(nll, bounds=(np.log(1e-2), np.log(1e4)), method="bounded")
        self.temperature_ = float(np.exp(res.x))
        return self

    def proba_from_decision(self, decision: np.ndarray) -> np.ndarray:
        """Probabilities ``softmax(decision / temperature_)`` of scores ``[n, n_classes]``."""
        return np.exp(log_softmax(np.asarray(decision, dtype=np.float64) / self.temperature_, axis=1))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, n_classes]`` (rows sum to 1), tempered after :meth:`calibrate`."""
        return self.proba_from_decision(self.decision_function(X))
