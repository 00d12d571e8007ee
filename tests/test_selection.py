"""Model selection: candidates cross-validated over the training speakers (speaker-disjoint
folds, test speakers never seen, one out-of-fold row per training utterance), ensemble
bundles (the average of their members), selection by out-of-fold UAR, calibration fitted on
out-of-fold predictions only, and the deployed model's name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from signals import tone_corpus

from ser.models.bundle import bundle_fingerprint, load_bundle, update_bundle_metrics
from ser.models.classical import features
from ser.models.deployed import read_deployed, resolve_model_name, write_deployed
from ser.models.ensemble_bundle import EnsembleBundle, save_ensemble_bundle
from ser.models.integrity import write_sealed_meta
from ser.models.meta import tempered_proba
from ser.run import params
from ser.train import calibration, cv, evaluation, selection

SR = 16000
LABELS = ["angry", "happy", "neutral", "sad"]
F0 = {"angry": 1200.0, "happy": 600.0, "neutral": 300.0, "sad": 150.0}  # class = pitch octave
SPLIT = {"s1": "train", "s2": "train", "s3": "train", "s4": "train", "s5": "val", "s6": "val",
         "s7": "test", "s8": "test"}
TINY_CNN = dict(arch="small_cnn", arch_params={"channels": [8, 16], "dropout": 0.0},
                features={"n_mels": 24, "n_fft": 256, "hop_length": 80}, batch_size=16, lr=3e-3,
                weight_decay=0.0, patience=5, device="cpu", epochs=2)
CANDIDATES = [
    {"name": "t_lr", "family": "classical", "feature_set": "mfcc", "estimator": "logreg",
     "speaker_norm": True, "param_grid": {"C": [1.0]}},
    {"name": "t_cnn", "family": "cnn"},
    {"name": "t_ens", "family": "ensemble", "members": ["t_lr", "t_cnn"]},
]


def _corpus(root, *, n_per: int = 3, seed: int = 0) -> pd.DataFrame:
    return tone_corpus(root, split=SPLIT, f0=F0, sr=SR, n_per=n_per, max_s=0.8, seed=seed)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SER_RESULTS_DIR", str(root / "results"))
        utterances = _corpus(root)
        models = root / "models"
        chosen = cv.parse_candidates(CANDIDATES, default_name="unused")
        table = cv.train_candidates(utterances, chosen, models_dir=models, labels=LABELS, window_s=0.5,
                                    sample_rate=SR, cv_folds=3, seed=0, cnn_defaults=TINY_CNN, progress=False)
        yield {"utterances": utterances, "models": models, "table": table}


def _oof(run, name):
    return selection.read_oof(run["models"] / name, LABELS)


def _speaker_windows(run, speaker):
    rows = run["utterances"][run["utterances"]["speaker"] == speaker]
    return cv.centre_windows(rows, sample_rate=SR, n_samples=int(0.5 * SR))[0]


@pytest.mark.parametrize("name", ["t_lr", "t_cnn", "t_ens"])
def test_folds_are_speaker_disjoint_and_test_speakers_never_appear(run, name):
    folds = json.loads((run["models"] / cv.CANDIDATES_FILE).read_text())["folds"]
    assert set(folds) == {"s1", "s2", "s3", "s4", "s5", "s6"}  # training speakers only
    oof = _oof(run, name)
    assert not set(oof["speaker"]) & {"s7", "s8"}
    assert oof.groupby("speaker")["fold"].nunique().eq(1).all()  # a speaker lies in one fold
    assert (oof["fold"] == oof["speaker"].map(folds)).all()
    assert sorted(oof["fold"].unique()) == [0, 1, 2]


@pytest.mark.parametrize("name", ["t_lr", "t_cnn", "t_ens"])
def test_oof_rows_cover_every_training_utterance_exactly_once(run, name):
    oof = _oof(run, name)
    training = run["utterances"][run["utterances"]["split"].isin(["train", "val"])]
    assert sorted(oof["path"]) == sorted(training["path"])
    proba = oof[[f"p_{lab}" for lab in LABELS]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_speaker_folds_depend_only_on_the_speakers_and_seed():
    a = cv.speaker_folds(["b", "a", "c", "d", "a"], n_folds=2, seed=3)
    assert a == cv.speaker_folds(["d", "c", "b", "a"], n_folds=2, seed=3)
    assert sorted(np.bincount(list(a.values()))) == [2, 2]
    with pytest.raises(ValueError, match="cv_folds=5"):
        cv.speaker_folds(["a", "b", "c"], n_folds=5, seed=0)


def test_ensemble_oof_is_the_average_of_its_members(run):
    cols = [f"p_{lab}" for lab in LABELS]
    ens, lr, cnn = (_oof(run, n).set_index("path") for n in ("t_ens", "t_lr", "t_cnn"))
    np.testing.assert_allclose(ens[cols].to_numpy(), (lr.loc[ens.index, cols].to_numpy()
                                                      + cnn.loc[ens.index, cols].to_numpy()) / 2, atol=1e-6)


def test_ensemble_bundle_is_the_average_of_two_bundles(run):
    ens = load_bundle(run["models"] / "t_ens")
    assert isinstance(ens, EnsembleBundle) and ens.speaker_norm and ens.labels == LABELS
    w = _speaker_windows(run, "s7")
    lr = evaluation.speaker_reference(load_bundle(run["models"] / "t_lr"), w)
    cnn = load_bundle(run["models"] / "t_cnn")
    got = evaluation.speaker_reference(ens, w).predict_proba(w)
    np.testing.assert_allclose(got, (lr.predict_proba(w) + cnn.predict_proba(w)) / 2, atol=1e-5)
    assert len(bundle_fingerprint(run["models"] / "t_ens")) == 64


def test_ensemble_averages_members_before_their_own_calibration(run, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(run["models"], models)
    calibration.store_calibration(models / "t_cnn", temperature=3.0, ece_before=0.1, ece_after=0.05)
    w = _speaker_windows(run, "s8")
    cnn = load_bundle(models / "t_cnn")
    np.testing.assert_allclose(cnn.predict_proba(w), tempered_proba(cnn.uncalibrated().predict_proba(w), 3.0),
                               atol=1e-5)
    ens = evaluation.speaker_reference(load_bundle(models / "t_ens"), w)
    lr = evaluation.speaker_reference(load_bundle(models / "t_lr"), w)
    np.testing.assert_allclose(ens.predict_proba(w),
                               (lr.predict_proba(w) + cnn.uncalibrated().predict_proba(w)) / 2, atol=1e-5)


def test_stage_03_can_calibrate_and_score_a_deployed_ensemble(run, tmp_path):
    """An ensemble won stage 03's selection on the multi-corpus data: storing its temperature
    and metrics must work although it has no weights of its own (its members are sealed)."""
    models = tmp_path / "models"
    shutil.copytree(run["models"], models)
    w = _speaker_windows(run, "s8")
    raw = evaluation.speaker_reference(load_bundle(models / "t_ens"), w).predict_proba(w)
    calibration.store_calibration(models / "t_ens", temperature=2.0, ece_before=0.1, ece_after=0.05, split="oof")
    update_bundle_metrics(models / "t_ens", split="test", metrics={"uar": 0.5})
    meta = json.loads((models / "t_ens" / "model.json").read_text())
    assert meta["calibration"]["temperature"] == 2.0 and meta["metrics"]["test"]["uar"] == 0.5
    ens = evaluation.speaker_reference(load_bundle(models / "t_ens"), w)
    np.testing.assert_allclose(ens.predict_proba(w), tempered_proba(raw, 2.0), atol=1e-5)


def test_ensemble_members_must_share_the_window(run, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(run["models"], models)
    meta = json.loads((models / "t_lr" / "model.json").read_text())
    write_sealed_meta(models / "t_lr", {**meta, "window_s": 1.0})  # a member retrained on 1 s windows
    with pytest.raises(ValueError, match=r"t_ens/model\.json.*window_s"):
        load_bundle(models / "t_ens")
    with pytest.raises(ValueError, match=r"model\.json.*share window_s"):
        save_ensemble_bundle(models / "other", members=["t_lr", "t_cnn"], load_member=load_bundle)


def test_classical_bundle_applies_its_stored_temperature(run, tmp_path):
    shutil.copytree(run["models"] / "t_lr", tmp_path / "t_lr")
    w = _speaker_windows(run, "s7")
    raw = evaluation.speaker_reference(load_bundle(tmp_path / "t_lr"), w).predict_proba(w)
    calibration.store_calibration(tmp_path / "t_lr", temperature=2.0, ece_before=0.1, ece_after=0.05)
    hot = evaluation.speaker_reference(load_bundle(tmp_path / "t_lr"), w).predict_proba(w)
    np.testing.assert_allclose(hot, tempered_proba(raw, 2.0), atol=1e-5)
    assert (hot.max(axis=1) <= raw.max(axis=1) + 1e-6).all()  # T > 1 softens


def test_speaker_normalised_bundle_is_evaluated_per_speaker(run):
    metrics, pred = evaluation.evaluate_bundle(load_bundle(run["models"] / "t_ens"), run["utterances"],
                                               split="test", progress=False)
    assert metrics["n_utterances"] == 24 and metrics["n_speakers"] == 2 and metrics["uar"] > 0.5
    assert list(pred["path"]) == list(run["utterances"].loc[run["utterances"]["split"] == "test", "path"])


def _fake_candidate(models, name, *, correct: float, seed: int):
    rng = np.random.default_rng(seed)
    (models / name).mkdir(parents=True)
    rows = []
    for i in range(120):
        y = i % 4
        pred = y if rng.random() < correct else (y + 1) % 4
        p = np.full(4, 0.1)
        p[pred] = 0.7
        rows.append({"path": f"u{i}.wav", "speaker": f"s{i % 6}", "fold": i % 6 % 3, "label": LABELS[y],
                     **{f"p_{lab}": p[j] for j, lab in enumerate(LABELS)}})
    pd.DataFrame(rows).to_csv(models / name / cv.OOF_FILE, index=False)


def test_selection_picks_the_candidate_with_the_higher_uar(tmp_path):
    _fake_candidate(tmp_path, "weak", correct=0.5, seed=0)
    _fake_candidate(tmp_path, "strong", correct=0.9, seed=1)
    (tmp_path / cv.CANDIDATES_FILE).write_text(json.dumps({
        "candidates": [{"name": "weak", "family": "cnn"}, {"name": "strong", "family": "classical"}],
        "cv_folds": 3, "seconds": {"weak": 1.0, "strong": 2.0}}))
    table = selection.selection_table(tmp_path, LABELS)
    assert list(table.columns) == list(selection.SELECTION_COLUMNS)
    assert list(table["model"]) == ["strong", "weak"] and table["uar"].iloc[0] > table["uar"].iloc[1]
    assert selection.best_model(table) == "strong"
    assert table.set_index("model").loc["strong", "seconds"] == 2.0
    assert (table["uar_sd"] >= 0).all() and table["ece"].between(0, 1).all()


def test_temperature_is_fitted_on_oof_predictions_only(run, tmp_path):
    shutil.copytree(run["models"] / "t_cnn", tmp_path / "t_cnn")
    folder = tmp_path / "t_cnn"
    t0, info = selection.oof_temperature(folder, LABELS)
    proba, y = selection.oof_arrays(_oof(run, "t_cnn"), LABELS)
    assert t0 == pytest.approx(calibration.fit_temperature(np.log(np.clip(proba, 1e-12, None)), y))
    assert info["fit_speakers"] == ["s1", "s2", "s3", "s4", "s5", "s6"] and info["n_fit"] == 72
    # the final network's outputs on its validation (early-stopping) speakers change: T does not
    state = torch.load(folder / "model.pt", weights_only=True)
    last = [k for k in state if k.endswith("weight")][-1]
    state[last] = state[last] * 5
    torch.save(state, folder / "model.pt")
    assert selection.oof_temperature(folder, LABELS)[0] == t0
    # the out-of-fold predictions change: T does
    oof = pd.read_csv(folder / cv.OOF_FILE)
    cols = [f"p_{lab}" for lab in LABELS]
    oof[cols] = tempered_proba(oof[cols].to_numpy(), 0.3)
    oof.to_csv(folder / cv.OOF_FILE, index=False)
    assert selection.oof_temperature(folder, LABELS)[0] != pytest.approx(t0, rel=0.05)


def test_per_speaker_calibration_table():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    z = rng.normal(size=(200, 4)) * 4
    z[np.arange(200), y] += 2  # right 60-70 % of the time, with confidence near 1: over-confident
    proba = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    spk = np.where(np.arange(200) < 100, "a", "b")
    t = calibration.fit_temperature(np.log(proba), y)
    table = selection.per_speaker_calibration(proba, y, spk, temperature=t)
    assert list(table["speaker"]) == ["a", "b", "all"] and list(table["n"]) == [100, 100, 200]
    assert t > 1 and (table["ece_after"] < table["ece_before"]).all()
    assert (table["ece_if_calibrated"] <= table["ece_if_calibrated_p95"]).all()
    assert table.set_index("speaker").loc["a", "ece_if_calibrated"] > table.set_index("speaker").loc["all", "ece_if_calibrated"]


def test_ece_sampling_reference_tells_noise_from_miscalibration():
    """Labels drawn from the probabilities themselves (calibrated by construction) give an
    ECE inside the chance band; a model that is right half as often as it claims does not."""
    rng = np.random.default_rng(1)
    p_top = rng.uniform(0.4, 0.95, 40)
    proba = np.column_stack([p_top, *(np.tile((1 - p_top) / 3, (3, 1)))])
    y_true = (rng.random(40) > p_top).astype(int) * rng.integers(1, 4, 40)  # class 0 with prob p_top
    calibrated = calibration.expected_calibration_error(proba, y_true)
    med, p95, p_ok = selection.ece_sampling_reference(proba, calibrated, n_sim=500)
    assert 0.05 < med < p95 < 0.3  # 40 predictions: a perfect model's ECE is far from 0
    assert p_ok > 0.05
    y_bad = np.where(rng.random(40) < p_top / 2, 0, 1)  # right about half as often as claimed
    bad = calibration.expected_calibration_error(proba, y_bad)
    assert selection.ece_sampling_reference(proba, bad, n_sim=500)[2] < 0.01
    assert selection.ece_sampling_reference(proba, bad, n_sim=500, seed=3)[:2] == pytest.approx((med, p95), abs=0.02)


def test_every_classical_feature_set_can_be_a_candidate():
    from ser.models.classical.features import FEATURE_SETS
    for fs in (*FEATURE_SETS, "mfcc"):  # the block-pooled sets of windowed inference included
        (c,) = cv.parse_candidates([{"name": "a", "family": "classical", "feature_set": fs}], default_name="x")
        assert c.family == "classical"
    with pytest.raises(ValueError, match="feature_set 'gemaps' is unknown"):
        cv.parse_candidates([{"name": "a", "family": "classical", "feature_set": "gemaps"}], default_name="x")


def test_parse_candidates_rejects_bad_entries():
    assert cv.parse_candidates([], default_name="demo_cnn") == [cv.Candidate("demo_cnn", "cnn", {})]
    with pytest.raises(ValueError, match="family 'tree'"):
        cv.parse_candidates([{"name": "a", "family": "tree"}], default_name="x")
    with pytest.raises(ValueError, match="used twice"):
        cv.parse_candidates([{"name": "a", "family": "cnn"}] * 2, default_name="x")
    with pytest.raises(ValueError, match="members"):
        cv.parse_candidates([{"name": "a", "family": "cnn"}, {"name": "e", "family": "ensemble",
                                                              "members": ["a", "later"]}], default_name="x")
    with pytest.raises(ValueError, match="feature_set 'wav2vec'"):
        cv.parse_candidates([{"name": "a", "family": "classical", "feature_set": "wav2vec"}],
                            default_name="x")
    with pytest.raises(ValueError, match=r"\['epochs'\] are not options of family classical"):
        cv.parse_candidates([{"name": "a", "family": "classical", "epochs": 3}], default_name="x")
    with pytest.raises(ValueError, match="other than 'deployed'"):
        cv.parse_candidates([{"name": "deployed", "family": "cnn"}], default_name="x")


def test_deployed_resolves_to_the_bundle_stage_03_chose(run, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"deployed\.json.*03_evaluate"):
        resolve_model_name("deployed", models_dir=run["models"] / "nothing")
    shutil.copytree(run["models"] / "t_lr", tmp_path / "t_lr")
    write_deployed(tmp_path, model_name="t_lr", info={"uar": 0.9})
    assert resolve_model_name("deployed", models_dir=tmp_path) == "t_lr"
    assert resolve_model_name("other", models_dir=tmp_path) == "other"
    assert read_deployed(tmp_path)["uar"] == 0.9
    with pytest.raises(FileNotFoundError, match="missing"):
        write_deployed(tmp_path, model_name="absent")
    assert params.load_stage_params("04_inference")["model_name"] == "deployed"
    assert params.load_stage_params("04_inference", profile="emodb")["model_name"] == "deployed"


def test_ser_predict_runs_the_deployed_ensemble(run, tmp_path, monkeypatch):
    from ser.run import cli

    models = tmp_path / "results" / "models"
    shutil.copytree(run["models"], models)
    write_deployed(models, model_name="t_ens")
    monkeypatch.setenv("SER_RESULTS_DIR", str(tmp_path / "results"))
    rows = run["utterances"][run["utterances"]["speaker"] == "s7"]
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for i in range(2):  # two 'recordings' of a few seconds, utterances one after another
        y = np.concatenate([sf.read(p)[0] for p in rows["path"].iloc[i::2]])
        sf.write(audio_dir / f"r{i}.wav", y.astype(np.float32), SR)
    out = tmp_path / "w.csv"
    assert cli.main(["predict", "deployed", str(audio_dir), "-o", str(out), "--workers", "0", "--quiet",
                     "--norm-unit", "recording"]) == 0
    win = pd.read_csv(out)
    p = win[[f"p_{lab}" for lab in LABELS]].to_numpy()
    assert len(win) > 4 and np.allclose(p.sum(axis=1), 1, atol=1e-4)
    assert json.loads((tmp_path / "w.model.json").read_text())["model"] == "t_ens"


@pytest.mark.parametrize("name", ["t_lr", "t_cnn", "t_ens"])
def test_final_bundles_record_the_split_and_their_cross_validation(run, name):
    meta = json.loads((run["models"] / name / "model.json").read_text())
    assert meta["split"]["test"] == ["s7", "s8"] and "s7" not in meta["split"]["train"]
    assert meta["selection"]["cv_folds"] == 3 and meta["selection"]["n_oof"] == 72
    assert meta["selection"]["seconds"] > 0


def test_fused_classical_candidate_with_feature_selection(tmp_path, monkeypatch):
    """Early fusion (a list of feature sets side by side) and select_k, through stage 02 and a bundle."""
    monkeypatch.setenv("SER_RESULTS_DIR", str(tmp_path / "results"))
    utterances = _corpus(tmp_path)
    (c,) = cv.parse_candidates([{"name": "t_fused", "family": "classical", "feature_set": ["mfcc", "egemaps"],
                                 "estimator": "logreg", "speaker_norm": True, "select_k": 40,
                                 "param_grid": {"C": [1.0]}}], default_name="unused")
    assert c.options["feature_set"] == ["mfcc_stats", "egemaps"] and c.options["select_k"] == 40
    cv.train_candidates(utterances, [c], models_dir=tmp_path / "models", labels=LABELS, window_s=0.5,
                        sample_rate=SR, cv_folds=3, seed=0, cnn_defaults=TINY_CNN, progress=False)
    out = tmp_path / "models" / "t_fused"
    meta = json.loads((out / "model.json").read_text())
    assert meta["features"]["feature_sets"] == ["mfcc_stats", "egemaps"]
    assert meta["arch"] == "classical:logreg" and meta["arch_params"]["select_k"] == 40
    oof = selection.read_oof(out, LABELS)
    assert len(oof) == 72 and not set(oof["speaker"]) & {"s7", "s8"}
    bundle = load_bundle(out)
    pipe = bundle.model.pipeline_
    assert pipe.named_steps["impute"].n_features_in_ == 300 + 88  # MFCC statistics, then eGeMAPS
    assert pipe.named_steps["select"].get_support().sum() == 40
    w = _speaker_windows(run={"utterances": utterances}, speaker="s7")
    feats = {fs: features.signal_features(w, feature_set=fs, sample_rate=SR) for fs in ("mfcc_stats", "egemaps")}
    ref = {fs: (f.mean(axis=0), np.maximum(f.std(axis=0), 1e-8)) for fs, f in feats.items()}
    z = np.hstack([(feats[fs] - ref[fs][0]) / ref[fs][1] for fs in ("mfcc_stats", "egemaps")])
    np.testing.assert_allclose(bundle.with_reference(ref).predict_proba(w), pipe.predict_proba(z), atol=1e-4)
    with pytest.raises(ValueError, match="must name one or more different feature sets"):
        cv.parse_candidates([{"name": "a", "family": "classical", "feature_set": ["mfcc", "mfcc_stats"]}],
                            default_name="x")
    with pytest.raises(ValueError, match=r"\(a\): select_k=0 must be a positive integer"):
        cv.parse_candidates([{"name": "a", "family": "classical", "select_k": 0}], default_name="x")


def test_corpus_folds_are_one_fold_per_corpus():
    rows = pd.DataFrame({"speaker": ["b/1", "b/1", "a/2", "c/3", "a/4"], "corpus": ["b", "b", "a", "c", "a"]})
    folds, names = cv.corpus_folds(rows)
    assert names == ["a", "b", "c"] and folds == {"a/2": 0, "a/4": 0, "b/1": 1, "c/3": 2}
    with pytest.raises(ValueError, match="at least 2 corpora"):
        cv.corpus_folds(rows[rows["corpus"] == "a"])
    with pytest.raises(ValueError, match=r"speakers \['x'\] appear in more than one corpus"):
        cv.corpus_folds(pd.DataFrame({"speaker": ["x", "x"], "corpus": ["a", "b"]}))
    with pytest.raises(ValueError, match="corpus column"):
        cv.corpus_folds(rows[["speaker"]])


def test_cv_by_corpus_gives_leave_one_corpus_out_predictions(tmp_path, monkeypatch):
    """With cv_by='corpus' every out-of-fold row comes from a model that never heard its corpus;
    the fold table scores each candidate on each held-out corpus, calibrated on the others."""
    monkeypatch.setenv("SER_RESULTS_DIR", str(tmp_path / "results"))
    utterances = _corpus(tmp_path)
    utterances["corpus"] = utterances["speaker"].map(lambda s: "alpha" if s in {"s1", "s2", "s5"} else "beta")
    models = tmp_path / "models"
    (c,) = cv.parse_candidates([CANDIDATES[0]], default_name="unused")
    with pytest.raises(ValueError, match="cv_by must be one of speaker, corpus"):
        cv.train_candidates(utterances, [c], models_dir=models, labels=LABELS, window_s=0.5, sample_rate=SR,
                            cv_by="language", progress=False)
    calls = []
    real = cv._fit_classical

    def spy(c, rows, folds, **kw):
        calls.append(dict(folds))
        return real(c, rows, folds, **kw)

    monkeypatch.setattr(cv, "_fit_classical", spy)
    cv.train_candidates(utterances, [c], models_dir=models, labels=LABELS, window_s=0.5, sample_rate=SR,
                        cv_folds=3, cv_by="corpus", seed=0, progress=False)
    assert calls == [{"s1": 0, "s2": 0, "s5": 0, "s3": 1, "s4": 1, "s6": 1}]
    record = selection.read_candidates(models)
    assert record["cv_by"] == "corpus" and record["fold_names"] == ["alpha", "beta"] and record["cv_folds"] == 2
    assert selection.folds_description(record) == "leave-one-corpus-out over 2 corpora: alpha, beta"
    oof = selection.read_oof(models / "t_lr", LABELS)
    assert (oof["fold"] == oof["speaker"].map(calls[0])).all() and len(oof) == 72
    # the final fit weighs the two corpora (and their classes) alike, and the bundle says what it saw
    meta = json.loads((models / "t_lr" / "model.json").read_text())
    assert meta["train_params"]["balance_corpora"] is True
    assert meta["arch_params"]["balanced_strata"] == {"alpha": 36, "beta": 36}
    assert meta["train_params"]["utterances_seen"] == {k: {lab: 9 for lab in LABELS} for k in ("alpha", "beta")}
    table = selection.fold_table(models, LABELS)
    assert list(table.columns) == list(selection.FOLD_COLUMNS)
    assert list(table["held_out"]) == ["alpha", "beta"] and list(table["n_utterances"]) == [36, 36]
    # each fold's temperature is fitted on the other fold only
    t_alpha = selection.fit_oof_temperature(oof[oof["fold"] == 1], LABELS)
    assert table.loc[0, "temperature"] == pytest.approx(t_alpha)
    assert table[["uar", "ece", "ece_calibrated"]].apply(lambda s: s.between(0, 1)).all().all()
    held = oof[oof["fold"] == 0]
    proba, y = selection.oof_arrays(held, LABELS)
    assert table.loc[0, "uar"] == pytest.approx(_balanced_uar(proba, y))
    assert len(selection.plot_folds(table).axes[0].patches) == 2
    # selection: each held-out corpus counts equally, whatever its size
    assert selection.selection_table(models, LABELS).loc[0, "uar"] == pytest.approx(table["uar"].mean())
    big = pd.concat([oof[oof["fold"] == 0]] * 5 + [oof[oof["fold"] == 1]], ignore_index=True)
    assert selection.fit_oof_temperature(big, LABELS, equal_folds=True) == pytest.approx(
        selection.fit_oof_temperature(oof, LABELS, equal_folds=True), rel=1e-3)


def _balanced_uar(proba, y):
    from sklearn.metrics import balanced_accuracy_score

    return balanced_accuracy_score(y, proba.argmax(axis=1))


@pytest.mark.parametrize("profile", ["multicorpus", "cohort"])
def test_multicorpus_profiles_select_leave_one_corpus_out(profile):
    """The profiles that train on several corpora name valid candidates (a speaker-normalised
    classical model, the CNN and an ensemble of them) and fold by corpus."""
    stage = params.load_profile(profile)["02_train"]
    chosen = cv.parse_candidates(stage["candidates"], default_name=stage["model_name"])
    assert stage["cv_by"] == "corpus" and stage["cv_by"] in cv.CV_BY
    families = {c.family for c in chosen}
    assert families == {"classical", "cnn", "ensemble"}
    assert all(c.options.get("speaker_norm") for c in chosen if c.family == "classical")
    assert stage["model_name"] in {c.name for c in chosen}


def _oof_two_folds(tmp_path, scale_a: float, scale_b: float):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(600, 4)) * 1.5
    p_true = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = (rng.random((600, 1)) > np.cumsum(p_true, axis=1)).sum(axis=1)
    scale = np.where(np.arange(600) < 300, scale_a, scale_b)[:, None]
    p = np.exp(z * scale) / np.exp(z * scale).sum(axis=1, keepdims=True)
    folder = tmp_path / f"m_{scale_a}_{scale_b}"
    folder.mkdir()
    pd.DataFrame({"path": [f"u{i}" for i in range(600)], "speaker": [f"c{i // 300}/s{i % 5}" for i in range(600)],
                  "fold": np.arange(600) // 300, "label": np.asarray(LABELS)[y],
                  **{f"p_{lab}": p[:, j] for j, lab in enumerate(LABELS)}}).to_csv(folder / cv.OOF_FILE, index=False)
    return folder


def test_corpus_temperature_is_applied_only_when_it_transfers(tmp_path):
    """One fold per corpus: a temperature is kept only if, fitted on the other corpora, it
    lowers the held-out corpus's NLL on average."""
    both_sharp = _oof_two_folds(tmp_path, 3.0, 2.5)
    t, info = selection.oof_temperature(both_sharp, LABELS, equal_folds=True)
    assert t > 2 and info["cross_fitted_nll_gain"] > 0 and "temperature_kept_at_1" not in info
    opposite = _oof_two_folds(tmp_path, 3.0, 0.3)  # one corpus too sharp, the other too flat
    t, info = selection.oof_temperature(opposite, LABELS, equal_folds=True)
    assert t == 1.0 and info["cross_fitted_nll_gain"] < 0 and "worse" in info["temperature_kept_at_1"]
    assert selection.oof_temperature(opposite, LABELS)[0] != 1.0  # speaker folds: no such check
