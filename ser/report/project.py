"""The report's Quarto project: its sources at the repository root and how report files are written.

``_quarto.yml`` (navbar, formats) and the page sources ``index.qmd`` and ``methods.qmd``
are shared by the Quarto render (:mod:`ser.report.quarto`) and the fallback
(:mod:`ser.report.fallback`); the navbar also names the stages a report shows
(:func:`navbar_stages`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ser.core import paths
from ser.core.atomic import atomic_write_text

#: Quarto sources, shared by both rendering paths.
QUARTO_CONFIG: Path = paths.ROOT / "_quarto.yml"
PAGES: tuple[str, ...] = ("index.qmd", "methods.qmd")


def write_text(path: Path, text: str) -> Path:
    """Atomic write, readable by all (a site is served or shared; mkstemp makes 0600)."""
    atomic_write_text(path, text)
    path.chmod(0o644)
    return path


def quarto_config() -> dict[str, Any]:
    """The parsed ``_quarto.yml``.

    Raises:
        FileNotFoundError: the file is missing.
    """
    if not QUARTO_CONFIG.is_file():
        raise FileNotFoundError(f"{QUARTO_CONFIG} is missing: the report needs the Quarto "
                                "project file at the repository root")
    return yaml.safe_load(QUARTO_CONFIG.read_text(encoding="utf-8")) or {}


def navbar_stages() -> list[str]:
    """Stage names linked from ``_quarto.yml``'s navbar (``results/notebooks/<stage>.ipynb``)."""
    out = []
    for item in walk_nav(quarto_config().get("website", {}).get("navbar", {})):
        href = str(item.get("href", ""))
        if href.startswith("results/notebooks/") and href.endswith(".ipynb"):
            out.append(Path(href).stem)
    return out


def walk_nav(navbar: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Items of a ``_quarto.yml`` navbar, left then right, each followed by its menu items."""
    for side in ("left", "right"):
        for item in navbar.get(side, []) or []:
            if isinstance(item, Mapping):
                yield item
                for sub in item.get("menu", []) or []:
                    if isinstance(sub, Mapping):
                        yield sub
