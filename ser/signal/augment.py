"""Channel augmentation and loudness normalisation of waveforms (robustness levers, issue 15 item 4).

The caregivers were recorded in care rooms on lapel microphones; the training corpora
are studio recordings. These functions move a clean utterance towards other recording
channels, so a classifier can be trained (or tested) on audio that sounds like them:

- :func:`reverberate`: room reverberation, convolution with a synthetic impulse response
  (:func:`exponential_ir`: a direct impulse followed by Gaussian noise whose energy decays
  exponentially, -60 dB after ``rt60_s``; Polack's statistical room model).
- :func:`add_noise`: additive noise (white or pink) at a given signal-to-noise ratio, dB.
- :func:`band_limit` / :func:`telephone`: a Butterworth band-pass; the telephone band
  is 300-3400 Hz (ITU-T G.712).
- :func:`lapel`: a lapel (chest-worn) microphone response: a high-pass at 100 Hz, a
  +4 dB chest resonance around 700 Hz and the high frequencies above 5 kHz attenuated
  (the mouth radiates them forwards, past a microphone below the chin).
- :func:`codec`: a codec-like degradation, 8-bit mu-law (G.711) at 8 kHz and back.
- :func:`random_channel`: one of these with random settings, for augmented copies.
- :func:`speed`: speed perturbation (Ko et al. 2015, Kaldi's ``speed`` copies): the signal
  played ``factor`` times faster, tempo, pitch and formants moving together, so a copy sounds
  like another speaker saying the same thing; the only function here that changes the length.

:func:`normalise_loudness` is a level normaliser rather than a channel: it scales a signal
so the RMS of its active frames (within 40 dB of the loudest frame) is ``target_dbfs``.

All functions take and return mono float signals ``[n]`` at ``sample_rate`` Hz, keep the
length (but :func:`speed`) and return float32; random ones take a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import signal as sps

from ser.signal import audio

#: Range of :func:`speed` factors accepted (a copy beyond it no longer sounds like speech).
SPEED_RANGE: tuple[float, float] = (0.5, 2.0)
#: Telephone band, Hz (ITU-T G.712).
TELEPHONE_BAND_HZ: tuple[float, float] = (300.0, 3400.0)
#: Channels :func:`random_channel` draws from.
CHANNELS: tuple[str, ...] = ("reverb", "noise", "telephone", "lapel", "codec")
#: Range of :func:`random_channel`'s reverberation times, s, and noise SNRs, dB.
RT60_RANGE_S: tuple[float, float] = (0.2, 0.8)
SNR_RANGE_DB: tuple[float, float] = (0.0, 20.0)
_EPS = 1e-12


def _mono(y: np.ndarray, name: str = "y") -> np.ndarray:
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a mono signal [n]; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    return arr


def _rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate < 1000:
        raise ValueError(f"sample_rate must be an integer rate in Hz (>= 1000); got {sample_rate!r}")
    return int(sample_rate)


def power(y: np.ndarray) -> float:
    """Mean square of a signal (its power, full scale = 1)."""
    arr = np.asarray(y, dtype=np.float64)
    return float(np.mean(arr ** 2)) if arr.size else 0.0


def exponential_ir(*, sample_rate: int, rt60_s: float, rng: np.random.Generator,
                   length_s: float | None = None) -> np.ndarray:
    """A synthetic room impulse response: direct sound, then exponentially decaying noise.

    Args:
        sample_rate: Hz.
        rt60_s: reverberation time, s (energy -60 dB after it); 0.05..3.
        rng: random generator of the diffuse tail.
        length_s: IR length, s; default ``rt60_s`` (the tail below -60 dB is dropped).

    Returns:
        float64 ``[n]`` with ``ir[0] == 1`` (the direct path).

    Raises:
        ValueError: ``rt60_s`` outside 0.05..3 s.
    """
    sr = _rate(sample_rate)
    if not 0.05 <= float(rt60_s) <= 3.0:
        raise ValueError(f"rt60_s must be a reverberation time in 0.05..3 s; got {rt60_s!r}")
    n = max(2, int(round((length_s or rt60_s) * sr)))
    t = np.arange(n) / sr
    # amplitude envelope: energy falls 60 dB over rt60 -> amplitude exp(-3 ln10 t / rt60)
    tail = rng.standard_normal(n) * np.exp(-3.0 * np.log(10.0) * t / float(rt60_s))
    tail *= 0.3  # diffuse energy below the direct sound at the start
    tail[0] = 1.0
    return tail


def reverberate(y: np.ndarray, sample_rate: int, *, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Room reverberation: ``y`` convolved with :func:`exponential_ir`, same length and RMS.

    Args:
        y: mono signal ``[n]``.
        sample_rate: Hz.
        rt60_s: reverberation time, s.
        rng: random generator of the impulse response.

    Returns:
        float32 ``[n]`` with the power of ``y``.
    """
    x = _mono(y)
    ir = exponential_ir(sample_rate=sample_rate, rt60_s=rt60_s, rng=rng)
    wet = sps.fftconvolve(x, ir)[: len(x)]
    return _match_power(wet, power(x))


