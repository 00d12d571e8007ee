"""Robustness levers, one at a time: leave-one-corpus-out UAR of the classical family (issue 15 item 4).

EmoDB, EMOVO and TurEV-DB, 4 classes (angry, happy, neutral, sad; TurEV-DB's calm ->
neutral). Every configuration is the *reference* (eGeMAPS + RBF SVM, per-speaker
normalisation, tuned by speaker-grouped inner CV on the training corpora:
``ser.train.cross_corpus_eval.evaluate_loco``) with one lever switched:

- ``no_speaker_norm``: no per-speaker feature normalisation.
- ``corpus_norm``: per-corpus instead of per-speaker normalisation (every corpus, the
  held-out one included, z-scored by its own unlabelled features). Per-corpus *and*
  per-speaker is the reference itself: a speaker z-score undoes any per-corpus affine map.
- ``loudness``: every file normalised to -23 dBFS active RMS
  (``ser.signal.augment.normalise_loudness``) before feature extraction.
- ``channel_aug``: the training corpora get one augmented copy of each utterance through
  a random channel (``ser.signal.augment.random_channel``: reverberation, noise 0-20 dB
  SNR, telephone band, lapel microphone, mu-law codec); copies only ever train, are
  z-scored as their own speaker (``<speaker>~aug``: a voice in a new channel) and are
  grouped with their speaker in the inner CV.
- ``pitch_norm``: every speaker shifted to a 200 Hz register (``ser.signal.pitchnorm``,
  PSOLA) before feature extraction.
- ``speed_aug``: the training corpora get two copies of each utterance played 0.9 and 1.1
  times as fast (``ser.signal.augment.speed``: tempo, pitch and formants together, another
  voice saying the same thing), treated as ``channel_aug``'s copies (``<speaker>~sp0.9``).

TurEV-DB (1735 files) is subsampled to ``--max-per-corpus`` utterances balanced by
speaker and label, to bound the extraction of the modified copies. Modified audio is
written once under ``--cache-dir``/levers_audio, features are cached; the table is
printed as markdown.

    nice .venv/bin/python benchmarks/bench_levers.py [--data-root ../shared/data]
        [--max-per-corpus 400] [--levers ...] [--n-jobs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feature_tables import extract_aligned, read_labelled  # noqa: E402
from machine import machine_line  # noqa: E402

from ser.core import paths  # noqa: E402
from ser.models.classical.features import speaker_standardize  # noqa: E402
from ser.signal import audio, augment, pitchnorm  # noqa: E402
from ser.train import cross_corpus_eval  # noqa: E402

LABELS = ("angry", "happy", "neutral", "sad")
SR = 16000
LEVERS = ("reference", "no_speaker_norm", "corpus_norm", "loudness", "channel_aug", "pitch_norm", "speed_aug")
#: Speed factors of the ``speed_aug`` copies.
SPEEDS: tuple[float, ...] = (0.9, 1.1)


def _subsample(t: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, as evenly as possible over speaker x label cells."""
    if len(t) <= n:
        return t
    cells = t.groupby(["speaker", "label"], sort=True)
    per = max(1, n // cells.ngroups)
    return cells.sample(frac=1.0, random_state=seed).groupby(["speaker", "label"]).head(per)


def _derived(table: pd.DataFrame, kind: str, out_dir: Path, seed: int) -> pd.Series:
    """Write the ``kind`` version of every file once; return the new paths (same index)."""
    folder = out_dir / kind
    new = {i: folder / r.corpus / (Path(r.path).stem + ".wav") for i, r in table.iterrows()}
    todo = table[[not new[i].is_file() for i in table.index]]
    if len(todo):
        t0 = time.perf_counter()
        if kind == "pitch":
            waves = {str(r.path): audio.load(r.path, sample_rate=SR)[0] for r in todo.itertuples()}
            groups = {str(r.path): f"{r.corpus}/{r.speaker}" for r in todo.itertuples()}
            # every file of a speaker is in todo on a first run; a partial rerun re-estimates
            # the register from the files left, close enough for a benchmark
            shifted, _ = pitchnorm.normalise_by_group(waves, groups, SR, target_hz=200.0)
            for i, r in todo.iterrows():
                audio.write_wav(new[i], shifted[str(r.path)], SR)
        else:
            for i, r in todo.iterrows():
                y = audio.load(r.path, sample_rate=SR)[0]
                if kind == "loudness":
                    z = augment.normalise_loudness(y)
                elif kind.startswith("speed"):
                    z = np.clip(augment.speed(y, SR, factor=float(kind.removeprefix("speed"))), -1.0, 1.0)
                else:
                    rng = np.random.default_rng([seed, zlib.crc32(str(r.path).encode())])
                    z, _ = augment.random_channel(y, SR, rng=rng)
                    z = np.clip(z, -1.0, 1.0)
                audio.write_wav(new[i], z, SR)
        print(f"{kind}: wrote {len(todo)} files in {time.perf_counter() - t0:.0f} s", flush=True)
    return pd.Series({i: str(p) for i, p in new.items()})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(paths.ROOT.parent / "shared" / "data"))
    ap.add_argument("--corpora", nargs="+", default=["emodb", "emovo", "turev"])
    ap.add_argument("--feature-set", default="egemaps")
    ap.add_argument("--estimator", default="svm_rbf")
    ap.add_argument("--levers", nargs="+", default=list(LEVERS), choices=LEVERS)
    ap.add_argument("--max-per-corpus", type=int, default=400)
    ap.add_argument("--cache-dir", default=str(paths.results_dir() / "cache"))
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--inner-folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    table = pd.concat([_subsample(t, a.max_per_corpus, a.seed)
                       for t in read_labelled(a.corpora, a.data_root, LABELS)], ignore_index=True)
    cache = Path(a.cache_dir)
    audio_dir = cache / "levers_audio"
    variants = {"original": table["path"].astype(str)}
    if "loudness" in a.levers:
        variants["loudness"] = _derived(table, "loudness", audio_dir, a.seed)
    if "pitch_norm" in a.levers:
        variants["pitch"] = _derived(table, "pitch", audio_dir, a.seed)
    if "channel_aug" in a.levers:
        variants["aug"] = _derived(table, "aug", audio_dir, a.seed)
    if "speed_aug" in a.levers:
        for f in SPEEDS:
            variants[f"speed{f:g}"] = _derived(table, f"speed{f:g}", audio_dir, a.seed)
    all_paths = pd.concat(variants.values(), ignore_index=True)
    feats, extraction, common = extract_aligned(all_paths, [a.feature_set], cache_dir=cache / "features",
                                                 n_jobs=a.n_jobs)
    X_all = feats[a.feature_set]
    ok = np.ones(len(table), dtype=bool)
    for v in variants.values():
        ok &= v.isin(common).to_numpy()
    table = table[ok]
    variants = {k: v[ok] for k, v in variants.items()}

    y = table["label"].to_numpy()
    spk = table["speaker"].astype(str).to_numpy()
    corp = table["corpus"].astype(str).to_numpy()
    speaker_key = np.char.add(np.char.add(corp, "/"), spk)
    rows = []
    for lever in a.levers:
        t0 = time.perf_counter()
        variant = {"loudness": "loudness", "pitch_norm": "pitch"}.get(lever, "original")
        X = X_all.loc[variants[variant]].to_numpy(dtype=np.float64)
        labels, speakers, corpus_of, norm_of = y, spk, corp, speaker_key
        extra = np.zeros(len(y), dtype=bool)
        if lever == "channel_aug":
            X = np.vstack([X, X_all.loc[variants["aug"]].to_numpy(dtype=np.float64)])
            labels, speakers, corpus_of = (np.concatenate([v, v]) for v in (y, spk, corp))
            norm_of = np.concatenate([speaker_key, np.char.add(speaker_key, "~aug")])
            extra = np.concatenate([extra, np.ones(len(y), dtype=bool)])
        if lever == "speed_aug":
            X = np.vstack([X, *(X_all.loc[variants[f"speed{f:g}"]].to_numpy(dtype=np.float64) for f in SPEEDS)])
            labels, speakers, corpus_of = (np.concatenate([v] * (1 + len(SPEEDS))) for v in (y, spk, corp))
            norm_of = np.concatenate([speaker_key, *(np.char.add(speaker_key, f"~sp{f:g}") for f in SPEEDS)])
            extra = np.concatenate([extra, np.ones(len(y) * len(SPEEDS), dtype=bool)])
        if lever == "corpus_norm":
            X = speaker_standardize(X, corpus_of)
        elif lever != "no_speaker_norm":
            X = speaker_standardize(X, norm_of)
        index = pd.RangeIndex(len(X))
        res = cross_corpus_eval.evaluate_loco(
            {a.feature_set: pd.DataFrame(X, index=index)}, labels, speakers, corpus_of,
            estimator=a.estimator, speaker_norm=False, inner_folds=a.inner_folds, in_corpus_loso=False,
            seed=a.seed, n_jobs=a.n_jobs, progress=False, train_only=extra)
        rows.append(res.table.assign(lever=lever, wall_s=round(time.perf_counter() - t0)))
        print(res.table[["held_out_corpus", "uar", "macro_f1", "ece"]].assign(lever=lever).to_string(index=False),
              flush=True)

    total = time.perf_counter() - t_start
    load1 = os.getloadavg()
    out = pd.concat(rows, ignore_index=True)
    print("\n" + machine_line(load0, load1))
    summary = table.groupby("corpus").agg(utterances=("label", "size"), speakers=("speaker", "nunique"))
    print("data (4 classes):\n" + summary.to_markdown())
    print("\nfeature extraction (cached):\n" + pd.DataFrame(extraction).to_markdown(index=False))
    wide = out.pivot(index="lever", columns="held_out_corpus", values="uar").loc[a.levers]
    wide["mean"] = wide.mean(axis=1)
    ece = out.pivot(index="lever", columns="held_out_corpus", values="ece").loc[a.levers]
    wide = wide.join(ece.add_prefix("ece_"))
    wide["wall_s"] = out.groupby("lever")["wall_s"].first()
    print(f"\nLOCO UAR per held-out corpus, {a.feature_set} + {a.estimator}, one lever changed from the reference:")
    print(wide.round(3).to_markdown())
    print(f"\ntotal wall time: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
