"""Keep recordings' identifiers out of the rendered report: scrub, then scan.

The report shows caregivers and recordings by their manifest ids (``p001``,
``p001_care``) as they are; :func:`check_ids` refuses a report whose ids do not have the
form the study declared for its pseudonymous ids (``id_pattern`` of stage 01). Recording
paths, audio file names and the data folder's location must never reach a rendered page.
Two steps guard that:

- :class:`Scrubber` rewrites text before rendering (notebook sources, printed output,
  tracebacks, generated tables): recording paths and file names become
  ``[file withheld]``, data locations ``[path withheld]``;
- :func:`scan_for_identifiers` searches every rendered file for each manifest ``path``
  and file name (and for audio files inside the site); :func:`check_site` deletes each
  file with a hit and raises :class:`PrivacyError`, so a leak stops the release instead
  of being published.

Transcripts (``ser transcribe``, kept under ``data/transcripts/``) identify people too:
:func:`scan_for_transcripts` finds any run of :data:`TRANSCRIPT_NGRAM` consecutive words of a
transcript in the text of a rendered page (tags removed, case and punctuation ignored), and
:func:`check_site` deletes such pages like the others. Counts, rates and probabilities of
the words may be shown.

Stems alone (``p001_care``) are neither scrubbed nor searched: they may equal the
pseudonymous recording ids the report is allowed to show.
"""

from __future__ import annotations

import copy
import html
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd

#: File extensions treated as audio: scrubbed from text, reported when found in a site.
AUDIO_EXTENSIONS: tuple[str, ...] = (
    "wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "wma", "aif",
    "aiff", "webm", "mp4", "m4v", "mov", "amr", "3gp",
)
_AUDIO_NAME = re.compile(
    r"[^\s\"'<>()\[\]{}|,;=`]*\.(?:" + "|".join(AUDIO_EXTENSIONS) + r")\b", re.IGNORECASE)
_DATA_PATH = re.compile(r"(?<![\w./\\-])data[/\\][^\s\"'<>()\[\]{},;|`]*")
_TEXT_SUFFIXES = {".html", ".htm", ".json", ".xml", ".txt", ".md", ".ipynb", ".csv", ".js"}
_WITHHELD_FILE = "[file withheld]"
_WITHHELD_PATH = "[path withheld]"


class PrivacyError(RuntimeError):
    """A rendered page still contains a recording's path or file name, or an id of the
    manifest does not match the study's id pattern."""


#: Pattern of the study's pseudonymous caregiver ids (``p001``); a study sets its own as
#: ``id_pattern`` of stage 01 (``params/01_preprocess.yaml``).
DEFAULT_ID_PATTERN: str = r"p\d{3}"


def unexpected_ids(recordings: pd.DataFrame, *, id_pattern: str) -> list[str]:
    """Ids of a recordings table that do not have the form the study declared pseudonymous.

    A ``caregiver`` id must match ``id_pattern`` in full; a ``recording`` id must be such
    an id, optionally followed by ``_`` or ``-`` and letters/digits (``p001_care``). The
    report shows these ids as they are, so an id that does not match (``Anna_M``) may be a
    real name. Whether ids that match are pseudonymous cannot be checked by software.

    Args:
        recordings: ``recordings.csv`` (or the manifest); missing id columns are skipped.
        id_pattern: regular expression of one caregiver id.

    Returns:
        ``"<column> '<id>'"`` per id that does not match, sorted; ``[]`` when all match.

    Raises:
        ValueError: ``id_pattern`` is not a valid regular expression.
    """
    try:
        caregiver = re.compile(f"(?:{id_pattern})")
    except re.error as err:
        raise ValueError(f"id_pattern {id_pattern!r} is not a regular expression: {err}") from err
    recording = re.compile(f"(?:{id_pattern})(?:[_-][A-Za-z0-9]+)*")
    bad: set[str] = set()
    for column, rx in (("caregiver", caregiver), ("recording", recording)):
        if column not in recordings.columns:
            continue
        for value in recordings[column].dropna().astype(str).unique():
            if not rx.fullmatch(value.strip()):
                bad.add(f"{column} {value!r}")
    return sorted(bad)


