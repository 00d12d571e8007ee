"""Image backbones on log-mel spectrograms: ResNet, EfficientNet, ConvNeXt from ``transformers``.

The original study allowed torchvision / timm ResNet or EfficientNet on spectrograms.
Those packages cannot be installed here (their wheels are CUDA builds that do not load
with the project's CPU torch), so the same networks come from ``transformers``' native
vision models (``ResNetModel``, ``EfficientNetModel``, ``ConvNextModel``), which need no
torchvision and load ImageNet checkpoints from the hub (e.g. ``microsoft/resnet-50``,
``google/efficientnet-b0``, ``facebook/convnext-tiny-224``) or a ``save_pretrained`` folder.

:class:`ImageBackboneBody` is a spectrogram body of :class:`ser.models.nets.LogMelClassifier`
(registry arch ``hf_image``): it takes the normalised log-mel ``[B, n_mels, frames]`` (zero
mean, unit variance per window, :func:`ser.signal.spectrogram.normalize_window`), treats it as a
one-channel image, runs the backbone, takes its pooled output (global average pooling)
and maps it through dropout + linear to logits. So the log-mel front end, SpecAugment in
training, frames shared by overlapping windows in inference and the bundle format are
those of the CNN family.

Channels: a backbone with ``num_channels == 1`` (random initialisation, the default of
:func:`tiny_image_config` and of a ``backbone`` name without config) takes the spectrogram
as is. A backbone with 3 input channels (every ImageNet checkpoint) gets the one channel
repeated three times, so its pretrained first convolution is used unchanged (rather than
averaging its filters into a new one-channel layer); the per-window standardisation
puts the spectrogram on the scale of ImageNet-normalised pixels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ser.models.transformer import config_dict

if TYPE_CHECKING:
    from transformers import PretrainedConfig

#: Image backbone families (``config.model_type``).
IMAGE_MODEL_TYPES: tuple[str, ...] = ("resnet", "efficientnet", "convnext")


def _check_image_type(model_type: str, *, where: str) -> str:
    if model_type not in IMAGE_MODEL_TYPES:
        raise ValueError(f"{where}: image backbone type {model_type!r} is not supported; "
                         f"use one of {IMAGE_MODEL_TYPES}")
    return model_type


def tiny_image_config(model_type: str, *, num_channels: int = 1) -> PretrainedConfig:
    """A tiny randomly-initialisable image backbone config (tests, demos; a few thousand weights).

    Args:
        model_type: ``"resnet"``, ``"efficientnet"`` or ``"convnext"``.
        num_channels: input channels (1: the spectrogram as is; 3: repeated, as for ImageNet weights).
    """
    from transformers import CONFIG_MAPPING

    _check_image_type(model_type, where="tiny_image_config")
    kw: dict[str, Any] = {
        "resnet": dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
        "convnext": dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "efficientnet": dict(width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128,
                             kernel_sizes=[3, 3], in_channels=[32, 16], out_channels=[16, 24],
                             depthwise_padding=[], strides=[1, 2], num_block_repeats=[1, 1],
                             expand_ratios=[1, 6]),
    }[model_type]
    return CONFIG_MAPPING[model_type](num_channels=int(num_channels), **kw)


def _backbone_config(backbone: str | None, config: Mapping[str, Any] | PretrainedConfig | None) -> PretrainedConfig:
    """The config for random initialisation: ``config`` (with ``model_type``), or the defaults
    of ``backbone`` with one input channel, updated by ``config``."""
    from transformers import CONFIG_MAPPING, PretrainedConfig

    d = config.to_dict() if isinstance(config, PretrainedConfig) else dict(config or {})
    model_type = str(d.get("model_type") or backbone or "")
    if not model_type:
        raise ValueError("hf_image arch_params: name the backbone type (backbone: resnet, efficientnet "
                         "or convnext) or give a config with model_type")
    if backbone and model_type != backbone:
        raise ValueError(f"hf_image arch_params: backbone {backbone!r} but config model_type {model_type!r}")
    _check_image_type(model_type, where="hf_image arch_params")
    d.setdefault("num_channels", 1)
    d["model_type"] = model_type
    return CONFIG_MAPPING[model_type].from_dict(d)


def _load_pretrained_image(source: str | os.PathLike[str], *, local_files_only: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    src = str(source)
    folder = Path(src).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"hf_image source folder {src!r} has no config.json; pass a folder "
                                "written by save_pretrained or `hf download`")
    if not folder.is_dir() and (isinstance(source, os.PathLike) or src.startswith((".", "/", "~"))):
        raise FileNotFoundError(f"hf_image source {src!r}: no such folder")
    try:
        cfg = AutoConfig.from_pretrained(str(folder) if folder.is_dir() else src,
                                         local_files_only=local_files_only)
        _check_image_type(getattr(cfg, "model_type", ""), where=f"hf_image source {src!r}")
        return AutoModel.from_pretrained(str(folder) if folder.is_dir() else src, config=cfg,
                                         local_files_only=local_files_only, dtype=torch.float32)
    except OSError as err:
        raise FileNotFoundError(
            f"hf_image source {src!r} is neither a local folder nor available offline ({err}). "
            f"On a connected machine run `hf download {src}` and copy the Hugging Face cache here, "
            f"pass the downloaded folder, or allow downloading with local_files_only: false.") from err


class ImageBackboneBody(nn.Module):
    """Spectrogram body: ``[B, n_mels, frames]`` -> image backbone -> pooled -> dropout + linear.

    Args:
        backbone: a ``transformers`` ResNet / EfficientNet / ConvNeXt model.
        n_labels: number of classes.
        dropout: dropout before the linear head.
        source: where pretrained weights came from (informational).
    """

    def __init__(self, backbone: nn.Module, *, n_labels: int, dropout: float = 0.2,
                 source: str | None = None) -> None:
        super().__init__()
        if int(n_labels) < 2:
            raise ValueError(f"hf_image: need n_labels >= 2; got {n_labels}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"hf_image: dropout must be in [0, 1); got {dropout}")
        _check_image_type(backbone.config.model_type, where="hf_image backbone")
        self.backbone = backbone
        self.in_channels = int(backbone.config.num_channels)
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():  # the pooled width differs per family: measure it once
            dim = self._pooled(torch.zeros(1, 64, 64)).shape[1]
        backbone.train(was_training)
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(int(dim), int(n_labels)))
        #: every option, for :meth:`ser.models.nets.LogMelClassifier.arch_params`
        self.config: dict[str, Any] = {"config": config_dict(backbone.config), "dropout": float(dropout),
                                       "pretrained_from": None if source is None else str(source)}

    def _pooled(self, spec: Tensor) -> Tensor:
        x = spec.unsqueeze(1)
        if self.in_channels != 1:
            x = x.expand(-1, self.in_channels, -1, -1)
        return self.backbone(pixel_values=x).pooler_output.flatten(1)

    def forward(self, spec: Tensor) -> Tensor:
        """Logits ``[B, n_labels]`` for normalised log-mel spectrograms ``[B, n_mels, frames]``."""
        if spec.ndim != 3:
            raise ValueError(f"hf_image: expected spectrograms [B, n_mels, frames]; got {tuple(spec.shape)}")
        return self.head(self._pooled(spec))


def image_body(*, n_labels: int, source: str | os.PathLike[str] | None = None,
               backbone: str | None = None, config: Mapping[str, Any] | PretrainedConfig | None = None,
               local_files_only: bool = True, dropout: float = 0.2,
               pretrained_from: str | None = None) -> ImageBackboneBody:
    """An :class:`ImageBackboneBody` from pretrained weights (``source``) or a config.

    Args:
        n_labels: number of classes.
        source: hub id (e.g. ``"microsoft/resnet-50"``) or ``save_pretrained`` folder of an
            image model; its input channels are kept (3 for ImageNet: the spectrogram is repeated).
        backbone: ``"resnet"``, ``"efficientnet"`` or ``"convnext"``: random initialisation with
            that family's default config, one input channel (``config`` overrides fields).
        config: a backbone config dict (with ``model_type``), e.g. a bundle's stored one.
        local_files_only: never download (default).
        dropout: head dropout.
        pretrained_from: informational (written by a bundle; ignored).

    Raises:
        ValueError: ``source`` together with ``backbone``/``config``, or neither; an unsupported type.
        FileNotFoundError: ``source`` not found locally or in the offline cache.
    """
    del pretrained_from
    if source is not None and (backbone is not None or config is not None):
        raise ValueError("hf_image arch_params: give source (pretrained weights) or backbone/config "
                         "(random initialisation), not both")
    if source is not None:
        net = _load_pretrained_image(source, local_files_only=local_files_only)
    else:
        from transformers import AutoModel

        net = AutoModel.from_config(_backbone_config(backbone, config))
    return ImageBackboneBody(net, n_labels=n_labels, dropout=dropout,
                             source=None if source is None else str(source))
