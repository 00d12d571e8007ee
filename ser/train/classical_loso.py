"""Leave-one-speaker-out evaluation of the classical models and ensembles.

:func:`evaluate_loso`: outer leave-one-speaker-out (:func:`ser.data.splits.loso_splits`),
the inner grouped CV (:meth:`ser.models.classical.estimator.ClassicalModel.fit_grid`) on
the training speakers of each fold, so nothing is tuned on the test speaker.
:func:`evaluate_loso_ensemble` does the same for a probability-averaging ensemble
(:class:`ser.models.classical.ensemble.ClassicalEnsemble`) whose weights, when tuned, are
chosen on held-out predictions of the training speakers; :func:`combine_predictions` and
:func:`summarize_predictions` work on saved prediction frames. Fold and pooled metrics are
those of :mod:`ser.train.metrics`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ser.data.splits import loso_splits
from ser.models.classical.classes import aligned_proba
from ser.models.classical.ensemble import Member, choose_weights
from ser.models.classical.estimator import ClassicalModel, check_aligned, jsonable
from ser.train.metrics import summary_metrics, uar

FOLD_COLUMNS: tuple[str, ...] = (
    "fold", "test_speaker", "n_test", "uar", "macro_f1", "accuracy", "best_params",
    "inner_uar", "fit_s",
)


def _metrics(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    """UAR (mean recall over the classes present in ``y_true``), macro-F1, accuracy.

    Macro-F1 averages over the classes present in ``y_true`` or ``y_pred``.
    """
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape != yp.shape or yt.ndim != 1 or yt.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty 1-D and equally long; got {yt.shape}, {yp.shape}")
    return summary_metrics(yt, yp, sorted(set(yt.tolist()) | set(yp.tolist())))


def _summary(pred: pd.DataFrame, folds: pd.DataFrame) -> dict[str, Any]:
    pooled = _metrics(pred["y_true"].to_numpy(), pred["y_pred"].to_numpy())
    return {**pooled,
            "uar_mean_fold": float(folds["uar"].mean()), "uar_std_fold": float(folds["uar"].std(ddof=0)),
            "macro_f1_mean_fold": float(folds["macro_f1"].mean()),
            "accuracy_mean_fold": float(folds["accuracy"].mean()),
            "n_folds": int(len(folds)), "n": int(len(pred))}


def _fold_row(i: int, test: Sequence[str], yt: np.ndarray, yp: np.ndarray,
              best: Any, inner: float | None, fit_s: float) -> dict[str, Any]:
    return {"fold": i, "test_speaker": ",".join(test), "n_test": int(len(yt)), **_metrics(yt, yp),
            "best_params": json.dumps(best, default=jsonable, sort_keys=True),
            "inner_uar": inner, "fit_s": round(fit_s, 3)}


def _pred_frame(index: pd.Index, speakers: np.ndarray, fold: int, yt: np.ndarray,
                proba: np.ndarray, classes: Sequence[Any]) -> pd.DataFrame:
    df = pd.DataFrame({"speaker": speakers, "fold": fold, "y_true": yt,
                       "y_pred": np.asarray(classes)[proba.argmax(axis=1)]}, index=index)
    for j, c in enumerate(classes):
        df[f"p_{c}"] = proba[:, j]
    return df


# ----------------------------------------------------------------------- evaluation

def evaluate_loso(
    features: pd.DataFrame,
    labels: Sequence[Any],
    speakers: Sequence[Any],
    *,
    estimator: str = "svm_linear",
    speaker_norm: bool = False,
    param_grid: Mapping[str, Sequence[Any]] | None = None,
    select_k: int | None = None,
    inner_folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Leave-one-speaker-out evaluation with speaker-grouped inner tuning.

    For each speaker: fit :meth:`ClassicalModel.fit_grid` on the other speakers
    (inner grouped CV over them only), predict the held-out speaker. With
    ``speaker_norm`` the held-out speaker is z-scored by its own (unlabelled)
    statistics.

    Args:
        features: ``[n, d]`` feature table (e.g. from :func:`extract_features`).
        labels: ``[n]`` class labels aligned with the rows.
        speakers: ``[n]`` speaker ids aligned with the rows.
        estimator: one of :data:`ESTIMATORS`.
        speaker_norm: per-speaker standardisation (transductive, label-free).
        param_grid: grid of the final estimator; default :func:`default_param_grid`.
        select_k: ANOVA feature selection inside every fit (``ClassicalModel(select_k=...)``);
            ``None``: all features.
        inner_folds: inner grouped folds.
        seed: estimator seed.
        n_jobs: parallel fits inside each grid search.
        progress: tqdm bar over the folds.

    Returns:
        ``(per_fold, overall, predictions)``: ``per_fold`` has :data:`FOLD_COLUMNS`;
        ``overall`` holds pooled ``uar``, ``macro_f1``, ``accuracy`` over all
        predictions plus ``uar_mean_fold``, ``uar_std_fold``, ``macro_f1_mean_fold``,
        ``accuracy_mean_fold``, ``n_folds``, ``n``, ``fit_s``; ``predictions`` is
        indexed like ``features`` with ``speaker, fold, y_true, y_pred, p_<class>…``.

    Raises:
        ValueError: misaligned inputs, NA labels, fewer than 3 speakers.
    """
    y, g = check_aligned(features, labels, speakers)
    splits = loso_splits(pd.DataFrame({"speaker": g}), n_val=0, seed=seed)
    if len(splits) < 3:
        raise ValueError(f"leave-one-speaker-out with inner CV needs at least 3 speakers; got {len(splits)}")
    X = features.to_numpy(dtype=np.float64) if isinstance(features, pd.DataFrame) else np.asarray(features)
    index = features.index if isinstance(features, pd.DataFrame) else pd.RangeIndex(len(X))
    classes = sorted(pd.unique(y).tolist())
    rows, preds = [], []
    t_all = time.perf_counter()
    for i, split in enumerate(tqdm(splits, desc=f"LOSO {estimator}", disable=not progress)):
        tr = np.isin(g, split.train + split.val)
        te = np.isin(g, split.test)
        t0 = time.perf_counter()
        model = ClassicalModel(estimator=estimator, speaker_norm=speaker_norm, seed=seed, select_k=select_k)
        model.fit_grid(X[tr], y[tr], g[tr], param_grid=param_grid, inner_folds=inner_folds, n_jobs=n_jobs)
        proba = aligned_proba(model.predict_proba(X[te], g[te]), model.classes_, classes)
        fit_s = time.perf_counter() - t0
        p = _pred_frame(index[te], g[te], i, y[te], proba, classes)
        preds.append(p)
        rows.append(_fold_row(i, split.test, y[te], p["y_pred"].to_numpy(), model.best_params_,
                              model.inner_uar_, fit_s))
    folds = pd.DataFrame(rows, columns=list(FOLD_COLUMNS))
    pred = pd.concat(preds).loc[index]
    overall = {**_summary(pred, folds), "fit_s": round(time.perf_counter() - t_all, 3)}
    return folds, overall, pred


