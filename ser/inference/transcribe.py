"""Transcription of long recordings with word timings (``ser transcribe``): :func:`transcribe_recording`,
:func:`transcribe_paths`, the command :func:`transcribe_cli`.

A recording is streamed in blocks (:func:`ser.signal.audio.iter_blocks`: ``block_s`` of hop
plus ``overlap_s`` of overlap, 25 + 5 s by default, so a Whisper block is its 30 s input),
so memory stays flat whatever its length. Each block is transcribed by an ASR backend
(:mod:`ser.models.asr`); the words of two overlapping blocks are de-duplicated at the seam
in the middle of their overlap: a block keeps the words whose midpoint lies in
``[start + overlap_s / 2, start + block_s + overlap_s / 2)`` (the first block from 0, the
last to its end), so each word comes from the block that heard it with the most context.

Like ``ser predict`` (:mod:`ser.inference.files`): folders are searched recursively, a file
that fails gets a failure row and the rest carries on, outputs are checked before any work
and rewritten atomically after each file, and a rerun with the same ``-o`` resumes (files
done kept, failed ones tried again; a run with another model, backend, language or block
is refused). Files for ``-o FILE.csv``:

- ``FILE.csv``: :data:`TRANSCRIPT_COLUMNS`, one row per word (``recording`` = file path, or
  the manifest's id);
- ``FILE.summary.csv``: :data:`SUMMARY_COLUMNS`, one row per file;
- ``FILE.failures.csv``: ``file, reason``;
- ``FILE.asr.json``: the ASR model, backend, language and block options (for resume).

Transcripts identify people: write them under ``data/`` only (never into ``results/``),
and never print them in a notebook (:mod:`ser.report.privacy` scans the report for them).
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
from ser.inference.files import (
    FILE_FAILURE_COLUMNS,
    OutputPathError,
    ResumeError,
    check_writable,
    interrupted_exit,
    sigterm_interrupts,
)
from ser.models.asr import ASR_BACKENDS, ASR_SR, AsrBackend, Word, load_asr
from ser.signal import audio

#: Columns of the transcript (one row per word).
TRANSCRIPT_COLUMNS: tuple[str, ...] = ("recording", "start_s", "end_s", "word")
#: Columns of the per-file summary.
SUMMARY_COLUMNS: tuple[str, ...] = ("recording", "status", "duration_s", "words", "reason")


@dataclasses.dataclass(frozen=True)
class TranscribeOptions:
    """Block options of :func:`transcribe_recording`.

    Attributes:
        block_s: hop between block starts (s, > 0).
        overlap_s: extra audio at the end of each block, shared with the next (s, >= 0);
            ``block_s + overlap_s`` must fit the backend's longest block (30 s for Whisper).
    """

    block_s: float = 25.0
    overlap_s: float = 5.0

    def check(self, asr: AsrBackend) -> None:
        """Raises ValueError naming the option when the blocks do not fit ``asr``."""
        if not self.block_s > 0 or not self.overlap_s >= 0:
            raise ValueError(f"block must be > 0 s and overlap >= 0 s; got block_s={self.block_s}, "
                             f"overlap_s={self.overlap_s}")
        if self.block_s + self.overlap_s > asr.max_block_s + 1e-9:
            raise ValueError(f"block_s + overlap_s = {self.block_s + self.overlap_s:g} s is longer than "
                             f"the {asr.name} backend reads at once ({asr.max_block_s:g} s)")


def seam_words(words: Sequence[Word], *, block_start_s: float, block_s: float, overlap_s: float,
               first: bool, last: bool) -> list[Word]:
    """The words a block keeps, moved to recording time (see the module docstring).

    Args:
        words: the block's words, times from the block's start (s).
        block_start_s: the block's start in the recording (s).
        block_s, overlap_s: :class:`TranscribeOptions`.
        first, last: the block is the recording's first / last.
    """
    lo = -np.inf if first else overlap_s / 2
    hi = np.inf if last else block_s + overlap_s / 2
    return [Word(w.start_s + block_start_s, w.end_s + block_start_s, w.word) for w in words
            if lo <= (w.start_s + w.end_s) / 2 < hi]


def transcribe_recording(path: str | os.PathLike[str], asr: AsrBackend, *,
                         options: TranscribeOptions | None = None) -> tuple[pd.DataFrame, float]:
    """Words of one recording, streamed block by block.

    Returns:
        ``(words, duration_s)``: a table ``start_s, end_s, word`` in time order (s from the
        recording's start) and the recording's length (s).

    Raises:
        AudioError: the file cannot be read.
        ValueError: the blocks do not fit the backend.
    """
    opt = options or TranscribeOptions()
    opt.check(asr)
    block_n = max(1, round(opt.block_s * ASR_SR))
    kept: list[Word] = []
    n = 0
    for k, (start, y) in enumerate(audio.iter_blocks(path, sample_rate=ASR_SR, block_s=opt.block_s,
                                                      overlap_s=opt.overlap_s)):
        n = max(n, start + len(y))
        kept += seam_words(asr.words(y), block_start_s=start / ASR_SR, block_s=opt.block_s,
                           overlap_s=opt.overlap_s, first=k == 0, last=len(y) <= block_n)
    df = pd.DataFrame([dataclasses.asdict(w) for w in kept], columns=["start_s", "end_s", "word"])
    return df.sort_values("start_s", kind="stable").reset_index(drop=True), n / ASR_SR


def output_paths(output: str | os.PathLike[str]) -> dict[str, Path]:
    """Files :func:`transcribe_paths` writes for ``output`` (see the module docstring)."""
    out = Path(output)
    stem = out.name[:-4] if out.name.lower().endswith(".csv") else out.name
    return {"words": out, "summary": out.with_name(f"{stem}.summary.csv"),
            "failures": out.with_name(f"{stem}.failures.csv"), "stamp": out.with_name(f"{stem}.asr.json")}


@dataclasses.dataclass(frozen=True)
class Transcription:
    """Result of :func:`transcribe_paths`: ``words``, ``summary``, ``failures`` tables."""

    words: pd.DataFrame
    summary: pd.DataFrame
    failures: pd.DataFrame


def transcribe_paths(
    inputs: Sequence[str | os.PathLike[str]],
    asr: AsrBackend,
    *,
    asr_stamp: Mapping[str, str],
    options: TranscribeOptions | None = None,
    output: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    recording_ids: Mapping[Path, str] | None = None,
) -> Transcription:
    """Transcribe audio files and folders, writing the tables after every file.

    Args:
        inputs: audio files and/or folders (recursive).
        asr: the backend (:func:`ser.models.asr.load_asr`).
        asr_stamp: what identifies the backend's output (model, backend, language); an
            ``output`` written with another stamp or options is not resumed.
        options: :class:`TranscribeOptions`.
        output: CSV to write (``None``: nothing written).
        resume: keep files finished in an existing ``output``.
        progress: one line per file on stderr.
        recording_ids: ``{resolved file path: recording id}`` written as ``recording``.

    Returns:
        The :class:`Transcription`, as written.

    Raises:
        ResumeError: ``output`` was written with another model or options.
        ValueError: the blocks do not fit the backend.
    """
    opt = options or TranscribeOptions()
    opt.check(asr)
    files, problems = audio.find_audio_files(inputs)
    ids = {Path(p).resolve(): r for p, r in (recording_ids or {}).items()}
    keys = [ids.get(f.resolve(), str(f)) for f in files]
    paths = output_paths(output) if output is not None else None
    stamp = {"asr": dict(asr_stamp), "options": dataclasses.asdict(opt)}
    summary: dict[str, dict] = {}
    words: dict[str, pd.DataFrame] = {}
    if paths is not None and resume and paths["stamp"].is_file() and paths["words"].is_file():
        try:
            prev = json.loads(paths["stamp"].read_text(encoding="utf-8"))
            old = pd.read_csv(paths["words"], dtype={"recording": str, "word": str}, keep_default_na=False)
            old_sum = pd.read_csv(paths["summary"], dtype={"recording": str}, keep_default_na=False)
        except (OSError, ValueError) as e:
            raise ResumeError(f"cannot resume from {paths['words']}: {e}; delete it or use --no-resume") from e
        if prev != stamp:
            raise ResumeError(f"cannot resume from {paths['words']}: written with {prev}, this run uses "
                              f"{stamp}; delete it, write to another file (-o) or use --no-resume")
        for row in old_sum.to_dict("records"):
            if row["status"] == "ok" and row["recording"] in keys:
                summary[row["recording"]] = row
                words[row["recording"]] = old[old["recording"] == row["recording"]][["start_s", "end_s", "word"]]
    failures: dict[str, str] = {str(p): r for p, r in problems}

    def write() -> Transcription:
        parts = [words[k].assign(recording=k) for k in keys if k in summary and len(words[k])]
        wdf = (pd.concat(parts, ignore_index=True)[list(TRANSCRIPT_COLUMNS)] if parts
               else pd.DataFrame(columns=list(TRANSCRIPT_COLUMNS)))
        rows = [summary[k] if k in summary else {"recording": k, "status": "failed", "reason": failures[k]}
                for k in [*keys, *(str(p) for p, _ in problems)] if k in summary or k in failures]
        res = Transcription(wdf, pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)),
                            pd.DataFrame(list(failures.items()), columns=list(FILE_FAILURE_COLUMNS)))
        if paths is not None:
            atomic.atomic_write_csv(paths["words"], res.words, index=False, float_format="%.3f",
                                    lineterminator="\n")
            atomic.atomic_write_csv(paths["summary"], res.summary, index=False, lineterminator="\n")
            atomic.atomic_write_csv(paths["failures"], res.failures, index=False, lineterminator="\n")
            atomic.atomic_write_json(paths["stamp"], stamp)
        return res

    for i, (f, k) in enumerate(zip(files, keys, strict=True)):
        if k in summary:
            continue
        failures.pop(k, None)
        try:
            wdf, dur = transcribe_recording(f, asr, options=opt)
        except (audio.AudioError, OSError, RuntimeError, ValueError) as e:
            failures[k] = f"{f}: {e}"
        else:
            words[k] = wdf
            summary[k] = {"recording": k, "status": "ok", "duration_s": round(dur, 3),
                          "words": len(wdf), "reason": ""}
        if progress:
            named = f.resolve() in ids  # a recording id (stage 04): neither its file nor its path
            status = ("ok" if k not in failures else "failed (see the failure table)" if named
                      else "failed: " + failures[k])
            print(f"[ser transcribe] {i + 1}/{len(files)} {k if named else f.name}: {status}",
                  file=sys.stderr)
        write()
    return write()


def transcribe_cli(*, model: str, inputs: Sequence[str], output: str, backend: str = "whisper",
                   language: str = "", device: str = "cpu", options: TranscribeOptions | None = None,
                   resume: bool = True, progress: bool = True) -> int:
    """``ser transcribe MODEL PATH... -o FILE``.

    The words themselves are never printed (they identify people); only counts.

    Returns:
        Exit code: 0 every file transcribed, 1 some failed (the rest is written), 2 usage
        error (bad option, model that cannot be loaded, output that cannot be written or
        resumed; found before any work where possible), 130 Ctrl-C, 143 SIGTERM (finished
        files written; run again to resume).
    """

    def usage(msg: str) -> int:
        print(f"ser transcribe: error: {msg}", file=sys.stderr)
        return 2

    if backend not in ASR_BACKENDS:
        return usage(f"--backend must be one of {', '.join(ASR_BACKENDS)}; got {backend!r}")
    if not inputs:
        return usage("give at least one audio file or folder (PATH)")
    try:
        check_writable(output_paths(output).values())
    except OutputPathError as e:
        return usage(f"-o {output}: {e}")
    try:
        asr = load_asr(model, backend=backend, language=language, device=device)
        with sigterm_interrupts():
            res = transcribe_paths(inputs, asr, asr_stamp={"model": str(model), "backend": backend,
                                                           "language": language},
                                   options=options, output=output, resume=resume, progress=progress)
    except ResumeError as e:
        return usage(f"-o {output}: {e}")
    except ValueError as e:
        return usage(str(e))
    except KeyboardInterrupt as e:
        return interrupted_exit("ser transcribe", e, output=output)
    ok = int(res.summary["status"].eq("ok").sum())
    print(f"ser transcribe: {ok} file(s), {len(res.words)} words -> {output}", file=sys.stderr)
    if len(res.failures):
        print(f"ser transcribe: {len(res.failures)} file(s) failed:\n" + res.failures.to_string(index=False),
              file=sys.stderr)
        return 1
    return 0
