"""Speed-perturbed training copies of the classical family: the copy itself, copies that are
normalised as speakers of their own and never scored, and stage 02's ``speed_perturb`` option."""

from __future__ import annotations

import json

import numpy as np
import pytest
from signals import tone_corpus

from ser.models.bundle import load_bundle
from ser.models.classical.estimator import ClassicalModel
from ser.signal import augment
from ser.train import cv, selection

SR = 16000
LABELS = ["angry", "happy", "neutral", "sad"]
F0 = {"angry": 1200.0, "happy": 600.0, "neutral": 300.0, "sad": 150.0}
SPLIT = {"s1": "train", "s2": "train", "s3": "train", "s4": "train", "s5": "val", "s6": "val",
         "s7": "test", "s8": "test"}


def _peak_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spec)])


def test_speed_copy_is_shorter_and_higher_by_the_factor():
    t = np.arange(SR) / SR
    y = (0.5 * np.sin(2 * np.pi * 200.0 * t)).astype(np.float32)
    fast, slow = augment.speed(y, SR, factor=1.25), augment.speed(y, SR, factor=0.8)
    assert abs(len(fast) - SR / 1.25) <= 2 and abs(len(slow) - SR / 0.8) <= 2
    assert _peak_hz(fast) == pytest.approx(250.0, abs=2.0)
    assert _peak_hz(slow) == pytest.approx(160.0, abs=2.0)
    assert fast.dtype == np.float32
    np.testing.assert_array_equal(augment.speed(y, SR, factor=1.0), y)
    with pytest.raises(ValueError, match=r"speed factor must be in \[0.5, 2\]"):
        augment.speed(y, SR, factor=3.0)


def _copies_data(seed: int = 0):
    """6 speakers x 4 classes x 5 originals that a linear model separates perfectly, and one copy
    of each original whose features are noise (same labels)."""
    rng = np.random.default_rng(seed)
    spk = np.repeat([f"s{i}" for i in range(6)], 20)
    y = np.tile(np.repeat(LABELS, 5), 6)
    onehot = (y[:, None] == np.array(LABELS)[None, :]).astype(float)
    orig = 3.0 * onehot + 0.1 * rng.normal(size=(len(y), 4))
    copy = rng.normal(size=(len(y), 4))
    X = np.vstack([orig, copy])
    return (X, np.concatenate([y, y]), np.concatenate([spk, spk]),
            np.concatenate([spk, np.char.add(spk, "@1.1")]), np.arange(len(X)) < len(y))


def test_copies_train_but_are_never_scored_or_calibrated_on():
    X, y, g, ng, scored = _copies_data()
    m = ClassicalModel(estimator="logreg", speaker_norm=True).fit_grid(
        X, y, g, param_grid={"C": [1.0]}, inner_folds=3, norm_groups=ng, scored=scored)
    assert all(scored[va].all() for _, va in m.inner_splits_)  # held-out parts: originals only
    assert all(not scored[tr].all() for tr, _ in m.inner_splits_)  # copies do train
    assert m.inner_uar_ == pytest.approx(1.0)  # noise copies scored would pull it towards chance
    assert m.oof_proba_.shape == (scored.sum(), 4)
    everything = ClassicalModel(estimator="logreg", speaker_norm=True).fit_grid(
        X, y, g, param_grid={"C": [1.0]}, inner_folds=3, norm_groups=ng)
    assert everything.inner_uar_ < 0.8 and everything.oof_proba_.shape == (len(X), 4)
    fixed = ClassicalModel(estimator="logreg", speaker_norm=True, params={"C": 1.0}).fit(
        X, y, g, calibration_folds=3, norm_groups=ng, scored=scored)
    assert fixed.oof_proba_.shape == (scored.sum(), 4)
    with pytest.raises(ValueError, match="needs groups"):
        ClassicalModel(estimator="logreg").fit(X, y, calibration_folds=3, scored=scored)
    with pytest.raises(ValueError, match="bool mask"):
        ClassicalModel(estimator="logreg").fit_grid(X, y, g, param_grid={"C": [1.0]}, inner_folds=3,
                                                    scored=scored.astype(int))


