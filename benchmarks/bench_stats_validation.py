"""Validation of the statistics by simulation (issue 5, item 7); prints the figures.

(a) Demo recovery: on a demo ``windows.csv`` and its ``truth.json``, every planted
    effect (sign ±1) must be recovered with the right sign and ``p_fdr < 0.05``, and the
    planted nulls (sign 0) must not be significant. Checked twice when the demo's
    ground-truth ``segments.csv`` is there: with the model's emotion probabilities
    (statistics *through* the classifier) and with the true emotion shares per window
    (the statistics alone). Emotion descriptors use the windows with
    ``speech_ratio >= --min-speech-ratio`` (default: stage 06's ``min_speech_ratio``);
    with a positive value the model is also shown on every window, for contrast.
(b) Null cohorts: ``--n-null`` cohorts simulated at the window-table level without any
    effect (``ser.stats.simulate.simulate_windows``, the study's 2/9/4/8 design, 120 windows per
    recording), three independent descriptors each, both models of stage 06; the
    false-positive rate of the phase and level tests must lie in 5 % ± 2 %. Shown with
    exact binomial 95 % CIs, next to the asymptotic chi² reference and a window-level
    OLS without caregiver random intercept (the miscalibrated analyses).
(c) Coverage: ``--n-coverage`` cohorts with planted effects on F0 and energy; the 95 %
    CIs must cover the planted values in 93–97 % of replicates (next to normal-quantile
    CIs and the window-level OLS).

    .venv/bin/python benchmarks/bench_stats_validation.py \\
        [--windows results/tables/windows.csv] [--truth data/demo/truth.json] \\
        [--min-speech-ratio X] [--n-null 200] [--n-coverage 200] [--n-jobs 2] [--out DIR]

``--n-null 0`` skips (b) and ``--n-coverage 0`` skips (c).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ser.core import paths
from ser.run import params as P
from ser.stats import mixed, simulate
from ser.stats import validation as V

#: Planted effects of the coverage cohorts (Hz and dB; level_trend per level step).
COVERAGE_EFFECTS: dict[str, dict[str, float]] = {
    "f0_hz": {"phase": 8.0, "level_trend": 5.0, "phase:level_trend": -3.0},
    "energy_db": {"phase": 1.5, "level_trend": -1.0, "phase:level_trend": 0.8},
}
NULL_FEATURES = ("f0_hz__median", "energy_db__mean", "speech_ratio")
#: The tests the issue calls "the main phase and level tests".
MAIN_TESTS = {("level_trend", "phase[care]"), ("level_trend", "level_trend"),
              ("level_categories", "phase[care]"), ("level_categories", "level")}


def descriptor_truth(effects: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Planted window effects → true coefficients of both models on the descriptors."""
    out: dict[str, dict[str, float]] = {}
    for feat, eff in effects.items():
        ph, lt, ia = eff.get("phase", 0.0), eff.get("level_trend", 0.0), eff.get("phase:level_trend", 0.0)
        t = {"phase[care]": ph, "level_trend": lt, "phase[care]:level_trend": ia}
        for k, lv in enumerate(("beginner", "intermediate", "expert"), start=1):
            t[f"level[{lv}]"] = lt * k
            t[f"phase[care]:level[{lv}]"] = ia * k
        out[V.descriptor_for(feat)] = t
    return out


def pct(x: float) -> str:
    return f"{100 * x:5.1f} %"


def naive_rates(n: int, *, seed: int, effects: dict | None, truth: dict | None) -> pd.DataFrame:
    """Window-level OLS without random intercept on the same kind of cohorts."""
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(seed, seed + n):
            w = simulate.simulate_windows(seed=s, effects=effects)
            for f in (NULL_FEATURES if truth is None else ("f0_hz", "energy_db")):
                col = f.split("__")[0]
                r = V.naive_window_ols(w, feature=col)
                r["feature"] = V.descriptor_for(col)
                r["replicate"] = s
                rows.append(r)
    out = pd.concat(rows, ignore_index=True)
    return out[out["term"] != "Intercept"]


