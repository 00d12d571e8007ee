"""Tests of ser.models.classical and ser.train.classical_loso: cached functionals, grouped tuning, LOSO, ensembles, bundles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from threadpoolctl import threadpool_limits

from ser.models.bundle import load_bundle
from ser.models.classical import bundle as classical_bundle
from ser.models.classical import ensemble, estimator, features, writer
from ser.models.classical.ensemble import Member
from ser.models.classical.estimator import ClassicalModel
from ser.train import classical_loso

SR = 16000


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Tiny matrices: BLAS threads only add contention (and make timings erratic on 2 cores)."""
    with threadpool_limits(limits=1):
        yield


def _tone(freq: float, *, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def wavs(tmp_path):
    """Three 0.5 s tones at 16 kHz."""
    out = []
    for i, f in enumerate((220.0, 440.0, 880.0)):
        p = tmp_path / f"s{i}.wav"
        sf.write(p, _tone(f, seed=i), SR, subtype="PCM_16")
        out.append(str(p))
    return out


def _table(*, n_speakers: int = 6, n_classes: int = 3, per_class: int = 8, sep: float = 4.0,
           d: int = 10, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Synthetic features: class centroid * sep + a speaker offset + noise."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((n_classes, d)) * sep
    rows, labels, speakers = [], [], []
    for s in range(n_speakers):
        offset = rng.standard_normal(d) * 2.0
        for c in range(n_classes):
            rows.append(centroids[c] + offset + rng.standard_normal((per_class, d)))
            labels += [f"c{c}"] * per_class
            speakers += [f"spk{s}"] * per_class
    X = pd.DataFrame(np.vstack(rows), columns=[f"f{i}" for i in range(d)])
    X.index = [f"utt{i}" for i in range(len(X))]
    return X, np.array(labels), np.array(speakers)


# ------------------------------------------------------------------ feature extraction

@pytest.mark.parametrize("feature_set, dims", [("compare", 6373), ("egemaps", 88), ("mfcc_stats", 300)])
def test_extract_features_shapes_and_columns(wavs, feature_set, dims):
    X, err = features.extract_features(wavs, feature_set=feature_set, n_jobs=1, progress=False)
    assert X.shape == (3, dims)
    assert list(X.index) == wavs and X.index.name == "path"
    assert X.dtypes.unique().tolist() == [np.float32]
    assert np.isfinite(X.to_numpy()).all()
    assert err.empty and list(err.columns) == ["path", "reason"]
    assert not X.iloc[0].equals(X.iloc[2])  # different tones, different features
    if feature_set == "egemaps":
        assert "F0semitoneFrom27.5Hz_sma3nz_amean" in X.columns
    if feature_set == "mfcc_stats":
        assert X.columns[0] == "mfcc0_mean" and "ddmfcc19_p90" in X.columns


def test_file_and_window_features_agree(wavs):
    X, _ = features.extract_features(wavs[:1], feature_set="mfcc_stats", n_jobs=1, progress=False)
    y, _ = sf.read(wavs[0], dtype="float32")
    W = features.signal_features(y[None, :], feature_set="mfcc_stats", sample_rate=SR)
    np.testing.assert_allclose(X.to_numpy(), W, rtol=1e-5, atol=1e-5)


def test_cache_second_call_reads_cache_and_keys_on_rate_and_content(wavs, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    X1, _ = features.extract_features(wavs, feature_set="egemaps", cache_dir=cache, n_jobs=2, progress=False)
    assert X1.attrs["n_computed"] == 3

    calls = []

    def spy(path, *args, **kwargs):
        calls.append(path)
        raise RuntimeError("recomputed")

    monkeypatch.setattr(features, "_compute_file", spy)
    X2, err = features.extract_features(wavs, feature_set="egemaps", cache_dir=cache, n_jobs=1, progress=False)
    assert calls == [] and err.empty
    assert X2.attrs == {"n_computed": 0, "n_cached": 3}
    pd.testing.assert_frame_equal(X1, X2)

    # another sample rate or another file content is another cache key → recomputed
    _, err = features.extract_features(wavs, feature_set="egemaps", sample_rate=8000, cache_dir=cache,
                                        n_jobs=1, progress=False)
    assert len(calls) == 3 and err["reason"].str.contains("recomputed").all()
    sf.write(wavs[0], _tone(300.0), SR, subtype="PCM_16")
    X3, err = features.extract_features(wavs, feature_set="egemaps", cache_dir=cache, n_jobs=1, progress=False)
    assert calls[-1] == wavs[0] and list(err["path"]) == [wavs[0]] and len(X3) == 2


def test_errors_table_for_corrupt_and_missing_files(wavs, tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    missing = tmp_path / "missing.wav"
    paths = [wavs[0], str(bad), str(missing), wavs[1]]
    for cache in (None, tmp_path / "cache"):
        X, err = features.extract_features(paths, feature_set="mfcc_stats", cache_dir=cache, n_jobs=1,
                                            progress=False)
        assert list(X.index) == [wavs[0], wavs[1]]
        assert set(err["path"]) == {str(bad), str(missing)}
        assert err["reason"].str.len().gt(0).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"feature_set": "gemaps"}, "feature_set='gemaps' is unknown"),
    ({"sample_rate": 100}, "sample_rate=100"),
    ({"n_jobs": 0}, "n_jobs=0"),
])
def test_extract_features_rejects_bad_options(wavs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        features.extract_features(wavs, progress=False, **{"n_jobs": 1, **kwargs})


# ----------------------------------------------------------------------- model, CV

def test_grid_search_never_shares_a_speaker_between_inner_train_and_validation(monkeypatch):
    X, y, g = _table(n_speakers=5)
    used = []
    real = estimator._score_split

    def spy(estimator, seed, fixed, combos, Xa, ya, tr, va, classes):
        used.append((set(g[tr]), set(g[va])))
        return real(estimator, seed, fixed, combos, Xa, ya, tr, va, classes)

    monkeypatch.setattr(estimator, "_score_split", spy)
    model = ClassicalModel(estimator="svm_linear").fit_grid(X, y, g, param_grid={"C": [0.01, 1.0]}, inner_folds=3)
    assert len(used) == 3 == len(model.inner_splits_)
    for train_spk, val_spk in used:
        assert train_spk and val_spk and not train_spk & val_spk
    assert set().union(*(v for _, v in used)) == set(g)  # every speaker validated once
    assert model.best_params_["C"] in (0.01, 1.0)
    assert list(model.cv_results_.columns) == ["params", "mean_uar", "split0_uar", "split1_uar", "split2_uar"]
    assert model.oof_proba_.shape == (len(X), 3)


def test_grid_search_rejects_unknown_parameter_and_single_speaker():
    X, y, g = _table(n_speakers=3)
    with pytest.raises(ValueError, match=r"param_grid: \['gama'\] are not parameters of svm_rbf"):
        ClassicalModel(estimator="svm_rbf").fit_grid(X, y, g, param_grid={"gama": [1.0]})
    with pytest.raises(ValueError, match="at least 2 training speakers"):
        ClassicalModel().fit_grid(X, y, np.full(len(y), "a"))
    with pytest.raises(ValueError, match="estimator='svm' is unknown"):
        ClassicalModel(estimator="svm")


def test_kernel_svc_matches_sklearn_svc():
    from sklearn.svm import SVC

    X, y, _ = _table(sep=1.0)
    Z = X.to_numpy()
    for kernel, gamma in (("linear", None), ("rbf", 0.05)):
        ours = estimator.KernelSVC(kernel=kernel, C=0.5, gamma=gamma).fit(Z, y)
        ref = SVC(kernel=kernel, C=0.5, gamma=gamma or "auto", class_weight="balanced").fit(Z, y)
        np.testing.assert_allclose(ours.decision_function(Z), ref.decision_function(Z), rtol=1e-4, atol=1e-4)
        assert (ours.predict(Z) == ref.predict(Z)).all()


@pytest.mark.parametrize("estimator", ["svm_linear", "logreg"])
def test_loso_separable_is_perfect_and_shuffled_is_chance(estimator, monkeypatch):
    X, y, g = _table(sep=4.0)
    seen = []
    real_fit_grid = ClassicalModel.fit_grid

    def spy(self, Xa, ya, groups, **kw):
        seen.append(set(groups))
        return real_fit_grid(self, Xa, ya, groups, **kw)

    monkeypatch.setattr(ClassicalModel, "fit_grid", spy)
    grid = {"C": [0.01, 1.0]}
    folds, overall, pred = classical_loso.evaluate_loso(X, y, g, estimator=estimator, param_grid=grid,
                                                   inner_folds=3, progress=False)
    assert overall["uar"] > 0.97 and overall["n_folds"] == 6 and overall["n"] == len(X)
    assert list(folds.columns) == list(classical_loso.FOLD_COLUMNS)
    for test_spk, train_spk in zip(folds["test_speaker"], seen, strict=True):
        assert test_spk not in train_spk and len(train_spk) == 5  # never trained/tuned on the test speaker
    assert list(pred.index) == list(X.index)
    np.testing.assert_allclose(pred[["p_c0", "p_c1", "p_c2"]].sum(axis=1), 1.0, atol=1e-6)

    shuffled = np.random.default_rng(1).permutation(y)
    _, chance, _ = classical_loso.evaluate_loso(X, shuffled, g, estimator=estimator, param_grid=grid,
                                           inner_folds=3, progress=False)
    assert chance["uar"] < 0.55  # 3 classes: chance is 1/3


def _informative(n_speakers: int = 6, per_class: int = 8, d: int = 40, seed: int = 0):
    """Three classes that only columns 3 and 17 tell apart, plus one constant column."""
    rng = np.random.default_rng(seed)
    y = np.tile(np.repeat(["a", "b", "c"], per_class), n_speakers)
    g = np.repeat([f"spk{i}" for i in range(n_speakers)], 3 * per_class)
    X = rng.standard_normal((len(y), d))
    X[:, 3] += (y == "a") * 4.0
    X[:, 17] += (y == "b") * 4.0
    X[:, 5] = 1.0
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(d)]), y, g


