"""Which speech detector should give the windows' ``speech_ratio`` (stage 04 ``vad``)?

Frame-level precision/recall/F1 of WebRTC's and Silero's detectors against the demo cohort's
annotated turns (``segments.csv``, pauses excluded), and the error of each 2 s window's
speech ratio (hop 1 s) against the true speech fraction of the window.

Usage: ``PYTHONPATH=. python benchmarks/bench_vad_windows.py OUT_DIR N_CAREGIVERS SECONDS``
(the demo cohort is generated into OUT_DIR).
"""
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ser.data import demo
from ser.inference.speakers import covered_seconds
from ser.signal import audio, features, vad

SR = 16000


def main() -> None:
    root, n, secs = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    demo.generate(root, seed=0, n_caregivers=n, recording_s=secs, speakers_per_gender=1,
                  utterances_per_emotion=1, progress=False)
    seg = pd.read_csv(root / "cohort" / "segments.csv")
    man = pd.read_csv(root / "cohort" / "manifest.csv")
    rows = []
    for rec in man.recording:
        y, _ = audio.load(root / "cohort" / f"{rec}.wav", sample_rate=SR)
        g = seg[(seg.recording == rec) & (seg.role != "pause")]
        iv = g[["start_s", "end_s"]].to_numpy()
        starts = np.arange(0, len(y) / SR - 2.0 + 1e-9, 1.0)
        # true speech fraction per 2 s window
        true_ratio = covered_seconds(iv, starts, starts + 2.0) / 2.0
        for m in ("webrtc", "silero"):
            t = time.perf_counter()
            sp, fs = vad.speech_frames(y, SR, method=m)
            sec = time.perf_counter() - t
            truth = vad.segments_to_frames(iv, frame_s=fs, n_frames=len(sp))
            f = vad.frame_f1(sp, truth)
            df = features.window_features(y, SR, starts_s=starts, window_s=2.0,
                                          speech=None if m == "webrtc" else (sp, fs))
            rows.append({"recording": rec, "vad": m, **f,
                         "ratio_mae": float(np.nanmean(np.abs(df["speech_ratio"] - true_ratio))),
                         "ratio_r": float(np.corrcoef(df["speech_ratio"], true_ratio)[0, 1]),
                         "x_rt": len(y) / SR / sec})
    r = pd.DataFrame(rows)
    print(r.groupby("vad")[["precision", "recall", "f1", "ratio_mae", "ratio_r", "x_rt"]].mean().round(3).to_string())


if __name__ == "__main__":
    main()