def part_b(a: argparse.Namespace, out: Path | None) -> bool:
    """(b) false-positive rate on null cohorts; True when the main tests are in 3-7 %."""
    ok = True
    t0 = time.perf_counter()
    print(f"\n=== (b) {a.n_null} null cohorts × {len(NULL_FEATURES)} descriptors "
          f"({', '.join(NULL_FEATURES)}), models {dict(mixed.DEFAULT_MODELS)}")
    null = V.simulate_fits(n_replicates=a.n_null, seed=10_000 + a.seed, features=NULL_FEATURES,
                           n_jobs=a.n_jobs, progress=False)
    rates = V.rejection_rates(null, alpha=0.05)
    naive = naive_rates(a.n_naive, seed=10_000 + a.seed, effects=None, truth=None)
    naive_r = V.rejection_rates(naive.assign(model="window OLS, no random intercept"),
                                p_columns=("p",))
    show = pd.concat([rates, naive_r], ignore_index=True)
    show["main"] = [("*" if (m, t) in MAIN_TESTS else "") for m, t in zip(show["model"], show["term"])]
    show["in 3-7 %"] = [("yes" if 0.03 <= r <= 0.07 else "NO") if pc == "p" and m != "window OLS, no random intercept" else ""
                        for r, pc, m in zip(show["rate"], show["p_column"], show["model"])]
    for c in ("rate", "ci_low", "ci_high"):
        show[c] = show[c].map(pct)
    print(show.to_string(index=False))
    is_main = np.array([(m, t) in MAIN_TESTS for m, t in zip(rates["model"], rates["term"])])
    main_rows = rates[(rates["p_column"] == "p").to_numpy() & is_main]
    k, n = int(main_rows["rejections"].sum()), int(main_rows["n"].sum())
    lo, hi = V.binomial_ci(k, n)
    print(f"main phase and level tests pooled: {k}/{n} = {pct(k / n)} (95 % CI {pct(lo)} – {pct(hi)})")
    ok &= bool(((main_rows["rate"] >= 0.03) & (main_rows["rate"] <= 0.07)).all())
    conv = null.groupby("model")["converged"].mean()
    print("fits converged: " + ", ".join(f"{m} {pct(v)}" for m, v in conv.items()))
    if out:
        null.to_csv(out / "null_fits.csv", index=False)
        show.to_csv(out / "null_rates.csv", index=False)
    print(f"(b) took {time.perf_counter() - t0:.1f} s")
    return ok


