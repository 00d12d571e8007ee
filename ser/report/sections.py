"""Markdown sections of the report, generated from a run's results.

The include files of ``index.qmd`` and ``methods.qmd`` (``results/report/_*.md``): run
summary, cohort table, mixed-model effects, run status, and the methods' run identity,
data hashes, model card, parameters and software (:func:`write_generated_inputs`).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ser.data.schema import LEVELS, PHASES
from ser.report import privacy
from ser.report.findings import (
    condition_of,
    conditional_terms,
    effects,
    findings_summary_markdown,
    glossary_markdown,
    recognition_summary,
    shown_value,
)
from ser.report.names import ANALYSES, analysis_heading, display_name, term_name
from ser.report.project import write_text
from ser.report.state import StageState, read_provenance, read_table


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
              align: Sequence[str] | None = None) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    align = align or ["l"] * len(header)
    rule = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def callout(kind: str, title: str, body: str) -> str:
    """A Quarto callout block (``::: {.callout-<kind> title="…"}``)."""
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


def unavailable(what: str, state: StageState | None, suffix: str, *, link: bool = True) -> str:
    """A "Not available" callout: why ``what`` of stage ``<suffix>`` (``*_<suffix>``) cannot be shown."""
    if state is None:
        return callout("warning", "Not available",
                       f"{what} cannot be shown: this run has no stage *{suffix}*.")
    page = f" See [{state.title}]({state.page})." if link else ""
    return callout("warning", "Not available",
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
            f"{total:.1f} minutes of audio in total. Caregivers appear only by their study "
            f"id (see *Privacy* below); no audio is part of this report.\n\n{table}")


def _effect_rows(sub: pd.DataFrame, conditional: set[tuple[str, str, str]], *, alpha: float,
                 primary: bool = False) -> list[list[str]]:
    """Table rows (measure, effect, estimate [CI], p, reading) of effects of ``mixed_models.csv``."""
    rows = []
    for _, r in sub.iterrows():
        conv = str(r.get("converged", "True")).strip().lower() not in ("false", "0", "no")
        reading = "clear evidence" if r["_p"] < alpha else "no clear evidence"
        if not conv:
            reading += " (model did not converge)"
        feature = str(r.get("feature", ""))
        d80 = pd.to_numeric(r.get("detectable_80"), errors="coerce")
        if primary and pd.notna(d80):
            reading += f"; could have seen ±{shown_value(d80, feature)} (80 % power)"
        est = r.get("estimate")
        estimate = ("test of all levels together"
                    if pd.isna(pd.to_numeric(est, errors="coerce"))
                    else f"{shown_value(est, feature)} [{shown_value(r.get('ci_low'), feature)}, "
                         f"{shown_value(r.get('ci_high'), feature)}]")
        model = "" if primary else _MODEL_NAMES.get(str(r.get("model", "")), "")
        condition = condition_of(r, conditional)
        effect = term_name(str(r.get("term", ""))) + (f", {condition}" if condition else "")
        if primary:
            heading, _ = analysis_heading(str(r.get("analysis", "")))
            effect += f"<br><small>{heading.lower()}</small>"
        elif model:
            effect += f"<br><small>{model}</small>"
        rows.append([display_name(feature), effect, estimate, _fmt_p(r["_p"]), reading])
    return rows


def mixed_models_markdown(table: pd.DataFrame, *, alpha: float = 0.05, max_rows: int = 20) -> str:
    """Fixed effects of the mixed models: primary hypotheses first, then by analysis.

    The pre-specified primary hypotheses (``family == "primary"`` in ``mixed_models.csv``)
    come first, all of them, judged by their study-wise adjusted robust p-value
    (``p_adj``). Every other effect is exploratory: grouped by analysis, each with a
    heading and one line saying what it asks, so the same measure and effect under two
    analyses never look like duplicated rows. Measures and effects carry the reader's
    names and units of :mod:`ser.report.names` (fractions shown in %).

    Args:
        table: ``mixed_models.csv`` rows of the analyses that may be shown.
        alpha: adjusted p under which an effect counts as clear evidence.
        max_rows: exploratory rows shown per analysis; the rest are counted.
    """
    if table.empty:
        return "No model results are available.\n"
    df = effects(table)
    if df.empty:
        return "The models report no fixed effects besides their intercepts.\n"
    df = df.sort_values("_p", na_position="last", kind="stable")
    conditional = conditional_terms(df)
    primary = df["_primary"]
    blocks = []
    if primary.any():
        prim = df[primary]
        rule = (str(prim["adjustment"].dropna().astype(str).iloc[0])
                if "adjustment" in prim and prim["adjustment"].notna().any()
                else "adjusted over the primary family")
        blocks.append("#### Primary hypotheses\n\n*The questions fixed before the data were seen, "
                      f"each decided by a robust test with one correction over all of them ({rule}); "
                      "main effects are averages over caregivers and phases.*\n\n"
                      + _md_table(["Measure", "Effect", "Estimate [95% CI]", "p (adjusted)", "Reading"],
                                  _effect_rows(prim, conditional, alpha=alpha, primary=True),
                                  ["l", "l", "r", "r", "l"]))
    rest = df[~primary]
    analyses = list(dict.fromkeys(rest.get("analysis", pd.Series(["", ] * len(rest))).astype(str)))
    order = [a for a in ANALYSES if a in analyses] + [a for a in analyses if a not in ANALYSES]
    for analysis in order:
        sub = rest[rest["analysis"].astype(str) == analysis] if "analysis" in rest else rest
        heading, question = analysis_heading(analysis)
        rows = _effect_rows(sub.head(max_rows), conditional, alpha=alpha)
        more = len(sub) - len(rows)
        tail = (f"\n{more} further effects of this analysis, none with clearer evidence, are in "
                "its notebook page.\n" if more > 0 else "")
        label = f"{heading} (exploratory)" if primary.any() else heading
        blocks.append(f"#### {label}\n\n*{question}*\n\n"
                      + _md_table(["Measure", "Effect", "Estimate [95% CI]", "p (FDR)", "Reading"],
                                  rows, ["l", "l", "r", "r", "l"]) + tail)
    n_cg = pd.to_numeric(df.get("n_caregivers"), errors="coerce").max()
    who = f" on up to {int(n_cg)} caregivers" if pd.notna(n_cg) else ""
    n_clear = int((df["_p"] < alpha).sum())
    caveat = ("*No clear evidence* means the data are compatible with no effect, which is not "
              "the same as showing there is none.")
    if primary.any():
        n_primary, n_primary_clear = int(primary.sum()), int((df["_p"] < alpha)[primary].sum())
        return (f"**Primary hypotheses** (fixed before the data were seen; robust p-values, one "
                f"correction over all of them): **{n_primary_clear}** of {n_primary} reach an "
                f"adjusted p below {alpha:g} (*clear evidence*). The other {len(df) - n_primary} "
                f"effects{who} are **exploratory** (false-discovery rate within each analysis, "
                f"model and effect; {n_clear - n_primary_clear} below {alpha:g}): they suggest, "
                f"they do not confirm. {caveat} *Could have seen* gives, per primary hypothesis, "
                "the smallest effect this cohort detects with 80 % power after the study-wise "
                "correction; smaller effects may exist unseen. Within each group, effects are "
                "listed from the strongest evidence down.\n\n" + "\n".join(blocks))
    return (f"{len(df)} effects were tested{who}; **{n_clear}** reach a false-discovery rate "
            f"below {alpha:g} (*clear evidence*). {caveat} "
            "Within each analysis, effects are listed from the strongest evidence down.\n\n"
            + "\n".join(blocks))


#: How each model of ``mixed_models.csv`` codes training level, for the reader.
_MODEL_NAMES = {"level_trend": "levels as ordered steps", "level_categories": "levels as categories",
                "primary": "primary model"}


def sentence(text: str) -> str:
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


def stages_markdown(states: Sequence[StageState], *, link: bool = True) -> str:
    """Run status table: one row per stage with its status and reason."""
    rows = []
    for s in states:
        name = f"[{s.title}]({s.page})" if link else s.title
        secs = f"{s.seconds:.0f} s" if s.seconds is not None else "–"
        rows.append([name, f"**{s.status}**" if s.status != "ok" else "ok", secs,
                     sentence(s.reason) if s.reason else ""])
    return (_md_table(["Stage", "Status", "Time", "Note"], rows, ["l", "l", "r", "l"])
            + f'\n<p class="ser-render-note"><small>{RENDER_NOTE}</small></p>\n')


#: Placeholder in the run-status section for how the site was rendered; each renderer
#: replaces it (:func:`render_note`), so the notice stays in small print there and never
#: opens a reader's page.
RENDER_NOTE: str = "@@ser-render-note@@"


def render_note(pages: Mapping[str, str], note: str) -> dict[str, str]:
    """``pages`` with the :data:`RENDER_NOTE` placeholder replaced by ``note`` (escaped)."""
    import html

    text = html.escape(note)
    return {name: src.replace(RENDER_NOTE, text) for name, src in pages.items()}


def is_demo(run: Mapping[str, Any] | None) -> bool:
    """The run used the synthetic demonstration data (its profile says demo or smoke)."""
    return bool(re.search(r"demo|smoke", str((run or {}).get("profile") or ""), re.IGNORECASE))


#: Stage suffixes of the cohort study (after the model stages 01-03).
COHORT_STAGES: tuple[str, ...] = ("inference", "time_dependent", "time_invariant", "delta")


def is_cohort_run(run: Mapping[str, Any] | None, states: Sequence[StageState]) -> bool:
    """Whether the run is a cohort study (report on caregivers) or only trains and
    evaluates a model (``ser run --profile emodb --to 03_evaluate``: a model report).

    A cohort study has run, or tried to run, a cohort stage (04-07), or indexes a
    cohort manifest in stage 01 (``manifest`` other than ``none``). Without a run record
    the cohort report (saying that nothing can be shown) is kept.
    """
    if run is None:
        return True
    for s in states:
        if any(s.stage == c or s.stage.endswith("_" + c) for c in COHORT_STAGES) \
                and s.status not in ("pending", "not run"):
            return True
    pre = _state_of(states, "preprocess")
    manifest = (pre.params or {}).get("manifest") if pre is not None else None
    return manifest not in (None, "", "none", "None", False)


def id_pattern_of(run: Mapping[str, Any] | None) -> str:
    """The run's pattern of pseudonymous caregiver ids: stage 01's ``id_pattern``, or
    :data:`ser.report.privacy.DEFAULT_ID_PATTERN`."""
    for rec in (run or {}).get("stages", []):
        if str(rec.get("stage", "")).endswith("preprocess"):
            value = (rec.get("params") or {}).get("id_pattern")
            if isinstance(value, str) and value:
                return value
    return privacy.DEFAULT_ID_PATTERN


def _model_labels(results_dir: Path, states: Sequence[StageState]) -> list[str]:
    """Emotion labels of the run's model (``model.json`` of its ``model_name``)."""
    for suffix in ("evaluate", "train", "inference"):
        name = _stage_params(states, _state_of(states, suffix).stage).get("model_name") \
            if _state_of(states, suffix) is not None else None
        if name:
            card = results_dir / "models" / str(name) / "model.json"
            if card.is_file():
                try:
                    return [str(x) for x in json.loads(card.read_text(encoding="utf-8"))
                            .get("labels", [])]
                except json.JSONDecodeError:
                    return []
    cards = sorted((results_dir / "models").glob("*/model.json"))
    if len(cards) == 1:
        try:
            return [str(x) for x in json.loads(cards[0].read_text(encoding="utf-8"))
                    .get("labels", [])]
        except json.JSONDecodeError:
            return []
    return []


