"""Provenance: resolved params, git commit, package versions and input hashes.

Every stage writes ``results/provenance/<stage>.json`` next to its outputs
(SpeechBrain saves its resolved hparams into every experiment folder; we do too).
The record is written atomically (:mod:`ser.core.atomic`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ser.core import paths
from ser.core.atomic import atomic_write_json

#: Packages whose versions are recorded with every run.
TRACKED_PACKAGES: tuple[str, ...] = (
    "numpy", "scipy", "pandas", "scikit-learn", "torch", "transformers", "librosa",
    "soundfile", "praat-parselmouth", "webrtcvad-wheels", "statsmodels", "pingouin",
    "seaborn", "matplotlib", "papermill",
)


def git_commit(*, root: Path = paths.ROOT) -> str | None:
    """Current git commit of the project (with ``-dirty`` when the tree has changes)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` when a package is absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def file_sha256(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_inputs(inputs: Iterable[str | os.PathLike[str]]) -> dict[str, Any]:
    """Hash input files and folders without exposing their locations.

    A folder is hashed over the sorted relative names and contents of its files.

    Returns:
        ``{"combined": sha256, "items": [{"name": <basename of a table or folder>,
        "files": n, "sha256": ...}]}``. Only table/folder basenames are kept, never
        full paths, so provenance can be shown in the report.
    """
    items = []
    combined = hashlib.sha256()
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            h = hashlib.sha256()
            files = sorted(q for q in p.rglob("*") if q.is_file())
            for q in files:
                h.update(str(q.relative_to(p)).encode())
                h.update(file_sha256(q).encode())
            digest, n = h.hexdigest(), len(files)
        elif p.is_file():
            digest, n = file_sha256(p), 1
        else:
            raise FileNotFoundError(f"provenance: input {p} does not exist")
        items.append({"name": p.name, "files": n, "sha256": digest})
        combined.update(digest.encode())
    return {"combined": combined.hexdigest(), "items": items}


def write_provenance(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    stage: str,
    params: Mapping[str, Any],
    inputs: Iterable[str | os.PathLike[str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<out_dir>/<stage>.json`` with params, commit, versions and input hashes.

    Args:
        out_dir: folder for the record (default ``results/provenance``).
        stage: stage name, e.g. ``"02_train"``.
        params: the resolved parameters the stage ran with.
        inputs: files or folders the stage read (hashed, not located).
        extra: anything else worth keeping (e.g. output names, counts).

    Returns:
        Path of the JSON file.
    """
    out = Path(out_dir) if out_dir is not None else paths.results_dir() / "provenance"
    record = {
        "stage": stage,
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "params": dict(params),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "inputs": hash_inputs(inputs),
        **(dict(extra) if extra else {}),
    }
    return atomic_write_json(out / f"{stage}.json", record)
