"""What was found, in words and numbers: the summary that opens the findings page.

:func:`findings_summary_markdown` writes, from the run's tables only:

- each effect of ``mixed_models.csv`` that survives the false-discovery rate, as one
  sentence with its size and unit, 95 % confidence interval and adjusted p;
- the measures for which no clear difference was found;
- "How well does the computer recognise emotion in speech?": the held-out-speaker UAR
  (``eval_metrics.csv``), the cross-corpus UAR (``cross_corpus.csv`` or
  ``eval_cross_corpus.csv`` when present), the calibration error, and what they mean for
  trusting the emotion results.

:func:`glossary_markdown` maps every name shown back to the column names of
``results/tables/`` for analysts. Names come from :mod:`ser.report.names`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ser.report.names import (
    analysis_heading,
    display_scale,
    feature_name,
    feature_unit,
    glossary_rows,
    term_name,
)
from ser.report.state import read_table

#: Terms that are not effects (intercepts, variance components).
NON_EFFECT_TERMS = r"intercept|group var|^re_|residual|\(skipped\)"


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (``–`` when missing)."""
    v = _num(x)
    return "–" if math.isnan(v) else f"{v:.{digits}g}"


def fmt_p(p: Any) -> str:
    """An (adjusted) p-value: ``< 0.001`` or three decimals."""
    v = _num(p)
    if math.isnan(v):
        return "–"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def shown_value(value: Any, column: str) -> str:
    """A value of ``column`` as shown, without unit (fractions scaled to %)."""
    v = _num(value)
    return "–" if math.isnan(v) else fmt_num(v * display_scale(column))


def with_unit(value: Any, column: str) -> str:
    """A value of ``column`` as shown: scaled (fractions in %) and with its unit."""
    text = shown_value(value, column)
    if text == "–":
        return text
    unit = feature_unit(column)
    if unit == "%":
        return f"{text} percentage points"
    return f"{text} {unit}".strip()


