"""A model bundle's seal: the fingerprint of its weights and of the ``model.json`` keys
that shape its outputs, stored in ``model.json`` when the bundle is written, and checked
when it is loaded.

``model.json["integrity"]`` holds ``fingerprint`` (the SHA-256 of
:func:`ser.models.bundle.bundle_fingerprint`: weights + shaping keys), ``weights_sha256``
and ``keys_sha256`` (one SHA-256 per shaping key), so that a bundle whose ``model.json``
was edited by hand afterwards (``window_s`` 2 → 5, which would silently run the model on
the wrong window) is refused with the keys that changed. Every library function that
writes ``model.json`` (training, stage 03's calibration and metrics, the classical and
dimensional writers) writes it through :func:`write_sealed_meta`, so legitimate updates
keep the seal true. Bundles written before the seal existed load with an
:class:`UnsealedBundleWarning`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ser.core import atomic
from ser.models.ensemble_bundle import FAMILY as ENSEMBLE_FAMILY

#: ``model.json`` keys that decide what a bundle computes (timestamps and metrics excluded).
FINGERPRINT_KEYS: tuple[str, ...] = ("labels", "sample_rate", "window_s", "features", "arch",
                                     "arch_params", "calibration", "format")
#: Fingerprinted only when present, so bundles written before the key existed keep their fingerprint.
FINGERPRINT_OPTIONAL_KEYS: tuple[str, ...] = ("pitch_norm_hz",)
#: The weights file of a deep, classical or dimensional bundle (the first one present counts).
WEIGHTS_FILES: tuple[str, ...] = ("model.pt", "model.joblib", "model.safetensors")
#: Where the seal is stored in ``model.json``.
SEAL_KEY = "integrity"


class BundleIntegrityError(ValueError):
    """A bundle's ``model.json`` or weights changed after the bundle was written."""


class UnsealedBundleWarning(UserWarning):
    """A bundle written before seals existed: it cannot be checked for later edits."""


def weights_file(folder: str | os.PathLike[str]) -> Path | None:
    """The bundle's weights file (:data:`WEIGHTS_FILES`, first present), or None."""
    return next((Path(folder) / n for n in WEIGHTS_FILES if (Path(folder) / n).is_file()), None)


def shaping_values(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``meta`` that shape a bundle's outputs, as fingerprinted (the
    calibration's fitting time left out; optional keys only when set)."""
    keyed = {k: meta.get(k) for k in FINGERPRINT_KEYS}
    if isinstance(keyed["calibration"], dict):  # when it was fitted does not shape the outputs
        keyed["calibration"] = {k: v for k, v in keyed["calibration"].items() if k != "created_utc"}
    keyed.update({k: meta[k] for k in FINGERPRINT_OPTIONAL_KEYS if meta.get(k)})
    return keyed


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_hashes(weights: Path, keyed: Mapping[str, Any]) -> tuple[str, str]:
    """``(fingerprint, weights_sha256)``, reading the weights once."""
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode())
    w = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            w.update(chunk)
    return h.hexdigest(), w.hexdigest()


def fingerprint(meta: Mapping[str, Any], weights: Path) -> str:
    """SHA-256 of ``weights`` and :func:`shaping_values` of ``meta``
    (:func:`ser.models.bundle.bundle_fingerprint` of a bundle on disk)."""
    return _file_hashes(weights, shaping_values(meta))[0]


def seal(meta: Mapping[str, Any], weights: Path) -> dict[str, Any]:
    """``meta`` with its seal (``meta["integrity"]``) for the weights file ``weights``."""
    keyed = shaping_values(meta)
    fp, w = _file_hashes(weights, keyed)
    return {**{k: v for k, v in meta.items() if k != SEAL_KEY},
            SEAL_KEY: {"fingerprint": fp, "weights_sha256": w,
                       "keys_sha256": {k: _sha(v) for k, v in keyed.items()}}}


def write_sealed_meta(folder: str | os.PathLike[str], meta: Mapping[str, Any], *,
                      update: bool = False) -> Path:
    """Write ``<folder>/model.json`` atomically with its seal (the weights file must be
    written first). The one way library code writes a bundle's ``model.json``.

    Args:
        folder: bundle folder.
        meta: the new ``model.json`` content (a stale seal in it is replaced).
        update: ``meta`` updates the bundle's current ``model.json`` (metrics, calibration):
            the current file is checked first (:func:`check_seal`), so a hand edit is never
            sealed as if it were legitimate.

    An ensemble bundle (``family: ensemble``) has no weights of its own (its members are
    sealed bundles, each checked when loaded): its ``model.json`` is written atomically
    without a seal, e.g. when stage 03 stores the ensemble's calibration or metrics.

    Raises:
        FileNotFoundError: the folder holds no weights file (:data:`WEIGHTS_FILES`).
        BundleIntegrityError: with ``update``, the current bundle was edited by hand.
    """
    folder = Path(folder)
    if meta.get("family") == ENSEMBLE_FAMILY:
        return atomic.atomic_write_json(folder / "model.json", {k: v for k, v in meta.items() if k != SEAL_KEY})
    weights = weights_file(folder)
    if weights is None:
        raise FileNotFoundError(f"model bundle {folder} has no {' or '.join(WEIGHTS_FILES)}; "
                                "write the weights before model.json")
    if update:
        current = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        if isinstance(current.get(SEAL_KEY), dict):  # an unsealed (old) bundle is sealed now
            check_seal(folder, current)
    return atomic.atomic_write_json(folder / "model.json", seal(meta, weights))


def check_seal(folder: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
    """Refuse a bundle edited after it was written; warn for one without a seal.

    Nothing is checked when the weights file is missing (the loader reports that).

    Raises:
        BundleIntegrityError: the shaping keys of ``model.json`` or the weights differ from
            those sealed; the message names ``model.json`` and the keys that changed.
    """
    folder = Path(folder)
    weights = weights_file(folder)
    if weights is None:
        return
    stored = meta.get(SEAL_KEY)
    if not isinstance(stored, dict) or "fingerprint" not in stored:
        warnings.warn(f"model bundle {folder} was written before bundles stored a fingerprint "
                      "of their weights and settings: later edits to its model.json cannot be "
                      "detected; re-save it (e.g. rerun stage 02/03) to seal it",
                      UnsealedBundleWarning, stacklevel=3)
        return
    keyed = shaping_values(meta)
    fp, w = _file_hashes(weights, keyed)
    if fp == stored["fingerprint"]:
        return
    old_keys = stored.get("keys_sha256") or {}
    changed = sorted(k for k in set(keyed) | set(old_keys) if old_keys.get(k) != _sha(keyed.get(k)))
    what = []
    if changed:
        what.append(f"model.json keys {', '.join(changed)} changed")
    if stored.get("weights_sha256") not in (None, w):
        what.append(f"the weights ({weights.name}) changed")
    raise BundleIntegrityError(
        f"{folder / 'model.json'}: the bundle was modified after it was saved "
        f"({'; '.join(what) or 'its fingerprint differs'}): its settings no longer describe "
        "its weights. Restore the bundle as it was written, or retrain it; update a bundle "
        "only through ser's own functions (stage 02/03)")
