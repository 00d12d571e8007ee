"""Accuracy and contract tests for ser.signal.features (F0, energy, speech activity per window)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.signal import lfilter

from ser.signal import features

SR = 16000


def voiced(f0: np.ndarray, sr: int = SR) -> np.ndarray:
    """Glottal-pulse-like source (harmonics falling 6 dB/octave) through three formants.

    Args:
        f0: instantaneous F0 per sample (Hz).
    """
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = np.zeros_like(phase)
    for k in range(1, 60):
        y += (k * f0 < 0.45 * sr) * np.sin(k * phase) / k
    for fc, bw in ((700, 130), (1220, 70), (2600, 160)):  # /a/-like formants
        r, th = np.exp(-np.pi * bw / sr), 2 * np.pi * fc / sr
        y = lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], y)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def speech_pattern(seconds: float, *, on_s: float, period_s: float, noise: float, seed: int = 0):
    """Speech-like bursts (4 Hz syllable envelope, gliding F0) of ``on_s`` every ``period_s``
    over white noise; returns the signal and the true speech mask per sample."""
    t = np.arange(int(seconds * SR)) / SR
    mask = (t % period_s) < on_s
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2
    y = voiced(180 + 40 * np.sin(2 * np.pi * 0.5 * t)) * mask * env
    y = y + noise * np.random.default_rng(seed).standard_normal(len(t))
    return y.astype(np.float32), mask


def _true_median(f0: np.ndarray, starts, window_s):
    return np.array([np.median(f0[int(s * SR):int((s + window_s) * SR)]) for s in starts])


# ------------------------------------------------------------------- F0 accuracy


CONTOURS = {
    "flat_100": lambda t: np.full_like(t, 100.0),
    "flat_220": lambda t: np.full_like(t, 220.0),
    "flat_400": lambda t: np.full_like(t, 400.0),
    "glide_100_400": lambda t: 100.0 * 4.0 ** (t / t[-1]),  # two octaves up
    "vibrato_250": lambda t: 250 + 40 * np.sin(2 * np.pi * 1.5 * t),
}


@pytest.mark.parametrize("contour", sorted(CONTOURS))
def test_f0_median_within_2_percent(contour):
    t = np.arange(6 * SR) / SR
    f0 = CONTOURS[contour](t)
    starts = np.arange(0.0, 3.01, 0.5)
    df = features.window_features(voiced(f0), SR, starts_s=starts, window_s=3.0)
    err = np.abs(df["f0_hz"].to_numpy() / _true_median(f0, starts, 3.0) - 1)
    assert err.max() < 0.02, err
    assert (df["voiced_ratio"] > 0.95).all()
    assert (df["f0_std_hz"] >= 0).all()


def test_f0_pyin_option():
    t = np.arange(int(2.5 * SR)) / SR
    f0 = 150 * 2.0 ** (t / t[-1])
    times, est = features.f0_track(voiced(f0), SR, method="pyin")
    ref = np.interp(times, t, f0)
    ok = np.isfinite(est)
    assert ok.mean() > 0.9
    assert np.median(np.abs(est[ok] / ref[ok] - 1)) < 0.02


def test_f0_track_frames_and_unvoiced():
    y = np.concatenate([voiced(np.full(SR, 200.0)), np.zeros(SR, np.float32)])
    times, f0 = features.f0_track(y, SR)
    assert np.allclose(np.diff(times), 0.01)
    assert np.nanmedian(f0[times < 0.9]) == pytest.approx(200, rel=0.01)
    assert np.isnan(f0[times > 1.1]).all()  # silence is unvoiced (NaN), not 0
    empty_t, empty_f0 = features.f0_track(np.zeros(100, np.float32), SR)
    assert empty_t.size == 0 and empty_f0.size == 0


def test_praat_frame_grid_has_fixed_phase():
    """Blocks of any length that start on the 10 ms grid get frames on one grid."""
    y = voiced(np.full(3 * SR, 180.0))
    phases = set()
    for n in range(SR, SR + 1600, 37):
        times, _ = features.f0_track(y[:n], SR)
        phases.add(round(times[0] % 0.01, 9))
    assert len(phases) == 1


# ------------------------------------------------------------------- energy


def test_rms_db_levels():
    t = np.arange(SR) / SR
    sine = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    times, db = features.rms_db(sine, SR)
    assert np.allclose(db, 20 * np.log10(0.5 / np.sqrt(2)), atol=0.05)  # -9.03 dBFS
    assert times[0] == pytest.approx(0.0125) and np.allclose(np.diff(times), 0.01)
    _, db0 = features.rms_db(np.zeros(SR, np.float32), SR)
    assert (db0 == features.ENERGY_FLOOR_DB).all()


def test_energy_window_stats():
    y = np.concatenate([np.full(int(1.2 * SR), 0.1, np.float32), np.full(SR, 0.01, np.float32)])
    df = features.window_features(y, SR, starts_s=np.array([0.0, 0.5]), window_s=1.0)
    first, second = df.iloc[0], df.iloc[1]
    assert first["energy_db"] == pytest.approx(-20.0, abs=1e-6)
    assert first["energy_max_db"] == pytest.approx(-20.0, abs=1e-6)
    assert first["energy_std_db"] == pytest.approx(0.0, abs=1e-6)
    # second window: 0.7 s at -20 dB, 0.3 s at -40 dB (a few frames straddle the step)
    assert second["energy_db"] == pytest.approx(-26.0, abs=0.5)
    assert second["energy_std_db"] == pytest.approx(20 * np.sqrt(0.7 * 0.3), abs=0.5)
    assert second["energy_max_db"] == pytest.approx(-20.0, abs=1e-6)


# ------------------------------------------------------------------- speech activity


@pytest.mark.parametrize("on_s,period_s,noise", [(1.2, 2.0, 1e-3), (0.6, 1.5, 3e-3),
                                                 (2.0, 2.5, 0.0)])
def test_speech_ratio_within_005(on_s, period_s, noise):
    y, mask = speech_pattern(30, on_s=on_s, period_s=period_s, noise=noise)
    starts = np.arange(0.0, 27.01, 1.0)
    df = features.window_features(y, SR, starts_s=starts, window_s=3.0)
    truth = np.array([mask[int(s * SR):int((s + 3) * SR)].mean() for s in starts])
    err = np.abs(df["speech_ratio"].to_numpy() - truth)
    assert err.max() < 0.05, err
    overall = features.speech_activity(y, SR).mean()
    assert overall == pytest.approx(on_s / period_s, abs=0.05)


def test_hangover_trim_removes_bias():
    y, _ = speech_pattern(30, on_s=0.6, period_s=1.5, noise=1e-3)
    raw = features.speech_activity(y, SR, trim_db=None).mean()
    trimmed = features.speech_activity(y, SR).mean()
    assert raw - 0.4 > 0.05 > abs(trimmed - 0.4)  # webrtcvad's hangover biases upwards


@pytest.mark.parametrize("sr", [22050, 8000])
def test_speech_activity_other_rates(sr):
    y16, mask = speech_pattern(10, on_s=1.0, period_s=2.0, noise=1e-3)
    import soxr

    y = soxr.resample(y16, SR, sr).astype(np.float32)
    sp = features.speech_activity(y, sr)
    assert len(sp) == int(len(y) / sr / 0.03)
    assert sp.mean() == pytest.approx(0.5, abs=0.06)


def test_silence_and_noise_are_not_speech():
    rng = np.random.default_rng(1)
    assert not features.speech_activity(np.zeros(5 * SR, np.float32), SR).any()
    noise = (1e-3 * rng.standard_normal(5 * SR)).astype(np.float32)
    assert features.speech_activity(noise, SR).mean() < 0.05


# ------------------------------------------------------------------- window_features contract


def test_window_features_columns_and_empty_windows():
    y = np.concatenate([voiced(np.full(SR, 200.0)), np.zeros(2 * SR, np.float32)])
    df = features.window_features(y, SR, starts_s=np.array([0.0, 1.5, 10.0]), window_s=1.0)
    assert list(df.columns) == list(features.FEATURE_COLUMNS)
    assert df["f0_hz"].iloc[0] == pytest.approx(200, rel=0.01)
    silent = df.iloc[1]
    assert np.isnan(silent["f0_hz"]) and silent["voiced_ratio"] == 0
    assert silent["speech_ratio"] == 0 and silent["energy_db"] == features.ENERGY_FLOOR_DB
    assert df.iloc[2].isna().all()  # beyond the signal: no frames at all


def test_time_offset_matches_slicing():
    y, _ = speech_pattern(12, on_s=1.0, period_s=2.0, noise=1e-3)
    starts = np.array([3.0, 4.37, 6.0])
    a = features.window_features(y, SR, starts_s=starts, window_s=3.0)
    b = features.window_features(y[2 * SR:], SR, starts_s=starts, window_s=3.0, time_offset_s=2.0)
    np.testing.assert_allclose(a["energy_db"], b["energy_db"], rtol=1e-9)
    np.testing.assert_allclose(a["f0_hz"], b["f0_hz"], rtol=0.01)


@pytest.mark.parametrize("kwargs,match", [
    ({"f0_method": "crepe"}, "f0 method"),
    ({"fmin": 500.0, "fmax": 100.0}, "fmin < fmax"),
    ({"window_s": 0.0}, "window_s"),
    ({"vad_frame_ms": 25}, "frame_ms"),
    ({"vad_aggressiveness": 5}, "aggressiveness"),
])
def test_bad_options(kwargs, match):
    y = voiced(np.full(SR, 200.0))
    opts = {"starts_s": np.array([0.0]), "window_s": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        features.window_features(y, SR, **opts)


@pytest.mark.parametrize("y,match", [
    (np.zeros((2, SR), np.float32), "mono"),
    (np.array([0.0, np.nan] * SR, np.float32), "NaN"),
    (np.zeros(SR, np.int16), "float"),
])
def test_bad_signals(y, match):
    with pytest.raises(ValueError, match=match):
        features.window_features(y, SR, starts_s=np.array([0.0]), window_s=0.5)


def test_speed_two_minutes_well_under_a_second_per_minute():
    y, _ = speech_pattern(10, on_s=1.2, period_s=2.0, noise=1e-3)
    y = np.tile(y, 12)  # 2 minutes
    starts = np.arange(0.0, 117.01, 1.0)
    features.window_features(y[:SR], SR, starts_s=np.array([0.0]), window_s=0.5)  # warm-up
    t0 = time.process_time()
    features.window_features(y, SR, starts_s=starts, window_s=3.0)
    per_minute = (time.process_time() - t0) / 2
    assert per_minute < 0.5, f"{per_minute:.2f} s CPU per minute of audio"


# ------------------------------------------------------------------- voice quality (optional)


def pulse_train(seconds: float, *, f0: float = 150.0, jitter: float = 0.0, shimmer: float = 0.0,
                noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Glottal pulses with Gaussian period (``jitter``) and amplitude (``shimmer``)
    perturbation, relative SDs, through three formants, plus white noise (``noise``)."""
    rng = np.random.default_rng(seed)
    n, period = int(seconds * SR), SR / f0
    m = int(n / period) + 2
    t = np.cumsum(period * (1 + jitter * rng.standard_normal(m)))
    amp = 1 + shimmer * rng.standard_normal(m)
    keep = t < n - 1
    t, amp = t[keep], amp[keep]
    y = np.zeros(n)
    i = t.astype(int)
    np.add.at(y, i, amp * (1 - (t - i)))
    np.add.at(y, i + 1, amp * (t - i))
    for fc, bw in ((700, 130), (1220, 70), (2600, 160)):
        r, th = np.exp(-np.pi * bw / SR), 2 * np.pi * fc / SR
        y = lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], y)
    y = 0.5 * y / np.abs(y).max() + noise * rng.standard_normal(n)
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def vq_cases():
    """Voice-quality columns for clean, jittered, shimmered and noisy pulse trains (2 windows each)."""
    cases = {"clean": {}, "jitter": {"jitter": 0.02}, "shimmer": {"shimmer": 0.1},
             "noisy": {"noise": 0.05}}
    out = {}
    for name, kw in cases.items():
        df = features.window_features(pulse_train(5.0, **kw), SR, starts_s=np.array([0.5, 2.5]),
                                      window_s=2.0, voice_quality=True)
        out[name] = df
    return out


