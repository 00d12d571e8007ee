"""Robust p-values on caregiver-level summaries: sign flipping and level permutation.

The mixed models (:mod:`ser.stats.mixed`) give estimates and confidence intervals; their
likelihood-ratio p-values are exact only for Gaussian errors with one residual variance.
The primary hypotheses (:mod:`ser.stats.primary`) are decided by tests that need neither:

- **Sign flipping** (:func:`sign_flip_test`) of per-caregiver care − control differences
  ``d_i``: under "no care effect" each ``d_i`` is symmetric about 0, whatever its own
  variance, so flipping signs at random gives the null distribution of the mean. A
  nuisance covariate (the centred training level) is handled as Freedman–Lane: the
  residuals of ``d ~ 0 + level`` are flipped, which leaves the mean unchanged because
  the covariate is centred.
- **Permutation of training levels across caregivers** (:func:`permutation_slope_test`):
  under "no level effect" the caregivers' values are exchangeable, so shuffling the
  levels gives the null distribution of the slope per level step, studentised with an
  HC2 standard error (robust when the spread differs by level, e.g. recording lengths).

Both use the whole null distribution when it is small (``2^n`` flips or ``n!``
permutations at most ``n_resamples + 1``: exact p-values) and otherwise ``n_resamples``
Monte Carlo draws with ``p = (1 + #{|T*| >= |T|}) / (1 + n_resamples)`` (valid at any
number of draws). The draws are vectorised (one matrix product), so 9,999 of them cost
about a millisecond for 23 caregivers; no model is refitted.

:func:`caregiver_pairs` turns a long table (one row per recording, segment or time
bin) into the per-caregiver control and care values these tests need, weighting rows by
their number of windows; :func:`recording_slopes` gives each recording's
window-weighted least-squares slope over time (the time-dependent primary test).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ser.data.schema import LEVEL_INDEX

#: Relative tolerance under which a resampled statistic counts as a tie with the observed one.
_TIE = 1e-10


@dataclass(frozen=True)
class RobustResult:
    """One robust test.

    Attributes:
        p: two-sided p-value (0-1).
        statistic: the observed statistic (mean difference or slope per level step, in
            the outcome's unit).
        n: caregivers used.
        n_resamples: sign flips / permutations the p-value rests on.
        exact: True when every flip / permutation was enumerated.
        method: a short description for the ``test`` column of ``mixed_models.csv``.
    """

    p: float
    statistic: float
    n: int
    n_resamples: int
    exact: bool
    method: str


def _check(values: np.ndarray, covariate: np.ndarray | None, *, what: str,
           n_resamples: int) -> None:
    if values.ndim != 1:
        raise ValueError(f"{what}: values must be one-dimensional, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what}: values contain missing or infinite entries; drop them first")
    if covariate is not None and covariate.shape != values.shape:
        raise ValueError(f"{what}: covariate shape {covariate.shape} != values shape "
                         f"{values.shape}")
    if int(n_resamples) < 1:
        raise ValueError(f"{what}: n_resamples must be >= 1, got {n_resamples}")


def _p_value(observed: float, null: np.ndarray, *, exact: bool) -> float:
    """Two-sided p from the absolute statistic; ties within a relative tolerance count."""
    obs = abs(observed)
    hits = int(np.sum(np.abs(null) >= obs * (1 - _TIE) - _TIE))
    if exact:
        return hits / len(null)
    return (1 + hits) / (1 + len(null))


def sign_flip_test(values: np.ndarray, *, covariate: np.ndarray | None = None,
                   n_resamples: int = 9999, seed: int = 0,
                   what: str = "care - control") -> RobustResult:
    """Is the mean of ``values`` (per-caregiver care − control differences) zero?

    Args:
        values: one difference per caregiver (outcome unit), shape ``(n,)``.
        covariate: optional nuisance covariate per caregiver (e.g. the training level);
            it is centred here, and its slope is removed before flipping (Freedman–Lane),
            so the test is of the mean difference at the average covariate.
        n_resamples: Monte Carlo sign flips when ``2^n > n_resamples + 1``; otherwise
            all ``2^n`` flips are enumerated (exact p).
        seed: seed of the Monte Carlo draws.
        what: what ``values`` are, for the method text.

    Returns:
        :class:`RobustResult` with the mean difference as statistic.

    Raises:
        ValueError: non-finite values, mismatched shapes, fewer than 2 caregivers.

    Example:
        >>> sign_flip_test(np.array([1.0, 2.0, 3.0])).p  # 2 of 8 flips as extreme
        0.25
    """
    d = np.asarray(values, dtype=float)
    cov = None if covariate is None else np.asarray(covariate, dtype=float)
    _check(d, cov, what="sign_flip_test", n_resamples=n_resamples)
    n = len(d)
    if n < 2:
        raise ValueError(f"sign_flip_test: need at least 2 caregivers, got {n}")
    resid = d
    if cov is not None:
        c = cov - cov.mean()
        ss = float(c @ c)
        if ss > 0:
            resid = d - c * float(c @ d) / ss
    observed = float(d.mean())
    exact = 2**n <= int(n_resamples) + 1
    if exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.integers(0, 2, size=(int(n_resamples), n), dtype=np.int8) * 2.0 - 1.0
    null = signs @ resid / n
    method = (f"sign-flip of caregiver {what} ({'exact, ' if exact else ''}"
              f"{len(signs)} flips, n={n}" + (", level removed Freedman-Lane" if cov is not None
                                              else "") + ")")
    return RobustResult(p=_p_value(observed, null, exact=exact), statistic=observed, n=n,
                        n_resamples=len(signs), exact=exact, method=method)


def permutation_slope_test(values: np.ndarray, *, covariate: np.ndarray,
                           n_resamples: int = 9999, seed: int = 0,
                           what: str = "value") -> RobustResult:
    """Does ``values`` change with ``covariate`` (training level)? Permute the covariate.

    The statistic is the least-squares slope of ``values`` on ``covariate`` (outcome
    unit per covariate unit); its null distribution comes from shuffling the covariate
    across caregivers (exact when ``n! <= n_resamples + 1``).

    Args:
        values: one value per caregiver, shape ``(n,)``.
        covariate: the caregivers' training-level scores, shape ``(n,)``.
        n_resamples: Monte Carlo permutations (or all of them when few enough).
        seed: seed of the Monte Carlo draws.
        what: what ``values`` are, for the method text.

    Returns:
        :class:`RobustResult` with the slope as statistic.

    Raises:
        ValueError: non-finite values, mismatched shapes, a constant covariate.
    """
    y = np.asarray(values, dtype=float)
    x = np.asarray(covariate, dtype=float)
    _check(y, x, what="permutation_slope_test", n_resamples=n_resamples)
    n = len(y)
    xc = x - x.mean()
    ss = float(xc @ xc)
    if n < 3 or ss <= 0:
        raise ValueError(f"permutation_slope_test: need at least 3 caregivers and more than "
                         f"one level; got n={n}, levels {sorted(set(x.tolist()))}")
    yc = y - y.mean()
    observed = float(xc @ yc) / ss
    exact = math.factorial(n) <= int(n_resamples) + 1
    if exact:
        perms = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(np.arange(n), (int(n_resamples), 1)), axis=1)
    t_obs = float(hc2_slope_t(xc[None, :], yc)[0])
    null = hc2_slope_t(xc[perms], yc)
    method = (f"permutation of training levels across caregivers ({'exact, ' if exact else ''}"
              f"{len(perms)} permutations, n={n}; slope of {what} studentised with HC2)")
    return RobustResult(p=_p_value(t_obs, null, exact=exact), statistic=observed, n=n,
                        n_resamples=len(perms), exact=exact, method=method)


def hc2_slope_t(xc: np.ndarray, yc: np.ndarray) -> np.ndarray:
    """Slope t statistics with HC2 (heteroscedasticity-consistent) standard errors.

    Studentising makes the level permutation robust to variances that differ with
    level (e.g. longer recordings at one level); for equal variances it orders
    permutations almost as the plain slope does.

    Args:
        xc: centred covariates, one row per permutation, shape ``(B, n)``.
        yc: centred values, shape ``(n,)``.

    Returns:
        ``slope / SE_HC2`` per row, shape ``(B,)`` (0 where the SE is 0).
    """
    n = yc.shape[0]
    ss = np.sum(xc * xc, axis=1, keepdims=True)
    b = (xc @ yc)[:, None] / ss
    e = yc[None, :] - b * xc
    h = 1.0 / n + xc * xc / ss
    var = np.sum(xc * xc * e * e / (1.0 - h), axis=1) / ss[:, 0] ** 2
    se = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, b[:, 0] / se, 0.0)
    return t


def _weights(data: pd.DataFrame, weight: str | None) -> np.ndarray:
    if weight and weight in data:
        return pd.to_numeric(data[weight], errors="coerce").to_numpy(float)
    return np.ones(len(data))


def caregiver_pairs(data: pd.DataFrame, *, feature: str,
                    weight: str | None = "n_windows") -> pd.DataFrame:
    """Per caregiver: the control and care value of ``feature`` and the level score.

    Rows (recordings, segments or time bins) are averaged per caregiver and phase,
    weighted by ``weight`` (their number of windows) when that column is present, so a
    short segment counts less than a long one. Only caregivers with both phases are kept.

    Args:
        data: long table with ``caregiver, level, phase`` and ``feature``.
        feature: the outcome column.
        weight: weight column (rows with weight 0 or a missing value are left out);
            ``None`` or an absent column: equal weights.

    Returns:
        ``caregiver, level_score, control, care, delta (care - control), mean``
        (average of the two phases), one row per caregiver with both phases.

    Raises:
        ValueError: a missing column.
    """
    need = ["caregiver", "level", "phase", feature]
    missing = [c for c in need if c not in data.columns]
    if missing:
        raise ValueError(f"caregiver_pairs: data lack column(s) {missing}")
    y = pd.to_numeric(data[feature], errors="coerce").to_numpy(float)
    w = _weights(data, weight)
    phase = data["phase"].to_numpy().astype(str)
    side = np.where(phase == "care", 1, np.where(phase == "control", 0, -1))
    ok = np.isfinite(y) & (w > 0) & (side >= 0)
    codes, names = pd.factorize(data["caregiver"].to_numpy().astype(str)[ok], sort=True)
    n = len(names)
    idx = codes * 2 + side[ok]
    sw = np.bincount(idx, w[ok], minlength=2 * n).reshape(n, 2)
    swy = np.bincount(idx, w[ok] * y[ok], minlength=2 * n).reshape(n, 2)
    both = (sw > 0).all(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = swy / sw
    first = np.unique(codes, return_index=True)[1]
    level = data["level"].to_numpy().astype(str)[ok][first][both]
    out = pd.DataFrame({"caregiver": np.asarray(names, dtype=str)[both],
                        "level_score": np.array([LEVEL_INDEX.get(lv, np.nan)
                                                 for lv in level], float),
                        "control": means[both, 0], "care": means[both, 1]})
    out["delta"] = out["care"] - out["control"]
    out["mean"] = (out["care"] + out["control"]) / 2.0
    return out


def recording_slopes(binned: pd.DataFrame, *, feature: str, time: str = "time",
                     weight: str | None = "n_windows") -> pd.DataFrame:
    """Each recording's weighted least-squares slope of ``feature`` over ``time``.

    Bins are weighted by ``weight`` (their number of windows), so a bin of 3 windows
    counts a tenth of one of 30, as its mean is that much less precise.

    Args:
        binned: time-binned table (``ser.stats.descriptors.time_binned``) with
            ``recording, caregiver, level, phase``, ``time`` and ``feature``.
        feature: the outcome column.
        time: the time column (fraction of the recording, or minutes).
        weight: weight column; ``None`` or absent: equal weights.

    Returns:
        ``recording, caregiver, level, phase, slope, n_windows`` (summed weight): one row
        per recording with at least two bins at different times (outcome unit per time unit).

    Raises:
        ValueError: a missing column.
    """
    need = ["recording", "caregiver", "level", "phase", time, feature]
    missing = [c for c in need if c not in binned.columns]
    if missing:
        raise ValueError(f"recording_slopes: data lack column(s) {missing}")
    y = pd.to_numeric(binned[feature], errors="coerce").to_numpy(float)
    t = pd.to_numeric(binned[time], errors="coerce").to_numpy(float)
    w = _weights(binned, weight)
    ok = np.isfinite(y) & np.isfinite(t) & (w > 0)
    codes, names = pd.factorize(binned["recording"].to_numpy().astype(str)[ok], sort=True)
    n = len(names)
    y, t, w = y[ok], t[ok], w[ok]
    sw = np.bincount(codes, w, minlength=n)
    st, sy = np.bincount(codes, w * t, minlength=n), np.bincount(codes, w * y, minlength=n)
    # centre within recording before the cross-products (no cancellation in minutes)
    tc, yc = t - (st / sw)[codes], y - (sy / sw)[codes]
    sxx = np.bincount(codes, w * tc * tc, minlength=n)
    sxy = np.bincount(codes, w * tc * yc, minlength=n)
    first = np.unique(codes, return_index=True)[1]
    ids = {c: binned[c].to_numpy().astype(str)[ok][first] for c in ("caregiver", "level", "phase")}
    keep = sxx > 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = sxy / sxx
    return pd.DataFrame({"recording": np.asarray(names, dtype=str)[keep],
                         **{c: v[keep] for c, v in ids.items()},
                         "slope": slope[keep], "n_windows": sw[keep]})


def detectable_effect(values: np.ndarray, *, covariate: np.ndarray, kind: str, alpha: float,
                      power: float = 0.8) -> float:
    """Smallest effect a test on these caregivers detects with ``power`` at two-sided ``alpha``.

    From the observed spread of the caregiver summaries: the residual SD ``s`` of
    ``values ~ 1 + covariate`` (``n - 2`` df) gives the standard error of the mean at the
    average covariate (``kind="mean"``: ``s / sqrt(n)``, the sign-flip test's statistic)
    or of the slope (``kind="slope"``: ``s / sqrt(sum((x - mean x)^2))``, the permutation
    test's), and ``(t_{1-alpha/2} + t_{power}) * SE`` is the effect detected with that
    power (the normal-theory approximation of both randomisation tests).

    Args:
        values: one value per caregiver (care − control differences, means or slopes).
        covariate: the caregivers' training-level scores.
        kind: ``"mean"`` or ``"slope"``.
        alpha: two-sided level the effect must reach (e.g. the family's first Holm step,
            ``0.05 / family size``).
        power: wanted power (0-1).

    Returns:
        The effect in the unit of ``values`` (per level step for ``"slope"``); NaN with
        fewer than 4 caregivers.

    Raises:
        ValueError: unknown ``kind`` or levels outside (0, 1).
    """
    from scipy import stats as st

    if kind not in ("mean", "slope"):
        raise ValueError(f"detectable_effect: kind must be 'mean' or 'slope', got {kind!r}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"detectable_effect: need 0 < alpha, power < 1; got {alpha}, {power}")
    y = np.asarray(values, dtype=float)
    x = np.asarray(covariate, dtype=float)
    n = len(y)
    xc = x - x.mean()
    ss = float(xc @ xc)
    if n < 4 or ss <= 0:
        return float("nan")
    b = float(xc @ (y - y.mean())) / ss
    resid = y - y.mean() - b * xc
    s = math.sqrt(float(resid @ resid) / (n - 2))
    se = s / math.sqrt(n) if kind == "mean" else s / math.sqrt(ss)
    df = n - 2
    return float((st.t.ppf(1 - alpha / 2, df) + st.t.ppf(power, df)) * se)
