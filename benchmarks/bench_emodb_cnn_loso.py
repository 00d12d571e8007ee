"""EmoDB leave-one-speaker-out for the CNN family: a reduced check on a few held-out speakers.

Issue 14, item 6. The full 10-fold LOSO of a log-mel network costs hours of CPU on a 2-core
machine, so this runs the chosen held-out speakers only (``--test-speakers``). For each, the
network (stage 02's defaults: small CNN, speaker pitch normalisation to ``--pitch-norm-hz``,
2 s windows, class-weighted loss, augmentation) is trained on the other speakers, stopped
early on two of them (``--n-val``, the first ones in sorted order that are not the test
speaker: fixed a priori, never chosen on the test speaker), and scored on the held-out
speaker's centre windows (:func:`ser.train.evaluation.evaluate_bundle`).

    .venv/bin/python benchmarks/bench_emodb_cnn_loso.py --test-speakers 03 08 [--classes 7]
        [--epochs 40] [--patience 10] [--pitch-norm-hz 200] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_name  # noqa: E402

from ser.core import paths  # noqa: E402
from ser.data import corpora  # noqa: E402
from ser.models.bundle import load_bundle  # noqa: E402
from ser.train.evaluation import evaluate_bundle  # noqa: E402
from ser.train.loop import train  # noqa: E402
from ser.train.metrics import summary_metrics  # noqa: E402

LABELS = {7: ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"),
          4: ("angry", "happy", "neutral", "sad")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(paths.ROOT.parent / "shared" / "data" / "emodb"))
    ap.add_argument("--test-speakers", nargs="+", default=["03", "08"])
    ap.add_argument("--classes", type=int, choices=(7, 4), default=7)
    ap.add_argument("--n-val", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--pitch-norm-hz", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", help="write per-speaker rows and predictions here")
    a = ap.parse_args()

    t_start, load0 = time.perf_counter(), os.getloadavg()
    labels = list(LABELS[a.classes])
    table, _ = corpora.read_corpus("emodb", paths.resolve(a.data_root), labels=labels)
    table = table[table["label"].notna()].reset_index(drop=True)
    speakers = sorted(table["speaker"].astype(str).unique())
    unknown = sorted(set(a.test_speakers) - set(speakers))
    if unknown:
        raise SystemExit(f"--test-speakers {unknown} are not EmoDB speakers {speakers}")
    rows, preds = [], []
    for spk in a.test_speakers:
        val = [s for s in speakers if s != spk][:a.n_val]
        split = table["speaker"].astype(str).map(lambda s, t=spk, v=tuple(val): "test" if s == t
                                                 else "val" if s in v else "train")
        fold = table.assign(split=split)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            out = train(fold, out_dir=Path(tmp) / "cnn", labels=labels, epochs=a.epochs, patience=a.patience,
                        pitch_norm_hz=a.pitch_norm_hz, seed=a.seed, device="cpu", num_workers=0,
                        progress=False)
            metrics, pred = evaluate_bundle(load_bundle(out), fold, split="test", progress=False)
            best = json.loads((out / "model.json").read_text(encoding="utf-8"))["metrics"].get("val", {})
        rows.append({"test_speaker": spk, "val_speakers": " ".join(val), "n_test": metrics["n_utterances"],
                     "uar": metrics["uar"], "macro_f1": metrics["macro_f1"],
                     "best_val_uar": best.get("uar"), "best_epoch": best.get("epoch"), "seconds": round(time.perf_counter() - t0)})
        print(rows[-1], flush=True)
        preds.append(pred.assign(test_speaker=spk))
    pred = pd.concat(preds)
    ok = pred["error"].isna() if "error" in pred else pd.Series(True, index=pred.index)
    pooled = summary_metrics(pred.loc[ok, "label"].to_numpy(), pred.loc[ok, "pred"].to_numpy(), labels)
    res = pd.DataFrame(rows)
    print(f"machine: {platform.node()} ({cpu_name()}), {os.cpu_count()} cores; load "
          f"{load0[0]:.1f}/{os.getloadavg()[0]:.1f}; {a.classes} classes; pitch norm {a.pitch_norm_hz} Hz; "
          f"total {time.perf_counter() - t_start:.0f} s")
    print(res.to_markdown(index=False, floatfmt=".3f"))
    print(f"pooled over the {len(rows)} held-out speakers: UAR {pooled['uar']:.3f}, "
          f"macro-F1 {pooled['macro_f1']:.3f}")
    if a.out_dir:
        Path(a.out_dir).mkdir(parents=True, exist_ok=True)
        res.to_csv(Path(a.out_dir) / "cnn_loso.csv", index=False)
        pred.to_csv(Path(a.out_dir) / "cnn_loso_predictions.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
