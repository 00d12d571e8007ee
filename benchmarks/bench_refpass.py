"""Stage 04's CPU with a speaker-normalised classical bundle: the reference pass and the windows pass.

Runs :func:`ser.inference.table.predict_table` (stage 04's function, default ``workers``) on the
first ``--n`` recordings of a finished demo run with its deployed bundle, and prints the CPU
seconds of this process and its feature workers (``getrusage``), split into the reference pass
(:func:`ser.inference.speaker_norm.unit_references`, its own worker pool) and the rest, the
wall time and the load average. Variants:

- ``reuse``: the code as it is (the windows pass takes the reference windows' model features);
- ``recompute``: the windows pass computes every window's features again (``known`` dropped).

Run the same script with ``PYTHONPATH`` on an older checkout to measure that code (it has no
``known``; both variants then run the old code).

    nice .venv/bin/python benchmarks/bench_refpass.py --run /tmp/demo_run --variant reuse \\
        --out /tmp/refpass/reuse.csv [--n 6]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import pandas as pd

from ser.inference import recording, speaker_norm
from ser.inference.options import InferenceOptions
from ser.inference.table import predict_table
from ser.models.bundle import load_bundle


def _cpu() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished demo run (results/, data/)")
    ap.add_argument("--variant", choices=["reuse", "recompute"], default="reuse")
    ap.add_argument("--out", type=Path, required=True, help="windows.csv to write")
    ap.add_argument("--n", type=int, default=6, help="first N recordings of recordings.csv")
    args = ap.parse_args()
    results = args.run / "results"
    name = json.loads((results / "models" / "deployed.json").read_text())["model_name"]
    bundle = load_bundle(results / "models" / name)
    recs = pd.read_csv(results / "tables" / "recordings.csv").head(args.n)
    if args.variant == "recompute":
        real = recording.predict_file

        def without_known(*a, **kw):
            kw.pop("known", None)
            return real(*a, **kw)

        recording.predict_file = without_known
    marks: dict[str, tuple[float, float, float]] = {}
    real_refs = speaker_norm.unit_references

    def timed_refs(*a, **kw):
        out = real_refs(*a, **kw)
        marks["reference"] = (*_cpu(), time.perf_counter())
        return out

    speaker_norm.unit_references = timed_refs
    load0, t0, (me0, kids0) = os.getloadavg(), time.perf_counter(), _cpu()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    predict_table(bundle, recs, options=InferenceOptions(hop_s=1.0), out_csv=args.out,
                  failures_csv=args.out.with_name(args.out.stem + ".failures.csv"), progress=False)
    me1, kids1 = _cpu()
    wall = time.perf_counter() - t0
    rme, rkids, rt = marks.get("reference", (me0, kids0, t0))
    ref_cpu = (rme - me0) + (rkids - kids0)
    total = (me1 - me0) + (kids1 - kids0)
    print(json.dumps({"variant": args.variant, "model": name, "recordings": len(recs),
                      "cpu_s": round(total, 1), "reference_pass_cpu_s": round(ref_cpu, 1),
                      "windows_pass_cpu_s": round(total - ref_cpu, 1), "wall_s": round(wall, 1),
                      "load_before": [round(x, 2) for x in load0],
                      "load_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
