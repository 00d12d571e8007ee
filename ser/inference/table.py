"""Stage 04: windowed inference over a table of cohort recordings (:func:`predict_table`),
resumable.

Per-recording failures go to a failure table and the rest carries on; the window table
is rewritten atomically as recordings finish (temp file + rename, so the file on disk
is always complete), and a rerun resumes from it: recordings already done are skipped,
failed ones tried again, and the result has no duplicate or missing rows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ser.core import atomic, paths
from ser.data.schema import ID_COLUMNS, UNCERTAINTY_COLUMNS
from ser.inference import recording, speaker_norm, speakers, uncertainty, words
from ser.inference.cluster import Job, parse_cluster, run_recordings
from ser.inference.options import InferenceOptions
from ser.inference.protocol import ModelBundle, needs_reference
from ser.inference.stamp import model_stamp, model_stamp_path, read_stamp, same_model
from ser.inference.workers import feature_workers
from ser.signal import wavheader

#: Columns of the failure table of :func:`predict_table`.
FAILURE_COLUMNS: tuple[str, ...] = ("recording", "path", "reason")


def _check_recordings(recordings: pd.DataFrame) -> None:
    if not isinstance(recordings, pd.DataFrame):
        raise TypeError(f"recordings must be a DataFrame (recordings.csv); got {type(recordings).__name__}")
    missing = [c for c in (*ID_COLUMNS, "path") if c not in recordings.columns]
    if missing:
        raise ValueError(f"recordings table lacks columns {missing}; stage 01 (01_preprocess) "
                         f"writes recordings.csv with {[*ID_COLUMNS, 'path']}")
    dup = recordings["recording"][recordings["recording"].duplicated()].astype(str).unique()
    if len(dup):
        raise ValueError(f"recordings table has duplicate recording ids {list(dup)[:5]}; "
                         "each recording must appear once")


def _read_previous(out_csv: Path, columns: list[str], hop_s: float,
                   wanted: set[str]) -> pd.DataFrame:
    """Rows of recordings already complete in ``out_csv`` (empty when none)."""
    if not out_csv.is_file():
        return pd.DataFrame(columns=columns)
    try:
        prev = pd.read_csv(out_csv, dtype={c: str for c in (*ID_COLUMNS, "norm_unit")})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot resume from {out_csv}: {e}; delete it or pass resume=False") from e
    prev = prev.drop(columns=[c for c in speakers.SPEAKER_COLUMNS if c in prev.columns])  # recomputed
    prev = prev.drop(columns=words.text_columns(prev.columns))  # the text channel: added after stage 04's windows
    upgraded = uncertainty.add_uncertainty(prev, columns=columns)
    if upgraded is not prev:
        print(f"{out_csv.name} was written before the per-window uncertainty columns: "
              f"{', '.join(UNCERTAINTY_COLUMNS)} computed from its stored probabilities",
              file=sys.stderr)
        prev = upgraded
    if list(prev.columns) != columns:
        raise ValueError(f"cannot resume from {out_csv}: its columns differ from this model's "
                         f"({len(prev.columns)} vs {len(columns)}, e.g. other labels); "
                         "delete it or pass resume=False")
    prev = prev[prev["recording"].isin(wanted)]
    for rec, g in prev.groupby("recording", sort=False):
        steps = np.diff(g["start_s"].to_numpy())
        if len(steps) and not np.allclose(steps, hop_s, rtol=0, atol=1e-6):
            raise ValueError(f"cannot resume from {out_csv}: recording {rec} was computed with "
                             f"hop {steps[0]:g} s, not hop_s={hop_s:g}; delete it or pass resume=False")
    return prev


def _same_voice(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Same ``speaker`` and ``vad`` settings as the stored stamp (per-recording turns aside)."""
    old_v = (old or {}).get("voice")
    if old_v is None or new is None:
        return old_v is None and new is None
    return all(old_v.get(k) == new.get(k) for k in ("speaker", "vad"))


