"""Problems of a (merged) corpus table, each named with its count (issue 15 item 7).

Stage 01 calls :func:`check_corpora` on the table of :func:`ser.data.multicorpus.read_corpora`
(or of one corpus) and writes the issues to ``results/tables/corpus_issues.csv``
(:data:`ISSUE_COLUMNS`), one row per problem, and prints :func:`issue_messages`. Nothing
is dropped without a row that counts it:

- ``conflicting_label``: one emotion name (case-insensitive) becomes different unified
  labels in different corpora (``calm`` → neutral in TurEV-DB, left out in RAVDESS), or
  an emotion named like a unified label becomes another label. Kept as each corpus'
  map says; the fix is ``label_map``.
- ``shared_speaker_id``: the same speaker id in two corpora (``03`` in EmoDB and
  RAVDESS). Kept as two speakers, ``<corpus>/<speaker>``.
- ``too_few_speakers``: a corpus with fewer than ``min_speakers`` labelled speakers (no
  speaker-independent split, no held-out voices). Left out of the merged table when other
  corpora remain (its files counted), else kept (the split then explains what it needs).
- ``unknown_label``: files whose emotion is not in the corpus' label map; left out
  (in ``excluded_utterances.csv``), counted per corpus.
- ``label_outside_set``: files whose emotion maps to no label of the set (e.g. disgust
  with 4 classes); left out, counted per corpus.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

#: Columns of ``corpus_issues.csv``.
ISSUE_COLUMNS: tuple[str, ...] = ("issue", "corpus", "detail", "n_files", "action")
#: Issue kinds, in the order they are reported.
ISSUES: tuple[str, ...] = ("conflicting_label", "shared_speaker_id", "too_few_speakers",
                           "unknown_label", "label_outside_set")
#: A corpus needs this many labelled speakers to stay in a merged table.
MIN_SPEAKERS: int = 2


def _raw_speaker(table: pd.DataFrame) -> pd.Series:
    """Speaker ids without the ``<corpus>/`` prefix of a merged table."""
    spk = table["speaker"].astype(str)
    prefix = table["corpus"].astype(str) + "/"
    return pd.Series([s[len(p):] if s.startswith(p) else s for s, p in zip(spk, prefix)], index=table.index)


def _label_conflicts(table: pd.DataFrame, label_maps: Mapping[str, Mapping[str, Any]],
                     labels: list[str]) -> list[dict[str, Any]]:
    present = table.groupby([table["corpus"].astype(str), table["emotion"].astype(str)]).size()
    targets: dict[str, dict[str, str | None]] = {}
    counts: dict[str, int] = {}
    for (corpus, emotion), n in present.items():
        m = label_maps.get(corpus, {})
        if emotion not in m:
            continue  # unknown_label, reported below
        key = emotion.strip().casefold()
        targets.setdefault(key, {})[corpus] = m[emotion]
        counts[key] = counts.get(key, 0) + int(n)
    folded = {lab.casefold(): lab for lab in labels}
    rows = []
    for key, per_corpus in sorted(targets.items()):
        goals = {v for v in per_corpus.values()}
        own = folded.get(key)
        clash = len(goals) > 1 or (own is not None and goals != {own})
        if not clash:
            continue
        where = ", ".join(f"{c}: {v if v is not None else 'left out'}" for c, v in sorted(per_corpus.items()))
        rows.append({"issue": "conflicting_label", "corpus": ", ".join(sorted(per_corpus)),
                     "detail": f"emotion {key!r} becomes different labels ({where})",
                     "n_files": counts[key],
                     "action": "kept as each corpus' label map says; set label_map to make them agree"})
    return rows


def check_corpora(
    table: pd.DataFrame,
    *,
    label_maps: Mapping[str, Mapping[str, str | None]],
    labels: list[str] | tuple[str, ...],
    min_speakers: int = MIN_SPEAKERS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Find the problems of a corpus table; leave out corpora with too few speakers.

    Args:
        table: :data:`ser.data.corpora.TABLE_COLUMNS` rows (``speaker`` may be
            ``<corpus>/<speaker>``); unlabelled rows carry ``dropped_reason``.
        label_maps: ``{corpus: {emotion: label or None}}`` each corpus was read with.
        labels: the unified label set.
        min_speakers: labelled speakers a corpus needs to stay in a merged table.

    Returns:
        ``(kept, issues)``: the table without the corpora left out, and one row per
        problem with :data:`ISSUE_COLUMNS` (empty when there is none).

    Raises:
        ValueError: ``table`` lacks ``corpus``, ``speaker``, ``emotion``, ``label`` or
            ``dropped_reason``.
    """
    need = ["corpus", "speaker", "emotion", "label", "dropped_reason"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"corpus table lacks column(s) {missing}; read it with ser.data.corpora "
                         "or ser.data.multicorpus")
    labels = list(labels)
    corpus = table["corpus"].astype(str)
    rows = _label_conflicts(table, label_maps, labels)

    raw = _raw_speaker(table)
    owners = pd.DataFrame({"speaker": raw, "corpus": corpus}).drop_duplicates()
    for spk, grp in owners.groupby("speaker", sort=True):
        if len(grp) > 1:
            names = sorted(grp["corpus"])
            rows.append({"issue": "shared_speaker_id", "corpus": ", ".join(names),
                         "detail": f"speaker id {spk!r} is used by {len(names)} corpora ({', '.join(names)})",
                         "n_files": int((raw == spk).sum()),
                         "action": "kept as different speakers: " + ", ".join(f"{c}/{spk}" for c in names)})

    labelled = table["label"].notna()
    n_spk = table[labelled].groupby(corpus[labelled])["speaker"].nunique()
    names = list(dict.fromkeys(corpus))
    few = [c for c in names if int(n_spk.get(c, 0)) < int(min_speakers)]
    drop = few if len(few) < len(names) else []
    for c in few:
        n = int(n_spk.get(c, 0))
        rows.append({"issue": "too_few_speakers", "corpus": c,
                     "detail": f"corpus {c!r} has {n} labelled speaker(s), fewer than {min_speakers}: "
                               "no speaker-independent split, no held-out voice",
                     "n_files": int((corpus == c).sum()),
                     "action": "corpus left out of the merged table" if c in drop
                               else "kept (it is the only corpus); the split will name what it needs"})

    reason = table["dropped_reason"].fillna("").astype(str)
    for issue, pattern, action in (
            ("unknown_label", "not in the label map", "left out (excluded_utterances.csv); map the "
             "emotion in label_map to keep it"),
            ("label_outside_set", "not in label set", "left out (excluded_utterances.csv)")):
        hit = reason.str.contains(pattern, regex=False) & table["label"].isna()
        for c in names:
            sel = hit & (corpus == c)
            if sel.any():
                emotions = table.loc[sel, "emotion"].astype(str).value_counts().sort_index()
                listing = ", ".join(f"{e} ({n})" for e, n in emotions.items())
                rows.append({"issue": issue, "corpus": c, "n_files": int(sel.sum()), "action": action,
                             "detail": f"{int(sel.sum())} file(s) of {c} with emotion(s) {listing}"})
    issues = pd.DataFrame(rows, columns=list(ISSUE_COLUMNS))
    if len(issues):
        order = {k: i for i, k in enumerate(ISSUES)}
        issues = issues.sort_values("issue", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    kept = table[~corpus.isin(drop)]
    return kept, issues


def issue_messages(issues: pd.DataFrame) -> list[str]:
    """One line per issue: ``<ISSUE> <corpus>: <detail> -> <action> [n files]``."""
    return [f"{r.issue.upper()} {r.corpus}: {r.detail} -> {r.action} [{r.n_files} file(s)]"
            for r in issues.itertuples(index=False)]
