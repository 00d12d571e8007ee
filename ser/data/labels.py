"""Emotion labels: each corpus' own categories → one unified label set.

Every corpus names its emotions its own way (EmoDB's letter ``W`` is *anger*,
RAVDESS says *angry*, CREMA-D ``ANG``, EMOVO ``rab`` = *rabbia*). The readers in
:mod:`ser.data.corpora` keep the corpus' category as ``emotion`` (an English name, or
the corpus' own word where it documents one, as EMOVO's Italian names; see
:data:`CORPUS_EMOTIONS`) and a label map turns it into the unified ``label``.

The default map takes each category's common name (:data:`SYNONYMS`), except where a
corpus uses a name differently (:data:`CORPUS_DEFAULTS`): TurEV-DB's *Calm* is its
low-arousal non-emotional class and has no separate neutral, so it becomes ``neutral``
(RAVDESS records calm beside neutral, so its ``calm`` stays ``calm``, outside the
4-class set).

A label map is ``{corpus_emotion: unified_label_or_None}``. ``None`` means "drop
explicitly": the utterance stays in the metadata table with ``label`` NA and a
``dropped_reason``, so nothing disappears silently. Labels that are not in the
chosen label set (default: the 4 classes angry, happy, neutral, sad) are
dropped the same way. Params may override single entries per corpus::

    label_map:
      ravdess: {calm: neutral}      # merge calm into neutral
      emodb: {boredom: null}        # already dropped under the 4-class set
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

#: Every unified label a default map can produce.
UNIFIED_LABELS: tuple[str, ...] = (
    "angry", "happy", "neutral", "sad", "fear", "disgust", "surprise", "boredom", "calm",
)

#: The 4-class set used by the study.
DEFAULT_LABELS: tuple[str, ...] = ("angry", "happy", "neutral", "sad")

#: Each corpus' own emotion categories, as the readers write them into ``emotion``.
#: ``folder`` and ``demo`` take the folder names, so their vocabulary is open (``None``).
CORPUS_EMOTIONS: Mapping[str, tuple[str, ...] | None] = MappingProxyType({
    "emodb": ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"),
    "emovo": ("disgusto", "gioia", "neutrale", "paura", "rabbia", "sorpresa", "tristezza"),
    "ravdess": ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
    "cafe": ("anger", "disgust", "happiness", "neutral", "fear", "surprise", "sadness"),
    "cremad": ("anger", "disgust", "fear", "happy", "neutral", "sad"),
    "tess": ("angry", "disgust", "fear", "happy", "neutral", "pleasant_surprise", "sad"),
    "savee": ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"),
    "turev": ("angry", "calm", "happy", "sad"),
    "folder": None,
    "demo": None,
})

#: Common names of emotions → unified label (also used for the open-vocabulary layouts).
#: Italian names are EMOVO's (Costantini et al., LREC 2014).
SYNONYMS: Mapping[str, str] = MappingProxyType({
    "angry": "angry", "anger": "angry", "rabbia": "angry",
    "happy": "happy", "happiness": "happy", "joy": "happy", "gioia": "happy",
    "neutral": "neutral", "neutrale": "neutral", "neutro": "neutral",
    "sad": "sad", "sadness": "sad", "tristezza": "sad",
    "fear": "fear", "fearful": "fear", "paura": "fear",
    "disgust": "disgust", "disgusted": "disgust", "disgusto": "disgust",
    "surprise": "surprise", "surprised": "surprise", "pleasant_surprise": "surprise",
    "sorpresa": "surprise",
    "boredom": "boredom", "bored": "boredom",
    "calm": "calm",
})

#: Default mappings of one corpus that differ from :data:`SYNONYMS`. TurEV-DB's ``calm``
#: is the corpus' low-arousal non-emotional class (it has no neutral), so it is the
#: study's ``neutral``; reports state this (methods, stage 01's emotion table).
CORPUS_DEFAULTS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "turev": MappingProxyType({"calm": "neutral"}),
})


def _full_map(corpus: str) -> dict[str, str]:
    emotions = CORPUS_EMOTIONS[corpus]
    own = CORPUS_DEFAULTS.get(corpus, {})
    return dict(SYNONYMS) if emotions is None else {e: own.get(e, SYNONYMS[e]) for e in emotions}


#: Default full map per corpus: every corpus emotion → its unified name (no drops yet;
#: :func:`resolve_label_map` drops what is outside the chosen label set).
DEFAULT_LABEL_MAPS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {c: MappingProxyType(_full_map(c)) for c in CORPUS_EMOTIONS})


def check_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Validate a chosen label set (non-empty, unique, lower-case names).

    Raises:
        ValueError: the set is empty, has duplicates or non-string entries.
    """
    out = tuple(labels)
    if not out:
        raise ValueError("labels: the label set is empty; use e.g. "
                         f"{list(DEFAULT_LABELS)}")
    if any(not isinstance(x, str) or not x or x != x.strip().lower() for x in out):
        raise ValueError(f"labels: every label must be a non-empty lower-case string; got {list(out)}")
    dup = sorted({x for x in out if out.count(x) > 1})
    if dup:
        raise ValueError(f"labels: duplicated label(s) {dup} in {list(out)}")
    return out