def check_ids(recordings: pd.DataFrame, *, id_pattern: str) -> None:
    """Refuse to release a report whose ids do not match ``id_pattern``.

    Raises:
        PrivacyError: some ids do not match (at most 10 named).
        ValueError: ``id_pattern`` is not a valid regular expression.
    """
    bad = unexpected_ids(recordings, id_pattern=id_pattern)
    if bad:
        raise PrivacyError(
            f"recordings.csv has ids that do not match id_pattern {id_pattern!r} "
            f"(params/01_preprocess.yaml): {', '.join(bad[:10])}{' …' if len(bad) > 10 else ''}. "
            "The report shows ids as they are: give pseudonymous ids in the manifest, or set "
            "id_pattern to the form your pseudonymous ids have")


def privacy_markdown(id_pattern: str, *, checked_ids: bool) -> str:
    """What the release checks of this report verified, for the reader."""
    ids = (f"Caregivers and recordings appear only by their study ids. Before this report "
           f"was released, every id was checked against the form the study declared for its "
           f"pseudonymous ids (`{id_pattern}`); a report with any other id is not "
           "released. Software can check the form of an id, not that it is pseudonymous: "
           "that the ids reveal no one is the study's responsibility." if checked_ids else
           "This run has no cohort recordings, so no participant id appears.")
    return (f"{ids} No page contains audio, the location of a recording or its original "
            "file name: paths and audio file names are removed from the notebooks before "
            "rendering, and every rendered page is scanned for each recording's path and file "
            "name and for the data folder's location; a page with a hit is deleted.\n")