@pytest.mark.parametrize("est", ["svm_linear", "svm_rbf", "logreg"])
def test_select_k_keeps_the_informative_features(est):
    X, y, g = _informative()
    model = ClassicalModel(estimator=est, speaker_norm=True, select_k=2).fit_grid(X, y, g, inner_folds=3)
    assert list(model.pipeline_.named_steps["select"].get_support(indices=True)) == [3, 17]
    assert model.inner_uar_ > 0.9 and model.describe()["select_k"] == 2
    assert model.predict_proba(X, g).shape == (len(X), 3)
    # k at least the number of features: no selection step at all
    assert "select" not in ClassicalModel(select_k=500).fit_grid(X, y, g, inner_folds=3).pipeline_.named_steps
    assert "select_k" not in ClassicalModel().fit(X, y, g).describe()


def test_select_k_is_fitted_inside_every_fold_never_on_the_test_speaker(monkeypatch):
    X, y, g = _informative()  # 6 speakers x 24 rows
    seen = []
    real = estimator.anova_f

    def spy(Xa, ya):
        seen.append(len(Xa))
        return real(Xa, ya)

    monkeypatch.setattr(estimator, "anova_f", spy)
    folds, overall, _ = classical_loso.evaluate_loso(X, y, g, estimator="svm_linear", speaker_norm=True,
                                                     select_k=2, param_grid={"C": [0.01, 1.0]}, inner_folds=3,
                                                     progress=False)
    assert overall["uar"] > 0.9
    # 4 selections per outer fold: 3 inner folds (3 or 4 training speakers), the refit on all 5
    assert len(seen) == 6 * 4 and set(seen) <= {72, 96, 120} and 120 in seen and len(X) not in seen
    assert all(json.loads(b) for b in folds["best_params"])


