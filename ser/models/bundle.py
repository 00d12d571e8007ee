"""Network architectures and the model bundle (save, load, predict).

Every model built here maps raw waveform windows ``[B, T]`` (float32, at the
bundle's sample rate) to logits ``[B, n_labels]``; feature extraction and the
per-window normalisation live inside ``forward``, so training and inference
cannot diverge. Architectures are registered by name in :data:`ARCHITECTURES`
(``build_model(arch, ...)``, chosen in the stage-02 params as ``arch`` and
``arch_params``); a new family adds a builder with :func:`register_arch`:

- ``small_cnn``: :class:`SmallCNN`, strided 2-D CNN on the log-mel patch (the fast
  default: 12 M multiply-adds per 2 s window);
- ``resnet``: :class:`ResNetCNN`, a small ResNet on the log-mel patch;
- ``crnn``: :class:`CRNN`, conv front end + bidirectional GRU or Transformer encoder
  over time + attention pooling;
- ``hf``: wav2vec2 / HuBERT / WavLM (:mod:`ser.models.transformer`), on the raw waveform; the bundle
  stores the backbone config, so it loads without hub access.

A bundle is a folder ``results/models/<name>/`` holding ``model.json`` (labels,
sample_rate, window_s, feature config, arch, training params, split speakers,
metrics, git commit) and ``model.pt`` (state dict). Inference needs only
:func:`load_bundle` and :meth:`Bundle.predict_proba`. ``arch_params`` in the bundle hold
every option, defaults included (format 2); bundles of format 1 are rebuilt with the
defaults of their time (:data:`LEGACY_ARCH_DEFAULTS`).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ser.core import atomic, provenance
from ser.signal.spectrogram import DEFAULT_FEATURES, LogMel, normalize_window

#: Version of the ``model.json`` layout written by :func:`save_bundle` (2: ``arch_params``
#: hold every option, defaults included).
BUNDLE_FORMAT = 2
#: Options whose default changed since an older bundle format: the value those bundles
#: were built with, filled in when the option is absent. Format 1 predates the strided
#: :class:`SmallCNN`.
LEGACY_ARCH_DEFAULTS: dict[int, dict[str, dict[str, Any]]] = {1: {"small_cnn": {"pooled_blocks": -1}}}
#: Keys that every ``model.json`` must hold.
REQUIRED_KEYS = ("labels", "sample_rate", "window_s", "features", "arch", "arch_params")
#: Feature kind and per-window normalisation implemented by :class:`LogMelClassifier`.
#: Inference precisions of :func:`load_bundle` (see there).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
FEATURE_KIND = "log_mel"
NORMALIZATION = "per_window_standardize"

SpecTransform = Callable[[Tensor], Tensor]


def window_samples(window_s: float, sample_rate: int) -> int:
    """Window length in samples: ``round(window_s * sample_rate)`` (used by training and inference)."""
    n = int(round(float(window_s) * int(sample_rate)))
    if n <= 0:
        raise ValueError(f"window_s={window_s} at {sample_rate} Hz gives no samples; use window_s > 0")
    return n


def fit_window(wave: np.ndarray, n_samples: int, *,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Cut or pad one utterance to exactly one model window.

    The rule for utterances of any length (used by training, validation and evaluation):
    longer ones are cropped, shorter ones are zero-padded on both sides (an odd number of
    padding samples puts the extra zero at the end). Without ``rng`` the window is
    centred (deterministic: validation, evaluation); with ``rng`` the crop
    start, or the utterance's position inside the padded window, is uniform at random
    (training; this doubles as a time-shift augmentation).

    Args:
        wave: float32 ``[T]`` samples.
        n_samples: window length in samples.
        rng: numpy generator for a random position (``None``: centre).

    Returns:
        float32 ``[n_samples]`` (a new array).
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"fit_window: expected a mono waveform [T]; got shape {wave.shape}")
    extra = abs(len(wave) - n_samples)
    shift = extra // 2 if rng is None else int(rng.integers(0, extra + 1))
    if len(wave) >= n_samples:
        return wave[shift:shift + n_samples].copy()
    out = np.zeros(n_samples, dtype=np.float32)
    out[shift:shift + len(wave)] = wave
    return out


def features_config(**overrides: Any) -> dict[str, Any]:
    """Full log-mel feature config: :data:`ser.signal.spectrogram.DEFAULT_FEATURES` plus overrides.

    Returns:
        ``{"kind": "log_mel", "normalization": "per_window_standardize", n_mels, n_fft,
        hop_length, fmin, fmax, top_db}`` as stored in ``model.json``.
    """
    unknown = set(overrides) - set(DEFAULT_FEATURES) - {"kind", "normalization"}
    if unknown:
        raise ValueError(f"features: unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted(DEFAULT_FEATURES)}")
    cfg = {"kind": FEATURE_KIND, "normalization": NORMALIZATION, **DEFAULT_FEATURES, **overrides}
    if cfg["kind"] != FEATURE_KIND or cfg["normalization"] != NORMALIZATION:
        raise ValueError(f"features: only kind={FEATURE_KIND!r} with normalization="
                         f"{NORMALIZATION!r} is implemented; got {cfg['kind']!r}/{cfg['normalization']!r}")
    return cfg


# --------------------------------------------------------------------------- architectures


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
        return copy.deepcopy(getattr(self.body, "config", {}))


ArchBuilder = Callable[..., nn.Module]
#: Registered architectures: name -> builder(n_labels=, sample_rate=, features=, **arch_params).
ARCHITECTURES: dict[str, ArchBuilder] = {}


def register_arch(name: str) -> Callable[[ArchBuilder], ArchBuilder]:
    """Decorator registering a builder ``f(*, n_labels, sample_rate, features, **arch_params)``.

    The builder must return a module mapping waveforms ``[B, T]`` to logits and accepting
    the keyword ``spec_transform`` in ``forward`` (it may ignore it). If the module has
    an ``arch_params()`` method, training stores its result (all options, resolved) in
    the bundle instead of the options it was given.
    """
    def deco(fn: ArchBuilder) -> ArchBuilder:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        ARCHITECTURES[name] = fn
        return fn
    return deco


def _log_mel_builder(body_cls: type[nn.Module]) -> ArchBuilder:
    def build(*, n_labels: int, sample_rate: int, features: Mapping[str, Any],
              **arch_params: Any) -> nn.Module:
        cfg = {k: v for k, v in features.items() if k not in ("kind", "normalization")}
        return LogMelClassifier(LogMel(sample_rate=sample_rate, **cfg),
                                body_cls(n_labels=n_labels, **arch_params))
    build.__doc__ = f"Log-mel front end + :class:`{body_cls.__name__}`."
    return build


register_arch("small_cnn")(_log_mel_builder(SmallCNN))
register_arch("resnet")(_log_mel_builder(ResNetCNN))
register_arch("crnn")(_log_mel_builder(CRNN))


@register_arch("hf")
def _build_hf(*, n_labels: int, sample_rate: int, features: Mapping[str, Any],
              **arch_params: Any) -> nn.Module:
    """Hugging Face wav2vec2 / HuBERT / WavLM classifier (:mod:`ser.models.transformer`; waveform input).

    ``arch_params`` are those of :func:`ser.models.transformer.hf_from_arch_params`: ``config`` (a stored
    backbone config: random init, then the bundle's weights) or ``source`` (hub id or
    folder of pretrained weights, for training). The log-mel ``features`` are not used.
    """
    del features
    from ser.models import transformer  # lazy: importing transformers takes seconds

    return transformer.hf_from_arch_params(arch_params, n_labels=n_labels, sample_rate=sample_rate)


def build_model(arch: str, *, n_labels: int, sample_rate: int,
                features: Mapping[str, Any] | None = None, **arch_params: Any) -> nn.Module:
    """Build a registered architecture.

    Args:
        arch: name in :data:`ARCHITECTURES`: ``"small_cnn"`` (:class:`SmallCNN`),
            ``"resnet"`` (:class:`ResNetCNN`), ``"crnn"`` (:class:`CRNN`) or ``"hf"``
            (:mod:`ser.models.transformer`).
        n_labels: number of classes.
        sample_rate: input sampling rate in Hz.
        features: feature config (see :func:`features_config`; ``None``: defaults).
        **arch_params: architecture options (e.g. ``channels``, ``dropout``).

    Returns:
        Module mapping waveforms ``[B, T]`` to logits ``[B, n_labels]``.

    Raises:
        ValueError: unknown ``arch``, bad ``features`` or options the architecture rejects.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; available: {sorted(ARCHITECTURES)}")
    if n_labels < 2:
        raise ValueError(f"need at least 2 labels to train a classifier; got n_labels={n_labels}")
    feats = features_config(**dict(features or {}))
    try:
        return ARCHITECTURES[arch](n_labels=int(n_labels), sample_rate=int(sample_rate),
                                   features=feats, **arch_params)
    except TypeError as err:
        raise ValueError(f"arch_params {sorted(arch_params)} not accepted by arch {arch!r}: {err}") from err


