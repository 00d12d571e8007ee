"""Whose voice is in each window: speaker turns (``speakers.csv``) laid over the window grid.

Stage 04 with ``diarize`` (or ``speaker: caregiver``) reads the speaker turns of
:mod:`ser.inference.diarize_files` (``recording, start_s, end_s, speaker, is_caregiver,
confidence``) and

- gives every window ``caregiver_speech_s`` and ``other_speech_s`` (seconds of the
  window covered by the caregiver's turns and by other speakers' turns) and
  ``caregiver_share`` (caregiver / both, 0-1; empty when neither speaks, and all three
  empty in a recording whose caregiver was not identified): :func:`window_speaker_seconds`;
- with ``speaker: caregiver``, silences the other speakers' turns before the model and
  the prosody see the audio (:func:`silence_intervals`): their samples are set to zero
  (10 ms raised-cosine ramps at the edges, so the cut adds no click). Zeroing, not
  removing: the window grid stays on the recording's clock, so window times, the share
  columns and the time bins of stage 05 still mean what they say, and no window splices
  the end of one of her turns onto the start of another. The model hears her speech with
  silence where someone else spoke, as in the pauses it was trained on; F0 is then
  measured on her frames only (silence has no pitch), energy leaves the silenced frames
  out (:func:`ser.signal.features.window_features` ``exclude_s``), and the speech ratio
  counts her speech only (silence is not speech).

Not yet silenced: the first passes that set a recording's pitch register (a pitch-normalised
model, :mod:`ser.signal.pitchnorm`) and a speaker-normalised model's reference
(:mod:`ser.inference.speaker_norm`) still read the whole recording; the register pass
already leaves out a voice an octave away.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd

#: Columns added to ``windows.csv`` when speaker turns exist.
SPEAKER_COLUMNS: tuple[str, ...] = ("caregiver_speech_s", "other_speech_s", "caregiver_share")
#: ``speaker`` modes of stage 04: whose speech the model and the prosody hear.
SPEAKER_MODES: tuple[str, ...] = ("all", "caregiver")
#: Ramp at each edge of a silenced stretch (s).
RAMP_S: float = 0.01


def check_speaker_mode(speaker: str) -> str:
    """Return ``speaker`` if it is one of :data:`SPEAKER_MODES`, else raise ``ValueError``."""
    if speaker not in SPEAKER_MODES:
        raise ValueError(f"speaker must be one of {SPEAKER_MODES}; got {speaker!r}")
    return speaker


def _union(intervals: np.ndarray) -> np.ndarray:
    """Sorted, disjoint union of ``[start, end)`` rows (empty ones dropped)."""
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    iv = iv[iv[:, 1] > iv[:, 0]]
    if not len(iv):
        return iv
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    out = [iv[0].copy()]
    for a, b in iv[1:]:
        if a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append(np.array([a, b]))
    return np.array(out)


def covered_seconds(intervals: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Seconds of each ``[starts[i], ends[i])`` covered by the union of ``intervals``.

    Args:
        intervals: ``(k, 2)`` rows of ``[start_s, end_s)`` (may overlap; unsorted).
        starts, ends: window bounds (s), shape ``(n,)``.

    Returns:
        float64 ``(n,)``.
    """
    iv = _union(intervals)
    s, e = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    if not len(iv):
        return np.zeros(len(s))
    # cumulative covered time is piecewise linear through the interval edges
    xp = iv.reshape(-1)
    fp = np.concatenate([[0.0], np.cumsum(iv[:, 1] - iv[:, 0])]).repeat(2)[1:-1]
    return np.interp(e, xp, fp) - np.interp(s, xp, fp)


def window_speaker_seconds(starts_s: np.ndarray, ends_s: np.ndarray,
                           turns: pd.DataFrame | None) -> pd.DataFrame:
    """:data:`SPEAKER_COLUMNS` of windows ``[start, end)`` of one recording.

    Args:
        starts_s, ends_s: window bounds (s).
        turns: the recording's rows of ``speakers.csv`` (``start_s, end_s, is_caregiver``);
            ``None``, or ``is_caregiver`` empty everywhere (caregiver not identified):
            every column empty.

    Returns:
        ``caregiver_speech_s``, ``other_speech_s`` (s) and ``caregiver_share`` (0-1, empty
        where neither speaks), one row per window.
    """
    n = len(starts_s)
    cg = caregiver_flags(turns)
    if cg is None:
        return pd.DataFrame({c: np.full(n, np.nan) for c in SPEAKER_COLUMNS})
    iv = turns[["start_s", "end_s"]].to_numpy(dtype=np.float64)
    mine = covered_seconds(iv[cg], starts_s, ends_s)
    other = covered_seconds(iv[~cg], starts_s, ends_s)
    both = mine + other
    share = np.divide(mine, both, out=np.full(n, np.nan), where=both > 0)
    return pd.DataFrame({"caregiver_speech_s": mine, "other_speech_s": other, "caregiver_share": share})


def caregiver_flags(turns: pd.DataFrame | None) -> np.ndarray | None:
    """Bool per turn (the caregiver's), or ``None`` when the caregiver is unknown
    (no turns table, or ``is_caregiver`` empty in every row)."""
    if turns is None or "is_caregiver" not in turns.columns:
        return None
    flags = turns["is_caregiver"].astype("string").str.lower()
    if not len(turns) or flags.isna().all():
        return None
    return flags.eq("true").fillna(False).to_numpy(dtype=bool)


