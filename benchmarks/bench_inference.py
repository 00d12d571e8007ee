"""× real time of ``ser predict`` on 1 hour of speech-like audio, CNN and classical
bundles side by side, N cores.

Builds an untrained small-CNN bundle (the architecture and options of
``params/02_train.yaml``, pitch-normalised to ``--pitch-norm-hz``; random weights time
the same as trained ones) and a classical bundle on ``--classical-set`` (a linear SVM
fitted on that set's features of a few synthetic utterances; a pooled LLD set,
:mod:`ser.models.classical.pooled`, is computed once per block and pooled per window) in
a temp dir, synthesises ``--minutes`` of speech-like audio once (:func:`speech_wav`:
ser.data.demo utterances of four emotions and several voices with pauses over a -60 dBFS
noise floor, cached under ``--cache``), pins itself to ``--cores`` CPU cores (children
inherit it) and then:

1. runs ``ser predict MODEL FILE -o OUT.csv --quiet`` in a subprocess for each bundle
   (all default features, default hop = half the window, default feature workers) and
   prints the wall time, × real time, the CPU seconds of the process tree, CPU seconds
   per hour of audio (what load changes least), and peak memory: the largest sum of the
   tree's resident sets (psutil, sampled every 50 ms) and the largest single process
   (``ru_maxrss``); then the same command on the first 10 s of the audio, whose wall time is
   the fixed start-up (interpreter, imports, model, worker pool: paid once per run, however
   many recordings it holds), and the × real time of the rest (what stage 04 sustains over a
   cohort's recordings);
2. runs the same prediction in this process with ``workers=0`` (one process, steps one
   after the other) and one torch thread (as the model runs in ``ser predict``, where
   the feature workers take the other cores), and prints the seconds per step
   (decode/resample, log-mel+CNN, F0, energy, VAD, window statistics, writing) and each
   step's own × real time, so the slowest step can be named; then splits log-mel from
   the CNN on a sample of windows.

With ``--base DIR`` (another checkout of the repository, e.g. a ``git worktree add
--detach DIR main``), step 1 also runs ``ser predict`` of that checkout on the same bundles
and audio, each bundle's base run just before this checkout's, so a change is measured
side by side in one run under the same load.

Wall times are only meaningful on an otherwise idle machine: the load average is
printed, and CPU seconds too (they barely change with load).

Targets (issue 14, item 7): >= 500× real time on 2 cores for the CNN family, >= 100× for
the classical family.

    .venv/bin/python benchmarks/bench_inference.py [--minutes 60] [--cores 2] [--cache DIR]
        [--pitch-norm-hz 200] [--classical-set compare_lld_pooled] [--skip-split] [--base DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_name

from ser.data import synth
from ser.models import registry, window
from ser.models.bundle import load_bundle, save_bundle

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SR = 16000
STEPS = ("decode_resample", "log_mel_cnn", "f0", "energy", "vad", "summarise", "write")


def speech_wav(minutes: float, *, cache: Path, seed: int = 0) -> Path:
    """A cached PCM16 16 kHz WAV of ``minutes`` of synthetic speech with pauses.

    Written one minute at a time (memory stays small), each minute from its own seeded
    stream, so the file for N minutes starts with the file for fewer.
    """
    import soundfile as sf

    from ser.data import demo

    path = cache / f"speech_{minutes:g}min_seed{seed}.wav"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.wav")
    print(f"[bench] synthesising {minutes:g} min of speech-like audio -> {path}", file=sys.stderr)
    with sf.SoundFile(tmp, "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        for minute in range(int(np.ceil(minutes))):
            rng = np.random.default_rng([seed, minute])
            voices = [synth.random_voice(f"s{k}", gender="fm"[k % 2], rng=rng) for k in range(4)]
            n = int(round(min(60.0, minutes * 60 - minute * 60) * SR))
            x = (10 ** (-60 / 20) * rng.standard_normal(n)).astype(np.float32)
            pos = int(rng.uniform(0.2, 1.0) * SR)
            while pos < n:
                dur = float(rng.uniform(*synth.UTTERANCE_S))
                u = synth.synthesize_utterance(emotion=str(rng.choice(demo.LABELS)),
                                              voice=voices[int(rng.integers(4))], rng=rng,
                                              sample_rate=SR, duration_s=dur)[: n - pos]
                x[pos:pos + len(u)] += u
                pos += len(u) + int(rng.uniform(0.2, 1.5) * SR)
            f.write(np.clip(x, -1, 1))
    os.replace(tmp, path)
    return path


#: Length of the clip whose ``ser predict`` wall time counts as the fixed start-up cost (s).
CLIP_S: float = 10.0


def short_clip(wav: Path, out: Path, *, seconds: float) -> Path:
    """The first ``seconds`` of ``wav`` written to ``out`` (same format)."""
    import soundfile as sf

    y, sr = sf.read(wav, frames=int(seconds * SR), dtype="int16")
    sf.write(out, y, sr, subtype="PCM_16")
    return out


def small_cnn_bundle(folder: Path, *, pitch_norm_hz: float = 0.0) -> Path:
    """Save an untrained small-CNN bundle with the stage-02 defaults into ``folder``
    (``pitch_norm_hz`` > 0: a bundle that pitch-normalises each recording, ``ser.signal.pitchnorm``)."""
    import yaml

    p = yaml.safe_load((ROOT / "params" / "02_train.yaml").read_text())
    net = registry.build_model(p["arch"], n_labels=len(p["labels"]), sample_rate=p["sample_rate"],
                             features=p["features"] or None, **p["arch_params"])
    save_bundle(folder, net, labels=p["labels"], sample_rate=p["sample_rate"],
                window_s=p["window_s"], features=window.features_config(**(p["features"] or {})),
                arch=p["arch"], arch_params=p["arch_params"], train_params={}, split={},
                metrics={}, pitch_norm_hz=pitch_norm_hz)
    return folder


def classical_bundle(folder: Path, *, feature_set: str, window_s: float, seed: int = 0) -> Path:
    """Save a linear-SVM classical bundle on ``feature_set`` fitted on 24 synthetic utterances
    (four emotions, three voices); its prediction costs what a trained one costs."""
    from ser.data import demo
    from ser.models.classical.estimator import ClassicalModel
    from ser.models.classical.features import signal_features
    from ser.models.classical.writer import save_classical_bundle

    rng = np.random.default_rng(seed)
    voices = [synth.random_voice(f"v{k}", gender="fm"[k % 2], rng=rng) for k in range(3)]
    n = window.window_samples(window_s, SR)
    waves, labels, speakers = [], [], []
    for k, v in enumerate(voices):
        for lab in demo.LABELS:
            for _ in range(2):
                u = synth.synthesize_utterance(emotion=lab, voice=v, rng=rng, sample_rate=SR, duration_s=window_s)
                waves.append(np.resize(u, n).astype(np.float32))
                labels.append(lab)
                speakers.append(f"v{k}")
    X = signal_features(np.stack(waves), feature_set=feature_set, sample_rate=SR)
    model = ClassicalModel(estimator="svm_linear", params={"C": 0.01}).fit(
        X, np.array(labels), np.array(speakers), calibration_folds=3)
    return save_classical_bundle(folder, model, labels=sorted(set(labels)), feature_set=feature_set,
                                 sample_rate=SR, window_s=window_s)


def run_predict(bundle_dir: Path, wav: Path, out: Path, *, root: Path = ROOT) -> dict[str, float]:
    """``ser predict`` of the checkout ``root`` in a subprocess: wall s, CPU s of the tree, peak
    tree RSS and largest process RSS (MiB)."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "ser.run.cli", "predict", str(bundle_dir), str(wav),
                             "-o", str(out), "--quiet"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.05)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"ser predict {bundle_dir.name} failed:\n{err}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "peak_tree_mib": peak / 2**20, "max_proc_mib": after.ru_maxrss / 1024}


