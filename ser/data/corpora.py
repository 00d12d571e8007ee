"""Corpus readers → one utterance metadata table; the cohort recordings index.

Each public acted corpus encodes speaker, emotion, sentence and intensity in its
file names. One parser per corpus reads that convention; :func:`read_corpus`
walks a corpus folder and returns

- a metadata table, one row per audio file, with :data:`TABLE_COLUMNS`
  (``label`` is NA and ``dropped_reason`` says why when the emotion is outside the
  chosen label set), and
- an error table (``path, reason``) for every file that could not become a row:
  ``not audio`` (foreign file type such as ``.txt`` or ``.DS_Store``), ``name does not
  match convention …``, ``unreadable audio: …``, ``zero length``.

Nothing is dropped silently. Durations come from the file header
(``soundfile.info``), without decoding the audio.

Conventions (see :data:`CONVENTIONS`):

========  ======================================  ==============================================
corpus    example                                 fields
========  ======================================  ==============================================
emodb     ``03a01Fa.wav``                         speaker 03, text a01, emotion letter, version
emovo     ``f1/rab-f1-b1.wav``                    emotion code-speaker-sentence (in the speaker's
                                                  folder)
ravdess   ``03-01-06-01-02-01-12.wav``            modality(03 audio)-channel(01 speech, 02 song)-
                                                  emotion-intensity-statement-repetition-actor
cafe      ``Colère/Faible/01-C-1-1.wav``          actor-emotion letter-intensity-sentence
                                                  (neutral: ``01-N-1.wav`` or ``01-N-1-1.wav``)
cremad    ``1001_DFA_ANG_XX.wav``                 actor_sentence_emotion_intensity
tess      ``OAF_back_angry.wav``                  speaker_word_emotion
savee     ``DC_a01.wav`` or ``DC/a01.wav``        speaker_emotion code+number
turev     ``Angry/1157_kz_acik.wav``              actor_emotion code_word (in the emotion's folder)
folder    ``<root>/<emotion>/<speaker>_<x>.wav``  emotion from the folder, speaker from the prefix
demo      as ``folder``                           speakers f1..f4, m1..m4
========  ======================================  ==============================================

Gender (``female``/``male``/NA): EmoDB from its speaker table; RAVDESS and CaFE odd
actor = male, even = female; TESS female; SAVEE male; EMOVO from the speaker id
(``f1``..``f3`` female, ``m1``..``m3`` male); TurEV-DB NA (the corpus does not publish its
actors' sex); CREMA-D from ``VideoDemographics.csv`` (columns ``ActorID, Sex``) when found
in the corpus root or its parent, else NA; ``folder``/``demo`` from the first letter of the
speaker id (``f``/``m``), else NA.

Language (``language``, ISO 639-1, see :data:`LANGUAGES`): EmoDB ``de``, EMOVO ``it``,
TurEV-DB ``tr``, CaFE ``fr``, RAVDESS, CREMA-D, TESS and SAVEE ``en``; ``folder`` the
``language`` option of :func:`read_corpus`, else NA; ``demo`` (synthetic voices) NA.

Emotions are the corpus' own categories (:data:`ser.data.labels.CORPUS_EMOTIONS`): EMOVO's
Italian names (``rabbia``, ``gioia`` …), TurEV-DB's folder names in lower case (``angry``,
``calm``, ``happy``, ``sad``; its ``calm`` becomes ``neutral`` in the default label map).

Intensity (the corpus' own levels): RAVDESS ``normal``/``strong``; CaFE ``low``
(Faible)/``high`` (Fort), NA for neutral, which CaFE records without intensity levels;
CREMA-D ``low``/``medium``/``high`` and NA for ``XX`` (unspecified); NA elsewhere.

Speaker ids are kept as the corpus writes them (strings: EmoDB ``"03"``); read the
written tables back with :func:`load_utterances` / :func:`load_recordings`, which keep
them as strings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pandas as pd
import soundfile as sf
from tqdm import tqdm

from ser.data.labels import DEFAULT_LABELS, dropped_reason, resolve_label_map
from ser.data.schema import (
    LEVELS,
    MANIFEST_COLUMNS,
    OPTIONAL_MANIFEST_COLUMNS,
    PHASES,
    RECORDING_COLUMNS,
    TEXT_COLUMNS,
)

#: Corpora with a reader.
CORPORA: tuple[str, ...] = ("emodb", "emovo", "ravdess", "cafe", "cremad", "tess", "savee", "turev",
                             "folder", "demo")

#: Language of each corpus' speech (ISO 639-1); ``folder`` takes the ``language`` option of
#: :func:`read_corpus`, ``demo`` (synthetic voices) has none.
LANGUAGES: Mapping[str, str] = MappingProxyType({
    "emodb": "de", "emovo": "it", "ravdess": "en", "cafe": "fr", "cremad": "en", "tess": "en",
    "savee": "en", "turev": "tr",
})

#: File endings treated as audio (anything else is reported as ``not audio``).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".aif", ".aiff", ".ogg")

#: Columns of ``utterances.csv`` (architecture contract), ``split`` added by :mod:`ser.data.splits`.
UTTERANCE_COLUMNS: tuple[str, ...] = (
    "path", "corpus", "speaker", "gender", "emotion", "label", "text", "intensity",
    "duration_s", "sample_rate", "language",
)
#: Columns of the table :func:`read_corpus` returns.
TABLE_COLUMNS: tuple[str, ...] = UTTERANCE_COLUMNS + ("dropped_reason",)
#: Columns of an error table.
ERROR_COLUMNS: tuple[str, ...] = ("path", "reason")

#: Human-readable naming convention per corpus (quoted in error messages).
CONVENTIONS: Mapping[str, str] = {
    "emodb": "SSTTTEV.wav: speaker 03..16, text a01..b10, emotion letter W/L/E/A/F/T/N, "
             "version letter, e.g. 03a01Fa.wav",
    "emovo": "EEE-SS-TT.wav in the speaker's folder: emotion dis/gio/neu/pau/rab/sor/tri, speaker "
             "f1..f3/m1..m3, sentence b1..b3/l1..l4/n1..n5/d1..d2, e.g. f1/rab-f1-b1.wav",
    "ravdess": "MM-VV-EE-II-SS-RR-AA.wav with modality 03 (audio), channel 01/02, emotion 01..08, "
               "intensity 01/02, statement 01/02, repetition 01/02, actor 01..24, "
               "e.g. 03-01-06-01-02-01-12.wav",
    "cafe": "AA-E-I-S.wav: actor 01..12, emotion letter C/D/J/N/P/S/T, intensity 1/2, sentence "
            "1..6 (neutral may omit the intensity), e.g. 01-C-1-1.wav",
    "cremad": "AAAA_SSS_EEE_II.wav: actor 1001..1091, sentence code, emotion ANG/DIS/FEA/HAP/NEU/SAD, "
              "intensity LO/MD/HI/XX, e.g. 1001_DFA_ANG_XX.wav",
    "tess": "SPK_word_emotion.wav: speaker OAF/YAF, emotion angry/disgust/fear/happy/neutral/ps/sad, "
            "e.g. OAF_back_angry.wav",
    "savee": "SP_EN.wav or SP/EN.wav: speaker DC/JE/JK/KL, emotion a/d/f/h/n/sa/su + number, "
             "e.g. DC_a01.wav",
    "turev": "<Emotion>/AAAA_CC_word.wav: actor 1157/1234/1358/1984/6783/7895, emotion code "
             "kz/sk/mt/hl (Angry/Calm/Happy/Sad, as the folder), the spoken word, "
             "e.g. Angry/1157_kz_acik.wav",
    "folder": "<root>/<emotion>/<speaker>_<anything>.wav (or the speaker_pattern regex)",
    "demo": "<root>/<emotion>/<speaker>_<nnn>.wav, e.g. angry/f1_000.wav",
}

_EMODB_EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear",
                   "F": "happiness", "T": "sadness", "N": "neutral"}
_EMODB_GENDER = {"03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
                 "12": "male", "13": "female", "14": "female", "15": "male", "16": "female"}
_EMOVO_EMOTIONS = {"dis": "disgusto", "gio": "gioia", "neu": "neutrale", "pau": "paura",
                   "rab": "rabbia", "sor": "sorpresa", "tri": "tristezza"}
_EMOVO_SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")
_EMOVO_SENTENCES = ("b1", "b2", "b3", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5", "d1", "d2")
_RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                     "06": "fearful", "07": "disgust", "08": "surprised"}
_RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}
_CAFE_EMOTIONS = {"C": "anger", "D": "disgust", "J": "happiness", "N": "neutral", "P": "fear",
                  "S": "surprise", "T": "sadness"}
_CAFE_INTENSITY = {"1": "low", "2": "high"}
_CREMAD_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy",
                    "NEU": "neutral", "SAD": "sad"}
_CREMAD_INTENSITY = {"LO": "low", "MD": "medium", "HI": "high", "XX": None}
_CREMAD_DEMOGRAPHICS = "VideoDemographics.csv"
_TESS_EMOTIONS = {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
                  "neutral": "neutral", "ps": "pleasant_surprise", "sad": "sad"}
_SAVEE_EMOTIONS = {"a": "anger", "d": "disgust", "f": "fear", "h": "happiness", "n": "neutral",
                   "sa": "sadness", "su": "surprise"}
_SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
_TUREV_EMOTIONS = {"kz": "angry", "sk": "calm", "mt": "happy", "hl": "sad"}
_TUREV_SPEAKERS = ("1157", "1234", "1358", "1984", "6783", "7895")

_RE_EMODB = re.compile(r"^(\d{2})([ab]\d{2})([WLEAFTN])([a-z])$")
_RE_EMOVO = re.compile(r"^([a-z]{3})-([a-z]\d)-([a-z]\d)$")
_RE_RAVDESS = re.compile(r"^(\d{2})-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d{2})$")
_RE_CAFE = re.compile(r"^(\d{2})-([CDJNPST])-(?:([12])-)?(\d)$")
_RE_CREMAD = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_(LO|MD|HI|XX)$")
_RE_TESS = re.compile(r"^(OAF|YAF)_(.+)_(angry|disgust|fear|happy|neutral|ps|sad)$", re.IGNORECASE)
_RE_SAVEE = re.compile(r"^(?:(DC|JE|JK|KL)_)?(sa|su|a|d|f|h|n)(\d{2})$")
_RE_TUREV = re.compile(r"^(\d{4})_([a-z]{2})_([^_]+)$")
_RE_LANGUAGE = re.compile(r"^[a-z]{2}$")
_DEFAULT_SPEAKER_PATTERN = r"^(?P<speaker>[A-Za-z0-9]+)_"


class _Mismatch(Exception):
    """A file name that does not follow the corpus' convention (message: the detail)."""


