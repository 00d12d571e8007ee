"""Stage 04's diarization with 1 and 2 worker processes (``diarize_workers``; issue 16).

Demo-sized recordings (``ser.data.demo.generate``: caregiver and patient turns, 120 s each
by default) are diarized by :func:`ser.inference.diarize_files.diarize_recordings`, as
stage 04 calls it, once per worker count, each run in a fresh child process (so loading the
models counts for every variant; with N workers the N spawned processes load them too).
Prints wall seconds, CPU seconds (the child and its workers) and whether the written
``speakers.csv`` and its summary are identical to those of the first variant.

Run with nice, e.g.::

    PYTHONPATH=. nice .venv/bin/python benchmarks/bench_diarize_workers.py --caregivers 4 --workers 1 2 2 1
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_line

from ser.data import demo

_CHILD = """
import sys
import pandas as pd
from ser.inference.diarize_files import diarize_recordings
manifest, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
recs = pd.read_csv(manifest, dtype=str, keep_default_na=False)
diarize_recordings(recs, base_dir=manifest.rsplit("/", 1)[0], output=out, resume=False, workers=workers)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caregivers", type=int, default=4, help="demo caregivers (2 recordings each)")
    ap.add_argument("--seconds", type=float, default=120.0, help="length of each recording (s)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 2, 1], help="worker counts, run in order")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    load0 = os.getloadavg()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        demo.generate(root, seed=a.seed, n_caregivers=a.caregivers, recording_s=a.seconds,
                      speakers_per_gender=1, utterances_per_emotion=1, progress=False)
        manifest = root / "cohort" / "manifest.csv"
        first: dict[str, bytes] = {}
        for i, w in enumerate(a.workers):
            out = root / f"speakers_{i}.csv"
            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", _CHILD, str(manifest), str(out), str(w)], env=env, check=True,
                           capture_output=True)
            wall = time.perf_counter() - t
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
            tables = {k: (root / f"speakers_{i}{k}").read_bytes() for k in (".csv", ".summary.csv")}
            first = first or tables
            print(f"workers {w}: {2 * a.caregivers} recordings x {a.seconds:g} s: wall {wall:.1f} s, "
                  f"CPU {cpu:.1f} s, load {os.getloadavg()[0]:.1f}, tables identical to the first run: "
                  f"{tables == first}", flush=True)
    print(machine_line(load0, os.getloadavg()))


if __name__ == "__main__":
    main()
