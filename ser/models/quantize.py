"""Faster inference without retraining: conv/batch-norm fusion, int8 linears, bf16 convolutions.

:func:`prepare_for_inference` (used on every loaded bundle) folds batch norms into their
convolutions and stores 4-D weights channels-last; :func:`quantize_linears` gives every
linear layer int8 weights; :func:`quantize_for_cpu` is the int8 recipe of the transformer
family (int8 linears, bf16 convolutions where the CPU has bf16 kernels).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every batch norm that directly follows a convolution in an ``nn.Sequential``
    into that convolution (inference only; the module is changed in place).

    In eval mode a batch norm is a fixed per-channel affine map, so ``bn(conv(x))``
    equals one convolution with scaled weights and a bias (to float rounding, about
    1e-6); it saves the batch-norm pass, about a sixth of the small CNN's time.

    Returns:
        ``model``, in eval mode.
    """
    model.eval()
    convs, norms = (nn.Conv1d, nn.Conv2d), (nn.BatchNorm1d, nn.BatchNorm2d)
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, convs) and isinstance(bn, norms) and bn.track_running_stats:
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = nn.Identity()
    return model


#: Modules that read their linear layers' ``weight`` and ``bias`` tensors directly (WavLM's
#: attention hands them to ``F.multi_head_attention_forward``): their linears stay float.
_READS_LINEAR_WEIGHTS: tuple[str, ...] = ("WavLMAttention",)


def quantize_linears(model: nn.Module) -> nn.Module:
    """Give every ``nn.Linear`` int8 weights, activations quantised per batch (CPU only;
    ``torch.ao.quantization.quantize_dynamic``, in place).

    The projections of an attention module that reads their weight tensors itself
    (WavLM's, :data:`_READS_LINEAR_WEIGHTS`) stay float32: a quantised linear has no
    weight tensor to read. Its feed-forward layers and the head are still quantised.

    Returns:
        ``model`` with its linear layers swapped.
    """
    keep_float = {f"{name}.{child}" if name else child
                  for name, mod in model.named_modules() if type(mod).__name__ in _READS_LINEAR_WEIGHTS
                  for child, sub in mod.named_children() if isinstance(sub, nn.Linear)}
    spec: Any = {nn.Linear}
    if keep_float:
        qconfig = torch.ao.quantization.default_dynamic_qconfig
        spec = {name: qconfig for name, mod in model.named_modules()
                if isinstance(mod, nn.Linear) and name not in keep_float}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Make a network faster for inference without changing what it computes.

    :func:`fuse_conv_bn`, then 4-D weights in channels-last memory format, which lets
    oneDNN run the 2-D convolutions in its NHWC kernels: about 2x faster for the small
    CNN on one CPU thread (outputs equal to about 1e-7). The module is changed in place.

    Returns:
        ``model``, in eval mode.
    """
    return fuse_conv_bn(model).to(memory_format=torch.channels_last)


class _Bf16Autocast(nn.Module):
    """Runs ``inner`` under CPU bfloat16 autocast and hands float32 back."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.inner(*args, **kwargs)
        return out.float()


def cpu_bf16_is_fast() -> bool:
    """Whether this CPU has native bfloat16 matrix/convolution kernels (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def quantize_for_cpu(model: nn.Module, *, bf16_convs: bool | None = None,
                     inplace: bool = False) -> nn.Module:
    """An int8 version of ``model`` for fast CPU inference.

    Every ``nn.Linear`` (attention, feed-forward, head) gets int8 weights with
    activations quantised per batch (:func:`quantize_linears`); the
    convolutional feature encoder and the positional convolution, which int8 dynamic
    quantisation does not cover, run in bfloat16 where the CPU has native bf16 kernels.
    On a wav2vec2-base-sized model this is about 1.3x the speed of bf16 autocast and
    3.5x fp32, with probabilities within about 0.002 of fp32
    (``benchmarks/bench_inference_hf.py``).

    Args:
        model: a float32 transformer model whose wav2vec2-style backbone is its
            ``backbone`` (:class:`ser.models.transformer.HFAudioClassifier`,
            :class:`ser.models.ssl_frozen.FrozenSSLClassifier`) or its
            ``wav2vec2`` (:func:`ser.models.dimensional.emotion_model_class`) attribute
            (eval mode is set on the copy).
        bf16_convs: run the convolutions in bf16; ``None``: when :func:`cpu_bf16_is_fast`.
        inplace: modify ``model`` itself instead of a copy (saves memory and time when
            the float model is not needed any more).

    Returns:
        The quantised model (a copy unless ``inplace``), in eval mode, on the CPU.
    """
    q = quantize_linears((model if inplace else copy.deepcopy(model)).cpu().eval())
    if cpu_bf16_is_fast() if bf16_convs is None else bf16_convs:
        bb = q.wav2vec2 if hasattr(q, "wav2vec2") else q.backbone
        bb.feature_extractor = _Bf16Autocast(bb.feature_extractor)
        bb.encoder.pos_conv_embed = _Bf16Autocast(bb.encoder.pos_conv_embed)
    return q
