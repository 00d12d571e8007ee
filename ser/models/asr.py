"""Speech-to-text with word timings: Whisper-family models (``transformers``) or PocketSphinx.

An ASR backend turns one block of 16 kHz mono audio (at most :attr:`AsrBackend.max_block_s`
seconds) into words with start and end times in seconds from the block's start; the
long-recording loop (blocks, seams, resume) is :mod:`ser.inference.transcribe`.

- ``whisper``: a ``WhisperForConditionalGeneration`` and its processor, from a hub id or a
  local ``save_pretrained`` folder (:func:`load_asr`). Word times come from the model's
  cross-attention alignment heads (``generate(..., return_token_timestamps=True)``, the
  mechanism of the ``transformers`` pipeline's ``return_timestamps="word"``): token ``i``
  spans ``[t_i, t_{i+1}]``; a word starts at a token whose text begins with a space. A
  block is at most 30 s (Whisper's input).
- ``pocketsphinx``: the CMU PocketSphinx decoder; ``MODEL`` ``default`` (or empty) is the
  US-English acoustic model, dictionary and language model bundled inside the
  ``pocketsphinx`` package (nothing downloaded), or a folder holding an acoustic model
  (``-hmm``) with optional ``*.dict`` and ``*.lm.bin``. English only.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

#: ASR backends of :func:`load_asr`.
ASR_BACKENDS: tuple[str, ...] = ("whisper", "pocketsphinx")
#: Sample rate every backend takes (Hz).
ASR_SR: int = 16_000
#: Longest block Whisper reads at once (s).
WHISPER_MAX_S: float = 30.0
_SPHINX_FILLER = re.compile(r"^(<s>|</s>|<sil>|\[[A-Za-z_]+\]|\+\+.*\+\+)$")


@dataclasses.dataclass(frozen=True)
class Word:
    """One recognised word: ``start_s``/``end_s`` in seconds from the start of the audio given."""

    start_s: float
    end_s: float
    word: str


class AsrBackend(Protocol):
    """What :mod:`ser.inference.transcribe` needs from a speech recogniser."""

    name: str
    max_block_s: float

    def words(self, y: np.ndarray) -> list[Word]:
        """Words of ``y`` (float32, 16 kHz mono, at most ``max_block_s`` s), in time order."""
        ...


class WhisperAsr:
    """A Whisper-family model with word timings (see the module docstring).

    Args:
        model: hub id or local folder with the model and its processor.
        language: ISO 639-1 code forced on the decoder (e.g. ``"fr"``); ``""`` lets the
            model detect it.
        device: torch device (``"cpu"``, ``"cuda"``, ``"auto"``: CUDA when present).
        max_new_tokens: longest decoded text per block (tokens; at most the decoder's
            positions less the 4 prompt tokens).
    """

    name = "whisper"
    max_block_s = WHISPER_MAX_S

    def __init__(self, model: str, *, language: str = "", device: str = "cpu",
                 max_new_tokens: int = 200) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        try:
            self.processor = WhisperProcessor.from_pretrained(model)
            self.model = WhisperForConditionalGeneration.from_pretrained(model).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise ValueError(f"ASR model {model!r}: cannot load a Whisper model and processor "
                             f"(hub id or save_pretrained folder): {e}") from e
        gen = self.model.generation_config
        if language and f"<|{language}|>" not in (getattr(gen, "lang_to_id", None) or {}):
            raise ValueError(f"ASR model {model!r} does not know language {language!r}; "
                             f"it knows {sorted(getattr(gen, 'lang_to_id', None) or {})}")
        if not getattr(gen, "alignment_heads", None):
            raise ValueError(f"ASR model {model!r}: its generation_config has no alignment_heads, "
                             "so it gives no word timings")
        self.language = language
        # the decoder's positions hold the prompt (start, language, task, no-timestamps) too
        self.max_new_tokens = min(max_new_tokens, self.model.config.max_target_positions - 4)
        tok = self.processor.tokenizer
        self._special = set(tok.all_special_ids)

    def words(self, y: np.ndarray) -> list[Word]:
        """Words of one block (see :class:`AsrBackend`)."""
        import torch

        if len(y) == 0:
            return []
        dur = len(y) / ASR_SR
        feats = self.processor(y, sampling_rate=ASR_SR, return_tensors="pt", return_attention_mask=True)
        kwargs = {"language": self.language} if self.language else {}
        with torch.inference_mode():
            out = self.model.generate(feats.input_features.to(self.device),
                                      attention_mask=feats.attention_mask.to(self.device),
                                      return_token_timestamps=True, return_dict_in_generate=True,
                                      task="transcribe", max_new_tokens=self.max_new_tokens, **kwargs)
        ids = out["sequences"][0].tolist()
        times = np.clip(out["token_timestamps"][0].cpu().numpy().astype(np.float64), 0.0, dur)
        times = np.maximum.accumulate(times)
        return tokens_to_words(self.processor.tokenizer.convert_ids_to_tokens(ids), times,
                               special=[i in self._special for i in ids],
                               to_text=self.processor.tokenizer.convert_tokens_to_string)


def tokens_to_words(tokens: list[str], times: np.ndarray, *, special: list[bool],
                    to_text: object) -> list[Word]:
    """Byte-level BPE tokens with their times → words.

    Token ``i`` spans ``[times[i], times[i+1]]`` (the last ends at its own time); a token
    starting with ``Ġ`` (a space) starts a new word; special tokens end a word and are
    dropped; words that are empty once stripped are dropped.

    Args:
        tokens: token strings (``convert_ids_to_tokens``).
        times: per-token times (s), same length.
        special: per token, whether it is a special token.
        to_text: ``convert_tokens_to_string`` of the tokenizer.
    """
    words: list[Word] = []
    cur: list[int] = []

    def close() -> None:
        if cur:
            text = to_text([tokens[i] for i in cur]).strip()  # type: ignore[operator]
            end = times[cur[-1] + 1] if cur[-1] + 1 < len(times) else times[cur[-1]]
            if text:
                words.append(Word(float(times[cur[0]]), float(max(end, times[cur[0]])), text))
            cur.clear()

    for i, (tok, sp) in enumerate(zip(tokens, special, strict=True)):
        if sp:
            close()
            continue
        if tok.startswith("Ġ") or tok.startswith(" "):
            close()
        cur.append(i)
    close()
    return words


class PocketSphinxAsr:
    """CMU PocketSphinx (see the module docstring).

    Args:
        model: ``"default"`` / ``""`` (the bundled US-English model) or a model folder.
        language: ``""`` or ``"en"`` (the bundled model is English).
    """

    name = "pocketsphinx"
    max_block_s = 600.0

    def __init__(self, model: str = "default", *, language: str = "") -> None:
        import pocketsphinx

        if language not in ("", "en"):
            raise ValueError(f"pocketsphinx backend: language {language!r} is not available; "
                             "its bundled model is English (language 'en'); use the whisper backend")
        cfg = pocketsphinx.Config()
        if model not in ("", "default"):
            folder = Path(model)
            if not folder.is_dir():
                raise ValueError(f"ASR model {model!r}: not a PocketSphinx model folder")
            cfg["hmm"] = str(folder)
            for key, pattern in (("dict", "*.dict"), ("lm", "*.lm.bin")):
                found = sorted(folder.glob(pattern))
                if found:
                    cfg[key] = str(found[0])
        cfg["samprate"] = ASR_SR
        cfg["loglevel"] = "FATAL"
        cfg["cmn"] = "batch"  # whole-block cepstral mean: offline blocks, no drift across files
        self.decoder = pocketsphinx.Decoder(cfg)
        self.frame_rate = float(cfg["frate"])

    def words(self, y: np.ndarray) -> list[Word]:
        """Words of one block (see :class:`AsrBackend`); fillers and silences dropped."""
        if len(y) == 0:
            return []
        pcm = (np.clip(y, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        out = []
        for seg in self.decoder.seg():
            w = re.sub(r"\(\d+\)$", "", seg.word)
            if not _SPHINX_FILLER.match(w):
                out.append(Word(seg.start_frame / self.frame_rate, (seg.end_frame + 1) / self.frame_rate, w))
        return out


def load_asr(model: str | os.PathLike[str], *, backend: str = "whisper", language: str = "",
             device: str = "cpu") -> AsrBackend:
    """The ASR backend ``backend`` with ``model`` (see the module docstring).

    Raises:
        ValueError: unknown backend, a model that cannot be loaded, or a language it lacks.
    """
    if backend == "whisper":
        return WhisperAsr(str(model), language=language, device=device)
    if backend == "pocketsphinx":
        return PocketSphinxAsr(str(model), language=language)
    raise ValueError(f"ASR backend must be one of {', '.join(ASR_BACKENDS)}; got {backend!r}")


def normalise_words(text: str | Sequence[str]) -> list[str]:
    """Lower-case words without punctuation (apostrophes kept), for :func:`word_error_rate`."""
    joined = text if isinstance(text, str) else " ".join(text)
    return re.findall(r"[\w']+", joined.lower())


def word_error_rate(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words, by the
    Levenshtein alignment of :func:`normalise_words` of both.

    Raises:
        ValueError: the reference has no word.

    Example:
        >>> word_error_rate("open the window", "open a window now")
        0.6666666666666666
    """
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    if not ref:
        raise ValueError("word_error_rate: the reference has no word")
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
