"""Tests of speaker normalisation at inference (ser.inference.speaker_norm): one reference per
caregiver pooled over both phases, the recording unit, the fallback rule, resume, ``ser predict --speaker-of``."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from signals import voiced
from threadpoolctl import threadpool_limits

from ser.inference import recording, speaker_norm
from ser.inference.files import predict_paths
from ser.inference.options import InferenceOptions
from ser.inference.stamp import model_stamp_path
from ser.inference.table import predict_table
from ser.inference.workers import feature_workers
from ser.models.classical import features, writer
from ser.models.classical.bundle import BlockFeatures, ClassicalBundle, load_classical_bundle
from ser.models.classical.estimator import ClassicalModel
from ser.run import cli
from ser.signal import audio

SR = 16000
WINDOW_S = 1.0
HOP_S = 0.5


@pytest.fixture(autouse=True)
def _small(monkeypatch):
    """Tiny matrices: one BLAS thread; a 3 s speech threshold for the seconds-long test audio."""
    monkeypatch.setattr(speaker_norm, "MIN_REFERENCE_SPEECH_S", 3.0)
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A logistic-regression speaker_norm bundle on MFCC statistics of 1 s synthetic windows."""
    windows, labels, speakers = [], [], []
    for k, (lab, f0) in enumerate({"angry": 320.0, "neutral": 200.0, "sad": 140.0}.items()):
        for s in range(3):
            y = voiced(2.0, f0=f0 * (1 + 0.1 * s), sr=SR, seed=10 * k + s)
            windows += [y[:SR], y[SR // 2:SR // 2 + SR]]
            labels += [lab, lab]
            speakers += [f"s{s}", f"s{s}"]
    w = np.stack(windows)
    feats = features.signal_features(w, feature_set="mfcc_stats", sample_rate=SR)
    model = ClassicalModel(estimator="logreg", speaker_norm=True, params={"C": 0.1}).fit(
        feats, np.array(labels), np.array(speakers))
    return writer.save_classical_bundle(tmp_path_factory.mktemp("b") / "spk", model,
                                        labels=["angry", "neutral", "sad"], feature_set="mfcc_stats",
                                        sample_rate=SR, window_s=WINDOW_S)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two caregivers x two phases (8 s each; the care phase higher), and a 3 s recording of a third."""
    d = tmp_path_factory.mktemp("cohort")
    rows = []
    for i, (cg, f0) in enumerate((("p001", 170.0), ("p002", 260.0))):
        for j, phase in enumerate(("control", "care")):
            p = d / f"{cg}_{phase}.wav"
            audio.write_wav(p, voiced(8.0, f0=f0 * (1.0 + 0.12 * j), sr=SR, seed=2 * i + j), SR)
            rows.append({"recording": f"{cg}_{phase}", "caregiver": cg, "level": "expert",
                         "phase": phase, "session": 1, "path": str(p)})
    p = d / "p003_care.wav"
    audio.write_wav(p, voiced(3.0, f0=220.0, sr=SR, seed=9), SR)
    rows.append({"recording": "p003_care", "caregiver": "p003", "level": "beginner", "phase": "care",
                 "session": 1, "path": str(p)})
    return pd.DataFrame(rows)


def _options(**kw) -> InferenceOptions:
    return InferenceOptions(hop_s=HOP_S, workers=0, **kw)


def _cut(table: pd.DataFrame, path: str) -> np.ndarray:
    y, _ = audio.load(path, sample_rate=SR)
    n = int(WINDOW_S * SR)
    return np.stack([audio.fix_length(y[int(round(s * SR)):], n) for s in table["start_s"]]).astype(np.float32)


def _run(bundle, recordings, tmp_path, **kw):
    return predict_table(bundle, recordings, options=_options(**kw), out_csv=tmp_path / "windows.csv",
                         failures_csv=tmp_path / "failures.csv", progress=False)


def test_running_moments_equal_moments_of_all_rows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4)) * [1.0, 3.0, 0.0, 2.0] + [5.0, -1.0, 2.0, 0.0]
    X[3, 1] = X[10, 3] = np.nan
    X[:, 3] = np.where(np.arange(50) < 48, np.nan, X[:, 3])  # two finite values only
    acc = features.RunningMoments()
    for part in (X[:7], X[7:8], X[8:8], X[8:30]):
        acc.update(part)
    acc.merge(features.RunningMoments().update(X[30:]))
    mean, std = acc.result()
    exp_mean, exp_std = features.moments(X)
    np.testing.assert_allclose(mean, exp_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std, exp_std, rtol=1e-10)
    assert acc.n_rows == 50 and std[2] == 1.0  # a constant column is only centred
    with pytest.raises(ValueError, match="no rows"):
        features.RunningMoments().result()
    with pytest.raises(ValueError, match="columns"):
        acc.update(np.zeros((2, 3)))


def test_one_reference_per_caregiver_pooled_over_both_phases(bundle_dir, cohort, tmp_path):
    bundle = load_classical_bundle(bundle_dir)
    recs = cohort[cohort["caregiver"] != "p003"]
    win = _run(bundle, recs, tmp_path)
    assert list(win.columns[-3:]) == ["padded", "norm_unit", "norm_fallback"]
    assert (win["norm_unit"] == win["caregiver"]).all() and not win["norm_fallback"].any()
    for cg, g in win.groupby("caregiver"):
        # the reference: moments of the speech windows (speech_ratio >= 0.5) of both phases
        speech = [_cut(r[r["speech_ratio"] >= 0.5], recs.set_index("recording").loc[rec, "path"])
                  for rec, r in g.groupby("recording")]
        assert all(len(s) for s in speech) and g["phase"].nunique() == 2
        pooled = bundle.with_speaker_reference(np.concatenate(speech))
        for rec, r in g.groupby("recording"):
            expected = pooled.predict_proba(_cut(r, recs.set_index("recording").loc[rec, "path"]))
            np.testing.assert_allclose(r[["p_angry", "p_neutral", "p_sad"]].to_numpy(), expected, atol=1e-5)
    # the first pass's statistics are those of the pooled windows
    units = {cg: [(r, p) for r, p in zip(g["recording"], g["path"], strict=True)]
             for cg, g in recs.groupby("caregiver")}
    refs, fails = speaker_norm.unit_references(bundle, units, options=_options().resolve(bundle),
                                               progress=False)
    assert not fails and set(refs) == {"p001", "p002"}
    g = win[win["caregiver"] == "p001"]
    speech = np.concatenate([_cut(r[r["speech_ratio"] >= 0.5], recs.set_index("recording").loc[rec, "path"])
                             for rec, r in g.groupby("recording")])
    mean, std = features.moments(bundle.window_features(speech)["mfcc_stats"].astype(np.float64))
    got_mean, got_std = refs["p001"].reference["mfcc_stats"]
    np.testing.assert_allclose(got_mean, mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_std, std, rtol=1e-9)
    assert refs["p001"].n_windows == len(speech)
    assert refs["p001"].speech_s == pytest.approx(g["speech_ratio"].sum() * HOP_S)
    # the stamp records the unit and each recording's reference
    stamp = json.loads(model_stamp_path(tmp_path / "windows.csv").read_text())
    assert stamp["norm"]["unit"] == "caregiver"
    assert stamp["norm"]["references"]["p001_care"] == refs["p001"].key == stamp["norm"]["references"]["p001_control"]


def test_recording_unit_gives_another_reference_per_recording(bundle_dir, cohort, tmp_path):
    bundle = load_classical_bundle(bundle_dir)
    recs = cohort[cohort["caregiver"] == "p001"]
    by_cg = _run(bundle, recs, tmp_path / "cg")
    by_rec = _run(bundle, recs, tmp_path / "rec", norm_unit="recording")
    assert (by_rec["norm_unit"] == by_rec["recording"]).all() and not by_rec["norm_fallback"].any()
    probs = ["p_angry", "p_neutral", "p_sad"]
    assert not np.allclose(by_cg[probs].to_numpy(), by_rec[probs].to_numpy(), atol=1e-3)
    for rec, r in by_rec.groupby("recording"):
        path = recs.set_index("recording").loc[rec, "path"]
        ref = bundle.with_speaker_reference(_cut(r[r["speech_ratio"] >= 0.5], path))
        np.testing.assert_allclose(r[probs].to_numpy(), ref.predict_proba(_cut(r, path)), atol=1e-5)


def test_first_pass_runs_in_the_feature_workers_with_the_same_references(bundle_dir, cohort, tmp_path,
                                                                          monkeypatch):
    """With workers, each recording's first pass runs in a worker process (stage 04's two cores
    instead of one), and the references, fallbacks and failures equal those of one process."""
    bundle = load_classical_bundle(bundle_dir)
    missing = tmp_path / "p004_care.wav"
    units = {cg: [(r, p) for r, p in zip(g["recording"], g["path"], strict=True)]
             for cg, g in cohort.groupby("caregiver")}
    units["p004"] = [("p004_care", str(missing))]
    inline = speaker_norm.unit_references(bundle, units, options=_options().resolve(bundle), progress=False)
    pids = tmp_path / "pids"
    pids.mkdir()
    moments = speaker_norm.recording_moments

    def recorded(*args, **kw):  # the forked workers inherit the patch; each leaves its pid
        (pids / f"{os.getpid()}_{time.monotonic_ns()}").touch()
        return moments(*args, **kw)

    monkeypatch.setattr(speaker_norm, "recording_moments", recorded)
    refs, fails = speaker_norm.unit_references(bundle, units, options=InferenceOptions(hop_s=HOP_S, workers=2).resolve(bundle),
                                               progress=False)
    found = {int(p.name.split("_")[0]) for p in pids.iterdir()}
    assert len(list(pids.iterdir())) == len(cohort) + 1 and os.getpid() not in found
    assert fails == inline[1] and set(fails) == {"p004_care"} and "p004_care.wav" in fails["p004_care"]
    assert set(refs) == set(inline[0]) == {"p001", "p002", "p003", "p004"} and refs["p003"].fallback
    for unit, ref in refs.items():  # merged in the same order: bit for bit (the key hashes the moments)
        same = inline[0][unit]
        assert (ref.key, ref.speech_s, ref.n_windows, ref.fallback, ref.members) == (
            same.key, same.speech_s, same.n_windows, same.fallback, same.members)


def test_short_unit_falls_back_to_the_pooled_run_and_is_flagged(bundle_dir, cohort, tmp_path):
    bundle = load_classical_bundle(bundle_dir)
    win = _run(bundle, cohort, tmp_path)
    flagged = win[win["norm_fallback"]]
    assert set(flagged["recording"]) == {"p003_care"} and set(flagged["norm_unit"]) == {"p003"}
    # the fallback reference: speech windows of every recording of the run
    speech = np.concatenate([_cut(r[r["speech_ratio"] >= 0.5], cohort.set_index("recording").loc[rec, "path"])
                             for rec, r in win.groupby("recording")])
    expected = bundle.with_speaker_reference(speech).predict_proba(_cut(flagged, cohort["path"].iloc[-1]))
    np.testing.assert_allclose(flagged[["p_angry", "p_neutral", "p_sad"]].to_numpy(), expected, atol=1e-5)
    problems = speaker_norm.fallback_problems(pd.read_csv(tmp_path / "windows.csv", dtype={"norm_unit": str}))
    assert problems["recording"].tolist() == ["p003_care"]
    assert "less than 3 s of speech" in problems["reason"].iloc[0]


def test_resume_keeps_unchanged_references_and_recomputes_changed_ones(bundle_dir, cohort, tmp_path, capsys):
    bundle = load_classical_bundle(bundle_dir)
    recs = cohort[cohort["caregiver"] != "p003"]
    first = _run(bundle, recs.iloc[[0, 2, 3]], tmp_path)  # p001 control only, p002 both
    stamp0 = json.loads(model_stamp_path(tmp_path / "windows.csv").read_text())
    second = _run(bundle, recs, tmp_path)  # p001's reference changes (care added); p002's does not
    stamp1 = json.loads(model_stamp_path(tmp_path / "windows.csv").read_text())
    assert stamp0["norm"]["references"]["p001_control"] != stamp1["norm"]["references"]["p001_control"]
    probs = ["p_angry", "p_neutral", "p_sad"]
    fresh = _run(bundle, recs, tmp_path / "fresh")
    pd.testing.assert_frame_equal(second.reset_index(drop=True), fresh.reset_index(drop=True),
                                  check_dtype=False)
    p2 = first[first["caregiver"] == "p002"][probs].to_numpy()
    np.testing.assert_array_equal(second[second["caregiver"] == "p002"][probs].to_numpy(), p2)
    # another unit: nothing is reused
    by_rec = _run(bundle, recs, tmp_path, norm_unit="recording")
    assert "another normalisation unit" in capsys.readouterr().err
    assert (by_rec["norm_unit"] == by_rec["recording"]).all()


def test_none_unit_is_refused_and_other_bundles_ignore_the_unit(bundle_dir, cohort, tmp_path):
    bundle = load_classical_bundle(bundle_dir)
    with pytest.raises(ValueError, match="speaker_norm.*norm_unit 'none'"):
        _run(bundle, cohort, tmp_path, norm_unit="none")
    assert not (tmp_path / "windows.csv").exists()
    with pytest.raises(ValueError, match="norm_unit must be one of"):
        _options(norm_unit="speaker").resolve(bundle)


# ------------------------------------------------------------------------- ser predict

@pytest.fixture
def files(cohort, tmp_path):
    """The four recordings of p001 and p002 in one folder, and a --speaker-of CSV (relative paths)."""
    d = tmp_path / "audio"
    d.mkdir()
    rows = []
    for r in cohort[cohort["caregiver"] != "p003"].itertuples():
        (d / f"{r.recording}.wav").write_bytes(open(r.path, "rb").read())
        rows.append({"file": f"audio/{r.recording}.wav", "speaker": r.caregiver})
    pd.DataFrame(rows).to_csv(tmp_path / "speakers.csv", index=False)
    return d, tmp_path / "speakers.csv"


def _predict(bundle_dir, inputs, out, *extra):
    return cli.main(["predict", str(bundle_dir), *map(str, inputs), "-o", str(out), "--hop", str(HOP_S),
                     "--workers", "0", "--quiet", *map(str, extra)])


def test_predict_speaker_of_pools_each_persons_files(bundle_dir, cohort, files, tmp_path):
    d, mapping = files
    assert _predict(bundle_dir, [d], tmp_path / "w.csv", "--speaker-of", mapping) == 0
    win = pd.read_csv(tmp_path / "w.csv", dtype={"norm_unit": str})
    win["recording"] = win["file"].map(lambda f: f.rsplit("/", 1)[-1][:-4])
    assert (win["norm_unit"] == win["recording"].str[:4]).all() and not win["norm_fallback"].any()
    # the same windows as stage 04 with the caregiver unit
    bundle = load_classical_bundle(bundle_dir)
    table = _run(bundle, cohort[cohort["caregiver"] != "p003"], tmp_path / "t")
    probs = ["p_angry", "p_neutral", "p_sad"]
    a = win.sort_values(["recording", "start_s"])[probs].to_numpy()
    b = table.sort_values(["recording", "start_s"])[probs].to_numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    # a rerun resumes; another unit is refused
    assert _predict(bundle_dir, [d], tmp_path / "w.csv", "--speaker-of", mapping) == 0
    assert _predict(bundle_dir, [d], tmp_path / "w.csv", "--norm-unit", "recording") == 2
    # the API: predict_paths with the recording unit
    res = predict_paths(bundle, [d], options=_options(norm_unit="recording"), progress=False)
    assert (res.windows["norm_unit"] == res.windows["file"]).all()


@pytest.mark.parametrize("case, match", [
    ("unknown_file", "names 1 file.s. that are not among the inputs"),
    ("unmapped_file", "lacks 1 input file"),
    ("no_mapping", "needs each file's person.*--speaker-of"),
    ("unit_none", "--norm-unit none gives it none"),
    ("mapping_with_recording_unit", "applies to norm unit 'caregiver' only"),
    ("bad_columns", "needs a column file or path"),
])
def test_predict_refuses_bad_mappings_before_any_work(bundle_dir, files, tmp_path, capsys, monkeypatch,
                                                      case, match):
    d, mapping = files
    called = []
    monkeypatch.setattr(speaker_norm, "recording_moments", lambda *a, **k: called.append(a))
    inputs, extra = [d], ["--speaker-of", str(mapping)]
    if case == "unknown_file":
        inputs = sorted(d.glob("*.wav"))[:3]
    elif case == "unmapped_file":
        (d / "extra.wav").write_bytes((d / "p001_care.wav").read_bytes())
    elif case == "no_mapping":
        extra = []
    elif case == "unit_none":
        extra = ["--norm-unit", "none"]
    elif case == "mapping_with_recording_unit":
        extra += ["--norm-unit", "recording"]
    elif case == "bad_columns":
        pd.read_csv(mapping).rename(columns={"file": "wav"}).to_csv(mapping, index=False)
    assert _predict(bundle_dir, inputs, tmp_path / "w.csv", *extra) == 2
    err = capsys.readouterr().err
    assert "ser predict: error:" in err and re.search(match, err), err
    assert not called and not (tmp_path / "w.csv").exists()


def test_predict_ignores_the_unit_for_other_bundles(bundle_dir, files, tmp_path, capsys):
    d, mapping = files
    plain = tmp_path / "plain"
    meta = json.loads((bundle_dir / "model.json").read_text())
    plain.mkdir()
    (plain / "model.joblib").write_bytes((bundle_dir / "model.joblib").read_bytes())
    meta["speaker_norm"] = False  # read as a bundle without speaker normalisation
    (plain / "model.json").write_text(json.dumps(meta))
    assert _predict(plain, [d], tmp_path / "w.csv", "--speaker-of", mapping) == 0
    assert "--speaker-of and --norm-unit are ignored" in capsys.readouterr().err
    win = pd.read_csv(tmp_path / "w.csv")
    assert "norm_unit" not in win.columns and len(win)


# ------------------------------------------------------------- the first pass hears what the model hears

def _pitch_normalised(bundle: ClassicalBundle) -> ClassicalBundle:
    """The fixture bundle read as one trained at a 200 Hz register (shifts every recording)."""
    return ClassicalBundle(bundle.model, {**bundle.meta, "pitch_norm_hz": 200.0}, path=bundle.path)


def _first_pass(bundle, path, workers):
    """Options with 3-s blocks (several per recording), silenced turns, and the first pass."""
    options = InferenceOptions(hop_s=HOP_S, workers=workers, block_s=3.0).resolve(bundle)
    silence = np.array([[2.2, 2.9], [5.1, 5.6]])
    first = speaker_norm.recording_moments(bundle, path, options=options, silence_s=silence)
    model = bundle.with_reference({s: m.result() for s, m in first.moments.items()})
    return options, silence, first, model


@pytest.mark.parametrize("workers", [0, 2])
def test_reference_windows_features_equal_the_windows_pass_bit_for_bit(bundle_dir, cohort, monkeypatch, workers):
    """The first pass computes its windows' model features as the windows pass does (the same
    blocks, register, shift with the F0 column's pitch analysis, padding and silenced turns)."""
    bundle = _pitch_normalised(load_classical_bundle(bundle_dir))
    path = Path(cohort["path"].iloc[1])  # p001_care, 8 s
    options, silence, first, model = _first_pass(bundle, path, workers)
    known = first.known
    assert known is not None and len(known.starts_n) == first.n_windows >= 4
    seen: list[dict[str, np.ndarray]] = []
    real = ClassicalBundle.predict_features

    def spy(self, feats):  # the model's input, block by block (main process)
        seen.append({s: np.array(f) for s, f in feats.items()})
        return real(self, feats)

    monkeypatch.setattr(ClassicalBundle, "predict_features", spy)
    with feature_workers(options.workers) as pool:
        recording.predict_file(model, path, options=options, pool=pool, silence_s=silence)
    plan = recording.window_plan(bundle, path, options=options)
    got = {s: np.concatenate([f[s] for f in seen]) for s in seen[0]}
    assert len(got["mfcc_stats"]) == len(plan.start_n) and len(seen) > 1  # several blocks
    rows = np.searchsorted(plan.start_n, known.starts_n)
    for s, f in known.features.items():
        np.testing.assert_array_equal(got[s][rows], f)


@pytest.mark.parametrize("workers", [0, 2])
def test_windows_pass_takes_the_reference_windows_features(bundle_dir, cohort, monkeypatch, workers):
    """The windows pass takes the first pass's features of the reference windows and computes
    the others: the same table as computing all of them."""
    bundle = _pitch_normalised(load_classical_bundle(bundle_dir))
    path = Path(cohort["path"].iloc[1])
    options, silence, first, model = _first_pass(bundle, path, workers)
    asked: list[int] = []
    real = BlockFeatures.__call__

    def count(self, signal, starts):  # windows whose features are computed (this process)
        asked.append(len(starts))
        return real(self, signal, starts)

    monkeypatch.setattr(BlockFeatures, "__call__", count)
    with feature_workers(options.workers) as pool:
        fresh, _ = recording.predict_file(model, path, options=options, pool=pool, silence_s=silence)
        n_fresh = sum(asked)
        reused, _ = recording.predict_file(model, path, options=options, pool=pool, silence_s=silence,
                                           known=first.known)
    pd.testing.assert_frame_equal(reused, fresh, check_exact=True)
    if workers == 0:
        assert n_fresh == len(fresh) and sum(asked) - n_fresh == len(fresh) - first.n_windows


def test_stage_04_hands_each_recording_its_reference_windows_features(bundle_dir, cohort, tmp_path, monkeypatch):
    bundle = load_classical_bundle(bundle_dir)
    recs = cohort[cohort["caregiver"] != "p003"]
    given: dict[str, int] = {}
    real = recording.predict_file

    def spy(model, path, **kw):
        given[Path(path).stem] = len(kw["known"].starts_n)
        return real(model, path, **kw)

    monkeypatch.setattr(recording, "predict_file", spy)
    win = _run(bundle, recs, tmp_path)
    assert given == {rec: int((g["speech_ratio"] >= 0.5).sum()) for rec, g in win.groupby("recording")}
