"""Primary family (issue 17): robust p-values, weights, study-wise adjustment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ser.stats import descriptors, primary, robust, simulate
from ser.stats.multiplicity import adjust_family, bh_fdr, holm


def test_sign_flip_exact_small_example():
    # flips of (1, 2, 3): only +++ and --- reach |mean| >= 2 -> 2 of 8
    res = robust.sign_flip_test(np.array([1.0, 2.0, 3.0]))
    assert res.exact and res.n_resamples == 8
    assert res.p == pytest.approx(0.25)
    assert res.statistic == pytest.approx(2.0)
    # (1, -1, 2): |mean| >= 2/3 for +-+, ++-? no: sums 4 (+-+), 0 (++-)... enumerate by hand:
    # signs -> sums: +++ 2, ++- -2, +-+ 4, +-- 0, -++ 0, -+- -4, --+ 2, --- -2; |sum| >= 2: 6 of 8
    assert robust.sign_flip_test(np.array([1.0, -1.0, 2.0])).p == pytest.approx(6 / 8)


def _hc2_t(x, y):
    """Slope t with HC2 SE, the textbook way (design matrix, hat matrix)."""
    X = np.column_stack([np.ones(len(x)), x])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    e = y - X @ beta
    inv = np.linalg.inv(X.T @ X)
    h = np.diag(X @ inv @ X.T)
    cov = inv @ (X.T * (e**2 / (1 - h))) @ X @ inv
    return beta[1] / np.sqrt(cov[1, 1])


def test_permutation_slope_exact_small_example():
    import itertools

    y, x = np.array([1.0, 2.0, 3.0, 5.0, 4.0]), np.array([0.0, 1.0, 2.0, 3.0, 3.0])
    res = robust.permutation_slope_test(y, covariate=x)
    assert res.exact and res.n_resamples == 120
    assert res.statistic == pytest.approx(np.polyfit(x, y, 1)[0])
    t_obs = abs(_hc2_t(x, y))
    by_hand = np.mean([abs(_hc2_t(x[list(p)], y)) >= t_obs - 1e-9
                       for p in itertools.permutations(range(5))])
    assert res.p == pytest.approx(by_hand)
    assert res.p < 0.1


def test_monte_carlo_p_is_never_zero():
    res = robust.sign_flip_test(np.full(23, 5.0) + np.arange(23) * 0.01, n_resamples=999, seed=1)
    assert not res.exact and res.p == pytest.approx(1 / 1000)


@pytest.mark.parametrize("kind", ["flip", "perm"])
def test_robust_p_uniform_under_heavy_tailed_heteroscedastic_null(kind):
    rng = np.random.default_rng(7)
    level = np.repeat([0.0, 1.0, 2.0, 3.0], [2, 9, 4, 8])
    ps = []
    for i in range(300):
        sd = np.exp(rng.normal(0, 0.7, 23))  # caregiver-specific variances
        y = rng.standard_t(3, 23) * sd
        if kind == "flip":
            ps.append(robust.sign_flip_test(y, covariate=level, n_resamples=499, seed=i).p)
        else:
            ps.append(robust.permutation_slope_test(y, covariate=level, n_resamples=499,
                                                    seed=i).p)
    ps = np.array(ps)
    assert 0.015 <= np.mean(ps < 0.05) <= 0.10
    assert 0.13 <= np.mean(ps < 0.2) <= 0.27
    assert 0.42 <= np.mean(ps < 0.5) <= 0.58


def test_sign_flip_rejects_a_real_shift():
    rng = np.random.default_rng(3)
    assert robust.sign_flip_test(rng.normal(1.0, 1.0, 23), seed=0).p < 0.01


def test_bad_input_raises():
    with pytest.raises(ValueError, match="missing or infinite"):
        robust.sign_flip_test(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="more than one level"):
        robust.permutation_slope_test(np.ones(5), covariate=np.zeros(5))


def test_adjust_family_counts_untested_hypotheses():
    assert adjust_family([0.01, 0.04], method="holm", family_size=4).tolist() == \
        pytest.approx([0.04, 0.12])
    assert adjust_family([0.01, 0.04], method="holm", family_size=2).tolist() == \
        pytest.approx(holm(np.array([0.01, 0.04])).tolist())
    p = [0.001, 0.02, 0.03]
    assert adjust_family(p, method="bh", family_size=5).tolist() == pytest.approx(
        bh_fdr(p + [1.0, 1.0])[:3].tolist())
    out = adjust_family([0.01, np.nan], method="holm", family_size=3)
    assert out[0] == pytest.approx(0.03) and np.isnan(out[1])
    with pytest.raises(ValueError, match="smaller"):
        adjust_family([0.1, 0.2], method="holm", family_size=1)
    with pytest.raises(ValueError, match="method"):
        adjust_family([0.1], method="bonferroni", family_size=1)


def test_caregiver_pairs_weights_rows_by_windows():
    df = pd.DataFrame({"caregiver": ["a"] * 3 + ["b"] * 2, "level": "expert",
                       "phase": ["control", "control", "care", "control", "care"],
                       "x": [0.0, 10.0, 4.0, 1.0, 2.0], "n_windows": [1, 9, 5, 2, 2]})
    pairs = robust.caregiver_pairs(df, feature="x").set_index("caregiver")
    assert pairs.loc["a", "control"] == pytest.approx(9.0)  # not the unweighted 5.0
    assert pairs.loc["a", "delta"] == pytest.approx(-5.0)
    assert pairs.loc["b", "level_score"] == 3.0
    assert robust.caregiver_pairs(df, feature="x", weight=None).set_index(
        "caregiver").loc["a", "control"] == pytest.approx(5.0)


def test_recording_slopes_are_window_weighted():
    t = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    y = np.array([1.0, 2.0, 2.0, 5.0, 3.0])
    w = np.array([30, 1, 30, 2, 30])
    df = pd.DataFrame({"recording": "r", "caregiver": "a", "level": "expert", "phase": "care",
                       "time": t, "x": y, "n_windows": w})
    slope = robust.recording_slopes(df, feature="x")["slope"].iloc[0]
    assert slope == pytest.approx(np.polyfit(t, y, 1, w=np.sqrt(w))[0])
    assert slope != pytest.approx(np.polyfit(t, y, 1)[0])


def _hyp(**kw):
    base = dict(outcomes=("f0_hz", "energy_db"),
                primary={"time_invariant": ("care", "level_step"), "delta": ("care:level_step",),
                         "time_dependent": ("care:time",)},
                n_permutations=999, seed=3)
    base.update(kw)
    return primary.Hypotheses(**base)


def test_load_hypotheses_checks_the_file(tmp_path):
    hyp = primary.load_hypotheses()  # the project's own file
    assert hyp.multiplicity in ("holm", "bh") and hyp.n_permutations >= 9999
    bad = tmp_path / "h.yaml"
    bad.write_text("outcomes: [f0_hz]\nprimary: {time_invariant: ['care:time']}\n")
    with pytest.raises(ValueError, match="time_dependent only"):
        primary.load_hypotheses(bad)
    bad.write_text("outcomes: [pitch]\nprimary: {time_invariant: [care]}\n")
    with pytest.raises(ValueError, match="outcomes"):
        primary.load_hypotheses(bad)
    with pytest.raises(ValueError, match="not found"):
        primary.load_hypotheses(tmp_path / "absent.yaml")


def test_primary_rows_use_robust_p_and_keep_model_estimates():
    w = simulate.simulate_windows(seed=5, duration_s=30.0,
                                  effects={"f0_hz": {"phase": 15.0}})
    desc = descriptors.recording_descriptors(w, features=["f0_hz", "energy_db"],
                                             stats=["mean", "median"])
    hyp = _hyp()
    feats = primary.primary_features(hyp, desc.columns, descriptors=True)
    assert feats == ["f0_hz__median", "energy_db__mean"]
    rows = primary.primary_model_rows(desc, analysis="time_invariant", hyp=hyp, features=feats)
    assert len(rows) == 4 and set(rows["family"]) == {"primary"}
    f0 = rows[(rows["feature"] == "f0_hz__median") & (rows["term"] == "care")].iloc[0]
    assert f0["p"] < 0.01 and f0["test"].startswith("sign-flip")
    assert f0["ci_low"] < 15.0 < f0["ci_high"] and np.isfinite(f0["p_model"])
    lv = rows[rows["term"] == "level_step"].iloc[0]
    assert lv["test"].startswith("permutation")


def test_family_adjusted_over_stages(tmp_path):
    path = tmp_path / "mixed_models.csv"
    from ser.stats.mixed import update_mixed_models_table

    def rows(analysis, ps, family):
        return pd.DataFrame({"analysis": analysis, "feature": [f"f{i}" for i in range(len(ps))],
                             "model": "m", "term": "t", "estimate": 1.0, "ci_low": 0.0,
                             "ci_high": 2.0, "p": ps, "p_fdr": np.nan, "n_caregivers": 23,
                             "n_obs": 46, "converged": True, "note": "", "family": family})
    hyp = _hyp()
    update_mixed_models_table(path, rows("time_invariant", [0.001, 0.2], "primary"),
                              analysis="time_invariant")
    update_mixed_models_table(path, rows("time_dependent", [0.01, 0.5], np.nan),
                              analysis="time_dependent")
    first = primary.finalise_mixed_models(path, hyp=hyp, family_size=6)
    p1 = first[first["family"] == "primary"]["p_adj"].to_numpy()
    assert p1 == pytest.approx([0.006, 1.0])  # Holm over 6: the 4 untested count as p = 1
    assert (first.loc[first["analysis"] == "time_dependent", "family"] == "exploratory").all()
    update_mixed_models_table(path, rows("delta", [0.004, 0.03], "primary"), analysis="delta")
    table = primary.finalise_mixed_models(path, hyp=hyp, family_size=6)
    prim = table[table["family"] == "primary"]
    expect = adjust_family(prim["p"].to_numpy(float), method="holm", family_size=6)
    assert prim["p_adj"].to_numpy() == pytest.approx(expect)
    assert prim["p_adj"].min() == pytest.approx(0.006)
    assert table["adjustment"].str.contains("Holm over the primary family of 6").sum() == 4


def test_simulated_violations():
    base = simulate.simulate_windows(seed=4, duration_s=60.0)
    w = simulate.simulate_windows(seed=4, duration_s=60.0, tail_df=3.0, caregiver_sd_ratio=4.0,
                                  duration_by_level=(30.0, 60.0, 60.0, 90.0), missing_share=0.2)
    ends = w.groupby("level")["end_s"].max()
    assert ends["untrained"] == 30.0 and ends["expert"] == 90.0
    assert w["recording"].nunique() < base["recording"].nunique()
    # caregiver-specific variability: within-recording SDs of energy spread far wider
    spread = lambda df: df.groupby("caregiver")["energy_db"].std().agg(lambda s: s.max() / s.min())
    assert spread(w) > 1.5 * spread(base)
    assert w.attrs["truth"]["tail_df"] == 3.0
    with pytest.raises(ValueError, match="tail_df"):
        simulate.simulate_windows(seed=1, tail_df=2.0)


def test_detectable_effect_gives_about_80_percent_power():
    rng = np.random.default_rng(11)
    level = np.repeat([0.0, 1.0, 2.0, 3.0], [2, 9, 4, 8])
    alpha = 0.05 / 28
    # with unit SD the detectable mean is about (t_{1-alpha/2} + t_0.8) / sqrt(23)
    mde = np.median([robust.detectable_effect(rng.normal(0, 1, 23), covariate=level,
                                              kind="mean", alpha=alpha) for _ in range(200)])
    assert 0.85 < mde < 1.0
    hits = [robust.sign_flip_test(rng.normal(mde, 1, 23), covariate=level, n_resamples=4999,
                                  seed=i).p <= alpha for i in range(200)]
    assert 0.65 <= np.mean(hits) <= 0.93
    y = rng.normal(0, 1, 23)
    xc = level - level.mean()
    b = xc @ (y - y.mean()) / (xc @ xc)
    s = np.sqrt(np.sum((y - y.mean() - b * xc) ** 2) / 21)
    from scipy import stats as st
    by_hand = (st.t.ppf(1 - alpha / 2, 21) + st.t.ppf(0.8, 21)) * s / np.sqrt(xc @ xc)
    assert robust.detectable_effect(y, covariate=level, kind="slope", alpha=alpha) == \
        pytest.approx(by_hand)
    with pytest.raises(ValueError, match="kind"):
        robust.detectable_effect(np.ones(5), covariate=level[:5], kind="median", alpha=0.05)


def test_family_pvalues_batches_independent_cohorts():
    hyp = _hyp()
    single = [simulate.simulate_windows(seed=s, duration_s=30.0) for s in (1, 2)]
    batch = []
    for s, w in zip((1, 2), single):
        w = w.copy()
        for c in ("recording", "caregiver"):
            w[c] = f"{s}/" + w[c]
        batch.append(w.assign(seed=s))
    both = primary.family_pvalues(pd.concat(batch, ignore_index=True), hyp=hyp,
                                  n_resamples=99, cohort="seed")
    assert len(both) == 2 * primary.family_size(hyp, 2) == 16
    for s, w in zip((1, 2), single):
        alone = primary.family_pvalues(w, hyp=hyp, n_resamples=99)
        mine = both[both["cohort"] == str(s)].reset_index(drop=True)
        assert list(mine["term"]) == list(alone["term"])
        assert mine["statistic"].to_numpy() == pytest.approx(alone["statistic"].to_numpy())
        assert mine["p_adj"].to_numpy() == pytest.approx(
            adjust_family(mine["p"].to_numpy(), method="holm", family_size=8))
