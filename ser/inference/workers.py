"""The feature worker pool of windowed inference and the jobs it runs.

The per-window features of a block (:func:`ser.signal.features.window_features`) can run
in ``workers`` forked processes while the main process decodes and runs the model on
the next blocks; results do not depend on ``workers``. For a pitch-normalised model the
workers also shift each block (:func:`ser.signal.pitchnorm.shift_pitch`) and analyse the
recording's register.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ser.core import timing
from ser.signal import features, pitchnorm


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
class Workers:
    """A running pool of feature processes.

    Attributes:
        executor: the process pool.
        n: its number of processes (at most ``n + 1`` blocks wait for it).
    """

    executor: Executor
    n: int


#: Seconds between two checks of a worker's watchdog that its parent is still alive.
WATCHDOG_S: float = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _init_worker(parent_pid: int) -> None:
    """Worker initializer: Ctrl-C is handled by the parent, which shuts the pool down;
    SIGTERM ends the worker (not the parent's handler, inherited by the fork); and the
    worker ends when its parent dies, even by SIGKILL (:func:`_die_with_parent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent_pid)


def _die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` dies: on Linux the kernel sends SIGKILL
    (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread checks ``os.getppid()``
    every :data:`WATCHDOG_S` seconds (a re-parented process has another parent)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="ser-parent-watchdog", daemon=True).start()


def _ready() -> int:
    return os.getpid()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def feature_workers(n: int) -> Iterator[Workers | None]:
    """A pool of ``n`` forked feature processes (None when 0; ``n`` from :func:`resolve_workers`).

    While the pool exists, torch (if loaded) runs the model with at most
    ``max(1, cores - n)`` intra-op threads, so that the model and the feature
    processes do not oversubscribe the cores (OpenMP threads that wait for a core they
    share burn CPU); the previous setting is restored afterwards.

    The workers never outlive this process: each ends when its parent dies, however it
    dies (SIGKILL included), and ignores Ctrl-C, which the parent handles.
    """
    if n == 0:
        yield None
        return
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    # fork: the children need no imports and never touch torch (they only run features)
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    ex = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker,
                             initargs=(os.getpid(),))
    try:
        # start the processes now, from the thread that will also shut them down: the
        # kernel's parent-death signal follows the thread that forked a worker
        ex.submit(_ready).result()
        if torch is not None and threads is not None:
            torch.set_num_threads(max(1, min(threads, _usable_cores() - n)))
        yield Workers(ex, n)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        if torch is not None and threads is not None:
            torch.set_num_threads(threads)


ModelFeatures = Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


def features_job(y: np.ndarray, sr: int, starts_s: np.ndarray, window_s: float,
                 opts: dict[str, Any], shift_st: float = 0.0, *,
                 model_features: ModelFeatures | None = None, starts_n: np.ndarray | None = None,
                 pad_n: int | None = None,
                 ) -> tuple[np.ndarray, dict[str, float], np.ndarray | None, Mapping[str, np.ndarray] | None]:
    """Features of one block and, for a pitch-normalised model, the block shifted by
    ``shift_st`` semitones (runs in a worker process or inline).

    With ``model_features`` (a classical bundle's
    :attr:`ser.inference.protocol.FeatureJobBundle.block_features`) the job also computes
    the model's features of the windows at samples ``starts_n`` of the (shifted) block
    (:func:`block_model_features`; zero-padded to ``pad_n`` samples, default the end of
    the last of them) and returns them in place of the shifted block (None when
    ``starts_n`` is empty).

    Returns:
        ``(prosody [n, k], seconds per step, shifted block or None, model features or None)``.
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    praat = shared_pitch(y, sr, opts=opts, shift_st=shift_st)
    if praat is not None:  # one pitch analysis for the F0 column and the PSOLA shift
        timing.tick(timings, "f0", t)
    df = features.window_features(y, sr, starts_s=starts_s, window_s=window_s,
                                  timings=timings, praat=praat, **opts)
    wanted = model_features is None or (starts_n is not None and len(starts_n) > 0)
    shifted = None
    if shift_st and wanted:  # (no model windows to compute: the shifted block is not needed)
        t = time.perf_counter()
        shifted = model_block(y, sr, shift_st=shift_st, praat=praat)
        timing.tick(timings, "pitch_norm", t)
    feats = None
    if model_features is not None:
        if starts_n is not None and len(starts_n):
            t = time.perf_counter()
            need = int(starts_n[-1]) + int(round(window_s * sr)) if pad_n is None else int(pad_n)
            feats = block_model_features(y if shifted is None else shifted, starts_n, pad_n=need,
                                         model_features=model_features)
            timing.tick(timings, "model_features", t)
        shifted = None
    return df.to_numpy(dtype=np.float64), timings, shifted, feats


def shared_pitch(y: np.ndarray, sr: int, *, opts: Mapping[str, Any],
                 shift_st: float) -> tuple[Any, Any] | None:
    """The block's Praat pitch analysis (:func:`ser.signal.features.praat_pitch`) that the F0
    column and the PSOLA shift share, or None when they do not share one (no shift, another
    F0 method, or F0 settings other than the shift's: :func:`ser.signal.pitchnorm.shares_pitch`).

    Args:
        y: the block, mono at ``sr`` Hz.
        sr: Hz.
        opts: the feature options (:meth:`ser.inference.options.InferenceOptions.feature_options`).
        shift_st: the recording's shift (semitones; 0: none).
    """
    share = bool(shift_st) and opts.get("f0_method", "praat") == "praat" and pitchnorm.shares_pitch(
        fmin=opts.get("fmin", 75.0), fmax=opts.get("fmax", 600.0), hop_s=opts.get("hop_s", features.TRACK_HOP_S))
    if not share:
        return None
    return features.praat_pitch(y, sr, fmin=pitchnorm.F0_MIN_HZ, fmax=pitchnorm.F0_MAX_HZ,
                                hop_s=pitchnorm.MANIPULATION_STEP_S)


def model_block(y: np.ndarray, sr: int, *, shift_st: float,
                praat: tuple[Any, Any] | None) -> np.ndarray:
    """The block as a pitch-normalised model hears it: :func:`shift_block` by ``shift_st``
    semitones with the block's :func:`shared_pitch` ``praat``; ``y`` itself when no shift."""
    return shift_block(y, sr, semitones=shift_st, praat=praat) if shift_st else y


def block_model_features(ymodel: np.ndarray, starts_n: np.ndarray, *, pad_n: int,
                         model_features: ModelFeatures) -> Mapping[str, np.ndarray]:
    """``model_features`` of the windows at samples ``starts_n`` of the block ``ymodel`` (as
    the model hears it, :func:`model_block`), zero-padded at the end to ``pad_n`` samples when
    shorter (the last window of a recording). The windows pass and the speaker-reference
    pass (:mod:`ser.inference.speaker_norm`) both compute a block's model features here, with
    ``pad_n`` the end of the block's last window, so a window's features do not depend on
    which of the block's windows are asked for."""
    if pad_n > len(ymodel):
        ymodel = np.pad(ymodel, (0, pad_n - len(ymodel)))
    return model_features(ymodel, starts_n)


def shift_block(y: np.ndarray, sr: int, *, semitones: float,
                praat: tuple[Any, Any] | None = None) -> np.ndarray:
    """A block shifted by ``semitones`` with PSOLA (:mod:`ser.signal.pitchnorm`), float32 ``[len(y)]``.

    With ``praat``, the block's :func:`ser.signal.features.praat_pitch` (its first
    samples, cut to the F0 column's frame phase, and their pitch), the shift reuses that
    pitch analysis (:func:`ser.signal.pitchnorm.shift_pitch_praat`); the few samples
    after the cut (less than two pitch steps, 20 ms) are shifted alone. Without it:
    :func:`ser.signal.pitchnorm.shift_pitch` of the whole block.
    """
    if praat is None:
        return pitchnorm.shift_pitch(y, sr, semitones=semitones)
    snd, pitch = praat
    head = pitchnorm.shift_pitch_praat(snd, pitch, semitones=semitones)
    tail = pitchnorm.shift_pitch(y[len(head):], sr, semitones=semitones)  # too short: unchanged
    return np.concatenate([head, tail])


def voiced_semitones_job(y: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """One block's voiced pitch (:func:`ser.signal.pitchnorm.voiced_semitones`) and the
    seconds it took (runs in a worker process)."""
    t = time.perf_counter()
    return pitchnorm.voiced_semitones(y, sr), time.perf_counter() - t
