"""Classifiers of the training level, caregiver-grouped cross-validation and scores.

- **Caregiver-grouped folds** (:func:`make_splits`): a caregiver's rows are either all in
  the training or all in the test part of a fold (leave one caregiver out, or stratified
  group k-fold). Every data-dependent step — median imputation, standardisation, the
  choice of the logistic regression's ``C`` (inner grouped CV on the training caregivers
  only) — is fitted on the training caregivers of each fold
  (:func:`cross_val_predict_levels`).
- **Models** (:data:`MODELS`): LDA and k-NN (k = 3), as in the study, and L2-regularised
  multinomial logistic regression with balanced class weights; and the majority-class
  rule run through the same folds.
- **Scores** (:func:`scores`, :func:`chance_scores`): balanced accuracy (= unweighted
  average recall, UAR), macro-F1 and accuracy, and their expected values under uniform
  guessing.

The three classifiers are implemented in NumPy and batched over folds (and over the
inner folds × ``C`` grid), so that a permutation test with hundreds of reruns takes
seconds; ``tests/test_level_classification.py`` pins them to scikit-learn's
``LinearDiscriminantAnalysis``, ``KNeighborsClassifier`` and ``LogisticRegression``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

#: Classifiers :func:`cross_val_predict_levels` knows, with a readable description.
MODELS: dict[str, str] = {
    "lda": "linear discriminant analysis (as in the study)",
    "knn": "k-nearest neighbours (k = 3 as in the study)",
    "logreg": "L2 logistic regression, C by inner grouped CV",
}


def scores(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int) -> dict[str, float]:
    """Balanced accuracy (UAR), macro-F1 and accuracy of integer-coded predictions.

    Args:
        y_true: true classes, int array (n,) in ``0..n_classes-1``.
        y_pred: predicted classes, same shape.
        n_classes: number of classes; averages run over classes present in ``y_true``
            (as scikit-learn's ``balanced_accuracy_score`` and ``f1_score(average="macro")``
            over the labels present in either array).

    Returns:
        ``{"balanced_accuracy": ..., "macro_f1": ..., "accuracy": ...}``.
    """
    return {k: float(v[0]) for k, v in
            _scores_batch(np.asarray(y_true)[None], np.asarray(y_pred)[None],
                          n_classes=n_classes).items()}


def _scores_batch(y_true: np.ndarray, y_pred: np.ndarray, *,
                  n_classes: int) -> dict[str, np.ndarray]:
    """:func:`scores` for a batch: ``y_true``, ``y_pred`` of shape (b, n) → arrays (b,)."""
    t = y_true[..., None] == np.arange(n_classes)  # (b, n, K)
    p = y_pred[..., None] == np.arange(n_classes)
    tp = (t & p).sum(1).astype(float)
    n_true, n_pred = t.sum(1).astype(float), p.sum(1).astype(float)
    present = n_true > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(present, tp / n_true, 0.0)
        f1 = np.where(n_true + n_pred > 0, 2 * tp / (n_true + n_pred), 0.0)
    in_f1 = present | (n_pred > 0)
    return {"balanced_accuracy": recall.sum(1) / present.sum(1),
            "macro_f1": f1.sum(1) / in_f1.sum(1),
            "accuracy": tp.sum(1) / y_true.shape[-1]}


def chance_scores(y: np.ndarray, *, n_classes: int) -> dict[str, float]:
    """Expected scores of uniform random guessing among ``n_classes`` classes.

    Balanced accuracy and accuracy are ``1/K``; macro-F1 is the mean over classes of
    ``2·π_c / (1 + K·π_c)`` with ``π_c`` the class shares (expected counts).
    """
    pi = np.bincount(np.asarray(y), minlength=n_classes) / len(y)
    pi = pi[pi > 0]
    k = float(n_classes)
    return {"balanced_accuracy": 1 / k, "macro_f1": float(np.mean(2 * pi / (1 + k * pi))),
            "accuracy": 1 / k}


# ---------------------------------------------------------------------- splitting

def make_splits(y: np.ndarray, groups: np.ndarray, *, n_splits: int = 0,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Caregiver-grouped folds: ``(train_idx, test_idx)`` pairs.

    With ``n_splits == 0`` every caregiver is a test fold once (leave one caregiver
    out). Otherwise the caregivers of each class are shuffled (``seed``) and dealt in
    turn to ``n_splits`` folds, one class after the other, so every fold holds
    ⌊n_c/k⌋ or ⌈n_c/k⌉ caregivers of each class ``c`` (stratified group k-fold for
    labels that are constant within a caregiver).

    Args:
        y: (n,) class of each row, constant within a caregiver.
        groups: (n,) caregiver of each row; a caregiver is never split across train
            and test.
        n_splits: 0 (leave one caregiver out) or 2..number of caregivers.
        seed: shuffling seed of the k-fold assignment.

    Returns:
        List of index-array pairs, in fold order.

    Raises:
        ValueError: bad ``n_splits``; a caregiver with rows of different classes.
    """
    y = np.asarray(y)
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = len(uniq)
    if n_splits == 0:
        return [(np.flatnonzero(inv != g), np.flatnonzero(inv == g)) for g in range(n_groups)]
    if not 2 <= n_splits <= n_groups:
        raise ValueError(f"make_splits: cv_folds must be 0 (leave one caregiver out) or "
                         f"2..{n_groups} (number of caregivers), got {n_splits}")
    first = np.zeros(n_groups, int)
    first[inv[::-1]] = np.arange(len(y))[::-1]
    label = y[first]
    if np.any(y != label[inv]):
        raise ValueError("make_splits: a caregiver has rows of different levels")
    rng = np.random.default_rng(int(seed))
    fold = np.empty(n_groups, int)
    dealt = 0
    for c in np.unique(label):
        members = rng.permutation(np.flatnonzero(label == c))
        fold[members] = (dealt + np.arange(len(members))) % n_splits
        dealt += len(members)
    row_fold = fold[inv]
    return [(np.flatnonzero(row_fold != k), np.flatnonzero(row_fold == k))
            for k in range(n_splits)]


