"""The Quarto render: prepared pages in a staging project, rendered by ``quarto render``."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
import yaml

from ser.report.pages import ReportContext
from ser.report.project import PAGES, quarto_config, write_text


class QuartoError(RuntimeError):
    """``quarto render`` exited with an error (the message holds its stderr)."""


def find_quarto() -> str | None:
    """Path of the Quarto CLI on PATH, or ``None``."""
    return shutil.which("quarto")


def _run_quarto(quarto: str, args: Sequence[str], *, cwd: Path) -> None:
    env = {**os.environ, "QUARTO_PYTHON": sys.executable}
    proc = subprocess.run([quarto, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    if proc.returncode != 0:
        raise QuartoError(f"`quarto {' '.join(args)}` failed with exit code {proc.returncode} "
                          f"in {cwd}:\n{(proc.stderr or proc.stdout)[-6000:]}")


def _stage_project(dest: Path, ctx: ReportContext, files: Mapping[str, str],
                   config: Mapping[str, Any]) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "results" / "notebooks").mkdir(parents=True)
    write_text(dest / "_quarto.yml", yaml.safe_dump(dict(config), sort_keys=False,
                                                    allow_unicode=True))
    for name, text in files.items():
        write_text(dest / name, text)
    for stage, nb in ctx.notebooks.items():
        nbformat.write(nb, dest / "results" / "notebooks" / f"{stage}.ipynb")


def render_quarto(quarto: str, ctx: ReportContext, pages: Mapping[str, str], site: Path, *,
                  self_contained: bool) -> None:
    """Render the prepared pages with ``quarto render`` in a staging project, then copy to ``site``.

    Args:
        quarto: path of the Quarto CLI.
        ctx: the run's report context.
        pages: prepared sources by name (:func:`ser.report.pages.prepare_pages`).
        site: the site folder, ``results/site``, replaced.
        self_contained: also render ``report.qmd`` to the single-file ``site/report.html``.

    Raises:
        QuartoError: ``quarto render`` failed.
    """
    report_dir = ctx.results_dir / "report"
    config = copy.deepcopy(quarto_config())
    config.setdefault("project", {})["output-dir"] = "_site"
    config.setdefault("execute", {})["enabled"] = False
    if self_contained:
        navbar = config.setdefault("website", {}).setdefault("navbar", {})
        navbar.setdefault("right", []).append({"href": "report.html",
                                               "text": "Single-file report"})
    staging = report_dir / "quarto"
    _stage_project(staging, ctx, {k: v for k, v in pages.items() if k in PAGES}, config)
    _run_quarto(quarto, ["render", ".", "--no-execute"], cwd=staging)
    if site.exists():
        shutil.rmtree(site)
    shutil.copytree(staging / "_site", site)
    if self_contained:
        single = report_dir / "quarto_single"
        html_opts = dict((config.get("format") or {}).get("html") or {})
        html_opts.update({"embed-resources": True, "notebook-links": False,
                          "notebook-preview": False, "code-fold": True, "toc": True})
        single_cfg = {"project": {"type": "default", "output-dir": "_out",
                                  "render": ["report.qmd"]},
                      "execute": {"enabled": False},
                      "format": {"html": html_opts}}
        _stage_project(single, ctx, {"report.qmd": pages["report.qmd"]}, single_cfg)
        _run_quarto(quarto, ["render", "report.qmd", "--no-execute"], cwd=single)
        shutil.copy2(single / "_out" / "report.html", site / "report.html")