def truncation_note(path: str | os.PathLike[str]) -> str | None:
    """The failure-table reason of a WAV whose header promises more samples than it holds
    (:func:`ser.signal.wavheader.wav_truncation`: name, promised and found length, in the
    file's own sample frames; the samples present are analysed), or None for a complete file.

    Args:
        path: audio file.
    """
    cut = wavheader.wav_truncation(path)
    if cut is None:
        return None
    promised, found = cut
    return (f"truncated: {Path(path).name}'s header promises {promised} sample frames, the file holds "
            f"{found}; the samples present were analysed (its windows are in windows.csv)")


def public_failures(failures: pd.DataFrame) -> pd.DataFrame:
    """The failure table without file locations, for display in a report.

    Args:
        failures: ``recording, path, reason`` as written by :func:`predict_table`.

    Returns:
        ``recording, reason`` with every mention of the file's path (as given, resolved,
        or just its name) in ``reason`` replaced by ``<audio file>``.
    """

    def redact(path: Any, reason: Any) -> str:
        text = str(reason)
        p = Path(str(path))
        for s in sorted({str(path), str(paths.resolve(p)), p.name} - {""}, key=len, reverse=True):
            text = text.replace(s, "<audio file>")
        return text

    reasons = [redact(p, r) for p, r in zip(failures["path"], failures["reason"], strict=True)]
    return pd.DataFrame({"recording": failures["recording"].to_numpy(), "reason": reasons})


