"""Frozen self-supervised embeddings + a small head (wav2vec2 / HuBERT / WavLM, SUPERB style).

:class:`FrozenSSLClassifier` maps raw waveform windows float32 ``[B, T]`` at 16 kHz to
logits ``[B, n_labels]``:

1. per-window input normalisation (:func:`ser.models.transformer.normalize_waveform`);
2. the backbone, **frozen**: no parameter of it trains, it always runs in eval mode (no
   dropout, LayerDrop or time masking), so its output for a window is a fixed function
   of the audio;
3. per layer (the embeddings output and every transformer layer) the mean and the
   standard deviation over time of the hidden states: the *layer statistics*
   ``[B, n_layers + 1, 2 * hidden_size]`` (:meth:`FrozenSSLClassifier.layer_stats`);
4. a learned softmax-weighted sum of the layers' statistics (weights start uniform);
5. a small head: dropout + linear + ReLU + dropout + linear (``head_hidden``), or
   dropout + linear (``head_hidden`` 0).

Only the layer weights and the head train. Because the weighted sum comes *after* the
time pooling, a window's layer statistics are all the head ever needs: training computes
them once per utterance (:mod:`ser.train.embedding_cache`) and every epoch then runs the
head alone. :meth:`FrozenSSLClassifier.forward` therefore takes either waveforms ``[B, T]``
or layer statistics ``[B, n_layers + 1, 2 * hidden_size]``. (The mean of the weighted sum
equals the weighted sum of the layer means; the standard deviation is each layer's own,
then weighted: the pooling a cache can hold exactly, at 2 x hidden floats per layer
instead of every frame.)

``cache_windows`` (an ``arch_params`` option, stored in the bundle as the record of how
its head was trained) is the number of fixed windows per training utterance whose
statistics are cached: 1 (default) the centre window, k > 1 windows at k evenly spaced
positions from the start to the end of the utterance, one of them drawn per epoch (a
fixed set of crops instead of random ones); validation always uses the centre window.
0 turns the cache off: every epoch runs the backbone on fresh random crops with the
usual waveform augmentation (slow; for comparison, ``benchmarks/RESULTS.md``).

The backbone comes from ``source`` (hub id or ``save_pretrained`` folder; never
downloaded unless ``local_files_only=False``) or ``config`` (random initialisation);
a bundle stores the backbone config (:meth:`FrozenSSLClassifier.arch_params`) and its
weights, so it loads without the source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ser.models.transformer import (
    SAMPLE_RATE,
    checked_backbone_params,
    config_dict,
    load_backbone,
    normalize_waveform,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig

#: Options of :func:`build_ssl_frozen` stored in a bundle besides ``config``.
OPTION_KEYS: tuple[str, ...] = ("head_hidden", "dropout", "normalize", "cache_windows")


class FrozenSSLClassifier(nn.Module):
    """Frozen wav2vec2 / HuBERT / WavLM + learned layer weights + mean/std pooling + head.

    Args:
        backbone: a ``transformers`` wav2vec2 / HuBERT / WavLM model (frozen here).
        n_labels: number of classes.
        head_hidden: width of the head's hidden layer (0: dropout + linear).
        dropout: dropout before each head layer.
        normalize: standardise each input window.
        cache_windows: windows per training utterance whose statistics are cached (0: no cache).
        source: where the pretrained weights came from (informational).
    """

    def __init__(self, backbone: nn.Module, *, n_labels: int, head_hidden: int = 128,
                 dropout: float = 0.1, normalize: bool = True, cache_windows: int = 1,
                 source: str | None = None) -> None:
        super().__init__()
        if int(n_labels) < 2:
            raise ValueError(f"ssl_frozen classifier: need n_labels >= 2; got {n_labels}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"ssl_frozen classifier: dropout must be in [0, 1); got {dropout}")
        if int(head_hidden) < 0:
            raise ValueError(f"ssl_frozen classifier: head_hidden must be >= 0; got {head_hidden}")
        if int(cache_windows) < 0:
            raise ValueError(f"ssl_frozen classifier: cache_windows must be >= 0 (0: no cache); "
                             f"got {cache_windows}")
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.n_labels = int(n_labels)
        self.head_hidden = int(head_hidden)
        self.dropout_p = float(dropout)
        self.normalize = bool(normalize)
        self.cache_windows = int(cache_windows)
        self.source = None if source is None else str(source)
        cfg = backbone.config
        self.n_states = int(cfg.num_hidden_layers) + 1
        self.stats_dim = 2 * int(cfg.hidden_size)
        self.layer_weights = nn.Parameter(torch.zeros(self.n_states))  # uniform softmax
        if self.head_hidden:
            self.head = nn.Sequential(nn.Dropout(self.dropout_p), nn.Linear(self.stats_dim, self.head_hidden),
                                      nn.ReLU(), nn.Dropout(self.dropout_p),
                                      nn.Linear(self.head_hidden, self.n_labels))
        else:
            self.head = nn.Sequential(nn.Dropout(self.dropout_p), nn.Linear(self.stats_dim, self.n_labels))

    @property
    def config(self) -> PretrainedConfig:
        """The backbone's transformers config."""
        return self.backbone.config

    def train(self, mode: bool = True) -> FrozenSSLClassifier:
        """Set the head's mode; the frozen backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def layer_weight_probs(self) -> Tensor:
        """Softmax of the learned layer weights ``[n_layers + 1]`` (sums to 1)."""
        return torch.softmax(self.layer_weights.float(), dim=0)

    def layer_stats(self, wave: Tensor) -> Tensor:
        """Per-layer mean and standard deviation over time, float32 ``[B, n_layers + 1, 2 * hidden]``.

        Args:
            wave: waveforms ``[B, T]`` at 16 kHz.
        """
        if wave.ndim != 2:
            raise ValueError(f"ssl_frozen classifier: expected waveforms [B, T]; got shape {tuple(wave.shape)}")
        x = normalize_waveform(wave) if self.normalize else wave.float()
        with torch.no_grad():
            states = torch.stack(tuple(self.backbone(x, output_hidden_states=True).hidden_states), dim=1)
            states = states.float()  # [B, L+1, F, H]
            return torch.cat([states.mean(dim=2), states.std(dim=2, unbiased=False)], dim=-1)

    def head_logits(self, stats: Tensor) -> Tensor:
        """Logits ``[B, n_labels]`` from layer statistics ``[B, n_layers + 1, 2 * hidden]``."""
        if stats.ndim != 3 or tuple(stats.shape[1:]) != (self.n_states, self.stats_dim):
            raise ValueError(f"ssl_frozen classifier: layer statistics must be [B, {self.n_states}, "
                             f"{self.stats_dim}]; got shape {tuple(stats.shape)}")
        w = torch.softmax(self.layer_weights.float(), dim=0).to(stats.dtype)
        return self.head((stats * w[None, :, None]).sum(dim=1))

    def forward(self, x: Tensor, *, spec_transform: Any = None) -> Tensor:
        """Logits ``[B, n_labels]`` for waveforms ``[B, T]`` or cached layer statistics ``[B, L+1, 2H]``.

        ``spec_transform`` is accepted for the :mod:`ser.models.registry` interface and ignored.
        """
        del spec_transform
        return self.head_logits(x if x.ndim == 3 else self.layer_stats(x))

    def arch_params(self) -> dict[str, Any]:
        """JSON-serialisable ``arch_params`` that rebuild this model (random weights; the bundle's
        state dict holds the backbone's and the head's weights)."""
        return {"config": config_dict(self.config), "head_hidden": self.head_hidden,
                "dropout": self.dropout_p, "normalize": self.normalize,
                "cache_windows": self.cache_windows, "pretrained_from": self.source}


def build_ssl_frozen(*, n_labels: int, source: str | os.PathLike[str] | None = None,
                     config: Mapping[str, Any] | PretrainedConfig | None = None,
                     local_files_only: bool = True, config_overrides: Mapping[str, Any] | None = None,
                     head_hidden: int = 128, dropout: float = 0.1, normalize: bool = True,
                     cache_windows: int = 1) -> FrozenSSLClassifier:
    """Build a :class:`FrozenSSLClassifier` from pretrained weights or a config.

    Args:
        n_labels: number of classes.
        source: hub id (e.g. ``"microsoft/wavlm-base-plus"``) or ``save_pretrained`` folder.
        config: backbone config (or its dict with ``model_type``): random initialisation.
        local_files_only: never download (default); ``False`` lets ``source`` download.
        config_overrides: backbone config fields to change.
        head_hidden: head hidden width (0: dropout + linear).
        dropout: head dropout.
        normalize: per-window input standardisation.
        cache_windows: windows per training utterance whose statistics are cached (0: off).

    Raises:
        ValueError: neither or both of ``source`` / ``config``; a bad option.
        FileNotFoundError: ``source`` is not a folder and not available offline.
    """
    backbone = load_backbone(source=source, config=config, local_files_only=local_files_only,
                             config_overrides=config_overrides, where="ssl_frozen")
    return FrozenSSLClassifier(backbone, n_labels=n_labels, head_hidden=head_hidden, dropout=dropout,
                               normalize=normalize, cache_windows=cache_windows,
                               source=None if source is None else str(source))


def ssl_frozen_from_arch_params(params: Mapping[str, Any], *, n_labels: int,
                                sample_rate: int = SAMPLE_RATE) -> FrozenSSLClassifier:
    """Build from stage-02 ``arch_params`` (``source`` or ``config`` plus options) or a bundle's.

    Raises:
        ValueError: a sample rate other than 16000, unknown keys, or neither ``config`` nor ``source``.
    """
    return build_ssl_frozen(n_labels=n_labels, **checked_backbone_params(
        params, family="ssl_frozen", sample_rate=sample_rate, option_keys=OPTION_KEYS))
