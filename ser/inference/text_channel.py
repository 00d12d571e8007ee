"""Stage 04's text channel over the cohort: the recordings transcribed into one transcript
(resumable, :func:`ser.inference.transcribe.transcribe_paths`), then ``n_words``,
``t_<label>``, ``f_<label>`` and ``fusion_source`` added to the window table
(:func:`ser.inference.words.add_text_channel`) and the table rewritten atomically.

With speaker turns (stage 04's ``speakers.csv``) only the caregiver's words count. A
recording that could not be transcribed, or (with turns) has no turns, gets ``n_words``
empty rather than 0: nobody knows how many words were said there; its windows keep the
acoustic probabilities (``fusion_source`` ``acoustic``).

Transcripts identify people: the transcript goes under ``data/`` only, and nothing here
prints a word (only counts).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ser.core import atomic, paths
from ser.inference import words as text_words
from ser.inference.transcribe import TranscribeOptions, transcribe_paths
from ser.models.asr import AsrBackend, load_asr
from ser.models.text_emotion import TextEmotionModel


@dataclasses.dataclass(frozen=True)
class TextChannelOptions:
    """Models and fusion weight of the text channel (stage 04's params of the same names).

    Attributes:
        asr_model: speech-to-text model (hub id or ``save_pretrained`` folder; a model
            folder for ``pocketsphinx``); empty switches the channel off.
        asr_backend: ``whisper`` or ``pocketsphinx`` (:data:`ser.models.asr.ASR_BACKENDS`).
        language: ISO 639-1 code of the speech (``fr`` for the cohort).
        text_model: text-emotion classifier (hub id or folder); empty switches the channel off.
        text_weight: weight of the words in the fusion, 0-1.
        device: torch device of both models (``auto``: CUDA when present).
    """

    asr_model: str = ""
    asr_backend: str = "whisper"
    language: str = "fr"
    text_model: str = ""
    text_weight: float = 0.3
    device: str = "auto"

    @property
    def off_reason(self) -> str:
        """Why the channel is off (:func:`ser.inference.words.text_channel_off_reason`); ``""`` when on."""
        return text_words.text_channel_off_reason(asr_model=self.asr_model, text_model=self.text_model)


@dataclasses.dataclass(frozen=True)
class TextChannelResult:
    """What :func:`add_text_channel_to_table` wrote.

    Attributes:
        windows: the window table as rewritten.
        summary: the transcription summary per recording (status, duration, word count).
        failures: recordings that could not be transcribed (``file, reason``).
        counts: ``recordings_transcribed``, ``words``, ``words_counted`` (the caregiver's
            only, with turns), ``windows_with_words``, ``windows`` (aggregate numbers only).
        caregiver_only: whether only the caregiver's words were counted.
    """

    windows: pd.DataFrame
    summary: pd.DataFrame
    failures: pd.DataFrame
    counts: Mapping[str, int]
    caregiver_only: bool


def read_turns(speakers_csv: str | os.PathLike[str]) -> pd.DataFrame | None:
    """Speaker turns of stage 04 (``speakers.csv``), or ``None`` when the file does not exist."""
    path = Path(speakers_csv)
    if not path.is_file():
        return None
    turns = pd.read_csv(path, dtype={"recording": str, "speaker": str, "is_caregiver": str},
                        keep_default_na=False)
    missing = [c for c in ("recording", "start_s", "end_s", "is_caregiver") if c not in turns.columns]
    if missing:
        raise ValueError(f"{path}: speaker turns lack column(s) {missing}; rerun stage 04 with diarize")
    return turns


def add_text_channel_to_table(
    windows_csv: str | os.PathLike[str],
    recordings: pd.DataFrame,
    *,
    options: TextChannelOptions,
    transcripts_csv: str | os.PathLike[str],
    speakers_csv: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    asr: AsrBackend | None = None,
    text_model: TextEmotionModel | None = None,
) -> TextChannelResult:
    """Transcribe ``recordings`` and add the text channel to ``windows_csv`` (module docstring).

    Args:
        windows_csv: stage 04's window table (``p_<label>`` columns), rewritten atomically.
        recordings: ``recording, path`` per recording (``recordings.csv``; relative paths
            from the project root).
        options: the models and weight; both models must be set.
        transcripts_csv: the transcript to write (under ``data/``), with its
            ``.summary.csv``, ``.failures.csv``, ``.asr.json`` beside it.
        speakers_csv: speaker turns; when the file exists only the caregiver's words count.
        resume: keep recordings already transcribed with the same model and options.
        progress: one line per recording on stderr (counts, never words).
        asr: an ASR backend already loaded (default: loaded from ``options``).
        text_model: a text classifier already loaded (default: loaded from ``options``).

    Returns:
        The :class:`TextChannelResult`.

    Raises:
        ValueError: a model is not set or cannot be loaded, the window table has no
            ``p_<label>`` columns (a dimensional model) or other labels than the classifier.
        FileNotFoundError: ``windows_csv`` is missing.
    """
    if options.off_reason:
        raise ValueError(options.off_reason)
    windows_csv = Path(windows_csv)
    if not windows_csv.is_file():
        raise FileNotFoundError(f"{windows_csv} is missing; the text channel needs stage 04's window table")
    windows = pd.read_csv(windows_csv, dtype={c: str for c in ("recording", "caregiver", "level", "phase",
                                                               "norm_unit")})
    windows = windows.drop(columns=text_words.text_columns(windows.columns))
    labels = [c[2:] for c in windows.columns if c.startswith("p_")]
    if not labels:
        raise ValueError(f"{windows_csv.name} has no emotion probabilities (p_<label>); the text channel "
                         "fuses probabilities, not dimensions: set text_model empty for a dimensional model")
    model = text_model or TextEmotionModel(options.text_model, labels=labels, device=options.device)
    asr = asr or load_asr(options.asr_model, backend=options.asr_backend, language=options.language,
                          device=options.device)
    ids = {paths.resolve(str(p)): str(r) for r, p in zip(recordings["recording"], recordings["path"],
                                                         strict=True)}
    Path(transcripts_csv).parent.mkdir(parents=True, exist_ok=True)
    tr = transcribe_paths(list(ids), asr, options=TranscribeOptions(),
                          asr_stamp={"model": str(options.asr_model), "backend": options.asr_backend,
                                     "language": options.language},
                          output=transcripts_csv, resume=resume, progress=progress, recording_ids=ids)
    done = set(tr.summary.loc[tr.summary["status"] == "ok", "recording"].astype(str))
    turns = read_turns(speakers_csv) if speakers_csv is not None else None
    if turns is not None:  # recordings where the caregiver was identified
        done &= set(text_words.caregiver_turns(turns)["recording"])
    out = text_words.add_text_channel(windows, tr.words, model, text_weight=options.text_weight, turns=turns)
    known = out["recording"].isin(done).to_numpy()
    out["n_words"] = out["n_words"].astype("Int64").where(known)
    atomic.atomic_write_csv(windows_csv, out)
    counted = (text_words.caregiver_words(tr.words, turns) if turns is not None else tr.words)
    counts = {"recordings_transcribed": int(tr.summary["status"].eq("ok").sum()),
              "words": len(tr.words), "words_counted": len(counted),
              "windows_with_words": int((out["n_words"].fillna(0) > 0).sum()), "windows": len(out)}
    return TextChannelResult(out, tr.summary, tr.failures, counts, turns is not None)
