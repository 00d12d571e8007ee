"""Dimensional emotion: arousal, dominance and valence regressed from the waveform.

The family has the form of audEERING's published model
(:data:`HUB_ID`, Wagner et al. 2023, arXiv:2203.07378): a ``Wav2Vec2Model`` whose last
hidden states are mean-pooled over time and fed to a regression head (dense → tanh →
dropout → linear with 3 outputs, in the order arousal, dominance, valence; values
roughly in [0, 1]). The input is the 16 kHz waveform normalised per window to zero mean
and unit variance (``Wav2Vec2FeatureExtractor(do_normalize=True)``,
:func:`ser.models.transformer.normalize_waveform`). :func:`emotion_model_class` builds
the same module tree with the same parameter names (``wav2vec2.*``,
``classifier.dense.*``, ``classifier.out_proj.*``), so ``from_pretrained`` loads their
checkpoint, or any checkpoint of that form, by name.

A dimensional model bundle is a folder holding ``model.json`` (``family``
``"dimensional"``, the window, sample rate, dimensions and the checkpoint ``source``)
and the checkpoint itself as ``save_pretrained`` writes it (``config.json``,
``model.safetensors``). :func:`save_dimensional_bundle` (``ser export-dimensional``)
writes one; :func:`ser.models.bundle.load_bundle` loads it as a
:class:`DimensionalBundle`, which has the bundle interface of windowed inference
(:class:`ser.inference.protocol.ModelBundle`) with the output columns
``d_arousal, d_dominance, d_valence`` instead of ``p_<label>``.

``transformers`` takes seconds to import, so only the functions that need it import it;
a log-mel or classical bundle never does.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ser.core import provenance
from ser.models.integrity import write_sealed_meta
from ser.models.meta import BundleMeta
from ser.models.quantize import quantize_for_cpu
from ser.models.registry import resolve_device
from ser.models.transformer import SAMPLE_RATE, normalize_waveform, tiny_config
from ser.models.window import float32_audio, window_samples, windows_at

if TYPE_CHECKING:  # imported where used: see the module docstring
    from transformers import PretrainedConfig, PreTrainedModel

#: audEERING's published dimensional model (wav2vec2-large-robust pruned to 12 layers,
#: fine-tuned on MSP-Podcast v1.7; CC BY-NC-SA 4.0).
HUB_ID: str = "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim"
#: ``model.json["family"]`` of a dimensional bundle.
FAMILY: str = "dimensional"
#: The dimensions in the order of audEERING's outputs (and of an unnamed 3-output head).
DIMENSIONS: tuple[str, ...] = ("arousal", "dominance", "valence")
#: Prefix of the window-table columns of a dimensional model (``d_arousal`` ...).
OUTPUT_PREFIX: str = "d_"
#: Inference precisions (as :data:`ser.models.bundle.PRECISIONS`).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
#: Checkpoint files that ``save_pretrained`` writes and a bundle needs.
CHECKPOINT_FILES: tuple[str, ...] = ("config.json", "model.safetensors")


# --------------------------------------------------------------------------- the network


class RegressionHead(nn.Module):
    """audEERING's head: dropout → dense → tanh → dropout → out_proj (``num_labels`` outputs).

    Args:
        config: a wav2vec2 config (``hidden_size``, ``final_dropout``, ``num_labels``).
    """

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.final_dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: Tensor) -> Tensor:
        """``[B, hidden_size]`` pooled states → ``[B, num_labels]``."""
        x = self.dropout(features)
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x))


@functools.cache
def emotion_model_class() -> type[PreTrainedModel]:
    """The class ``EmotionModel(Wav2Vec2PreTrainedModel)`` with attributes ``wav2vec2``
    (``Wav2Vec2Model``) and ``classifier`` (:class:`RegressionHead`), as on audEERING's
    model card, so that ``EmotionModel.from_pretrained(folder_or_hub_id)`` loads their
    weights by name.

    ``forward(input_values)`` takes waveforms ``[B, T]`` that are already normalised
    (:func:`ser.models.transformer.normalize_waveform`) and returns ``(pooled, values)``:
    the time-mean of the last hidden states ``[B, hidden_size]`` and the head's outputs
    ``[B, num_labels]``.

    Built on first use because ``transformers`` takes seconds to import.
    """
    from transformers import Wav2Vec2Model, Wav2Vec2PreTrainedModel

    class EmotionModel(Wav2Vec2PreTrainedModel):
        """Speech emotion regressor: wav2vec2, mean pooling over time, regression head."""

        def __init__(self, config: PretrainedConfig) -> None:
            super().__init__(config)
            self.config = config
            self.wav2vec2 = Wav2Vec2Model(config)
            self.classifier = RegressionHead(config)
            self.post_init()

        def forward(self, input_values: Tensor) -> tuple[Tensor, Tensor]:
            hidden = self.wav2vec2(input_values)[0].mean(dim=1)
            return hidden, self.classifier(hidden)

    return EmotionModel


def tiny_dimensional_config() -> PretrainedConfig:
    """A tiny wav2vec2 config with a 3-output head (tests, demos): the layout of
    :func:`ser.models.transformer.tiny_config` with ``num_labels=3`` named by
    :data:`DIMENSIONS`."""
    cfg = tiny_config("wav2vec2")
    cfg.id2label = dict(enumerate(DIMENSIONS))
    cfg.label2id = {d: i for i, d in enumerate(DIMENSIONS)}
    cfg.num_labels = len(DIMENSIONS)
    cfg.final_dropout = 0.1
    return cfg


def build_emotion_model(config: PretrainedConfig) -> nn.Module:
    """A randomly initialised ``EmotionModel`` (:func:`emotion_model_class`) of ``config``.

    Raises:
        ValueError: the config is not a wav2vec2 config with 3 outputs.
    """
    _check_config(config, where="build_emotion_model")
    return emotion_model_class()(config)


def model_dimensions(config: PretrainedConfig) -> list[str]:
    """The dimension of each output, in output order: the config's ``id2label`` when it
    names arousal, dominance and valence (in any order), else :data:`DIMENSIONS`."""
    names = [str(config.id2label.get(i, "")).lower() for i in range(int(config.num_labels))]
    return names if sorted(names) == sorted(DIMENSIONS) else list(DIMENSIONS)


def _check_config(config: PretrainedConfig, *, where: str) -> None:
    model_type = getattr(config, "model_type", None)
    if model_type != "wav2vec2":
        raise ValueError(f"{where}: model_type {model_type!r} is not a dimensional model; "
                         f"it must be a wav2vec2 checkpoint of the form of {HUB_ID}")
    if int(config.num_labels) != len(DIMENSIONS):
        raise ValueError(f"{where}: the head has num_labels={config.num_labels}; a dimensional "
                         f"model has {len(DIMENSIONS)} outputs ({', '.join(DIMENSIONS)})")


def receptive_field(config: PretrainedConfig) -> int:
    """Samples that one frame of the convolutional feature encoder sees: the shortest
    input the model accepts (400 samples = 25 ms for the standard wav2vec2 encoder)."""
    field, step = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        field += (int(kernel) - 1) * step
        step *= int(stride)
    return field


def load_dimensional(source: str | os.PathLike[str], *, local_files_only: bool = True) -> nn.Module:
    """Load a dimensional model (:func:`emotion_model_class`) from a hub id or a folder.

    Args:
        source: a folder written by ``save_pretrained`` (or ``hf download``), holding
            ``config.json`` and the weights, or a hub id such as :data:`HUB_ID`.
        local_files_only: never download (default): a hub id must then be in the local
            Hugging Face cache (``HF_HOME``); ``False`` downloads it when absent.

    Returns:
        The model in float32 and eval mode, on the CPU.

    Raises:
        FileNotFoundError: no such folder, a folder without ``config.json``, or a hub id
            that is neither cached nor (with ``local_files_only``) allowed to download.
        ValueError: the checkpoint is not of the dimensional form (not wav2vec2, not 3
            outputs, or weights of the backbone or head missing from it).
    """
    from transformers import AutoConfig

    src = str(source)
    folder = Path(src).expanduser()
    if folder.is_dir():
        src = str(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"dimensional source folder {src!r} has no config.json; pass a "
                                    "folder written by save_pretrained or `hf download`")
    elif isinstance(source, os.PathLike) or src.startswith((".", "/", "~")) or src.count("/") > 1:
        raise FileNotFoundError(f"dimensional source {src!r}: no such folder; pass a folder holding "
                                f"config.json and the weights, or a hub id such as {HUB_ID}")
    try:
        config = AutoConfig.from_pretrained(src, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        how = ("it is not in the local Hugging Face cache and local_files_only=True forbids "
               "downloading" if local_files_only else f"it could not be fetched ({err})")
        raise FileNotFoundError(
            f"dimensional source {src!r} is neither a local folder nor available offline: {how}. "
            f"On a machine with internet run `hf download {src}` (or `huggingface-cli download "
            f"{src}`), then copy its cache (~/.cache/huggingface/hub, or set HF_HOME) here or pass "
            f"the downloaded folder; or allow downloading (ser export-dimensional --download).") from err
    _check_config(config, where=f"dimensional source {src!r}")
    try:
        model, info = emotion_model_class().from_pretrained(
            src, config=config, local_files_only=local_files_only, dtype=torch.float32,
            output_loading_info=True)
    except OSError as err:
        raise FileNotFoundError(f"dimensional source {src!r}: found its config but not its weights "
                                f"({err}); download them with `hf download {src}` or pass a folder "
                                "written by save_pretrained") from err
    missing = sorted(k for k in info["missing_keys"] if not k.endswith("masked_spec_embed"))
    if missing:
        raise ValueError(f"dimensional source {src!r} lacks the weights {missing[:4]}"
                         f"{' ...' if len(missing) > 4 else ''}: it is not a checkpoint of the form "
                         f"of {HUB_ID} (wav2vec2 + regression head 'classifier')")
    return model.eval()


# --------------------------------------------------------------------------- the bundle


class DimensionalBundle(BundleMeta):
    """A dimensional model with the bundle interface of windowed inference
    (:class:`ser.inference.protocol.ModelBundle`). Build with
    :func:`ser.models.bundle.load_bundle` (or :func:`load_dimensional_bundle`).

    Attributes:
        path: the bundle folder; meta: its ``model.json``.
        model: the ``EmotionModel`` in eval mode on ``device``.
        device: where it runs; precision: ``"fp32"``, ``"bf16"`` or ``"int8"``.
        output_prefix: ``"d_"``: the window columns are ``d_<dimension>``.
        heavy: True (a transformer keeps every core busy by itself).
        speaker_norm: False: it needs no speaker reference.
    """

    output_prefix: ClassVar[str] = OUTPUT_PREFIX
    heavy: ClassVar[bool] = True
    speaker_norm: ClassVar[bool] = False

    def __init__(self, model: nn.Module, meta: Mapping[str, Any], *, path: str | os.PathLike[str],
                 device: torch.device = torch.device("cpu"), precision: str = "fp32") -> None:
        self.model = model
        self.meta = dict(meta)
        self.path = Path(path)
        self.device = device
        self.precision = precision

    @property
    def dimensions(self) -> list[str]:
        """The dimensions in output order (``model.json["dimensions"]``)."""
        return list(self.meta["dimensions"])

    @property
    def labels(self) -> list[str]:
        """Same as :attr:`dimensions` (the names after :attr:`output_prefix`)."""
        return self.dimensions

    @property
    def source(self) -> str:
        """Where the checkpoint came from (hub id or folder, as given at export)."""
        return str(self.meta.get("source", ""))

    @property
    def preferred_batch_size(self) -> int:
        """4 windows per forward pass on the CPU (as for the ``hf`` classifiers), else 64."""
        return 4 if self.device.type == "cpu" else 64

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        arr = np.asarray(windows)
        if arr.ndim != 2 or arr.shape[1] != self.window_samples:
            raise ValueError(f"dimensional bundle {self.path}: windows must be float [n, "
                             f"{self.window_samples}] ({self.window_s:g} s at {self.sample_rate} Hz); "
                             f"got shape {arr.shape}")
        return float32_audio(arr)

    def predict_dimensions(self, windows: np.ndarray, *, batch_size: int = 4) -> np.ndarray:
        """Arousal, dominance and valence of each window.

        Args:
            windows: float ``[n, window_samples]`` mono audio at :attr:`sample_rate`; each
                window is normalised to zero mean and unit variance before the model.
            batch_size: windows per forward pass.

        Returns:
            float32 ``[n, 3]``, columns in :attr:`dimensions` order, on the model's scale
            (roughly 0-1).

        Raises:
            ValueError: wrong shape, non-float dtype or non-finite samples.
        """
        arr = self._check_windows(windows)
        out = np.empty((arr.shape[0], len(self.dimensions)), dtype=np.float32)
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, arr.shape[0], batch_size):
                x = torch.from_numpy(np.ascontiguousarray(arr[i:i + batch_size])).to(self.device)
                _, values = self.model(normalize_waveform(x))
                out[i:i + batch_size] = values.float().cpu().numpy()
        return out

    def predict_starts(self, signal: np.ndarray, starts: np.ndarray, *, batch_size: int = 4) -> np.ndarray:
        """:meth:`predict_dimensions` of the windows ``signal[s:s + window_samples]``.

        Args:
            signal: float mono audio ``[T]`` at :attr:`sample_rate`; every window must fit.
            starts: window start samples ``[N]``.
            batch_size: windows per forward pass.

        Returns:
            float32 ``[N, 3]``.

        Raises:
            ValueError: a window outside ``signal``, or as :meth:`predict_dimensions`.
        """
        return self.predict_dimensions(windows_at(signal, starts, window_samples=self.window_samples),
                                       batch_size=batch_size)


def is_dimensional_bundle(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder/model.json`` names the family ``"dimensional"`` (False when it is
    missing or unreadable: the generic reader then names the problem)."""
    try:
        meta = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("family") == FAMILY


