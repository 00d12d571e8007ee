"""The pre-specified primary hypotheses of stages 05-07 and their study-wise correction.

``params/hypotheses.yaml`` (written before any data are seen; :func:`load_hypotheses`)
names the primary outcomes (window features: the emotion outputs, F0, loudness,
speaking share) and, per analysis, the primary terms of one **primary model**:

- ``care`` (coded −½ control, +½ care): care − control, averaged over caregivers;
- ``level_step`` (training level 0..3 centred at the caregivers' mean): change per
  level step, averaged over phases;
- ``care:level_step``: how the care − control difference changes per level step;
- ``care:time`` (stage 05, time centred): how the care − control difference in the
  slope over the session (per recording length) differs.

Each stage fits the primary model (:func:`primary_model_rows`; mixed-model estimates
and 95 % CIs as every other row) but decides on a **robust p-value** from
caregiver-level summaries (:mod:`ser.stats.robust`: sign flipping of care − control
within caregiver, permutation of training levels across caregivers). The rows are
``family = "primary"``; every other row of ``mixed_models.csv`` is ``exploratory``,
with BH across features within analysis × model × term. :func:`finalise_mixed_models`
adjusts the primary family over all stages together (Holm by default: the chance of
any false primary finding stays at ``alpha``; hypotheses of stages not yet run count
as ``p = 1``), and is called by every stage after it writes its rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ser.core import paths
from ser.core.atomic import atomic_write_csv
from ser.data.schema import LEVEL_INDEX
from ser.stats.descriptors import (
    default_features,
    is_model_output,
    recording_descriptors,
    time_binned,
)
from ser.stats.mixed import MIXED_COLUMNS, mixed_models_table
from ser.stats.multiplicity import FAMILY_METHODS, add_fdr, adjust_family
from ser.stats.robust import (
    RobustResult,
    caregiver_pairs,
    detectable_effect,
    permutation_slope_test,
    recording_slopes,
    sign_flip_test,
)

#: ``model`` of the primary rows, and its formula per analysis.
PRIMARY_MODEL = "primary"
PRIMARY_FORMULAS: dict[str, str] = {
    "time_dependent": "care * level_step * time",
    "time_invariant": "care * level_step",
    "delta": "care * level_step",
}
#: Terms a primary hypothesis may name (terms of the primary model with a robust test).
PRIMARY_TERMS: tuple[str, ...] = ("care", "level_step", "care:level_step", "time",
                                  "care:time", "level_step:time", "care:level_step:time")
#: Outcome names of ``params/hypotheses.yaml`` → the descriptor of stages 06/07.
DESCRIPTOR_OF: dict[str, str] = {"f0_hz": "f0_hz__median", "energy_db": "energy_db__mean",
                                 "speech_ratio": "speech_ratio"}
#: The outcome standing for every model output (``p_<label>`` / ``d_<dimension>``).
EMOTIONS = "emotions"
HYPOTHESES_FILE = "hypotheses.yaml"


@dataclass(frozen=True)
class Hypotheses:
    """The primary family as ``params/hypotheses.yaml`` states it.

    Attributes:
        outcomes: window features (``emotions`` = every model output column).
        primary: ``{analysis: terms}`` (analyses ``time_dependent``, ``time_invariant``,
            ``delta``; terms from :data:`PRIMARY_TERMS`).
        multiplicity: ``holm`` or ``bh`` over the whole family.
        alpha: the family's error rate (0-1).
        n_permutations: Monte Carlo sign flips / permutations per test.
        seed: seed of the Monte Carlo draws.
    """

    outcomes: tuple[str, ...]
    primary: Mapping[str, tuple[str, ...]]
    multiplicity: str = "holm"
    alpha: float = 0.05
    n_permutations: int = 9999
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for provenance)."""
        d = asdict(self)
        d["outcomes"] = list(self.outcomes)
        d["primary"] = {k: list(v) for k, v in self.primary.items()}
        return d


def hypotheses_path() -> Path:
    """``params/hypotheses.yaml``: where the primary family is written down."""
    return paths.PARAMS / HYPOTHESES_FILE


