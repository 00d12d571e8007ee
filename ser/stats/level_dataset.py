"""The per-caregiver dataset of the level classification, with its problem-data record.

:func:`caregiver_dataset` turns the descriptor table into one row per caregiver (control
and care descriptors side by side, their difference, or one phase) and says what it did
with problem data (caregivers lacking a phase, levels with too few caregivers, constant
or missing descriptors). The caregiver is the unit of cross-validation and of the
permutation test (:mod:`ser.stats.level_classification`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ser.data.schema import LEVEL_INDEX, LEVELS, PHASES, PROBLEM_COLUMNS

#: How caregivers' phases become features.
INPUTS: dict[str, str] = {
    "both": "control and care descriptors side by side",
    "delta": "care - control difference of each descriptor",
    "control": "control-phase descriptors only",
    "care": "care-phase descriptors only",
}


@dataclass(frozen=True)
class LevelDataset:
    """Per-caregiver feature matrix for level classification.

    Attributes:
        X: features, one row per sample (index: caregiver, or caregiver × segment),
            float, NaN where a descriptor is missing.
        y: training level of each row (strings from :data:`ser.data.schema.LEVELS`).
        groups: caregiver of each row (the unit of cross-validation and permutation).
        input: the ``input`` mode used (see :data:`INPUTS`).
        problems: what was done with problem data (:data:`PROBLEM_COLUMNS`).
    """

    X: pd.DataFrame
    y: pd.Series
    groups: pd.Series
    input: str
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROBLEM_COLUMNS))


def problem_row(problem: str, where: str, action: str, detail: str = "") -> dict[str, str]:
    """One row of the level classification's problem table (:data:`PROBLEM_COLUMNS`)."""
    return {"analysis": "level classification", "problem": problem, "where": where,
            "action": action, "detail": detail}


