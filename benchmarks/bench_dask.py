"""``ser predict --cluster local:2`` (Dask) against one machine's own paths, side by side.

``--recordings`` copies (hard links) of one ``--minutes`` synthetic-speech WAV (16 kHz; the
speech of ``bench_inference.py``) are run through ``ser predict`` in a subprocess with the
stage-02 default small-CNN bundle (random weights, default features), three ways in one
run, in turn:

- ``single``: one process, no feature workers (``--workers 0``);
- ``workers``: the default single-machine path (feature worker processes, one per core);
- ``local:N``: ``--cluster local:N`` (a Dask LocalCluster of N single-threaded workers,
  one task per recording; its start-up included).

The windows of the three outputs are checked equal. The per-recording overhead of the
scheduler is measured apart, in this process: ``--overhead-recordings`` recordings of 2 s
on a warm one-worker LocalCluster against the same inline with one torch thread as on a worker
(median wall difference of 3 alternating runs / recordings),
the round trip of an empty task, and the LocalCluster's start-up.

    .venv/bin/python benchmarks/bench_dask.py [--recordings 40] [--minutes 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import small_cnn_bundle, speech_wav  # noqa: E402
from machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _predict(bundle: Path, inputs: Path, out: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ser.run.cli", "predict", str(bundle), str(inputs),
                           "-o", str(out), "--quiet", "--no-resume", *extra], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"ser predict {' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    return wall


def _overhead(bundle_dir: Path, files: list[Path]) -> None:
    """Per-recording cost of the scheduler, in this process: a warm one-worker LocalCluster
    against the same recordings inline (one torch thread in both, as a worker has), and the
    round trip of an empty task."""
    import logging

    import torch
    from distributed import Client, LocalCluster

    from ser.inference.cluster import Job, run_recordings
    from ser.inference.options import InferenceOptions
    from ser.models.bundle import load_bundle

    torch.set_num_threads(1)  # as in the single-threaded worker: the same compute inline and there
    bundle = load_bundle(bundle_dir)
    options = InferenceOptions(workers=0).resolve(bundle)
    jobs = [Job(str(f), f) for f in files]

    def run(cluster: str | None) -> float:
        t0 = time.perf_counter()
        outs = [o for _, o in run_recordings(bundle, jobs, options=options, pool=None, cluster=cluster,
                                             log=lambda m: None)]
        assert all(o.error is None for o in outs)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        t_start = time.perf_counter() - t0
        run(cluster.scheduler_address)  # warm: the worker imports ser and loads the bundle
        run(None)
        pairs = [(run(cluster.scheduler_address), run(None)) for _ in range(3)]  # alternating
        t_cluster, t_local = (float(np.median(v)) for v in zip(*pairs, strict=True))
        t0 = time.perf_counter()
        client.gather([client.submit(int, i, pure=False) for i in range(500)])
        t_empty = (time.perf_counter() - t0) / 500
    n = len(jobs)
    print(f"scheduler overhead ({n} recordings of 2 s, warm one-worker LocalCluster vs inline, "
          f"one torch thread in both, median of 3 alternating runs): {t_cluster:.2f} s vs "
          f"{t_local:.2f} s, "
          f"{(t_cluster - t_local) / n * 1000:.0f} ms per recording; empty task round trip "
          f"{t_empty * 1000:.1f} ms; LocalCluster start-up {t_start:.1f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2, help="N of --cluster local:N")
    ap.add_argument("--overhead-recordings", type=int, default=40)
    ap.add_argument("--skip-main", action="store_true", help="only the scheduler overhead")
    a = ap.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = small_cnn_bundle(tmp / "cnn")
        src = speech_wav(a.minutes, cache=tmp / "cache")
        rec_dir, short_dir = tmp / "recs", tmp / "short"
        for d in (rec_dir, short_dir):
            d.mkdir()
        for i in range(a.recordings):
            os.link(src, rec_dir / f"rec{i:03d}.wav")
        import soundfile as sf

        y, sr = sf.read(src, frames=int(2.0 * 16000), dtype="float32")
        for i in range(a.overhead_recordings):
            sf.write(short_dir / f"s{i:03d}.wav", y, sr, subtype="PCM_16")
        audio_s = a.recordings * a.minutes * 60
        print(f"{a.recordings} recordings x {a.minutes:g} min ({audio_s / 3600:.2f} h of audio), "
              f"small CNN (stage-02 defaults), default features")
        if a.skip_main:
            _overhead(bundle, sorted(short_dir.glob("*.wav")))
            return 0
        modes = {"single (--workers 0)": ("--workers", "0"), "workers (default)": (),
                 f"--cluster local:{a.workers}": ("--cluster", f"local:{a.workers}")}
        walls, tables = {}, {}
        for name, extra in modes.items():
            out = tmp / f"{len(walls)}.csv"
            walls[name] = _predict(bundle, rec_dir, out, *extra)
            tables[name] = pd.read_csv(out)
            print(f"  {name:22s}: {walls[name]:7.1f} s wall, {audio_s / walls[name]:6.1f}x real time",
                  flush=True)
        ref = next(iter(tables.values()))
        for name, t in tables.items():
            pd.testing.assert_frame_equal(t, ref, check_exact=False, rtol=0, atol=1e-6)
        base = walls["single (--workers 0)"]
        for name in list(modes)[1:]:
            print(f"  speed-up of {name} over single: {base / walls[name]:.2f}x")
        print("  outputs: identical windows in all three runs")
        _overhead(bundle, sorted(short_dir.glob("*.wav")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