def load_hypotheses(path: str | Path | None = None) -> Hypotheses:
    """Read and check the primary family (default ``params/hypotheses.yaml``).

    Raises:
        ValueError: the file is missing or malformed, with what to fix.
    """
    path = Path(path) if path is not None else hypotheses_path()
    if not path.is_file():
        raise ValueError(f"{path}: primary hypotheses file not found (params/{HYPOTHESES_FILE} "
                         f"names the primary family of stages 05-07)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    unknown = sorted(set(raw) - {"outcomes", "primary", "multiplicity", "alpha",
                                 "n_permutations", "seed"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}")
    outcomes = tuple(str(o) for o in raw.get("outcomes") or ())
    bad_out = [o for o in outcomes if o != EMOTIONS and o not in DESCRIPTOR_OF]
    if not outcomes or bad_out:
        raise ValueError(f"{path}: outcomes must be a non-empty list of {EMOTIONS!r}, "
                         f"{sorted(DESCRIPTOR_OF)}; got {list(outcomes)}")
    primary = raw.get("primary") or {}
    if not isinstance(primary, dict) or not primary:
        raise ValueError(f"{path}: 'primary' must map analyses to lists of terms")
    for analysis, terms in primary.items():
        if analysis not in PRIMARY_FORMULAS:
            raise ValueError(f"{path}: unknown analysis {analysis!r} in 'primary'; "
                             f"use {sorted(PRIMARY_FORMULAS)}")
        bad = [t for t in terms or () if t not in PRIMARY_TERMS
               or ("time" in t.split(":")) != (analysis == "time_dependent")]
        if not terms or bad:
            raise ValueError(f"{path}: primary terms {bad or terms} of {analysis!r} not allowed; "
                             f"terms with 'time' belong to time_dependent only, from "
                             f"{list(PRIMARY_TERMS)}")
    hyp = Hypotheses(outcomes=outcomes,
                     primary={a: tuple(str(t) for t in ts) for a, ts in primary.items()},
                     multiplicity=str(raw.get("multiplicity", "holm")),
                     alpha=float(raw.get("alpha", 0.05)),
                     n_permutations=int(raw.get("n_permutations", 9999)),
                     seed=int(raw.get("seed", 0)))
    if hyp.multiplicity not in FAMILY_METHODS:
        raise ValueError(f"{path}: multiplicity must be one of {FAMILY_METHODS}, "
                         f"got {hyp.multiplicity!r}")
    if not 0 < hyp.alpha < 1 or hyp.n_permutations < 99:
        raise ValueError(f"{path}: need 0 < alpha < 1 and n_permutations >= 99; got "
                         f"{hyp.alpha}, {hyp.n_permutations}")
    return hyp


def primary_features(hyp: Hypotheses, columns: Sequence[str], *,
                     descriptors: bool) -> list[str]:
    """The primary outcomes' columns present in a table, in the order of the hypotheses.

    Args:
        hyp: the primary family.
        columns: the table's columns (``windows.csv``/``time_dependent_bins.csv``, or
            ``descriptors.csv`` with ``descriptors=True``).
        descriptors: map outcomes to stage 06's descriptors (``p_<label>__mean``,
            ``f0_hz__median``, ``energy_db__mean``, ``speech_ratio``).
    """
    cols = list(columns)
    out: list[str] = []
    for o in hyp.outcomes:
        if o == EMOTIONS:
            out += [c for c in cols if is_model_output(c)
                    and (c.endswith("__mean") if descriptors else "__" not in c)]
        else:
            name = DESCRIPTOR_OF[o] if descriptors else o
            out += [name] if name in cols else []
    return list(dict.fromkeys(out))


def family_size(hyp: Hypotheses, n_outcomes: int) -> int:
    """Hypotheses in the whole primary family: outcomes × primary terms of all analyses."""
    return int(n_outcomes) * sum(len(t) for t in hyp.primary.values())


def with_primary_covariates(data: pd.DataFrame) -> pd.DataFrame:
    """Add ``care`` (−½ control, +½ care) and ``level_step`` (level 0..3 centred at the
    mean over caregivers) so that the primary model's main effects are averages."""
    out = data.copy()
    out["care"] = np.where(out["phase"].astype(str) == "care", 0.5, -0.5)
    score = out["level"].astype(str).map(LEVEL_INDEX).astype(float)
    per_cg = score.groupby(out["caregiver"].astype(str)).first()
    out["level_step"] = score - float(per_cg.mean())
    return out


