"""Render the study report: a Quarto website, or an nbconvert fallback without Quarto.

``render()`` turns a finished (or partly failed) run in ``results/`` into HTML:

- ``results/site/index.html``: study question, cohort, key findings (figures taken
  from the executed notebooks by their ``#| label: fig-…``), reading notes, model
  table and run status;
- ``results/site/methods.html``: how the numbers were produced, built from
  ``results/run.json`` and ``results/provenance/*.json`` (data hashes, never locations);
- one page per stage under ``results/site/results/notebooks/`` with code folded;
- ``results/site/report.html``: index and methods in one self-contained file.

Both paths read the same sources, ``index.qmd`` and ``methods.qmd``. They are first
*prepared* (``results/report/pages/``): ``{{< include >}}`` files generated here under
``results/report/`` are inlined, and every ``{{< embed nb.ipynb#fig-x >}}`` whose stage
failed, was skipped or left a notebook from an older run (different params) becomes a
visible "not available" callout, so a stale figure can never appear. Executed notebooks
are copied to ``results/report/notebooks/`` with paths and audio file names scrubbed
(:class:`ser.report.privacy.Scrubber`), and stages without a usable notebook get a placeholder
page saying why.

With the Quarto CLI on PATH the prepared sources are rendered by ``quarto render`` in a
staging project (``results/report/quarto/``, a copy of ``_quarto.yml`` with its output
redirected); without it the fallback renders the same text with mistune and nbconvert
and says so in a banner at the top of every page. Every rendered file is then scanned
for the recordings' paths and file names (:func:`ser.report.privacy.check_site`); a hit removes
the page and raises :class:`ser.report.privacy.PrivacyError`. The headless-browser check of
the rendered site is :mod:`ser.report.browser`.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import html
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import yaml

from ser.core import paths
from ser.core.atomic import atomic_write_text
from ser.core.provenance import hash_inputs
from ser.data.schema import LEVELS, PHASES
from ser.report import privacy

log = logging.getLogger(__name__)

#: Folder of the report's static assets (fallback CSS, nbconvert template).
ASSETS: Path = paths.ROOT / "report"
#: Quarto sources, shared by both rendering paths.
QUARTO_CONFIG: Path = paths.ROOT / "_quarto.yml"
PAGES: tuple[str, ...] = ("index.qmd", "methods.qmd")

FALLBACK_NOTICE = ("Quarto CLI not found on PATH: rendering with the nbconvert fallback; "
                   "install quarto (conda-forge) for the full site")

#: Stage statuses written by the runner (``results/run.json``).
RUN_STATUSES: tuple[str, ...] = ("ok", "failed", "skipped", "pending")
#: Statuses the report adds: no executed notebook, or one from another run.
REPORT_STATUSES: tuple[str, ...] = (*RUN_STATUSES, "missing", "stale", "not run")


_INCLUDE = re.compile(r"^[ \t]*\{\{<\s*include\s+(\S+?)\s*>\}\}[ \t]*$", re.MULTILINE)
_EMBED = re.compile(r"^[ \t]*\{\{<\s*embed\s+([^\s#>]+)#([\w.:-]+)[^>]*>\}\}[ \t]*$",
                    re.MULTILINE)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*(?:\n|\Z)", re.DOTALL)
_IMAGE_MIMES: tuple[str, ...] = ("image/png", "image/jpeg", "image/svg+xml")


def _write_text(path: Path, text: str) -> Path:
    """Atomic write, readable by all (a site is served or shared; mkstemp makes 0600)."""
    atomic_write_text(path, text)
    path.chmod(0o644)
    return path


class QuartoError(RuntimeError):
    """``quarto render`` exited with an error (the message holds its stderr)."""


# --------------------------------------------------------------------------- run state


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


@dataclasses.dataclass(frozen=True)
class StageState:
    """What the report may show of one stage.

    Attributes:
        stage: stage name, e.g. ``"05_time_dependent"``.
        title: page title (notebook front matter, else derived from the name).
        status: one of ``REPORT_STATUSES``; only ``"ok"`` stages contribute figures
            and tables.
        reason: one plain sentence saying why a stage is not ``ok`` ("" when ok).
        executed: the executed notebook from *this* run, if present (also for failed
            stages, to show where they stopped); ``None`` otherwise.
        error: the runner's error message, if any.
        seconds: run time of the stage, if known.
        params: the stage's resolved parameters in ``run.json``.
    """

    stage: str
    title: str
    status: str
    reason: str
    executed: Path | None
    error: str | None = None
    seconds: float | None = None
    params: Mapping[str, Any] | None = None

    @property
    def page(self) -> str:
        """Site-relative source path of the stage page (as written in ``_quarto.yml``)."""
        return f"results/notebooks/{self.stage}.ipynb"


def load_run_record(results_dir: Path) -> dict[str, Any] | None:
    """Read ``results/run.json`` (``None`` when the pipeline has not written one).

    Raises:
        ValueError: the file is not valid JSON or a stage has an unknown status.
    """
    path = results_dir / "run.json"
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun `ser run` to rewrite "
                         "it") from exc
    if not isinstance(run, dict) or not isinstance(run.get("stages", []), list):
        raise ValueError(  # noqa: TRY004 - a bad file, not a bad argument
            f"{path} must hold an object with a 'stages' list; rerun `ser run`")
    for rec in run.get("stages", []):
        if rec.get("status") not in RUN_STATUSES:
            raise ValueError(f"{path}: stage {rec.get('stage')!r} has status "
                             f"{rec.get('status')!r}; expected one of {', '.join(RUN_STATUSES)}")
    return run


def stage_states(results_dir: Path, run: Mapping[str, Any] | None) -> list[StageState]:
    """Decide, per stage of the run, whether its notebook and figures may be shown.

    A notebook is used only if it belongs to this run: its ``metadata.ser.params_hash``
    (written by ``ser run``) equals ``run.json``'s ``params_hash``, or, without that, the
    parameters papermill injected (``metadata.papermill.parameters``) equal the stage's
    resolved params in ``run.json``. A notebook left from a run with other params is
    ``stale``; its figures are never shown. A stage is also ``stale`` when an input that an
    earlier stage produces (``extra.outputs`` of that stage's provenance) no longer has the
    hash recorded in this stage's provenance: it was computed from outdated upstream data.

    Args:
        results_dir: the run's results folder.
        run: the parsed ``run.json`` (``None``: every stage is ``not run``).

    Returns:
        One state per stage in run order; stages of ``_quarto.yml``'s navbar that the
        run does not list are appended as ``not run``.
    """
    states: list[StageState] = []
    changed = _changed_inputs(results_dir, [str(r["stage"]) for r in (run or {}).get("stages", [])])
    for rec in (run or {}).get("stages", []):
        stage = str(rec["stage"])
        status = rec["status"]
        error = rec.get("error") or None
        seconds = rec.get("seconds")
        rel = rec.get("executed") or f"notebooks/{stage}.ipynb"
        nb_path = results_dir / rel
        nb = _read_notebook(nb_path) if nb_path.is_file() else None
        title = _stage_title(stage, nb)
        fresh, why_stale = (False, "")
        if nb is not None:
            fresh, why_stale = _belongs_to_run(nb, run=run or {}, record=rec)
        executed = nb_path if (nb is not None and fresh) else None
        if status == "ok" and nb is None:
            status, reason = "missing", f"its executed notebook ({rel}) is missing"
        elif status == "ok" and not fresh:
            status, reason = "stale", f"its executed notebook is from an earlier run ({why_stale})"
        elif status == "ok" and changed.get(stage):
            status, reason = "stale", (f"its inputs ({', '.join(changed[stage])}) changed after it "
                                       "ran: an upstream stage was re-run since")
            executed = None
        elif status == "ok":
            reason = ""
        elif status == "failed":
            reason = _first_line(error) or "the runner recorded no error message"
        elif status == "skipped":
            reason = (_first_line(error) or "an earlier stage failed, or the run was limited "
                                            "with --from/--to")
        else:  # pending
            reason = ("it has not run: the run was limited with --from/--to, was "
                      "interrupted, or is still going")
        states.append(StageState(stage, title, status, reason, executed, error,
                                 float(seconds) if isinstance(seconds, (int, float)) else None,
                                 rec.get("params") or {}))
    listed = {s.stage for s in states}
    for stage in _navbar_stages():
        if stage not in listed:
            reason = ("the run record (results/run.json) is missing: run `ser run`" if run is None
                      else "this run did not include it")
            states.append(StageState(stage, _stage_title(stage, None), "not run", reason, None))
    return sorted(states, key=lambda s: s.stage)


def _changed_inputs(results_dir: Path, order: Sequence[str]) -> dict[str, list[str]]:
    """Per stage, the upstream-produced inputs whose hash differs from its provenance.

    Only inputs that an *earlier* stage lists as an output, and that neither the stage
    itself nor a later one writes (``mixed_models.csv`` is shared), are compared; the file
    is looked up as ``tables/<name>``, ``models/<name>`` or ``<name>`` under results.
    """
    prov = _provenance(results_dir)
    outputs = {s: {Path(str(o)).name for o in ((prov.get(s) or {}).get("outputs") or [])}
               for s in order}
    hashes: dict[Path, str] = {}
    out: dict[str, list[str]] = {}
    for i, stage in enumerate(order):
        rec = prov.get(stage)
        if not rec:
            continue
        upstream = set().union(*(outputs[t] for t in order[:i]))
        own_or_later = set().union(*(outputs[t] for t in order[i:]))
        for item in (rec.get("inputs") or {}).get("items", []) or []:
            name = str(item.get("name", ""))
            if name not in upstream or name in own_or_later:
                continue
            path = next((p for p in (results_dir / "tables" / name, results_dir / "models" / name,
                                     results_dir / name) if p.exists()), None)
            if path is None:
                continue
            if path not in hashes:
                hashes[path] = hash_inputs([path])["items"][0]["sha256"]
            if hashes[path] != item.get("sha256"):
                out.setdefault(stage, []).append(name)
    return out


def _belongs_to_run(nb: nbformat.NotebookNode, *, run: Mapping[str, Any],
                    record: Mapping[str, Any]) -> tuple[bool, str]:
    meta = nb.get("metadata", {})
    ser_meta = meta.get("ser") or {}
    if "params_hash" in ser_meta and run.get("params_hash") is not None:
        theirs, ours = str(ser_meta["params_hash"]), str(run["params_hash"])
        if theirs == ours:
            return True, ""
        return False, f"params hash {theirs[:12]} differs from this run's {ours[:12]}"
    injected = (meta.get("papermill") or {}).get("parameters")
    resolved = record.get("params")
    if isinstance(injected, Mapping) and isinstance(resolved, Mapping):
        differ = sorted(k for k in set(injected) | set(resolved)
                        if _canonical(injected.get(k, _MISSING))
                        != _canonical(resolved.get(k, _MISSING)))
        if not differ:
            return True, ""
        return False, "its parameters differ from this run's: " + ", ".join(differ[:6])
    return False, "it carries no run metadata, so it cannot be matched to this run"


_MISSING = object()


def _canonical(value: Any) -> Any:
    if value is _MISSING:
        return "<absent>"
    try:
        return json.loads(json.dumps(value, sort_keys=True, default=str))
    except (TypeError, ValueError):
        return repr(value)


def _read_notebook(path: Path) -> nbformat.NotebookNode | None:
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - an unreadable notebook is reported, not fatal
        log.warning("report: cannot read executed notebook %s (%s)", path.name, exc)
        return None


def _first_line(text: str | None, *, limit: int = 300) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


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


def _stage_title(stage: str, nb: nbformat.NotebookNode | None) -> str:
    """Front-matter title of the executed (else source) notebook, else the navbar text."""
    for candidate in (nb, _read_notebook(paths.NOTEBOOKS / f"{stage}.ipynb")
                      if (paths.NOTEBOOKS / f"{stage}.ipynb").is_file() else None):
        if candidate is not None and front_matter(candidate).get("title"):
            return str(front_matter(candidate)["title"])
    for item in _walk_nav(_quarto_config().get("website", {}).get("navbar", {})):
        if item.get("href") == f"results/notebooks/{stage}.ipynb" and item.get("text"):
            return str(item["text"])
    num, _, name = stage.partition("_")
    return f"{num} · {name.replace('_', ' ').capitalize()}" if name else stage


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


def _navbar_stages() -> list[str]:
    """Stage names linked from ``_quarto.yml``'s navbar (``results/notebooks/<stage>.ipynb``)."""
    out = []
    for item in _walk_nav(_quarto_config().get("website", {}).get("navbar", {})):
        href = str(item.get("href", ""))
        if href.startswith("results/notebooks/") and href.endswith(".ipynb"):
            out.append(Path(href).stem)
    return out


def _walk_nav(navbar: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for side in ("left", "right"):
        for item in navbar.get(side, []) or []:
            if isinstance(item, Mapping):
                yield item
                for sub in item.get("menu", []) or []:
                    if isinstance(sub, Mapping):
                        yield sub


def _quarto_config() -> dict[str, Any]:
    if not QUARTO_CONFIG.is_file():
        raise FileNotFoundError(f"{QUARTO_CONFIG} is missing: the report needs the Quarto "
                                "project file at the repository root")
    return yaml.safe_load(QUARTO_CONFIG.read_text(encoding="utf-8")) or {}


# ------------------------------------------------------------------- generated inputs


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
              align: Sequence[str] | None = None) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    align = align or ["l"] * len(header)
    rule = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _callout(kind: str, title: str, body: str) -> str:
    return f'::: {{.callout-{kind} title="{title}"}}\n{body.strip()}\n:::\n'


def _ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    values = list(dict.fromkeys(values))
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def _fmt(x: Any, digits: int = 3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(x):
        return "–"
    return f"{x:.{digits}g}"


def _fmt_p(p: Any) -> str:
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _state_of(states: Sequence[StageState], suffix: str) -> StageState | None:
    return next((s for s in states if s.stage == suffix or s.stage.endswith("_" + suffix)), None)


def _unavailable(what: str, state: StageState | None, suffix: str, *, link: bool = True) -> str:
    if state is None:
        return _callout("warning", "Not available",
                        f"{what} cannot be shown: this run has no stage *{suffix}*.")
    page = f" See [{state.title}]({state.page})." if link else ""
    return _callout("warning", "Not available",
                    f"{what} cannot be shown: stage **{state.stage}** {state.status} "
                    f"— {state.reason.rstrip('.')}.{page}")


def cohort_markdown(recordings: pd.DataFrame) -> str:
    """Cohort table: caregivers and recordings per level, minutes of audio per phase.

    Args:
        recordings: ``recordings.csv`` (``caregiver, level, phase, duration_s`` used).

    Raises:
        ValueError: a required column is missing.
    """
    need = {"caregiver", "level", "phase", "duration_s"}
    if missing := need - set(recordings.columns):
        raise ValueError(f"recordings.csv lacks columns {sorted(missing)}; "
                         "rerun stage 01_preprocess to rebuild it")
    df = recordings.copy()
    df["level"] = df["level"].astype(str)
    df["phase"] = df["phase"].astype(str)
    df["minutes"] = pd.to_numeric(df["duration_s"], errors="coerce") / 60.0
    levels = _ordered(df["level"], LEVELS)
    phases = _ordered(df["phase"], PHASES)
    header = ["Training level", "Caregivers", "Recordings",
              *[f"{p.capitalize()} (min)" for p in phases], "Total (min)"]
    rows = []
    for lev in [*levels, None]:
        sub = df if lev is None else df[df["level"] == lev]
        mins = [sub.loc[sub["phase"] == p, "minutes"].sum() for p in phases]
        rows.append([("**All**" if lev is None else lev.capitalize()),
                     sub["caregiver"].nunique(), len(sub),
                     *[f"{m:.1f}" for m in mins], f"{sum(mins):.1f}"])
    table = _md_table(header, rows, ["l"] + ["r"] * (len(header) - 1))
    total = df["minutes"].sum()
    return (f"{df['caregiver'].nunique()} caregivers, {len(df)} recordings, "
            f"{total:.1f} minutes of audio in total. Caregivers appear only by pseudonymous "
            f"id (p001, p002, …); no audio is part of this report.\n\n{table}")


def mixed_models_markdown(table: pd.DataFrame, *, alpha: float = 0.05, max_rows: int = 20) -> str:
    """Fixed effects of the mixed models, strongest evidence first, with a plain reading.

    Args:
        table: ``mixed_models.csv`` rows of the analyses that may be shown.
        alpha: false-discovery rate under which an effect counts as clear evidence.
        max_rows: rows shown; the rest are counted (the full table is in the notebooks).
    """
    if table.empty:
        return "No model results are available.\n"
    df = table.copy()
    term = df["term"].astype(str)
    df = df[~term.str.contains(r"intercept|group var|^re_|residual", case=False, regex=True)]
    if df.empty:
        return "The models report no fixed effects besides their intercepts.\n"
    df["_p"] = pd.to_numeric(df.get("p_fdr"), errors="coerce")
    df = df.sort_values("_p", na_position="last", kind="stable")
    n_clear = int((df["_p"] < alpha).sum())
    rows = []
    for _, r in df.head(max_rows).iterrows():
        conv = str(r.get("converged", "True")).strip().lower() not in ("false", "0", "no")
        reading = "clear evidence" if r["_p"] < alpha else "no clear evidence"
        if not conv:
            reading += " (model did not converge)"
        est = r.get("estimate")
        estimate = ("omnibus test" if pd.isna(pd.to_numeric(est, errors="coerce"))
                    else f"{_fmt(est)} [{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}]")
        analysis = str(r.get("analysis", "")).replace("_", "-")
        model = str(r.get("model", "") if pd.notna(r.get("model")) else "").replace("_", " ")
        rows.append([f"{analysis}<br><small>{model}</small>" if model else analysis,
                     f"`{r.get('feature', '')}`", _term_label(str(r.get("term", ""))),
                     estimate, _fmt_p(r["_p"]), reading])
    table_md = _md_table(["Analysis (model)", "Measure", "Effect", "Estimate [95% CI]",
                          "p (FDR)", "Reading"], rows, ["l", "l", "l", "r", "r", "l"])
    n_cg = pd.to_numeric(df.get("n_caregivers"), errors="coerce").max()
    more = len(df) - len(rows)
    tail = (f"\n{more} further effects, none with clearer evidence, are in the analysis "
            "notebooks and in `results/tables/mixed_models.csv` (with raw p-values and the "
            "number of observations).\n" if more > 0 else "")
    who = f" on up to {int(n_cg)} caregivers" if pd.notna(n_cg) else ""
    return (f"{len(df)} effects were tested{who}; **{n_clear}** reach a false-discovery rate "
            f"below {alpha:g} (*clear evidence*). *No clear evidence* means the data are "
            "compatible with no effect, which is not the same as showing there is none. "
            f"Effects are listed from the strongest evidence down.\n\n{table_md}{tail}")


def _sentence(text: str) -> str:
    """First letter upper-cased, final full stop added (the rest untouched)."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text[-1] in ".!?" else ".")


def _int(x: Any) -> str:
    try:
        return str(int(float(x)))
    except (TypeError, ValueError):
        return "–"


#: Readable names of model terms (reference levels as coded in ``ser.stats.mixed``).
_LEVEL_NAMES = {"phase": "{} vs. control", "level": "{} vs. untrained"}
_TERM_NAMES = {"phase": "phase (omnibus)", "level": "training level (omnibus)",
               "level_trend": "training level (per step)", "time": "time in session"}


def _term_label(term: str) -> str:
    """``phase[care]:level_trend`` → ``care vs. control × training level (per step)``."""
    parts = []
    for piece in term.split(":"):
        piece = piece.strip()
        m = re.match(r"^(?:C\()?([\w.]+?)(?:,[^)]*)?\)?\[(?:T\.)?([^\]]+)\]$", piece)
        if m:
            fmt = _LEVEL_NAMES.get(m.group(1), m.group(1) + ": {}")
            parts.append(fmt.format(m.group(2)))
        else:
            parts.append(_TERM_NAMES.get(piece, piece))
    return " × ".join(parts)


def stages_markdown(states: Sequence[StageState], *, link: bool = True) -> str:
    """Run status table: one row per stage with its status and reason."""
    rows = []
    for s in states:
        name = f"[{s.title}]({s.page})" if link else s.title
        secs = f"{s.seconds:.0f} s" if s.seconds is not None else "–"
        rows.append([name, f"**{s.status}**" if s.status != "ok" else "ok", secs,
                     _sentence(s.reason) if s.reason else ""])
    return _md_table(["Stage", "Status", "Time", "Note"], rows, ["l", "l", "r", "l"])


def run_summary_markdown(run: Mapping[str, Any] | None, states: Sequence[StageState], *,
                         self_contained: bool) -> str:
    """Callouts at the top of the index: demo data, incomplete run, run identity."""
    if run is None:
        return _callout("important", "No run record",
                        "`results/run.json` is missing, so no figure or table can be matched to "
                        "a run and none is shown. Run the pipeline with `ser run` (or `make run`).")
    out = []
    profile = str(run.get("profile") or "unknown")
    if re.search(r"demo|smoke", profile, re.IGNORECASE):
        out.append(_callout("note", "Demonstration data",
                            f"This report was produced with the **{profile}** profile on "
                            "synthetic recordings generated by the pipeline itself. The numbers "
                            "show that the analysis runs end to end; they say nothing about real "
                            "caregivers."))
    bad = [s for s in states if s.status != "ok"]
    if bad:
        listing = "\n".join(f"- **{s.title}**: {s.status} — {s.reason.rstrip('.')}."
                            for s in bad)
        out.append(_callout("warning", "Incomplete run",
                            f"{len(bad)} of {len(states)} stages did not complete in this run; "
                            f"their figures are marked *not available* below.\n\n{listing}"))
    ident = [f"profile **{profile}**"]
    if run.get("finished_utc"):
        ident.append(f"finished {_when(run['finished_utc'])}")
    elif run.get("started_utc"):
        ident.append(f"started {_when(run['started_utc'])}, not finished")
    if run.get("params_hash"):
        ident.append(f"parameters `{str(run['params_hash'])[:12]}`")
    out.append("This run: " + " · ".join(ident) + ".\n")
    if self_contained:
        out.append(_SINGLE_FILE_NOTE)
    return "\n".join(out)


_SINGLE_FILE_NOTE = ("A single-file copy of this page and the methods, for e-mail or offline "
                     "reading: [report.html](report.html).\n")


def _when(iso: Any) -> str:
    """``2025-01-01T10:05:00+00:00`` → ``2025-01-01 10:05 UTC`` (as given when unparsable)."""
    try:
        t = datetime.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if t.tzinfo is not None:
        t = t.astimezone(datetime.UTC)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        log.warning("report: cannot read %s (%s)", path.name, exc)
        return None


def _is_location(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    return ("/" in value or "\\" in value or value.startswith("~")
            or bool(re.search(r"\.[A-Za-z][A-Za-z0-9]{1,4}$", value) and " " not in value))


def _public_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("[location withheld]" if _is_location(v) else v) for k, v in params.items()}


def _provenance(results_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for f in sorted((results_dir / "provenance").glob("*.json")):
        try:
            out[f.stem] = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("report: provenance file %s is not valid JSON; ignored", f.name)
    return out


def methods_sections(results_dir: Path, run: Mapping[str, Any] | None,
                     states: Sequence[StageState]) -> dict[str, str]:
    """Generated parts of the methods page, keyed by include file name."""
    prov = _provenance(results_dir)
    ok = {s.stage for s in states if s.status == "ok"}
    sections: dict[str, str] = {}

    # run identity
    commits = sorted({str(p.get("git_commit")) for p in prov.values() if p.get("git_commit")})
    rows = [["Profile", f"`{(run or {}).get('profile', '–')}`"],
            ["Started", _when((run or {}).get("started_utc") or "–")],
            ["Finished", _when((run or {}).get("finished_utc") or "–")],
            ["Parameters hash", f"`{(run or {}).get('params_hash', '–')}`"],
            ["Code version (git)", ", ".join(f"`{c}`" for c in commits) or "–"]]
    sections["_methods_run.md"] = _md_table(["Run", ""], rows)

    # data: hashes of every stage's inputs, never their locations
    rows = []
    for stage, rec in prov.items():
        inputs = rec.get("inputs") or {}
        for item in inputs.get("items", []):
            rows.append([stage, f"`{item.get('name', '?')}`", item.get("files", "–"),
                         f"`{str(item.get('sha256', ''))[:16]}`"])
    data = ("Every stage records a SHA-256 hash of each input it read (a folder is hashed "
            "over its files' names and contents). Only the input's own name is kept, never its "
            "location, so the table identifies the exact data without revealing where it is "
            "stored. Hashes are shortened to 16 hex digits here; the full values are in "
            "`results/provenance/`.\n\n")
    sections["_methods_data.md"] = data + (
        _md_table(["Stage", "Input", "Files", "SHA-256 (first 16)"], rows, ["l", "l", "r", "l"])
        if rows else "No provenance records were found.\n")

    # model card
    sections["_methods_model.md"] = _model_card(results_dir, states, ok)

    # parameters per stage (resolved, as the run used them)
    rows = []
    for rec in (run or {}).get("stages", []):
        params = _public_params(rec.get("params") or {})
        if params:
            rows.append([f"`{rec['stage']}`", "<br>".join(
                f"`{k}` = `{json.dumps(v, default=str, ensure_ascii=False)}`"
                for k, v in params.items())])
    sections["_methods_params.md"] = (_md_table(["Stage", "Parameters"], rows) if rows
                                      else "No stage parameters were recorded.\n")

    # software
    versions: dict[str, set[str]] = {}
    for rec in prov.values():
        for name, ver in (rec.get("packages") or {}).items():
            versions.setdefault(name, set()).add(str(ver) if ver else "not installed")
    sections["_methods_software.md"] = (
        _md_table(["Package", "Version"], [[n, " / ".join(sorted(v))]
                                           for n, v in sorted(versions.items())])
        if versions else "No package versions were recorded.\n")
    return sections


#: Model-card scores shown (the bundle may hold more), with their display names.
_METRIC_NAMES = {"uar": "UAR", "macro_f1": "macro-F1", "accuracy": "accuracy"}


def _model_card(results_dir: Path, states: Sequence[StageState], ok: set[str]) -> str:
    train = _state_of(states, "train")
    if train is None or train.stage not in ok:
        return _unavailable("The model card", train, "train")
    cards = []
    bundles = sorted((results_dir / "models").glob("*/model.json"))
    run_values = {str(v) for v in _stage_params(states, train.stage).values()}
    if any(mj.parent.name in run_values for mj in bundles):  # the run names its model
        bundles = [mj for mj in bundles if mj.parent.name in run_values]
    for mj in bundles:
        try:
            card = json.loads(mj.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        rows = [["Name", f"`{mj.parent.name}`"],
                ["Architecture", f"`{card.get('arch', '–')}`"],
                ["Emotions (labels)", ", ".join(map(str, card.get("labels", []))) or "–"],
                ["Input", (f"{_fmt(card.get('window_s'))} s windows at "
                           f"{_int(card.get('sample_rate'))} Hz")],
                ["Pitch normalisation", _pitch_norm_text(card.get("pitch_norm_hz"))]]
        for key, label in (("arch_params", "Architecture parameters"),
                           ("features", "Features (log-mel)"),
                           ("train_params", "Training parameters")):
            value = card.get(key)
            if isinstance(value, Mapping) and value:
                rows.append([label, "; ".join(f"{k} = {v}" for k, v in
                                              _public_params(value).items())])
            elif value:
                rows.append([label, str(value)])
        split = card.get("split") or {}
        if isinstance(split, Mapping):
            for part, speakers in split.items():
                sp = speakers if isinstance(speakers, list) else [speakers]
                rows.append([f"Speakers: {part}", f"{len(sp)}: " + ", ".join(map(str, sp))])
        metrics = card.get("metrics") or {}
        if isinstance(metrics, Mapping):
            nested = any(isinstance(v, Mapping) for v in metrics.values())
            flat = ([(k, v) for k, v in metrics.items() if isinstance(v, Mapping)] if nested
                    else [("", metrics)])
            for part, values in flat:
                shown = [f"{_METRIC_NAMES[m]} {_fmt(values[m])}" for m in _METRIC_NAMES
                         if isinstance(values.get(m), (int, float))]
                if shown:
                    label = "Scores" if values is metrics else f"Scores: {part}"
                    rows.append([label, ", ".join(shown)])
        cards.append(f"#### Model `{mj.parent.name}`\n\n" + _md_table(["Model card", ""], rows))
    if not cards:
        return "No model bundle (`results/models/<name>/model.json`) was found.\n"
    text = ("Speakers in the training, validation and test partitions never overlap "
            "(speaker-independent split), so test scores estimate performance on unseen "
            "voices.\n\n" + "\n".join(cards))
    evaluate = _state_of(states, "evaluate")
    if evaluate is not None and evaluate.stage in ok:
        metrics = _read_csv(results_dir / "tables" / "eval_metrics.csv")
        if metrics is not None and not metrics.empty:
            text += "\n#### Held-out evaluation\n\n" + _df_markdown(metrics)
        runs = _read_csv(results_dir / "tables" / "runs.csv")
        if runs is not None and not runs.empty:
            text += "\n#### Training runs\n\n" + _df_markdown(runs)
    return text


def _pitch_norm_text(target_hz: Any) -> str:
    if not isinstance(target_hz, (int, float)) or not target_hz > 0:
        return "off: the model hears each voice at its own pitch"
    return (f"each training speaker, and each recording in the analysis, is moved to a "
            f"{_fmt(float(target_hz))} Hz voice register before the model (formants and timing kept), so a "
            "change of voice pitch alone is not read as emotion; pitch (F0) is measured on the original audio")


def _stage_params(states: Sequence[StageState], stage: str) -> dict[str, Any]:
    return dict(next((s.params for s in states if s.stage == stage), None) or {})


def _df_markdown(df: pd.DataFrame, *, max_rows: int = 20, max_cols: int = 10) -> str:
    df = df.iloc[:max_rows, :max_cols]
    rows = [[_fmt(v) if isinstance(v, float) else v for v in row]
            for row in df.itertuples(index=False)]
    return _md_table([str(c) for c in df.columns], rows)


def write_generated_inputs(results_dir: Path, run: Mapping[str, Any] | None,
                           states: Sequence[StageState], scrub: privacy.Scrubber, *,
                           self_contained: bool) -> Path:
    """Write the include files of ``index.qmd``/``methods.qmd`` to ``results/report/``.

    Returns:
        The folder ``results/report``.
    """
    out = results_dir / "report"
    ok = {s.stage for s in states if s.status == "ok"}
    files: dict[str, str] = {}
    files["_run_summary.md"] = run_summary_markdown(run, states, self_contained=self_contained)

    pre = _state_of(states, "preprocess")
    recordings = _read_csv(results_dir / "tables" / "recordings.csv")
    if pre is not None and pre.stage in ok and recordings is not None:
        files["_cohort.md"] = cohort_markdown(recordings)
    else:
        files["_cohort.md"] = _unavailable("The cohort table", pre, "preprocess")

    mm = _read_csv(results_dir / "tables" / "mixed_models.csv")
    shown, notes = [], []
    for analysis in ("time_dependent", "time_invariant", "delta"):
        st = _state_of(states, analysis)
        if st is not None and st.stage in ok and mm is not None and "analysis" in mm.columns:
            shown.append(mm[mm["analysis"] == analysis])
        else:
            notes.append(_unavailable(f"Model results of the {analysis.replace('_', '-')} "
                                      "analysis", st, analysis))
    body = mixed_models_markdown(pd.concat(shown)) if shown else ""
    files["_mixed_models.md"] = body + ("\n" if body else "") + "\n".join(notes)
    files["_stages.md"] = stages_markdown(states)
    files.update(methods_sections(results_dir, run, states))
    for name, text in files.items():
        _write_text(out / name, scrub(text))
    return out


# ------------------------------------------------------------ prepared page sources


@dataclasses.dataclass
class _Context:
    results_dir: Path
    run: dict[str, Any] | None
    states: list[StageState]
    scrub: privacy.Scrubber
    notebooks: dict[str, nbformat.NotebookNode]  # staged (scrubbed) notebooks by stage
    figures: dict[str, dict[str, Figure]]  # of stages whose figures may be shown

    def state(self, stage: str) -> StageState | None:
        return next((s for s in self.states if s.stage == stage), None)


def _resolve_source_path(ref: str, results_dir: Path) -> Path:
    ref = ref.strip("\"'")
    if ref.startswith("results/"):
        return results_dir / ref[len("results/"):]
    return paths.ROOT / ref


def prepare_markdown(text: str, ctx: _Context, *, link_pages: bool = True) -> str:
    """Inline ``{{< include >}}`` files and replace unavailable ``{{< embed >}}`` figures.

    The result is valid Quarto markdown: kept embeds point at staged notebooks that
    hold the figure; the others became "not available" callouts.
    """
    for _ in range(5):  # nested includes, bounded
        if not _INCLUDE.search(text):
            break

        def include(m: re.Match[str]) -> str:
            path = _resolve_source_path(m.group(1), ctx.results_dir)
            if not path.is_file():
                raise FileNotFoundError(f"report: include {m.group(1)} not found at {path}; "
                                        "it is generated by ser.report.render()")
            return path.read_text(encoding="utf-8").rstrip("\n")
        text = _INCLUDE.sub(include, text)

    def embed(m: re.Match[str]) -> str:
        stage, label = Path(m.group(1)).stem, m.group(2)
        state = ctx.state(stage)
        what = f"Figure *{label}*"
        if state is None or state.status != "ok":
            return _unavailable(what, state, stage, link=link_pages).rstrip("\n")
        fig = ctx.figures.get(stage, {}).get(label)
        if fig is None or not fig.images:
            why = ("produced no figure with this label" if fig is None
                   else "has no image in this figure's output")
            page = f" See [{state.title}]({state.page})." if link_pages else ""
            return _callout("warning", "Not available",
                            f"{what} cannot be shown: stage **{stage}** ran but {why}.{page}"
                            ).rstrip("\n")
        return m.group(0)
    text = _EMBED.sub(embed, text)
    if not link_pages:
        text = text.replace(_SINGLE_FILE_NOTE, "")
        text = re.sub(r"\]\(methods\.qmd(?:#[\w-]+)?\)", "](#methods)", text)
        text = re.sub(r"\[([^\]]+)\]\(results/notebooks/[^)\s]+\.ipynb\)", r"\1", text)
    return ctx.scrub(text)


def _combined_report(index_meta: Mapping[str, Any], index_body: str, methods_body: str) -> str:
    demoted = re.sub(r"^(#{1,5}) ", r"#\1 ", methods_body, flags=re.MULTILINE)
    meta = {k: index_meta[k] for k in ("title", "subtitle", "description") if k in index_meta}
    head = "---\n" + yaml.safe_dump(meta, allow_unicode=True, sort_keys=False) + "---\n"
    return (head + index_body.rstrip() + "\n\n## Methods {#methods}\n\n" + demoted.strip()
            + "\n")


_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _placeholder_notebook(state: StageState) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(_KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    fm = yaml.safe_dump({"title": state.title,
                         "description": f"Stage {state.stage}: {state.status}"},
                        allow_unicode=True, sort_keys=False)
    nb.cells = [nbformat.v4.new_raw_cell(f"---\n{fm}---"),
                nbformat.v4.new_markdown_cell(_status_callout(state))]
    return nb


def _status_callout(state: StageState) -> str:
    if state.status == "failed":
        body = f"Stage **{state.stage}** failed in this run."
        if state.error:
            body += f"\n\n```\n{state.error.strip()[:2000]}\n```"
        if state.executed is not None:
            body += "\n\nThe notebook below shows the cells up to the failure."
        return _callout("important", "This stage failed", body)
    title = {"skipped": "This stage was skipped", "pending": "This stage has not run",
             "not run": "This stage was not run", "missing": "This stage's notebook is missing",
             "stale": "This stage's results are outdated"}.get(state.status, state.status)
    return _callout("warning", title,
                    f"Stage **{state.stage}** has no results in this report. "
                    f"{_sentence(state.reason)}")


def _stage_notebook(state: StageState, scrub: privacy.Scrubber) -> nbformat.NotebookNode:
    """The notebook the report shows for a stage, scrubbed of paths and file names."""
    nb = (_read_notebook(state.executed) if state.executed is not None else None)
    if nb is None:
        return scrub.notebook(_placeholder_notebook(state))
    _restyle_papermill_error_cells(nb)
    if state.status != "ok":
        pos = 1 if nb.cells and front_matter(nb) else 0
        nb.cells.insert(pos, nbformat.v4.new_markdown_cell(_status_callout(state)))
    spec = nb.metadata.setdefault("kernelspec", dict(_KERNELSPEC))
    spec.setdefault("language", "python")  # Quarto reads the language from the kernelspec
    return scrub.notebook(nb)


_PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"


def _restyle_papermill_error_cells(nb: nbformat.NotebookNode) -> None:
    """Replace papermill's red error banners by a callout at the failing cell.

    Papermill inserts one banner as the *first* cell (which would hide the Quarto front
    matter) and one before the failing cell; the first is dropped (the stage page says
    that the stage failed), the second becomes a callout that keeps its anchor.
    """
    kept = []
    for cell in nb.cells:
        if _PAPERMILL_ERROR_TAG not in cell.get("metadata", {}).get("tags", []):
            kept.append(cell)
        elif 'id="papermill-error-cell"' in cell.source:
            cell.source = ('<span id="papermill-error-cell"></span>\n\n'
                           + _callout("important", "The run stopped here",
                                      "The next cell raised the error shown below it."))
            kept.append(cell)
    nb.cells = kept


def _build_context(results_dir: Path, *, self_contained: bool) -> _Context:
    run = load_run_record(results_dir)
    states = stage_states(results_dir, run)
    literals: list[str] = []
    recordings = _read_csv(results_dir / "tables" / "recordings.csv")
    if recordings is not None and "path" in recordings.columns:
        literals += privacy.manifest_identifiers(recordings)
    roots = {str(paths.data_dir()), str(paths.data_dir().as_posix())}
    for rec in (run or {}).get("stages", []):
        for v in (rec.get("params") or {}).values():
            if (isinstance(v, str) and ("/" in v or "\\" in v)
                    and not v.startswith("results")):
                roots.add(v)
    roots.add(str(paths.ROOT))
    scrub = privacy.Scrubber(literals, roots=roots, renames={str(results_dir): "results"})
    notebooks, figures = {}, {}
    for st in states:
        nb = _stage_notebook(st, scrub)
        notebooks[st.stage] = nb
        if st.status == "ok":
            figures[st.stage] = notebook_figures(nb)
    write_generated_inputs(results_dir, run, states, scrub, self_contained=self_contained)
    return _Context(results_dir, run, states, scrub, notebooks, figures)


def _prepare_pages(ctx: _Context, *, self_contained: bool) -> dict[str, str]:
    """Prepared Quarto sources: ``index.qmd``, ``methods.qmd`` and ``report.qmd``."""
    out: dict[str, str] = {}
    bodies: dict[str, tuple[dict[str, Any], str]] = {}
    for page in PAGES:
        src = paths.ROOT / page
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing: the report's page sources live at the "
                                    "repository root")
        text = src.read_text(encoding="utf-8")
        out[page] = prepare_markdown(text, ctx)
        meta, _ = split_front_matter(text)
        bodies[page] = (meta, split_front_matter(prepare_markdown(text, ctx,
                                                                  link_pages=False))[1])
    if self_contained:
        meta, index_body = bodies["index.qmd"]
        out["report.qmd"] = _combined_report(meta, index_body, bodies["methods.qmd"][1])
    pages_dir = ctx.results_dir / "report" / "pages"
    for name, text in out.items():
        _write_text(pages_dir / name, text)
    nb_dir = ctx.results_dir / "report" / "notebooks"
    if nb_dir.exists():
        shutil.rmtree(nb_dir)
    for stage, nb in ctx.notebooks.items():
        nb_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, nb_dir / f"{stage}.ipynb")
    return out


# ------------------------------------------------------------------------- quarto path


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


def _stage_project(dest: Path, ctx: _Context, files: Mapping[str, str],
                   config: Mapping[str, Any]) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "results" / "notebooks").mkdir(parents=True)
    _write_text(dest / "_quarto.yml", yaml.safe_dump(dict(config), sort_keys=False,
                                                           allow_unicode=True))
    for name, text in files.items():
        _write_text(dest / name, text)
    for stage, nb in ctx.notebooks.items():
        nbformat.write(nb, dest / "results" / "notebooks" / f"{stage}.ipynb")


def _render_quarto(quarto: str, ctx: _Context, pages: Mapping[str, str], site: Path, *,
                   self_contained: bool) -> None:
    report_dir = ctx.results_dir / "report"
    config = copy.deepcopy(_quarto_config())
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


# ----------------------------------------------------------------------- fallback path


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^\w\s-]", "", re.sub(r"<[^>]+>", "", text)).strip().lower()
    base = re.sub(r"[\s_]+", "-", base) or "section"
    slug, n = base, 1
    while slug in used:
        n += 1
        slug = f"{base}-{n}"
    used.add(slug)
    return slug


def _markdown_renderer() -> tuple[Any, list[tuple[int, str, str]]]:
    import mistune

    toc: list[tuple[int, str, str]] = []
    used: set[str] = set()

    class Renderer(mistune.HTMLRenderer):
        def heading(self, text: str, level: int, **attrs: Any) -> str:
            m = re.search(r"\s*\{#([\w-]+)\}\s*$", text)
            if m:
                text, slug = text[: m.start()], m.group(1)
                used.add(slug)
            else:
                slug = _slug(text, used)
            toc.append((level, slug, text))
            return f'<h{level} id="{slug}">{text}</h{level}>\n'

    md = mistune.create_markdown(renderer=Renderer(escape=False),
                                 plugins=["table", "strikethrough", "footnotes"])
    return md, toc


def _callouts_to_html(text: str) -> str:
    """Quarto fenced divs (``::: {.callout-note title="…"}``) → HTML divs."""
    out, depth = [], 0
    for line in text.split("\n"):
        m = re.match(r"^\s*:{3,}\s*(?:\{([^}]*)\}|([\w-]+))\s*$", line)
        if m:
            attrs = m.group(1) or "." + m.group(2)
            classes = re.findall(r"(?:^|\s)\.([\w-]+)", attrs)
            ident = re.search(r"(?:^|\s)#([\w-]+)", attrs)
            title = re.search(r'title="([^"]*)"', attrs)
            if any(c.startswith("callout") for c in classes):
                classes = ["callout", *classes]
            id_attr = f' id="{ident.group(1)}"' if ident else ""
            out.append(f'<div class="{" ".join(classes)}"{id_attr}>')
            if title:
                out.append(f'<div class="callout-title">{html.escape(title.group(1))}</div>')
            out.append("")
            depth += 1
        elif depth and re.match(r"^\s*:{3,}\s*$", line):
            out += ["", "</div>", ""]
            depth -= 1
        else:
            out.append(line)
    return "\n".join(out)


def _figure_html(fig: Figure, *, number: int, state: StageState, href: str | None) -> str:
    imgs = []
    for mime, payload in fig.images:
        data = (base64.b64encode(payload.encode("utf-8")).decode("ascii")
                if mime == "image/svg+xml" else payload)
        imgs.append(f'<img src="data:{mime};base64,{data}" alt="{html.escape(fig.alt)}">')
    cap = f"<strong>Figure {number}:</strong> {html.escape(fig.caption)}" if fig.caption else ""
    src = (f'<div class="ser-figure-source">Source: <a href="{href}">{html.escape(state.title)}'
           f"</a></div>" if href else "")
    return (f'<figure class="ser-figure" id="{html.escape(fig.label)}">{"".join(imgs)}'
            f"<figcaption>{cap}</figcaption>{src}</figure>")


def _rel(target: str, page: str) -> str:
    """Link from site page ``page`` to site path ``target`` (both site-relative)."""
    return os.path.relpath(target, os.path.dirname(page) or ".").replace(os.sep, "/")


def _site_path(src: str) -> str:
    """Site path of a Quarto source: ``methods.qmd`` → ``methods.html``."""
    return re.sub(r"\.(qmd|ipynb|md)$", ".html", src)


def _fix_links(body: str, page: str) -> str:
    def fix(m: re.Match[str]) -> str:
        url = m.group(2)
        if re.match(r"^(?:[a-z]+:|#|/)", url):
            return m.group(0)
        path, _, frag = url.partition("#")
        new = _rel(_site_path(path), page) + (f"#{frag}" if frag else "")
        return f'{m.group(1)}"{new}"'
    return re.sub(r'(href=)"([^"]+)"', fix, body)


def _markdown_page(text: str, ctx: _Context, *, page: str, numbering: list[int],
                   link_pages: bool) -> tuple[dict[str, Any], str, list[tuple[int, str, str]]]:
    meta, body = split_front_matter(text)
    figures: list[str] = []

    def embed(m: re.Match[str]) -> str:
        stage, label = Path(m.group(1)).stem, m.group(2)
        state = ctx.state(stage)
        fig = ctx.figures.get(stage, {}).get(label)
        if state is None or fig is None:  # prepare_markdown replaced these already
            return ""
        numbering[0] += 1
        href = _rel(_site_path(state.page), page) if link_pages else None
        figures.append(_figure_html(fig, number=numbering[0], state=state, href=href))
        return f"\n<!--ser-figure-{len(figures) - 1}-->\n"
    body = _EMBED.sub(embed, body)
    md, toc = _markdown_renderer()
    out = md(_callouts_to_html(body))
    for i, fig_html in enumerate(figures):
        out = out.replace(f"<!--ser-figure-{i}-->", fig_html)
    return meta, _fix_links(out, page), toc


def _nav_html(ctx: _Context, *, page: str, self_contained: bool) -> str:
    cfg = _quarto_config()
    site = cfg.get("website", {})
    status = {s.page: s.status for s in ctx.states}
    parts = [(f'<a class="ser-brand" href="{_rel("index.html", page)}">'
              f'{html.escape(str(site.get("title", "Report")))}</a>')]

    def link(item: Mapping[str, Any]) -> str:
        href = str(item.get("href", ""))
        target = _site_path(href)
        cls = ["active"] if target == page else []
        if href in status and status[href] != "ok":
            cls.append(f"ser-status-{status[href].replace(' ', '-')}")
        title = f' title="{status[href]}"' if href in status and status[href] != "ok" else ""
        cls_attr = f' class="{" ".join(cls)}"' if cls else ""
        return (f'<a href="{_rel(target, page)}"{cls_attr}{title}>'
                f'{html.escape(str(item.get("text", Path(href).stem)))}</a>')

    for side in ("left", "right"):
        for item in site.get("navbar", {}).get(side, []) or []:
            if "menu" in item:
                links = "".join(link(sub) for sub in item["menu"] if "href" in sub)
                parts.append(f'<span class="ser-nav-group"><span class="ser-nav-label">'
                             f'{html.escape(str(item.get("text", "")))}</span>{links}</span>')
            elif "href" in item:
                parts.append(link(item))
    if self_contained:
        parts.append(link({"href": "report.html", "text": "Single-file report"}))
    return f'<nav class="ser-nav">{"".join(parts)}</nav>'


def _banner(reason: str) -> str:
    return (f'<div class="ser-banner" role="note"><strong>Fallback rendering.</strong> '
            f"{html.escape(reason)}</div>")


def _footer(ctx: _Context) -> str:
    run = ctx.run or {}
    bits = [f"profile {run.get('profile', '–')}"]
    if run.get("finished_utc"):
        bits.append(f"run finished {_when(run['finished_utc'])}")
    if run.get("params_hash"):
        bits.append(f"parameters {str(run['params_hash'])[:12]}")
    return (f'<footer class="ser-footer">Rendered by ser.report.render (nbconvert fallback) · '
            f"{html.escape(' · '.join(bits))}</footer>")


def _css() -> str:
    path = ASSETS / "fallback.css"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the fallback site needs its stylesheet")
    return path.read_text(encoding="utf-8")


def _toc_html(toc: Sequence[tuple[int, str, str]]) -> str:
    items = [f'<li><a href="#{slug}">{text}</a></li>' for level, slug, text in toc if level == 2]
    if len(items) < 2:
        return ""
    return (f'<aside class="ser-toc"><nav><div class="ser-toc-title">On this page</div>'
            f'<ul>{"".join(items)}</ul></nav></aside>')


def _title_block(meta: Mapping[str, Any]) -> str:
    out = f'<header class="ser-page-header"><h1>{html.escape(str(meta.get("title", "")))}</h1>'
    for key in ("subtitle", "description"):
        if meta.get(key):
            out += f'<p class="ser-subtitle">{html.escape(str(meta[key]))}</p>'
            break
    return out + "</header>"


def _html_page(*, title: str, banner: str, nav: str, header: str, body: str, toc: str,
               footer: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{_css()}\n</style>\n</head>\n"
            f'<body class="ser-page">\n{banner}\n{nav}\n<div class="ser-layout">\n'
            f'<main class="ser-main">\n{header}\n{body}\n</main>\n{toc}\n</div>\n{footer}\n'
            f"</body>\n</html>\n")


def _notebook_html(nb: nbformat.NotebookNode, state: StageState, ctx: _Context, *, page: str,
                   banner: str, self_contained: bool) -> str:
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    meta = front_matter(nb)
    if meta:
        nb.cells = nb.cells[1:]
    kept = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _callouts_to_html(cell.source)
        elif cell.cell_type == "code":
            opts = cell_options(cell.source)
            if opts.get("include") is False:
                continue
            cell.source = "\n".join(ln for ln in cell.source.splitlines()
                                    if not ln.startswith("#|"))
            if opts.get("echo") is False:
                cell.metadata["ser_hide_input"] = True
            if opts.get("output") is False:
                cell.outputs = []
            if opts.get("label") and (opts.get("fig-alt") or opts.get("fig-cap")):
                cell.metadata["ser_alt"] = str(opts.get("fig-alt") or opts.get("fig-cap"))
            if opts.get("fig-cap"):
                cell.metadata["ser_caption"] = f"Figure ({opts['label']}): {opts['fig-cap']}"
        elif cell.cell_type == "raw":
            continue
        kept.append(cell)
    nb.cells = kept
    badge = (f'<span class="ser-badge ser-badge-{state.status.replace(" ", "-")}">'
             f"{html.escape(state.status)}</span>")
    secs = f" · {state.seconds:.0f} s" if state.seconds is not None else ""
    header = (f'<header class="ser-page-header"><h1>{html.escape(state.title)}</h1>'
              + (f'<p class="ser-subtitle">{html.escape(str(meta["description"]))}</p>'
                 if meta.get("description") else "")
              + f'<div class="ser-meta">Stage <code>{html.escape(state.stage)}</code> {badge}'
                f"{secs} · code is folded: open “Code” to read it</div></header>")
    exporter = HTMLExporter(template_name="ser_fallback",
                            extra_template_basedirs=[str(ASSETS / "templates")],
                            exclude_input_prompt=True, exclude_output_prompt=True)
    resources = {"ser": {"css": _css(),
                         "shell_top": banner + _nav_html(ctx, page=page,
                                                         self_contained=self_contained)
                         + '<div class="ser-layout">',
                         "shell_bottom": "</div>" + _footer(ctx),
                         "page_header": header},
                 "metadata": {"name": state.title}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


def _render_fallback(ctx: _Context, pages: Mapping[str, str], site: Path, *, reason: str,
                     self_contained: bool) -> None:
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    banner = _banner(reason)
    numbering = {p: [0] for p in (*PAGES, "report.qmd")}
    for src in PAGES:
        page = _site_path(src)
        meta, body, toc = _markdown_page(pages[src], ctx, page=page, numbering=numbering[src],
                                         link_pages=True)
        doc = _html_page(title=str(meta.get("title", page)), banner=banner,
                         nav=_nav_html(ctx, page=page, self_contained=self_contained),
                         header=_title_block(meta), body=body, toc=_toc_html(toc),
                         footer=_footer(ctx))
        _write_text(site / page, doc)
    for state in ctx.states:
        page = _site_path(state.page)
        doc = _notebook_html(ctx.notebooks[state.stage], state, ctx, page=page, banner=banner,
                             self_contained=self_contained)
        _write_text(site / page, doc)
    if self_contained:
        meta, body, toc = _markdown_page(pages["report.qmd"], ctx, page="report.html",
                                         numbering=numbering["report.qmd"], link_pages=False)
        body = re.sub(r'href="(?!#|data:)[^"]*"', 'href="#"', body)  # no links out of the file
        doc = _html_page(title=str(meta.get("title", "Report")), banner=banner, nav="",
                         header=_title_block(meta), body=body, toc=_toc_html(toc),
                         footer=_footer(ctx))
        _write_text(site / "report.html", doc)


def external_references(html_text: str) -> list[str]:
    """URLs that a page would fetch or link to outside itself (``http(s):``, ``//``).

    Looks at ``src``/``href`` attributes and CSS ``url()``/``@import``; ``data:`` and
    in-page ``#`` links are local.
    """
    found = re.findall(r'(?:src|href)\s*=\s*["\']\s*((?:https?:)?//[^"\']+)', html_text, re.IGNORECASE)
    found += re.findall(r'url\(\s*["\']?\s*((?:https?:)?//[^)"\']+)', html_text, re.IGNORECASE)
    found += re.findall(r'@import\s+["\']((?:https?:)?//[^"\']+)', html_text, re.IGNORECASE)
    return sorted(set(found))


# ------------------------------------------------------------------------------ render


def render(*, results_dir: str | os.PathLike[str] | None = None, use_quarto: bool | None = None,
           self_contained: bool = True) -> Path:
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
        ser.report.privacy.PrivacyError: a rendered file still names a recording; it was
            deleted.
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
    ctx = _build_context(results, self_contained=self_contained)
    pages = _prepare_pages(ctx, self_contained=self_contained)
    site = results / "site"
    if use:
        assert quarto is not None
        try:
            _render_quarto(quarto, ctx, pages, site, self_contained=self_contained)
        except (QuartoError, subprocess.TimeoutExpired) as exc:
            reason = ("quarto render failed, so this site was rendered with the nbconvert "
                      "fallback; see the run log for Quarto's error.")
            log.error("report: %s", exc)
            print(f"ser.report.render: quarto render failed; writing the nbconvert fallback to {site}",
                  file=sys.stderr)
            _render_fallback(ctx, pages, site, reason=reason, self_contained=self_contained)
            _privacy_check(site, results)
            raise QuartoError(str(exc)) from exc
    else:
        notice = (FALLBACK_NOTICE if quarto is None else
                  "Rendering with the nbconvert fallback (use_quarto=False); "
                  "Quarto renders the full site")
        log.info("report: %s", notice)
        print(f"ser.report.render: {notice}", file=sys.stderr)
        reason = (f"{FALLBACK_NOTICE}." if quarto is None else
                  "This site was rendered with the nbconvert fallback (use_quarto=False); "
                  "`quarto render` gives the full site.")
        _render_fallback(ctx, pages, site, reason=reason, self_contained=self_contained)
    _privacy_check(site, results)
    index = site / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"rendering finished but {index} was not written")
    return index


def _privacy_check(site: Path, results: Path) -> None:
    recordings = _read_csv(results / "tables" / "recordings.csv")
    manifest = (recordings if recordings is not None and "path" in recordings.columns
                else pd.DataFrame({"path": []}))
    privacy.check_site(site, manifest, extra=[str(paths.data_dir())])