def part_c(a: argparse.Namespace, out: Path | None) -> bool:
    """(c) CI coverage with planted effects; True when pooled coverage is in 93-97 %."""
    ok = True
    t0 = time.perf_counter()
    truth_d = descriptor_truth(COVERAGE_EFFECTS)
    print(f"\n=== (c) {a.n_coverage} cohorts with planted effects {COVERAGE_EFFECTS}: "
          f"95 % CI coverage")
    fits = V.simulate_fits(n_replicates=a.n_coverage, seed=20_000 + a.seed,
                           features=("f0_hz__median", "energy_db__mean"),
                           effects=COVERAGE_EFFECTS, n_jobs=a.n_jobs, progress=False)
    cov = V.coverage(fits, truth=truth_d, by=("model", "feature", "term"))
    cov_term = V.coverage(fits, truth=truth_d, by=("model", "term"))
    cov_all = V.coverage(fits, truth=truth_d, by=("model",))
    cov_z = V.coverage(V.z_intervals(fits), truth=truth_d, by=("model",))
    naive = naive_rates(a.n_naive, seed=20_000 + a.seed, effects=COVERAGE_EFFECTS, truth=truth_d)
    cov_naive = V.coverage(naive.assign(model="window OLS, no random intercept"), truth=truth_d,
                           by=("model",))
    for tab in (cov, cov_term):
        tab["in 93-97 %"] = np.where((tab["rate"] >= 0.93) & (tab["rate"] <= 0.97), "yes", "NO")
    fmt = cov.copy()
    for c in ("rate", "ci_low", "ci_high"):
        fmt[c] = fmt[c].map(pct)
    print(fmt.round(3).to_string(index=False))
    print("\npooled per model and term:")
    fmt = cov_term.copy()
    for c in ("rate", "ci_low", "ci_high"):
        fmt[c] = fmt[c].map(pct)
    print(fmt[["model", "term", "n", "covered", "rate", "ci_low", "ci_high", "in 93-97 %"]].to_string(index=False))
    print("\npooled per model (t(ddf) CIs as reported | normal-quantile CIs | window OLS):")
    for (_, r), (_, z) in zip(cov_all.iterrows(), cov_z.iterrows(), strict=True):
        print(f"  {r['model']:<18} {r['covered']}/{r['n']} = {pct(r['rate'])} "
              f"(95 % CI {pct(r['ci_low'])} – {pct(r['ci_high'])})  |  z: {pct(z['rate'])}")
    for _, r in cov_naive.iterrows():
        print(f"  {r['model']}: {r['covered']}/{r['n']} = {pct(r['rate'])}")
    ok &= bool(((cov_all["rate"] >= 0.93) & (cov_all["rate"] <= 0.97)).all())
    if out:
        fits.to_csv(out / "coverage_fits.csv", index=False)
        cov.to_csv(out / "coverage.csv", index=False)
    print(f"(c) took {time.perf_counter() - t0:.1f} s")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", default=str(paths.tables_dir() / "windows.csv"))
    ap.add_argument("--truth", default=str(paths.demo_dir() / "truth.json"))
    ap.add_argument("--segments", default=None,
                    help="ground-truth segments (default: cohort/segments.csv next to truth.json)")
    ap.add_argument("--min-speech-ratio", type=float, default=None,
                    help="emotion descriptors from windows with at least this speech ratio "
                         "(default: params/06_time_invariant.yaml)")
    ap.add_argument("--n-null", type=int, default=200, help="null cohorts for (b); 0 skips (b)")
    ap.add_argument("--n-coverage", type=int, default=200,
                    help="planted-effect cohorts for (c); 0 skips (c)")
    ap.add_argument("--n-naive", type=int, default=100, help="cohorts for the naive OLS rows")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for the CSV tables (optional)")
    a = ap.parse_args()
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    out = Path(a.out) if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; {dt.datetime.now().isoformat(timespec='minutes')}")
    verdicts_ok = True

    # ---------------------------------------------------------------- (a) recovery
    print("\n=== (a) demo cohort: planted effects recovered? (descriptor ~ phase * level_trend "
          "+ (1|caregiver), BH-FDR across descriptors per term, alpha 0.05)")
    wpath, tpath = Path(a.windows), Path(a.truth)
    msr = (float(P.load_stage_params("06_time_invariant")["min_speech_ratio"])
           if a.min_speech_ratio is None else a.min_speech_ratio)
    if wpath.is_file() and tpath.is_file():
        t0 = time.perf_counter()
        truth = V.load_truth(tpath)
        windows = pd.read_csv(wpath)
        seg = Path(a.segments) if a.segments else tpath.parent / "cohort" / "segments.csv"
        segments = pd.read_csv(seg) if seg.is_file() else None
        variants = {"model": (windows, msr)}
        if msr > 0:
            variants["model, every window"] = (windows, 0.0)
        if segments is not None:
            variants["oracle"] = (V.oracle_windows(windows, segments), msr)
        kept = float(windows["speech_ratio"].ge(msr).mean()) if "speech_ratio" in windows else 1.0
        print(f"windows with speech_ratio >= {msr:g}: {100 * kept:.1f} % of {len(windows)}")
        recs = {}
        for name, (w, m) in variants.items():
            rec = recs[name] = V.recovery_table(w, truth, n_jobs=a.n_jobs, min_speech_ratio=m)
            what = ("true emotion shares per window (segments.csv)" if name == "oracle"
                    else "emotion probabilities from the trained model")
            print(f"\n-- {name}: {what}; min_speech_ratio {m:g}; {wpath}")
            show = rec[["feature", "term", "sign", "value", "unit", "estimate", "ci_low",
                        "ci_high", "p_fdr", "verdict"]].copy()
            for c in ("estimate", "ci_low", "ci_high"):
                show[c] = show[c].map(lambda v: f"{v:.4g}")
            show["p_fdr"] = show["p_fdr"].map(lambda v: f"{v:.2g}")
            print(show.to_string(index=False))
            checked = rec[rec["ok"].notna()]
            planted = checked[checked["sign"] != 0]
            nulls = checked[checked["sign"] == 0]
            print(f"planted effects recovered: {int(planted['ok'].sum())}/{len(planted)}; "
                  f"planted nulls kept: {int(nulls['ok'].sum())}/{len(nulls)}")
            if out:
                rec.to_csv(out / f"recovery_{name.replace(', ', '_').replace(' ', '_')}.csv",
                           index=False)
            if name == "oracle":
                verdicts_ok &= bool(checked["ok"].all())
        if segments is not None:
            pure = V.pure_window_outputs(windows, segments, min_share=0.9)
            print("\n-- model output on windows that are >= 90 % caregiver speech of one true emotion "
                  "(mean p per phase; a classifier that hears the phases alike gives equal rows)")
            print(pure.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
            if out:
                pure.to_csv(out / "pure_window_outputs.csv", index=False)
            exp = V.expected_through_model(truth, pure).merge(
                recs["model"][["feature", "term", "estimate", "verdict"]], on=["feature", "term"])
            print("\n-- planted emotion effects through the classifier's confusions: expected "
                  "= planted share changes x the mean p on pure windows above (pauses and the "
                  "patient's voice left out); an expected value near 0 cannot be recovered "
                  "through this classifier")
            print(exp.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            if out:
                exp.to_csv(out / "expected_through_model.csv", index=False)
        print(f"(a) took {time.perf_counter() - t0:.1f} s")
    else:
        print(f"skipped: {wpath} or {tpath} missing (run `ser run --profile demo --to 04`)")

    # ---------------------------------------------------------------- (b) null FPR
    if a.n_null > 0:
        verdicts_ok &= part_b(a, out)
    else:
        print("\n=== (b) skipped (--n-null 0)")

    # ---------------------------------------------------------------- (c) coverage
    if a.n_coverage > 0:
        verdicts_ok &= part_c(a, out)
    else:
        print("\n=== (c) skipped (--n-coverage 0)")

    wall = time.perf_counter() - t_all
    print(f"\nwall time {wall:.1f} s ({wall / 60:.1f} min) with n_jobs={a.n_jobs}; "
          f"criteria {'MET' if verdicts_ok else 'NOT MET'} (oracle recovery, main-test FPR "
          f"in 3-7 %, pooled coverage in 93-97 %; skipped parts count as met)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