@dataclass(frozen=True)
class _Parsed:
    speaker: str
    gender: str | None
    emotion: str
    text: str | None = None
    intensity: str | None = None


_Parser = Callable[[Path, Path], _Parsed]


def _gender_odd_male(actor: str) -> str:
    return "male" if int(actor) % 2 else "female"


def _gender_from_initial(speaker: str) -> str | None:
    return {"f": "female", "m": "male"}.get(speaker[:1].lower())


def _parse_emodb(path: Path, root: Path) -> _Parsed:
    m = _RE_EMODB.match(path.stem)
    if not m:
        raise _Mismatch("")
    speaker, text, letter, _version = m.groups()
    if speaker not in _EMODB_GENDER:
        raise _Mismatch(f"speaker {speaker!r} is not an EmoDB speaker ({', '.join(_EMODB_GENDER)})")
    return _Parsed(speaker, _EMODB_GENDER[speaker], _EMODB_EMOTIONS[letter], text)


def _parse_emovo(path: Path, root: Path) -> _Parsed:
    m = _RE_EMOVO.match(path.stem)
    if not m:
        raise _Mismatch("")
    code, speaker, sentence = m.groups()
    if code not in _EMOVO_EMOTIONS:
        raise _Mismatch(f"emotion code {code!r} is not an EMOVO emotion ({', '.join(_EMOVO_EMOTIONS)})")
    if speaker not in _EMOVO_SPEAKERS:
        raise _Mismatch(f"speaker {speaker!r} is not an EMOVO speaker ({', '.join(_EMOVO_SPEAKERS)})")
    if sentence not in _EMOVO_SENTENCES:
        raise _Mismatch(f"sentence {sentence!r} is not an EMOVO sentence ({', '.join(_EMOVO_SENTENCES)})")
    folder = path.parent.name
    if folder in _EMOVO_SPEAKERS and folder != speaker:
        raise _Mismatch(f"speaker {speaker!r} in the name but the file lies in speaker {folder!r}'s folder")
    return _Parsed(speaker, _gender_from_initial(speaker), _EMOVO_EMOTIONS[code], sentence)


