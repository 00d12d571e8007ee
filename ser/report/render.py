"""Render the study report: a Quarto website, or an nbconvert fallback without Quarto.

:func:`render_site` turns a finished (or partly failed) run in ``results/`` into HTML:

- ``results/site/index.html``: study question, cohort, key findings (figures taken
  from the executed notebooks by their ``#| label: fig-…``), reading notes, model
  table and run status;
- ``results/site/methods.html``: how the numbers were produced, built from
  ``results/run.json`` and ``results/provenance/*.json`` (data hashes, never locations);
- one page per stage under ``results/site/results/notebooks/`` with code folded;
- ``results/site/report.html``: index and methods in one self-contained file.

Both paths read the same sources, ``index.qmd`` and ``methods.qmd``. They are first
*prepared* (``results/report/pages/``, :mod:`ser.report.pages`): ``{{< include >}}``
files generated under ``results/report/`` (:mod:`ser.report.sections`) are inlined, and
every ``{{< embed nb.ipynb#fig-x >}}`` whose stage failed, was skipped or left a notebook
from an older run (different params; :mod:`ser.report.state`) becomes a visible "not
available" callout, so a stale figure can never appear. Executed notebooks are copied to
``results/report/notebooks/`` with paths and audio file names scrubbed
(:class:`ser.report.privacy.Scrubber`), and stages without a usable notebook get a
placeholder page saying why.

With the Quarto CLI on PATH the prepared sources are rendered by ``quarto render`` in a
staging project (``results/report/quarto/``, a copy of ``_quarto.yml`` with its output
redirected; :mod:`ser.report.quarto`); without it the fallback renders the same text with
mistune and nbconvert (:mod:`ser.report.fallback`) and says so in small print in the
run-status section and each page's footer. Every rendered file is then scanned for the recordings' paths and file names
(:func:`ser.report.privacy.check_site`); a hit removes the page and raises
:class:`ser.report.privacy.PrivacyError`. The headless-browser check of the rendered site
is :mod:`ser.report.browser`.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ser.core import paths
from ser.report import privacy
from ser.report.fallback import render_fallback
from ser.report.pages import build_context, prepare_pages
from ser.report.quarto import QuartoError, find_quarto, render_quarto
from ser.report.sections import id_pattern_of, render_note
from ser.report.state import read_table

log = logging.getLogger(__name__)

FALLBACK_NOTICE = ("Quarto CLI not found on PATH: rendering with the nbconvert fallback; "
                   "install quarto (conda-forge) for the full site")


def external_references(html_text: str) -> list[str]:
    """URLs that a page would fetch or link to outside itself (``http(s):``, ``//``).

    Looks at ``src``/``href`` attributes and CSS ``url()``/``@import``; ``data:`` and
    in-page ``#`` links are local.
    """
    found = re.findall(r'(?:src|href)\s*=\s*["\']\s*((?:https?:)?//[^"\']+)', html_text, re.IGNORECASE)
    found += re.findall(r'url\(\s*["\']?\s*((?:https?:)?//[^)"\']+)', html_text, re.IGNORECASE)
    found += re.findall(r'@import\s+["\']((?:https?:)?//[^"\']+)', html_text, re.IGNORECASE)
    return sorted(set(found))


def render_site(*, results_dir: str | os.PathLike[str] | None = None,
                use_quarto: bool | None = None, self_contained: bool = True) -> Path:
    """Render the report of a run to ``results/site/``.

    Args:
        results_dir: the run's results folder (default ``ser.core.paths.results_dir()``).
        use_quarto: ``True`` renders with the Quarto CLI, ``False`` with the nbconvert
            fallback, ``None`` picks Quarto when ``quarto`` is on PATH.
        self_contained: also write ``site/report.html``, index and methods in one file
            with every image inlined (opens offline, can be e-mailed).

    Returns:
        Path of ``site/index.html``.

    Raises:
        FileNotFoundError: ``use_quarto=True`` without Quarto on PATH, or a report
            source (``_quarto.yml``, ``index.qmd``, ``methods.qmd``) is missing.
        QuartoError: ``quarto render`` failed; the fallback site was written first, so
            HTML exists, and the error carries Quarto's stderr.
        ser.report.privacy.PrivacyError: a rendered file still names a recording (it was
            deleted), or an id of ``recordings.csv`` does not match the run's ``id_pattern``
            (stage 01; nothing is rendered then).
    """
    results = Path(results_dir).resolve() if results_dir is not None else paths.results_dir()
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {results} does not exist: run `ser run` first")
    quarto = find_quarto()
    if use_quarto and quarto is None:
        raise FileNotFoundError("use_quarto=True but the Quarto CLI is not on PATH; install it "
                                "(`conda install -c conda-forge quarto` or "
                                "`pip install quarto-cli`) or pass use_quarto=None")
    use = quarto is not None if use_quarto is None else use_quarto
    ctx = build_context(results, self_contained=self_contained)
    recordings = read_table(results / "tables" / "recordings.csv")
    if ctx.cohort and recordings is not None:  # ids are shown as they are: check their form
        privacy.check_ids(recordings, id_pattern=id_pattern_of(ctx.run))
    pages = prepare_pages(ctx, self_contained=self_contained)
    site = results / "site"
    if use:
        assert quarto is not None
        try:
            render_quarto(quarto, ctx, render_note(pages, "Rendered with Quarto."), site,
                          self_contained=self_contained)
        except (QuartoError, subprocess.TimeoutExpired) as exc:
            reason = ("quarto render failed, so this site was rendered with the nbconvert "
                      "fallback; see the run log for Quarto's error.")
            log.error("report: %s", exc)
            print(f"ser.report: quarto render failed; writing the nbconvert fallback to {site}",
                  file=sys.stderr)
            render_fallback(ctx, pages, site, reason=reason, self_contained=self_contained)
            _privacy_check(site, results)
            raise QuartoError(str(exc)) from exc
    else:
        notice = (FALLBACK_NOTICE if quarto is None else
                  "Rendering with the nbconvert fallback (use_quarto=False); "
                  "Quarto renders the full site")
        log.info("report: %s", notice)
        print(f"ser.report: {notice}", file=sys.stderr)
        reason = (f"{FALLBACK_NOTICE}." if quarto is None else
                  "This site was rendered with the nbconvert fallback (use_quarto=False); "
                  "`quarto render` gives the full site.")
        render_fallback(ctx, pages, site, reason=reason, self_contained=self_contained)
    _privacy_check(site, results)
    index = site / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"rendering finished but {index} was not written")
    return index


def _privacy_check(site: Path, results: Path) -> None:
    recordings = read_table(results / "tables" / "recordings.csv")
    manifest = (recordings if recordings is not None and "path" in recordings.columns
                else pd.DataFrame({"path": []}))
    privacy.check_site(site, manifest, extra=[str(paths.data_dir())],
                       transcripts=privacy.load_transcripts(paths.data_dir() / privacy.TRANSCRIPTS_SUBDIR))
