"""Mixed-effects models of the caregiver study and the shared ``mixed_models.csv`` table.

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

:func:`mixed_models_table` fits every feature × model and adds Benjamini–Hochberg FDR
across features (:func:`ser.stats.multiplicity.add_fdr`);
:func:`update_mixed_models_table` replaces one analysis's rows of ``mixed_models.csv``.
``family``, ``p_adj`` and ``adjustment`` say whether a row is a pre-specified primary
hypothesis (decided by a robust test, ``p_model`` keeping the model's own p-value) or
exploratory; :mod:`ser.stats.primary` fills them.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from ser.core.atomic import atomic_write_csv
from ser.data.schema import LEVEL_INDEX, LEVELS, PHASES
from ser.stats.multiplicity import add_fdr

#: Columns of ``mixed_models.csv`` in order (the first 13 are the shared interface).
MIXED_COLUMNS: tuple[str, ...] = (
    "analysis", "feature", "model", "term", "estimate", "ci_low", "ci_high", "p", "p_fdr",
    "n_caregivers", "n_obs", "converged", "note",
    "se", "ddf", "p_chi2", "test", "singular", "estimator", "formula", "group_var",
    "resid_var", "family", "p_adj", "adjustment", "p_model", "test_model",
    "detectable_80",
)
#: The interface columns that every row must have.
REQUIRED_MIXED_COLUMNS: tuple[str, ...] = MIXED_COLUMNS[:13]

#: Default fixed-effects formulas: level as an ordered trend and as categories.
DEFAULT_MODELS: dict[str, str] = {
    "level_trend": "phase * level_trend",
    "level_categories": "phase * level",
}


#: The ``term`` of the single row that reports a skipped fit (reason in its ``note``).
SKIP_TERM = "(skipped)"
#: Optimisers tried in turn. L-BFGS comes last: on boundary fits (a variance at 0) it
#: can report convergence at a point whose likelihood Powell and Nelder–Mead beat.
_FIT_METHODS: tuple[str, ...] = ("bfgs", "powell", "nm", "lbfgs")


def _readable(name: str) -> str:
    """patsy name → readable: ``phase[T.care]:level_trend`` → ``phase[care]:level_trend``."""
    return re.sub(r"\[T\.([^\]]+)\]", r"[\1]", name)


def _formula_vars(formula: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", formula))


def model_frame(df: pd.DataFrame, *, feature: str, group: str, formula_fixed: str,
                nested: str | None, nested_slope: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Typed model frame (no missing values) and notes about what was dropped/kept.

    ``phase`` and ``level`` become categories (control / the lowest present level as
    reference); ``level_trend`` (0..3) is derived from ``level``.

    Returns:
        ``(frame, notes)``: the columns the model needs, rows with missing values
        dropped, and what was dropped or flagged.

    Raises:
        ValueError: ``formula_fixed`` with ``~``, missing columns, unknown levels/phases.
    """
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


def design_matrix(frame: pd.DataFrame,
                  formula_fixed: str) -> tuple[pd.DataFrame, dict[str, list[str]], list[str]]:
    """Design matrix with readable names, columns grouped by term, and aliasing notes.

    Args:
        frame: output of :func:`model_frame`.
        formula_fixed: right-hand side in patsy syntax, e.g. ``"phase * level_trend"``.

    Returns:
        ``(X, terms, notes)``: the estimable columns (``phase[care]`` … ), the columns of
        each term, and a note per column dropped as not estimable.

    Raises:
        ValueError: patsy cannot build the design.
    """
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


def join_notes(*parts: Sequence[str] | str) -> str:
    """Non-empty notes (strings or lists of them) joined by ``"; "``, each once, in order."""
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
    note = join_notes(notes, "one observation per caregiver: caregiver random intercept not "
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
                         note=join_notes(note, "intercept not tested" if is_icpt else "")))
    for t, cols in terms.items():
        if len(cols) > 1:
            R = np.zeros((len(cols), X.shape[1]))
            for k, c in enumerate(cols):
                R[k, list(X.columns).index(c)] = 1.0
            ft = res.f_test(R)
            rows.append(_row(**common, term=t, p=float(np.squeeze(ft.pvalue)),
                             test=f"F({len(cols)}, {res.df_resid:.0f})",
                             note=join_notes(note, f"omnibus test of {len(cols)} coefficients")))
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
            ``phase`` (control/care), ``level`` (levels of :data:`ser.data.schema.LEVELS`)
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
    frame, notes = model_frame(df, feature=feature, group=group, formula_fixed=formula_fixed,
                               nested=nested, nested_slope=nested_slope)
    n_cg, n_obs = frame[group].nunique(), len(frame)
    common = dict(analysis=analysis, feature=feature, model=model, n_caregivers=n_cg,
                  n_obs=n_obs, formula=f"{feature} ~ {formula_fixed} + (1|{group})"
                  + (f" + (1|{group}:{nested})" if nested else "")
                  + (f" + (0+{nested_slope}|{group}:{nested})" if nested_slope else ""))

    def skipped(reason: str) -> pd.DataFrame:
        return pd.DataFrame([_row(**common, term=SKIP_TERM, converged=False,
                                  note=join_notes(notes, f"skipped: {reason}"))])

    y = frame[feature].to_numpy(float)
    if n_cg < 3:
        return skipped(f"{n_cg} caregiver(s) with data; need at least 3")
    spread = float(np.nanstd(y)) if n_obs else 0.0
    if n_obs < 2 or spread <= 1e-12 * max(1.0, float(np.nanmax(np.abs(y)))):
        return skipped("zero variance (the descriptor is constant)")
    X, terms, alias_notes = design_matrix(frame, formula_fixed)
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
                             note=join_notes(notes, fit_notes, "intercept not tested")))
            continue
        p, p_chi2, d, test, lnote = lrt([c])
        rows.append(_row(**common, term=c, **est, p=p, p_chi2=p_chi2, ddf=d, test=test,
                         note=join_notes(notes, fit_notes, lnote)))
    for t, tcols in terms.items():
        if len(tcols) > 1:
            p, p_chi2, d, test, lnote = lrt(tcols)
            rows.append(_row(**common, term=t, p=p, p_chi2=p_chi2, ddf=d, test=test,
                             note=join_notes(notes, fit_notes, lnote,
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

        named = sorted(set().union(*(_formula_vars(fm) for fm in models.values())))
        cols = list(dict.fromkeys([*features, group, "phase", "level", "time", *named]
                                  + ([nested] if nested else [])
                                  + ([nested_slope] if nested_slope else [])))
        small = data[[c for c in cols if c in data.columns]]  # ship only what the fits use
        parts = Parallel(n_jobs=int(n_jobs))(
            delayed(fit_mixed)(small, feature=f, formula_fixed=fm, model=m, **kw)
            for f, m, fm in it)
    out = pd.concat(parts, ignore_index=True)
    return add_fdr(out)


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