def resolve_label_map(
    corpus: str,
    *,
    labels: Iterable[str] = DEFAULT_LABELS,
    overrides: Mapping[str, Mapping[str, str | None]] | None = None,
) -> dict[str, str | None]:
    """The label map a reader applies: defaults ← overrides, then restricted to ``labels``.

    Args:
        corpus: corpus name (a key of :data:`CORPUS_EMOTIONS`).
        labels: the chosen label set; a mapped label outside it becomes ``None`` (dropped).
        overrides: ``{corpus: {corpus_emotion: unified_label_or_None}}`` (as in params);
            only the entry for ``corpus`` is used.

    Returns:
        ``{corpus_emotion: label_or_None}``.

    Raises:
        ValueError: unknown corpus, or an override names an emotion the corpus does not have.

    Example:
        >>> resolve_label_map("emodb")["boredom"] is None
        True
        >>> resolve_label_map("ravdess", overrides={"ravdess": {"calm": "neutral"}})["calm"]
        'neutral'
        >>> resolve_label_map("turev")["calm"]
        'neutral'
    """
    if corpus not in CORPUS_EMOTIONS:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(CORPUS_EMOTIONS)}")
    labels = check_labels(labels)
    mapping: dict[str, str | None] = dict(DEFAULT_LABEL_MAPS[corpus])
    overrides = overrides or {}
    if not isinstance(overrides, Mapping):
        raise ValueError("label_map must be a mapping {corpus: {corpus_emotion: label or null}}; "
                         f"got {type(overrides).__name__}")
    unknown_corpora = sorted(set(overrides) - set(CORPUS_EMOTIONS))
    if unknown_corpora:
        raise ValueError(f"label_map: unknown corpus key(s) {unknown_corpora}; the map is "
                         f"{{corpus: {{corpus_emotion: label}}}} with corpus one of "
                         f"{', '.join(CORPUS_EMOTIONS)}")
    own = overrides.get(corpus) or {}
    if not isinstance(own, Mapping):
        raise ValueError(f"label_map[{corpus!r}] must be a mapping {{corpus_emotion: label or null}}; "
                         f"got {own!r}")
    known = CORPUS_EMOTIONS[corpus]
    for emotion, label in own.items():
        if known is not None and emotion not in known:
            raise ValueError(f"label_map[{corpus!r}]: {emotion!r} is not an emotion of {corpus}; "
                             f"its emotions are {', '.join(known)}")
        if label is not None and not isinstance(label, str):
            raise ValueError(f"label_map[{corpus!r}][{emotion!r}] must be a label name or null; "
                             f"got {label!r}")
        mapping[str(emotion)] = label
    return {e: (lab if lab in labels else None) for e, lab in mapping.items()}


def dropped_reason(emotion: str, label_map: Mapping[str, str | None], *, corpus: str) -> str | None:
    """Why an utterance with ``emotion`` gets no label (``None`` when it keeps one)."""
    if emotion not in label_map:
        return f"emotion {emotion!r} not in the label map of corpus {corpus!r}"
    if label_map[emotion] is None:
        return f"emotion {emotion!r} not in label set"
    return None


def resolve_open_label_map(
    names: Iterable[str],
    *,
    labels: Iterable[str] = DEFAULT_LABELS,
    overrides: Mapping[str, str | None] | None = None,
    source: str = "classes",
) -> dict[str, str | None]:
    """A label map for an open vocabulary (e.g. a text classifier's classes): each name's
    common meaning (:data:`SYNONYMS`, case-insensitive) ← ``overrides``, restricted to ``labels``
    like :func:`resolve_label_map`; names it does not know map to ``None``.

    Args:
        names: the vocabulary's names (e.g. ``joy``, ``ANGER``, ``LABEL_0``).
        labels: the chosen label set.
        overrides: ``{name: label_or_None}``.
        source: what the names are, for error messages.

    Returns:
        ``{name: label_or_None}``.

    Raises:
        ValueError: an override names a name outside ``names`` or maps to a non-string.

    Example:
        >>> resolve_open_label_map(["joy", "Anger", "surprise"])
        {'joy': 'happy', 'Anger': 'angry', 'surprise': None}
    """
    labels = check_labels(labels)
    names = [str(n) for n in names]
    mapping: dict[str, str | None] = {n: SYNONYMS.get(n.strip().lower()) for n in names}
    for name, label in (overrides or {}).items():
        if name not in mapping:
            raise ValueError(f"label_map: {name!r} is not one of the {source} ({', '.join(names)})")
        if label is not None and not isinstance(label, str):
            raise ValueError(f"label_map[{name!r}] must be a label name or null; got {label!r}")
        mapping[name] = label
    return {n: (lab if lab in labels else None) for n, lab in mapping.items()}