def other_intervals(turns: pd.DataFrame) -> np.ndarray:
    """``(k, 2)`` sorted, disjoint ``[start_s, end_s)`` of the other speakers' turns, less
    any stretch the caregiver's own turns cover.

    Raises:
        ValueError: the caregiver of the recording is unknown (see :func:`caregiver_flags`).
    """
    cg = caregiver_flags(turns)
    if cg is None:
        raise ValueError("the caregiver was not identified in this recording")
    iv = turns[["start_s", "end_s"]].to_numpy(dtype=np.float64)
    others, mine = _union(iv[~cg]), _union(iv[cg])
    out: list[tuple[float, float]] = []
    for a, b in others:  # subtract her turns (diarization turns are disjoint; be safe)
        pieces = [(a, b)]
        for c, d in mine:
            pieces = [p for x, y in pieces for p in ((x, min(y, c)), (max(x, d), y)) if p[1] > p[0]]
        out.extend(pieces)
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def silence_intervals(y: np.ndarray, sr: int, intervals: np.ndarray, *, offset_s: float = 0.0,
                      ramp_s: float = RAMP_S) -> np.ndarray:
    """A copy of ``y`` with the samples inside ``intervals`` set to zero (raised-cosine
    ramps of ``ramp_s`` inside each edge).

    Args:
        y: mono float audio, shape ``(n,)``; ``y[0]`` is at ``offset_s`` on the intervals' clock.
        sr: sampling rate (Hz).
        intervals: ``(k, 2)`` ``[start_s, end_s)`` to silence.
        offset_s: time of ``y[0]`` (s), e.g. a block's start.
        ramp_s: fade length (s) at each edge.

    Returns:
        float32 ``(n,)``.
    """
    out = np.array(y, dtype=np.float32, copy=True)
    ramp_n = max(1, int(round(ramp_s * sr)))
    fade = (0.5 + 0.5 * np.cos(np.pi * (np.arange(1, ramp_n + 1) / ramp_n))).astype(np.float32)  # 1 → 0
    for a, b in _union(intervals):
        i0 = int(round((a - offset_s) * sr))
        i1 = int(round((b - offset_s) * sr))
        lo, hi = max(i0, 0), min(i1, len(out))
        if hi <= lo:
            continue
        out[lo:hi] = 0.0
        # fade out before the stretch and back in after it
        k0 = np.arange(max(i0 - ramp_n, 0), i0)
        k0 = k0[k0 < len(out)]
        out[k0] *= fade[k0 - (i0 - ramp_n)]
        k1 = np.arange(i1, min(i1 + ramp_n, len(out)))
        k1 = k1[k1 >= 0]
        out[k1] *= fade[::-1][k1 - i1]
    return out


def turns_by_recording(speakers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``speakers.csv`` split per recording (time order)."""
    if speakers is None or not len(speakers):
        return {}
    s = speakers.assign(recording=speakers["recording"].astype(str))
    return {r: g.sort_values("start_s", kind="stable").reset_index(drop=True)
            for r, g in s.groupby("recording", sort=False)}


def turns_key(intervals: np.ndarray) -> str:
    """Short hash of a recording's silenced intervals (resume: recompute when they change)."""
    iv = np.round(np.asarray(intervals, dtype=np.float64).reshape(-1, 2), 3)
    return hashlib.sha256(iv.tobytes()).hexdigest()[:16]


def speaker_stamp(*, speaker: str, vad: str,
                  silenced: Mapping[str, np.ndarray] | None) -> dict | None:
    """What besides the model shaped a window table's audio (stored beside it); ``None``
    for the default (every voice, WebRTC speech ratio), so older tables resume unchanged."""
    if speaker == "all" and vad == "webrtc":
        return None
    return {"speaker": speaker, "vad": vad,
            "turns": {r: turns_key(iv) for r, iv in (silenced or {}).items()}}


def caregiver_share_table(recordings: pd.DataFrame, turns: pd.DataFrame,
                          summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """The caregiver's share of the speech per recording (for the report).

    Args:
        recordings: ``recording, caregiver, level, phase`` (stage 01's ``recordings.csv``).
        turns: speaker turns (``speakers.csv``).
        summary: ``speakers.summary.csv`` (its ``caregiver_status`` is copied; optional).

    Returns:
        One row per recording: ``recording, caregiver, level, phase, caregiver_speech_s,
        other_speech_s`` (s), ``caregiver_share`` (0-1; empty where the caregiver was not
        identified or nobody speaks) and ``caregiver_status`` (``ok``, a reason, or
        ``not_diarized``).
    """
    by_rec = turns_by_recording(turns)
    rows = []
    for r in recordings.itertuples(index=False):
        rec = str(r.recording)
        t = by_rec.get(rec)
        cg = caregiver_flags(t)
        if cg is None:
            mine = other = np.nan
        else:
            d = (t["end_s"] - t["start_s"]).to_numpy(dtype=np.float64)
            mine, other = float(d[cg].sum()), float(d[~cg].sum())
        rows.append({"recording": rec, "caregiver": str(r.caregiver), "level": r.level, "phase": r.phase,
                     "caregiver_speech_s": mine, "other_speech_s": other,
                     "caregiver_share": mine / (mine + other) if (mine + other) > 0 else np.nan})
    out = pd.DataFrame(rows)
    status: dict[str, str] = {}
    if summary is not None and len(summary):
        status = {str(r): str(s) for r, s in zip(summary["recording"], summary["caregiver_status"], strict=True)
                  if isinstance(s, str)}
    out["caregiver_status"] = [status.get(r, "not_diarized") for r in out["recording"]]
    return out
