"""Log-mel spectrograms and augmentation: the model's input features, in pure torch.

Everything here works on batches on any device (no torchaudio). The mel filter
matrix is librosa's (:func:`librosa.filters.mel`: Slaney scale and area norm), computed
here in numpy so that loading a model does not import librosa (about 0.8 s), and
:func:`log_mel` matches ``librosa.power_to_db(librosa.feature.melspectrogram(...))``.

Shapes: waveforms are ``[B, T]`` float tensors (samples), spectrograms are
``[B, n_mels, frames]`` with ``frames = 1 + T // hop_length`` (centred frames).

Following torchaudio's split, :class:`LogMel` holds the configuration (and the
filter matrix as a buffer) and its ``forward`` calls the pure function
:func:`log_mel_from_filterbank`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Default log-mel configuration (32 ms frames, 10 ms hop at 16 kHz).
DEFAULT_FEATURES: dict[str, Any] = {
    "n_mels": 64,
    "n_fft": 512,
    "hop_length": 160,
    "fmin": 50.0,
    "fmax": None,
    "top_db": 80.0,
}

_AMIN = 1e-10  # power floor before log10, as in librosa.power_to_db


def mel_filterbank(
    *, sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney mel filter matrix, float32 ``[n_mels, n_fft // 2 + 1]``.

    Raises:
        ValueError: when ``fmax`` exceeds the Nyquist frequency or ``fmin >= fmax``.
    """
    nyquist = sample_rate / 2
    top = nyquist if fmax is None else float(fmax)
    if top > nyquist:
        raise ValueError(f"log-mel: fmax={fmax} Hz is above Nyquist ({nyquist:g} Hz) for "
                         f"sample_rate={sample_rate}; lower fmax or leave it None")
    if not 0 <= fmin < top:
        raise ValueError(f"log-mel: need 0 <= fmin < fmax; got fmin={fmin}, fmax={top:g}")
    fft_hz = np.linspace(0.0, nyquist, 1 + n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(top), n_mels + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney: constant area per band
    return weights.astype(np.float32)


# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above.
_F_SP = 200.0 / 3          # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = _F_SP * mel
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_bands(filterbank: Tensor, *, group: int = 16) -> list[tuple[int, int, Tensor]]:
    """Split a mel matrix into groups of bands, each with the range of bins it touches.

    A mel filter is non-zero on a few neighbouring FFT bins only, so multiplying each
    group of ``group`` bands with its own bin range costs about a quarter of the dense
    product (64 bands, 257 bins) and gives the same result.

    Args:
        filterbank: mel matrix ``[n_mels, n_bins]``.
        group: bands per group.

    Returns:
        ``[(lo, hi, weight)]`` with ``weight`` float32 ``[2 * (hi - lo), n_group]``: each
        bin's row repeated for the real and the imaginary part (see :func:`log_mel_from_filterbank`).
    """
    fb = filterbank.detach().float().cpu()
    bands = []
    for rows in torch.arange(fb.shape[0]).split(max(1, int(group))):
        used = torch.nonzero(fb[rows].abs().sum(dim=0) > 0).flatten()
        lo, hi = (int(used.min()), int(used.max()) + 1) if len(used) else (0, 1)
        bands.append((lo, hi, fb[rows][:, lo:hi].t().repeat_interleave(2, dim=0).contiguous()))
    return bands


def _mel_power(frames: Tensor, window: Tensor, bands: Sequence[tuple[int, int, Tensor]]) -> Tensor:
    """Mel power ``[..., n, n_mels]`` of frames ``[..., n, n_fft]`` (float32)."""
    spec = torch.fft.rfft(frames * window.to(frames.device), dim=-1)  # [..., n, n_bins]
    power = torch.view_as_real(spec).square_().flatten(-2)  # [..., n, 2 n_bins]: re^2, im^2
    return torch.cat([torch.matmul(power[..., 2 * lo:2 * hi], w.to(frames.device))
                      for lo, hi, w in bands], dim=-1)


def _to_db(mel: Tensor, top_db: float | None) -> Tensor:
    """``10 log10`` in place on frame-major mel power ``[B, frames, n_mels]``, clipped per example."""
    db = mel.clamp_min_(_AMIN).log10_().mul_(10.0)
    if top_db is not None:
        peak = db.amax(dim=(1, 2), keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


def log_mel_from_filterbank(
    wave: Tensor, filterbank: Tensor, *, n_fft: int, hop_length: int, window: Tensor,
    top_db: float | None = 80.0, bands: Sequence[tuple[int, int, Tensor]] | None = None,
) -> Tensor:
    """Log-mel power spectrogram in dB from a precomputed filter matrix.

    Same result as ``torch.stft(center=True, pad_mode="constant")`` followed by
    ``|X|^2``, the mel product and ``10 log10``, computed frame-major (``[B, frames, ...]``)
    so that each step is one contiguous pass: frames are strided views of the padded
    waveform, the power of the real and imaginary parts is summed inside the
    (band-grouped, :func:`mel_bands`) mel product, and the dB conversion is in place.

    Args:
        wave: waveforms ``[B, T]`` (or ``[T]``), any float dtype; computed in float32.
        filterbank: mel matrix ``[n_mels, n_fft // 2 + 1]``.
        n_fft: FFT size in samples (also the window length).
        hop_length: hop between frames in samples.
        window: analysis window ``[n_fft]`` (periodic Hann to match librosa).
        top_db: clip each example to ``max - top_db`` dB (``None``: no clipping).
        bands: :func:`mel_bands` of ``filterbank`` (``None``: computed here).

    Returns:
        ``[B, n_mels, frames]`` float32 in dB (ref = 1.0 power), ``frames = 1 + T // hop_length``
        (a transposed view of a frame-major tensor).
    """
    squeeze = wave.ndim == 1
    if squeeze:
        wave = wave.unsqueeze(0)
    if wave.ndim != 2:
        raise ValueError(f"log-mel: expected waveforms [B, T]; got shape {tuple(wave.shape)}")
    if bands is None:
        bands = mel_bands(filterbank)
    with torch.autocast(device_type=wave.device.type, enabled=False):
        wave = wave.float()
        half = n_fft // 2
        frames = F.pad(wave, (half, half)).unfold(-1, n_fft, hop_length)  # [B, frames, n_fft] view
        db = _to_db(_mel_power(frames, window, bands), top_db).transpose(1, 2)
    return db.squeeze(0) if squeeze else db


def _interior_frames(*, window_n: int, n_fft: int, hop_length: int) -> tuple[int, int]:
    """First and last centred frame of a window that need none of its zero padding."""
    half = n_fft // 2
    return -(-half // hop_length), (window_n + half - n_fft) // hop_length


def log_mel_windows_from_filterbank(
    wave: Tensor, starts: Tensor, *, window_n: int, filterbank: Tensor, n_fft: int,
    hop_length: int, window: Tensor, top_db: float | None = 80.0,
    bands: Sequence[tuple[int, int, Tensor]] | None = None,
) -> Tensor:
    """Log-mel of many overlapping windows of one signal, each frame computed once.

    The result equals :func:`log_mel_from_filterbank` of the stacked windows
    ``wave[s:s + window_n]`` (up to float rounding), but frames that lie wholly inside a
    window are taken from one frame grid over the whole signal, so overlapping windows
    share them (a 50 % hop halves the FFT work). Only the few frames at each window's
    edges, which see the window's zero padding, are computed per window, and the
    ``top_db`` clipping is applied per window as before.

    Args:
        wave: one waveform ``[T]``; every ``s + window_n <= T``.
        starts: window start samples ``[N]`` (int64), each a multiple of ``hop_length``.
        window_n: window length in samples.
        filterbank, n_fft, hop_length, window, top_db, bands: as for
            :func:`log_mel_from_filterbank`.

    Returns:
        ``[N, n_mels, frames]`` float32 dB, ``frames = 1 + window_n // hop_length`` (even
        ``n_fft``).

    Raises:
        ValueError: a start that is not a multiple of ``hop_length`` or a window past
            the end of ``wave``, or a window shorter than one FFT frame.
    """
    if wave.ndim != 1:
        raise ValueError(f"log-mel windows: expected one waveform [T]; got shape {tuple(wave.shape)}")
    starts = torch.as_tensor(starts, dtype=torch.long).flatten()
    half = n_fft // 2
    n_frames = (window_n + 2 * half - n_fft) // hop_length + 1
    j_lo, j_hi = _interior_frames(window_n=window_n, n_fft=n_fft, hop_length=hop_length)
    if window_n < n_fft or j_lo > j_hi:
        raise ValueError(f"log-mel windows: a window of {window_n} samples is too short for "
                         f"frames of {n_fft} samples every {hop_length}")
    if len(starts) and (bool((starts % hop_length != 0).any()) or int(starts.min()) < 0
                        or int(starts.max()) + window_n > wave.shape[-1]):
        raise ValueError(f"log-mel windows: starts must be multiples of hop_length={hop_length} "
                         f"with every window inside the {wave.shape[-1]}-sample signal")
    if bands is None:
        bands = mel_bands(filterbank)
    with torch.autocast(device_type=wave.device.type, enabled=False):
        wave = wave.float()
        starts = starts.to(wave.device)
        # interior frames from one grid over the signal: grid frame k covers
        # [k hop - half, k hop - half + n_fft), so window frame j of start s is k = s / hop + j
        lo_k = int(starts.min()) // hop_length + j_lo if len(starts) else 0
        hi_k = int(starts.max()) // hop_length + j_hi + 1 if len(starts) else 0
        a = lo_k * hop_length - half
        grid = wave[a:(hi_k - 1) * hop_length - half + n_fft].unfold(-1, n_fft, hop_length)
        mel_grid = _mel_power(grid, window, bands)  # [hi_k - lo_k, n_mels]
        k = (starts // hop_length + j_lo - lo_k)[:, None] + torch.arange(j_hi - j_lo + 1, device=wave.device)
        inner = mel_grid[k]  # [N, interior frames, n_mels]
        pos = torch.arange(window_n, device=wave.device)
        # head frames 0..j_lo-1 and tail frames j_hi+1.. see the window's zero padding
        parts = []
        if j_lo > 0:
            head_n = min(window_n, (j_lo - 1) * hop_length - half + n_fft)
            head = wave[starts[:, None] + pos[:head_n]]
            frames = F.pad(head, (half, n_fft)).unfold(-1, n_fft, hop_length)[:, :j_lo]
            parts.append(_mel_power(frames, window, bands))
        parts.append(inner)
        n_tail = n_frames - 1 - j_hi
        if n_tail > 0:
            t0 = (j_hi + 1) * hop_length - half
            tail = wave[starts[:, None] + pos[t0:]]
            frames = F.pad(tail, (0, n_fft)).unfold(-1, n_fft, hop_length)[:, :n_tail]
            parts.append(_mel_power(frames, window, bands))
        return _to_db(torch.cat(parts, dim=1), top_db).transpose(1, 2)


def log_mel(
    wave: Tensor, *, sample_rate: int, n_mels: int = 64, n_fft: int = 512, hop_length: int = 160,
    fmin: float = 50.0, fmax: float | None = None, top_db: float | None = 80.0,
) -> Tensor:
    """Log-mel spectrogram in dB of a batch of waveforms.

    Equivalent to ``librosa.power_to_db(librosa.feature.melspectrogram(y, sr=sample_rate,
    n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax), top_db=top_db)``
    per example. Builds the filter matrix on each call; use :class:`LogMel` in a model.

    Args:
        wave: ``[B, T]`` waveforms at ``sample_rate`` Hz.
        sample_rate: sampling rate in Hz.
        n_mels: number of mel bands.
        n_fft: FFT size in samples (512 = 32 ms at 16 kHz).
        hop_length: frame hop in samples (160 = 10 ms at 16 kHz).
        fmin: lowest band edge in Hz.
        fmax: highest band edge in Hz (``None``: Nyquist).
        top_db: per-example dynamic range in dB (``None``: unclipped).

    Returns:
        ``[B, n_mels, 1 + T // hop_length]`` float32 dB.
    """
    return LogMel(sample_rate=sample_rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
                  fmin=fmin, fmax=fmax, top_db=top_db).to(wave.device)(wave)


class LogMel(nn.Module):
    """Log-mel front end: waveforms ``[B, T]`` -> dB spectrograms ``[B, n_mels, frames]``.

    The mel matrix and window are non-persistent buffers: they follow ``.to(device)``
    but are rebuilt from the configuration rather than stored in a state dict.

    Example:
        >>> frontend = LogMel(sample_rate=16000)
        >>> frontend(torch.zeros(2, 32000)).shape
        torch.Size([2, 64, 201])
    """

    def __init__(
        self, *, sample_rate: int, n_mels: int = 64, n_fft: int = 512, hop_length: int = 160,
        fmin: float = 50.0, fmax: float | None = None, top_db: float | None = 80.0,
    ) -> None:
        super().__init__()
        if hop_length <= 0 or n_fft <= 0 or n_mels <= 0:
            raise ValueError(f"log-mel: n_fft, hop_length and n_mels must be positive; got "
                             f"n_fft={n_fft}, hop_length={hop_length}, n_mels={n_mels}")
        self.sample_rate, self.n_mels, self.n_fft = int(sample_rate), int(n_mels), int(n_fft)
        self.hop_length, self.fmin, self.fmax, self.top_db = int(hop_length), fmin, fmax, top_db
        fb = mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        self.register_buffer("filterbank", torch.from_numpy(fb), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self._band_ranges: list[tuple[int, int]] = []
        for i, (lo, hi, w) in enumerate(mel_bands(self.filterbank)):
            self.register_buffer(f"band_{i}", w, persistent=False)
            self._band_ranges.append((lo, hi))

    def config(self) -> dict[str, Any]:
        """The constructor keywords except ``sample_rate`` (stored in the model bundle)."""
        return {"n_mels": self.n_mels, "n_fft": self.n_fft, "hop_length": self.hop_length,
                "fmin": self.fmin, "fmax": self.fmax, "top_db": self.top_db}

    def n_frames(self, n_samples: int) -> int:
        """Number of frames for a waveform of ``n_samples`` samples."""
        return 1 + n_samples // self.hop_length

    def _bands(self) -> list[tuple[int, int, Tensor]]:
        return [(lo, hi, getattr(self, f"band_{i}")) for i, (lo, hi) in enumerate(self._band_ranges)]

    def forward(self, wave: Tensor) -> Tensor:
        return log_mel_from_filterbank(wave, self.filterbank, n_fft=self.n_fft,
                                       hop_length=self.hop_length, window=self.window,
                                       top_db=self.top_db, bands=self._bands())

    def windows(self, wave: Tensor, starts: Tensor, *, window_n: int) -> Tensor:
        """``forward`` of the windows ``wave[s:s + window_n]``, sharing overlapping frames.

        See :func:`log_mel_windows_from_filterbank` (starts must be multiples of
        ``hop_length``; :meth:`can_share_frames` says whether a hop allows it).
        """
        return log_mel_windows_from_filterbank(
            wave, starts, window_n=window_n, filterbank=self.filterbank, n_fft=self.n_fft,
            hop_length=self.hop_length, window=self.window, top_db=self.top_db, bands=self._bands())

    def can_share_frames(self, *, window_n: int, hop_n: int) -> bool:
        """Whether windows ``window_n`` long every ``hop_n`` samples can use :meth:`windows`."""
        j_lo, j_hi = _interior_frames(window_n=window_n, n_fft=self.n_fft, hop_length=self.hop_length)
        return hop_n % self.hop_length == 0 and window_n >= self.n_fft and j_lo <= j_hi


def normalize_window(spec: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Standardise each window: zero mean, unit variance over all its bins.

    This is THE per-window input normalisation; the models apply it in ``forward``, so
    training and inference cannot diverge. Because a gain change is a constant dB
    offset, the result does not depend on the recording level.

    Args:
        spec: ``[B, n_mels, frames]`` dB spectrograms.
        eps: floor for the standard deviation (a silent window maps to zeros).

    Returns:
        Tensor of the same shape.
    """
    centred = spec - spec.mean(dim=(-2, -1), keepdim=True)  # two plain passes: faster than var_mean
    std = centred.square().mean(dim=(-2, -1), keepdim=True).sqrt()
    return centred * std.clamp_min(eps).reciprocal()


def spec_augment(
    spec: Tensor, *, freq_masks: int = 2, time_masks: int = 2, max_freq: int = 8,
    max_time: int = 20, fill: float = 0.0, generator: torch.Generator | None = None,
) -> Tensor:
    """SpecAugment (Park et al., 2019) frequency and time masking, without warping.

    Each example gets ``freq_masks`` bands of width ``U{0..max_freq}`` mel bins and
    ``time_masks`` blocks of width ``U{0..max_time}`` frames set to ``fill``
    (0.0 is the mean of a :func:`normalize_window` output). Random draws use
    ``generator`` on the CPU, so results are reproducible on any device.

    Args:
        spec: ``[B, n_mels, frames]`` spectrograms (not modified).
        freq_masks: number of frequency masks per example.
        time_masks: number of time masks per example.
        max_freq: largest frequency-mask width in bins.
        max_time: largest time-mask width in frames.
        fill: value written into masked bins.
        generator: CPU random generator (``None``: torch's global one).

    Returns:
        Masked copy of ``spec``.
    """
    if spec.ndim != 3:
        raise ValueError(f"spec_augment: expected [B, n_mels, frames]; got {tuple(spec.shape)}")
    b, n_freq, n_time = spec.shape
    mask = torch.zeros(b, n_freq, n_time, dtype=torch.bool)
    for n_masks, width_max, size, dim in ((freq_masks, max_freq, n_freq, 1),
                                          (time_masks, max_time, n_time, 2)):
        if n_masks <= 0 or width_max <= 0:
            continue
        width = torch.randint(0, min(width_max, size) + 1, (b, n_masks), generator=generator)
        start = (torch.rand(b, n_masks, generator=generator) * (size - width + 1)).long()
        pos = torch.arange(size).view(1, 1, size)
        hit = ((pos >= start.unsqueeze(-1)) & (pos < (start + width).unsqueeze(-1))).any(dim=1)
        mask |= hit.unsqueeze(2) if dim == 1 else hit.unsqueeze(1)
    return spec.masked_fill(mask.to(spec.device), fill)


def add_noise(
    wave: Tensor, *, snr_db: float | Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Add white Gaussian noise at a given signal-to-noise ratio.

    Args:
        wave: ``[B, T]`` waveforms.
        snr_db: SNR in dB, a scalar or one value per example ``[B]``.
        generator: CPU random generator.

    Returns:
        Noisy copy of ``wave``; a silent example stays silent.
    """
    noise = torch.randn(wave.shape, generator=generator).to(wave.device, wave.dtype)
    snr = torch.as_tensor(snr_db, dtype=torch.float32).to(wave.device).reshape(-1, 1)
    sig_power = wave.float().square().mean(dim=-1, keepdim=True)
    scale = torch.sqrt(sig_power / (10.0 ** (snr / 10.0)))
    return wave + (noise * scale).to(wave.dtype)


def random_time_shift(
    wave: Tensor, *, max_shift: int, generator: torch.Generator | None = None
) -> Tensor:
    """Circularly shift each example by ``U{-max_shift..max_shift}`` samples.

    Args:
        wave: ``[B, T]`` waveforms.
        max_shift: largest shift in samples.
        generator: CPU random generator.

    Returns:
        Shifted copy of ``wave``.
    """
    b, t = wave.shape
    if max_shift <= 0:
        return wave.clone()
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 1), generator=generator)
    idx = (torch.arange(t).view(1, t) - shifts) % t
    return torch.gather(wave, 1, idx.to(wave.device))


def freq_warp(
    spec: Tensor, *, max_warp: float = 0.1, generator: torch.Generator | None = None
) -> Tensor:
    """Stretch or squeeze each spectrogram along frequency by a random factor (VTLP-like).

    Each example's mel axis is resampled linearly at ``bin / a`` with ``a`` drawn
    uniformly in ``[1 - max_warp, 1 + max_warp]``: ``a > 1`` moves energy up (a shorter
    vocal tract, a higher voice), ``a < 1`` down; bins that fall outside take the edge
    value. This imitates speaker variation in formants and pitch (Jaitly & Hinton, 2013).

    Args:
        spec: ``[B, n_mels, frames]`` spectrograms (not modified).
        max_warp: largest relative change of the frequency scale (0: identity).
        generator: CPU random generator.

    Returns:
        Warped copy of ``spec``.
    """
    if spec.ndim != 3:
        raise ValueError(f"freq_warp: expected [B, n_mels, frames]; got {tuple(spec.shape)}")
    if not 0 <= max_warp < 1:
        raise ValueError(f"freq_warp: max_warp must be in [0, 1); got {max_warp}")
    b, n_freq, _ = spec.shape
    if max_warp == 0 or n_freq < 2:
        return spec.clone()
    factor = 1.0 + (2.0 * torch.rand(b, 1, generator=generator) - 1.0) * max_warp  # [B, 1]
    src = (torch.arange(n_freq, dtype=torch.float32)[None, :] / factor).clamp_(0, n_freq - 1)
    lo = src.floor().long().clamp_(max=n_freq - 2)
    frac = (src - lo).to(spec.device, spec.dtype)[:, :, None]  # [B, n_mels, 1]
    lo = lo.to(spec.device)[:, :, None].expand(-1, -1, spec.shape[2])
    below, above = torch.gather(spec, 1, lo), torch.gather(spec, 1, lo + 1)
    return below + frac * (above - below)
