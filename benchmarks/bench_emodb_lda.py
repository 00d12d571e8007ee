"""EmoDB leave-one-speaker-out, 7 classes: estimator, ANOVA ``k`` and its parameter chosen together
by nested speaker-grouped CV; optional transductive self-training (issue 14 item 6).

For each held-out speaker (10 outer folds), every configuration ``(estimator, k, parameter)``
is scored by 5-fold speaker-grouped inner CV on the 9 training speakers (standardisation and
the ANOVA ranking refitted on each inner training part); the best by mean inner UAR is refitted
on the 9 speakers and predicts the held-out one. Features are z-scored per speaker first
(transductive: the held-out speaker's own unlabelled audio gives its mean and SD, as
``speaker_norm`` does). Estimators: ``lda`` (:class:`ser.models.classical.lda.ShrinkageLDA`),
``svm`` (linear, class-balanced libsvm on the Gram matrix), ``ridge`` (class-balanced ridge
classifier).

Self-training (``--self-train 0 0.5 1``): after the fit, the fraction ``q`` of the held-out
speaker's utterances with the largest margin between the two best scores gets its predicted
label, is added to the training rows, and the model is refitted (twice); no test label is
used. ``q`` is chosen by the same inner CV (each inner validation speaker self-trained on its
own rows); rows ``st_q<q>`` show each ``q`` unchosen.

    .venv/bin/python benchmarks/bench_emodb_lda.py [--sets compare] [--estimators lda svm]
        [--ks 1000 2000 4000 6373] [--lda-shrinkage 0.1 0.3 0.5 0.7 0.9] [--self-train 0]
        [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeClassifier
from sklearn.svm import SVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_tables import extract_aligned  # noqa: E402
from machine import machine_line  # noqa: E402

from ser.core import paths  # noqa: E402
from ser.data import corpora  # noqa: E402
from ser.models.classical.estimator import anova_f, grouped_inner_splits, uar_score  # noqa: E402
from ser.models.classical.features import speaker_standardize  # noqa: E402
from ser.models.classical.lda import ShrinkageLDA  # noqa: E402

LABELS = ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad")


def prepare(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise on the training rows; columns ranked by ANOVA F on them (largest first)."""
    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
    sd[sd < 1e-8] = 1.0
    Ztr, Zte = (Xtr - mu) / sd, (Xte - mu) / sd
    return Ztr, Zte, np.argsort(-anova_f(Ztr, ytr)[0], kind="stable")


def scores(kind: str, p: float, Ztr: np.ndarray, ytr: np.ndarray, Zte: np.ndarray) -> np.ndarray:
    """``[n_test, n_classes]`` scores (columns: sorted classes) of one fitted configuration."""
    if kind == "lda":
        return ShrinkageLDA(shrinkage=p).fit(Ztr, ytr).decision_function(Zte)
    if kind == "svm":
        m = SVC(kernel="precomputed", C=p, class_weight="balanced").fit(Ztr @ Ztr.T, ytr)
        return m.decision_function(Zte @ Ztr.T)
    if kind == "ridge":
        return RidgeClassifier(alpha=p, class_weight="balanced").fit(Ztr, ytr).decision_function(Zte)
    raise SystemExit(f"unknown estimator {kind!r}")