def run_summary_markdown(run: Mapping[str, Any] | None, states: Sequence[StageState], *,
                         self_contained: bool) -> str:
    """Callouts at the top of the index: demo data, incomplete run, run identity."""
    if run is None:
        return callout("important", "No run record",
                       "`results/run.json` is missing, so no figure or table can be matched to "
                       "a run and none is shown. Run the pipeline with `ser run` (or `make run`).")
    out = []
    profile = str(run.get("profile") or "unknown")
    if is_demo(run):
        out.append(callout("note", "Demonstration data",
                           f"This report was produced with the **{profile}** profile on "
                           "synthetic recordings generated by the pipeline itself. The numbers "
                           "show that the analysis runs end to end; they say nothing about real "
                           "caregivers."))
    bad = [s for s in states if s.status != "ok"]
    if bad:
        listing = "\n".join(f"- **{s.title}**: {s.status} — {s.reason.rstrip('.')}."
                            for s in bad)
        out.append(callout("warning", "Incomplete run",
                           f"{len(bad)} of {len(states)} stages did not complete in this run; "
                           f"their figures are marked *not available* below.\n\n{listing}"))
    ident = [f"profile **{profile}**"]
    if run.get("finished_utc"):
        ident.append(f"finished {fmt_when(run['finished_utc'])}")
    elif run.get("started_utc"):
        ident.append(f"started {fmt_when(run['started_utc'])}, not finished")
    if run.get("params_hash"):
        ident.append(f"parameters `{str(run['params_hash'])[:12]}`")
    out.append("This run: " + " · ".join(ident) + ".\n")
    if self_contained:
        out.append(SINGLE_FILE_NOTE)
    return "\n".join(out)


