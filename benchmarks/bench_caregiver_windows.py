"""Experiment: does the model hear the caregiver better when pauses and the patient are cut out?

On a finished demo run (``windows.csv``, the trained bundle, the cohort recordings), the
model is run a second time on every window with only the caregiver's speech in it:

1. the recording is moved to the bundle's pitch-normalisation target (as stage 04 does);
2. WebRTC speech frames (:func:`ser.signal.features.speech_activity`, 30 ms) are kept, and a
   speech run is dropped as another voice when most of its voiced Praat frames lie more
   than ``--band-st`` semitones below the recording's register (the demo patient is an
   older man an octave below the caregivers);
3. the kept samples of each window (at least ``--min-kept-s`` seconds, otherwise the window
   has no emotion) are repeated to the model's window length and classified.

The window table with these probabilities is written to ``--out`` and analysed like
part (a) of ``bench_stats_validation.py`` (printed next to the original model run). It is
an experiment, not a pipeline step: it needs the demo's single-voice-per-register design.

    .venv/bin/python benchmarks/bench_caregiver_windows.py \\
        [--results results] [--truth data/demo/truth.json] [--out /tmp/caregiver_windows.csv]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import parselmouth
from tqdm.auto import tqdm

from ser.core import paths
from ser.inference import uncertainty
from ser.models.bundle import load_bundle
from ser.run import params as P
from ser.signal import audio, features, pitchnorm
from ser.stats import validation as V

FRAME_MS = 30


def caregiver_mask(y: np.ndarray, sr: int, *, register_hz: float, band_st: float) -> np.ndarray:
    """Per sample: inside a speech run of the recording's own voice (True) or not."""
    hop = sr * FRAME_MS // 1000
    speech = features.speech_activity(y, sr, frame_ms=FRAME_MS)
    pitch = parselmouth.Sound(y.astype(np.float64), sr).to_pitch_ac(
        time_step=0.01, pitch_floor=pitchnorm.F0_MIN_HZ, pitch_ceiling=pitchnorm.F0_MAX_HZ)
    f0, t = pitch.selected_array["frequency"], pitch.xs()
    with np.errstate(divide="ignore", invalid="ignore"):
        st = 12 * np.log2(np.where(f0 > 0, f0, np.nan) / register_hz)
    keep = speech.copy()
    edges = np.diff(np.concatenate(([0], speech.astype(np.int8), [0])))
    for a, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        voiced = (t >= a * FRAME_MS / 1000) & (t < e * FRAME_MS / 1000) & np.isfinite(st)
        if voiced.any() and np.mean(st[voiced] < -band_st) > 0.5:
            keep[a:e] = False
    mask = np.repeat(keep, hop)
    return np.concatenate([mask, np.zeros(max(0, len(y) - len(mask)), bool)])[:len(y)]


def caregiver_windows(windows: pd.DataFrame, results: Path, *, band_st: float,
                      min_kept_s: float) -> pd.DataFrame:
    """``windows`` with its ``p_<label>`` (and uncertainty columns) recomputed on the
    caregiver's speech alone."""
    recs = pd.read_csv(results / "tables" / "recordings.csv", dtype={"caregiver": str})
    stamp = json.loads((results / "tables" / "windows.model.json").read_text())
    bundle = load_bundle(results / "models" / stamp["model"])
    sr, win_n = int(bundle.sample_rate), int(bundle.window_samples)
    target = float(getattr(bundle, "pitch_norm_hz", 0.0) or 0.0)
    pcols = [f"p_{lb}" for lb in bundle.labels]
    out = windows.copy()
    out[pcols] = np.nan
    for rec, w in tqdm(windows.groupby("recording"), desc="recordings"):
        y, _ = audio.load(recs.loc[recs["recording"] == rec, "path"].iloc[0], sample_rate=sr)
        register = pitchnorm.register_hz([y], sr)
        heard = (pitchnorm.shift_pitch(y, sr, semitones=pitchnorm.semitones_to(target, register))
                 if target > 0 else y)
        mask = caregiver_mask(y, sr, register_hz=register, band_st=band_st)
        batch, rows = [], []
        for i, (s, e) in zip(w.index, w[["start_s", "end_s"]].to_numpy()):
            a, b = round(s * sr), round(e * sr)
            kept = heard[a:b][mask[a:b]]
            if len(kept) >= min_kept_s * sr:
                batch.append(np.resize(kept, win_n))
                rows.append(i)
        if rows:
            out.loc[rows, pcols] = bundle.predict_proba(np.stack(batch).astype(np.float32))
    if "emotion_top_p" in out:  # the uncertainty of the recomputed probabilities
        out["emotion_entropy"], out["emotion_top_p"] = uncertainty.emotion_uncertainty(
            out[pcols].to_numpy())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(paths.results_dir()))
    ap.add_argument("--truth", default=str(paths.demo_dir() / "truth.json"))
    ap.add_argument("--band-st", type=float, default=pitchnorm.BAND_ST,
                    help="speech runs mostly this many semitones below the register are another voice")
    ap.add_argument("--min-kept-s", type=float, default=0.5,
                    help="windows with less caregiver speech than this (s) get no emotion")
    ap.add_argument("--out", default=None, help="CSV for the caregiver-only window table")
    ap.add_argument("--n-jobs", type=int, default=2)
    a = ap.parse_args()
    pd.set_option("display.width", 200)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores; "
          f"{dt.datetime.now().isoformat(timespec='minutes')}")
    results, truth = Path(a.results), V.load_truth(a.truth)
    msr = float(P.load_stage_params("06_time_invariant")["min_speech_ratio"])
    t0 = time.perf_counter()
    original = pd.read_csv(results / "tables" / "windows.csv", dtype={"caregiver": str})
    gated = caregiver_windows(original, results, band_st=a.band_st, min_kept_s=a.min_kept_s)
    print(f"caregiver-only windows: {time.perf_counter() - t0:.1f} s; "
          f"{gated.filter(regex='^p_').notna().all(axis=1).mean():.1%} of windows get an emotion")
    if a.out:
        gated.to_csv(a.out, index=False)
    seg = pd.read_csv(Path(a.truth).parent / "cohort" / "segments.csv")
    exp = V.expected_through_model(truth, V.pure_window_outputs(original, seg))
    for name, w in (("model on the whole window", original), ("model on caregiver speech only", gated)):
        rec = V.recovery_table(w, truth, n_jobs=a.n_jobs, min_speech_ratio=msr)
        rec = rec[rec["feature"].str.startswith("p_")]
        rec = rec.merge(exp[["feature", "term", "expected_through_model"]], on=["feature", "term"])
        print(f"\n-- {name}")
        print(rec[["feature", "term", "value", "expected_through_model", "estimate", "ci_low",
                   "ci_high", "p_fdr", "verdict"]].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        checked = rec[rec["ok"].notna() & (rec["sign"] != 0)]
        print(f"planted emotion effects recovered: {int(checked['ok'].sum())}/{len(checked)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
