"""Wall time of the whole demo study (`ser run --profile demo`) after installation.

Runs in fresh temporary data/results folders so nothing cached is reused, then prints
the time of the demo-data step, each stage (from results/run.json) and the total.
Target (issue 2): under 10 minutes on 2 cores.

    .venv/bin/python benchmarks/bench_pipeline.py [--profile demo] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--keep", help="keep outputs in this folder instead of a temp dir")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="ser-bench-"))
    env = dict(os.environ, SER_DATA_DIR=str(work / "data"), SER_RESULTS_DIR=str(work / "results"))
    ser = [sys.executable, "-m", "ser.run.cli"]

    t0 = time.perf_counter()
    subprocess.run([*ser, "demo-data", "--profile", a.profile, "--quiet"], env=env, check=True, cwd=ROOT)
    t_demo = time.perf_counter() - t0
    t1 = time.perf_counter()
    proc = subprocess.run([*ser, "run", "--profile", a.profile, "--quiet"], env=env, cwd=ROOT)
    t_run = time.perf_counter() - t1
    record = json.loads((work / "results" / "run.json").read_text())

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"profile: {a.profile}   exit code: {proc.returncode}")
    print(f"{'demo data':<22}{t_demo:8.1f} s")
    for s in record["stages"]:
        secs = s.get("seconds")
        print(f"{s['stage']:<22}{(secs or float('nan')):8.1f} s   {s['status']}")
    staged = sum(s.get("seconds") or 0 for s in record["stages"])
    print(f"{'report + overhead':<22}{t_run - staged:8.1f} s")
    print(f"{'TOTAL':<22}{t_demo + t_run:8.1f} s   (target < 600 s)")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
