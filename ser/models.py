"""Network architectures and the model bundle (save, load, predict).

Every model built here maps raw waveform windows ``[B, T]`` (float32, at the
bundle's sample rate) to logits ``[B, n_labels]``; feature extraction and the
per-window normalisation live inside ``forward``, so training and inference
cannot diverge. Architectures are registered by name in :data:`ARCHITECTURES`
(``build_model(arch, ...)``); new families (ResNet, CRNN, Hugging Face encoders)
add a builder with :func:`register_arch`.

A bundle is a folder ``results/models/<name>/`` holding ``model.json`` (labels,
sample_rate, window_s, feature config, arch, training params, split speakers,
metrics, git commit) and ``model.pt`` (state dict). Inference needs only
:func:`load_bundle` and :meth:`Bundle.predict_proba`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ser import provenance
from ser.spectrogram import DEFAULT_FEATURES, LogMel, normalize_window

#: Version of the ``model.json`` layout written by :func:`save_bundle`.
BUNDLE_FORMAT = 1
#: Keys that every ``model.json`` must hold.
REQUIRED_KEYS = ("labels", "sample_rate", "window_s", "features", "arch", "arch_params")
#: Feature kind and per-window normalisation implemented by :class:`LogMelClassifier`.
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
    """Full log-mel feature config: :data:`ser.spectrogram.DEFAULT_FEATURES` plus overrides.

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


class SmallCNN(nn.Module):
    """Small 2-D CNN over a log-mel patch.

    Blocks of conv3x3 -> BatchNorm -> ReLU -> 2x2 max-pool, then average pooling over
    time and into ``freq_bins`` frequency bands (so the classifier still knows *where*
    in the spectrum energy lies: pitch and spectral tilt carry emotion), dropout and a
    linear layer. Works for any number of mel bands and frames.

    Args:
        n_labels: number of output classes.
        channels: output channels of each conv block (one block per entry).
        freq_bins: frequency bands kept after pooling (1 = global average pooling).
        dropout: dropout probability before the classifier.
    """

    def __init__(self, *, n_labels: int, channels: Sequence[int] = (16, 32, 64, 128),
                 freq_bins: int = 4, dropout: float = 0.3) -> None:
        super().__init__()
        if not channels:
            raise ValueError("small_cnn: channels must list at least one block")
        if freq_bins < 1:
            raise ValueError(f"small_cnn: freq_bins must be >= 1; got {freq_bins}")
        blocks: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, int(c_out), 3, padding=1, bias=False),
                       nn.BatchNorm2d(int(c_out)), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = int(c_out)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d((int(freq_bins), 1))
        self.dropout = nn.Dropout(float(dropout))
        self.head = nn.Linear(c_in * int(freq_bins), int(n_labels))

    def forward(self, spec: Tensor) -> Tensor:
        """``[B, n_mels, frames]`` -> logits ``[B, n_labels]``."""
        x = self.pool(self.blocks(spec.unsqueeze(1))).flatten(1)  # [B, C * freq_bins]
        return self.head(self.dropout(x))


class LogMelClassifier(nn.Module):
    """Waveform classifier: :class:`LogMel` -> :func:`normalize_window` -> spectrogram body.

    Args:
        frontend: the log-mel front end.
        body: module mapping ``[B, n_mels, frames]`` to logits ``[B, n_labels]``.
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


ArchBuilder = Callable[..., nn.Module]
#: Registered architectures: name -> builder(n_labels=, sample_rate=, features=, **arch_params).
ARCHITECTURES: dict[str, ArchBuilder] = {}


def register_arch(name: str) -> Callable[[ArchBuilder], ArchBuilder]:
    """Decorator registering a builder ``f(*, n_labels, sample_rate, features, **arch_params)``.

    The builder must return a module mapping waveforms ``[B, T]`` to logits and accepting
    the keyword ``spec_transform`` in ``forward`` (it may ignore it).
    """
    def deco(fn: ArchBuilder) -> ArchBuilder:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        ARCHITECTURES[name] = fn
        return fn
    return deco


@register_arch("small_cnn")
def _build_small_cnn(*, n_labels: int, sample_rate: int, features: Mapping[str, Any],
                     **arch_params: Any) -> nn.Module:
    cfg = {k: v for k, v in features.items() if k not in ("kind", "normalization")}
    return LogMelClassifier(LogMel(sample_rate=sample_rate, **cfg),
                            SmallCNN(n_labels=n_labels, **arch_params))


def build_model(arch: str, *, n_labels: int, sample_rate: int,
                features: Mapping[str, Any] | None = None, **arch_params: Any) -> nn.Module:
    """Build a registered architecture.

    Args:
        arch: name in :data:`ARCHITECTURES` (e.g. ``"small_cnn"``).
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


# --------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class Bundle:
    """A loaded model bundle. Build with :func:`load_bundle`.

    Attributes:
        path: the bundle folder.
        meta: the parsed ``model.json``.
        model: the network in eval mode on ``device``.
        device: where ``predict_proba`` runs.
    """

    path: Path
    meta: dict[str, Any]
    model: nn.Module = field(repr=False)
    device: torch.device = torch.device("cpu")

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
        with torch.inference_mode():
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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_bundle(
    path: str | os.PathLike[str], model: nn.Module, *, labels: Sequence[str], sample_rate: int,
    window_s: float, features: Mapping[str, Any], arch: str, arch_params: Mapping[str, Any],
    train_params: Mapping[str, Any], split: Mapping[str, Sequence[str]],
    metrics: Mapping[str, Any],
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
        "git_commit": provenance.git_commit(),
        "torch_version": torch.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return provenance.atomic_write_json(out / "model.json", meta)


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


def load_bundle(path: str | os.PathLike[str], *, device: str = "cpu") -> Bundle:
    """Load a model bundle for inference.

    Args:
        path: bundle folder holding ``model.json`` and ``model.pt``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (cuda when available) or any torch device.

    Returns:
        The :class:`Bundle`, model in eval mode.

    Raises:
        FileNotFoundError: ``model.json`` or ``model.pt`` is missing.
        ValueError: malformed ``model.json`` or weights that do not fit the architecture.
    """
    folder = Path(path)
    meta = read_bundle_meta(folder)
    weights = folder / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"model bundle {folder} has model.json but no model.pt; retrain it")
    dev = resolve_device(device)
    model = build_model(meta["arch"], n_labels=len(meta["labels"]), sample_rate=meta["sample_rate"],
                        features=meta["features"], **meta["arch_params"])
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{weights} does not fit arch {meta['arch']!r} with arch_params "
                         f"{meta['arch_params']}: {err}") from err
    model.to(dev).eval()
    return Bundle(path=folder, meta=meta, model=model, device=dev)


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
    return provenance.atomic_write_json(folder / "model.json", meta)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; anything else -> ``torch.device(device)``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='auto' or 'cpu'")
    return dev
