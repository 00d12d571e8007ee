"""Project paths, anchored on the package, never on the working directory.

JupyterLab, papermill and Quarto each start in a different directory, so every
path is derived from the location of this file. Two environment variables let
tests and users redirect the generated folders without touching code:

- ``SER_DATA_DIR``: replaces ``<root>/data`` (inputs: demo data, raw corpora, tables)
- ``SER_RESULTS_DIR``: replaces ``<root>/results`` (models, tables, figures, site)
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT: Path = Path(__file__).resolve().parents[2]
"""Project root (the folder holding ``ser/``, ``notebooks/``, ``params/``)."""

NOTEBOOKS: Path = ROOT / "notebooks"
PARAMS: Path = ROOT / "params"
PROFILES: Path = PARAMS / "profiles"


def data_dir() -> Path:
    """Root of generated/input data (``data/`` unless ``SER_DATA_DIR`` is set)."""
    return Path(os.environ.get("SER_DATA_DIR") or ROOT / "data").resolve()


def results_dir() -> Path:
    """Root of run outputs (``results/`` unless ``SER_RESULTS_DIR`` is set)."""
    return Path(os.environ.get("SER_RESULTS_DIR") or ROOT / "results").resolve()


def demo_dir() -> Path:
    """Folder of the generated demo data: ``corpus/``, ``cohort/``, ``truth.json``."""
    return data_dir() / "demo"


def tables_dir() -> Path:
    """Tables produced by stages: ``results/tables``."""
    return results_dir() / "tables"


def models_dir() -> Path:
    """Model bundles: ``results/models/<name>/``."""
    return results_dir() / "models"


def figures_dir() -> Path:
    """Figures saved by the notebooks: ``results/figures``."""
    return results_dir() / "figures"


def executed_notebooks_dir() -> Path:
    """Executed copies of the notebooks: ``results/notebooks``."""
    return results_dir() / "notebooks"


def site_dir() -> Path:
    """Rendered website: ``results/site``."""
    return results_dir() / "site"


def resolve(path: str | os.PathLike[str], *, base: Path | None = None) -> Path:
    """Resolve a user path: absolute stays, relative is taken from the project root.

    Args:
        path: a path as written in params (absolute or relative to ``base``).
        base: folder that relative paths are taken from (default: project root).

    Returns:
        The absolute path.
    """
    p = Path(path).expanduser()
    return p if p.is_absolute() else ((base or ROOT) / p).resolve()
