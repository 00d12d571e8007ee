"""Shrinkage LDA (``estimator: lda``): the sample-space solve, calibration, the grid and the bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ser.models.bundle import load_bundle
from ser.models.classical import features, writer
from ser.models.classical.estimator import ESTIMATORS, ClassicalModel, default_param_grid
from ser.models.classical.lda import ShrinkageLDA
from ser.run import params
from ser.train import classical_loso
from ser.train.cv import parse_candidates

SR = 16000


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def _blobs(*, n_speakers: int = 6, per_class: int = 8, d: int = 30, sep: float = 1.5, seed: int = 0):
    """Three classes apart along a few directions, a speaker offset and noise; more features than
    some folds have rows."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((3, d)) * sep
    X, y, g = [], [], []
    for s in range(n_speakers):
        offset = rng.standard_normal(d)
        for c in range(3):
            X.append(centroids[c] + offset + rng.standard_normal((per_class, d)))
            y += [f"c{c}"] * per_class
            g += [f"spk{s}"] * per_class
    return np.vstack(X), np.array(y), np.array(g)


def _primal(X: np.ndarray, y: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """The textbook solve: form Sigma = (1 - a) S + a mu I and invert it (d x d)."""
    classes = np.unique(y)
    M = np.stack([X[y == c].mean(axis=0) for c in classes])
    R = X - M[np.searchsorted(classes, y)]
    n, d = R.shape
    S = R.T @ R / n
    sigma = (1 - a) * S + a * np.trace(S) / d * np.eye(d)
    coef = np.linalg.solve(sigma, M.T).T
    return coef, -0.5 * np.einsum("kd,kd->k", M, coef)


@pytest.mark.parametrize("d", [5, 60])  # fewer and more features than the 48 rows
def test_sample_space_solve_equals_the_textbook_covariance_inverse(d):
    X, y, _ = _blobs(n_speakers=2, d=d)
    for a in (0.1, 0.5, 0.9):
        lda = ShrinkageLDA(shrinkage=a).fit(X, y)
        coef, intercept = _primal(X, y, a)
        np.testing.assert_allclose(lda.coef_, coef, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(lda.intercept_, intercept, rtol=1e-8, atol=1e-10)
        # log-posteriors with uniform priors: softmax of the discriminants
        z = X @ coef.T + intercept
        post = np.exp(z - z.max(axis=1, keepdims=True))
        np.testing.assert_allclose(np.exp(lda.decision_function(X)), post / post.sum(axis=1, keepdims=True),
                                   atol=1e-10)


def test_lda_separates_classes_and_calibrates_probabilities():
    X, y, _ = _blobs()
    lda = ShrinkageLDA(shrinkage=0.5).fit(X, y)
    assert (lda.predict(X) == y).mean() > 0.95
    raw = lda.predict_proba(X)
    np.testing.assert_allclose(raw.sum(axis=1), 1.0)
    Xo, yo, _ = _blobs(seed=1)  # held-out rows: the training posteriors are near 0/1
    lda.calibrate(lda.decision_function(Xo), yo)
    cal = lda.predict_proba(X)
    np.testing.assert_allclose(cal.sum(axis=1), 1.0)
    assert lda.temperature_ > 1.0 and cal.max(axis=1).mean() < raw.max(axis=1).mean()
    assert (cal.argmax(axis=1) == raw.argmax(axis=1)).all()  # a temperature never changes a prediction
    # the temperature minimises the held-out log-loss
    d, t = lda.decision_function(Xo), np.searchsorted(lda.classes_, yo)

    def nll(temp: float) -> float:
        z = d / temp
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))[np.arange(len(t)), t].mean())

    assert nll(lda.temperature_) <= min(nll(lda.temperature_ * f) for f in (0.5, 0.9, 1.1, 2.0)) + 1e-9
    with pytest.raises(ValueError, match="labels outside"):
        lda.calibrate(d, np.full(len(d), "zz"))


def test_lda_rejects_bad_shrinkage_and_a_single_class():
    X, y, _ = _blobs(n_speakers=1)
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match="shrinkage=.* must lie in"):
            ShrinkageLDA(shrinkage=bad).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ShrinkageLDA().fit(X, np.full(len(X), "c0"))
    with pytest.raises(ValueError, match="X must be"):
        ShrinkageLDA().fit(X, y[:-1])


