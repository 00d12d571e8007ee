"""Probability-averaging ensembles of classical models: members, weights, fitting.

A :class:`ClassicalEnsemble` averages the class probabilities of several tuned
:class:`ser.models.classical.estimator.ClassicalModel` (one per :class:`Member`: a feature
set and an estimator); :func:`fit_ensemble` tunes the members and, when asked, chooses the
weights (:func:`choose_weights`) on held-out predictions of the training speakers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ser.models.classical.classes import aligned_proba
from ser.models.classical.estimator import ClassicalModel, check_aligned, uar_score


@dataclass(frozen=True)
class Member:
    """One member of a classical ensemble: a feature set and a tuned estimator.

    Args:
        feature_set: key of the feature table (one of :data:`FEATURE_SETS`).
        estimator: one of :data:`ESTIMATORS`.
        speaker_norm: per-speaker standardisation.
        param_grid: grid of the final estimator (``None``: default grid).
        select_k: ANOVA feature selection inside every fit (``None``: all features).
    """

    feature_set: str
    estimator: str
    speaker_norm: bool = False
    param_grid: Mapping[str, Sequence[Any]] | None = field(default=None, compare=False)
    select_k: int | None = None

    @property
    def name(self) -> str:
        """E.g. ``compare+svm_linear+spknorm`` (``+k2000`` with ``select_k=2000``)."""
        return (f"{self.feature_set}+{self.estimator}" + ("+spknorm" if self.speaker_norm else "")
                + ("" if self.select_k is None else f"+k{self.select_k}"))


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
        score = uar_score(y, np.asarray(classes)[np.tensordot(w, stack, axes=1).argmax(axis=1)])
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

    def predict_proba_prepared(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Weighted mean probabilities from features that need no more speaker normalisation.

        Args:
            features: ``{feature_set: [n, d]}`` holding each member's table.
        """
        return sum(w * model.predict_proba_prepared({mem.feature_set: features[mem.feature_set]})
                   for w, mem, model in zip(self.weights, self.members, self.models, strict=True))

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
    y, g = check_aligned(feature_tables[members[0].feature_set], labels, speakers)
    classes = sorted(pd.unique(y).tolist())
    models = [ClassicalModel(estimator=m.estimator, speaker_norm=m.speaker_norm, seed=seed,
                             select_k=m.select_k).fit_grid(
        feature_tables[m.feature_set], y, g, param_grid=m.param_grid, inner_folds=inner_folds, n_jobs=n_jobs)
        for m in members]
    if combine == "weights":
        w, _ = choose_weights([aligned_proba(m.oof_proba_, m.classes_, classes) for m in models], y, classes,
                              step=weight_step)
    else:
        w = np.full(len(members), 1.0 / len(members))
    return ClassicalEnsemble(members, models, w)
