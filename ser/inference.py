"""Sliding-window emotion probabilities and prosody over long recordings (stage 04).

Window grid. Windows have the model's own length ``W`` (``bundle.window_samples`` at
``bundle.sample_rate``) and start every ``hop_s`` seconds: window ``k`` covers
``[k * hop_s, k * hop_s + W)``. Windows that would run past the end of the recording
are dropped, so the last ``< hop_s`` seconds may be uncovered. Timestamps are computed
in exact rational arithmetic (``hop_s`` is read as the decimal it prints as, e.g.
``0.37 = 37/100``), so window 1000 of hop 0.37 starts at exactly 370.0 s, never
369.99999999; the samples of a window start at ``round(start_s * sample_rate)``.

Short input. A recording shorter than one window gives exactly one window at 0 s,
zero-padded at the end to ``W`` samples and flagged ``padded = True`` (all other
windows have ``padded = False``); its prosody uses only the real samples.

Memory. A recording is read as a stream of blocks (:func:`ser.audio.iter_blocks`)
of ``block_s`` seconds plus one window and 2 s of context, and windows go to the
model in batches, so peak memory depends on ``block_s``, not on the file's length.
Prosody tracks are computed once per block, with :data:`CONTEXT_S` seconds of audio
on each side of the windows they serve.

Batch runs (:func:`predict_table`) record per-file failures and carry on, write their
tables atomically after every recording, and resume from a previous partial run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ser import audio, features, provenance

#: Identifier columns :func:`predict_table` prepends to every window row.
ID_COLUMNS: tuple[str, ...] = ("recording", "caregiver", "level", "phase")
#: Columns of the failure table.
FAILURE_COLUMNS: tuple[str, ...] = ("recording", "path", "reason")
#: Audio on each side of a block's windows used for the prosody tracks (s).
CONTEXT_S: float = 1.0


class ModelBundle(Protocol):
    """What inference needs from a model bundle (see :class:`ser.models.Bundle`)."""

    labels: list[str]
    sample_rate: int
    window_s: float
    window_samples: int

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """float32 ``[n, window_samples]`` → float32 ``[n, n_labels]``."""
        ...


# ---------------------------------------------------------------------------- grid

def _exact(x: float | Fraction | int, *, name: str) -> Fraction:
    """A float as the decimal it prints as (``0.37`` → ``37/100``)."""
    if isinstance(x, (Fraction, int, np.integer)):
        return Fraction(int(x)) if not isinstance(x, Fraction) else x
    try:
        xf = float(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a number of seconds; got {x!r}") from e
    if not math.isfinite(xf):
        raise ValueError(f"{name} must be finite; got {x!r}")
    return Fraction(repr(xf))


def check_hop(hop_s: float, *, window_s: float) -> None:
    """Raise ``ValueError`` unless ``0 < hop_s <= window_s`` (both in seconds)."""
    try:
        ok = math.isfinite(float(hop_s)) and 0 < float(hop_s) <= float(window_s)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"hop_s must satisfy 0 < hop_s <= window_s = {float(window_s):g} s "
                         f"(the model's window); got hop_s={hop_s!r}")


def _grid(duration: Fraction, window: Fraction, hop: Fraction) -> tuple[int, int, int]:
    """Number of windows and the common denominator/numerator of the hop."""
    if duration <= 0:
        raise ValueError(f"duration must be > 0 s; got {float(duration)}")
    n = 1 if duration < window else int((duration - window) // hop) + 1
    return n, hop.numerator, hop.denominator


def _ratio_seq(n: int, step: int, offset: int, den: int) -> np.ndarray:
    """float64 ``(k * step + offset) / den`` for ``k = 0..n-1``, each correctly rounded."""
    if (n * step + offset) < 2 ** 53:  # exact in float64: numpy's division rounds once
        return (np.arange(n, dtype=np.int64) * step + offset) / den
    return np.array([(k * step + offset) / den for k in range(n)], dtype=np.float64)


def _round_seq(n: int, step: int, den: int) -> np.ndarray:
    """int64 ``round(k * step / den)`` (halves up) for ``k = 0..n-1``, in exact integers."""
    if 2 * n * step + den < 2 ** 62:
        return (2 * np.arange(n, dtype=np.int64) * step + den) // (2 * den)
    return np.array([(2 * k * step + den) // (2 * den) for k in range(n)], dtype=np.int64)


def window_starts(duration_s: float, *, window_s: float, hop_s: float) -> np.ndarray:
    """Start times of the sliding windows over a recording.

    Window ``k`` starts at ``k * hop_s`` for every ``k`` with
    ``k * hop_s + window_s <= duration_s``, computed in exact rational arithmetic, so
    each start is the float nearest to the true value (no accumulated drift).
    A recording shorter than one window gives ``[0.0]`` (one zero-padded window).

    Args:
        duration_s: recording length (s, > 0).
        window_s: window length (s, > 0).
        hop_s: step between window starts (s), ``0 < hop_s <= window_s``.

    Returns:
        float64 ``(n_windows,)`` start times in seconds.

    Raises:
        ValueError: non-positive duration/window, or ``hop_s`` outside ``(0, window_s]``.

    Example:
        >>> window_starts(10.0, window_s=3.0, hop_s=1.5)
        array([0. , 1.5, 3. , 4.5, 6. ])
    """
    window = _exact(window_s, name="window_s")
    if window <= 0:
        raise ValueError(f"window_s must be > 0 seconds; got {window_s!r}")
    check_hop(hop_s, window_s=float(window))
    n, num, den = _grid(_exact(duration_s, name="duration_s"), window,
                        _exact(hop_s, name="hop_s"))
    return _ratio_seq(n, num, 0, den)


# ---------------------------------------------------------------------------- one recording

def _columns(labels: Iterable[str]) -> list[str]:
    return ["start_s", "end_s", *[f"p_{lab}" for lab in labels], *features.FEATURE_COLUMNS, "padded"]


def predict_recording(
    bundle: ModelBundle,
    path: str | os.PathLike[str],
    *,
    hop_s: float,
    batch_size: int = 64,
    block_s: float = 600.0,
    f0_method: str = "praat",
) -> pd.DataFrame:
    """Emotion probabilities and prosody for every window of one recording.

    Args:
        bundle: model bundle (``labels``, ``sample_rate``, ``window_s``,
            ``window_samples``, ``predict_proba``); see :func:`ser.models.load_bundle`.
        path: audio file (any format/rate/channels :func:`ser.audio.load` reads).
        hop_s: step between window starts (s), ``0 < hop_s <= bundle.window_s``.
        batch_size: windows per forward pass.
        block_s: audio processed at once (s); bounds memory, not the result.
        f0_method: ``"praat"`` or ``"pyin"`` (see :func:`ser.features.f0_track`).

    Returns:
        One row per window: ``start_s, end_s`` (s), ``p_<label>`` per label (rows sum
        to 1), :data:`ser.features.FEATURE_COLUMNS`, and ``padded`` (bool, see module
        docstring).

    Raises:
        ser.audio.AudioError: missing, unreadable, empty or non-finite audio.
        ValueError: bad ``hop_s``, ``batch_size``, ``block_s`` or ``f0_method``.
    """
    sr, win_n = int(bundle.sample_rate), int(bundle.window_samples)
    window = Fraction(win_n, sr)
    check_hop(hop_s, window_s=float(window))
    if not (isinstance(batch_size, (int, np.integer)) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not (block_s > 0):
        raise ValueError(f"block_s must be > 0 seconds; got {block_s!r}")
    if f0_method not in features.F0_METHODS:
        raise ValueError(f"f0_method must be one of {features.F0_METHODS}; got {f0_method!r}")
    labels = list(bundle.labels)
    path = Path(path)

    frames, sr_in, _ = audio.info_frames(path)
    n_total = audio.resampled_length(frames, orig_sr=sr_in, target_sr=sr)
    hop = _exact(hop_s, name="hop_s")
    n_win, num, den = _grid(Fraction(n_total, sr), window, hop)
    start_s = _ratio_seq(n_win, num, 0, den)
    # end = k * hop + W as one rounding: (k num W.den + W.num den) / (den W.den)
    wn, wd = window.numerator, window.denominator
    end_s = _ratio_seq(n_win, num * wd, wn * den, den * wd)
    start_n = _round_seq(n_win, num * sr, den)  # first sample: round(k * hop * sr)
    padded = np.full(n_win, n_total < win_n)

    # blocks: hop B (aligned to feature frames), each with W + 2 * context extra samples
    align = math.lcm(max(1, round(0.01 * sr)), max(1, sr * 30 // 1000))
    ctx_n = int(math.ceil(CONTEXT_S * sr / align)) * align
    block_n = max(1, int(round(block_s * sr / align))) * align
    probs = np.empty((n_win, len(labels)), dtype=np.float32)
    feats = np.full((n_win, len(features.FEATURE_COLUMNS)), np.nan)
    chunk = max(1, batch_size) * 4
    for off, y in audio.iter_blocks_n(path, sample_rate=sr, block_n=block_n,
                                      overlap_n=win_n + 2 * ctx_n):
        lo = 0 if off == 0 else off + ctx_n
        i0, i1 = np.searchsorted(start_n, [lo, off + block_n + ctx_n], side="left")
        if i1 <= i0:
            continue
        local = start_n[i0:i1] - off
        need = int(local[-1]) + win_n
        ypad = audio.fix_length(y, max(need, len(y)))
        frames_view = np.lib.stride_tricks.sliding_window_view(ypad, win_n)
        for c0 in range(0, len(local), chunk):
            idx = local[c0:c0 + chunk]
            p = bundle.predict_proba(np.ascontiguousarray(frames_view[idx]), batch_size=batch_size)
            probs[i0 + c0:i0 + c0 + len(idx)] = p
        fdf = features.window_features(y, sr, starts_s=local / sr, window_s=win_n / sr,
                                       f0_method=f0_method)
        feats[i0:i1] = fdf.to_numpy()

    df = pd.DataFrame({"start_s": start_s, "end_s": end_s})
    for j, lab in enumerate(labels):
        df[f"p_{lab}"] = probs[:, j].astype(np.float64)
    for j, col in enumerate(features.FEATURE_COLUMNS):
        df[col] = feats[:, j]
    df["padded"] = padded
    return df[_columns(labels)]


# ---------------------------------------------------------------------------- a table of recordings

def _check_recordings(recordings: pd.DataFrame) -> None:
    if not isinstance(recordings, pd.DataFrame):
        raise TypeError(f"recordings must be a DataFrame (recordings.csv); got {type(recordings).__name__}")
    missing = [c for c in (*ID_COLUMNS, "path") if c not in recordings.columns]
    if missing:
        raise ValueError(f"recordings table lacks columns {missing}; stage 01 (01_preprocess) "
                         f"writes recordings.csv with {[*ID_COLUMNS, 'path']}")
    dup = recordings["recording"][recordings["recording"].duplicated()].astype(str).unique()
    if len(dup):
        raise ValueError(f"recordings table has duplicate recording ids {list(dup)[:5]}; "
                         "each recording must appear once")


def _read_previous(out_csv: Path, columns: list[str], hop_s: float,
                   wanted: set[str]) -> pd.DataFrame:
    """Rows of recordings already complete in ``out_csv`` (empty when none)."""
    if not out_csv.is_file():
        return pd.DataFrame(columns=columns)
    try:
        prev = pd.read_csv(out_csv, dtype={c: str for c in ID_COLUMNS})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot resume from {out_csv}: {e}; delete it or pass resume=False") from e
    if list(prev.columns) != columns:
        raise ValueError(f"cannot resume from {out_csv}: its columns differ from this model's "
                         f"({len(prev.columns)} vs {len(columns)}, e.g. other labels); "
                         "delete it or pass resume=False")
    prev = prev[prev["recording"].isin(wanted)]
    for rec, g in prev.groupby("recording", sort=False):
        steps = np.diff(g["start_s"].to_numpy())
        if len(steps) and not np.allclose(steps, float(hop_s), rtol=0, atol=1e-6):
            raise ValueError(f"cannot resume from {out_csv}: recording {rec} was computed with "
                             f"hop {steps[0]:g} s, not hop_s={hop_s:g}; delete it or pass resume=False")
    return prev


def public_failures(failures: pd.DataFrame) -> pd.DataFrame:
    """The failure table without file locations, for display in a report.

    Args:
        failures: ``recording, path, reason`` as written by :func:`predict_table`.

    Returns:
        ``recording, reason`` with every mention of the file's path (as given, resolved,
        or just its name) in ``reason`` replaced by ``<audio file>``.
    """
    from ser import paths

    def redact(path: Any, reason: Any) -> str:
        text = str(reason)
        p = Path(str(path))
        for s in sorted({str(path), str(paths.resolve(p)), p.name} - {""}, key=len, reverse=True):
            text = text.replace(s, "<audio file>")
        return text

    reasons = [redact(p, r) for p, r in zip(failures["path"], failures["reason"], strict=True)]
    return pd.DataFrame({"recording": failures["recording"].to_numpy(), "reason": reasons})


def predict_table(
    bundle: ModelBundle,
    recordings: pd.DataFrame,
    *,
    hop_s: float,
    out_csv: str | os.PathLike[str],
    failures_csv: str | os.PathLike[str],
    resume: bool = True,
    progress: bool = True,
    batch_size: int = 64,
    block_s: float = 600.0,
    f0_method: str = "praat",
) -> pd.DataFrame:
    """Run :func:`predict_recording` over a table of recordings; resumable.

    After each recording, ``out_csv`` (all finished rows, in table order) and
    ``failures_csv`` (``recording, path, reason`` of this run's failures) are rewritten
    atomically, so an interrupted run leaves complete recordings only. With ``resume``,
    recordings already in ``out_csv`` are skipped; failed ones are tried again.
    Rows of recordings no longer in ``recordings`` are dropped.

    Args:
        bundle: model bundle (see :func:`predict_recording`).
        recordings: columns ``recording, caregiver, level, phase, path`` (others are
            ignored); relative paths are taken from the project root.
        hop_s: step between window starts (s), ``0 < hop_s <= bundle.window_s``.
        out_csv: window table to write (``windows.csv``).
        failures_csv: failure table to write (``inference_failures.csv``).
        resume: reuse finished recordings from an existing ``out_csv``.
        progress: show a tqdm progress bar.
        batch_size: windows per forward pass.
        block_s: audio processed at once (s).
        f0_method: ``"praat"`` or ``"pyin"``.

    Returns:
        The window table written to ``out_csv``: ``recording, caregiver, level, phase``
        then the columns of :func:`predict_recording`.

    Raises:
        ValueError: bad ``hop_s`` or table, or an ``out_csv`` that cannot be resumed.
    """
    from tqdm import tqdm

    from ser import paths

    check_hop(hop_s, window_s=bundle.window_samples / bundle.sample_rate)
    _check_recordings(recordings)
    out_csv, failures_csv = Path(out_csv), Path(failures_csv)
    columns = [*ID_COLUMNS, *_columns(bundle.labels)]
    recs = recordings.assign(**{c: recordings[c].astype(str) for c in ID_COLUMNS})
    order = {r: i for i, r in enumerate(recs["recording"])}

    done: dict[str, pd.DataFrame] = {}
    if resume:
        prev = _read_previous(out_csv, columns, hop_s, set(order))
        done = {r: g for r, g in prev.groupby("recording", sort=False)}
    failures: list[dict[str, Any]] = []

    def write() -> pd.DataFrame:
        parts = [done[r] for r in sorted(done, key=order.__getitem__)]
        table = (pd.concat(parts, ignore_index=True) if parts
                 else pd.DataFrame(columns=columns))[columns]
        provenance.atomic_write_csv(out_csv, table)
        provenance.atomic_write_csv(failures_csv,
                                    pd.DataFrame(failures, columns=list(FAILURE_COLUMNS)))
        return table

    todo = recs[~recs["recording"].isin(done)]
    bar = tqdm(todo.itertuples(index=False), total=len(todo), disable=not progress,
               desc="inference", unit="rec")
    for row in bar:
        row = row._asdict()
        path = paths.resolve(str(row["path"]))
        try:
            df = predict_recording(bundle, path, hop_s=hop_s, batch_size=batch_size,
                                   block_s=block_s, f0_method=f0_method)
        except (ValueError, OSError, RuntimeError) as e:  # AudioError is a ValueError
            failures.append({"recording": row["recording"], "path": str(row["path"]),
                             "reason": f"{type(e).__name__}: {e}"})
        else:
            for c in reversed(ID_COLUMNS):
                df.insert(0, c, row[c])
            done[row["recording"]] = df
        write()
    return write()
