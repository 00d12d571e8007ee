"""Tests of the synthetic demo data (ser.data.demo): layout, determinism, planted truth, prosody."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import parselmouth
import pytest
import soundfile as sf

from ser.data import demo, schema, synth

SR = 16000
TINY = dict(seed=3, speakers_per_gender=1, utterances_per_emotion=2, recording_s=30.0, n_caregivers=5,
            sample_rate=SR, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, demo.generate(out, **TINY)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _median_f0(x: np.ndarray, sr: int = SR, floor: float = 60.0) -> float:
    f = parselmouth.Sound(x.astype(np.float64), sr).to_pitch(
        time_step=0.01, pitch_floor=floor, pitch_ceiling=600.0).selected_array["frequency"]
    return float(np.median(f[f > 0]))


def _concat(x: np.ndarray, segments: pd.DataFrame, sr: int = SR) -> np.ndarray:
    """The samples of ``x`` inside the segments' [start_s, end_s) spans, joined."""
    return np.concatenate([x[int(round(a * sr)):int(round(b * sr))]
                           for a, b in zip(segments["start_s"], segments["end_s"])])


def _semitones(a: float, b: float) -> float:
    return 12 * np.log2(a / b)


# --------------------------------------------------------------------------- layout


def test_corpus_layout(tiny):
    out, truth = tiny
    files = sorted((out / "corpus").glob("*/*.wav"))
    assert len(files) == 4 * 2 * 1 * 2
    assert {p.parent.name for p in files} == set(demo.LABELS)
    assert {p.stem for p in files} == {"f1_001", "f1_002", "m1_001", "m1_002"}
    for p in files:
        info = sf.info(p)
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert 1.5 <= info.duration <= 3.5
    assert set(truth["speakers"]) == {"f1", "m1"}
    assert truth["speakers"]["f1"]["gender"] == "f"


def test_cohort_manifest(tiny):
    out, truth = tiny
    man = pd.read_csv(out / "cohort" / "manifest.csv")
    assert list(man.columns) == list(schema.MANIFEST_COLUMNS)
    assert len(man) == 2 * TINY["n_caregivers"]
    assert (man["recording"] == man["path"].str.removesuffix(".wav")).all()
    assert (man["recording"] == man["caregiver"] + "_" + man["phase"]).all()
    assert set(man["session"]) == {1}
    assert sorted(man["caregiver"].unique()) == [f"p{i:03d}" for i in range(1, 6)]
    per_level = man.drop_duplicates("caregiver")["level"].value_counts().to_dict()
    assert per_level == demo.level_counts(5) == {"untrained": 1, "beginner": 2, "intermediate": 1, "expert": 1}
    assert all(sorted(g) == ["care", "control"] for _, g in man.groupby("caregiver")["phase"])
    for p in man["path"]:
        info = sf.info(out / "cohort" / p)
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert info.frames == TINY["recording_s"] * SR


@pytest.mark.parametrize("n, expected", [(23, (2, 9, 4, 8)), (4, (1, 1, 1, 1)), (8, (1, 3, 1, 3)),
                                         (46, (4, 18, 8, 16))])
def test_level_counts(n, expected):
    assert tuple(demo.level_counts(n).values()) == expected


def test_level_counts_every_size_keeps_each_level():
    for n in range(4, 80):
        counts = demo.level_counts(n)
        assert sum(counts.values()) == n and min(counts.values()) >= 1
        assert counts["beginner"] >= counts["untrained"]


# --------------------------------------------------------------------------- determinism and reruns


def test_same_seed_gives_identical_bytes(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    demo.generate(again, **TINY)
    assert _hashes(again) == _hashes(out)


def test_other_seed_differs(tmp_path):
    small = dict(TINY, recording_s=20.0, n_caregivers=4, utterances_per_emotion=1)
    demo.generate(tmp_path / "a", **small)
    demo.generate(tmp_path / "b", **dict(small, seed=4))
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a if k.endswith(".wav")) == sum(k.endswith(".wav") for k in a)


