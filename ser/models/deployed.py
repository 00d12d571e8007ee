"""The deployed model: ``results/models/deployed.json`` names the bundle that stage 03 chose.

Stage 03 compares the candidate bundles of stage 02 and writes ``deployed.json``
(:func:`write_deployed`, atomically): ``{"model_name": <bundle folder name>, "uar": ...,
...}``. Stage 04 and ``ser predict`` accept the model name ``"deployed"``, which
:func:`resolve_model_name` turns into that bundle's name.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ser.core import atomic

#: The model name that means "the bundle stage 03 deployed".
DEPLOYED = "deployed"
#: File name of the record, in the models folder.
DEPLOYED_FILE = "deployed.json"


def write_deployed(models_dir: str | os.PathLike[str], *, model_name: str,
                   info: Mapping[str, Any] | None = None) -> Path:
    """Write ``<models_dir>/deployed.json`` atomically.

    Args:
        models_dir: the models folder (``paths.models_dir()``).
        model_name: folder name of the deployed bundle (must hold ``model.json``).
        info: further JSON-serialisable entries (e.g. ``uar``, ``family``, ``selected_by``).

    Returns:
        Path of ``deployed.json``.

    Raises:
        FileNotFoundError: ``<models_dir>/<model_name>/model.json`` does not exist.
        ValueError: ``model_name`` is not a plain folder name or is ``"deployed"``.
    """
    folder = Path(models_dir)
    if not model_name or Path(model_name).name != model_name or model_name == DEPLOYED:
        raise ValueError(f"model_name must be a bundle folder name under {folder}; got {model_name!r}")
    if not (folder / model_name / "model.json").is_file():
        raise FileNotFoundError(f"cannot deploy {model_name!r}: "
                                f"{folder / model_name / 'model.json'} is missing")
    record = {"model_name": model_name, **dict(info or {}),
              "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return atomic.atomic_write_json(folder / DEPLOYED_FILE, record)


def read_deployed(models_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The record in ``<models_dir>/deployed.json``.

    Raises:
        FileNotFoundError: no ``deployed.json`` (run stage 03_evaluate first).
        ValueError: not a JSON object with a ``model_name``.
    """
    path = Path(models_dir) / DEPLOYED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: no model has been deployed yet; run stage 03_evaluate "
                                "(it compares stage 02's candidates and deploys the best), or name a bundle")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun stage 03_evaluate") from err
    if not isinstance(record, dict) or not isinstance(record.get("model_name"), str):
        raise ValueError(f"{path} must be a JSON object with a 'model_name'; rerun stage 03_evaluate")
    return record


def resolve_model_name(name: str, *, models_dir: str | os.PathLike[str]) -> str:
    """``name`` itself, or the deployed bundle's name when ``name`` is ``"deployed"``.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_deployed` when ``name`` is ``"deployed"``.
    """
    if str(name) != DEPLOYED:
        return str(name)
    return read_deployed(models_dir)["model_name"]
