"""Speech detection: Silero VAD (default) or WebRTC's VAD, as frames and as segments.

- **Silero** (``method="silero"``, the detector of the original study): the ``silero-vad``
  package's network (weights inside the package, TorchScript; nothing is downloaded)
  gives a speech probability per 32 ms frame (512 samples at 16 kHz; other rates are
  resampled to 16 kHz for it). The network is recurrent and reads frames in order; to
  run at hundreds of times real time on two cores, a signal is cut into up to
  :data:`SILERO_STREAMS` equal parts (of at least 10 s) that are read side by side as one
  batch, each from a fresh state after reading the 0.5 s before it
  (:data:`SILERO_CONTEXT`; the first part reads its own first 0.5 s twice). The network's
  state has a long memory, so some frames differ from one long pass; frame-level F1
  against the truth is within about 0.01 of it (``tests/test_diarization.py``). A frame is speech when its probability is at
  least ``threshold`` (0.5). The network runs in :data:`SILERO_THREADS` torch thread
  (each step is too small to share: on the busy two-core machine two threads took 17-37×
  the CPU time of one, ``benchmarks/RESULTS.md``).
- **WebRTC** (``method="webrtc"``): :func:`ser.signal.features.speech_activity` (GMM, mode
  2, 30 ms frames, energy-trimmed runs).

:func:`speech_segments` turns frame decisions into segments the way Silero's own
``get_speech_timestamps`` does: runs shorter than ``min_speech_s`` dropped, gaps shorter
than ``min_silence_s`` bridged, ``pad_s`` added on both sides.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import soxr

from ser.core.threads import torch_threads
from ser.signal import features

#: Speech detectors :func:`speech_frames` knows; the first is the default.
VAD_METHODS: tuple[str, ...] = ("silero", "webrtc")
#: Rate Silero VAD runs at (Hz) and its frame (samples).
SILERO_SR, SILERO_FRAME_N = 16000, 512
#: Most parallel parts of a signal read as one batch by Silero VAD.
SILERO_STREAMS: int = 128
#: Shortest part (frames, 10 s) when cutting a signal into parallel streams.
SILERO_MIN_PART: int = 313
#: Frames (0.5 s) each part reads before its own, to settle the network's state.
SILERO_CONTEXT: int = 16
#: Torch threads Silero VAD runs in (restored afterwards).
SILERO_THREADS: int = 1


@functools.lru_cache(maxsize=1)
def silero_model() -> Any:
    """The packaged Silero VAD network (TorchScript, CPU), loaded once per process.

    Importing ``silero_vad`` sets torch to one thread for the whole process; the caller's
    thread count is put back, so loading the detector never slows a model that runs later.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad

        return load_silero_vad()
    finally:
        torch.set_num_threads(threads)


def check_method(method: str) -> str:
    """Return ``method`` if it is one of :data:`VAD_METHODS`, else raise ``ValueError``."""
    if method not in VAD_METHODS:
        raise ValueError(f"vad must be one of {VAD_METHODS}; got {method!r}")
    return method