def test_classical_model_tunes_shrinkage_by_grouped_cv_and_calibrates_on_held_out_scores():
    assert "lda" in ESTIMATORS and default_param_grid("lda", n_features=10) == {
        "shrinkage": [0.1, 0.3, 0.5, 0.7, 0.9]}
    X, y, g = _blobs()
    model = ClassicalModel(estimator="lda", speaker_norm=True).fit_grid(X, y, g, inner_folds=3)
    assert model.best_params_["shrinkage"] in (0.1, 0.3, 0.5, 0.7, 0.9) and model.inner_uar_ > 0.9
    assert list(model.cv_results_["params"]) == [json.dumps({"shrinkage": a}) for a in (0.1, 0.3, 0.5, 0.7, 0.9)]
    clf = model.pipeline_.named_steps["clf"]
    assert isinstance(clf, ShrinkageLDA) and clf.temperature_ != 1.0  # tempered on the inner folds' scores
    assert (model.predict(X, g) == clf.predict(model.pipeline_[:-1].transform(
        features.speaker_standardize(X, g)))).all()  # calibration keeps LDA's own decision
    np.testing.assert_allclose(model.oof_proba_.sum(axis=1), 1.0)
    proba = model.predict_proba(X, g)
    assert proba.shape == (len(X), 3) and (model.classes_[proba.argmax(axis=1)] == y).mean() > 0.95


def test_lda_loso_is_perfect_when_separable_and_chance_when_shuffled():
    X, y, g = _blobs(sep=3.0)
    _, overall, _ = classical_loso.evaluate_loso(X, y, g, estimator="lda", speaker_norm=True,
                                                 param_grid={"shrinkage": [0.3, 0.7]}, inner_folds=3,
                                                 progress=False)
    assert overall["uar"] > 0.97
    shuffled = np.random.default_rng(1).permutation(y)
    _, chance, _ = classical_loso.evaluate_loso(X, shuffled, g, estimator="lda", speaker_norm=True,
                                                param_grid={"shrinkage": [0.3, 0.7]}, inner_folds=3,
                                                progress=False)
    assert chance["uar"] < 0.55


def test_lda_candidate_and_bundle_round_trip(tmp_path):
    cands = parse_candidates([{"name": "lda", "family": "classical", "feature_set": "mfcc",
                               "estimator": "lda", "speaker_norm": True}], default_name="cnn")
    assert cands[0].options["estimator"] == "lda"
    rng = np.random.default_rng(0)
    t = np.arange(int(0.5 * SR)) / SR
    freqs = {"angry": 600.0, "neutral": 300.0, "sad": 150.0}
    windows = np.stack([(0.3 * np.sin(2 * np.pi * f * (1 + 0.03 * i) * t) + 0.01 * rng.standard_normal(t.size))
                        .astype(np.float32) for f in freqs.values() for i in range(6)])
    labels = np.repeat(list(freqs), 6)
    speakers = np.array([f"s{i % 3}" for _ in freqs for i in range(6)])
    feats = features.signal_features(windows, feature_set="mfcc_stats", sample_rate=SR)
    model = ClassicalModel(estimator="lda", params={"shrinkage": 0.5}).fit(feats, labels, speakers,
                                                                            calibration_folds=3)
    out = writer.save_classical_bundle(tmp_path / "b", model, labels=sorted(set(labels)),
                                       feature_set="mfcc_stats", sample_rate=SR, window_s=0.5)
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"] == "classical:lda"
    np.testing.assert_allclose(load_bundle(out).predict_proba(windows), model.predict_proba(feats), atol=1e-5)


def test_emodb_profile_names_the_fusion_lda_candidate():
    p02 = params.load_stage_params("02_train", profile="emodb")
    cands = {c.name: c for c in parse_candidates(p02["candidates"], default_name=p02["model_name"])}
    c = cands["emodb_fusion_k2000_lda"]
    assert c.family == "classical"
    assert c.options == {"feature_set": ["compare", "egemaps", "mfcc_stats"], "estimator": "lda",
                         "speaker_norm": True, "select_k": 2000}