def _commit(root: Path) -> str:
    """The short git commit of a checkout (``?`` when git cannot tell), ``+`` when it has changes."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+" if dirty else "")


def pin_cores(n: int) -> list[int]:
    """Restrict this process (and its children) to the first ``n`` allowed cores."""
    cores = sorted(os.sched_getaffinity(0))[:n]
    os.sched_setaffinity(0, cores)
    os.environ["OMP_NUM_THREADS"] = str(len(cores))
    return cores


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="audio length (default 60)")
    ap.add_argument("--cores", type=int, default=2, help="CPU cores to run on (default 2)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ser-bench-audio",
                    help="folder caching the synthetic audio")
    ap.add_argument("--skip-split", action="store_true", help="only the end-to-end run")
    ap.add_argument("--pitch-norm-hz", type=float, default=200.0,
                    help="CNN bundle trained with speaker pitch normalisation to this register (Hz); "
                         "default 200 as in params/02_train.yaml; 0: off")
    ap.add_argument("--classical-set", default="compare_lld_pooled",
                    help="feature set of the classical bundle (default compare_lld_pooled); "
                         "'none' skips the classical bundle")
    ap.add_argument("--base", type=Path, default=None,
                    help="another checkout (e.g. a git worktree of main) whose ser predict runs "
                         "side by side with this one's in step 1")
    a = ap.parse_args()
    if a.base is not None and not (a.base / "ser" / "run" / "cli.py").is_file():
        ap.error(f"--base {a.base} is not a checkout of this repository (no ser/run/cli.py)")

    cores = pin_cores(a.cores)
    import torch

    torch.set_num_threads(len(cores))
    from ser.inference.files import predict_paths
    from ser.inference.grid import default_hop, window_starts
    from ser.inference.options import InferenceOptions

    wav = speech_wav(a.minutes, cache=a.cache)
    audio_s = a.minutes * 60
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {cpu_name()}; pinned to {len(cores)} of {os.cpu_count()} cores {cores}; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"python {platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print(f"audio: {a.minutes:g} min synthetic speech, 16 kHz PCM16 ({wav.stat().st_size / 2**20:.0f} MiB)")

    with tempfile.TemporaryDirectory(prefix="ser-bench-inf-") as tmp:
        bundle_dir = small_cnn_bundle(Path(tmp) / "small_cnn", pitch_norm_hz=a.pitch_norm_hz)
        bundle = load_bundle(bundle_dir)
        hop = default_hop(bundle)
        n_win = len(window_starts(audio_s, window_s=bundle.window_s, hop_s=hop))
        print(f"model: untrained small_cnn {bundle.meta['arch_params']}, window {bundle.window_s:g} s, "
              f"hop {hop:g} s (default) -> {n_win} windows; pitch normalisation: "
              f"{f'{bundle.pitch_norm_hz:g} Hz' if bundle.pitch_norm_hz else 'off'}")

        # 1. end to end through the command line, each bundle in turn
        runs = [("CNN (small_cnn, pitch norm "
                 f"{f'{bundle.pitch_norm_hz:g} Hz' if bundle.pitch_norm_hz else 'off'})", bundle_dir, 500)]
        if a.classical_set != "none":
            t0 = time.perf_counter()
            cdir = classical_bundle(Path(tmp) / "classical", feature_set=a.classical_set,
                                    window_s=bundle.window_s)
            print(f"classical bundle: svm_linear on {a.classical_set} (fitted in {time.perf_counter() - t0:.0f} s)")
            runs.append((f"classical (svm_linear, {a.classical_set})", cdir, 100))
        clip = short_clip(wav, Path(tmp) / "clip.wav", seconds=CLIP_S)
        print(f"\nser predict end to end (default features and workers), {a.minutes:g} min of audio; "
              f"start-up = wall of the same command on the first {CLIP_S:g} s (interpreter, imports, "
              f"model, workers: paid once per run, not per recording); after start-up = the rest of "
              f"the audio / the rest of the wall time:")
        print(f"{'bundle':<42}{'wall s':>8}{'x real time':>13}{'target':>8}{'CPU s':>8}"
              f"{'CPU s/h':>9}{'cores':>7}{'peak RSS tree':>15}{'max process':>13}{'load':>6}"
              f"{'start-up s':>12}{'x after start-up':>18}")
        checkouts = [("base ", a.base), ("this ", ROOT)] if a.base is not None else [("", ROOT)]
        if a.base is not None:
            print(f"base: {a.base.resolve()} (git {_commit(a.base)}); this: {ROOT} (git {_commit(ROOT)})")
        for name, bdir, target in runs:
            for tag, root in checkouts:
                load = os.getloadavg()[0]
                r = run_predict(bdir, wav, Path(tmp) / f"{bdir.name}_{tag.strip() or 'this'}.csv", root=root)
                s = run_predict(bdir, clip, Path(tmp) / f"{bdir.name}_{tag.strip() or 'this'}_clip.csv",
                                root=root)
                rest = r["wall"] - s["wall"]
                after = f"{(audio_s - CLIP_S) / rest:18.0f}" if rest > 0 else f"{'n/a':>18}"
                print(f"{tag + name:<42}{r['wall']:8.1f}{audio_s / r['wall']:13.0f}{f'>={target}':>8}"
                      f"{r['cpu']:8.1f}{r['cpu'] * 3600 / audio_s:9.1f}{r['cpu'] / r['wall']:7.2f}"
                      f"{r['peak_tree_mib']:11.0f} MiB{r['max_proc_mib']:9.0f} MiB{load:6.1f}"
                      f"{s['wall']:12.1f}{after}", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        if a.skip_split:
            return 0

        # 2. per step, one process, steps in sequence, one torch thread
        torch.set_num_threads(1)
        timings: dict[str, float] = {}
        c0, t0 = time.process_time(), time.perf_counter()
        predict_paths(bundle, [wav], options=InferenceOptions(workers=0),
                      output=Path(tmp) / "serial.csv", progress=False, timings=timings)
        wall0, cpu0 = time.perf_counter() - t0, time.process_time() - c0
        print(f"\nsame in one process (workers=0, 1 torch thread): {wall0:.1f} s wall, "
              f"{audio_s / wall0:.0f}x real time, CPU {cpu0:.1f} s")
        print(f"{'step':<18}{'seconds':>9}{'share':>8}{'x real time':>13}")
        total = sum(timings.values())
        for k in sorted(timings, key=timings.get, reverse=True):
            v = timings[k]
            print(f"{k:<18}{v:9.2f}{v / total:8.0%}{audio_s / v if v else float('inf'):13.0f}")
        slowest = max(timings, key=timings.get)
        print(f"slowest step: {slowest} ({timings[slowest]:.1f} s of {total:.1f} s)")

        # 3. log-mel (per window, and shared between overlapping windows) vs CNN body
        model = bundle.model
        if hasattr(model, "frontend") and hasattr(model, "body"):
            import soundfile as sf

            from ser.signal.spectrogram import normalize_window

            y = sf.read(wav, frames=int(300 * SR), dtype="float32")[0]
            hop_n = int(round(hop * SR))
            starts = np.arange(0, len(y) - bundle.window_samples + 1, hop_n)
            win = np.lib.stride_tricks.sliding_window_view(y, bundle.window_samples)[starts]
            x, yt = torch.from_numpy(np.ascontiguousarray(win)), torch.from_numpy(y)
            st = torch.from_numpy(starts)
            with torch.inference_mode():
                model(x[:64])
                t0 = time.perf_counter()
                for i in range(0, len(x), 64):
                    normalize_window(model.frontend(x[i:i + 64]))
                t_mel = time.perf_counter() - t0
                t0 = time.perf_counter()
                specs = [normalize_window(model.frontend.windows(yt, st[i:i + 64], window_n=bundle.window_samples))
                         for i in range(0, len(st), 64)]
                t_shared = time.perf_counter() - t0
                t0 = time.perf_counter()
                for spec in specs:
                    model.body(spec)
                t_cnn = time.perf_counter() - t0
            scale = audio_s / (len(x) * hop)
            print(f"per {a.minutes:g} min ({len(x)} windows timed, batch 64, "
                  f"{torch.get_num_threads()} threads): log-mel per window {t_mel * scale:.2f} s, "
                  f"log-mel with shared frames (what ser predict runs) {t_shared * scale:.2f} s, "
                  f"CNN body {t_cnn * scale:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
