"""Ensembles of model bundles: the weighted mean of the members' class probabilities.

An ensemble bundle is a folder ``results/models/<name>/`` with only a ``model.json``:
``family: "ensemble"``, ``members`` (folder names of other bundles, relative to the
ensemble's parent folder, e.g. ``["demo_svm", "demo_cnn"]``), ``weights`` (summing to 1),
and the ``labels``, ``sample_rate``, ``window_s`` and ``pitch_norm_hz`` every member shares.
:func:`ser.models.bundle.load_bundle` loads it (members through ``load_bundle`` too) as an
:class:`EnsembleBundle`, which has the interface inference reads
(:class:`ser.inference.protocol.ModelBundle`; :class:`ser.inference.protocol.SpeakerNormBundle`
when a member needs a speaker reference), so stage 04 and ``ser predict`` use it unchanged.

The members' probabilities are averaged *before* their own calibration (each member
:meth:`uncalibrated`); a calibration stored in the ensemble's ``model.json`` (a temperature
fitted on the ensemble's out-of-fold predictions) is applied to the average
(:func:`ser.models.meta.tempered_proba`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ser.core import atomic, provenance
from ser.models.meta import calibration_temperature, tempered_proba, without_calibration
from ser.models.window import window_samples

#: ``model.json["family"]`` of an ensemble bundle.
FAMILY = "ensemble"
#: ``model.json["arch"]`` of an ensemble bundle.
ARCH = "ensemble:mean"


class Member(Protocol):
    """What the ensemble needs from a member bundle (any bundle :func:`load_bundle` returns
    that gives ``p_`` probabilities)."""

    labels: list[str]
    output_prefix: str
    sample_rate: int
    window_s: float
    path: Path
    heavy: bool
    preferred_batch_size: int
    pitch_norm_hz: float
    speaker_norm: bool

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray: ...

    def predict_proba_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                             batch_size: int = 64) -> np.ndarray: ...

    def uncalibrated(self) -> Member: ...


def is_ensemble_bundle(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder/model.json`` names the family ``"ensemble"`` (False when unreadable)."""
    try:
        meta = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("family") == FAMILY


def member_dirs(folder: str | os.PathLike[str], meta: Mapping[str, Any] | None = None) -> list[Path]:
    """The member bundle folders of the ensemble in ``folder`` (``members`` are names relative
    to ``folder``'s parent).

    Raises:
        ValueError: ``members`` is missing, empty, not a list of plain folder names, or names
            the ensemble itself.
    """
    folder = Path(folder)
    if meta is None:
        meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    names = meta.get("members")
    where = folder / "model.json"
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where}: an ensemble needs a non-empty list 'members' of bundle folder names")
    for n in names:
        if not isinstance(n, str) or not n or Path(n).name != n or n in (".", ".."):
            raise ValueError(f"{where}: member {n!r} must be the folder name of a bundle beside the ensemble")
        if n == folder.name:
            raise ValueError(f"{where}: the ensemble cannot be its own member")
    return [folder.parent / n for n in names]


def _weights(weights: Sequence[float] | None, n: int, where: str) -> list[float]:
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"{where}: weights must be {n} non-negative numbers with a positive sum; "
                         f"got {weights}")
    return [float(x) for x in w / w.sum()]


