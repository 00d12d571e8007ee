"""Sliding-window emotion probabilities and prosody over long recordings (``ser predict``, stage 04).

Window grid. Windows have the model's own length ``W`` (``bundle.window_samples`` at
``bundle.sample_rate``) and start every ``hop_s`` seconds: window ``k`` covers
``[k * hop_s, k * hop_s + W)``. Windows that would run past the end of the recording
are dropped, so the last ``< hop_s`` seconds may be uncovered. Timestamps are computed
in exact rational arithmetic (``hop_s`` is read as the decimal it prints as, e.g.
``0.37 = 37/100``), so window 1000 of hop 0.37 starts at exactly 370.0 s, never
369.99999999; the samples of a window start at ``round(start_s * sample_rate)``.
The default hop (:func:`default_hop`) is half the window.

Short input. A recording shorter than one window gives exactly one window at 0 s,
zero-padded at the end to ``W`` samples and flagged ``padded = True`` (all other
windows have ``padded = False``); its prosody uses only the real samples.

Bad input. Anything :mod:`ser.signal.audio` rejects (missing, empty, corrupt, non-audio,
NaN/inf samples, M4A without ffmpeg) raises :class:`ser.signal.audio.AudioError` naming the
file, and so does a recording that is silent as a whole (peak below
:data:`SILENT_PEAK_DBFS`): a dead microphone gives no emotion to read. Silent
stretches inside a recording are fine (NaN F0, zero speech ratio).

Memory and speed. A recording is read as a stream of blocks (:func:`ser.signal.audio.iter_blocks`)
of ``block_s`` seconds plus one window and :data:`CONTEXT_S` seconds of context on
each side, and windows go to the model in batches, so peak memory depends on
``block_s``, not on the file's length. The per-window features of a block
(:func:`ser.signal.features.window_features`) can run in ``workers`` forked processes while
the main process decodes and runs the model on the next blocks (at most
``workers + 1`` blocks wait, which bounds memory too); results do not depend on
``workers``. Praat's silence threshold is relative to the peak of the block it
analyses (2 minutes by default), not of the whole file, so one loud event does not
mute the rest of a long recording.

Pitch normalisation. A bundle trained with ``pitch_norm_hz`` (:mod:`ser.signal.pitchnorm`)
hears every recording at that register: a first pass over the file finds the
recording's register (the voice's baseline pitch; another voice an octave away is left
out), then each block is shifted by one constant amount (PSOLA, formants kept) in the
feature workers, and the model runs on the shifted block when it comes back. The
prosody columns (``f0_hz`` ...) are always measured on the original audio. The extra
pass and the shift cost about two more Praat pitch analyses per hour of audio (318x
real time instead of 622x for the small CNN, ``benchmarks/RESULTS.md``).

Batch runs. :func:`predict_table` (stage 04: a table of cohort recordings) and
:func:`predict_paths` / :func:`predict_cli` (``ser predict``: files and folders) record
per-file failures and carry on, rewrite their outputs atomically as files finish
(temp file + rename, so a file on disk is always complete), and resume from a
previous partial run: files already done are skipped, failed ones tried again, and
the result has no duplicate or missing rows.

``ser predict`` outputs (see :func:`predict_paths`):

- CSV with ``-o FILE``: windows in ``FILE`` (``file, start_s, end_s, p_<label>…,``
  features, ``padded``); the per-file summary in ``FILE`` with ``.csv`` replaced by
  ``.summary.csv`` (``results.csv`` → ``results.summary.csv``; ``.summary.csv`` is
  appended when ``FILE`` has another suffix); the failures (``file, reason``) in
  ``.failures.csv`` likewise. Without ``-o`` the windows go to stdout and the summary
  and failures to stderr. Beside ``FILE``, ``<stem>.model.json`` names the model that
  computed it (:func:`model_stamp_path`); a resume with another model, or with a
  retrained or recalibrated bundle of the same name, is refused.
- JSON: one object ``{"windows": [...], "summary": [...], "failures": [...]}`` (lists
  of row objects, NaN written as ``null``) in ``FILE`` or on stdout.

Summary columns (:func:`summary_columns`): ``file, status`` (``ok``/``failed``),
``duration_s`` (native length, s), ``sample_rate`` (native, Hz), ``channels``,
``windows``, ``dominant_emotion`` (the label with the highest mean probability over
the file's windows), ``p_<label>`` (mean probability), ``window_s``, ``hop_s``,
``model`` (bundle folder name, with ``@bf16`` or ``@int8`` for a reduced precision, so
a resumed run never mixes precisions), ``error`` (the reason when failed).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ser.core import atomic
from ser.data.schema import ID_COLUMNS
from ser.signal import audio, features, pitchnorm

#: Columns of the failure table of :func:`predict_table`.
FAILURE_COLUMNS: tuple[str, ...] = ("recording", "path", "reason")
#: Columns of the failure table of :func:`predict_paths` / ``ser predict``.
FILE_FAILURE_COLUMNS: tuple[str, ...] = ("file", "reason")
#: Audio on each side of a block's windows used for the prosody tracks (s).
CONTEXT_S: float = 1.0
#: Audio analysed at once (s): bounds memory, and is Praat's silence-threshold span.
BLOCK_S: float = 120.0
#: A recording whose peak is below this level (dB re full scale) is rejected as silent.
SILENT_PEAK_DBFS: float = -80.0
#: Output formats of :func:`predict_paths`.
FORMATS: tuple[str, ...] = ("csv", "json")
#: Minimum seconds between two checkpoint writes of a batch (and always at the end).
CHECKPOINT_S: float = 5.0


class ModelBundle(Protocol):
    """What inference needs from a model bundle (see :class:`ser.models.bundle.Bundle`)."""

    labels: list[str]
    sample_rate: int
    window_s: float
    window_samples: int
    pitch_norm_hz: float

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """float32 ``[n, window_samples]`` → float32 ``[n, n_labels]``."""
        ...

    # Optional: ``predict_proba_starts(signal, starts, *, batch_size)``, the probabilities of
    # ``signal[s:s + window_samples]`` for each start (see ser.models.bundle.Bundle); used when
    # present, so that a model can share work between overlapping windows.


class ResumeError(ValueError):
    """An existing output cannot be resumed (other model, labels, hop or options)."""


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


# ---------------------------------------------------------------------------- columns and options

def default_hop(bundle: ModelBundle) -> float:
    """The default hop: half the model's window (s)."""
    return float(Fraction(int(bundle.window_samples), int(bundle.sample_rate)) / 2)


