"""Human names of window features and descriptor columns: meaning, unit, axis label.

- :func:`unit_of` gives the unit of a window feature or descriptor (``Hz``, ``dB``,
  ``probability``, ``model scale 0-1`` for the dimensional outputs ``d_<dimension>`` …),
  :func:`pretty_name` its readable name and :func:`axis_label` both, for figure axes.
- :func:`describe_columns` documents every column of a descriptor table (meaning and
  unit; ``descriptors_columns.csv``).
"""

from __future__ import annotations

import pandas as pd

from ser.data.schema import LEVELS
from ser.stats.descriptors import STATS, emotion_columns

#: Unit of the dimensional outputs ``d_arousal, d_dominance, d_valence``
#: (:mod:`ser.models.dimensional`): the model's own regression scale, roughly 0-1.
DIMENSION_UNIT: str = "model scale 0-1"
#: Statistics whose value has no unit whatever the feature's unit.
UNITLESS_STATS: frozenset[str] = frozenset({"skew", "kurtosis"})

_FEATURE_MEANING: dict[str, tuple[str, str]] = {
    "f0_hz": ("median F0 of a window's voiced frames", "Hz"),
    "f0_mean_hz": ("mean F0 of a window's voiced frames", "Hz"),
    "f0_std_hz": ("standard deviation of F0 within a window", "Hz"),
    "voiced_ratio": ("fraction of a window's frames that are voiced", "fraction"),
    "energy_db": ("mean frame energy of a window", "dB"),
    "energy_std_db": ("standard deviation of frame energy within a window", "dB"),
    "energy_max_db": ("maximum frame energy of a window", "dB"),
    "speech_ratio": ("fraction of a window detected as speech", "fraction"),
    "caregiver_speech_s": ("seconds of the caregiver's speech in a window (speaker turns)", "s"),
    "other_speech_s": ("seconds of other speakers' speech in a window (speaker turns)", "s"),
    "caregiver_share": ("caregiver's share of a window's attributed speech", "fraction"),
    "emotion_entropy": ("uncertainty of the emotion (normalised entropy): Shannon entropy of "
                        "a window's emotion probabilities divided by log(number of labels); "
                        "0 one emotion certain, 1 all equally likely", "unitless"),
    "emotion_top_p": ("top emotion probability: the largest of a window's emotion "
                      "probabilities", "probability"),
}

_SUMMARY_COLUMNS: dict[str, tuple[str, str]] = {
    "segment": ("index of the consecutive analysis segment within the recording "
                "(0 when the whole recording is one segment)", ""),
    "segment_start_s": ("start of the segment from the recording start", "s"),
    "segment_end_s": ("end of the segment (end of its last window)", "s"),
    "n_windows": ("number of analysis windows in the segment", "count"),
    "n_voiced_windows": ("windows with an F0 value (at least one voiced frame)", "count"),
    "n_emotion_windows": (("windows whose model outputs enter the p_<label> (or d_<dimension>) "
                           "descriptors (speech_ratio at least min_speech_ratio and "
                           "emotion_top_p at least min_top_p)"), "count"),
    "n_low_confidence_windows": (("windows with enough speech left out of the p_<label> "
                                  "descriptors because their top emotion probability "
                                  "(emotion_top_p) is below min_top_p"), "count"),
    "n_low_caregiver_share_windows": (("windows with enough speech left out of the p_<label> "
                                       "descriptors because the caregiver's share of their "
                                       "speech (caregiver_share) is below min_caregiver_share"), "count"),
    "voiced_windows_ratio": ("fraction of windows with an F0 value", "fraction"),
    "voiced_ratio": ("mean of the windows' voiced-frame fraction", "fraction"),
    "speech_ratio": ("mean of the windows' speech-activity fraction", "fraction"),
}


