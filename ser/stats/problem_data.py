"""The problem-data table of each analysis notebook.

:func:`problem_report` says, one row per problem, what was done with caregivers lacking
a phase, single-caregiver or absent levels, constant or missing features, windows with
too little speech or an unsure emotion model, and fits that were skipped, did not converge or hit a boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ser.data.schema import LEVELS, PHASES, PROBLEM_COLUMNS
from ser.stats.mixed import SKIP_TERM


def problem_report(
    data: pd.DataFrame,
    *,
    features: Sequence[str],
    analysis: str,
    fits: pd.DataFrame | None = None,
    delta: pd.DataFrame | None = None,
    group: str = "caregiver",
) -> pd.DataFrame:
    """What was done with problem data, one row per problem, for the notebooks.

    Looks for the problems the issue names and states the action the analysis took:

    - caregiver with one phase: kept in the mixed models (informs level terms only);
      dropped from the deltas (when ``delta`` is given);
    - level with one caregiver: kept and flagged; level absent: no contrast;
    - feature (descriptor) with zero variance: not modelled (fit skipped);
    - missing values: those rows left out of that descriptor's models;
    - windows with too little speech (``n_emotion_windows`` < ``n_windows`` in ``data``,
      from ``min_speech_ratio`` in :func:`ser.stats.descriptors.recording_descriptors` /
      :func:`~ser.stats.descriptors.time_binned`) and windows whose top emotion
      probability is below ``min_top_p`` (``n_low_confidence_windows``, present when that
      filter is on): left out of the emotion-probability descriptors, each counted on its
      own row; rows (recordings, segments or bins) left without any counted window;
    - from ``fits`` (rows of :func:`ser.stats.mixed.mixed_models_table`): fits that did not converge,
      boundary (singular) fits, skipped fits, failed or non-converged likelihood-ratio tests;
    - from ``delta``: relative changes not computed because ``|control|`` is near zero.

    Args:
        data: the analysed table (windows, bins or descriptors) with ``group``,
            ``level`` and ``phase`` when present.
        features: the analysed columns.
        analysis: value of the ``analysis`` column (e.g. ``"time_invariant"``).
        fits: mixed-model rows, optional.
        delta: output of :func:`ser.stats.deltas.delta_table`, optional.
        group: caregiver column.

    Returns:
        DataFrame with :data:`PROBLEM_COLUMNS` (empty when nothing was found).
    """
    rows: list[dict[str, str]] = []

    def add(problem: str, where: str, action: str, detail: str = "") -> None:
        rows.append({"analysis": analysis, "problem": problem, "where": where,
                     "action": action, "detail": detail})

    if {group, "phase"} <= set(data.columns):
        phases = data.groupby(group)["phase"].agg(lambda v: sorted(set(v.astype(str))))
        for cg, ph in phases.items():
            if len(ph) < len(PHASES):
                add("caregiver with one phase", str(cg),
                    "kept in the mixed models (informs the level terms, not the phase "
                    "contrast)", f"only {'/'.join(ph)}")
    if {group, "level"} <= set(data.columns):
        per_level = data.groupby("level")[group].nunique()
        for lv in LEVELS:
            n = int(per_level.get(lv, 0))
            if n == 0:
                add("level absent", lv, "no contrast estimated for it" + (
                    "; the lowest present level becomes the reference"
                    if lv == LEVELS[0] else ""))
            elif n == 1:
                add("level with one caregiver", lv, "kept and flagged in every fit's note "
                    "(contrasts with it rest on one person)",
                    f"caregiver {data.loc[data['level'] == lv, group].iloc[0]}")
    if {"n_windows", "n_emotion_windows"} <= set(data.columns):
        n_all = pd.to_numeric(data["n_windows"], errors="coerce").fillna(0)
        n_used = pd.to_numeric(data["n_emotion_windows"], errors="coerce").fillna(0)
        confidence = "n_low_confidence_windows" in data.columns
        n_unsure = (pd.to_numeric(data["n_low_confidence_windows"], errors="coerce").fillna(0)
                    if confidence else pd.Series(0, index=data.index))
        for problem, n_left, param in (
                ("windows with too little speech", n_all - n_used - n_unsure, "min_speech_ratio"),
                ("windows with low emotion confidence", n_unsure, "min_top_p")):
            left = int(n_left.sum())
            if left > 0:
                share = n_left / n_all.where(n_all > 0)
                add(problem, "p_<label> / d_<dimension> (model outputs)",
                    f"left out of the emotion-probability descriptors ({param})",
                    f"{left} of {int(n_all.sum())} windows ({100 * left / n_all.sum():.1f} %); "
                    f"per row {100 * share.min():.0f}-{100 * share.max():.0f} %")
        empty = (n_used == 0) & (n_all > 0)
        if empty.any():
            where = data.loc[empty, "recording"] if "recording" in data else data.index[empty]
            add("no window with enough speech and confidence" if confidence
                else "no window with enough speech",
                ", ".join(sorted(map(str, set(where))))[:200],
                "emotion-probability descriptors left empty there (rows left out of those "
                "models)", f"{int(empty.sum())} of {len(data)} rows")
    for f in features:
        if f not in data.columns:
            continue
        v = pd.to_numeric(data[f], errors="coerce")
        if v.notna().sum() and v.nunique(dropna=True) < 2:
            add("zero-variance feature", f, "not modelled (fit skipped, term '(skipped)')",
                f"constant {v.dropna().iloc[0]:.6g}")
        n_na = int(v.isna().sum())
        if 0 < n_na:
            add("missing values", f, "rows left out of this feature's models",
                f"{n_na} of {len(v)} rows")
    if fits is not None and len(fits):
        for (f, m), g in fits.groupby(["feature", "model"], sort=False):
            where = f"{f} · {m}"
            skipped = g["term"].eq(SKIP_TERM)
            if skipped.any():
                note = str(g.loc[skipped, "note"].iloc[0])
                reason = [p for p in note.split("; ") if p.startswith("skipped")]
                add("model skipped", where, "no estimates; reason in the note",
                    reason[0] if reason else note)
                continue
            if not g["converged"].fillna(False).astype(bool).all():
                add("model did not converge", where, "reported with converged False; "
                    "estimates flagged unreliable")
            if "singular" in g and g["singular"].fillna(False).astype(bool).any():
                add("boundary (singular) fit", where, "reported with singular True "
                    "(caregiver variance ~0); estimates kept")
            notes = " ".join(g["note"].fillna("").astype(str))
            if "LRT failed" in notes:
                add("likelihood-ratio test failed", where, "p left empty for that term")
            if "reduced ML fit did not converge" in notes or "ML fit did not converge" in notes:
                add("ML fit for a test did not converge", where,
                    "p-value reported and flagged in the note")
    if delta is not None and len(delta):
        for cg, g in delta[delta["status"] == "dropped"].groupby("caregiver", sort=False):
            add("caregiver with one phase", str(cg), "dropped from the delta analysis",
                str(g["note"].iloc[0]))
        flagged = delta[delta["flag_small_denominator"].fillna(False).astype(bool)]
        for f, g in flagged.groupby("feature", sort=False):
            add("near-zero control value", f, "relative change left empty and flagged "
                "(never 0)", f"{g['caregiver'].nunique()} caregiver(s)")
    return pd.DataFrame(rows, columns=PROBLEM_COLUMNS)