def _make_ravdess(channels: tuple[str, ...]) -> _Parser:
    codes = {"speech": "01", "song": "02"}

    def parse(path: Path, root: Path) -> _Parsed:
        m = _RE_RAVDESS.match(path.stem)
        if not m:
            raise _Mismatch("")
        modality, channel, emotion, intensity, statement, _rep, actor = m.groups()
        if modality != "03":
            raise _Mismatch(f"modality {modality} is not audio-only (03)")
        if not 1 <= int(actor) <= 24:
            raise _Mismatch(f"actor {actor} is outside 01..24")
        if channel not in {codes[c] for c in channels}:
            raise _Mismatch(f"vocal channel {channel} is excluded by channels={list(channels)}")
        return _Parsed(actor, _gender_odd_male(actor), _RAVDESS_EMOTIONS[emotion], statement,
                       _RAVDESS_INTENSITY[intensity])

    return parse


def _parse_cafe(path: Path, root: Path) -> _Parsed:
    m = _RE_CAFE.match(path.stem)
    if not m:
        raise _Mismatch("")
    actor, letter, intensity, sentence = m.groups()
    if not 1 <= int(actor) <= 12:
        raise _Mismatch(f"actor {actor} is outside 01..12")
    if intensity is None and letter != "N":
        raise _Mismatch(f"emotion {letter} needs an intensity field (1 or 2)")
    emotion = _CAFE_EMOTIONS[letter]
    level = None if letter == "N" else _CAFE_INTENSITY[intensity]
    return _Parsed(actor, _gender_odd_male(actor), emotion, sentence, level)


