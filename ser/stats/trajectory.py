"""Mean trajectories over recording time per training level × phase.

:func:`trajectory_summary` averages the binned windows (:func:`ser.stats.descriptors.time_binned`)
per caregiver, then across caregivers, with a t-based confidence band.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

from ser.data.schema import LEVEL_INDEX, PHASE_INDEX


def trajectory_summary(
    binned: pd.DataFrame,
    *,
    features: Sequence[str],
    smooth_bins: int = 1,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean trajectory per level × phase with a t-based CI across caregivers.

    Each recording's binned values are first smoothed with a centred moving average over
    ``smooth_bins`` bins; then, per bin, the caregivers' values (one per caregiver) are
    averaged and ``mean ± t·SD/√n`` gives the band (empty with one caregiver).

    Args:
        binned: output of :func:`ser.stats.descriptors.time_binned`.
        features: columns to summarise.
        smooth_bins: moving-average width in bins (1 = no smoothing).
        confidence: band level.

    Returns:
        Long table ``feature, level, phase, time_bin, time, time_unit, n_caregivers, mean,
        sd, ci_low, ci_high``.
    """
    if int(smooth_bins) < 1:
        raise ValueError(f"trajectory_summary: smooth_bins must be >= 1, got {smooth_bins}")
    b = binned.sort_values(["recording", "time_bin"]).copy()
    out = []
    for f in features:
        if f not in b:
            raise ValueError(f"trajectory_summary: feature {f!r} not in the binned table")
        sm = b.groupby("recording")[f].transform(
            lambda s: s.rolling(int(smooth_bins), center=True, min_periods=1).mean())
        t = b.assign(_v=sm).dropna(subset=["_v"])
        per_cg = t.groupby(["level", "phase", "time_bin", "caregiver"], as_index=False).agg(
            _v=("_v", "mean"), time=("time", "first"), time_unit=("time_unit", "first"))
        g = per_cg.groupby(["level", "phase", "time_bin"])
        s = g.agg(time=("time", "first"), time_unit=("time_unit", "first"),
                  n_caregivers=("_v", "size"), mean=("_v", "mean"), sd=("_v", "std")).reset_index()
        half = _st.t.ppf(0.5 + confidence / 2, np.maximum(s["n_caregivers"] - 1, 1)) * s["sd"] \
            / np.sqrt(s["n_caregivers"])
        half = half.where(s["n_caregivers"] > 1)
        s["ci_low"], s["ci_high"] = s["mean"] - half, s["mean"] + half
        s.insert(0, "feature", f)
        out.append(s)
    res = pd.concat(out, ignore_index=True)
    res["_lv"] = res["level"].map(LEVEL_INDEX)
    res["_ph"] = res["phase"].map(PHASE_INDEX)
    return (res.sort_values(["feature", "_lv", "_ph", "time_bin"], kind="stable")
               .drop(columns=["_lv", "_ph"]).reset_index(drop=True))