def test_copies_are_z_scored_as_speakers_of_their_own():
    """A copy shifted by a constant is, after normalisation per pseudo-speaker, its original."""
    X, y, g, ng, scored = _copies_data()
    X[~scored] = X[scored] + 50.0
    m = ClassicalModel(estimator="logreg", speaker_norm=True).fit_grid(
        X, y, g, param_grid={"C": [1.0]}, inner_folds=3, norm_groups=ng, scored=scored)
    z = m._prepare(X, g, fitting=False, norm_groups=ng)
    np.testing.assert_allclose(z[~scored], z[scored], atol=1e-9)
    pooled = m._prepare(X, g, fitting=False)  # with its speaker's originals the copy is far away
    assert np.abs(pooled[~scored] - pooled[scored]).min() > 1.0


def test_stage_02_speed_perturbed_candidate(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_RESULTS_DIR", str(tmp_path / "results"))
    utterances = tone_corpus(tmp_path, split=SPLIT, f0=F0, sr=SR, n_per=3, max_s=0.8, seed=0)
    (c,) = cv.parse_candidates([{"name": "t_sp", "family": "classical", "feature_set": "mfcc",
                                 "estimator": "logreg", "speaker_norm": True, "param_grid": {"C": [1.0]},
                                 "speed_perturb": [0.9, 1.1]}], default_name="unused")
    assert c.options["speed_perturb"] == [0.9, 1.1]
    cv.train_candidates(utterances, [c], models_dir=tmp_path / "models", labels=LABELS, window_s=0.5,
                        sample_rate=SR, cv_folds=3, seed=0, progress=False)
    out = tmp_path / "models" / "t_sp"
    meta = json.loads((out / "model.json").read_text())
    tp = meta["train_params"]
    assert tp["speed_perturb"] == [0.9, 1.1] and tp["n_speed_copies"] == 2 * tp["n_train"] == 144
    oof = selection.read_oof(out, LABELS)
    assert len(oof) == 72 and oof["path"].is_unique  # one out-of-fold row per original, no copy
    model = load_bundle(out).model
    assert all((va < tp["n_train"]).all() for _, va in model.inner_splits_)
    assert any((tr >= tp["n_train"]).any() for tr, _ in model.inner_splits_)
    assert (oof["label"].to_numpy() == np.array(LABELS)[oof[[f"p_{lab}" for lab in LABELS]]
                                                         .to_numpy().argmax(axis=1)]).mean() > 0.9


@pytest.mark.parametrize("bad", [[1.0], [3.0], "fast", [0.9, 0.9], [True], 1.1])
def test_speed_perturb_option_is_checked(bad):
    with pytest.raises(ValueError, match=r"\(a\): speed_perturb must list distinct speed factors"):
        cv.parse_candidates([{"name": "a", "family": "classical", "speed_perturb": bad}], default_name="x")


def test_copies_come_from_one_read_of_each_utterance(tmp_path):
    """The windows of several speeds: the originals as ``centre_windows`` gives them, the copies the
    centre windows of ``augment.speed`` of the same (pitch-normalised) utterance."""
    from ser.models.window import fit_window
    from ser.signal import pitchnorm

    rows = tone_corpus(tmp_path, split=SPLIT, f0=F0, sr=SR, n_per=1, max_s=0.8, seed=1)
    n = int(0.5 * SR)
    at, ok = cv.centre_windows_at(rows, sample_rate=SR, n_samples=n, pitch_norm_hz=200.0, speeds=(1.0, 1.1))
    plain, ok1 = cv.centre_windows(rows, sample_rate=SR, n_samples=n, pitch_norm_hz=200.0)
    np.testing.assert_array_equal(ok, ok1)
    np.testing.assert_array_equal(at[1.0], plain)
    load = pitchnorm.SpeakerLoader(rows, sample_rate=SR, target_hz=200.0)
    r = rows.iloc[0]
    np.testing.assert_array_equal(at[1.1][0], fit_window(augment.speed(load(r.path, r.speaker), SR, factor=1.1), n))
    assert at[1.1].shape == plain.shape and not np.array_equal(at[1.1], plain)
