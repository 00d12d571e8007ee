"""Speed of a bundle's ONNX copy (onnxruntime) beside PyTorch fp32 and int8, on the CPU.

Two bundles with random weights, 3 s windows at 16 kHz, 50 % hop (as the study uses):

- ``small_cnn`` with its default options (the study's fast model; ONNX runs the network
  after the log-mel front end, which stays in torch and shares frames between windows);
- ``hf`` with a wav2vec2-base-sized backbone (ONNX runs the whole network).

For each, ``Bundle.predict_proba_starts`` runs over ``--minutes`` (CNN) or
``--hf-minutes`` (transformer) of synthetic audio in the runtimes ``torch fp32``,
``torch int8`` and ``onnx fp32``, with ``--threads`` intra-op threads (default 2, the
machine's cores), interleaved ``--repeats`` times (best of). Prints × real time, CPU
seconds per hour of audio (the figure to compare on a shared machine) and the max |Δp|
against torch fp32, plus the export time.

    .venv/bin/python benchmarks/bench_onnx.py [--minutes 10] [--hf-minutes 0.5] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402

from ser.models import registry, transformer, window  # noqa: E402
from ser.models.bundle import export_onnx, load_bundle, save_bundle  # noqa: E402

SR, WINDOW_S = 16000, 3.0
LABELS = ["angry", "happy", "neutral", "sad"]
RUNS = (("torch", "fp32"), ("torch", "int8"), ("onnx", "fp32"))


def _bundle(folder: Path, arch: str) -> Path:
    torch.manual_seed(0)
    if arch == "hf":
        net = transformer.build_hf_classifier(n_labels=len(LABELS),
                                              config=transformer.base_sized_config("wav2vec2"))
        params = transformer.hf_arch_params(net)
    else:
        net = registry.build_model(arch, n_labels=len(LABELS), sample_rate=SR)
        params = net.arch_params()
    save_bundle(folder, net.eval(), labels=LABELS, sample_rate=SR, window_s=WINDOW_S,
                features=window.features_config(), arch=arch, arch_params=params,
                train_params={}, split={}, metrics={})
    return folder


def _bench(folder: Path, *, minutes: float, repeats: int) -> None:
    t0 = time.perf_counter()
    export_onnx(folder)
    print(f"  export: {time.perf_counter() - t0:.1f} s")
    signal = (0.1 * np.random.default_rng(0).standard_normal(int(minutes * 60 * SR))).astype(np.float32)
    win = int(WINDOW_S * SR)
    starts = np.arange(0, len(signal) - win + 1, win // 2)
    bundles = {rp: load_bundle(folder, runtime=rp[0], precision=rp[1]) for rp in RUNS}
    best = dict.fromkeys(RUNS, float("inf"))
    cpu = dict.fromkeys(RUNS, float("inf"))
    probs = {}
    for _ in range(repeats):
        for rp, b in bundles.items():
            t0, c0 = time.perf_counter(), time.process_time()
            probs[rp] = b.predict_starts(signal, starts, batch_size=b.preferred_batch_size)
            best[rp] = min(best[rp], time.perf_counter() - t0)
            cpu[rp] = min(cpu[rp], time.process_time() - c0)
    ref = probs[("torch", "fp32")]
    for rp in RUNS:
        print(f"  {rp[0]:5s} {rp[1]}: {minutes * 60 / best[rp]:8.1f}x real time "
              f"({best[rp]:.2f} s for {minutes:g} min, {len(starts)} windows; "
              f"{cpu[rp] / minutes * 60:.1f} CPU s per hour of audio), "
              f"max |dp| vs torch fp32 {np.abs(probs[rp] - ref).max():.1e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="audio for the CNN")
    ap.add_argument("--hf-minutes", type=float, default=0.5, help="audio for the transformer (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"machine: {cpu_name()}, {a.threads} threads; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"small_cnn (defaults), {WINDOW_S:g} s windows, 50 % hop:")
        _bench(_bundle(Path(tmp) / "cnn", "small_cnn"), minutes=a.minutes, repeats=a.repeats)
        if a.hf_minutes > 0:
            print(f"hf (wav2vec2-base-sized, random weights), {WINDOW_S:g} s windows, 50 % hop:")
            _bench(_bundle(Path(tmp) / "hf", "hf"), minutes=a.hf_minutes, repeats=max(1, a.repeats - 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
