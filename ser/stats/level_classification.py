"""Predicting the training level from caregivers' descriptors, honestly.

The original study projected descriptors with LDA and classified training levels with a
3-nearest-neighbour rule, without a baseline or a test. This module repeats that analysis
so that its result can be trusted or rejected:

- **One unit per caregiver** (:func:`ser.stats.level_dataset.caregiver_dataset`): one
  row per caregiver, with a record of what was done with problem data.
- **Caregiver-grouped cross-validation** (:func:`classify_levels`): a caregiver's rows
  are either all in the training or all in the test part of a fold; every data-dependent
  step is fitted on the training caregivers of each fold. The models, LDA and k-NN
  (k = 3) as in the study and L2-regularised multinomial logistic regression with
  balanced class weights, are in :mod:`ser.stats.level_classifiers`.
- **Scores** on the pooled out-of-fold predictions: balanced accuracy (= unweighted
  average recall, UAR), macro-F1 and accuracy, against chance (uniform guessing, UAR =
  1 / number of levels) and a majority-class rule run through the same folds.
- **Permutation test**: the level labels are permuted *across caregivers* (each
  caregiver keeps one label for all its rows) and the whole cross-validation is rerun;
  ``p = (1 + #{null ≥ observed}) / (1 + n_permutations)``, Holm-corrected across the
  models (``p_perm_holm``). (scikit-learn's ``permutation_test_score(groups=...)``
  permutes *within* groups, which would leave one-row-per-caregiver labels unchanged,
  hence this implementation.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ser.data.schema import LEVELS
from ser.stats.level_classifiers import (
    MODELS,
    chance_scores,
    cross_val_predict_levels,
    make_splits,
    scores,
)
from ser.stats.level_dataset import LevelDataset, problem_row
from ser.stats.multiplicity import holm

#: Baselines reported next to the models.
BASELINES: dict[str, str] = {
    "chance": "uniform random guessing (expected scores)",
    "majority": "always the training folds' most frequent level",
}
#: Columns of :attr:`LevelClassification.summary` (``level_classification.csv``).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model", "kind", "description", "balanced_accuracy", "macro_f1", "accuracy",
    "p_perm", "p_perm_holm", "p_perm_macro_f1", "null_mean", "null_q95", "chance",
    "n_caregivers", "n_levels", "n_features", "input", "cv", "n_permutations", "note",
    "data_notes",
)


@dataclass(frozen=True)
class LevelClassification:
    """Result of :func:`classify_levels`.

    Attributes:
        summary: one row per model and baseline (:data:`SUMMARY_COLUMNS`); ``data_notes``
            repeats what was done with problem data.
        null: permutation null, long: ``model, permutation, balanced_accuracy, macro_f1``.
        predictions: out-of-fold predictions: ``caregiver, level, model, predicted, fold``.
        chosen_c: logistic regression's ``C`` chosen in each outer fold (``fold, C``).
        problems: what was done with problem data (:data:`ser.data.schema.PROBLEM_COLUMNS`).
    """

    summary: pd.DataFrame
    null: pd.DataFrame
    predictions: pd.DataFrame
    chosen_c: pd.DataFrame
    problems: pd.DataFrame


def classify_levels(
    data: LevelDataset,
    *,
    models: Sequence[str] = ("lda", "knn", "logreg"),
    cv_folds: int = 0,
    knn_k: int = 3,
    logreg_cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    inner_folds: int = 3,
    n_permutations: int = 200,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = True,
) -> LevelClassification:
    """Cross-validated level classification with baselines and a permutation test.

    Args:
        data: from :func:`ser.stats.level_dataset.caregiver_dataset`.
        models: classifiers, keys of :data:`MODELS`.
        cv_folds: 0 = leave one caregiver out; k >= 2 = stratified group k-fold.
        knn_k: neighbours of k-NN (the study: 3).
        logreg_cs: grid of the logistic regression's ``C`` (inverse L2 strength).
        inner_folds: grouped inner folds (on the training caregivers) that choose ``C``.
        n_permutations: permutations of the caregivers' level labels (0: no test).
        seed: seed of the permutations and of shuffled k-fold splits.
        n_jobs: joblib workers for the permutations.
        progress: tqdm progress bar over permutations.

    Returns:
        :class:`LevelClassification`. When fewer than 2 levels or fewer than 3
        caregivers remain, the summary holds one ``skipped`` row saying why (no error),
        so a notebook still finishes.

    Raises:
        ValueError: unknown model, ``knn_k`` < 1, empty ``logreg_cs``/non-positive C,
            negative ``n_permutations``, bad ``cv_folds``.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"classify_levels: unknown model(s) {unknown or models}; choose "
                         f"from {list(MODELS)}")
    if int(knn_k) < 1:
        raise ValueError(f"classify_levels: knn_k must be >= 1, got {knn_k}")
    if not logreg_cs or any(float(c) <= 0 for c in logreg_cs):
        raise ValueError(f"classify_levels: logreg_cs must be positive numbers, got {logreg_cs}")
    if int(n_permutations) < 0:
        raise ValueError(f"classify_levels: n_permutations must be >= 0, got {n_permutations}")
    problems = data.problems.copy()
    levels = [lv for lv in LEVELS if lv in set(data.y)]
    code = {lv: i for i, lv in enumerate(levels)}
    y = data.y.map(code).to_numpy(int)
    groups = data.groups.to_numpy(str)
    X = data.X.to_numpy(float)
    n_cg, k_lv, n_feat = len(np.unique(groups)), len(levels), X.shape[1]
    common = {"n_caregivers": n_cg, "n_levels": k_lv, "n_features": n_feat,
              "input": data.input, "n_permutations": int(n_permutations),
              "data_notes": "; ".join(f"{r.problem} {r.where}: {r.action}"
                                      for r in problems.itertuples()),
              "cv": "leave one caregiver out" if cv_folds == 0
              else f"stratified group {int(cv_folds)}-fold"}
    empty_null = pd.DataFrame(columns=["model", "permutation", "balanced_accuracy", "macro_f1"])
    if k_lv < 2 or n_cg < 3 or n_feat == 0:
        reason = (f"skipped: {k_lv} level(s), {n_cg} caregiver(s) and {n_feat} feature(s) "
                  f"left; need >= 2 levels, >= 3 caregivers and a feature")
        summary = pd.DataFrame([{**common, "model": "(skipped)", "kind": "skipped",
                                 "note": reason}]).reindex(columns=SUMMARY_COLUMNS)
        problems = pd.concat([problems, pd.DataFrame([problem_row(
            "too little data", "classification", "not run", reason)])], ignore_index=True)
        return LevelClassification(summary, empty_null, pd.DataFrame(),
                                   pd.DataFrame(columns=["fold", "C"]), problems)
    kw = dict(n_classes=k_lv, knn_k=int(knn_k), logreg_cs=tuple(logreg_cs),
              inner_folds=int(inner_folds), seed=int(seed))
    splits = make_splits(y, groups, n_splits=int(cv_folds), seed=int(seed))
    fold_of = np.empty(len(y), int)
    for f, (_, te) in enumerate(splits):
        fold_of[te] = f
    observed, preds, chosen_c = {}, [], pd.DataFrame(columns=["fold", "C"])
    for m in [*models, "majority"]:
        pred, chosen = cross_val_predict_levels(X, y, groups, splits, model=m, **kw)
        observed[m] = scores(y, pred, n_classes=k_lv)
        preds.append(pd.DataFrame({"caregiver": groups, "level": data.y.to_numpy(),
                                   "model": m, "predicted": np.array(levels)[pred],
                                   "fold": fold_of}))
        if chosen is not None:
            chosen_c = pd.DataFrame({"fold": np.arange(len(chosen)), "C": chosen})
    null = _permutation_null(X, y, groups, models=list(models), n_permutations=int(n_permutations),
                             cv_folds=int(cv_folds), n_jobs=int(n_jobs), progress=progress, **kw)
    rows = []
    chance = chance_scores(y, n_classes=k_lv)
    for m in models:
        nm = null[null["model"] == m]
        obs = observed[m]
        if len(nm):
            p = (1 + (nm["balanced_accuracy"] >= obs["balanced_accuracy"] - 1e-12).sum()) / (1 + len(nm))
            p_f1 = (1 + (nm["macro_f1"] >= obs["macro_f1"] - 1e-12).sum()) / (1 + len(nm))
            nmean, nq95 = nm["balanced_accuracy"].mean(), nm["balanced_accuracy"].quantile(0.95)
        else:
            p = p_f1 = nmean = nq95 = np.nan
        note = ""
        if m == "logreg" and len(chosen_c):
            vals, cnt = np.unique(chosen_c["C"], return_counts=True)
            note = "C chosen per fold: " + ", ".join(f"{v:g} ({c}x)" for v, c in zip(vals, cnt))
        rows.append({**common, "model": m, "kind": "model", "description": MODELS[m], **obs,
                     "p_perm": p, "p_perm_macro_f1": p_f1, "null_mean": nmean,
                     "null_q95": nq95, "chance": chance["balanced_accuracy"], "note": note})
    rows.append({**common, "model": "majority", "kind": "baseline",
                 "description": BASELINES["majority"], **observed["majority"],
                 "chance": chance["balanced_accuracy"],
                 "note": "same folds as the models"})
    rows.append({**common, "model": "chance", "kind": "baseline",
                 "description": BASELINES["chance"], **chance,
                 "chance": chance["balanced_accuracy"],
                 "note": f"balanced accuracy 1/{k_lv}; expected macro-F1 and accuracy"})
    summary = pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)
    is_model = summary["kind"] == "model"
    summary.loc[is_model, "p_perm_holm"] = holm(summary.loc[is_model, "p_perm"].to_numpy(float))
    return LevelClassification(summary=summary, null=null,
                               predictions=pd.concat(preds, ignore_index=True),
                               chosen_c=chosen_c, problems=problems)