def _check_window_s(window_s: float, config: PretrainedConfig) -> float:
    try:
        value = float(window_s)
    except (TypeError, ValueError):
        value = math.nan
    shortest = receptive_field(config) / SAMPLE_RATE
    if not (math.isfinite(value) and value >= shortest):
        raise ValueError(f"window_s must be a number of seconds of at least {shortest:g} (the model's "
                         f"receptive field); got {window_s!r}. audEERING's model was trained on "
                         "utterances of a few seconds: 2-4 s windows suit it")
    return value


def save_dimensional_bundle(source: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                            window_s: float, local_files_only: bool = True) -> Path:
    """Write a dimensional model bundle (``ser export-dimensional``).

    Loads the checkpoint (:func:`load_dimensional`), writes it with ``save_pretrained``
    into ``out_dir`` (``config.json``, ``model.safetensors``), then ``model.json``:
    ``family`` ``"dimensional"``, ``arch`` ``"dimensional"``, ``dimensions`` (output
    order), ``labels`` (the same), ``sample_rate`` 16000, ``window_s``,
    ``window_samples``, ``source``, ``features`` (the input normalisation),
    ``arch_params`` (backbone size), versions and the git commit.

    Args:
        source: hub id (e.g. :data:`HUB_ID`) or a ``save_pretrained`` folder.
        out_dir: the bundle folder (created), e.g. ``results/models/audeering_dim``.
        window_s: analysis window (s) of the windowed inference.
        local_files_only: never download (default); ``False`` fetches a hub id that is
            not cached (about 660 MB for :data:`HUB_ID`).

    Returns:
        Path of ``model.json``.

    Raises:
        FileNotFoundError, ValueError: see :func:`load_dimensional`; a bad ``window_s``.
    """
    import transformers

    model = load_dimensional(source, local_files_only=local_files_only)
    config = model.config
    window = _check_window_s(window_s, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    dims = model_dimensions(config)
    meta = {
        "format": 1,
        "family": FAMILY,
        "name": out.name,
        "arch": FAMILY,
        "dimensions": dims,
        "labels": dims,
        "sample_rate": SAMPLE_RATE,
        "window_s": window,
        "window_samples": window_samples(window, SAMPLE_RATE),
        "source": str(source),
        "features": {"kind": "waveform", "normalization": "per window zero mean, unit variance"},
        "arch_params": {"model_type": config.model_type, "hidden_size": int(config.hidden_size),
                        "num_hidden_layers": int(config.num_hidden_layers), "pooling": "mean",
                        "head": "dense-tanh-linear"},
        "metrics": {},
        "git_commit": provenance.git_commit(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return write_sealed_meta(out, meta)


def load_dimensional_bundle(path: str | os.PathLike[str], *, device: str = "cpu",
                            precision: str = "fp32") -> DimensionalBundle:
    """Load a bundle written by :func:`save_dimensional_bundle` (no network access).

    Args:
        path: the bundle folder.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or any torch device.
        precision: ``"fp32"``; ``"bf16"`` (autocast); ``"int8"`` (CPU only: int8 linear
            layers, bf16 convolutions where the CPU has bf16 kernels; as
            :func:`ser.models.quantize.quantize_for_cpu`).

    Raises:
        FileNotFoundError: ``model.json`` or a checkpoint file is missing (named).
        ValueError: ``model.json`` is not a dimensional bundle's or lacks a key, the
            checkpoint does not fit it, an unknown precision, or ``"int8"`` on a GPU.
    """
    folder = Path(path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no model bundle at {folder}: model.json is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}); write the bundle again with "
                         "`ser export-dimensional`") from err
    if not isinstance(meta, dict) or meta.get("family") != FAMILY:
        family = meta.get("family") if isinstance(meta, dict) else None
        raise ValueError(f"{meta_path}: family {family!r} is not {FAMILY!r}; load it with "
                         "ser.models.bundle.load_bundle")
    missing = [k for k in ("dimensions", "sample_rate", "window_s") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path} lacks {missing}; write the bundle again with "
                         "`ser export-dimensional`")
    absent = [n for n in CHECKPOINT_FILES if not (folder / n).is_file()]
    if absent:
        raise FileNotFoundError(f"dimensional bundle {folder} lacks {', '.join(absent)}; write it "
                                "again with `ser export-dimensional`")
    if int(meta["sample_rate"]) != SAMPLE_RATE:
        raise ValueError(f"{meta_path}: sample_rate {meta['sample_rate']} Hz; the model takes "
                         f"{SAMPLE_RATE} Hz")
    model = load_dimensional(folder, local_files_only=True)
    if model_dimensions(model.config) != list(meta["dimensions"]):
        raise ValueError(f"{meta_path}: dimensions {meta['dimensions']} differ from the checkpoint's "
                         f"outputs {model_dimensions(model.config)}")
    _check_window_s(meta["window_s"], model.config)
    dev = resolve_device(device)
    if precision == "int8":
        if dev.type != "cpu":
            raise ValueError(f"precision 'int8' runs on the CPU only; on {dev} use 'bf16'")
        model = quantize_for_cpu(model, inplace=True)
    return DimensionalBundle(model.to(dev), meta, path=folder, device=dev, precision=precision)
