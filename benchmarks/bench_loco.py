"""Leave-one-corpus-out (LOCO) transfer of the classical family: EmoDB, EMOVO, TurEV-DB, 4 classes.

Issue 15, item 3. For each corpus, a model is tuned (speaker-grouped inner CV) and fitted
on the other corpora and tested on the held-out one, whose speakers and language it has
never heard (``ser.train.cross_corpus_eval.evaluate_loco``); the same model evaluated
leave-one-speaker-out within the corpus (``ser.train.classical_loso.evaluate_loso``) is
printed beside it, so the transfer gap is visible. Labels: angry, happy, neutral, sad
(TurEV-DB's calm -> neutral; the corpora's default label maps). Each model runs without
and with per-speaker normalisation (transductive: each speaker, held-out ones included,
is z-scored by its own unlabelled audio). With several training corpora, every (corpus, class)
weighs the same in the fits (``--balance-corpora on``, stage 02's default) or each utterance
weighs the same (``off``: the largest corpus dominates); ``both`` runs the two.

Features are cached (``--cache-dir``); the table is written (rows replaced by key) to
``--out`` (default ``results/tables/cross_corpus.csv``).

    .venv/bin/python benchmarks/bench_loco.py [--data-root ../shared/data]
        [--corpora emodb emovo turev] [--models egemaps+svm_rbf compare+svm_linear]
        [--speaker-norm both|on|off] [--balance-corpora on|off|both] [--cache-dir DIR] [--out CSV]
        [--n-jobs 2] [--no-loso]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_tables import extract_aligned, read_labelled  # noqa: E402
from machine import machine_line  # noqa: E402

from ser.core import paths  # noqa: E402
from ser.models.classical import estimator, features  # noqa: E402
from ser.train import cross_corpus_eval  # noqa: E402

LABELS = ("angry", "happy", "neutral", "sad")


def _spec(spec: str) -> tuple[str, str]:
    fs, _, est = spec.partition("+")
    if fs not in features.FEATURE_SETS or est not in estimator.ESTIMATORS:
        raise SystemExit(f"--models: {spec!r} must be <feature_set>+<estimator> with feature sets "
                         f"{features.FEATURE_SETS} and estimators {estimator.ESTIMATORS}")
    return fs, est


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(paths.ROOT.parent / "shared" / "data"),
                    help="folder holding one folder per corpus (default: ../shared/data)")
    ap.add_argument("--corpora", nargs="+", default=["emodb", "emovo", "turev"])
    ap.add_argument("--models", nargs="+", default=["egemaps+svm_rbf"])
    ap.add_argument("--speaker-norm", choices=("both", "on", "off"), default="both")
    ap.add_argument("--balance-corpora", choices=("both", "on", "off"), default="on")
    ap.add_argument("--no-loso", action="store_true", help="skip the in-corpus leave-one-speaker-out")
    ap.add_argument("--cache-dir", default=str(paths.results_dir() / "cache" / "features"))
    ap.add_argument("--out", default=str(paths.results_dir() / "tables" / "cross_corpus.csv"))
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--inner-folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    specs = [_spec(s) for s in a.models]

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    table = pd.concat(read_labelled(a.corpora, a.data_root, LABELS), ignore_index=True)

    feats, extraction, common = extract_aligned(table["path"], (fs for fs, _ in specs),
                                                 cache_dir=a.cache_dir, n_jobs=a.n_jobs)
    table = table.set_index(table["path"].astype(str)).loc[common]

    switch = {"both": (False, True), "on": (True,), "off": (False,)}
    rows = []
    for fs, est in specs:
        for norm in switch[a.speaker_norm]:
            for balance in switch[a.balance_corpora]:
                t0 = time.perf_counter()
                res = cross_corpus_eval.evaluate_loco(
                    {fs: feats[fs]}, table["label"].to_numpy(), table["speaker"].to_numpy(),
                    table["corpus"].to_numpy(), estimator=est, speaker_norm=norm, inner_folds=a.inner_folds,
                    seed=a.seed, n_jobs=a.n_jobs, progress=False, balance_corpora=balance,
                    in_corpus_loso=not a.no_loso)
                if balance:  # the table of record holds stage 02's (balanced) fits
                    cross_corpus_eval.write_cross_corpus_table(res.table, a.out)
                rows.append(res.table.assign(balance_corpora=balance, wall_s=round(time.perf_counter() - t0)))

    total = time.perf_counter() - t_start
    load1 = os.getloadavg()
    out = pd.concat(rows, ignore_index=True)
    print(machine_line(load0, load1))
    summary = table.groupby("corpus").agg(utterances=("label", "size"), speakers=("speaker", "nunique"))
    print("data (4 classes):\n" + summary.to_markdown())
    print("\nfeature extraction (cached):\n" + pd.DataFrame(extraction).to_markdown(index=False))
    show = out.assign(gap=out["in_corpus_loso_uar"] - out["uar"])
    for c in ("uar", "macro_f1", "ece", "in_corpus_loso_uar", "gap"):
        show[c] = show[c].map(lambda v: f"{v:.3f}")
    print("\nleave-one-corpus-out (gap = in-corpus LOSO UAR - LOCO UAR):")
    print(show.drop(columns=["family"]).to_markdown(index=False))
    print(f"\nwritten: {a.out}\ntotal wall time: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
