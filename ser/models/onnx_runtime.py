"""ONNX copies of a bundle's network, and running them through ``onnxruntime``.

What is exported (``torch.onnx.export(dynamo=True)``, opset :data:`OPSET`, batch axis dynamic):

- log-mel models (``small_cnn``, ``resnet``, ``crnn``, ``hf_image``): the spectrogram body
  ``[B, n_mels, frames] -> logits``. The log-mel front end stays in torch, so that
  overlapping windows keep sharing their spectrogram frames
  (:meth:`ser.models.nets.LogMelClassifier.forward_windows`, half the front-end work at a
  50 % hop), which a whole-waveform graph cannot do;
- transformer models (``hf``): the whole network, waveform ``[B, T] -> logits`` (the
  waveform normalisation, the convolutional feature encoder and the transformer).

The file is ``model.onnx`` in the bundle folder; ``model.json["runtime"]["onnx"]`` records it
(:func:`onnx_entry`) with the SHA-256 of the weights it was exported from, so an ONNX copy
left over from other weights is refused at load (:func:`check_entry`). The bundle's seal
(:mod:`ser.models.integrity`) does not cover ``runtime``: the ONNX copy computes what the
sealed weights compute (probabilities within 1e-4, tested).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ser.models.nets import LogMelClassifier

#: The ONNX file of a bundle.
ONNX_FILE = "model.onnx"
#: ONNX opset of the export.
OPSET = 18
#: Architectures that export, and what part of their network does (see the module docstring).
ONNX_PARTS: dict[str, str] = {"small_cnn": "body", "resnet": "body", "crnn": "body",
                              "hf_image": "body", "hf": "network"}
#: Runtimes of :func:`ser.models.bundle.load_bundle`.
RUNTIMES: tuple[str, ...] = ("torch", "onnx")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_network(model: nn.Module, *, arch: str, window_samples: int,
                   folder: str | os.PathLike[str]) -> Path:
    """Export ``model``'s network (see the module docstring) to ``<folder>/model.onnx``.

    Args:
        model: the bundle's network in eval mode, fp32, on the CPU.
        arch: its architecture name (:data:`ONNX_PARTS`).
        window_samples: samples per window (fixes the input's time axis).
        folder: the bundle folder.

    Returns:
        Path of the ONNX file (written atomically).

    Raises:
        ValueError: an architecture that does not export (``ssl_frozen``, classical, ...).
    """
    if arch not in ONNX_PARTS:
        raise ValueError(f"ONNX export covers the architectures {', '.join(ONNX_PARTS)}; "
                         f"this bundle's arch is {arch!r}")
    model = model.eval()
    wave = 0.1 * torch.randn(2, int(window_samples), generator=torch.Generator().manual_seed(0))
    if ONNX_PARTS[arch] == "body":
        if not isinstance(model, LogMelClassifier):
            raise ValueError(f"arch {arch!r}: expected a log-mel model, got {type(model).__name__}")
        with torch.no_grad():
            net, example, name = model.body, model.features(wave), "spec"
    else:
        net, example, name = model, wave, "wave"
    out = Path(folder) / ONNX_FILE
    tmp = out.with_name(f".{out.name}.tmp")
    program = torch.onnx.export(net, (example,), dynamo=True, opset_version=OPSET, input_names=[name],
                                output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                verbose=False)
    program.save(str(tmp))
    os.replace(tmp, out)
    return out


def onnx_entry(folder: str | os.PathLike[str], *, arch: str, weights_sha256: str) -> dict[str, Any]:
    """The ``model.json["runtime"]["onnx"]`` record of the exported ``model.onnx``."""
    import onnxruntime

    path = Path(folder) / ONNX_FILE
    return {"file": ONNX_FILE, "sha256": _sha256(path), "part": ONNX_PARTS[arch], "opset": OPSET,
            "weights_sha256": weights_sha256, "torch_version": torch.__version__,
            "onnxruntime_version": onnxruntime.__version__}


def check_entry(folder: str | os.PathLike[str], meta: Mapping[str, Any], *, weights_sha256: str) -> Path:
    """The bundle's ONNX file, checked against its ``model.json`` record.

    Raises:
        FileNotFoundError: no ONNX copy recorded or on disk (names ``ser export --onnx``).
        ValueError: the file or the weights changed since the export.
    """
    folder = Path(folder)
    entry = (meta.get("runtime") or {}).get("onnx")
    path = folder / ONNX_FILE
    if not isinstance(entry, dict) or not path.is_file():
        raise FileNotFoundError(f"model bundle {folder} has no ONNX copy ({ONNX_FILE} and "
                                f"model.json runtime.onnx); write one with `ser export {folder} --onnx`")
    if entry.get("weights_sha256") != weights_sha256:
        raise ValueError(f"{path} was exported from other weights than {folder}'s current ones; "
                         f"export it again with `ser export {folder} --onnx`")
    if entry.get("sha256") != _sha256(path):
        raise ValueError(f"{path} changed after it was exported (its SHA-256 differs from "
                         f"model.json runtime.onnx); export it again with `ser export {folder} --onnx`")
    return path


class OnnxNetwork(nn.Module):
    """An ONNX graph run by ``onnxruntime`` behind a torch module's ``forward``.

    Args:
        path: the ``.onnx`` file (one float32 input with a dynamic batch axis, one output).
        threads: intra-op threads of the session (default: torch's thread count, so
            worker settings apply to both runtimes alike).
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor, *_: Any, **__: Any) -> Tensor:
        """Logits ``[B, n_labels]`` of the graph's input ``x`` (float32, CPU)."""
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


def onnx_model(model: nn.Module, path: str | os.PathLike[str], *, arch: str) -> nn.Module:
    """``model`` with its exported part replaced by the ONNX graph at ``path``: the body of a
    log-mel model (its front end stays in torch), or the whole network of a transformer."""
    runtime = OnnxNetwork(path)
    if ONNX_PARTS[arch] == "body":
        model.body = runtime
        return model
    return runtime