def _weight_for(feature: str, data: pd.DataFrame) -> str | None:
    if is_model_output(feature) and "n_emotion_windows" in data:
        return "n_emotion_windows"
    return "n_windows" if "n_windows" in data else None


def robust_test(data: pd.DataFrame, *, feature: str, term: str, n_resamples: int,
                seed: int) -> RobustResult:
    """The robust test of one primary term on one outcome.

    Terms with ``time`` use each recording's window-weighted slope over ``time``
    (:func:`ser.stats.robust.recording_slopes`); the others the window-weighted value
    per caregiver and phase. Then ``care`` (and ``time`` alone: the mean slope) is a
    sign-flip test of the caregivers' mean, terms with ``level_step`` a permutation of
    training levels (HC2-studentised slope).

    Raises:
        ValueError: unknown term, too few caregivers.
    """
    return pairs_test(summaries(data, feature=feature, timed="time" in term.split(":")),
                      term=term, n_resamples=n_resamples, seed=seed)


def summaries(data: pd.DataFrame, *, feature: str, timed: bool) -> pd.DataFrame:
    """Per-caregiver control and care values (:func:`ser.stats.robust.caregiver_pairs`)
    of ``feature``, or of each recording's slope over time with ``timed``; rows are
    weighted by their emotion windows (emotion outputs) or windows."""
    weight = _weight_for(feature, data)
    if timed:
        return caregiver_pairs(recording_slopes(data, feature=feature, weight=weight),
                               feature="slope", weight=None)
    return caregiver_pairs(data, feature=feature, weight=weight)


def pairs_test(pairs: pd.DataFrame, *, term: str, n_resamples: int, seed: int) -> RobustResult:
    """The robust test of ``term`` on per-caregiver summaries from :func:`summaries`.

    Raises:
        ValueError: unknown term, too few caregivers.
    """
    if term not in PRIMARY_TERMS:
        raise ValueError(f"robust_test: unknown primary term {term!r}; use {PRIMARY_TERMS}")
    parts = set(term.split(":"))
    what = "slope over time " if "time" in parts else ""
    if "level_step" in parts:
        values = pairs["delta"] if "care" in parts else pairs["mean"]
        return permutation_slope_test(values.to_numpy(), covariate=pairs["level_score"].to_numpy(),
                                      n_resamples=n_resamples, seed=seed,
                                      what=what + ("care - control" if "care" in parts
                                                   else "mean of both phases"))
    values = pairs["delta"] if "care" in parts else pairs["mean"]
    # no level adjustment: mean(d) is the centred-level estimate, and flipping d itself is
    # exact under "no care effect for anyone" (conservative when effects vary by level)
    return sign_flip_test(values.to_numpy(), n_resamples=n_resamples, seed=seed,
                          what=what + ("care - control" if "care" in parts
                                       else "mean of both phases"))


def detectable(pairs: pd.DataFrame, *, term: str, alpha: float, power: float = 0.8) -> float:
    """Smallest effect of ``term`` detected with ``power`` at two-sided ``alpha``, from the
    caregiver summaries of :func:`summaries` (:func:`ser.stats.robust.detectable_effect`),
    in the unit of the term's estimate."""
    parts = set(term.split(":"))
    values = pairs["delta"] if "care" in parts else pairs["mean"]
    return detectable_effect(values.to_numpy(float), covariate=pairs["level_score"].to_numpy(float),
                             kind="slope" if "level_step" in parts else "mean",
                             alpha=alpha, power=power)


def _seed(hyp: Hypotheses, *parts: str) -> int:
    return (hyp.seed + zlib.crc32(":".join(parts).encode())) % (2**32)