class EnsembleBundle:
    """Weighted mean of the members' probabilities (see the module docstring).

    Attributes:
        path, meta, members (loaded member bundles, uncalibrated), weights (sum 1),
        labels, sample_rate, window_s, window_samples, pitch_norm_hz: as every bundle.
        output_prefix: ``"p_"``; precision: the members' precision option as loaded.
    """

    output_prefix: str = "p_"

    def __init__(self, members: Sequence[Member], meta: Mapping[str, Any], *, path: str | os.PathLike[str],
                 precision: str = "fp32") -> None:
        self.path = Path(path)
        self.meta = dict(meta)
        self.members = list(members)
        self.weights = _weights(meta.get("weights"), len(self.members), str(self.path / "model.json"))
        self.labels: list[str] = list(meta["labels"])
        self.sample_rate = int(meta["sample_rate"])
        self.window_s = float(meta["window_s"])
        self.window_samples = window_samples(self.window_s, self.sample_rate)
        self.pitch_norm_hz = float(meta.get("pitch_norm_hz") or 0.0)
        self.precision = precision

    @property
    def heavy(self) -> bool:
        """True when a member is (a transformer backbone that needs every core)."""
        return any(m.heavy for m in self.members)

    @property
    def preferred_batch_size(self) -> int:
        """The smallest preferred batch of the members."""
        return min(m.preferred_batch_size for m in self.members)

    @property
    def speaker_norm(self) -> bool:
        """Whether a member needs a speaker reference (:meth:`with_reference`)."""
        return any(m.speaker_norm for m in self.members)

    @property
    def temperature(self) -> float:
        """Temperature applied to the averaged probabilities (1.0 when uncalibrated)."""
        return calibration_temperature(self.meta)

    def uncalibrated(self) -> EnsembleBundle:
        """A copy without the ensemble's own calibration (members are uncalibrated anyway)."""
        return EnsembleBundle(self.members, without_calibration(self.meta), path=self.path,
                              precision=self.precision)

    # ---- speaker normalisation (delegated to the members that need it)
    @property
    def reference(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """The members' speaker references merged (``{feature_set: (mean, std)}``), or None."""
        refs = [m.reference for m in self.members if m.speaker_norm]  # type: ignore[attr-defined]
        if not refs or any(r is None for r in refs):
            return None
        return {k: v for r in refs for k, v in r.items()}

    def window_features(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """``{feature_set: float32 [n, d]}`` of every member that needs a speaker reference."""
        out: dict[str, np.ndarray] = {}
        for m in self.members:
            if m.speaker_norm:
                out.update(m.window_features(windows))  # type: ignore[attr-defined]
        return out

    def features_at(self, signal: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
        """``{feature_set: float32 [N, d]}`` of the windows ``signal[s:s + window_samples]`` of
        every member that needs a speaker reference, as their ``predict_starts`` computes them."""
        out: dict[str, np.ndarray] = {}
        for m in self.members:
            if m.speaker_norm:
                out.update(m.features_at(signal, starts))  # type: ignore[attr-defined]
        return out

    def with_reference(self, reference: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> EnsembleBundle:
        """A copy whose speaker-normalised members z-score with ``{feature_set: (mean, std)}``."""
        members = [m.with_reference(reference) if m.speaker_norm else m  # type: ignore[attr-defined]
                   for m in self.members]
        return EnsembleBundle(members, self.meta, path=self.path, precision=self.precision)

    # ---- prediction
    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """Weighted mean of the members' probabilities, then the ensemble's temperature.

        Args:
            windows: float32 ``[n, window_samples]`` at :attr:`sample_rate` (pitch-normalised
                by the caller as :attr:`pitch_norm_hz` says, like any bundle).
            batch_size: windows per forward pass of each member.

        Returns:
            float32 ``[n, n_labels]``, rows sum to 1.
        """
        w = np.asarray(windows, dtype=np.float32)
        if w.ndim != 2 or w.shape[1] != self.window_samples:
            raise ValueError(f"windows must be float32 [n, {self.window_samples}] "
                             f"(ensemble {self.path.name}: {self.window_s:g} s at {self.sample_rate} Hz); "
                             f"got shape {w.shape}")
        if len(w) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        p = sum(wt * m.predict_proba(w, batch_size=batch_size).astype(np.float64)
                for wt, m in zip(self.weights, self.members, strict=True))
        return tempered_proba(p, self.temperature)

    def predict_proba_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                             batch_size: int = 64) -> np.ndarray:
        """:meth:`predict_proba` of the windows ``signal[s:s + window_samples]``, each member
        predicting them its own way (shared log-mel frames, block-pooled features)."""
        if len(starts) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        p = sum(wt * m.predict_proba_starts(signal, starts, batch_size=batch_size).astype(np.float64)
                for wt, m in zip(self.weights, self.members, strict=True))
        return tempered_proba(p, self.temperature)

    def predict_starts(self, signal: np.ndarray, starts: np.ndarray, *,
                       batch_size: int = 64) -> np.ndarray:
        """The inference interface's name of :meth:`predict_proba_starts`."""
        return self.predict_proba_starts(signal, starts, batch_size=batch_size)


def _check_members(members: Sequence[Member], where: Path) -> None:
    first = members[0]
    for m in members:
        if m.output_prefix != "p_":
            raise ValueError(f"{where}: member {m.path.name} gives {m.output_prefix}<dimension> values, "
                             "not class probabilities; an ensemble averages probabilities")
        for attr in ("labels", "sample_rate", "window_s", "pitch_norm_hz"):
            if getattr(m, attr) != getattr(first, attr):
                raise ValueError(f"{where}: members must share {attr}; {first.path.name} has "
                                 f"{getattr(first, attr)!r}, {m.path.name} has {getattr(m, attr)!r}")


def load_ensemble_bundle(path: str | os.PathLike[str], *, load_member: Callable[[Path], Member],
                         precision: str = "fp32") -> EnsembleBundle:
    """Load an ensemble bundle; each member through ``load_member`` (``load_bundle``).

    Raises:
        FileNotFoundError: the ensemble's or a member's ``model.json`` is missing.
        ValueError: bad ``members`` / ``weights``, or members that differ in labels, window,
            sample rate or pitch register from each other or from the ensemble's ``model.json``.
    """
    folder = Path(path)
    where = folder / "model.json"
    meta = json.loads(where.read_text(encoding="utf-8"))
    members = [load_member(d) for d in member_dirs(folder, meta)]
    _check_members(members, where)
    members = [m.uncalibrated() for m in members]
    first = members[0]
    for attr in ("labels", "sample_rate", "window_s"):
        if meta.get(attr) != getattr(first, attr) and not (attr == "window_s" and
                                                           float(meta[attr]) == first.window_s):
            raise ValueError(f"{where}: {attr} {meta.get(attr)!r} differs from its members' "
                             f"{getattr(first, attr)!r}; rewrite the ensemble with save_ensemble_bundle")
    return EnsembleBundle(members, meta, path=folder, precision=precision)


def save_ensemble_bundle(out_dir: str | os.PathLike[str], *, members: Sequence[str],
                         load_member: Callable[[Path], Member], weights: Sequence[float] | None = None,
                         train_params: Mapping[str, Any] | None = None,
                         split: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Write an ensemble bundle's ``model.json`` beside its members.

    Args:
        out_dir: the ensemble's folder (created), e.g. ``results/models/demo_ensemble``;
            its parent holds the members.
        members: member folder names (relative to ``out_dir``'s parent).
        load_member: loads a member folder (``ser.models.bundle.load_bundle``); used to check
            that members share labels, window, sample rate and pitch register.
        weights: one weight per member (normalised to sum 1); default equal weights.
        train_params: anything else about how it was made (e.g. the CV seconds).
        split: speakers per partition.

    Returns:
        The ensemble folder.

    Raises:
        ValueError: no members, bad weights, members that differ (names the members).
    """
    out = Path(out_dir)
    names = [str(n) for n in members]
    draft = {"members": names}
    dirs = member_dirs(out, draft)
    where = out / "model.json"
    loaded = [load_member(d) for d in dirs]
    _check_members(loaded, where)
    first = loaded[0]
    meta = {
        "family": FAMILY, "format": 2, "arch": ARCH,
        "arch_params": {"members": names, "weights": _weights(weights, len(names), str(where))},
        "members": names, "weights": _weights(weights, len(names), str(where)),
        "labels": list(first.labels), "sample_rate": int(first.sample_rate),
        "window_s": float(first.window_s),
        "features": {"kind": "ensemble"},
        **({"pitch_norm_hz": float(first.pitch_norm_hz)} if first.pitch_norm_hz > 0 else {}),
        "speaker_norm": any(m.speaker_norm for m in loaded),
        "train_params": dict(train_params or {}),
        "split": {k: list(v) for k, v in (split or {}).items()},
        "metrics": {}, "git_commit": provenance.git_commit(),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic.atomic_write_json(where, meta)
    return out