def test_select_k_rejects_bad_values_and_names_the_member():
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="select_k=.* must be a positive integer"):
            ClassicalModel(select_k=bad)
    assert Member("compare", "svm_linear", True, select_k=2000).name == "compare+svm_linear+spknorm+k2000"
    f, p = estimator.anova_f(np.c_[np.ones(6), np.arange(6.0)], np.array([0, 0, 0, 1, 1, 1]))
    assert f[0] == 0.0 and p[0] == 1.0 and f[1] > 0


def test_select_k_bundle_round_trip(tmp_path):
    windows, labels, speakers = _window_data()
    feats = features.signal_features(windows, feature_set="mfcc_stats", sample_rate=SR)
    model = ClassicalModel(estimator="svm_linear", params={"C": 0.01}, select_k=20).fit(
        feats, labels, speakers, calibration_folds=3)
    out = writer.save_classical_bundle(tmp_path / "b", model, labels=sorted(set(labels)), feature_set="mfcc_stats",
                                       sample_rate=SR, window_s=0.5)
    assert json.loads((out / "model.json").read_text())["arch_params"]["select_k"] == 20
    np.testing.assert_allclose(load_bundle(out).predict_proba(windows), model.predict_proba(feats), atol=1e-5)


def test_speaker_norm_uses_only_the_speakers_own_rows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 4)) * 3 + 5
    g = np.array(["a"] * 5 + ["b"] * 7)
    Z = features.speaker_standardize(X, g)
    for s in ("a", "b"):
        np.testing.assert_allclose(Z[g == s].mean(axis=0), 0, atol=1e-12)
        np.testing.assert_allclose(Z[g == s].std(axis=0), 1, atol=1e-12)
    X2 = X.copy()
    X2[g == "b"] += 100 * rng.standard_normal((7, 4))  # change only speaker b
    np.testing.assert_array_equal(features.speaker_standardize(X2, g)[g == "a"], Z[g == "a"])
    with pytest.raises(ValueError, match="groups"):
        features.speaker_standardize(X, g[:3])


