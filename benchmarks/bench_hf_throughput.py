"""Fine-tuning throughput of a wav2vec2-base-sized emotion classifier (random weights).

Times full training steps (forward, backward, AdamW) of :class:`ser.models.transformer.HFAudioClassifier`
on batches of ``--batch`` random windows of ``--window-s`` seconds, after ``--warmup``
untimed steps. On CUDA the forward runs under bf16 autocast (as ``ser.train.loop`` does)
and the optimizer is fused AdamW; on CPU everything is float32.

Reports audio-seconds trained per wall second, the median step time, peak memory
(CUDA: ``max_memory_allocated``; CPU: peak resident set size of the process) and the
model-FLOP utilisation (MFU) = achieved model FLOP/s / peak FLOP/s, where the model
FLOPs are counted analytically (:func:`ser.models.transformer.estimate_flops_per_second_of_audio`,
training = 3x forward for the trainable part, 1x for a frozen conv encoder) and the
peak comes from ``--peak-tflops`` (default 989: H100 SXM dense bf16). Input batches
are made on the device once, so the figure excludes data loading (issue 3, item 9:
target MFU >= 30 % on an H100).

    .venv/bin/python benchmarks/bench_hf_throughput.py                      # GPU defaults
    .venv/bin/python benchmarks/bench_hf_throughput.py --device cpu --batch 2 --steps 2 --warmup 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser.core.atomic import atomic_write_json  # noqa: E402
from ser.models import transformer  # noqa: E402


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-type", default="wav2vec2", choices=transformer.MODEL_TYPES)
    ap.add_argument("--batch", type=int, default=64, help="windows per step")
    ap.add_argument("--window-s", type=float, default=3.0, help="window length (s)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak FLOP/s of the device in TFLOP/s (default: 989 on CUDA = H100 SXM "
                         "dense bf16; none on CPU, so no MFU unless given)")
    ap.add_argument("--train-feature-encoder", action="store_true",
                    help="also train the conv feature encoder (default: frozen)")
    ap.add_argument("--layer-pooling", default="weighted", choices=transformer.LAYER_POOLINGS)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    if a.batch < 1 or a.steps < 1 or a.warmup < 0 or a.window_s <= 0:
        ap.error("--batch and --steps must be >= 1, --warmup >= 0, --window-s > 0")
    if a.threads:
        torch.set_num_threads(a.threads)

    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if a.device == "auto" else a.device))
    cuda = device.type == "cuda"
    peak_tflops = a.peak_tflops if a.peak_tflops is not None else (989.0 if cuda else None)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(a.seed)
    cfg = transformer.base_sized_config(a.model_type)
    freeze = not a.train_feature_encoder
    model = transformer.build_hf_classifier(n_labels=7, config=cfg, freeze_feature_encoder=freeze,
                                   layer_pooling=a.layer_pooling).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    step_model = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                            fused=cuda)
    n = int(round(a.window_s * transformer.SAMPLE_RATE))
    gen = torch.Generator(device=device).manual_seed(a.seed)
    x = 0.1 * torch.randn(a.batch, n, device=device, generator=gen)
    y = torch.randint(0, 7, (a.batch,), device=device, generator=gen)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(**amp):
            logits = step_model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    _sync(device)
    times = []
    cpu0 = time.process_time()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    cpu_per_step = (time.process_time() - cpu0) / a.steps

    step_s = statistics.median(times)
    audio_per_s = a.batch * a.window_s / step_s
    flops_audio_s = transformer.estimate_flops_per_second_of_audio(cfg, window_s=a.window_s, training=True,
                                                          freeze_feature_encoder=freeze)
    achieved = flops_audio_s * audio_per_s
    mfu = achieved / (peak_tflops * 1e12) if peak_tflops else None
    dev_name = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    res = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {dev_name}, {os.cpu_count()} cpus, torch {torch.__version__}",
        "device": str(device), "precision": "bf16 autocast" if cuda else "fp32",
        "model": f"{a.model_type} base-sized (random init)", "params_m": n_params / 1e6,
        "trainable_params_m": n_train / 1e6, "feature_encoder": "frozen" if freeze else "trained",
        "layer_pooling": a.layer_pooling, "compile": a.compile, "threads": torch.get_num_threads(),
        "batch": a.batch, "window_s": a.window_s, "steps": a.steps, "warmup": a.warmup,
        "step_s_median": step_s, "step_s_min": min(times), "audio_s_per_s": audio_per_s,
        "cpu_s_per_step": cpu_per_step, "load_avg_1min": os.getloadavg()[0],
        "train_gflop_per_audio_s": flops_audio_s / 1e9, "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak_tflops, "mfu": mfu, "peak_memory_gib": _peak_memory_gib(device),
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
    }
    print(f"machine: {res['machine']}   device: {device}   {res['precision']}   {res['date_utc']}")
    print(f"model: {res['model']}, {res['params_m']:.1f} M params ({res['trainable_params_m']:.1f} M "
          f"trainable), feature encoder {res['feature_encoder']}, layer pooling {a.layer_pooling}")
    print(f"batch {a.batch} x {a.window_s:g} s, {a.steps} timed steps after {a.warmup} warm-up")
    print(f"step time (median)   {step_s * 1e3:10.1f} ms   (min {min(times) * 1e3:.1f} ms)")
    print(f"throughput           {audio_per_s:10.1f} audio-s / s")
    if not cuda:
        print(f"process CPU time     {cpu_per_step:10.1f} s / step on {torch.get_num_threads()} threads "
              f"(load avg {res['load_avg_1min']:.1f}: other processes share the cores)")
    print(f"model FLOPs          {flops_audio_s / 1e9:10.1f} GFLOP / audio-s (train)  ->  "
          f"{achieved / 1e12:.3f} TFLOP/s achieved")
    print(f"MFU                  " + (f"{100 * mfu:10.1f} %  of {peak_tflops:g} TFLOP/s peak"
                                      if mfu is not None else "       n/a (pass --peak-tflops)"))
    print(f"peak memory          {res['peak_memory_gib']:10.2f} GiB ({res['peak_memory_kind']})")
    if a.json:
        atomic_write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
