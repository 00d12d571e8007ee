"""Diarization accuracy, speech detection F1, caregiver identification, speed and memory (issue 16).

(a) A small demo cohort (``ser.data.demo.generate`` into a temporary folder) against its
``segments.csv`` (caregiver and patient turns). (b) Two-speaker conversations built from
EmoDB utterances (``../shared/data/emodb``; skipped when absent): speaker pairs same-sex
and mixed, turns of 1-8 s (utterances joined or cut), 0-10 % overlap between consecutive
turns, pauses of 0.1-1.5 s, background noise at 10-30 dB SNR; two conversations per pair
(a "control" and a "care" one, the first speaker of the pair speaking about 65 % of the
time in both), so the caregiver is identified across them.

Figures: DER (missed + false alarm + confusion, 0.25 s collar,
:func:`ser.inference.der.diarization_error`), frame-level speech F1 of Silero and webrtcvad
(:func:`ser.signal.vad.frame_f1`), caregiver identification rate (the identified speaker
is the one whose turns overlap the caregiver's true speech most), speed (× real time of
the whole diarization) and peak memory (RSS of a child process diarizing a long file
built from the conversations, at two lengths, to show it does not grow with length), with
wall and CPU seconds of the old and new speed settings side by side (``--speed-variants``).

Run with nice and bounded size (``--speed-variants new`` alone skips the slower old settings), e.g.::

    PYTHONPATH=. nice .venv/bin/python benchmarks/bench_diarization.py --caregivers 6 --pairs 6
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import cpu_name

from ser.data import demo
from ser.inference.caregiver import identify_caregivers
from ser.inference.der import diarization_error
from ser.inference.diarization import DiarizationOptions, RecordingDiarization, diarize_recording
from ser.models.speaker_encoder import SpeakerEncoder
from ser.signal import audio, vad

SR = 16000
EMODB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emodb"
MALE = {"03", "10", "11", "12", "15"}


def _hyp(r: RecordingDiarization) -> list[tuple[float, float, str]]:
    return list(zip(r.segments.start_s, r.segments.end_s, r.segments.speaker, strict=True))


def _vad_f1(y: np.ndarray, turns: list[tuple[float, float, str]]) -> dict[str, float]:
    out = {}
    for m in vad.VAD_METHODS:
        sp, fs = vad.speech_frames(y, SR, method=m)
        truth = vad.segments_to_frames(np.array([t[:2] for t in turns]).reshape(-1, 2), frame_s=fs,
                                       n_frames=len(sp))
        out[f"f1_{m}"] = vad.frame_f1(sp, truth)["f1"]
    return out


def _caregiver_speaker(r: RecordingDiarization, turns, who: str) -> str | None:
    """The hypothesis speaker overlapping the true speaker ``who`` most."""
    best, name = 0.0, None
    for s in r.centroids:
        ov = sum(max(0.0, min(b, d) - max(a, c)) for a, b, sp in turns if sp == who
                 for c, d, h in _hyp(r) if h == s)
        if ov > best:
            best, name = ov, s
    return name


def _evaluate(items: list[dict], opt: DiarizationOptions, enc: SpeakerEncoder) -> pd.DataFrame:
    """Diarize every item (``path, turns, caregiver_of, caregiver_label``); one row each."""
    rows, res = [], {}
    for it in items:
        t = time.perf_counter()
        r = diarize_recording(it["path"], options=opt, encoder=enc)
        sec = time.perf_counter() - t
        res[it["recording"]] = r
        y, _ = audio.load(it["path"], sample_rate=SR)
        e = diarization_error(it["turns"], _hyp(r), duration_s=r.duration_s, collar_s=0.25)
        rows.append({"recording": it["recording"], "kind": it.get("kind", ""), **e,
                     "speakers": len(r.centroids), "true_speakers": len({s for *_, s in it["turns"]}),
                     "seconds": sec, "duration_s": r.duration_s, **_vad_f1(y, it["turns"])})
    ident = identify_caregivers({k: r.centroids for k, r in res.items()},
                                {k: r.speech_s for k, r in res.items()},
                                {it["recording"]: it["caregiver_of"] for it in items}).set_index("recording")
    df = pd.DataFrame(rows).set_index("recording")
    for it in items:
        k = it["recording"]
        truth = _caregiver_speaker(res[k], it["turns"], it["caregiver_label"])
        st = ident.loc[k]
        df.loc[k, "caregiver_status"] = st["status"]
        df.loc[k, "caregiver_correct"] = bool(st["status"] == "ok" and st["speaker"] == truth)
    return df.reset_index()


def demo_items(root: Path, n: int, seconds: float, seed: int) -> list[dict]:
    demo.generate(root, seed=seed, n_caregivers=n, recording_s=seconds, speakers_per_gender=1,
                  utterances_per_emotion=1, progress=False)
    seg = pd.read_csv(root / "cohort" / "segments.csv")
    man = pd.read_csv(root / "cohort" / "manifest.csv")
    items = []
    for rec, cg in zip(man.recording, man.caregiver, strict=True):
        g = seg[(seg.recording == rec) & (seg.role != "pause")]
        items.append({"recording": rec, "path": root / "cohort" / f"{rec}.wav", "caregiver_of": cg,
                      "caregiver_label": "caregiver", "kind": "demo",
                      "turns": list(zip(g.start_s, g.end_s, g.role, strict=True))})
    return items


def _conversation(utts: dict[str, list[np.ndarray]], pair: tuple[str, str], seconds: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, list]:
    y = np.zeros(int((seconds + 10) * SR), np.float32)
    t, turns, prev = 0.3, [], None
    streams = {s: iter(rng.permutation(len(utts[s]))) for s in pair}
    while t < seconds:
        s = pair[0] if rng.uniform() < 0.65 else pair[1]
        if s == prev and rng.uniform() < 0.5:
            s = pair[1] if s == pair[0] else pair[0]
        dur = float(rng.uniform(1.0, 8.0))
        parts, have = [], 0
        while have < dur * SR:
            try:
                i = next(streams[s])
            except StopIteration:
                streams[s] = iter(rng.permutation(len(utts[s])))
                i = next(streams[s])
            parts.append(utts[s][i])
            have += len(utts[s][i])
        u = np.concatenate(parts)[: int(dur * SR)]
        if prev is not None and s != prev:
            t -= float(rng.uniform(0, 0.1)) * dur if rng.uniform() < 0.5 else -float(rng.uniform(0.1, 1.5))
        else:
            t += float(rng.uniform(0.1, 1.5))
        a = int(t * SR)
        y[a:a + len(u)] += u
        turns.append((a / SR, (a + len(u)) / SR, s))
        t, prev = (a + len(u)) / SR, s
    y = y[: int((turns[-1][1] + 0.5) * SR)]
    snr = float(rng.uniform(10, 30))
    speech_p = float(np.mean(np.concatenate([y[int(a * SR):int(b * SR)] for a, b, _ in turns]) ** 2))
    y = y + rng.standard_normal(len(y)).astype(np.float32) * np.sqrt(speech_p / 10 ** (snr / 10))
    return np.clip(y, -1, 1).astype(np.float32), turns


def emodb_items(root: Path, n_pairs: int, seconds: float, seed: int) -> list[dict]:
    files = sorted((EMODB / "wav").glob("*.wav"))
    by: dict[str, list[np.ndarray]] = {}
    for f in files:
        y, _ = audio.load(f, sample_rate=SR)
        nz = np.flatnonzero(np.abs(y) > 0.01)  # trim leading/trailing silence: turns are speech
        by.setdefault(f.name[:2], []).append(y[nz[0]:nz[-1] + 1] if len(nz) else y)
    spk = sorted(by)
    rng = np.random.default_rng(seed)
    pairs = list(itertools.permutations(spk, 2))
    same = [p for p in pairs if (p[0] in MALE) == (p[1] in MALE)]
    mixed = [p for p in pairs if (p[0] in MALE) != (p[1] in MALE)]
    chosen = [("same", same[i]) for i in rng.choice(len(same), n_pairs, replace=False)] + \
             [("mixed", mixed[i]) for i in rng.choice(len(mixed), n_pairs, replace=False)]
    items = []
    for kind, pair in chosen:
        for phase in ("control", "care"):
            y, turns = _conversation(by, pair, seconds, rng)
            rec = f"{pair[0]}-{pair[1]}_{phase}"
            items.append({"recording": rec, "path": audio.write_wav(root / f"{rec}.wav", y, SR),
                          "caregiver_of": f"{pair[0]}-{pair[1]}", "caregiver_label": pair[0],
                          "kind": kind, "turns": turns})
    return items


_CHILD = """
import json, resource, sys, time
from ser.inference.diarization import DiarizationOptions, diarize_recording
from ser.models.speaker_encoder import SpeakerEncoder
from ser.signal import vad
v = json.loads(sys.argv[2])
vad.SILERO_THREADS = v["vad_threads"]
if v.get("encoder") == "campp":
    from ser.models.campp_encoder import CamppEncoder
    enc = CamppEncoder(threads=v["encoder_threads"])
