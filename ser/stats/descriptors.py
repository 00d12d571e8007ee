"""Per-recording (time-invariant) and per-time-bin (time-dependent) descriptors.

Input is the window table of stage 04 (``results/tables/windows.csv``): one row per
analysis window with ``recording, caregiver, level, phase, start_s, end_s``, the model's
outputs (one ``p_<label>`` emotion probability per label, or ``d_arousal, d_dominance,
d_valence`` from a dimensional model, :mod:`ser.models.dimensional`), and prosody
(``f0_hz`` … ``speech_ratio``). Dimensional outputs are analysed exactly like the
probabilities (:func:`model_output_columns`).

- :func:`recording_descriptors` summarises each recording (or each consecutive
  ``segment_s``-second segment of it) into one row of ``<feature>__<stat>`` columns.
- :func:`time_binned` averages windows into ``time_bins`` equal bins per recording,
  the input of the trajectory analysis.
- :func:`descriptor_columns` lists the descriptor columns of such a table (everything
  but ids and bookkeeping, :data:`META_COLUMNS`).

The meaning, unit and readable name of every column are in :mod:`ser.stats.names`.

Missing values are skipped in every statistic, so F0 statistics are computed over
voiced windows only (``f0_hz`` is empty for windows without voiced frames).

Emotion probabilities are measured on speech: with ``min_speech_ratio`` > 0 a window
whose voice-activity fraction (``speech_ratio``) is below it does not enter the
``p_<label>`` (and ``d_<dimension>``) summaries (:func:`mask_low_speech`), because what a
model outputs on a window of pause or background is not an emotion of the speaker, and the share of such
windows differs between recordings (a talkative caregiver has fewer). With
``min_top_p`` > 0 a window whose largest emotion probability (``emotion_top_p``) is
below it does not count either: the model could not tell the emotions apart there. With
``min_caregiver_share`` > 0 (needs the speaker columns of stage 04 with ``diarize``) a
window whose share of the caregiver's speech (``caregiver_share``) is below it does not
count: what the model heard there was mostly someone else. One
mask combines them (:func:`emotion_window_mask`); it also applies to the uncertainty
columns (``emotion_entropy``, ``emotion_top_p``) when they are analysed. Prosody is not
masked (F0 already uses voiced windows; energy and speech ratio describe the whole
recording on purpose). ``n_emotion_windows`` counts the windows that do count, and
:func:`emotion_window_share` how many each filter leaves out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from ser.data.schema import ID_COLUMNS, LEVEL_INDEX, LEVELS, PHASE_INDEX, PHASES, UNCERTAINTY_COLUMNS

#: Prosody columns of ``windows.csv`` (besides the model outputs ``p_<label>`` / ``d_<dimension>``).
PROSODY_COLUMNS: tuple[str, ...] = (
    "f0_hz", "f0_mean_hz", "f0_std_hz", "voiced_ratio",
    "energy_db", "energy_std_db", "energy_max_db", "speech_ratio",
)
#: Statistics :func:`recording_descriptors` knows, with their meaning.
STATS: dict[str, str] = {
    "mean": "mean",
    "std": "standard deviation (n-1)",
    "median": "median",
    "iqr": "interquartile range (75th - 25th percentile)",
    "min": "minimum",
    "max": "maximum",
    "skew": "skewness (adjusted Fisher-Pearson, unitless)",
    "kurtosis": "excess kurtosis (unbiased, 0 for a normal distribution, unitless)",
}


#: Column prefixes of model outputs: emotion probabilities (``p_``) and dimensional
#: values (``d_``: arousal, dominance, valence on the model's scale).
OUTPUT_PREFIXES: tuple[str, ...] = ("p_", "d_")


def is_model_output(column: object) -> bool:
    """Whether a window column (or a descriptor ``<column>__<stat>``) is a model output:
    ``p_<label>`` or ``d_<dimension>``."""
    return isinstance(column, str) and column.startswith(OUTPUT_PREFIXES)


#: Emotion channels of a window table and their column prefixes: the voice (``p_``), the
#: words (``t_``, :mod:`ser.inference.words`) and both fused (``f_``).
EMOTION_CHANNELS: Mapping[str, str] = MappingProxyType({"acoustic": "p_", "text": "t_", "fused": "f_"})


def select_channel(windows: pd.DataFrame, *, channel: str = "acoustic",
                   source: str = "window table") -> pd.DataFrame:
    """A window table whose ``p_<label>`` columns hold the emotion channel ``channel``, so the
    statistics run on it unchanged; the ``t_``/``f_`` columns are dropped. A text channel's
    windows without words are empty (NaN) and enter no summary. The uncertainty columns
    (and the ``min_top_p`` filter) stay those of the acoustic model.

    Args:
        windows: a window table (``windows.csv``).
        channel: a key of :data:`EMOTION_CHANNELS` (the ``channel`` param of stages 05-06).
        source: what ``windows`` is, for the error message (e.g. ``"windows.csv"``).

    Raises:
        ValueError: unknown channel, or the table lacks that channel's columns.
    """
    if channel not in EMOTION_CHANNELS:
        raise ValueError(f"emotion channel (param channel) must be one of {', '.join(EMOTION_CHANNELS)}; got {channel!r}")
    prefix = EMOTION_CHANNELS[channel]
    others = [c for c in windows.columns if isinstance(c, str) and c.startswith(("t_", "f_"))]
    if prefix == "p_":
        return windows.drop(columns=others)
    probs = probability_columns(windows)
    missing = [prefix + c[2:] for c in probs if prefix + c[2:] not in windows.columns]
    if missing or not probs:
        raise ValueError(f"{source} has no {channel} channel columns {missing or [prefix + '<label>']}: "
                         f"the text channel was off or not run in stage 04 (asr_model and text_model in "
                         f"params/04_inference.yaml); set the param channel: acoustic, or rerun stage 04 "
                         f"with both models")
    out = windows.drop(columns=others)
    for c in probs:
        out[c] = windows[prefix + c[2:]].to_numpy()
    return out


def probability_columns(df: pd.DataFrame) -> list[str]:
    """The ``p_<label>`` columns of a window table, in table order."""
    return [c for c in df.columns if isinstance(c, str) and c.startswith("p_")]


def model_output_columns(df: pd.DataFrame) -> list[str]:
    """The model-output columns of a window table (``p_<label>`` and ``d_<dimension>``),
    in table order."""
    return [c for c in df.columns if is_model_output(c)]


def emotion_columns(columns: Sequence[str]) -> list[str]:
    """The columns of ``columns`` that come from the emotion model: every model output
    (``p_<label>``, ``d_<dimension>``, :func:`is_model_output`) and the uncertainty
    columns (:data:`ser.data.schema.UNCERTAINTY_COLUMNS`), in their order. These are the
    columns the emotion-window mask empties (:func:`mask_low_speech`)."""
    return [c for c in columns if is_model_output(c) or c in UNCERTAINTY_COLUMNS]


def default_features(windows: pd.DataFrame) -> list[str]:
    """Every model output (emotion probabilities or dimensions) plus ``f0_hz`` and
    ``energy_db`` (when present)."""
    return model_output_columns(windows) + [c for c in ("f0_hz", "energy_db") if c in windows]


def key_descriptors(descriptors: pd.DataFrame) -> list[str]:
    """The descriptors modelled by default, those present in the table.

    The mean of each model output (``p_<label>__mean``, ``d_<dimension>__mean``), the
    median F0 (``f0_hz__median``), the mean energy (``energy_db__mean``) and the speech ratio.
    """
    cols = [c for c in descriptors.columns if is_model_output(c) and c.endswith("__mean")]
    return cols + [c for c in ("f0_hz__median", "energy_db__mean", "speech_ratio")
                   if c in descriptors.columns]


#: Descriptor-table columns that are bookkeeping, not descriptors.
META_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, "segment", "segment_start_s", "segment_end_s",
                                 "n_windows", "n_voiced_windows", "n_emotion_windows",
                                 "n_low_confidence_windows", "n_low_caregiver_share_windows")


def descriptor_columns(descriptors: pd.DataFrame) -> list[str]:
    """Numeric descriptor columns of a descriptor table (everything but ids/bookkeeping)."""
    return [c for c in descriptors.columns if c not in META_COLUMNS
            and pd.api.types.is_numeric_dtype(descriptors[c])]


def _read_ids_as_text(path: str | os.PathLike[str], *, what: str, producer: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {what} is written by stage {producer} "
                                f"(run `ser run --to {producer}`)")
    return pd.read_csv(path, dtype={c: str for c in ID_COLUMNS})


def load_windows(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``windows.csv`` keeping the ids (recording, caregiver, level, phase) as text.

    A plain ``pd.read_csv`` turns caregiver ``"003"`` into the number 3.

    Raises:
        FileNotFoundError: the file is missing (names stage 04_inference).
    """
    return _read_ids_as_text(path, what="windows.csv", producer="04_inference")


