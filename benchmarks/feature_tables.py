"""Classical feature tables for the benchmarks: extracted (cached), timed, aligned."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ser.core import paths
from ser.data import corpora
from ser.models.classical import features


def extract_aligned(paths: Sequence[str], feature_sets: Iterable[str], *, cache_dir: str | Path,
                    n_jobs: int) -> tuple[dict[str, pd.DataFrame], list[dict], pd.Index]:
    """Feature tables of ``paths`` for each feature set, restricted to the files every set read.

    Returns:
        ``({feature_set: table indexed by path, rows in the common order}, one timing row per
        feature set, the common index)``; files that failed are printed as a warning.
    """
    feats: dict[str, pd.DataFrame] = {}
    extraction: list[dict] = []
    for fs in dict.fromkeys(feature_sets):
        t0 = time.perf_counter()
        X, err = features.extract_features(paths, feature_set=fs, sample_rate=16000,
                                            cache_dir=cache_dir, n_jobs=n_jobs, progress=False)
        if len(err):
            print(f"WARNING: {len(err)} file(s) failed for {fs}:\n{err.to_string(index=False)}")
        feats[fs] = X
        extraction.append({"feature_set": fs, "dims": X.shape[1], "files": len(X),
                           "computed": X.attrs.get("n_computed"), "cached": X.attrs.get("n_cached"),
                           "wall_s": round(time.perf_counter() - t0, 1)})
    common = feats[next(iter(feats))].index
    for X in feats.values():
        common = common.intersection(X.index, sort=False)
    return {k: v.loc[common] for k, v in feats.items()}, extraction, common


def read_labelled(names: Iterable[str], data_root: str | Path, labels: Sequence[str]) -> list[pd.DataFrame]:
    """Each corpus ``<data_root>/<name>`` read by its reader, only the files with one of
    ``labels``; ``SystemExit`` naming a corpus without any."""
    out = []
    for name in names:
        t, _ = corpora.read_corpus(name, Path(paths.resolve(data_root)) / name, labels=labels)
        t = t[t["label"].notna()]
        if len(t) == 0:
            raise SystemExit(f"no {name} files with labels {tuple(labels)} under {data_root}/{name}")
        out.append(t)
    return out