else:
    enc = SpeakerEncoder(threads=v["encoder_threads"])
ru = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
t, c = time.perf_counter(), ru()
r = diarize_recording(sys.argv[1], options=DiarizationOptions(**v["options"]), encoder=enc)
t, c = time.perf_counter() - t, ru() - c
if len(sys.argv) > 3:
    r.segments.to_csv(sys.argv[3], index=False)
# peak RSS of this process's own memory (VmHWM; ru_maxrss would keep the forking parent's)
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(f"RESULT {t:.3f} {c:.3f} {hwm / 1024:.1f} {len(r.centroids)}")
"""
#: Speed variants: the defaults before issue 16 item 6 (Silero and the encoder in the
#: process's two torch threads, 0.75 s hop), now (one thread each, 1 s hop), and CAM++ with
#: two speakers and k-means restarts (``--encoder campp --speakers 2 --kmeans-restarts 20``).
SPEED_VARIANTS: dict[str, dict] = {
    "old": {"vad_threads": None, "encoder_threads": None, "options": {"hop_s": 0.75}},
    "new": {"vad_threads": vad.SILERO_THREADS, "encoder_threads": 1, "options": {}},
    "campp": {"vad_threads": vad.SILERO_THREADS, "encoder_threads": 1, "encoder": "campp",
              "options": {"encoder": "campp", "num_speakers": 2, "kmeans_restarts": 20}},
}


def speed_memory(items: list[dict], tmp: Path, minutes: list[float], variants: list[str],
                 base: Path | None = None) -> list[dict]:
    """Wall and CPU time and peak RSS of a child process diarizing a long file built from the
    items' audio, per length and :data:`SPEED_VARIANTS` entry (run one after the other); with
    ``base`` (another checkout of the repository), each also with that checkout's code first
    (``code`` base / this), and whether both gave the same turns (``same_turns``)."""
    import json

    ys = [audio.load(it["path"], sample_rate=SR)[0] for it in items]
    pool = np.concatenate(ys)
    out = []
    trees = {"this": Path(__file__).resolve().parents[1]}
    if base is not None:
        trees = {"base": Path(base).resolve(), **trees}
    for m in minutes:
        n = int(m * 60 * SR)
        y = np.resize(pool, n)
        p = audio.write_wav(tmp / f"long_{m:g}min.wav", y, SR)
        for name in variants:
            turns = {}
            for code, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": str(tree)}
                seg = tmp / f"turns_{code}.csv"
                r = subprocess.run([sys.executable, "-c", _CHILD, str(p), json.dumps(SPEED_VARIANTS[name]),
                                    str(seg)], capture_output=True, text=True, env=env, check=True, cwd=tree)
                mt = re.search(r"RESULT (\S+) (\S+) (\S+) (\S+)", r.stdout)
                sec, cpu, rss, k = float(mt[1]), float(mt[2]), float(mt[3]), int(mt[4])
                turns[code] = seg.read_bytes()
                out.append({"variant": name, "code": code, "minutes": m, "seconds": sec, "cpu_seconds": cpu,
                            "x_real_time": m * 60 / sec, "x_real_time_per_cpu_s": m * 60 / cpu,
                            "peak_rss_mib": rss, "speakers": k, "load": round(os.getloadavg()[0], 1),
                            "same_turns": turns[code] == next(iter(turns.values()))})
                print(out[-1], flush=True)
        p.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caregivers", type=int, default=6, help="demo caregivers (2 recordings each)")
    ap.add_argument("--demo-seconds", type=float, default=60.0)
    ap.add_argument("--pairs", type=int, default=6, help="EmoDB pairs per kind (same-sex, mixed)")
    ap.add_argument("--conv-seconds", type=float, default=60.0)
    ap.add_argument("--long-minutes", type=float, nargs="*", default=[5.0, 20.0])
    ap.add_argument("--speed-variants", nargs="*", default=["old", "new"], choices=list(SPEED_VARIANTS),
                    help="speed/memory variants, each in its own child process per length")
    ap.add_argument("--base", type=Path, default=None,
                    help="another checkout (e.g. a worktree of main): speed and memory of its code beside this one's")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}")
    opt, enc = DiarizationOptions(), SpeakerEncoder()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        frames = []
        items = demo_items(tmp / "demo", a.caregivers, a.demo_seconds, a.seed)
        frames.append(_evaluate(items, opt, enc))
        conv: list[dict] = []
        if (EMODB / "wav").is_dir() and a.pairs > 0:
            (tmp / "emodb").mkdir()
            conv = emodb_items(tmp / "emodb", a.pairs, a.conv_seconds, a.seed)
            frames.append(_evaluate(conv, opt, enc))
        else:
            print(f"EmoDB not found under {EMODB}: conversations skipped")
        df = pd.concat(frames, ignore_index=True)
        pd.set_option("display.width", 200)
        cols = ["der", "missed", "false_alarm", "confusion", "f1_silero", "f1_webrtc", "caregiver_correct"]
        summ = df.groupby("kind")[cols].mean().round(3)
        summ["recordings"] = df.groupby("kind").size()
        summ["speakers_right"] = df.assign(ok=df.speakers == df.true_speakers).groupby("kind")["ok"].mean().round(2)
        summ["x_real_time"] = (df.groupby("kind")["duration_s"].sum() / df.groupby("kind")["seconds"].sum()).round(0)
        print(summ.to_string())
        print("caregiver status counts:", df["caregiver_status"].value_counts().to_dict())
        if a.long_minutes:
            sm = speed_memory(conv or items, tmp, a.long_minutes, a.speed_variants, a.base)
            print(pd.DataFrame(sm).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