def _masks(splits: Sequence[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    train = np.zeros((len(splits), n), bool)
    test = np.zeros((len(splits), n), bool)
    for i, (a, b) in enumerate(splits):
        train[i, a] = True
        test[i, b] = True
    return train, test


# ------------------------------------------------------------- batched preprocessing

def _standardise(X: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Median-impute and z-score ``X`` (n, d) with statistics of each fold's training rows.

    Args:
        X: features, NaN where missing.
        train: (b, n) training masks.

    Returns:
        (b, n, d): every row transformed with its fold's training statistics; a feature
        missing in all training rows becomes 0, a constant one is only centred.
    """
    Xb = np.where(train[..., None], X[None], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slice → NaN median
        med = np.nanmedian(Xb, axis=1)  # (b, d)
    med = np.where(np.isnan(med), 0.0, med)
    Z = np.where(np.isnan(X[None]), med[:, None, :], X[None])  # (b, n, d)
    w = train[..., None].astype(float)
    nt = np.maximum(w.sum(1), 1.0)
    mu = (Z * w).sum(1) / nt
    sd = np.sqrt((((Z - mu[:, None]) ** 2) * w).sum(1) / nt)
    sd = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(mu)), sd, 1.0)
    return (Z - mu[:, None]) / sd[:, None]


# ------------------------------------------------------------------- classifiers

def _lda_predict(Z: np.ndarray, y: np.ndarray, train: np.ndarray, *, n_classes: int) -> np.ndarray:
    """LDA with empirical priors and the pooled within-class covariance (ML estimate,
    pseudo-inverse), as scikit-learn's ``LinearDiscriminantAnalysis``.

    Args:
        Z: (b, n, d) standardised features; y: (n,) or (b, n) int classes;
        train: (b, n) training masks.

    Returns:
        (b, n) predicted classes for every row (use them on the test rows).
    """
    b, n, d = Z.shape
    Y = _onehot(y, n_classes, b) * train[..., None]            # (b, n, K)
    counts = Y.sum(1)                                           # (b, K)
    present = counts > 0
    means = np.einsum("bnk,bnd->bkd", Y, Z) / np.maximum(counts, 1)[..., None]
    resid = Z - np.einsum("bnk,bkd->bnd", Y, means)
    resid = resid * train[..., None]
    n_tr = np.maximum(train.sum(1), 1)  # ML estimate (÷ n), as scikit-learn's LDA
    S = np.einsum("bnd,bne->bde", resid, resid) / n_tr[:, None, None]
    Sinv = np.linalg.pinv(S, rcond=1e-8, hermitian=True)
    coef = np.einsum("bde,bke->bkd", Sinv, means)              # (b, K, d)
    const = -0.5 * np.einsum("bkd,bkd->bk", coef, means)
    with np.errstate(divide="ignore"):
        const = const + np.log(counts / np.maximum(counts.sum(1, keepdims=True), 1))
    score = np.einsum("bnd,bkd->bnk", Z, coef) + const[:, None, :]
    score = np.where(present[:, None, :], score, -np.inf)
    return score.argmax(-1)


def _knn_predict(Z: np.ndarray, y: np.ndarray, train: np.ndarray, *, n_classes: int,
                 k: int) -> np.ndarray:
    """k-NN majority vote (Euclidean, on standardised features) among training rows.

    A tie in votes goes to the tied class whose member is nearest. Ties in distance keep
    the training rows' order. Returns (b, n) predicted classes.
    """
    b, n, _ = Z.shape
    yb = np.broadcast_to(y, (b, n))
    sq = (Z**2).sum(-1)
    D = sq[:, :, None] + sq[:, None, :] - 2 * np.einsum("bnd,bmd->bnm", Z, Z)
    D = np.where(train[:, None, :], D, np.inf)
    kk = int(min(k, train.sum(1).min()))
    nn = np.argsort(D, axis=-1, kind="stable")[..., :kk]       # (b, n, kk)
    cls = np.take_along_axis(np.broadcast_to(yb[:, None, :], (b, n, n)), nn, axis=-1)
    onehot = cls[..., None] == np.arange(n_classes)             # (b, n, kk, K)
    votes = onehot.sum(2)
    rank = np.where(onehot, np.arange(kk)[None, None, :, None], kk).min(2)  # nearest rank
    return (votes * (kk + 1) - rank).argmax(-1)


def _onehot(y: np.ndarray, n_classes: int, b: int) -> np.ndarray:
    yb = np.broadcast_to(np.asarray(y), (b, np.asarray(y).shape[-1]))
    return (yb[..., None] == np.arange(n_classes)).astype(float)


def fit_logreg_batch(
    Z: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    c: np.ndarray,
    *,
    n_classes: int,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> np.ndarray:
    """Multinomial L2 logistic regressions with balanced class weights, batched (Newton).

    Minimises, for each batch element, ``Σ_i w_i · logloss_i + ||W||² / (2C)`` over the
    training rows (intercepts not penalised), with ``w_i = n / (K · n_{y_i})``
    computed on those rows (scikit-learn's ``class_weight="balanced"``) — the objective
    of ``LogisticRegression(C=C, class_weight="balanced")``. Classes absent from a
    training set get no coefficients and are never predicted.

    Args:
        Z: (b, n, d) features. y: (n,) or (b, n) int classes.
        train: (b, n) training masks. c: (b,) inverse regularisation strengths ``C``.
        n_classes: number of classes K.
        max_iter: Newton iterations at most. tol: stop when every gradient entry is
            below ``tol`` × (number of training rows).

    Returns:
        (b, d + 1, K) coefficients; row 0 holds the intercepts.
    """
    b, n, d = Z.shape
    K = n_classes
    Y = _onehot(y, K, b)
    # keep only each problem's training rows (padded with weight-0 rows) to save work
    keep = np.argsort(~train, axis=1, kind="stable")[:, :max(int(train.sum(1).max()), 1)]
    Z = np.take_along_axis(Z, keep[..., None], axis=1)
    Y = np.take_along_axis(Y, keep[..., None], axis=1)
    train = np.take_along_axis(train, keep, axis=1)
    n = train.shape[1]
    trainf = train.astype(float)
    counts = (Y * trainf[..., None]).sum(1)                      # (b, K)
    present = counts > 0
    n_tr = trainf.sum(1)
    cw = np.where(present, n_tr[:, None] / (present.sum(1, keepdims=True)
                                            * np.maximum(counts, 1)), 0.0)
    w = trainf * (Y * cw[:, None, :]).sum(-1)                     # (b, n)
    Xt = np.concatenate([np.ones((b, n, 1)), Z], axis=-1)        # (b, n, d1)
    d1 = d + 1
    lam = 1.0 / np.asarray(c, float)                              # (b,)
    pen = np.ones((d1, 1))
    pen[0] = 0.0
    penalty = lam[:, None, None] * pen[None]                      # (b, d1, 1)
    absent = ~present[:, None, :]                                 # (b, 1, K)
    ridge = np.where(absent[:, 0, :], 1.0, 1e-9)                  # (b, K)
    diag = (penalty * np.ones((1, 1, K))).reshape(b, d1 * K) + np.tile(ridge, (1, d1))
    eye_k = np.eye(K)

    def objective(th: np.ndarray, i: np.ndarray) -> np.ndarray:  # th (m, d1, K) -> (m,)
        logits = np.where(absent[i], -np.inf, Xt[i] @ th)
        m = logits.max(-1, keepdims=True)
        lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
        fit = np.where(Y[i] > 0, logits, 0.0).sum(-1)
        with np.errstate(invalid="ignore"):  # rows outside training may be -inf - -inf
            loss = np.where(w[i] > 0, w[i] * (lse - fit), 0.0)
        return loss.sum(-1) + 0.5 * (penalty[i] * th**2).sum((-2, -1))

    theta = np.zeros((b, d1, K))
    f = objective(theta, np.arange(b))
    act = np.arange(b)  # problems not yet converged
    for _ in range(int(max_iter)):
        Xa, th = Xt[act], theta[act]
        logits = np.where(absent[act], -np.inf, Xa @ th)
        P = np.exp(logits - logits.max(-1, keepdims=True))
        P /= P.sum(-1, keepdims=True)
        R = w[act, :, None] * (P - Y[act])                        # (m, n, K)
        G = np.swapaxes(Xa, 1, 2) @ R + penalty[act] * th         # (m, d1, K)
        done = np.abs(G).max((1, 2)) <= tol * np.maximum(n_tr[act], 1)
        if done.all():
            break
        act, Xa, th, P, G = act[~done], Xa[~done], th[~done], P[~done], G[~done]
        m_ = len(act)
        A = w[act, :, None, None] * (P[..., :, None] * eye_k - P[..., :, None] * P[..., None, :])
        XA = (Xa[..., :, None, None] * A[..., None, :, :]).reshape(m_, n, d1 * K * K)
        H = (np.swapaxes(XA, 1, 2) @ Xa).reshape(m_, d1, K, K, d1)
        H = H.transpose(0, 1, 2, 4, 3).reshape(m_, d1 * K, d1 * K)
        H[:, np.arange(d1 * K), np.arange(d1 * K)] += diag[act]
        step = np.linalg.solve(H, G.reshape(m_, d1 * K, 1)).reshape(m_, d1, K)
        slope = (G * step).sum((1, 2))                            # > 0: descent direction
        # backtracking (Armijo), evaluated only for the problems still searching
        t = np.ones(m_)
        new = th - step
        f_new = objective(new, act)
        bad = f_new > f[act] - 1e-4 * t * slope
        for _halving in range(30):
            if not bad.any():
                break
            t[bad] *= 0.5
            new[bad] = th[bad] - t[bad, None, None] * step[bad]
            f_new[bad] = objective(new[bad], act[bad])
            bad = f_new > f[act] - 1e-4 * t * slope
        theta[act], f[act] = new, f_new
    return theta


def _logreg_scores(theta: np.ndarray, Z: np.ndarray, absent: np.ndarray) -> np.ndarray:
    logits = np.concatenate([np.ones(Z.shape[:-1] + (1,)), Z], axis=-1) @ theta
    return np.where(absent[:, None, :], -np.inf, logits)


def _logreg_predict(X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                    outer: Sequence[tuple[np.ndarray, np.ndarray]], *, n_classes: int,
                    cs: Sequence[float], inner_folds: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Nested CV: C chosen per outer fold by inner grouped CV (pooled inner balanced
    accuracy; ties → smallest C), then refitted on the outer training rows.

    Returns:
        ``(pred, chosen)``: (n,) out-of-fold predictions, (n_outer,) chosen C.
    """
    n = len(y)
    cs = np.asarray(sorted(float(c) for c in cs))
    inner_train, inner_test, owner = [], [], []
    for f, (tr, _) in enumerate(outer):
        k = min(int(inner_folds), len(np.unique(groups[tr])))
        for itr, ite in make_splits(y[tr], groups[tr], n_splits=k if k >= 2 else 2,
                                    seed=seed + f):
            a = np.zeros(n, bool)
            a[tr[itr]] = True
            t = np.zeros(n, bool)
            t[tr[ite]] = True
            inner_train.append(a)
            inner_test.append(t)
            owner.append(f)
    itrain, itest = np.array(inner_train), np.array(inner_test)
    owner = np.array(owner)
    n_in, n_c = len(itrain), len(cs)
    Zi = _standardise(X, itrain)                                  # (n_in, n, d)
    Zrep = np.repeat(Zi, n_c, axis=0)
    trep = np.repeat(itrain, n_c, axis=0)
    crep = np.tile(cs, n_in)
    theta = fit_logreg_batch(Zrep, y, trep, crep, n_classes=n_classes)
    absent = (_onehot(y, n_classes, len(trep)) * trep[..., None]).sum(1) == 0
    pred = _logreg_scores(theta, Zrep, absent).argmax(-1).reshape(n_in, n_c, n)
    chosen = np.empty(len(outer))
    for f in range(len(outer)):
        rows = np.flatnonzero(owner == f)
        mask = itest[rows].any(0)  # every outer-training row is in one inner test part
        oof = np.zeros((n_c, n), int)
        for r in rows:
            oof[:, itest[r]] = pred[r][:, itest[r]]
        ba = _scores_batch(np.broadcast_to(y[mask], (n_c, mask.sum())), oof[:, mask],
                           n_classes=n_classes)["balanced_accuracy"]
        chosen[f] = cs[int(np.argmax(ba >= ba.max() - 1e-12))]
    otrain, otest = _masks(outer, n)
    Zo = _standardise(X, otrain)
    theta = fit_logreg_batch(Zo, y, otrain, chosen, n_classes=n_classes)
    absent = (_onehot(y, n_classes, len(otrain)) * otrain[..., None]).sum(1) == 0
    full = _logreg_scores(theta, Zo, absent).argmax(-1)
    out = np.full(n, -1)
    for f in range(len(outer)):
        out[otest[f]] = full[f, otest[f]]
    return out, chosen


def cross_val_predict_levels(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    model: str,
    n_classes: int,
    knn_k: int = 3,
    logreg_cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    inner_folds: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Out-of-fold predictions of one model (or baseline) over grouped folds.

    Args:
        X: (n, d) features (NaN allowed: imputed per fold). y: (n,) int classes.
        groups: (n,) caregiver of each row. splits: from :func:`make_splits`.
        model: a key of :data:`MODELS` or ``"majority"``.
        n_classes: number of classes.
        knn_k: neighbours of k-NN. logreg_cs: grid of ``C``. inner_folds: inner grouped
            folds for ``C``. seed: seed of the inner splits.

    Returns:
        ``(pred, chosen_c)``: (n,) predicted class per row; ``chosen_c`` (n_folds,) for
        ``logreg``, else None.
    """
    n = len(y)
    train, test = _masks(splits, n)
    if model == "logreg":
        return _logreg_predict(X, y, groups, splits, n_classes=n_classes, cs=logreg_cs,
                               inner_folds=inner_folds, seed=seed)
    if model == "majority":
        counts = (_onehot(y, n_classes, len(train)) * train[..., None]).sum(1)
        full = np.broadcast_to(counts.argmax(-1)[:, None], train.shape)
    else:
        Z = _standardise(X, train)
        if model == "lda":
            full = _lda_predict(Z, y, train, n_classes=n_classes)
        elif model == "knn":
            full = _knn_predict(Z, y, train, n_classes=n_classes, k=knn_k)
        else:
            raise ValueError(f"cross_val_predict_levels: unknown model {model!r}; choose "
                             f"from {list(MODELS) + ['majority']}")
    out = np.full(n, -1)
    for f in range(len(splits)):
        out[test[f]] = full[f, test[f]]
    return out, None

