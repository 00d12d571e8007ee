"""Speaker-independent splits: no speaker's voice is ever in two partitions.

The study applies the model to caregivers it has never heard, so every split here
partitions *speakers*, never utterances:

- :func:`fixed_speaker_split`: named test and validation speakers (as in the study);
  everybody else trains.
- :func:`kfold_speaker_splits`: k folds of speakers, stratified by gender.
- :func:`loso_splits`: leave one speaker out.
- :func:`assign_split`: adds the ``split`` column (``train``/``val``/``test``) that
  ``utterances.csv`` carries; ``method="auto"`` picks test and validation speakers
  per gender, deterministically by seed, so both genders appear in every partition
  when there are enough speakers (and per corpus when the table holds several).

In k-fold and LOSO, each fold also names ``n_val`` validation speakers drawn from
its training speakers (for early stopping and calibration), so no choice is tuned
on the fold's test speakers.

When a table holds more than one corpus, speakers are keyed ``<corpus>/<speaker>``
(EmoDB's ``03`` and RAVDESS' ``03`` are different people); speaker names given to
these functions must then use that form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Partition names, in the order they are reported.
PARTITIONS: tuple[str, ...] = ("train", "val", "test")

_UNKNOWN_GENDER = "unknown"


@dataclass(frozen=True)
class SpeakerSplit:
    """Speakers per partition (sorted tuples of speaker keys).

    Raises:
        ValueError: a speaker is in two partitions.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for part in PARTITIONS:
            for s in getattr(self, part):
                if s in seen:
                    raise ValueError(f"speaker {s!r} is in both {seen[s]} and {part}")
                seen[s] = part

    def as_dict(self) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...], "test": [...]}`` (for a model bundle's ``split``)."""
        return {p: list(getattr(self, p)) for p in PARTITIONS}

    def assign(self, table: pd.DataFrame) -> pd.Series:
        """The partition of each row of ``table`` (index aligned).

        Raises:
            ValueError: a speaker of ``table`` is in no partition.
        """
        part = {s: p for p in PARTITIONS for s in getattr(self, p)}
        keys = speaker_key(table)
        lost = sorted(set(keys) - set(part))
        if lost:
            raise ValueError(f"speaker(s) {lost} are in no partition of this split")
        return keys.map(part).rename("split")


def speaker_key(table: pd.DataFrame) -> pd.Series:
    """Speaker identity per row: ``speaker``, or ``<corpus>/<speaker>`` for several corpora.

    A speaker already written ``<corpus>/<speaker>`` (as :func:`ser.data.multicorpus.read_corpora`
    writes them) is kept as it is.

    Raises:
        ValueError: the table has no ``speaker`` column or a row has no speaker.
    """
    if "speaker" not in table.columns:
        raise ValueError(f"the table has no 'speaker' column (columns: {', '.join(table.columns)})")
    if table["speaker"].isna().any():
        raise ValueError(f"{int(table['speaker'].isna().sum())} row(s) have no speaker; "
                         "a speaker-independent split needs every speaker")
    spk = table["speaker"].astype(str)
    if "corpus" in table.columns and table["corpus"].nunique() > 1:
        prefix = table["corpus"].astype(str) + "/"
        keyed = pd.Series([s.startswith(p) for s, p in zip(spk, prefix, strict=True)], index=spk.index,
                          dtype=bool)
        return spk.where(keyed, prefix + spk)  # a merged table's ids are keyed already
    return spk


def _speaker_genders(table: pd.DataFrame) -> dict[str, str]:
    keys = speaker_key(table)
    if "gender" not in table.columns:
        return {k: _UNKNOWN_GENDER for k in keys.unique()}
    g = table["gender"].where(table["gender"].notna(), _UNKNOWN_GENDER).astype(str)
    return g.groupby(keys).first().to_dict()


def _check_known(names: Iterable[str], known: set[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ValueError(f"{what} must be a list of speaker ids, not the string {names!r}")
    names = tuple(str(n) for n in names)
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"{what}: unknown speaker(s) {unknown}; speakers in the table: "
                         f"{', '.join(sorted(known))}")
    return names


def fixed_speaker_split(
    table: pd.DataFrame, *, test_speakers: Sequence[str], val_speakers: Sequence[str]
) -> SpeakerSplit:
    """Named test and validation speakers; every other speaker trains.

    Args:
        table: utterance table with ``speaker`` (and ``corpus``).
        test_speakers: speaker keys held out for testing (non-empty).
        val_speakers: speaker keys held out for validation (non-empty).

    Raises:
        ValueError: an empty group, an unknown speaker (named), a speaker in both groups,
            or no speaker left for training.
    """
    known = set(speaker_key(table))
    test = _check_known(test_speakers, known, "test_speakers")
    val = _check_known(val_speakers, known, "val_speakers")
    if not test or not val:
        raise ValueError("a fixed split needs non-empty test_speakers and val_speakers; "
                         f"speakers in the table: {', '.join(sorted(known))} "
                         "(or use split_method 'auto')")
    both = sorted(set(test) & set(val))
    if both:
        raise ValueError(f"speaker(s) {both} are in both test_speakers and val_speakers")
    train = tuple(sorted(known - set(test) - set(val)))
    if not train:
        raise ValueError("test_speakers and val_speakers leave no speaker for training")
    return SpeakerSplit(train=train, val=tuple(sorted(val)), test=tuple(sorted(test)))


def _shuffled_by_gender(genders: dict[str, str], rng: np.random.Generator,
                        exclude: Iterable[str] = ()) -> dict[str, list[str]]:
    exclude = set(exclude)
    pools: dict[str, list[str]] = {}
    for g in sorted(set(genders.values())):
        spk = sorted(s for s, gg in genders.items() if gg == g and s not in exclude)
        pools[g] = [spk[i] for i in rng.permutation(len(spk))]
    return pools


def _take_balanced(pools: dict[str, list[str]], n: int, *, rotate: int = 0) -> list[str]:
    """Take ``n`` speakers round-robin over genders, keeping one per gender for training.

    Genders are visited largest pool first; ``rotate`` shifts the starting gender.
    """
    chosen: list[str] = []
    order = sorted(pools, key=lambda g: (-len(pools[g]), g))
    if order:
        r = rotate % len(order)
        order = order[r:] + order[:r]
    for reserve in (1, 0):
        while len(chosen) < n:
            took = False
            for g in order:
                if len(chosen) < n and len(pools[g]) > reserve:
                    chosen.append(pools[g].pop(0))
                    took = True
            if not took:
                break
    return chosen


def auto_speaker_split(
    table: pd.DataFrame, *, n_test: int | None = None, n_val: int | None = None, seed: int = 0
) -> SpeakerSplit:
    """Pick test and validation speakers per gender, deterministically by ``seed``.

    When the table holds several corpora, each corpus gives its own test and validation
    speakers (chosen within the corpus as above, ``n_test``/``n_val`` per corpus), so every
    corpus is tested on voices it was not trained on.

    Args:
        table: utterance table with ``speaker`` (``gender``, ``corpus`` optional).
        n_test: test speakers (default: 20 % of the speakers, at least 1), per corpus.
        n_val: validation speakers (default: as ``n_test``), per corpus.
        seed: random seed of the choice.

    Raises:
        ValueError: fewer than 3 speakers (in a corpus, named), or the counts leave no
            speaker for training.
    """
    if "corpus" in table.columns and table["corpus"].nunique() > 1:
        keys = speaker_key(table)
        parts: dict[str, list[str]] = {p: [] for p in PARTITIONS}
        for corpus in sorted(table["corpus"].astype(str).unique()):
            rows = table["corpus"].astype(str) == corpus
            sub = table.loc[rows].assign(speaker=keys[rows], corpus=corpus)
            try:
                one = auto_speaker_split(sub, n_test=n_test, n_val=n_val, seed=seed)
            except ValueError as e:
                raise ValueError(f"corpus {corpus!r}: {e}; use split_method 'fixed' to name "
                                 "the speakers, or leave this corpus out") from e
            for p in PARTITIONS:
                parts[p].extend(getattr(one, p))
        return SpeakerSplit(**{p: tuple(sorted(v)) for p, v in parts.items()})
    genders = _speaker_genders(table)
    n = len(genders)
    if n < 3:
        raise ValueError(f"a train/val/test split needs at least 3 speakers; the table has {n} "
                         f"({', '.join(sorted(genders))})")
    n_test = max(1, round(0.2 * n)) if n_test is None else int(n_test)
    n_val = n_test if n_val is None else int(n_val)
    if n_test < 1 or n_val < 1 or n_test + n_val >= n:
        raise ValueError(f"n_test={n_test} and n_val={n_val} must be >= 1 and leave at least one "
                         f"of the {n} speakers for training")
    pools = _shuffled_by_gender(genders, np.random.default_rng(seed))
    test = _take_balanced(pools, n_test)
    val = _take_balanced(pools, n_val)
    train = sorted(s for p in pools.values() for s in p)
    return SpeakerSplit(train=tuple(train), val=tuple(sorted(val)), test=tuple(sorted(test)))


def _folds(genders: dict[str, str], test_groups: list[list[str]], n_val: int,
           seed: int) -> list[SpeakerSplit]:
    """Complete test groups into splits; validation speakers rotate over the folds.

    Each fold takes the ``n_val`` speakers used least often as validation so far
    (ties broken by a seeded permutation), balanced over genders.
    """
    rank = dict(zip(sorted(genders), np.random.default_rng(seed).permutation(len(genders)), strict=True))
    used = dict.fromkeys(genders, 0)
    out = []
    for i, test in enumerate(test_groups):
        pools = {g: sorted((s for s, gg in genders.items() if gg == g and s not in test),
                           key=lambda s: (used[s], rank[s]))
                 for g in sorted(set(genders.values()))}
        val = _take_balanced(pools, n_val, rotate=i)
        for s in val:
            used[s] += 1
        train = sorted(set(genders) - set(test) - set(val))
        if not train:
            raise ValueError(f"fold {i}: no speaker left for training (n_val={n_val} too large)")
        out.append(SpeakerSplit(train=tuple(train), val=tuple(sorted(val)), test=tuple(sorted(test))))
    return out


def kfold_speaker_splits(
    table: pd.DataFrame, *, k: int, seed: int = 0, n_val: int = 1
) -> list[SpeakerSplit]:
    """k folds of speakers, stratified by gender; each speaker is tested exactly once.

    Args:
        table: utterance table with ``speaker`` (``gender``, ``corpus`` optional).
        k: number of folds, 2 ≤ k ≤ number of speakers.
        seed: random seed of the fold assignment and the validation choice.
        n_val: validation speakers per fold, drawn from that fold's training speakers.

    Raises:
        ValueError: ``k`` out of range, or ``n_val`` leaves no training speaker.
    """
    genders = _speaker_genders(table)
    if not 2 <= int(k) <= len(genders):
        raise ValueError(f"k={k} must be between 2 and the number of speakers ({len(genders)})")
    if n_val < 0:
        raise ValueError(f"n_val={n_val} must be >= 0")
    pools = _shuffled_by_gender(genders, np.random.default_rng(seed))
    groups: list[list[str]] = [[] for _ in range(k)]
    deal = 0
    for g in sorted(pools, key=lambda g: (-len(pools[g]), g)):
        for s in pools[g]:
            groups[deal % k].append(s)
            deal += 1
    return _folds(genders, groups, n_val, seed)


def loso_splits(table: pd.DataFrame, *, n_val: int = 1, seed: int = 0) -> list[SpeakerSplit]:
    """Leave-one-speaker-out: one fold per speaker (sorted), that speaker tested.

    Args:
        table: utterance table with ``speaker`` (``gender``, ``corpus`` optional).
        n_val: validation speakers per fold, drawn from that fold's training speakers.
        seed: random seed of the validation choice.

    Raises:
        ValueError: fewer than 2 speakers, or ``n_val`` leaves no training speaker.
    """
    genders = _speaker_genders(table)
    if len(genders) < 2:
        raise ValueError(f"leave-one-speaker-out needs at least 2 speakers; got {len(genders)}")
    return _folds(genders, [[s] for s in sorted(genders)], n_val, seed)


def assign_split(
    table: pd.DataFrame,
    *,
    method: str = "auto",
    test_speakers: Sequence[str] | None = None,
    val_speakers: Sequence[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Add the ``split`` column (``train``/``val``/``test``) by speaker.

    Args:
        table: utterance table with ``speaker`` (``gender``, ``corpus`` optional).
        method: ``"fixed"`` (named speakers) or ``"auto"`` (per-gender choice by seed).
        test_speakers: ``fixed``: the test speakers; ``auto``: must be empty.
        val_speakers: ``fixed``: the validation speakers; ``auto``: must be empty.
        seed: random seed of the ``auto`` choice.

    Returns:
        A copy of ``table`` with ``split`` (the input is not modified); recover the
        speakers per partition with :func:`split_from_table`.

    Raises:
        ValueError: unknown method, unknown speakers (named), or speakers given to ``auto``.
    """
    test_speakers, val_speakers = list(test_speakers or []), list(val_speakers or [])
    if method == "fixed":
        split = fixed_speaker_split(table, test_speakers=test_speakers, val_speakers=val_speakers)
    elif method == "auto":
        if test_speakers or val_speakers:
            raise ValueError("split_method 'auto' chooses the speakers itself; leave "
                             "test_speakers and val_speakers empty or use split_method 'fixed'")
        split = auto_speaker_split(table, seed=seed)
    else:
        raise ValueError(f"unknown split method {method!r}; use 'fixed' or 'auto'")
    return table.assign(split=split.assign(table))


def split_from_table(table: pd.DataFrame) -> SpeakerSplit:
    """The speakers per partition of a table that has a ``split`` column.

    Raises:
        ValueError: as :func:`speaker_disjoint_check` (a leak, or no/unknown ``split``).
    """
    speaker_disjoint_check(table)
    keys = speaker_key(table)
    return SpeakerSplit(**{p: tuple(sorted(set(keys[table["split"] == p]))) for p in PARTITIONS})


def speaker_disjoint_check(table: pd.DataFrame) -> None:
    """Raise if any speaker has utterances in more than one partition.

    Raises:
        ValueError: names the leaking speakers and their partitions, or the table has
            no ``split`` column / an unknown partition name.
    """
    if "split" not in table.columns:
        raise ValueError("the table has no 'split' column; add one with assign_split")
    bad_parts = sorted(set(table["split"].dropna()) - set(PARTITIONS))
    if bad_parts or table["split"].isna().any():
        raise ValueError(f"split values must be {', '.join(PARTITIONS)}; found {bad_parts or 'NA'}")
    parts = table.groupby(speaker_key(table))["split"].agg(lambda s: sorted(set(s)))
    leaks = parts[parts.map(len) > 1]
    if len(leaks):
        detail = "; ".join(f"{s}: {', '.join(p)}" for s, p in leaks.items())
        raise ValueError(f"speaker leak: {len(leaks)} speaker(s) in several partitions ({detail})")


def speakers_per_split(table: pd.DataFrame) -> pd.DataFrame:
    """One row per partition: number of speakers, their ids, genders and utterances.

    Returns:
        Columns ``split, n_speakers, speakers, n_female, n_male, n_utterances``.
    """
    keys = speaker_key(table)
    genders = _speaker_genders(table)
    rows = []
    for part in PARTITIONS:
        spk = sorted(set(keys[table["split"] == part]))
        rows.append({
            "split": part, "n_speakers": len(spk), "speakers": ", ".join(spk),
            "n_female": sum(genders[s] == "female" for s in spk),
            "n_male": sum(genders[s] == "male" for s in spk),
            "n_utterances": int((table["split"] == part).sum()),
        })
    return pd.DataFrame(rows)