def primary_model_rows(data: pd.DataFrame, *, analysis: str, hyp: Hypotheses,
                       features: Sequence[str], nested: str | None = None,
                       nested_slope: str | None = None, n_jobs: int = 1) -> pd.DataFrame:
    """Fit the primary model and return one row per primary outcome × term.

    Estimates and 95 % CIs are the mixed model's (:func:`ser.stats.mixed.fit_mixed`);
    ``p`` is the robust test's (:func:`robust_test`, described in ``test``), the
    model's likelihood-ratio p-value is kept in ``p_model`` (described in
    ``test_model``). ``detectable_80`` is the smallest effect (the estimate's unit) that
    this cohort detects with 80 % power at Holm's first step (``alpha / family size``),
    from the observed spread of the caregiver summaries (:func:`detectable`): what the
    study could and could not have seen. ``family`` is ``primary``; ``p_adj`` is filled
    by :func:`finalise_mixed_models`.

    Args:
        data: long table of the stage (descriptors, or time bins with ``time`` centred).
        analysis: ``time_dependent``, ``time_invariant`` or ``delta``.
        hyp: the primary family.
        features: the primary outcome columns (:func:`primary_features`).
        nested, nested_slope: variance components of the model (as in ``fit_mixed``).
        n_jobs: worker processes for the fits.

    Returns:
        Rows with :data:`ser.stats.mixed.MIXED_COLUMNS` (empty when the analysis has no
        primary term or there are no outcomes).
    """
    terms = list(hyp.primary.get(analysis, ()))
    if not terms or not features:
        return pd.DataFrame(columns=list(MIXED_COLUMNS))
    if analysis not in PRIMARY_FORMULAS:
        raise ValueError(f"primary_model_rows: unknown analysis {analysis!r}")
    size = family_size(hyp, len(features))
    model_data = with_primary_covariates(data)
    fits = mixed_models_table(model_data, features=list(features),
                              models={PRIMARY_MODEL: PRIMARY_FORMULAS[analysis]},
                              analysis=analysis, nested=nested, nested_slope=nested_slope,
                              progress=False, n_jobs=n_jobs)
    rows = []
    for feature in features:
        fit = fits[fits["feature"] == feature]
        for term in terms:
            hit = fit[fit["term"] == term]
            if len(hit):
                row = hit.iloc[0].to_dict()
            else:
                row = {c: np.nan for c in MIXED_COLUMNS}
                skip = fit["note"].iloc[0] if len(fit) else "no fit"
                row.update(analysis=analysis, feature=feature, model=PRIMARY_MODEL,
                           term=term, converged=False, note=f"model: {skip}")
            row["p_model"], row["test_model"] = row.get("p"), row.get("test")
            try:
                pairs = summaries(data, feature=feature, timed="time" in term.split(":"))
                res = pairs_test(pairs, term=term, n_resamples=hyp.n_permutations,
                                 seed=_seed(hyp, analysis, feature, term))
                row["p"], row["test"] = res.p, res.method
                row["detectable_80"] = detectable(pairs, term=term,
                                                  alpha=hyp.alpha / max(size, 1))
            except ValueError as err:
                row["p"], row["test"] = np.nan, ""
                row["note"] = "; ".join(s for s in (str(row.get("note") or ""),
                                                    f"robust test not possible: {err}")
                                        if s and s != "nan")
            row["family"] = "primary"
            rows.append(row)
    out = add_fdr(pd.DataFrame(rows))  # p_fdr of the robust p-values (the fits' was of p_model)
    return out[[c for c in MIXED_COLUMNS if c in out] + [c for c in out if c not in MIXED_COLUMNS]]


def label_families(table: pd.DataFrame, *, hyp: Hypotheses, family_size: int) -> pd.DataFrame:
    """Fill ``family``, ``p_adj`` and ``adjustment`` of a ``mixed_models.csv`` table.

    Primary rows (``family == "primary"``) of every analysis are adjusted together by
    :func:`ser.stats.multiplicity.adjust_family` over ``family_size`` hypotheses;
    every other row is ``exploratory`` with ``p_adj = p_fdr`` (BH within analysis ×
    model × term).
    """
    out = table.copy()
    fam = out["family"] if "family" in out else pd.Series(np.nan, index=out.index)
    primary = fam.astype(str).eq("primary")
    out["family"] = np.where(primary, "primary", "exploratory")
    out["p_adj"] = pd.to_numeric(out.get("p_fdr"), errors="coerce")
    out["adjustment"] = "BH across features within analysis x model x term (exploratory)"
    n_primary = int(primary.sum())
    if n_primary:
        size = max(int(family_size), n_primary)
        out.loc[primary, "p_adj"] = adjust_family(
            pd.to_numeric(out.loc[primary, "p"], errors="coerce").to_numpy(float),
            method=hyp.multiplicity, family_size=size)
        out.loc[primary, "adjustment"] = (f"{'Holm' if hyp.multiplicity == 'holm' else 'BH'} "
                                          f"over the primary family of {size} hypotheses "
                                          f"(stages 05-07; untested count as p = 1)")
    return out