class Scrubber:
    """Replaces recording paths, file names and data locations in text.

    Calling the scrubber on a string applies, in this order: ``renames`` (longest
    first), ``roots`` → ``[path withheld]``, any ``data/…`` path → ``[path withheld]``,
    ``literals`` → ``[file withheld]``, then any remaining audio file name (``*.wav``,
    ``*.flac``, …; wildcard patterns such as ``*.wav`` are kept) → ``[file withheld]``.
    Strings of three characters or fewer are never treated as roots or literals.

    Args:
        literals: identifiers to withhold, e.g. :func:`manifest_identifiers`.
        roots: folder locations to withhold (the data folder, the repository root).
        renames: exact replacements applied first, e.g. ``{"/abs/results": "results"}``.
    """

    def __init__(self, literals: Iterable[str], *, roots: Iterable[str] = (),
                 renames: Mapping[str, str] | None = None) -> None:
        self._renames = sorted((renames or {}).items(), key=lambda kv: len(kv[0]), reverse=True)
        self._roots = sorted({r for r in roots if r and len(r) > 3}, key=len, reverse=True)
        self._literals = sorted({s for s in literals if s and len(s) > 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for old, new in self._renames:
            text = text.replace(old, new)
        for root in self._roots:
            text = text.replace(root, _WITHHELD_PATH)
        text = _DATA_PATH.sub(_WITHHELD_PATH, text)
        for lit in self._literals:
            text = text.replace(lit, _WITHHELD_FILE)
        return _AUDIO_NAME.sub(_keep_wildcards, text)

    def notebook(self, nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
        """A scrubbed deep copy: sources, text outputs, tracebacks; images untouched."""
        nb = copy.deepcopy(nb)
        meta = nb.get("metadata", {})
        pm = meta.get("papermill")
        if isinstance(pm, dict):  # input/output paths; keep only the parameters
            meta["papermill"] = {"parameters": self.value(pm.get("parameters", {}))}
        for cell in nb.cells:
            cell.source = self(cell.source)
            cell.get("metadata", {}).pop("papermill", None)
            for out in cell.get("outputs", []):
                if "text" in out:
                    out["text"] = self(_joined(out["text"]))
                if "traceback" in out:
                    out["traceback"] = [self(line) for line in out["traceback"]]
                if "evalue" in out:
                    out["evalue"] = self(out["evalue"])
                for mime, payload in list(out.get("data", {}).items()):
                    if mime.startswith("image/") and mime != "image/svg+xml":
                        continue
                    out["data"][mime] = self.value(_joined(payload) if isinstance(payload, list)
                                                   else payload)
        return nb

    def value(self, obj: Any) -> Any:
        """Scrub every string inside a JSON-like value."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, Mapping):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj


def _keep_wildcards(m: re.Match[str]) -> str:
    stem = m.group(0).rsplit(".", 1)[0]
    return m.group(0) if not re.search(r"[A-Za-z0-9]", stem) else _WITHHELD_FILE


def _joined(text: Any) -> str:
    return "".join(text) if isinstance(text, list) else str(text)


def manifest_identifiers(manifest: pd.DataFrame) -> list[str]:
    """Paths (as written and with ``/``) and file names with extension of a manifest."""
    if "path" not in manifest.columns:
        raise ValueError("manifest has no 'path' column: pass the recordings manifest "
                         "(manifest.csv or results/tables/recordings.csv)")
    out: set[str] = set()
    for raw in manifest["path"].dropna().astype(str):
        raw = raw.strip()
        if not raw:
            continue
        posix = raw.replace("\\", "/")
        name = posix.rsplit("/", 1)[-1]
        out.update({raw, posix, name})
    return sorted(out)


def scan_for_identifiers(site_dir: str | os.PathLike[str], manifest: pd.DataFrame, *,
                         extra: Iterable[str] = ()) -> list[str]:
    """Find recording paths and file names in a rendered site.

    Every HTML (and JSON/XML/text) file under ``site_dir`` is searched for each
    manifest ``path`` (as written, and with ``/`` separators) and each file name with
    its extension (``p001_care.wav``). Stems alone are not searched: they may equal
    the pseudonymous recording ids the report is allowed to show. Audio files inside
    the site are reported too.

    Args:
        site_dir: the rendered site folder.
        manifest: a table with a ``path`` column (``manifest.csv`` or
            ``recordings.csv``).
        extra: more strings that must not appear (e.g. the data folder's location).

    Returns:
        ``"<file relative to site_dir>: <identifier>"`` per hit, sorted; ``[]`` when clean.

    Raises:
        FileNotFoundError: ``site_dir`` does not exist.
        ValueError: the manifest has no ``path`` column.
    """
    site = Path(site_dir)
    if not site.is_dir():
        raise FileNotFoundError(f"site folder {site} does not exist: render the report first")
    needles = [s for s in {*manifest_identifiers(manifest), *extra} if s]
    needles += [html.escape(s) for s in needles if html.escape(s) != s]
    hits: set[str] = set()
    for f in sorted(p for p in site.rglob("*") if p.is_file()):
        rel = f.relative_to(site).as_posix()
        if f.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS:
            hits.add(f"{rel}: audio file in the site")
            continue
        if f.suffix.lower() not in _TEXT_SUFFIXES or "site_libs" in f.parts:
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        for needle in needles:
            if needle in text:
                hits.add(f"{rel}: {html.unescape(needle)}")
    return sorted(hits)


#: Shortest run of transcript words that a rendered page must not contain.
TRANSCRIPT_NGRAM: int = 3
#: Folder of ``data/`` holding the transcripts (``ser transcribe -o data/transcripts/…csv``).
TRANSCRIPTS_SUBDIR: str = "transcripts"
_TAG = re.compile(r"<[^>]*>")
_WORD = re.compile(r"\w+(?:'\w+)*")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(html.unescape(_TAG.sub(" ", text)).lower())


def transcript_ngrams(transcripts: pd.DataFrame, *, n: int = TRANSCRIPT_NGRAM) -> set[tuple[str, ...]]:
    """Every run of ``n`` consecutive words of each recording's transcript (lower case,
    punctuation dropped), in time order.

    Args:
        transcripts: ``recording, start_s, word`` per word (``ser transcribe``'s table).
        n: words per run.

    Raises:
        ValueError: the table lacks ``word``.
    """
    if "word" not in transcripts.columns:
        raise ValueError(f"transcript table has no 'word' column; it has {list(transcripts.columns)}")
    df = transcripts.sort_values([c for c in ("recording", "start_s") if c in transcripts.columns],
                                 kind="stable")
    groups = df.groupby("recording", sort=False)["word"] if "recording" in df.columns else [(None, df["word"])]
    out: set[tuple[str, ...]] = set()
    for _, words in groups:
        toks = _tokens(" ".join(words.astype(str)))
        out.update(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    return out


def load_transcripts(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """Every transcript table (a CSV with a ``word`` column) under ``folder``; empty when
    there is none or the folder does not exist."""
    tables = []
    for f in sorted(Path(folder).rglob("*.csv")) if Path(folder).is_dir() else []:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        if "word" in df.columns:
            tables.append(df.assign(recording=f"{f}:" + df.get("recording", pd.Series("", index=df.index)),
                                    start_s=pd.to_numeric(df.get("start_s", 0), errors="coerce")))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["recording", "start_s", "word"])


def scan_for_transcripts(site_dir: str | os.PathLike[str], transcripts: pd.DataFrame, *,
                         n: int = TRANSCRIPT_NGRAM) -> list[str]:
    """Find runs of ``n`` transcript words in the text of a rendered site's files.

    Returns:
        ``"<file>: a run of <n> words of a transcript"`` per file with a hit (the words
        themselves are not repeated), sorted; ``[]`` when clean.
    """
    grams = transcript_ngrams(transcripts, n=n)
    if not grams:
        return []
    hits = []
    for f in sorted(p for p in Path(site_dir).rglob("*") if p.is_file()):
        if f.suffix.lower() not in _TEXT_SUFFIXES or "site_libs" in f.parts:
            continue
        toks = _tokens(f.read_text(encoding="utf-8", errors="replace"))
        if any(tuple(toks[i:i + n]) in grams for i in range(len(toks) - n + 1)):
            hits.append(f"{f.relative_to(site_dir).as_posix()}: a run of {n} words of a transcript")
    return hits


def check_site(site_dir: str | os.PathLike[str], manifest: pd.DataFrame, *,
               extra: Iterable[str] = (), transcripts: pd.DataFrame | None = None) -> None:
    """Scan a rendered site and delete every file that names a recording.

    Args:
        site_dir: the rendered site folder.
        manifest: a table with a ``path`` column (see :func:`scan_for_identifiers`).
        extra: more strings that must not appear (e.g. the data folder's location).
        transcripts: transcript words (:func:`load_transcripts`) no run of
            :data:`TRANSCRIPT_NGRAM` of which may appear (:func:`scan_for_transcripts`).

    Raises:
        PrivacyError: a file had a hit; each such file was deleted first, and the
            message lists the hits (at most 20).
        FileNotFoundError: ``site_dir`` does not exist.
        ValueError: the manifest has no ``path`` column.
    """
    site = Path(site_dir)
    hits = scan_for_identifiers(site, manifest, extra=extra)
    if transcripts is not None and len(transcripts):
        hits = sorted({*hits, *scan_for_transcripts(site, transcripts)})
    if not hits:
        return
    for f in {h.split(": ", 1)[0] for h in hits}:
        (site / f).unlink(missing_ok=True)
    raise PrivacyError("rendered pages named recordings or quoted transcripts and were deleted: "
                       + "; ".join(hits[:20]) + ("; …" if len(hits) > 20 else ""))
