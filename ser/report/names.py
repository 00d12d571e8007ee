"""Names a clinical reader understands, with units, for every column, term and analysis.

The one mapping from the code names of ``results/tables/`` (``speech_ratio``,
``energy_db__mean``, ``phase[care]:level_trend`` …) to what the report shows ("share of
time speaking (%)", "mean loudness (dB)", "care vs. control, per step of training
level"). Tables, figure axes, legends and the plain-language summary all take their
wording from here, so a table row and a figure axis always read alike;
:func:`glossary_rows` maps the names back to the column names for analysts.

- :func:`feature_name` / :func:`feature_unit` / :func:`display_name`: a window feature or
  descriptor column (name, unit, both as "name (unit)");
- :func:`display_scale`: the factor a value is multiplied by for display (fractions are
  shown as %);
- :func:`term_name`: a model term;
- :data:`ANALYSES`: each analysis of ``mixed_models.csv`` with the question it asks;
- :data:`CODE_NAMES`: code names that must never appear in a reader's text
  (checked by :mod:`ser.report.browser`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Window features: (reader's name, unit, display scale). Fractions are shown in %.
_FEATURES: dict[str, tuple[str, str, float]] = {
    "f0_hz": ("pitch", "Hz", 1.0),
    "f0_mean_hz": ("window-mean pitch", "Hz", 1.0),
    "f0_std_hz": ("pitch variability (SD)", "Hz", 1.0),
    "voiced_ratio": ("share of voiced sound", "%", 100.0),
    "energy_db": ("loudness", "dB", 1.0),
    "energy_std_db": ("loudness variability (SD)", "dB", 1.0),
    "energy_max_db": ("peak loudness", "dB", 1.0),
    "speech_ratio": ("share of time speaking", "%", 100.0),
    "voiced_windows_ratio": ("share of windows with pitch", "%", 100.0),
    "emotion_entropy": ("uncertainty of the emotion estimate (0 certain, 1 undecided)", "", 1.0),
    "emotion_top_p": ("confidence of the emotion estimate (highest probability)", "", 1.0),
}

#: How a statistic over windows is said: before the name ("mean loudness") or, for
#: model outputs, after it ("probability of happy speech (mean over windows)").
_STAT_PREFIX: dict[str, str] = {
    "mean": "mean", "median": "median", "min": "lowest", "max": "highest",
    "std": "variability (SD) of", "iqr": "spread (IQR) of",
    "skew": "skewness of", "kurtosis": "peakedness (kurtosis) of",
}
_STAT_SUFFIX: dict[str, str] = {
    "mean": "mean over windows", "median": "median over windows", "min": "lowest window",
    "max": "highest window", "std": "SD over windows", "iqr": "IQR over windows",
    "skew": "skewness over windows", "kurtosis": "kurtosis over windows",
}
_UNITLESS_STATS = frozenset({"skew", "kurtosis"})

#: Analyses of ``mixed_models.csv`` (column ``analysis``): heading and the question asked.
ANALYSES: dict[str, tuple[str, str]] = {
    "time_invariant": ("Whole recordings",
                       "Does a caregiver's voice, summarised over a whole recording, differ "
                       "between care and control, and with training level?"),
    "time_dependent": ("Along the session",
                       "Does the voice change in the course of a session, and does that course "
                       "differ between care and control or with training level?"),
    "delta": ("Change from control to care",
              "Does each caregiver's own change from control to care grow or shrink with "
              "training level?"),
}

_LEVEL_TERMS = {"phase": "{} vs. control", "level": "{} vs. untrained"}
_TERMS = {"phase": "care vs. control (all levels)", "level": "training level (any difference)",
          "level_trend": "per step of training level", "time": "per unit of session time",
          "intercept": "average change from control to care",
          "care": "care vs. control", "level_step": "per step of training level"}


def _split(column: str) -> tuple[str, str]:
    feature, _, stat = str(column).partition("__")
    return feature, stat


def feature_unit(column: str) -> str:
    """Unit shown for a feature or descriptor column (``""`` when it has none).

    Example:
        >>> feature_unit("speech_ratio"), feature_unit("p_happy__mean")
        ('%', '')
    """
    feature, stat = _split(column)
    if stat in _UNITLESS_STATS:
        return ""
    if feature.startswith("d_"):
        return "model scale 0-1"
    if feature in _FEATURES:
        return _FEATURES[feature][1]
    for end, unit in (("_hz", "Hz"), ("_db", "dB"), ("_s", "s")):
        if feature.endswith(end):
            return unit
    return ""


def display_scale(column: str) -> float:
    """Factor from the table's value to the shown value (100 for fractions shown in %)."""
    feature, stat = _split(column)
    if stat in _UNITLESS_STATS:
        return 1.0
    return _FEATURES.get(feature, ("", "", 1.0))[2]


