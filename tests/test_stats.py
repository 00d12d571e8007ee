"""Tests of the ser.stats analyses: simulator (simulate), mixed models (mixed), FDR
(multiplicity), delta (deltas), paired and level tests (delta_tests), trajectories
(trajectory) and the problem-data table (problem_data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from ser.data import schema
from ser.stats import (
    delta_tests,
    deltas,
    descriptors,
    mixed,
    multiplicity,
    problem_data,
    simulate,
    trajectory,
)

PLANTED = {"f0_hz": {"phase": 14.0, "level_trend": 20.0},
           "p_happy": {"phase:level_trend": 0.35}}


@pytest.fixture(scope="module")
def planted_desc() -> pd.DataFrame:
    w = simulate.simulate_windows(seed=11, effects=PLANTED)
    return descriptors.recording_descriptors(w, features=["p_happy", "f0_hz", "energy_db"],
                                             stats=("mean", "median", "std"))


@pytest.fixture(scope="module")
def null_desc() -> pd.DataFrame:
    w = simulate.simulate_windows(seed=5, effects=None)
    return descriptors.recording_descriptors(w, features=["p_happy", "f0_hz", "energy_db"],
                                             stats=("mean", "median"))


# ----------------------------------------------------------------------------- simulator

def test_simulator_schema_determinism_and_truth() -> None:
    w = simulate.simulate_windows(seed=3, effects=PLANTED, duration_s=60.0, hop_s=3.0)
    expected = ["recording", "caregiver", "level", "phase", "start_s", "end_s", "p_angry",
                "p_happy", "p_neutral", "p_sad", *descriptors.PROSODY_COLUMNS]
    assert list(w.columns) == expected
    assert w["caregiver"].nunique() == 23 and w["recording"].nunique() == 46
    assert w.groupby("caregiver")["level"].first().value_counts().to_dict() == {
        "beginner": 9, "expert": 8, "intermediate": 4, "untrained": 2}
    assert np.allclose(w[["p_angry", "p_happy", "p_neutral", "p_sad"]].sum(axis=1), 1.0)
    assert w.groupby("recording").size().eq(20).all()
    assert w["f0_hz"].isna().any() and w["f0_hz"].notna().mean() > 0.5
    pd.testing.assert_frame_equal(w, simulate.simulate_windows(seed=3, effects=PLANTED,
                                                               duration_s=60.0, hop_s=3.0))
    assert not w.equals(simulate.simulate_windows(seed=4, effects=PLANTED, duration_s=60.0))
    assert w.attrs["truth"]["effects"]["f0_hz"]["phase"] == 14.0


def test_simulator_plants_the_effect_in_the_right_unit() -> None:
    w = simulate.simulate_windows(seed=0, effects={"energy_db": {"phase": 5.0}}, n_per_level=(0, 30, 0, 0))
    by = w.groupby("phase")["energy_db"].mean()
    assert by["care"] - by["control"] == pytest.approx(5.0, abs=1.0)


@pytest.mark.parametrize(("effects", "match"), [
    ({"p_joy": {"phase": 1.0}}, "unknown feature"),
    ({"f0_hz": {"weekday": 1.0}}, "unknown effect term"),
    ({"f0_hz": {"level[guru]": 1.0}}, "unknown effect term"),
])
def test_simulator_rejects_unknown_effects(effects: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate.simulate_windows(seed=0, effects=effects)


def test_simulator_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_per_level"):
        simulate.simulate_windows(seed=0, n_per_level=(2, 9, 4))


# ---------------------------------------------------------------------------------- FDR

def test_bh_fdr_matches_statsmodels_on_hand_case() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.20, 0.001, 0.04, 0.9])
    ours = multiplicity.bh_fdr(p)
    ref = multipletests(p, method="fdr_bh")[1]
    assert ours == pytest.approx(ref)
    # hand values: sorted p*m/rank then cumulative minimum from the top
    assert ours[4] == pytest.approx(0.007)
    assert ours[0] == pytest.approx(0.035)
    with_nan = multiplicity.bh_fdr(np.r_[p, np.nan])
    assert np.isnan(with_nan[-1]) and with_nan[:-1] == pytest.approx(ref)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        multiplicity.bh_fdr([0.5, 1.5])


def test_holm_matches_statsmodels() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.20, 0.001, 0.04, 0.9])
    assert multiplicity.holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    with_nan = multiplicity.holm(np.r_[p, np.nan])
    assert np.isnan(with_nan[-1]) and with_nan[:-1] == pytest.approx(multiplicity.holm(p))


# ------------------------------------------------------------------------- mixed models

def test_planted_effects_recovered_with_sign_and_significance(planted_desc: pd.DataFrame) -> None:
    t = mixed.fit_mixed(planted_desc, feature="f0_hz__median", formula_fixed="phase * level_trend",
                        model="level_trend").set_index("term")
    assert t.loc["phase[care]", "estimate"] > 0 and t.loc["phase[care]", "p"] < 0.01
    assert t.loc["level_trend", "estimate"] > 0 and t.loc["level_trend", "p"] < 0.01
    assert t.loc["phase[care]", "ci_low"] < 14.0 < t.loc["phase[care]", "ci_high"]
    assert t["converged"].all() and (t["estimator"] == "MixedLM").all()
    assert (t["n_caregivers"] == 23).all() and (t["n_obs"] == 46).all()
    h = mixed.fit_mixed(planted_desc, feature="p_happy__mean", formula_fixed="phase * level_trend")
    h = h.set_index("term")
    assert h.loc["phase[care]:level_trend", "estimate"] > 0
    assert h.loc["phase[care]:level_trend", "p"] < 0.01


def test_null_terms_not_significant(null_desc: pd.DataFrame) -> None:
    t = mixed.mixed_models_table(null_desc, features=["f0_hz__median", "energy_db__mean"],
                                 models={"level_trend": "phase * level_trend"},
                                 analysis="time_invariant", progress=False)
    tested = t[t["p"].notna()]
    assert len(tested) == 6
    assert (tested["p"] > 0.05).all(), tested[["feature", "term", "p"]]


def test_readable_terms_both_codings_and_omnibus(planted_desc: pd.DataFrame) -> None:
    t = mixed.mixed_models_table(planted_desc, features=["f0_hz__median"], analysis="x",
                                 progress=False)
    assert set(t["model"]) == {"level_trend", "level_categories"}
    cat = t[t["model"] == "level_categories"]
    assert {"phase[care]", "level[beginner]", "level[intermediate]", "level[expert]",
            "phase[care]:level[expert]", "level", "phase:level"} <= set(cat["term"])
    omni = cat.set_index("term").loc["level"]
    assert np.isnan(omni["estimate"]) and 0 <= omni["p"] <= 1
    assert "omnibus" in omni["note"]
    assert set(t[t["model"] == "level_trend"]["term"]) == {
        "Intercept", "phase[care]", "level_trend", "phase[care]:level_trend"}
    assert list(t.columns[:13]) == list(mixed.REQUIRED_MIXED_COLUMNS)
    assert t[t["term"] == "Intercept"]["p"].isna().all()


def test_fdr_within_model_and_term_across_features(planted_desc: pd.DataFrame) -> None:
    feats = ["f0_hz__median", "p_happy__mean", "energy_db__mean"]
    t = mixed.mixed_models_table(planted_desc, features=feats,
                                 models={"level_trend": "phase * level_trend"}, analysis="x",
                                 progress=False)
    for _, g in t[t["p"].notna()].groupby("term"):
        assert len(g) == 3
        assert g["p_fdr"].to_numpy() == pytest.approx(multipletests(g["p"], method="fdr_bh")[1])


def test_small_sample_reference_is_more_conservative(planted_desc: pd.DataFrame) -> None:
    f = mixed.fit_mixed(planted_desc, feature="energy_db__mean", formula_fixed="phase * level_trend")
    c = mixed.fit_mixed(planted_desc, feature="energy_db__mean", formula_fixed="phase * level_trend",
                        reference="chi2")
    tested = f["p"].notna()
    assert (f.loc[tested, "p"] >= c.loc[tested, "p"]).all()
    assert (f.loc[tested, "p_chi2"].to_numpy() == pytest.approx(c.loc[tested, "p"].to_numpy()))
    assert ((f["ci_high"] - f["ci_low"]) > (c["ci_high"] - c["ci_low"])).all()
    assert f.set_index("term").loc["level_trend", "ddf"] == 21  # 23 caregivers - 2 between


def test_single_phase_caregiver_kept_with_note_in_models(planted_desc: pd.DataFrame) -> None:
    d = planted_desc[~((planted_desc["caregiver"] == "p005") & (planted_desc["phase"] == "care"))]
    t = mixed.fit_mixed(d, feature="f0_hz__median", formula_fixed="phase * level_trend")
    assert (t["n_obs"] == 45).all() and (t["n_caregivers"] == 23).all()
    assert t["note"].str.contains("p005").all() and t["note"].str.contains("one phase").all()


def test_level_with_one_caregiver_noted(planted_desc: pd.DataFrame) -> None:
    d = planted_desc[planted_desc["caregiver"] != "p001"]  # untrained keeps only p002
    t = mixed.fit_mixed(d, feature="f0_hz__median", formula_fixed="phase * level")
    assert t["note"].str.contains(r"\['untrained'\] have 1 caregiver").all()
    assert "level[expert]" in set(t["term"]) and t["converged"].all()


def test_absent_reference_level_is_noted(planted_desc: pd.DataFrame) -> None:
    d = planted_desc[planted_desc["level"] != "untrained"]
    t = mixed.fit_mixed(d, feature="f0_hz__median", formula_fixed="phase * level")
    assert "level[beginner]" not in set(t["term"])  # beginner became the reference
    assert t["note"].str.contains("reference level is 'beginner'").all()


def test_zero_variance_descriptor_skipped_with_note(planted_desc: pd.DataFrame) -> None:
    d = planted_desc.assign(constant=0.5)
    t = mixed.mixed_models_table(d, features=["constant", "f0_hz__median"],
                                 models={"level_trend": "phase * level_trend"}, analysis="x",
                                 progress=False)
    skipped = t[t["feature"] == "constant"]
    assert len(skipped) == 1 and skipped["term"].iloc[0] == "(skipped)"
    assert "zero variance" in skipped["note"].iloc[0]
    assert not skipped["converged"].iloc[0] and np.isnan(skipped["p"].iloc[0])
    assert (t[t["feature"] == "f0_hz__median"]["term"] == "phase[care]").any()


def test_summarise_notes_one_line_per_fit(planted_desc: pd.DataFrame) -> None:
    d = planted_desc[~((planted_desc["caregiver"] == "p005") & (planted_desc["phase"] == "care"))]
    t = mixed.mixed_models_table(d.assign(constant=1.0), features=["f0_hz__median", "constant"],
                                 models={"level_trend": "phase * level_trend"}, analysis="x",
                                 progress=False)
    notes = mixed.summarise_notes(t).set_index("feature")
    assert list(notes.index) == ["f0_hz__median", "constant"]
    assert notes.loc["f0_hz__median", "note"].count("p005") == 1  # shared note listed once
    assert "intercept not tested" not in notes.loc["f0_hz__median", "note"]
    assert "zero variance" in notes.loc["constant", "note"]


def test_too_few_caregivers_skipped(planted_desc: pd.DataFrame) -> None:
    d = planted_desc[planted_desc["caregiver"].isin(["p001", "p002"])]
    t = mixed.fit_mixed(d, feature="f0_hz__median", formula_fixed="phase")
    assert t["term"].tolist() == ["(skipped)"] and "need at least 3" in t["note"].iloc[0]


def test_non_convergence_is_reported(planted_desc: pd.DataFrame,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from statsmodels.regression.mixed_linear_model import MixedLM

    real_fit = MixedLM.fit

    def never_converges(self, *args, **kwargs):  # noqa: ANN001, ANN202
        res = real_fit(self, *args, **kwargs)
        res.converged = False
        return res

    monkeypatch.setattr(MixedLM, "fit", never_converges)
    t = mixed.fit_mixed(planted_desc, feature="f0_hz__median", formula_fixed="phase")
    assert not t["converged"].any()
    assert t["note"].str.contains("did not converge").all()
    assert t["note"].str.contains("optimiser bfgs did not converge").all()  # all tried
    assert t["estimate"].notna().all()  # still reported, flagged


def test_one_row_per_caregiver_falls_back_to_ols(planted_desc: pd.DataFrame) -> None:
    care = planted_desc[planted_desc["phase"] == "care"]
    t = mixed.fit_mixed(care, feature="f0_hz__median", formula_fixed="level_trend")
    assert (t["estimator"] == "OLS").all()
    assert t["note"].str.contains("random intercept not identifiable").all()
    assert t.set_index("term").loc["level_trend", "p"] < 0.05


def test_nested_variance_component_runs() -> None:
    w = simulate.simulate_windows(seed=2, effects={"energy_db": {"phase:time": 4.0}}, duration_s=120.0,
                                  n_per_level=(2, 3, 2, 3))
    b = descriptors.time_binned(w, features=["energy_db"], time_bins=4)
    b["time"] = b["time"] - 0.5
    t = mixed.fit_mixed(b, feature="energy_db", formula_fixed="phase * time", nested="recording")
    row = t.set_index("term").loc["phase[care]:time"]
    assert row["estimate"] > 0 and row["p"] < 0.05
    assert "(1|caregiver:recording)" in row["formula"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"formula_fixed": "f0 ~ phase"}, "right-hand side"),
    ({"formula_fixed": "phase", "feature": "nope"}, "lack column"),
    ({"formula_fixed": "phase + mystery"}, "cannot build design"),
    ({"formula_fixed": "phase", "reference": "z"}, "reference"),
])
def test_fit_mixed_bad_inputs(planted_desc: pd.DataFrame, kwargs: dict, match: str) -> None:
    kwargs = {"feature": "f0_hz__median", **kwargs}
    with pytest.raises(ValueError, match=match):
        mixed.fit_mixed(planted_desc, **kwargs)


def test_fit_mixed_unknown_level(planted_desc: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown level"):
        mixed.fit_mixed(planted_desc.assign(level="guru"), feature="f0_hz__median",
                        formula_fixed="level")


# ------------------------------------------------------------------ shared table update

def _rows(analysis: str, n: int = 2) -> pd.DataFrame:
    return pd.DataFrame({c: [np.nan] * n for c in mixed.REQUIRED_MIXED_COLUMNS}).assign(
        analysis=analysis, feature=[f"f{i}" for i in range(n)], term="phase[care]")


def test_update_mixed_models_table_replaces_only_its_rows(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "tables" / "mixed_models.csv"
    mixed.update_mixed_models_table(path, _rows("time_dependent", 3), analysis="time_dependent")
    mixed.update_mixed_models_table(path, _rows("delta", 2), analysis="delta")
    mixed.update_mixed_models_table(path, _rows("time_invariant", 4), analysis="time_invariant")
    new = mixed.update_mixed_models_table(path, _rows("delta", 1), analysis="delta")
    on_disk = pd.read_csv(path)
    assert on_disk["analysis"].value_counts().to_dict() == {
        "time_dependent": 3, "time_invariant": 4, "delta": 1}
    assert len(new) == 8
    assert not list(path.parent.glob(".*tmp"))  # atomic write left no temp file
    with pytest.raises(ValueError, match="belong to analysis"):
        mixed.update_mixed_models_table(path, _rows("delta"), analysis="time_invariant")
    with pytest.raises(ValueError, match="lack columns"):
        mixed.update_mixed_models_table(path, _rows("delta").drop(columns=["p_fdr"]),
                                        analysis="delta")
    assert len(pd.read_csv(path)) == 8  # failed updates changed nothing


# -------------------------------------------------------------------------------- delta

def _desc_table() -> pd.DataFrame:
    rows = []
    values = {"a": (2.0, 3.0), "b": (0.0, 0.5), "c": (1e-9, 1.0), "d": (-4.0, -2.0),
              "e": (1.0, 1.5)}
    levels = {"a": "untrained", "b": "beginner", "c": "beginner", "d": "expert", "e": "expert"}
    for cg, (ctrl, care) in values.items():
        for ph, v in (("control", ctrl), ("care", care)):
            rows.append({"recording": f"{cg}_{ph}", "caregiver": cg, "level": levels[cg],
                         "phase": ph, "segment": 0, "x__mean": v, "y__mean": 10 * v + 100})
    rows.append({"recording": "z_control", "caregiver": "z", "level": "expert",
                 "phase": "control", "segment": 0, "x__mean": 1.0, "y__mean": 1.0})
    return pd.DataFrame(rows)


def test_delta_absolute_relative_and_small_denominator_flag() -> None:
    dt = deltas.delta_table(_desc_table(), eps_rule="abs:1e-6").set_index(["feature", "caregiver"])
    a = dt.loc[("x__mean", "a")]
    assert a["delta_abs"] == pytest.approx(1.0) and a["delta_rel"] == pytest.approx(0.5)
    for cg in ("b", "c"):  # |control| <= eps: flagged and empty, never 0
        r = dt.loc[("x__mean", cg)]
        assert r["flag_small_denominator"] and np.isnan(r["delta_rel"])
        assert "not computed" in r["note"] and r["status"] == "ok"
        assert r["delta_abs"] > 0
    d = dt.loc[("x__mean", "d")]  # negative control: sign follows the absolute change
    assert d["delta_abs"] == pytest.approx(2.0) and d["delta_rel"] == pytest.approx(0.5)
    assert not dt.loc[("x__mean", "a"), "flag_small_denominator"]


def test_delta_relative_eps_rule_scales_with_descriptor() -> None:
    dt = deltas.delta_table(_desc_table(), eps_rule="rel:0.5")
    x = dt[(dt["feature"] == "x__mean") & (dt["status"] == "ok")].set_index("caregiver")
    # median |control| over a..e = 1.0 -> eps = 0.5 flags b and c only
    assert x["eps"].iloc[0] == pytest.approx(0.5)
    assert x["flag_small_denominator"].to_dict() == {"a": False, "b": True, "c": True,
                                                     "d": False, "e": False}
    mapped = deltas.delta_table(_desc_table(), eps_rule={"x__mean": 5.0, "y__mean": 0.0})
    assert mapped[(mapped["feature"] == "x__mean") & (mapped["status"] == "ok")][
        "flag_small_denominator"].all()
    with pytest.raises(ValueError, match="eps_rule"):
        deltas.delta_table(_desc_table(), eps_rule="tiny")


def test_single_phase_caregiver_dropped_with_note() -> None:
    dt = deltas.delta_table(_desc_table(), eps_rule=1e-6)
    z = dt[dt["caregiver"] == "z"]
    assert len(z) == 2 and (z["status"] == "dropped").all()
    assert z["note"].str.contains("dropped: no care recording").all()
    assert z["delta_abs"].isna().all()
    wide = deltas.delta_wide(dt)
    assert "z" not in set(wide["caregiver"]) and len(wide) == 5


def test_delta_by_segment_uses_mean_control() -> None:
    d = pd.concat([_desc_table().assign(segment=s) for s in (0, 1)])
    d.loc[(d["segment"] == 1) & (d["phase"] == "care"), "x__mean"] += 1.0
    dt = deltas.delta_table(d, eps_rule=1e-6, by_segment=True, features=["x__mean"])
    a = dt[(dt["caregiver"] == "a")].set_index("segment")
    assert a["delta_abs"].tolist() == pytest.approx([1.0, 2.0])
    avg = deltas.delta_table(d, eps_rule=1e-6, features=["x__mean"])
    assert avg[avg["caregiver"] == "a"]["delta_abs"].tolist() == pytest.approx([1.5])


def test_delta_bad_inputs() -> None:
    with pytest.raises(ValueError, match="06_time_invariant"):
        deltas.delta_table(_desc_table().drop(columns=["phase"]), eps_rule=0.1)
    with pytest.raises(ValueError, match="not in the descriptor table"):
        deltas.delta_table(_desc_table(), eps_rule=0.1, features=["nope"])


# ------------------------------------------------------------- paired and level tests

def test_paired_tests_detect_planted_phase_effect(planted_desc: pd.DataFrame) -> None:
    dt = deltas.delta_table(planted_desc, eps_rule="rel:0.05",
                            features=["f0_hz__median", "energy_db__mean"])
    pt = delta_tests.paired_tests(dt).set_index("feature")
    f0 = pt.loc["f0_hz__median"]
    assert f0["p"] < 0.001 and f0["hedges_g"] > 0 and f0["g_ci_low"] > 0
    assert f0["diff_ci_low"] < f0["mean_diff"] < f0["diff_ci_high"]
    assert f0["n"] == 23 and f0["test"] in ("paired t-test", "Wilcoxon signed-rank")
    assert "Shapiro-Wilk" in f0["note"]
    assert pt["p_fdr"].to_numpy() == pytest.approx(multipletests(pt["p"], method="fdr_bh")[1])


def test_paired_test_rule_switches_to_wilcoxon() -> None:
    rng = np.random.default_rng(1)
    diff = np.r_[rng.normal(0, 0.1, 20), 8.0, 9.0, 10.0]  # heavy outliers: not normal
    ctrl = rng.normal(5, 1, 23)
    dt = pd.DataFrame({"caregiver": [f"c{i}" for i in range(23)], "level": "expert",
                       "segment": 0, "feature": "x", "control": ctrl, "care": ctrl + diff,
                       "status": "ok"})
    row = delta_tests.paired_tests(dt).iloc[0]
    assert row["test"] == "Wilcoxon signed-rank" and row["shapiro_p"] <= 0.05


def test_level_tests_effect_sizes(planted_desc: pd.DataFrame) -> None:
    dt = deltas.delta_table(planted_desc, eps_rule="rel:0.05", features=["p_happy__mean"])
    lt = delta_tests.level_tests(dt, n_boot=200).iloc[0]
    assert lt["k"] == 4 and lt["n"] == 23
    assert 0 <= lt["eta2_ci_low"] <= lt["eta2"] <= lt["eta2_ci_high"] <= 1
    assert lt["anova_p"] < 0.05  # interaction planted: the delta grows with level
    with pytest.raises(ValueError, match="delta_abs"):
        delta_tests.level_tests(dt, value="delta")


def test_eta_squared_ci_properties() -> None:
    lo, hi = delta_tests.eta_squared_ci(0.2, 3, 19)
    assert lo == 0.0 and 0 < hi < 1
    lo, hi = delta_tests.eta_squared_ci(10.0, 3, 19)
    eta = 10.0 * 3 / (10.0 * 3 + 19)
    assert 0 < lo < eta < hi < 1


# --------------------------------------------------------------------------- trajectories

def test_trajectory_summary_one_value_per_caregiver() -> None:
    w = simulate.simulate_windows(seed=4, duration_s=60.0, n_per_level=(1, 3, 2, 2))
    b = descriptors.time_binned(w, features=["f0_hz"], time_bins=5)
    s = trajectory.trajectory_summary(b, features=["f0_hz"], smooth_bins=3)
    assert len(s) == 4 * 2 * 5
    n = s.set_index(["level", "phase"])["n_caregivers"]
    assert n.loc[("beginner", "care")].eq(3).all()
    assert s[s["level"] == "untrained"]["ci_low"].isna().all()  # one caregiver: no band
    ok = s["ci_low"].notna()
    assert ((s.loc[ok, "ci_low"] <= s.loc[ok, "mean"]) & (s.loc[ok, "mean"] <= s.loc[ok, "ci_high"])).all()
    raw = trajectory.trajectory_summary(b, features=["f0_hz"], smooth_bins=1)
    assert not np.allclose(raw["mean"], s["mean"])
    with pytest.raises(ValueError, match="smooth_bins"):
        trajectory.trajectory_summary(b, features=["f0_hz"], smooth_bins=0)


# ------------------------------------------------------------------------ problem report

def test_problem_report_names_each_problem_and_action(planted_desc: pd.DataFrame) -> None:
    d = planted_desc[~((planted_desc["caregiver"] == "p005") & (planted_desc["phase"] == "care"))]
    d = d[d["caregiver"] != "p001"].assign(constant=2.0)  # untrained: one caregiver left
    d.loc[d["caregiver"] == "p010", "p_happy__mean"] = np.nan
    feats = ["f0_hz__median", "constant", "p_happy__mean"]
    fits = mixed.mixed_models_table(d, features=feats, models={"level_trend": "phase * level_trend"},
                                    analysis="x", progress=False)
    fits.loc[fits["feature"] == "f0_hz__median", "converged"] = False  # as if it failed
    delta_rows = deltas.delta_table(d, eps_rule="abs:1e-9", features=feats)
    rep = problem_data.problem_report(d, features=feats, analysis="x", fits=fits, delta=delta_rows)
    assert list(rep.columns) == list(schema.PROBLEM_COLUMNS)
    by: dict[tuple[str, str], str] = {}
    for r in rep.itertuples():
        by[(r.problem, r.where)] = by.get((r.problem, r.where), "") + " | " + r.action
    one_phase = by[("caregiver with one phase", "p005")]
    assert "kept in the mixed models" in one_phase and "dropped from the delta" in one_phase
    assert "kept and flagged" in by[("level with one caregiver", "untrained")]
    assert "not modelled" in by[("zero-variance feature", "constant")]
    assert "left out" in by[("missing values", "p_happy__mean")]
    assert "no estimates" in by[("model skipped", "constant · level_trend")]
    skipped = rep[rep["problem"] == "model skipped"]["detail"].iloc[0]
    assert skipped.startswith("skipped: zero variance")
    assert "unreliable" in by[("model did not converge", "f0_hz__median · level_trend")]
    clean = problem_data.problem_report(planted_desc, features=["f0_hz__median"], analysis="x")
    assert clean.empty


def test_problem_report_counts_windows_left_out_of_emotion_descriptors() -> None:
    d = pd.DataFrame({"recording": ["a_control", "a_care", "b_control"], "caregiver": ["a", "a", "b"],
                      "level": "expert", "phase": ["control", "care", "control"],
                      "n_windows": [10, 10, 8], "n_emotion_windows": [6, 10, 0],
                      "p_happy__mean": [0.2, 0.3, np.nan]})
    rep = problem_data.problem_report(d, features=["p_happy__mean"], analysis="x").set_index("problem")
    quiet = rep.loc["windows with too little speech"]
    assert "left out of the emotion-probability descriptors" in quiet["action"]
    assert quiet["detail"].startswith("12 of 28 windows (42.9 %)")
    assert rep.loc["no window with enough speech", "where"] == "b_control"
    assert "1 of 3 rows" in rep.loc["no window with enough speech", "detail"]
    every = problem_data.problem_report(d.assign(n_emotion_windows=d["n_windows"]).dropna(),
                                        features=["p_happy__mean"], analysis="x")
    assert not every["problem"].str.contains("speech").any()
    assert "n_emotion_windows" not in descriptors.descriptor_columns(d)


def test_problem_report_counts_speech_and_confidence_filters_apart() -> None:
    d = pd.DataFrame({"recording": ["a_control", "a_care", "b_control"], "caregiver": ["a", "a", "b"],
                      "level": "expert", "phase": ["control", "care", "control"],
                      "n_windows": [10, 10, 8], "n_emotion_windows": [6, 7, 0],
                      "n_low_confidence_windows": [1, 3, 8],
                      "p_happy__mean": [0.2, 0.3, np.nan]})
    rep = problem_data.problem_report(d, features=["p_happy__mean"], analysis="x").set_index("problem")
    quiet, unsure = rep.loc["windows with too little speech"], rep.loc["windows with low emotion confidence"]
    assert quiet["detail"].startswith("3 of 28 windows (10.7 %)")  # 10-6-1 + 10-7-3 + 8-0-8
    assert "(min_speech_ratio)" in quiet["action"]
    assert unsure["detail"].startswith("12 of 28 windows (42.9 %); per row 10-100 %")
    assert "(min_top_p)" in unsure["action"]
    assert rep.loc["no window with enough speech and confidence", "where"] == "b_control"
    assert "n_low_confidence_windows" not in descriptors.descriptor_columns(d)
    sure = problem_data.problem_report(d.assign(n_low_confidence_windows=0, n_emotion_windows=[9, 10, 8]),
                                       features=["p_happy__mean"], analysis="x")
    window_rows = sure[sure["problem"].str.startswith(("windows", "no window"))]
    assert window_rows["problem"].tolist() == ["windows with too little speech"]
