"""Architectures by name: :data:`ARCHITECTURES`, :func:`build_model`, and the device rule.

Every architecture maps raw waveform windows ``[B, T]`` (float32, at the bundle's sample
rate) to logits ``[B, n_labels]``; it is chosen in the stage-02 params as ``arch`` and
``arch_params``:

- ``small_cnn``: :class:`ser.models.nets.SmallCNN` (the fast default);
- ``resnet``: :class:`ser.models.nets.ResNetCNN`;
- ``crnn``: :class:`ser.models.nets.CRNN`;
- ``hf``: wav2vec2 / HuBERT / WavLM (:mod:`ser.models.transformer`), fine-tuned on the raw
  waveform; the bundle stores the backbone config, so it loads without hub access;
- ``hf_image``: an image backbone (ResNet, EfficientNet or ConvNeXt from ``transformers``,
  :mod:`ser.models.image`) on the log-mel spectrogram, random or ImageNet weights (``source``);
- ``ssl_frozen``: frozen wav2vec2 / HuBERT / WavLM embeddings, a learned weighted sum of
  their layers' mean+std statistics and a small head (:mod:`ser.models.ssl_frozen`); only
  the head and the layer weights train, on statistics cached once per utterance.

Families outside this dict that :func:`ser.models.bundle.load_bundle` also reads:
classical (``arch`` ``classical:<estimator>``, :mod:`ser.models.classical`; ensembles of
them) and dimensional (``family: dimensional``, :mod:`ser.models.dimensional`).

A new family adds a builder ``f(*, n_labels, sample_rate, features, **arch_params)`` to
:data:`ARCHITECTURES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ser.models import transformer
from ser.models.image import image_body
from ser.models.nets import CRNN, LogMelClassifier, ResNetCNN, SmallCNN
from ser.models.ssl_frozen import ssl_frozen_from_arch_params
from ser.models.window import features_config
from ser.signal.spectrogram import LogMel

ArchBuilder = Callable[..., nn.Module]


def _log_mel_builder(body_cls: type[nn.Module]) -> ArchBuilder:
    def build(*, n_labels: int, sample_rate: int, features: Mapping[str, Any],
              **arch_params: Any) -> nn.Module:
        cfg = {k: v for k, v in features.items() if k not in ("kind", "normalization")}
        return LogMelClassifier(LogMel(sample_rate=sample_rate, **cfg),
                                body_cls(n_labels=n_labels, **arch_params))
    build.__doc__ = f"Log-mel front end + :class:`{body_cls.__name__}`."
    return build


def _build_hf(*, n_labels: int, sample_rate: int, features: Mapping[str, Any],
              **arch_params: Any) -> nn.Module:
    """Hugging Face wav2vec2 / HuBERT / WavLM classifier (:mod:`ser.models.transformer`; waveform input).

    ``arch_params`` are those of :func:`ser.models.transformer.hf_from_arch_params`: ``config`` (a stored
    backbone config: random init, then the bundle's weights) or ``source`` (hub id or
    folder of pretrained weights, for training). The log-mel ``features`` are not used.
    """
    del features
    return transformer.hf_from_arch_params(arch_params, n_labels=n_labels, sample_rate=sample_rate)


def _build_hf_image(*, n_labels: int, sample_rate: int, features: Mapping[str, Any],
                    **arch_params: Any) -> nn.Module:
    """Log-mel front end + an image backbone (:func:`ser.models.image.image_body`: ``source``, or
    ``backbone`` and/or ``config``; ``dropout``)."""
    cfg = {k: v for k, v in features.items() if k not in ("kind", "normalization")}
    return LogMelClassifier(LogMel(sample_rate=sample_rate, **cfg),
                            image_body(n_labels=n_labels, **arch_params))


def _build_ssl_frozen(*, n_labels: int, sample_rate: int, features: Mapping[str, Any],
                      **arch_params: Any) -> nn.Module:
    """Frozen SSL embeddings + head (:func:`ser.models.ssl_frozen.ssl_frozen_from_arch_params`;
    waveform input). The log-mel ``features`` are not used."""
    del features
    return ssl_frozen_from_arch_params(arch_params, n_labels=n_labels, sample_rate=sample_rate)


#: Architectures whose network is a wav2vec2-style transformer: they need every CPU core,
#: run best in small batches, and take int8 linears with bf16 convolutions
#: (:func:`ser.models.quantize.quantize_for_cpu`).
TRANSFORMER_ARCHS: tuple[str, ...] = ("hf", "ssl_frozen")

#: The architectures: name -> builder ``f(*, n_labels, sample_rate, features, **arch_params)``.
#: A builder returns a module mapping waveforms ``[B, T]`` to logits and accepting the
#: keyword ``spec_transform`` in ``forward`` (it may ignore it); its ``arch_params()``
#: method gives every option, resolved, for the bundle (:func:`resolved_arch_params`).
ARCHITECTURES: dict[str, ArchBuilder] = {
    "small_cnn": _log_mel_builder(SmallCNN),
    "resnet": _log_mel_builder(ResNetCNN),
    "crnn": _log_mel_builder(CRNN),
    "hf": _build_hf,
    "hf_image": _build_hf_image,
    "ssl_frozen": _build_ssl_frozen,
}


def build_model(arch: str, *, n_labels: int, sample_rate: int,
                features: Mapping[str, Any] | None = None, **arch_params: Any) -> nn.Module:
    """Build an architecture of :data:`ARCHITECTURES`.

    Args:
        arch: name in :data:`ARCHITECTURES`: ``"small_cnn"`` (:class:`ser.models.nets.SmallCNN`),
            ``"resnet"`` (:class:`ser.models.nets.ResNetCNN`), ``"crnn"`` (:class:`ser.models.nets.CRNN`), ``"hf"``
            (:mod:`ser.models.transformer`), ``"hf_image"`` (:mod:`ser.models.image`) or
            ``"ssl_frozen"`` (:mod:`ser.models.ssl_frozen`).
        n_labels: number of classes.
        sample_rate: input sampling rate in Hz.
        features: feature config (see :func:`ser.models.window.features_config`; ``None``: defaults).
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
    """The ``arch_params`` to store for ``model``: its own ``arch_params()`` when it has one
    (every architecture here: :class:`ser.models.nets.LogMelClassifier`,
    :class:`ser.models.transformer.HFAudioClassifier`,
    :class:`ser.models.ssl_frozen.FrozenSSLClassifier`), else ``given``.

    This makes a bundle self-contained: every default is written out, and a Hugging
    Face model trained from a hub id stores its backbone config instead of the id.
    """
    target = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    own = getattr(target, "arch_params", None)
    return dict(own()) if callable(own) else dict(given)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; anything else -> ``torch.device(device)``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='auto' or 'cpu'")
    return dev
