"""Channel augmentation and loudness normalisation (ser.signal.augment): each does what it says."""

from __future__ import annotations

import numpy as np
import pytest

from ser.signal import augment

SR = 16000


def _db(x: float) -> float:
    return 10 * np.log10(x)


def _band_density(y: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].mean())


def _gain_db(fn, freq: float) -> float:
    t = np.arange(SR) / SR
    x = 0.1 * np.sin(2 * np.pi * freq * t)
    y = fn(x)[SR // 4:]  # past the filter's start-up
    return _db(augment.power(y) / augment.power(x[SR // 4:]))


@pytest.mark.parametrize("snr", [0.0, 5.0, 12.5, 20.0])
@pytest.mark.parametrize("color", ["white", "pink"])
def test_noise_reaches_the_requested_snr(snr, color):
    rng = np.random.default_rng(1)
    x = (0.2 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32)
    y = augment.add_noise(x, snr_db=snr, rng=rng, color=color)
    assert y.dtype == np.float32 and y.shape == x.shape
    noise = y.astype(np.float64) - x
    assert _db(augment.power(x) / augment.power(noise)) == pytest.approx(snr, abs=0.01)


def test_noise_from_a_recording_and_bad_input():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000)
    hum = np.sin(np.arange(300) / 5.0)
    y = augment.add_noise(x, snr_db=10.0, rng=rng, noise=hum)
    assert _db(augment.power(x) / augment.power(y - x)) == pytest.approx(10.0, abs=0.05)
    with pytest.raises(ValueError, match="silent"):
        augment.add_noise(np.zeros(100), snr_db=10.0, rng=rng)
    with pytest.raises(ValueError, match="color"):
        augment.add_noise(x, snr_db=10.0, rng=rng, color="brown")
    with pytest.raises(ValueError, match="mono"):
        augment.add_noise(np.zeros((2, 100)), snr_db=10.0, rng=rng)


def test_telephone_band_keeps_300_to_3400_hz_only():
    x = np.random.default_rng(0).standard_normal(4 * SR)
    y = augment.telephone(x, SR)
    inside = _band_density(y, 500, 3000)
    assert _db(_band_density(y, 0, 150) / inside) < -35  # a half octave and more below the edge
    assert _db(_band_density(y, 4500, 8000) / inside) < -40
    assert _db(inside / _band_density(x, 500, 3000)) == pytest.approx(0.0, abs=0.5)  # passband untouched
    with pytest.raises(ValueError, match="band edges"):
        augment.band_limit(x, SR, low_hz=3400, high_hz=300)
    with pytest.raises(ValueError, match="Nyquist"):
        augment.band_limit(x, SR, low_hz=300, high_hz=9000)


def test_lapel_response_cuts_lows_and_highs_and_lifts_the_chest_resonance():
    g = {f: _gain_db(lambda x: augment.lapel(x, SR), f) for f in (40.0, 700.0, 2000.0, 7000.0)}
    assert g[40.0] < -12
    assert g[700.0] == pytest.approx(4.0, abs=0.7)
    assert abs(g[2000.0]) < 1.5
    assert g[7000.0] < -12
    with pytest.raises(ValueError, match="above 10 kHz"):
        augment.lapel(np.zeros(100), 8000)


def test_codec_is_band_limited_and_mu_law_quantised():
    x = np.random.default_rng(0).standard_normal(2 * SR) * 0.1
    y = augment.codec(x, SR)
    assert y.shape == x.shape and y.dtype == np.float32
    assert _db(_band_density(y, 4200, 8000) / _band_density(y, 500, 3500)) < -40
    q = augment.mu_law(x, bits=8)
    assert len(np.unique(q)) <= 256
    assert _db(augment.power(x) / augment.power(q - x)) > 25  # 8-bit mu-law: about 38 dB on speech levels
    assert len(np.unique(augment.mu_law(x, bits=4))) <= 16


def test_reverberation_decays_by_60_db_over_rt60_and_keeps_length_and_power():
    rng = np.random.default_rng(3)
    rt60 = 0.5
    ir = augment.exponential_ir(sample_rate=SR, rt60_s=rt60, rng=rng, length_s=1.0)
    tail = ir[1:] ** 2
    block = SR // 20  # 50 ms energy blocks
    energy = np.array([tail[i:i + block].mean() for i in range(0, len(tail) - block, block)])
    slope = np.polyfit(np.arange(len(energy)) * block / SR, 10 * np.log10(energy), 1)[0]  # dB/s
    assert -60 / slope == pytest.approx(rt60, rel=0.1)
    x = np.zeros(SR, dtype=np.float32)
    x[::4000] = 0.5  # clicks
    y = augment.reverberate(x, SR, rt60_s=rt60, rng=rng)
    assert y.shape == x.shape and augment.power(y) == pytest.approx(augment.power(x), rel=1e-4)
    between = slice(2000, 3900)  # silence between clicks is filled by the tail
    assert np.abs(x[between]).max() == 0 and augment.power(y[between]) > 0.02 * augment.power(y)
    with pytest.raises(ValueError, match="rt60_s"):
        augment.reverberate(x, SR, rt60_s=10.0, rng=rng)


def test_loudness_normalisation_sets_the_active_level_and_ignores_pauses():
    t = np.arange(SR) / SR
    speech = 0.01 * np.sin(2 * np.pi * 200 * t)
    x = np.concatenate([speech, np.zeros(SR)])  # half pause
    y = augment.normalise_loudness(x, target_dbfs=-23.0)
    assert 20 * np.log10(np.sqrt(augment.power(y[:SR]))) == pytest.approx(-23.0, abs=0.1)
    assert np.abs(y[SR:]).max() == 0
    loud = augment.normalise_loudness(np.r_[speech, 1.0], target_dbfs=0.0)  # one peak limits the gain
    assert np.abs(loud).max() == pytest.approx(0.99, abs=1e-6)
    assert np.array_equal(augment.normalise_loudness(np.zeros(10)), np.zeros(10, np.float32))


def test_random_channel_is_reproducible_and_reaches_every_channel():
    x = np.random.default_rng(0).standard_normal(SR // 2).astype(np.float32) * 0.1
    seen = set()
    for seed in range(40):
        y1, info1 = augment.random_channel(x, SR, rng=np.random.default_rng(seed))
        y2, info2 = augment.random_channel(x, SR, rng=np.random.default_rng(seed))
        assert info1 == info2 and np.array_equal(y1, y2) and y1.shape == x.shape
        seen.add(info1["channel"])
        if info1["channel"] == "noise":
            assert augment.SNR_RANGE_DB[0] <= info1["snr_db"] <= augment.SNR_RANGE_DB[1]
    assert seen == set(augment.CHANNELS)
    with pytest.raises(ValueError, match="channels"):
        augment.random_channel(x, SR, rng=np.random.default_rng(0), channels=("radio",))