def _match_power(y: np.ndarray, target_power: float) -> np.ndarray:
    p = power(y)
    gain = np.sqrt(target_power / p) if p > _EPS else 1.0
    return (y * gain).astype(np.float32)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise ``[n]`` by shaping white noise in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n=n)


def add_noise(y: np.ndarray, *, snr_db: float, rng: np.random.Generator, color: str = "white",
              noise: np.ndarray | None = None) -> np.ndarray:
    """Add noise at a signal-to-noise ratio: ``10 log10(P(y) / P(noise)) == snr_db``.

    Args:
        y: mono signal ``[n]`` (not silent).
        snr_db: SNR, dB (e.g. 0..20; any finite value).
        rng: random generator of the noise.
        color: ``"white"`` or ``"pink"`` (ignored when ``noise`` is given).
        noise: a noise recording to use instead (tiled or cut to ``n``).

    Returns:
        float32 ``[n]``, ``y`` plus the scaled noise.

    Raises:
        ValueError: silent ``y`` or ``noise``, non-finite SNR or an unknown colour.
    """
    x = _mono(y)
    if not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite; got {snr_db!r}")
    p = power(x)
    if p <= _EPS:
        raise ValueError("add_noise: the signal is silent, its SNR is undefined")
    if noise is not None:
        v = _mono(noise, "noise")
        if v.size == 0:
            raise ValueError("add_noise: noise is empty")
        v = np.resize(v, len(x))
    elif color == "white":
        v = rng.standard_normal(len(x))
    elif color == "pink":
        v = _pink(len(x), rng)
    else:
        raise ValueError(f"color must be 'white' or 'pink'; got {color!r}")
    pn = power(v)
    if pn <= _EPS:
        raise ValueError("add_noise: the noise is silent")
    v = v * np.sqrt(p / (pn * 10.0 ** (float(snr_db) / 10.0)))
    return (x + v).astype(np.float32)