def _read_cremad_demographics(path: Path) -> dict[str, str]:
    demo = pd.read_csv(path, dtype=str)
    missing = {"ActorID", "Sex"} - set(demo.columns)
    if missing:
        raise ValueError(f"{path}: CREMA-D demographics table lacks column(s) {sorted(missing)}; "
                         "expected the corpus' VideoDemographics.csv (ActorID, Age, Sex, ...)")
    sex = demo["Sex"].str.strip().str.lower().map({"male": "male", "female": "female"})
    return dict(zip(demo["ActorID"].str.strip(), sex, strict=True))


def _make_cremad(genders: Mapping[str, str]) -> _Parser:
    def parse(path: Path, root: Path) -> _Parsed:
        m = _RE_CREMAD.match(path.stem)
        if not m:
            raise _Mismatch("")
        actor, sentence, emotion, intensity = m.groups()
        gender = genders.get(actor)
        return _Parsed(actor, gender if isinstance(gender, str) else None,
                       _CREMAD_EMOTIONS[emotion], sentence, _CREMAD_INTENSITY[intensity])

    return parse


def _parse_tess(path: Path, root: Path) -> _Parsed:
    m = _RE_TESS.match(path.stem)
    if not m:
        raise _Mismatch("")
    speaker, word, emotion = m.groups()
    return _Parsed(speaker.upper(), "female", _TESS_EMOTIONS[emotion.lower()], word.lower())


def _parse_savee(path: Path, root: Path) -> _Parsed:
    m = _RE_SAVEE.match(path.stem)
    if not m:
        raise _Mismatch("")
    speaker, code, number = m.groups()
    if speaker is None:  # original layout: AudioData/<speaker>/<code><nn>.wav
        speaker = path.parent.name
        if speaker not in _SAVEE_SPEAKERS:
            raise _Mismatch(f"no speaker prefix and the folder {speaker!r} is not one of "
                            f"{', '.join(_SAVEE_SPEAKERS)}")
    return _Parsed(speaker, "male", _SAVEE_EMOTIONS[code], f"{code}{number}")


def _parse_turev(path: Path, root: Path) -> _Parsed:
    m = _RE_TUREV.match(path.stem)
    if not m:
        raise _Mismatch("")
    actor, code, word = m.groups()
    if actor not in _TUREV_SPEAKERS:
        raise _Mismatch(f"actor {actor!r} is not a TurEV-DB actor ({', '.join(_TUREV_SPEAKERS)})")
    if code not in _TUREV_EMOTIONS:
        raise _Mismatch(f"emotion code {code!r} is not a TurEV-DB emotion "
                        f"({', '.join(f'{c} {e}' for c, e in _TUREV_EMOTIONS.items())})")
    emotion = _TUREV_EMOTIONS[code]
    folder = path.parent.name.lower()
    if folder in _TUREV_EMOTIONS.values() and folder != emotion:
        raise _Mismatch(f"emotion code {code!r} ({emotion}) but the file lies in the folder "
                        f"{path.parent.name!r}")
    return _Parsed(actor, None, emotion, word)


