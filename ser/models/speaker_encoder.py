"""Speaker embeddings: Resemblyzer's voice encoder (GE2E, 3-layer LSTM, 256-d), and the choice
between it and CAM++ (:mod:`ser.models.campp_encoder`; :func:`default_encoder`).

The encoder's weights ship inside the ``resemblyzer`` package (nothing is downloaded).
Its input is Resemblyzer's mel spectrogram (16 kHz, 25 ms Hann windows every 10 ms, 40
Slaney mel bands, power, not log), which :meth:`SpeakerEncoder.mel` computes with
``torch.stft`` (the same values as ``resemblyzer.audio.wav_to_mel_spectrogram``, several
times faster). Resemblyzer normalises an utterance to -30 dBFS before the spectrogram;
here each embedded window is scaled to that level, so an embedding does not depend on
how loud the rest of the recording is. Embeddings are non-negative and L2-normalised, so
their dot product is the cosine similarity.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ser.core.threads import torch_threads

#: Sampling rate of the encoder (Hz), its mel frame step (s) and its embedding size.
ENCODER_SR, MEL_HOP_S, EMBEDDING_DIM = 16000, 0.01, 256
#: Level every embedded window is scaled to (dB re full scale RMS), as Resemblyzer does.
TARGET_DBFS: float = -30.0
#: Mel bands of the encoder's input.
N_MELS: int = 40
#: Most mel frames (10 ms each) computed by one STFT call (its complex spectrum: 3 MiB).
MEL_PIECE_FRAMES: int = 2000


class SpeakerEncoder:
    """Resemblyzer's voice encoder on the CPU, for windows of a signal.

    Example:
        >>> enc = SpeakerEncoder()
        >>> e = enc.embed_windows(y, 16000, starts_s=np.arange(0, 10, 0.75), window_s=1.5)  # doctest: +SKIP
    """

    def __init__(self, *, batch_size: int = 128, threads: int | None = 1) -> None:
        """Load the encoder.

        Args:
            batch_size: windows per LSTM call (>= 1).
            threads: torch threads while embedding (restored afterwards; >= 1);
                ``None``: the process's count. One by default: each LSTM step is small, and
                on the busy two-core machine two threads took 6-9× the CPU time of one
                (and 3-6× the wall time; ``benchmarks/RESULTS.md``).

        Raises:
            ValueError: ``batch_size`` or ``threads`` below 1.
        """
        import librosa
        import torch
        from resemblyzer import VoiceEncoder

        if int(batch_size) < 1 or (threads is not None and int(threads) < 1):
            raise ValueError(f"batch_size and threads must be >= 1; got {batch_size!r}, {threads!r}")
        self._torch = torch
        self.model: Any = VoiceEncoder("cpu", verbose=False)
        self.batch_size = int(batch_size)
        self.threads = None if threads is None else int(threads)
        fb = librosa.filters.mel(sr=ENCODER_SR, n_fft=400, n_mels=N_MELS)
        self._mel_fb = torch.from_numpy(fb.astype(np.float32))
        self._window = torch.hann_window(400, periodic=True)

    def mel(self, y: np.ndarray) -> np.ndarray:
        """Resemblyzer's mel spectrogram of 16 kHz audio.

        Args:
            y: mono float audio at 16 kHz, shape ``(n,)``.

        Returns:
            float32 ``(1 + n // 160, 40)``; frame ``i`` centred at ``i * 0.01`` s.
        """
        y = np.asarray(y, dtype=np.float32)
        return self._mel_frames(y, 0, 1 + len(y) // int(ENCODER_SR * MEL_HOP_S))

    def embed_windows(
        self, y: np.ndarray, sr: int, *, starts_s: np.ndarray, window_s: float,
    ) -> np.ndarray:
        """Embeddings of windows ``[start, start + window_s)`` of one signal.

        Args:
            y: mono float audio, shape ``(n,)``.
            sr: sampling rate (Hz); must be 16000 (resample before).
            starts_s: window starts (s) from ``y[0]``; each window must lie inside ``y``.
            window_s: window length (s, >= 0.1).

        Returns:
            float32 ``(n_windows, 256)``, rows L2-normalised (all zero for a silent window).

        Raises:
            ValueError: another sampling rate, or a window outside ``y``.
        """
        if sr != ENCODER_SR:
            raise ValueError(f"the speaker encoder takes {ENCODER_SR} Hz audio; got {sr} Hz")
        starts = np.asarray(starts_s, dtype=np.float64).reshape(-1)
        if not len(starts):
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        n_win = int(round(window_s / MEL_HOP_S))
        if n_win < 10:
            raise ValueError(f"window_s must be >= 0.1 s; got {window_s!r}")
        y = np.asarray(y, dtype=np.float32)
        first = np.round(starts / MEL_HOP_S).astype(np.int64)
        hop_n = int(ENCODER_SR * MEL_HOP_S)
        if first.min() < 0 or first.max() + n_win > 1 + len(y) // hop_n:
            raise ValueError(f"windows of {window_s} s starting at {starts.min():.2f}-{starts.max():.2f} s "
                             f"do not fit in {len(y) / sr:.2f} s of audio")
        # per-window level normalisation to TARGET_DBFS (power scales with the gain squared)
        a = np.clip(first * hop_n, 0, len(y))
        b = np.clip(a + n_win * hop_n, 0, len(y))
        power = (_prefix_sums_at(y, b) - _prefix_sums_at(y, a)) / np.maximum(b - a, 1)
        target = 10.0 ** (TARGET_DBFS / 10.0)
        gain2 = np.where(power > 1e-12, target / np.maximum(power, 1e-12), 0.0).astype(np.float32)
        torch = self._torch
        out = np.empty((len(starts), EMBEDDING_DIM), dtype=np.float32)
        with torch.inference_mode(), torch_threads(self.threads):
            for k in range(0, len(starts), self.batch_size):
                frames = self._window_frames(y, first[k:k + self.batch_size], n_win)
                frames *= gain2[k:k + self.batch_size, None, None]
                out[k:k + len(frames)] = self.model(torch.from_numpy(frames)).numpy()
        out[gain2 == 0] = 0.0
        return np.nan_to_num(out)

    def _window_frames(self, y: np.ndarray, first: np.ndarray, n_win: int) -> np.ndarray:
        """Mel frames ``(len(first), n_win, 40)`` of windows starting at frames ``first``, each
        stretch of overlapping windows from its own spectrogram (the values of :meth:`mel` of
        all of ``y``; memory bounded by the windows, not the signal)."""
        frames = np.empty((len(first), n_win, N_MELS), dtype=np.float32)
        order = np.argsort(first, kind="stable")
        f = first[order]
        breaks = np.flatnonzero(f[1:] > f[:-1] + n_win) + 1  # a gap: the next stretch
        for run in np.split(np.arange(len(f)), breaks):
            r0, r1 = int(f[run[0]]), int(f[run[-1]]) + n_win
            mel = np.concatenate([self._mel_frames(y, a, min(a + MEL_PIECE_FRAMES, r1))
                                  for a in range(r0, r1, MEL_PIECE_FRAMES)])
            frames[order[run]] = mel[(f[run] - r0)[:, None] + np.arange(n_win)[None, :]]
        return frames

    def _mel_frames(self, y: np.ndarray, f0: int, f1: int) -> np.ndarray:
        """Frames ``f0 … f1 - 1`` of :meth:`mel` of ``y`` from that stretch alone (frames centred
        on ``i * 10 ms``, zeros beyond the signal; the same values whatever the stretch)."""
        torch = self._torch
        hop_n, half = int(ENCODER_SR * MEL_HOP_S), 200  # centred frames: n_fft // 2 either side
        a, b = f0 * hop_n - half, (f1 - 1) * hop_n + half
        seg = y[max(a, 0):min(b, len(y))]
        if a < 0 or b > len(y):  # the zero padding of torch.stft(center=True)
            seg = np.concatenate((np.zeros(max(0, -a), np.float32), seg, np.zeros(max(0, b - len(y)), np.float32)))
        spec = torch.stft(torch.from_numpy(np.ascontiguousarray(seg)), n_fft=400, hop_length=hop_n,
                          window=self._window, center=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        return (self._mel_fb @ power).T.contiguous().numpy()


def _prefix_sums_at(y: np.ndarray, positions: np.ndarray, *, chunk: int = 1 << 20) -> np.ndarray:
    """``cumsum(concat([0], y ** 2))[positions]`` in float64, streamed over ``y`` in chunks
    (the same sequential sums, so the same values, without an array as long as ``y``)."""
    order = np.argsort(positions, kind="stable")
    pos = positions[order]
    out = np.empty(len(pos), dtype=np.float64)
    carry, i = 0.0, 0
    for c0 in range(0, len(y) + 1, chunk):
        c1 = min(c0 + chunk, len(y))
        local = np.cumsum(np.concatenate(([carry], np.square(y[c0:c1], dtype=np.float64))))  # sq[c0 … c1]
        j = int(np.searchsorted(pos, c1, side="right"))
        out[i:j] = local[pos[i:j] - c0]
        carry, i = float(local[-1]), j
        if c1 == len(y):
            break
    result = np.empty_like(out)
    result[order] = out
    return result


#: Speaker encoders by name: Resemblyzer's (this module) and CAM++ (:mod:`ser.models.campp_encoder`).
ENCODERS: tuple[str, ...] = ("resemblyzer", "campp")


def check_encoder(name: str) -> str:
    """``name`` if it is one of :data:`ENCODERS`, else ``ValueError``."""
    if name not in ENCODERS:
        raise ValueError(f"speaker encoder {name!r} is unknown; use one of {', '.join(ENCODERS)}")
    return name


@functools.lru_cache(maxsize=2)
def default_encoder(name: str = "resemblyzer") -> Any:
    """One encoder of each kind per process (:data:`ENCODERS`; Resemblyzer loads in ~0.1 s,
    CAM++ in ~0.3 s); both have ``embed_windows(y, 16000, *, starts_s, window_s)``.

    Raises:
        ValueError: an unknown name; ImportError: CAM++ without its package.
    """
    if check_encoder(name) == "campp":
        from ser.models.campp_encoder import CamppEncoder  # lazily: its weights are an extra package

        return CamppEncoder()
    return SpeakerEncoder()
