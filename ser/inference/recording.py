"""Sliding-window emotion probabilities (or dimensions) and prosody over one long recording.

The model's outputs become the columns ``<output_prefix><label>`` of the bundle
(:func:`ser.inference.protocol.output_columns`): ``p_<label>`` for the emotion
classifiers, ``d_arousal, d_dominance, d_valence`` for a dimensional model
(:mod:`ser.models.dimensional`).

Windows follow the grid of :mod:`ser.inference.grid` (the model's window, every
``hop_s`` seconds, exact timestamps).

Short input. A recording shorter than one window is refused with :class:`TooShortError`
(the model would read mostly zeros), unless ``options.pad_short``: then it gives exactly
one window at 0 s, zero-padded at the end to ``W`` samples and flagged ``padded = True``
(all other windows have ``padded = False``); its prosody uses only the real samples.

Bad input. Anything :mod:`ser.signal.audio` rejects (missing, empty, corrupt, non-audio,
NaN/inf samples, M4A without ffmpeg) raises :class:`ser.signal.audio.AudioError` naming the
file, and so does a recording that is silent as a whole (peak below
:data:`SILENT_PEAK_DBFS`): a dead microphone gives no emotion to read. Silent
stretches inside a recording are fine (NaN F0, zero speech ratio).

Memory and speed. A recording is read as a stream of blocks (:func:`ser.signal.audio.iter_blocks`)
of ``block_s`` seconds plus one window and :data:`CONTEXT_S` seconds of context on
each side, and windows go to the model in batches, so peak memory depends on
``block_s``, not on the file's length. The per-window features of a block
(:func:`ser.signal.features.window_features`) can run in ``workers`` forked processes
(:mod:`ser.inference.workers`) while the main process decodes and runs the model on the
next blocks (at most ``workers + 1`` blocks wait, which bounds memory too); results do
not depend on ``workers``. Praat's silence threshold is relative to the peak of the
block it analyses (2 minutes by default), not of the whole file, so one loud event does
not mute the rest of a long recording.

Pitch normalisation. A bundle trained with ``pitch_norm_hz`` (:mod:`ser.signal.pitchnorm`)
hears every recording at that register: a first pass over the file finds the
recording's register (the voice's baseline pitch; another voice an octave away is left
out), then each block is shifted by one constant amount (PSOLA, formants kept) in the
feature workers, and the model runs on the shifted block when it comes back. The
prosody columns (``f0_hz`` ...) are always measured on the original audio. The shift
reuses the block's pitch analysis of the F0 column (:func:`ser.inference.workers.shift_block`),
so normalisation costs the register pass (a pitch analysis every 30 ms) and PSOLA's
pulses and overlap-add (``benchmarks/RESULTS.md``).

Classical models. A classical bundle (:class:`ser.inference.protocol.FeatureJobBundle`)
spends its time on features, not on the model: with workers, each block's model features
(:attr:`~ser.inference.protocol.FeatureJobBundle.block_features`; pooled LLD sets from one
LLD pass over the block, :mod:`ser.models.classical.pooled`) are computed in the feature
workers beside the prosody, and the model runs on them in the main process; the result
equals the one without workers. Features already computed for some windows (the speech
windows of the speaker-reference pass, :class:`KnownFeatures`) are taken instead of
computed again, with the same result.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.core import timing
from ser.data.schema import UNCERTAINTY_COLUMNS
from ser.inference import grid, speakers, uncertainty
from ser.inference.options import InferenceOptions
from ser.inference.protocol import FeatureJobBundle, ModelBundle, output_columns
from ser.inference.workers import Workers, feature_workers, features_job, voiced_semitones_job
from ser.signal import audio, features, pitchnorm, vad

#: Audio on each side of a block's windows used for the prosody tracks (s).
CONTEXT_S: float = 1.0
#: A recording whose peak is below this level (dB re full scale) is rejected as silent.
SILENT_PEAK_DBFS: float = -80.0


class TooShortError(audio.AudioError):
    """A recording is shorter than the model's window (and ``pad_short`` is off).

    Attributes:
        info: ``{"duration_s", "sample_rate", "channels"}`` of the file as stored.
    """

    def __init__(self, message: str, *, info: dict[str, Any]):
        super().__init__(message)
        self.info = info


def window_columns(labels: Iterable[str], *, voice_quality: bool = False,
                   egemaps: bool = False, output_prefix: str = "p_") -> list[str]:
    """Columns of :func:`predict_recording`: times, ``<output_prefix><label>`` (the
    bundle's ``output_prefix``: ``p_`` or ``d_``), the uncertainty columns of probabilities
    (:data:`ser.data.schema.UNCERTAINTY_COLUMNS`; not for ``d_`` values), features, ``padded``."""
    return ["start_s", "end_s", *[f"{output_prefix}{lab}" for lab in labels],
            *(UNCERTAINTY_COLUMNS if output_prefix == "p_" else ()),
            *features.feature_columns(voice_quality=voice_quality, egemaps=egemaps), "padded"]


def predict_recording(
    bundle: ModelBundle,
    path: str | os.PathLike[str],
    *,
    options: InferenceOptions,
    timings: MutableMapping[str, float] | None = None,
) -> pd.DataFrame:
    """Emotion probabilities and prosody for every window of one recording.

    Args:
        bundle: model bundle (:class:`ser.inference.protocol.ModelBundle`); see
            :func:`ser.models.bundle.load_bundle`.
        path: audio file (any format/rate/channels :func:`ser.signal.audio.load` reads).
        options: hop, batch size, block size, features and workers
            (:class:`ser.inference.options.InferenceOptions`).
        timings: if given, seconds per step are added to it (``decode_resample``,
            ``log_mel_cnn``, ``f0``, ``energy``, ``vad``, ``summarise``,
            ``voice_quality``, ``egemaps``, ``wait_features``, ``pitch_norm``, and for a
            classical model in workers ``model_features`` and ``model``).

    Returns:
        One row per window: ``start_s, end_s`` (s), ``p_<label>`` per label (rows sum
        to 1; ``d_<dimension>`` for a dimensional bundle), and for probabilities
        ``emotion_entropy`` (Shannon entropy of the window's probabilities divided by
        log(number of labels): 0 one label certain ... 1 all labels equally likely) and
        ``emotion_top_p`` (the largest probability), see
        :func:`ser.inference.uncertainty.emotion_uncertainty`;
        :func:`ser.signal.features.feature_columns`, and ``padded`` (bool, see module
        docstring).

    Raises:
        ser.signal.audio.AudioError: missing, unreadable, empty, non-finite or silent audio;
            :class:`TooShortError` (an ``AudioError``) for a recording shorter than the
            window without ``options.pad_short``.
        ValueError: bad ``hop_s``, ``batch_size``, ``block_s``, ``f0_method`` or ``workers``.
    """
    options = options.resolve(bundle)
    with feature_workers(options.workers) as pool:
        df, _ = predict_file(bundle, Path(path), options=options, pool=pool, timings=timings)
    return df


def predict_file(
    bundle: ModelBundle,
    path: Path,
    *,
    options: InferenceOptions,
    pool: Workers | None,
    timings: MutableMapping[str, float] | None = None,
    on_progress: Callable[[float], None] | None = None,
    silence_s: np.ndarray | None = None,
    known: KnownFeatures | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`predict_recording` on resolved options (:meth:`InferenceOptions.resolve`) in
    a running worker pool; also returns the file's header info.

    Args:
        bundle: model bundle.
        path: audio file.
        options: resolved options.
        pool: feature workers (:func:`ser.inference.workers.feature_workers`), or None.
        timings: see :func:`predict_recording`.
        on_progress: called with the seconds of audio done after each block.
        silence_s: ``(k, 2)`` sorted, disjoint stretches ``[start_s, end_s)`` of the recording
            that the model and the prosody do not hear (other speakers' turns with
            ``speaker="caregiver"``, :func:`ser.inference.speakers.other_intervals`):
            zeroed (:func:`ser.inference.speakers.silence_intervals`), their F0 and energy
            frames left out; ``None``: the audio as recorded.
        known: model features already computed for some of the windows (the speech windows
            of the speaker-reference pass, :mod:`ser.inference.speaker_norm`), taken instead
            of computing them again; a classical bundle only (others ignore it). They must be
            those of this recording, bundle and options (the same blocks, shift and silence).

    Returns:
        The window table of :func:`predict_recording` and ``{"duration_s", "sample_rate",
        "channels"}`` of the file as stored (native length, rate and channels).
    """
    sr, win_n = int(bundle.sample_rate), int(bundle.window_samples)
    batch_size, opts = options.batch_size, options.feature_options()
    labels = list(bundle.labels)
    outputs = output_columns(bundle)
    columns = window_columns(labels, voice_quality=opts["voice_quality"], egemaps=opts["egemaps"],
                             output_prefix=bundle.output_prefix)
    feature_cols = features.feature_columns(voice_quality=opts["voice_quality"], egemaps=opts["egemaps"])
    n_feat = len(feature_cols)

    plan = window_plan(bundle, path, options=options)
    start_n, n_total, block_n = plan.start_n, plan.n_total, plan.block_n
    info = {"duration_s": plan.frames / plan.sr_in, "sample_rate": plan.sr_in, "channels": plan.channels}
    if n_total < win_n and not options.pad_short:
        raise TooShortError(f"audio file {path} is {info['duration_s']:.2f} s long, shorter than the "
                            f"model's {win_n / sr:g} s window: no emotion computed (pad_short / "
                            "--pad-short pads it with zeros to one window)", info=info)
    n_win = len(start_n)
    padded = np.full(n_win, n_total < win_n)
    values = np.empty((n_win, len(labels)), dtype=np.float32)
    feats = np.full((n_win, n_feat), np.nan)
    pending: deque[tuple[int, int, Future, np.ndarray, np.ndarray | None]] = deque()
    peak = 0.0

    def run_model(i0: int, i1: int, local: np.ndarray, ymodel: np.ndarray) -> None:
        t = time.perf_counter()
        need = int(local[-1]) + win_n
        ypad = audio.fix_length(ymodel, max(need, len(ymodel)))
        # log-mel models share the frames of overlapping windows
        values[i0:i1] = bundle.predict_starts(ypad, local, batch_size=batch_size)
        timing.tick(timings, "log_mel_cnn", t)

    def collect() -> None:
        i0, i1, fut, local, todo = pending.popleft()
        t = time.perf_counter()
        arr, tm, shifted, model_feats = fut.result()
        t = timing.tick(timings, "wait_features", t)
        feats[i0:i1] = arr
        timing.add(timings, tm)
        if todo is not None:  # a classical model: its features came from the job (and ``known``)
            have = known.lookup(start_n[i0:i1]) if known is not None else None
            values[i0:i1] = split_bundle.predict_features(_merged(i1 - i0, todo, model_feats, have))
            timing.tick(timings, "model", t)
        elif shifted is not None:  # pitch-normalised model: it runs once the shifted block is back
            run_model(i0, i1, local, shifted)

    # speaker pitch normalisation (bundles trained with it): one register for the recording,
    # from a first pass over it; the model hears the shifted audio, the features the original
    target_hz = bundle.pitch_norm_hz
    shift_st = 0.0
    if target_hz > 0:
        shift_st = recording_shift(path, sr=sr, target_hz=target_hz, block_n=block_n, pool=pool,
                                   timings=timings)

    # a classical bundle's features (the bulk of its cost) run in the workers too, and
    # without workers too when some are known already
    split_bundle = (bundle if (pool is not None or known is not None) and isinstance(bundle, FeatureJobBundle)
                    else None)
    blocks = plan_blocks(path, plan, sample_rate=sr, window_samples=win_n)
    try:
        while True:
            t = time.perf_counter()
            item = next(blocks, None)
            t = timing.tick(timings, "decode_resample", t)
            if item is None:
                break
            off, y, i0, i1 = item
            if len(y):
                peak = max(peak, float(np.max(np.abs(y))))
            if i1 > i0:
                local = start_n[i0:i1] - off
                y, block_opts = _block_audio(y, sr, off / sr, opts, silence_s=silence_s,
                                             vad_method=options.vad, timings=timings)
                job = (y, sr, local / sr, win_n / sr, block_opts, shift_st)
                if split_bundle is not None:
                    # the windows whose features are not known yet (all but the reference windows)
                    todo = (np.flatnonzero(~known.contains(start_n[i0:i1])) if known is not None
                            else np.arange(i1 - i0))
                    kw = {"model_features": split_bundle.block_features, "starts_n": local[todo],
                          "pad_n": int(local[-1]) + win_n}
                    if pool is None:
                        fut = Future()
                        fut.set_result(features_job(*job, **kw))
                    else:
                        fut = pool.executor.submit(features_job, *job, **kw)
                    pending.append((i0, i1, fut, local, todo))
                elif pool is None:
                    arr, tm, shifted, _ = features_job(*job)
                    feats[i0:i1] = arr
                    timing.add(timings, tm)
                    run_model(i0, i1, local, y if shifted is None else shifted)
                else:
                    pending.append((i0, i1, pool.executor.submit(features_job, *job), local, None))
                    if not shift_st:  # the model reads the block as decoded, while the workers run
                        run_model(i0, i1, local, y)
                while pending and (pool is None or len(pending) > pool.n):
                    collect()
            if on_progress is not None:
                on_progress(min(block_n, n_total - off) / sr)
        while pending:
            collect()
    finally:
        blocks.close()  # an ffmpeg decoder subprocess ends now, not when the traceback is freed
        for _, _, fut, _, _ in pending:
            fut.cancel()
    if peak == 0.0:
        raise audio.AudioError(f"audio file {path} is digital silence (every sample is 0): "
                               "nothing to analyse; check the recording")
    if 20 * math.log10(peak) < SILENT_PEAK_DBFS:
        raise audio.AudioError(f"audio file {path} is silent (peak {20 * math.log10(peak):.1f} dBFS, "
                               f"below {SILENT_PEAK_DBFS:g} dBFS): nothing to analyse; check the recording")

    df = pd.DataFrame({"start_s": plan.start_s, "end_s": plan.end_s})
    for j, col in enumerate(outputs):
        df[col] = values[:, j].astype(np.float64)
    if UNCERTAINTY_COLUMNS[0] in columns:  # probabilities: how sure the model is per window
        df["emotion_entropy"], df["emotion_top_p"] = uncertainty.emotion_uncertainty(df[outputs].to_numpy())
    for j, col in enumerate(feature_cols):
        df[col] = feats[:, j]
    df["padded"] = padded
    return df[columns], info


@dataclass(frozen=True)
class KnownFeatures:
    """A classical model's features of some windows of one recording, computed already
    (by the speaker-reference pass, :mod:`ser.inference.speaker_norm`), by window start.

    Attributes:
        starts_n: sorted, unique window start samples (int64 ``[k]``, at the model's rate,
            from the recording's start: :attr:`WindowPlan.start_n` values).
        features: ``{feature_set: [k, d]}``, rows in the order of ``starts_n``.
    """

    starts_n: np.ndarray
    features: Mapping[str, np.ndarray]

    def contains(self, starts_n: np.ndarray) -> np.ndarray:
        """bool ``[len(starts_n)]``: which of these window starts are known."""
        starts_n = np.asarray(starts_n, dtype=np.int64)
        i = np.searchsorted(self.starts_n, starts_n)
        inside = i < len(self.starts_n)
        out = np.zeros(len(starts_n), bool)
        out[inside] = self.starts_n[i[inside]] == starts_n[inside]
        return out

    def lookup(self, starts_n: np.ndarray) -> dict[str, np.ndarray]:
        """``{feature_set: [m, d]}`` of the known windows among ``starts_n``, in their order."""
        starts_n = np.asarray(starts_n, dtype=np.int64)
        rows = np.searchsorted(self.starts_n, starts_n[self.contains(starts_n)])
        return {s: f[rows] for s, f in self.features.items()}

    @staticmethod
    def concat(starts_n: Sequence[np.ndarray], features: Sequence[Mapping[str, np.ndarray]]) -> KnownFeatures:
        """The windows of several blocks (each block's starts sorted, blocks in order)."""
        starts = np.concatenate([np.zeros(0, np.int64), *(np.asarray(s, np.int64) for s in starts_n)])
        sets = list(features[0]) if features else []
        feats = {s: np.concatenate([f[s] for f in features]) for s in sets}
        if len(starts) > 1 and not np.all(np.diff(starts) > 0):
            raise ValueError("known window starts must be sorted and unique")
        return KnownFeatures(starts_n=starts, features=feats)


def _merged(n: int, todo: np.ndarray, computed: Mapping[str, np.ndarray] | None,
            have: Mapping[str, np.ndarray] | None) -> Mapping[str, np.ndarray]:
    """A block's ``n`` windows' model features: rows ``todo`` computed now, the others known."""
    if computed is None or not have or len(todo) == n:
        return computed if computed is not None else dict(have or {})
    rest = np.ones(n, bool)
    rest[todo] = False
    out: dict[str, np.ndarray] = {}
    for s, c in computed.items():
        k = np.asarray(have[s])
        out[s] = np.empty((n, c.shape[1]), dtype=np.result_type(c, k))
        out[s][todo], out[s][rest] = c, k
    return out


def silence_block(y: np.ndarray, sr: int, offset_s: float,
                  silence_s: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A block (from ``offset_s`` seconds into the recording) with the stretches ``silence_s``
    (s, on the recording's clock) zeroed: ``(block, the stretches on the block's clock)``, or
    ``(y, None)`` when none falls in it."""
    if silence_s is not None and len(silence_s):
        t0, t1 = offset_s, offset_s + len(y) / sr
        iv = silence_s[(silence_s[:, 1] > t0) & (silence_s[:, 0] < t1)] - offset_s
        if len(iv):
            return speakers.silence_intervals(y, sr, iv), iv
    return y, None


def _block_audio(y: np.ndarray, sr: int, offset_s: float, opts: dict[str, Any], *,
                 silence_s: np.ndarray | None, vad_method: str,
                 timings: MutableMapping[str, float] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """A block as the model and the features hear it (other speakers silenced,
    :func:`silence_block`) and its feature options (silenced stretches, Silero's speech frames)."""
    y, iv = silence_block(y, sr, offset_s, silence_s)
    if iv is not None:
        opts = {**opts, "exclude_s": iv}
    if vad_method != "webrtc":
        t = time.perf_counter()
        opts = {**opts, "speech": vad.speech_frames(y, sr, method=vad_method)}
        timing.tick(timings, "vad", t)
    return y, opts


@dataclass(frozen=True)
class WindowPlan:
    """The windows of one recording and the blocks they are computed in.

    Attributes:
        start_s, end_s: window times (s), from :func:`ser.inference.grid.sample_grid`.
        start_n: window start samples at the model's rate.
        n_total: the recording's length in samples at the model's rate.
        frames, sr_in, channels: the file as stored (native frames, rate, channels).
        block_n: samples between block starts (aligned to the feature frames).
        ctx_n: context samples on each side of a block's windows (:data:`CONTEXT_S`).
    """

    start_s: np.ndarray
    end_s: np.ndarray
    start_n: np.ndarray
    n_total: int
    frames: int
    sr_in: int
    channels: int
    block_n: int
    ctx_n: int


def window_plan(bundle: ModelBundle, path: Path, *, options: InferenceOptions) -> WindowPlan:
    """The window grid of ``path`` and its blocks (reads the header only).

    Args:
        bundle: model bundle (its window and rate).
        path: audio file.
        options: resolved options (hop, block size).

    Raises:
        ser.signal.audio.AudioError: the file cannot be read.
    """
    sr, win_n = int(bundle.sample_rate), int(bundle.window_samples)
    frames, sr_in, channels = audio.info_frames(path)
    n_total = audio.resampled_length(frames, orig_sr=sr_in, target_sr=sr)
    start_s, end_s, start_n = grid.sample_grid(n_total, sample_rate=sr, window_samples=win_n,
                                               hop=options.hop_s)
    # blocks: hop B (aligned to feature frames), each with W + 2 * context extra samples
    align = features.frame_alignment(sr)
    ctx_n = int(math.ceil(CONTEXT_S * sr / align)) * align
    block_n = max(1, int(round(options.block_s * sr / align))) * align
    return WindowPlan(start_s=start_s, end_s=end_s, start_n=start_n, n_total=n_total,
                      frames=frames, sr_in=sr_in, channels=channels, block_n=block_n, ctx_n=ctx_n)


def plan_blocks(path: Path, plan: WindowPlan, *, sample_rate: int,
                window_samples: int) -> Iterator[tuple[int, np.ndarray, int, int]]:
    """The blocks of a :class:`WindowPlan`: ``(offset, y, i0, i1)``, where ``y`` is the audio
    from sample ``offset`` (the block, one window and the context) and windows ``i0:i1`` are
    the ones computed in this block (none when ``i0 == i1``). Every window falls in exactly
    one block; close the generator to end a decoder early.
    """
    start_n, block_n, ctx_n = plan.start_n, plan.block_n, plan.ctx_n
    blocks = audio.iter_blocks_n(path, sample_rate=sample_rate, block_n=block_n,
                                 overlap_n=window_samples + 2 * ctx_n)
    try:
        for off, y in blocks:
            lo = 0 if off == 0 else off + ctx_n
            i0, i1 = (int(i) for i in np.searchsorted(start_n, [lo, off + block_n + ctx_n], side="left"))
            yield off, y, i0, i1
    finally:
        blocks.close()


def recording_shift(path: Path, *, sr: int, target_hz: float, block_n: int, pool: Workers | None,
                     timings: MutableMapping[str, float] | None) -> float:
    """The shift (semitones) that moves this recording's register to ``target_hz``: one
    pass over the file (:func:`ser.signal.pitchnorm.recording_register_hz`), its blocks' pitch
    analyses spread over the feature workers when there are any."""
    if pool is None:
        t = time.perf_counter()
        register = pitchnorm.recording_register_hz(path, sample_rate=sr, block_s=block_n / sr)
        timing.tick(timings, "pitch_norm", t)
        return pitchnorm.semitones_to(target_hz, register)
    parts: list[np.ndarray] = []
    pending: deque[Future] = deque()

    def take(fut: Future) -> None:
        st, sec = fut.result()
        parts.append(st)
        timing.add(timings, {"pitch_norm": sec})

    blocks = audio.iter_blocks_n(path, sample_rate=sr, block_n=block_n, overlap_n=0)
    try:
        for _, y in blocks:
            pending.append(pool.executor.submit(voiced_semitones_job, y, sr))
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