def test_speaker_norm_model_needs_groups_and_removes_speaker_offsets():
    X, y, g = _table(sep=1.5, seed=3)
    X = X + np.repeat(np.arange(6) * 20.0, 24)[:, None]  # large per-speaker offsets
    grid = {"C": [0.1]}
    _, plain, _ = classical_loso.evaluate_loso(X, y, g, estimator="svm_linear", param_grid=grid,
                                          inner_folds=3, progress=False)
    _, normed, _ = classical_loso.evaluate_loso(X, y, g, estimator="svm_linear", speaker_norm=True,
                                           param_grid=grid, inner_folds=3, progress=False)
    assert normed["uar"] > plain["uar"]
    model = ClassicalModel(speaker_norm=True, params={"C": 0.1}).fit(X, y, g)
    with pytest.raises(ValueError, match="pass groups"):
        model.predict_proba(X)


def test_evaluate_loso_rejects_misaligned_inputs():
    X, y, g = _table()
    with pytest.raises(ValueError, match="one entry per feature row"):
        classical_loso.evaluate_loso(X, y[:-1], g, progress=False)
    y_na = y.astype(object)
    y_na[0] = None
    with pytest.raises(ValueError, match="labels contain NA"):
        classical_loso.evaluate_loso(X, y_na, g, progress=False)


# ----------------------------------------------------------------------------- ensemble

def test_ensemble_mean_equals_combined_member_predictions_and_weights_sum_to_one():
    X, y, g = _table(sep=1.0, n_speakers=4)
    tables = {"compare": X, "egemaps": X * 0.5 + 1}
    members = [Member("compare", "svm_linear", param_grid={"C": [0.01, 1.0]}),
               Member("egemaps", "logreg", param_grid={"C": [0.1]})]
    folds, overall, pred, member_preds = classical_loso.evaluate_loso_ensemble(
        tables, y, g, members=members, combine="mean", inner_folds=3, progress=False)
    singles = [classical_loso.evaluate_loso(tables[m.feature_set], y, g, estimator=m.estimator,
                                       param_grid=m.param_grid, inner_folds=3, progress=False)[2]
               for m in members]
    for m, single in zip(members, singles, strict=True):
        pd.testing.assert_frame_equal(member_preds[m.name], single)
    combined = classical_loso.combine_predictions(singles)
    np.testing.assert_allclose(combined.filter(like="p_").to_numpy(), pred.filter(like="p_").to_numpy())
    assert (combined["y_pred"] == pred["y_pred"]).all()
    _, o = classical_loso.summarize_predictions(combined)
    assert o["uar"] == pytest.approx(overall["uar"])
    assert set(overall["member_fit_s"]) == {"compare+svm_linear", "egemaps+logreg"}

    wfolds, _, _, _ = classical_loso.evaluate_loso_ensemble(tables, y, g, members=members, combine="weights",
                                                       inner_folds=3, weight_step=0.5, progress=False)
    for bp in wfolds["best_params"]:
        w = json.loads(bp)["weights"]
        assert len(w) == 2 and sum(w) == pytest.approx(1.0) and set(w) <= {0.0, 0.5, 1.0}


def test_choose_weights_prefers_the_informative_member():
    y = np.array(["a", "b"] * 20)
    good = np.where(y[:, None] == np.array(["a", "b"]), 0.9, 0.1)
    bad = 1.0 - good  # always wrong
    w, uar = ensemble.choose_weights([bad, good], y, ["a", "b"], step=0.25)
    assert uar == 1.0 and w[1] > w[0]
    with pytest.raises(ValueError, match="combine='stack' is unknown"):
        classical_loso.evaluate_loso_ensemble({}, y, y, members=[Member("compare", "rf")], combine="stack")


