"""The study runner behind ``ser run`` and ``make run``.

Executes the numbered notebooks in order with papermill, each with its resolved
parameters (``params/<stage>.yaml`` ← profile), writes executed copies to
``results/notebooks/`` and a run record ``results/run.json`` after every stage, then
renders the report. A failing stage stops the run with a message naming the notebook,
the cell and the error; its executed notebook is kept, and the report still renders
(showing the failure) so a run never ends without HTML.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ser.core import paths
from ser.core.atomic import atomic_write_json
from ser.data import demo
from ser.report import browser
from ser.report.render import render_site
from ser.run.params import ParamsError, load_profile, load_stage_params, params_hash, resolve_stage, stages

#: Name of the Jupyter kernel that ``make install`` registers inside ``.venv``.
KERNEL_NAME = "ser"


class StageFailed(RuntimeError):
    """A stage notebook raised; the message names notebook, cell and error."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class StageResult:
    """Outcome of one stage, as stored in ``results/run.json``."""

    stage: str
    status: str  # ok | failed | skipped | pending
    executed: str | None = None
    error: str | None = None
    params: dict[str, Any] | None = None
    seconds: float | None = None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_kernel() -> str:
    """The project's kernel (``ser``) when registered, else ``python3`` of this interpreter."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        if KERNEL_NAME in KernelSpecManager().find_kernel_specs():
            return KERNEL_NAME
    except Exception:  # noqa: BLE001 - any kernelspec problem: fall back
        pass
    return "python3"


def _stage_range(from_stage: str | None, to_stage: str | None) -> tuple[list[str], list[str]]:
    all_stages = stages()
    first = resolve_stage(from_stage, all_stages=all_stages) if from_stage else all_stages[0]
    last = resolve_stage(to_stage, all_stages=all_stages) if to_stage else all_stages[-1]
    i, j = all_stages.index(first), all_stages.index(last)
    if i > j:
        raise ParamsError(f"--from {first} comes after --to {last}")
    return all_stages, all_stages[i : j + 1]


def _failure_message(stage: str, nb_out: Path, err: Exception) -> str:
    from papermill.exceptions import PapermillExecutionError

    rel = f"notebooks/{stage}.ipynb"
    if isinstance(err, PapermillExecutionError):
        first_line = next((ln for ln in err.source.splitlines()
                           if ln.strip() and not ln.startswith("#|")), "").strip()
        return (f"stage {stage} failed in {rel}, cell In [{err.exec_count}] "
                f"(`{first_line[:80]}`): {err.ename}: {err.evalue}\n"
                f"The executed notebook is kept at {nb_out}.")
    return f"stage {stage} failed in {rel}: {type(err).__name__}: {err}"


def _write_record(record: dict[str, Any]) -> None:
    atomic_write_json(paths.results_dir() / "run.json", record)


def _previous_record() -> dict[str, Any] | None:
    p = paths.results_dir() / "run.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def run(*, profile: str | None = "demo", from_stage: str | None = None,
        to_stage: str | None = None, kernel: str | None = None, render: bool = True,
        progress: bool = True) -> dict[str, Any]:
    """Run stages ``from_stage``..``to_stage`` with a profile, then render the report.

    Args:
        profile: profile under ``params/profiles`` (``None``: the stage yaml files only).
        from_stage: first stage (``"02"``, ``"train"`` or ``"02_train"``); default the first.
        to_stage: last stage; default the last.
        kernel: Jupyter kernel name; default :func:`default_kernel`.
        render: render the report at the end (also after a failure).
        progress: show papermill's per-cell progress bar.

    Returns:
        The run record (also in ``results/run.json``).

    Raises:
        ParamsError: bad profile/params before anything runs.
        StageFailed: a stage raised; later stages are marked ``skipped``.
    """
    import papermill as pm

    all_stages, selected = _stage_range(from_stage, to_stage)
    # Resolve and check every selected stage's params before running anything.
    resolved = {s: load_stage_params(s, profile=profile) for s in selected}
    prof = load_profile(profile)
    kernel = kernel or default_kernel()

    prev = _previous_record() or {}
    prev_stages = {s["stage"]: s for s in prev.get("stages", []) if isinstance(s, dict)}
    results: dict[str, StageResult] = {}
    for s in all_stages:
        if s in selected:
            results[s] = StageResult(stage=s, status="pending", params=resolved[s])
        elif s in prev_stages and prev.get("profile") == profile:
            results[s] = StageResult(**{k: prev_stages[s].get(k) for k in StageResult.__dataclass_fields__})
        else:
            results[s] = StageResult(stage=s, status="pending")
    all_params = {s: (r.params or {}) for s, r in results.items()}
    record: dict[str, Any] = {
        "profile": profile, "started_utc": _now(), "finished_utc": None,
        "params_hash": params_hash(all_params), "kernel": kernel,
        "stages": [], "report": None,
    }

    def save() -> None:
        record["stages"] = [vars(results[s]) for s in all_stages]
        _write_record(record)

    if "demo_data" in prof and prof["demo_data"] is not None:
        print(f"[ser] demo data → {paths.demo_dir()}", flush=True)
        demo.generate(paths.demo_dir(), progress=progress, **(prof["demo_data"] or {}))

    out_dir = paths.executed_notebooks_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Kernels inherit this process' environment. librosa (through pooch) imports
    # tqdm.auto, which warns about ipywidgets with a path into the environment; the
    # warning is noise in a report, so the kernels ignore that one message.
    _add_python_warning_filter("ignore:IProgress not found")
    failure: StageFailed | None = None
    save()
    for s in selected:
        nb_in = paths.NOTEBOOKS / f"{s}.ipynb"
        nb_out = out_dir / f"{s}.ipynb"
        print(f"[ser] stage {s} (kernel {kernel})", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb_in), str(nb_out), parameters=resolved[s],
                                kernel_name=kernel, cwd=str(paths.ROOT),
                                progress_bar=progress, log_output=False)
        except Exception as err:  # noqa: BLE001 - reported with context, then re-raised
            msg = _failure_message(s, nb_out, err)
            results[s] = StageResult(stage=s, status="failed", executed=f"notebooks/{s}.ipynb",
                                     error=msg, params=resolved[s],
                                     seconds=round(time.perf_counter() - t0, 1))
            for later in selected[selected.index(s) + 1:]:
                results[later] = StageResult(stage=later, status="skipped", params=resolved[later],
                                             error=f"not run because {s} failed")
            failure = StageFailed(s, msg)
            save()
            break
        results[s] = StageResult(stage=s, status="ok", executed=f"notebooks/{s}.ipynb",
                                 params=resolved[s], seconds=round(time.perf_counter() - t0, 1))
        print(f"[ser] stage {s} done in {results[s].seconds:.1f} s", flush=True)
        save()

    record["finished_utc"] = _now()
    save()
    if render:
        try:
            index = render_site()
            record["report"] = str(Path(index).relative_to(paths.results_dir()))
            print(f"[ser] report: {index}", flush=True)
            record["browser_check"] = _browser_check(Path(index))
        except Exception as err:  # noqa: BLE001
            print(f"[ser] report rendering failed: {type(err).__name__}: {err}", file=sys.stderr)
            record["report"] = None
            save()
            if failure is None:
                raise
        save()
    if failure is not None:
        raise failure
    return record


def _add_python_warning_filter(spec: str) -> None:
    """Append a filter to ``PYTHONWARNINGS`` for the kernels this process starts."""
    current = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
    if spec not in current:
        os.environ["PYTHONWARNINGS"] = ",".join([*current, spec])


def _browser_check(index: Path) -> dict[str, Any] | None:
    """Open the rendered index in headless Chromium (when installed) and keep a screenshot."""
    if browser.find_chromium() is None:
        print("[ser] Chromium not found: skipping the browser check of the report", flush=True)
        return None
    shot = paths.results_dir() / "site_screenshot.png"
    try:
        res = browser.browser_check(index, screenshot=shot, width=1400)
    except Exception as err:  # noqa: BLE001 - a check, not a stage: report and go on
        print(f"[ser] browser check could not run: {type(err).__name__}: {err}", flush=True)
        return {"error": f"{type(err).__name__}: {err}"}
    summary = {"console_errors": res["console_errors"], "broken_images": res["broken_images"],
               "images": len(res["images"]), "screenshot": "site_screenshot.png",
               "error_boxes": res["error_boxes"], "raw_math": res["raw_math"],
               "code_names": res["code_names"]}
    status = "ok" if not any(res[k] for k in ("console_errors", "broken_images", "error_boxes",
                                               "raw_math", "code_names")) else "PROBLEMS"
    print(f"[ser] browser check {status}: {summary['images']} images, "
          f"{len(res['console_errors'])} console errors, screenshot {shot}", flush=True)
    return summary


def stage_summary(record: dict[str, Any]) -> str:
    """One line per stage: status and seconds."""
    lines = []
    for s in record.get("stages", []):
        secs = f"{s['seconds']:.1f} s" if s.get("seconds") is not None else ""
        lines.append(f"  {s['stage']:<20} {s['status']:<8} {secs}")
    return "\n".join(lines)


def set_dirs(*, data_dir: str | os.PathLike[str] | None = None,
             results_dir: str | os.PathLike[str] | None = None) -> None:
    """Point this process (and the kernels it starts) at other data/results folders."""
    if data_dir:
        os.environ["SER_DATA_DIR"] = str(Path(data_dir).resolve())
    if results_dir:
        os.environ["SER_RESULTS_DIR"] = str(Path(results_dir).resolve())


__all__: Sequence[str] = ("run", "StageFailed", "default_kernel", "set_dirs", "stage_summary")
