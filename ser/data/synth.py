"""Synthetic speech for the demo data: a source-filter voice with emotion prosody.

Speech synthesis (source-filter, :func:`synthesize_utterance`)
    A Rosenberg glottal-flow pulse train follows an F0 contour (declination, per-syllable
    pitch accents, slow drift, an utterance-final fall or rise, cycle-to-cycle jitter and
    shimmer); its derivative (glottal flow + lip radiation) plus pulsed aspiration noise
    (breathiness) is gated by syllable-like envelopes, low-passed by a one-pole filter
    (spectral tilt), and filtered per syllable by a random vowel's F1-F4 resonators
    (Klatt resonators, scaled per speaker). Some syllables start with an unvoiced
    fricative (band-passed noise); some are followed by short pauses. Utterances are
    scaled to an absolute level (neutral speech at -26 dBFS RMS over its voiced part) so
    the loudness differences between emotions survive; only the rare utterance whose
    peak would pass 0.98 is scaled down.

Emotion prosody (:data:`PROSODY`), in the direction the SER literature reports
    (Scherer 2003, Speech Communication 40; Juslin & Laukka 2003, Psychol. Bull. 129),
    relative to neutral: angry +4 st F0, wide range, +6 dB, fast, flat tilt (bright), pressed
    voice, more jitter; happy +3 st, widest range, +3 dB, fast-ish; sad -2 st, narrow range,
    -5 dB, slow (~3.3 syllables/s), steep tilt (dark), breathy, more pauses. Every parameter
    is drawn per utterance around its class mean (:data:`PROSODY_SD`) and per speaker
    (base F0, formant scale, tilt, loudness, tempo), so the classes overlap: simple
    prosodic statistics separate them well above chance but far from perfectly.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal

#: Default utterance length range, seconds (drawn uniformly when no duration is given).
UTTERANCE_S: tuple[float, float] = (1.5, 3.5)
#: Level of neutral speech: RMS over the voiced part, dBFS.
REFERENCE_DBFS: float = -26.0
PEAK_MAX: float = 0.98

#: Reference vowel formants F1-F4 (Hz) of an adult male voice (after Peterson & Barney 1952).
VOWELS: Mapping[str, tuple[float, float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0, 3400.0),
    "e": (530.0, 1840.0, 2480.0, 3500.0),
    "i": (270.0, 2290.0, 3010.0, 3700.0),
    "o": (570.0, 840.0, 2410.0, 3300.0),
    "u": (300.0, 870.0, 2240.0, 3300.0),
    "ae": (660.0, 1720.0, 2410.0, 3450.0),
    "uh": (520.0, 1190.0, 2390.0, 3400.0),
}
FORMANT_BANDWIDTHS_HZ: tuple[float, float, float, float] = (80.0, 100.0, 150.0, 250.0)


@dataclass(frozen=True)
class EmotionProsody:
    """Mean prosody of one emotion class (per-utterance draws scatter around it).

    Attributes:
        f0_shift_st: median log-F0 of the utterance's voiced part re the speaker's base, semitones.
        f0_range_st: height of a full pitch accent, semitones.
        loudness_db: level relative to neutral speech, dB.
        rate_syll_s: speaking rate, syllables per second.
        tilt: one-pole low-pass coefficient on the glottal source (0.5 bright ... 0.9 dark).
        open_quotient: open fraction of the glottal cycle (low = pressed, high = breathy).
        jitter: cycle-to-cycle F0 perturbation, SD as a fraction of the period.
        shimmer: cycle-to-cycle amplitude perturbation, SD as a fraction.
        breathiness: aspiration noise RMS relative to the voiced source RMS.
        pause_prob: probability of a short pause after a syllable.
        formant_shift: multipliers of (F1, F2): pressed/spread lips raise them.
    """

    f0_shift_st: float
    f0_range_st: float
    loudness_db: float
    rate_syll_s: float
    tilt: float
    open_quotient: float
    jitter: float
    shimmer: float
    breathiness: float
    pause_prob: float
    formant_shift: tuple[float, float]


PROSODY: Mapping[str, EmotionProsody] = {
    "angry": EmotionProsody(4.0, 3.0, 6.0, 5.6, 0.55, 0.45, 0.020, 0.10, 0.04, 0.08, (1.06, 1.02)),
    "happy": EmotionProsody(3.0, 4.5, 3.0, 5.0, 0.66, 0.55, 0.012, 0.06, 0.06, 0.10, (1.03, 1.05)),
    "neutral": EmotionProsody(0.0, 2.0, 0.0, 4.4, 0.75, 0.60, 0.010, 0.05, 0.07, 0.12, (1.00, 1.00)),
    "sad": EmotionProsody(-2.0, 1.0, -5.0, 3.3, 0.86, 0.70, 0.014, 0.07, 0.20, 0.22, (0.96, 0.98)),
}
"""Emotion prosody means (Scherer 2003; Juslin & Laukka 2003)."""

#: Per-utterance spread of the prosody draws: SDs (st, dB, coefficient) or log-SDs (ratios).
PROSODY_SD: Mapping[str, float] = {
    "f0_shift_st": 1.0, "f0_range_log": 0.35, "loudness_db": 2.0, "rate_log": 0.15,
    "tilt": 0.06, "open_quotient": 0.05, "jitter_log": 0.35, "shimmer_log": 0.35,
    "breathiness_log": 0.4, "declination_st_s": 0.5,
}


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker.

    Attributes:
        speaker: speaker id (``f1``, ``m2``, ``p001`` ...).
        gender: ``"f"`` or ``"m"``.
        f0_base_hz: F0 of the speaker's neutral speech, Hz.
        formant_scale: vocal-tract scaling of all formants (adult male = 1.0).
        tilt: added to the emotion's source low-pass coefficient (+ = darker voice).
        loudness_db: speaker level relative to the reference, dB.
        rate_factor: speaking-rate multiplier (1 = typical).
        breathiness: multiplier of the aspiration noise.
        jitter: multiplier of jitter and shimmer.
    """

    speaker: str
    gender: str
    f0_base_hz: float
    formant_scale: float = 1.0
    tilt: float = 0.0
    loudness_db: float = 0.0
    rate_factor: float = 1.0
    breathiness: float = 1.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.gender not in ("f", "m"):
            raise ValueError(f"Voice {self.speaker!r}: gender must be 'f' or 'm'; got {self.gender!r}")
        if not 50.0 <= self.f0_base_hz <= 500.0:
            raise ValueError(f"Voice {self.speaker!r}: f0_base_hz must be in 50..500 Hz; got {self.f0_base_hz}")
        if not 0.7 <= self.formant_scale <= 1.5:
            raise ValueError(f"Voice {self.speaker!r}: formant_scale must be in 0.7..1.5; got {self.formant_scale}")
        if not 0.3 <= self.rate_factor <= 2.0:
            raise ValueError(f"Voice {self.speaker!r}: rate_factor must be in 0.3..2.0; got {self.rate_factor}")




