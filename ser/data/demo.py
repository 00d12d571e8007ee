"""Deterministic synthetic demo data: an acted emotion corpus, a caregiver cohort, the truth.

Everything here is generated from one integer seed, so ``generate(out_dir, seed=0)`` writes
byte-identical files on every run (each speaker, utterance and recording draws from its own
random stream, keyed by name, so the same speaker sounds the same whatever the corpus size).

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

Corpus (``corpus/<emotion>/<speaker>_<nnn>.wav``)
    Speakers ``f1..fN`` (base F0 180-240 Hz, formants x1.10-1.22) and ``m1..mN``
    (95-140 Hz, x0.94-1.04), ``utterances_per_emotion`` utterances of 1.5-3.5 s per emotion.

Cohort (``cohort/<caregiver>_<phase>.wav``, ``manifest.csv``, ``segments.csv``)
    Caregivers ``p001..`` (all female voices) in the training levels untrained, beginner,
    intermediate, expert (2/9/4/8 of 23, in that order of ids; proportional with at least
    one per level for other sizes), each with a ``control`` and a ``care`` recording of
    ``recording_s`` seconds: caregiver utterances, utterances of the patient (an older man:
    ~100 Hz, slow, breathy, quieter, mostly neutral/sad), and pauses with low background
    noise. ``segments.csv`` is the ground truth per segment (role, emotion).

Planted design (``L`` = level index 0..3, untrained..expert)
    - Caregiver F0: base 210 Hz x 2^(N(0, 1.5)/12) per caregiver (the semitone offsets are
      centred within each level, so the sample itself holds no level difference); the care
      phase raises it by +2.0 st. The emotion F0 shifts are re-centred per recording (the
      duration-weighted mean shift of that recording's caregiver utterances is removed), so
      the emotion mix does not leak into F0: no level and no phase x level effect on F0.
    - Caregiver speech fraction of recording time: control 0.50, care 0.65, +0.04 per level
      step in both phases, plus a caregiver offset N(0, 0.03) shared by both phases.
      Patient speech: 0.10 of the time in both phases (no effect).
    - Emotion mix of caregiver utterances (quota-sampled, so each recording realises it):
      control (every level) neutral .55, happy .20, angry .10, sad .15; care: happy
      .25 + .10 L, angry .15 - .04 L, sad .15, neutral the rest (.45 - .06 L).
    - Energy has no direct term; it follows the emotion mix (loudness by emotion) and the
      speech fraction, so its effects are indirect and are not given a sign.

``truth.json`` lists these as ``effects`` (see :func:`planted_effects`): terms of
``feature ~ phase * level_index`` with phase treatment-coded (control = 0, care = 1) and
level_index = 0..3, i.e. ``phase`` = care - control at untrained, ``level`` = slope per
level step in the control phase, ``phase:level`` = extra slope in the care phase. ``sign``
0 marks a planted null that an analysis must not find; ``None`` marks a term whose
window-level value is indirect (not planted, not null).

Example:
    >>> from ser import demo, paths
    >>> truth = demo.generate(paths.demo_dir(), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import signal
from tqdm.auto import tqdm

from ser.core import atomic
from ser.data.schema import LEVELS, MANIFEST_COLUMNS, PHASES

#: Bump when the synthesis changes, so an old generation on disk is not reused.
GENERATOR_VERSION: int = 1

LABELS: tuple[str, ...] = ("angry", "happy", "neutral", "sad")
#: Caregivers per level in the study (23 in all).
LEVEL_COUNTS: tuple[int, ...] = (2, 9, 4, 8)
ROLES: tuple[str, ...] = ("caregiver", "patient", "pause")

SEGMENT_COLUMNS: tuple[str, ...] = ("recording", "start_s", "end_s", "role", "emotion")

#: Corpus utterance length range, seconds.
UTTERANCE_S: tuple[float, float] = (1.5, 3.5)
#: Shortest cohort recording that still holds a few utterances of each role, seconds.
MIN_RECORDING_S: float = 20.0
#: Level of neutral speech: RMS over the voiced part, dBFS.
REFERENCE_DBFS: float = -26.0
PEAK_MAX: float = 0.98
BACKGROUND_DBFS: float = -60.0  # cohort pauses
CORPUS_NOISE_DBFS: float = -70.0  # corpus noise floor (no digital silence)

# Planted cohort design (documented in the module docstring).
CAREGIVER_F0_HZ: float = 210.0
CAREGIVER_F0_SD_ST: float = 1.5
CARE_F0_SHIFT_ST: float = 2.0
SPEECH_RATIO: Mapping[str, float] = {"control": 0.50, "care": 0.65}
SPEECH_RATIO_PER_LEVEL: float = 0.04
SPEECH_RATIO_SD: float = 0.03
PATIENT_SPEECH_RATIO: float = 0.10
PATIENT_EMOTION_MIX: Mapping[str, float] = {"angry": 0.05, "happy": 0.05, "neutral": 0.60, "sad": 0.30}

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


# --------------------------------------------------------------------------- design


def level_counts(n_caregivers: int) -> dict[str, int]:
    """Caregivers per training level: the study's 2/9/4/8, scaled to ``n_caregivers``.

    Args:
        n_caregivers: cohort size (>= 4, so every level has at least one caregiver).

    Returns:
        ``{level: count}`` in :data:`LEVELS` order, summing to ``n_caregivers``.

    Raises:
        ValueError: if ``n_caregivers`` < 4.
    """
    if not isinstance(n_caregivers, (int, np.integer)) or n_caregivers < len(LEVELS):
        raise ValueError(f"n_caregivers must be an integer >= {len(LEVELS)} (one per training level); "
                         f"got {n_caregivers!r}")
    target = np.array(LEVEL_COUNTS, float) * n_caregivers / sum(LEVEL_COUNTS)
    counts = np.maximum(1, np.floor(target)).astype(int)
    while counts.sum() < n_caregivers:
        counts[int(np.argmax(target - counts))] += 1
    while counts.sum() > n_caregivers:
        slack = np.where(counts > 1, target - counts, np.inf)
        counts[int(np.argmin(slack))] -= 1
    return {lvl: int(c) for lvl, c in zip(LEVELS, counts)}


def emotion_mix(level_index: int, phase: str) -> dict[str, float]:
    """Planted emotion probabilities of caregiver utterances.

    Args:
        level_index: 0..3 (untrained..expert).
        phase: ``"control"`` or ``"care"``.

    Returns:
        ``{emotion: probability}`` over :data:`LABELS`, summing to 1.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}; got {phase!r}")
    if not 0 <= level_index < len(LEVELS):
        raise ValueError(f"level_index must be in 0..{len(LEVELS) - 1}; got {level_index!r}")
    if phase == "control":
        mix = {"angry": 0.10, "happy": 0.20, "neutral": 0.55, "sad": 0.15}
    else:
        lv = level_index
        mix = {"angry": 0.15 - 0.04 * lv, "happy": 0.25 + 0.10 * lv, "sad": 0.15}
        mix["neutral"] = 1.0 - sum(mix.values())
    return {e: round(float(mix[e]), 6) for e in LABELS}


