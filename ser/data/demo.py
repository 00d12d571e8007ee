"""Deterministic synthetic demo data: an acted emotion corpus, a caregiver cohort, the truth.

Everything here is generated from one integer seed, so ``generate(out_dir, seed=0)`` writes
byte-identical files on every run (each speaker, utterance and recording draws from its own
random stream, keyed by name, so the same speaker sounds the same whatever the corpus size).

The voices come from :mod:`ser.data.synth` (source-filter synthesis with the emotion
prosody of the SER literature).

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
    >>> from ser.core import paths
    >>> from ser.data import demo
    >>> truth = demo.generate(paths.demo_dir(), seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import signal
from tqdm.auto import tqdm

from ser.core import atomic
from ser.data.labels import DEFAULT_LABELS
from ser.data.schema import LEVELS, MANIFEST_COLUMNS, PHASES
from ser.data.synth import (
    PROSODY,
    PROSODY_SD,
    check_sample_rate,
    patient_voice,
    random_voice,
    rms,
    stream_rng,
    synthesize_utterance,
)

#: Bump when the synthesis changes, so an old generation on disk is not reused.
GENERATOR_VERSION: int = 1

#: Emotions of the demo corpus and cohort: the study's four labels.
LABELS: tuple[str, ...] = DEFAULT_LABELS
#: Caregivers per level in the study (23 in all).
LEVEL_COUNTS: tuple[int, ...] = (2, 9, 4, 8)
ROLES: tuple[str, ...] = ("caregiver", "patient", "pause")

SEGMENT_COLUMNS: tuple[str, ...] = ("recording", "start_s", "end_s", "role", "emotion")

#: Shortest cohort recording that still holds a few utterances of each role, seconds.
MIN_RECORDING_S: float = 20.0
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


# --------------------------------------------------------------------------- generation


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def _write_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _to_pcm16(x), sample_rate, subtype="PCM_16", format="WAV")


def _noise(n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Low-passed ('room') noise of ``n`` samples at ``dbfs`` RMS."""
    x = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    return x * (10 ** (dbfs / 20) / (rms(x) or 1.0))


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
    check_sample_rate(sample_rate)
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
            voice = random_voice(spk, gender=gender, rng=stream_rng(seed, "speaker", spk))
            speakers[spk] = {"gender": gender, **{k: round(v, 4) for k, v in dataclasses.asdict(voice).items()
                                                  if isinstance(v, float)}}
            for emotion in LABELS:
                for j in range(1, params["utterances_per_emotion"] + 1):
                    rng = stream_rng(seed, "corpus", spk, emotion, j)
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
    z = np.array([stream_rng(seed, "caregiver-f0", cg).normal(0, CAREGIVER_F0_SD_ST) for cg in ids])
    lv_idx = np.array([LEVELS.index(lvl) for lvl in levels])
    for li in range(len(LEVELS)):
        z[lv_idx == li] -= z[lv_idx == li].mean()
    cohort_dir = root / "cohort"
    manifest, segments, caregivers = [], [], {}
    for cg, level, li, z_st in zip(ids, levels, lv_idx, z):
        vrng = stream_rng(seed, "caregiver", cg)
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
            rng = stream_rng(seed, "recording", cg, phase)
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