def silero_probabilities(y: np.ndarray, sr: int) -> np.ndarray:
    """Silero VAD speech probability per 32 ms frame.

    Args:
        y: mono float audio in [-1, 1], shape ``(n,)``.
        sr: sampling rate (Hz).

    Returns:
        float32 ``(n_frames,)``, frame ``j`` covering ``[j, j + 1) * 0.032`` s;
        ``n_frames = floor(duration / 0.032 s)``.
    """
    import torch

    x = np.asarray(y, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n,); got {x.shape}")
    if sr != SILERO_SR:
        x = soxr.resample(x, sr, SILERO_SR).astype(np.float32)
    n_frames = len(x) // SILERO_FRAME_N
    if n_frames == 0:
        return np.zeros(0, dtype=np.float32)
    streams = int(max(1, min(SILERO_STREAMS, n_frames // SILERO_MIN_PART)))
    per = -(-n_frames // streams)
    ctx = SILERO_CONTEXT if streams > 1 else 0
    frames = x[: n_frames * SILERO_FRAME_N].reshape(n_frames, SILERO_FRAME_N)  # a view, no copy
    # part j reads its own `per` frames after the `ctx` frames before them (state warm-up; the
    # first part warms up on its own start, not on zeros); frames past the end are zeros.
    # Each step's batch is gathered from the view, so nothing as long as the signal is copied.
    src = np.arange(streams)[:, None] * per + np.arange(ctx + per)[None, :] - ctx
    src[0, :ctx] += ctx
    model = silero_model()
    out = np.empty((streams, ctx + per), dtype=np.float32)
    with torch.inference_mode(), torch_threads(SILERO_THREADS):
        model.reset_states()
        for j in range(ctx + per):  # (streams, 512) gathered afresh each step
            step = frames[np.minimum(src[:, j], n_frames - 1)]
            step[src[:, j] >= n_frames] = 0.0
            out[:, j] = model(torch.from_numpy(step), SILERO_SR).reshape(-1).numpy()
        model.reset_states()
    out = out[:, ctx:]
    return out.reshape(-1)[:n_frames]


def speech_frames(
    y: np.ndarray, sr: int, *, method: str = "silero", threshold: float = 0.5,
) -> tuple[np.ndarray, float]:
    """Speech/non-speech per frame with the chosen detector.

    Args:
        y: mono float audio, shape ``(n,)``.
        sr: sampling rate (Hz).
        method: ``"silero"`` (32 ms frames) or ``"webrtc"`` (30 ms frames).
        threshold: Silero speech probability at or above which a frame is speech.

    Returns:
        ``(speech, frame_s)``: bool ``(n_frames,)`` and the frame length (s); frame ``j``
        covers ``[j * frame_s, (j + 1) * frame_s)``.

    Raises:
        ValueError: unknown ``method``.
    """
    check_method(method)
    if method == "webrtc":
        return features.speech_activity(y, sr), features.VAD_FRAME_DEFAULT_MS / 1000.0
    return silero_probabilities(y, sr) >= threshold, SILERO_FRAME_N / SILERO_SR


def speech_segments(
    speech: np.ndarray, frame_s: float, *, min_speech_s: float = 0.25, min_silence_s: float = 0.1,
    pad_s: float = 0.03, duration_s: float | None = None,
) -> np.ndarray:
    """Speech segments from frame decisions.

    Args:
        speech: bool ``(n_frames,)``, frame ``j`` covering ``[j, j + 1) * frame_s``.
        frame_s: frame length (s).
        min_speech_s: shorter runs of speech are dropped (s).
        min_silence_s: shorter gaps between runs are bridged (s).
        pad_s: added before and after each segment (s), clipped to the signal.
        duration_s: signal length (s) for clipping; default ``n_frames * frame_s``.

    Returns:
        float64 ``(n_segments, 2)`` of ``[start_s, end_s)``, sorted and disjoint.
    """
    sp = np.asarray(speech, dtype=bool)
    end_all = len(sp) * frame_s if duration_s is None else float(duration_s)
    edges = np.diff(np.concatenate(([0], sp.astype(np.int8), [0])))
    starts, stops = np.flatnonzero(edges == 1) * frame_s, np.flatnonzero(edges == -1) * frame_s
    segs: list[list[float]] = []
    for a, b in zip(starts, stops, strict=True):
        if segs and a - segs[-1][1] < min_silence_s:
            segs[-1][1] = b
        else:
            segs.append([a, b])
    out = np.array([s for s in segs if s[1] - s[0] >= min_speech_s], dtype=np.float64).reshape(-1, 2)
    if len(out):
        out[:, 0] = np.maximum(out[:, 0] - pad_s, 0.0)
        out[:, 1] = np.minimum(out[:, 1] + pad_s, end_all)
        # padding may make neighbours touch: merge them
        merged = [out[0].copy()]
        for a, b in out[1:]:
            if a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append(np.array([a, b]))
        out = np.array(merged, dtype=np.float64)
    return out


def frame_f1(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Frame-level precision, recall and F1 of speech decisions against the truth.

    Args:
        pred: bool per frame.
        truth: bool per frame (same length).

    Returns:
        ``{"precision", "recall", "f1"}`` (NaN where undefined).
    """
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth differ in shape: {p.shape} vs {t.shape}")
    tp = float(np.sum(p & t))
    prec = tp / p.sum() if p.sum() else float("nan")
    rec = tp / t.sum() if t.sum() else float("nan")
    f1 = 2 * tp / (p.sum() + t.sum()) if (p.sum() + t.sum()) else float("nan")
    return {"precision": float(prec), "recall": float(rec), "f1": float(f1)}


def segments_to_frames(segments: np.ndarray, *, frame_s: float, n_frames: int) -> np.ndarray:
    """Bool per frame: whether the frame's centre lies inside any ``[start_s, end_s)``."""
    centres = (np.arange(n_frames) + 0.5) * frame_s
    out = np.zeros(n_frames, dtype=bool)
    for a, b in np.asarray(segments, dtype=np.float64).reshape(-1, 2):
        out |= (centres >= a) & (centres < b)
    return out
