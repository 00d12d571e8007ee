"""The text channel per window: words aligned to the analysis windows, their emotion
(``t_<label>``, ``n_words``) and its fusion with the voice (``f_<label>``, ``fusion_source``).

- Alignment (:func:`window_words`): a word belongs to every window that contains its
  midpoint (``start_s <= mid < end_s``), so overlapping windows share words as they share
  audio. With speaker turns (:func:`caregiver_words`), only the caregiver's words count.
- Text emotion (:func:`text_emotion_columns`): the words of a window, joined by spaces in
  time order, classified by :class:`ser.models.text_emotion.TextEmotionModel`; a window
  without words gets ``n_words`` 0 and ``t_<label>`` empty (NaN).
- Fusion (:func:`fuse`): the weighted geometric mean (logarithmic opinion pool)
  ``f_l ∝ p_l^(1-w) · t_l^w``, renormalised to sum to 1, with ``w = text_weight`` in [0, 1]
  (0: the voice alone, 1: the words alone); probabilities are floored at 1e-6 first so a
  zero in one channel does not veto a label. Windows without words take the acoustic
  ``p_<label>`` unchanged, and ``fusion_source`` says which: ``fused`` or ``acoustic``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ser.models.text_emotion import TextEmotionModel

#: Values of ``fusion_source``.
FUSION_SOURCES: tuple[str, ...] = ("fused", "acoustic")
_FLOOR = 1e-6


def window_words(windows: pd.DataFrame, words: pd.DataFrame, *, key: str = "recording") -> list[list[str]]:
    """The words of each window (see the module docstring), in time order.

    Args:
        windows: ``key, start_s, end_s`` per window.
        words: a transcript, ``key, start_s, end_s, word`` per word
            (:data:`ser.inference.transcribe.TRANSCRIPT_COLUMNS`).
        key: the column naming the recording in both tables.

    Returns:
        One list of words per window row, in the windows' order.

    Raises:
        ValueError: a table lacks a column.
    """
    for name, df, cols in (("windows", windows, (key, "start_s", "end_s")),
                           ("words", words, (key, "start_s", "end_s", "word"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{name} table lacks column(s) {missing}; it has {list(df.columns)}")
    out: list[list[str]] = [[] for _ in range(len(windows))]
    by_rec = {k: g.sort_values("start_s", kind="stable") for k, g in words.groupby(key, sort=False)}
    pos = np.arange(len(windows))
    for rec, idx in pd.Series(pos).groupby(windows[key].to_numpy()).groups.items():
        g = by_rec.get(rec)
        if g is None:
            continue
        mids = ((g["start_s"] + g["end_s"]) / 2).to_numpy()
        texts = g["word"].astype(str).to_numpy()
        for i in idx:
            lo, hi = windows["start_s"].iat[i], windows["end_s"].iat[i]
            a, b = np.searchsorted(mids, lo, side="left"), np.searchsorted(mids, hi, side="left")
            out[i] = list(texts[a:b])
    return out


def text_columns(columns: Iterable[object]) -> list[str]:
    """The text-channel columns among ``columns`` (``n_words``, ``t_<label>``, ``f_<label>``,
    ``fusion_source``), in their order: what :func:`add_text_channel` adds."""
    return [c for c in columns if isinstance(c, str)
            and (c in ("n_words", "fusion_source") or c.startswith(("t_", "f_")))]


def caregiver_turns(turns: pd.DataFrame) -> pd.DataFrame:
    """The turns marked as the caregiver's (``is_caregiver`` true) of ``ser diarize``'s table."""
    return turns[turns["is_caregiver"].astype(str).str.lower().isin(("true", "1"))]


def caregiver_words(words: pd.DataFrame, turns: pd.DataFrame, *, key: str = "recording") -> pd.DataFrame:
    """The words whose midpoint lies in one of the caregiver's turns.

    Args:
        words: transcript (``key, start_s, end_s, word``).
        turns: speaker turns (``ser diarize``: ``key, start_s, end_s, is_caregiver``).

    Returns:
        The rows of ``words`` kept; recordings without any caregiver turn keep no word.
    """
    care = caregiver_turns(turns)
    keep = np.zeros(len(words), dtype=bool)
    mids = ((words["start_s"] + words["end_s"]) / 2).to_numpy()
    recs = words[key].to_numpy()
    for rec, g in care.groupby(key):
        sel = recs == rec
        inside = ((mids[sel, None] >= g["start_s"].to_numpy()) & (mids[sel, None] < g["end_s"].to_numpy()))
        keep[np.flatnonzero(sel)[inside.any(1)]] = True
    return words[keep]


def text_emotion_columns(windows: pd.DataFrame, words: pd.DataFrame, model: TextEmotionModel, *,
                         key: str = "recording", batch_size: int = 32) -> pd.DataFrame:
    """``n_words`` and ``t_<label>`` per window (see the module docstring).

    Returns:
        A table aligned with ``windows`` (same index): ``n_words``, ``t_<label>`` per label.
    """
    per = window_words(windows, words, key=key)
    texts = [" ".join(w) for w in per]
    todo = sorted({t for t in texts if t})
    probs = dict(zip(todo, model.predict_proba(todo, batch_size=batch_size), strict=True)) if todo else {}
    out = pd.DataFrame({"n_words": [len(w) for w in per]}, index=windows.index)
    nan = np.full(len(model.labels), np.nan)
    mat = np.stack([probs.get(t, nan) for t in texts]) if texts else np.zeros((0, len(model.labels)))
    for j, lab in enumerate(model.labels):
        out[f"t_{lab}"] = mat[:, j]
    return out


def fuse(windows: pd.DataFrame, *, labels: list[str] | tuple[str, ...], text_weight: float = 0.3) -> pd.DataFrame:
    """``f_<label>`` and ``fusion_source`` per window from ``p_<label>``, ``t_<label>`` and
    ``n_words`` (see the module docstring).

    Raises:
        ValueError: ``text_weight`` outside [0, 1] or a missing column.
    """
    if not 0.0 <= text_weight <= 1.0:
        raise ValueError(f"text_weight must be in [0, 1]; got {text_weight}")
    need = ["n_words", *(f"p_{lab}" for lab in labels), *(f"t_{lab}" for lab in labels)]
    missing = [c for c in need if c not in windows.columns]
    if missing:
        raise ValueError(f"window table lacks column(s) {missing} for fusion (run the text channel first)")
    p = windows[[f"p_{lab}" for lab in labels]].to_numpy(dtype=float)
    t = windows[[f"t_{lab}" for lab in labels]].to_numpy(dtype=float)
    has_text = windows["n_words"].to_numpy() > 0
    f = p.copy()
    with np.errstate(invalid="ignore"):
        log_f = ((1 - text_weight) * np.log(np.clip(p[has_text], _FLOOR, None))
                 + text_weight * np.log(np.clip(t[has_text], _FLOOR, None)))
        g = np.exp(log_f - log_f.max(axis=1, keepdims=True, initial=-np.inf))
        f[has_text] = g / g.sum(1, keepdims=True)
    out = pd.DataFrame(f, columns=[f"f_{lab}" for lab in labels], index=windows.index)
    out["fusion_source"] = np.where(has_text, "fused", "acoustic")
    return out


def text_channel_off_reason(*, asr_model: str, text_model: str) -> str:
    """Why the text channel is off, for the report; ``""`` when both models are set.

    The channel is switched off by an empty ``asr_model`` or ``text_model`` (e.g. where no
    weights are available): every other stage runs, and the report states this reason.
    """
    missing = [f"{what} ({key} is empty)" for what, key, value in (
        ("no speech-to-text model", "asr_model", asr_model),
        ("no text-emotion model", "text_model", text_model)) if not str(value).strip()]
    if not missing:
        return ""
    return ("The text channel (what the caregivers said) is off: " + " and ".join(missing)
            + ". Only the voice was analysed; no t_ or f_ columns were computed.")


def add_text_channel(windows: pd.DataFrame, words: pd.DataFrame, model: TextEmotionModel, *,
                     text_weight: float = 0.3, key: str = "recording",
                     turns: pd.DataFrame | None = None) -> pd.DataFrame:
    """A window table with the text channel added: ``n_words``, ``t_<label>``, ``f_<label>``,
    ``fusion_source`` (:func:`text_emotion_columns`, :func:`fuse`).

    Args:
        windows: ``key, start_s, end_s, p_<label>…`` (stage 04 / ``ser predict``).
        words: the transcript (``ser transcribe``).
        model: the text classifier, on the window table's labels.
        text_weight: weight of the words in the fusion (0-1).
        key: the recording column of both tables.
        turns: speaker turns (``ser diarize``); when given, only the caregiver's words count.

    Raises:
        ValueError: the classifier's labels differ from the table's ``p_<label>`` columns.
    """
    p_labels = [c[2:] for c in windows.columns if isinstance(c, str) and c.startswith("p_")]
    if sorted(p_labels) != sorted(model.labels):
        raise ValueError(f"the window table's labels {p_labels} differ from the text model's "
                         f"{list(model.labels)}")
    if turns is not None:
        words = caregiver_words(words, turns, key=key)
    out = pd.concat([windows, text_emotion_columns(windows, words, model, key=key)], axis=1)
    return pd.concat([out, fuse(out, labels=list(model.labels), text_weight=text_weight)], axis=1)
