"""Validation of the statistics by simulation: are planted effects found, are the tests
calibrated, do the confidence intervals cover?

Three checks, used by ``benchmarks/bench_stats_validation.py`` (full size) and
``tests/test_validation.py`` (small):

- :func:`recovery_table` — on a window table with known truth (the demo cohort and its
  ``truth.json``), fit the time-invariant mixed models and say, per planted term,
  whether an effect was recovered with the right sign and significant after FDR, and
  whether a planted null stayed non-significant.
- :func:`simulate_fits` + :func:`rejection_rates` — on cohorts simulated at the
  window-table level (:func:`ser.stats.simulate.simulate_windows`) without effects, how often is
  each test significant (should be ``alpha``)?
- :func:`simulate_fits` + :func:`coverage` — with planted effects, how often does the
  95 % CI contain the planted value (should be 95 %)?

Rates come with exact (Clopper–Pearson) binomial confidence intervals
(:func:`binomial_ci`), so "5 %" is judged against its Monte-Carlo error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from ser.stats import descriptors, mixed, simulate

#: ``truth.json`` terms (``feature ~ phase * level_index``) → terms of the
#: ``phase * level_trend`` mixed model.
TRUTH_TERMS: dict[str, str] = {"phase": "phase[care]", "level": "level_trend",
                               "phase:level": "phase[care]:level_trend"}


def descriptor_for(feature: str) -> str:
    """The per-recording descriptor that carries a window feature's planted effect.

    ``p_<label>`` → ``p_<label>__mean``, ``f0_hz`` → ``f0_hz__median``, ``energy_db`` →
    ``energy_db__mean``; ``speech_ratio`` and ``voiced_ratio`` are recording means
    already (same name).
    """
    if feature in ("speech_ratio", "voiced_ratio"):
        return feature
    if feature.startswith("f0"):
        return f"{feature}__median"
    return f"{feature}__mean"


def load_truth(truth: str | os.PathLike[str] | Mapping[str, Any]) -> pd.DataFrame:
    """The planted effects of a ``truth.json`` as a table.

    Args:
        truth: path of ``truth.json`` (written by :func:`ser.data.demo.generate`) or its
            parsed content.

    Returns:
        ``feature, term, value, unit, sign, descriptor, model_term, description``; ``sign``
        is +1/−1 (planted effect), 0 (planted null) or NaN (indirect, not checked).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: no ``effects`` list, or an effect with an unknown term.
    """
    if not isinstance(truth, Mapping):
        p = Path(truth)
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: truth.json is written by the demo "
                                    f"generator (`ser demo-data` / ser.data.demo.generate)")
        truth = json.loads(p.read_text())
    effects = truth.get("effects") if isinstance(truth, Mapping) else None
    if not effects:
        raise ValueError("load_truth: truth has no 'effects' list (see ser.data.demo.planted_effects)")
    t = pd.DataFrame(effects)
    bad = sorted(set(t["term"]) - set(TRUTH_TERMS))
    if bad:
        raise ValueError(f"load_truth: unknown term(s) {bad}; expected {list(TRUTH_TERMS)}")
    t["sign"] = pd.to_numeric(t["sign"], errors="coerce")
    t["descriptor"] = t["feature"].map(descriptor_for)
    t["model_term"] = t["term"].map(TRUTH_TERMS)
    cols = ["feature", "term", "value", "unit", "sign", "descriptor", "model_term", "description"]
    return t.reindex(columns=cols)


def recovery_table(
    windows: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    alpha: float = 0.05,
    reference: str = "F",
    min_speech_ratio: float = 0.0,
    min_top_p: float = 0.0,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Fit ``descriptor ~ phase * level_trend + (1 | caregiver)`` and check the truth.

    Descriptors are computed per recording (whole recording), one per planted feature
    (:func:`descriptor_for`); BH-FDR runs across those descriptors within each term,
    as in stage 06 (pass stage 06's ``min_speech_ratio`` and ``min_top_p`` to analyse the
    same windows).

    Verdicts: ``recovered`` (planted ±1: same sign and ``p_fdr < alpha``), ``missed``
    (not significant), ``wrong sign`` (significant, opposite sign); ``null kept``
    (planted 0 and ``p_fdr >= alpha``), ``false positive``; ``not checked`` (indirect).

    Args:
        windows: window table (``windows.csv``).
        truth: from :func:`load_truth`.
        alpha: FDR level.
        reference: p-value reference of :func:`ser.stats.mixed.fit_mixed`.
        min_speech_ratio: windows with a smaller ``speech_ratio`` are left out of the
            ``p_<label>`` descriptors (:func:`ser.stats.descriptors.recording_descriptors`).
        min_top_p: windows with a smaller ``emotion_top_p`` are left out likewise.
        n_jobs: joblib workers for the fits.

    Returns:
        One row per truth row with ``feature, term, sign, value, unit, descriptor,
        model_term, estimate, ci_low, ci_high, p, p_fdr, converged, verdict, ok``
        (``ok`` is NaN for ``not checked``).
    """
    feats = sorted(set(truth["feature"]))
    missing = [f for f in feats if f not in windows.columns]
    if missing:
        raise ValueError(f"recovery_table: windows.csv lacks the planted feature(s) {missing}")
    summarised = [f for f in feats if f not in ("speech_ratio", "voiced_ratio")]
    desc = descriptors.recording_descriptors(windows, features=summarised, stats=("mean", "median"),
                                             min_speech_ratio=min_speech_ratio,
                                             min_top_p=min_top_p)
    fits = mixed.mixed_models_table(desc, features=sorted(set(truth["descriptor"])),
                                    models={"level_trend": "phase * level_trend"},
                                    analysis="validation", reference=reference, progress=False,
                                    n_jobs=n_jobs)
    got = fits[["feature", "term", "estimate", "ci_low", "ci_high", "p", "p_fdr",
                "converged"]].rename(columns={"feature": "descriptor", "term": "model_term"})
    out = truth.merge(got, on=["descriptor", "model_term"], how="left")
    sig = out["p_fdr"] < alpha
    same = np.sign(out["estimate"]) == out["sign"]
    verdict = np.select(
        [out["sign"].isna(), out["p_fdr"].isna(),
         (out["sign"] == 0) & ~sig, out["sign"] == 0,
         sig & same, sig & ~same],
        ["not checked", "not tested", "null kept", "false positive", "recovered", "wrong sign"],
        default="missed")
    out["verdict"] = verdict
    out["ok"] = np.where(out["sign"].isna(), np.nan,
                         np.isin(verdict, ["recovered", "null kept"]).astype(float))
    return out.drop(columns=["description"])


