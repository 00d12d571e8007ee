"""The classical estimator: impute, scale, SVM / random forest / logistic regression / shrinkage
LDA, tuned by speaker-grouped CV.

:class:`ClassicalModel`: optional per-speaker standardisation → mean imputation →
:class:`~sklearn.preprocessing.StandardScaler` → optional ANOVA feature selection (``select_k``
best features by :func:`anova_f`, fitted on the training rows of each fit, so inside every
inner and outer fold) → SVM (linear or RBF, :class:`KernelSVC`:
libsvm on a BLAS-computed Gram matrix), random forest, logistic regression or shrinkage LDA
(:class:`~ser.models.classical.lda.ShrinkageLDA`, uniform priors), all class-balanced. Hyper-parameters are chosen by :meth:`ClassicalModel.fit_grid` with a
speaker-*grouped* inner cross-validation (:class:`~sklearn.model_selection.GroupKFold`
over the training speakers only), scored by UAR (:func:`uar_score`). SVM probabilities
are one-vs-rest Platt sigmoids (:mod:`ser.models.classical.platt`) fitted on the held-out
decision values of those same grouped folds; LDA's log-posteriors get one temperature fitted
on the same held-out values (:meth:`~ser.models.classical.lda.ShrinkageLDA.calibrate`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, ParameterGrid, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ser.models.classical.classes import aligned_proba
from ser.models.classical.features import speaker_standardize
from ser.models.classical.lda import ShrinkageLDA
from ser.models.classical.platt import apply_platt, fit_platt

#: Estimators :class:`ClassicalModel` knows.
ESTIMATORS: tuple[str, ...] = ("svm_linear", "svm_rbf", "rf", "logreg", "lda")


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
    if estimator == "lda":
        return {"shrinkage": [0.1, 0.3, 0.5, 0.7, 0.9]}
    raise ValueError(f"estimator={estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}")


def _ovr_decision(decision: np.ndarray) -> np.ndarray:
    """Decision values ``[n, n_classes]``: libsvm gives a binary problem one column (positive for
    the second class), which becomes ``[-d, d]``."""
    d = np.asarray(decision, dtype=np.float64)
    return np.column_stack([-d, d]) if d.ndim == 1 else d


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

    def fit(self, X: np.ndarray, y: Sequence[Any], sample_weight: np.ndarray | None = None) -> KernelSVC:
        """Fit on ``X [n, d]`` and labels ``y [n]`` (optional row weights ``sample_weight [n]``,
        which scale each row's ``C``)."""
        if self.kernel not in ("linear", "rbf"):
            raise ValueError(f"KernelSVC: kernel={self.kernel!r} must be 'linear' or 'rbf'")
        X = np.asarray(X, dtype=np.float64)
        self.gamma_ = float(self.gamma) if self.gamma is not None else 1.0 / max(1, X.shape[1])
        sq = (X * X).sum(axis=1)
        self.svc_ = SVC(kernel="precomputed", C=self.C, class_weight=self.class_weight)
        self.svc_.fit(_kernel_from_dots(X @ X.T, sq, sq, kernel=self.kernel, gamma=self.gamma_),
                      np.asarray(y), sample_weight=sample_weight)
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
        return _ovr_decision(self.svc_.decision_function(self._test_gram(X)))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class per row (libsvm one-vs-one vote)."""
        return self.svc_.predict(self._test_gram(X))

    def calibrate(self, decision: np.ndarray, y: Sequence[Any], sample_weight: np.ndarray | None = None) -> KernelSVC:
        """Fit one Platt sigmoid per class on held-out ``decision [n, k]`` values and labels
        (rows weighted by ``sample_weight [n]`` when given)."""
        self.platt_ = fit_platt(decision, np.asarray(y), self.classes_, sample_weight)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``[n, n_classes]`` (rows sum to 1).

        Raises:
            RuntimeError: :meth:`calibrate` was not called.
        """
        if getattr(self, "platt_", None) is None:
            raise RuntimeError("KernelSVC.predict_proba needs calibrate() on held-out decision values")
        return apply_platt(self.platt_, self.decision_function(X))


def balance_weights(y: Sequence[Any], strata: Sequence[Any]) -> np.ndarray:
    """Row weights that give every (stratum, class) cell the same total weight.

    With rows from several corpora (``strata``), a corpus of 1,700 utterances and one of 300
    then weigh the same in the fit, and within each corpus every class weighs the same (the
    class balance the estimators otherwise get from ``class_weight="balanced"``).

    Args:
        y: ``[n]`` class labels.
        strata: ``[n]`` stratum (e.g. corpus) of each row.

    Returns:
        ``float64 [n]`` weights with mean 1: ``n / (cells * rows in the row's cell)``.

    Raises:
        ValueError: ``y`` and ``strata`` of different length.
    """
    y, strata = np.asarray(y), np.asarray(strata)
    if y.shape != strata.shape or y.ndim != 1:
        raise ValueError(f"balance_weights: y and strata must be [n] of equal length; got {y.shape} and "
                         f"{strata.shape}")
    cells = pd.Series(list(zip(strata.astype(str), y.astype(str), strict=True)))
    counts = cells.map(cells.value_counts()).to_numpy(dtype=np.float64)
    return len(y) / (cells.nunique() * counts)


def _fit_weighted(clf: Any, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> Any:
    """``clf.fit(X, y)``, or with ``sample_weight=weights`` and no class weighting of its own
    (the weights already balance the classes, :func:`balance_weights`)."""
    if weights is None:
        return clf.fit(X, y)
    if "class_weight" in clf.get_params():
        clf.set_params(class_weight=None)
    return clf.fit(X, y, sample_weight=weights)


def _make_estimator(estimator: str, *, seed: int, params: Mapping[str, Any] | None = None) -> Any:
    if estimator in ("svm_linear", "svm_rbf"):
        clf: Any = KernelSVC(kernel=estimator.removeprefix("svm_"))
    elif estimator == "rf":
        clf = RandomForestClassifier(n_estimators=500, class_weight="balanced_subsample",
                                     random_state=seed, n_jobs=1)
    elif estimator == "logreg":
        clf = LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)
    elif estimator == "lda":
        clf = ShrinkageLDA()
    else:
        raise ValueError(f"estimator={estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}")
    return clf.set_params(**dict(params or {}))


def anova_f(X: np.ndarray, y: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """ANOVA F statistic and p-value of each column of ``X [n, d]`` for the classes ``y``.

    :func:`sklearn.feature_selection.f_classif` with constant columns (e.g. a feature that
    per-speaker normalisation turned into zeros) scored 0 / p 1 instead of NaN and warnings.
    """
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Features .* are constant", category=UserWarning)
        f, p = f_classif(X, y)
    return np.nan_to_num(f, nan=0.0), np.nan_to_num(p, nan=1.0)


def check_select_k(select_k: Any) -> int | None:
    """``select_k`` as an int >= 1 or ``None`` (no selection); raise ``ValueError`` otherwise."""
    if select_k is None:
        return None
    if isinstance(select_k, bool) or not isinstance(select_k, (int, np.integer)) or select_k < 1:
        raise ValueError(f"select_k={select_k!r} must be a positive integer (features kept) or None")
    return int(select_k)


def _make_pipeline(estimator: str, *, seed: int, params: Mapping[str, Any] | None = None,
                   select_k: int | None = None) -> Pipeline:
    """Mean imputation → standardisation → (ANOVA selection of ``select_k`` features) → classifier."""
    steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy="mean", keep_empty_features=True)),
        ("scale", StandardScaler()),
    ]
    if select_k is not None:
        steps.append(("select", SelectKBest(anova_f, k=select_k)))
    return Pipeline([*steps, ("clf", _make_estimator(estimator, seed=seed, params=params))])


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
                 classes: np.ndarray, select_k: int | None = None,
                 weights: np.ndarray | None = None) -> tuple[list[float], list[np.ndarray]]:
    """UAR and held-out scores (SVM: decision values; else probabilities) of each combination.

    Preprocessing (and feature selection, on the split's training rows only) is fitted once
    per split; for SVMs the dot products are computed once and every (C, gamma) reuses them.
    ``weights``: ``[n]`` row weights of the classifier's fit (:func:`balance_weights`), or None.
    """
    w_tr = None if weights is None else weights[tr]
    pre = _make_pipeline(estimator, seed=seed, select_k=_capped(select_k, X.shape[1]))[:-1].fit(X[tr], y[tr])
    ztr, zva = pre.transform(X[tr]), pre.transform(X[va])
    uars, outs = [], []
    if estimator.startswith("svm"):
        kernel = estimator.removeprefix("svm_")
        d_tr, d_va = ztr @ ztr.T, zva @ ztr.T
        sq_tr, sq_va = (ztr * ztr).sum(axis=1), (zva * zva).sum(axis=1)
    for combo in combos:
        p = {**fixed, **combo}
        if estimator.startswith("svm"):
            gamma = float(p["gamma"]) if p.get("gamma") is not None else 1.0 / max(1, ztr.shape[1])
            svc = SVC(kernel="precomputed", C=p.get("C", 1.0), class_weight=p.get("class_weight", "balanced"))
            _fit_weighted(svc, _kernel_from_dots(d_tr, sq_tr, sq_tr, kernel=kernel, gamma=gamma), y[tr], w_tr)
            k_va = _kernel_from_dots(d_va, sq_va, sq_tr, kernel=kernel, gamma=gamma)
            pred, score = svc.predict(k_va), aligned_proba(_ovr_decision(svc.decision_function(k_va)), svc.classes_,
                                                            classes, fill=-1e3)
        elif estimator == "lda":  # log-posteriors, tempered in ClassicalModel._finish
            clf = _fit_weighted(_make_estimator(estimator, seed=seed, params=p), ztr, y[tr], w_tr)
            pred, score = clf.predict(zva), aligned_proba(clf.decision_function(zva), clf.classes_, classes,
                                                          fill=-1e3)
        else:
            clf = _fit_weighted(_make_estimator(estimator, seed=seed, params=p), ztr, y[tr], w_tr)
            pred, score = clf.predict(zva), aligned_proba(clf.predict_proba(zva), clf.classes_, classes)
        uars.append(uar_score(y[va], pred))
        outs.append(score)
    return uars, outs