def load_descriptors(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``descriptors.csv`` keeping the ids as text (see :func:`load_windows`).

    Raises:
        FileNotFoundError: the file is missing (names stage 06_time_invariant).
    """
    return _read_ids_as_text(path, what="descriptors.csv", producer="06_time_invariant")


def _check_fraction(value: float, *, name: str, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"{what}: {name} must be a fraction in [0, 1] (0: every "
                         f"window counts), got {value!r}")
    return out


def _check_min_speech_ratio(min_speech_ratio: float, *, what: str) -> float:
    return _check_fraction(min_speech_ratio, name="min_speech_ratio", what=what)


def _at_least(windows: pd.DataFrame, column: str, threshold: float, *, missing: str) -> pd.Series:
    """``windows[column] >= threshold`` per window (NaN: False); all True when the threshold
    is 0; ``ValueError(missing)`` when a threshold above 0 meets a table without the column."""
    if threshold <= 0.0:
        return pd.Series(True, index=windows.index)
    if column not in windows.columns:
        raise ValueError(missing)
    return pd.to_numeric(windows[column], errors="coerce").ge(threshold)


def _filter_masks(windows: pd.DataFrame, *, min_speech_ratio: float, min_top_p: float,
                  min_caregiver_share: float = 0.0) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(enough speech, confident, enough of the caregiver) per window; each all True when
    its threshold is 0."""
    msr = _check_min_speech_ratio(min_speech_ratio, what="emotion_window_mask")
    mtp = _check_fraction(min_top_p, name="min_top_p", what="emotion_window_mask")
    mcs = _check_fraction(min_caregiver_share, name="min_caregiver_share", what="emotion_window_mask")
    hers = _at_least(windows, "caregiver_share", mcs, missing=(
        f"min_caregiver_share={mcs:g} needs the caregiver_share column of "
        f"windows.csv, which this table lacks: rerun stage 04_inference with "
        f"diarize: true (speaker turns), or set min_caregiver_share: 0"))
    speech = _at_least(windows, "speech_ratio", msr, missing=(
        f"min_speech_ratio={msr:g} needs the speech_ratio column of windows.csv, "
        f"which this table lacks; rerun stage 04_inference with its default "
        f"features, or set min_speech_ratio: 0 (every window counts)"))
    confident = _at_least(windows, "emotion_top_p", mtp, missing=(
        f"min_top_p={mtp:g} needs the emotion_top_p column of windows.csv "
        f"(the window's largest emotion probability), which this table lacks: "
        f"it was written before stage 04_inference recorded per-window "
        f"uncertainty; rerun stage 04_inference (with resume, the column is "
        f"added from the stored probabilities), or set min_top_p: 0"))
    return speech, confident, hers


def emotion_window_mask(windows: pd.DataFrame, *, min_speech_ratio: float,
                        min_top_p: float = 0.0, min_caregiver_share: float = 0.0) -> pd.Series:
    """Which windows count for the emotion-probability descriptors: enough speech and a
    confident enough model.

    Args:
        windows: window table (``windows.csv``) with ``speech_ratio`` (the fraction of the
            window that voice activity detection marks as speech, 0-1) and
            ``emotion_top_p`` (the window's largest emotion probability, 0-1).
        min_speech_ratio: least speech fraction of a counted window; 0 counts every window.
            Windows with an empty ``speech_ratio`` count only when it is 0.
        min_top_p: least top emotion probability of a counted window; 0 counts every
            window. Windows with an empty ``emotion_top_p`` count only when it is 0.
        min_caregiver_share: least share of the caregiver's speech among the window's
            attributed speech (``caregiver_share``, stage 04 with speaker turns); 0 counts
            every window. Windows with an empty share (nobody attributed, or her voice not
            identified) count only when it is 0.

    Returns:
        Boolean Series aligned with ``windows``: True where every filter keeps the window.

    Raises:
        ValueError: a threshold outside [0, 1], or > 0 and the table lacks its column
            (``speech_ratio``, ``emotion_top_p``, ``caregiver_share``).
    """
    speech, confident, hers = _filter_masks(windows, min_speech_ratio=min_speech_ratio,
                                            min_top_p=min_top_p, min_caregiver_share=min_caregiver_share)
    return speech & confident & hers


def mask_low_speech(windows: pd.DataFrame, *, min_speech_ratio: float, min_top_p: float = 0.0,
                    columns: Sequence[str] | None = None,
                    min_caregiver_share: float = 0.0) -> pd.DataFrame:
    """Copy of ``windows`` with the model outputs emptied where there is little
    speech or the model is unsure.

    Args:
        windows: window table (``windows.csv``).
        min_speech_ratio: windows whose ``speech_ratio`` is below this fraction get empty
            ``columns``; 0 keeps every window.
        min_top_p: windows whose ``emotion_top_p`` is below this probability get empty
            ``columns``; 0 keeps every window. Both 0: an unchanged copy.
        columns: columns to empty; default every model output (``p_<label>``,
            ``d_<dimension>``) and the uncertainty columns (:func:`emotion_columns`).
        min_caregiver_share: windows whose ``caregiver_share`` is below this get empty
            ``columns``; 0 keeps every window.

    Returns:
        The masked copy (rows and other columns unchanged).

    Raises:
        ValueError: see :func:`emotion_window_mask`.

    Example:
        >>> speech = mask_low_speech(windows, min_speech_ratio=0.5)  # doctest: +SKIP
    """
    keep = emotion_window_mask(windows, min_speech_ratio=min_speech_ratio, min_top_p=min_top_p,
                               min_caregiver_share=min_caregiver_share)
    out = windows.copy()
    cols = list(emotion_columns(windows.columns) if columns is None else columns)
    if cols and not keep.all():
        out.loc[~keep, cols] = np.nan
    return out


def emotion_window_share(windows: pd.DataFrame, *, min_speech_ratio: float, min_top_p: float = 0.0,
                         per_caregiver: bool = False, min_caregiver_share: float = 0.0) -> pd.DataFrame:
    """How many windows count for the emotion descriptors and how many each filter leaves
    out, per training level and phase (or per caregiver and phase).

    Args:
        windows: window table (``windows.csv``).
        min_speech_ratio: see :func:`emotion_window_mask`.
        min_top_p: see :func:`emotion_window_mask`.
        per_caregiver: one row per caregiver × phase instead of per level × phase.
        min_caregiver_share: see :func:`emotion_window_mask`.

    Returns:
        One row per level × phase present (natural order), or per caregiver × phase
        (by level, caregiver, phase): ``[caregiver,] level, phase, recordings, windows,
        emotion_windows`` (windows kept), ``low_speech`` (left out: ``speech_ratio`` below
        ``min_speech_ratio``), ``low_confidence`` (left out: enough speech but
        ``emotion_top_p`` below ``min_top_p``) and ``share`` (emotion_windows / windows, 0-1);
        with ``min_caregiver_share`` > 0 also ``low_caregiver_share`` (left out: enough speech
        but ``caregiver_share`` below it; ``low_confidence`` then counts the rest).
        ``emotion_windows + low_speech [+ low_caregiver_share] + low_confidence = windows``.

    Raises:
        ValueError: see :func:`emotion_window_mask`; missing ``recording``/``level``/
            ``phase`` (or ``caregiver``) columns.
    """
    keys = ["caregiver", "level", "phase"] if per_caregiver else ["level", "phase"]
    missing = [c for c in ("recording", *keys) if c not in windows.columns]
    if missing:
        raise ValueError(f"emotion_window_share: windows.csv lacks columns {missing}")
    speech, confident, hers = _filter_masks(windows, min_speech_ratio=min_speech_ratio,
                                            min_top_p=min_top_p, min_caregiver_share=min_caregiver_share)
    w = windows.assign(_keep=speech & hers & confident, _low_speech=~speech, _low_cg=speech & ~hers,
                       _low_conf=speech & hers & ~confident)
    cg = {"low_caregiver_share": ("_low_cg", "sum")} if float(min_caregiver_share) > 0 else {}
    g = w.groupby(keys, sort=False)
    out = g.agg(recordings=("recording", "nunique"), windows=("_keep", "size"),
                emotion_windows=("_keep", "sum"), low_speech=("_low_speech", "sum"), **cg,
                low_confidence=("_low_conf", "sum")).reset_index()
    for c in ("emotion_windows", "low_speech", *cg, "low_confidence"):
        out[c] = out[c].astype(int)
    out["share"] = out["emotion_windows"] / out["windows"]
    out["_lv"] = out["level"].map(LEVEL_INDEX).fillna(len(LEVELS))
    out["_ph"] = out["phase"].map(PHASE_INDEX).fillna(len(PHASES))
    order = ["_lv", "caregiver", "_ph"] if per_caregiver else ["_lv", "_ph"]
    return out.sort_values(order, kind="stable").drop(columns=["_lv", "_ph"]).reset_index(drop=True)


def _check_windows(windows: pd.DataFrame, features: Sequence[str], *, what: str) -> None:
    if not isinstance(windows, pd.DataFrame):
        raise TypeError(f"{what}: windows must be a DataFrame (windows.csv), "
                        f"got {type(windows).__name__}")
    required = [*ID_COLUMNS, "start_s", "end_s"]
    missing = [c for c in required if c not in windows.columns]
    if missing:
        raise ValueError(f"{what}: windows.csv lacks columns {missing}; stage 04 "
                         f"(04_inference) writes {required} + p_<label> (or d_<dimension>) + prosody")
    if not features:
        raise ValueError(f"{what}: option 'features' is empty; name window columns "
                         f"such as {default_features(windows)}")
    absent = [f for f in features if f not in windows.columns]
    if absent:
        raise ValueError(f"{what}: option 'features' names {absent}, which windows.csv "
                         f"does not have; available: "
                         f"{emotion_columns(windows.columns) + [c for c in PROSODY_COLUMNS if c in windows]}")
    bad_levels = sorted(set(windows["level"].dropna().astype(str)) - set(LEVELS))
    if bad_levels:
        raise ValueError(f"{what}: unknown training level(s) {bad_levels} in windows.csv; "
                         f"expected {list(LEVELS)}")
    bad_phases = sorted(set(windows["phase"].dropna().astype(str)) - set(PHASES))
    if bad_phases:
        raise ValueError(f"{what}: unknown phase(s) {bad_phases} in windows.csv; "
                         f"expected {list(PHASES)}")


def _masked_numeric(windows: pd.DataFrame, features: Sequence[str], probs: Sequence[str],
                    min_speech_ratio: float, min_top_p: float, *, what: str,
                    min_caregiver_share: float = 0.0) -> pd.DataFrame:
    """Numeric copy of the features; ``probs`` emptied outside counted windows;
    ``_emotion_window`` (counted), ``_low_caregiver_share`` (enough speech, too little of
    hers) and ``_low_confidence`` (enough speech of hers, unsure model)."""
    msr = _check_min_speech_ratio(min_speech_ratio, what=what)
    mtp = _check_fraction(min_top_p, name="min_top_p", what=what)
    mcs = _check_fraction(min_caregiver_share, name="min_caregiver_share", what=what)
    w = windows.copy()
    for f in features:
        w[f] = pd.to_numeric(w[f], errors="coerce")
    if probs:
        speech, confident, hers = _filter_masks(w, min_speech_ratio=msr, min_top_p=mtp,
                                                min_caregiver_share=mcs)
    else:
        speech = confident = hers = pd.Series(True, index=w.index)
    keep = speech & hers & confident
    if probs and not keep.all():
        w.loc[~keep, list(probs)] = np.nan
    w["_emotion_window"] = keep.to_numpy()
    w["_low_caregiver_share"] = (speech & ~hers).to_numpy()
    w["_low_confidence"] = (speech & hers & ~confident).to_numpy()
    return w


def recording_descriptors(
    windows: pd.DataFrame,
    *,
    features: Sequence[str],
    stats: Sequence[str] = ("mean", "std", "median", "iqr", "min", "max", "skew", "kurtosis"),
    segment_s: float | None = None,
    min_segment_fraction: float = 0.5,
    min_speech_ratio: float = 0.0,
    min_top_p: float = 0.0,
    min_caregiver_share: float = 0.0,
) -> pd.DataFrame:
    """Summarise windows into one tidy row per recording (or per recording segment).

    Args:
        windows: window table (``windows.csv``), one row per analysis window.
        features: window columns to summarise, e.g. ``["p_happy", "f0_hz", "energy_db"]``.
        stats: statistics per feature, from :data:`STATS`. Missing values are skipped,
            so F0 statistics use voiced windows only.
        segment_s: length in seconds of consecutive analysis segments (the study used
            15, 21, 30 and 45 s); ``None`` or ``0`` summarises whole recordings. A window
            belongs to the segment its ``start_s`` falls in: ``[k*segment_s, (k+1)*segment_s)``.
        min_segment_fraction: a recording's last, incomplete segment is kept only when its
            windows span at least this fraction of ``segment_s``.
        min_speech_ratio: windows whose ``speech_ratio`` is below this fraction (0-1) are
            left out of the model-output (``p_<label>``, ``d_<dimension>``) statistics (:func:`mask_low_speech`); 0 uses
            every window. Other features use every window.
        min_top_p: windows whose ``emotion_top_p`` (largest emotion probability) is below
            this are left out of the same statistics; 0 uses every window. The two filters
            form one mask (:func:`emotion_window_mask`), which also applies to
            ``emotion_entropy`` / ``emotion_top_p`` when they are features.
        min_caregiver_share: windows whose ``caregiver_share`` is below this are left out
            of the same statistics (the same mask); 0 uses every window.

    Returns:
        DataFrame, one row per recording × segment, with ``recording, caregiver, level,
        phase, segment, segment_start_s, segment_end_s, n_windows, n_voiced_windows,
        voiced_windows_ratio`` (+ ``n_emotion_windows`` when a model-output feature
        (:func:`emotion_columns`) is summarised, and ``n_low_confidence_windows``, the
        windows with enough speech left out by ``min_top_p``, when it is > 0, and
        ``n_low_caregiver_share_windows``, those left out by ``min_caregiver_share``, when it is > 0;
        + ``voiced_ratio``, ``speech_ratio`` when the window table has them)
        and one ``<feature>__<stat>`` column per feature × stat. Rows are sorted by level
        (natural order), caregiver, phase (control first) and segment. A recording
        without a counted window has empty model-output statistics. See
        :func:`ser.stats.names.describe_columns`.

    Raises:
        ValueError: unknown stat, missing/unknown feature columns, bad ``segment_s``,
            ``min_speech_ratio`` or ``min_top_p``, or a threshold > 0 without its column
            (``speech_ratio``, ``emotion_top_p``).

    Example:
        >>> d = recording_descriptors(windows, features=["f0_hz"], stats=("median",))
        >>> d[["recording", "f0_hz__median"]]
    """
    _check_windows(windows, features, what="recording_descriptors")
    unknown = [s for s in stats if s not in STATS]
    if unknown or not stats:
        raise ValueError(f"recording_descriptors: unknown stats {unknown or stats}; "
                         f"choose from {list(STATS)}")
    if segment_s is not None and (not np.isfinite(segment_s) or segment_s < 0):
        raise ValueError(f"recording_descriptors: segment_s must be 0/None (whole recording) "
                         f"or a positive number of seconds, got {segment_s}")
    probs = emotion_columns(features)
    w = _masked_numeric(windows, features, probs, min_speech_ratio, min_top_p,
                        what="recording_descriptors", min_caregiver_share=min_caregiver_share)
    start = pd.to_numeric(w["start_s"], errors="coerce")
    if segment_s:
        w["segment"] = np.floor(start / segment_s).astype(int)
        w["segment_start_s"] = w["segment"] * float(segment_s)
    else:
        w["segment"] = 0
        w["segment_start_s"] = w.groupby("recording")["start_s"].transform("min")
    keys = [*ID_COLUMNS, "segment"]
    g = w.groupby(keys, sort=False, dropna=False)
    out = g.agg(segment_start_s=("segment_start_s", "first"),
                segment_end_s=("end_s", "max"),
                n_windows=("start_s", "size"))
    if "f0_hz" in w:
        out["n_voiced_windows"] = g["f0_hz"].count()
        out["voiced_windows_ratio"] = out["n_voiced_windows"] / out["n_windows"]
    if probs:
        out["n_emotion_windows"] = g["_emotion_window"].sum().astype(int)
        if float(min_top_p) > 0:
            out["n_low_confidence_windows"] = g["_low_confidence"].sum().astype(int)
        if float(min_caregiver_share) > 0:
            out["n_low_caregiver_share_windows"] = g["_low_caregiver_share"].sum().astype(int)
    for col in ("voiced_ratio", "speech_ratio"):
        if col in w:
            out[col] = g[col].mean()
    blocks = {}
    for s in stats:
        if s == "iqr":
            val = g[list(features)].quantile(0.75) - g[list(features)].quantile(0.25)
        elif s == "kurtosis":  # DataFrameGroupBy.kurt exists from pandas 3.0 on
            sel = g[list(features)]
            val = sel.kurt() if hasattr(sel, "kurt") else sel.agg(lambda x: x.kurt())
        else:
            val = g[list(features)].agg(s)
        blocks[s] = val
    for f in features:
        for s in stats:
            out[f"{f}__{s}"] = blocks[s][f]
    out = out.reset_index()
    if segment_s:
        span = out["segment_end_s"] - out["segment_start_s"]
        last = out.groupby("recording")["segment"].transform("max") == out["segment"]
        out = out[~(last & (span < min_segment_fraction * segment_s))]
    out["_lv"] = out["level"].map(LEVEL_INDEX)
    out["_ph"] = out["phase"].map(PHASE_INDEX)
    out = out.sort_values(["_lv", "caregiver", "_ph", "segment"]).drop(columns=["_lv", "_ph"])
    return out.reset_index(drop=True)


def time_binned(
    windows: pd.DataFrame,
    *,
    features: Sequence[str],
    time_bins: int = 10,
    normalise_time: bool = True,
    min_speech_ratio: float = 0.0,
    min_top_p: float = 0.0,
    min_caregiver_share: float = 0.0,
) -> pd.DataFrame:
    """Average windows into equal time bins per recording (input of trajectories).

    Args:
        windows: window table (``windows.csv``).
        features: window columns to average (missing values skipped).
        time_bins: number of bins. With ``normalise_time`` each recording is cut into
            ``time_bins`` equal fractions of its own length; otherwise the bins are
            equal stretches of absolute time (minutes) over the longest recording, so
            shorter recordings leave late bins empty.
        normalise_time: time as a fraction of the recording (0–1) or in minutes.
        min_speech_ratio: windows whose ``speech_ratio`` is below this fraction (0-1) are
            left out of the model-output means (:func:`mask_low_speech`); 0 uses every
            window. Other features use every window.
        min_top_p: windows whose ``emotion_top_p`` is below this are left out of the same
            means (one mask with the speech filter, :func:`emotion_window_mask`); 0 uses
            every window.
        min_caregiver_share: windows whose ``caregiver_share`` is below this are left out
            of the same means (the same mask); 0 uses every window.

    Returns:
        One row per recording × non-empty bin: ``recording, caregiver, level, phase,
        time_bin, time`` (bin centre: fraction 0–1, or minutes), ``time_unit``,
        ``n_windows`` (+ ``n_emotion_windows`` when an emotion feature is averaged, and
        ``n_low_confidence_windows`` when ``min_top_p`` > 0, as in
        :func:`recording_descriptors`) and the mean of each feature (empty model outputs
        in a bin without a counted window).

    Raises:
        ValueError: ``time_bins`` < 1, missing/unknown feature columns, bad
            ``min_speech_ratio`` or ``min_top_p``, or a threshold > 0 without its column.
    """
    _check_windows(windows, features, what="time_binned")
    if int(time_bins) != time_bins or time_bins < 1:
        raise ValueError(f"time_binned: time_bins must be a positive integer, got {time_bins}")
    probs = emotion_columns(features)
    w = _masked_numeric(windows, features, probs, min_speech_ratio, min_top_p, what="time_binned",
                        min_caregiver_share=min_caregiver_share)
    mid = (pd.to_numeric(w["start_s"]) + pd.to_numeric(w["end_s"])) / 2.0
    if normalise_time:
        lo = w.groupby("recording")["start_s"].transform("min")
        hi = w.groupby("recording")["end_s"].transform("max")
        frac = (mid - lo) / (hi - lo).where(hi > lo, 1.0)
        w["time_bin"] = np.clip(np.floor(frac * time_bins), 0, time_bins - 1).astype(int)
        centre = (np.arange(time_bins) + 0.5) / time_bins
        unit = "fraction of recording"
    else:
        total = float(pd.to_numeric(w["end_s"]).max())
        width = total / time_bins if total > 0 else 1.0
        w["time_bin"] = np.clip(np.floor(mid / width), 0, time_bins - 1).astype(int)
        centre = (np.arange(time_bins) + 0.5) * width / 60.0
        unit = "min"
    g = w.groupby([*ID_COLUMNS, "time_bin"], sort=False)
    out = g[list(features)].mean()
    if probs:
        if float(min_caregiver_share) > 0:
            out.insert(0, "n_low_caregiver_share_windows", g["_low_caregiver_share"].sum().astype(int))
        if float(min_top_p) > 0:
            out.insert(0, "n_low_confidence_windows", g["_low_confidence"].sum().astype(int))
        out.insert(0, "n_emotion_windows", g["_emotion_window"].sum().astype(int))
    out.insert(0, "n_windows", g.size())
    out = out.reset_index()
    out.insert(out.columns.get_loc("time_bin") + 1, "time", centre[out["time_bin"].to_numpy()])
    out.insert(out.columns.get_loc("time") + 1, "time_unit", unit)
    return out.sort_values(["recording", "time_bin"]).reset_index(drop=True)