def _segment_overlap(w: pd.DataFrame, g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of each ground-truth segment ``g`` inside each window ``w`` (one recording):
    ``(overlap [n_windows, n_segments], segment emotions [n_segments])``."""
    ws, we = w["start_s"].to_numpy(float)[:, None], w["end_s"].to_numpy(float)[:, None]
    ss, se = g["start_s"].to_numpy(float)[None], g["end_s"].to_numpy(float)[None]
    return np.clip(np.minimum(we, se) - np.maximum(ws, ss), 0.0, None), g["emotion"].astype(str).to_numpy()


def oracle_windows(windows: pd.DataFrame, segments: pd.DataFrame, *,
                   role: str = "caregiver") -> pd.DataFrame:
    """Replace the model's ``p_<label>`` with the true emotion shares of each window.

    ``p_<label>`` becomes the fraction of the window's ``role`` speech time whose
    ground-truth emotion is ``<label>`` (empty when the window holds none). Recovery on
    this table tests the statistics alone; recovery on the model's table tests the
    statistics through an imperfect classifier. ``emotion_entropy`` and ``emotion_top_p``
    stay the model's, so a ``min_top_p`` filter picks the same windows in both tables.

    Args:
        windows: window table (``windows.csv``).
        segments: ground truth ``recording, start_s, end_s, role, emotion`` (the demo's
            ``cohort/segments.csv``).
        role: speaker role whose emotions count.

    Returns:
        A copy of ``windows`` with the ``p_<label>`` columns replaced.

    Raises:
        ValueError: missing columns.
    """
    need = ["recording", "start_s", "end_s", "role", "emotion"]
    missing = [c for c in need if c not in segments.columns]
    if missing:
        raise ValueError(f"oracle_windows: segments lack {missing} (the demo writes "
                         f"cohort/segments.csv with {need})")
    labels = [c[2:] for c in descriptors.probability_columns(windows)]
    out = windows.copy()
    seg = segments[segments["role"] == role]
    by_rec = {r: g for r, g in seg.groupby("recording")}
    for rec, idx in out.groupby("recording").groups.items():
        w = out.loc[idx]
        g = by_rec.get(rec)
        if g is None:
            out.loc[idx, [f"p_{lb}" for lb in labels]] = np.nan
            continue
        overlap, emo = _segment_overlap(w, g)
        total = overlap.sum(1)
        for lb in labels:
            share = overlap[:, emo == lb].sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.loc[idx, f"p_{lb}"] = np.where(total > 0, share / total, np.nan)
    return out


def pure_window_outputs(windows: pd.DataFrame, segments: pd.DataFrame, *, min_share: float = 0.9,
                        role: str = "caregiver") -> pd.DataFrame:
    """Mean model output on windows that hold one true emotion, by emotion and phase.

    A window counts for emotion ``e`` when at least ``min_share`` of its duration is
    ``role`` speech with ground-truth emotion ``e``. Comparing the phases row by row shows
    whether the classifier hears the same emotion alike in control and care (a voice
    pitch change between phases, for instance, should not move these means).

    Args:
        windows: window table with ``recording, phase, start_s, end_s, p_<label>``.
        segments: ground truth ``recording, start_s, end_s, role, emotion``.
        min_share: share of the window (0..1] that must be that one emotion.
        role: speaker role whose emotions count.

    Returns:
        One row per (``emotion``, ``phase``) present: ``n_windows`` and the mean of each
        ``p_<label>``.

    Raises:
        ValueError: missing columns or ``min_share`` outside (0, 1].
    """
    if not 0 < min_share <= 1:
        raise ValueError(f"pure_window_outputs: min_share must be in (0, 1]; got {min_share!r}")
    missing = [c for c in ("recording", "phase", "start_s", "end_s") if c not in windows.columns]
    missing += [c for c in ("recording", "start_s", "end_s", "role", "emotion") if c not in segments.columns]
    if missing:
        raise ValueError(f"pure_window_outputs: missing columns {sorted(set(missing))}")
    pcols = descriptors.probability_columns(windows)
    labels = [c[2:] for c in pcols]
    by_rec = {r: g for r, g in segments[segments["role"] == role].groupby("recording")}
    rows = []
    for rec, w in windows.groupby("recording"):
        g = by_rec.get(rec)
        if g is None:
            continue
        overlap, emo = _segment_overlap(w, g)
        duration = (w["end_s"] - w["start_s"]).to_numpy(float)
        for lb in labels:
            share = overlap[:, emo == lb].sum(1) / duration
            hit = w[share >= min_share - 1e-9]
            if len(hit):
                rows.append(hit[["phase", *pcols]].assign(emotion=lb))
    if not rows:
        return pd.DataFrame(columns=["emotion", "phase", "n_windows", *pcols])
    allw = pd.concat(rows, ignore_index=True)
    out = allw.groupby(["emotion", "phase"], sort=True)[pcols].mean()
    out.insert(0, "n_windows", allw.groupby(["emotion", "phase"], sort=True).size())
    return out.reset_index()


def expected_through_model(truth: pd.DataFrame, pure: pd.DataFrame) -> pd.DataFrame:
    """What a planted emotion effect should look like through the classifier's confusions.

    With ``C[i, j]`` the classifier's mean ``p_j`` on speech of true emotion ``i`` (from
    :func:`pure_window_outputs`, pooled over the phases weighted by window count), a
    planted change ``d_i`` in the share of each emotion becomes a change
    ``sum_i d_i * C[i, j]`` in the mean of ``p_j``. A planted effect whose expected value is
    near 0 cannot be recovered through this classifier, whatever the statistics do (e.g.
    happy heard as angry cancelling a planted fall in angry). Pauses and other voices in
    the windows are left out of this first-order account.

    Args:
        truth: from :func:`load_truth`; every ``p_<label>`` of ``pure`` needs its planted
            value for a term to be computed (indirect terms count with their value).
        pure: from :func:`pure_window_outputs`.

    Returns:
        The ``p_<label>`` rows of ``truth`` (``feature, term, value``) with
        ``expected_through_model``; NaN where a label has no pure windows or a label's
        planted value for that term is missing.
    """
    pcols = descriptors.probability_columns(pure)
    n = pure["n_windows"].astype(float)
    sums = pure[pcols].mul(n, axis=0).assign(n=n).groupby(pure["emotion"]).sum()
    conf = sums[pcols].div(sums["n"], axis=0).reindex([c[2:] for c in pcols])  # rows: true, columns: heard
    rows = truth[truth["feature"].isin(pcols)][["feature", "term", "value"]].reset_index(drop=True)
    planted = rows.pivot(index="term", columns="feature", values="value").reindex(columns=pcols)
    heard = pd.DataFrame(planted.to_numpy(float) @ conf.to_numpy(float), index=planted.index, columns=pcols)
    rows["expected_through_model"] = [heard.at[t, f] for f, t in zip(rows["feature"], rows["term"])]
    return rows


def binomial_ci(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) confidence interval of a proportion ``k / n``."""
    if n <= 0:
        return np.nan, np.nan
    ci = _st.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence,
                                                      method="exact")
    return float(ci.low), float(ci.high)