def fit_predict(cfg: tuple[str, int, float], Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray,
                gte: np.ndarray, q: float, classes: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Scores of the test rows; with ``q > 0`` self-trained on each test speaker's confident rows."""
    kind, k, p = cfg
    Ztr, Zte, order = prepare(Xtr, ytr, Xte)
    d = scores(kind, p, Ztr[:, order[:k]], ytr, Zte[:, order[:k]])
    for _ in range(rounds if q > 0 else 0):
        pred = classes[d.argmax(axis=1)]
        top2 = np.sort(d, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        add = np.zeros(len(Xte), bool)
        for g in np.unique(gte):
            rows = np.where(gte == g)[0]
            add[rows[np.argsort(-margin[rows])[:int(round(q * len(rows)))]]] = True
        X2, y2 = np.vstack([Xtr, Xte[add]]), np.concatenate([ytr, pred[add]])
        Z2, Zte2, order2 = prepare(X2, y2, Xte)
        d = scores(kind, p, Z2[:, order2[:k]], y2, Zte2[:, order2[:k]])
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(paths.ROOT.parent / "shared" / "data" / "emodb"))
    ap.add_argument("--sets", nargs="+", default=["compare"], help="feature sets side by side")
    ap.add_argument("--estimators", nargs="+", default=["lda"], choices=("lda", "svm", "ridge"))
    ap.add_argument("--ks", nargs="+", type=int, default=[1000, 2000, 4000, 6373])
    ap.add_argument("--lda-shrinkage", nargs="+", type=float, default=[0.1, 0.3, 0.5, 0.7, 0.9])
    ap.add_argument("--svm-c", nargs="+", type=float, default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    ap.add_argument("--ridge-alpha", nargs="+", type=float, default=[10.0, 100.0, 1e3, 1e4])
    ap.add_argument("--self-train", nargs="+", type=float, default=[0.0])
    ap.add_argument("--cache-dir", default=str(paths.results_dir() / "cache" / "features"))
    ap.add_argument("--n-jobs", type=int, default=1, help="feature extraction workers")
    a = ap.parse_args()

    t0, w0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()
    full, _ = corpora.read_corpus("emodb", paths.resolve(a.data_root), labels=LABELS)
    full = full[full["label"].notna()].reset_index(drop=True)
    if len(full) == 0:
        raise SystemExit(f"no EmoDB files under {a.data_root}")
    tables, _, common = extract_aligned(full["path"], a.sets, cache_dir=a.cache_dir, n_jobs=a.n_jobs)
    full = full.set_index(full["path"].astype(str)).loc[common]
    y, spk = full["label"].to_numpy(), full["speaker"].astype(str).to_numpy()
    X = np.nan_to_num(np.hstack([speaker_standardize(tables[s].to_numpy(), spk) for s in a.sets]))
    classes = np.array(sorted(set(y)))
    grids = {"lda": a.lda_shrinkage, "svm": a.svm_c, "ridge": a.ridge_alpha}
    configs = [(kind, k, p) for kind in a.estimators for k in a.ks for p in grids[kind]]

    preds: dict[str, np.ndarray] = {}
    chosen: dict[str, list[str]] = {}
    for s in sorted(set(spk)):
        te, tr = np.where(spk == s)[0], np.where(spk != s)[0]
        Xtr, ytr, gtr = X[tr], y[tr], spk[tr]
        inner = grouped_inner_splits(gtr, n_splits=5)
        uars: dict[tuple[str, int, float], list[float]] = {c: [] for c in configs}
        for itr, iva in inner:
            Ztr, Zva, order = prepare(Xtr[itr], ytr[itr], Xtr[iva])
            for c in configs:
                d = scores(c[0], c[2], Ztr[:, order[:c[1]]], ytr[itr], Zva[:, order[:c[1]]])
                uars[c].append(uar_score(ytr[iva], classes[d.argmax(axis=1)]))
        best = max(configs, key=lambda c: float(np.mean(uars[c])))  # first on ties
        q_uar = {}
        for q in a.self_train:
            q_uar[q] = float(np.mean([uar_score(ytr[iva], classes[fit_predict(
                best, Xtr[itr], ytr[itr], Xtr[iva], gtr[iva], q, classes).argmax(axis=1)])
                for itr, iva in inner])) if q > 0 else float(np.mean(uars[best]))
        q_best = max(q_uar, key=lambda q: q_uar[q])
        out = {"nested": (q_best, f"{best[0]} k={best[1]} p={best[2]} q={q_best}")}
        if len(a.self_train) > 1:
            out.update({f"st_q{q}": (q, "") for q in a.self_train})
        line = []
        for name, (q, note) in out.items():
            pred = classes[fit_predict(best, Xtr, ytr, X[te], spk[te], q, classes).argmax(axis=1)]
            preds.setdefault(name, np.empty(len(y), object))[te] = pred
            chosen.setdefault(name, []).append(f"{s}: {note}" if note else s)
            line.append(f"{name} {uar_score(y[te], pred):.3f}")
        print(f"speaker {s}: " + ", ".join(line) + f" ({out['nested'][1]})", flush=True)
    print(machine_line(load0, os.getloadavg()))
    for name, p in preds.items():
        print(f"{name}: pooled UAR {uar_score(y, p):.3f}, accuracy {np.mean(p == y):.3f}")
    print(f"CPU {time.process_time() - t0:.0f} s, wall {time.perf_counter() - w0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