# ------------------------------------------------------------------------------- bundle

def _window_data(n_per_class: int = 6, seconds: float = 0.5):
    freqs = {"angry": 600.0, "sad": 150.0, "neutral": 300.0}
    windows, labels, speakers = [], [], []
    for k, (lab, f) in enumerate(freqs.items()):
        for i in range(n_per_class):
            windows.append(_tone(f * (1 + 0.03 * i), seconds=seconds, seed=10 * k + i))
            labels.append(lab)
            speakers.append(f"s{i % 3}")
    return np.stack(windows), np.array(labels), np.array(speakers)


def test_classical_bundle_has_the_bundle_interface(tmp_path):
    windows, labels, speakers = _window_data()
    feats = features.signal_features(windows, feature_set="mfcc_stats", sample_rate=SR)
    model = ClassicalModel(estimator="svm_linear", params={"C": 0.01}).fit(feats, labels, speakers,
                                                                           calibration_folds=3)
    out = writer.save_classical_bundle(tmp_path / "bundle", model, labels=sorted(set(labels)),
                                                 feature_set="mfcc_stats", sample_rate=SR, window_s=0.25)
    b = classical_bundle.load_classical_bundle(out)
    assert b.path == out and b.precision == "fp32" and b.heavy is False
    assert b.preferred_batch_size == 64 and b.pitch_norm_hz == 0.0
    assert (b.labels, b.sample_rate, b.window_s, b.window_samples) == (sorted(set(labels)), SR, 0.25, 4000)
    signal = windows[:3].reshape(-1)  # 3 x 0.5 s of audio
    starts = np.array([0, 1000, 4000, 8000, 12000])
    cut = np.stack([signal[s:s + b.window_samples] for s in starts])
    np.testing.assert_array_equal(b.predict_proba_starts(signal, starts, batch_size=2),
                                  b.predict_proba(cut, batch_size=7))
    with pytest.raises(ValueError, match="window starts must lie"):
        b.predict_proba_starts(signal, np.array([len(signal) - 10]))