def planned_speech_ratio(level_index: int, phase: str, offset: float = 0.0) -> float:
    """Planted caregiver speech fraction of recording time (clipped to 0.2..0.85)."""
    value = SPEECH_RATIO[phase] + SPEECH_RATIO_PER_LEVEL * level_index + offset
    return float(np.clip(value, 0.2, 0.85))


def planted_effects() -> list[dict[str, Any]]:
    """The planted effects and nulls, as written to ``truth.json["effects"]``.

    Terms are those of ``feature ~ phase * level_index`` (phase treatment-coded with
    control = 0; level_index 0..3): ``phase`` = care - control at untrained, ``level`` =
    per-step slope in control, ``phase:level`` = extra per-step slope in care.

    Returns:
        A list of ``{feature, term, value, unit, sign, description}``; ``sign`` 0 is a
        planted null, ``None`` an indirect effect without a planted sign.
    """
    prob = "probability of a caregiver utterance's emotion (window p_* dilute it)"
    f0_note = ("window f0_hz also holds the patient's voice (~100 Hz, 10 % of the time), whose "
               "share of speech falls slightly as caregiver speech rises")
    sr_note = "caregiver speech time / recording time; windows' speech_ratio adds the patient's 10 %"

    def eff(feature: str, term: str, value: float | None, unit: str, sign: int | None, description: str):
        return {"feature": feature, "term": term, "value": value, "unit": unit, "sign": sign,
                "description": description}

    mix = {(lv, ph): emotion_mix(lv, ph) for lv in range(len(LEVELS)) for ph in PHASES}

    def phase_diff(e: str) -> float:
        return round(mix[0, "care"][e] - mix[0, "control"][e], 6)

    def care_slope(e: str) -> float:
        return round(mix[1, "care"][e] - mix[0, "care"][e], 6)

    return [
        eff("f0_hz", "phase", CARE_F0_SHIFT_ST, "semitones", 1,
            f"caregiver F0 is {CARE_F0_SHIFT_ST} st higher in care (~+26 Hz at 210 Hz); {f0_note}"),
        eff("f0_hz", "level", 0.0, "semitones", 0,
            f"no level effect on caregiver F0 (base offsets centred per level); {f0_note}"),
        eff("f0_hz", "phase:level", 0.0, "semitones", 0,
            f"care raises F0 equally at every level; emotion F0 shifts re-centred per recording; {f0_note}"),
        eff("speech_ratio", "phase", SPEECH_RATIO["care"] - SPEECH_RATIO["control"], "fraction", 1,
            f"caregivers speak more in care; {sr_note}"),
        eff("speech_ratio", "level", SPEECH_RATIO_PER_LEVEL, "fraction per level", 1,
            f"trained caregivers speak more, in both phases; {sr_note}"),
        eff("speech_ratio", "phase:level", 0.0, "fraction per level", 0,
            f"the level slope is the same in both phases; {sr_note}"),
        eff("p_happy", "phase", phase_diff("happy"), "probability", 1,
            f"more happy utterances in care (also pushed up by the care F0 raise); {prob}"),
        eff("p_happy", "level", 0.0, "probability per level", 0,
            f"control mix is the same at every level; {prob}"),
        eff("p_happy", "phase:level", care_slope("happy"), "probability per level", 1,
            f"in care, happy rises with training; {prob}"),
        eff("p_angry", "phase", phase_diff("angry"), "probability", 1,
            f"at untrained, more angry utterances in care; {prob}"),
        eff("p_angry", "level", 0.0, "probability per level", 0,
            f"control mix is the same at every level; {prob}"),
        eff("p_angry", "phase:level", care_slope("angry"), "probability per level", -1,
            f"in care, angry falls with training; {prob}"),
        eff("p_neutral", "phase", phase_diff("neutral"), "probability", -1,
            f"fewer neutral utterances in care; {prob}"),
        eff("p_neutral", "level", 0.0, "probability per level", 0,
            f"control mix is the same at every level; {prob}"),
        eff("p_neutral", "phase:level", care_slope("neutral"), "probability per level", -1,
            f"in care, neutral falls with training; {prob}"),
        eff("p_sad", "phase", phase_diff("sad"), "probability", None,
            "sad share is 0.15 in both phases, but the care F0 raise makes speech sound less sad: "
            "a classifier's p_sad may fall in care (indirect, no planted sign)"),
        eff("p_sad", "level", 0.0, "probability per level", 0,
            f"control mix is the same at every level; {prob}"),
        eff("p_sad", "phase:level", care_slope("sad"), "probability per level", None,
            "sad share is constant, but the other emotions' shares change with level in care, "
            "so classifier confusions may move p_sad (indirect, no planted sign)"),
        *[eff("energy_db", term, None, "dB", None,
              "no direct term: loudness differs by emotion (angry +6, happy +3, sad -5 dB) and speech "
              "time rises in care and with level, so energy changes indirectly")
          for term in ("phase", "level", "phase:level")],
    ]