def _one_permutation(X: np.ndarray, y_perm: np.ndarray, groups: np.ndarray, *,
                     models: Sequence[str], cv_folds: int, **kw: object) -> list[tuple[str, float, float]]:
    splits = make_splits(y_perm, groups, n_splits=cv_folds, seed=int(kw["seed"]))  # type: ignore[arg-type]
    out = []
    for m in models:
        pred, _ = cross_val_predict_levels(X, y_perm, groups, splits, model=m, **kw)  # type: ignore[arg-type]
        s = scores(y_perm, pred, n_classes=int(kw["n_classes"]))  # type: ignore[arg-type]
        out.append((m, s["balanced_accuracy"], s["macro_f1"]))
    return out


def permute_by_group(y: np.ndarray, groups: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Shuffle labels across groups: each group keeps one (permuted) label for all its rows.

    Args:
        y: (n,) labels, constant within each group.
        groups: (n,) group (caregiver) of each row.
        rng: random generator.

    Returns:
        (n,) permuted labels.

    Raises:
        ValueError: a group holds rows with different labels.
    """
    uniq, inv = np.unique(groups, return_inverse=True)
    first = np.zeros(len(uniq), int)
    first[inv[::-1]] = np.arange(len(y))[::-1]
    label = np.asarray(y)[first]
    if np.any(np.asarray(y) != label[inv]):
        raise ValueError("permute_by_group: labels vary within a group (a caregiver must "
                         "have one training level)")
    return rng.permutation(label)[inv]


def _permutation_null(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, models: list[str],
                      n_permutations: int, cv_folds: int, n_jobs: int, progress: bool,
                      **kw: object) -> pd.DataFrame:
    if n_permutations == 0:
        return pd.DataFrame(columns=["model", "permutation", "balanced_accuracy", "macro_f1"])
    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    rng = np.random.default_rng(np.random.SeedSequence([int(kw["seed"]), 20240601]))  # type: ignore[arg-type]
    perms = [permute_by_group(y, groups, rng=rng) for _ in range(n_permutations)]
    it = tqdm(perms, desc="permutations", disable=not progress)
    with threadpool_limits(limits=1):  # tiny matrices: BLAS threads only add overhead
        if n_jobs == 1:
            res = [_one_permutation(X, yp, groups, models=models, cv_folds=cv_folds, **kw)
                   for yp in it]
        else:
            res = Parallel(n_jobs=n_jobs)(
                delayed(_one_permutation)(X, yp, groups, models=models, cv_folds=cv_folds, **kw)
                for yp in it)
    return pd.DataFrame([(m, i, ba, f1) for i, r in enumerate(res) for m, ba, f1 in r],
                        columns=["model", "permutation", "balanced_accuracy", "macro_f1"])


def confusion(predictions: pd.DataFrame, *, model: str) -> pd.DataFrame:
    """Confusion matrix (rows: true level, columns: predicted) of one model's predictions."""
    p = predictions[predictions["model"] == model]
    if p.empty:
        raise ValueError(f"confusion: no predictions for model {model!r}; have "
                         f"{sorted(set(predictions['model']))}")
    levels = [lv for lv in LEVELS if lv in set(p["level"]) | set(p["predicted"])]
    tab = pd.crosstab(pd.Categorical(p["level"], levels), pd.Categorical(p["predicted"], levels),
                      dropna=False)
    tab.index.name, tab.columns.name = "true level", "predicted level"
    return tab
