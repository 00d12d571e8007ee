"""Statistics of the caregiver study: deltas, mixed-effects models, FDR, paired tests.

Design (the notebooks 05–07 explain the same choices for a clinical reader):

- **Coding.** ``phase`` is categorical with ``control`` as reference, so ``phase[care]``
  is the care − control difference. Training level enters either as an **ordered trend**
  ``level_trend`` (untrained 0, beginner 1, intermediate 2, expert 3; the slope per level
  step) or as **categories** ``level[beginner]`` … (treatment contrasts against
  ``untrained``). With an interaction, main effects are conditional: ``phase[care]`` is
  the care effect where the other variables are 0 (untrained / level score 0 / centred
  time).
- **Mixed models** (:func:`fit_mixed`): statsmodels ``MixedLM`` with a random intercept
  per caregiver (optionally variance components nested in it, e.g. an intercept and a
  time slope per recording). Estimates and 95 % CIs come from the REML fit; each
  coefficient's p-value is an ML likelihood-ratio test of the full model against the
  model without that coefficient; terms with several coefficients (``level`` as
  categories) also get an omnibus LRT row with ``estimate`` empty. With 23 caregivers
  the asymptotic chi² reference is liberal, so by default the LRT statistic is turned
  into an F statistic with between-within denominator df (the transformation that is
  exact for linear models, ``F = ddf/k · (exp(chi2/n) − 1)`` with ``n`` the units of the
  coefficient's stratum) and CIs use t quantiles (``p_chi2`` keeps the asymptotic
  p-value). Convergence, boundary (singular) fits and
  every warning statsmodels raised are reported per row (``converged``, ``singular``,
  ``note``) rather than hidden. With a single observation per caregiver the random
  intercept is not identifiable: the model is fitted by OLS, p-values are exact t/F
  tests, and ``estimator``/``note`` say so.
- **FDR** (:func:`bh_fdr`): Benjamini–Hochberg across features, separately for each
  analysis × model × term.
- **Delta** (:func:`delta_table`): ``care − control`` and ``(care − control)/|control|``
  with a near-zero-denominator rule that flags and blanks, never zero-fills.
- **Problem data** (:func:`problem_report`): one table per notebook saying what was done
  with caregivers lacking a phase, single-caregiver levels, constant or missing
  features and fits that did not converge or hit a boundary.

The module also holds :func:`simulate_windows`, a fast window-table simulator with
planted effects used by the tests and the validation benchmarks.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import signal as _signal
from scipy import stats as _st

from ser.core.atomic import atomic_write_csv
from ser.data.schema import ID_COLUMNS, LEVEL_INDEX, LEVELS, PHASE_INDEX, PHASES, PROBLEM_COLUMNS

#: Columns of ``mixed_models.csv`` in order (the first 13 are the shared interface).
MIXED_COLUMNS: tuple[str, ...] = (
    "analysis", "feature", "model", "term", "estimate", "ci_low", "ci_high", "p", "p_fdr",
    "n_caregivers", "n_obs", "converged", "note",
    "se", "ddf", "p_chi2", "test", "singular", "estimator", "formula", "group_var",
    "resid_var",
)
#: The interface columns that every row must have.
REQUIRED_MIXED_COLUMNS: tuple[str, ...] = MIXED_COLUMNS[:13]

#: Default fixed-effects formulas: level as an ordered trend and as categories.
DEFAULT_MODELS: dict[str, str] = {
    "level_trend": "phase * level_trend",
    "level_categories": "phase * level",
}


_SKIP_TERM = "(skipped)"
#: Optimisers tried in turn. L-BFGS comes last: on boundary fits (a variance at 0) it
#: can report convergence at a point whose likelihood Powell and Nelder–Mead beat.
_FIT_METHODS: tuple[str, ...] = ("bfgs", "powell", "nm", "lbfgs")


# --------------------------------------------------------------------------- simulator

#: Simulated features: (kind, baseline, caregiver SD, recording SD, window SD).
#: ``logit`` features are simulated on the logit scale (effects in logit units),
#: ``linear`` ones in their own unit (Hz, dB).
SIM_FEATURES: dict[str, tuple[str, float, float, float, float]] = {
    "f0_hz": ("linear", 210.0, 20.0, 6.0, 18.0),
    "energy_db": ("linear", -28.0, 3.0, 1.0, 3.0),
    "speech_ratio": ("logit", 0.4, 0.5, 0.2, 1.0),
}
_SIM_LABEL_BASE: dict[str, float] = {"angry": -1.0, "happy": -0.3, "neutral": 0.8, "sad": -0.5}


def _term_factor(name: str, *, care: np.ndarray, score: np.ndarray, level: np.ndarray,
                 time: np.ndarray) -> np.ndarray:
    if name in ("phase", "phase[care]"):
        return care
    if name == "level_trend":
        return score
    if name == "time":
        return time
    m = re.fullmatch(r"level\[(\w+)\]", name)
    if m and m.group(1) in LEVELS[1:]:
        return (level == m.group(1)).astype(float)
    raise ValueError(
        f"simulate_windows: unknown effect term factor {name!r}; use products (joined by "
        f"':') of 'phase', 'level_trend', 'time', 'level[<{'|'.join(LEVELS[1:])}>]', "
        f"e.g. 'phase:level_trend'")


def simulate_windows(
    *,
    seed: int,
    effects: Mapping[str, Mapping[str, float]] | None = None,
    n_per_level: Sequence[int] = (2, 9, 4, 8),
    duration_s: float = 360.0,
    hop_s: float = 3.0,
    window_s: float = 3.0,
    labels: Sequence[str] = ("angry", "happy", "neutral", "sad"),
    ar_rho: float = 0.6,
    unvoiced_below: float = 0.1,
) -> pd.DataFrame:
    """Simulate a ``windows.csv``-like table with planted effects (fast, vectorised).

    Each feature is ``baseline + Σ effect·term + u_caregiver + v_recording + e_window``
    with normal caregiver and recording (caregiver × phase) intercepts and AR(1) window
    noise (``ar_rho``) within each recording. Emotion probabilities are the softmax of
    per-label logits; ``speech_ratio`` and ``voiced_ratio`` are logistic. ``f0_hz`` is
    empty where ``voiced_ratio < unvoiced_below``.

    Args:
        seed: seed of the random generator (the table is a pure function of the args).
        effects: planted effects, ``{feature: {term: value}}``. Features: ``p_<label>``
            (logit units of that label), ``speech_ratio`` (logit units), ``f0_hz`` (Hz),
            ``energy_db`` (dB). Terms are products of ``phase`` (1 in care),
            ``level_trend`` (0..3), ``level[<level>]`` (indicator) and ``time``
            (fraction of the recording, 0–1) joined by ``:``, e.g.
            ``{"f0_hz": {"phase": 8.0, "level_trend": 3.0, "phase:level_trend": 2.0}}``.
            ``None`` or ``{}`` simulates a null cohort.
        n_per_level: caregivers per level (untrained, beginner, intermediate, expert).
        duration_s: length of every recording, s.
        hop_s: window hop, s.
        window_s: window length, s.
        labels: emotion labels (``p_<label>`` columns).
        ar_rho: lag-1 autocorrelation of the window noise within a recording.
        unvoiced_below: ``voiced_ratio`` below which a window has no F0.

    Returns:
        DataFrame with the ``windows.csv`` columns (``recording, caregiver, level, phase,
        start_s, end_s, p_<label>…, f0_hz, f0_mean_hz, f0_std_hz, voiced_ratio,
        energy_db, energy_std_db, energy_max_db, speech_ratio``);
        ``df.attrs["truth"]`` holds the planted effects.

    Raises:
        ValueError: bad sizes, unknown feature or term in ``effects``.

    Example:
        >>> w = simulate_windows(seed=1, effects={"f0_hz": {"phase": 10.0}})
    """
    if len(n_per_level) != len(LEVELS) or any(int(n) < 0 for n in n_per_level):
        raise ValueError(f"simulate_windows: n_per_level needs {len(LEVELS)} non-negative "
                         f"counts ({', '.join(LEVELS)}), got {n_per_level}")
    if not (hop_s > 0 and window_s > 0 and duration_s >= window_s):
        raise ValueError(f"simulate_windows: need hop_s > 0, window_s > 0 and duration_s >= "
                         f"window_s; got {hop_s}, {window_s}, {duration_s}")
    if not -1 < ar_rho < 1:
        raise ValueError(f"simulate_windows: ar_rho must be in (-1, 1), got {ar_rho}")
    effects = {k: dict(v) for k, v in (effects or {}).items()}
    label_feats = {f"p_{lb}": lb for lb in labels}
    unknown = sorted(set(effects) - set(label_feats) - set(SIM_FEATURES))
    if unknown:
        raise ValueError(f"simulate_windows: effects for unknown feature(s) {unknown}; "
                         f"simulated: {sorted(label_feats) + sorted(SIM_FEATURES)}")
    rng = np.random.default_rng(seed)
    levels = np.repeat(np.array(LEVELS), [int(n) for n in n_per_level])
    n_cg = len(levels)
    if n_cg == 0:
        raise ValueError("simulate_windows: n_per_level sums to 0 caregivers")
    caregivers = np.array([f"p{i + 1:03d}" for i in range(n_cg)])
    starts = np.arange(0.0, duration_s - window_s + 1e-9, hop_s)
    n_w = len(starts)
    n_rec = n_cg * len(PHASES)
    rec_cg = np.repeat(np.arange(n_cg), len(PHASES))          # recording -> caregiver idx
    rec_care = np.tile(np.arange(len(PHASES)), n_cg).astype(float)  # 0 control, 1 care
    # per-window covariates, shape (n_rec, n_w)
    care = np.repeat(rec_care[:, None], n_w, axis=1)
    score = np.repeat(np.array([LEVEL_INDEX[lv] for lv in levels])[rec_cg][:, None], n_w, 1)
    level = np.repeat(levels[rec_cg][:, None], n_w, axis=1)
    time = np.broadcast_to(((starts + window_s / 2) / duration_s)[None, :], (n_rec, n_w))

    def noise(sd_cg: float, sd_rec: float, sd_w: float) -> np.ndarray:
        w = rng.standard_normal((n_rec, n_w))
        w[:, 0] /= math.sqrt(1 - ar_rho**2)
        ar = _signal.lfilter([1.0], [1.0, -ar_rho], w, axis=1) * math.sqrt(1 - ar_rho**2)
        return (sd_cg * rng.standard_normal(n_cg)[rec_cg][:, None]
                + sd_rec * rng.standard_normal(n_rec)[:, None] + sd_w * ar)

    def planted(feature: str) -> np.ndarray:
        out = np.zeros((n_rec, n_w))
        for term, value in effects.get(feature, {}).items():
            prod = np.ones((n_rec, n_w))
            for factor in term.split(":"):
                prod = prod * _term_factor(factor.strip(), care=care, score=score,
                                           level=level, time=time)
            out += float(value) * prod
        return out

    cols: dict[str, np.ndarray] = {}
    logits = np.stack([_SIM_LABEL_BASE.get(lb, 0.0) + noise(0.5, 0.3, 1.0)
                       + planted(f"p_{lb}") for lb in labels], axis=-1)
    logits -= logits.max(axis=-1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=-1, keepdims=True)
    for j, lb in enumerate(labels):
        cols[f"p_{lb}"] = prob[..., j]
    latent = {}
    for feat, (_kind, base, s_cg, s_rec, s_w) in SIM_FEATURES.items():
        latent[feat] = base + noise(s_cg, s_rec, s_w) + planted(feat)
    speech = 1.0 / (1.0 + np.exp(-latent["speech_ratio"]))
    voiced = speech / (1.0 + np.exp(-(1.0 + 0.8 * rng.standard_normal((n_rec, n_w)))))
    f0 = np.where(voiced >= unvoiced_below, latent["f0_hz"], np.nan)
    f0_std = np.exp(np.log(22.0) + 0.3 * rng.standard_normal((n_rec, n_w)))
    energy_std = np.abs(4.0 + rng.standard_normal((n_rec, n_w)))
    cols.update({
        "f0_hz": f0,
        "f0_mean_hz": f0 + 2.0 + 3.0 * rng.standard_normal((n_rec, n_w)),
        "f0_std_hz": np.where(np.isnan(f0), np.nan, f0_std),
        "voiced_ratio": voiced,
        "energy_db": latent["energy_db"],
        "energy_std_db": energy_std,
        "energy_max_db": latent["energy_db"] + 2.0 * energy_std,
        "speech_ratio": speech,
    })
    rec_names = np.array([f"{caregivers[c]}_{PHASES[int(p)]}" for c, p in zip(rec_cg, rec_care)])
    df = pd.DataFrame({
        "recording": np.repeat(rec_names, n_w),
        "caregiver": np.repeat(caregivers[rec_cg], n_w),
        "level": np.repeat(levels[rec_cg], n_w),
        "phase": np.repeat(np.array(PHASES)[rec_care.astype(int)], n_w),
        "start_s": np.tile(starts, n_rec),
        "end_s": np.tile(starts + window_s, n_rec),
        **{k: v.reshape(-1) for k, v in cols.items()},
    })
    df.attrs["truth"] = {"seed": seed, "effects": effects, "n_per_level": list(n_per_level),
                         "ar_rho": ar_rho, "effect_units": {
                             **{f: "logit" for f in label_feats}, "speech_ratio": "logit",
                             "f0_hz": "Hz", "energy_db": "dB"}}
    return df


# --------------------------------------------------------------------------------- FDR

def bh_fdr(p: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values; missing p-values stay missing.

    Args:
        p: p-values (NaN allowed; they are ignored and returned as NaN).

    Returns:
        Array of the same length: ``min(1, min_{j>=i} p_(j) * m / j)`` in the original order,
        with ``m`` the number of non-missing p-values.

    Raises:
        ValueError: a p-value outside [0, 1].
    """
    arr = np.asarray(p, dtype=float)
    out = np.full(arr.shape, np.nan)
    ok = ~np.isnan(arr)
    if np.any((arr[ok] < 0) | (arr[ok] > 1)):
        raise ValueError(f"bh_fdr: p-values must lie in [0, 1], got {arr[ok].min()}..{arr[ok].max()}")
    m = int(ok.sum())
    if m == 0:
        return out
    vals = arr[ok]
    order = np.argsort(vals)
    ranked = vals[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


# ------------------------------------------------------------------------ mixed models

def _readable(name: str) -> str:
    """patsy name → readable: ``phase[T.care]:level_trend`` → ``phase[care]:level_trend``."""
    return re.sub(r"\[T\.([^\]]+)\]", r"[\1]", name)


def _formula_vars(formula: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", formula))


def _prepare(df: pd.DataFrame, *, feature: str, group: str, formula_fixed: str,
             nested: str | None, nested_slope: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Typed model frame (no missing values) and notes about what was dropped/kept."""
    if "~" in formula_fixed:
        raise ValueError(f"fit_mixed: formula_fixed is the right-hand side only "
                         f"(e.g. 'phase * level_trend'), got {formula_fixed!r}")
    used = _formula_vars(formula_fixed) & {"phase", "level", "level_trend", "time"}
    need = [feature, group] + sorted(used - {"level_trend"}) + (
        ["level"] if "level_trend" in used else []) + ([nested] if nested else []) + (
        [nested_slope] if nested_slope else [])
    missing = [c for c in dict.fromkeys(need) if c not in df.columns]
    if missing:
        raise ValueError(f"fit_mixed: data lack column(s) {missing} needed by feature "
                         f"{feature!r} / formula {formula_fixed!r}")
    notes: list[str] = []
    frame = df[list(dict.fromkeys(need + [c for c in df.columns
                                          if c in _formula_vars(formula_fixed)]))].copy()
    frame[feature] = pd.to_numeric(frame[feature], errors="coerce")
    n0 = len(frame)
    frame = frame.dropna(subset=[c for c in frame.columns])
    if len(frame) < n0:
        notes.append(f"{n0 - len(frame)} of {n0} rows with missing values dropped")
    if "level" in frame:
        bad = sorted(set(frame["level"].astype(str)) - set(LEVELS))
        if bad:
            raise ValueError(f"fit_mixed: unknown level(s) {bad}; expected {list(LEVELS)}")
        frame["level_trend"] = frame["level"].astype(str).map(LEVEL_INDEX).astype(float)
        present = [lv for lv in LEVELS if lv in set(frame["level"].astype(str))]
        frame["level"] = pd.Categorical(frame["level"].astype(str), categories=present)
        if "level" in used or "level_trend" in used:
            absent = [lv for lv in LEVELS if lv not in present]
            if absent:
                notes.append(f"level(s) {absent} absent")
            if "level" in used and present and present[0] != LEVELS[0]:
                notes.append(f"reference level is {present[0]!r} ({LEVELS[0]!r} absent)")
            per_level = frame.groupby("level", observed=True)[group].nunique()
            single = [str(lv) for lv, n in per_level.items() if n == 1]
            if single:
                notes.append(f"level(s) {single} have 1 caregiver (kept; contrasts with them "
                             f"rest on one person)")
    if "phase" in frame:
        bad = sorted(set(frame["phase"].astype(str)) - set(PHASES))
        if bad:
            raise ValueError(f"fit_mixed: unknown phase(s) {bad}; expected {list(PHASES)}")
        present = [ph for ph in PHASES if ph in set(frame["phase"].astype(str))]
        frame["phase"] = pd.Categorical(frame["phase"].astype(str), categories=present)
        if "phase" in used:
            n_ph = frame.groupby(group)["phase"].nunique()
            one = sorted(str(c) for c in n_ph.index[n_ph < 2])
            if one:
                notes.append(f"caregiver(s) {one} have one phase only (kept: they inform "
                             f"level terms, not the phase contrast)")
    frame[group] = frame[group].astype(str)
    if nested:
        frame[nested] = frame[nested].astype(str)
    return frame.reset_index(drop=True), notes


def _design(frame: pd.DataFrame, formula_fixed: str) -> tuple[pd.DataFrame, dict[str, list[str]], list[str]]:
    """Design matrix with readable names, columns grouped by term, and aliasing notes."""
    import patsy

    try:
        X = patsy.dmatrix(formula_fixed, frame, return_type="dataframe", NA_action="raise")
    except patsy.PatsyError as err:
        raise ValueError(f"fit_mixed: cannot build design for formula {formula_fixed!r}: "
                         f"{err}") from err
    info = X.design_info
    X.columns = [_readable(c) for c in X.columns]
    terms = {_readable(t): [X.columns[i] for i in range(s.start, s.stop)]
             for t, s in info.term_name_slices.items()}
    notes: list[str] = []
    keep: list[str] = []
    scaled = X / np.maximum(X.abs().max(), 1e-12)
    for c in X.columns:
        if np.linalg.matrix_rank(scaled[keep + [c]].to_numpy()) > len(keep):
            keep.append(c)
        else:
            notes.append(f"{c} not estimable (no data or aliased), dropped")
    X = X[keep]
    terms = {t: [c for c in cols if c in keep] for t, cols in terms.items()}
    return X, {t: c for t, c in terms.items() if c}, notes


def _vc_spec(frame: pd.DataFrame, *, group: str, nested: str,
             nested_slope: str | None) -> Any:
    """Variance components nested in ``group``: an intercept (and optionally a slope)
    per ``nested`` unit, built directly (patsy's per-group route is ~1 s per model)."""
    from statsmodels.regression.mixed_linear_model import VCSpec

    g = frame[group].to_numpy()
    r = frame[nested].to_numpy()
    s = frame[nested_slope].to_numpy(float) if nested_slope else None
    names, colnames, mats = ["nested"], [[]], [[]]
    if nested_slope:
        names.append("nested_slope")
        colnames.append([])
        mats.append([])
    for lab in sorted(set(g)):  # MixedLM orders groups by sorted label
        ii = np.flatnonzero(g == lab)
        units = sorted(set(r[ii]))
        onehot = (r[ii][:, None] == np.array(units, dtype=object)[None, :]).astype(float)
        colnames[0].append([f"{u}" for u in units])
        mats[0].append(onehot)
        if s is not None:
            colnames[1].append([f"{u}:{nested_slope}" for u in units])
            mats[1].append(onehot * s[ii][:, None])
    return VCSpec(names, colnames, mats)


def _start_from(res: Any, cols: list[str], keep: list[str]) -> Any:
    """Start values for a fit on ``keep`` columns from a fit ``res`` on ``cols``."""
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    scale = float(res.scale)
    vcomp = np.asarray(getattr(res, "vcomp", np.zeros(0)), float)
    return MixedLMParams.from_components(
        fe_params=np.asarray(res.fe_params, float)[[cols.index(c) for c in keep]],
        cov_re=np.asarray(res.cov_re, float) / scale,
        vcomp=vcomp / scale if vcomp.size else None)


def _fit_once(y: np.ndarray, X: pd.DataFrame, frame: pd.DataFrame, *, group: str,
              reml: bool, vc: Any = None, start: Any = None,
              methods: Sequence[str] = _FIT_METHODS) -> tuple[Any, str, list[str], list[str]]:
    """Fit MixedLM (random intercept per ``group`` + optional variance components
    ``vc`` from :func:`_vc_spec`) trying optimisers in turn; ``start`` (from
    :func:`_start_from`) speeds up nested fits and is dropped if that fit fails.

    Returns:
        ``(result, method, failures, warnings)``: the first converged fit (else the last
        one), the optimiser used, why earlier optimisers were abandoned, and the first
        line of each warning statsmodels raised during the kept fit.
    """
    from statsmodels.regression.mixed_linear_model import MixedLM

    groups = frame[group].to_numpy()

    def build() -> Any:
        if vc is None:
            return MixedLM(y, X.to_numpy(), groups=groups)
        return MixedLM(y, X.to_numpy(), groups=groups, exog_re=np.ones((len(y), 1)),
                       exog_vc=vc)

    failures: list[str] = []
    last = None
    attempts = [(m, start) for m in methods[:1]] if start is not None else []
    attempts += [(m, None) for m in methods]
    for method, sp in attempts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = build().fit(reml=reml, method=[method], start_params=sp)
            except (np.linalg.LinAlgError, ValueError, FloatingPointError) as err:
                if sp is None:
                    failures.append(f"optimiser {method} failed ({type(err).__name__}: {err})")
                continue
        msgs = list(dict.fromkeys(str(w.message).split("\n")[0] for w in caught))
        last = (res, method, msgs)
        if (res.converged and not any("converge" in m.lower() for m in msgs)
                and np.all(np.isfinite(res.fe_params))):
            return res, method, failures, msgs
        if sp is None:
            failures.append(f"optimiser {method} did not converge")
    if last is None:
        raise RuntimeError("; ".join(failures) or "MixedLM failed")
    res, method, msgs = last
    return res, method, failures, msgs


def _row(**kw: Any) -> dict[str, Any]:
    base = {c: np.nan for c in MIXED_COLUMNS}
    base.update(kw)
    return base


def _join(*parts: Sequence[str] | str) -> str:
    flat: list[str] = []
    for p in parts:
        flat.extend([p] if isinstance(p, str) else list(p))
    return "; ".join(dict.fromkeys(s for s in flat if s))


def _fit_ols(frame: pd.DataFrame, X: pd.DataFrame, terms: dict[str, list[str]], *,
             feature: str, model: str, formula: str, analysis: str, group: str,
             notes: list[str]) -> pd.DataFrame:
    import statsmodels.api as sm

    y = frame[feature].to_numpy(float)
    res = sm.OLS(y, X.to_numpy()).fit()
    ci = res.conf_int(0.05)
    note = _join(notes, "one observation per caregiver: caregiver random intercept not "
                        "identifiable, fitted OLS; p from exact t/F tests")
    common = dict(analysis=analysis, feature=feature, model=model,
                  n_caregivers=frame[group].nunique(), n_obs=len(frame), converged=True,
                  singular=False, estimator="OLS", formula=f"{feature} ~ {formula}",
                  resid_var=float(res.scale))
    rows = []
    for i, c in enumerate(X.columns):
        is_icpt = c == "Intercept"
        rows.append(_row(**common, term=c, estimate=res.params[i], se=res.bse[i],
                         ci_low=ci[i, 0], ci_high=ci[i, 1],
                         p=np.nan if is_icpt else res.pvalues[i],
                         test="" if is_icpt else f"t({res.df_resid:.0f})",
                         note=_join(note, "intercept not tested" if is_icpt else "")))
    for t, cols in terms.items():
        if len(cols) > 1:
            R = np.zeros((len(cols), X.shape[1]))
            for k, c in enumerate(cols):
                R[k, list(X.columns).index(c)] = 1.0
            ft = res.f_test(R)
            rows.append(_row(**common, term=t, p=float(np.squeeze(ft.pvalue)),
                             test=f"F({len(cols)}, {res.df_resid:.0f})",
                             note=_join(note, f"omnibus test of {len(cols)} coefficients")))
    return pd.DataFrame(rows)


def fit_mixed(
    df: pd.DataFrame,
    *,
    feature: str,
    formula_fixed: str,
    group: str = "caregiver",
    model: str | None = None,
    nested: str | None = None,
    nested_slope: str | None = None,
    analysis: str = "",
    reference: str = "F",
) -> pd.DataFrame:
    """Fit ``feature ~ formula_fixed + (1 | group)`` and test every coefficient.

    Estimates, SEs and 95 % CIs come from the REML fit. Each coefficient's ``p`` is an
    ML likelihood-ratio test (full vs. without that coefficient); a term with several
    coefficients (e.g. ``level`` as categories) gets an extra omnibus row (``estimate``
    empty). With 23 caregivers the asymptotic chi²/normal references are liberal, so by
    default (``reference="F"``) the LRT statistic is referred to ``F(df, ddf)`` as
    ``F = ddf/df · (exp(chi2/n) − 1)`` and the CI uses ``t(ddf)``. ``ddf`` follows the
    between-within rule: a coefficient constant within caregivers (level) gets
    ``n_caregivers − #between-caregiver coefficients``; one constant within recordings
    (phase, with ``nested``) ``n_recordings − n_caregivers − #such coefficients``;
    others ``n_obs − n_clusters − #within coefficients``; with ``nested_slope`` the
    coefficients involving the slope variable get ``n_recordings − #such coefficients``
    (the recordings' slopes are the replicates); ``n`` is the same count before the
    coefficients are subtracted (the stratum's units). In a linear model, and in a
    random-intercept model whose caregivers all have the same number of observations,
    the ML LRT is ``n·log(RSS0/RSS1)`` within its stratum, so this F is the exact F test;
    ``chi2/df`` would keep ML's small-sample bias (about 2 points of false-positive rate
    with the 8 coefficients of ``phase * level``; see ``benchmarks/bench_stats_validation.py``).
    The asymptotic chi² p-value is kept in ``p_chi2``. The function never raises on bad
    data: it reports what it did.

    Args:
        df: long data with ``feature``, ``group``, and the variables of the formula.
            ``phase`` (control/care), ``level`` (levels of :data:`ser.stats.descriptors.LEVELS`)
            are coded as categories with control/untrained as reference; ``level_trend``
            (0..3) is derived from ``level`` when the formula uses it.
        feature: response column.
        formula_fixed: right-hand side in patsy syntax, e.g. ``"phase * level_trend"``.
        group: grouping column of the random intercept.
        model: name written to the ``model`` column (default: ``formula_fixed``).
        nested: optional column of a variance component nested in ``group`` (e.g.
            ``"recording"`` when there are many rows per recording).
        nested_slope: optional numeric column (e.g. ``"time"``) given an independent
            random slope per ``nested`` unit. Within-recording autocorrelation shows up
            as recording-to-recording slope variation; this component absorbs it so
            that time terms are not tested against too small an error.
        analysis: value of the ``analysis`` column.
        reference: ``"F"`` (small-sample reference, default) or ``"chi2"`` (asymptotic
            chi² p-values and normal Wald CIs).

    Returns:
        One row per term with :data:`MIXED_COLUMNS`. Terms are readable:
        ``Intercept``, ``phase[care]``, ``level_trend``, ``phase[care]:level_trend``,
        ``level[beginner]`` … A skipped fit (zero variance, too few caregivers, failure)
        is one row with ``term == "(skipped)"`` and the reason in ``note``.

    Raises:
        ValueError: missing columns, unknown levels/phases, malformed formula.
    """
    if reference not in ("F", "chi2"):
        raise ValueError(f"fit_mixed: reference must be 'F' or 'chi2', got {reference!r}")
    if nested_slope and not nested:
        raise ValueError("fit_mixed: nested_slope needs nested (the unit the slope varies by)")
    model = model or formula_fixed
    frame, notes = _prepare(df, feature=feature, group=group, formula_fixed=formula_fixed,
                            nested=nested, nested_slope=nested_slope)
    n_cg, n_obs = frame[group].nunique(), len(frame)
    common = dict(analysis=analysis, feature=feature, model=model, n_caregivers=n_cg,
                  n_obs=n_obs, formula=f"{feature} ~ {formula_fixed} + (1|{group})"
                  + (f" + (1|{group}:{nested})" if nested else "")
                  + (f" + (0+{nested_slope}|{group}:{nested})" if nested_slope else ""))

    def skipped(reason: str) -> pd.DataFrame:
        return pd.DataFrame([_row(**common, term=_SKIP_TERM, converged=False,
                                  note=_join(notes, f"skipped: {reason}"))])

    y = frame[feature].to_numpy(float)
    if n_cg < 3:
        return skipped(f"{n_cg} caregiver(s) with data; need at least 3")
    spread = float(np.nanstd(y)) if n_obs else 0.0
    if n_obs < 2 or spread <= 1e-12 * max(1.0, float(np.nanmax(np.abs(y)))):
        return skipped("zero variance (the descriptor is constant)")
    X, terms, alias_notes = _design(frame, formula_fixed)
    notes += alias_notes
    if X.shape[1] >= n_obs:
        return skipped(f"{X.shape[1]} coefficients for {n_obs} observations")
    if frame.groupby(group).size().max() == 1:
        return _fit_ols(frame, X, terms, feature=feature, model=model, formula=formula_fixed,
                        analysis=analysis, group=group, notes=notes)
    # Fit on a standardised response: optimisers and statsmodels' absolute boundary
    # check (variance < 0.01) then behave the same for probabilities and Hz. LRT
    # statistics are unchanged; estimates are transformed back to the feature's unit.
    y_mean, y_sd = float(np.mean(y)), float(np.std(y))
    has_icpt = "Intercept" in X.columns
    ys = (y - (y_mean if has_icpt else 0.0)) / y_sd
    try:
        vc = (_vc_spec(frame, group=group, nested=nested, nested_slope=nested_slope)
              if nested else None)
        reml, method, reml_fail, reml_msgs = _fit_once(ys, X, frame, group=group, reml=True,
                                                       vc=vc)
        # the ML fits meet the same likelihood surface: start with what worked for REML
        # (saves the failing gradient optimisers when a variance sits on the boundary)
        order = (method, *(m for m in _FIT_METHODS if m != method))
        full_ml, _, ml_fail, ml_msgs = _fit_once(ys, X, frame, group=group, reml=False, vc=vc,
                                                 methods=order,
                                                 start=_start_from(reml, list(X.columns),
                                                                   list(X.columns)))
    except Exception as err:  # noqa: BLE001 — report, never crash a batch
        return skipped(f"fit failed: {type(err).__name__}: {err}")
    converged = bool(reml.converged) and not any("converge" in m.lower() for m in reml_msgs)
    ml_converged = bool(full_ml.converged) and not any("converge" in m.lower() for m in ml_msgs)
    group_var = float(np.asarray(reml.cov_re)[0, 0])
    total = group_var + float(reml.scale) + float(np.sum(getattr(reml, "vcomp", [])))
    singular = group_var <= 1e-4 * total
    fit_notes = list(reml_fail)
    if singular:
        fit_notes.append("boundary (singular) fit: caregiver variance estimated at ~0")
    if not converged:
        fit_notes.append("REML fit did not converge: estimates unreliable")
    if not ml_converged:
        fit_notes.append("ML fit did not converge: LRT p-values unreliable")
    for m in reml_msgs + ml_msgs:
        if "boundary" in m.lower():
            if not singular:
                fit_notes.append("statsmodels: MLE may be on the boundary (a variance "
                                 "component < 1 % of the response variance)")
        elif "converge" not in m.lower():
            fit_notes.append(f"statsmodels: {m}")
    common.update(converged=converged, singular=singular, estimator="MixedLM",
                  group_var=group_var * y_sd**2, resid_var=float(reml.scale) * y_sd**2)
    cols = list(X.columns)
    fe = np.asarray(reml.fe_params, float) * y_sd
    if has_icpt:
        fe[cols.index("Intercept")] += y_mean
    bse = np.asarray(reml.bse_fe, float) * y_sd
    ddf, units = _between_within_ddf(X, frame, group=group, nested=nested,
                                     nested_slope=nested_slope)

    def crit(c: str) -> float:
        return float(_st.t.ppf(0.975, ddf[c]) if reference == "F" else _st.norm.ppf(0.975))

    def lrt(drop: list[str]) -> tuple[float, float, float, str, str]:
        keep = [c for c in cols if c not in drop]
        try:
            red, _, _, msgs = _fit_once(ys, X[keep], frame, group=group, reml=False, vc=vc,
                                        methods=order,
                                        start=_start_from(full_ml, cols, keep))
        except Exception as err:  # noqa: BLE001
            return np.nan, np.nan, np.nan, "", f"LRT failed: {type(err).__name__}: {err}"
        raw = 2.0 * (float(full_ml.llf) - float(red.llf))
        chi2 = max(0.0, raw)
        bad = (not red.converged) or any("converge" in m.lower() for m in msgs)
        if raw < -1e-2:  # impossible at the optimum: the full ML fit stopped short
            return (np.nan, np.nan, np.nan, f"LRT(ML) chi2={raw:.3g}",
                    "LRT failed: the reduced model fits better than the full one "
                    "(ML optimiser stopped short); p left empty")
        k = len(drop)
        c_min = min(drop, key=lambda c: ddf[c])
        d, n_units = ddf[c_min], units[c_min]
        p_chi2 = float(_st.chi2.sf(chi2, k))
        f_stat = d / k * math.expm1(min(chi2 / n_units, 700.0))
        p = float(_st.f.sf(f_stat, k, d)) if reference == "F" else p_chi2
        test = f"LRT(ML) chi2={chi2:.3g}, df={k}" + (
            f"; p from F({k}, {d:g}) = {f_stat:.3g} (n={n_units:g})" if reference == "F"
            else "; p from chi2")
        return p, p_chi2, d, test, ("reduced ML fit did not converge" if bad else "")

    rows = []
    for i, c in enumerate(cols):
        est = dict(estimate=fe[i], se=bse[i], ci_low=fe[i] - crit(c) * bse[i],
                   ci_high=fe[i] + crit(c) * bse[i])
        if c == "Intercept":
            rows.append(_row(**common, term=c, **est, ddf=ddf[c],
                             note=_join(notes, fit_notes, "intercept not tested")))
            continue
        p, p_chi2, d, test, lnote = lrt([c])
        rows.append(_row(**common, term=c, **est, p=p, p_chi2=p_chi2, ddf=d, test=test,
                         note=_join(notes, fit_notes, lnote)))
    for t, tcols in terms.items():
        if len(tcols) > 1:
            p, p_chi2, d, test, lnote = lrt(tcols)
            rows.append(_row(**common, term=t, p=p, p_chi2=p_chi2, ddf=d, test=test,
                             note=_join(notes, fit_notes, lnote,
                                        f"omnibus test of {len(tcols)} coefficients")))
    return pd.DataFrame(rows)


def _between_within_ddf(X: pd.DataFrame, frame: pd.DataFrame, *, group: str,
                        nested: str | None,
                        nested_slope: str | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Denominator df per design column by the between-within rule (at least 1), and
    the number of units of each column's stratum (``ddf + #coefficients`` there)."""
    n_obs, n_cg = len(frame), frame[group].nunique()
    strata: dict[str, str] = {}
    for c in X.columns:
        col = pd.Series(X[c].to_numpy(), index=frame.index)
        if nested_slope and nested_slope in c.split(":"):
            strata[c] = "slope"
        elif (col.groupby(frame[group]).nunique() <= 1).all():
            strata[c] = "between"
        elif nested and (col.groupby(frame[nested]).nunique() <= 1).all():
            strata[c] = "nested"
        else:
            strata[c] = "within"
    count = {k: sum(v == k for v in strata.values())
             for k in ("between", "nested", "within", "slope")}
    if nested:
        n_rec = frame[nested].nunique()
        base = {"between": n_cg - count["between"],
                "nested": n_rec - n_cg - count["nested"],
                "within": n_obs - n_rec - count["within"] - count["slope"],
                "slope": n_rec - count["slope"]}
    else:
        base = {"between": n_cg - count["between"], "nested": np.nan, "slope": np.nan,
                "within": n_obs - n_cg - count["within"]}
    ddf = {c: float(max(1, base[s])) for c, s in strata.items()}
    return ddf, {c: ddf[c] + count[s] for c, s in strata.items()}


def mixed_models_table(
    data: pd.DataFrame,
    *,
    features: Sequence[str],
    models: Mapping[str, str] | None = None,
    analysis: str,
    group: str = "caregiver",
    nested: str | None = None,
    nested_slope: str | None = None,
    reference: str = "F",
    progress: bool = True,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Fit every feature × model with :func:`fit_mixed` and add BH-FDR across features.

    Args:
        data: long data (one row per observation) with the feature columns.
        features: response columns.
        models: ``{model name: formula_fixed}``; default :data:`DEFAULT_MODELS`
            (level as ordered trend and as categories).
        analysis: ``time_dependent`` / ``time_invariant`` / ``delta``.
        group: random-intercept grouping column.
        nested: optional nested variance-component column (see :func:`fit_mixed`).
        nested_slope: optional random slope per nested unit (see :func:`fit_mixed`).
        reference: p-value/CI reference, ``"F"`` or ``"chi2"`` (see :func:`fit_mixed`).
        progress: show a tqdm progress bar.
        n_jobs: joblib worker processes for the fits (results do not depend on it).

    Returns:
        Rows of all fits with :data:`MIXED_COLUMNS`; ``p_fdr`` is Benjamini–Hochberg
        across features within each model × term.

    Raises:
        ValueError: empty ``features``/``models`` or a feature absent from ``data``.
    """
    models = dict(models or DEFAULT_MODELS)
    if not features or not models:
        raise ValueError("mixed_models_table: options 'features' and 'models' must be non-empty")
    absent = [f for f in features if f not in data.columns]
    if absent:
        raise ValueError(f"mixed_models_table: feature(s) {absent} not in the data; "
                         f"available: {list(data.columns)}")
    from tqdm import tqdm

    if int(n_jobs) < 1:
        raise ValueError(f"mixed_models_table: n_jobs must be >= 1, got {n_jobs}")
    jobs = [(f, m, fm) for f in features for m, fm in models.items()]
    kw = dict(group=group, nested=nested, nested_slope=nested_slope, analysis=analysis,
              reference=reference)
    it = tqdm(jobs, desc=f"mixed models ({analysis})", disable=not progress)
    if int(n_jobs) == 1 or len(jobs) == 1:
        parts = [fit_mixed(data, feature=f, formula_fixed=fm, model=m, **kw) for f, m, fm in it]
    else:
        from joblib import Parallel, delayed

        cols = list(dict.fromkeys([*features, group, "phase", "level", "time"]
                                  + ([nested] if nested else [])
                                  + ([nested_slope] if nested_slope else [])))
        small = data[[c for c in cols if c in data.columns]]  # ship only what the fits use
        parts = Parallel(n_jobs=int(n_jobs))(
            delayed(fit_mixed)(small, feature=f, formula_fixed=fm, model=m, **kw)
            for f, m, fm in it)
    out = pd.concat(parts, ignore_index=True)
    return add_fdr(out)


def add_fdr(table: pd.DataFrame, *, by: Sequence[str] = ("analysis", "model", "term")) -> pd.DataFrame:
    """Fill ``p_fdr`` with Benjamini–Hochberg adjusted ``p`` within each ``by`` group."""
    out = table.copy()
    out["p_fdr"] = np.nan
    for _, idx in out.groupby(list(by), dropna=False).groups.items():
        out.loc[idx, "p_fdr"] = bh_fdr(out.loc[idx, "p"].to_numpy(float))
    return out


_BOILERPLATE = ("intercept not tested", "omnibus test of")


def summarise_notes(table: pd.DataFrame) -> pd.DataFrame:
    """One line per fit (feature × model) saying what was done, for the notebooks.

    Notes shared by every row of a fit are listed once; notes of single terms are
    prefixed with the term; routine remarks (intercept not tested, omnibus) are left out.

    Returns:
        ``feature, model, estimator, converged, singular, note`` for fits with a note.
    """
    rows = []
    for (f, m), g in table.groupby(["feature", "model"], sort=False):
        parts = [[p for p in str(n).split("; ") if p and p != "nan"
                  and not p.startswith(_BOILERPLATE)] for n in g["note"].fillna("")]
        common = set.intersection(*(set(p) for p in parts)) if parts else set()
        text = [p for p in dict.fromkeys(sum(parts, [])) if p in common]
        for term, ps in zip(g["term"], parts, strict=True):
            text += [f"{term}: {p}" for p in ps if p not in common]
        if text:
            rows.append({"feature": f, "model": m, "estimator": g["estimator"].iloc[0],
                         "converged": bool(g["converged"].fillna(False).all()),
                         "singular": bool(g["singular"].fillna(False).any()),
                         "note": "; ".join(text)})
    return pd.DataFrame(rows, columns=["feature", "model", "estimator", "converged",
                                       "singular", "note"])




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
      :func:`~ser.stats.descriptors.time_binned`): left out of the emotion-probability
      descriptors; rows (recordings, segments or bins) left without any counted window;
    - from ``fits`` (rows of :func:`mixed_models_table`): fits that did not converge,
      boundary (singular) fits, skipped fits, failed or non-converged likelihood-ratio tests;
    - from ``delta``: relative changes not computed because ``|control|`` is near zero.

    Args:
        data: the analysed table (windows, bins or descriptors) with ``group``,
            ``level`` and ``phase`` when present.
        features: the analysed columns.
        analysis: value of the ``analysis`` column (e.g. ``"time_invariant"``).
        fits: mixed-model rows, optional.
        delta: output of :func:`delta_table`, optional.
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
        left = int((n_all - n_used).sum())
        if left > 0:
            share = (n_all - n_used) / n_all.where(n_all > 0)
            add("windows with too little speech", "p_<label> (emotion probabilities)",
                "left out of the emotion-probability descriptors (min_speech_ratio)",
                f"{left} of {int(n_all.sum())} windows ({100 * left / n_all.sum():.1f} %); "
                f"per row {100 * share.min():.0f}-{100 * share.max():.0f} %")
        empty = (n_used == 0) & (n_all > 0)
        if empty.any():
            where = data.loc[empty, "recording"] if "recording" in data else data.index[empty]
            add("no window with enough speech", ", ".join(sorted(map(str, set(where))))[:200],
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
            skipped = g["term"].eq(_SKIP_TERM)
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


def update_mixed_models_table(path: str | Path, rows: pd.DataFrame, *, analysis: str) -> pd.DataFrame:
    """Replace one analysis's rows of the shared ``mixed_models.csv``, atomically.

    Args:
        path: the table (created when absent).
        rows: new rows; their ``analysis`` column must be empty or equal ``analysis``.
        analysis: the analysis whose rows are replaced (other analyses are kept).

    Returns:
        The table as written.

    Raises:
        ValueError: rows lack interface columns or belong to another analysis.
    """
    if not analysis:
        raise ValueError("update_mixed_models_table: 'analysis' must be a non-empty name")
    rows = rows.copy()
    if "analysis" not in rows:
        rows.insert(0, "analysis", analysis)
    other = sorted(set(rows["analysis"].dropna().astype(str)) - {analysis})
    if other:
        raise ValueError(f"update_mixed_models_table: rows belong to analysis {other}, "
                         f"not {analysis!r}")
    rows["analysis"] = analysis
    missing = [c for c in REQUIRED_MIXED_COLUMNS if c not in rows]
    if missing:
        raise ValueError(f"update_mixed_models_table: rows lack columns {missing} "
                         f"(interface of {Path(path).name}: {list(REQUIRED_MIXED_COLUMNS)})")
    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        old = pd.read_csv(path)
        if "analysis" not in old:
            raise ValueError(f"update_mixed_models_table: {path} has no 'analysis' column; "
                             f"it is not a mixed_models table — move it away")
        old = old[old["analysis"].astype(str) != analysis]
        table = pd.concat([old, rows], ignore_index=True) if len(old) else rows
    else:
        table = rows
    order = [c for c in MIXED_COLUMNS if c in table] + [c for c in table if c not in MIXED_COLUMNS]
    table = table[order].reset_index(drop=True)
    atomic_write_csv(path, table)
    return table


# ------------------------------------------------------------------------------- delta

#: Descriptor-table columns that are bookkeeping, not descriptors.
META_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, "segment", "segment_start_s", "segment_end_s",
                                 "n_windows", "n_voiced_windows", "n_emotion_windows")


def descriptor_columns(descriptors: pd.DataFrame) -> list[str]:
    """Numeric descriptor columns of a descriptor table (everything but ids/bookkeeping)."""
    return [c for c in descriptors.columns if c not in META_COLUMNS
            and pd.api.types.is_numeric_dtype(descriptors[c])]


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


# ----------------------------------------------------------------- paired / level tests

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
        delta: output of :func:`delta_table`.
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
        delta: output of :func:`delta_table` (one segment-averaged value per caregiver).
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
            rows.append({**base, "note": _join(notes, "skipped: need >= 2 levels, "
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
                     "note": _join(notes, rule)})
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


# ------------------------------------------------------------------------- trajectories

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
