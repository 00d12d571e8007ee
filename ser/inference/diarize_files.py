"""Diarization of audio files and folders (``ser diarize``): :func:`diarize_paths`; of a cohort
manifest, keyed by recording id (for ``results/tables/speakers.csv``): :func:`diarize_manifest`.

Like ``ser predict`` (:mod:`ser.inference.files`): folders are searched recursively, a
file that fails gets a failure row and the rest carries on, the outputs are rewritten
atomically after every file (temp file + rename), and a rerun with the same output resumes:
files already done are kept, failed ones tried again.

Files written for ``-o FILE.csv``:

- ``FILE.csv``: one row per speaker turn, :data:`ser.inference.diarization.SEGMENT_COLUMNS`
  (``recording`` is the file path; ``is_caregiver`` empty where the caregiver is unknown).
- ``FILE.summary.csv``: one row per file, :data:`SUMMARY_COLUMNS` (``flags`` ``;``-joined
  keys of :data:`ser.inference.diarization.FLAGS`; ``caregiver_status`` from
  :func:`ser.inference.caregiver.identify_caregivers`, ``no_caregiver_map`` without one).
- ``FILE.failures.csv``: ``file, reason``.
- ``FILE.speakers.json``: each file's speaker centroids and speech time (for resume and
  caregiver matching) and the options, so a resume with other options is refused.

The caregiver is identified only when a ``caregiver_of`` mapping groups the files by
caregiver (``--caregiver-of``, the format of ``--speaker-of``); her speaker is matched
across her files (or to an enrolment clip per caregiver).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ser.core import atomic
from ser.inference import caregiver as cgid
from ser.inference.diarization import (
    FLAGS,
    SEGMENT_COLUMNS,
    DiarizationError,
    DiarizationOptions,
    RecordingDiarization,
    diarize_recording,
)
from ser.models.speaker_encoder import ENCODER_SR, SpeakerEncoder, default_encoder
from ser.signal import audio

#: Columns of the per-file summary of :func:`diarize_paths`.
SUMMARY_COLUMNS: tuple[str, ...] = ("recording", "status", "duration_s", "speech_s", "speakers", "flags",
                                    "caregiver_speaker", "caregiver_similarity", "caregiver_status",
                                    "caregiver_speech_s", "reason")
#: Columns of the failure table.
FAILURE_COLUMNS: tuple[str, ...] = ("file", "reason")


class ResumeError(ValueError):
    """An existing output was written with other options."""


@dataclasses.dataclass(frozen=True)
class Diarization:
    """Result of :func:`diarize_paths`: ``segments``, ``summary``, ``failures``, ``caregivers``."""

    segments: pd.DataFrame
    summary: pd.DataFrame
    failures: pd.DataFrame
    caregivers: pd.DataFrame


def output_paths(output: str | os.PathLike[str]) -> dict[str, Path]:
    """Files written for ``output`` (see the module docstring)."""
    out = Path(output)
    stem = out.name[:-4] if out.name.lower().endswith(".csv") else out.name
    return {"segments": out, "summary": out.with_name(f"{stem}.summary.csv"),
            "failures": out.with_name(f"{stem}.failures.csv"),
            "speakers": out.with_name(f"{stem}.speakers.json")}


def enrolment_centroid(path: str | os.PathLike[str], *, options: DiarizationOptions,
                       encoder: SpeakerEncoder | None = None) -> np.ndarray:
    """Unit mean embedding of an enrolment clip (the caregiver alone), windows on every hop.

    Raises:
        DiarizationError: the clip is shorter than one window.
    """
    enc = encoder or default_encoder(options.encoder)
    y, _ = audio.load(path, sample_rate=ENCODER_SR)
    dur = len(y) / ENCODER_SR
    if dur < options.window_s:
        raise DiarizationError(f"enrolment clip {path}: {dur:.2f} s is shorter than one window "
                               f"({options.window_s:g} s)")
    starts = np.arange(0.0, dur - options.window_s + 1e-9, options.hop_s)
    e = enc.embed_windows(y, ENCODER_SR, starts_s=starts, window_s=options.window_s).mean(0)
    return e / max(float(np.linalg.norm(e)), 1e-12)


def _written_with(stored: dict) -> dict:
    """The full options a ``speakers.json`` was written with: an option it lacks was not there
    yet, so it had its default then, which is today's default except ``kmeans_min_gain``
    (k-means replaced the agglomerative split when tighter at all: 0; irrelevant without
    restarts)."""
    full = {**dataclasses.asdict(DiarizationOptions()), **stored}
    if "kmeans_min_gain" not in stored and full.get("kmeans_restarts"):
        full["kmeans_min_gain"] = 0.0
    return full


def _stored(rec: RecordingDiarization) -> dict:
    return {"duration_s": rec.duration_s, "flags": rec.flags,
            "speech_s": rec.speech_s, "centroids": {k: [round(float(v), 6) for v in c]
                                                    for k, c in rec.centroids.items()}}


def diarize_paths(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    options: DiarizationOptions | None = None,
    output: str | os.PathLike[str] | None = None,
    caregiver_of: Mapping[Path, str] | None = None,
    enrolment: Mapping[str, str | os.PathLike[str]] | None = None,
    resume: bool = True,
    progress: bool = True,
    encoder: SpeakerEncoder | None = None,
    recording_ids: Mapping[Path, str] | None = None,
    workers: int = 1,
    speakers_of: Mapping[Path, int] | None = None,
) -> Diarization:
    """Diarize audio files and folders, identify the caregiver, write the tables.

    Args:
        inputs: audio files and/or folders.
        options: :class:`ser.inference.diarization.DiarizationOptions`.
        output: CSV to write (``None``: nothing written).
        caregiver_of: ``{resolved file path: caregiver}``
            (:func:`ser.inference.speaker_norm.read_speaker_map`); files it does not name
            get ``caregiver_status`` ``no_caregiver_map``.
        enrolment: ``{caregiver: enrolment clip path}``.
        resume: keep files finished in an existing ``output``.
        progress: one line per file on stderr.
        encoder: speaker encoder (default: one per process).
        recording_ids: ``{resolved file path: recording id}`` written as ``recording``
            instead of the path (e.g. a manifest's ids; :func:`diarize_manifest`).
        workers: files diarized at once, each in its own process (one core each; about
            0.6 GiB of memory each). The tables are the same whatever the number; 1: in this
            process.
        speakers_of: ``{resolved file path: number of speakers}``: that file's count instead of
            ``options.num_speakers`` (e.g. 1 where the caregiver is alone; a manifest's
            ``speakers`` column). A resumed file is diarized again when its count changed.

    Returns:
        The :class:`Diarization` tables, as written.

    Raises:
        ResumeError: ``output`` was written with other options.
        ValueError: ``workers`` < 1, or a count of ``speakers_of`` outside 1-``max_speakers``.
    """
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1; got {workers!r}")
    opt = options or DiarizationOptions()
    files, problems = audio.find_audio_files(inputs)
    ids = {Path(p).resolve(): r for p, r in (recording_ids or {}).items()}
    keys = [ids.get(f.resolve(), str(f)) for f in files]
    cg_of = {k: caregiver_of[f.resolve()] for f, k in zip(files, keys, strict=True)
             if caregiver_of and f.resolve() in caregiver_of}
    n_of = {k: int(speakers_of[f.resolve()]) for f, k in zip(files, keys, strict=True)
            if speakers_of and f.resolve() in speakers_of}
    bad = {k: n for k, n in n_of.items() if not 1 <= n <= opt.max_speakers}
    if bad:
        raise ValueError(f"speakers_of: counts must be 1-{opt.max_speakers}; got {bad}")

    def options_of(k: str) -> DiarizationOptions:
        return dataclasses.replace(opt, num_speakers=n_of[k]) if k in n_of else opt

    paths = output_paths(output) if output is not None else None
    opt_json = dataclasses.asdict(opt)
    done: dict[str, dict] = {}
    segs: dict[str, pd.DataFrame] = {}
    if paths is not None and resume and paths["speakers"].is_file() and paths["segments"].is_file():
        try:
            prev = json.loads(paths["speakers"].read_text(encoding="utf-8"))
            old = pd.read_csv(paths["segments"], dtype={"recording": str, "speaker": str})
        except (OSError, ValueError) as e:
            raise ResumeError(f"cannot resume from {paths['segments']}: {e}; delete it or use "
                              "--no-resume") from e
        if _written_with(prev.get("options", {})) != opt_json:
            raise ResumeError(f"cannot resume from {paths['segments']}: written with options "
                              f"{prev.get('options')}, this run uses {opt_json}; delete it, write to "
                              "another file (-o) or use --no-resume")
        for k, v in prev.get("recordings", {}).items():
            if k in keys and v.get("speakers_given") == n_of.get(k):  # a changed count: again
                done[k] = v
                segs[k] = old[old["recording"] == k][["start_s", "end_s", "speaker", "confidence"]]
    failures: dict[str, str] = {str(p): r for p, r in problems}
    enc = encoder or (default_encoder(opt.encoder) if any(k not in done for k in keys) or enrolment else None)
    enrol_c: dict[str, np.ndarray] = {}
    for cg, clip in (enrolment or {}).items():
        try:
            enrol_c[cg] = enrolment_centroid(clip, options=opt, encoder=enc)
        except (DiarizationError, audio.AudioError, OSError) as e:
            failures[str(clip)] = f"enrolment clip of {cg}: {e}"

    def tables() -> Diarization:
        cg_map = {k: cg_of[k] for k in done if k in cg_of}
        cents = {k: {s: np.asarray(c) for s, c in done[k]["centroids"].items()} for k in cg_map}
        ident = cgid.identify_caregivers(cents, {k: done[k]["speech_s"] for k in cg_map}, cg_map,
                                         enrolment={c: e for c, e in enrol_c.items()})
        seg_rows = [segs[k].assign(recording=k) for k in keys if k in done and len(segs[k])]
        seg_df = (pd.concat(seg_rows, ignore_index=True) if seg_rows
                  else pd.DataFrame(columns=["recording", "start_s", "end_s", "speaker", "confidence"]))
        seg_df = cgid.mark_caregiver(seg_df, ident)[list(SEGMENT_COLUMNS)]
        seg_df = seg_df.astype({"recording": str, "speaker": str, "start_s": np.float64,
                                "end_s": np.float64, "confidence": np.float64})
        by = ident.set_index("recording")
        rows = []
        for k in [*keys, *(str(p) for p, _ in problems)]:
            if k in done:
                d = done[k]
                st = by.loc[k] if k in by.index else None
                spk = st["speaker"] if st is not None and st["status"] == "ok" else None
                rows.append({"recording": k, "status": "ok", "duration_s": d["duration_s"],
                             "speech_s": float(sum(d["speech_s"].values())), "speakers": len(d["speech_s"]),
                             "flags": ";".join(d["flags"]), "caregiver_speaker": spk,
                             "caregiver_similarity": st["similarity"] if st is not None else np.nan,
                             "caregiver_status": st["status"] if st is not None else "no_caregiver_map",
                             "caregiver_speech_s": d["speech_s"].get(spk, np.nan) if spk else np.nan,
                             "reason": (st["reason"] if st is not None and st["reason"] else
                                        "; ".join(FLAGS[f] for f in d["flags"]))})
            elif k in failures:
                rows.append({"recording": k, "status": "failed", "reason": failures[k]})
        fail = pd.DataFrame(list(failures.items()), columns=list(FAILURE_COLUMNS))
        return Diarization(seg_df, pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)), fail, ident)

    def write() -> Diarization:
        res = tables()
        if paths is not None:
            atomic.atomic_write_csv(paths["segments"], res.segments, index=False, float_format="%.3f",
                                    lineterminator="\n")
            atomic.atomic_write_csv(paths["summary"], res.summary, index=False, lineterminator="\n")
            atomic.atomic_write_csv(paths["failures"], res.failures, index=False, lineterminator="\n")
            atomic.atomic_write_json(paths["speakers"], {"options": opt_json, "recordings": done})
        return res

    todo = [(f, k) for f, k in zip(files, keys, strict=True) if k not in done]
    count = len(files) - len(todo)

    def record(f: Path, k: str, outcome: RecordingDiarization | str) -> None:
        nonlocal count
        count += 1
        failures.pop(k, None)
        if isinstance(outcome, str):
            failures[k] = outcome
        else:
            done[k] = {**_stored(outcome), **({"speakers_given": n_of[k]} if k in n_of else {})}
            segs[k] = outcome.segments
        if progress:
            print(f"[ser diarize] {count}/{len(files)} {f.name}: "
                  f"{'failed: ' + failures[k] if k in failures else 'ok'}", file=sys.stderr)
        write()

    if int(workers) == 1 or len(todo) < 2:
        for f, k in todo:
            record(f, k, _diarize_one(f, options_of(k), enc))
        return write()
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(max_workers=min(int(workers), len(todo)),
                                mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_diarize_one, f, options_of(k), None): (f, k) for f, k in todo}
        try:
            for fut in cf.as_completed(futures):
                f, k = futures[fut]
                try:
                    outcome = fut.result()
                except cf.process.BrokenProcessPool as e:  # a worker died (e.g. out of memory)
                    outcome = f"the diarization worker process died: {e}"
                record(f, k, outcome)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return write()


def _diarize_one(path: Path, options: DiarizationOptions,
                 encoder: SpeakerEncoder | None) -> RecordingDiarization | str:
    """One file's diarization, or the reason it failed (runs in a worker process too)."""
    try:
        return diarize_recording(path, options=options, encoder=encoder)
    except (DiarizationError, audio.AudioError, OSError, ValueError) as e:
        return str(e)


def diarize_manifest(
    manifest: str | os.PathLike[str], *, output: str | os.PathLike[str] | None = None,
    options: DiarizationOptions | None = None, resume: bool = True, progress: bool = False,
    encoder: SpeakerEncoder | None = None,
) -> Diarization:
    """Diarize a cohort's recordings (e.g. into ``results/tables/speakers.csv``), keyed by recording id.

    Args:
        manifest: ``manifest.csv`` with ``recording, caregiver, path`` (paths relative to it)
            and optionally ``enrolment_path``: an enrolment clip of that row's caregiver
            (empty where there is none; one clip per caregiver), and ``speakers``: how many
            people speak in that recording (empty: ``options.num_speakers``).
        output, options, resume, progress, encoder, workers: as :func:`diarize_paths`.

    Returns:
        :class:`Diarization` with ``recording`` = the manifest's ids.

    Raises:
        ValueError: missing columns, or two enrolment clips for one caregiver.
    """
    manifest = Path(manifest)
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    return diarize_recordings(df, base_dir=manifest.parent, output=output, options=options,
                              resume=resume, progress=progress, encoder=encoder, source=str(manifest))


def diarize_recordings(
    recordings: pd.DataFrame, *, base_dir: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None, options: DiarizationOptions | None = None,
    resume: bool = True, progress: bool = False, encoder: SpeakerEncoder | None = None,
    source: str = "recordings table", workers: int = 1,
) -> Diarization:
    """:func:`diarize_manifest` on a table already read (e.g. stage 04's ``recordings.csv``).

    Args:
        recordings: ``recording, caregiver, path`` (optional ``enrolment_path``, and
            ``speakers``: that recording's number of speakers, empty for ``options``'s).
        base_dir: folder that relative ``path`` and ``enrolment_path`` are taken from.
        source: the table's name in error messages.
        output, options, resume, progress, encoder, workers: as :func:`diarize_paths`.

    Raises:
        ValueError: missing columns, two enrolment clips for one caregiver, or a ``speakers``
            value that is not a whole number from 1 to ``options.max_speakers``.
    """
    df = recordings.astype({c: str for c in ("recording", "caregiver", "path") if c in recordings})
    base = Path(base_dir)
    need = {"recording", "caregiver", "path"}
    if not need <= set(df.columns):
        raise ValueError(f"{source}: needs columns {sorted(need)}; got {list(df.columns)}")
    files = [(base / p).resolve() for p in df["path"]]
    enrol: dict[str, str] = {}
    clips = df["enrolment_path"].fillna("").astype(str) if "enrolment_path" in df else [""] * len(df)
    for cg, clip in zip(df["caregiver"], clips, strict=True):
        if clip.strip():
            path = str((base / clip.strip()).resolve())
            if enrol.setdefault(cg, path) != path:
                raise ValueError(f"{source}: caregiver {cg} has two enrolment clips ({enrol[cg]}, {path})")
    most = (options or DiarizationOptions()).max_speakers
    counts: dict[Path, int] = {}
    for rec, f, v in zip(df["recording"], files, df["speakers"] if "speakers" in df else [None] * len(df),
                         strict=True):
        if v is None or pd.isna(v) or str(v).strip() == "":
            continue
        n = pd.to_numeric(str(v).strip(), errors="coerce")
        if pd.isna(n) or n != int(n) or not 1 <= int(n) <= most:
            raise ValueError(f"{source}: recording {rec}: speakers must be a whole number from 1 to "
                             f"{most} (or empty); got {v!r}")
        counts[f] = int(n)
    return diarize_paths(files, options=options, output=output,
                         caregiver_of=dict(zip(files, df["caregiver"], strict=True)),
                         enrolment=enrol or None, resume=resume, progress=progress, encoder=encoder,
                         recording_ids=dict(zip(files, df["recording"], strict=True)), workers=workers,
                         speakers_of=counts or None)


def diarize_cli(*, inputs: Sequence[str], output: str, options: DiarizationOptions,
                caregiver_of: str | None, enrolment: str | None, resume: bool, progress: bool,
                workers: int = 1) -> int:
    """``ser diarize``: exit 0 when every file was diarized, 1 when some failed, 2 on bad options."""
    from ser.inference.speaker_norm import read_speaker_map

    try:
        mapping = read_speaker_map(caregiver_of) if caregiver_of else None
        enrol = None
        if enrolment:
            df = pd.read_csv(enrolment, dtype=str, keep_default_na=False)
            if not {"caregiver", "path"} <= set(df.columns):
                raise ValueError(f"--enrolment {enrolment}: needs columns caregiver, path; got {list(df.columns)}")
            enrol = {c: str(Path(enrolment).parent / p) for c, p in zip(df["caregiver"], df["path"], strict=True)}
        res = diarize_paths(inputs, options=options, output=output, caregiver_of=mapping,
                            enrolment=enrol, resume=resume, progress=progress, workers=workers)
    except (ValueError, FileNotFoundError) as e:
        print(f"ser diarize: error: {e}", file=sys.stderr)
        return 2
    ok = res.summary["status"].eq("ok").sum()
    print(f"[ser diarize] {ok} file(s) diarized, {len(res.failures)} failed; turns in {output}",
          file=sys.stderr)
    return 0 if res.failures.empty else 1
