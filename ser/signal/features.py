"""Per-window prosody: F0, energy and speech activity (descriptors, not model input).

Each track is computed once over a whole signal (or one block of a long recording)
on its own frame grid, then summarised per analysis window by frame indices: a frame
belongs to window ``[start, start + window_s)`` when its centre time falls inside.
Nothing is recomputed per window, so overlapping windows cost almost nothing extra.

Tracks:

- **F0** (:func:`f0_track`): Praat's autocorrelation pitch (Boersma 1993) through
  parselmouth (``Sound.to_pitch_ac``, Praat's default voicing settings), or
  probabilistic YIN (:func:`librosa.pyin`, slower) with ``method="pyin"``. Unvoiced
  frames are NaN. Praat's silence threshold is relative to the signal's peak, so a
  block is judged against its own peak.
- **Energy** (:func:`rms_db`): RMS of 25 ms frames every 10 ms, in dB re digital full
  scale (a full-scale square wave is 0 dB, a full-scale sine -3 dB), floored at
  :data:`ENERGY_FLOOR_DB`.
- **Speech activity** (:func:`speech_activity`): WebRTC's GMM voice-activity detector
  (``webrtcvad`` from the ``webrtcvad-wheels`` package: packaged, offline, no model
  download) in mode 2 (of 0-3) on 30 ms frames of 16-bit PCM; audio at a rate it does
  not take is resampled to 16 kHz for it. WebRTC keeps a frame "speech" for 90-150 ms
  after each offset (its hangover); energy trimming rule: in every run of speech frames,
  the leading and trailing frames more than ``trim_db`` (30 dB) below the run's loudest
  frame are set to non-speech, which removes that bias on pauses with a noise floor at
  least 30 dB below speech. Frames below -70 dBFS RMS are never speech (webrtcvad is
  erratic on digital silence).
  Any voice counts as speech (the detector does not tell speakers apart), and short
  pauses inside an utterance count as non-speech.

Optional tracks (off by default; each adds columns after the default ones):

- **Voice quality** (``voice_quality=True``, :data:`VOICE_QUALITY_COLUMNS`): Praat's
  glottal pulses (``To PointProcess (cc)`` from the same autocorrelation pitch track)
  give ``jitter_local`` and ``shimmer_local`` per window (fractions, Praat's voice-report
  settings: periods 0.1-20 ms, period factor 1.3, amplitude factor 1.6; pulses exist
  only in voiced stretches); ``hnr_db`` is the mean of Praat's ``To Harmonicity (cc)``
  (default settings) over the window's periodic frames (Praat's -200 dB "unvoiced"
  frames are left out). NaN when a window has too few pulses or periodic frames.
  Slow: Praat's harmonicity alone costs several times all the default tracks.
- **eGeMAPS** (``egemaps=True``, :func:`egemaps_columns`): openSMILE's eGeMAPSv02
  low-level descriptors (25 tracks, 10 ms frames), averaged per window. Descriptors
  named ``*_sma3nz`` are defined on voiced frames only, so they are averaged over the
  frames openSMILE itself calls voiced (``F0semitoneFrom27.5Hz_sma3nz > 0``), as
  eGeMAPS's own functionals do; the others over all frames.

Window columns (:data:`FEATURE_COLUMNS`): ``f0_hz`` (median F0 over the window's
voiced frames, NaN when none), ``f0_mean_hz``, ``f0_std_hz`` (population SD, Hz),
``voiced_ratio`` (voiced / all F0 frames), ``energy_db`` (mean frame dB),
``energy_std_db`` (population SD, dB), ``energy_max_db``, ``speech_ratio``
(speech / all VAD frames); :func:`feature_columns` lists them with the optional ones.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import MutableMapping
from typing import Any

import numpy as np
import pandas as pd
import soxr

from ser.core import timing

#: F0 trackers :func:`f0_track` knows.
F0_METHODS: tuple[str, ...] = ("praat", "pyin")
#: Columns of :func:`window_features`, in order.
FEATURE_COLUMNS: tuple[str, ...] = (
    "f0_hz", "f0_mean_hz", "f0_std_hz", "voiced_ratio",
    "energy_db", "energy_std_db", "energy_max_db", "speech_ratio",
)
#: Sampling rates webrtcvad accepts (other rates are resampled to 16 kHz for it).
VAD_RATES: tuple[int, ...] = (8000, 16000, 32000, 48000)
#: Frame lengths webrtcvad accepts (ms).
VAD_FRAME_MS: tuple[int, ...] = (10, 20, 30)
#: Default frame step of the F0, energy and voice-quality tracks (s).
TRACK_HOP_S: float = 0.01
#: Default webrtcvad frame length (ms).
VAD_FRAME_DEFAULT_MS: int = 30
#: Energy of digital silence (dB re full scale).
ENERGY_FLOOR_DB: float = -100.0
#: Optional voice-quality columns (``voice_quality=True``).
VOICE_QUALITY_COLUMNS: tuple[str, ...] = ("jitter_local", "shimmer_local", "hnr_db")
#: openSMILE eGeMAPSv02 low-level descriptors, in openSMILE's order.
EGEMAPS_LLDS: tuple[str, ...] = (
    "Loudness_sma3", "alphaRatio_sma3", "hammarbergIndex_sma3", "slope0-500_sma3",
    "slope500-1500_sma3", "spectralFlux_sma3", "mfcc1_sma3", "mfcc2_sma3", "mfcc3_sma3",
    "mfcc4_sma3", "F0semitoneFrom27.5Hz_sma3nz", "jitterLocal_sma3nz", "shimmerLocaldB_sma3nz",
    "HNRdBACF_sma3nz", "logRelF0-H1-H2_sma3nz", "logRelF0-H1-A3_sma3nz", "F1frequency_sma3nz",
    "F1bandwidth_sma3nz", "F1amplitudeLogRelF0_sma3nz", "F2frequency_sma3nz",
    "F2bandwidth_sma3nz", "F2amplitudeLogRelF0_sma3nz", "F3frequency_sma3nz",
    "F3bandwidth_sma3nz", "F3amplitudeLogRelF0_sma3nz",
)
#: Praat voice-report settings for jitter/shimmer: shortest/longest period (s), period
#: factor, amplitude factor.
PRAAT_PERIOD_FLOOR_S, PRAAT_PERIOD_CEILING_S, PRAAT_PERIOD_FACTOR, PRAAT_AMPLITUDE_FACTOR = (
    1e-4, 0.02, 1.3, 1.6)
#: Windows summarised per vectorised chunk (bounds memory for tiny hops).
_CHUNK_ELEMENTS: int = 1 << 22


def egemaps_columns() -> tuple[str, ...]:
    """Window columns of the eGeMAPS option: ``egemaps_<descriptor>_mean``."""
    return tuple(f"egemaps_{name}_mean" for name in EGEMAPS_LLDS)


def feature_columns(*, voice_quality: bool = False, egemaps: bool = False) -> list[str]:
    """Columns :func:`window_features` returns for these options, in order.

    Args:
        voice_quality: include :data:`VOICE_QUALITY_COLUMNS`.
        egemaps: include :func:`egemaps_columns`.
    """
    return [*FEATURE_COLUMNS, *(VOICE_QUALITY_COLUMNS if voice_quality else ()),
            *(egemaps_columns() if egemaps else ())]


def frame_alignment(sr: int) -> int:
    """Samples per step of the common grid of the default frames at ``sr``: the least
    common multiple of the track hop (:data:`TRACK_HOP_S`) and the webrtcvad frame
    (:data:`VAD_FRAME_DEFAULT_MS`), so that blocks of a long recording cut at multiples
    of it put every track's frames where one pass over the whole recording would."""
    return math.lcm(max(1, round(TRACK_HOP_S * sr)), max(1, sr * VAD_FRAME_DEFAULT_MS // 1000))


# ---------------------------------------------------------------------------- checks

def _as_signal(y: np.ndarray, sr: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be mono audio of shape (n,); got shape {y.shape} "
                         "(mix channels first, e.g. ser.signal.audio.load(..., mono=True))")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sr must be a positive integer (Hz); got {sr!r}")
    if not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"y must be float audio in [-1, 1]; got dtype {y.dtype}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite samples; clean the audio first")
    return y


def _check_hop(hop_s: float) -> None:
    if not (hop_s > 0):
        raise ValueError(f"hop_s must be > 0 seconds; got {hop_s!r}")


# ---------------------------------------------------------------------------- tracks

def f0_track(
    y: np.ndarray,
    sr: int,
    *,
    method: str = "praat",
    fmin: float = 75.0,
    fmax: float = 600.0,
    hop_s: float = TRACK_HOP_S,
) -> tuple[np.ndarray, np.ndarray]:
    """Fundamental-frequency track.

    Args:
        y: mono float audio, shape ``(n,)``.
        sr: sampling rate (Hz).
        method: ``"praat"`` (autocorrelation, default) or ``"pyin"``.
        fmin: lowest F0 searched (Hz); Praat's analysis window is ``3 / fmin`` s.
        fmax: highest F0 searched (Hz).
        hop_s: frame step (s).

    Returns:
        ``(times, f0)``: frame centre times (s from the start of ``y``) and F0 (Hz),
        both float64 ``(n_frames,)``; NaN marks unvoiced frames. Empty when ``y`` is
        shorter than one analysis window.

    Raises:
        ValueError: unknown method, ``fmin >= fmax`` or bad hop.

    Example:
        >>> t, f0 = f0_track(y, 16000)                # doctest: +SKIP
        >>> float(np.nanmedian(f0))                   # doctest: +SKIP
        201.3
    """
    y = _as_signal(y, sr)
    _check_f0_options(sr, method=method, fmin=fmin, fmax=fmax, hop_s=hop_s)
    empty = (np.zeros(0), np.zeros(0))
    if method == "praat":
        praat = praat_pitch(y, sr, fmin=fmin, fmax=fmax, hop_s=hop_s)
        if praat is None:
            return empty
        return _pitch_arrays(praat[1])
    import librosa

    hop_n = max(1, int(round(hop_s * sr)))
    frame_n = int(2 ** np.ceil(np.log2(max(4.0 * sr / fmin, 1024))))
    if len(y) < frame_n:
        return empty
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0, _, _ = librosa.pyin(y.astype(np.float32), fmin=fmin, fmax=fmax, sr=sr,
                                frame_length=frame_n, hop_length=hop_n, center=False)
    times = (np.arange(len(f0)) * hop_n + frame_n / 2) / sr
    return times, np.asarray(f0, dtype=np.float64)


def _check_f0_options(sr: int, *, method: str, fmin: float, fmax: float, hop_s: float) -> None:
    _check_hop(hop_s)
    if method not in F0_METHODS:
        raise ValueError(f"f0 method must be one of {F0_METHODS}; got {method!r}")
    if not (0 < fmin < fmax):
        raise ValueError(f"need 0 < fmin < fmax (Hz); got fmin={fmin}, fmax={fmax}")
    if fmax >= sr / 2:
        raise ValueError(f"fmax={fmax} Hz must be below the Nyquist frequency {sr / 2:g} Hz")


def praat_pitch(y: np.ndarray, sr: int, *, fmin: float, fmax: float,
                hop_s: float) -> tuple[Any, Any] | None:
    """Praat ``(Sound, Pitch)`` of ``y`` cut to a fixed frame phase; None when too short.

    The Sound holds the first :func:`praat_length` samples of ``y`` (float64); the Pitch is
    ``To Pitch (ac)`` every ``hop_s`` s between ``fmin`` and ``fmax`` Hz with Praat's
    default voicing settings. :func:`window_features` takes such a pair (``praat=``), so
    a caller that also needs the pitch (the PSOLA shift of a pitch-normalised model,
    :func:`ser.signal.pitchnorm.shift_pitch_praat`) analyses the block once.
    """
    import parselmouth

    n_use = praat_length(len(y), sr, window_s=3.0 / fmin, hop_s=hop_s)
    if n_use <= 0:
        return None
    snd = parselmouth.Sound(y[:n_use].astype(np.float64), sampling_frequency=float(sr))
    return snd, snd.to_pitch_ac(time_step=hop_s, pitch_floor=fmin, pitch_ceiling=fmax)


def _pitch_arrays(pitch: Any) -> tuple[np.ndarray, np.ndarray]:
    """Frame times and F0 (NaN when unvoiced) of a Praat Pitch."""
    f0 = pitch.selected_array["frequency"].astype(np.float64)
    f0[f0 <= 0] = np.nan
    return np.asarray(pitch.xs(), dtype=np.float64), f0


def praat_length(n: int, sr: int, *, window_s: float, hop_s: float) -> int:
    """Samples to give Praat so that its frame grid has a fixed phase.

    Praat centres its frames in the signal: with duration ``D``, analysis window
    ``W`` and step ``dt`` it makes ``floor((D - W) / dt) + 1`` frames, the first at
    ``(D - (n_frames - 1) dt) / 2``. Cutting ``D`` to ``(m + frac(W/dt) + 1/2) dt``
    puts ``(D - W) / dt`` half-way between integers (no float-rounding flips) and the
    first frame at ``(W/dt + 1/2) dt / 2`` whatever ``m`` is, so blocks that start on
    the ``dt`` grid give frames on one common grid. At most one step is dropped.
    """
    w = window_s / hop_s
    hop_n = hop_s * sr
    m = math.floor(n / hop_n - (w % 1.0) - 0.5)
    if m < math.ceil(w):
        return 0
    return min(n, int(round((m + (w % 1.0) + 0.5) * hop_n)))


def rms_db(
    y: np.ndarray,
    sr: int,
    *,
    frame_s: float = 0.025,
    hop_s: float = TRACK_HOP_S,
    floor_db: float = ENERGY_FLOOR_DB,
) -> tuple[np.ndarray, np.ndarray]:
    """Short-time RMS energy in dB re digital full scale.

    Frame ``j`` covers samples ``[j * hop_n, j * hop_n + frame_n)``; only whole frames
    are returned.

    Args:
        y: mono float audio, shape ``(n,)``.
        sr: sampling rate (Hz).
        frame_s: frame length (s).
        hop_s: frame step (s).
        floor_db: lowest value returned (dB), e.g. for digital silence.

    Returns:
        ``(times, db)``: frame centre times (s) and ``20 log10(rms)`` (dB), float64.
    """
    y = _as_signal(y, sr)
    _check_hop(hop_s)
    frame_n = max(1, int(round(frame_s * sr)))
    hop_n = max(1, int(round(hop_s * sr)))
    if len(y) < frame_n:
        return np.zeros(0), np.zeros(0)
    n_frames = (len(y) - frame_n) // hop_n + 1
    cs = np.concatenate(([0.0], np.cumsum(np.square(y, dtype=np.float64))))
    starts = np.arange(n_frames) * hop_n
    power = np.maximum((cs[starts + frame_n] - cs[starts]) / frame_n, 0.0)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(power)
    db = np.maximum(db, floor_db)
    return (starts + frame_n / 2) / sr, db


def speech_activity(
    y: np.ndarray,
    sr: int,
    *,
    frame_ms: int = VAD_FRAME_DEFAULT_MS,
    aggressiveness: int = 2,
    trim_db: float | None = 30.0,
    min_db: float = -70.0,
) -> np.ndarray:
    """Speech/non-speech decision per frame with WebRTC's VAD.

    Frame ``j`` covers ``[j * frame_ms, (j + 1) * frame_ms)`` ms of ``y``. Audio at a
    rate webrtcvad does not accept is resampled to 16 kHz for the detector only.

    Args:
        y: mono float audio in [-1, 1], shape ``(n,)``.
        sr: sampling rate (Hz).
        frame_ms: 10, 20 or 30 ms.
        aggressiveness: 0 (keeps most speech) … 3 (rejects most non-speech).
        trim_db: drop a speech run's leading/trailing frames more than this many dB
            below the run's loudest frame (removes the detector's hangover);
            ``None`` keeps webrtcvad's raw decisions.
        min_db: frames quieter than this (dB re full scale RMS) are never speech;
            webrtcvad's decisions on digital silence are erratic.

    Returns:
        bool ``(n_frames,)`` with ``n_frames = floor(duration / frame_ms)``.

    Raises:
        ValueError: unsupported ``frame_ms`` or ``aggressiveness``.
    """
    import webrtcvad

    y = _as_signal(y, sr)
    if frame_ms not in VAD_FRAME_MS:
        raise ValueError(f"frame_ms must be one of {VAD_FRAME_MS} (webrtcvad); got {frame_ms!r}")
    if aggressiveness not in (0, 1, 2, 3):
        raise ValueError(f"aggressiveness must be 0, 1, 2 or 3; got {aggressiveness!r}")
    vad_sr = sr if sr in VAD_RATES else 16000
    x = y if vad_sr == sr else soxr.resample(y.astype(np.float32), sr, vad_sr)
    frame_n = vad_sr * frame_ms // 1000
    n_frames = len(x) // frame_n
    if n_frames == 0:
        return np.zeros(0, dtype=bool)
    pcm = np.clip(np.round(x[: n_frames * frame_n] * 32768.0), -32768, 32767).astype(np.int16)
    vad = webrtcvad.Vad(int(aggressiveness))
    buf = pcm.tobytes()
    step = 2 * frame_n
    speech = np.fromiter((vad.is_speech(buf[i * step:(i + 1) * step], vad_sr)
                          for i in range(n_frames)), dtype=bool, count=n_frames)
    frames = pcm.reshape(n_frames, frame_n).astype(np.float32) / np.float32(32768.0)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(np.mean(np.square(frames), axis=1, dtype=np.float64))
    speech &= db > min_db
    if trim_db is not None and speech.any():
        speech = _trim_runs(speech, db, trim_db=float(trim_db))
    return speech


def _trim_runs(speech: np.ndarray, db: np.ndarray, *, trim_db: float) -> np.ndarray:
    """Clear each run's leading/trailing frames quieter than ``run max - trim_db``."""
    edges = np.diff(np.concatenate(([0], speech.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    out = speech.copy()
    for a, b in zip(starts, stops, strict=True):
        run = db[a:b]
        loud = np.flatnonzero(run >= run.max() - trim_db)
        out[a:a + loud[0]] = False
        out[a + loud[-1] + 1:b] = False
    return out


# ---------------------------------------------------------------------------- optional tracks

def voice_quality_windows(
    y: np.ndarray,
    sr: int,
    *,
    starts_s: np.ndarray,
    window_s: float,
    fmin: float = 75.0,
    fmax: float = 600.0,
    hop_s: float = TRACK_HOP_S,
    pitch: tuple[Any, Any] | None = None,
) -> pd.DataFrame:
    """Jitter, shimmer and HNR per window with Praat (through parselmouth).

    Glottal pulses come from ``To PointProcess (cc)`` on Praat's autocorrelation pitch
    (the default F0 track), so they exist only in voiced stretches; jitter and shimmer
    use Praat's voice-report settings (:data:`PRAAT_PERIOD_FLOOR_S` ...). HNR is
    ``To Harmonicity (cc)`` with Praat's defaults, averaged over periodic frames.

    Args:
        y: mono float audio, shape ``(n,)``.
        sr: sampling rate (Hz).
        starts_s: window starts (s from ``y[0]``), shape ``(n_windows,)``.
        window_s: window length (s).
        fmin: pitch floor (Hz).
        fmax: pitch ceiling (Hz).
        hop_s: pitch and harmonicity frame step (s).
        pitch: a ``(Sound, Pitch)`` pair already computed for ``y`` (saves one pitch
            analysis); ``None`` computes it.

    Returns:
        :data:`VOICE_QUALITY_COLUMNS` per window: ``jitter_local`` and ``shimmer_local``
        (fractions, e.g. 0.01 = 1 %), ``hnr_db`` (dB); NaN where undefined.
    """
    from parselmouth.praat import call

    y = _as_signal(y, sr)
    starts = np.asarray(starts_s, dtype=np.float64)
    out = pd.DataFrame(np.nan, index=range(len(starts)), columns=list(VOICE_QUALITY_COLUMNS))
    praat = pitch if pitch is not None else praat_pitch(y, sr, fmin=fmin, fmax=fmax, hop_s=hop_s)
    if praat is None or len(starts) == 0:
        return out
    snd, pitch_obj = praat
    pulses = call([snd, pitch_obj], "To PointProcess (cc)")
    dur = float(snd.xmax)
    jit, shim = np.full(len(starts), np.nan), np.full(len(starts), np.nan)
    args = (PRAAT_PERIOD_FLOOR_S, PRAAT_PERIOD_CEILING_S, PRAAT_PERIOD_FACTOR)
    for k, s in enumerate(starts):
        t0, t1 = max(0.0, float(s)), min(dur, float(s) + window_s)
        if t1 - t0 < 2 * PRAAT_PERIOD_CEILING_S:
            continue
        jit[k] = call(pulses, "Get jitter (local)", t0, t1, *args)
        shim[k] = call([snd, pulses], "Get shimmer (local)", t0, t1, *args, PRAAT_AMPLITUDE_FACTOR)
    harm = snd.to_harmonicity_cc(time_step=hop_s, minimum_pitch=fmin)
    hv = np.asarray(harm.values[0], dtype=np.float64)
    hv[hv <= -200] = np.nan  # Praat's "not periodic"
    out["jitter_local"], out["shimmer_local"] = jit, shim
    out["hnr_db"] = _window_means(np.asarray(harm.xs()), hv[:, None], starts, starts + window_s)[:, 0]
    return out


def egemaps_lld(y: np.ndarray, sr: int) -> tuple[np.ndarray, pd.DataFrame]:
    """openSMILE eGeMAPSv02 low-level descriptors.

    Args:
        y: mono float audio, shape ``(n,)``.
        sr: sampling rate (Hz).

    Returns:
        ``(times, lld)``: frame centre times (s from ``y[0]``) and one column per
        :data:`EGEMAPS_LLDS` (float64; NaN rows when ``y`` is shorter than a frame).
    """
    import opensmile

    y = _as_signal(y, sr)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Segment too short, filling with NaN."
        df = smile.process_signal(y.astype(np.float32), sr)
    if list(df.columns) != list(EGEMAPS_LLDS):
        raise RuntimeError(f"openSMILE eGeMAPSv02 returned descriptors {list(df.columns)}, expected "
                           f"{list(EGEMAPS_LLDS)}; check the installed opensmile version")
    start = df.index.get_level_values("start").total_seconds().to_numpy()
    end = df.index.get_level_values("end").total_seconds().to_numpy()
    return (start + end) / 2, df.reset_index(drop=True).astype(np.float64)


def _window_means(times: np.ndarray, values: np.ndarray, starts: np.ndarray,
                  ends: np.ndarray) -> np.ndarray:
    """Mean of the finite ``values[:, c]`` whose ``times`` lie in each [start, end).

    Args:
        times: frame times (s), increasing, shape ``(n_frames,)``.
        values: shape ``(n_frames, n_columns)``; NaN frames are left out.

    Returns:
        float64 ``(n_windows, n_columns)``; NaN where a window has no finite frame.
    """
    ok = np.isfinite(values)
    cs = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(np.where(ok, values, 0.0), axis=0)])
    cn = np.vstack([np.zeros((1, values.shape[1]), np.int64), np.cumsum(ok, axis=0)])
    j0 = np.searchsorted(times, starts, side="left")
    j1 = np.searchsorted(times, ends, side="left")
    n = cn[j1] - cn[j0]
    return np.divide(cs[j1] - cs[j0], n, out=np.full(n.shape, np.nan), where=n > 0)


# ---------------------------------------------------------------------------- windows

def _summarise(
    times: np.ndarray, values: np.ndarray, starts: np.ndarray, ends: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per-window statistics of the finite ``values`` whose ``times`` lie in [start, end).

    Returns ``n_frames`` (all frames), ``n`` (finite frames), ``median``, ``mean``,
    ``std`` (population), ``max``; NaN where a window has no finite frame.
    """
    j0 = np.searchsorted(times, starts, side="left")
    j1 = np.searchsorted(times, ends, side="left")
    n_win = len(starts)
    out = {k: np.full(n_win, np.nan) for k in ("median", "mean", "std", "max")}
    out["n_frames"] = (j1 - j0).astype(np.int64)
    out["n"] = np.zeros(n_win, dtype=np.int64)
    width = int(out["n_frames"].max()) if n_win else 0
    if width == 0:
        return out
    padded = np.concatenate((values.astype(np.float64), [np.nan]))
    sentinel = len(values)
    rows = max(1, _CHUNK_ELEMENTS // width)
    offs = np.arange(width)
    for r0 in range(0, n_win, rows):
        sl = slice(r0, r0 + rows)
        idx = j0[sl, None] + offs[None, :]
        idx = np.where(idx < j1[sl, None], idx, sentinel)
        m = np.sort(padded[idx], axis=1)  # NaN sort last
        cnt = np.isfinite(m).sum(axis=1)
        has = cnt > 0
        z = np.where(np.isfinite(m), m, 0.0)
        mean = np.divide(z.sum(axis=1), cnt, out=np.full(len(cnt), np.nan), where=has)
        var = np.divide((np.square(z - mean[:, None]) * np.isfinite(m)).sum(axis=1), cnt,
                        out=np.full(len(cnt), np.nan), where=has)
        r = np.arange(len(cnt))
        lo, hi = np.maximum(cnt - 1, 0) // 2, np.maximum(cnt, 1) // 2
        med = np.where(has, 0.5 * (m[r, lo] + m[r, hi]), np.nan)
        mx = np.where(has, m[r, np.maximum(cnt - 1, 0)], np.nan)
        out["n"][sl], out["mean"][sl], out["std"][sl] = cnt, mean, np.sqrt(var)
        out["median"][sl], out["max"][sl] = med, mx
    return out


def _inside(times: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """Bool per time: inside any ``[start, end)`` row of ``intervals`` (sorted, disjoint)."""
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    k = np.searchsorted(iv[:, 0], times, side="right") - 1
    return (k >= 0) & (times < iv[np.maximum(k, 0), 1])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(len(den), np.nan), where=den > 0)


def window_speech_ratio(
    y: np.ndarray,
    sr: int,
    *,
    starts_s: np.ndarray,
    window_s: float,
    vad_frame_ms: int = VAD_FRAME_DEFAULT_MS,
    vad_aggressiveness: int = 2,
) -> np.ndarray:
    """The ``speech_ratio`` column of :func:`window_features` alone (speech / all VAD frames
    of each window ``[start, start + window_s)``, NaN for a window without frames).

    Args:
        y: mono float audio, shape ``(n,)``.
        sr: sampling rate (Hz).
        starts_s: window starts (s) from ``y[0]``.
        window_s: window length (s).
        vad_frame_ms: webrtcvad frame length (ms).
        vad_aggressiveness: webrtcvad mode 0-3.

    Returns:
        float64 ``[n_windows]``.
    """
    y = _as_signal(y, sr)
    starts = np.asarray(starts_s, dtype=np.float64)
    sp = speech_activity(y, sr, frame_ms=vad_frame_ms, aggressiveness=vad_aggressiveness)
    t_v = (np.arange(len(sp)) + 0.5) * (vad_frame_ms / 1000.0)
    return _summarise(t_v, sp.astype(np.float64), starts, starts + window_s)["mean"]


def window_features(
    y: np.ndarray,
    sr: int,
    *,
    starts_s: np.ndarray,
    window_s: float,
    f0_method: str = "praat",
    fmin: float = 75.0,
    fmax: float = 600.0,
    hop_s: float = TRACK_HOP_S,
    vad_frame_ms: int = VAD_FRAME_DEFAULT_MS,
    vad_aggressiveness: int = 2,
    voice_quality: bool = False,
    egemaps: bool = False,
    time_offset_s: float = 0.0,
    timings: MutableMapping[str, float] | None = None,
    praat: tuple[Any, Any] | None = None,
    exclude_s: np.ndarray | None = None,
    speech: tuple[np.ndarray, float] | None = None,
) -> pd.DataFrame:
    """Prosody summaries for windows ``[start, start + window_s)`` of one signal.

    Each track is computed once over ``y``; windows only index into it. Windows may
    overlap and may run past the end of ``y`` (frames exist only where ``y`` does).

    Args:
        y: mono float audio, shape ``(n,)``.
        sr: sampling rate (Hz).
        starts_s: window starts (s), measured like ``time_offset_s``.
        window_s: window length (s, > 0).
        f0_method: ``"praat"`` or ``"pyin"`` (see :func:`f0_track`).
        fmin: lowest F0 searched (Hz).
        fmax: highest F0 searched (Hz).
        hop_s: F0 and energy frame step (s).
        vad_frame_ms: webrtcvad frame length (ms).
        vad_aggressiveness: webrtcvad mode 0-3.
        voice_quality: add jitter, shimmer and HNR (:func:`voice_quality_windows`).
        egemaps: add eGeMAPS descriptor means (:func:`egemaps_lld`).
        time_offset_s: time of ``y[0]`` on the ``starts_s`` clock (s), e.g. a block's
            start within a long recording.
        timings: if given, seconds spent per step are added under ``"f0"``,
            ``"energy"``, ``"vad"``, ``"voice_quality"``, ``"egemaps"``, ``"summarise"``.
        praat: :func:`praat_pitch` of ``y`` with these ``fmin, fmax, hop_s``, already
            computed (with ``f0_method="praat"``); ``None`` computes it.
        exclude_s: ``(k, 2)`` stretches ``[start, end)`` (s, on ``y``'s clock, like the
            starts less ``time_offset_s``) whose F0 and energy frames are left out (e.g.
            another speaker's turns silenced by :mod:`ser.inference.speakers`); ``None``: none.
        speech: speech decisions of another detector, ``(bool per frame, frame_s)`` with
            frame ``j`` covering ``[j, j + 1) * frame_s`` of ``y`` (e.g. Silero,
            :func:`ser.signal.vad.speech_frames`), used for ``speech_ratio`` instead of
            webrtcvad's; ``None``: webrtcvad.

    Returns:
        One row per start with :func:`feature_columns` for these options (float64; NaN
        when a window has no frame of that kind, e.g. ``f0_hz`` without voiced frames).

    Example:
        >>> window_features(y, 16000, starts_s=np.arange(0, 7, 1.0), window_s=3.0)  # doctest: +SKIP
    """
    y = _as_signal(y, sr)
    if not (window_s > 0):
        raise ValueError(f"window_s must be > 0 seconds; got {window_s!r}")
    starts = np.asarray(starts_s, dtype=np.float64) - time_offset_s
    if starts.ndim != 1:
        raise ValueError(f"starts_s must be 1-D; got shape {starts.shape}")
    ends = starts + window_s

    t = time.perf_counter()
    _check_f0_options(sr, method=f0_method, fmin=fmin, fmax=fmax, hop_s=hop_s)
    if f0_method != "praat":
        praat = None
    if f0_method == "praat":  # keep Praat's objects: voice quality reuses the pitch track
        if praat is None:
            praat = praat_pitch(y, sr, fmin=fmin, fmax=fmax, hop_s=hop_s)
        t_f0, f0 = _pitch_arrays(praat[1]) if praat is not None else (np.zeros(0), np.zeros(0))
    else:
        t_f0, f0 = f0_track(y, sr, method=f0_method, fmin=fmin, fmax=fmax, hop_s=hop_s)
    t = timing.tick(timings, "f0", t)
    t_e, e = rms_db(y, sr, hop_s=hop_s)
    if exclude_s is not None and len(exclude_s):  # frames of silenced stretches do not count
        f0 = np.where(_inside(t_f0, exclude_s), np.nan, f0)
        e = np.where(_inside(t_e, exclude_s), np.nan, e)
    t = timing.tick(timings, "energy", t)
    if speech is None:
        speech_ratio = window_speech_ratio(y, sr, starts_s=starts, window_s=window_s,
                                           vad_frame_ms=vad_frame_ms, vad_aggressiveness=vad_aggressiveness)
    else:
        sp, frame_s = speech
        t_v = (np.arange(len(sp)) + 0.5) * float(frame_s)
        speech_ratio = _summarise(t_v, np.asarray(sp, dtype=np.float64), starts, ends)["mean"]
    t = timing.tick(timings, "vad", t)
    f = _summarise(t_f0, f0, starts, ends)
    en = _summarise(t_e, e, starts, ends)
    cols: dict[str, np.ndarray] = {
        "f0_hz": f["median"],
        "f0_mean_hz": f["mean"],
        "f0_std_hz": f["std"],
        "voiced_ratio": _ratio(f["n"], f["n_frames"]),
        "energy_db": en["mean"],
        "energy_std_db": en["std"],
        "energy_max_db": en["max"],
        "speech_ratio": speech_ratio,
    }
    t = timing.tick(timings, "summarise", t)
    if voice_quality:
        vq = voice_quality_windows(y, sr, starts_s=starts, window_s=window_s, fmin=fmin,
                                   fmax=fmax, hop_s=hop_s, pitch=praat)
        cols.update({c: vq[c].to_numpy() for c in VOICE_QUALITY_COLUMNS})
        t = timing.tick(timings, "voice_quality", t)
    if egemaps:
        t_g, lld = egemaps_lld(y, sr)
        vals = lld.to_numpy(dtype=np.float64, copy=True)
        nz = np.array([name.endswith("_sma3nz") for name in EGEMAPS_LLDS])
        unvoiced = ~(lld["F0semitoneFrom27.5Hz_sma3nz"].to_numpy() > 0)
        vals[np.ix_(unvoiced, nz)] = np.nan
        means = _window_means(t_g, vals, starts, ends)
        cols.update({c: means[:, k] for k, c in enumerate(egemaps_columns())})
        t = timing.tick(timings, "egemaps", t)
    return pd.DataFrame(cols, columns=feature_columns(voice_quality=voice_quality, egemaps=egemaps))