def test_voice_quality_columns(vq_cases):
    df = vq_cases["clean"]
    assert list(df.columns) == [*features.FEATURE_COLUMNS, *features.VOICE_QUALITY_COLUMNS]
    assert features.feature_columns(voice_quality=True) == list(df.columns)
    assert df["f0_hz"].to_numpy() == pytest.approx(150, rel=0.01)


def test_jitter_tracks_period_perturbation(vq_cases):
    # Gaussian relative period SD s gives E|T_i - T_i-1| / T = 2 s / sqrt(pi) = 0.0226 for s = 2 %
    expected = 2 * 0.02 / np.sqrt(np.pi)
    assert (vq_cases["clean"]["jitter_local"] < 0.002).all()
    np.testing.assert_allclose(vq_cases["jitter"]["jitter_local"], expected, rtol=0.25)
    assert (vq_cases["shimmer"]["jitter_local"] < 0.002).all()  # amplitude noise is not jitter


def test_shimmer_tracks_amplitude_perturbation(vq_cases):
    expected = 2 * 0.1 / np.sqrt(np.pi)  # 0.113 for a 10 % amplitude SD
    assert (vq_cases["clean"]["shimmer_local"] < 0.02).all()
    np.testing.assert_allclose(vq_cases["shimmer"]["shimmer_local"], expected, rtol=0.25)