def finalise_mixed_models(path: str | Path, *, hyp: Hypotheses, family_size: int) -> pd.DataFrame:
    """Relabel and re-adjust the whole ``mixed_models.csv`` after a stage wrote its rows.

    Returns:
        The table as written (atomically).

    Raises:
        ValueError: the table is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"finalise_mixed_models: {path} not found; write the stage's rows "
                         f"first (ser.stats.mixed.update_mixed_models_table)")
    table = label_families(pd.read_csv(path), hyp=hyp, family_size=family_size)
    order = [c for c in MIXED_COLUMNS if c in table] + [c for c in table if c not in MIXED_COLUMNS]
    table = table[order]
    atomic_write_csv(path, table)
    return table


def family_pvalues(windows: pd.DataFrame, *, hyp: Hypotheses, n_resamples: int | None = None,
                   seed: int = 0, time_bins: int = 10, min_speech_ratio: float = 0.2,
                   min_top_p: float = 0.0, cohort: str | None = None) -> pd.DataFrame:
    """Every primary hypothesis's robust p-value from a window table, without model fits.

    What stages 05-07 decide on, in one cheap pass (the fast path of the violation and
    power benchmarks): stage 06's per-recording descriptors, stage 05's time bins (time
    as a fraction of the recording), then :func:`robust_test` per outcome × term, and
    ``p_adj`` by the family's rule over the whole family.

    Args:
        windows: a ``windows.csv`` table.
        hyp: the primary family.
        n_resamples: sign flips / permutations per test (default ``hyp.n_permutations``).
        seed: seed of the draws (each cohort adds its own label).
        time_bins, min_speech_ratio, min_top_p: as stages 05 and 06.
        cohort: optional column of ``windows`` naming independent cohorts (their
            caregiver and recording ids must differ): the descriptors are computed once
            for all, the tests and the adjustment per cohort (simulation batches).

    Returns:
        ``analysis, feature, term, statistic, p, p_adj`` (+ ``cohort``), one row per
        hypothesis (and cohort).
    """
    n_resamples = int(n_resamples or hyp.n_permutations)
    cohort_of = (windows.drop_duplicates("caregiver").set_index("caregiver")[cohort].astype(str)
                 if cohort else None)
    tables: dict[bool, pd.DataFrame] = {}
    cache: dict[tuple[bool, str], pd.DataFrame] = {}
    rows = []
    for analysis, terms in hyp.primary.items():
        timed = analysis == "time_dependent"
        if timed not in tables:
            if timed:
                tables[timed] = time_binned(
                    windows, features=primary_features(hyp, windows.columns, descriptors=False),
                    time_bins=time_bins, min_speech_ratio=min_speech_ratio, min_top_p=min_top_p)
            else:
                tables[timed] = recording_descriptors(
                    windows, features=default_features(windows), stats=["mean", "median"],
                    min_speech_ratio=min_speech_ratio, min_top_p=min_top_p)
        data = tables[timed]
        feats = primary_features(hyp, data.columns, descriptors=not timed)
        for feature in feats:
            if (timed, feature) not in cache:
                cache[(timed, feature)] = summaries(data, feature=feature, timed=timed)
            everyone = cache[(timed, feature)]
            groups = (everyone.groupby(everyone["caregiver"].map(cohort_of), sort=False)
                      if cohort_of is not None else [("", everyone)])
            for label, pairs in groups:
                for term in terms:
                    try:
                        res = pairs_test(pairs, term=term, n_resamples=n_resamples,
                                         seed=_seed(hyp, str(seed), str(label), analysis,
                                                    feature, term))
                        stat, p = res.statistic, res.p
                    except ValueError:
                        stat, p = np.nan, np.nan
                    rows.append({"cohort": label, "analysis": analysis, "feature": feature,
                                 "term": term, "statistic": stat, "p": p})
    out = pd.DataFrame(rows, columns=["cohort", "analysis", "feature", "term", "statistic", "p"])
    out["p_adj"] = np.nan
    for _, idx in out.groupby("cohort", sort=False).groups.items():
        out.loc[idx, "p_adj"] = adjust_family(out.loc[idx, "p"].to_numpy(float),
                                              method=hyp.multiplicity, family_size=len(idx))
    return out if cohort else out.drop(columns="cohort")