def resolved_arch_params(model: nn.Module, given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``arch_params`` to store for ``model``: its own ``arch_params()`` when it has one.

    This makes a bundle self-contained: every default is written out, and a Hugging
    Face model trained from a hub id stores its backbone config instead of the id.
    """
    target = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    method = getattr(target, "arch_params", None)
    return dict(method()) if callable(method) else dict(given)


# --------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class Bundle:
    """A loaded model bundle. Build with :func:`load_bundle`.

    Attributes:
        path: the bundle folder.
        meta: the parsed ``model.json``.
        model: the network in eval mode on ``device``.
        device: where ``predict_proba`` runs.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (see :func:`load_bundle`).
    """

    path: Path
    meta: dict[str, Any]
    model: nn.Module = field(repr=False)
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"

    @property
    def labels(self) -> list[str]:
        """Class names, in the column order of :meth:`predict_proba`."""
        return list(self.meta["labels"])

    @property
    def sample_rate(self) -> int:
        """Sampling rate in Hz that windows must have."""
        return int(self.meta["sample_rate"])

    @property
    def window_s(self) -> float:
        """Window length in seconds the model was trained on."""
        return float(self.meta["window_s"])

    @property
    def window_samples(self) -> int:
        """Window length in samples: ``round(window_s * sample_rate)``."""
        return window_samples(self.window_s, self.sample_rate)

    @property
    def pitch_norm_hz(self) -> float:
        """Register (Hz) every speaker/recording is pitch-normalised to before the model
        (:mod:`ser.signal.pitchnorm`); 0 when the model was trained without normalisation."""
        return float(self.meta.get("pitch_norm_hz") or 0.0)

    @property
    def heavy(self) -> bool:
        """True for transformer backbones, which need every core for the model itself."""
        return str(self.meta.get("arch")) == "hf"

    @property
    def preferred_batch_size(self) -> int:
        """Windows per forward pass that run fastest here: 4 for a transformer on the CPU
        (bigger batches spill the feed-forward activations out of the CPU caches: 24x
        real time at 4 against 15x at 64 for a wav2vec2-base-sized model in int8,
        ``benchmarks/RESULTS.md``), else 64."""
        return 4 if self.heavy and self.device.type == "cpu" else 64

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @property
    def temperature(self) -> float:
        """Softmax temperature (``meta["calibration"]["temperature"]``, 1.0 when uncalibrated)."""
        return float((self.meta.get("calibration") or {}).get("temperature", 1.0))

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        arr = np.asarray(windows)
        expected = (f"model was trained on {self.window_s:g} s windows at {self.sample_rate} Hz "
                    f"({self.window_samples} samples)")
        if arr.ndim != 2:
            raise ValueError(f"{expected}; windows must be a 2-D array [n, {self.window_samples}], "
                             f"got shape {arr.shape} (use windows[None] for a single window)")
        if arr.shape[1] != self.window_samples:
            raise ValueError(f"{expected}; got {arr.shape[1]}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"windows must be float audio in [-1, 1]; got dtype {arr.dtype} "
                             "(convert PCM integers with x / 32768)")
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            raise ValueError("windows contain NaN or inf samples; clean the audio first")
        return arr

    def predict_logits(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """Raw logits float32 ``[n, n_labels]`` for windows float32 ``[n, window_samples]``."""
        arr = self._check_windows(windows)
        out = np.empty((arr.shape[0], len(self.labels)), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            for i in range(0, arr.shape[0], batch_size):
                x = torch.from_numpy(np.ascontiguousarray(arr[i:i + batch_size])).to(self.device)
                out[i:i + batch_size] = self.model(x).float().cpu().numpy()
        return out

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """Class probabilities for a batch of windows.

        Args:
            windows: float32 ``[n, window_samples]`` mono audio at :attr:`sample_rate`.
            batch_size: windows per forward pass.

        Returns:
            float32 ``[n, n_labels]``, rows sum to 1, columns in :attr:`labels` order.

        Raises:
            ValueError: wrong shape/length, non-float dtype or non-finite samples.
        """
        logits = torch.from_numpy(self.predict_logits(windows, batch_size=batch_size))
        return torch.softmax(logits / self.temperature, dim=1).numpy().astype(np.float32)

    def predict_proba_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                             batch_size: int = 64) -> np.ndarray:
        """Class probabilities of the windows ``signal[s:s + window_samples]``.

        Equal to :meth:`predict_proba` of those windows stacked; for log-mel models
        whose frame hop divides every start, overlapping windows share their
        spectrogram frames, which halves the front-end work at a 50 % hop.

        Args:
            signal: float mono audio ``[T]`` at :attr:`sample_rate`; every window must
                fit (``s + window_samples <= T``).
            starts: window start samples ``[N]`` (integers, ascending).
            batch_size: windows per forward pass.

        Returns:
            float32 ``[N, n_labels]``, rows sum to 1.

        Raises:
            ValueError: a window outside ``signal``, or non-finite samples.
        """
        starts = np.asarray(starts, dtype=np.int64)
        win = self.window_samples
        if len(starts) and (starts.min() < 0 or starts.max() + win > len(signal)):
            raise ValueError(f"window starts must lie in [0, {len(signal) - win}] for a signal of "
                             f"{len(signal)} samples and {win}-sample windows")
        model = self.model
        frontend = getattr(model, "frontend", None)
        shared = (isinstance(model, LogMelClassifier) and len(starts) > 1
                  and frontend.can_share_frames(window_n=win, hop_n=int(np.gcd.reduce(np.diff(starts)))))
        if not shared:
            view = np.lib.stride_tricks.sliding_window_view(np.asarray(signal), win)
            return self.predict_proba(np.ascontiguousarray(view[starts]), batch_size=batch_size)
        out = np.empty((len(starts), len(self.labels)), dtype=np.float32)
        model.eval()
        with torch.inference_mode(), self._autocast():
            for i in range(0, len(starts), batch_size):
                st = starts[i:i + batch_size]
                seg = np.asarray(signal[st[0]:st[-1] + win], dtype=np.float32)
                if not np.isfinite(seg).all():
                    raise ValueError("windows contain NaN or inf samples; clean the audio first")
                x = torch.from_numpy(seg).to(self.device)
                logits = model.forward_windows(x, torch.from_numpy(st - st[0]), window_n=win)
                out[i:i + len(st)] = torch.softmax(logits.float() / self.temperature, dim=1).cpu().numpy()
        return out


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every batch norm that directly follows a convolution in an ``nn.Sequential``
    into that convolution (inference only; the module is changed in place).

    In eval mode a batch norm is a fixed per-channel affine map, so ``bn(conv(x))``
    equals one convolution with scaled weights and a bias (to float rounding, about
    1e-6); it saves the batch-norm pass, about a sixth of the small CNN's time.

    Returns:
        ``model``, in eval mode.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    convs, norms = (nn.Conv1d, nn.Conv2d), (nn.BatchNorm1d, nn.BatchNorm2d)
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, convs) and isinstance(bn, norms) and bn.track_running_stats:
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
    return model


def quantize_linears(model: nn.Module) -> nn.Module:
    """Give every ``nn.Linear`` int8 weights, activations quantised per batch (CPU only;
    ``torch.ao.quantization.quantize_dynamic``, in place).

    Returns:
        ``model`` with its linear layers swapped.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8,
                                                      inplace=True)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Make a network faster for inference without changing what it computes.

    :func:`fuse_conv_bn`, then 4-D weights in channels-last memory format, which lets
    oneDNN run the 2-D convolutions in its NHWC kernels: about 2x faster for the small
    CNN on one CPU thread (outputs equal to about 1e-7). The module is changed in place.

    Returns:
        ``model``, in eval mode.
    """
    return fuse_conv_bn(model).to(memory_format=torch.channels_last)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic.atomic_write(path, lambda f: torch.save(obj, f))


def save_bundle(
    path: str | os.PathLike[str], model: nn.Module, *, labels: Sequence[str], sample_rate: int,
    window_s: float, features: Mapping[str, Any], arch: str, arch_params: Mapping[str, Any],
    train_params: Mapping[str, Any], split: Mapping[str, Sequence[str]],
    metrics: Mapping[str, Any], pitch_norm_hz: float = 0.0,
) -> Path:
    """Write a model bundle: ``model.pt`` (state dict) then ``model.json``, both atomically.

    Args:
        path: bundle folder (created), e.g. ``paths.models_dir() / "demo_cnn"``.
        model: the trained network (any device).
        labels: class names in output order.
        sample_rate: input sampling rate in Hz.
        window_s: input window length in seconds.
        features: feature config (see :func:`features_config`).
        arch: registered architecture name.
        arch_params: keywords given to :func:`build_model`.
        train_params: training settings and outcomes worth keeping.
        split: speakers per partition, e.g. ``{"train": [...], "val": [...], "test": [...]}``.
        metrics: metrics so far, e.g. ``{"val": {"uar": 0.61}}``.
        pitch_norm_hz: register (Hz) each speaker was pitch-normalised to in training
            (:mod:`ser.signal.pitchnorm`); written as ``model.json["pitch_norm_hz"]`` when > 0, so
            evaluation and inference normalise the same way. 0: off.

    Returns:
        Path of ``model.json``.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_torch_save(state, out / "model.pt")
    meta = {
        "format": BUNDLE_FORMAT,
        "name": out.name,
        "labels": list(labels),
        "sample_rate": int(sample_rate),
        "window_s": float(window_s),
        "window_samples": window_samples(window_s, sample_rate),
        "features": dict(features),
        "arch": arch,
        "arch_params": dict(arch_params),
        "train_params": dict(train_params),
        "split": {k: list(v) for k, v in split.items()},
        "metrics": dict(metrics),
        **({"pitch_norm_hz": float(pitch_norm_hz)} if pitch_norm_hz else {}),
        "git_commit": provenance.git_commit(),
        "torch_version": torch.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return atomic.atomic_write_json(out / "model.json", meta)


def read_bundle_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``<path>/model.json`` without loading weights.

    Raises:
        FileNotFoundError: the folder has no ``model.json``.
        ValueError: the file is not valid JSON or lacks a required key.
    """
    folder = Path(path)
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no model bundle at {folder}: {meta_path.name} is missing; "
                                "train one with notebooks/02_train.ipynb (stage 02_train) "
                                "or check model_name")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}); retrain or restore the bundle") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path} must hold a JSON object; got {type(meta).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{meta_path} lacks required keys {missing}; retrain the model")
    return meta


def bundle_arch_params(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta["arch_params"]`` completed with the defaults of the bundle's format.

    A bundle written before an architecture's default changed is rebuilt as it was
    trained (see :data:`LEGACY_ARCH_DEFAULTS`).
    """
    params = dict(meta["arch_params"])
    for fmt, per_arch in LEGACY_ARCH_DEFAULTS.items():
        if int(meta.get("format", 1)) <= fmt:
            for key, value in per_arch.get(str(meta["arch"]), {}).items():
                params.setdefault(key, value)
    return params


#: ``model.json`` keys that decide what a bundle computes (timestamps and metrics excluded).
_FINGERPRINT_KEYS = ("labels", "sample_rate", "window_s", "features", "arch", "arch_params",
                     "calibration", "format")
#: Fingerprinted only when present, so bundles written before the key existed keep their fingerprint.
_FINGERPRINT_OPTIONAL_KEYS = ("pitch_norm_hz",)


def bundle_fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 of what a bundle computes: its weights file and the ``model.json`` keys that
    shape its outputs (labels, window, features, architecture, calibration).

    Retraining with other data or options, or recalibrating, changes it; re-saving the same
    weights (a deterministic retrain) does not. Outputs computed by one bundle can thus be
    told from those of another bundle of the same name.

    Raises:
        FileNotFoundError: no ``model.json``, or no ``model.pt`` / ``model.joblib``.
    """
    import hashlib

    folder = Path(path)
    meta = read_bundle_meta(folder)
    weights = next((folder / n for n in ("model.pt", "model.joblib") if (folder / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"model bundle {folder} has no model.pt or model.joblib")
    keyed = {k: meta.get(k) for k in _FINGERPRINT_KEYS}
    keyed.update({k: meta[k] for k in _FINGERPRINT_OPTIONAL_KEYS if meta.get(k)})
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode())
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_classical_bundle(folder: Path) -> bool:
    try:
        arch = json.loads((folder / "model.json").read_text(encoding="utf-8")).get("arch", "")
    except (OSError, ValueError, AttributeError):
        return False  # read_bundle_meta gives the precise error
    return isinstance(arch, str) and arch.startswith("classical:")


def load_bundle(path: str | os.PathLike[str], *, device: str = "cpu",
                precision: str = "fp32") -> Bundle:
    """Load a model bundle for inference.

    A classical bundle (``arch`` ``classical:…``, weights in ``model.joblib``) is handed
    to :func:`ser.models.classical.model.load_classical_bundle`, which returns an object with the
    same ``labels / sample_rate / window_s / window_samples / predict_proba`` interface.

    Args:
        path: bundle folder holding ``model.json`` and ``model.pt``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (cuda when available) or any torch device.
        precision: arithmetic of the network (the log-mel front end always runs in
            float32): ``"fp32"`` (default, the reference); ``"bf16"``: bfloat16 autocast
            (fast on GPUs and on CPUs with AVX512-BF16/AMX); ``"int8"`` (CPU only): int8
            dynamic quantisation of every linear layer, and for transformer models
            (``arch`` ``"hf"``) the convolutions in bf16 where the CPU has bf16 kernels
            (:func:`ser.models.transformer.quantize_for_cpu`). Both reduced precisions move class
            probabilities by about 1e-3 against fp32; classical bundles ignore it.

    Returns:
        The :class:`Bundle`, model in eval mode.

    Raises:
        FileNotFoundError: ``model.json`` or ``model.pt`` is missing.
        ValueError: malformed ``model.json``, weights that do not fit the architecture,
            an unknown precision, or ``"int8"`` on a GPU.
    """
    folder = Path(path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if _is_classical_bundle(folder):
        from ser.models.classical.model import load_classical_bundle  # sklearn/opensmile only when needed

        return load_classical_bundle(folder)  # type: ignore[return-value]
    meta = read_bundle_meta(folder)
    weights = folder / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"model bundle {folder} has model.json but no model.pt; retrain it")
    dev = resolve_device(device)
    model = build_model(meta["arch"], n_labels=len(meta["labels"]), sample_rate=meta["sample_rate"],
                        features=meta["features"], **bundle_arch_params(meta))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{weights} does not fit arch {meta['arch']!r} with arch_params "
                         f"{bundle_arch_params(meta)}: {err}") from err
    model = prepare_for_inference(model).to(dev)
    if precision == "int8":
        if dev.type != "cpu":
            raise ValueError(f"precision 'int8' runs on the CPU only; on {dev} use 'bf16'")
        if meta["arch"] == "hf":
            from ser.models import transformer

            model = transformer.quantize_for_cpu(model, inplace=True)
        else:
            model = quantize_linears(model)
    return Bundle(path=folder, meta=meta, model=model, device=dev, precision=precision)


def update_bundle_metrics(path: str | os.PathLike[str], *, split: str,
                          metrics: Mapping[str, Any]) -> Path:
    """Store ``metrics`` under ``model.json["metrics"][split]`` (atomic rewrite).

    Args:
        path: bundle folder.
        split: partition the metrics were computed on, e.g. ``"test"``.
        metrics: JSON-serialisable values.

    Returns:
        Path of ``model.json``.
    """
    folder = Path(path)
    meta = read_bundle_meta(folder)
    meta.setdefault("metrics", {})[split] = dict(metrics)
    return atomic.atomic_write_json(folder / "model.json", meta)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; anything else -> ``torch.device(device)``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='auto' or 'cpu'")
    return dev