def test_rerun_skips_and_new_params_regenerate(tmp_path, monkeypatch):
    small = dict(TINY, recording_s=20.0, n_caregivers=4, utterances_per_emotion=1)
    out = tmp_path / "demo"
    first = demo.generate(out, **small)
    before = _hashes(out)

    def boom(**kwargs):
        raise AssertionError("synthesised although a complete generation exists")

    with monkeypatch.context() as m:
        m.setattr(demo, "synthesize_utterance", boom)
        assert demo.generate(out, **small) == first
    assert _hashes(out) == before

    second = demo.generate(out, **dict(small, seed=11))
    assert second["generator"]["seed"] == 11
    assert _hashes(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no .partial / .old left


def test_incomplete_generation_is_regenerated(tmp_path):
    small = dict(TINY, recording_s=20.0, n_caregivers=4, utterances_per_emotion=1)
    out = tmp_path / "demo"
    demo.generate(out, **small)
    before = _hashes(out)
    (out / "cohort" / "p002_care.wav").unlink()
    demo.generate(out, **small)
    assert _hashes(out) == before


def test_crash_leaves_previous_generation_intact(tmp_path, monkeypatch):
    small = dict(TINY, recording_s=20.0, n_caregivers=4, utterances_per_emotion=1)
    out = tmp_path / "demo"
    demo.generate(out, **small)
    before = _hashes(out)

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "_generate_cohort", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.generate(out, **dict(small, seed=12))
    assert _hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="no demo generation"):
        demo.generate(out, **TINY)
    assert (out / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("option, value", [
    ("n_caregivers", 3), ("recording_s", 5.0), ("seed", -1), ("sample_rate", 8000),
    ("speakers_per_gender", 0), ("utterances_per_emotion", 0), ("n_caregivers", 4.5), ("recording_s", "60"),
])
def test_bad_options_raise_naming_the_option(tmp_path, option, value):
    with pytest.raises(ValueError, match=option):
        demo.generate(tmp_path / "demo", **dict(TINY, **{option: value}))
    assert not (tmp_path / "demo").exists()


def test_synthesize_rejects_bad_input():
    v = synth.Voice("f1", "f", 210.0)
    with pytest.raises(ValueError, match="emotion"):
        synth.synthesize_utterance(emotion="bored", voice=v, rng=np.random.default_rng(0), sample_rate=SR)
    with pytest.raises(ValueError, match="duration_s"):
        synth.synthesize_utterance(emotion="sad", voice=v, rng=np.random.default_rng(0), sample_rate=SR,
                                  duration_s=0.1)
    with pytest.raises(ValueError, match="gender"):
        synth.Voice("x", "x", 210.0)


# --------------------------------------------------------------------------- synthesis


def test_synthesize_utterance_shape_and_repeatability():
    v = synth.Voice("f1", "f", 210.0, formant_scale=1.15)
    x = synth.synthesize_utterance(emotion="angry", voice=v, rng=np.random.default_rng(5), sample_rate=SR,
                                  duration_s=2.0)
    y = synth.synthesize_utterance(emotion="angry", voice=v, rng=np.random.default_rng(5), sample_rate=SR,
                                  duration_s=2.0)
    assert x.dtype == np.float32 and x.shape == (2 * SR,)
    assert np.isfinite(x).all() and np.abs(x).max() <= synth.PEAK_MAX + 1e-6
    np.testing.assert_array_equal(x, y)
    # voiced, periodic speech: Praat finds pitch in a good part of it
    f = parselmouth.Sound(x.astype(float), SR).to_pitch(pitch_floor=60, pitch_ceiling=600).selected_array["frequency"]
    assert (f > 0).mean() > 0.4


def _prosody_stats(voice: synth.Voice, emotion: str, n: int = 8) -> dict[str, float]:
    rng = np.random.default_rng(100)
    f0, db, hi = [], [], []
    for _ in range(n):
        x = synth.synthesize_utterance(emotion=emotion, voice=voice, rng=rng, sample_rate=SR).astype(np.float64)
        f0.append(_median_f0(x))
        db.append(10 * np.log10(np.mean(x ** 2)))
        spec = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / SR)
        hi.append(spec[freqs > 1000].sum() / spec.sum())
    return {"f0": float(np.mean(f0)), "db": float(np.mean(db)), "hi": float(np.mean(hi))}


@pytest.fixture(scope="module")
def prosody() -> dict[tuple[str, str], dict[str, float]]:
    voices = {"f": synth.Voice("f1", "f", 210.0, formant_scale=1.15), "m": synth.Voice("m1", "m", 115.0)}
    return {(g, e): _prosody_stats(v, e) for g, v in voices.items() for e in demo.LABELS}


@pytest.mark.parametrize("gender", ["f", "m"])
def test_emotion_f0_ordering(prosody, gender):
    f0 = {e: prosody[gender, e]["f0"] for e in demo.LABELS}
    assert min(f0["angry"], f0["happy"]) > f0["neutral"] > f0["sad"]
    assert 2.0 < _semitones(f0["angry"], f0["neutral"]) < 6.0
    assert -4.0 < _semitones(f0["sad"], f0["neutral"]) < -0.5


@pytest.mark.parametrize("emotion", demo.LABELS)
def test_gender_f0(prosody, emotion):
    assert prosody["f", emotion]["f0"] > 1.5 * prosody["m", emotion]["f0"]


@pytest.mark.parametrize("gender", ["f", "m"])
def test_emotion_loudness_and_brightness(prosody, gender):
    db = {e: prosody[gender, e]["db"] for e in demo.LABELS}
    hi = {e: prosody[gender, e]["hi"] for e in demo.LABELS}
    assert db["angry"] > db["happy"] > db["neutral"] > db["sad"]
    assert db["angry"] - db["sad"] > 6.0
    assert hi["angry"] > hi["neutral"] > hi["sad"]


