"""Windowed CPU inference speed of a wav2vec2-base-sized emotion classifier (random weights).

Cuts ``--minutes`` of synthetic 16 kHz audio into ``--window-s`` windows every
``--hop-s`` seconds (defaults: 3 s windows, 50 % hop, as the study uses), runs
:class:`ser.models.transformer.HFAudioClassifier` over them in batches under ``torch.inference_mode``
with ``torch.set_num_threads(--threads)`` (default 2), once per precision mode:

- ``fp32``: the float32 model;
- ``bf16``: CPU autocast to bfloat16 (oneDNN; fast where the CPU has AVX512-BF16/AMX);
- ``int8``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (int8
  weights, activations quantised per batch; the conv feature encoder stays float32);
- ``int8+bf16``: :func:`ser.models.quantize.quantize_for_cpu`, what ``ser predict --precision int8``
  runs: int8 ``nn.Linear`` layers and the convolutions (feature encoder and positional
  conv) in bfloat16 (quantised linears take float32 input, so autocast cannot cover the
  whole model).

For each mode it prints × real time (audio seconds per wall second; the same figure
holds for 1 hour since the work is linear in duration), the CPU seconds used (so
contention from other processes can be told apart), the max |Δp| of the
probabilities against fp32, and the analytic model FLOP rate achieved.

With ``--e2e MINUTES`` it then saves the model as a bundle (``arch: hf``, 3 s windows)
and times ``ser predict BUNDLE FILE -o OUT.csv --precision P --quiet`` in a subprocess
on ``MINUTES`` of the speech-like audio of ``bench_inference.py`` (all default
features, default hop = half the window, default workers), for each precision in
``--e2e-precisions`` (default ``int8``). Target (issue 4, item 6): >= 15x real time on
2 cores for 1 hour (``--e2e 60``).

    .venv/bin/python benchmarks/bench_inference_hf.py [--minutes 5] [--modes fp32,int8] \
        [--e2e 60] [--e2e-precisions int8,fp32]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser.core.atomic import atomic_write_json  # noqa: E402
from ser.models import quantize, transformer, window  # noqa: E402

MODES = ("fp32", "bf16", "int8", "int8+bf16")
LABELS = ["angry", "happy", "neutral", "sad"]


def synthetic_audio(seconds: float, *, sr: int, seed: int) -> np.ndarray:
    """Speech-like float32 audio: harmonic bursts with a gliding F0 and pauses, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 180 + 60 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    gate = (np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) > -0.2).astype(np.float64)
    y = 0.2 * voiced * gate + 0.01 * rng.standard_normal(t.size)
    return y.astype(np.float32)


