"""Windowed inference over audio files and folders (``ser predict``): :func:`predict_paths`
and the command :func:`predict_cli`.

Per-file failures are recorded and the rest carries on; the outputs are rewritten
atomically as files finish (temp file + rename, so a file on disk is always complete),
and a rerun resumes from a previous partial run: files already done are skipped, failed
ones tried again, and the result has no duplicate or missing rows.

Outputs (see :func:`predict_paths`):

- CSV with ``-o FILE``: windows in ``FILE`` (``file, start_s, end_s, p_<label>…,
  emotion_entropy, emotion_top_p,`` features, ``padded``; ``d_arousal, d_dominance,
  d_valence`` in place of ``p_<label>`` and the two uncertainty columns for a dimensional
  model, :mod:`ser.models.dimensional`; see :func:`ser.inference.recording.window_columns`);
  the per-file summary in ``FILE`` with ``.csv`` replaced by ``.summary.csv``
  (``results.csv`` → ``results.summary.csv``; ``.summary.csv`` is appended when ``FILE``
  has another suffix); the failures (``file, reason``) in ``.failures.csv`` likewise.
  Without ``-o`` the windows go to stdout and the summary and failures to stderr. Beside
  ``FILE``, ``<stem>.model.json`` names the model that computed it
  (:func:`ser.inference.stamp.model_stamp_path`); a resume with another model, or with a
  retrained or recalibrated bundle of the same name, is refused. Windows written before
  ``emotion_entropy`` and ``emotion_top_p`` existed get them from their stored
  probabilities on resume (:func:`ser.inference.uncertainty.add_uncertainty`).
- JSON: one object ``{"windows": [...], "summary": [...], "failures": [...]}`` (lists
  of row objects, NaN written as ``null``) in ``FILE`` or on stdout.

Summary columns (:func:`summary_columns`): ``file, status`` (``ok``; ``failed``;
``too_short``: shorter than the model's window, no windows unless ``pad_short`` /
``--pad-short``, which gives one zero-padded window and status ``ok``; ``truncated``: a WAV
whose header promises more samples than it holds, the samples present analysed),
``duration_s`` (native length, s), ``sample_rate`` (native, Hz), ``channels``,
``windows``, ``dominant_emotion`` (the label with the highest mean probability over
the file's windows; empty for a dimensional model), ``p_<label>`` (mean probability;
``d_<dimension>``, the mean value, for a dimensional model), ``window_s``, ``hop_s``,
``model`` (bundle folder name, with ``@bf16`` or ``@int8`` for a reduced precision, so
a resumed run never mixes precisions), ``error`` (the reason when failed, too short or
truncated: name, promised and found length).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ser.core import atomic, timing
from ser.inference import grid, recording, speaker_norm, uncertainty
from ser.inference.cluster import Job, parse_cluster, run_recordings
from ser.inference.options import InferenceOptions
from ser.inference.protocol import ModelBundle, needs_reference, output_columns
from ser.inference.stamp import model_name, model_stamp, model_stamp_path, read_stamp, same_model
from ser.inference.workers import feature_workers
from ser.models.bundle import load_bundle
from ser.models.integrity import UnsealedBundleWarning
from ser.signal import audio, wavheader

#: Columns of the failure table of :func:`predict_paths` / ``ser predict``.
FILE_FAILURE_COLUMNS: tuple[str, ...] = ("file", "reason")
#: Output formats of :func:`predict_paths`.
FORMATS: tuple[str, ...] = ("csv", "json")
#: Summary statuses whose windows a resumed run keeps (``too_short`` files are redone).
RESUMABLE_STATUSES: tuple[str, ...] = ("ok", "truncated")
#: Minimum seconds between two checkpoint writes of a batch (and always at the end).
CHECKPOINT_S: float = 5.0


class ResumeError(ValueError):
    """An existing output cannot be resumed (other model, labels, hop or options)."""


class OutputPathError(ValueError):
    """An output file of :func:`predict_paths` cannot be written where it was asked."""


def summary_columns(labels: Iterable[str], *, output_prefix: str = "p_") -> list[str]:
    """Columns of the per-file summary of :func:`predict_paths` (see the module docstring);
    ``output_prefix`` is the bundle's (``p_`` or ``d_``)."""
    return ["file", "status", "duration_s", "sample_rate", "channels", "windows",
            "dominant_emotion", *[f"{output_prefix}{lab}" for lab in labels], "window_s", "hop_s",
            "model", "error"]