def test_hnr_falls_with_noise(vq_cases):
    clean, noisy = vq_cases["clean"]["hnr_db"], vq_cases["noisy"]["hnr_db"]
    assert (clean > 30).all() and (noisy < 15).all() and (noisy > 0).all()


def test_voice_quality_undefined_on_silence():
    y = np.concatenate([pulse_train(1.5), np.zeros(3 * SR, np.float32)])
    df = features.window_features(y, SR, starts_s=np.array([0.0, 2.0, 10.0]), window_s=1.0,
                                  voice_quality=True)
    assert df.loc[0, list(features.VOICE_QUALITY_COLUMNS)].notna().all()
    assert df.loc[1:, list(features.VOICE_QUALITY_COLUMNS)].isna().all().all()


def test_voice_quality_with_pyin_has_same_columns():
    y = pulse_train(2.5)
    a = features.window_features(y, SR, starts_s=np.array([0.0]), window_s=2.0, voice_quality=True)
    b = features.window_features(y, SR, starts_s=np.array([0.0]), window_s=2.0, voice_quality=True,
                                 f0_method="pyin")
    assert list(a.columns) == list(b.columns)
    np.testing.assert_allclose(b[list(features.VOICE_QUALITY_COLUMNS)],
                               a[list(features.VOICE_QUALITY_COLUMNS)], rtol=1e-9)


