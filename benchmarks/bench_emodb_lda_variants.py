"""EmoDB leave-one-speaker-out with shrinkage LDA: feature views, per-speaker normalisations and
ensembles, each nested (issue 14 item 6, second attempt at UAR >= 0.90 on 7 classes).

Every variant is scored by 10-fold leave-one-speaker-out. In each outer fold its grid (ANOVA
``k`` x LDA shrinkage ``a``, and where the variant has them the ensemble weight or SVM ``C``)
is chosen by 5-fold speaker-grouped inner CV on the 9 training speakers only (standardisation
and the ANOVA ranking refitted on each inner training part); the chosen configuration is
refitted on the 9 speakers and predicts the held-out one. ``pick`` chooses, in each outer
fold, the variant with the best inner UAR (the nested answer to "which variant").

Variants (``--variants``):

- ``z:<sets>``: early fusion of the sets (``+``-joined), z-scored per speaker (the 0.894
  baseline with ``compare+egemaps+mfcc_stats``).
- ``rank:<sets>``: per speaker, each feature replaced by the normal quantile of its rank in
  that speaker's rows (rank-Gaussianisation; monotone, so the z-score before it is moot).
- ``robust:<sets>``: per speaker, ``(x - median) / (IQR / 1.349)`` (SD where the IQR is 0).
- ``bal:<sets>``: per speaker, centred on the mean of its *class* means instead of the plain
  mean (so a speaker's emotion mix does not shift its centre). Training speakers use their
  labels; a held-out (or inner-validation) speaker starts from the plain mean and is
  re-centred twice on the mean of its *predicted* class means: transductive, no test label.
- ``view:<sets>``: one LDA per set (same ``k`` cap and ``a``), log-posteriors averaged.
- ``ldasvm:<sets>``: LDA and a linear one-vs-rest SVM (``LinearSVC``, class-balanced) on the
  same ``k`` features; each one's scores turned into probabilities with a temperature fitted
  on its inner held-out scores, averaged with weight ``w`` on LDA, ``w`` in
  ``{0, .25, .5, .75, 1}`` chosen on the inner held-out scores too.
- ``sub:<sets>``: random-subspace bagging: 10 LDAs, each on a random half of the ``k`` top
  features, log-posteriors averaged (seeded).

Per-speaker statistics are transductive for the held-out speaker (its unlabelled audio), as
in ``bench_emodb_lda.py``.

    .venv/bin/python benchmarks/bench_emodb_lda_variants.py --variants z:compare+egemaps+mfcc_stats
        [--classes 7] [--ks 1000 2000 3000] [--lda-shrinkage 0.8 0.9 0.95] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from scipy.stats import norm, rankdata
from sklearn.svm import LinearSVC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_tables import extract_aligned  # noqa: E402
from machine import machine_line  # noqa: E402

from ser.core import paths  # noqa: E402
from ser.data import corpora  # noqa: E402
from ser.models.classical.estimator import anova_f, grouped_inner_splits, uar_score  # noqa: E402
from ser.models.classical.features import speaker_standardize  # noqa: E402
from ser.models.classical.lda import ShrinkageLDA  # noqa: E402

LABELS = {7: ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"),
          4: ("angry", "happy", "neutral", "sad")}
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def per_speaker(X: np.ndarray, spk: np.ndarray, kind: str) -> np.ndarray:
    """Unsupervised per-speaker transform ``kind`` (``z``, ``rank``, ``robust``) of ``X``."""
    if kind == "z":
        return speaker_standardize(X, spk)
    out = np.empty_like(X, dtype=np.float64)
    for s in np.unique(spk):
        r = spk == s
        x = X[r]
        if kind == "rank":
            out[r] = norm.ppf((rankdata(x, axis=0) - 0.5) / len(x))
        elif kind == "robust":
            q1, med, q3 = np.percentile(x, [25, 50, 75], axis=0)
            sc = (q3 - q1) / 1.349
            sd = x.std(axis=0)
            sc = np.where(sc > 1e-8, sc, np.where(sd > 1e-8, sd, 1.0))
            out[r] = (x - med) / sc
        else:
            raise SystemExit(f"unknown normalisation {kind!r}")
    return out


def prepare(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise on the training rows; columns ranked by ANOVA F on them (largest first)."""
    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
    sd[sd < 1e-8] = 1.0
    Ztr, Zte = (Xtr - mu) / sd, (Xte - mu) / sd
    return Ztr, Zte, np.argsort(-anova_f(Ztr, ytr)[0], kind="stable")


