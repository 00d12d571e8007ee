"""Tests for ser.signal.pitchnorm: register, PSOLA shift, per-speaker and per-recording normalisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from bundle_double import BundleDouble
from signals import voiced

from ser.inference import recording
from ser.inference.options import InferenceOptions
from ser.models import bundle
from ser.signal import audio, pitchnorm
from ser.train import evaluation, loop

SR = 16000


def _register_st(y: np.ndarray) -> float:
    return 12 * math.log2(pitchnorm.register_hz([y], SR))


# ------------------------------------------------------------------- register and shift

def test_register_is_the_voice_baseline_f0():
    y = voiced(3.0, f0=200.0)  # 200 Hz with a slow +-10 % vibrato
    st = pitchnorm.voiced_semitones(y, SR)
    assert 2 ** (np.median(st) / 12) == pytest.approx(200.0, rel=0.05)
    ref = pitchnorm.register_hz([y], SR)
    assert ref == pytest.approx(2 ** (np.percentile(st, 20) / 12), rel=1e-9)
    assert 175.0 < ref < 2 ** (np.median(st) / 12)  # the baseline lies below the median
    assert math.isnan(pitchnorm.register_hz([np.zeros(SR, np.float32)], SR))  # nothing voiced
    assert math.isnan(pitchnorm.register_hz([], SR))


def test_register_ignores_a_second_voice_an_octave_away():
    woman = 12 * np.log2(210.0) + np.random.default_rng(0).normal(0, 1.5, 800)
    man = 12 * np.log2(100.0) + np.random.default_rng(1).normal(0, 1.0, 200)  # 20 % of the frames
    ref = pitchnorm.register_from_semitones(np.concatenate([woman, man]))
    assert ref == pytest.approx(2 ** (np.percentile(woman, 20) / 12), rel=0.01)  # the woman's alone
    both = 2 ** (np.percentile(np.concatenate([woman, man]), 20) / 12)
    assert both < 150.0  # what the band protects against


def test_register_moves_less_than_the_mean_when_aroused_speech_is_added():
    rng = np.random.default_rng(0)
    calm = 12 * np.log2(200.0) + rng.normal(0, 1.0, 1000)
    aroused = 12 * np.log2(200.0) + 3.0 + rng.normal(0, 1.0, 1000)  # +3 st speech
    mixed = np.concatenate([calm, aroused[:500]])  # a third of the frames aroused
    shift_mean = np.mean(mixed) - np.mean(calm)
    ref = pitchnorm.register_from_semitones
    shift_ref = 12 * np.log2(ref(mixed) / ref(calm))
    assert shift_mean == pytest.approx(1.0, abs=0.1)
    assert 0 < shift_ref < 0.6 * shift_mean


@pytest.mark.parametrize("semitones", [-3.0, 2.0, 5.0])
def test_shift_moves_f0_by_the_semitones_and_keeps_the_length(semitones):
    y = voiced(3.0, f0=200.0)
    z = pitchnorm.shift_pitch(y, SR, semitones=semitones)
    assert z.dtype == np.float32 and z.shape == y.shape
    assert _register_st(z) - _register_st(y) == pytest.approx(semitones, abs=0.15)
    # timing kept: the voiced bursts stay where they were (energy envelope correlates)
    env = lambda x: np.abs(x).reshape(-1, 160).mean(1)  # noqa: E731
    assert np.corrcoef(env(y), env(z))[0, 1] > 0.9


def test_tiny_shift_and_short_signal_are_left_alone():
    y = voiced(1.0, f0=200.0)
    np.testing.assert_array_equal(pitchnorm.shift_pitch(y, SR, semitones=0.001), y)
    short = y[:100]
    np.testing.assert_array_equal(pitchnorm.shift_pitch(short, SR, semitones=3.0), short)
    with pytest.raises(ValueError, match="mono"):
        pitchnorm.shift_pitch(np.zeros((2, 100)), SR, semitones=1.0)
    with pytest.raises(ValueError, match="finite"):
        pitchnorm.shift_pitch(y, SR, semitones=float("nan"))


def test_shift_with_a_given_pitch_equals_the_shift_that_analyses_it():
    import parselmouth

    y = voiced(3.0, f0=180.0)
    snd = parselmouth.Sound(y.astype(np.float64), sampling_frequency=float(SR))
    pitch = snd.to_pitch_ac(time_step=pitchnorm.MANIPULATION_STEP_S, pitch_floor=pitchnorm.F0_MIN_HZ,
                            pitch_ceiling=pitchnorm.F0_MAX_HZ)
    z = pitchnorm.shift_pitch_praat(snd, pitch, semitones=2.5)
    assert z.dtype == np.float32 and z.shape == y.shape
    np.testing.assert_allclose(z, pitchnorm.shift_pitch(y, SR, semitones=2.5), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(pitchnorm.shift_pitch_praat(snd, pitch, semitones=0.0), y)
    assert pitchnorm.shares_pitch(fmin=75.0, fmax=600.0, hop_s=0.01)
    assert not pitchnorm.shares_pitch(fmin=60.0, fmax=600.0, hop_s=0.01)


def test_feature_job_measures_f0_and_shifts_from_one_pitch_analysis():
    from ser.inference import workers
    from ser.signal import features

    y = voiced(6.0, f0=180.0, seed=3)
    starts = np.arange(0.0, 4.5, 1.0)
    opts = {"f0_method": "praat", "voice_quality": False, "egemaps": False}
    arr, tm, shifted, _ = workers.features_job(y, SR, starts, 2.0, opts, 3.0)
    plain = features.window_features(y, SR, starts_s=starts, window_s=2.0, **opts)
    np.testing.assert_array_equal(arr, plain.to_numpy(np.float64))  # the F0 column is unchanged
    snd, pitch = features.praat_pitch(y, SR, fmin=75.0, fmax=600.0, hop_s=0.01)
    head = pitchnorm.shift_pitch_praat(snd, pitch, semitones=3.0)
    assert 0 < len(y) - len(head) < 0.02 * SR  # the F0 column's cut: less than two steps
    np.testing.assert_array_equal(shifted, np.concatenate([head, y[len(head):]]))
    assert shifted.shape == y.shape and shifted.dtype == np.float32
    assert _register_st(shifted) - _register_st(y) == pytest.approx(3.0, abs=0.15)
    assert {"f0", "pitch_norm"} <= set(tm)
    _, _, alone, _ = workers.features_job(y, SR, starts, 2.0, {**opts, "f0_method": "pyin"}, 3.0)
    np.testing.assert_array_equal(alone, pitchnorm.shift_pitch(y, SR, semitones=3.0))  # no shared pitch


def test_semitones_to_rules():
    assert pitchnorm.semitones_to(200.0, 100.0) == pytest.approx(12.0)
    assert pitchnorm.semitones_to(200.0, 20.0) == pitchnorm.MAX_SHIFT_ST  # clipped
    assert pitchnorm.semitones_to(200.0, float("nan")) == 0.0  # nothing voiced: no shift
    with pytest.raises(ValueError, match="target_hz"):
        pitchnorm.semitones_to(0.0, 100.0)


@pytest.mark.parametrize("bad", [30.0, 1000.0, -1.0, True, "200"])
def test_check_target_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="pitch_norm_hz"):
        pitchnorm.check_target(bad)
    assert pitchnorm.check_target(0) == 0.0 and pitchnorm.check_target(200) == 200.0


def test_normalise_by_group_brings_every_speaker_to_the_target():
    waves = {"a1": voiced(2.0, f0=170.0), "a2": voiced(2.0, f0=170.0, seed=1),
             "b1": voiced(2.0, f0=250.0, seed=2)}
    out, shifts = pitchnorm.normalise_by_group(waves, {"a1": "A", "a2": "A", "b1": "B"}, SR, target_hz=210.0)
    assert set(out) == set(waves) and set(shifts) == {"A", "B"}
    # one shift per speaker, from the register of all their signals together
    assert shifts["A"] == pitchnorm.semitones_to(210.0, pitchnorm.register_hz([waves["a1"], waves["a2"]], SR))
    assert shifts["A"] > 1.5 and shifts["B"] < -1.5
    for k in out:
        assert pitchnorm.register_hz([out[k]], SR) == pytest.approx(210.0, rel=0.03), k
    with pytest.raises(KeyError, match="b1"):
        pitchnorm.normalise_by_group(waves, {"a1": "A", "a2": "A"}, SR, target_hz=210.0)


def test_recording_register_streams_blocks(tmp_path):
    y = np.concatenate([voiced(4.0, f0=180.0), voiced(4.0, f0=180.0, seed=3)])
    audio.write_wav(tmp_path / "r.wav", y, SR)
    whole = pitchnorm.register_hz([y], SR)
    blocked = pitchnorm.recording_register_hz(tmp_path / "r.wav", sample_rate=SR, block_s=3.0)
    assert blocked == pytest.approx(whole, rel=0.01)
    assert 155.0 < blocked < 180.0  # 180 Hz with vibrato: its baseline


# ------------------------------------------------------------------- model bundles


class PitchBundle(BundleDouble):
    """Test double: predicts "high" when the window's F0 is above 220 Hz, else "low"."""

    labels = ["high", "low"]
    sample_rate = SR
    window_s = 1.0
    window_samples = SR

    def __init__(self, pitch_norm_hz: float = 0.0):
        self.pitch_norm_hz = pitch_norm_hz

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        out = []
        for w in windows:
            st = pitchnorm.voiced_semitones(w, SR)
            high = st.size > 0 and 2 ** (np.median(st) / 12) > 220.0
            out.append([1.0, 0.0] if high else [0.0, 1.0])
        return np.asarray(out, np.float32)


