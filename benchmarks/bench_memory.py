"""Peak memory of windowed inference as the recording grows (15, 30, 60, 120 min).

For each length, a fresh subprocess loads an untrained small-CNN bundle (stage-02
defaults), notes its resident memory, predicts the whole file with all default
features (``ser.inference.files.predict_paths``, as ``ser predict`` does, writing a CSV) and
reports its peak RSS (``resource.getrusage``: the main process, and the largest
feature worker) and the growth over the loaded-model baseline. The audio is the
cached synthetic speech of ``bench_inference.py`` (written one minute at a time, so
generating it is memory-flat too). Flat peaks mean blocks and batches bound memory,
not the file's length (issue 4, item 2).

``--format m4a`` encodes that audio to AAC (64 kb/s, cached next to the WAV) and
measures the same through ser.signal.audio's ffmpeg decoder; it needs ``ffmpeg`` on PATH or
the ``imageio-ffmpeg`` package (its static binary is then put on the child's PATH).

    .venv/bin/python benchmarks/bench_memory.py [--minutes 15 30 60 120] [--workers N] [--format m4a]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_inference import ROOT, small_cnn_bundle, speech_wav  # noqa: E402
from machine import cpu_name  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import psutil
from ser.inference.files import predict_paths
from ser.inference.options import InferenceOptions
from ser.models.bundle import load_bundle
bundle_dir, wav, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
bundle = load_bundle(bundle_dir)
base = psutil.Process().memory_info().rss
t0 = time.perf_counter()
res = predict_paths(bundle, [wav], options=InferenceOptions(workers=workers), output=out, progress=False)
wall = time.perf_counter() - t0
assert res.failures.empty, res.failures
self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"baseline": base, "peak": self_peak, "worker_peak": child_peak,
                  "windows": len(res.windows), "wall": wall}))
"""


def find_ffmpeg() -> str | None:
    """``ffmpeg`` on PATH, else imageio-ffmpeg's bundled binary, else ``None``."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        try:
            import imageio_ffmpeg

            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            return None
    return exe


def as_m4a(wav: Path, ffmpeg: str) -> Path:
    """The cached AAC (64 kb/s) version of ``wav``, encoded once."""
    m4a = wav.with_suffix(".m4a")
    if not m4a.is_file():
        tmp = m4a.with_suffix(".tmp.m4a")
        print(f"[bench] encoding {wav.name} -> {m4a.name}", file=sys.stderr)
        subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac",
                        "-b:a", "64k", str(tmp)], check=True)
        tmp.replace(m4a)
    return m4a


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[15, 30, 60, 120])
    ap.add_argument("--workers", type=int, default=-1, help="feature workers (-1: one per core)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ser-bench-audio")
    ap.add_argument("--format", choices=["wav", "m4a"], default="wav",
                    help="audio format read (m4a: AAC through ffmpeg)")
    a = ap.parse_args()
    env = dict(os.environ)
    ffmpeg = find_ffmpeg() if a.format == "m4a" else None
    if a.format == "m4a" and ffmpeg is None:
        print("--format m4a needs ffmpeg on PATH or `pip install imageio-ffmpeg`", file=sys.stderr)
        return 2

    mib = 2.0 ** 20
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}; machine: {cpu_name()}, "
          f"{os.cpu_count()} cores; workers={a.workers}; format={a.format}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-mem-") as tmp:
        if ffmpeg is not None:  # the child finds it as `ffmpeg` on PATH, as ser.signal.audio expects
            (Path(tmp) / "bin").mkdir()
            (Path(tmp) / "bin" / "ffmpeg").symlink_to(ffmpeg)
            env["PATH"] = f"{Path(tmp) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        bundle_dir = small_cnn_bundle(Path(tmp) / "small_cnn")
        print(f"{'minutes':>8}{'windows':>9}{'baseline MiB':>14}{'peak MiB':>10}{'growth MiB':>12}"
              f"{'worker peak MiB':>17}{'wall s':>8}")
        for minutes in a.minutes:
            wav = speech_wav(minutes, cache=a.cache)
            if ffmpeg is not None:
                wav = as_m4a(wav, ffmpeg)
            out = Path(tmp) / f"w{minutes:g}.csv"
            proc = subprocess.run([sys.executable, "-c", CHILD, str(bundle_dir), str(wav), str(out),
                                   str(a.workers)], cwd=ROOT, capture_output=True, text=True, env=env,
                                  check=False)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append((minutes, r))
            print(f"{minutes:8g}{r['windows']:9d}{r['baseline'] / mib:14.0f}{r['peak'] / mib:10.0f}"
                  f"{(r['peak'] - r['baseline']) / mib:12.0f}{r['worker_peak'] / mib:17.0f}{r['wall']:8.1f}")
            out.unlink(missing_ok=True)
    peaks = [r["peak"] for _, r in rows]
    print(f"peak RSS range over {a.minutes[0]:g}-{a.minutes[-1]:g} min: "
          f"{(max(peaks) - min(peaks)) / mib:.0f} MiB ({max(peaks) / min(peaks) - 1:.1%}); "
          f"the {a.minutes[-1]:g}-min file's audio alone would be "
          f"{a.minutes[-1] * 60 * 16000 * 4 / mib:.0f} MiB as float32")
    return 0


if __name__ == "__main__":
    t = time.perf_counter()
    rc = main()
    print(f"[bench_memory] {time.perf_counter() - t:.0f} s", file=sys.stderr)
    sys.exit(rc)
