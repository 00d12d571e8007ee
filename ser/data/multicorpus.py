"""Several acted corpora → one utterance metadata table; missing corpora reported by name.

Stage 01 trains on one corpus (:func:`ser.data.corpora.read_corpus`) or on a list of
them (``corpora`` in ``params/01_preprocess.yaml``). :func:`read_corpora` reads each
listed corpus with its own reader and default label map (plus the ``label_map``
overrides), and stacks the tables. A corpus whose folder does not exist, or that holds
no readable audio, is **skipped and reported** (``skipped``: corpus, root, reason),
never silently; when every corpus is skipped the call fails naming each one.

Speaker ids of a merged table are ``<corpus>/<speaker>`` (``emodb/03``, ``emovo/f1``),
so two corpora's speaker ``03`` stay two people in every later step (splits, per-speaker
pitch normalisation, the bundle's ``split``); :func:`ser.data.splits.speaker_key` keys
them the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ser.core import paths
from ser.data.corpora import CORPORA, ERROR_COLUMNS, TABLE_COLUMNS, read_corpus
from ser.data.labels import DEFAULT_LABELS, resolve_label_map

#: Columns of the ``skipped`` table of :func:`read_corpora`.
SKIPPED_COLUMNS: tuple[str, ...] = ("corpus", "root", "reason")
#: Columns of the ``errors`` table of :func:`read_corpora` (the corpus of each file first).
MULTI_ERROR_COLUMNS: tuple[str, ...] = ("corpus", *ERROR_COLUMNS)

_SPEC_KEYS = {"corpus", "root"}


@dataclass(frozen=True)
class CorpusSpec:
    """One corpus to read: its reader name and its folder (absolute)."""

    name: str
    root: Path


def corpus_specs(
    corpora: Sequence[str | Mapping[str, str]], *, corpora_root: str | os.PathLike[str]
) -> list[CorpusSpec]:
    """Check a ``corpora`` parameter and give each entry its folder.

    Args:
        corpora: entries ``"emodb"`` or ``{"corpus": "emodb", "root": "path"}``; a
            relative ``root`` is taken from the project root (:func:`ser.core.paths.resolve`).
        corpora_root: folder holding ``<name>/`` of every entry without ``root``
            (relative: from the project root); may be empty when every entry has a root.

    Returns:
        One :class:`CorpusSpec` per entry, in the given order.

    Raises:
        ValueError: an entry is neither a name nor such a mapping, names an unknown
            corpus, has other keys, is listed twice, or needs ``corpora_root`` and it is empty.
    """
    if isinstance(corpora, (str, Mapping)) or not isinstance(corpora, Sequence):
        raise ValueError(f"corpora must be a list of corpus names or {{corpus, root}} entries; "
                         f"got {corpora!r}")
    if not corpora:
        raise ValueError("corpora is empty; name at least one corpus")
    out: list[CorpusSpec] = []
    for i, entry in enumerate(corpora):
        where = f"corpora[{i}]"
        if isinstance(entry, str):
            name, root = entry, None
        elif isinstance(entry, Mapping):
            extra = sorted(set(entry) - _SPEC_KEYS)
            if extra or "corpus" not in entry:
                raise ValueError(f"{where}: an entry is {{corpus: name, root: folder (optional)}}; got "
                                 f"keys {sorted(entry)}")
            name, root = entry["corpus"], entry.get("root") or None
        else:
            raise ValueError(f"{where}: expected a corpus name or {{corpus, root}}; got {entry!r}")
        if name not in CORPORA:
            raise ValueError(f"{where}: unknown corpus {name!r}; known: {', '.join(CORPORA)}")
        if any(s.name == name for s in out):
            raise ValueError(f"{where}: corpus {name!r} is listed twice")
        if root is None:
            if not str(corpora_root):
                raise ValueError(f"{where}: {name!r} has no root and corpora_root is empty; set "
                                 f"corpora_root to the folder holding {name}/ or give {{corpus, root}}")
            path = paths.resolve(corpora_root) / name
        else:
            path = paths.resolve(root)
        out.append(CorpusSpec(name, path))
    return out


def read_corpora(
    corpora: Sequence[str | Mapping[str, str]],
    *,
    corpora_root: str | os.PathLike[str] = "",
    labels: Iterable[str] = DEFAULT_LABELS,
    label_maps: Mapping[str, Mapping[str, str | None]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read several corpora into one metadata table; skip (and report) missing ones.

    Args:
        corpora: the corpora, as :func:`corpus_specs` takes them.
        corpora_root: folder holding ``<name>/`` of entries without their own root.
        labels: the unified label set (each corpus' default map restricted to it).
        label_maps: overrides ``{corpus: {corpus_emotion: label_or_None}}`` (the
            ``label_map`` parameter; :func:`ser.data.labels.resolve_label_map`).

    Returns:
        ``(table, errors, skipped)``: ``table`` has
        :data:`ser.data.corpora.TABLE_COLUMNS` (rows of every corpus read, in the given
        order; ``speaker`` as ``<corpus>/<speaker>`` when more than one corpus was read);
        ``errors`` has :data:`MULTI_ERROR_COLUMNS`, one row per file that did not become a
        row; ``skipped`` has :data:`SKIPPED_COLUMNS`, one row per corpus left out
        (folder missing, or no readable audio in it).

    Raises:
        ValueError: a bad entry (see :func:`corpus_specs`) or label map.
        FileNotFoundError: every corpus was skipped (each named with its folder and reason).

    Example:
        >>> table, errors, skipped = read_corpora(["emodb", "emovo"],
        ...                                       corpora_root="../shared/data")  # doctest: +SKIP
    """
    specs = corpus_specs(corpora, corpora_root=corpora_root)
    labels = list(labels)
    maps = {s.name: resolve_label_map(s.name, labels=labels, overrides=label_maps) for s in specs}
    tables, errors, skipped = [], [], []
    for spec in specs:
        if not spec.root.is_dir():
            skipped.append({"corpus": spec.name, "root": str(spec.root),
                            "reason": f"corpus folder {spec.root} does not exist"})
            continue
        table, errs = read_corpus(spec.name, spec.root, label_map=maps[spec.name])
        errors.append(errs.assign(corpus=spec.name))
        if table.empty:
            skipped.append({"corpus": spec.name, "root": str(spec.root),
                            "reason": f"no readable {spec.name} audio in {spec.root} "
                                      f"({len(errs)} file(s) in the error table)"})
            continue
        tables.append(table)
    skipped_df = pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS))
    if not tables:
        detail = "; ".join(f"{r['corpus']}: {r['reason']}" for r in skipped)
        raise FileNotFoundError(f"none of the corpora could be read ({detail}); check corpora "
                                "and corpora_root")
    table = pd.concat(tables, ignore_index=True)
    if len(tables) > 1:
        table["speaker"] = (table["corpus"].astype(str) + "/" + table["speaker"].astype(str)).astype(object)
    errors_df = (pd.concat(errors, ignore_index=True) if errors else pd.DataFrame())
    errors_df = errors_df.reindex(columns=list(MULTI_ERROR_COLUMNS))
    return table[list(TABLE_COLUMNS)], errors_df, skipped_df


def label_maps_used(
    corpora: Sequence[str], *, labels: Iterable[str],
    label_maps: Mapping[str, Mapping[str, str | None]] | None = None,
) -> dict[str, dict[str, str | None]]:
    """The label map each corpus was read with (for provenance): ``{corpus: {emotion: label}}``."""
    labels = list(labels)
    return {c: resolve_label_map(c, labels=labels, overrides=label_maps) for c in corpora}


def utterances_per_corpus(table: pd.DataFrame, *, labels: Sequence[str]) -> pd.DataFrame:
    """Utterances per corpus × label (labelled rows only), with totals.

    Args:
        table: a metadata table with ``corpus`` and ``label``.
        labels: the label set, in column order (absent labels get 0).

    Returns:
        Index ``corpus`` (plus ``total``); one column per label plus ``total``.
    """
    kept = table[table["label"].notna()]
    counts = pd.crosstab(kept["corpus"], kept["label"]).reindex(columns=list(labels), fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum(axis=0)
    return counts.rename_axis(index="corpus", columns="label")