def _make_folder(pattern: str) -> _Parser:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"speaker_pattern {pattern!r} is not a valid regular expression: {e}") from e
    if "speaker" not in rx.groupindex:
        raise ValueError(f"speaker_pattern {pattern!r} needs a named group (?P<speaker>...); "
                         f"the default is {_DEFAULT_SPEAKER_PATTERN!r}")

    def parse(path: Path, root: Path) -> _Parsed:
        rel = path.relative_to(root)
        if len(rel.parts) != 2:
            raise _Mismatch("the file must lie directly in an emotion folder under the root")
        m = rx.search(path.stem)
        if not m or not m.group("speaker"):
            raise _Mismatch(f"no speaker id found by the pattern {pattern!r}")
        speaker = m.group("speaker")
        text = m.group("text") if "text" in rx.groupindex else None
        return _Parsed(speaker, _gender_from_initial(speaker), rel.parts[0].strip().lower(), text)

    return parse


def _reason_unreadable(e: Exception) -> str:
    detail = getattr(e, "error_string", None) or type(e).__name__
    return f"unreadable audio: {detail}"


def audio_info(path: str | os.PathLike[str]) -> tuple[float, int]:
    """Duration and sample rate from the file header, without decoding.

    Args:
        path: an audio file.

    Returns:
        ``(duration_s, sample_rate)``; duration in seconds, rate in Hz.

    Raises:
        ValueError: the file cannot be opened as audio (message without the path,
            so it can be shown in a report), or holds zero samples.
    """
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as e:
        raise ValueError(_reason_unreadable(e)) from e
    if info.frames <= 0 or info.samplerate <= 0:
        raise ValueError("zero length")
    return info.frames / info.samplerate, int(info.samplerate)