class _Runner:
    """A model in one precision mode, with a bundle's ``predict_proba``
    (see ``ser.inference.protocol.ModelBundle``)."""

    def __init__(self, model: nn.Module, mode: str, *, window_s: float) -> None:
        self.mode = mode
        self.labels = LABELS
        self.sample_rate = transformer.SAMPLE_RATE
        self.window_s = window_s
        self.window_samples = int(round(window_s * transformer.SAMPLE_RATE))
        if "int8" in mode:
            model = quantize.quantize_for_cpu(model, bf16_convs=mode == "int8+bf16")
        self.model = model.eval()
        self.bf16 = mode == "bf16"

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
        out = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            for i in range(0, len(windows), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(windows[i:i + batch_size]))
                out.append(torch.softmax(self.model(x).float(), dim=1).numpy())
        return np.concatenate(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="synthetic audio to process")
    ap.add_argument("--window-s", type=float, default=3.0)
    ap.add_argument("--hop-s", type=float, default=1.5)
    ap.add_argument("--batch", type=int, default=16, help="windows per forward pass")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}")
    ap.add_argument("--model-type", default="wav2vec2", choices=transformer.MODEL_TYPES)
    ap.add_argument("--layer-pooling", default="weighted", choices=transformer.LAYER_POOLINGS)
    ap.add_argument("--e2e", type=float, default=0.0, metavar="MINUTES",
                    help="also time `ser predict` end to end on this many minutes of audio (0: skip)")
    ap.add_argument("--e2e-precisions", default="int8",
                    help="comma-separated --precision values for the end-to-end runs")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ser-bench-audio",
                    help="folder caching the synthetic audio of the end-to-end run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = sorted(set(modes) - set(MODES))
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from {MODES}")
    if not 0 < a.hop_s <= a.window_s:
        ap.error(f"--hop-s must be in (0, window_s={a.window_s}]; got {a.hop_s}")
    torch.set_num_threads(a.threads)

    sr = transformer.SAMPLE_RATE
    y = synthetic_audio(a.minutes * 60, sr=sr, seed=a.seed)
    win, hop = int(round(a.window_s * sr)), int(round(a.hop_s * sr))
    starts = np.arange(0, len(y) - win + 1, hop)
    windows = np.lib.stride_tricks.sliding_window_view(y, win)[starts]
    audio_s = len(y) / sr
    cfg = transformer.base_sized_config(a.model_type)
    flops_window = transformer.flops_breakdown(cfg, window_s=a.window_s)["total"]

    torch.manual_seed(a.seed)
    base = transformer.build_hf_classifier(n_labels=len(LABELS), config=cfg, layer_pooling=a.layer_pooling).eval()
    machine = (f"{platform.node()} {platform.machine()} {platform.processor()}, "
               f"{os.cpu_count()} cpus, torch {torch.__version__}")
    print(f"machine: {machine}, threads {torch.get_num_threads()}, "
          f"load avg {os.getloadavg()[0]:.1f}   {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"audio {audio_s:.0f} s -> {len(windows)} windows of {a.window_s:g} s every {a.hop_s:g} s, "
          f"batch {a.batch}; model {a.model_type} base-sized, {flops_window / 1e9:.1f} GFLOP/window")
    print(f"{'mode':<11}{'x real time':>12}{'wall s':>9}{'cpu s':>8}{'cpu-bound x':>13}"
          f"{'GFLOP/s':>9}{'max|dp|':>9}")

    results, ref = [], None
    for mode in modes:
        runner = _Runner(base if mode == "fp32" else _copy(base), mode, window_s=a.window_s)
        runner.predict_proba(windows[:a.batch], batch_size=a.batch)  # warm-up (oneDNN primitives)
        c0, t0 = time.process_time(), time.perf_counter()
        probs = runner.predict_proba(windows, batch_size=a.batch)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ref = probs if mode == "fp32" else ref
        dp = float(np.abs(probs - ref).max()) if ref is not None else float("nan")
        row = {"mode": mode, "x_real_time": audio_s / wall, "wall_s": wall, "cpu_s": cpu,
               # if this process had its threads' cores to itself:
               "x_real_time_cpu_bound": audio_s / (cpu / a.threads),
               "gflop_per_s": flops_window * len(windows) / wall / 1e9, "max_abs_dp_vs_fp32": dp}
        results.append(row)
        print(f"{mode:<11}{row['x_real_time']:>12.2f}{wall:>9.1f}{cpu:>8.1f}"
              f"{row['x_real_time_cpu_bound']:>13.2f}{row['gflop_per_s']:>9.1f}{dp:>9.4f}")

    e2e = []
    if a.e2e > 0:
        e2e = _end_to_end(base, a)
    if a.json:
        atomic_write_json(a.json, {"machine": machine, "threads": a.threads, "audio_s": audio_s,
                                   "window_s": a.window_s, "hop_s": a.hop_s, "batch": a.batch,
                                   "gflop_per_window": flops_window / 1e9, "modes": results,
                                   "e2e": e2e, "load_avg_1min": os.getloadavg()[0],
                                   "date_utc": dt.datetime.now(dt.timezone.utc).isoformat()})
    return 0


def _end_to_end(model: nn.Module, a: argparse.Namespace) -> list[dict]:
    """Time ``ser predict`` on ``a.e2e`` minutes for each of ``a.e2e_precisions``."""
    import resource
    import subprocess

    from bench_inference import speech_wav

    from ser.models.bundle import save_bundle

    wav = speech_wav(a.e2e, cache=a.cache)
    audio_s = a.e2e * 60
    rows = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-hf-") as tmp:
        bundle = Path(tmp) / "hf_base_random"
        save_bundle(bundle, model, labels=LABELS, sample_rate=transformer.SAMPLE_RATE,
                           window_s=a.window_s, features=window.features_config(), arch="hf",
                           arch_params=transformer.hf_arch_params(model), train_params={}, split={},
                           metrics={})
        for precision in [p.strip() for p in a.e2e_precisions.split(",") if p.strip()]:
            out = Path(tmp) / f"windows_{precision}.csv"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "ser.run.cli", "predict", str(bundle), str(wav),
                                   "-o", str(out), "--precision", precision, "--quiet"],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(proc.returncode)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            n = sum(1 for _ in out.open()) - 1
            row = {"precision": precision, "minutes": a.e2e, "wall_s": wall, "cpu_s": cpu,
                   "x_real_time": audio_s / wall, "windows": n}
            rows.append(row)
            print(f"ser predict --precision {precision} (end to end, default features, hop "
                  f"{a.window_s / 2:g} s) on {a.e2e:g} min: {wall:.1f} s wall, "
                  f"{row['x_real_time']:.1f}x real time (target >= 15x), CPU {cpu:.0f} s, {n} windows; "
                  f"load average after {os.getloadavg()[0]:.1f}")
    return rows


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


if __name__ == "__main__":
    sys.exit(main())