def test_bundle_round_trip_predict_proba(tmp_path):
    windows, labels, speakers = _window_data()
    feats = features.signal_features(windows, feature_set="mfcc_stats", sample_rate=SR)
    model = ClassicalModel(estimator="svm_linear", params={"C": 0.01}).fit(feats, labels, speakers,
                                                                           calibration_folds=3)
    order = ["sad", "neutral", "angry"]  # not the sorted order: the bundle follows `labels`
    out = writer.save_classical_bundle(
        tmp_path / "bundle", model, labels=order, feature_set="mfcc_stats", sample_rate=SR,
        window_s=0.5, metrics={"uar": 0.9}, split={"train": ["s0", "s1", "s2"], "val": [], "test": []})
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"] == "classical:svm_linear" and meta["labels"] == order
    assert meta["features"]["feature_sets"] == ["mfcc_stats"] and meta["window_s"] == 0.5
    assert {"git_commit", "metrics", "split", "arch_params", "train_params"} <= set(meta)
    assert (out / "model.joblib").is_file()

    bundle = classical_bundle.load_classical_bundle(out)
    assert (bundle.labels, bundle.sample_rate, bundle.window_samples) == (order, SR, 8000)
    proba = bundle.predict_proba(windows)
    assert proba.dtype == np.float32 and proba.shape == (len(windows), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    direct = model.predict_proba(feats)  # columns in sorted order: angry, neutral, sad
    np.testing.assert_allclose(proba, direct[:, [2, 1, 0]], atol=1e-5)
    assert (np.array(order)[proba.argmax(axis=1)] == labels).mean() > 0.8
    # the generic loader (used by stage 04 and `ser predict`) hands classical bundles over
    generic = load_bundle(out)
    assert type(generic).__name__ == "ClassicalBundle"
    np.testing.assert_allclose(generic.predict_proba(windows), proba, atol=1e-6)
    assert bundle.predict_proba(windows[:0]).shape == (0, 3)

    with pytest.raises(ValueError, match=r"windows must be float32 \[n, 8000\].*0.5 s windows at 16000 Hz"):
        bundle.predict_proba(windows[:, :4000])


def test_speaker_norm_bundle_needs_a_reference(tmp_path):
    windows, labels, speakers = _window_data(n_per_class=4)
    feats = features.signal_features(windows, feature_set="mfcc_stats", sample_rate=SR)
    model = ClassicalModel(estimator="logreg", speaker_norm=True, params={"C": 0.1}).fit(feats, labels, speakers)
    out = writer.save_classical_bundle(tmp_path / "b", model, labels=sorted(set(labels)),
                                          feature_set="mfcc_stats", sample_rate=SR, window_s=0.5)
    bundle = classical_bundle.load_classical_bundle(out)
    with pytest.raises(ValueError, match="with_speaker_reference"):
        bundle.predict_proba(windows)
    ref = bundle.with_speaker_reference(windows[speakers == "s0"])
    proba = ref.predict_proba(windows[speakers == "s0"])
    expected = model.predict_proba(feats[speakers == "s0"], speakers[speakers == "s0"])
    np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_save_bundle_rejects_mismatched_labels_and_missing_files(tmp_path):
    X, y, g = _table()
    model = ClassicalModel(estimator="logreg", params={"C": 1.0}).fit(X, y, g)
    with pytest.raises(ValueError, match="differ from the model's classes"):
        writer.save_classical_bundle(tmp_path, model, labels=["c0", "c1"], feature_set="egemaps",
                                        sample_rate=SR, window_s=1.0)
    with pytest.raises(ValueError, match="window_s=0"):
        writer.save_classical_bundle(tmp_path, model, labels=["c0", "c1", "c2"], feature_set="egemaps",
                                        sample_rate=SR, window_s=0)
    with pytest.raises(FileNotFoundError, match="model.json is missing"):
        classical_bundle.load_classical_bundle(tmp_path / "nothing")


def test_ensemble_bundle_round_trip(tmp_path):
    windows, labels, speakers = _window_data(n_per_class=4)
    tables = {fs: pd.DataFrame(features.signal_features(windows, feature_set=fs, sample_rate=SR))
              for fs in ("mfcc_stats", "egemaps")}
    members = [Member("mfcc_stats", "logreg", param_grid={"C": [0.1]}),
               Member("egemaps", "svm_linear", param_grid={"C": [0.01]})]
    ens = ensemble.fit_ensemble(tables, labels, speakers, members=members, combine="weights",
                                 inner_folds=2, weight_step=0.5)
    assert ens.weights.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"must list the ensemble members' sets"):
        writer.save_classical_bundle(tmp_path / "e", ens, labels=sorted(set(labels)), feature_set="egemaps",
                                        sample_rate=SR, window_s=0.5)
    out = writer.save_classical_bundle(tmp_path / "e", ens, labels=sorted(set(labels)),
                                          feature_set=["mfcc_stats", "egemaps"], sample_rate=SR, window_s=0.5)
    bundle = classical_bundle.load_classical_bundle(out)
    assert bundle.meta["arch"].startswith("classical:ensemble(")
    proba = bundle.predict_proba(windows)
    np.testing.assert_allclose(proba, ens.predict_proba(tables), atol=1e-5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("workers", [0, 1])
def test_ser_predict_runs_a_classical_bundle(tmp_path, workers):
    """Issue 14: `ser predict` used to fail on every file with a classical bundle
    (predict_proba rejected batch_size; with workers the clean-up hid that error)."""
    from ser.run.cli import main

    windows, labels, speakers = _window_data()
    feats = features.signal_features(windows, feature_set="mfcc_stats", sample_rate=SR)
    model = ClassicalModel(estimator="svm_linear", params={"C": 0.01}).fit(feats, labels, speakers,
                                                                           calibration_folds=3)
    out = writer.save_classical_bundle(tmp_path / "bundle", model, labels=sorted(set(labels)),
                                       feature_set="mfcc_stats", sample_rate=SR, window_s=0.5)
    wav = tmp_path / "rec.wav"
    sf.write(wav, np.concatenate([windows[0], windows[8], windows[15]] * 2), SR)
    res = tmp_path / "res.csv"
    assert main(["predict", str(out), str(wav), "-o", str(res), "--workers", str(workers)]) == 0
    table = pd.read_csv(res)
    assert len(table) == 11 and list(table.filter(regex="^p_").columns) == [  # 3 s, hop 0.25 s
        "p_angry", "p_neutral", "p_sad"]
    np.testing.assert_allclose(table.filter(regex="^p_").sum(axis=1), 1.0, atol=1e-5)
    assert pd.read_csv(tmp_path / "res.failures.csv").empty
