"""EmoDB leave-one-speaker-out: fusion, estimators and feature selection, 7 and 4 classes.

Issue 14, item 6 (goal: UAR >= 0.90 on 7 classes without external weights). Every variant
is evaluated by 10-fold leave-one-speaker-out; in each outer fold every hyper-parameter
(SVM ``C`` / RBF ``gamma``, logistic-regression ``C``, ensemble weights) is chosen by a
speaker-grouped inner CV over the 9 training speakers, and feature selection
(``select_k``: ANOVA F on the training rows of every fit) is refitted inside every inner
and outer fit: nothing is tuned on the held-out speaker.

Variants (``--variants``; all with per-speaker normalisation unless ``--speaker-norm off``):

- ``<set>+<estimator>[+k<K>]``: one feature table and one estimator, e.g.
  ``compare+svm_linear``, ``compare+logreg``, ``compare+svm_linear+k2000``. ``<set>`` is a
  feature set of :data:`ser.models.classical.features.FEATURE_SETS`, or ``fusion`` (early
  fusion: ComParE, eGeMAPS and MFCC statistics side by side, 6,761 values).
- ``late:<member>,<member>,...``: late fusion, the probability ensemble of the members
  (``evaluate_loso_ensemble``, weights chosen by inner CV on the training speakers).
- ``pick``: always added; in each outer fold, the variant with the best *inner* UAR (on the
  training speakers) predicts the held-out speaker. This is the nested answer to "which
  variant is best", free of the optimism of reading the best row off the table.

Per-speaker normalisation is transductive (the test speaker's own unlabelled audio gives
its mean and SD); see ``bench_emodb_loso.py``.

    .venv/bin/python benchmarks/bench_emodb_fusion.py [--classes 7 4] [--variants ...]
        [--cache-dir DIR] [--out-dir DIR] [--n-jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_tables import extract_aligned  # noqa: E402
from machine import cpu_name  # noqa: E402

from ser.core import paths  # noqa: E402
from ser.data import corpora  # noqa: E402
from ser.models.classical import ensemble, estimator, features  # noqa: E402
from ser.train import classical_loso  # noqa: E402

#: EmoDB's 7 classes and the study's 4.
LABELS = {7: ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"),
          4: ("angry", "happy", "neutral", "sad")}
#: Members of the early fusion, in column order.
FUSION = ("compare", "egemaps", "mfcc_stats")
DEFAULT_VARIANTS = (
    "compare+svm_linear", "compare+svm_rbf", "compare+logreg",
    "fusion+svm_linear", "fusion+logreg",
    "compare+svm_linear+k2000", "fusion+svm_linear+k2000",
    "late:compare+svm_linear,egemaps+svm_rbf,mfcc_stats+svm_rbf",
    "late:compare+svm_linear,compare+logreg,mfcc_stats+svm_rbf",
)


def parse_single(spec: str) -> tuple[str, str, int | None]:
    """``<set>+<estimator>[+k<K>]`` → ``(set, estimator, select_k)``."""
    parts = spec.split("+")
    if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].startswith("k")):
        raise SystemExit(f"--variants: {spec!r} must be <set>+<estimator>[+k<K>]")
    fs, est = parts[0], parts[1]
    if fs != "fusion" and fs not in features.FEATURE_SETS or est not in estimator.ESTIMATORS:
        raise SystemExit(f"--variants: {spec!r}: sets fusion, {features.FEATURE_SETS}; "
                         f"estimators {estimator.ESTIMATORS}")
    return fs, est, int(parts[2][1:]) if len(parts) == 3 else None


def fused(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Early fusion: the tables of :data:`FUSION` side by side, columns prefixed by their set."""
    return pd.concat([tables[fs].add_prefix(f"{fs}:") for fs in FUSION], axis=1)


def run_variant(spec: str, tables: dict[str, pd.DataFrame], y: np.ndarray, spk: np.ndarray, *,
                norm: bool, inner_folds: int, seed: int, n_jobs: int) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """``(per_fold, overall, predictions)`` of one variant (see the module docstring)."""
    if spec.startswith("late:"):
        members = [ensemble.Member(fs, est, norm, select_k=k)
                   for fs, est, k in (parse_single(m) for m in spec.removeprefix("late:").split(","))]
        folds, overall, pred, _ = classical_loso.evaluate_loso_ensemble(
            tables, y, spk, members=members, combine="weights", inner_folds=inner_folds, seed=seed,
            n_jobs=n_jobs, progress=False)
        return folds, overall, pred
    fs, est, k = parse_single(spec)
    return classical_loso.evaluate_loso(tables[fs], y, spk, estimator=est, speaker_norm=norm, select_k=k,
                                        inner_folds=inner_folds, seed=seed, n_jobs=n_jobs, progress=False)