def lda_scores(a: float, Ztr: np.ndarray, ytr: np.ndarray, Zte: np.ndarray) -> np.ndarray:
    return ShrinkageLDA(shrinkage=a).fit(Ztr, ytr).decision_function(Zte)


def lda_multi(shrinkages: list[float], Ztr: np.ndarray, ytr: np.ndarray, Zte: np.ndarray) -> dict[float, np.ndarray]:
    """:class:`ShrinkageLDA` log-posteriors of ``Zte`` for several shrinkages at once: one
    eigendecomposition of the residual Gram matrix serves them all (the same formula)."""
    classes, codes = np.unique(ytr, return_inverse=True)
    means = np.stack([Ztr[codes == j].mean(axis=0) for j in range(len(classes))])
    resid = Ztr - means[codes]
    n, d = resid.shape
    mu = max(float((resid * resid).sum()) / (n * d), 1e-12)
    s, U = np.linalg.eigh(resid @ resid.T)
    utrm = U.T @ (resid @ means.T)
    mte = Zte @ means.T
    rte = Zte @ resid.T
    mm = means @ means.T
    rm = resid @ means.T
    out = {}
    for a in shrinkages:
        lam = a * mu
        v = U @ (utrm / (s + n * lam / (1.0 - a))[:, None])     # [n, k]
        # coef^T = (M^T - R^T v) / lam; scores = Zte coef^T + intercept
        lin = (mte - rte @ v) / lam
        icpt = -0.5 * (np.diag(mm) - np.einsum("nk,nk->k", rm, v)) / lam
        out[a] = log_softmax(lin + icpt, axis=1)
    return out


def svm_scores(c: float, Ztr: np.ndarray, ytr: np.ndarray, Zte: np.ndarray) -> np.ndarray:
    m = LinearSVC(C=c, class_weight="balanced", max_iter=20000).fit(Ztr, ytr)
    return m.decision_function(Zte)


