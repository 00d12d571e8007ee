"""Per-caregiver care − control changes of the descriptors.

:func:`delta_table` computes ``care − control`` and ``(care − control)/|control|`` with a
near-zero-denominator rule that flags and blanks, never zero-fills; :func:`delta_wide`
turns the usable deltas into one column per descriptor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ser.data.schema import LEVEL_INDEX, PHASES
from ser.stats.descriptors import descriptor_columns


def _eps_for(rule: float | str | Mapping[str, float], feature: str,
             control: pd.Series) -> float:
    if isinstance(rule, Mapping):
        if feature not in rule:
            raise ValueError(f"delta_table: eps_rule mapping has no entry for {feature!r}")
        return float(rule[feature])
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        return float(rule)
    m = re.fullmatch(r"\s*(abs|rel)\s*:\s*([0-9.eE+-]+)\s*", str(rule))
    if not m:
        raise ValueError(f"delta_table: eps_rule {rule!r} not understood; use a number "
                         f"(absolute), 'abs:<x>' or 'rel:<k>' (k × median |control|)")
    k = float(m.group(2))
    if m.group(1) == "abs":
        return k
    med = float(np.nanmedian(np.abs(control))) if control.notna().any() else np.nan
    return k * med


def delta_table(
    descriptors: pd.DataFrame,
    *,
    eps_rule: float | str | Mapping[str, float],
    features: Sequence[str] | None = None,
    by_segment: bool = False,
) -> pd.DataFrame:
    """Per-caregiver care − control changes of every descriptor (tidy, long).

    Rule for the relative change: ``delta_rel = (care − control) / |control|`` (equal to
    ``(care − control)/control`` for positive descriptors; the absolute value keeps the
    sign of the change for negative ones such as dB or skewness). When
    ``|control| <= eps`` the relative change is **not computed**: ``delta_rel`` is NaN
    and ``flag_small_denominator`` is True (never 0). ``eps`` comes from ``eps_rule``:

    - a number or ``"abs:<x>"``: the same absolute threshold for every descriptor;
    - ``"rel:<k>"``: ``k × median |control|`` across caregivers of that descriptor
      (scale-aware, e.g. ``"rel:0.05"``);
    - a mapping ``{descriptor: eps}``.

    Caregivers lacking a phase are kept as rows with ``status == "dropped"`` and a
    ``note``; their deltas are empty.

    Args:
        descriptors: output of :func:`ser.stats.descriptors.recording_descriptors`.
        eps_rule: near-zero-denominator rule (above).
        features: descriptor columns (default: every numeric descriptor column).
        by_segment: ``False``: segments are averaged per recording first (one delta per
            caregiver). ``True``: one delta per care segment against the caregiver's mean
            control value (several deltas per caregiver, for a random-intercept model).

    Returns:
        Columns ``caregiver, level, segment, feature, control, care, delta_abs, delta_rel,
        eps, flag_small_denominator, status, note``.

    Raises:
        ValueError: missing id columns, unknown feature, malformed ``eps_rule``.
    """
    missing = [c for c in ("caregiver", "level", "phase") if c not in descriptors]
    if missing:
        raise ValueError(f"delta_table: descriptors lack {missing} (descriptors.csv is "
                         f"written by stage 06_time_invariant)")
    feats = list(features) if features is not None else descriptor_columns(descriptors)
    absent = [f for f in feats if f not in descriptors]
    if absent:
        raise ValueError(f"delta_table: feature(s) {absent} not in the descriptor table")
    d = descriptors.copy()
    if "segment" not in d:
        d["segment"] = 0
    cg_phase = d.groupby("caregiver")["phase"].agg(lambda s: set(s.astype(str)))
    level = d.groupby("caregiver")["level"].first().astype(str)
    complete = [c for c, ph in cg_phase.items() if {"control", "care"} <= ph]
    d = d[d["caregiver"].isin(complete)]
    ctrl = d[d["phase"] == "control"].groupby("caregiver")[feats].mean()
    if by_segment:
        care = d[d["phase"] == "care"].set_index(["caregiver", "segment"])[feats]
    else:
        care = d[d["phase"] == "care"].groupby("caregiver")[feats].mean()
        care.index = pd.MultiIndex.from_arrays([care.index, np.zeros(len(care), int)],
                                               names=["caregiver", "segment"])
    rows = []
    for f in feats:
        eps = _eps_for(eps_rule, f, ctrl[f])
        c_val = ctrl[f].reindex(care.index.get_level_values("caregiver")).to_numpy(float)
        k_val = care[f].to_numpy(float)
        dabs = k_val - c_val
        small = np.abs(c_val) <= eps
        with np.errstate(divide="ignore", invalid="ignore"):
            drel = np.where(small | np.isnan(c_val), np.nan, dabs / np.abs(c_val))
        note = np.where(np.isnan(c_val), "control value missing",
                        np.where(np.isnan(k_val), "care value missing",
                                 np.where(small, f"|control| <= eps={eps:.3g}: relative change "
                                                 f"not computed", "")))
        rows.append(pd.DataFrame({
            "caregiver": care.index.get_level_values("caregiver"),
            "level": level.reindex(care.index.get_level_values("caregiver")).to_numpy(),
            "segment": care.index.get_level_values("segment"),
            "feature": f, "control": c_val, "care": k_val, "delta_abs": dabs,
            "delta_rel": drel, "eps": eps, "flag_small_denominator": small & ~np.isnan(c_val),
            "status": np.where(np.isnan(dabs), "missing", "ok"), "note": note,
        }))
    dropped = sorted(set(cg_phase.index) - set(complete))
    for cg in dropped:
        have = sorted(cg_phase[cg])
        lack = [ph for ph in PHASES if ph not in have]
        rows.append(pd.DataFrame({
            "caregiver": cg, "level": level[cg], "segment": 0, "feature": feats,
            "control": np.nan, "care": np.nan, "delta_abs": np.nan, "delta_rel": np.nan,
            "eps": np.nan, "flag_small_denominator": False, "status": "dropped",
            "note": f"dropped: no {'/'.join(lack)} recording"}))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    out["_lv"] = out["level"].map(LEVEL_INDEX)
    out["_f"] = out["feature"].map({f: i for i, f in enumerate(feats)})
    out = out.sort_values(["_f", "_lv", "caregiver", "segment"]).drop(columns=["_lv", "_f"])
    return out.reset_index(drop=True)


def delta_wide(delta: pd.DataFrame, *, value: str = "delta_abs") -> pd.DataFrame:
    """Usable deltas as one column per feature (rows: caregiver × segment, with level)."""
    ok = delta[delta["status"] == "ok"]
    return (ok.pivot_table(index=["caregiver", "level", "segment"], columns="feature",
                           values=value, aggfunc="first", observed=True)
              .reset_index().rename_axis(columns=None))