def predict_table(
    bundle: ModelBundle,
    recordings: pd.DataFrame,
    *,
    options: InferenceOptions,
    out_csv: str | os.PathLike[str],
    failures_csv: str | os.PathLike[str],
    resume: bool = True,
    progress: bool = True,
    turns: pd.DataFrame | None = None,
    cluster: str | None = None,
) -> pd.DataFrame:
    """Run :func:`ser.inference.recording.predict_recording` over a table of recordings
    (stage 04); resumable.

    After each recording, ``out_csv`` (all finished rows, in table order) and
    ``failures_csv`` (``recording, path, reason`` of this run's failures) are rewritten
    atomically, so an interrupted run leaves complete recordings only. With ``resume``,
    recordings already in ``out_csv`` are skipped; failed ones are tried again. The model
    that computed ``out_csv`` is named beside it (:func:`ser.inference.stamp.model_stamp_path`:
    bundle name, precision and :func:`ser.models.bundle.bundle_fingerprint`); when the bundle
    has changed since (retrained, recalibrated), nothing is reused and every recording is
    recomputed. Rows of recordings no longer in ``recordings`` are dropped. A table written
    before the uncertainty columns existed gets them from its stored probabilities
    (:func:`ser.inference.uncertainty.add_uncertainty`).

    A bundle trained with ``speaker_norm`` (:func:`ser.inference.protocol.needs_reference`)
    first gets a reference per normalisation unit (``options.norm_unit``: the caregiver,
    pooled over both phases, or the recording) from a first pass over every recording
    (:mod:`ser.inference.speaker_norm`), then each recording is predicted with its unit's
    reference and gets the columns ``norm_unit, norm_fallback``. The first pass always
    covers every recording (a unit's reference depends on all of them); on resume, only
    recordings whose reference is unchanged are kept.

    Speaker turns (``turns``: ``speakers.csv`` of :func:`ser.inference.diarize_files.diarize_manifest`)
    give every window :data:`ser.inference.speakers.SPEAKER_COLUMNS` (computed afresh at
    every write, from the turns given). With ``options.speaker == "caregiver"`` the other
    speakers' turns are silenced before the model and the prosody
    (:mod:`ser.inference.speakers`); a recording without turns or without an identified
    caregiver goes to the failure table, and on resume a recording whose silenced
    stretches changed is recomputed. A change of ``speaker`` or ``vad`` recomputes every
    recording.

    Args:
        bundle: model bundle (see :func:`ser.inference.recording.predict_recording`).
        recordings: columns ``recording, caregiver, level, phase, path`` (others are
            ignored); relative paths are taken from the project root.
        options: hop, batch size, block size, features and workers
            (:class:`ser.inference.options.InferenceOptions`).
        out_csv: window table to write (``windows.csv``).
        failures_csv: failure table to write (``inference_failures.csv``).
        resume: reuse finished recordings from an existing ``out_csv``.
        progress: show a tqdm progress bar.
        turns: speaker turns (``recording, start_s, end_s, speaker, is_caregiver, confidence``)
            or ``None`` (no share columns; ``speaker`` must be ``"all"``).
        cluster: ``None`` (this machine, features in ``options.workers`` processes),
            ``"local"``, ``"local:N"`` or ``"tcp://HOST:PORT"``: one task per recording on a
            Dask cluster (:mod:`ser.inference.cluster`); the tables, resume and failure table
            stay here and are the same row for row.

    Returns:
        The window table written to ``out_csv``: ``recording, caregiver, level, phase``
        then the columns of :func:`ser.inference.recording.predict_recording` (then
        ``norm_unit, norm_fallback`` for a speaker-normalised bundle, then
        ``caregiver_speech_s, other_speech_s, caregiver_share`` with ``turns``).

    Raises:
        ValueError: bad ``hop_s``, options, ``cluster`` or table (``norm_unit="none"`` for a
            bundle that needs a reference), ``speaker="caregiver"`` without ``turns``, or an
            ``out_csv`` that cannot be resumed.
    """
    options = options.resolve(bundle)
    _check_recordings(recordings)
    if cluster is not None:
        parse_cluster(cluster)  # before any work
    out_csv, failures_csv = Path(out_csv), Path(failures_csv)
    norm = needs_reference(bundle)
    columns = [*ID_COLUMNS, *recording.window_columns(bundle.labels, voice_quality=options.voice_quality,
                                                      egemaps=options.egemaps,
                                                      output_prefix=bundle.output_prefix),
               *(speaker_norm.NORM_COLUMNS if norm else ())]
    if options.speaker == "caregiver" and turns is None:
        raise ValueError("speaker 'caregiver' needs the speaker turns (speakers.csv from the "
                         "diarization, diarize: true); got none")
    by_rec = speakers.turns_by_recording(turns) if turns is not None else {}
    out_columns = [*columns, *(speakers.SPEAKER_COLUMNS if turns is not None else ())]
    recs = recordings.assign(**{c: recordings[c].astype(str) for c in ID_COLUMNS})
    order = {r: i for i, r in enumerate(recs["recording"])}
    paths_of = {r: paths.resolve(str(p)) for r, p in zip(recs["recording"], recs["path"], strict=True)}

    stamp_path = model_stamp_path(out_csv)
    stamp = model_stamp(bundle)
    silenced: dict[str, np.ndarray] = {}
    speaker_failures: dict[str, str] = {}
    if options.speaker == "caregiver":
        for r in recs["recording"]:
            if r not in by_rec:
                speaker_failures[r] = ("no speaker turns for this recording (diarization failed or "
                                       "found no speech; see speakers.failures.csv): its caregiver's "
                                       "speech cannot be isolated")
                continue
            try:
                silenced[r] = speakers.other_intervals(by_rec[r])
            except ValueError as e:
                speaker_failures[r] = (f"{e} (speakers.summary.csv, caregiver_status): her speech "
                                       "cannot be isolated, so nothing is guessed")
    voice = speakers.speaker_stamp(speaker=options.speaker, vad=options.vad, silenced=silenced)
    if voice is not None:
        stamp["voice"] = voice
    refs: dict[str, speaker_norm.UnitReference] = {}
    ref_failures: dict[str, str] = {}
    if norm:  # first pass: every unit's reference, before any window is predicted
        unit_col = "caregiver" if options.norm_unit == "caregiver" else "recording"
        units: dict[str, list[tuple[str, Path]]] = {}
        for r, u in zip(recs["recording"], recs[unit_col], strict=True):
            units.setdefault(u, []).append((r, paths_of[r]))
        by_unit, ref_failures = speaker_norm.unit_references(bundle, units, options=options,
                                                             progress=progress, silence_s=silenced)
        refs = {r: ref for ref in by_unit.values() for r in ref.members}
        stamp["norm"] = speaker_norm.norm_stamp(options.norm_unit, {r: ref.key for r, ref in refs.items()})
    done: dict[str, pd.DataFrame] = {}
    old_stamp = read_stamp(stamp_path) if resume and out_csv.is_file() else None
    if resume and out_csv.is_file() and not same_model(old_stamp, stamp):
        print(f"{out_csv.name} was computed with another model than {stamp['model']} "
              f"({stamp_path.name} differs or is missing): recomputing every recording",
              file=sys.stderr)
    elif resume and out_csv.is_file() and not _same_voice(old_stamp, voice):
        print(f"{out_csv.name} was computed with another speaker or speech-detection setting "
              f"than speaker={options.speaker!r}, vad={options.vad!r}: recomputing every recording",
              file=sys.stderr)
    elif resume:
        prev = _read_previous(out_csv, columns, float(options.hop_s), set(order))
        done = {r: g for r, g in prev.groupby("recording", sort=False)}
        if voice is not None:  # caregiver mode: keep recordings whose silenced turns are unchanged
            old_turns = (old_stamp or {}).get("voice", {}).get("turns", {})
            done = {r: g for r, g in done.items() if old_turns.get(r) == voice["turns"].get(r)}
        if norm:  # keep only rows computed with the reference each recording has now
            same = speaker_norm.reusable(old_stamp, stamp["norm"])
            if same is None and done:
                print(f"{out_csv.name} was computed with another normalisation unit than "
                      f"{options.norm_unit!r}: recomputing every recording", file=sys.stderr)
            done = {r: g for r, g in done.items() if same is not None and r in same}
    failures: list[dict[str, Any]] = []
    truncated: dict[str, str | None] = {}  # recording -> note, for every recording with windows

    def truncation_notes() -> list[dict[str, Any]]:
        """Recordings analysed from a WAV whose header promises more samples than it holds."""
        for r in done:
            if r not in truncated:
                truncated[r] = truncation_note(paths_of[r])
        return [{"recording": r, "path": str(paths_of[r]), "reason": note}
                for r, note in truncated.items() if note and r in done]

    def write() -> pd.DataFrame:
        parts = [done[r] for r in sorted(done, key=order.__getitem__)]
        if turns is not None:  # whose voice: from the turns given, for every recording
            parts = [g.assign(**speakers.window_speaker_seconds(
                g["start_s"].to_numpy(), g["end_s"].to_numpy(), by_rec.get(r)).set_index(g.index))
                for r, g in ((p["recording"].iloc[0], p) for p in parts)]
        table = (pd.concat(parts, ignore_index=True) if parts
                 else pd.DataFrame(columns=out_columns))[out_columns]
        atomic.atomic_write_csv(out_csv, table)
        # after the rows: a crash in between leaves an old stamp, so the rows are redone
        atomic.atomic_write_json(stamp_path, stamp)
        atomic.atomic_write_csv(failures_csv,
                                pd.DataFrame(sorted(failures + truncation_notes(),
                                                    key=lambda f: order[f["recording"]]),
                                             columns=list(FAILURE_COLUMNS)))
        return table

    todo = recs[~recs["recording"].isin(done)]
    for row in todo.itertuples(index=False):
        if row.recording in ref_failures or row.recording in speaker_failures:
            # unreadable in the first pass, no reference at all, or (caregiver mode) no caregiver identified
            failures.append({"recording": row.recording, "path": str(row.path),
                             "reason": ref_failures.get(row.recording) or speaker_failures[row.recording]})
            write()
    rows = {row["recording"]: row for row in (r._asdict() for r in todo.itertuples(index=False))
            if row["recording"] not in ref_failures and row["recording"] not in speaker_failures}
    jobs = [Job(rec, paths_of[rec], refs[rec].reference if norm else None, silenced.get(rec),
                refs[rec].known.get(rec) if norm else None) for rec in rows]
    bar = tqdm(total=len(jobs), disable=not progress, desc="inference", unit="rec")
    with feature_workers(options.workers if cluster is None else 0) as pool:
        for job, outcome in run_recordings(bundle, jobs, options=options, pool=pool, cluster=cluster,
                                           log=lambda msg: bar.write(msg, file=sys.stderr)):
            rec, row = job.key, rows[job.key]
            try:
                df, _ = outcome.get()
            except Exception as e:  # noqa: BLE001 - any per-file error goes to the failure table
                failures.append({"recording": rec, "path": str(row["path"]),
                                 "reason": f"{type(e).__name__}: {e}"})
            else:
                for c in reversed(ID_COLUMNS):
                    df.insert(0, c, row[c])
                if norm:
                    df = df.assign(**speaker_norm.norm_values(refs[rec]))
                done[rec] = df
            write()
            bar.update(1)
    bar.close()
    return write()
