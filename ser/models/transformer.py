"""Hugging Face audio transformers (wav2vec2, HuBERT, WavLM) as emotion classifiers.

:class:`HFAudioClassifier` maps raw waveform windows float32 ``[B, T]`` at 16 kHz
(optionally with an attention mask ``[B, T]``) to logits ``[B, n_labels]``:

1. per-window input normalisation (zero mean, unit variance over the valid samples,
   exactly what ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does), inside
   ``forward`` so training and inference cannot diverge;
2. the backbone (``transformers.AutoModel`` of a wav2vec2 / HuBERT / WavLM config);
3. layer pooling: the last hidden state, or a learned softmax-weighted sum of all
   hidden states (SUPERB style: embeddings output + every transformer layer);
4. masked mean pooling over time;
5. a small head: dropout + linear, or dropout + linear + ReLU + dropout + linear.

Where the backbone comes from: :func:`build_hf_classifier` takes either ``source``
(a hub id or a local folder, loaded with ``from_pretrained``; ``local_files_only=True``
by default, so nothing is ever downloaded unless asked for) or ``config`` (random
initialisation: tests, benchmarks, and rebuilding a saved bundle). A model bundle
stores the backbone *config* (:func:`hf_arch_params`), never a hub id, so loading a
bundle needs no hub access: :func:`hf_from_arch_params` rebuilds the network with
random weights and the bundle's state dict overwrites them.

Padding: with ``feat_extract_norm="layer"`` backbones (wav2vec2-large-lv60, WavLM,
:func:`tiny_config`) a zero-padded batch with an attention mask gives the same logits
as each item alone. ``"group"``-norm backbones (wav2vec2-base, HuBERT-base) normalise
the first conv layer over the whole input, padding included, so padded items only
approximately match; the pipeline feeds fixed-length windows, where this never arises.

:func:`estimate_flops_per_second_of_audio` counts the forward FLOPs analytically (for
model-FLOP-utilisation figures in ``benchmarks/bench_hf_throughput.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # ``transformers`` takes seconds to import: only the functions that need it do
    from transformers import PretrainedConfig

#: Backbone families this module accepts (``config.model_type``).
MODEL_TYPES: tuple[str, ...] = ("wav2vec2", "hubert", "wavlm")
#: Layer pooling choices.
LAYER_POOLINGS: tuple[str, ...] = ("last", "weighted")
#: Time pooling choices.
POOLINGS: tuple[str, ...] = ("mean",)
#: Sampling rate every supported backbone was pre-trained at (Hz).
SAMPLE_RATE: int = 16000
#: Variance floor of the input normalisation (as in ``Wav2Vec2FeatureExtractor``).
NORM_EPS: float = 1e-7

SpecTransform = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- configs


def _check_model_type(model_type: str, *, where: str) -> str:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported; "
                         f"use one of {MODEL_TYPES}")
    return model_type


def tiny_config(model_type: str) -> PretrainedConfig:
    """A tiny randomly-initialisable backbone config for tests and demos.

    Hidden size 32, 2 layers, 2 heads, feed-forward 64, a 2-layer conv feature encoder
    (kernels 10, 4; strides 5, 4: one frame per 20 samples), layer-normalised conv
    features (so padding with an attention mask is exact), no LayerDrop.

    Args:
        model_type: ``"wav2vec2"``, ``"hubert"`` or ``"wavlm"``.

    Returns:
        The config (``model_type`` set).
    """
    from transformers import CONFIG_MAPPING

    _check_model_type(model_type, where="tiny_config")
    kw: dict[str, Any] = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32), conv_kernel=(10, 4), conv_stride=(5, 4), conv_bias=True,
        feat_extract_norm="layer", do_stable_layer_norm=True,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        layerdrop=0.0, vocab_size=8, mask_time_prob=0.05, mask_time_length=2,
    )
    if model_type == "wavlm":
        kw.update(num_buckets=16, max_bucket_distance=64)
    return CONFIG_MAPPING[model_type](**kw)


def base_sized_config(model_type: str) -> PretrainedConfig:
    """A config with wav2vec2-base dimensions (random weights; for benchmarks).

    12 transformer layers, hidden 768, 12 heads, feed-forward 3072, the standard
    7-layer conv feature encoder (512 channels; kernels 10,3,3,3,3,2,2; strides
    5,2,2,2,2,2,2: 320 samples = 20 ms per frame at 16 kHz), group-normalised conv
    features, positional conv of 128 taps in 16 groups (~95 M parameters).

    Args:
        model_type: ``"wav2vec2"``, ``"hubert"`` or ``"wavlm"``.
    """
    from transformers import CONFIG_MAPPING

    _check_model_type(model_type, where="base_sized_config")
    return CONFIG_MAPPING[model_type](
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, layerdrop=0.1,
    )


def _as_config(config: Mapping[str, Any] | PretrainedConfig) -> PretrainedConfig:
    """A private copy of ``config`` (a PretrainedConfig or its ``to_dict()``)."""
    from transformers import CONFIG_MAPPING, PretrainedConfig

    if isinstance(config, PretrainedConfig):
        d = config.to_dict()
    elif isinstance(config, Mapping):
        d = dict(config)
    else:
        raise TypeError(f"hf config must be a dict or a transformers PretrainedConfig; "
                        f"got {type(config).__name__}")
    model_type = d.get("model_type")
    if not model_type:
        raise ValueError("hf config dict has no 'model_type'; add e.g. model_type='wav2vec2' "
                         f"(supported: {MODEL_TYPES})")
    _check_model_type(str(model_type), where="hf config")
    return CONFIG_MAPPING[str(model_type)].from_dict(d)


def _load_pretrained(source: str | os.PathLike[str], *, local_files_only: bool,
                     config_overrides: Mapping[str, Any]) -> nn.Module:
    """``AutoModel.from_pretrained`` in float32 with a clear error when unavailable."""
    from transformers import AutoConfig, AutoModel

    src = str(source)
    folder = Path(src).expanduser()
    if folder.is_dir():
        src = str(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"hf source folder {src!r} has no config.json; pass a folder "
                                    "written by save_pretrained or `huggingface-cli download`")
    elif isinstance(source, os.PathLike) or src.startswith((".", "/", "~")) or src.count("/") > 1:
        raise FileNotFoundError(f"hf source {src!r}: no such folder; pass a folder holding "
                                "config.json and the weights (model.safetensors), or a hub id")
    try:
        cfg = AutoConfig.from_pretrained(src, local_files_only=local_files_only, **config_overrides)
    except (OSError, ValueError) as err:  # ValueError: malformed hub id
        how = ("it is not in the local Hugging Face cache and local_files_only=True forbids "
               "downloading" if local_files_only else f"it could not be fetched ({err})")
        raise FileNotFoundError(
            f"hf source {src!r} is neither a local folder nor available offline: {how}. "
            f"On a machine with internet run `huggingface-cli download {src}` (or `hf download "
            f"{src}`), then copy its cache (~/.cache/huggingface/hub, or set HF_HOME) here or "
            f"pass the downloaded folder as source; or allow downloading with "
            f"local_files_only=False.") from err
    _check_model_type(getattr(cfg, "model_type", ""), where=f"hf source {src!r}")
    try:
        return AutoModel.from_pretrained(src, config=cfg, local_files_only=local_files_only,
                                         dtype=torch.float32)
    except OSError as err:
        raise FileNotFoundError(
            f"hf source {src!r}: found its config but not its weights ({err}). Pre-download them "
            f"with `huggingface-cli download {src}` (or `hf download {src}`) on a connected "
            f"machine, or pass a folder written by save_pretrained.") from err


# --------------------------------------------------------------------------- model


def normalize_waveform(wave: Tensor, mask: Tensor | None = None, *, eps: float = NORM_EPS) -> Tensor:
    """Zero mean, unit variance per window over the valid samples; padding set to 0.

    Same rule as ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`` (population
    variance, ``eps`` added to it), computed in float32.

    Args:
        wave: ``[B, T]`` waveforms.
        mask: ``[B, T]`` 1/True for valid samples (``None``: all valid).
        eps: variance floor.

    Returns:
        float32 ``[B, T]``.
    """
    x = wave.float()
    if mask is None:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + eps)
    m = mask.to(x.dtype)
    n = m.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (x * m).sum(dim=1, keepdim=True) / n
    var = (((x - mean) * m) ** 2).sum(dim=1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * m


class HFAudioClassifier(nn.Module):
    """Waveform emotion classifier on a wav2vec2 / HuBERT / WavLM backbone.

    Build with :func:`build_hf_classifier` (pretrained or random) or
    :func:`hf_from_arch_params` (from a bundle's ``arch_params``).

    Args:
        backbone: a ``Wav2Vec2Model`` / ``HubertModel`` / ``WavLMModel``.
        n_labels: number of classes.
        freeze_feature_encoder: freeze the convolutional feature encoder (its parameters
            get ``requires_grad=False`` and it never builds an autograd graph).
        layer_pooling: ``"last"`` (last hidden state) or ``"weighted"`` (softmax-weighted
            sum of all ``num_hidden_layers + 1`` hidden states, weights learned; LayerDrop
            is switched off because it would drop hidden states).
        pooling: time pooling over valid frames (``"mean"``).
        dropout: dropout before each head layer.
        head_hidden: width of the head's hidden layer (``None`` or 0: dropout + linear).
        normalize: standardise each input window (see :func:`normalize_waveform`).
        source: where the pretrained weights came from (informational only).
    """

    def __init__(self, backbone: nn.Module, *, n_labels: int, freeze_feature_encoder: bool = True,
                 layer_pooling: str = "weighted", pooling: str = "mean", dropout: float = 0.1,
                 head_hidden: int | None = 256, normalize: bool = True,
                 source: str | None = None) -> None:
        super().__init__()
        if int(n_labels) < 2:
            raise ValueError(f"hf classifier: need n_labels >= 2; got {n_labels}")
        if layer_pooling not in LAYER_POOLINGS:
            raise ValueError(f"hf classifier: layer_pooling must be one of {LAYER_POOLINGS}; "
                             f"got {layer_pooling!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"hf classifier: pooling must be one of {POOLINGS}; got {pooling!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"hf classifier: dropout must be in [0, 1); got {dropout}")
        if head_hidden is not None and int(head_hidden) < 0:
            raise ValueError(f"hf classifier: head_hidden must be >= 0 or None; got {head_hidden}")
        cfg = backbone.config
        _check_model_type(cfg.model_type, where="hf classifier backbone")
        if layer_pooling == "weighted":
            cfg.layerdrop = 0.0
        self.backbone = backbone
        self.n_labels = int(n_labels)
        self.freeze_feature_encoder = bool(freeze_feature_encoder)
        self.layer_pooling = layer_pooling
        self.pooling = pooling
        self.dropout_p = float(dropout)
        self.head_hidden = int(head_hidden) if head_hidden else None
        self.normalize = bool(normalize)
        self.source = None if source is None else str(source)
        if self.freeze_feature_encoder:
            backbone.feature_extractor._freeze_parameters()
        n_states = int(cfg.num_hidden_layers) + 1
        if layer_pooling == "weighted":
            # zeros -> uniform softmax, as SUPERB and transformers' use_weighted_layer_sum
            self.layer_weights = nn.Parameter(torch.zeros(n_states))
        else:
            self.register_parameter("layer_weights", None)
        hidden = int(cfg.hidden_size)
        if self.head_hidden:
            self.head = nn.Sequential(nn.Dropout(self.dropout_p), nn.Linear(hidden, self.head_hidden),
                                      nn.ReLU(), nn.Dropout(self.dropout_p),
                                      nn.Linear(self.head_hidden, self.n_labels))
        else:
            self.head = nn.Sequential(nn.Dropout(self.dropout_p), nn.Linear(hidden, self.n_labels))

    @property
    def config(self) -> PretrainedConfig:
        """The backbone's transformers config."""
        return self.backbone.config

    def layer_weight_probs(self) -> Tensor:
        """Softmax of the learned layer weights ``[num_hidden_layers + 1]`` (sums to 1)."""
        if self.layer_weights is None:
            raise ValueError("layer_weight_probs: this model uses layer_pooling='last'")
        return torch.softmax(self.layer_weights.float(), dim=0)

    def frame_mask(self, mask: Tensor, n_frames: int) -> Tensor:
        """Sample mask ``[B, T]`` -> bool frame mask ``[B, n_frames]`` (valid frames first)."""
        lengths = mask.long().sum(dim=1)
        n_valid = self.backbone._get_feat_extract_output_lengths(lengths).clamp(min=1)
        return torch.arange(n_frames, device=mask.device)[None, :] < n_valid[:, None]

    def embed(self, wave: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Pooled utterance embedding ``[B, hidden_size]`` (before the head)."""
        if wave.ndim != 2:
            raise ValueError(f"hf classifier: expected waveforms [B, T]; got shape {tuple(wave.shape)}")
        if attention_mask is not None and attention_mask.shape != wave.shape:
            raise ValueError(f"hf classifier: attention_mask shape {tuple(attention_mask.shape)} "
                             f"!= waveform shape {tuple(wave.shape)}")
        x = normalize_waveform(wave, attention_mask) if self.normalize else wave.float()
        mask = None if attention_mask is None else attention_mask.long()
        if self.layer_pooling == "weighted":
            out = self.backbone(x, attention_mask=mask, output_hidden_states=True)
            states = torch.stack(tuple(out.hidden_states), dim=0)  # [L+1, B, F, H]
            w = torch.softmax(self.layer_weights.float(), dim=0).to(states.dtype)
            h = (states * w[:, None, None, None]).sum(dim=0)
        else:
            h = self.backbone(x, attention_mask=mask).last_hidden_state  # [B, F, H]
        if mask is None:
            return h.mean(dim=1)
        fm = self.frame_mask(mask, h.shape[1]).to(h.dtype)[..., None]  # [B, F, 1]
        return (h * fm).sum(dim=1) / fm.sum(dim=1)

    def forward(self, wave: Tensor, attention_mask: Tensor | None = None, *,
                spec_transform: SpecTransform | None = None) -> Tensor:
        """Logits ``[B, n_labels]`` for waveforms ``[B, T]`` at 16 kHz.

        Args:
            wave: float waveforms ``[B, T]``.
            attention_mask: ``[B, T]`` 1 for real samples, 0 for padding (``None``: no padding).
            spec_transform: accepted for the :mod:`ser.models.registry` interface and ignored: these
                backbones apply their own time masking in training (``config.mask_time_prob``).
        """
        del spec_transform
        return self.head(self.embed(wave, attention_mask))

    def arch_params(self) -> dict[str, Any]:
        """Same as :func:`hf_arch_params` (what a model bundle stores as ``arch_params``)."""
        return hf_arch_params(self)


def build_hf_classifier(
    *,
    n_labels: int,
    source: str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | PretrainedConfig | None = None,
    freeze_feature_encoder: bool = True,
    layer_pooling: str = "weighted",
    local_files_only: bool = True,
    dropout: float = 0.1,
    pooling: str = "mean",
    head_hidden: int | None = 256,
    normalize: bool = True,
    config_overrides: Mapping[str, Any] | None = None,
) -> HFAudioClassifier:
    """Build an :class:`HFAudioClassifier` from pretrained weights or a config.

    Args:
        n_labels: number of classes.
        source: hub id (e.g. ``"facebook/wav2vec2-base"``) or local folder written by
            ``save_pretrained`` / ``huggingface-cli download``. Mutually exclusive with ``config``.
        config: backbone config (``PretrainedConfig`` or its dict with ``model_type``) for
            random initialisation.
        freeze_feature_encoder: freeze the conv feature encoder.
        layer_pooling: ``"weighted"`` (learned sum of all layers) or ``"last"``.
        local_files_only: never download (default); ``False`` lets ``source`` download.
        dropout: head dropout.
        pooling: time pooling (``"mean"``).
        head_hidden: head hidden width (``None``: dropout + linear).
        normalize: per-window input standardisation.
        config_overrides: backbone config fields to change, e.g.
            ``{"mask_time_prob": 0.0, "layerdrop": 0.0}``.

    Returns:
        The classifier in training mode, float32, on CPU.

    Raises:
        ValueError: neither or both of ``source`` / ``config``; unsupported model type or option.
        FileNotFoundError: ``source`` is not a folder and not available offline (the
            message says how to pre-download it).
    """
    backbone = load_backbone(source=source, config=config, local_files_only=local_files_only,
                             config_overrides=config_overrides, where="build_hf_classifier")
    return HFAudioClassifier(backbone, n_labels=n_labels, freeze_feature_encoder=freeze_feature_encoder,
                             layer_pooling=layer_pooling, pooling=pooling, dropout=dropout,
                             head_hidden=head_hidden, normalize=normalize,
                             source=None if source is None else str(source))


def load_backbone(*, source: str | os.PathLike[str] | None = None,
                  config: Mapping[str, Any] | PretrainedConfig | None = None,
                  local_files_only: bool = True, config_overrides: Mapping[str, Any] | None = None,
                  where: str = "load_backbone") -> nn.Module:
    """A wav2vec2 / HuBERT / WavLM backbone (``transformers.AutoModel``), float32, on CPU.

    Shared by the fine-tuned (:class:`HFAudioClassifier`) and the frozen-embedding
    (:mod:`ser.models.ssl_frozen`) families.

    Args:
        source: hub id or ``save_pretrained`` folder of pretrained weights.
        config: backbone config (or its dict with ``model_type``) for random initialisation.
        local_files_only: never download (default).
        config_overrides: config fields to change.
        where: the caller's name, for error messages.

    Raises:
        ValueError: neither or both of ``source`` / ``config``; unsupported model type.
        FileNotFoundError: ``source`` is not a folder and not available offline.
    """
    if (source is None) == (config is None):
        raise ValueError(f"{where}: pass exactly one of source= (hub id or folder, "
                         "pretrained weights) or config= (random initialisation)")
    overrides = dict(config_overrides or {})
    if source is not None:
        return _load_pretrained(source, local_files_only=local_files_only, config_overrides=overrides)
    cfg = _as_config(config)  # type: ignore[arg-type]
    for k, v in overrides.items():
        setattr(cfg, k, v)
    from transformers import AutoModel

    return AutoModel.from_config(cfg)


# --------------------------------------------------------------------------- bundle glue

#: Keys of :func:`hf_arch_params` besides ``config``.
_OPTION_KEYS = ("freeze_feature_encoder", "layer_pooling", "pooling", "dropout", "head_hidden",
                "normalize")


def config_dict(config: PretrainedConfig) -> dict[str, Any]:
    """A transformers config as a full JSON-serialisable dict (``model_type`` included, the
    ``_name_or_path`` it was read from left out), which rebuilds it without hub access."""
    cfg = json.loads(config.to_json_string(use_diff=False))
    cfg.pop("_name_or_path", None)
    return cfg


def hf_arch_params(model: HFAudioClassifier) -> dict[str, Any]:
    """JSON-serialisable ``arch_params`` that rebuild ``model`` (with random weights).

    Returns:
        ``{"config": <full backbone config dict incl. model_type>, "freeze_feature_encoder",
        "layer_pooling", "pooling", "dropout", "head_hidden", "normalize",
        "pretrained_from": <hub id / folder or None, informational>}``.
    """
    if not isinstance(model, HFAudioClassifier):
        raise TypeError(f"hf_arch_params: expected an HFAudioClassifier; got {type(model).__name__}")
    return {"config": config_dict(model.config), "freeze_feature_encoder": model.freeze_feature_encoder,
            "layer_pooling": model.layer_pooling, "pooling": model.pooling,
            "dropout": model.dropout_p, "head_hidden": model.head_hidden,
            "normalize": model.normalize, "pretrained_from": model.source}


def hf_from_arch_params(params: Mapping[str, Any], *, n_labels: int,
                        sample_rate: int = SAMPLE_RATE) -> HFAudioClassifier:
    """Rebuild a classifier from :func:`hf_arch_params` (random init; load the state dict next).

    ``params`` may instead hold ``source`` (plus options, no ``config``): then the
    pretrained weights are loaded (``local_files_only`` defaults to True), which is how a
    training run can name a hub id in its params file.

    Args:
        params: the stored ``arch_params``.
        n_labels: number of classes.
        sample_rate: the bundle's sample rate; must be 16000.

    Raises:
        ValueError: wrong sample rate, unknown keys, or neither ``config`` nor ``source``.
    """
    return build_hf_classifier(n_labels=n_labels, **checked_backbone_params(
        params, family="hf", sample_rate=sample_rate, option_keys=_OPTION_KEYS, usual="config"))


def checked_backbone_params(params: Mapping[str, Any], *, family: str, sample_rate: int,
                            option_keys: Iterable[str], usual: str = "source") -> dict[str, Any]:
    """The ``arch_params`` of a family built on a wav2vec2 / HuBERT / WavLM backbone, checked.

    Args:
        params: stage-02 or stored ``arch_params`` (``pretrained_from`` is dropped).
        family: the architecture's name, for the messages (``"hf"``, ``"ssl_frozen"``).
        sample_rate: the bundle's sample rate (Hz); must be 16000.
        option_keys: the family's own options besides the backbone's.
        usual: ``"source"`` or ``"config"``, named first in the message when both are missing.

    Raises:
        ValueError: a sample rate other than 16000, unknown keys, or neither ``config`` nor ``source``.
    """
    if int(sample_rate) != SAMPLE_RATE:
        raise ValueError(f"{family} models take {SAMPLE_RATE} Hz audio; got sample_rate={sample_rate} "
                         f"(set sample_rate: {SAMPLE_RATE} in the training params)")
    p = dict(params)
    p.pop("pretrained_from", None)
    allowed = {"config", "source", "local_files_only", "config_overrides", *option_keys}
    unknown = set(p) - allowed
    if unknown:
        raise ValueError(f"{family} arch_params: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "config" not in p and "source" not in p:
        ways = {"source": "'source' (hub id or folder of pretrained weights)",
                "config": "'config' (a stored backbone config)"}
        raise ValueError(f"{family} arch_params need {ways[usual]} or "
                         f"{ways['config' if usual == 'source' else 'source']}")
    return p


# --------------------------------------------------------------------------- FLOPs


def _conv_lengths(n_samples: int, kernels: Any, strides: Any) -> list[int]:
    out, n = [], int(n_samples)
    for k, s in zip(kernels, strides):
        n = max(0, (n - int(k)) // int(s) + 1)
        out.append(n)
    return out


def flops_breakdown(config: Mapping[str, Any] | PretrainedConfig, *, window_s: float = 3.0,
                    sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    """Forward FLOPs of one window, by part (a multiply-add counts 2 FLOPs).

    Counts convolutions, linear layers and attention matmuls; norms, activations,
    softmax, WavLM's relative-position gate and the head are ignored (< 1 %).

    Args:
        config: backbone config (or its dict).
        window_s: window length (s); attention cost grows with its square.
        sample_rate: Hz.

    Returns:
        ``{"feature_encoder", "feature_projection", "pos_conv", "transformer", "total",
        "frames"}`` for one window of ``window_s`` seconds.
    """
    cfg = _as_config(config)
    n = int(round(window_s * sample_rate))
    if n <= 0:
        raise ValueError(f"flops: window_s={window_s} gives no samples")
    lengths = _conv_lengths(n, cfg.conv_kernel, cfg.conv_stride)
    frames = lengths[-1]
    if frames <= 0:
        raise ValueError(f"flops: window_s={window_s} is shorter than the conv receptive field")
    c_in, conv = 1, 0.0
    for c_out, k, length in zip(cfg.conv_dim, cfg.conv_kernel, lengths):
        conv += 2.0 * c_in * int(c_out) * int(k) * length
        c_in = int(c_out)
    h, f, L = int(cfg.hidden_size), int(cfg.intermediate_size), frames
    proj = 2.0 * c_in * h * L
    groups = int(cfg.num_conv_pos_embedding_groups)
    pos = 2.0 * h * (h // groups) * int(cfg.num_conv_pos_embeddings) * L
    per_layer = 2.0 * L * 4 * h * h + 2.0 * 2 * L * L * h + 2.0 * 2 * L * h * f
    transformer = per_layer * int(cfg.num_hidden_layers)
    return {"feature_encoder": conv, "feature_projection": proj, "pos_conv": pos,
            "transformer": transformer, "total": conv + proj + pos + transformer,
            "frames": float(frames)}


def estimate_flops_per_second_of_audio(
    config: Mapping[str, Any] | PretrainedConfig, *, sample_rate: int = SAMPLE_RATE,
    window_s: float = 3.0, training: bool = False, freeze_feature_encoder: bool = True,
) -> float:
    """Model FLOPs per second of audio (analytical; see :func:`flops_breakdown`).

    Forward only by default. With ``training=True`` the backward pass is counted as
    twice the forward (the usual 3x rule) for the trainable part; a frozen feature
    encoder costs its forward only (no gradient is needed through it).

    Args:
        config: backbone config (or its dict).
        sample_rate: Hz.
        window_s: window length (s) the audio is cut into.
        training: count forward + backward.
        freeze_feature_encoder: only with ``training``: the conv encoder is frozen.

    Returns:
        FLOPs per second of audio (wav2vec2-base, 3 s windows: ~1.4e10 forward).
    """
    b = flops_breakdown(config, window_s=window_s, sample_rate=sample_rate)
    if not training:
        total = b["total"]
    else:
        frozen = b["feature_encoder"] if freeze_feature_encoder else 0.0
        total = 3.0 * (b["total"] - frozen) + frozen
    return total / float(window_s)
