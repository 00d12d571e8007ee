"""Shrinkage linear discriminant analysis for functionals with far more features than rows.

:class:`ShrinkageLDA` is Gaussian LDA with one pooled within-class covariance, shrunk
towards a scaled identity, ``Sigma = (1 - a) * S + a * mu * I`` (``S``: pooled
within-class covariance of the training rows, ``mu``: its mean variance, ``a``: the
``shrinkage``), and uniform class priors (class-balanced, like the SVMs). With ComParE
functionals (6,373 values) and a few hundred utterances, ``Sigma`` is never formed: the
Woodbury identity solves ``Sigma^-1 M`` (``M``: class means) in sample space,
``O(n^2 d)`` instead of ``O(d^3)``.

Scores (:meth:`ShrinkageLDA.decision_function`) are the log-posteriors under that
Gaussian model; they are overconfident in high dimension, so
:class:`~ser.models.classical.estimator.ClassicalModel` calibrates them, as it does SVM
decision values, with one-vs-rest Platt sigmoids fitted on held-out scores of the
speaker-grouped inner folds (:meth:`ShrinkageLDA.calibrate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ser.models.classical.platt import apply_platt, fit_platt


class ShrinkageLDA(ClassifierMixin, BaseEstimator):
    """LDA with a shrunk pooled covariance and uniform priors, solved in sample space.

    Args:
        shrinkage: weight ``a`` in ``(0, 1)`` of the scaled identity in the covariance.

    Attributes (after fitting):
        classes_: sorted class labels.
        coef_: ``[n_classes, d]`` rows of ``Sigma^-1 M^T`` transposed.
        intercept_: ``[n_classes]``, ``-0.5 * m_c^T Sigma^-1 m_c``.
        platt_: ``[n_classes, 2]`` Platt slopes and intercepts after :meth:`calibrate`, else None.
    """

    def __init__(self, shrinkage: float = 0.5) -> None:
        self.shrinkage = shrinkage

    def fit(self, X: np.ndarray, y: Sequence[Any]) -> ShrinkageLDA:
        """Fit on ``X [n, d]`` (standardised features) and labels ``y [n]``.

        Raises:
            ValueError: ``shrinkage`` outside ``(0, 1)``, fewer than 2 classes, or rows and
                labels of different length.
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
        means = np.stack([X[codes == j].mean(axis=0) for j in range(len(classes))])   # [k, d]
        resid = X - means[codes]                                                      # [n, d]
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
        self.platt_: np.ndarray | None = None
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log-posteriors ``[n, n_classes]`` under the Gaussian model (uniform priors)."""
        z = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class with the largest discriminant per row."""
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    def calibrate(self, decision: np.ndarray, y: Sequence[Any]) -> ShrinkageLDA:
        """Fit one Platt sigmoid per class on held-out ``decision [n, k]`` values and labels."""
        self.platt_ = fit_platt(decision, np.asarray(y), self.classes_)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, n_classes]``: Platt-calibrated after :meth:`calibrate`, else the
        model's own posteriors."""
        decision = self.decision_function(X)
        if getattr(self, "platt_", None) is None:
            return np.exp(decision)
        return apply_platt(self.platt_, decision)