def caregiver_dataset(
    descriptors: pd.DataFrame,
    *,
    features: Sequence[str],
    input: str = "both",
    min_caregivers_per_level: int = 2,
) -> LevelDataset:
    """One row per caregiver of descriptor features, with a record of what was done.

    Segments (if any) are averaged per recording first. Rules for problem data, each
    recorded in ``problems``:

    - a caregiver without the phase(s) that ``input`` needs is **dropped**;
    - a level with fewer than ``min_caregivers_per_level`` caregivers (after that) is
      **dropped**: with leave-one-caregiver-out it would be absent from some training
      folds and can never be predicted for its own members;
    - a feature that is missing for every caregiver or constant across caregivers is
      **dropped**;
    - remaining missing values are **imputed** within each fold by the training
      caregivers' median (counted here).

    Args:
        descriptors: descriptor table (``descriptors.csv``): ``caregiver, level, phase``
            and descriptor columns.
        features: descriptor columns to use, e.g. ``["p_happy__mean", "f0_hz__median"]``.
        input: ``"both"`` (features ``<d>@control`` and ``<d>@care``), ``"delta"``
            (``<d>@delta`` = care − control), ``"control"`` or ``"care"``.
        min_caregivers_per_level: smallest level kept (>= 2).

    Returns:
        :class:`LevelDataset` with rows ordered by level then caregiver.

    Raises:
        ValueError: unknown ``input``, missing columns, unknown levels, empty ``features``,
            ``min_caregivers_per_level`` < 2.
    """
    if input not in INPUTS:
        raise ValueError(f"caregiver_dataset: input must be one of {list(INPUTS)}, got {input!r}")
    if int(min_caregivers_per_level) < 2:
        raise ValueError(f"caregiver_dataset: min_caregivers_per_level must be >= 2 (a level "
                         f"needs a member in every training fold), got {min_caregivers_per_level}")
    if not features:
        raise ValueError("caregiver_dataset: option 'features' is empty; name descriptor "
                         "columns such as 'p_happy__mean'")
    need = ["caregiver", "level", "phase", *features]
    missing = [c for c in dict.fromkeys(need) if c not in descriptors.columns]
    if missing:
        raise ValueError(f"caregiver_dataset: descriptors.csv lacks column(s) {missing}; "
                         f"stage 06_time_invariant writes caregiver, level, phase and the "
                         f"<feature>__<stat> descriptors")
    bad = sorted(set(descriptors["level"].dropna().astype(str)) - set(LEVELS))
    if bad:
        raise ValueError(f"caregiver_dataset: unknown level(s) {bad}; expected {list(LEVELS)}")
    problems: list[dict[str, str]] = []
    d = descriptors[need].copy()
    d["level"] = d["level"].astype(str)
    d["phase"] = d["phase"].astype(str)
    for f in features:
        d[f] = pd.to_numeric(d[f], errors="coerce")
    per = d.groupby(["caregiver", "phase"], as_index=False).agg(
        level=("level", "first"), **{f: (f, "mean") for f in features})
    needed = {"both": list(PHASES), "delta": list(PHASES), "control": ["control"],
              "care": ["care"]}[input]
    have = per.groupby("caregiver")["phase"].agg(set)
    level_of = per.groupby("caregiver")["level"].first()
    keep = [c for c, ph in have.items() if set(needed) <= ph]
    for cg in sorted(set(have.index) - set(keep)):
        lack = [ph for ph in needed if ph not in have[cg]]
        problems.append(problem_row("caregiver lacks a phase", str(cg),
                                    f"dropped from classification (input '{input}' needs "
                                    f"{' and '.join(needed)})", f"no {'/'.join(lack)} recording"))
    per = per[per["caregiver"].isin(keep)]
    if per.empty:  # nobody left: an empty dataset that classify_levels reports as skipped
        X = pd.DataFrame(index=pd.Index([], dtype=str))
    else:
        wide = per.pivot(index="caregiver", columns="phase", values=list(features))
        cols: dict[str, pd.Series] = {}
        for f in features:
            if input == "delta":
                cols[f"{f}@delta"] = wide[(f, "care")] - wide[(f, "control")]
            else:
                for ph in needed:
                    cols[f"{f}@{ph}"] = wide[(f, ph)]
        X = pd.DataFrame(cols, index=wide.index)
    y = level_of.reindex(X.index)
    sizes = y.value_counts()
    small = [lv for lv in LEVELS if 0 < sizes.get(lv, 0) < int(min_caregivers_per_level)]
    for lv in small:
        members = sorted(y.index[y == lv])
        problems.append(problem_row(f"level with {sizes[lv]} caregiver(s)", lv,
                                    f"dropped from classification (fewer than "
                                    f"min_caregivers_per_level: {min_caregivers_per_level})",
                                    f"caregiver(s) {members}"))
    X, y = X[~y.isin(small)], y[~y.isin(small)]
    for c in list(X.columns):
        v = X[c]
        if v.notna().sum() == 0:
            problems.append(problem_row("feature missing for every caregiver", c,
                                        "dropped from classification"))
            X = X.drop(columns=c)
        elif v.nunique(dropna=True) < 2:
            problems.append(problem_row("zero-variance feature", c, "dropped from classification",
                                        f"constant {v.dropna().iloc[0]:.6g} across caregivers"))
            X = X.drop(columns=c)
        elif v.isna().any():
            problems.append(problem_row("missing values", c,
                                        "imputed within each fold by the training caregivers' "
                                        "median", f"{int(v.isna().sum())} of {len(v)} caregivers"))
    order = np.lexsort((np.asarray(X.index, dtype=str),
                        y.map(LEVEL_INDEX).to_numpy()))
    X, y = X.iloc[order], y.iloc[order]
    X.index.name = "caregiver"
    groups = pd.Series(X.index.astype(str), index=X.index, name="caregiver")
    return LevelDataset(X=X.astype(float), y=y.rename("level"), groups=groups, input=input,
                        problems=pd.DataFrame(problems, columns=PROBLEM_COLUMNS))