def effects(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``mixed_models.csv`` that are effects (no intercepts or variances), with
    ``_p`` (the adjusted p as a number: the study-wise ``p_adj`` of a primary hypothesis,
    the false-discovery-rate ``p_fdr`` of an exploratory effect) and ``_primary``."""
    if table.empty or "term" not in table.columns:
        return table.assign(_p=pd.Series(dtype=float), _primary=pd.Series(dtype=bool))
    df = table[~table["term"].astype(str).str.contains(NON_EFFECT_TERMS, case=False, regex=True)]
    primary = (df["family"].astype(str) == "primary" if "family" in df.columns
               else pd.Series(False, index=df.index))
    p = pd.to_numeric(df.get("p_fdr"), errors="coerce")
    if primary.any():
        p = p.where(~primary, pd.to_numeric(df.get("p_adj"), errors="coerce"))
    return df.assign(_p=p, _primary=primary.astype(bool))


def conditional_terms(table: pd.DataFrame) -> set[tuple[str, str, str]]:
    """``(analysis, model, feature)`` of the fits with a phase × level interaction: their
    main effects are conditional (care vs. control among untrained caregivers, level
    differences in the control phase; :mod:`ser.stats.mixed`)."""
    if table is None or table.empty or "term" not in table.columns:
        return set()
    rows = table[table["term"].astype(str).str.contains(":", regex=False)]
    return {(str(r.get("analysis", "")), str(r.get("model", "")), str(r.get("feature", "")))
            for _, r in rows.iterrows()}


def condition_of(row: Mapping[str, Any], conditional: set[tuple[str, str, str]]) -> str:
    """Where a main effect holds when its model has an interaction (``""`` otherwise)."""
    key = (str(row.get("analysis", "")), str(row.get("model", "")), str(row.get("feature", "")))
    term = str(row.get("term", ""))
    if (key not in conditional or ":" in term or str(row.get("analysis", "")) == "delta"
            or str(row.get("model", "")) == "primary"):
        return ""
    if term.startswith("phase"):
        return "among untrained caregivers"
    if term.startswith("level"):
        return "in the control phase"
    return ""


def effect_sentence(row: Mapping[str, Any], *, condition: str = "") -> str:
    """One sentence for one effect: what, how large (unit), 95 % CI, adjusted p.

    Args:
        row: a row of ``mixed_models.csv``.
        condition: where a conditional main effect holds (:func:`condition_of`).
    """
    feature = str(row.get("feature", ""))
    term = str(row.get("term", ""))
    name = feature_name(feature)
    est = _num(row.get("estimate"))
    p_adj = row.get("_p", row.get("p_fdr"))
    ci = (f"95 % CI {shown_value(row.get('ci_low'), feature)} to "
          f"{with_unit(row.get('ci_high'), feature)}; adjusted p {fmt_p(p_adj)}")
    if math.isnan(est):
        return f"{name.capitalize()} differed by {term_name(term)} (adjusted p {fmt_p(p_adj)})."
    size = with_unit(abs(est), feature)
    more = "higher" if est > 0 else "lower"
    delta = str(row.get("analysis", "")) == "delta"
    if term in ("phase[care]", "care"):
        what = f"{name} was {size} {more} in care than in control"
        if delta:
            what = f"the change in {name} from control to care was {size} {more}"
    elif term in ("level_trend", "level_step"):
        what = (f"the change in {name} from control to care was {size} {'larger' if est > 0 else 'smaller'} "
                f"per step of training level" if delta else
                f"{name} was {size} {more} per step of training level")
    elif term in ("phase[care]:level_trend", "care:level_step"):
        what = (f"the difference in {name} between care and control was {size} "
                f"{'larger' if est > 0 else 'smaller'} per step of training level")
    elif term.startswith("level[") and ":" not in term:
        level = term[len("level["):].rstrip("]").replace("T.", "")
        what = f"{name} was {size} {more} in {level} than in untrained caregivers"
    elif term == "care:time":
        what = (f"over the session, {name} {'rose' if est > 0 else 'fell'} by {size} more per unit "
                "of session time in care than in control")
    elif term == "time":
        what = f"{name} {'rose' if est > 0 else 'fell'} by {size} per unit of session time"
    else:
        what = f"{name}, {term_name(term)}: {'+' if est > 0 else '−'}{size}"
    if condition:
        what += f" {condition}"
    return f"{what[0].upper()}{what[1:]} ({ci})."


def _heading_of(analysis: Any) -> str:
    return analysis_heading(str(analysis))[0].lower()


def effects_summary(table: pd.DataFrame | None, *, alpha: float = 0.05) -> str:
    """The effects part of the summary: clear effects as sentences, then what did not differ."""
    if table is None:
        return "No statistical results are available in this run.\n"
    df = effects(table)
    if df.empty:
        return "No statistical results are available in this run.\n"
    out = []
    primary = bool(df["_primary"].any())
    rule = "study-wise adjusted p" if primary else "false-discovery rate"
    what = "primary hypotheses" if primary else "effects tested"
    if primary:
        n_all = len(df)
        df = df[df["_primary"]]
        out.append(f"The study fixed {len(df)} primary hypotheses before the data were seen; each is "
                   "decided by a robust test, with one correction over all of them. The other "
                   f"{n_all - len(df)} effects tested are exploratory and listed further down.\n")
    clear = df[df["_p"] < alpha].sort_values("_p", kind="stable")
    if clear.empty:
        out.append(f"**No difference reached clear evidence** ({rule} below "
                   f"{alpha:g}) among the {len(df)} {what}.")
    else:
        out.append(f"**{len(clear)} of the {len(df)} {what} show clear evidence** "
                   f"({rule} below {alpha:g}):\n")
        cond = conditional_terms(df)
        for _, r in clear.iterrows():
            out.append(f"- {effect_sentence(r, condition=condition_of(r, cond))} "
                       f"*({_heading_of(r.get('analysis'))})*")
        out.append("")
    # one measure under several summaries (p_happy in 05, p_happy__mean in 06) counts once
    measure = df["feature"].astype(str).str.split("__").str[0]
    features = list(dict.fromkeys(measure))
    found = set(measure[clear.index])
    none = [feature_name(f) for f in features if f not in found]
    if none and not clear.empty:
        out.append("No clear difference, in any analysis, was found for: " + "; ".join(none)
                   + ". *No clear evidence* means the data are compatible with no effect, "
                   "which is not the same as showing there is none.")
    elif not clear.empty:
        out.append("Every measure tested showed at least one clear effect.")
    else:
        out.append("Measures tested: " + "; ".join(feature_name(f) for f in features) + ". "
                   "The data are compatible with no effect, which is not the same as showing "
                   "there is none.")
    return "\n".join(out) + "\n"


def _first(df: pd.DataFrame | None, column: str) -> float:
    if df is None or column not in df.columns:
        return math.nan
    values = pd.to_numeric(df[column], errors="coerce").dropna()
    return float(values.iloc[0]) if len(values) else math.nan


def _cross_corpus_uar(tables: Path) -> tuple[float, str]:
    loco = read_table(tables / "cross_corpus.csv")
    if loco is not None and "uar" in loco.columns and len(loco):
        uar = pd.to_numeric(loco["uar"], errors="coerce").dropna()
        if len(uar):
            n = loco.loc[uar.index, "held_out_corpus"].nunique() if "held_out_corpus" in loco else len(uar)
            return float(uar.mean()), (f"mean over {n} corpora each left out of training "
                                       "(classical models)")
    cross = read_table(tables / "eval_cross_corpus.csv")
    if cross is not None and "uar" in cross.columns and len(cross):
        rows = cross
        if "normalization" in cross.columns:
            plain = cross[cross["normalization"].astype(str).isin(["none", "", "nan"])]
            rows = plain if len(plain) else cross
        uar = pd.to_numeric(rows["uar"], errors="coerce").dropna()
        if len(uar):
            n = rows.loc[uar.index, "corpus"].nunique() if "corpus" in rows else len(uar)
            return float(uar.mean()), f"mean over {n} other corpora the model never trained on"
    return math.nan, ""


def recognition_summary(tables: Path | None, *, n_labels: int | None) -> str:
    """"How well does the computer recognise emotion in speech?", answered with the
    run's measured figures and what they mean for trusting the emotion results.

    Args:
        tables: the run's ``results/tables`` (``None``: the model was not evaluated in
            this run, so no table there may be shown).
        n_labels: emotions the model distinguishes (for the chance level).
    """
    if tables is None:
        return ("The emotion recogniser was not evaluated in this run, so how far its emotion "
                "estimates can be trusted is unknown.\n")
    metrics = read_table(tables / "eval_metrics.csv")
    uar = _first(metrics, "uar")
    ece = _first(metrics, "ece_after")
    if math.isnan(ece):
        ece = _first(metrics, "ece")
    cross, cross_how = _cross_corpus_uar(tables)
    chance = 1.0 / n_labels if n_labels else math.nan
    lines = []
    if math.isnan(uar):
        return ("The emotion recogniser was not evaluated in this run, so how far its emotion "
                "estimates can be trusted is unknown.\n")
    chance_txt = (f"; guessing would score {chance:.2f} with {n_labels} emotions"
                  if not math.isnan(chance) else "")
    lines.append(f"- **On speakers it never heard in training**, the recogniser scores an "
                 f"unweighted average recall (UAR: the share of utterances recognised "
                 f"correctly, averaged over emotions) of **{uar:.2f}**{chance_txt}.")
    if not math.isnan(cross):
        lines.append(f"- **On recordings from other corpora** ({cross_how}) it scores a UAR "
                     f"of **{cross:.2f}**.")
    else:
        lines.append("- **On other corpora** it was not tested in this run, so how well it "
                     "carries over to new recording conditions is unknown.")
    if not math.isnan(ece):
        lines.append(f"- **Calibration error** (how far its stated confidence is from how "
                     f"often it is right; 0 is perfect): **{ece:.3f}**"
                     + (" (its probabilities can be read as stated)." if ece < 0.05 else
                        " (its probabilities are only roughly what they say)." if ece < 0.15
                        else " (its probabilities should not be read at face value)."))
    margin = uar - chance if not math.isnan(chance) else math.nan
    worst = min(x for x in (uar, cross) if not math.isnan(x))
    if not math.isnan(margin) and margin < 0.1:
        trust = ("barely better than guessing: the emotion results below should not be "
                 "interpreted.")
    elif worst < 0.5:
        trust = ("clearly better than guessing but often wrong: emotion results describe "
                 "tendencies over many windows, not single moments, and are weaker evidence "
                 "than the voice measures (pitch, loudness, speaking time), which are measured "
                 "directly.")
    else:
        trust = ("mostly right on held-out speakers: emotion results are usable as averages "
                 "over many windows; they still describe how a voice sounds, not what the "
                 "caregiver feels.")
    lines.append(f"\n**What this means for trust:** the recogniser is {trust}")
    return "\n".join(lines) + "\n"


def findings_summary_markdown(tables: Path | None, mixed: pd.DataFrame | None, *,
                              demo: bool, n_labels: int | None, alpha: float = 0.05) -> str:
    """The plain-language summary that opens the findings page.

    Args:
        tables: the run's ``results/tables`` (``None``: the model was not evaluated).
        mixed: the ``mixed_models.csv`` rows of analyses that may be shown (``None``:
            no statistics in this run).
        demo: the run used synthetic demonstration data (said first).
        n_labels: emotions the model distinguishes (for the chance level); ``None`` unknown.
        alpha: false-discovery rate under which an effect counts as clear evidence.
    """
    data = ("**Demonstration data:** these results come from synthetic recordings with "
            "planted effects; they say nothing about real caregivers." if demo else
            "**Study data:** these results come from the study's recordings.")
    return (f"{data}\n\n#### What differed\n\n{effects_summary(mixed, alpha=alpha)}\n"
            f"#### How well does the computer recognise emotion in speech?\n\n"
            f"{recognition_summary(tables, n_labels=n_labels)}")


def glossary_markdown(columns: Sequence[str], terms: Sequence[str]) -> str:
    """For analysts: each name shown and the column or term of ``results/tables/`` it is."""
    rows = glossary_rows(columns, terms)
    lines = ["| Shown as | In the tables |", "| --- | --- |"]
    lines += [f"| {shown} | `{code}` |" for shown, code in rows]
    return "\n".join(lines) + "\n"