def window_columns(labels: Iterable[str], *, voice_quality: bool = False,
                   egemaps: bool = False) -> list[str]:
    """Columns of :func:`predict_recording`: times, ``p_<label>``, features, ``padded``."""
    return ["start_s", "end_s", *[f"p_{lab}" for lab in labels],
            *features.feature_columns(voice_quality=voice_quality, egemaps=egemaps), "padded"]


def summary_columns(labels: Iterable[str]) -> list[str]:
    """Columns of the per-file summary of :func:`predict_paths` (see the module docstring)."""
    return ["file", "status", "duration_s", "sample_rate", "channels", "windows",
            "dominant_emotion", *[f"p_{lab}" for lab in labels], "window_s", "hop_s", "model",
            "error"]


_SUMMARY_INTS = ("sample_rate", "channels", "windows")
_SUMMARY_STRS = ("file", "status", "dominant_emotion", "model", "error")


def _feature_options(f0_method: str, voice_quality: bool, egemaps: bool) -> dict[str, Any]:
    if f0_method not in features.F0_METHODS:
        raise ValueError(f"f0_method must be one of {features.F0_METHODS}; got {f0_method!r}")
    for name, v in (("voice_quality", voice_quality), ("egemaps", egemaps)):
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False; got {v!r}")
    return {"f0_method": f0_method, "voice_quality": bool(voice_quality), "egemaps": bool(egemaps)}


def resolve_batch_size(bundle: ModelBundle, batch_size: int | None) -> int:
    """``batch_size``, or for ``None`` the bundle's ``preferred_batch_size`` (64 if it has none).

    Raises:
        ValueError: not a positive integer (or None).
    """
    if batch_size is None:
        return int(getattr(bundle, "preferred_batch_size", 64))
    if not (isinstance(batch_size, (int, np.integer)) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive integer (or None: the model's "
                         f"preferred size); got {batch_size!r}")
    return int(batch_size)


def _run_options(bundle: ModelBundle, *, hop_s: float, batch_size: int | None, block_s: float,
                 f0_method: str, voice_quality: bool, egemaps: bool,
                 workers: int | None) -> tuple[int, dict[str, Any]]:
    """Check the options shared by every entry point; returns the batch size and feature options."""
    check_hop(hop_s, window_s=bundle.window_samples / bundle.sample_rate)
    batch_size = resolve_batch_size(bundle, batch_size)
    if not (isinstance(block_s, (int, float)) and block_s > 0):
        raise ValueError(f"block_s must be > 0 seconds; got {block_s!r}")
    opts = _feature_options(f0_method, voice_quality, egemaps)
    resolve_workers(workers)
    return batch_size, opts


def resolve_workers(workers: int | None, *, heavy_model: bool = False) -> int:
    """Feature worker processes: ``None`` or ``-1`` (auto) → one per usable CPU core, or
    none for a ``heavy_model``; ``0`` → none.

    A heavy model (a transformer backbone, ``Bundle.heavy``) keeps every core busy by
    itself and the features cost about 2 % of its time, so they run inline rather than
    in processes that would take cores from the model's threads.

    Raises:
        ValueError: another negative or a non-integer count.
    """
    if workers is None or (isinstance(workers, (int, np.integer)) and workers == -1):
        return 0 if heavy_model else _usable_cores()
    if not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0 = compute features in this "
                         f"process), or -1 / None (one per CPU core); got {workers!r}")
    return int(workers)


@dataclass(frozen=True)
class _Workers:
    executor: Executor
    n: int


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is handled by the parent, which shuts the pool down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _feature_workers(workers: int | None, *, heavy_model: bool = False) -> Iterator[_Workers | None]:
    """A pool of ``workers`` forked feature processes (None when 0).

    While the pool exists, torch (if loaded) runs the model with at most
    ``max(1, cores - workers)`` intra-op threads, so that the model and the feature
    processes do not oversubscribe the cores (OpenMP threads that wait for a core they
    share burn CPU); the previous setting is restored afterwards.
    """
    n = resolve_workers(workers, heavy_model=heavy_model)
    if n == 0:
        yield None
        return
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    # fork: the children need no imports and never touch torch (they only run features)
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    ex = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_ignore_sigint)
    try:
        if torch is not None and threads is not None:
            torch.set_num_threads(max(1, min(threads, _usable_cores() - n)))
        yield _Workers(ex, n)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        if torch is not None and threads is not None:
            torch.set_num_threads(threads)


