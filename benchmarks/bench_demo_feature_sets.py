"""Out-of-fold and held-out test UAR of the demo's classical candidate with other feature sets.

The candidate of ``params/02_train.yaml`` (linear SVM, speaker normalisation) with only its
``feature_set`` changed, cross-validated as stage 02 does it (``ser.train.cv.train_candidates``:
3 speaker-grouped folds, seed 0, pitch normalisation 200 Hz, 2-s windows) and scored on the
test speakers as stage 03 does it (``ser.train.evaluation.evaluate_bundle``, centre window,
uncalibrated; the temperature does not change the arg-max). Reads a finished run's
``utterances.csv``; writes the bundles and ``uar.json`` to ``--out``.

    .venv/bin/python benchmarks/bench_demo_feature_sets.py --utterances results/tables/utterances.csv \\
        --out /tmp/fs egemaps egemaps_lld_pooled compare_lld_pooled egemaps_lld_pooled+compare_lld_pooled
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ser.models.bundle import load_bundle
from ser.train import cv, evaluation
from ser.train.metrics import uar

LABELS = ["angry", "happy", "neutral", "sad"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", required=True, help="utterances.csv of a demo run (stage 01)")
    ap.add_argument("--out", required=True, help="folder for the bundles and uar.json")
    ap.add_argument("feature_sets", nargs="+", help="feature sets; a+b is early fusion of a and b")
    a = ap.parse_args()
    utterances = pd.read_csv(a.utterances)
    out = Path(a.out)
    results = {}
    for fs in a.feature_sets:
        sets = fs.split("+")
        spec = {"name": "demo_" + fs.replace("+", "_") + "_svm", "family": "classical",
                "feature_set": sets[0] if len(sets) == 1 else sets, "estimator": "svm", "speaker_norm": True}
        (c,) = cv.parse_candidates([spec], default_name="demo_cnn")
        t0, w0 = time.process_time(), time.perf_counter()
        cv.train_candidates(utterances, [c], models_dir=out, labels=LABELS, window_s=2.0, sample_rate=16000,
                            cv_folds=3, seed=0, pitch_norm_hz=200.0, progress=False)
        oof = pd.read_csv(out / c.name / cv.OOF_FILE)
        pred = np.array(LABELS)[oof[[f"p_{lab}" for lab in LABELS]].to_numpy().argmax(axis=1)]
        folds = [uar(g["label"], pred[g.index], labels=LABELS) for _, g in oof.groupby("fold")]
        metrics, _ = evaluation.evaluate_bundle(load_bundle(out / c.name), utterances, split="test", progress=False)
        results[fs] = {"oof_uar": uar(oof["label"], pred, labels=LABELS), "oof_fold_uar": folds,
                       "test_uar": metrics["uar"], "test_macro_f1": metrics["macro_f1"],
                       "cpu_s": time.process_time() - t0, "wall_s": time.perf_counter() - w0}
        print(fs, json.dumps(results[fs]), flush=True)
    (out / "uar.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
