"""Primary family under violated assumptions, and its power (issue 17 items 3-5).

**Violations** (default): null cohorts (no effect at all) simulated at the window level
with ``ser.stats.simulate.simulate_windows`` (the study's 2/9/4/8 caregivers, 30
windows per recording unless a scenario changes it), one scenario per violation:

- ``gaussian``: every assumption holds (AR(1) 0.6 within recording);
- ``heavy_tails``: Student t with 3 df for every noise component;
- ``caregiver_variance``: caregivers' within-person SDs differ up to fourfold;
- ``autocorrelation``: AR(1) 0.9 within recording;
- ``unequal_lengths``: recordings of 45 / 90 / 90 / 180 s by level (expert longest);
- ``missing``: 15 % of recordings lost at random.

Each replicate runs what stages 05-07 decide on (``ser.stats.primary.family_pvalues``:
descriptors, time bins, the robust sign-flip / permutation p-values of every primary
hypothesis, Holm over the family) -- no mixed model is fitted, and the 25 cohorts of a
chunk share one descriptor pass, which makes a replicate cost a few tens of ms. Goals: each primary term's false-positive rate (pooled over
outcomes) within 3-7 %, the share of null cohorts with any primary finding <= 5 %.

**Power** (``--power``): effects planted on every outcome for one term at a time
(``care`` = phase, ``level_step`` = level trend, ``care:level_step``, ``care:time``),
on a grid of sizes; power = share of cohorts whose test has ``p < alpha / family size``
(Holm's first step: what a single true effect needs). Reported: the smallest planted
effect with 80 % power by interpolation, and the average estimate it gives in the
outcome's unit (probability, Hz, dB, share).

Results are cached per chunk of replicates under ``results/cache/stats_violations/``
(resumable: finished chunks are skipped), computed in parallel (``--n-jobs``).

    nice .venv/bin/python benchmarks/bench_stats_violations.py [--reps 500] [--n-jobs 2]
    nice .venv/bin/python benchmarks/bench_stats_violations.py --power [--reps 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_name  # noqa: E402

from ser.core import paths  # noqa: E402
from ser.core.atomic import atomic_write_csv  # noqa: E402
from ser.stats import primary, simulate  # noqa: E402
from ser.stats.validation import binomial_ci  # noqa: E402

OUT = paths.results_dir() / "cache" / "stats_violations"
BASE = {"duration_s": 90.0}
SCENARIOS: dict[str, dict] = {
    "gaussian": {},
    "heavy_tails": {"tail_df": 3.0},
    "caregiver_variance": {"caregiver_sd_ratio": 4.0},
    "autocorrelation": {"ar_rho": 0.9},
    "unequal_lengths": {"duration_by_level": (45.0, 90.0, 90.0, 180.0)},
    "missing": {"missing_share": 0.15},
}
#: Simulator term of each primary term, and the unit effect per outcome (simulator units:
#: logit for emotions and speech_ratio, Hz, dB).
SIM_TERM = {"care": "phase", "level_step": "level_trend", "care:level_step": "phase:level_trend",
            "care:time": "phase:time"}
#: Emotion logits get alternating signs: one shift on every label would cancel in the softmax.
UNIT = {"p_angry": 0.5, "p_happy": -0.5, "p_neutral": 0.5, "p_sad": -0.5, "f0_hz": 5.0,
        "energy_db": 1.0, "speech_ratio": 0.25}
GRID = (0.5, 1.0, 1.5, 2.0, 3.0)
CHUNK = 25


def _outcome(feature: str) -> str:
    return feature.split("__")[0]


def run_chunk(scenario: str, start: int, n: int, *, n_resamples: int,
              effects: dict | None = None, tag: str = "") -> pd.DataFrame:
    hyp = primary.load_hypotheses()
    cohorts = []
    for seed in range(start, start + n):  # one table: the descriptors' overhead is paid once
        w = simulate.simulate_windows(seed=seed, effects=effects,
                                      **{**BASE, **SCENARIOS[scenario]})
        for c in ("recording", "caregiver"):
            w[c] = f"{seed}/" + w[c]
        cohorts.append(w.assign(seed=seed))
    r = primary.family_pvalues(pd.concat(cohorts, ignore_index=True), hyp=hyp,
                               n_resamples=n_resamples, cohort="seed")
    r["seed"] = r.pop("cohort").astype(int)
    return r.assign(scenario=scenario, tag=tag)


def _run(jobs: list[tuple[Path, dict]], n_jobs: int) -> None:
    from joblib import Parallel, delayed

    todo = [(p, kw) for p, kw in jobs if not p.exists()]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} chunks cached; running {len(todo)}",
          flush=True)

    def one(path: Path, kw: dict) -> str:
        atomic_write_csv(path, run_chunk(**kw))
        return path.name

    for name in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(one)(p, kw) for p, kw in todo):
        print("done", name, flush=True)


def violations(reps: int, n_jobs: int, n_resamples: int, scenarios: list[str], *,
               summary_only: bool = False) -> str:
    jobs = []  # interleaved, so that what finished covers every scenario
    for start in range(0, reps, CHUNK):
        for sc in scenarios:
            path = OUT / sc / f"r{n_resamples}_{start:05d}_{min(CHUNK, reps - start)}.csv"
            jobs.append((path, dict(scenario=sc, start=start, n=min(CHUNK, reps - start),
                                    n_resamples=n_resamples)))
    if not summary_only:
        _run(jobs, n_jobs)
    rows = []
    for sc in scenarios:
        files = sorted((OUT / sc).glob(f"r{n_resamples}_*.csv"))
        if not files:
            continue
        df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
        df = df[df["seed"] < reps]
        n_coh = df["seed"].nunique()
        row = {"scenario": sc, "cohorts": n_coh}
        for term, g in df.groupby("term", sort=False):
            k, n = int((g["p"] < 0.05).sum()), int(g["p"].notna().sum())
            lo, hi = binomial_ci(k, n)
            worst = g.groupby("feature")["p"].apply(lambda p: float((p < 0.05).mean())).max()
            row[term] = f"{k / n:.1%} [{lo:.1%}, {hi:.1%}] (max {worst:.1%})"
        anyf = df.groupby("seed")["p_adj"].min() < 0.05
        lo, hi = binomial_ci(int(anyf.sum()), len(anyf))
        row["any primary finding (Holm)"] = f"{anyf.mean():.1%} [{lo:.1%}, {hi:.1%}]"
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.to_markdown(index=False)


def power(reps: int, n_jobs: int, n_resamples: int, grid: tuple[float, ...] = GRID) -> str:
    hyp = primary.load_hypotheses()
    jobs = []
    for term, sim_term in SIM_TERM.items():
        for k in grid:
            effects = {(f"p_{o[2:]}" if o.startswith("p_") else o): {sim_term: k * u}
                       for o, u in UNIT.items()}
            for start in range(0, reps, CHUNK):
                n = min(CHUNK, reps - start)
                path = OUT / "power" / f"{term.replace(':', '_x_')}_k{k:g}_r{n_resamples}_{start:05d}_{n}.csv"
                jobs.append((path, dict(scenario="gaussian", start=10_000 + start, n=n,
                                        n_resamples=n_resamples, effects=effects,
                                        tag=f"{term}|{k:g}")))
    _run(jobs, n_jobs)
    df = pd.concat([pd.read_csv(f) for f in sorted((OUT / "power").glob(f"*_r{n_resamples}_*.csv"))],
                   ignore_index=True)
    df = df[df["seed"] < 10_000 + reps]
    df[["pterm", "k"]] = df["tag"].str.split("|", expand=True)
    df = df[df["term"] == df["pterm"]]
    df["k"] = df["k"].astype(float)
    size = primary.family_size(hyp, len(UNIT))
    thr = hyp.alpha / size
    rows = []
    for (term, feature), g in df.groupby(["term", "feature"], sort=False):
        pw = g.groupby("k").agg(power=("p", lambda p: float((p < thr).mean())),
                                est=("statistic", "mean"))
        o = _outcome(feature)
        ks, ps = pw.index.to_numpy(float), pw["power"].to_numpy()
        if ps.max() < 0.8:
            k80, est80 = np.nan, np.nan
        else:
            j = int(np.argmax(ps >= 0.8))
            if j == 0:
                k80 = ks[0]
            else:
                k80 = float(np.interp(0.8, ps[j - 1:j + 1], ks[j - 1:j + 1]))
            est80 = float(np.interp(k80, ks, pw["est"].to_numpy()))
        unit = abs(UNIT.get(o.replace("__mean", ""), np.nan))
        rows.append({"term": term, "outcome": feature,
                     "power by multiple of the unit effect": ", ".join(
                         f"{k:g}: {p:.0%}" for k, p in zip(ks, ps)),
                     "80 % power at (simulator units)": ("> " + f"{ks[-1] * unit:g}"
                                                         if np.isnan(k80) else f"{k80 * unit:.3g}"),
                     "= estimate (outcome unit)": "" if np.isnan(est80) else f"{est80:.3g}"})
    return (f"threshold p < {hyp.alpha} / {size} = {thr:.2g}; {reps} cohorts per point\n\n"
            + pd.DataFrame(rows).to_markdown(index=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--n-resamples", type=int, default=999,
                    help="sign flips / permutations per test (the stages use 9,999)")
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--power", action="store_true")
    ap.add_argument("--grid", type=float, nargs="*", default=list(GRID),
                    help="power: multiples of the unit effects (UNIT) to plant")
    ap.add_argument("--summary-only", action="store_true",
                    help="summarise the cached chunks without running more")
    a = ap.parse_args(argv)
    t0 = time.time()
    n_res = max(a.n_resamples, 1999) if a.power else a.n_resamples
    head = (f"{dt.date.today()} on {cpu_name()} "
            f"({'power' if a.power else 'violations'}, {a.reps} cohorts, "
            f"{n_res} resamples per test)")
    body = (power(a.reps, a.n_jobs, max(a.n_resamples, 1999), tuple(a.grid)) if a.power
            else violations(a.reps, a.n_jobs, a.n_resamples, a.scenarios,
                            summary_only=a.summary_only))
    text = f"{head}\n\n{body}\n\n({time.time() - t0:.0f} s wall)\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / ("power.md" if a.power else "summary.md")).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
