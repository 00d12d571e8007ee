"""Reading executed notebooks: front matter, Quarto cell options and labelled figures."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import nbformat
import yaml

log = logging.getLogger(__name__)

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*(?:\n|\Z)", re.DOTALL)
_IMAGE_MIMES: tuple[str, ...] = ("image/png", "image/jpeg", "image/svg+xml")


@dataclasses.dataclass(frozen=True)
class Figure:
    """A labelled figure cell of an executed notebook.

    Attributes:
        label: Quarto label, e.g. ``"fig-confusion"``.
        caption: ``#| fig-cap`` text ("" when absent).
        alt: ``#| fig-alt`` text (falls back to the caption).
        images: ``(mime, data)`` per image output; data is base64 (PNG/JPEG) or SVG text.
    """

    label: str
    caption: str
    alt: str
    images: tuple[tuple[str, str], ...]


def read_notebook(path: Path) -> nbformat.NotebookNode | None:
    """The notebook at ``path``, or ``None`` (with a warning) when it cannot be read."""
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - an unreadable notebook is reported, not fatal
        log.warning("report: cannot read executed notebook %s (%s)", path.name, exc)
        return None


def front_matter(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """YAML front matter of a notebook's first cell (raw or markdown), or ``{}``."""
    if not nb.cells or nb.cells[0].cell_type not in ("raw", "markdown"):
        return {}
    meta, _ = split_front_matter(nb.cells[0].source)
    return meta


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Split ``---`` YAML front matter from markdown text.

    Returns:
        ``(metadata, body)``; ``({}, text)`` when there is no front matter.
    """
    m = _FRONT_MATTER.match(text.lstrip("\ufeff"))
    if not m:
        return {}, text
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError:
        return {}, text
    return (meta if isinstance(meta, dict) else {}), text[m.end():]


def cell_options(source: str) -> dict[str, Any]:
    """Quarto cell options (leading ``#| key: value`` lines) of a code cell."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("#|"):
            break
        lines.append(line[2:].strip() if line[2:3] != " " else line[3:])
    if not lines:
        return {}
    try:
        opts = yaml.safe_load("\n".join(lines)) or {}
    except yaml.YAMLError:
        return {}
    return opts if isinstance(opts, dict) else {}


def notebook_figures(nb: nbformat.NotebookNode) -> dict[str, Figure]:
    """Labelled figure cells of an executed notebook, keyed by label."""
    figures: dict[str, Figure] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        opts = cell_options(cell.source)
        label = opts.get("label")
        if not label:
            continue
        images = []
        for out in cell.get("outputs", []):
            data = out.get("data", {}) if out.get("output_type") in ("display_data",
                                                                     "execute_result") else {}
            for mime in _IMAGE_MIMES:
                if mime in data:
                    payload = data[mime]
                    payload = "".join(payload) if isinstance(payload, list) else str(payload)
                    images.append((mime, payload.replace("\n", "") if mime != "image/svg+xml"
                                   else payload))
                    break
        caption = str(opts.get("fig-cap") or "")
        figures[str(label)] = Figure(str(label), caption, str(opts.get("fig-alt") or caption),
                                     tuple(images))
    return figures
