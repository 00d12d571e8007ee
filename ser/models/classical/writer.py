"""Writing a classical model bundle: ``model.json`` + ``model.joblib`` for windowed inference.

Read back with :func:`ser.models.classical.bundle.load_classical_bundle` (or
:func:`ser.models.bundle.load_bundle`, which recognises a classical bundle).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib

from ser.core import atomic, provenance
from ser.models.classical.ensemble import ClassicalEnsemble
from ser.models.classical.estimator import ClassicalModel
from ser.models.classical.features import check_feature_set, check_sample_rate, feature_config
from ser.models.integrity import write_sealed_meta


def save_classical_bundle(
    out_dir: str | os.PathLike[str],
    model: ClassicalModel | ClassicalEnsemble,
    *,
    labels: Sequence[str],
    feature_set: str | Sequence[str],
    sample_rate: int,
    window_s: float,
    metrics: Mapping[str, Any] | None = None,
    split: Mapping[str, Sequence[str]] | None = None,
    train_params: Mapping[str, Any] | None = None,
    pitch_norm_hz: float = 0.0,
) -> Path:
    """Write ``model.json`` and ``model.joblib`` for windowed inference.

    Args:
        out_dir: bundle folder (created), e.g. ``results/models/emodb_compare_svm``.
        model: a fitted :class:`ClassicalModel` (or :class:`ClassicalEnsemble`).
        labels: class labels in the order of ``predict_proba`` columns; must equal the
            model's classes as a set (the bundle reorders to this order).
        feature_set: the model's feature set (an ensemble: its members' sets, in order; a
            single model fitted on several sets side by side, early fusion: those sets in
            column order).
        sample_rate: audio rate (Hz) the features were computed at.
        window_s: analysis window length (s) the bundle expects.
        metrics: evaluation figures to keep (e.g. the LOSO ``overall``).
        split: speakers per partition (``{"train": [...], "val": [...], "test": [...]}``).
        train_params: anything else about the training run.
        pitch_norm_hz: register (Hz) the training audio was pitch-normalised to per speaker
            (:mod:`ser.signal.pitchnorm`), which inference then applies per recording; 0: off.

    Returns:
        The bundle folder.

    Raises:
        ValueError: unfitted model, labels that differ from the model's classes, a
            feature set that does not match an ensemble's members, or a bad window.
    """
    labels = [str(x) for x in labels]
    if getattr(model, "classes_", None) is None:
        raise ValueError("save_classical_bundle: the model is not fitted")
    if sorted(labels) != sorted(str(c) for c in model.classes_):
        raise ValueError(f"labels {labels} differ from the model's classes {list(model.classes_)}")
    check_sample_rate(sample_rate)
    if not float(window_s) > 0:
        raise ValueError(f"window_s={window_s} must be > 0 seconds")
    if isinstance(model, ClassicalEnsemble):
        sets = [m.feature_set for m in model.members]
        given = [feature_set] if isinstance(feature_set, str) else list(feature_set)
        if given != sets:
            raise ValueError(f"feature_set {given} must list the ensemble members' sets {sets}")
        arch = "classical:ensemble(" + ",".join(m.name for m in model.members) + ")"
        arch_params = model.describe()
    else:
        sets = [feature_set] if isinstance(feature_set, str) else list(feature_set)
        if not sets or len(set(sets)) != len(sets):
            raise ValueError(f"feature_set {sets} must name one or more different feature sets")
        arch = f"classical:{model.estimator}"
        arch_params = model.describe()
    for s in sets:
        check_feature_set(s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "labels": labels,
        "sample_rate": int(sample_rate),
        "window_s": float(window_s),
        "features": {"kind": "functionals", "feature_sets": sets,
                     "configs": [feature_config(s, sample_rate=sample_rate) for s in sets]},
        "arch": arch,
        "arch_params": arch_params,
        "speaker_norm": bool(model.speaker_norm),
        **({"pitch_norm_hz": float(pitch_norm_hz)} if float(pitch_norm_hz) > 0 else {}),
        "train_params": dict(train_params or {}),
        "split": {k: list(v) for k, v in (split or {}).items()},
        "metrics": dict(metrics or {}),
        "git_commit": provenance.git_commit(),
        "packages": provenance.package_versions(("scikit-learn", "opensmile", "librosa", "numpy")),
    }
    atomic.atomic_write(out / "model.joblib", lambda f: joblib.dump(model, f))
    write_sealed_meta(out, meta)
    return out
