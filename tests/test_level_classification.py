"""Tests of the level classification (ser.stats.level_dataset, level_classifiers,
level_classification): grouped CV, the NumPy classifiers against scikit-learn,
baselines, the permutation test across caregivers, problem data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from ser.data import schema
from ser.stats import descriptors, level_classification, level_classifiers, level_dataset, simulate

FEATURES = ["p_happy__mean", "f0_hz__median", "energy_db__mean", "speech_ratio"]


def _desc(seed: int, effects: dict | None = None, **kw) -> pd.DataFrame:  # noqa: ANN003
    w = simulate.simulate_windows(seed=seed, effects=effects, duration_s=60.0, **kw)
    return descriptors.recording_descriptors(w, features=["p_happy", "f0_hz", "energy_db"],
                                             stats=("mean", "median"))


@pytest.fixture(scope="module")
def null_desc() -> pd.DataFrame:
    return _desc(1)


@pytest.fixture(scope="module")
def level_desc() -> pd.DataFrame:
    # strong, non-monotone level differences in F0 and energy (both phases)
    eff = {"f0_hz": {"level[beginner]": 70.0, "level[intermediate]": -70.0,
                     "level[expert]": 140.0},
           "energy_db": {"level[beginner]": -12.0, "level[intermediate]": 10.0,
                         "level[expert]": 20.0}}
    return _desc(2, eff)


def _xy(ds: level_dataset.LevelDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    code = {lv: i for i, lv in enumerate(schema.LEVELS)}
    return ds.X.to_numpy(float), ds.y.map(code).to_numpy(int), ds.groups.to_numpy(str)


# ------------------------------------------------------------------------------ dataset

def test_dataset_both_and_delta(null_desc: pd.DataFrame) -> None:
    both = level_dataset.caregiver_dataset(null_desc, features=FEATURES, input="both")
    assert both.X.shape == (23, 8) and list(both.X.columns[:2]) == [
        "p_happy__mean@control", "p_happy__mean@care"]
    assert list(both.groups) == list(both.X.index) and both.problems.empty
    assert list(dict.fromkeys(both.y)) == list(schema.LEVELS)  # natural order
    delta = level_dataset.caregiver_dataset(null_desc, features=FEATURES, input="delta")
    assert list(delta.X.columns) == [f"{f}@delta" for f in FEATURES]
    cg = "p007"
    ctrl = null_desc[(null_desc.caregiver == cg) & (null_desc.phase == "control")]
    care = null_desc[(null_desc.caregiver == cg) & (null_desc.phase == "care")]
    expect = care["f0_hz__median"].iloc[0] - ctrl["f0_hz__median"].iloc[0]
    assert delta.X.loc[cg, "f0_hz__median@delta"] == pytest.approx(expect)
    assert both.X.loc[cg, "f0_hz__median@care"] == pytest.approx(care["f0_hz__median"].iloc[0])


def test_dataset_problem_data_rules(null_desc: pd.DataFrame) -> None:
    d = null_desc[~((null_desc.caregiver == "p005") & (null_desc.phase == "care"))].copy()
    d = d[d.caregiver != "p001"]          # untrained keeps one caregiver (p002)
    d["constant"] = 3.0                   # zero variance
    d.loc[d.caregiver == "p010", "f0_hz__median"] = np.nan  # missing value
    ds = level_dataset.caregiver_dataset(d, features=[*FEATURES, "constant"], input="both")
    probs = ds.problems.set_index("problem")
    assert probs.loc["caregiver lacks a phase", "where"] == "p005"
    assert "dropped" in probs.loc["caregiver lacks a phase", "action"]
    assert "p005" not in ds.X.index and "untrained" not in set(ds.y)
    assert probs.loc["level with 1 caregiver(s)", "where"] == "untrained"
    assert "p002" in probs.loc["level with 1 caregiver(s)", "detail"]
    zero = ds.problems[ds.problems.problem == "zero-variance feature"]
    assert set(zero["where"]) == {"constant@control", "constant@care"}
    assert not any(c.startswith("constant") for c in ds.X.columns)
    miss = ds.problems[ds.problems.problem == "missing values"]
    assert set(miss["where"]) == {"f0_hz__median@control", "f0_hz__median@care"}
    assert "imputed within each fold" in miss["action"].iloc[0]
    assert ds.X.shape == (20, 8) and (ds.problems["analysis"] == "level classification").all()
    # one phase is enough for input="control": p005 kept there
    ctrl = level_dataset.caregiver_dataset(d, features=FEATURES, input="control")
    assert "p005" in ctrl.X.index


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"input": "both_phases"}, "input must be one of"),
    ({"min_caregivers_per_level": 1}, "min_caregivers_per_level"),
    ({"features": []}, "'features' is empty"),
    ({"features": ["nope__mean"]}, "lacks column"),
])
def test_dataset_bad_inputs(null_desc: pd.DataFrame, kwargs: dict, match: str) -> None:
    kwargs = {"features": FEATURES, **kwargs}
    with pytest.raises(ValueError, match=match):
        level_dataset.caregiver_dataset(null_desc, **kwargs)


# ------------------------------------------------------------------------------ splits

def test_splits_keep_caregivers_together_and_stratify() -> None:
    groups = np.repeat([f"c{i:02d}" for i in range(23)], 3)       # 3 rows per caregiver
    y = np.repeat(np.repeat(np.arange(4), [2, 9, 4, 8]), 3)
    loco = level_classifiers.make_splits(y, groups)
    assert len(loco) == 23
    for k in (0, 4):
        splits = level_classifiers.make_splits(y, groups, n_splits=k, seed=3)
        seen = np.concatenate([te for _, te in splits])
        assert sorted(seen) == list(range(len(y)))                 # each row tested once
        for tr, te in splits:
            assert not set(groups[tr]) & set(groups[te])
    k4 = level_classifiers.make_splits(y, groups, n_splits=4, seed=3)
    per_fold = np.array([np.bincount(y[te], minlength=4) // 3 for _, te in k4])
    assert (per_fold.max(0) - per_fold.min(0) <= 1).all()          # stratified
    reseeded = level_classifiers.make_splits(y, groups, n_splits=4, seed=4)
    assert [list(t) for _, t in k4] != [list(t) for _, t in reseeded]
    with pytest.raises(ValueError, match="cv_folds"):
        level_classifiers.make_splits(y, groups, n_splits=1)
    with pytest.raises(ValueError, match="cv_folds"):
        level_classifiers.make_splits(y, groups, n_splits=24)
    with pytest.raises(ValueError, match="different levels"):
        level_classifiers.make_splits(np.r_[1, y[1:]], groups, n_splits=3)


def test_permute_by_group_keeps_one_label_per_caregiver() -> None:
    groups = np.repeat([f"c{i}" for i in range(10)], 2)
    y = np.repeat(np.arange(10) % 4, 2)
    rng = np.random.default_rng(0)
    perms = [level_classification.permute_by_group(y, groups, rng=rng) for _ in range(20)]
    for p in perms:
        assert (p[::2] == p[1::2]).all()                          # both rows of a caregiver
        assert sorted(p) == sorted(y)                             # same label multiset
    assert any((p != y).any() for p in perms)
    with pytest.raises(ValueError, match="vary within a group"):
        level_classification.permute_by_group(np.arange(20), groups, rng=rng)


# ------------------------------------------------------------------- against sklearn

def _folds() -> tuple[np.ndarray, np.ndarray, list, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [2, 9, 4, 8])
    X = rng.standard_normal((23, 5)) + 0.6 * y[:, None] * rng.standard_normal(5)
    splits = level_classifiers.make_splits(y, np.arange(23).astype(str))
    train, _ = level_classifiers._masks(splits, 23)
    return X, y, splits, train, level_classifiers._standardise(X, train)


def test_standardisation_fitted_on_training_rows_only() -> None:
    X, _, splits, _, Z = _folds()
    for f, (tr, _) in enumerate(splits):
        assert Z[f] == pytest.approx(StandardScaler().fit(X[tr]).transform(X))
    Xn = X.copy()
    Xn[3, 1] = np.nan
    train, _ = level_classifiers._masks(splits, 23)
    Zn = level_classifiers._standardise(Xn, train)
    f = next(i for i, (tr, _) in enumerate(splits) if 3 not in tr)  # held-out row is 3
    col = X[splits[f][0], 1]
    expect = (np.median(col) - col.mean()) / col.std()
    assert Zn[f, 3, 1] == pytest.approx(expect)  # imputed with the training median


def test_lda_and_knn_match_sklearn() -> None:
    X, y, splits, train, Z = _folds()
    lda = level_classifiers._lda_predict(Z, y, train, n_classes=4)
    knn = level_classifiers._knn_predict(Z, y, train, n_classes=4, k=3)
    n_compared = 0
    for f, (tr, te) in enumerate(splits):
        ref = LinearDiscriminantAnalysis().fit(Z[f][tr], y[tr])
        assert (ref.predict(Z[f]) == lda[f]).all()
        nb = KNeighborsClassifier(3).fit(Z[f][tr], y[tr])
        votes = y[tr][nb.kneighbors(Z[f][te], return_distance=False)]
        if len(set(votes[0])) < 3:  # no three-way tie (sklearn picks the lowest class)
            assert (nb.predict(Z[f][te]) == knn[f][te]).all()
            n_compared += 1
        else:  # our rule: the nearest neighbour's class
            assert knn[f][te][0] == votes[0][0]
    assert n_compared >= 15


@pytest.mark.parametrize("c", [0.05, 1.0, 20.0])
def test_logreg_matches_sklearn_balanced(c: float) -> None:
    X, y, splits, train, Z = _folds()
    theta = level_classifiers.fit_logreg_batch(Z, y, train, np.full(len(splits), c), n_classes=4)
    for f in (0, 1, 5, 17):
        tr = splits[f][0]
        ref = LogisticRegression(C=c, class_weight="balanced", tol=1e-10, max_iter=10000)
        ref.fit(Z[f][tr], y[tr])
        logits = np.c_[np.ones(23), Z[f]] @ theta[f]
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        cols = ref.classes_  # fold 0/1 hold out an untrained caregiver: class kept (1 left)
        assert prob[:, cols] == pytest.approx(ref.predict_proba(Z[f]), abs=1e-5)


def test_logreg_class_absent_from_training_is_never_predicted() -> None:
    X, y, splits, train, Z = _folds()
    tr = train.copy()
    tr[:, y == 0] = False  # no untrained caregiver in any training set
    theta = level_classifiers.fit_logreg_batch(Z, y, tr, np.full(len(splits), 1.0), n_classes=4)
    absent = np.ones((len(splits), 4), bool)
    absent[:, 1:] = False
    pred = level_classifiers._logreg_scores(theta, Z, absent).argmax(-1)
    assert np.isfinite(theta).all() and not (pred == 0).any()


def test_scores_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        t = rng.integers(0, 4, 23)
        p = rng.integers(0, 4, 23)
        p[:3] = 3
        t[t == 3] = 2  # class 3 only predicted: sklearn's macro-F1 counts it, recall not
        s = level_classifiers.scores(t, p, n_classes=4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(t, p))
        assert s["macro_f1"] == pytest.approx(f1_score(t, p, average="macro"))
        assert s["accuracy"] == pytest.approx(accuracy_score(t, p))
    ch = level_classifiers.chance_scores(np.repeat(np.arange(4), [2, 9, 4, 8]), n_classes=4)
    assert ch["balanced_accuracy"] == 0.25
    # Monte-Carlo check of the expected macro-F1 of uniform guessing
    yt = np.repeat(np.arange(4), [20, 90, 40, 80])
    sim = np.mean([level_classifiers.scores(yt, rng.integers(0, 4, len(yt)), n_classes=4)["macro_f1"]
                   for _ in range(300)])
    assert level_classifiers.chance_scores(yt, n_classes=4)["macro_f1"] == pytest.approx(sim, abs=0.01)


# ------------------------------------------------------------------ whole procedure

def test_planted_level_differences_are_found(level_desc: pd.DataFrame) -> None:
    ds = level_dataset.caregiver_dataset(level_desc, features=FEATURES, input="both")
    res = level_classification.classify_levels(ds, n_permutations=59, seed=1, progress=False)
    s = res.summary.set_index("model")
    assert list(s.index) == ["lda", "knn", "logreg", "majority", "chance"]
    for m in ("lda", "knn", "logreg"):
        assert s.loc[m, "balanced_accuracy"] > 0.6, s
        assert s.loc[m, "p_perm"] == pytest.approx(1 / 60)  # beats every permutation
        assert s.loc[m, "null_q95"] < s.loc[m, "balanced_accuracy"]
    assert s.loc["chance", "balanced_accuracy"] == 0.25
    assert s.loc["majority", "balanced_accuracy"] == 0.25     # always one level
    assert s.loc["majority", "accuracy"] == pytest.approx(9 / 23)  # always beginner
    assert (s.loc[["lda", "knn", "logreg"], "p_perm_holm"]
            >= s.loc[["lda", "knn", "logreg"], "p_perm"]).all()
    assert len(res.null) == 3 * 59 and set(res.null["model"]) == {"lda", "knn", "logreg"}
    assert len(res.chosen_c) == 23 and res.chosen_c["C"].isin([0.01, 0.1, 1.0, 10.0]).all()
    assert "C chosen per fold" in s.loc["logreg", "note"]
    conf = level_classification.confusion(res.predictions, model="lda")
    assert conf.to_numpy().sum() == 23 and list(conf.index) == list(schema.LEVELS)
    assert conf.sum(axis=1).tolist() == [2, 9, 4, 8]


def test_null_cohort_scores_near_chance(null_desc: pd.DataFrame) -> None:
    ds = level_dataset.caregiver_dataset(null_desc, features=FEATURES, input="delta")
    res = level_classification.classify_levels(ds, n_permutations=40, seed=0, cv_folds=5, progress=False)
    s = res.summary.set_index("model")
    for m in ("lda", "knn", "logreg"):
        assert 0.1 < s.loc[m, "null_mean"] < 0.36
        assert s.loc[m, "balanced_accuracy"] < 0.55
    assert s.loc["lda", "cv"] == "stratified group 5-fold"


def test_grouped_cv_prevents_twin_leakage() -> None:
    """Two near-identical rows per caregiver and random levels: row-wise CV would let
    1-NN find the twin; grouped CV must stay at chance."""
    rng = np.random.default_rng(3)
    n = 23
    base = rng.standard_normal((n, 4))
    X = pd.DataFrame(np.repeat(base, 2, axis=0) + 1e-3 * rng.standard_normal((2 * n, 4)),
                     columns=list("abcd"))
    cg = np.repeat([f"c{i:02d}" for i in range(n)], 2)
    lv = np.repeat(np.array(schema.LEVELS)[np.repeat(np.arange(4), [2, 9, 4, 8])], 2)
    X.index = cg
    ds = level_dataset.LevelDataset(X=X, y=pd.Series(lv, index=cg), groups=pd.Series(cg, index=cg),
                                    input="both")
    res = level_classification.classify_levels(ds, models=("knn",), knn_k=1, n_permutations=0, progress=False)
    assert res.summary.set_index("model").loc["knn", "balanced_accuracy"] < 0.5
    y = np.repeat(np.arange(4), [2, 9, 4, 8]).repeat(2)
    rows = level_classifiers.make_splits(y, np.arange(2 * n).astype(str))  # ungrouped: the leak
    pred, _ = level_classifiers.cross_val_predict_levels(X.to_numpy(), y, np.arange(2 * n).astype(str), rows,
                                                         model="knn", n_classes=4, knn_k=1)
    assert level_classifiers.scores(y, pred, n_classes=4)["balanced_accuracy"] > 0.95


def test_permutations_parallel_equal_serial(null_desc: pd.DataFrame) -> None:
    ds = level_dataset.caregiver_dataset(null_desc, features=FEATURES[:2], input="both")
    a = level_classification.classify_levels(ds, models=("lda", "knn"), n_permutations=6, seed=5,
                                             progress=False)
    b = level_classification.classify_levels(ds, models=("lda", "knn"), n_permutations=6, seed=5,
                                             n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(a.null, b.null)
    pd.testing.assert_frame_equal(a.summary, b.summary)


def test_too_little_data_is_skipped_not_raised(null_desc: pd.DataFrame) -> None:
    d = null_desc[null_desc.level.isin(["beginner"])]
    res = level_classification.classify_levels(level_dataset.caregiver_dataset(d, features=FEATURES),
                                               progress=False)
    assert res.summary["model"].tolist() == ["(skipped)"]
    assert "need >= 2 levels" in res.summary["note"].iloc[0]
    assert (res.problems["problem"] == "too little data").any()
    only_control = level_dataset.caregiver_dataset(null_desc[null_desc.phase == "control"],
                                                   features=FEATURES, input="both")
    assert only_control.X.empty and len(only_control.problems) == 23
    res = level_classification.classify_levels(only_control, progress=False)
    assert res.summary["model"].tolist() == ["(skipped)"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"models": ("svm",)}, "unknown model"),
    ({"knn_k": 0}, "knn_k"),
    ({"logreg_cs": (0.0, 1.0)}, "logreg_cs"),
    ({"n_permutations": -1}, "n_permutations"),
    ({"cv_folds": 1}, "cv_folds"),
])
def test_classify_bad_options(null_desc: pd.DataFrame, kwargs: dict, match: str) -> None:
    ds = level_dataset.caregiver_dataset(null_desc, features=FEATURES[:2])
    with pytest.raises(ValueError, match=match):
        level_classification.classify_levels(ds, n_permutations=kwargs.pop("n_permutations", 0),
                                             progress=False, **kwargs)
