"""The model bundle: a trained network with its labels, window and sample rate (save, load, predict).

The networks are built by name (:func:`ser.models.registry.build_model`); every one maps
raw waveform windows ``[B, T]`` to logits ``[B, n_labels]``.

A bundle is a folder ``results/models/<name>/`` holding ``model.json`` (labels,
sample_rate, window_s, feature config, arch, training params, split speakers,
metrics, git commit) and ``model.pt`` (state dict). Inference needs only
:func:`load_bundle` and :meth:`Bundle.predict_proba`. :func:`load_bundle` also reads
classical bundles (:mod:`ser.models.classical.bundle`) and dimensional ones
(:mod:`ser.models.dimensional`: arousal, dominance, valence instead of probabilities).
``arch_params`` in the bundle hold every option, defaults included (format 2); bundles of
format 1 are rebuilt with the defaults of their time (:data:`LEGACY_ARCH_DEFAULTS`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ser.core import atomic, provenance
from ser.models import integrity
from ser.models.classical.bundle import ClassicalBundle, load_classical_bundle
from ser.models.dimensional import FAMILY as DIMENSIONAL_FAMILY
from ser.models.dimensional import DimensionalBundle, is_dimensional_bundle, load_dimensional_bundle
from ser.models.ensemble_bundle import EnsembleBundle, is_ensemble_bundle, load_ensemble_bundle, member_dirs
from ser.models.meta import BundleMeta, calibration_temperature, without_calibration
from ser.models.nets import LogMelClassifier
from ser.models.onnx_runtime import ONNX_PARTS, RUNTIMES, check_entry, export_network, onnx_entry, onnx_model
from ser.models.quantize import prepare_for_inference, quantize_for_cpu, quantize_linears
from ser.models.registry import ARCHITECTURES, TRANSFORMER_ARCHS, build_model, resolve_device
from ser.models.window import checked_starts, float32_audio, window_samples, windows_at

BUNDLE_FORMAT = 2
#: Options whose default changed since an older bundle format: the value those bundles
#: were built with, filled in when the option is absent. Format 1 predates the strided
#: :class:`ser.models.nets.SmallCNN`.
LEGACY_ARCH_DEFAULTS: dict[int, dict[str, dict[str, Any]]] = {1: {"small_cnn": {"pooled_blocks": -1}}}
#: Keys that every ``model.json`` must hold.
REQUIRED_KEYS = ("labels", "sample_rate", "window_s", "features", "arch", "arch_params")
#: Inference precisions of :func:`load_bundle` (see there).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
#: Architectures with an ONNX copy (:func:`export_onnx`).
ONNX_ARCHS: tuple[str, ...] = tuple(ONNX_PARTS)


@dataclass(frozen=True)
class Bundle(BundleMeta):
    """A loaded model bundle. Build with :func:`load_bundle`.

    Attributes:
        path: the bundle folder.
        meta: the parsed ``model.json``.
        model: the network in eval mode on ``device``.
        device: where ``predict_proba`` runs.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (see :func:`load_bundle`).
        runtime: ``"torch"`` or ``"onnx"`` (the network, or its body, runs in onnxruntime).
        output_prefix: ``"p_"``: the window columns are ``p_<label>`` probabilities.
        speaker_norm: False: a network needs no speaker reference.
    """

    output_prefix: ClassVar[str] = "p_"
    speaker_norm: ClassVar[bool] = False
    path: Path
    meta: dict[str, Any]
    model: nn.Module = field(repr=False)
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    runtime: str = "torch"

    @property
    def heavy(self) -> bool:
        """True for transformer backbones, which need every core for the model itself."""
        return str(self.meta.get("arch")) in TRANSFORMER_ARCHS

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
        return calibration_temperature(self.meta)

    def uncalibrated(self) -> Bundle:
        """A copy (sharing the network) that gives probabilities before any stored calibration."""
        return dataclasses.replace(self, meta=without_calibration(self.meta))

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        arr = np.asarray(windows)
        expected = (f"model was trained on {self.window_s:g} s windows at {self.sample_rate} Hz "
                    f"({self.window_samples} samples)")
        if arr.ndim != 2:
            raise ValueError(f"{expected}; windows must be a 2-D array [n, {self.window_samples}], "
                             f"got shape {arr.shape} (use windows[None] for a single window)")
        if arr.shape[1] != self.window_samples:
            raise ValueError(f"{expected}; got {arr.shape[1]}")
        return float32_audio(arr)

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
        win = self.window_samples
        starts = checked_starts(starts, signal_samples=len(signal), window_samples=win)
        model = self.model
        shared = (isinstance(model, LogMelClassifier) and len(starts) > 1
                  and model.frontend.can_share_frames(window_n=win, hop_n=int(np.gcd.reduce(np.diff(starts)))))
        if not shared:
            return self.predict_proba(windows_at(signal, starts, window_samples=win), batch_size=batch_size)
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

    def predict_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                       batch_size: int = 64) -> np.ndarray:
        """The bundle interface's name (:class:`ser.inference.protocol.ModelBundle`) of
        :meth:`predict_proba_starts`."""
        return self.predict_proba_starts(signal, starts, batch_size=batch_size)


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
        features: feature config (see :func:`ser.models.window.features_config`).
        arch: architecture name (:data:`ser.models.registry.ARCHITECTURES`).
        arch_params: keywords given to :func:`ser.models.registry.build_model`.
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
    return integrity.write_sealed_meta(out, meta)


def bundle_folder(path: str | os.PathLike[str]) -> Path:
    """The bundle folder of ``path``: the folder itself, or the folder of a ``model.json``
    given by its own path."""
    p = Path(path)
    return p.parent if p.name == "model.json" and p.is_file() else p


def read_bundle_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``<path>/model.json`` without loading weights (``path`` may also be
    the ``model.json`` itself).

    Raises:
        FileNotFoundError: the folder has no ``model.json``.
        ValueError: the file is not valid JSON or lacks a required key.
    """
    folder = bundle_folder(path)
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
    fmt = meta.get("format", 1)
    if meta.get("family") != DIMENSIONAL_FAMILY and (not isinstance(fmt, int) or fmt > BUNDLE_FORMAT):
        raise ValueError(f"{meta_path} is a bundle of format {fmt!r}, newer than this code reads "
                         f"(format {BUNDLE_FORMAT} and older); update the project or retrain the model")
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