def _one_replicate(seed: int, *, effects: Mapping[str, Mapping[str, float]] | None,
                   features: Sequence[str], models: Mapping[str, str],
                   sim_kwargs: Mapping[str, Any], reference: str) -> pd.DataFrame:
    import warnings

    w = simulate.simulate_windows(seed=seed, effects=effects, **dict(sim_kwargs))
    win_feats = sorted({f.split("__")[0] for f in features} - {"speech_ratio", "voiced_ratio"})
    desc = descriptors.recording_descriptors(w, features=win_feats, stats=("mean", "median"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter (reported per row)
        parts = [mixed.fit_mixed(desc, feature=f, formula_fixed=fm, model=m, reference=reference)
                 for f in features for m, fm in models.items()]
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "replicate", seed)
    return out


def simulate_fits(
    *,
    n_replicates: int,
    seed: int,
    features: Sequence[str] = ("f0_hz__median", "energy_db__mean", "speech_ratio"),
    models: Mapping[str, str] | None = None,
    effects: Mapping[str, Mapping[str, float]] | None = None,
    sim_kwargs: Mapping[str, Any] | None = None,
    reference: str = "F",
    n_jobs: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Simulate cohorts with :func:`ser.stats.simulate.simulate_windows` and fit mixed models.

    Args:
        n_replicates: cohorts to simulate (seeds ``seed .. seed + n_replicates - 1``).
        seed: first seed.
        features: descriptors to model (``<window feature>__<stat>`` or ``speech_ratio``).
        models: ``{name: formula_fixed}``; default :data:`ser.stats.mixed.DEFAULT_MODELS`.
        effects: planted effects (see :func:`ser.stats.simulate.simulate_windows`); None: null.
        sim_kwargs: more arguments of :func:`ser.stats.simulate.simulate_windows` (sizes, duration).
        reference: p-value reference of :func:`ser.stats.mixed.fit_mixed`.
        n_jobs: joblib workers (replicates run in parallel; results do not depend on it).
        progress: tqdm progress bar.

    Returns:
        All fitted rows (:data:`ser.stats.mixed.MIXED_COLUMNS`) with a ``replicate`` column.

    Raises:
        ValueError: ``n_replicates`` < 1.
    """
    if int(n_replicates) < 1:
        raise ValueError(f"simulate_fits: n_replicates must be >= 1, got {n_replicates}")
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    kw = dict(effects=effects, features=list(features), models=dict(models or mixed.DEFAULT_MODELS),
              sim_kwargs=dict(sim_kwargs or {}), reference=reference)
    seeds = tqdm(range(int(seed), int(seed) + int(n_replicates)), desc="simulated cohorts",
                 disable=not progress)
    if int(n_jobs) == 1:
        parts = [_one_replicate(s, **kw) for s in seeds]
    else:
        parts = Parallel(n_jobs=int(n_jobs))(delayed(_one_replicate)(s, **kw) for s in seeds)
    return pd.concat(parts, ignore_index=True)


def rejection_rates(
    fits: pd.DataFrame,
    *,
    alpha: float = 0.05,
    p_columns: Sequence[str] = ("p", "p_chi2"),
    by: Sequence[str] = ("model", "term"),
) -> pd.DataFrame:
    """Share of tests with ``p < alpha`` per ``by`` group, with a 95 % binomial CI.

    Args:
        fits: rows from :func:`simulate_fits` (or any table with p-value columns).
        alpha: significance level.
        p_columns: p-value columns to evaluate (``p``: the analysis' small-sample
            reference; ``p_chi2``: the asymptotic chi² reference).
        by: grouping columns.

    Returns:
        One row per group and p column: ``*by, p_column, n, rejections, rate, ci_low,
        ci_high``. Rows without a p-value (intercepts, skipped fits) are not counted.
    """
    rows = []
    for key, g in fits.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for col in p_columns:
            p = pd.to_numeric(g[col], errors="coerce").dropna()
            if p.empty:
                continue
            k, n = int((p < alpha).sum()), len(p)
            lo, hi = binomial_ci(k, n)
            rows.append({**dict(zip(by, key, strict=True)), "p_column": col, "n": n,
                         "rejections": k, "rate": k / n, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def coverage(
    fits: pd.DataFrame,
    *,
    truth: Mapping[str, Mapping[str, float]],
    by: Sequence[str] = ("feature", "term"),
) -> pd.DataFrame:
    """Share of 95 % CIs that contain the planted value, per ``by`` group.

    Args:
        fits: rows from :func:`simulate_fits` with ``estimate, ci_low, ci_high``.
        truth: planted value per descriptor and model term, e.g.
            ``{"f0_hz__median": {"phase[care]": 8.0, "level_trend": 5.0}}``; terms not
            listed count as planted 0.
        by: grouping columns.

    Returns:
        ``*by, n, covered, rate, ci_low, ci_high, mean_estimate, planted`` for the
        estimated, non-intercept terms.
    """
    f = fits[fits["estimate"].notna() & (fits["term"] != "Intercept")].copy()
    f["planted"] = [float(truth.get(ft, {}).get(tm, 0.0))
                    for ft, tm in zip(f["feature"], f["term"], strict=True)]
    f["covered"] = (f["ci_low"] <= f["planted"]) & (f["planted"] <= f["ci_high"])
    rows = []
    for key, g in f.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        k, n = int(g["covered"].sum()), len(g)
        lo, hi = binomial_ci(k, n)
        rows.append({**dict(zip(by, key, strict=True)), "n": n, "covered": k, "rate": k / n,
                     "ci_low": lo, "ci_high": hi, "mean_estimate": g["estimate"].mean(),
                     "planted": g["planted"].iloc[0] if "term" in by else np.nan})
    return pd.DataFrame(rows)


def z_intervals(fits: pd.DataFrame) -> pd.DataFrame:
    """The same fits with normal (Wald z) 95 % CIs instead of the t(ddf) ones.

    Used as the miscalibrated comparison (the asymptotic interval ignores that only a
    few caregivers inform between-caregiver terms).
    """
    out = fits.copy()
    half = _st.norm.ppf(0.975) * out["se"]
    out["ci_low"], out["ci_high"] = out["estimate"] - half, out["estimate"] + half
    return out


def naive_window_ols(windows: pd.DataFrame, *, feature: str,
                     formula_fixed: str = "phase * level_trend") -> pd.DataFrame:
    """OLS on the windows, no caregiver random intercept: the pseudo-replicated analysis.

    The miscalibrated comparison for the validation: every window is treated as an
    independent observation.

    Returns:
        ``term, estimate, se, ci_low, ci_high, p`` per coefficient (readable names).
    """
    import statsmodels.api as sm

    frame, _ = mixed.model_frame(windows, feature=feature, group="caregiver",
                                 formula_fixed=formula_fixed, nested=None)
    X, _, _ = mixed.design_matrix(frame, formula_fixed)
    res = sm.OLS(frame[feature].to_numpy(float), X.to_numpy()).fit()
    ci = res.conf_int(0.05)
    return pd.DataFrame({"term": list(X.columns), "estimate": res.params, "se": res.bse,
                         "ci_low": ci[:, 0], "ci_high": ci[:, 1], "p": res.pvalues})