# ------------------------------------------------------------------- eGeMAPS (optional)


def test_egemaps_columns_and_voiced_only_descriptors():
    tone = voiced(np.full(2 * SR, 220.0))
    y = np.concatenate([tone, np.zeros(3 * SR, np.float32), 0.25 * tone])
    starts = np.array([0.0, 2.5, 5.0])  # voiced, silent (0.5 s from either tone), voiced
    df = features.window_features(y, SR, starts_s=starts, window_s=2.0, egemaps=True)
    cols = features.egemaps_columns()
    assert len(cols) == 25 and list(df.columns) == [*features.FEATURE_COLUMNS, *cols]
    semitones = df["egemaps_F0semitoneFrom27.5Hz_sma3nz_mean"]
    assert semitones[0] == pytest.approx(12 * np.log2(220 / 27.5), abs=0.5)  # 36 semitones
    # the silent window has no voiced frame: voiced-only descriptors are NaN, not 0
    nz = [c for c in cols if "_sma3nz" in c]
    assert df.loc[1, nz].isna().all() and df.loc[0, nz].notna().all()
    assert df.loc[1, "egemaps_Loudness_sma3_mean"] < 0.05
    # 12 dB quieter: lower loudness, same pitch
    assert df.loc[2, "egemaps_Loudness_sma3_mean"] < 0.6 * df.loc[0, "egemaps_Loudness_sma3_mean"]
    assert semitones[2] == pytest.approx(semitones[0], abs=0.3)


def test_egemaps_short_signal_gives_nan():
    df = features.window_features(np.zeros(200, np.float32) + 0.01, SR, starts_s=np.array([0.0]),
                                  window_s=1.0, egemaps=True)
    assert df[list(features.egemaps_columns())].isna().all().all()


def test_timings_are_recorded():
    t: dict[str, float] = {}
    features.window_features(voiced(np.full(SR, 200.0)), SR, starts_s=np.array([0.0]),
                             window_s=0.5, timings=t)
    assert {"f0", "energy", "vad", "summarise"} <= set(t) and all(v >= 0 for v in t.values())
