"""Validation by simulation, small version of benchmarks/bench_stats_validation.py:
planted effects are recovered, null tests reject at about 5 %, 95 % CIs cover.

Each calibration check is also run on a deliberately miscalibrated analysis (chi²
reference or normal intervals on a tiny cohort, window-level OLS without the caregiver
random intercept) to show that its bounds are tight enough to fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser.stats import simulate
from ser.stats import validation as V

TREND = {"level_trend": "phase * level_trend"}
NULL_FEATURES = ("f0_hz__median", "energy_db__mean", "speech_ratio")
SIM = {"duration_s": 30.0}  # 10 windows per recording: fast, same caregiver design
EFFECTS = {"f0_hz": {"phase": 8.0, "level_trend": 5.0, "phase:level_trend": -3.0},
           "energy_db": {"phase": 1.5, "level_trend": -1.0, "phase:level_trend": 0.8}}
TRUTH = {"f0_hz__median": {"phase[care]": 8.0, "level_trend": 5.0,
                           "phase[care]:level_trend": -3.0},
         "energy_db__mean": {"phase[care]": 1.5, "level_trend": -1.0,
                             "phase[care]:level_trend": 0.8}}
#: Acceptance regions (about 99.5 % for a calibrated method at these sizes).
FPR_BOUNDS = (0.02, 0.09)        # 360 null tests
COVERAGE_BOUNDS = (0.91, 0.985)  # 240 intervals


@pytest.fixture(scope="module")
def null_fits() -> pd.DataFrame:
    return V.simulate_fits(n_replicates=40, seed=100, features=NULL_FEATURES, models=TREND,
                           sim_kwargs=SIM, progress=False)


@pytest.fixture(scope="module")
def tiny_null_fits() -> pd.DataFrame:
    """One caregiver per level: between-caregiver terms rest on 4 people."""
    return V.simulate_fits(n_replicates=40, seed=300, features=NULL_FEATURES,
                           models={"main": "phase + level_trend"},
                           sim_kwargs={**SIM, "n_per_level": (1, 1, 1, 1)}, progress=False)


@pytest.fixture(scope="module")
def effect_fits() -> pd.DataFrame:
    return V.simulate_fits(n_replicates=40, seed=200, features=tuple(TRUTH), models=TREND,
                           effects=EFFECTS, sim_kwargs=SIM, progress=False)


def _pooled_rate(rates: pd.DataFrame) -> float:
    return float(rates["rejections"].sum() / rates["n"].sum())


def _naive(seeds: range, *, effects: dict | None, features: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for s in seeds:
        w = simulate.simulate_windows(seed=s, effects=effects, **SIM)
        for f in features:
            r = V.naive_window_ols(w, feature=f.split("__")[0]).assign(feature=f)
            rows.append(r[r["term"] != "Intercept"])
    return pd.concat(rows, ignore_index=True).assign(model="naive")


# ------------------------------------------------------------------------- false positives

def test_null_false_positive_rate_is_nominal(null_fits: pd.DataFrame) -> None:
    rates = V.rejection_rates(null_fits, p_columns=("p",))
    assert set(rates["term"]) == {"phase[care]", "level_trend", "phase[care]:level_trend"}
    assert (rates["n"] == 120).all()  # 40 cohorts x 3 independent descriptors
    assert (rates["rate"] <= 0.12).all(), rates  # each test on its own (120 tests)
    assert FPR_BOUNDS[0] <= _pooled_rate(rates) <= FPR_BOUNDS[1], rates
    assert null_fits.loc[null_fits["p"].notna(), "converged"].mean() > 0.95


def test_fpr_bounds_catch_a_model_without_random_intercept() -> None:
    naive = _naive(range(100, 120), effects=None, features=NULL_FEATURES)
    rates = V.rejection_rates(naive, p_columns=("p",))
    assert _pooled_rate(rates) > FPR_BOUNDS[1] + 0.1, rates  # pseudo-replication


def test_fpr_bounds_catch_chi2_on_a_tiny_cohort(tiny_null_fits: pd.DataFrame) -> None:
    lv = tiny_null_fits[tiny_null_fits["term"] == "level_trend"]
    chi2 = V.rejection_rates(lv, p_columns=("p_chi2",))
    small = V.rejection_rates(lv, p_columns=("p",))
    assert chi2["rate"].iloc[0] > FPR_BOUNDS[1] + 0.05, chi2  # liberal
    assert small["rate"].iloc[0] <= FPR_BOUNDS[1], small      # the F reference is not


# -------------------------------------------------------------------------------- coverage

def test_ci_coverage_is_nominal(effect_fits: pd.DataFrame) -> None:
    cov = V.coverage(effect_fits, truth=TRUTH, by=("feature", "term"))
    assert len(cov) == 6 and (cov["n"] == 40).all()
    assert (cov["rate"] >= 0.85).all(), cov
    pooled = V.coverage(effect_fits, truth=TRUTH, by=("model",)).iloc[0]
    assert pooled["n"] == 240
    assert COVERAGE_BOUNDS[0] <= pooled["rate"] <= COVERAGE_BOUNDS[1], cov
    # unbiased: the mean estimate is close to the planted value
    f0 = cov[cov["feature"] == "f0_hz__median"].set_index("term")
    assert f0.loc["phase[care]", "mean_estimate"] == pytest.approx(8.0, abs=2.0)
    assert f0.loc["level_trend", "mean_estimate"] == pytest.approx(5.0, abs=2.0)


def test_coverage_bounds_catch_miscalibrated_intervals(tiny_null_fits: pd.DataFrame) -> None:
    ok = V.coverage(tiny_null_fits, truth={}, by=("model",)).iloc[0]
    z = V.coverage(V.z_intervals(tiny_null_fits), truth={}, by=("model",)).iloc[0]
    assert ok["rate"] >= COVERAGE_BOUNDS[0], ok        # t(ddf) intervals hold up
    assert z["rate"] < COVERAGE_BOUNDS[0] - 0.03, z    # normal intervals do not
    naive = V.coverage(_naive(range(200, 220), effects=EFFECTS, features=tuple(TRUTH)),
                       truth=TRUTH, by=("model",)).iloc[0]
    assert naive["rate"] < COVERAGE_BOUNDS[0] - 0.2, naive


# -------------------------------------------------------------------------------- recovery

def _truth_json(tmp_path, effects: list[dict]) -> str:  # noqa: ANN001
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"effects": effects}))
    return str(path)


def test_recovery_verdicts(tmp_path) -> None:  # noqa: ANN001
    w = simulate.simulate_windows(seed=7, duration_s=60.0,
                                  effects={"f0_hz": {"phase": 20.0},
                                    "speech_ratio": {"level_trend": 1.0}})
    eff = [
        {"feature": "f0_hz", "term": "phase", "value": 20.0, "unit": "Hz", "sign": 1},
        {"feature": "f0_hz", "term": "level", "value": 0.0, "unit": "Hz", "sign": 0},
        {"feature": "speech_ratio", "term": "level", "value": 0.05, "unit": "", "sign": -1},
        {"feature": "energy_db", "term": "phase", "value": 1.0, "unit": "dB", "sign": 1},
        {"feature": "energy_db", "term": "phase:level", "value": None, "unit": "dB",
         "sign": None},
    ]
    truth = V.load_truth(_truth_json(tmp_path, eff))
    assert truth["descriptor"].tolist()[:3] == ["f0_hz__median", "f0_hz__median", "speech_ratio"]
    assert truth["model_term"].tolist()[:3] == ["phase[care]", "level_trend", "level_trend"]
    rec = V.recovery_table(w, truth).set_index(["feature", "term"])
    assert rec.loc[("f0_hz", "phase"), "verdict"] == "recovered"
    assert rec.loc[("f0_hz", "phase"), "ci_low"] < 20.0 < rec.loc[("f0_hz", "phase"), "ci_high"]
    assert rec.loc[("f0_hz", "level"), "verdict"] == "null kept"
    assert rec.loc[("speech_ratio", "level"), "verdict"] == "wrong sign"  # planted +, told -
    assert rec.loc[("energy_db", "phase"), "verdict"] == "missed"         # nothing planted
    assert rec.loc[("energy_db", "phase:level"), "verdict"] == "not checked"
    assert rec["ok"].iloc[:4].tolist() == [1.0, 1.0, 0.0, 0.0] and np.isnan(rec["ok"].iloc[4])


def test_recovery_flags_a_false_positive(tmp_path) -> None:  # noqa: ANN001
    w = simulate.simulate_windows(seed=8, duration_s=60.0, effects={"energy_db": {"phase": 8.0}})
    truth = V.load_truth(_truth_json(tmp_path, [
        {"feature": "energy_db", "term": "phase", "value": 0.0, "unit": "dB", "sign": 0}]))
    assert V.recovery_table(w, truth)["verdict"].tolist() == ["false positive"]


def test_recovery_leaves_quiet_windows_out_of_emotion_descriptors(tmp_path: Path) -> None:
    """A classifier that calls pauses 'happy', with more pauses in care, plants a spurious
    phase effect on p_happy; with min_speech_ratio those windows do not count."""
    w = simulate.simulate_windows(seed=9, duration_s=60.0)
    rng = np.random.default_rng(0)
    quiet = rng.uniform(size=len(w)) < np.where(w["phase"] == "care", 0.5, 0.1)
    w["speech_ratio"] = np.where(quiet, 0.1, 0.9)
    w.loc[quiet, "p_happy"] = 0.95
    truth = V.load_truth(_truth_json(tmp_path, [
        {"feature": "p_happy", "term": "phase", "value": 0.0, "unit": "", "sign": 0}]))
    assert V.recovery_table(w, truth)["verdict"].tolist() == ["false positive"]
    kept = V.recovery_table(w, truth, min_speech_ratio=0.5)
    assert kept["verdict"].tolist() == ["null kept"]
    with pytest.raises(ValueError, match="min_speech_ratio"):
        V.recovery_table(w, truth, min_speech_ratio=2.0)


def test_load_truth_errors(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="demo generator"):
        V.load_truth(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="no 'effects'"):
        V.load_truth({"labels": []})
    with pytest.raises(ValueError, match="unknown term"):
        V.load_truth({"effects": [{"feature": "f0_hz", "term": "time", "value": 1, "sign": 1}]})


def test_oracle_windows_use_true_emotion_shares() -> None:
    w = pd.DataFrame({"recording": ["r1", "r1", "r2"], "start_s": [0.0, 2.0, 0.0],
                      "end_s": [2.0, 4.0, 2.0], "p_happy": 0.9, "p_sad": 0.1})
    seg = pd.DataFrame({"recording": ["r1", "r1", "r1", "r2"],
                        "start_s": [0.0, 1.5, 3.0, 0.0], "end_s": [1.5, 3.0, 4.0, 2.0],
                        "role": ["caregiver", "caregiver", "patient", "pause"],
                        "emotion": ["happy", "sad", "happy", ""]})
    o = V.oracle_windows(w, seg)
    assert o["p_happy"].tolist()[:2] == pytest.approx([0.75, 0.0])
    assert o["p_sad"].tolist()[:2] == pytest.approx([0.25, 1.0])
    assert o.loc[2, ["p_happy", "p_sad"]].isna().all()  # no caregiver speech
    with pytest.raises(ValueError, match="segments lack"):
        V.oracle_windows(w, seg.drop(columns=["role"]))


def test_binomial_ci_and_rates_on_hand_table() -> None:
    lo, hi = V.binomial_ci(10, 200)
    assert lo == pytest.approx(0.02419, abs=1e-4) and hi == pytest.approx(0.09009, abs=1e-4)
    t = pd.DataFrame({"model": "m", "term": ["a"] * 4 + ["b"] * 2,
                      "p": [0.01, 0.2, 0.04, np.nan, 0.5, 0.049], "p_chi2": 0.01})
    r = V.rejection_rates(t).set_index(["term", "p_column"])
    assert r.loc[("a", "p"), "n"] == 3 and r.loc[("a", "p"), "rejections"] == 2
    assert r.loc[("b", "p"), "rate"] == 0.5 and r.loc[("a", "p_chi2"), "n"] == 4
    with pytest.raises(ValueError, match="n_replicates"):
        V.simulate_fits(n_replicates=0, seed=0)


def test_pure_window_outputs_groups_one_emotion_windows_by_phase():
    windows = pd.DataFrame({
        "recording": ["r1", "r1", "r1", "r2", "r2"], "phase": ["control"] * 3 + ["care"] * 2,
        "start_s": [0.0, 1.0, 2.0, 0.0, 1.0], "end_s": [2.0, 3.0, 4.0, 2.0, 3.0],
        "p_happy": [0.9, 0.5, 0.2, 0.7, 0.1], "p_sad": [0.1, 0.5, 0.8, 0.3, 0.9]})
    segments = pd.DataFrame({
        "recording": ["r1", "r1", "r2", "r2"], "start_s": [0.0, 2.0, 0.0, 2.1],
        "end_s": [2.0, 4.0, 2.1, 3.0], "role": ["caregiver", "caregiver", "caregiver", "patient"],
        "emotion": ["happy", "sad", "happy", "sad"]})
    out = V.pure_window_outputs(windows, segments, min_share=0.9)
    got = {(r.emotion, r.phase): (r.n_windows, round(r.p_happy, 3)) for r in out.itertuples()}
    # r1 [1, 3] is half happy, half sad: in neither; r2 [1, 3] is 55 % happy: left out
    assert got == {("happy", "control"): (1, 0.9), ("sad", "control"): (1, 0.2), ("happy", "care"): (1, 0.7)}
    with pytest.raises(ValueError, match="min_share"):
        V.pure_window_outputs(windows, segments, min_share=0.0)
    with pytest.raises(ValueError, match="missing columns"):
        V.pure_window_outputs(windows.drop(columns="phase"), segments)


def test_expected_through_model_applies_the_confusions_to_the_planted_shares():
    truth = pd.DataFrame({
        "feature": ["p_angry", "p_happy", "p_neutral", "p_angry", "p_happy", "p_neutral", "f0_hz"],
        "term": ["phase:level"] * 3 + ["phase"] * 3 + ["phase"],
        "value": [-0.04, 0.10, -0.06, 0.05, 0.05, -0.10, 2.0]})
    # happy heard as angry 40 % of the time; phases pooled by window count
    pure = pd.DataFrame({
        "emotion": ["angry", "happy", "happy", "neutral"], "phase": ["care", "care", "control", "care"],
        "n_windows": [10, 30, 10, 20],
        "p_angry": [0.8, 0.4, 0.4, 0.0], "p_happy": [0.2, 0.5, 0.3, 0.1], "p_neutral": [0.0, 0.1, 0.3, 0.9]})
    out = V.expected_through_model(truth, pure).set_index(["feature", "term"])["expected_through_model"]
    assert list(out.index.get_level_values(0)).count("f0_hz") == 0
    happy = np.array([0.4, (30 * 0.5 + 10 * 0.3) / 40, (30 * 0.1 + 10 * 0.3) / 40])
    conf = np.array([[0.8, 0.2, 0.0], happy, [0.0, 0.1, 0.9]])
    d = np.array([-0.04, 0.10, -0.06])
    np.testing.assert_allclose(out.xs("phase:level", level=1)[["p_angry", "p_happy", "p_neutral"]],
                               d @ conf, atol=1e-12)
    # the fall in angry is cancelled by happy heard as angry: -0.04 * 0.8 + 0.10 * 0.4 > 0
    assert out[("p_angry", "phase:level")] == pytest.approx(0.008)
    # a perfect classifier passes the planted values through
    ident = pure.assign(p_angry=[1.0, 0.0, 0.0, 0.0], p_happy=[0.0, 1.0, 1.0, 0.0],
                        p_neutral=[0.0, 0.0, 0.0, 1.0])
    exact = V.expected_through_model(truth, ident)
    np.testing.assert_allclose(exact["expected_through_model"], exact["value"], atol=1e-12)