_SUMMARY_INTS = ("sample_rate", "channels", "windows")
_SUMMARY_STRS = ("file", "status", "dominant_emotion", "model", "error")


@dataclass(frozen=True)
class Prediction:
    """Result of :func:`predict_paths`.

    Attributes:
        windows: ``file`` then :func:`ser.inference.recording.window_columns`, one row per
            window, files in input order.
        summary: :func:`summary_columns`, one row per file (failed ones included).
        failures: ``file, reason`` per failed file or input.
    """

    windows: pd.DataFrame
    summary: pd.DataFrame
    failures: pd.DataFrame


def output_paths(output: str | os.PathLike[str], *, fmt: str = "csv") -> dict[str, Path]:
    """Files :func:`predict_paths` writes for ``output``.

    Returns:
        ``{"windows": FILE}`` for JSON; for CSV also ``"summary"`` and ``"failures"``:
        ``FILE`` with ``.csv`` replaced by ``.summary.csv`` / ``.failures.csv`` (appended
        when ``FILE`` does not end in ``.csv``).
    """
    out = Path(output)
    if fmt == "json":
        return {"windows": out}
    stem = out.name[:-4] if out.name.lower().endswith(".csv") else out.name
    return {"windows": out, "summary": out.with_name(f"{stem}.summary.csv"),
            "failures": out.with_name(f"{stem}.failures.csv")}


def check_output_paths(output: str | os.PathLike[str], *, fmt: str = "csv") -> None:
    """Check, before any work, that every file :func:`predict_paths` writes for ``output``
    (:func:`output_paths` and the model stamp) can be written: none is a folder, and the
    nearest existing folder above each is a folder (not a regular file) that this process
    may write into (missing folders are created later).

    Raises:
        OutputPathError: naming the path and the problem.
    """
    check_writable([*output_paths(output, fmt=fmt).values(), model_stamp_path(Path(output))])


def check_writable(targets: Iterable[Path]) -> None:
    """Check, before any work, that each file of ``targets`` can be written (or resumed):
    none is a folder, and the nearest existing folder above each is a folder this process
    may write into (missing folders are created later).

    Raises:
        OutputPathError: naming the path and the problem.
    """
    for path in targets:
        if path.is_dir():
            raise OutputPathError(f"cannot write {path}: it is a folder; give a file name (-o FILE)")
        folder = path.parent
        while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise OutputPathError(f"cannot write {path}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {path}: permission denied for folder {folder}")
        if path.exists() and not os.access(path, os.R_OK):
            raise OutputPathError(f"cannot resume {path}: permission denied (it cannot be read)")


