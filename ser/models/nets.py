"""Log-mel network families: waveform windows ``[B, T]`` -> logits ``[B, n_labels]``.

:class:`LogMelClassifier` puts the log-mel front end and the per-window normalisation
inside ``forward`` (so training and inference cannot diverge) ahead of a spectrogram
body:

- :class:`SmallCNN`: strided 2-D CNN on the log-mel patch (the fast default: 12 M
  multiply-adds per 2 s window);
- :class:`ResNetCNN`: a small ResNet on the log-mel patch;
- :class:`CRNN`: conv front end + bidirectional GRU or Transformer encoder over time +
  attention pooling.

The architectures are chosen by name in :data:`ser.models.registry.ARCHITECTURES`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ser.signal.spectrogram import LogMel, normalize_window

SpecTransform = Callable[[Tensor], Tensor]


def _conv_bn_relu(c_in: int, c_out: int, *, stride: int | tuple[int, int] = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _check_common(name: str, *, channels: Sequence[int], freq_bins: int, dropout: float) -> None:
    if not channels or any(int(c) < 1 for c in channels):
        raise ValueError(f"{name}: channels must list at least one positive width; got {list(channels)}")
    if int(freq_bins) < 1:
        raise ValueError(f"{name}: freq_bins must be >= 1; got {freq_bins}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"{name}: dropout must be in [0, 1); got {dropout}")


class _FreqBandPooling(nn.Module):
    """Shared tail of the CNNs: pool ``[B, C, F, T]`` to ``freq_bins`` frequency bands
    (mean over time), dropout, linear.

    Keeping a few frequency bands (rather than global pooling) lets the classifier know
    *where* in the spectrum energy lies: pitch and spectral tilt carry emotion. The
    layers are attributes of the network itself (``pool``, ``dropout``, ``head``), so
    state-dict keys stay those of the first bundle format.
    """

    pool: nn.Module
    dropout: nn.Module
    head: nn.Module

    def _init_tail(self, c_in: int, *, n_labels: int, freq_bins: int, dropout: float) -> None:
        self.pool = nn.AdaptiveAvgPool2d((int(freq_bins), 1))
        self.dropout = nn.Dropout(float(dropout))
        self.head = nn.Linear(int(c_in) * int(freq_bins), int(n_labels))

    def _tail(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.pool(x).flatten(1)))


class SmallCNN(_FreqBandPooling):
    """Small 2-D CNN over a log-mel patch: the fast default model.

    Blocks of conv3x3 -> BatchNorm -> ReLU that halve both axes with a stride-2
    convolution, which computes only the outputs that are kept; optionally the first
    ``pooled_blocks`` blocks instead convolve at full resolution and max-pool 2x2 (the
    original design). Then average pooling over time and into ``freq_bins`` frequency
    bands, dropout and a linear layer. Works for any number of mel bands and frames.

    Cost on a 64 x 201 patch (2 s at 16 kHz, 10 ms hop) with the default channels
    (16, 32, 64, 128), 0.1 M parameters: 12 M multiply-adds with ``pooled_blocks=0``
    (default), 47 M with -1 (all pooled; what bundles of format 1 hold). On a CPU the
    pooled design is about 7x slower still than its multiply-adds suggest: its first
    block (one input channel, 64 x 201 outputs per channel) is bound by memory traffic,
    so even ``pooled_blocks=1`` costs most of that time.

    Args:
        n_labels: number of output classes.
        channels: output channels of each conv block (one block per entry).
        freq_bins: frequency bands kept after pooling (1 = global average pooling).
        dropout: dropout probability before the classifier.
        pooled_blocks: leading blocks that max-pool instead of striding (-1: all).
    """

    def __init__(self, *, n_labels: int, channels: Sequence[int] = (16, 32, 64, 128),
                 freq_bins: int = 4, dropout: float = 0.3, pooled_blocks: int = 0,
                 block_convs: int | Sequence[int] = 1) -> None:
        super().__init__()
        _check_common("small_cnn", channels=channels, freq_bins=freq_bins, dropout=dropout)
        if int(pooled_blocks) < -1:
            raise ValueError(f"small_cnn: pooled_blocks must be >= 0, or -1 for all; got {pooled_blocks}")
        convs = ([int(block_convs)] * len(channels) if isinstance(block_convs, int)
                 else [int(n) for n in block_convs])
        if len(convs) != len(channels) or min(convs) < 1:
            raise ValueError(f"small_cnn: block_convs must be >= 1, one per block of channels="
                             f"{list(channels)}; got {block_convs}")
        self.config = {"channels": [int(c) for c in channels], "freq_bins": int(freq_bins),
                       "dropout": float(dropout), "pooled_blocks": int(pooled_blocks),
                       "block_convs": convs}
        n_pooled = len(channels) if int(pooled_blocks) == -1 else int(pooled_blocks)
        blocks: list[nn.Module] = []
        c_in = 1
        for i, (c_out, n_convs) in enumerate(zip(self.config["channels"], convs)):
            if i < n_pooled:
                blocks += [*_conv_bn_relu(c_in, c_out), nn.MaxPool2d(2, ceil_mode=True)]
            else:
                blocks += _conv_bn_relu(c_in, c_out, stride=2)
            for _ in range(n_convs - 1):
                blocks += _conv_bn_relu(c_out, c_out)
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self._init_tail(c_in, n_labels=n_labels, freq_bins=freq_bins, dropout=dropout)

    def forward(self, spec: Tensor) -> Tensor:
        """``[B, n_mels, frames]`` -> logits ``[B, n_labels]``."""
        return self._tail(self.blocks(spec.unsqueeze(1)))


class _BasicBlock(nn.Module):
    """ResNet basic block: two conv3x3 + BN, identity (or strided 1x1 conv) shortcut."""

    def __init__(self, c_in: int, c_out: int, *, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(c_in, c_out, stride=stride),
                                  nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(c_out)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetCNN(_FreqBandPooling):
    """Small ResNet (He et al., 2016) over a log-mel patch.

    A stride-2 conv3x3 stem, then one stage per entry of ``channels`` with ``blocks``
    basic blocks each; the first block of every stage halves both axes (stride 2).
    Head as in :class:`SmallCNN` (``freq_bins`` bands, dropout, linear).

    Cost of the default (``channels=(32, 64, 128)``, one block per stage) on a
    64 x 201 patch: 36 M multiply-adds, 0.3 M parameters.

    Args:
        n_labels: number of output classes.
        channels: width of each stage (the stem has ``channels[0] // 2``).
        blocks: basic blocks per stage (an int for all stages, or one per stage).
        freq_bins: frequency bands kept after pooling.
        dropout: dropout probability before the classifier.
    """

    def __init__(self, *, n_labels: int, channels: Sequence[int] = (32, 64, 128),
                 blocks: int | Sequence[int] = 1, freq_bins: int = 4, dropout: float = 0.3) -> None:
        super().__init__()
        _check_common("resnet", channels=channels, freq_bins=freq_bins, dropout=dropout)
        n_blocks = [int(blocks)] * len(channels) if isinstance(blocks, int) else [int(b) for b in blocks]
        if len(n_blocks) != len(channels) or min(n_blocks) < 1:
            raise ValueError(f"resnet: blocks must be >= 1, one per stage of channels={list(channels)}; "
                             f"got {blocks}")
        self.config = {"channels": [int(c) for c in channels], "blocks": n_blocks,
                       "freq_bins": int(freq_bins), "dropout": float(dropout)}
        stem = max(8, int(channels[0]) // 2)
        layers: list[nn.Module] = _conv_bn_relu(1, stem, stride=2)
        c_in = stem
        for c_out, n in zip(self.config["channels"], n_blocks):
            for k in range(n):
                layers.append(_BasicBlock(c_in, c_out, stride=2 if k == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*layers)
        self._init_tail(c_in, n_labels=n_labels, freq_bins=freq_bins, dropout=dropout)

    def forward(self, spec: Tensor) -> Tensor:
        """``[B, n_mels, frames]`` -> logits ``[B, n_labels]``."""
        return self._tail(self.blocks(spec.unsqueeze(1)))


def _sinusoidal(n: int, dim: int, *, device: torch.device) -> Tensor:
    """Sinusoidal position encoding ``[n, dim]`` (Vaswani et al., 2017)."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / dim))
    enc = torch.zeros(n, dim, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return enc


class CRNN(nn.Module):
    """Convolutional front end + sequence encoder over time + attention pooling.

    1. ``len(channels)`` stride-2 conv3x3 blocks (as :class:`SmallCNN`) turn the patch
       ``[n_mels, frames]`` into ``[C, n_mels / 2^k, frames / 2^k]``;
    2. frequency is pooled to ``freq_bins`` bands and folded into the features, a
       linear layer projects each frame to ``hidden`` units;
    3. the sequence encoder: a bidirectional GRU (``encoder="gru"``, ``layers`` layers,
       ``hidden // 2`` units per direction) or a Transformer encoder
       (``encoder="transformer"``: pre-norm, ``heads`` heads, feed-forward ``2 * hidden``,
       sinusoidal positions);
    4. pooling over time: learned attention weights (``pooling="attention"``, softmax
       over frames) or the mean (``"mean"``); dropout, linear.

    Cost of the default on a 64 x 201 patch (51 frames of 40 ms): 9 M multiply-adds,
    0.1 M parameters.

    Args:
        n_labels: number of output classes.
        channels: conv front-end widths (one stride-2 block each).
        freq_bins: frequency bands folded into each frame's features.
        hidden: sequence model width (even).
        encoder: ``"gru"`` or ``"transformer"``.
        layers: encoder layers.
        heads: attention heads (transformer only; must divide ``hidden``).
        pooling: ``"attention"`` or ``"mean"``.
        dropout: dropout in the encoder and before the classifier.
    """

    ENCODERS = ("gru", "transformer")
    POOLINGS = ("attention", "mean")

    def __init__(self, *, n_labels: int, channels: Sequence[int] = (16, 32), freq_bins: int = 4,
                 hidden: int = 128, encoder: str = "gru", layers: int = 1, heads: int = 4,
                 pooling: str = "attention", dropout: float = 0.3) -> None:
        super().__init__()
        _check_common("crnn", channels=channels, freq_bins=freq_bins, dropout=dropout)
        if encoder not in self.ENCODERS:
            raise ValueError(f"crnn: encoder must be one of {self.ENCODERS}; got {encoder!r}")
        if pooling not in self.POOLINGS:
            raise ValueError(f"crnn: pooling must be one of {self.POOLINGS}; got {pooling!r}")
        if int(hidden) < 2 or int(hidden) % 2 or int(layers) < 1:
            raise ValueError(f"crnn: hidden must be even and >= 2, layers >= 1; got hidden={hidden}, "
                             f"layers={layers}")
        if encoder == "transformer" and int(hidden) % int(heads):
            raise ValueError(f"crnn: heads={heads} must divide hidden={hidden}")
        self.config = {"channels": [int(c) for c in channels], "freq_bins": int(freq_bins),
                       "hidden": int(hidden), "encoder": encoder, "layers": int(layers),
                       "heads": int(heads), "pooling": pooling, "dropout": float(dropout)}
        conv: list[nn.Module] = []
        c_in = 1
        for c_out in self.config["channels"]:
            conv += _conv_bn_relu(c_in, c_out, stride=2)
            c_in = c_out
        self.conv = nn.Sequential(*conv)
        self.freq_pool = nn.AdaptiveAvgPool2d((int(freq_bins), None))
        h = int(hidden)
        self.proj = nn.Sequential(nn.Linear(c_in * int(freq_bins), h), nn.LayerNorm(h))
        if encoder == "gru":
            self.rnn = nn.GRU(h, h // 2, num_layers=int(layers), batch_first=True, bidirectional=True,
                              dropout=float(dropout) if int(layers) > 1 else 0.0)
        else:
            layer = nn.TransformerEncoderLayer(h, int(heads), dim_feedforward=2 * h, dropout=float(dropout),
                                               batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, int(layers), enable_nested_tensor=False)
        self.attention = nn.Linear(h, 1) if pooling == "attention" else None
        self.dropout = nn.Dropout(float(dropout))
        self.head = nn.Linear(h, int(n_labels))

    def frames(self, spec: Tensor) -> Tensor:
        """Encoded frame sequence ``[B, frames / 2^k, hidden]``."""
        x = self.freq_pool(self.conv(spec.unsqueeze(1)))  # [B, C, freq_bins, T']
        x = self.proj(x.flatten(1, 2).transpose(1, 2))  # [B, T', hidden]
        if self.config["encoder"] == "gru":
            return self.rnn(x)[0]
        return self.transformer(x + _sinusoidal(x.shape[1], x.shape[2], device=x.device).to(x.dtype))

    def forward(self, spec: Tensor) -> Tensor:
        """``[B, n_mels, frames]`` -> logits ``[B, n_labels]``."""
        h = self.frames(spec)
        if self.attention is None:
            pooled = h.mean(dim=1)
        else:
            w = torch.softmax(self.attention(h).float(), dim=1).to(h.dtype)  # [B, T', 1]
            pooled = (w * h).sum(dim=1)
        return self.head(self.dropout(pooled))


class LogMelClassifier(nn.Module):
    """Waveform classifier: :class:`LogMel` -> :func:`normalize_window` -> spectrogram body.

    Args:
        frontend: the log-mel front end.
        body: module mapping ``[B, n_mels, frames]`` to logits ``[B, n_labels]``
            (with a ``config`` dict of its constructor options).
    """

    def __init__(self, frontend: LogMel, body: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.body = body

    def features(self, wave: Tensor) -> Tensor:
        """Normalised model input ``[B, n_mels, frames]`` for waveforms ``[B, T]``."""
        return normalize_window(self.frontend(wave))

    def forward(self, wave: Tensor, *, spec_transform: SpecTransform | None = None) -> Tensor:
        """Logits ``[B, n_labels]``; ``spec_transform`` (e.g. SpecAugment) is for training only."""
        spec = self.features(wave)
        if spec_transform is not None:
            spec = spec_transform(spec)
        return self.body(spec)

    def forward_windows(self, wave: Tensor, starts: Tensor, *, window_n: int) -> Tensor:
        """Logits ``[N, n_labels]`` of the windows ``wave[s:s + window_n]`` of one signal ``[T]``.

        Same as ``forward`` on the stacked windows, but overlapping windows share their
        spectrogram frames (:meth:`ser.signal.spectrogram.LogMel.windows`).
        """
        return self.body(normalize_window(self.frontend.windows(wave, starts, window_n=window_n)))

    def arch_params(self) -> dict[str, Any]:
        """All options of the body, defaults included (what a bundle stores)."""
        return copy.deepcopy(self.body.config)