def _features_job(y: np.ndarray, sr: int, starts_s: np.ndarray, window_s: float,
                  opts: dict[str, Any], shift_st: float = 0.0,
                  ) -> tuple[np.ndarray, dict[str, float], np.ndarray | None]:
    """Features of one block and, for a pitch-normalised model, the block shifted by
    ``shift_st`` semitones (runs in a worker process or inline)."""
    timings: dict[str, float] = {}
    df = features.window_features(y, sr, starts_s=starts_s, window_s=window_s,
                                  timings=timings, **opts)
    shifted = None
    if shift_st:
        t = time.perf_counter()
        shifted = pitchnorm.shift_pitch(y, sr, semitones=shift_st)
        _tick(timings, "pitch_norm", t)
    return df.to_numpy(dtype=np.float64), timings, shifted


def _voiced_semitones_job(y: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    return pitchnorm.voiced_semitones(y, sr), time.perf_counter() - t


def _recording_shift(path: Path, *, sr: int, target_hz: float, block_n: int, pool: _Workers | None,
                     timings: MutableMapping[str, float] | None) -> float:
    """The shift (semitones) that moves this recording's register to ``target_hz``: one
    pass over the file (:func:`ser.signal.pitchnorm.recording_register_hz`), its blocks' pitch
    analyses spread over the feature workers when there are any."""
    if pool is None:
        t = time.perf_counter()
        register = pitchnorm.recording_register_hz(path, sample_rate=sr, block_s=block_n / sr)
        _tick(timings, "pitch_norm", t)
        return pitchnorm.semitones_to(target_hz, register)
    parts: list[np.ndarray] = []
    pending: deque[Future] = deque()

    def take(fut: Future) -> None:
        st, sec = fut.result()
        parts.append(st)
        _merge(timings, {"pitch_norm": sec})

    blocks = audio.iter_blocks_n(path, sample_rate=sr, block_n=block_n, overlap_n=0)
    try:
        for _, y in blocks:
            pending.append(pool.executor.submit(_voiced_semitones_job, y, sr))
            while len(pending) > pool.n:  # bounded: at most n + 1 blocks in memory
                take(pending.popleft())
        while pending:
            take(pending.popleft())
    finally:
        blocks.close()
        for fut in pending:
            fut.cancel()
    register = pitchnorm.register_from_semitones(np.concatenate(parts) if parts else np.zeros(0))
    return pitchnorm.semitones_to(target_hz, register)


def _merge(timings: MutableMapping[str, float] | None, add: dict[str, float]) -> None:
    if timings is not None:
        for k, v in add.items():
            timings[k] = timings.get(k, 0.0) + v


def _tick(timings: MutableMapping[str, float] | None, key: str, t0: float) -> float:
    now = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + (now - t0)
    return now


# ---------------------------------------------------------------------------- one recording

def predict_recording(
    bundle: ModelBundle,
    path: str | os.PathLike[str],
    *,
    hop_s: float,
    batch_size: int | None = None,
    block_s: float = BLOCK_S,
    f0_method: str = "praat",
    voice_quality: bool = False,
    egemaps: bool = False,
    workers: int | None = 0,
    timings: MutableMapping[str, float] | None = None,
) -> pd.DataFrame:
    """Emotion probabilities and prosody for every window of one recording.

    Args:
        bundle: model bundle (``labels``, ``sample_rate``, ``window_s``,
            ``window_samples``, ``predict_proba``); see :func:`ser.models.bundle.load_bundle`.
        path: audio file (any format/rate/channels :func:`ser.signal.audio.load` reads).
        hop_s: step between window starts (s), ``0 < hop_s <= bundle.window_s``.
        batch_size: windows per forward pass (``None``: the model's preferred size,
            see :func:`resolve_batch_size`).
        block_s: audio processed at once (s); bounds memory (see module docstring).
        f0_method: ``"praat"`` or ``"pyin"`` (see :func:`ser.signal.features.f0_track`).
        voice_quality: add jitter, shimmer and HNR per window.
        egemaps: add openSMILE eGeMAPS descriptor means per window.
        workers: processes computing the features while the model runs (0: none,
            ``None`` or -1: one per CPU core); does not change the result.
        timings: if given, seconds per step are added to it (``decode_resample``,
            ``log_mel_cnn``, ``f0``, ``energy``, ``vad``, ``summarise``,
            ``voice_quality``, ``egemaps``, ``wait_features``).

    Returns:
        One row per window: ``start_s, end_s`` (s), ``p_<label>`` per label (rows sum
        to 1), :func:`ser.signal.features.feature_columns`, and ``padded`` (bool, see module
        docstring).

    Raises:
        ser.signal.audio.AudioError: missing, unreadable, empty, non-finite or silent audio.
        ValueError: bad ``hop_s``, ``batch_size``, ``block_s``, ``f0_method`` or ``workers``.
    """
    batch_size, opts = _run_options(bundle, hop_s=hop_s, batch_size=batch_size, block_s=block_s,
                                    f0_method=f0_method, voice_quality=voice_quality,
                                    egemaps=egemaps, workers=workers)
    with _feature_workers(workers, heavy_model=bool(getattr(bundle, "heavy", False))) as pool:
        df, _ = _predict_file(bundle, Path(path), hop_s=hop_s, batch_size=batch_size,
                              block_s=block_s, opts=opts, pool=pool, timings=timings)
    return df


def _predict_file(
    bundle: ModelBundle,
    path: Path,
    *,
    hop_s: float,
    batch_size: int,
    block_s: float,
    opts: dict[str, Any],
    pool: _Workers | None,
    timings: MutableMapping[str, float] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`predict_recording` on checked options; also returns the file's header info."""
    sr, win_n = int(bundle.sample_rate), int(bundle.window_samples)
    window = Fraction(win_n, sr)
    labels = list(bundle.labels)
    columns = window_columns(labels, voice_quality=opts["voice_quality"], egemaps=opts["egemaps"])
    n_feat = len(columns) - 3 - len(labels)

    frames, sr_in, channels = audio.info_frames(path)
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
    feats = np.full((n_win, n_feat), np.nan)
    chunk = max(1, batch_size) * 4
    pending: deque[tuple[int, int, Future, np.ndarray]] = deque()
    peak = 0.0

    def run_model(i0: int, i1: int, local: np.ndarray, ymodel: np.ndarray) -> None:
        t = time.perf_counter()
        need = int(local[-1]) + win_n
        ypad = audio.fix_length(ymodel, max(need, len(ymodel)))
        shared = getattr(bundle, "predict_proba_starts", None)
        if shared is not None:  # log-mel models share the frames of overlapping windows
            probs[i0:i1] = shared(ypad, local, batch_size=batch_size)
        else:
            frames_view = np.lib.stride_tricks.sliding_window_view(ypad, win_n)
            for c0 in range(0, len(local), chunk):
                idx = local[c0:c0 + chunk]
                p = bundle.predict_proba(np.ascontiguousarray(frames_view[idx]), batch_size=batch_size)
                probs[i0 + c0:i0 + c0 + len(idx)] = p
        _tick(timings, "log_mel_cnn", t)

    def collect() -> None:
        i0, i1, fut, local = pending.popleft()
        t = time.perf_counter()
        arr, tm, shifted = fut.result()
        _tick(timings, "wait_features", t)
        feats[i0:i1] = arr
        _merge(timings, tm)
        if shifted is not None:  # pitch-normalised model: it runs once the shifted block is back
            run_model(i0, i1, local, shifted)

    # speaker pitch normalisation (bundles trained with it): one register for the recording,
    # from a first pass over it; the model hears the shifted audio, the features the original
    target_hz = bundle.pitch_norm_hz
    shift_st = 0.0
    if target_hz > 0:
        shift_st = _recording_shift(path, sr=sr, target_hz=target_hz, block_n=block_n, pool=pool,
                                    timings=timings)

    blocks = audio.iter_blocks_n(path, sample_rate=sr, block_n=block_n, overlap_n=win_n + 2 * ctx_n)
    try:
        while True:
            t = time.perf_counter()
            item = next(blocks, None)
            t = _tick(timings, "decode_resample", t)
            if item is None:
                break
            off, y = item
            if len(y):
                peak = max(peak, float(np.max(np.abs(y))))
            lo = 0 if off == 0 else off + ctx_n
            i0, i1 = (int(i) for i in np.searchsorted(start_n, [lo, off + block_n + ctx_n], side="left"))
            if i1 > i0:
                local = start_n[i0:i1] - off
                job = (y, sr, local / sr, win_n / sr, opts, shift_st)
                if pool is None:
                    arr, tm, shifted = _features_job(*job)
                    feats[i0:i1] = arr
                    _merge(timings, tm)
                    run_model(i0, i1, local, y if shifted is None else shifted)
                else:
                    pending.append((i0, i1, pool.executor.submit(_features_job, *job), local))
                    if not shift_st:  # the model reads the block as decoded, while the workers run
                        run_model(i0, i1, local, y)
                while pool is not None and len(pending) > pool.n:
                    collect()
            if on_progress is not None:
                on_progress(min(block_n, n_total - off) / sr)
        while pending:
            collect()
    finally:
        blocks.close()  # an ffmpeg decoder subprocess ends now, not when the traceback is freed
        for *_, fut in pending:
            fut.cancel()
    if peak == 0.0:
        raise audio.AudioError(f"audio file {path} is digital silence (every sample is 0): "
                               "nothing to analyse; check the recording")
    if 20 * math.log10(peak) < SILENT_PEAK_DBFS:
        raise audio.AudioError(f"audio file {path} is silent (peak {20 * math.log10(peak):.1f} dBFS, "
                               f"below {SILENT_PEAK_DBFS:g} dBFS): nothing to analyse; check the recording")

    df = pd.DataFrame({"start_s": start_s, "end_s": end_s})
    for j, lab in enumerate(labels):
        df[f"p_{lab}"] = probs[:, j].astype(np.float64)
    for j, col in enumerate(columns[2 + len(labels):-1]):
        df[col] = feats[:, j]
    df["padded"] = padded
    info = {"duration_s": frames / sr_in, "sample_rate": sr_in, "channels": channels}
    return df[columns], info


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


def model_stamp_path(out_csv: str | os.PathLike[str]) -> Path:
    """The file beside a window table that names the model which computed it
    (``windows.csv`` → ``windows.model.json``)."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}.model.json")


def _model_stamp(bundle: ModelBundle) -> dict[str, Any]:
    """Model name, precision and :func:`ser.models.bundle.bundle_fingerprint` (None without a folder)."""
    from ser.models import bundle as models

    folder = getattr(bundle, "path", None)
    try:
        fingerprint = models.bundle_fingerprint(folder) if folder is not None else None
    except (FileNotFoundError, ValueError):
        fingerprint = None
    return {"model": _model_name(bundle), "fingerprint": fingerprint}


def _read_stamp(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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
    from ser.core import paths

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
    batch_size: int | None = None,
    block_s: float = BLOCK_S,
    f0_method: str = "praat",
    voice_quality: bool = False,
    egemaps: bool = False,
    workers: int | None = 0,
) -> pd.DataFrame:
    """Run :func:`predict_recording` over a table of recordings (stage 04); resumable.

    After each recording, ``out_csv`` (all finished rows, in table order) and
    ``failures_csv`` (``recording, path, reason`` of this run's failures) are rewritten
    atomically, so an interrupted run leaves complete recordings only. With ``resume``,
    recordings already in ``out_csv`` are skipped; failed ones are tried again. The model
    that computed ``out_csv`` is named beside it (:func:`model_stamp_path`: bundle name,
    precision and :func:`ser.models.bundle.bundle_fingerprint`); when the bundle has changed
    since (retrained, recalibrated), nothing is reused and every recording is recomputed.
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
        batch_size: windows per forward pass (``None``: the model's preferred size,
            see :func:`resolve_batch_size`).
        block_s: audio processed at once (s).
        f0_method: ``"praat"`` or ``"pyin"``.
        voice_quality: add ``jitter_local, shimmer_local, hnr_db``.
        egemaps: add ``egemaps_<descriptor>_mean`` columns.
        workers: feature processes (0: none, ``None`` or -1: auto, see :func:`resolve_workers`).

    Returns:
        The window table written to ``out_csv``: ``recording, caregiver, level, phase``
        then the columns of :func:`predict_recording`.

    Raises:
        ValueError: bad ``hop_s``, options or table, or an ``out_csv`` that cannot be resumed.
    """
    from tqdm import tqdm

    from ser.core import paths

    batch_size, opts = _run_options(bundle, hop_s=hop_s, batch_size=batch_size, block_s=block_s,
                                    f0_method=f0_method, voice_quality=voice_quality,
                                    egemaps=egemaps, workers=workers)
    _check_recordings(recordings)
    out_csv, failures_csv = Path(out_csv), Path(failures_csv)
    columns = [*ID_COLUMNS, *window_columns(bundle.labels, voice_quality=voice_quality,
                                            egemaps=egemaps)]
    recs = recordings.assign(**{c: recordings[c].astype(str) for c in ID_COLUMNS})
    order = {r: i for i, r in enumerate(recs["recording"])}

    stamp_path = model_stamp_path(out_csv)
    stamp = _model_stamp(bundle)
    done: dict[str, pd.DataFrame] = {}
    if resume and out_csv.is_file() and _read_stamp(stamp_path) != stamp:
        print(f"{out_csv.name} was computed with another model than {stamp['model']} "
              f"({stamp_path.name} differs or is missing): recomputing every recording",
              file=sys.stderr)
    elif resume:
        prev = _read_previous(out_csv, columns, hop_s, set(order))
        done = {r: g for r, g in prev.groupby("recording", sort=False)}
    failures: list[dict[str, Any]] = []

    def write() -> pd.DataFrame:
        parts = [done[r] for r in sorted(done, key=order.__getitem__)]
        table = (pd.concat(parts, ignore_index=True) if parts
                 else pd.DataFrame(columns=columns))[columns]
        atomic.atomic_write_csv(out_csv, table)
        # after the rows: a crash in between leaves an old stamp, so the rows are redone
        atomic.atomic_write_json(stamp_path, stamp)
        atomic.atomic_write_csv(failures_csv,
                                    pd.DataFrame(failures, columns=list(FAILURE_COLUMNS)))
        return table

    todo = recs[~recs["recording"].isin(done)]
    bar = tqdm(todo.itertuples(index=False), total=len(todo), disable=not progress,
               desc="inference", unit="rec")
    with _feature_workers(workers, heavy_model=bool(getattr(bundle, "heavy", False))) as pool:
        for row in bar:
            row = row._asdict()
            path = paths.resolve(str(row["path"]))
            try:
                df, _ = _predict_file(bundle, path, hop_s=hop_s, batch_size=batch_size,
                                      block_s=block_s, opts=opts, pool=pool)
            except Exception as e:  # noqa: BLE001 - any per-file error goes to the failure table
                failures.append({"recording": row["recording"], "path": str(row["path"]),
                                 "reason": f"{type(e).__name__}: {e}"})
            else:
                for c in reversed(ID_COLUMNS):
                    df.insert(0, c, row[c])
                done[row["recording"]] = df
            write()
    return write()


# ---------------------------------------------------------------------------- files and folders (ser predict)

@dataclass(frozen=True)
class Prediction:
    """Result of :func:`predict_paths`.

    Attributes:
        windows: ``file`` then :func:`window_columns`, one row per window, files in input order.
        summary: :func:`summary_columns`, one row per file (failed ones included).
        failures: ``file, reason`` per failed file or input.
    """

    windows: pd.DataFrame
    summary: pd.DataFrame
    failures: pd.DataFrame


def output_paths(output: str | os.PathLike[str], *, fmt: str = "csv") -> dict[str, Path]:
    """Files :func:`predict_paths` writes for ``output``.

    Returns:
        ``{"windows": FILE}`` for JSON; for CSV also ``"summary"`` and ``"failures"``:
        ``FILE`` with ``.csv`` replaced by ``.summary.csv`` / ``.failures.csv`` (appended
        when ``FILE`` does not end in ``.csv``).
    """
    out = Path(output)
    if fmt == "json":
        return {"windows": out}
    stem = out.name[:-4] if out.name.lower().endswith(".csv") else out.name
    return {"windows": out, "summary": out.with_name(f"{stem}.summary.csv"),
            "failures": out.with_name(f"{stem}.failures.csv")}


def _json_value(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if v is pd.NA or v is None:
        return None
    return v


def _json_rows(df: pd.DataFrame) -> str:
    """Rows as comma-separated JSON objects (no brackets); NaN → null."""
    cols = list(df.columns)
    return ", ".join(json.dumps(dict(zip(cols, map(_json_value, row), strict=True)), allow_nan=False)
                     for row in df.itertuples(index=False, name=None))


def _normalise_summary(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Canonical dtypes, so a table re-read from disk renders exactly as written."""
    df = df.reindex(columns=columns)
    for c in columns:
        if c in _SUMMARY_INTS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
        elif c in _SUMMARY_STRS:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
            df[c] = df[c].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                              else str(v))
        else:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    return df


class _Outputs:
    """Atomic, resumable writer of the three tables of :func:`predict_paths`."""

    def __init__(self, output: Path, *, fmt: str, window_cols: list[str], summary_cols: list[str]):
        self.paths = output_paths(output, fmt=fmt)
        self.fmt = fmt
        self.window_cols = ["file", *window_cols]
        self.summary_cols = summary_cols
        self._rendered: dict[str, str] = {}

    def _render(self, key: str, df: pd.DataFrame) -> str:
        if key not in self._rendered:
            self._rendered[key] = (df.to_csv(index=False, header=False, lineterminator="\n")
                                   if self.fmt == "csv" else _json_rows(df))
        return self._rendered[key]

    def write(self, parts: list[tuple[str, pd.DataFrame]], summary: pd.DataFrame,
              failures: pd.DataFrame) -> None:
        """Write windows (first), then summary, then failures; each file atomically."""
        if self.fmt == "csv":
            header = pd.DataFrame(columns=self.window_cols).to_csv(index=False, lineterminator="\n")
            atomic.atomic_write_text(self.paths["windows"],
                                         header + "".join(self._render(k, d) for k, d in parts))
            atomic.atomic_write_csv(self.paths["summary"], summary, lineterminator="\n")
            atomic.atomic_write_csv(self.paths["failures"], failures, lineterminator="\n")
            return
        rows = ", ".join(t for t in (self._render(k, d) for k, d in parts) if t)
        text = ('{"windows": [' + rows + '], "summary": [' + _json_rows(summary)
                + '], "failures": [' + _json_rows(failures) + "]}\n")
        atomic.atomic_write_text(self.paths["windows"], text)

    def write_stamp(self, stamp: dict[str, Any]) -> None:
        """Name the model beside the tables (after them: a crash in between is refused on resume)."""
        atomic.atomic_write_json(model_stamp_path(self.paths["windows"]), stamp)

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """Previous windows and summary, or None when there is nothing to resume."""
        main = self.paths["windows"]
        if not main.is_file() or ("summary" in self.paths and not self.paths["summary"].is_file()):
            return None
        try:
            if self.fmt == "csv":
                win = pd.read_csv(main, dtype={"file": str},
                                  keep_default_na=False, na_values=[""])
                summ = pd.read_csv(self.paths["summary"], dtype={c: str for c in _SUMMARY_STRS},
                                   keep_default_na=False,
                                   na_values=[""])
            else:
                obj = json.loads(main.read_text(encoding="utf-8"))
                win = pd.DataFrame(obj["windows"], columns=self.window_cols if not obj["windows"]
                                   else None)
                summ = pd.DataFrame(obj["summary"], columns=self.summary_cols if not obj["summary"]
                                    else None)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ResumeError(f"cannot resume from {main}: {e}; delete it or write to another "
                              "file (-o)") from e
        if list(win.columns) != self.window_cols or list(summ.columns) != self.summary_cols:
            raise ResumeError(f"cannot resume from {main}: its columns differ from this run's "
                              "(another model's labels or other feature options); delete it or "
                              "write to another file (-o)")
        for c in self.window_cols[1:]:
            win[c] = win[c].astype(bool) if c == "padded" else pd.to_numeric(win[c]).astype(np.float64)
        win["file"] = win["file"].astype(str)
        return win, _normalise_summary(summ, self.summary_cols)


def _summary_row(file: str, df: pd.DataFrame, info: dict[str, Any], labels: list[str], *,
                 window_s: float, hop_s: float, model: str) -> dict[str, Any]:
    means = df[[f"p_{lab}" for lab in labels]].mean().to_numpy()
    return {"file": file, "status": "ok", **info, "windows": len(df),
            "dominant_emotion": labels[int(np.argmax(means))],
            **{f"p_{lab}": float(m) for lab, m in zip(labels, means, strict=True)},
            "window_s": window_s, "hop_s": float(hop_s), "model": model, "error": None}


def _model_name(bundle: ModelBundle) -> str:
    """Bundle folder name, with ``@bf16`` / ``@int8`` when not run in float32."""
    p = getattr(bundle, "path", None)
    name = Path(p).name if p is not None else ""
    precision = getattr(bundle, "precision", "fp32")
    return name if precision == "fp32" else f"{name}@{precision}"


def predict_paths(
    bundle: ModelBundle,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    hop_s: float | None = None,
    output: str | os.PathLike[str] | None = None,
    fmt: str = "csv",
    resume: bool = True,
    progress: bool = True,
    batch_size: int | None = None,
    block_s: float = BLOCK_S,
    f0_method: str = "praat",
    voice_quality: bool = False,
    egemaps: bool = False,
    workers: int | None = 0,
    checkpoint_s: float = CHECKPOINT_S,
    timings: MutableMapping[str, float] | None = None,
) -> Prediction:
    """Windowed emotion + features for audio files and folders (``ser predict``).

    Folders are searched recursively (:func:`ser.signal.audio.find_audio_files`). Each file is
    processed by :func:`predict_recording`; a file that fails (unreadable, silent, M4A
    without ffmpeg, ...) gets a failure row and the rest carries on. With ``output``, the
    tables are rewritten atomically as files finish (at most every ``checkpoint_s``
    seconds, and on exit, including Ctrl-C), and with ``resume`` a previous run's
    finished files are kept and skipped. See the module docstring for the files and columns.

    Args:
        bundle: model bundle (see :func:`predict_recording`).
        inputs: audio files and/or folders.
        hop_s: step between window starts (s); ``None``: half the window (:func:`default_hop`).
        output: file to write (``None``: write nothing, just return).
        fmt: ``"csv"`` or ``"json"``.
        resume: keep files finished in an existing ``output``.
        progress: tqdm progress bar (seconds of audio) on stderr.
        batch_size: windows per forward pass (``None``: the model's preferred size,
            see :func:`resolve_batch_size`).
        block_s: audio processed at once (s).
        f0_method: ``"praat"`` or ``"pyin"``.
        voice_quality: add ``jitter_local, shimmer_local, hnr_db``.
        egemaps: add ``egemaps_<descriptor>_mean`` columns.
        workers: feature processes (0: none, ``None`` or -1: auto, see :func:`resolve_workers`).
        checkpoint_s: minimum seconds between two writes of ``output``.
        timings: if given, seconds per step are added (see :func:`predict_recording`),
            plus ``write``.

    Returns:
        The :class:`Prediction` (windows, summary, failures), as written.

    Raises:
        ValueError: bad hop or options.
        ResumeError: ``output`` exists but was written with another model, labels, hop
            or feature options.
    """
    from tqdm import tqdm

    hop = default_hop(bundle) if hop_s is None else hop_s
    window_s = bundle.window_samples / bundle.sample_rate
    batch_size, opts = _run_options(bundle, hop_s=hop, batch_size=batch_size, block_s=block_s,
                                    f0_method=f0_method, voice_quality=voice_quality,
                                    egemaps=egemaps, workers=workers)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}; got {fmt!r}")
    labels = list(bundle.labels)
    wcols = window_columns(labels, voice_quality=voice_quality, egemaps=egemaps)
    scols = summary_columns(labels)
    model = _model_name(bundle)
    stamp = _model_stamp(bundle)
    files, problems = audio.find_audio_files(inputs)
    keys = [str(f) for f in files]
    writer = _Outputs(Path(output), fmt=fmt, window_cols=wcols, summary_cols=scols) if output else None

    results: dict[str, pd.DataFrame] = {}
    summary: dict[str, dict[str, Any]] = {}
    if writer is not None and resume:
        prev = writer.read()
        old_stamp = _read_stamp(model_stamp_path(writer.paths["windows"]))
        if prev is not None and old_stamp != stamp:
            old = (old_stamp or {}).get("model")
            what = ("no recorded model" if old is None else
                    f"another version of {old!r} (retrained or recalibrated)" if old == model else
                    f"model {old!r}")
            raise ResumeError(
                f"cannot resume from {writer.paths['windows']}: it was computed with {what} "
                f"({model_stamp_path(writer.paths['windows']).name}); this run uses {model!r}. "
                "Delete it, write to another file (-o), or use --no-resume")
        if prev is not None:
            win, summ = prev
            groups = {k: g for k, g in win.groupby("file", sort=False)}
            for row in summ.to_dict("records"):
                k = row["file"]
                if k not in keys or row["status"] != "ok":
                    continue
                if row["model"] != model or not math.isclose(row["hop_s"], float(hop), abs_tol=1e-9) \
                        or not math.isclose(row["window_s"], window_s, abs_tol=1e-9):
                    raise ResumeError(
                        f"cannot resume from {writer.paths['windows']}: {k} was computed with model "
                        f"{row['model']!r}, hop {row['hop_s']:g} s, window {row['window_s']:g} s; this "
                        f"run uses model {model!r}, hop {float(hop):g} s, window {window_s:g} s. Delete "
                        "it, write to another file (-o), or use the same model and --hop")
                g = groups.get(k)
                if g is not None and len(g) == row["windows"]:
                    results[k] = g.reset_index(drop=True)
                    summary[k] = row
    failures: dict[str, str] = {str(p): reason for p, reason in problems}

    def tables() -> tuple[list[tuple[str, pd.DataFrame]], pd.DataFrame, pd.DataFrame]:
        parts = [(k, results[k]) for k in keys if k in results]
        rows = []
        for k in [*keys, *(str(p) for p, _ in problems)]:
            if k in summary:
                rows.append(summary[k])
            elif k in failures:
                rows.append({"file": k, "status": "failed", "error": failures[k]})
        summ = _normalise_summary(pd.DataFrame(rows, columns=scols), scols)
        fail = pd.DataFrame([(k, failures[k]) for k in [*keys, *(str(p) for p, _ in problems)]
                             if k in failures], columns=list(FILE_FAILURE_COLUMNS))
        return parts, summ, fail

    written_state: list[Any] = [-math.inf, None]  # last write time, (results, failures) then

    def checkpoint(force: bool) -> None:
        if writer is None:
            return
        state = (len(results), len(failures))
        if state == written_state[1] and not force:
            return
        if not force and time.perf_counter() - written_state[0] < checkpoint_s:
            return
        t = time.perf_counter()
        writer.write(*tables())
        writer.write_stamp(stamp)
        _tick(timings, "write", t)
        written_state[0], written_state[1] = time.perf_counter(), state

    todo = [f for f, k in zip(files, keys, strict=True) if k not in results]
    total = 0.0
    for f in todo:
        with contextlib.suppress(Exception):
            fr, sr_in, _ = audio.info_frames(f)
            total += fr / sr_in
    bar = tqdm(total=round(total, 1), disable=not progress, unit="s", desc="ser predict",
               file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio "
                                           "[{elapsed}<{remaining}]")
    try:
        with _feature_workers(workers, heavy_model=bool(getattr(bundle, "heavy", False))) as pool:
            for f in todo:
                k = str(f)
                failures.pop(k, None)
                try:
                    df, info = _predict_file(bundle, f, hop_s=hop, batch_size=batch_size,
                                             block_s=block_s, opts=opts, pool=pool, timings=timings,
                                             on_progress=lambda s: bar.update(s))
                except Exception as e:  # noqa: BLE001 - any per-file error goes to the failure table
                    failures[k] = f"{type(e).__name__}: {e}"
                    if progress:
                        bar.write(f"ser predict: failed: {k}: {failures[k]}", file=sys.stderr)
                else:
                    df.insert(0, "file", k)
                    results[k] = df
                    summary[k] = _summary_row(k, df, info, labels, window_s=window_s, hop_s=hop,
                                              model=model)
                checkpoint(force=False)
    finally:
        bar.close()
        checkpoint(force=True)  # also on Ctrl-C: keep every finished file
    parts, summ, fail = tables()
    windows = (pd.concat([d for _, d in parts], ignore_index=True) if parts
               else pd.DataFrame({c: pd.Series(dtype=object if c == "file" else np.float64)
                                  for c in ["file", *wcols]}))
    return Prediction(windows=windows, summary=summ, failures=fail)


def predict_cli(
    *,
    model: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    hop_s: float | None = None,
    fmt: str = "csv",
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
    f0_method: str = "praat",
    voice_quality: bool = False,
    egemaps: bool = False,
    workers: int | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    resume: bool = True,
) -> int:
    """``ser predict MODEL PATH... [--hop S] [--format csv|json] [-o FILE]``.

    Loads the bundle with :func:`ser.models.bundle.load_bundle` and runs :func:`predict_paths`.
    Errors in the command itself (model folder without ``model.json``, bad ``--hop``,
    an output that cannot be resumed) print one line naming the file or option and
    return 2, without a traceback; per-file errors go to the failure table.

    Args:
        model: bundle folder holding ``model.json``.
        inputs: audio files and/or folders (recursive).
        hop_s: ``--hop`` in seconds; ``None``: half the model's window.
        fmt: ``"csv"`` or ``"json"``.
        output: ``-o`` file; ``None``: stdout (windows; summary and failures on stderr for CSV).
        progress: progress bar on stderr.
        f0_method: ``"praat"`` (default) or ``"pyin"``.
        voice_quality: add jitter, shimmer, HNR.
        egemaps: add eGeMAPS descriptor means.
        workers: feature processes (``None`` or -1: auto, see :func:`resolve_workers`; 0: none).
        batch_size: windows per forward pass (``None``: the model's preferred size,
            see :func:`resolve_batch_size`).
        device: torch device for the model (``"cpu"``, ``"cuda"``, ``"auto"``).
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (see :func:`ser.models.bundle.load_bundle`).
        resume: keep files already finished in ``output``.

    Returns:
        Exit code: 0 all files done, 1 some failed (the rest is written), 2 usage error,
        130 interrupted (finished files are written; run again to resume).
    """
    from ser.models import bundle as models

    def usage(msg: str) -> int:
        print(f"ser predict: error: {msg}", file=sys.stderr)
        return 2

    if fmt not in FORMATS:
        return usage(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if not inputs:
        return usage("give at least one audio file or folder (PATH)")
    if hop_s is not None:
        try:
            ok = math.isfinite(float(hop_s)) and float(hop_s) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return usage(f"--hop must be a number of seconds > 0; got --hop {hop_s}")
    try:
        bundle = models.load_bundle(model, device=device, precision=precision)
    except (FileNotFoundError, ValueError, OSError) as e:
        return usage(f"MODEL {model}: {e}")
    window_s = bundle.window_samples / bundle.sample_rate
    if hop_s is not None and float(hop_s) > window_s:
        return usage(f"--hop must be at most the model's window ({window_s:g} s, from "
                     f"{Path(model) / 'model.json'}); got --hop {hop_s}")
    try:
        res = predict_paths(bundle, inputs, hop_s=hop_s, output=output, fmt=fmt, resume=resume,
                            progress=progress, batch_size=batch_size, f0_method=f0_method,
                            voice_quality=voice_quality, egemaps=egemaps, workers=workers)
    except ResumeError as e:
        return usage(f"-o {output}: {e}")
    except ValueError as e:
        return usage(str(e))
    except KeyboardInterrupt:
        where = (f"finished files are in {output}; run the same command again to resume"
                 if output else "nothing was written (no -o)")
        print(f"\nser predict: interrupted; {where}", file=sys.stderr)
        return 130
    if output is None:
        if fmt == "json":
            sys.stdout.write('{"windows": [' + _json_rows(res.windows) + '], "summary": ['
                             + _json_rows(res.summary) + '], "failures": ['
                             + _json_rows(res.failures) + "]}\n")
        else:
            sys.stdout.write(res.windows.to_csv(index=False, lineterminator="\n"))
            ok = res.summary[res.summary["status"] == "ok"]
            if len(ok):
                cols = ["file", "duration_s", "windows", "dominant_emotion",
                        *[f"p_{lab}" for lab in bundle.labels]]
                print("summary:\n" + ok[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"),
                      file=sys.stderr)
    else:
        names = ", ".join(str(p) for p in output_paths(output, fmt=fmt).values())
        print(f"ser predict: {int((res.summary['status'] == 'ok').sum())} file(s), "
              f"{len(res.windows)} windows -> {names}", file=sys.stderr)
    if len(res.failures):
        print(f"ser predict: {len(res.failures)} file(s) failed:\n"
              + res.failures.to_string(index=False), file=sys.stderr)
        return 1
    return 0
