"""Who speaks when in one recording: VAD → speaker embeddings → clustering → segments.

:func:`diarize_recording` streams a file in blocks (memory bounded by one block plus the
per-window embeddings, 1 KiB per second of speech; inside a block the detector and the
encoder work on small pieces, so the peak does not grow with the file's length):

1. **Speech** per frame with :func:`ser.signal.vad.speech_frames` (Silero by default).
2. **Embeddings**: windows of ``window_s`` (1.5 s) every ``hop_s`` (1 s) on a fixed
   grid; a window with at least ``min_window_speech`` of its frames speech is embedded
   by the ``encoder``: Resemblyzer's (:class:`ser.models.speaker_encoder.SpeakerEncoder`, the
   default) or CAM++ (:class:`ser.models.campp_encoder.CamppEncoder`, which keeps two voices of
   one sex apart far better, at four to five times the CPU).
3. **Clustering**: average-linkage agglomerative clustering on cosine distance (at most
   :data:`MAX_CLUSTER_WINDOWS` windows, evenly spaced; the rest are assigned to the
   nearest centroid), cut into k = 2 … ``max_speakers`` clusters; each cut is refined
   (clusters holding less than ``min_cluster_share`` of the windows merged into their
   nearest neighbour, then k-means on the sphere), and the number of speakers is the k
   with the highest mean silhouette (cosine), or one speaker when no k reaches
   ``min_silhouette``; clusters whose centroids have cosine similarity of at least
   ``max_centroid_similarity`` are then merged (a fixed ``num_speakers`` skips both; with it and
   ``kmeans_restarts`` > 0 a k-means++ split of all windows, refined the same way, replaces the
   agglomerative one when it is tighter by ``kmeans_min_gain`` per window: the average-linkage
   cut can split off a few outlying windows instead of the second voice, while a k-means split
   that is only a little tighter is more often one voice cut by what it said).
4. **Re-segmentation**: every speech frame takes the speaker whose centroid is closest,
   on average, to the windows covering it; runs shorter than ``min_turn_s`` take their
   neighbour's speaker. Rows are the runs: ``start_s, end_s, speaker, confidence`` (the
   mean share of the window votes the speaker won, 0.5-1 for two speakers).

Steps 3-4 are :func:`segment_embeddings`, which also runs on saved speech frames and
embeddings (``benchmarks/diar_cache.py`` scores clustering variants that way).

Speakers are named ``S1, S2, …`` in order of decreasing speech time. Which one is the
caregiver is decided across recordings (:mod:`ser.inference.caregiver`).

Bad input: a file shorter than one window raises :class:`DiarizationError` (a failure
row); no speech, a single speaker and too little speech to embed are flags
(:data:`FLAGS`) on an otherwise valid result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ser.models.speaker_encoder import ENCODER_SR, SpeakerEncoder, check_encoder, default_encoder
from ser.signal import audio, vad

#: Columns of a diarization table (one row per speaker turn).
SEGMENT_COLUMNS: tuple[str, ...] = ("recording", "start_s", "end_s", "speaker", "is_caregiver",
                                    "confidence")
#: Flags a recording's result may carry (``;``-joined in summaries).
FLAGS: dict[str, str] = {
    "no_speech": "no speech detected",
    "too_little_speech": "too little speech for one speaker embedding",
    "single_speaker": "one speaker only",
}
#: Most windows clustered directly (the rest are assigned to the nearest centroid).
MAX_CLUSTER_WINDOWS: int = 1500


class DiarizationError(ValueError):
    """A recording cannot be diarized (the message names the file and the reason)."""


@dataclass(frozen=True)
class DiarizationOptions:
    """Options of :func:`diarize_recording`.

    Attributes:
        vad: speech detector, ``"silero"`` or ``"webrtc"``.
        window_s: embedding window (s).
        hop_s: embedding window step (s).
        min_window_speech: least share of speech frames for a window to be embedded.
        num_speakers: fixed number of speakers (``None``: estimated).
        max_speakers: most speakers estimated.
        min_silhouette: least mean silhouette (cosine) of a split into two or more speakers.
        max_centroid_similarity: clusters whose centroids are at least this similar
            (cosine) are merged (one voice split by what it said or how).
        min_cluster_share: clusters with fewer windows than this share are merged.
        min_turn_s: shorter runs of one speaker take the neighbouring speaker (s).
        block_s: audio streamed per block (s).
        encoder: speaker encoder, ``"resemblyzer"`` or ``"campp"``
            (:data:`ser.models.speaker_encoder.ENCODERS`).
        kmeans_restarts: with ``num_speakers``, also try a k-means++ split with this many
            starts and keep it instead of the agglomerative one when it is tighter by
            ``kmeans_min_gain`` (0: agglomerative only).
        kmeans_min_gain: how much tighter the k-means split must be to replace the
            agglomerative one: gain in :func:`split_tightness` per window, about the mean
            cosine of a window to its cluster's centroid (0-1). Where the average-linkage cut
            only split off outlying windows, k-means gained 0.018-0.05; where both found the
            voices, or k-means cut one voice by what it said, 0-0.015 (``benchmarks/RESULTS.md``,
            CAM++ on EmoDB conversations and three demo cohorts).
    """

    vad: str = "silero"
    window_s: float = 1.5
    hop_s: float = 1.0
    min_window_speech: float = 0.5
    num_speakers: int | None = None
    max_speakers: int = 6
    min_silhouette: float = 0.1
    max_centroid_similarity: float = 0.82
    min_cluster_share: float = 0.05
    min_turn_s: float = 0.5
    block_s: float = 600.0
    encoder: str = "resemblyzer"
    kmeans_restarts: int = 0
    kmeans_min_gain: float = 0.016

    def __post_init__(self) -> None:
        vad.check_method(self.vad)
        check_encoder(self.encoder)
        if isinstance(self.kmeans_restarts, bool) or not isinstance(self.kmeans_restarts, int) \
                or self.kmeans_restarts < 0:
            raise ValueError(f"kmeans_restarts must be an integer >= 0; got {self.kmeans_restarts!r}")
        if not (0 <= self.kmeans_min_gain <= 1):
            raise ValueError(f"kmeans_min_gain must be in [0, 1]; got {self.kmeans_min_gain!r}")
        if not (0.5 <= self.window_s <= 10):
            raise ValueError(f"window_s must be 0.5-10 s; got {self.window_s!r}")
        if not (0 < self.hop_s <= self.window_s):
            raise ValueError(f"hop_s must be > 0 and <= window_s; got {self.hop_s!r}")
        if self.num_speakers is not None and not (1 <= self.num_speakers <= self.max_speakers):
            raise ValueError(f"num_speakers must be 1..{self.max_speakers} or None; got {self.num_speakers!r}")
        if not (-1 <= self.min_silhouette <= 1):
            raise ValueError(f"min_silhouette must be in [-1, 1]; got {self.min_silhouette!r}")
        if self.block_s < 10 * self.window_s:
            raise ValueError(f"block_s must be >= 10 windows; got {self.block_s!r}")


@dataclass
class RecordingDiarization:
    """Result of :func:`diarize_recording`.

    Attributes:
        segments: ``start_s, end_s, speaker, confidence`` per turn, in time order.
        centroids: ``{speaker: unit embedding}`` (256 values with Resemblyzer, 192 with CAM++).
        speech_s: ``{speaker: seconds of speech}``.
        duration_s: recording length (s).
        flags: keys of :data:`FLAGS`.
    """

    segments: pd.DataFrame
    centroids: dict[str, np.ndarray]
    speech_s: dict[str, float]
    duration_s: float
    flags: list[str] = field(default_factory=list)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def cluster_embeddings(emb: np.ndarray, *, options: DiarizationOptions) -> np.ndarray:
    """Speaker label per embedding (0..k-1; see the module docstring, step 3).

    Args:
        emb: unit embeddings ``(n, d)``.
        options: ``num_speakers``, ``max_speakers``, ``min_silhouette``, ``min_cluster_share``.

    Returns:
        int ``(n,)`` labels.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(emb)
    if n < 2 or options.num_speakers == 1:
        return np.zeros(n, dtype=np.int64)
    pick = np.unique(np.linspace(0, n - 1, min(n, MAX_CLUSTER_WINDOWS)).round().astype(np.int64))
    z = linkage(emb[pick], method="average", metric="cosine")
    if options.num_speakers is not None:
        labels = _refine(emb, fcluster(z, t=min(options.num_speakers, len(pick)), criterion="maxclust") - 1,
                         pick, options=options, fixed=True)
        if options.kmeans_restarts and options.num_speakers > 1 and n > options.num_speakers:
            from sklearn.cluster import KMeans

            alt = KMeans(options.num_speakers, n_init=options.kmeans_restarts, random_state=0).fit_predict(emb)
            alt = _refine(emb, alt, np.arange(n), options=options, fixed=True)
            if split_tightness(emb, alt) > split_tightness(emb, labels) + options.kmeans_min_gain * n:
                labels = alt
        return labels
    labels = np.zeros(n, dtype=np.int64)
    best = options.min_silhouette
    for k in range(2, min(options.max_speakers, len(pick) - 1) + 1):
        cand = _refine(emb, fcluster(z, t=k, criterion="maxclust") - 1, pick, options=options, fixed=False)
        if len(np.unique(cand)) < 2:
            continue
        score = _silhouette(emb[pick], cand[pick])
        if score > best:
            best, labels = score, cand
    while len(np.unique(labels)) > 1:  # speakers whose centroids are this alike are one voice
        ks = np.unique(labels)
        cent = _unit(np.stack([emb[labels == k].mean(0) for k in ks]))
        sim = cent @ cent.T - 2 * np.eye(len(ks))
        i, j = np.unravel_index(np.argmax(sim), sim.shape)
        if sim[i, j] < options.max_centroid_similarity:
            break
        labels = _refine(emb, np.where(labels == ks[j], ks[i], labels), np.arange(n), options=options,
                         fixed=False)
    return np.unique(labels, return_inverse=True)[1]