def stream_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """Independent random stream for ``keys`` (stable across runs and corpus sizes)."""
    entropy = [int(seed)] + [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


@lru_cache(maxsize=8)
def _fricative_filters(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Band-pass SOS for /s/-like (3.5-7 kHz) and /sh/-like (2-4.5 kHz) noise."""
    nyq = sample_rate / 2
    s = signal.butter(2, [3500 / nyq, min(7000, 0.9 * nyq) / nyq], btype="band", output="sos")
    sh = signal.butter(2, [2000 / nyq, 4500 / nyq], btype="band", output="sos")
    return s, sh


def _resonators(formants: Sequence[float], bandwidths: Sequence[float], sample_rate: int) -> np.ndarray:
    """Cascade of Klatt resonators (unity gain at 0 Hz) as SOS rows, shape (n, 6)."""
    f = np.asarray(formants, float)
    bw = np.asarray(bandwidths, float)
    f = np.minimum(f, 0.45 * sample_rate)
    t = 1.0 / sample_rate
    c = -np.exp(-2 * np.pi * bw * t)
    b = 2 * np.exp(-np.pi * bw * t) * np.cos(2 * np.pi * f * t)
    a = 1.0 - b - c
    sos = np.zeros((len(f), 6))
    sos[:, 0] = a
    sos[:, 3] = 1.0
    sos[:, 4] = -b
    sos[:, 5] = -c
    return sos


def check_sample_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or not 16000 <= sample_rate <= 48000:
        raise ValueError(f"sample_rate must be an integer in 16000..48000 Hz (fricatives reach 7 kHz); "
                         f"got {sample_rate!r}")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _plan_syllables(duration_s: float, rate: float, pause_prob: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Syllable onsets and durations (s) filling the utterance between lead/tail silences."""
    lead, tail = rng.uniform(0.04, 0.12), rng.uniform(0.05, 0.15)
    avail = duration_s - lead - tail
    durs: list[float] = []
    gaps: list[float] = []
    total = 0.0
    while total < avail:
        d = float(np.clip(rng.gamma(8.0, 1.0 / (8.0 * rate)), 0.08, 0.5))
        g = float(rng.uniform(0.08, 0.30)) if rng.random() < pause_prob else 0.0
        durs.append(d)
        gaps.append(g)
        total += d + g
    if len(durs) > 1 and total - avail > 0.5 * (durs[-1] + gaps[-1]):
        total -= durs.pop() + gaps.pop()
    gaps[-1] = 0.0
    d_arr, g_arr = np.array(durs), np.array(gaps)
    scale = avail / (d_arr.sum() + g_arr.sum())
    d_arr, g_arr = d_arr * scale, g_arr * scale
    onsets = lead + np.concatenate([[0.0], np.cumsum(d_arr + g_arr)[:-1]])
    return onsets, d_arr


def synthesize_utterance(
    *,
    emotion: str,
    voice: Voice,
    rng: np.random.Generator,
    sample_rate: int,
    duration_s: float | None = None,
) -> np.ndarray:
    """Synthesise one speech-like utterance by source-filter synthesis.

    Args:
        emotion: one of :data:`LABELS`; sets the prosody (:data:`PROSODY`), drawn per call.
        voice: the speaker.
        rng: random stream; the same state gives the same samples.
        sample_rate: Hz (16000..48000).
        duration_s: length in seconds (0.5..30); default a draw from 1.5..3.5 s.

    Returns:
        float32 array, shape ``(round(duration_s * sample_rate),)``, in [-1, 1]; neutral
        speech has -26 dBFS RMS over its voiced part, other emotions keep their level offsets.

    Raises:
        ValueError: for an unknown emotion, a bad sample rate or duration.
    """
    if emotion not in PROSODY:
        raise ValueError(f"emotion must be one of {tuple(PROSODY)}; got {emotion!r}")
    check_sample_rate(sample_rate)
    if duration_s is None:
        duration_s = float(rng.uniform(*UTTERANCE_S))
    if not 0.5 <= duration_s <= 30.0:
        raise ValueError(f"duration_s must be in 0.5..30 s; got {duration_s!r}")
    sr = int(sample_rate)
    m, sd = PROSODY[emotion], PROSODY_SD
    n = int(round(duration_s * sr))

    # --- per-utterance prosody draws
    shift_st = m.f0_shift_st + rng.normal(0, sd["f0_shift_st"])
    range_st = m.f0_range_st * np.exp(rng.normal(0, sd["f0_range_log"]))
    loud_db = m.loudness_db + rng.normal(0, sd["loudness_db"])
    rate = float(np.clip(m.rate_syll_s * voice.rate_factor * np.exp(rng.normal(0, sd["rate_log"])), 2.0, 8.0))
    tilt = float(np.clip(m.tilt + voice.tilt + rng.normal(0, sd["tilt"]), 0.2, 0.96))
    oq = float(np.clip(m.open_quotient + rng.normal(0, sd["open_quotient"]), 0.35, 0.85))
    jitter = m.jitter * voice.jitter * np.exp(rng.normal(0, sd["jitter_log"]))
    shimmer = m.shimmer * voice.jitter * np.exp(rng.normal(0, sd["shimmer_log"]))
    breath = m.breathiness * voice.breathiness * np.exp(rng.normal(0, sd["breathiness_log"]))
    decl = max(0.0, rng.normal(1.0, sd["declination_st_s"]))

    # --- syllables: onset (maybe fricative) + voiced nucleus with a random vowel
    onsets, durs = _plan_syllables(duration_s, rate, m.pause_prob, rng)
    k = len(onsets)
    fric = rng.random(k) < 0.35
    fric_frac = np.where(fric, rng.uniform(0.25, 0.40, k), 0.05)
    s0 = np.round(onsets * sr).astype(np.int64)
    s1 = np.minimum(np.round((onsets + durs) * sr).astype(np.int64), n)
    v0 = np.minimum(np.round((onsets + durs * fric_frac) * sr).astype(np.int64), s1 - 1)
    vowel_names = list(VOWELS)
    vowels = rng.integers(len(vowel_names), size=k)
    accented = rng.random(k) < 0.45
    accent_st = range_st * np.where(accented, rng.uniform(0.6, 1.0, k), rng.uniform(0.0, 0.3, k))
    syl_gain = 10 ** ((np.where(accented, 2.0, 0.0) + rng.normal(0, 1.5, k)) / 20)
    syl_gain[-1] *= 10 ** (-2.0 / 20)

    # --- F0 contour at 200 frames/s, in semitones re the voice's base
    fr = 200.0
    nf = int(np.ceil(duration_s * fr)) + 2
    tf = np.arange(nf) / fr
    centres = (v0 + s1) / 2 / sr
    widths = np.maximum((s1 - v0) / sr * 0.35, 0.03)
    st = -decl * (tf - duration_s / 2)
    st += (accent_st[:, None] * np.exp(-0.5 * ((tf[None, :] - centres[:, None]) / widths[:, None]) ** 2)).sum(0)
    knots = int(duration_s * 4) + 2
    st += np.interp(tf, np.linspace(0, duration_s, knots), rng.normal(0, 0.35, knots))
    final = np.clip((tf - centres[-1]) / 0.25, 0.0, 1.0)
    st += (0.6 if rng.random() < 0.15 else -0.5) * range_st * final
    vstart, vend = v0 / sr, s1 / sr
    voiced_f = ((tf[:, None] >= vstart[None, :]) & (tf[:, None] < vend[None, :])).any(1)
    st -= np.median(st[voiced_f]) if voiced_f.any() else np.median(st)
    st += shift_st
    f0_frames = np.clip(voice.f0_base_hz * 2.0 ** (st / 12.0), 50.0, 600.0)
    t = np.arange(n) / sr
    f0 = np.interp(t, tf, f0_frames)

    # --- glottal source: Rosenberg flow with per-cycle jitter and shimmer
    cyc0 = (np.cumsum(f0) / sr).astype(np.int64)
    f0 = f0 * (1.0 + rng.normal(0, jitter, cyc0[-1] + 2)[cyc0])
    phase = np.cumsum(f0) / sr
    cyc = phase.astype(np.int64)
    frac = phase - cyc
    tp = 0.62 * oq
    tn = oq - tp
    flow = np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                    np.where(frac < oq, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0))
    flow *= np.clip(1.0 + rng.normal(0, shimmer, cyc[-1] + 2), 0.3, 2.0)[cyc]
    src = np.diff(flow, prepend=0.0)
    src += breath * rms(src) * rng.standard_normal(n) * (0.3 + flow)

    env = np.zeros(n)
    for i in range(k):
        length = s1[i] - v0[i]
        u = (np.arange(length) + 0.5) / length
        env[v0[i]:s1[i]] = syl_gain[i] * np.sin(np.pi * u ** 0.75) ** 0.6
    src = signal.lfilter([1.0 - tilt], [1.0, -tilt], src * env)

    # --- vocal tract: each syllable's excitation rings through its own vowel's formants
    tail = int(0.03 * sr)
    y = np.zeros(n + tail)
    bounds = np.append(s0[1:], n)
    fshift = np.array([m.formant_shift[0], m.formant_shift[1], 1.0, 1.0])
    bw = np.array(FORMANT_BANDWIDTHS_HZ) * (1.0 + 0.5 * min(breath, 1.0))
    for i in range(k):
        a, b = s0[i], bounds[i]
        if b <= a:
            continue
        formants = np.array(VOWELS[vowel_names[vowels[i]]]) * voice.formant_scale * fshift
        formants *= np.exp(rng.normal(0, 0.03, 4))
        sos = _resonators(formants, bw, sr)
        y[a:b + tail] += signal.sosfilt(sos, np.concatenate([src[a:b], np.zeros(tail)]))
    y = y[:n]
    active = env > 0.05
    voiced_rms = rms(y[active]) or 1.0

    # --- unvoiced fricative onsets
    s_sos, sh_sos = _fricative_filters(sr)
    fric_db = rng.uniform(-16.0, -8.0, k) + (3.0 if emotion == "angry" else 0.0)
    use_s = rng.random(k) < 0.6
    for i in np.flatnonzero(fric):
        a, b = s0[i], v0[i]
        if b - a < 8:
            continue
        u = (np.arange(b - a) + 0.5) / (b - a)
        burst = signal.sosfilt(s_sos if use_s[i] else sh_sos, rng.standard_normal(b - a))
        burst *= np.sin(np.pi * u) ** 0.8
        y[a:b] += burst * (voiced_rms * 10 ** (fric_db[i] / 20) / (rms(burst) or 1.0))

    # --- absolute level; scale down only what would clip
    y *= 10 ** ((REFERENCE_DBFS + voice.loudness_db + loud_db) / 20) / voiced_rms
    peak = float(np.max(np.abs(y)))
    if peak > PEAK_MAX:
        y *= PEAK_MAX / peak
    return y.astype(np.float32)


def random_voice(speaker: str, *, gender: str, rng: np.random.Generator,
                 f0_base_hz: float | None = None) -> Voice:
    """Draw a corpus or caregiver voice.

    Args:
        speaker: speaker id.
        gender: ``"f"`` (F0 180-240 Hz, formants x1.10-1.22) or ``"m"`` (95-140 Hz, x0.94-1.04).
        rng: random stream.
        f0_base_hz: fixed base F0 instead of a draw, Hz.

    Returns:
        The voice.
    """
    if gender not in ("f", "m"):
        raise ValueError(f"gender must be 'f' or 'm'; got {gender!r}")
    f0_lo, f0_hi, fs_lo, fs_hi = (180.0, 240.0, 1.10, 1.22) if gender == "f" else (95.0, 140.0, 0.94, 1.04)
    f0 = rng.uniform(f0_lo, f0_hi)
    return Voice(
        speaker=speaker, gender=gender,
        f0_base_hz=float(f0 if f0_base_hz is None else f0_base_hz),
        formant_scale=float(rng.uniform(fs_lo, fs_hi)),
        tilt=float(rng.normal(0, 0.04)),
        loudness_db=float(rng.normal(0, 1.5)),
        rate_factor=float(rng.uniform(0.88, 1.12)),
        breathiness=float(np.exp(rng.normal(0, 0.25))),
        jitter=float(np.exp(rng.normal(0, 0.2))),
    )


def patient_voice(speaker: str, *, rng: np.random.Generator) -> Voice:
    """An older man's voice: low (~100 Hz), slow, breathy, rough, a little quieter."""
    return Voice(
        speaker=speaker, gender="m",
        f0_base_hz=float(np.clip(100.0 * 2 ** (rng.normal(0, 1.0) / 12), 85.0, 120.0)),
        formant_scale=float(rng.uniform(0.92, 1.00)),
        tilt=float(0.05 + rng.normal(0, 0.02)),
        loudness_db=float(-4.0 + rng.normal(0, 1.0)),
        rate_factor=float(rng.uniform(0.70, 0.80)),
        breathiness=float(1.6 * np.exp(rng.normal(0, 0.2))),
        jitter=float(1.8 * np.exp(rng.normal(0, 0.2))),
    )
