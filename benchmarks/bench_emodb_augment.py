"""EmoDB leave-one-speaker-out with speed-perturbed training copies (issue 14 item 6: UAR >= 0.90
on 7 classes without external weights).

Each training utterance also enters training as copies played ``f`` times faster (``--factors``,
default 0.9 and 1.1, as Kaldi's speed perturbation: tempo, pitch and formants move together, so
each copy sounds like another speaker of the same sentence; :func:`ser.signal.augment.speed`,
as stage 02's ``speed_perturb`` option of a classical candidate). A copy is a pseudo-speaker of its
own for the per-speaker z-score (``<speaker>@<f>``), so it is normalised as an unseen speaker
would be; test rows are always the held-out speaker's original recordings, never a copy.

Protocol (the 0.894-0.898 baseline of ``bench_emodb_lda_variants.py``, fixed before this run):
early fusion of ComParE, eGeMAPS and MFCC statistics, z-scored per speaker, standardised on
the training rows, the ``--ks`` features of largest ANOVA F (default 2000, refitted in every fit)
and shrinkage LDA with ``a`` from ``--lda-shrinkage`` chosen per outer fold by 5-fold
speaker-grouped inner CV on the 9 training speakers; the inner folds split by *original*
speaker (a speaker's copies go with it) and score the inner held-out speakers' originals only.
Both variants, ``base`` (originals only) and ``aug`` (originals + copies), run in the same
folds; ``pick`` chooses per outer fold the one with the better inner UAR.

The copies are written once as 16 kHz WAV under ``--audio-cache``
and go through the same cached feature extraction as the originals.

    .venv/bin/python benchmarks/bench_emodb_augment.py --cache-dir /work/cache/features \
        [--factors 0.9 1.1] [--classes 7] [--ks 2000] [--lda-shrinkage 0.8 0.9 0.95]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_emodb_lda_variants import LABELS, lda_multi, prepare, report  # noqa: E402
from feature_tables import extract_aligned  # noqa: E402
from machine import machine_line  # noqa: E402

from ser.core import atomic, paths  # noqa: E402
from ser.data import corpora  # noqa: E402
from ser.models.classical.estimator import grouped_inner_splits, uar_score  # noqa: E402
from ser.models.classical.features import speaker_standardize  # noqa: E402
from ser.signal import audio, augment  # noqa: E402

SETS = ("compare", "egemaps", "mfcc_stats")
SR = 16000


def speed_copy(src: Path, dst: Path, factor: float) -> Path:
    """``src`` played ``factor`` times faster (tempo and pitch), as 16 kHz PCM16 at ``dst``
    (written once, atomically)."""
    if dst.exists():
        return dst
    y, _ = audio.load(src, sample_rate=SR)
    z = np.clip(augment.speed(y, SR, factor=factor), -1.0, 1.0)
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic.atomic_write(dst, lambda f: sf.write(f, z, SR, subtype="PCM_16", format="WAV"))
    return dst


def scores(X: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, ks: list[int],
           shrinkages: list[float]) -> dict[tuple[int, float], np.ndarray]:
    Ztr, Zte, order = prepare(X[tr], y[tr], X[te])
    out = {}
    for k in ks:
        kk = min(k, X.shape[1])
        sc = lda_multi(shrinkages, Ztr[:, order[:kk]], y[tr], Zte[:, order[:kk]])
        out.update({(k, a): sc[a] for a in shrinkages})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(paths.ROOT.parent / "shared" / "data" / "emodb"))
    ap.add_argument("--classes", type=int, choices=(7, 4), default=7)
    ap.add_argument("--factors", nargs="+", type=float, default=[0.9, 1.1])
    ap.add_argument("--ks", nargs="+", type=int, default=[2000])
    ap.add_argument("--lda-shrinkage", nargs="+", type=float, default=[0.8, 0.9, 0.95])
    ap.add_argument("--cache-dir", default=str(paths.results_dir() / "cache" / "features"))
    ap.add_argument("--audio-cache", default=str(paths.results_dir() / "cache" / "emodb_speed"))
    ap.add_argument("--n-jobs", type=int, default=1, help="feature extraction workers")
    a = ap.parse_args()

    t0, w0, load0 = time.process_time(), time.perf_counter(), os.getloadavg()
    full, _ = corpora.read_corpus("emodb", paths.resolve(a.data_root), labels=LABELS[a.classes])
    full = full[full["label"].notna()].reset_index(drop=True)
    if len(full) == 0:
        raise SystemExit(f"no EmoDB files under {a.data_root}")
    rows = [(str(p), str(s), lab, 1.0) for p, s, lab in zip(full["path"], full["speaker"], full["label"])]
    wa = time.perf_counter()
    for f in a.factors:
        for p, s, lab, _ in list(rows[:len(full)]):
            dst = Path(a.audio_cache) / f"{f:g}" / (Path(p).stem + ".wav")
            rows.append((str(speed_copy(Path(p), dst, f)), s, lab, f))
    print(f"speed copies ready ({len(rows) - len(full)} files, {time.perf_counter() - wa:.0f} s)", flush=True)
    tables, extraction, common = extract_aligned([r[0] for r in rows], SETS, cache_dir=a.cache_dir,
                                                 n_jobs=a.n_jobs)
    print("extraction: " + "; ".join(f"{e['feature_set']} {e['computed']} computed, {e['cached']} cached, "
                                     f"{e['wall_s']} s" for e in extraction), flush=True)
    keep = {str(p) for p in common}
    rows = [r for r in rows if r[0] in keep]
    path = np.array([r[0] for r in rows])
    spk = np.array([r[1] for r in rows])
    y = np.array([r[2] for r in rows])
    fac = np.array([r[3] for r in rows])
    pseudo = np.array([s if f == 1.0 else f"{s}@{f:g}" for s, f in zip(spk, fac)])
    raw = np.hstack([tables[s].loc[path].to_numpy(dtype=np.float64) for s in SETS])
    X = np.nan_to_num(speaker_standardize(raw, pseudo))
    classes = np.array(sorted(set(y)))
    orig = fac == 1.0
    configs = [(k, s) for k in a.ks for s in a.lda_shrinkage]

    def choose(train_spk: np.ndarray, use_copies: bool) -> tuple[tuple[int, float], float]:
        """Configuration with the best mean inner UAR on the originals of inner held-out speakers."""
        base_rows = np.where(orig & np.isin(spk, train_spk))[0]
        folds = grouped_inner_splits(spk[base_rows], n_splits=5)
        uar = {c: [] for c in configs}
        for itr, iva in folds:
            inner_spk = np.unique(spk[base_rows[itr]])
            fit_rows = np.where(np.isin(spk, inner_spk) & (orig | use_copies))[0]
            val_rows = base_rows[iva]
            sc = scores(X, y, fit_rows, val_rows, a.ks, a.lda_shrinkage)
            for c in configs:
                uar[c].append(uar_score(y[val_rows], classes[sc[c].argmax(axis=1)]))
        best = max(configs, key=lambda c: np.mean(uar[c]))
        return best, float(np.mean(uar[best]))

    test_rows = np.where(orig)[0]
    preds = {n: np.empty(len(y), object) for n in ("base", "aug", "pick")}
    picks, cpu = [], {"base": 0.0, "aug": 0.0}
    for s in sorted(set(spk)):
        te = np.where(orig & (spk == s))[0]
        train_spk = np.array(sorted(set(spk) - {s}))
        inner, line = {}, []
        for name, use in (("base", False), ("aug", True)):
            c0 = time.process_time()
            cfg, inner[name] = choose(train_spk, use)
            tr = np.where(np.isin(spk, train_spk) & (orig | use))[0]
            preds[name][te] = classes[scores(X, y, tr, te, [cfg[0]], [cfg[1]])[cfg].argmax(axis=1)]
            cpu[name] += time.process_time() - c0
            line.append(f"{name} {uar_score(y[te], preds[name][te]):.3f} (inner {inner[name]:.3f}; "
                        f"k {cfg[0]}, a {cfg[1]}; {len(tr)} rows)")
        picks.append(max(inner, key=inner.get))  # the better inner UAR; base on a tie
        preds["pick"][te] = preds[picks[-1]][te]
        print(f"speaker {s}: " + "; ".join(line) + f"; pick {picks[-1]}", flush=True)
    print(machine_line(load0, os.getloadavg()))
    print(f"{a.classes} classes, {len(test_rows)} test files, speed factors {a.factors}")
    report({n: p[test_rows] for n, p in preds.items()}, y[test_rows], spk[test_rows], cpu, picks)
    print(f"CPU {time.process_time() - t0:.0f} s, wall {time.perf_counter() - w0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