# --------------------------------------------------------------------------- synthesis


def _rng(seed: int, *keys: int | str) -> np.random.Generator:
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


def _check_sample_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or not 16000 <= sample_rate <= 48000:
        raise ValueError(f"sample_rate must be an integer in 16000..48000 Hz (fricatives reach 7 kHz); "
                         f"got {sample_rate!r}")


def _rms(x: np.ndarray) -> float:
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
        raise ValueError(f"emotion must be one of {LABELS}; got {emotion!r}")
    _check_sample_rate(sample_rate)
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
    src += breath * _rms(src) * rng.standard_normal(n) * (0.3 + flow)

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
    voiced_rms = _rms(y[active]) or 1.0

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
        y[a:b] += burst * (voiced_rms * 10 ** (fric_db[i] / 20) / (_rms(burst) or 1.0))

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


# --------------------------------------------------------------------------- generation


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def _write_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _to_pcm16(x), sample_rate, subtype="PCM_16", format="WAV")


def _noise(n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Low-passed ('room') noise of ``n`` samples at ``dbfs`` RMS."""
    x = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    return x * (10 ** (dbfs / 20) / (_rms(x) or 1.0))


def _quota(probs: Mapping[str, float], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` labels whose counts realise ``probs`` (largest remainder, random ties), shuffled."""
    names = list(probs)
    expected = np.array([probs[e] for e in names]) * n
    counts = np.floor(expected).astype(int)
    order = np.lexsort((rng.random(len(names)), -(expected - counts)))
    counts[order[: n - counts.sum()]] += 1
    labels = [e for e, c in zip(names, counts) for _ in range(c)]
    return [labels[i] for i in rng.permutation(len(labels))]


def _params(seed: int, speakers_per_gender: int, utterances_per_emotion: int, recording_s: float,
            n_caregivers: int, sample_rate: int) -> dict[str, Any]:
    def positive_int(name: str, value: Any, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        return int(value)

    seed = positive_int("seed", seed, 0)
    speakers_per_gender = positive_int("speakers_per_gender", speakers_per_gender, 1)
    utterances_per_emotion = positive_int("utterances_per_emotion", utterances_per_emotion, 1)
    level_counts(n_caregivers)  # validates n_caregivers
    _check_sample_rate(sample_rate)
    if (isinstance(recording_s, bool) or not isinstance(recording_s, (int, float, np.integer, np.floating))
            or not MIN_RECORDING_S <= recording_s <= 3600):
        raise ValueError(f"recording_s must be in {MIN_RECORDING_S:g}..3600 s so a recording holds "
                         f"several caregiver and patient utterances; got {recording_s!r}")
    return {"version": GENERATOR_VERSION, "seed": seed, "speakers_per_gender": speakers_per_gender,
            "utterances_per_emotion": utterances_per_emotion, "recording_s": float(recording_s),
            "n_caregivers": int(n_caregivers), "sample_rate": int(sample_rate)}


def _existing(out_dir: Path, params: Mapping[str, Any]) -> dict | None:
    """The truth of a complete generation with the same parameters in ``out_dir``, else None."""
    truth_path = out_dir / "truth.json"
    try:
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        if truth.get("generator") != dict(params):
            return None
        n_corpus = len(list((out_dir / "corpus").glob("*/*.wav")))
        manifest = pd.read_csv(out_dir / "cohort" / "manifest.csv")
        expected = len(LABELS) * 2 * params["speakers_per_gender"] * params["utterances_per_emotion"]
        if n_corpus != expected or len(manifest) != 2 * params["n_caregivers"]:
            return None
        if not all((out_dir / "cohort" / p).is_file() for p in manifest["path"]):
            return None
        if not (out_dir / "cohort" / "segments.csv").is_file():
            return None
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return None
    return truth


def _generate_corpus(root: Path, params: Mapping[str, Any], bar: tqdm) -> dict[str, dict]:
    seed, sr = params["seed"], params["sample_rate"]
    speakers: dict[str, dict] = {}
    for gender in ("f", "m"):
        for i in range(1, params["speakers_per_gender"] + 1):
            spk = f"{gender}{i}"
            voice = random_voice(spk, gender=gender, rng=_rng(seed, "speaker", spk))
            speakers[spk] = {"gender": gender, **{k: round(v, 4) for k, v in dataclasses.asdict(voice).items()
                                                  if isinstance(v, float)}}
            for emotion in LABELS:
                for j in range(1, params["utterances_per_emotion"] + 1):
                    rng = _rng(seed, "corpus", spk, emotion, j)
                    x = synthesize_utterance(emotion=emotion, voice=voice, rng=rng, sample_rate=sr)
                    x = x + _noise(len(x), CORPUS_NOISE_DBFS, rng)
                    _write_wav(root / "corpus" / emotion / f"{spk}_{j:03d}.wav", x, sr)
                    bar.update(1)
    return speakers


def _timeline(recording_s: float, caregiver_ratio: float, rng: np.random.Generator,
              sample_rate: int) -> list[tuple[int, int, str]]:
    """Segments ``(start_sample, end_sample, role)`` tiling the recording."""
    t_cg, t_pt = caregiver_ratio * recording_s, PATIENT_SPEECH_RATIO * recording_s
    t_pause = recording_s - t_cg - t_pt
    d_cg = rng.uniform(1.5, 3.5, max(1, round(t_cg / 2.5)))
    d_pt = rng.uniform(1.0, 3.0, max(1, round(t_pt / 2.0)))
    d_cg *= t_cg / d_cg.sum()
    d_pt *= t_pt / d_pt.sum()
    roles = np.array(["caregiver"] * len(d_cg) + ["patient"] * len(d_pt))
    durs = np.concatenate([d_cg, d_pt])
    order = rng.permutation(len(durs))
    roles, durs = roles[order], durs[order]
    gaps = rng.dirichlet(np.ones(len(durs) + 1)) * t_pause
    seq_roles = ["pause"]
    seq_durs = [gaps[0]]
    for r, d, g in zip(roles, durs, gaps[1:]):
        seq_roles += [str(r), "pause"]
        seq_durs += [d, g]
    edges = np.round(np.concatenate([[0.0], np.cumsum(seq_durs)]) * sample_rate).astype(np.int64)
    edges[-1] = int(round(recording_s * sample_rate))
    return [(int(a), int(b), r) for a, b, r in zip(edges[:-1], edges[1:], seq_roles) if b > a]


def _generate_cohort(root: Path, params: Mapping[str, Any], bar: tqdm) -> dict[str, dict]:
    seed, sr, rec_s = params["seed"], params["sample_rate"], params["recording_s"]
    counts = level_counts(params["n_caregivers"])
    levels = [lvl for lvl in LEVELS for _ in range(counts[lvl])]
    ids = [f"p{i:03d}" for i in range(1, len(levels) + 1)]
    # caregiver F0 offsets (semitones), centred within each level: no level effect in the sample
    z = np.array([_rng(seed, "caregiver-f0", cg).normal(0, CAREGIVER_F0_SD_ST) for cg in ids])
    lv_idx = np.array([LEVELS.index(lvl) for lvl in levels])
    for li in range(len(LEVELS)):
        z[lv_idx == li] -= z[lv_idx == li].mean()
    cohort_dir = root / "cohort"
    manifest, segments, caregivers = [], [], {}
    for cg, level, li, z_st in zip(ids, levels, lv_idx, z):
        vrng = _rng(seed, "caregiver", cg)
        voice = random_voice(cg, gender="f", rng=vrng, f0_base_hz=CAREGIVER_F0_HZ * 2 ** (z_st / 12))
        patient = patient_voice(f"{cg}-patient", rng=vrng)
        offset = float(vrng.normal(0, SPEECH_RATIO_SD))
        info: dict[str, Any] = {
            "level": level, "level_index": int(li), "f0_base_hz": round(voice.f0_base_hz, 3),
            "formant_scale": round(voice.formant_scale, 4), "loudness_db": round(voice.loudness_db, 3),
            "speech_ratio_offset": round(offset, 4),
            "speech_ratio": {ph: round(planned_speech_ratio(int(li), ph, offset), 4) for ph in PHASES},
            "patient_f0_base_hz": round(patient.f0_base_hz, 3), "recordings": {},
        }
        for phase in PHASES:
            rec = f"{cg}_{phase}"
            rng = _rng(seed, "recording", cg, phase)
            ratio = planned_speech_ratio(int(li), phase, offset)
            segs = _timeline(rec_s, ratio, rng, sr)
            cg_segs = [s for s in segs if s[2] == "caregiver"]
            emotions = dict(zip(cg_segs, _quota(emotion_mix(int(li), phase), len(cg_segs), rng)))
            pt_segs = [s for s in segs if s[2] == "patient"]
            emotions.update(zip(pt_segs, rng.choice(list(PATIENT_EMOTION_MIX), size=len(pt_segs),
                                                    p=list(PATIENT_EMOTION_MIX.values()))))
            # re-centre the emotion F0 shifts (duration-weighted) so the mix does not move F0
            w = np.array([b - a for a, b, _ in cg_segs], float)
            comp = float(np.dot(w, [PROSODY[emotions[s]].f0_shift_st for s in cg_segs]) / w.sum())
            shift = (CARE_F0_SHIFT_ST if phase == "care" else 0.0) - comp
            cg_voice = dataclasses.replace(voice, f0_base_hz=voice.f0_base_hz * 2 ** (shift / 12))
            x = _noise(int(round(rec_s * sr)), BACKGROUND_DBFS, rng)
            for a, b, role in segs:
                if role == "pause":
                    continue
                v = cg_voice if role == "caregiver" else patient
                x[a:b] += synthesize_utterance(emotion=str(emotions[a, b, role]), voice=v, rng=rng,
                                               sample_rate=sr, duration_s=(b - a) / sr)
            _write_wav(cohort_dir / f"{rec}.wav", x, sr)
            manifest.append({"recording": rec, "caregiver": cg, "level": level, "phase": phase,
                             "session": 1, "path": f"{rec}.wav"})
            for a, b, role in segs:
                segments.append({"recording": rec, "start_s": a / sr, "end_s": b / sr, "role": role,
                                 "emotion": str(emotions.get((a, b, role), ""))})
            n = len(x)
            info["recordings"][phase] = {
                "recording": rec,
                "caregiver_speech_ratio": round(sum(b - a for a, b, _ in cg_segs) / n, 4),
                "patient_speech_ratio": round(sum(b - a for a, b, _ in pt_segs) / n, 4),
                "n_caregiver_utterances": len(cg_segs),
                "caregiver_emotion_counts": {e: sum(emotions[s] == e for s in cg_segs) for e in LABELS},
                "f0_shift_st": CARE_F0_SHIFT_ST if phase == "care" else 0.0,
                "f0_compensation_st": round(-comp, 4),
            }
            bar.update(1)
        caregivers[cg] = info
    atomic.atomic_write_csv(cohort_dir / "manifest.csv", pd.DataFrame(manifest, columns=list(MANIFEST_COLUMNS)))
    atomic.atomic_write_csv(cohort_dir / "segments.csv", pd.DataFrame(segments, columns=list(SEGMENT_COLUMNS)),
                                float_format="%.7f")
    return caregivers


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished ``src`` to ``dst``; an older generation there is removed afterwards."""
    old = dst.parent / f".{dst.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    if old.exists():
        shutil.rmtree(old)


def generate(
    out_dir: Path,
    *,
    seed: int = 0,
    speakers_per_gender: int = 4,
    utterances_per_emotion: int = 12,
    recording_s: float = 120.0,
    n_caregivers: int = 23,
    sample_rate: int = 16000,
    progress: bool = True,
) -> dict:
    """Generate the demo corpus, cohort and truth into ``out_dir`` (see the module docstring).

    Everything is written into ``.<name>.partial`` next to ``out_dir`` and moved into place
    only when complete, so a crash never leaves a half corpus. If ``out_dir`` already holds
    a complete generation with the same parameters, nothing is written.

    Args:
        out_dir: target folder (e.g. ``paths.demo_dir()``); must be absent, empty, or a
            previous generation (holding ``truth.json``).
        seed: random seed (>= 0); the same seed gives byte-identical files.
        speakers_per_gender: corpus speakers ``f1..fN`` and ``m1..mN``.
        utterances_per_emotion: corpus utterances per speaker and emotion.
        recording_s: length of each cohort recording, seconds (>= 20).
        n_caregivers: cohort size (>= 4); levels split 2/9/4/8 of 23.
        sample_rate: Hz (16000..48000).
        progress: show a progress bar.

    Returns:
        The truth dict, also written to ``out_dir/truth.json``.

    Raises:
        ValueError: for an invalid option (the message names it).
        FileExistsError: if ``out_dir`` holds other files than a previous generation.
    """
    params = _params(seed, speakers_per_gender, utterances_per_emotion, recording_s, n_caregivers, sample_rate)
    out_dir = Path(out_dir).expanduser().resolve()
    existing = _existing(out_dir, params)
    if existing is not None:
        return existing
    if out_dir.exists() and not (out_dir / "truth.json").is_file() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} holds files but no demo generation (truth.json); "
                              "choose an empty or new folder for the demo data")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    n_items = 2 * len(LABELS) * params["speakers_per_gender"] * params["utterances_per_emotion"]
    n_items += 2 * params["n_caregivers"]
    try:
        with tqdm(total=n_items, desc="demo data", unit="file", disable=not progress) as bar:
            speakers = _generate_corpus(tmp, params, bar)
            caregivers = _generate_cohort(tmp, params, bar)
        truth = {
            "generator": params,
            "labels": list(LABELS),
            "levels": list(LEVELS),
            "phases": list(PHASES),
            "sample_rate": params["sample_rate"],
            "speakers": speakers,
            "prosody": {e: dataclasses.asdict(p) for e, p in PROSODY.items()},
            "prosody_sd": dict(PROSODY_SD),
            "design": {
                "caregiver_f0_hz": CAREGIVER_F0_HZ, "caregiver_f0_sd_st": CAREGIVER_F0_SD_ST,
                "care_f0_shift_st": CARE_F0_SHIFT_ST, "speech_ratio": dict(SPEECH_RATIO),
                "speech_ratio_per_level": SPEECH_RATIO_PER_LEVEL, "speech_ratio_sd": SPEECH_RATIO_SD,
                "patient_speech_ratio": PATIENT_SPEECH_RATIO, "patient_emotion_mix": dict(PATIENT_EMOTION_MIX),
                "level_counts": level_counts(params["n_caregivers"]),
            },
            "caregivers": caregivers,
            "emotion_mix": {lvl: {ph: emotion_mix(i, ph) for ph in PHASES} for i, lvl in enumerate(LEVELS)},
            "effects_coding": ("terms of feature ~ phase * level_index, phase treatment-coded (control=0, "
                               "care=1), level_index 0..3 (untrained..expert): 'phase' = care - control at "
                               "untrained; 'level' = slope per level step in control; 'phase:level' = extra "
                               "slope per level step in care. sign 0 = planted null; None = indirect."),
            "effects": planted_effects(),
        }
        atomic.atomic_write_json(tmp / "truth.json", truth)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads((out_dir / "truth.json").read_text(encoding="utf-8"))
