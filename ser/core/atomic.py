"""Atomic writes: a temp file in the same folder, then ``os.replace``.

A crash leaves either the old file or none, never a half-written one; every table,
model file and record the project writes goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> Path:
    """Create ``path`` atomically: ``write(f)`` fills a temp file that then replaces it.

    A crash leaves either the old file or none, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def atomic_save_npy(path: str | os.PathLike[str], arr: Any) -> Path:
    """Save a NumPy array (``.npy`` format) to ``path`` atomically."""
    import numpy as np

    return atomic_write(path, lambda f: np.save(f, arr))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_csv(path: str | os.PathLike[str], df: pd.DataFrame, **kwargs: Any) -> Path:
    """Write a DataFrame as CSV (no index unless asked), atomically."""
    kwargs.setdefault("index", False)
    return atomic_write_text(path, df.to_csv(**kwargs))


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
