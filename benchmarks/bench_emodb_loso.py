"""EmoDB, 7 classes, leave-one-speaker-out: UAR of the classical model families on CPU.

Issue 3, item 9. For every test speaker (10 folds) each model is tuned by a
speaker-grouped inner CV over the 9 training speakers only (``ser.models.classical``, ``ser.train.classical_loso``);
nothing — hyper-parameters, ensemble weights — is chosen on the test speaker.

Models (``--models``; each run without and with per-speaker normalisation,
``--speaker-norm``):

- ``compare+svm_linear``: openSMILE ComParE_2016 functionals + linear SVM
  (published ≈ 0.77; target ≥ 0.78)
- ``egemaps+svm_rbf``: openSMILE eGeMAPSv02 functionals + RBF SVM
- ``mfcc_stats+svm_rbf``: MFCC/delta statistics + RBF SVM
- ``ensemble``: the three above, probabilities averaged with equal weights
  (``ensemble-mean``, fixed a priori) and with weights chosen on held-out
  predictions of the training speakers (``ensemble-weights``); target ≥ 0.85
- any other ``<feature_set>+<estimator>`` (e.g. ``compare+svm_rbf``, ``egemaps+rf``)

Per-speaker normalisation z-scores each speaker's features with that speaker's own
mean and SD. It uses no labels, but the test speaker's statistics come from its own
(unlabelled) test audio: transductive, reported separately.

Feature extraction is cached (``--cache-dir``); its wall time is printed per feature
set together with how many files were computed rather than read from the cache.

    .venv/bin/python benchmarks/bench_emodb_loso.py [--data-root ../shared/data/emodb]
        [--models compare+svm_linear egemaps+svm_rbf mfcc_stats+svm_rbf ensemble]
        [--speaker-norm both|on|off] [--cache-dir DIR] [--out-dir DIR] [--n-jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_tables import extract_aligned  # noqa: E402
from machine import machine_line  # noqa: E402

from ser.core import paths  # noqa: E402
from ser.data import corpora  # noqa: E402
from ser.models.classical import ensemble, estimator, features  # noqa: E402
from ser.train import classical_loso  # noqa: E402

#: EmoDB's full label set (unified names).
EMODB_LABELS = ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad")
#: Members of the ensemble, fixed before any result was seen (issue 3 brief).
ENSEMBLE = ("compare+svm_linear", "egemaps+svm_rbf", "mfcc_stats+svm_rbf")
DEFAULT_MODELS = (*ENSEMBLE, "ensemble")


def _member(spec: str, speaker_norm: bool) -> ensemble.Member:
    try:
        fs, est = spec.split("+")
    except ValueError:
        raise SystemExit(f"--models: {spec!r} must be <feature_set>+<estimator> or 'ensemble'") from None
    if fs not in features.FEATURE_SETS or est not in estimator.ESTIMATORS:
        raise SystemExit(f"--models: {spec!r}: feature sets {features.FEATURE_SETS}, "
                         f"estimators {estimator.ESTIMATORS}")
    return ensemble.Member(fs, est, speaker_norm)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(paths.ROOT.parent / "shared" / "data" / "emodb"),
                    help="EmoDB folder (default: ../shared/data/emodb from the repo root)")
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--speaker-norm", choices=("both", "on", "off"), default="both")
    ap.add_argument("--cache-dir", default=str(paths.results_dir() / "cache" / "features"))
    ap.add_argument("--out-dir", help="write per-fold tables and predictions here")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--inner-folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    table, errors = corpora.read_corpus("emodb", paths.resolve(a.data_root), labels=EMODB_LABELS)
    table = table[table["label"].notna()].reset_index(drop=True)
    if len(table) == 0:
        raise SystemExit(f"no EmoDB files under {a.data_root}")
    y, spk = table["label"].to_numpy(), table["speaker"].to_numpy()

    norms = {"both": (False, True), "on": (True,), "off": (False,)}[a.speaker_norm]
    singles = [m for m in a.models if m != "ensemble"]
    want_ensemble = "ensemble" in a.models
    needed = {_member(m, False).feature_set for m in singles} | (
        {_member(m, False).feature_set for m in ENSEMBLE} if want_ensemble else set())

    feats, extraction, common = extract_aligned(
        table["path"], (fs for fs in features.FEATURE_SETS if fs in needed),
        cache_dir=a.cache_dir, n_jobs=a.n_jobs)
    keep = table["path"].astype(str).isin(common).to_numpy()
    table = table[keep].set_index(table["path"].astype(str)[keep]).loc[common]
    y, spk = table["label"].to_numpy(), table["speaker"].to_numpy()

    results: list[dict] = []
    preds: dict[str, pd.DataFrame] = {}

    def record(name: str, norm: bool, overall: dict, train_s: float | None, note: str = "") -> None:
        results.append({"model": name, "speaker_norm": "yes" if norm else "no",
                        "uar": overall["uar"], "uar_fold_mean": overall["uar_mean_fold"],
                        "uar_fold_sd": overall["uar_std_fold"], "macro_f1": overall["macro_f1"],
                        "accuracy": overall["accuracy"], "train_s": train_s, "note": note})

    for norm in norms:
        tag = "+spknorm" if norm else ""
        done: set[str] = set()
        if want_ensemble:
            members = [_member(m, norm) for m in ENSEMBLE]
            folds, overall, pred, member_preds = classical_loso.evaluate_loso_ensemble(
                feats, y, spk, members=members, combine="weights", inner_folds=a.inner_folds,
                seed=a.seed, n_jobs=a.n_jobs, progress=False)
            for spec, mem in zip(ENSEMBLE, members, strict=True):
                if spec in singles:
                    _, o = classical_loso.summarize_predictions(member_preds[mem.name])
                    record(spec, norm, o, overall["member_fit_s"][mem.name])
                    preds[spec + tag] = member_preds[mem.name]
                    done.add(spec)
            mean_pred = classical_loso.combine_predictions([member_preds[m.name] for m in members])
            _, o = classical_loso.summarize_predictions(mean_pred)
            record("ensemble-mean (3 SVMs)", norm, o, sum(overall["member_fit_s"].values()),
                   "equal weights, fixed a priori")
            w = [json.loads(f)["weights"] for f in folds["best_params"]]
            mean_w = [round(sum(col) / len(w), 2) for col in zip(*w, strict=True)]
            record("ensemble-weights (3 SVMs)", norm, overall, overall["fit_s"],
                   f"weights chosen per fold by inner CV; mean {mean_w}")
            preds["ensemble-mean" + tag] = mean_pred
            preds["ensemble-weights" + tag] = pred
            if a.out_dir:
                Path(a.out_dir).mkdir(parents=True, exist_ok=True)
                folds.to_csv(Path(a.out_dir) / f"folds_ensemble-weights{tag}.csv", index=False)
        for spec in singles:
            if spec in done:
                continue
            mem = _member(spec, norm)
            folds, overall, pred = classical_loso.evaluate_loso(
                feats[mem.feature_set], y, spk, estimator=mem.estimator, speaker_norm=norm,
                inner_folds=a.inner_folds, seed=a.seed, n_jobs=a.n_jobs, progress=False)
            record(spec, norm, overall, overall["fit_s"])
            preds[spec + tag] = pred
            if a.out_dir:
                Path(a.out_dir).mkdir(parents=True, exist_ok=True)
                folds.to_csv(Path(a.out_dir) / f"folds_{spec}{tag}.csv", index=False)
    if a.out_dir:
        for name, p in preds.items():
            p.to_csv(Path(a.out_dir) / f"predictions_{name}.csv")

    total = time.perf_counter() - t_start
    load1 = os.getloadavg()
    res = pd.DataFrame(results)
    print(machine_line(load0, load1))
    print(f"data: {len(table)} EmoDB utterances, {len(set(spk))} speakers, {len(set(y))} classes; "
          f"{len(errors)} non-audio/unparsed file(s) skipped by the reader")
    print("protocol: leave-one-speaker-out (10 folds); inner speaker-grouped "
          f"{a.inner_folds}-fold CV on the training speakers for every choice; UAR pooled over folds")
    print("\nfeature extraction (2 workers, cached):")
    print(pd.DataFrame(extraction).to_markdown(index=False))
    print("\nresults:")
    show = res.assign(**{c: res[c].map(lambda v: f"{v:.3f}") for c in ("uar", "uar_fold_mean", "uar_fold_sd",
                                                                          "macro_f1", "accuracy")},
                      train_s=res["train_s"].map(lambda v: "" if v is None else f"{v:.0f}"))
    print(show.to_markdown(index=False))
    print(f"\ntotal wall time: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