def _json_value(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if v is pd.NA or v is None:
        return None
    return v


def _json_rows(df: pd.DataFrame) -> str:
    """Rows as comma-separated JSON objects (no brackets); NaN → null."""
    cols = list(df.columns)
    return ", ".join(json.dumps(dict(zip(cols, map(_json_value, row), strict=True)), allow_nan=False)
                     for row in df.itertuples(index=False, name=None))


def _normalise_summary(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Canonical dtypes, so a table re-read from disk renders exactly as written."""
    df = df.reindex(columns=columns)
    for c in columns:
        if c in _SUMMARY_INTS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
        elif c in _SUMMARY_STRS:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
            df[c] = df[c].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                              else str(v))
        else:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    return df


class _Outputs:
    """Atomic, resumable writer of the three tables of :func:`predict_paths`."""

    def __init__(self, output: Path, *, fmt: str, window_cols: list[str], summary_cols: list[str]):
        self.paths = output_paths(output, fmt=fmt)
        self.fmt = fmt
        self.window_cols = ["file", *window_cols]
        self.summary_cols = summary_cols
        self._rendered: dict[str, str] = {}

    def _render(self, key: str, df: pd.DataFrame) -> str:
        if key not in self._rendered:
            self._rendered[key] = (df.to_csv(index=False, header=False, lineterminator="\n")
                                   if self.fmt == "csv" else _json_rows(df))
        return self._rendered[key]

    def write(self, parts: list[tuple[str, pd.DataFrame]], summary: pd.DataFrame,
              failures: pd.DataFrame) -> None:
        """Write windows (first), then summary, then failures; each file atomically."""
        if self.fmt == "csv":
            header = pd.DataFrame(columns=self.window_cols).to_csv(index=False, lineterminator="\n")
            atomic.atomic_write_text(self.paths["windows"],
                                         header + "".join(self._render(k, d) for k, d in parts))
            atomic.atomic_write_csv(self.paths["summary"], summary, lineterminator="\n")
            atomic.atomic_write_csv(self.paths["failures"], failures, lineterminator="\n")
            return
        rows = ", ".join(t for t in (self._render(k, d) for k, d in parts) if t)
        text = ('{"windows": [' + rows + '], "summary": [' + _json_rows(summary)
                + '], "failures": [' + _json_rows(failures) + "]}\n")
        atomic.atomic_write_text(self.paths["windows"], text)

    def write_stamp(self, stamp: dict[str, Any]) -> None:
        """Name the model beside the tables (after them: a crash in between is refused on resume)."""
        atomic.atomic_write_json(model_stamp_path(self.paths["windows"]), stamp)

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        """Previous windows and summary, or None when there is nothing to resume."""
        main = self.paths["windows"]
        if not main.is_file() or ("summary" in self.paths and not self.paths["summary"].is_file()):
            return None
        try:
            if self.fmt == "csv":
                win = pd.read_csv(main, dtype={"file": str, "norm_unit": str},
                                  keep_default_na=False, na_values=[""])
                summ = pd.read_csv(self.paths["summary"], dtype={c: str for c in _SUMMARY_STRS},
                                   keep_default_na=False,
                                   na_values=[""])
            else:
                obj = json.loads(main.read_text(encoding="utf-8"))
                win = pd.DataFrame(obj["windows"], columns=self.window_cols if not obj["windows"]
                                   else None)
                summ = pd.DataFrame(obj["summary"], columns=self.summary_cols if not obj["summary"]
                                    else None)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ResumeError(f"cannot resume from {main}: {e}; delete it or write to another "
                              "file (-o)") from e
        # a table written before the uncertainty columns gets them from its probabilities
        win = uncertainty.add_uncertainty(win, columns=self.window_cols)
        if list(win.columns) != self.window_cols or list(summ.columns) != self.summary_cols:
            raise ResumeError(f"cannot resume from {main}: its columns differ from this run's "
                              "(another model's labels or other feature options); delete it or "
                              "write to another file (-o)")
        for c in self.window_cols[1:]:
            if c in ("padded", "norm_fallback"):
                win[c] = win[c].astype(bool)
            elif c == "norm_unit":
                win[c] = win[c].astype(str)
            else:
                win[c] = pd.to_numeric(win[c]).astype(np.float64)
        win["file"] = win["file"].astype(str)
        return win, _normalise_summary(summ, self.summary_cols)


def _summary_row(file: str, df: pd.DataFrame, info: dict[str, Any], labels: list[str], *,
                 output_prefix: str, window_s: float, hop_s: float, model: str) -> dict[str, Any]:
    cols = [f"{output_prefix}{lab}" for lab in labels]
    means = df[cols].mean().to_numpy()
    dominant = labels[int(np.argmax(means))] if output_prefix == "p_" else None
    return {"file": file, "status": "ok", **info, "windows": len(df),
            "dominant_emotion": dominant,
            **{c: float(m) for c, m in zip(cols, means, strict=True)},
            "window_s": window_s, "hop_s": float(hop_s), "model": model, "error": None}


def _reason(e: BaseException) -> str:
    """A failure's reason for the failure table: a denied read says "permission denied"."""
    if isinstance(e, PermissionError) or "Permission denied" in str(e):
        return f"permission denied: {getattr(e, 'filename', None) or e}"
    return f"{type(e).__name__}: {e}"


def _note_truncation(path: Path, row: dict[str, Any]) -> None:
    """Mark a file's summary row ``truncated`` (status and message) when its WAV header
    promises more samples than it holds (:func:`ser.signal.wavheader.wav_truncation`)."""
    cut = wavheader.wav_truncation(path)
    if cut is None:
        return
    promised, found = cut
    sr = row.get("sample_rate") or 0
    secs = (lambda n: f" ({n / sr:.2f} s)") if sr else (lambda n: "")
    note = (f"{path}: truncated: its header promises {promised} samples{secs(promised)}, the file "
            f"holds {found}{secs(found)}")
    if row["status"] == "ok":
        row["status"], row["error"] = "truncated", note + f"; the {found} samples present were analysed"
    else:
        row["error"] = f"{row['error']}; {note}"


def predict_paths(
    bundle: ModelBundle,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    options: InferenceOptions,
    output: str | os.PathLike[str] | None = None,
    fmt: str = "csv",
    resume: bool = True,
    progress: bool = True,
    checkpoint_s: float = CHECKPOINT_S,
    timings: MutableMapping[str, float] | None = None,
    speaker_of: Mapping[Path, str] | None = None,
    cluster: str | None = None,
) -> Prediction:
    """Windowed emotion + features for audio files and folders (``ser predict``).

    Folders are searched recursively (:func:`ser.signal.audio.find_audio_files`). Each file is
    processed by :func:`ser.inference.recording.predict_recording`; a file that fails
    (unreadable, silent, M4A without ffmpeg, ...) gets a failure row and the rest carries
    on. With ``output``, the
    tables are rewritten atomically as files finish (at most every ``checkpoint_s``
    seconds, and on exit, including Ctrl-C), and with ``resume`` a previous run's
    finished files are kept and skipped. See the module docstring for the files and columns.

    A bundle trained with ``speaker_norm`` is given a reference per normalisation unit
    (``options.norm_unit``: ``"caregiver"``, each person of ``speaker_of`` with all their
    files pooled, or ``"recording"``, each file) from a first pass over every file
    (:mod:`ser.inference.speaker_norm`); its windows get ``norm_unit, norm_fallback``.
    Other bundles ignore ``norm_unit`` and ``speaker_of``.

    Args:
        bundle: model bundle (see :func:`ser.inference.recording.predict_recording`).
        inputs: audio files and/or folders.
        options: hop (``None``: half the window), batch size, block size, features and
            workers (:class:`ser.inference.options.InferenceOptions`).
        output: file to write (``None``: write nothing, just return).
        fmt: ``"csv"`` or ``"json"``.
        resume: keep files finished in an existing ``output``.
        progress: tqdm progress bar (seconds of audio) on stderr.
        checkpoint_s: minimum seconds between two writes of ``output``.
        timings: if given, seconds per step are added (see
            :func:`ser.inference.recording.predict_recording`), plus ``write``.
        speaker_of: ``{resolved file path: person}`` (:func:`ser.inference.speaker_norm.read_speaker_map`)
            for ``norm_unit="caregiver"``; it must name exactly the files found in ``inputs``.
        cluster: ``None`` (this machine), ``"local"``, ``"local:N"`` or ``"tcp://HOST:PORT"``:
            one task per file on a Dask cluster (:mod:`ser.inference.cluster`); the tables,
            checkpoints and resume stay here, and the outputs are the same row for row.

    Returns:
        The :class:`Prediction` (windows, summary, failures), as written.

    Raises:
        ValueError: bad hop or options; for a speaker-normalised bundle, ``norm_unit``
            ``"none"``, ``"caregiver"`` without ``speaker_of``, or a ``speaker_of`` that names
            files not given or lacks files given (all before any file is read).
        ResumeError: ``output`` exists but was written with another model, labels, hop,
            feature options or normalisation unit.
    """
    options = options.resolve(bundle)
    hop = float(options.hop_s)
    window_s = bundle.window_samples / bundle.sample_rate
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}; got {fmt!r}")
    labels, prefix = list(bundle.labels), bundle.output_prefix
    norm = needs_reference(bundle)
    wcols = [*recording.window_columns(labels, voice_quality=options.voice_quality,
                                       egemaps=options.egemaps, output_prefix=prefix),
             *(speaker_norm.NORM_COLUMNS if norm else ())]
    scols = summary_columns(labels, output_prefix=prefix)
    if output is not None:
        check_output_paths(output, fmt=fmt)  # before any work
    model = model_name(bundle)
    stamp = model_stamp(bundle)
    files, problems = audio.find_audio_files(inputs)
    keys = [str(f) for f in files]
    units = (speaker_norm.file_units(files, norm_unit=options.norm_unit, speaker_of=speaker_of)
             if norm else {})  # checked before any work
    writer = _Outputs(Path(output), fmt=fmt, window_cols=wcols, summary_cols=scols) if output else None

    results: dict[str, pd.DataFrame] = {}
    summary: dict[str, dict[str, Any]] = {}
    prev, old_stamp = None, None
    if writer is not None and resume:
        prev = writer.read()
        old_stamp = read_stamp(model_stamp_path(writer.paths["windows"]))
    old_unit = ((old_stamp or {}).get("norm") or {}).get("unit")
    if prev is not None and norm and same_model(old_stamp, stamp) and old_unit != options.norm_unit:
        raise ResumeError(
            f"cannot resume from {writer.paths['windows']}: it was computed with normalisation "
            f"unit {old_unit!r}, this run uses {options.norm_unit!r}. Delete it, write to "
            "another file (-o), or use --no-resume")
    if options.vad != "webrtc":  # the speech_ratio column's detector (absent: webrtc)
        stamp["vad"] = options.vad
    old_vad = (old_stamp or {}).get("vad", "webrtc")
    if prev is not None and same_model(old_stamp, stamp) and old_vad != options.vad:
        raise ResumeError(
            f"cannot resume from {writer.paths['windows']}: its speech_ratio was computed with "
            f"--vad {old_vad}, this run uses --vad {options.vad}. Delete it, write to another "
            "file (-o), or use --no-resume")
    refs: dict[str, speaker_norm.UnitReference] = {}
    ref_failures: dict[str, str] = {}
    if norm and (prev is None or same_model(old_stamp, stamp)):  # first pass: every unit's reference
        by_unit, ref_failures = speaker_norm.unit_references(bundle, units, options=options,
                                                             progress=progress)
        refs = {k: ref for ref in by_unit.values() for k in ref.members}
        stamp["norm"] = speaker_norm.norm_stamp(options.norm_unit, {k: r.key for k, r in refs.items()})
    if writer is not None and resume:
        if prev is not None and not same_model(old_stamp, stamp):
            old = (old_stamp or {}).get("model")
            what = ("no recorded model" if old is None else
                    f"another version of {old!r} (retrained or recalibrated)" if old == model else
                    f"model {old!r}")
            raise ResumeError(
                f"cannot resume from {writer.paths['windows']}: it was computed with {what} "
                f"({model_stamp_path(writer.paths['windows']).name}); this run uses {model!r}. "
                "Delete it, write to another file (-o), or use --no-resume")
        same = speaker_norm.reusable(old_stamp, stamp["norm"]) if norm else None
        if prev is not None:
            win, summ = prev
            groups = {k: g for k, g in win.groupby("file", sort=False)}
            for row in summ.to_dict("records"):
                k = row["file"]
                if k not in keys or row["status"] not in RESUMABLE_STATUSES:
                    continue
                if row["model"] != model or not math.isclose(row["hop_s"], hop, abs_tol=1e-9) \
                        or not math.isclose(row["window_s"], window_s, abs_tol=1e-9):
                    raise ResumeError(
                        f"cannot resume from {writer.paths['windows']}: {k} was computed with model "
                        f"{row['model']!r}, hop {row['hop_s']:g} s, window {row['window_s']:g} s; this "
                        f"run uses model {model!r}, hop {hop:g} s, window {window_s:g} s. Delete "
                        "it, write to another file (-o), or use the same model and --hop")
                g = groups.get(k)
                if norm and (same is None or k not in same):
                    continue  # another reference now (a person's files changed): recompute
                if g is not None and len(g) == row["windows"]:
                    results[k] = g.reset_index(drop=True)
                    summary[k] = row
    failures: dict[str, str] = {str(p): reason for p, reason in problems}

    def tables() -> tuple[list[tuple[str, pd.DataFrame]], pd.DataFrame, pd.DataFrame]:
        parts = [(k, results[k]) for k in keys if k in results]
        rows = []
        for k in [*keys, *(str(p) for p, _ in problems)]:
            if k in summary:
                rows.append(summary[k])
            elif k in failures:
                rows.append({"file": k, "status": "failed", "error": failures[k]})
        summ = _normalise_summary(pd.DataFrame(rows, columns=scols), scols)
        fail = pd.DataFrame([(k, failures[k]) for k in [*keys, *(str(p) for p, _ in problems)]
                             if k in failures], columns=list(FILE_FAILURE_COLUMNS))
        return parts, summ, fail

    written_state: list[Any] = [-math.inf, None]  # last write time, (results, failures) then

    def checkpoint(force: bool) -> None:
        if writer is None:
            return
        state = (len(results), len(failures))
        if state == written_state[1] and not force:
            return
        if not force and time.perf_counter() - written_state[0] < checkpoint_s:
            return
        t = time.perf_counter()
        writer.write(*tables())
        writer.write_stamp(stamp)
        timing.tick(timings, "write", t)
        written_state[0], written_state[1] = time.perf_counter(), state

    todo = [f for f, k in zip(files, keys, strict=True) if k not in results]
    total = 0.0
    for f in todo:
        with contextlib.suppress(Exception):
            fr, sr_in, _ = audio.info_frames(f)
            total += fr / sr_in
    bar = tqdm(total=round(total, 1), disable=not progress, unit="s", desc="ser predict",
               file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio "
                                           "[{elapsed}<{remaining}]")
    try:
        for f in todo:
            k = str(f)
            failures.pop(k, None)
            if k in ref_failures:  # unreadable in the first pass, or no reference at all
                failures[k] = ref_failures[k]
                if progress:
                    bar.write(f"ser predict: failed: {k}: {failures[k]}", file=sys.stderr)
                checkpoint(force=False)
        jobs = [Job(str(f), f, refs[str(f)].reference if norm else None,
                    known=refs[str(f)].known.get(str(f)) if norm else None)
                for f in todo if str(f) not in ref_failures]
        with feature_workers(options.workers if cluster is None else 0) as pool:
            for job, outcome in run_recordings(bundle, jobs, options=options, pool=pool, cluster=cluster,
                                               timings=timings, on_progress=lambda s: bar.update(s),
                                               log=lambda msg: bar.write(msg, file=sys.stderr)):
                k, f = job.key, job.path
                try:
                    df, info = outcome.get()
                except recording.TooShortError as e:  # not analysed, but not a failure
                    summary[k] = {"file": k, "status": "too_short", **e.info, "windows": 0,
                                  "window_s": window_s, "hop_s": hop, "model": model, "error": str(e)}
                except Exception as e:  # noqa: BLE001 - any per-file error goes to the failure table
                    failures[k] = _reason(e)
                    if progress:
                        bar.write(f"ser predict: failed: {k}: {failures[k]}", file=sys.stderr)
                else:
                    df.insert(0, "file", k)
                    if norm:
                        df = df.assign(**speaker_norm.norm_values(refs[k]))
                    results[k] = df
                    summary[k] = _summary_row(k, df, info, labels, output_prefix=prefix,
                                              window_s=window_s, hop_s=hop, model=model)
                if k in summary:
                    _note_truncation(f, summary[k])
                    if progress and summary[k]["status"] != "ok":
                        bar.write(f"ser predict: {summary[k]['status']}: {summary[k]['error']}",
                                  file=sys.stderr)
                checkpoint(force=False)
    finally:
        bar.close()
        checkpoint(force=True)  # also on Ctrl-C: keep every finished file
    parts, summ, fail = tables()
    windows = (pd.concat([d for _, d in parts], ignore_index=True) if parts
               else pd.DataFrame({c: pd.Series(dtype=object if c == "file" else np.float64)
                                  for c in ["file", *wcols]}))
    return Prediction(windows=windows, summary=summ, failures=fail)


class Terminated(KeyboardInterrupt):
    """SIGTERM received by ``ser predict``: handled like Ctrl-C (finished files kept)."""


def interrupted_exit(command: str, interrupt: KeyboardInterrupt, *, output: object | None) -> int:
    """Say on stderr how a command ended by Ctrl-C or SIGTERM (:class:`Terminated`) left its
    outputs, and return its exit code: 130 (Ctrl-C) or 143 (SIGTERM).

    Args:
        command: the command's name, e.g. ``"ser predict"``.
        interrupt: what ended it.
        output: its ``-o`` (finished files are written there), or None (nothing was written).
    """
    where = (f"finished files are in {output}; run the same command again to resume"
             if output else "nothing was written (no -o)")
    how = "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted"
    print(f"\n{command}: {how}; {where}", file=sys.stderr)
    return 143 if isinstance(interrupt, Terminated) else 130


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (like Ctrl-C
    raises KeyboardInterrupt), so the run ends through the same ``finally`` clauses."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def predict_cli(
    *,
    model: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    options: InferenceOptions,
    fmt: str = "csv",
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: str = "cpu",
    precision: str = "fp32",
    resume: bool = True,
    speaker_of: str | os.PathLike[str] | None = None,
    runtime: str = "torch",
    cluster: str | None = None,
) -> int:
    """``ser predict MODEL PATH... [--hop S] [--format csv|json] [-o FILE]``.

    Loads the bundle with :func:`ser.models.bundle.load_bundle` and runs :func:`predict_paths`.
    Errors in the command itself (model folder without ``model.json``, bad ``--hop``,
    an output that cannot be resumed) print one line naming the file or option and
    return 2, without a traceback; per-file errors go to the failure table.

    Args:
        model: bundle folder holding ``model.json``.
        inputs: audio files and/or folders (recursive).
        options: the command's options (:class:`ser.inference.options.InferenceOptions`):
            ``hop_s`` is ``--hop`` in seconds (``None``: half the model's window), then
            ``--batch-size``, ``--f0-method``, ``--voice-quality``, ``--egemaps``,
            ``--workers`` (``None`` or -1: auto, see
            :func:`ser.inference.workers.resolve_workers`; 0: none).
        fmt: ``"csv"`` or ``"json"``.
        output: ``-o`` file; ``None``: stdout (windows; summary and failures on stderr for CSV).
        progress: progress bar on stderr.
        device: torch device for the model (``"cpu"``, ``"cuda"``, ``"auto"``).
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (see :func:`ser.models.bundle.load_bundle`).
        resume: keep files already finished in ``output``.
        speaker_of: ``--speaker-of`` CSV (file → person, :func:`ser.inference.speaker_norm.read_speaker_map`)
            for a bundle trained with ``speaker_norm`` and ``options.norm_unit`` ``"caregiver"``;
            ignored (with a note) for other bundles.
        runtime: ``"torch"`` or ``"onnx"`` (``--runtime``; the bundle's ONNX copy in
            onnxruntime, see :func:`ser.models.bundle.load_bundle`).
        cluster: ``--cluster``: ``local``, ``local:N`` or ``tcp://HOST:PORT`` (see
            :func:`predict_paths`); ``None``: this process and its feature workers.

    Returns:
        Exit code: 0 all files done (files too short for the model's window are listed on
        stderr), 1 some failed (the rest is written), 2 usage error (outputs that cannot be
        written are found before any work), 130 interrupted by Ctrl-C, 143 ended by SIGTERM
        (in both cases finished files are written; run again to resume).
    """

    def usage(msg: str) -> int:
        print(f"ser predict: error: {msg}", file=sys.stderr)
        return 2

    if fmt not in FORMATS:
        return usage(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if not inputs:
        return usage("give at least one audio file or folder (PATH)")
    hop_s = options.hop_s  # checked here, before the model loads, to name --hop in the error
    if hop_s is not None and not grid.hop_is_valid(hop_s):
        return usage(f"--hop must be a number of seconds > 0; got --hop {hop_s}")
    if cluster is not None:
        try:
            parse_cluster(cluster)
        except ValueError as e:
            return usage(f"--cluster: {e}")
    if output is not None:
        try:
            check_output_paths(output, fmt=fmt)  # before the model loads
        except OutputPathError as e:
            return usage(f"-o {output}: {e}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnsealedBundleWarning)
            bundle = load_bundle(model, device=device, precision=precision, runtime=runtime)
    except (FileNotFoundError, ValueError, OSError) as e:
        return usage(f"MODEL {model}: {e}")
    for w in caught:  # one line each, not the source line of warnings.warn
        if issubclass(w.category, UnsealedBundleWarning):
            print(f"ser predict: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    window_s = bundle.window_samples / bundle.sample_rate
    if hop_s is not None and not grid.hop_is_valid(hop_s, window_s=window_s):
        return usage(f"--hop must be at most the model's window ({window_s:g} s, from "
                     f"{Path(bundle.path) / 'model.json'}); got --hop {hop_s}")
    mapping = None
    if not needs_reference(bundle):
        if speaker_of is not None or options.norm_unit != "caregiver":
            print(f"ser predict: note: MODEL {model} was trained without speaker_norm; "
                  "--speaker-of and --norm-unit are ignored", file=sys.stderr)
    elif options.norm_unit == "none":
        return usage(f"MODEL {model} was trained with speaker_norm and needs a speaker reference: "
                     "--norm-unit none gives it none; give --speaker-of CSV (file -> person) or "
                     "--norm-unit recording")
    elif speaker_of is not None:
        try:
            mapping = speaker_norm.read_speaker_map(speaker_of)
        except (FileNotFoundError, ValueError) as e:
            return usage(str(e))
    try:
        with sigterm_interrupts():
            res = predict_paths(bundle, inputs, options=options, output=output, fmt=fmt,
                                resume=resume, progress=progress, speaker_of=mapping, cluster=cluster)
    except (ResumeError, OutputPathError) as e:
        return usage(f"-o {output}: {e}")
    except ValueError as e:
        return usage(str(e))
    except KeyboardInterrupt as e:
        return interrupted_exit("ser predict", e, output=output)
    if output is None:
        if fmt == "json":
            sys.stdout.write('{"windows": [' + _json_rows(res.windows) + '], "summary": ['
                             + _json_rows(res.summary) + '], "failures": ['
                             + _json_rows(res.failures) + "]}\n")
        else:
            sys.stdout.write(res.windows.to_csv(index=False, lineterminator="\n"))
            ok = res.summary[res.summary["status"].isin(RESUMABLE_STATUSES)]
            if len(ok):
                cols = ["file", "duration_s", "windows",
                        *(["dominant_emotion"] if bundle.output_prefix == "p_" else []),
                        *output_columns(bundle)]
                print("summary:\n" + ok[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"),
                      file=sys.stderr)
    else:
        names = ", ".join(str(p) for p in output_paths(output, fmt=fmt).values())
        print(f"ser predict: {int(res.summary['status'].isin(RESUMABLE_STATUSES).sum())} file(s), "
              f"{len(res.windows)} windows -> {names}", file=sys.stderr)
    for status, what in (("too_short", "shorter than the model's window, not analysed (--pad-short "
                                       "pads them to one window)"),
                         ("truncated", "truncated (the samples present were analysed)")):
        rows = res.summary[res.summary["status"] == status]
        if len(rows):
            print(f"ser predict: {len(rows)} file(s) {what}:\n"
                  + "\n".join(f"  {e}" for e in rows["error"]), file=sys.stderr)
    if len(res.failures):
        print(f"ser predict: {len(res.failures)} file(s) failed:\n"
              + res.failures.to_string(index=False), file=sys.stderr)
        return 1
    return 0