def unit_of(column: str) -> str:
    """Unit of a window feature or descriptor column, for axis labels.

    Args:
        column: a window column (``f0_hz``) or a descriptor (``f0_hz__median``).

    Returns:
        ``"Hz"``, ``"dB"``, ``"probability"``, :data:`DIMENSION_UNIT`, ``"fraction"``,
        ``"unitless"``, ``"s"``, ``"count"`` or ``""`` when unknown.

    Example:
        >>> unit_of("p_happy__mean"), unit_of("f0_hz__skew")
        ('probability', 'unitless')
    """
    feature, _, stat = column.partition("__")
    if stat in UNITLESS_STATS:
        return "unitless"
    if feature.startswith("p_"):
        return "probability"
    if feature.startswith("d_"):
        return DIMENSION_UNIT
    if feature in _FEATURE_MEANING:
        return _FEATURE_MEANING[feature][1]
    if feature in _SUMMARY_COLUMNS:
        return _SUMMARY_COLUMNS[feature][1]
    if feature.endswith("_hz"):
        return "Hz"
    if feature.endswith("_db"):
        return "dB"
    if feature.endswith("_ratio"):
        return "fraction"
    if feature.endswith("_s"):
        return "s"
    return ""


def pretty_name(column: str) -> str:
    """Readable name of a feature/descriptor: ``p_happy__mean`` → ``P(happy), mean``,
    ``d_arousal__mean`` → ``arousal, mean``."""
    feature, _, stat = column.partition("__")
    if feature.startswith("p_"):
        name = f"P({feature[2:]})"
    elif feature.startswith("d_"):
        name = feature[2:]
    else:
        name = {"f0_hz": "F0", "f0_mean_hz": "F0 mean", "f0_std_hz": "F0 SD",
                "energy_db": "energy", "energy_std_db": "energy SD",
                "energy_max_db": "energy max", "speech_ratio": "speech ratio",
                "voiced_ratio": "voiced ratio", "emotion_entropy": "emotion uncertainty",
                "emotion_top_p": "top emotion probability",
                }.get(feature, feature.replace("_", " "))
    return f"{name}, {stat}" if stat else name


def axis_label(column: str, *, prefix: str = "") -> str:
    """Axis label with unit, e.g. ``"F0, median (Hz)"``."""
    unit = unit_of(column)
    label = f"{prefix}{pretty_name(column)}"
    return f"{label} ({unit})" if unit else label


def describe_columns(descriptors: pd.DataFrame, *, min_speech_ratio: float = 0.0,
                     min_top_p: float = 0.0) -> pd.DataFrame:
    """Column dictionary of a descriptor table: one row per column.

    Args:
        descriptors: output of :func:`ser.stats.descriptors.recording_descriptors`.
        min_speech_ratio: the value it was computed with (named in the meaning of the
            ``p_<label>`` and uncertainty columns).
        min_top_p: likewise, the confidence filter it was computed with.

    Returns:
        DataFrame with ``column, meaning, unit``, in the table's column order.
    """
    rows = []
    ids = {"recording": "recording identifier (caregiver_phase)",
           "caregiver": "caregiver identifier",
           "level": f"Humanitude training level ({' < '.join(LEVELS)})",
           "phase": "phase of the interaction (control or care)"}
    for col in descriptors.columns:
        if col in ids:
            meaning, unit = ids[col], ""
        elif col in _SUMMARY_COLUMNS:
            meaning, unit = _SUMMARY_COLUMNS[col]
        elif "__" in col:
            feature, _, stat = col.partition("__")
            if feature.startswith("p_"):
                what = f"probability of '{feature[2:]}' per window (model output)"
            elif feature.startswith("d_"):
                what = f"{feature[2:]} per window (dimensional model output, on its scale of about 0-1)"
            else:
                what = _FEATURE_MEANING.get(feature, (feature, ""))[0]
            scope = " (voiced windows only)" if feature.startswith("f0") else ""
            filters = [f"{name} >= {v:g}" for name, v in (("speech_ratio", min_speech_ratio),
                                                          ("emotion_top_p", min_top_p)) if v > 0]
            if emotion_columns([feature]) and filters:
                scope = f" (windows with {' and '.join(filters)} only)"
            meaning = f"{STATS.get(stat, stat)} over windows of: {what}{scope}"
            unit = unit_of(col)
        else:
            meaning, unit = "", unit_of(col)
        rows.append({"column": col, "meaning": meaning, "unit": unit})
    return pd.DataFrame(rows, columns=["column", "meaning", "unit"])