def split_tightness(emb: np.ndarray, labels: np.ndarray) -> float:
    """Spherical k-means objective of a split of unit embeddings ``emb`` by ``labels``: the sum
    of its clusters' resultant lengths (higher is tighter)."""
    return float(sum(np.linalg.norm(emb[labels == k].sum(0)) for k in np.unique(labels)))


def _silhouette(emb: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(labels):
        return -1.0
    return float(silhouette_score(emb, labels, metric="cosine"))


def _refine(emb: np.ndarray, lab: np.ndarray, pick: np.ndarray, *, options: DiarizationOptions,
            fixed: bool) -> np.ndarray:
    """Labels of all windows from the clustered ones: small clusters merged (unless ``fixed``),
    then k-means on the sphere."""
    n = len(emb)
    cent = _unit(np.stack([emb[pick][lab == k].mean(0) for k in np.unique(lab)]))
    labels = np.argmax(emb @ cent.T, axis=1)
    for _ in range(10):
        counts = np.bincount(labels, minlength=len(cent))
        keep = counts >= (1 if fixed else max(2, options.min_cluster_share * n))
        if not keep.any():
            keep[np.argmax(counts)] = True
        cent = _unit(np.stack([emb[labels == k].mean(0) for k in np.flatnonzero(keep)]))
        new = np.argmax(emb @ cent.T, axis=1)
        if np.array_equal(new, labels) and keep.all():
            break
        labels = new
    return labels


def _smooth_runs(lab: np.ndarray, speech: np.ndarray, min_len: int) -> np.ndarray:
    """Speaker runs shorter than ``min_len`` frames (inside speech) take a neighbour's label."""
    lab = lab.copy()
    for _ in range(3):
        edges = np.flatnonzero(np.diff(lab) != 0) + 1
        starts = np.concatenate(([0], edges))
        stops = np.concatenate((edges, [len(lab)]))
        changed = False
        for a, b in zip(starts, stops, strict=True):
            if lab[a] < 0 or b - a >= min_len:
                continue
            left = lab[a - 1] if a > 0 else -1
            right = lab[b] if b < len(lab) else -1
            repl = left if left >= 0 else right
            if repl >= 0 and repl != lab[a]:
                lab[a:b] = repl
                changed = True
        if not changed:
            break
    lab[~speech] = -1
    return lab


def _turns(lab: np.ndarray, conf: np.ndarray, frame_s: float, names: list[str]) -> pd.DataFrame:
    edges = np.flatnonzero(np.diff(lab) != 0) + 1
    starts = np.concatenate(([0], edges))
    stops = np.concatenate((edges, [len(lab)]))
    rows = [(a * frame_s, b * frame_s, names[lab[a]], float(conf[a:b].mean()))
            for a, b in zip(starts, stops, strict=True) if len(lab) and lab[a] >= 0]
    return pd.DataFrame(rows, columns=["start_s", "end_s", "speaker", "confidence"])


def diarize_recording(
    path: str | os.PathLike[str], *, options: DiarizationOptions | None = None,
    encoder: SpeakerEncoder | None = None,
) -> RecordingDiarization:
    """Diarize one audio file (see the module docstring).

    Args:
        path: audio file (any format :mod:`ser.signal.audio` reads).
        options: :class:`DiarizationOptions` (default: its defaults).
        encoder: speaker encoder (default: one of ``options.encoder`` per process).

    Returns:
        The :class:`RecordingDiarization`.

    Raises:
        DiarizationError: the file is shorter than one embedding window.
        ser.signal.audio.AudioError: unreadable file.
    """
    opt = options or DiarizationOptions()
    enc = encoder or default_encoder(opt.encoder)
    path = Path(path)
    n_total = audio.info_frames(path)
    duration = n_total[0] / n_total[1]
    if duration < opt.window_s:
        raise DiarizationError(f"{path}: {duration:.2f} s is shorter than one speaker-embedding "
                               f"window ({opt.window_s:g} s)")
    frame_s = vad.SILERO_FRAME_N / vad.SILERO_SR if opt.vad == "silero" else 0.03
    block_s = max(1, round(opt.block_s / frame_s)) * frame_s  # whole frames per block
    speech_parts: list[np.ndarray] = []
    starts_all: list[np.ndarray] = []
    emb_all: list[np.ndarray] = []
    for start_n, y in audio.iter_blocks(path, sample_rate=ENCODER_SR, block_s=block_s,
                                        overlap_s=opt.window_s):
        sp, ws, emb = _block(y, start_n / ENCODER_SR, block_s=block_s, options=opt, encoder=enc)
        del y  # freed before the next block is read: one block in memory at a time
        speech_parts.append(sp)
        if len(ws):
            starts_all.append(ws)
            emb_all.append(emb)
    speech = np.concatenate(speech_parts) if speech_parts else np.zeros(0, bool)
    starts = np.concatenate(starts_all) if starts_all else np.zeros(0)
    emb = np.concatenate(emb_all) if emb_all else np.zeros((0, 256), np.float32)
    ok = np.linalg.norm(emb, axis=1) > 0
    return segment_embeddings(speech, starts[ok], emb[ok], frame_s=frame_s, duration_s=duration, options=opt)


def _block(y: np.ndarray, t0: float, *, block_s: float, options: DiarizationOptions,
           encoder: SpeakerEncoder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One block's speech frames (its own part, without the overlap), and the starts (s, from
    the file's start) and embeddings of the windows starting in it that fit in it and hold
    enough speech."""
    opt = options
    own = min(len(y), int(round(block_s * ENCODER_SR)))
    sp, fs = vad.speech_frames(y, ENCODER_SR, method=opt.vad)
    n_own = int(round(own / ENCODER_SR / fs))
    k0 = int(np.ceil(t0 / opt.hop_s - 1e-9))
    k1 = int(np.floor((t0 + own / ENCODER_SR) / opt.hop_s - 1e-9))
    ws = np.arange(k0, k1 + 1) * opt.hop_s
    ws = ws[(ws - t0 + opt.window_s) * ENCODER_SR <= len(y)]
    if len(ws):
        centres = (np.arange(len(sp)) + 0.5) * fs
        cs = np.concatenate(([0], np.cumsum(sp)))
        a = np.searchsorted(centres, ws - t0)
        b = np.searchsorted(centres, ws - t0 + opt.window_s)
        share = (cs[b] - cs[a]) / np.maximum(b - a, 1)
        ws = ws[share >= opt.min_window_speech]
    emb = encoder.embed_windows(y, ENCODER_SR, starts_s=ws - t0, window_s=opt.window_s)  # (0, d) for none
    return sp[:n_own].copy(), ws, emb


def segment_embeddings(speech: np.ndarray, starts: np.ndarray, emb: np.ndarray, *, frame_s: float,
                       duration_s: float, options: DiarizationOptions) -> RecordingDiarization:
    """Speakers and turns of one recording from its speech frames and window embeddings
    (steps 3-4 of the module docstring; :func:`diarize_recording` computes the inputs).

    Args:
        speech: bool ``(n_frames,)``, speech per VAD frame.
        starts: ``(n_windows,)`` window starts (s).
        emb: unit embeddings ``(n_windows, d)`` of windows ``options.window_s`` long.
        frame_s: VAD frame length (s).
        duration_s: recording length (s).
        options: clustering and re-segmentation options.

    Returns:
        The :class:`RecordingDiarization`.
    """
    opt, duration = options, duration_s
    empty = RecordingDiarization(pd.DataFrame(columns=["start_s", "end_s", "speaker", "confidence"]),
                                 {}, {}, duration)
    if not speech.any():
        empty.flags.append("no_speech")
        return empty
    if not len(emb):
        empty.flags.append("too_little_speech")
        return empty
    labels = cluster_embeddings(emb, options=opt)
    ks = np.unique(labels)
    cent = _unit(np.stack([emb[labels == k].mean(0) for k in ks]))
    # re-segmentation: each frame's speaker from the windows covering it
    n = len(speech)
    sims = emb @ cent.T  # (n_windows, k)
    score = np.zeros((n, len(ks)))
    votes = np.zeros((n, len(ks)))
    cover = np.zeros(n)
    win_lab = np.argmax(sims, axis=1)
    fa = np.clip(np.round(starts / frame_s).astype(np.int64), 0, n)
    fb = np.clip(np.round((starts + opt.window_s) / frame_s).astype(np.int64), 0, n)
    for i in range(len(starts)):  # O(windows × frames per window)
        score[fa[i]:fb[i]] += sims[i]
        votes[fa[i]:fb[i], win_lab[i]] += 1
        cover[fa[i]:fb[i]] += 1
    lab = np.argmax(score, axis=1)
    covered = cover > 0
    if not covered.all():  # frames beyond any window: the nearest covered frame's speaker
        idx = np.flatnonzero(covered)
        near = idx[np.clip(np.searchsorted(idx, np.arange(n)), 0, len(idx) - 1)]
        near_left = idx[np.clip(np.searchsorted(idx, np.arange(n)) - 1, 0, len(idx) - 1)]
        pick = np.where(np.abs(near_left - np.arange(n)) < np.abs(near - np.arange(n)), near_left, near)
        lab = lab[pick]
        votes, cover = votes[pick], cover[pick]
    conf = votes[np.arange(n), lab] / np.maximum(cover, 1)
    lab = _smooth_runs(np.where(speech, lab, -1), speech, max(1, int(round(opt.min_turn_s / frame_s))))
    counts = np.array([(lab == k).sum() for k in range(len(ks))])
    order = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    remap = np.full(len(ks) + 1, -1)
    for new, old in enumerate(order):
        remap[old] = new
    lab = remap[lab]
    names = [f"S{i + 1}" for i in range(len(order))]
    segs = _turns(lab, conf, frame_s, names)
    segs["end_s"] = np.minimum(segs["end_s"], duration)
    centroids = {names[i]: cent[old] for i, old in enumerate(order)}
    speech_s = {names[i]: float(counts[old] * frame_s) for i, old in enumerate(order)}
    flags = ["single_speaker"] if len(order) == 1 else []
    return RecordingDiarization(segs, centroids, speech_s, duration, flags)