SINGLE_FILE_NOTE = ("A single-file copy of this page and the methods, for e-mail or offline "
                    "reading: [report.html](report.html).\n")


def fmt_when(iso: Any) -> str:
    """``2025-01-01T10:05:00+00:00`` → ``2025-01-01 10:05 UTC`` (as given when unparsable)."""
    try:
        t = datetime.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if t.tzinfo is not None:
        t = t.astimezone(datetime.UTC)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _is_location(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    return ("/" in value or "\\" in value or value.startswith("~")
            or bool(re.search(r"\.[A-Za-z][A-Za-z0-9]{1,4}$", value) and " " not in value))


def _public_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("[location withheld]" if _is_location(v) else v) for k, v in params.items()}


def methods_sections(results_dir: Path, run: Mapping[str, Any] | None,
                     states: Sequence[StageState]) -> dict[str, str]:
    """Generated parts of the methods page, keyed by include file name."""
    prov = read_provenance(results_dir)
    ok = {s.stage for s in states if s.status == "ok"}
    sections: dict[str, str] = {}

    # run identity
    commits = sorted({str(p.get("git_commit")) for p in prov.values() if p.get("git_commit")})
    rows = [["Profile", f"`{(run or {}).get('profile', '–')}`"],
            ["Started", fmt_when((run or {}).get("started_utc") or "–")],
            ["Finished", fmt_when((run or {}).get("finished_utc") or "–")],
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
            "stored. Hashes are shortened to 16 hex digits here; the run's provenance records "
            "hold the full values.\n\n")
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
        return unavailable("The model card", train, "train")
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
        metrics = read_table(results_dir / "tables" / "eval_metrics.csv")
        if metrics is not None and not metrics.empty:
            text += "\n#### Held-out evaluation\n\n" + _df_markdown(metrics)
        runs = read_table(results_dir / "tables" / "runs.csv")
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
    recordings = read_table(results_dir / "tables" / "recordings.csv")
    if pre is not None and pre.stage in ok and recordings is not None:
        files["_cohort.md"] = cohort_markdown(recordings)
    else:
        files["_cohort.md"] = unavailable("The cohort table", pre, "preprocess")

    mm = read_table(results_dir / "tables" / "mixed_models.csv")
    shown, notes = [], []
    for analysis in ("time_dependent", "time_invariant", "delta"):
        st = _state_of(states, analysis)
        if st is not None and st.stage in ok and mm is not None and "analysis" in mm.columns:
            shown.append(mm[mm["analysis"] == analysis])
        else:
            notes.append(unavailable(f"Model results of the {analysis.replace('_', '-')} "
                                     "analysis", st, analysis))
    body = mixed_models_markdown(pd.concat(shown)) if shown else ""
    files["_mixed_models.md"] = body + ("\n" if body else "") + "\n".join(notes)
    mixed = pd.concat(shown) if shown else None
    evaluate = _state_of(states, "evaluate")
    evaluated = evaluate is not None and evaluate.stage in ok
    labels = _model_labels(results_dir, states)
    tables = results_dir / "tables" if evaluated else None
    files["_summary.md"] = findings_summary_markdown(tables, mixed, demo=is_demo(run),
                                                     n_labels=len(labels) or None)
    files["_model_summary.md"] = (is_demo(run) and "**Demonstration data:** synthetic speech "
                                  "generated by the pipeline; the figures below say nothing "
                                  "about real speakers.\n\n" or "") + recognition_summary(
        tables, n_labels=len(labels) or None)
    columns = (list(dict.fromkeys(mixed["feature"].astype(str))) if mixed is not None
               and "feature" in mixed else [])
    columns = columns or [*(f"p_{lab}__mean" for lab in labels), "f0_hz__median",
                          "energy_db__mean", "speech_ratio"]
    terms = (list(dict.fromkeys(effects(mixed)["term"].astype(str))) if mixed is not None
             else ["phase[care]", "level_trend", "phase[care]:level_trend"])
    files["_glossary.md"] = glossary_markdown(columns, terms)
    files["_stages.md"] = stages_markdown(states)
    files["_privacy.md"] = privacy.privacy_markdown(
        id_pattern_of(run), checked_ids="_cohort.md" in files and recordings is not None
        and pre is not None and pre.stage in ok)
    files.update(methods_sections(results_dir, run, states))
    for name, text in files.items():
        write_text(out / name, scrub(text))
    return out