def evaluate_loso_ensemble(
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
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, dict[str, pd.DataFrame]]:
    """Leave-one-speaker-out evaluation of a probability-averaging ensemble.

    In each outer fold every member is tuned by :meth:`ClassicalModel.fit_grid` on the
    training speakers, exactly as :func:`evaluate_loso` does (same folds, same seed,
    so each member's predictions equal that function's). ``combine="mean"`` averages
    the members' probabilities with equal weights (nothing to tune);
    ``combine="weights"`` chooses the weights by :func:`choose_weights` on held-out
    probabilities of the training speakers (the members' own grouped inner folds,
    with their chosen parameters), so the test speaker is never used.

    Args:
        feature_tables: ``{feature_set: [n, d] table}``, all with the same row index.
        labels: ``[n]`` class labels.
        speakers: ``[n]`` speaker ids.
        members: ensemble members.
        combine: ``"mean"`` or ``"weights"``.
        inner_folds: inner grouped folds.
        weight_step: grid step of the weights (``combine="weights"``).
        seed: estimator seed.
        n_jobs: inner folds evaluated in parallel.
        progress: tqdm bar over the folds.

    Returns:
        ``(per_fold, overall, predictions, member_predictions)``: the first three as
        :func:`evaluate_loso` (``best_params`` of a fold holds the weights and each
        member's parameters; ``overall["member_fit_s"]`` the seconds spent on each
        member); ``member_predictions`` maps :attr:`Member.name` to
        that member's predictions frame (summarise with :func:`summarize_predictions`).

    Raises:
        ValueError: unknown ``combine``, no or duplicated members, a missing or
            misaligned table.
    """
    if combine not in ("mean", "weights"):
        raise ValueError(f"combine={combine!r} is unknown; use 'mean' or 'weights'")
    if not members:
        raise ValueError("members is empty; give at least one Member")
    if len({m.name for m in members}) != len(members):
        raise ValueError(f"members must differ; got {[m.name for m in members]}")
    first = None
    for mem in members:
        if mem.feature_set not in feature_tables:
            raise ValueError(f"feature_tables lacks {mem.feature_set!r} (member {mem.name}); "
                             f"have {', '.join(feature_tables)}")
        idx = feature_tables[mem.feature_set].index
        if first is None:
            first = idx
        elif not idx.equals(first):
            raise ValueError(f"feature table {mem.feature_set!r} has other rows than "
                             f"{members[0].feature_set!r}; align them (same paths, same order)")
    y, g = check_aligned(feature_tables[members[0].feature_set], labels, speakers)
    Xs = {k: feature_tables[k].to_numpy(dtype=np.float64) for k in {m.feature_set for m in members}}
    splits = loso_splits(pd.DataFrame({"speaker": g}), n_val=0, seed=seed)
    if len(splits) < 3:
        raise ValueError(f"leave-one-speaker-out with inner CV needs at least 3 speakers; got {len(splits)}")
    classes = sorted(pd.unique(y).tolist())
    rows, preds = [], []
    member_preds: dict[str, list[pd.DataFrame]] = {m.name: [] for m in members}
    member_s = dict.fromkeys(member_preds, 0.0)
    t_all = time.perf_counter()
    for i, split in enumerate(tqdm(splits, desc=f"LOSO ensemble ({combine})", disable=not progress)):
        tr = np.isin(g, split.train + split.val)
        te = np.isin(g, split.test)
        t0 = time.perf_counter()
        models, test_p, oof = [], [], []
        for mem in members:
            t_m = time.perf_counter()
            X = Xs[mem.feature_set]
            m = ClassicalModel(estimator=mem.estimator, speaker_norm=mem.speaker_norm, seed=seed,
                               select_k=mem.select_k)
            m.fit_grid(X[tr], y[tr], g[tr], param_grid=mem.param_grid, inner_folds=inner_folds, n_jobs=n_jobs)
            models.append(m)
            test_p.append(aligned_proba(m.predict_proba(X[te], g[te]), m.classes_, classes))
            oof.append(aligned_proba(m.oof_proba_, m.classes_, classes))
            member_preds[mem.name].append(_pred_frame(first[te], g[te], i, y[te], test_p[-1], classes))
            member_s[mem.name] += time.perf_counter() - t_m
        if combine == "weights":
            w, inner = choose_weights(oof, y[tr], classes, step=weight_step)
        else:
            w = np.full(len(members), 1 / len(members))
            inner = uar(y[tr], np.asarray(classes)[np.tensordot(w, np.stack(oof), axes=1).argmax(axis=1)])
        proba = np.tensordot(w, np.stack(test_p), axes=1)
        fit_s = time.perf_counter() - t0
        p = _pred_frame(first[te], g[te], i, y[te], proba, classes)
        preds.append(p)
        best = {"weights": [round(float(x), 3) for x in w],
                **{mem.name: m.best_params_ for mem, m in zip(members, models, strict=True)}}
        rows.append(_fold_row(i, split.test, y[te], p["y_pred"].to_numpy(), best, inner, fit_s))
    folds = pd.DataFrame(rows, columns=list(FOLD_COLUMNS))
    pred = pd.concat(preds).loc[first]
    overall = {**_summary(pred, folds), "fit_s": round(time.perf_counter() - t_all, 3),
               "member_fit_s": {k: round(v, 3) for k, v in member_s.items()}}
    return folds, overall, pred, {k: pd.concat(v).loc[first] for k, v in member_preds.items()}


