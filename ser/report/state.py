"""Run state: what a run left in ``results/`` and, per stage, what the report may show.

Reads ``results/run.json`` (the runner's record), ``results/provenance/*.json`` and the
result tables, and decides per stage whether its executed notebook belongs to this run
(:func:`stage_states`); a stage from another run, or computed from outdated upstream
data, is ``stale`` and shows no figure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd

from ser.core import paths
from ser.core.provenance import hash_inputs
from ser.report.notebooks import front_matter, read_notebook
from ser.report.project import navbar_stages, quarto_config, walk_nav

log = logging.getLogger(__name__)

#: Stage statuses written by the runner (``results/run.json``).
RUN_STATUSES: tuple[str, ...] = ("ok", "failed", "skipped", "pending")
#: Statuses the report adds: no executed notebook, or one from another run.
REPORT_STATUSES: tuple[str, ...] = (*RUN_STATUSES, "missing", "stale", "not run")


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
        nb = read_notebook(nb_path) if nb_path.is_file() else None
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
    for stage in navbar_stages():
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
    prov = read_provenance(results_dir)
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


def _first_line(text: str | None, *, limit: int = 300) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _stage_title(stage: str, nb: nbformat.NotebookNode | None) -> str:
    """Front-matter title of the executed (else source) notebook, else the navbar text."""
    for candidate in (nb, read_notebook(paths.NOTEBOOKS / f"{stage}.ipynb")
                      if (paths.NOTEBOOKS / f"{stage}.ipynb").is_file() else None):
        if candidate is not None and front_matter(candidate).get("title"):
            return str(front_matter(candidate)["title"])
    for item in walk_nav(quarto_config().get("website", {}).get("navbar", {})):
        if item.get("href") == f"results/notebooks/{stage}.ipynb" and item.get("text"):
            return str(item["text"])
    num, _, name = stage.partition("_")
    return f"{num} · {name.replace('_', ' ').capitalize()}" if name else stage


def read_provenance(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Provenance records of the run's stages (``results/provenance/*.json``), keyed by stage.

    A file that is not valid JSON is skipped with a warning.
    """
    out = {}
    for f in sorted((results_dir / "provenance").glob("*.json")):
        try:
            out[f.stem] = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("report: provenance file %s is not valid JSON; ignored", f.name)
    return out


def read_table(path: Path) -> pd.DataFrame | None:
    """A result table (CSV), or ``None`` when it is absent or unreadable (with a warning)."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        log.warning("report: cannot read %s (%s)", path.name, exc)
        return None