def feature_name(column: str) -> str:
    """Reader's name of a feature or descriptor column, without its unit.

    ``energy_db__mean`` → ``mean loudness``, ``f0_hz__median`` → ``median pitch``,
    ``p_happy__mean`` → ``probability of happy speech (mean over windows)``,
    ``speech_ratio`` → ``share of time speaking``.
    """
    feature, stat = _split(column)
    if feature.startswith("p_"):
        base = f"probability of {feature[2:].replace('_', ' ')} speech"
        return f"{base} ({_STAT_SUFFIX.get(stat, stat)})" if stat else base
    if feature.startswith("d_"):
        base = feature[2:].replace("_", " ")
        return f"{base} ({_STAT_SUFFIX.get(stat, stat)})" if stat else base
    base = _FEATURES.get(feature, (feature.replace("_", " "), "", 1.0))[0]
    if not stat or (feature == "speech_ratio" and stat == "mean"):
        return base
    return f"{_STAT_PREFIX.get(stat, stat)} {base}"


def display_name(column: str) -> str:
    """Name with its unit once: ``mean loudness (dB)``, ``share of time speaking (%)``."""
    unit = feature_unit(column)
    name = feature_name(column)
    return f"{name} ({unit})" if unit else name


def term_name(term: str) -> str:
    """Reader's name of a model term.

    ``phase[care]`` → ``care vs. control``; ``level_trend`` → ``per step of training level``;
    ``phase[care]:level_trend`` → ``care vs. control, per step of training level``.
    """
    parts = []
    for piece in str(term).split(":"):
        piece = piece.strip()
        m = re.match(r"^(?:C\()?([\w.]+?)(?:,[^)]*)?\)?\[(?:T\.)?([^\]]+)\]$", piece)
        if m:
            parts.append(_LEVEL_TERMS.get(m.group(1), m.group(1) + ": {}").format(m.group(2)))
        else:
            parts.append(_TERMS.get(piece.lower() if piece.lower() == "intercept" else piece,
                                    piece.replace("_", " ")))
    return ", ".join(parts)


def analysis_heading(analysis: str) -> tuple[str, str]:
    """``(heading, question)`` of an analysis of ``mixed_models.csv``."""
    return ANALYSES.get(analysis, (analysis.replace("_", " ").capitalize(), ""))


#: Code names of the study's columns and terms: never part of a reader's visible text
#: (outside the glossary for analysts).
CODE_NAMES: tuple[str, ...] = (
    "speech_ratio", "voiced_ratio", "energy_db", "energy_std_db", "energy_max_db",
    "f0_hz", "f0_mean_hz", "f0_std_hz", "emotion_entropy", "emotion_top_p",
    "p_angry", "p_happy", "p_neutral", "p_sad", "phase[care]", "level_trend",
    "time_invariant", "time_dependent",
)


def code_names_in(text: str, *, extra: Iterable[str] = ()) -> list[str]:
    """The code names (:data:`CODE_NAMES` and ``extra``) that occur in ``text``."""
    return sorted({n for n in (*CODE_NAMES, *extra)
                   if re.search(r"(?<![\w/.])" + re.escape(n), text)})


def glossary_rows(columns: Iterable[str] = (), terms: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``(shown name, column or term in results/tables/)`` for each column and term."""
    rows = [(display_name(c), c) for c in dict.fromkeys(columns)]
    rows += [(term_name(t), t) for t in dict.fromkeys(terms)]
    rows += [(ANALYSES[a][0], a) for a in ANALYSES]
    return rows
