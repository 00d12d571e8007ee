"""Speed, memory and word error rate of ``ser transcribe`` on the CPU (issue 19 item 7).

Speech: English sentences spoken by espeak-ng (needs the Debian package), each followed by
1.5 s of pause, a room-like noise floor added, repeated to ``--minutes`` of audio. Each
length is transcribed in a child process (``ser.inference.transcribe.transcribe_recording``,
25 s blocks + 5 s overlap) so that its peak memory (RSS) is its own; two lengths show
whether memory grows with the recording. Backend: PocketSphinx's bundled English model
(the only recogniser with weights on this machine); ``--whisper DIR`` adds a Whisper
model from a local folder.

    PYTHONPATH=. nice .venv/bin/python benchmarks/bench_asr.py --minutes 1 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SENTENCES = ("please open the window", "good morning how are you today", "the door is closed",
             "thank you very much", "i am going to wash your face now", "can you lift your arm")


def speech(folder: Path, minutes: float) -> tuple[Path, str]:
    from ser.signal import audio

    parts, ref = [], []
    for i, text in enumerate(SENTENCES):
        wav = folder / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-a", "120", "-w", str(wav), text],
                       check=True, capture_output=True)
        parts.append(audio.load(wav, sample_rate=16_000)[0])
    y, n = [], 0
    while n < minutes * 60 * 16_000:
        i = len(ref) % len(SENTENCES)
        y += [parts[i], np.zeros(24_000, np.float32)]
        ref.append(SENTENCES[i])
        n += len(parts[i]) + 24_000
    sig = 0.9 * np.concatenate(y)
    sig += 3e-3 * np.random.default_rng(0).standard_normal(len(sig)).astype(np.float32)
    path = folder / f"speech_{minutes:g}min.wav"
    audio.write_wav(path, sig, 16_000)
    return path, " ".join(ref)


def child(path: str, backend: str, model: str, language: str) -> None:
    from ser.inference.transcribe import transcribe_recording
    from ser.models.asr import load_asr

    asr = load_asr(model, backend=backend, language=language)
    t0, c0 = time.perf_counter(), time.process_time()
    words, dur = transcribe_recording(path, asr)
    print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                      "duration_s": dur, "words": " ".join(words["word"]),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--whisper", default="", help="local Whisper folder (optional)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    from benchmarks.machine import cpu_name
    from ser.models.asr import word_error_rate

    print(f"machine: {cpu_name()}")
    runs = [("pocketsphinx", "default", "en")] + ([("whisper", a.whisper, "en")] if a.whisper else [])
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in a.minutes:
            path, ref = speech(Path(tmp), minutes)
            for backend, model, lang in runs:
                out = subprocess.run([sys.executable, __file__, "--child", str(path), backend, model, lang],
                                     check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                r = json.loads(out)
                print(f"{backend:12s} {r['duration_s'] / 60:5.1f} min audio: {r['duration_s'] / r['wall_s']:6.1f}x "
                      f"real time (wall), {r['cpu_s'] / (r['duration_s'] / 3600):7.0f} CPU-s per hour, "
                      f"peak RSS {r['peak_rss_mib']:6.0f} MiB, WER {word_error_rate(ref, r['words']):.2f}")


if __name__ == "__main__":
    main()