def summarize_predictions(predictions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-fold table and overall metrics of a LOSO predictions frame.

    Args:
        predictions: frame with ``speaker, fold, y_true, y_pred`` (as returned by
            :func:`evaluate_loso` or :func:`combine_predictions`).

    Returns:
        ``(per_fold, overall)`` as :func:`evaluate_loso` (``best_params``,
        ``inner_uar`` and ``fit_s`` are NA; ``overall`` has no ``fit_s``).

    Raises:
        ValueError: a required column is missing.
    """
    missing = {"speaker", "fold", "y_true", "y_pred"} - set(predictions.columns)
    if missing:
        raise ValueError(f"predictions lack column(s) {sorted(missing)}")
    rows = []
    for fold, part in predictions.groupby("fold", sort=True):
        row = _fold_row(int(fold), sorted(pd.unique(part["speaker"].astype(str))), part["y_true"].to_numpy(),
                        part["y_pred"].to_numpy(), None, None, float("nan"))
        rows.append({**row, "best_params": None, "fit_s": None})
    folds = pd.DataFrame(rows, columns=list(FOLD_COLUMNS))
    return folds, _summary(predictions, folds)


def combine_predictions(predictions: Sequence[pd.DataFrame], *,
                        weights: Sequence[float] | None = None) -> pd.DataFrame:
    """Weighted mean of the ``p_<class>`` columns of LOSO predictions on the same rows.

    With equal weights this is exactly ``combine="mean"`` of
    :func:`evaluate_loso_ensemble` (whose members are fitted as in :func:`evaluate_loso`).

    Raises:
        ValueError: no frames, different rows/classes, or bad weights.
    """
    if not predictions:
        raise ValueError("combine_predictions needs at least one predictions frame")
    base = predictions[0]
    cols = [c for c in base.columns if c.startswith("p_")]
    for p in predictions[1:]:
        if not p.index.equals(base.index) or [c for c in p.columns if c.startswith("p_")] != cols \
                or not (p["y_true"].to_numpy() == base["y_true"].to_numpy()).all():
            raise ValueError("predictions must cover the same rows, labels and classes (p_<class> columns)")
    w = np.full(len(predictions), 1.0) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(predictions),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(predictions)} non-negative numbers with a positive sum")
    w = w / w.sum()
    proba = sum(wi * p[cols].to_numpy(dtype=np.float64) for wi, p in zip(w, predictions, strict=True))
    lookup = {str(v): v for v in pd.unique(pd.concat([base["y_true"], base["y_pred"]]))}
    classes = [lookup.get(c.removeprefix("p_"), c.removeprefix("p_")) for c in cols]
    out = base[["speaker", "fold", "y_true"]].copy()
    out["y_pred"] = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    for j, c in enumerate(cols):
        out[c] = proba[:, j]
    return out