def nested_pick(runs: dict[str, tuple[pd.DataFrame, dict, pd.DataFrame]]) -> tuple[pd.DataFrame, list[str]]:
    """Predictions where each outer fold takes the variant with the best inner UAR (first on ties)."""
    names = list(runs)
    folds = sorted(set(runs[names[0]][2]["fold"]))
    parts, chosen = [], []
    for f in folds:
        inner = [float(runs[n][0].set_index("fold").loc[f, "inner_uar"]) for n in names]
        best = names[int(np.argmax(inner))]
        chosen.append(best)
        pred = runs[best][2]
        parts.append(pred[pred["fold"] == f])
    index = runs[names[0]][2].index
    return pd.concat(parts).loc[index], chosen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(paths.ROOT.parent / "shared" / "data" / "emodb"))
    ap.add_argument("--classes", nargs="+", type=int, choices=(7, 4), default=[7, 4])
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    ap.add_argument("--speaker-norm", choices=("on", "off"), default="on")
    ap.add_argument("--cache-dir", default=str(paths.results_dir() / "cache" / "features"))
    ap.add_argument("--out-dir", help="write the summary, per-fold tables and predictions here")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--inner-folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for v in a.variants:
        for m in v.removeprefix("late:").split(","):
            parse_single(m)

    t_start, load0 = time.perf_counter(), os.getloadavg()
    norm = a.speaker_norm == "on"
    full, errors = corpora.read_corpus("emodb", paths.resolve(a.data_root), labels=LABELS[7])
    full = full[full["label"].notna()].reset_index(drop=True)
    if len(full) == 0:
        raise SystemExit(f"no EmoDB files under {a.data_root}")
    tables, extraction, common = extract_aligned(full["path"], FUSION, cache_dir=a.cache_dir, n_jobs=a.n_jobs)
    tables["fusion"] = fused(tables)
    full = full.set_index(full["path"].astype(str)).loc[common]
    out = Path(a.out_dir) if a.out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)

    rows = []
    for n_classes in a.classes:
        keep = full["label"].isin(LABELS[n_classes]).to_numpy()
        sub = {k: v[keep] for k, v in tables.items()}
        y, spk = full["label"].to_numpy()[keep], full["speaker"].astype(str).to_numpy()[keep]
        runs: dict[str, tuple[pd.DataFrame, dict, pd.DataFrame]] = {}
        for spec in a.variants:
            t0 = time.perf_counter()
            runs[spec] = run_variant(spec, sub, y, spk, norm=norm, inner_folds=a.inner_folds, seed=a.seed,
                                     n_jobs=a.n_jobs)
            folds, overall, _ = runs[spec]
            rows.append({"classes": n_classes, "variant": spec, "uar": overall["uar"],
                         "uar_fold_mean": overall["uar_mean_fold"], "uar_fold_sd": overall["uar_std_fold"],
                         "macro_f1": overall["macro_f1"], "accuracy": overall["accuracy"],
                         "inner_uar_mean": float(folds["inner_uar"].mean()),
                         "seconds": round(time.perf_counter() - t0, 1), "note": ""})
            print(f"{n_classes} classes {spec}: UAR {overall['uar']:.3f} macro-F1 {overall['macro_f1']:.3f} "
                  f"({rows[-1]['seconds']:.0f} s)", flush=True)
            if out:
                folds.to_csv(out / f"folds_{n_classes}c_{spec.replace(':', '_')}.csv", index=False)
                runs[spec][2].to_csv(out / f"predictions_{n_classes}c_{spec.replace(':', '_')}.csv")
        pred, chosen = nested_pick(runs)
        _, poverall = classical_loso.summarize_predictions(pred)
        counts = pd.Series(chosen).value_counts()
        rows.append({"classes": n_classes, "variant": "pick (best inner UAR per fold)", "uar": poverall["uar"],
                     "uar_fold_mean": poverall["uar_mean_fold"], "uar_fold_sd": poverall["uar_std_fold"],
                     "macro_f1": poverall["macro_f1"], "accuracy": poverall["accuracy"],
                     "inner_uar_mean": float("nan"), "seconds": 0.0,
                     "note": "; ".join(f"{k} ×{v}" for k, v in counts.items())})
        if out:
            pred.to_csv(out / f"predictions_{n_classes}c_pick.csv")

    total, load1 = time.perf_counter() - t_start, os.getloadavg()
    res = pd.DataFrame(rows)
    header = {"machine": f"{platform.node()} {platform.machine()} ({cpu_name()}), {os.cpu_count()} cores",
              "load_start_end": [round(load0[0], 1), round(load1[0], 1)], "n_files": len(full),
              "skipped_by_reader": len(errors), "speaker_norm": norm, "inner_folds": a.inner_folds,
              "extraction": extraction, "total_s": round(total)}
    print(json.dumps(header, indent=1))
    print(res.to_markdown(index=False, floatfmt=".3f"))
    if out:
        res.to_csv(out / "summary.csv", index=False)
        (out / "run.json").write_text(json.dumps(header, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