def band_limit(y: np.ndarray, sample_rate: int, *, low_hz: float, high_hz: float, order: int = 8) -> np.ndarray:
    """Butterworth band-pass ``low_hz``..``high_hz`` (zero phase, ``order`` per edge, twice applied).

    Args:
        y: mono signal ``[n]``.
        sample_rate: Hz.
        low_hz: lower edge, Hz (> 0).
        high_hz: upper edge, Hz (< Nyquist).
        order: filter order.

    Returns:
        float32 ``[n]``.

    Raises:
        ValueError: edges not ``0 < low_hz < high_hz < sample_rate / 2``.
    """
    sr = _rate(sample_rate)
    if not 0.0 < low_hz < high_hz < sr / 2:
        raise ValueError(f"band edges must satisfy 0 < low_hz < high_hz < {sr / 2:g} Hz (Nyquist); "
                         f"got {low_hz!r}, {high_hz!r}")
    sos = sps.butter(int(order), [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    return sps.sosfiltfilt(sos, _mono(y)).astype(np.float32)


def telephone(y: np.ndarray, sample_rate: int) -> np.ndarray:
    """The telephone band (:data:`TELEPHONE_BAND_HZ`, 300-3400 Hz) of ``y``; float32 ``[n]``."""
    return band_limit(y, sample_rate, low_hz=TELEPHONE_BAND_HZ[0], high_hz=TELEPHONE_BAND_HZ[1])


def _peaking(f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """Second-order peaking equaliser (RBJ cookbook) as one SOS section."""
    a = 10.0 ** (gain_db / 40.0)
    w = 2 * np.pi * f0 / sr
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def lapel(y: np.ndarray, sample_rate: int) -> np.ndarray:
    """A lapel microphone's response: high-pass 100 Hz, +4 dB at 700 Hz, low-pass 5 kHz.

    Args:
        y: mono signal ``[n]``.
        sample_rate: Hz (> 10 kHz).

    Returns:
        float32 ``[n]``.
    """
    sr = _rate(sample_rate)
    if sr <= 10000:
        raise ValueError(f"lapel needs a rate above 10 kHz (its low-pass is at 5 kHz); got {sr}")
    sos = np.vstack([sps.butter(2, 100.0, btype="highpass", fs=sr, output="sos"),
                     _peaking(700.0, 4.0, 1.0, sr),
                     sps.butter(4, 5000.0, btype="lowpass", fs=sr, output="sos")])
    return sps.sosfilt(sos, _mono(y)).astype(np.float32)


def mu_law(y: np.ndarray, *, bits: int = 8) -> np.ndarray:
    """Mu-law companding quantisation to ``bits`` bits and back (G.711 at 8 bits); float32 ``[n]``.

    Samples are clipped to [-1, 1] first.
    """
    if not 2 <= int(bits) <= 16:
        raise ValueError(f"bits must be 2..16; got {bits!r}")
    levels = 2 ** int(bits)
    mu = levels - 1.0
    x = np.clip(_mono(y), -1.0, 1.0)
    c = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((c + 1.0) / 2.0 * mu) / mu * 2.0 - 1.0
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu).astype(np.float32)


def codec(y: np.ndarray, sample_rate: int, *, codec_rate: int = 8000, bits: int = 8) -> np.ndarray:
    """A codec-like degradation: resampled to ``codec_rate``, mu-law ``bits``, resampled back.

    Args:
        y: mono signal ``[n]``.
        sample_rate: Hz.
        codec_rate: the codec's rate, Hz (<= ``sample_rate``).
        bits: mu-law bits.

    Returns:
        float32 ``[n]`` (band-limited to ``codec_rate / 2``).
    """
    sr = _rate(sample_rate)
    if not 1000 <= int(codec_rate) <= sr:
        raise ValueError(f"codec_rate must be 1000..{sr} Hz; got {codec_rate!r}")
    x = _mono(y)
    low = audio.resample(x.astype(np.float32), orig_sr=sr, target_sr=int(codec_rate))
    back = audio.resample(mu_law(low, bits=bits), orig_sr=int(codec_rate), target_sr=sr)
    return audio.fix_length(np.asarray(back, dtype=np.float32), len(x))


def random_channel(y: np.ndarray, sample_rate: int, *, rng: np.random.Generator,
                   channels: tuple[str, ...] = CHANNELS) -> tuple[np.ndarray, dict[str, Any]]:
    """One channel of ``channels`` with random settings (reverberation time, SNR).

    Args:
        y: mono signal ``[n]``.
        sample_rate: Hz.
        rng: random generator of the choice, the settings and the noise.
        channels: names among :data:`CHANNELS`.

    Returns:
        ``(float32 [n], {"channel": name, ...settings})``.
    """
    unknown = [c for c in channels if c not in CHANNELS]
    if not channels or unknown:
        raise ValueError(f"channels must be a non-empty subset of {CHANNELS}; got {channels!r}")
    name = str(channels[int(rng.integers(len(channels)))])
    if name == "reverb":
        rt60 = float(rng.uniform(*RT60_RANGE_S))
        return reverberate(y, sample_rate, rt60_s=rt60, rng=rng), {"channel": name, "rt60_s": rt60}
    if name == "noise":
        snr = float(rng.uniform(*SNR_RANGE_DB))
        color = ("white", "pink")[int(rng.integers(2))]
        return add_noise(y, snr_db=snr, rng=rng, color=color), {"channel": name, "snr_db": snr, "color": color}
    if name == "telephone":
        return telephone(y, sample_rate), {"channel": name}
    if name == "lapel":
        return lapel(y, sample_rate), {"channel": name}
    return codec(y, sample_rate), {"channel": name}


def normalise_loudness(y: np.ndarray, *, target_dbfs: float = -23.0, active_db: float = 40.0,
                       frame: int = 400, peak: float = 0.99) -> np.ndarray:
    """Scale ``y`` so the RMS of its active frames is ``target_dbfs`` (dB re full scale).

    Active frames are those within ``active_db`` of the loudest frame (pauses do not
    count). The gain is lowered if the peak would exceed ``peak``.

    Args:
        y: mono signal ``[n]``.
        target_dbfs: RMS of the active frames after scaling, dBFS.
        active_db: frames quieter than the loudest by more than this are pauses, dB.
        frame: frame length, samples (25 ms at 16 kHz).
        peak: largest absolute sample allowed after scaling.

    Returns:
        float32 ``[n]``; a silent signal is returned unchanged.
    """
    x = _mono(y)
    if x.size == 0 or power(x) <= _EPS:
        return x.astype(np.float32)
    n = max(1, len(x) // frame)
    frames = x[: n * frame].reshape(n, -1) if len(x) >= frame else x[None, :]
    p = np.mean(frames ** 2, axis=1)
    active = p >= p.max() * 10.0 ** (-active_db / 10.0)
    rms = np.sqrt(np.mean(p[active]))
    gain = 10.0 ** (target_dbfs / 20.0) / max(rms, _EPS)
    gain = min(gain, peak / max(np.abs(x).max(), _EPS))
    return (x * gain).astype(np.float32)


def speed(y: np.ndarray, sample_rate: int, *, factor: float) -> np.ndarray:
    """``y`` played ``factor`` times faster (speed perturbation).

    The signal is resampled from ``sample_rate`` to ``sample_rate / factor`` (soxr, very high
    quality) and read at ``sample_rate`` again, so durations shrink by ``factor`` and every
    frequency (F0 and formants) rises by it: 1.1 is 10 % faster and about 1.65 semitones
    higher, 0.9 slower and lower.

    Args:
        y: mono signal ``[n]``.
        sample_rate: Hz.
        factor: speed ratio in :data:`SPEED_RANGE` (1: unchanged).

    Returns:
        float32 ``[round(n / factor)]`` (about; soxr's rounding) at ``sample_rate``.

    Raises:
        ValueError: a factor outside :data:`SPEED_RANGE`, a bad rate or a non-mono signal.
    """
    import soxr  # lazily: only speed copies need it

    y = _mono(y)
    sr = _rate(sample_rate)
    f = float(factor)
    if not SPEED_RANGE[0] <= f <= SPEED_RANGE[1]:
        raise ValueError(f"speed factor must be in [{SPEED_RANGE[0]:g}, {SPEED_RANGE[1]:g}]; got {factor!r}")
    if f == 1.0 or y.size == 0:
        return y.astype(np.float32, copy=True)
    return soxr.resample(y.astype(np.float64), sr, sr / f, quality="VHQ").astype(np.float32)