def bundle_fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 of what a bundle computes: its weights file and the ``model.json`` keys that
    shape its outputs (labels, window, features, architecture, calibration). The weights
    file is ``model.pt``, ``model.joblib`` (classical) or ``model.safetensors`` (dimensional).
    The same value is sealed into ``model.json`` when the bundle is written
    (:mod:`ser.models.integrity`) and checked by :func:`load_bundle`.

    Retraining with other data or options, or recalibrating, changes it; re-saving the same
    weights (a deterministic retrain) does not. Outputs computed by one bundle can thus be
    told from those of another bundle of the same name.

    Raises:
        FileNotFoundError: no ``model.json``, or no weights file.
    """
    folder = bundle_folder(path)
    meta = read_bundle_meta(folder)
    if is_ensemble_bundle(folder):  # no weights of its own: its members' fingerprints
        keyed = {**integrity.shaping_values(meta), **{k: meta.get(k) for k in ("members", "weights")}}
        keyed["member_fingerprints"] = [bundle_fingerprint(d) for d in member_dirs(folder, meta)]
        return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()
    weights = integrity.weights_file(folder)
    if weights is None:
        raise FileNotFoundError(f"model bundle {folder} has no {' or '.join(integrity.WEIGHTS_FILES)}")
    return integrity.fingerprint(meta, weights)


def _is_classical_bundle(folder: Path) -> bool:
    try:
        arch = json.loads((folder / "model.json").read_text(encoding="utf-8")).get("arch", "")
    except (OSError, ValueError, AttributeError):
        return False  # read_bundle_meta gives the precise error
    return isinstance(arch, str) and arch.startswith("classical:")


def load_bundle(path: str | os.PathLike[str], *, device: str = "cpu",
                precision: str = "fp32", runtime: str = "torch") -> Bundle | ClassicalBundle | DimensionalBundle | EnsembleBundle:
    """Load a model bundle for inference.

    A classical bundle (``arch`` ``classical:…``, weights in ``model.joblib``) is handed
    to :func:`ser.models.classical.bundle.load_classical_bundle`, whose
    :class:`ser.models.classical.bundle.ClassicalBundle` has the attributes and
    ``predict_proba`` / ``predict_proba_starts`` methods of :class:`Bundle`. A dimensional
    bundle (``family`` ``"dimensional"``, :func:`ser.models.dimensional.save_dimensional_bundle`)
    is handed to :func:`ser.models.dimensional.load_dimensional_bundle`: its
    :class:`ser.models.dimensional.DimensionalBundle` has the interface inference uses
    (:class:`ser.inference.protocol.ModelBundle`), with arousal, dominance and valence
    (``d_<dimension>`` columns) in place of probabilities. An ensemble bundle (``family``
    ``"ensemble"``, :mod:`ser.models.ensemble_bundle`) loads each member with this function
    and averages their probabilities (:class:`ser.models.ensemble_bundle.EnsembleBundle`).

    A bundle whose ``model.json`` was edited after it was written (its stored seal,
    :mod:`ser.models.integrity`, no longer matches) is refused; one written before seals
    existed loads with an :class:`ser.models.integrity.UnsealedBundleWarning`.

    Args:
        path: bundle folder holding ``model.json`` and ``model.pt`` (or that ``model.json``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (cuda when available) or any torch device.
        precision: arithmetic of the network (the log-mel front end always runs in
            float32): ``"fp32"`` (default, the reference); ``"bf16"``: bfloat16 autocast
            (fast on GPUs and on CPUs with AVX512-BF16/AMX); ``"int8"`` (CPU only): int8
            dynamic quantisation of every linear layer, and for transformer models
            (``arch`` ``"hf"`` or ``"ssl_frozen"``) the convolutions in bf16 where the CPU has bf16 kernels
            (:func:`ser.models.quantize.quantize_for_cpu`). Both reduced precisions move class
            probabilities by about 1e-3 against fp32; classical bundles ignore it.
        runtime: ``"torch"`` (default) or ``"onnx"``: the bundle's ONNX copy (written by
            :func:`export_onnx`, checked against the weights) runs in ``onnxruntime`` on the
            CPU, fp32 only; for log-mel models the front end stays in torch
            (:mod:`ser.models.onnx_runtime`). Probabilities within 1e-4 of ``"torch"``.

    Returns:
        The :class:`Bundle`, model in eval mode (a ``ClassicalBundle`` for a classical
        bundle, a ``DimensionalBundle`` for a dimensional one).

    Raises:
        FileNotFoundError: ``model.json`` or ``model.pt`` is missing.
        ser.models.integrity.BundleIntegrityError: (a ``ValueError``) ``model.json`` or
            the weights changed after the bundle was written; names the keys that changed.
        ValueError: malformed ``model.json``, weights that do not fit the architecture,
            an unknown precision, or ``"int8"`` on a GPU; with ``runtime="onnx"``: a
            bundle without an ONNX copy, a stale copy, a reduced precision or a GPU.
    """
    folder = bundle_folder(path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    if runtime == "onnx" and (precision != "fp32" or resolve_device(device).type != "cpu"):
        raise ValueError(f"runtime 'onnx' runs fp32 on the CPU; got precision {precision!r} on {device!r}")
    meta = read_bundle_meta(folder)  # names the file when it is missing, malformed or too new
    if runtime == "onnx":
        _check_onnx_arch(folder, meta)
    if is_ensemble_bundle(folder):  # each member is checked (seal included) as it loads
        return load_ensemble_bundle(folder, precision=precision,
                                    load_member=lambda d: load_bundle(d, device=device, precision=precision))
    classical, dimensional = _is_classical_bundle(folder), is_dimensional_bundle(folder)
    if not (classical or dimensional) and meta["arch"] not in ARCHITECTURES:
        raise ValueError(f"{folder / 'model.json'} names an unknown model family or architecture "
                         f"{meta['arch']!r}; this code loads {', '.join(sorted(ARCHITECTURES))}, "
                         f"classical:<estimator> and the {DIMENSIONAL_FAMILY!r} family")
    integrity.check_seal(folder, meta)  # refuses a model.json edited after the bundle was written
    if classical:
        return load_classical_bundle(folder)
    if dimensional:
        return load_dimensional_bundle(folder, device=device, precision=precision)
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
    if runtime == "onnx":
        onnx_path = check_entry(folder, meta, weights_sha256=_weights_sha256(meta, weights))
        model = onnx_model(model, onnx_path, arch=meta["arch"])
    if precision == "int8":
        if dev.type != "cpu":
            raise ValueError(f"precision 'int8' runs on the CPU only; on {dev} use 'bf16'")
        if meta["arch"] in TRANSFORMER_ARCHS:
            model = quantize_for_cpu(model, inplace=True)
        else:
            model = quantize_linears(model)
    return Bundle(path=folder, meta=meta, model=model, device=dev, precision=precision, runtime=runtime)


def _check_onnx_arch(folder: Path, meta: Mapping[str, Any]) -> None:
    if str(meta.get("arch")) not in ONNX_ARCHS or meta.get("family") in (DIMENSIONAL_FAMILY, "ensemble"):
        raise ValueError(f"model bundle {folder}: ONNX covers the architectures "
                         f"{', '.join(ONNX_ARCHS)}; this bundle is {meta.get('family') or meta.get('arch')!r}")


def _weights_sha256(meta: Mapping[str, Any], weights: Path) -> str:
    sealed = (meta.get(integrity.SEAL_KEY) or {}).get("weights_sha256")
    if sealed:  # check_seal has compared it with the file
        return str(sealed)
    h = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_onnx(path: str | os.PathLike[str]) -> Path:
    """Write an ONNX copy of a bundle's network (``model.onnx``) and record it in
    ``model.json["runtime"]["onnx"]`` (through the seal's writer; nothing else changes).

    Log-mel models export their spectrogram body (the front end stays in torch), ``hf``
    models the whole waveform-to-logits network (:mod:`ser.models.onnx_runtime`).
    ``load_bundle(path, runtime="onnx")`` runs it.

    Args:
        path: the bundle folder (or its ``model.json``).

    Returns:
        Path of ``model.onnx``.

    Raises:
        ValueError: a bundle whose architecture does not export (classical, ensemble,
            dimensional, ``ssl_frozen``), or one edited after it was written.
        FileNotFoundError: no bundle there.
    """
    folder = bundle_folder(path)
    meta = read_bundle_meta(folder)
    _check_onnx_arch(folder, meta)
    bundle = load_bundle(folder)  # checks the seal
    if not isinstance(bundle, Bundle):
        raise ValueError(f"model bundle {folder} is not a network bundle; ONNX export needs one")
    onnx_path = export_network(bundle.model, arch=meta["arch"], window_samples=bundle.window_samples,
                               folder=folder)
    runtime = dict(meta.get("runtime") or {})
    runtime["onnx"] = onnx_entry(folder, arch=meta["arch"],
                                 weights_sha256=_weights_sha256(meta, folder / "model.pt"))
    integrity.write_sealed_meta(folder, {**meta, "runtime": runtime}, update=True)
    return onnx_path


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
    folder = bundle_folder(path)
    meta = read_bundle_meta(folder)
    meta.setdefault("metrics", {})[split] = dict(metrics)
    return integrity.write_sealed_meta(folder, meta, update=True)
