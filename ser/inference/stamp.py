"""The model stamp beside a window table: which model (name, precision, fingerprint)
computed it, so that a resumed run never mixes the windows of two models.

``windows.csv`` gets ``windows.model.json`` (:func:`model_stamp_path`) holding
:func:`model_stamp` (and, for a bundle that needs a speaker reference, a ``norm`` entry:
the normalisation unit and each recording's reference,
:func:`ser.inference.speaker_norm.norm_stamp`); it is written after the table, so a crash
in between leaves an old stamp and the rows are redone (stage 04) or the resume refused
(``ser predict``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ser.inference.protocol import ModelBundle
from ser.models.bundle import bundle_fingerprint


def model_stamp_path(out_csv: str | os.PathLike[str]) -> Path:
    """The file beside a window table that names the model which computed it
    (``windows.csv`` → ``windows.model.json``)."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}.model.json")


def model_name(bundle: ModelBundle) -> str:
    """Bundle folder name, with ``@bf16`` / ``@int8`` when not run in float32."""
    name = Path(bundle.path).name
    return name if bundle.precision == "fp32" else f"{name}@{bundle.precision}"


def model_stamp(bundle: ModelBundle) -> dict[str, Any]:
    """Model name (:func:`model_name`) and :func:`ser.models.bundle.bundle_fingerprint`
    (None when the folder holds no readable bundle)."""
    try:
        fingerprint = bundle_fingerprint(bundle.path)
    except (FileNotFoundError, ValueError):
        fingerprint = None
    return {"model": model_name(bundle), "fingerprint": fingerprint}


def read_stamp(path: Path) -> dict[str, Any] | None:
    """The stamp stored at ``path``; None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def same_model(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether two stamps name the same model (name, precision and fingerprint); a
    speaker-normalisation entry (``norm``) is compared separately."""
    return old is not None and all(old.get(k) == new.get(k) for k in ("model", "fingerprint"))