def check_corpus_root(name: str, root: str | os.PathLike[str]) -> Path:
    """Return ``root`` as an absolute folder, or raise naming it and the fix.

    Raises:
        FileNotFoundError: the folder does not exist (for ``demo``: run ``ser demo-data``).
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        hint = ("run `ser demo-data` first to generate the demo corpus" if name == "demo"
                else f"set corpus_root to the folder holding the {name} audio files")
        raise FileNotFoundError(f"corpus folder {root} does not exist ({name}): {hint}")
    return root


def _parser_for(name: str, root: Path, *, speaker_pattern: str | None,
                channels: tuple[str, ...], demographics: Path | None) -> _Parser:
    if speaker_pattern is not None and name not in ("folder", "demo"):
        raise ValueError(f"speaker_pattern applies to the folder/demo layouts only, not {name!r}")
    if name in ("folder", "demo"):
        return _make_folder(speaker_pattern or _DEFAULT_SPEAKER_PATTERN)
    if name == "ravdess":
        bad = sorted(set(channels) - {"speech", "song"})
        if bad or not channels:
            raise ValueError(f"channels must be a non-empty subset of ('speech', 'song'); got {channels}")
        return _make_ravdess(channels)
    if name == "cremad":
        table = demographics or next((p / _CREMAD_DEMOGRAPHICS for p in (root, root.parent)
                                      if (p / _CREMAD_DEMOGRAPHICS).is_file()), None)
        if demographics is not None and not Path(demographics).is_file():
            raise FileNotFoundError(f"CREMA-D demographics table {demographics} does not exist")
        return _make_cremad(_read_cremad_demographics(Path(table)) if table else {})
    return {"emodb": _parse_emodb, "emovo": _parse_emovo, "cafe": _parse_cafe, "tess": _parse_tess,
            "savee": _parse_savee, "turev": _parse_turev}[name]


def _language_for(name: str, language: str | None) -> str | None:
    if language is not None and not (isinstance(language, str) and _RE_LANGUAGE.match(language)):
        raise ValueError(f"language must be a two-letter lower-case ISO 639-1 code such as 'it'; "
                         f"got {language!r}")
    own = LANGUAGES.get(name)
    if own is not None and language is not None and language != own:
        raise ValueError(f"language={language!r} contradicts corpus {name!r}, whose speech is {own!r}; "
                         "the language option is for the folder/demo layouts")
    return own or language


def read_corpus(
    name: str,
    root: str | os.PathLike[str],
    *,
    label_map: Mapping[str, str | None] | None = None,
    labels: Iterable[str] = DEFAULT_LABELS,
    strict: bool = False,
    speaker_pattern: str | None = None,
    channels: tuple[str, ...] = ("speech", "song"),
    demographics: str | os.PathLike[str] | None = None,
    language: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every file under ``root`` by the corpus' naming convention.

    Args:
        name: one of :data:`CORPORA`.
        root: corpus folder (searched recursively, except ``folder``/``demo``, whose
            files must lie in ``<root>/<emotion>/``).
        label_map: ``{corpus_emotion: unified_label_or_None}`` for this corpus
            (see :func:`ser.data.labels.resolve_label_map`); default: the corpus' default
            map restricted to ``labels``.
        labels: label set used only when ``label_map`` is not given.
        strict: raise on the first problem file instead of collecting errors.
        speaker_pattern: ``folder``/``demo`` only: regex searched in the file stem with a
            named group ``speaker`` (optionally ``text``); default ``^(?P<speaker>[A-Za-z0-9]+)_``.
        channels: ``ravdess`` only: vocal channels to keep (``speech``, ``song``); files of
            other channels go to the errors.
        demographics: ``cremad`` only: the ``VideoDemographics.csv`` giving each actor's
            sex (default: looked up in ``root`` and its parent; absent → gender NA).
        language: ISO 639-1 code written into ``language`` for the ``folder``/``demo``
            layouts (default NA); the other corpora have their own (:data:`LANGUAGES`),
            which this may only repeat.

    Returns:
        ``(table, errors)``: ``table`` has :data:`TABLE_COLUMNS`, one row per audio file
        sorted by path (``label`` NA and ``dropped_reason`` set for dropped emotions);
        ``errors`` has :data:`ERROR_COLUMNS`, one row per file that did not become a row.

    Raises:
        ValueError: unknown corpus or option; with ``strict``, the first bad file
            or an emotion missing from the label map.
        FileNotFoundError: ``root`` is not a folder.

    Example:
        >>> table, errors = read_corpus("emodb", "../shared/data/emodb/wav")  # doctest: +SKIP
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    root = check_corpus_root(name, root)
    language = _language_for(name, language)
    label_map = dict(label_map) if label_map is not None else resolve_label_map(name, labels=labels)
    parse = _parser_for(name, root, speaker_pattern=speaker_pattern, channels=tuple(channels),
                        demographics=Path(demographics) if demographics else None)

    rows: list[dict[str, object]] = []
    errors: list[dict[str, str]] = []

    def fail(path: Path, reason: str) -> None:
        if strict:
            raise ValueError(f"{path}: {reason}")
        errors.append({"path": str(path), "reason": reason})

    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in tqdm(files, desc=f"reading {name}", unit="file", leave=False, disable=None):
        if name == "cremad" and path.name == _CREMAD_DEMOGRAPHICS:
            continue
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            fail(path, "not audio")
            continue
        try:
            parsed = parse(path, root)
        except _Mismatch as e:
            detail = f" ({e})" if str(e) else ""
            fail(path, f"name does not match convention{detail}: expected {CONVENTIONS[name]}")
            continue
        try:
            duration_s, sample_rate = audio_info(path)
        except ValueError as e:
            fail(path, str(e))
            continue
        reason = dropped_reason(parsed.emotion, label_map, corpus=name)
        if strict and parsed.emotion not in label_map:
            raise ValueError(f"{path}: {reason}; add it to label_map[{name!r}] (a label or null)")
        rows.append({
            "path": str(path), "corpus": name, "speaker": parsed.speaker, "gender": parsed.gender,
            "emotion": parsed.emotion, "label": None if reason else label_map[parsed.emotion],
            "text": parsed.text, "intensity": parsed.intensity, "duration_s": duration_s,
            "sample_rate": sample_rate, "language": language, "dropped_reason": reason,
        })
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for c in TABLE_COLUMNS:  # text columns stay object (None for NA) even when all missing
        if c not in ("duration_s", "sample_rate"):
            table[c] = table[c].astype(object).where(table[c].notna(), None)
    table["duration_s"] = table["duration_s"].astype(float)
    table["sample_rate"] = table["sample_rate"].astype("int64")
    return table, pd.DataFrame(errors, columns=list(ERROR_COLUMNS))


def emotion_summary(table: pd.DataFrame) -> pd.DataFrame:
    """What became of each corpus emotion: its label (or why it was dropped) and its count.

    Returns:
        Columns ``corpus, emotion, label, n, dropped_reason``, one row per corpus emotion
        present in ``table`` (``label`` NA when dropped), largest first.
    """
    cols = ["corpus", "emotion", "label", "dropped_reason"]
    if table.empty:
        return pd.DataFrame(columns=["corpus", "emotion", "label", "n", "dropped_reason"])
    out = table.groupby(cols, dropna=False).size().rename("n").reset_index()
    out = out.sort_values(["corpus", "n", "emotion"], ascending=[True, False, True])
    for c in ("label", "dropped_reason"):  # an all-NA key comes back as float NaN
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out[["corpus", "emotion", "label", "n", "dropped_reason"]].reset_index(drop=True)


def excluded_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Counts of dropped utterances per corpus, emotion and reason.

    Returns:
        Columns ``corpus, emotion, dropped_reason, n`` (empty when nothing was dropped).
    """
    dropped = table[table["label"].isna()]
    cols = ["corpus", "emotion", "dropped_reason"]
    if dropped.empty:
        return pd.DataFrame(columns=cols + ["n"])
    return dropped.groupby(cols, dropna=False).size().rename("n").reset_index()