def _scored_rows(scored: Sequence[bool] | None, n: int, groups: Sequence[Any] | None) -> np.ndarray | None:
    """The bool mask ``scored`` checked (``None`` when not given: every row is scored)."""
    if scored is None:
        return None
    keep = np.asarray(scored)
    if keep.shape != (n,) or keep.dtype != bool:
        raise ValueError(f"scored must be a bool mask of the {n} rows; got dtype {keep.dtype}, shape {keep.shape}")
    if groups is None:
        raise ValueError("scored (training-only copies) needs groups, so that a speaker's copies stay in its fold")
    return keep


def _scored_splits(splits: list[tuple[np.ndarray, np.ndarray]],
                   keep: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds whose held-out part keeps only the scored rows (all of them with ``keep`` None)."""
    if keep is None:
        return splits
    out = [(tr, va[keep[va]]) for tr, va in splits]
    if any(len(va) == 0 for _, va in out):
        raise ValueError("a held-out fold holds no scored rows: every speaker needs its original "
                         "(scored) utterances beside any copies")
    return out


def _capped(select_k: int | None, n_features: int) -> int | None:
    """``select_k`` capped at the number of features (``None`` when it keeps them all)."""
    return None if select_k is None or select_k >= n_features else select_k


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
        select_k: keep the ``select_k`` features with the largest ANOVA F
            (:func:`anova_f`) after standardisation, chosen on the training rows of every
            fit (each inner fold, then the final refit); ``None``: all features.

    Attributes (after fitting):
        classes_: sorted class labels; columns of :meth:`predict_proba`.
        best_params_: chosen parameters; ``inner_uar_``: their mean inner-CV UAR.
        inner_splits_: the grouped inner folds (``(train_idx, val_idx)`` pairs).
        cv_results_: the grid search table (``params``, ``mean_uar``, ``split<i>_uar``).
        oof_proba_: ``[n, n_classes]`` held-out probabilities of the training rows
            with the chosen parameters (inner folds), for ensemble weighting; of the
            ``scored`` rows only when the fit was given ``scored``.
        feature_names_: feature columns seen in fit, when ``X`` was a DataFrame.
    """

    def __init__(self, *, estimator: str = "svm_linear", speaker_norm: bool = False,
                 params: Mapping[str, Any] | None = None, seed: int = 0,
                 select_k: int | None = None) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator={estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}")
        self.select_k = check_select_k(select_k)
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
        self.balanced_strata_: dict[str, int] | None = None

    # -- helpers
    def _prepare(self, X: Any, groups: Sequence[Any] | None, *, fitting: bool,
                 norm_groups: Sequence[Any] | None = None) -> np.ndarray:
        """The feature array, z-scored per ``norm_groups`` (default ``groups``) with ``speaker_norm``."""
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
            arr = speaker_standardize(arr, groups if norm_groups is None else norm_groups)
        return arr

    def _weights(self, y: np.ndarray, strata: Sequence[Any] | None) -> np.ndarray | None:
        """Row weights of the fits (:func:`balance_weights`) with 2+ strata, else None; records
        the strata's row counts in ``balanced_strata_``."""
        self.balanced_strata_ = None
        if strata is None:
            return None
        st = np.asarray(strata).astype(str)
        if st.shape != y.shape:
            raise ValueError(f"strata must give one stratum per row: {st.shape} for {y.shape} labels")
        if len(np.unique(st)) < 2:
            return None
        self.balanced_strata_ = {str(k): int(v) for k, v in zip(*np.unique(st, return_counts=True), strict=True)}
        return balance_weights(y, st)

    def check_fitted(self) -> Pipeline:
        """The fitted pipeline (raises ``RuntimeError`` before :meth:`fit` / :meth:`fit_grid`)."""
        if self.pipeline_ is None:
            raise RuntimeError("ClassicalModel is not fitted; call fit or fit_grid first")
        return self.pipeline_

    def _search(self, arr: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                combos: list[dict[str, Any]], n_jobs: int,
                weights: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """``uar [n_combos, n_splits]`` and held-out scores per combination ``[n, k]``."""
        classes = np.asarray(sorted(pd.unique(y).tolist()))
        fixed = {k: v for k, v in self.params.items() if k not in combos[0]}
        extra: dict[str, Any] = {} if self.select_k is None else {"select_k": self.select_k}
        if weights is not None:
            extra["weights"] = weights
        jobs = (joblib.delayed(_score_split)(self.estimator, self.seed, fixed, combos, arr, y, tr, va, classes,
                                             **extra)
                for tr, va in splits)
        res = joblib.Parallel(n_jobs=n_jobs)(jobs)
        uars = np.array([r[0] for r in res]).T
        held = [np.zeros((len(y), len(classes))) for _ in combos]
        for (_, va), (_, outs) in zip(splits, res, strict=True):
            for i, o in enumerate(outs):
                held[i][va] = o
        return uars, held

    def _finish(self, arr: np.ndarray, y: np.ndarray, held: np.ndarray, weights: np.ndarray | None = None,
                keep: np.ndarray | None = None) -> None:
        """Refit on all rows with ``best_params_`` (and row ``weights``); calibrate an SVM (an
        LDA's temperature) on the ``held`` decision values of the rows ``keep`` (default all)."""
        pipe = _make_pipeline(self.estimator, seed=self.seed, params=self.best_params_,
                              select_k=_capped(self.select_k, arr.shape[1]))
        _fit_weighted(pipe.named_steps["clf"], pipe[:-1].fit_transform(arr, y), y, weights)
        if keep is not None:  # calibration and out-of-fold scores: the scored rows only
            held, y = held[keep], y[keep]
            weights = None if weights is None else weights[keep]
        clf = pipe.named_steps["clf"]
        if isinstance(clf, KernelSVC):  # calibrated with the fit's weights: the same balance
            clf.calibrate(held, y, weights)
            self.oof_proba_ = apply_platt(clf.platt_, held)
        elif isinstance(clf, ShrinkageLDA):  # one temperature on the held-out log-posteriors
            self.oof_proba_ = clf.calibrate(held, y, weights).proba_from_decision(held)
        else:
            self.oof_proba_ = held
        self.pipeline_, self.classes_ = pipe, pipe.classes_

    # -- fitting
    def fit(self, X: Any, y: Sequence[Any], groups: Sequence[Any] | None = None, *,
            calibration_folds: int = 5, strata: Sequence[Any] | None = None,
            norm_groups: Sequence[Any] | None = None, scored: Sequence[bool] | None = None) -> ClassicalModel:
        """Fit with the fixed ``params`` (no search).

        An SVM's probabilities are calibrated on held-out decision values: folds
        grouped by speaker when ``groups`` holds 2+ speakers, else stratified folds.

        Args:
            X: ``[n, d]`` features (DataFrame or array).
            y: ``[n]`` class labels.
            groups: ``[n]`` speaker ids (required with ``speaker_norm``).
            calibration_folds: folds of the held-out predictions.
            strata: ``[n]`` stratum of each row (the corpus, when training on several): with
                2+ strata, every (stratum, class) cell weighs the same in every fit
                (:func:`balance_weights`), so no corpus dominates by its size; ``None`` or one
                stratum: class-balanced only.
            norm_groups: ``[n]`` group of each row for ``speaker_norm`` (default ``groups``):
                a speed-perturbed copy of a speaker's utterances is normalised as a speaker of
                its own (``"<speaker>@<factor>"``) while ``groups`` keeps it in its speaker's folds.
            scored: ``[n]`` bool, the rows that held-out folds score and calibrate on (default
                all): training-only copies are False, so no score comes from a copy. Needs
                ``groups``.

        Raises:
            ValueError: too few rows per class for the calibration folds; ``scored`` without
                ``groups``, or a fold without scored rows.
        """
        arr = self._prepare(X, groups, fitting=True, norm_groups=norm_groups)
        y = np.asarray(y)
        keep = _scored_rows(scored, len(y), groups)
        if groups is not None and len(pd.unique(np.asarray(groups))) >= 2:
            splits = grouped_inner_splits(groups, n_splits=calibration_folds)
        else:
            k = int(min(calibration_folds, pd.Series(y).value_counts().min()))
            if k < 2:
                raise ValueError("fit needs at least 2 rows per class for held-out calibration "
                                 "(or groups with 2+ speakers)")
            splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=self.seed)
                          .split(np.zeros(len(y)), y))
        self.inner_splits_ = splits = _scored_splits(splits, keep)
        weights = self._weights(y, strata)
        _, held = self._search(arr, y, splits, [{}], 1, weights)
        self.best_params_ = dict(self.params)
        self._finish(arr, y, held[0], weights, keep)
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
        strata: Sequence[Any] | None = None,
        norm_groups: Sequence[Any] | None = None,
        scored: Sequence[bool] | None = None,
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
            strata: ``[n]`` stratum (corpus) of each row, see :meth:`fit`.
            norm_groups, scored: training-only copies (speed perturbation), see :meth:`fit`:
                the inner folds split ``groups`` and score only the ``scored`` rows.

        Returns:
            ``self``, refitted with ``best_params_``.

        Raises:
            ValueError: fewer than 2 speakers, or an unknown parameter in ``param_grid``.
        """
        arr = self._prepare(X, groups, fitting=True, norm_groups=norm_groups)
        y = np.asarray(y)
        keep = _scored_rows(scored, len(y), groups)
        grid = dict(param_grid) if param_grid is not None else default_param_grid(
            self.estimator, n_features=_capped(self.select_k, arr.shape[1]) or arr.shape[1])
        valid = _make_estimator(self.estimator, seed=self.seed).get_params()
        unknown = sorted(set(grid) - set(valid))
        if unknown:
            raise ValueError(f"param_grid: {unknown} are not parameters of {self.estimator}; "
                             f"valid: {', '.join(sorted(valid))}")
        combos = [dict(c) for c in ParameterGrid({k: list(v) for k, v in grid.items()})]
        self.inner_splits_ = _scored_splits(grouped_inner_splits(groups, n_splits=inner_folds), keep)
        weights = self._weights(y, strata)
        uars, held = self._search(arr, y, self.inner_splits_, combos, n_jobs, weights)
        mean = uars.mean(axis=1)
        best = int(np.argmax(mean))
        self.best_params_ = {**self.params, **combos[best]}
        self.inner_uar_ = float(mean[best])
        self.cv_results_ = pd.DataFrame({"params": [json.dumps(c, default=jsonable, sort_keys=True)
                                                    for c in combos], "mean_uar": mean,
                                         **{f"split{i}_uar": uars[:, i] for i in range(uars.shape[1])}})
        self._finish(arr, y, held[best], weights, keep)
        return self

    # -- prediction
    def predict_proba(self, X: Any, groups: Sequence[Any] | None = None) -> np.ndarray:
        """Class probabilities ``float64 [n, n_classes]`` (columns: ``classes_``)."""
        pipe = self.check_fitted()
        return pipe.predict_proba(self._prepare(X, groups, fitting=False))

    def predict(self, X: Any, groups: Sequence[Any] | None = None) -> np.ndarray:
        """Most probable class per row ``[n]``."""
        proba = self.predict_proba(X, groups)
        return np.asarray(self.classes_)[proba.argmax(axis=1)]

    def predict_proba_prepared(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities ``[n, n_classes]`` from features that need no more speaker normalisation.

        Args:
            features: ``{feature_set: [n, d]}`` with this model's tables (already z-scored
                per speaker where the model uses ``speaker_norm``), in the order the model
                was fitted on; several tables (early fusion) are put side by side.
        """
        X = np.hstack([np.asarray(f, dtype=np.float64) for f in features.values()])
        return self.check_fitted().predict_proba(X)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: estimator, speaker_norm, chosen parameters, inner UAR."""
        out = {"estimator": self.estimator, "speaker_norm": self.speaker_norm,
               "params": {k: jsonable(v) for k, v in self.best_params_.items()},
               "inner_uar": self.inner_uar_, "seed": self.seed}
        strata = getattr(self, "balanced_strata_", None)  # models pickled before it existed have none
        if strata:
            out["balanced_strata"] = dict(strata)
        return out if self.select_k is None else {**out, "select_k": self.select_k}


def jsonable(v: Any) -> Any:
    """``v`` as a plain Python value (numpy scalars -> ``v.item()``), for JSON."""
    return v.item() if hasattr(v, "item") else v


def uar_score(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """UAR, the score of the inner CV: mean recall over the classes present in ``y_true``.

    Recalls are averaged in the order the classes first occur in ``y_true``.
    """
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean([float(np.mean(yp[yt == c] == c)) for c in pd.unique(yt)]))


def check_aligned(features: Any, labels: Sequence[Any], speakers: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and speakers (as strings) as arrays, checked to have one entry per feature row.

    Raises:
        ValueError: a length differs from ``len(features)``, or a label is NA.
    """
    y, g = np.asarray(labels), np.asarray(speakers).astype(str)
    n = len(features)
    if y.shape != (n,) or g.shape != (n,):
        raise ValueError(f"labels ({y.shape}) and speakers ({g.shape}) must have one entry per "
                         f"feature row ({n})")
    if pd.isna(pd.Series(y)).any():
        raise ValueError("labels contain NA; drop the rows whose emotion is outside the label set")
    return y, g
