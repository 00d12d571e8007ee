"""Tests on the care − control deltas.

- :func:`paired_tests`: care vs. control per descriptor (paired t-test or Wilcoxon by a
  Shapiro–Wilk rule), with Hedges' g and its CI.
- :func:`level_tests`: does the delta differ across training levels? (one-way ANOVA and
  Kruskal–Wallis, with eta² and its CI; :func:`eta_squared_ci`).

Both add Benjamini–Hochberg FDR across descriptors (:func:`ser.stats.multiplicity.bh_fdr`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from ser.stats.mixed import join_notes
from ser.stats.multiplicity import bh_fdr


def _first(row: pd.Series | pd.DataFrame, *names: str) -> Any:
    for n in names:
        if n in row:
            v = row[n]
            return v.iloc[0] if isinstance(v, pd.Series) else v
    raise KeyError(f"none of {names} in pingouin output {list(row.index if isinstance(row, pd.Series) else row.columns)}")


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """Silence pandas/numpy deprecation noise raised inside pingouin (not our code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def paired_tests(delta: pd.DataFrame, *, normality_alpha: float = 0.05) -> pd.DataFrame:
    """Care vs. control paired test per descriptor, with Hedges' g and its 95 % CI.

    Rule: Shapiro–Wilk on the care − control differences; ``p > normality_alpha`` →
    paired t-test, otherwise Wilcoxon signed-rank (pingouin). Hedges' g (pingouin,
    paired) with the parametric 95 % CI of Hedges & Olkin. BH-FDR across descriptors.
    Uses one (segment-averaged) pair per caregiver with ``status == "ok"``.

    Args:
        delta: output of :func:`ser.stats.deltas.delta_table`.
        normality_alpha: threshold of the Shapiro–Wilk rule.

    Returns:
        One row per feature: ``feature, n, test, statistic, p, p_fdr, mean_control,
        mean_care, mean_diff, diff_ci_low, diff_ci_high, median_diff, hedges_g, g_ci_low,
        g_ci_high, shapiro_p, note``.
    """
    import pingouin as pg

    rows = []
    ok = delta[delta["status"] == "ok"]
    for f, sub in ok.groupby("feature", sort=False):
        pair = sub.groupby("caregiver")[["control", "care"]].mean().dropna()
        n = len(pair)
        x, y = pair["care"].to_numpy(float), pair["control"].to_numpy(float)
        diff = x - y
        base = dict(feature=f, n=n, mean_control=y.mean() if n else np.nan,
                    mean_care=x.mean() if n else np.nan,
                    mean_diff=diff.mean() if n else np.nan,
                    median_diff=float(np.median(diff)) if n else np.nan)
        if n < 3 or np.ptp(diff) == 0:
            rows.append({**base, "test": "", "note": f"skipped: {n} pairs" if n < 3
                         else "skipped: differences have zero variance"})
            continue
        sw_p = float(_st.shapiro(diff).pvalue)
        se = diff.std(ddof=1) / math.sqrt(n)
        tcrit = _st.t.ppf(0.975, n - 1)
        with _quiet_deprecations():
            g = float(pg.compute_effsize(x, y, paired=True, eftype="hedges"))
            g_ci = pg.compute_esci(stat=g, nx=n, ny=n, paired=True, eftype="cohen", decimals=6)
            r = (pg.ttest(x, y, paired=True) if sw_p > normality_alpha
                 else pg.wilcoxon(x, y)).iloc[0]
        if sw_p > normality_alpha:
            test, stat, p = "paired t-test", float(_first(r, "T")), float(_first(r, "p_val", "p-val"))
            rule = f"Shapiro-Wilk p={sw_p:.3g} > {normality_alpha}: t-test"
        else:
            test, stat, p = ("Wilcoxon signed-rank", float(_first(r, "W_val", "W-val")),
                             float(_first(r, "p_val", "p-val")))
            rule = f"Shapiro-Wilk p={sw_p:.3g} <= {normality_alpha}: Wilcoxon"
        rows.append({**base, "test": test, "statistic": stat, "p": p,
                     "diff_ci_low": diff.mean() - tcrit * se,
                     "diff_ci_high": diff.mean() + tcrit * se,
                     "hedges_g": g, "g_ci_low": float(g_ci[0]), "g_ci_high": float(g_ci[1]),
                     "shapiro_p": sw_p, "note": rule})
    cols = ["feature", "n", "test", "statistic", "p", "p_fdr", "mean_control", "mean_care",
            "mean_diff", "diff_ci_low", "diff_ci_high", "median_diff", "hedges_g",
            "g_ci_low", "g_ci_high", "shapiro_p", "note"]
    out = pd.DataFrame(rows).reindex(columns=cols)
    out["p_fdr"] = bh_fdr(out["p"].to_numpy(float))
    return out


def eta_squared_ci(F: float, df1: float, df2: float, *, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of eta² of a one-way ANOVA by inverting the noncentral F.

    Returns:
        ``(low, high)`` with eta² = λ / (λ + N), N = df1 + df2 + 1 (Steiger, 2004).
    """
    if not (np.isfinite(F) and df1 > 0 and df2 > 0):
        return np.nan, np.nan
    from scipy.optimize import brentq

    n_total = df1 + df2 + 1
    alpha = 1 - confidence

    def ncp_for(target: float) -> float:
        f = lambda lam: _st.ncf.cdf(F, df1, df2, lam) - target  # noqa: E731
        if f(0.0) <= 0:  # even λ = 0 puts F_obs above the quantile
            return 0.0
        hi = max(10.0, F * df1 * 2)
        while f(hi) > 0 and hi < 1e6:
            hi *= 2
        return float(brentq(f, 0.0, hi))

    lo, hi = ncp_for(1 - alpha / 2), ncp_for(alpha / 2)
    return lo / (lo + n_total), hi / (hi + n_total)


def level_tests(
    delta: pd.DataFrame,
    *,
    value: str = "delta_abs",
    normality_alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Does the delta differ across training levels? ANOVA and Kruskal–Wallis per feature.

    Rule: Shapiro–Wilk on the within-level residuals; ``p > normality_alpha`` → one-way
    ANOVA is the primary test, else Kruskal–Wallis; both are reported. Effect sizes:
    eta² (ANOVA; 95 % CI by noncentral-F inversion) and eta²_H = (H − k + 1)/(n − k),
    truncated at 0 (Kruskal–Wallis; 95 % percentile bootstrap CI resampling caregivers
    within level, computed when Kruskal–Wallis is the primary test).

    Args:
        delta: output of :func:`ser.stats.deltas.delta_table` (one segment-averaged value per caregiver).
        value: ``"delta_abs"`` or ``"delta_rel"``.
        normality_alpha: threshold of the Shapiro–Wilk rule.
        n_boot: bootstrap resamples for the eta²_H CI.
        seed: bootstrap seed.

    Returns:
        One row per feature with ``feature, value, n, k, test, statistic, p, p_fdr, eta2,
        eta2_ci_low, eta2_ci_high, anova_F, anova_p, anova_eta2, kruskal_H, kruskal_p,
        kruskal_eta2, shapiro_p, note``.
    """
    import pingouin as pg

    if value not in ("delta_abs", "delta_rel"):
        raise ValueError(f"level_tests: value must be 'delta_abs' or 'delta_rel', got {value!r}")
    rng = np.random.default_rng(seed)
    rows = []
    ok = delta[delta["status"] == "ok"]
    for f, sub in ok.groupby("feature", sort=False):
        per = sub.groupby(["caregiver", "level"], as_index=False)[value].mean().dropna()
        n, k = len(per), per["level"].nunique()
        base = {"feature": f, "value": value, "n": n, "k": k}
        sizes = per.groupby("level")[value].size()
        notes = [f"level(s) {sorted(sizes.index[sizes == 1])} with 1 caregiver"] if (sizes == 1).any() else []
        if k < 2 or n - k < 1 or per[value].std() == 0:
            rows.append({**base, "note": join_notes(notes, "skipped: need >= 2 levels, "
                                                    "residual df and non-zero variance")})
            continue
        resid = per[value] - per.groupby("level")[value].transform("mean")
        sw_p = float(_st.shapiro(resid).pvalue) if n >= 3 and resid.std() > 0 else np.nan
        with _quiet_deprecations():
            an = pg.anova(data=per, dv=value, between="level", detailed=True)
            kw = pg.kruskal(data=per, dv=value, between="level").iloc[0]
        F = float(an.loc[0, "F"])
        an_p = float(_first(an.iloc[0], "p_unc", "p-unc"))
        eta2 = float(an.loc[0, "SS"] / an["SS"].sum())
        e_lo, e_hi = eta_squared_ci(F, k - 1, n - k)
        H = float(kw["H"])
        kw_p = float(_first(kw, "p_unc", "p-unc"))
        eta_h = max(0.0, (H - k + 1) / (n - k))  # truncated at 0
        anova_first = bool(np.isfinite(sw_p) and sw_p > normality_alpha)
        b_lo = b_hi = np.nan
        if not anova_first and n_boot > 0:
            groups = [g[value].to_numpy(float) for _, g in per.groupby("level")]
            boot_h = _kruskal_h_boot(groups, n_boot=int(n_boot), rng=rng)
            b_lo, b_hi = np.clip(np.nanpercentile((boot_h - k + 1) / (n - k), [2.5, 97.5]),
                                 0, 1)
        rule = (f"Shapiro-Wilk on residuals p={sw_p:.3g} "
                f"{'>' if anova_first else '<='} {normality_alpha}: "
                f"{'ANOVA' if anova_first else 'Kruskal-Wallis'} primary")
        rows.append({**base, "test": "one-way ANOVA" if anova_first else "Kruskal-Wallis",
                     "statistic": F if anova_first else H, "p": an_p if anova_first else kw_p,
                     "eta2": eta2 if anova_first else eta_h,
                     "eta2_ci_low": e_lo if anova_first else b_lo,
                     "eta2_ci_high": e_hi if anova_first else b_hi,
                     "anova_F": F, "anova_p": an_p, "anova_eta2": eta2, "kruskal_H": H,
                     "kruskal_p": kw_p, "kruskal_eta2": eta_h, "shapiro_p": sw_p,
                     "note": join_notes(notes, rule)})
    cols = ["feature", "value", "n", "k", "test", "statistic", "p", "p_fdr", "eta2",
            "eta2_ci_low", "eta2_ci_high", "anova_F", "anova_p", "anova_eta2", "kruskal_H",
            "kruskal_p", "kruskal_eta2", "shapiro_p", "note"]
    out = pd.DataFrame(rows).reindex(columns=cols)
    out["p_fdr"] = bh_fdr(out["p"].to_numpy(float))
    return out


def _kruskal_h_boot(groups: Sequence[np.ndarray], *, n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Kruskal–Wallis H of ``n_boot`` stratified bootstrap resamples (vectorised)."""
    draws = [g[rng.integers(0, len(g), size=(n_boot, len(g)))] for g in groups]
    values = np.concatenate(draws, axis=1)
    n = values.shape[1]
    ranks = _st.rankdata(values, axis=1)
    h = np.zeros(n_boot)
    start = 0
    for g in groups:
        r = ranks[:, start:start + len(g)].sum(axis=1)
        h += r**2 / len(g)
        start += len(g)
    h = 12.0 / (n * (n + 1)) * h - 3.0 * (n + 1)
    srt = np.sort(values, axis=1)
    tied = np.flatnonzero((np.diff(srt, axis=1) == 0).any(axis=1))
    for i in tied:
        corr = _st.tiecorrect(ranks[i])
        h[i] = h[i] / corr if corr > 0 else np.nan
    return h