def test_emotions_separable_but_not_trivially(tmp_path):
    """Speaker-independent 4-class accuracy on simple prosodic stats: above chance, not perfect."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats, labels, groups = [], [], []
    for gender in ("f", "m"):
        for i in range(1, 4):
            spk = f"{gender}{i}"
            voice = synth.random_voice(spk, gender=gender, rng=np.random.default_rng([7, i, ord(gender)]))
            rng = np.random.default_rng([8, i, ord(gender)])
            for emotion in demo.LABELS:
                for _ in range(6):
                    x = synth.synthesize_utterance(emotion=emotion, voice=voice, rng=rng, sample_rate=SR)
                    x = x.astype(np.float64)
                    f = parselmouth.Sound(x, SR).to_pitch(pitch_floor=60, pitch_ceiling=600).selected_array[
                        "frequency"]
                    st = 12 * np.log2(f[f > 0])
                    frames = x[: len(x) // 400 * 400].reshape(-1, 400)
                    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
                    spec = np.abs(np.fft.rfft(x)) ** 2
                    hi = spec[np.fft.rfftfreq(len(x), 1 / SR) > 1000].sum() / spec.sum()
                    feats.append([np.median(st), np.std(st), np.percentile(db, 90), np.log(hi)])
                    labels.append(emotion)
                    groups.append(spk)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    acc = cross_val_score(clf, np.array(feats), labels, groups=groups, cv=LeaveOneGroupOut()).mean()
    assert 0.45 < acc < 0.95


# --------------------------------------------------------------------------- cohort truth


def test_segments_tile_recordings_and_match_truth(tiny):
    out, truth = tiny
    seg = pd.read_csv(out / "cohort" / "segments.csv", keep_default_na=False)
    assert list(seg.columns) == list(demo.SEGMENT_COLUMNS)
    assert set(seg["role"]) == set(demo.ROLES)
    rec_s = TINY["recording_s"]
    for rec, s in seg.groupby("recording", sort=False):
        s = s.sort_values("start_s")
        assert s["start_s"].iloc[0] == 0.0 and s["end_s"].iloc[-1] == pytest.approx(rec_s)
        np.testing.assert_allclose(s["start_s"].iloc[1:].to_numpy(), s["end_s"].iloc[:-1].to_numpy())
        speech = s[s["role"] != "pause"]
        assert speech["emotion"].isin(demo.LABELS).all() and (s.loc[s["role"] == "pause", "emotion"] == "").all()
        cg, phase = rec.split("_")
        info = truth["caregivers"][cg]
        dur = (s["end_s"] - s["start_s"]).groupby(s["role"]).sum() / rec_s
        assert dur["caregiver"] == pytest.approx(info["speech_ratio"][phase], abs=0.005)
        assert dur["caregiver"] == pytest.approx(info["recordings"][phase]["caregiver_speech_ratio"], abs=1e-3)
        assert dur["patient"] == pytest.approx(demo.PATIENT_SPEECH_RATIO, abs=0.005)
        counts = s[s["role"] == "caregiver"]["emotion"].value_counts().to_dict()
        assert counts == {e: c for e, c in info["recordings"][phase]["caregiver_emotion_counts"].items() if c}


def test_planned_speech_ratio_effects(tiny):
    _, truth = tiny
    for cg, info in truth["caregivers"].items():
        lv = info["level_index"]
        sr_ = info["speech_ratio"]
        assert sr_["care"] - sr_["control"] == pytest.approx(0.15, abs=1e-3)
        assert sr_["control"] == pytest.approx(0.50 + 0.04 * lv + info["speech_ratio_offset"], abs=1e-3)


def test_audio_follows_segments(tiny):
    """Pauses are near-silent, speech segments are loud: the audio matches segments.csv."""
    out, _ = tiny
    seg = pd.read_csv(out / "cohort" / "segments.csv", keep_default_na=False)
    rec = "p002_care"
    x, sr = sf.read(out / "cohort" / f"{rec}.wav")
    level = {}
    for role, s in seg[seg["recording"] == rec].groupby("role"):
        level[role] = 10 * np.log10(np.mean(_concat(x, s, sr) ** 2))
    assert level["pause"] < -50
    assert level["caregiver"] > -40 and level["patient"] > -45


def test_care_raises_caregiver_f0(tiny):
    out, truth = tiny
    seg = pd.read_csv(out / "cohort" / "segments.csv", keep_default_na=False)
    diffs = []
    for cg in truth["caregivers"]:
        f0 = {}
        for phase in schema.PHASES:
            rec = f"{cg}_{phase}"
            x, sr = sf.read(out / "cohort" / f"{rec}.wav")
            s = seg[(seg["recording"] == rec) & (seg["role"] == "caregiver")]
            f0[phase] = _median_f0(_concat(x, s, sr))
        diffs.append(_semitones(f0["care"], f0["control"]))
        # caregiver voices are female; the control F0 is near the planted base
        assert abs(_semitones(f0["control"], truth["caregivers"][cg]["f0_base_hz"])) < 1.5
    assert min(diffs) > 0.5
    assert np.mean(diffs) == pytest.approx(demo.CARE_F0_SHIFT_ST, abs=0.75)


def test_patient_is_low_male_voice(tiny):
    out, truth = tiny
    seg = pd.read_csv(out / "cohort" / "segments.csv", keep_default_na=False)
    rec = "p001_control"
    x, sr = sf.read(out / "cohort" / f"{rec}.wav")
    s = seg[(seg["recording"] == rec) & (seg["role"] == "patient")]
    assert 75 < _median_f0(_concat(x, s, sr)) < 140
    assert truth["caregivers"]["p001"]["patient_f0_base_hz"] < 125


def test_truth_schema(tiny):
    out, truth = tiny
    assert json.loads((out / "truth.json").read_text()) == truth
    assert truth["generator"] == {"version": demo.GENERATOR_VERSION, **{k: v for k, v in TINY.items()
                                                                       if k != "progress"}}
    assert truth["labels"] == list(demo.LABELS)
    assert truth["levels"] == ["untrained", "beginner", "intermediate", "expert"]
    assert truth["phases"] == ["control", "care"]
    assert set(truth["caregivers"]) == {f"p{i:03d}" for i in range(1, 6)}
    for info in truth["caregivers"].values():
        assert info["level"] in truth["levels"]
        assert 150 < info["f0_base_hz"] < 300
    # caregiver base offsets are centred within each level: no level difference in the sample
    beginners = [12 * np.log2(i["f0_base_hz"] / demo.CAREGIVER_F0_HZ) for i in truth["caregivers"].values()
                 if i["level"] == "beginner"]
    assert np.mean(beginners) == pytest.approx(0.0, abs=0.01)

    mix = truth["emotion_mix"]
    assert list(mix) == truth["levels"]
    for lv, by_phase in mix.items():
        for phase, probs in by_phase.items():
            assert list(probs) == truth["labels"] and sum(probs.values()) == pytest.approx(1.0)
        assert by_phase["control"] == mix["untrained"]["control"]
    assert [mix[lv]["care"]["happy"] for lv in truth["levels"]] == pytest.approx([0.25, 0.35, 0.45, 0.55])
    assert [mix[lv]["care"]["angry"] for lv in truth["levels"]] == pytest.approx([0.15, 0.11, 0.07, 0.03])

    effects = {(e["feature"], e["term"]): e for e in truth["effects"]}
    assert len(effects) == len(truth["effects"])
    for e in truth["effects"]:
        assert set(e) == {"feature", "term", "value", "unit", "sign", "description"}
        assert e["term"] in ("phase", "level", "phase:level")
        assert e["sign"] in (-1, 0, 1, None)
        if e["sign"] is not None and e["value"] is not None:
            assert np.sign(e["value"]) == e["sign"]
    assert effects["f0_hz", "phase"]["sign"] == 1 and effects["f0_hz", "phase"]["value"] == 2.0
    assert effects["f0_hz", "level"]["sign"] == 0 and effects["f0_hz", "phase:level"]["sign"] == 0
    assert effects["speech_ratio", "phase"]["sign"] == 1 and effects["speech_ratio", "level"]["sign"] == 1
    assert effects["speech_ratio", "phase:level"]["sign"] == 0
    assert effects["p_happy", "phase:level"]["sign"] == 1 and effects["p_angry", "phase:level"]["sign"] == -1
    assert effects["p_happy", "phase:level"]["value"] == pytest.approx(0.10)
    features = {"f0_hz", "speech_ratio", "energy_db"} | {f"p_{e}" for e in demo.LABELS}
    assert {f for f, _ in effects} == features


def test_realised_f0_compensation_cancels_the_mix(tiny):
    """The recorded compensation equals minus the duration-weighted emotion F0 shift."""
    out, truth = tiny
    seg = pd.read_csv(out / "cohort" / "segments.csv", keep_default_na=False)
    seg = seg[seg["role"] == "caregiver"]
    for cg, info in truth["caregivers"].items():
        for phase in schema.PHASES:
            s = seg[seg["recording"] == f"{cg}_{phase}"]
            w = s["end_s"] - s["start_s"]
            shift = (w * s["emotion"].map(lambda e: synth.PROSODY[e].f0_shift_st)).sum() / w.sum()
            assert info["recordings"][phase]["f0_compensation_st"] == pytest.approx(-shift, abs=1e-3)