def temperature(d: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    """Temperature minimising the log-loss of ``softmax(d / T)`` (as ``ShrinkageLDA.calibrate``)."""
    t = np.searchsorted(classes, y)
    res = minimize_scalar(lambda lt: float(-log_softmax(d / np.exp(lt), axis=1)[np.arange(len(t)), t].mean()),
                          bounds=(np.log(1e-3), np.log(1e4)), method="bounded")
    return float(np.exp(res.x))


class Variant:
    """One variant: its per-speaker table(s) and how a configuration scores test rows."""

    def __init__(self, spec: str, raw: dict[str, np.ndarray], spk: np.ndarray, args: argparse.Namespace):
        self.spec = spec
        self.kind, sets = spec.split(":")
        self.sets = sets.split("+")
        norm_kind = self.kind if self.kind in ("rank", "robust") else "z"
        self.blocks = [np.nan_to_num(per_speaker(raw[s], spk, norm_kind)) for s in self.sets]
        self.X = np.hstack(self.blocks)
        self.raw = np.nan_to_num(np.hstack([raw[s] for s in self.sets]))
        self.spk = spk
        d = self.X.shape[1]
        ks = sorted({min(k, d) for k in args.ks})
        if self.kind == "view":
            ks = sorted(set(args.ks))
        self.configs: list[tuple] = [(k, a) for k in ks for a in args.lda_shrinkage]
        if self.kind == "ldasvm":
            self.configs = [(k, a, c) for k in ks for a in args.lda_shrinkage for c in args.svm_c]

    # -- one fit ---------------------------------------------------------------------------
    def scores(self, tr: np.ndarray, te: np.ndarray, y: np.ndarray, classes: np.ndarray,
               configs: list[tuple]) -> dict[tuple, np.ndarray | tuple[np.ndarray, np.ndarray]]:
        """Scores of rows ``te`` for every configuration, fitted on rows ``tr`` (labels ``y[tr]``)."""
        if self.kind == "bal":
            return self._bal_scores(tr, te, y, classes, configs)
        if self.kind == "view":
            out: dict = {c: 0.0 for c in configs}
            col = 0
            for b in self.blocks:
                Ztr, Zte, order = prepare(b[tr], y[tr], b[te])
                for k in sorted({c[0] for c in configs}):
                    kk = min(k, b.shape[1])
                    sc = lda_multi(sorted({c[1] for c in configs if c[0] == k}), Ztr[:, order[:kk]], y[tr],
                                   Zte[:, order[:kk]])
                    for c in configs:
                        if c[0] == k:
                            out[c] = out[c] + sc[c[1]]
                col += b.shape[1]
            return out
        Ztr, Zte, order = prepare(self.X[tr], y[tr], self.X[te])
        out = {}
        if self.kind in ("z", "rank", "robust"):
            for k in sorted({c[0] for c in configs}):
                sc = lda_multi(sorted({c[1] for c in configs if c[0] == k}), Ztr[:, order[:k]], y[tr],
                               Zte[:, order[:k]])
                out.update({c: sc[c[1]] for c in configs if c[0] == k})
            return out
        for c in configs:
            ztr, zte = Ztr[:, order[:c[0]]], Zte[:, order[:c[0]]]
            if self.kind == "ldasvm":
                out[c] = (lda_scores(c[1], ztr, y[tr], zte), svm_scores(c[2], ztr, y[tr], zte))
            elif self.kind == "sub":
                rng = np.random.default_rng(0)
                acc = 0.0
                for _ in range(10):
                    cols = rng.choice(c[0], size=c[0] // 2, replace=False)
                    acc = acc + lda_scores(c[1], ztr[:, cols], y[tr], zte[:, cols])
                out[c] = acc
            else:
                out[c] = lda_scores(c[1], ztr, y[tr], zte)
        return out

    def _bal_centre(self, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Rows of the raw table re-centred per speaker on the mean of its class means
        (``labels``: true or predicted) and scaled by its plain SD."""
        out = np.empty((len(rows), self.raw.shape[1]))
        g = self.spk[rows]
        for s in np.unique(g):
            r = g == s
            x = self.raw[rows[r]]
            centre = np.mean([x[labels[r] == c].mean(axis=0) for c in np.unique(labels[r])], axis=0)
            sd = x.std(axis=0)
            out[r] = (x - centre) / np.where(sd > 1e-8, sd, 1.0)
        return out

    def _bal_scores(self, tr, te, y, classes, configs):
        Xtr = self._bal_centre(tr, y[tr])
        Xte0 = self.X[te]  # plain per-speaker z first
        Ztr, _, order = prepare(Xtr, y[tr], Xte0)
        mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
        sd[sd < 1e-8] = 1.0
        out = {}
        for c in configs:
            cols = order[:c[0]]
            model = ShrinkageLDA(shrinkage=c[1]).fit(Ztr[:, cols], y[tr])
            Xte = Xte0
            for _ in range(2):
                d = model.decision_function(((Xte - mu) / sd)[:, cols])
                Xte = self._bal_centre(te, classes[d.argmax(axis=1)])
            out[c] = model.decision_function(((Xte - mu) / sd)[:, cols])
        return out

    # -- nested choice ---------------------------------------------------------------------
    def choose(self, tr: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[tuple, float, dict]:
        """Configuration (and for ``ldasvm`` temperatures and weight) with the best mean inner UAR."""
        inner = grouped_inner_splits(self.spk[tr], n_splits=5)
        held: dict[tuple, list] = {c: [] for c in self.configs}
        for itr, iva in inner:
            s = self.scores(tr[itr], tr[iva], y, classes, self.configs)
            for c in self.configs:
                held[c].append((iva, s[c]))
        if self.kind != "ldasvm":
            uar = {c: np.mean([uar_score(y[tr[iva]], classes[d.argmax(axis=1)]) for iva, d in held[c]])
                   for c in self.configs}
            best = max(self.configs, key=lambda c: uar[c])
            return best, float(uar[best]), {}
        best_u, best = -1.0, None
        for c in self.configs:
            yy = np.concatenate([y[tr[iva]] for iva, _ in held[c]])
            dl = np.vstack([d[0] for _, d in held[c]])
            ds = np.vstack([d[1] for _, d in held[c]])
            tl, ts = temperature(dl, yy, classes), temperature(ds, yy, classes)
            for w in WEIGHTS:
                u = np.mean([uar_score(y[tr[iva]], classes[self.mix(d, w, tl, ts).argmax(axis=1)])
                             for iva, d in held[c]])
                if u > best_u:
                    best_u, best = u, (c, {"w": w, "tl": tl, "ts": ts})
        return best[0], float(best_u), best[1]

    @staticmethod
    def mix(d: tuple[np.ndarray, np.ndarray], w: float, tl: float, ts: float) -> np.ndarray:
        return w * np.exp(log_softmax(d[0] / tl, axis=1)) + (1 - w) * np.exp(log_softmax(d[1] / ts, axis=1))

    def predict(self, tr, te, y, classes, cfg, extra) -> np.ndarray:
        d = self.scores(tr, te, y, classes, [cfg])[cfg]
        if self.kind == "ldasvm":
            d = self.mix(d, extra["w"], extra["tl"], extra["ts"])
        return classes[d.argmax(axis=1)]


def report(preds: dict[str, np.ndarray], y: np.ndarray, spk: np.ndarray, cpu: dict[str, float],
           picks: list[str]) -> None:
    """Print each variant's pooled UAR, fold mean ± SD over held-out speakers, accuracy and CPU,
    and how often the nested pick chose each variant."""
    for name, p in preds.items():
        f = [uar_score(y[spk == s], p[spk == s]) for s in sorted(set(spk))]
        print(f"{name}: pooled UAR {uar_score(y, p):.3f}, fold mean {np.mean(f):.3f} ± {np.std(f):.3f}, "
              f"accuracy {np.mean(p == y):.3f}" + (f", CPU {cpu[name]:.0f} s" if name in cpu else ""))
    print("pick chose: " + ", ".join(f"{v}: {picks.count(v)}" for v in dict.fromkeys(picks)))


def combine(files: list[str]) -> int:
    """Print the pooled UAR of each variant in ``files`` and of the pick across all of them
    (per held-out speaker, the variant with the best inner UAR; first on ties)."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    y, spk = np.array(runs[0]["y"]), np.array(runs[0]["speaker"])
    if any(r["y"] != runs[0]["y"] or r["speaker"] != runs[0]["speaker"] for r in runs):
        raise SystemExit("--combine: the runs do not hold the same rows")
    variants = {name: v for r in runs for name, v in r["variants"].items()}
    pick, chose = np.empty(len(y), object), []
    for s in sorted(set(spk)):
        best = max(variants, key=lambda n: variants[n][s]["inner_uar"])
        pick[spk == s] = variants[best][s]["pred"]
        chose.append(best)
    for name, v in variants.items():
        p = np.empty(len(y), object)
        for s in sorted(set(spk)):
            p[spk == s] = v[s]["pred"]
        print(f"{name}: pooled UAR {uar_score(y, p):.3f}")
    print(f"pick across {len(variants)} variants: pooled UAR {uar_score(y, pick):.3f}, accuracy "
          f"{np.mean(pick == y):.3f}; chose " + ", ".join(f"{c}: {chose.count(c)}" for c in dict.fromkeys(chose)))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(paths.ROOT.parent / "shared" / "data" / "emodb"))
    ap.add_argument("--variants", nargs="+", default=["z:compare+egemaps+mfcc_stats"])
    ap.add_argument("--classes", type=int, choices=(7, 4), default=7)
    ap.add_argument("--ks", nargs="+", type=int, default=[1000, 2000, 3000])
    ap.add_argument("--lda-shrinkage", nargs="+", type=float, default=[0.8, 0.9, 0.95])
    ap.add_argument("--svm-c", nargs="+", type=float, default=[1e-3, 1e-2])
    ap.add_argument("--cache-dir", default=str(paths.results_dir() / "cache" / "features"))
    ap.add_argument("--n-jobs", type=int, default=1, help="feature extraction workers")
    ap.add_argument("--out", default=None, help="JSON of per-fold inner UARs and predictions (for a "
                    "pick across runs)")
    ap.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                    help="no fit: the nested pick across the variants of these --out files (same classes)")
    a = ap.parse_args()
    if a.combine:
        return combine(a.combine)

    t0, w0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()
    full, _ = corpora.read_corpus("emodb", paths.resolve(a.data_root), labels=LABELS[a.classes])
    full = full[full["label"].notna()].reset_index(drop=True)
    if len(full) == 0:
        raise SystemExit(f"no EmoDB files under {a.data_root}")
    sets = list(dict.fromkeys(s for v in a.variants for s in v.split(":")[1].split("+")))
    tables, _, common = extract_aligned(full["path"], sets, cache_dir=a.cache_dir, n_jobs=a.n_jobs)
    full = full.set_index(full["path"].astype(str)).loc[common]
    y, spk = full["label"].to_numpy(), full["speaker"].astype(str).to_numpy()
    raw = {s: tables[s].to_numpy(dtype=np.float64) for s in sets}
    classes = np.array(sorted(set(y)))
    variants = [Variant(v, raw, spk, a) for v in a.variants]

    preds = {v.spec: np.empty(len(y), object) for v in variants}
    preds["pick"] = np.empty(len(y), object)
    cpu = {v.spec: 0.0 for v in variants}
    picks = []
    record: dict[str, dict] = {v.spec: {} for v in variants}
    for s in sorted(set(spk)):
        te, tr = np.where(spk == s)[0], np.where(spk != s)[0]
        line, inner_best = [], (-1.0, "")
        for v in variants:
            c0 = time.process_time()
            cfg, u, extra = v.choose(tr, y, classes)
            p = v.predict(tr, te, y, classes, cfg, extra)
            cpu[v.spec] += time.process_time() - c0
            preds[v.spec][te] = p
            record[v.spec][s] = {"inner_uar": u, "config": str(cfg), "pred": p.tolist()}
            if u > inner_best[0]:
                inner_best = (u, v.spec)
                preds["pick"][te] = p
            line.append(f"{v.spec} {uar_score(y[te], p):.3f} (inner {u:.3f}; {cfg}{' ' + str(extra) if extra else ''})")
        picks.append(inner_best[1])
        print(f"speaker {s}: " + "; ".join(line) + f"; pick {inner_best[1]}", flush=True)
    print(machine_line(load0, os.getloadavg()))
    print(f"{a.classes} classes, {len(y)} files")
    report(preds, y, spk, cpu, picks)
    print(f"CPU {time.process_time() - t0:.0f} s, wall {time.perf_counter() - w0:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps({"classes": a.classes, "y": y.tolist(), "speaker": spk.tolist(),
                                           "variants": record}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