def test_predict_recording_normalises_for_the_model_but_measures_f0_on_the_original(tmp_path):
    audio.write_wav(tmp_path / "low.wav", voiced(6.0, f0=180.0), SR)
    plain = recording.predict_recording(PitchBundle(), tmp_path / "low.wav",
                                        options=InferenceOptions(hop_s=1.0))
    normed = recording.predict_recording(PitchBundle(250.0), tmp_path / "low.wav",
                                         options=InferenceOptions(hop_s=1.0))
    voiced_rows = plain["f0_hz"].notna()
    assert voiced_rows.sum() >= 3
    assert (plain.loc[voiced_rows, "p_low"] == 1.0).all()   # heard at 180 Hz
    assert (normed.loc[voiced_rows, "p_high"] == 1.0).all()  # heard at 250 Hz
    pd.testing.assert_series_equal(plain["f0_hz"], normed["f0_hz"])  # features: original audio


def test_evaluate_bundle_normalises_each_speaker(tmp_path):
    rows = []
    for spk, f0 in (("lowvoice", 170.0), ("highvoice", 260.0)):
        for k in range(2):
            p = tmp_path / f"{spk}_{k}.wav"
            audio.write_wav(p, voiced(1.5, f0=f0, seed=k), SR)
            rows.append({"path": str(p), "speaker": spk, "label": "low", "split": "test"})
    table = pd.DataFrame(rows)
    _, plain = evaluation.evaluate_bundle(PitchBundle(), table, progress=False)
    _, normed = evaluation.evaluate_bundle(PitchBundle(200.0), table, progress=False)
    assert plain.groupby("speaker")["pred"].agg(set).to_dict() == {"lowvoice": {"low"}, "highvoice": {"high"}}
    assert set(normed["pred"]) == {"low"}  # both voices heard at 200 Hz


