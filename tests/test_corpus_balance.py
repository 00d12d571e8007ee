"""Corpus-balanced classical fits: with training rows from several corpora, every (corpus, class)
weighs the same (``strata`` of :class:`ClassicalModel`, ``balance_corpora`` of stage 02)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from ser.models.classical.estimator import ClassicalModel, balance_weights
from ser.models.classical.lda import ShrinkageLDA


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def test_balance_weights_give_every_corpus_and_class_cell_the_same_total():
    y = np.array(["a"] * 30 + ["b"] * 10 + ["a"] * 4 + ["b"] * 6)
    corpus = np.array(["big"] * 40 + ["small"] * 10)
    w = balance_weights(y, corpus)
    totals = pd.Series(w).groupby([corpus, y]).sum()
    np.testing.assert_allclose(totals.to_numpy(), np.full(4, len(y) / 4))
    assert w.mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal length"):
        balance_weights(y, corpus[:-1])


def test_lda_weights_count_like_copies_of_the_rows():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 12)), np.repeat(["a", "b"], 20)
    w = np.ones(40)
    w[[0, 5, 30]] = [2, 3, 2]
    copies = np.concatenate([np.arange(40), [0], [5, 5], [30]])
    weighted = ShrinkageLDA(0.4).fit(X, y, sample_weight=w)
    copied = ShrinkageLDA(0.4).fit(X[copies], y[copies])
    np.testing.assert_allclose(weighted.coef_, copied.coef_, atol=1e-10)
    np.testing.assert_allclose(weighted.intercept_, copied.intercept_, atol=1e-10)
    with pytest.raises(ValueError, match="sample_weight"):
        ShrinkageLDA(0.4).fit(X, y, sample_weight=-w)


def _two_corpora(seed: int = 0):
    """A large corpus whose classes a and b part at x = 0 and a small one whose a and b part at
    x = 1 (class c far off in both)."""
    rng = np.random.default_rng(seed)
    parts = [  # corpus, label, centre, spread, rows
        ("big", "a", -1.0, 0.2, 200), ("big", "b", 1.0, 0.2, 200),
        ("small", "a", 0.5, 0.1, 10), ("small", "b", 1.5, 0.1, 10),
        ("big", "c", 4.0, 0.2, 200), ("small", "c", 4.0, 0.2, 10)]
    X, y, corpus, spk = [], [], [], []
    for c, lab, centre, sd, n in parts:
        X.append(np.c_[centre + sd * rng.standard_normal(n), rng.standard_normal(n)])
        y += [lab] * n
        corpus += [c] * n
        spk += [f"{c}{i % (4 if c == 'big' else 2)}" for i in range(n)]
    return np.vstack(X), np.array(y), np.array(corpus), np.array(spk)


@pytest.mark.parametrize("estimator", ["svm_linear", "lda", "logreg"])
def test_balanced_fit_does_not_let_the_large_corpus_decide_alone(estimator):
    X, y, corpus, spk = _two_corpora()
    small = corpus == "small"
    params = {"C": 10.0} if estimator != "lda" else {"shrinkage": 0.1}
    plain = ClassicalModel(estimator=estimator, params=params).fit(X, y, spk, calibration_folds=2)
    balanced = ClassicalModel(estimator=estimator, params=params).fit(X, y, spk, calibration_folds=2,
                                                                       strata=corpus)
    acc_plain = (plain.predict(X[small]) == y[small]).mean()
    acc_balanced = (balanced.predict(X[small]) == y[small]).mean()
    assert acc_plain <= 0.7          # the 600 rows of the large corpus set the a|b boundary near 0
    assert acc_balanced >= 0.85      # weighted equally, the small corpus's boundary counts
    assert balanced.describe()["balanced_strata"] == {"big": 600, "small": 30}
    assert "balanced_strata" not in plain.describe()
    # one stratum: no weights, the plain fit
    one = ClassicalModel(estimator=estimator, params=params).fit(X, y, spk, calibration_folds=2,
                                                                  strata=np.full(len(y), "x"))
    np.testing.assert_array_equal(one.predict(X), plain.predict(X))


def test_leave_one_corpus_out_balances_the_training_corpora_unless_told_not_to(monkeypatch):
    from ser.train import cross_corpus_eval

    X, y, corpus, spk = _two_corpora()
    corpus = corpus.copy()
    corpus[spk == "big0"] = "third"          # three corpora: each held out once, two left to train on
    seen = []
    real = ClassicalModel.fit_grid

    def spy(self, *args, strata=None, **kw):
        seen.append(None if strata is None else sorted(set(strata)))
        return real(self, *args, strata=strata, **kw)

    monkeypatch.setattr(ClassicalModel, "fit_grid", spy)
    table = pd.DataFrame(X, columns=["x", "noise"])
    kw = dict(estimator="lda", param_grid={"shrinkage": [0.1]}, inner_folds=2, in_corpus_loso=False,
              progress=False)
    res = cross_corpus_eval.evaluate_loco({"f": table}, y, spk, corpus, **kw)
    assert seen == [["small", "third"], ["big", "third"], ["big", "small"]]
    assert list(res.table["held_out_corpus"]) == ["big", "small", "third"]
    seen.clear()
    cross_corpus_eval.evaluate_loco({"f": table}, y, spk, corpus, balance_corpora=False, **kw)
    assert seen == [None, None, None]


def test_calibration_weights_count_like_copies_of_the_rows():
    from ser.models.classical.platt import fit_platt

    rng = np.random.default_rng(1)
    y = np.repeat(np.array(["a", "b", "c"]), 20)
    decision = rng.standard_normal((60, 3)) + 2.0 * (y[:, None] == np.array(["a", "b", "c"]))
    w = np.ones(60)
    w[:20] = 3.0
    copies = np.concatenate([np.arange(60), np.arange(20), np.arange(20)])
    classes = np.array(["a", "b", "c"])
    np.testing.assert_allclose(fit_platt(decision, y, classes, w), fit_platt(decision[copies], y[copies], classes),
                               rtol=1e-3, atol=1e-3)
    assert not np.allclose(fit_platt(decision, y, classes, w), fit_platt(decision, y, classes), atol=1e-3)
    lda = ShrinkageLDA(0.5).fit(rng.standard_normal((60, 4)), y)
    scores = np.log(np.clip(np.exp(decision) / np.exp(decision).sum(1, keepdims=True), 1e-12, None))
    t_weighted = lda.calibrate(scores, y, w).temperature_
    assert t_weighted == pytest.approx(lda.calibrate(scores[copies], y[copies]).temperature_, rel=1e-3)


@pytest.mark.parametrize("estimator", ["svm_linear", "svm_rbf", "lda"])
def test_two_classes_fit_and_give_two_probability_columns(estimator):
    # libsvm's binary decision is one column; the model still gives [n, 2] probabilities
    X, y, corpus, spk = _two_corpora()
    two = y != "c"
    m = ClassicalModel(estimator=estimator).fit_grid(X[two], y[two], spk[two], inner_folds=2, strata=corpus[two])
    proba = m.predict_proba(X[two])
    assert proba.shape == (two.sum(), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert (m.predict(X[two]) == y[two]).mean() > 0.7