def index_recordings(
    manifest_csv: str | os.PathLike[str],
    *,
    levels_order: tuple[str, ...] = LEVELS,
    phases: tuple[str, ...] = PHASES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a recordings manifest, check it and add each file's duration.

    Args:
        manifest_csv: CSV with :data:`MANIFEST_COLUMNS`; ``path`` absolute or relative to
            the manifest's folder.
        levels_order: allowed training levels, in their natural order (sets the row order).
        phases: allowed phases, in order.

    Returns:
        ``(recordings, errors)``: ``recordings`` has :data:`RECORDING_COLUMNS` (absolute
        paths, sorted by level order, caregiver, phase, session) and the manifest's
        :data:`OPTIONAL_MANIFEST_COLUMNS` (``enrolment_path`` made absolute, ``speakers`` a
        number or empty); ``errors`` has :data:`ERROR_COLUMNS` for rows left out: unknown
        level/phase, empty fields, duplicated recording ids, a caregiver listed under two
        levels, missing, unreadable or empty audio, a ``speakers`` value that is not a whole
        number >= 1. A missing enrolment clip is reported by the diarization (stage 04).

    Raises:
        FileNotFoundError: the manifest does not exist.
        ValueError: the manifest lacks a required column (named) or has no rows.
    """
    manifest_csv = Path(manifest_csv).expanduser().resolve()
    if not manifest_csv.is_file():
        raise FileNotFoundError(f"recordings manifest {manifest_csv} does not exist; run "
                                "`ser demo-data` for the demo cohort, or set manifest to your CSV "
                                f"with columns {', '.join(MANIFEST_COLUMNS)}")
    man = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in man.columns]
    if missing:
        raise ValueError(f"{manifest_csv}: missing column(s) {', '.join(missing)}; a recordings "
                         f"manifest needs {', '.join(MANIFEST_COLUMNS)}")
    if man.empty:
        raise ValueError(f"{manifest_csv}: the manifest has no rows")
    optional = [c for c in OPTIONAL_MANIFEST_COLUMNS if c in man.columns]
    man = man[list(MANIFEST_COLUMNS) + optional].apply(lambda s: s.str.strip())

    errors: list[dict[str, str]] = []
    rows: list[dict[str, object]] = []
    dup_ids = set(man.loc[man["recording"].duplicated(), "recording"])
    levels_per_caregiver = man.groupby("caregiver")["level"].agg(lambda s: sorted(set(s)))
    for i, r in enumerate(man.to_dict("records"), start=2):  # line 1 is the header
        where = f"line {i}, recording {r['recording']!r}"
        path = Path(r["path"]).expanduser()
        path = path if path.is_absolute() else (manifest_csv.parent / path).resolve()
        empty = [c for c in MANIFEST_COLUMNS if not r[c]]
        problem = None
        if empty:
            problem = f"empty {', '.join(empty)}"
        elif r["recording"] in dup_ids:
            problem = "recording id is duplicated in the manifest"
        elif r["level"] not in levels_order:
            problem = f"unknown level {r['level']!r} (expected one of {', '.join(levels_order)})"
        elif r["phase"] not in phases:
            problem = f"unknown phase {r['phase']!r} (expected one of {', '.join(phases)})"
        elif len(levels_per_caregiver[r["caregiver"]]) > 1:
            problem = (f"caregiver {r['caregiver']!r} is listed under several levels "
                       f"({', '.join(levels_per_caregiver[r['caregiver']])})")
        elif not path.is_file():
            problem = "audio file not found"
        elif r.get("speakers") and not (r["speakers"].isdigit() and int(r["speakers"]) >= 1):
            problem = f"speakers must be a whole number >= 1 (or empty); got {r['speakers']!r}"
        if problem is None:
            try:
                duration_s, sample_rate = audio_info(path)
            except ValueError as e:
                problem = str(e)
        if problem is not None:
            errors.append({"path": str(path if r["path"] else manifest_csv),
                           "reason": f"{where}: {problem}"})
            continue
        extra = {}
        if r.get("enrolment_path"):
            clip = Path(r["enrolment_path"]).expanduser()
            extra["enrolment_path"] = str(clip if clip.is_absolute() else (manifest_csv.parent / clip).resolve())
        if r.get("speakers"):
            extra["speakers"] = int(r["speakers"])
        rows.append({**r, "path": str(path), "duration_s": duration_s, "sample_rate": sample_rate,
                     **extra})

    rec = pd.DataFrame(rows, columns=list(RECORDING_COLUMNS) + optional)
    if "speakers" in rec:
        rec["speakers"] = pd.to_numeric(rec["speakers"], errors="coerce").astype("Int64")  # "" -> <NA>
    if not rec.empty:
        rec = rec.assign(
            _l=rec["level"].map({v: k for k, v in enumerate(levels_order)}),
            _p=rec["phase"].map({v: k for k, v in enumerate(phases)}),
        ).sort_values(["_l", "caregiver", "_p", "session"]).drop(columns=["_l", "_p"])
    rec["duration_s"] = rec["duration_s"].astype(float)
    rec["sample_rate"] = rec["sample_rate"].astype("int64")
    return rec.reset_index(drop=True), pd.DataFrame(errors, columns=list(ERROR_COLUMNS))


def cohort_summary(
    recordings: pd.DataFrame,
    *,
    levels_order: tuple[str, ...] = LEVELS,
    phases: tuple[str, ...] = PHASES,
) -> pd.DataFrame:
    """Caregivers, recordings and audio minutes per training level (all levels, in order).

    Args:
        recordings: table with ``caregiver, level, phase, duration_s`` (as from
            :func:`index_recordings`).
        levels_order: levels to report, in their natural order (absent ones get 0).
        phases: phases to report minutes for.

    Returns:
        Index ``level``; columns ``caregivers, recordings`` and ``<phase> (min)`` per phase.
    """
    levels = pd.Categorical(recordings["level"], categories=list(levels_order), ordered=True)
    by_level = recordings.groupby(levels, observed=False)
    out = pd.DataFrame({"caregivers": by_level["caregiver"].nunique(), "recordings": by_level.size()})
    for ph in phases:
        minutes = recordings["duration_s"].astype(float).where(recordings["phase"] == ph, 0.0) / 60
        out[f"{ph} (min)"] = minutes.groupby(levels, observed=False).sum()
    return out.rename_axis("level")


def _load_table(path: str | os.PathLike[str], columns: tuple[str, ...], producer: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; it is written by stage {producer} "
                                f"(run `ser run --to {producer}`)")
    present = pd.read_csv(path, nrows=0).columns
    df = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS if c in present})
    for c in TEXT_COLUMNS:
        if c in df.columns:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; rerun stage {producer}")
    return df


def load_utterances(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``utterances.csv`` keeping ids as strings (EmoDB speaker ``"03"`` stays ``"03"``).

    Raises:
        FileNotFoundError: the file is missing (names stage 01_preprocess).
        ValueError: a contract column is missing.
    """
    return _load_table(path, UTTERANCE_COLUMNS + ("split",), "01_preprocess")


def load_recordings(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``recordings.csv`` keeping ids (caregiver, session …) as strings.

    Raises:
        FileNotFoundError: the file is missing (names stage 01_preprocess).
        ValueError: a contract column is missing.
    """
    return _load_table(path, RECORDING_COLUMNS, "01_preprocess")