def test_training_with_pitch_norm_writes_it_into_the_bundle(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_RESULTS_DIR", str(tmp_path / "results"))
    rows = []
    for spk, part, f0 in (("s1", "train", 130.0), ("s2", "train", 280.0), ("s3", "val", 200.0)):
        for lab, mult in (("a", 1.0), ("b", 1.3)):
            for k in range(3):
                p = tmp_path / f"{spk}_{lab}_{k}.wav"
                audio.write_wav(p, voiced(0.8, f0=f0 * mult, seed=k), SR)
                rows.append({"path": str(p), "speaker": spk, "label": lab, "split": part})
    out = loop.train(pd.DataFrame(rows), out_dir=tmp_path / "m", labels=["a", "b"], epochs=1,
                         arch_params={"channels": [4, 8], "freq_bins": 2},
                         features={"n_mels": 16, "n_fft": 256, "hop_length": 160}, window_s=0.5,
                         sample_rate=SR, batch_size=8, device="cpu", progress=False, pitch_norm_hz=200.0)
    meta = json.loads((out / "model.json").read_text())
    assert meta["pitch_norm_hz"] == 200.0
    shifts = meta["train_params"]["pitch_shift_st"]
    assert set(shifts) == {"s1", "s2", "s3"}
    assert shifts["s1"] > 2.0 and shifts["s2"] < -2.0  # the low voice goes up, the high one down
    assert bundle.load_bundle(out).pitch_norm_hz == 200.0
    with pytest.raises(ValueError, match="pitch_norm_hz"):
        loop.train(pd.DataFrame(rows), out_dir=tmp_path / "m2", labels=["a", "b"], epochs=1,
                       device="cpu", progress=False, pitch_norm_hz=20.0)


def test_pitch_norm_changes_the_bundle_fingerprint_only_when_set(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"weights")
    meta = {k: None for k in bundle.REQUIRED_KEYS}
    (folder / "model.json").write_text(json.dumps(meta))
    before = bundle.bundle_fingerprint(folder)
    (folder / "model.json").write_text(json.dumps({**meta, "pitch_norm_hz": 0.0}))
    assert bundle.bundle_fingerprint(folder) == before  # off: same as a bundle without the key
    (folder / "model.json").write_text(json.dumps({**meta, "pitch_norm_hz": 200.0}))
    assert bundle.bundle_fingerprint(folder) != before


def test_pitch_normalised_inference_is_the_same_with_feature_workers_and_small_blocks(tmp_path):
    y = np.concatenate([voiced(5.0, f0=180.0), voiced(5.0, f0=190.0, seed=4)])
    audio.write_wav(tmp_path / "r.wav", y, SR)
    inline = recording.predict_recording(PitchBundle(250.0), tmp_path / "r.wav",
                                         options=InferenceOptions(hop_s=1.0, workers=0))
    timings: dict[str, float] = {}
    pooled = recording.predict_recording(PitchBundle(250.0), tmp_path / "r.wav",
                                         options=InferenceOptions(hop_s=1.0, workers=2, block_s=4.0),
                                         timings=timings)
    assert timings["pitch_norm"] > 0
    pd.testing.assert_frame_equal(inline.drop(columns=["p_high", "p_low"]),
                                  pooled.drop(columns=["p_high", "p_low"]), check_exact=False, atol=1e-6)
    voiced_rows = inline["f0_hz"].notna()
    assert (pooled.loc[voiced_rows, "p_high"] == 1.0).all()  # every block heard at 250 Hz
