"""Speaker-independent splits: no speaker in two partitions, for every method."""

from __future__ import annotations

import pandas as pd
import pytest

from ser.data import splits


def make_table(n_female: int = 5, n_male: int = 5, per_speaker: int = 4,
               corpus: str = "emodb") -> pd.DataFrame:
    rows = []
    speakers = [(f"f{i}", "female") for i in range(1, n_female + 1)] + \
               [(f"m{i}", "male") for i in range(1, n_male + 1)]
    for spk, gender in speakers:
        for j in range(per_speaker):
            rows.append({"corpus": corpus, "speaker": spk, "gender": gender,
                         "label": ["angry", "happy", "neutral", "sad"][j % 4]})
    return pd.DataFrame(rows)


def all_splits(table: pd.DataFrame) -> list[splits.SpeakerSplit]:
    return [
        splits.fixed_speaker_split(table, test_speakers=["f1", "m1"], val_speakers=["f2"]),
        splits.auto_speaker_split(table, seed=3),
        *splits.kfold_speaker_splits(table, k=3, seed=1),
        *splits.loso_splits(table),
    ]


def test_no_speaker_in_two_partitions_for_every_method():
    table = make_table()
    every = set(table["speaker"])
    for split in all_splits(table):
        parts = [set(split.train), set(split.val), set(split.test)]
        assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2])
        assert parts[1].isdisjoint(parts[2])
        assert set().union(*parts) == every
        assert all(parts), split  # every partition populated
        labelled = table.assign(split=split.assign(table))
        splits.speaker_disjoint_check(labelled)
        assert labelled.groupby("speaker")["split"].nunique().max() == 1


@pytest.mark.parametrize("method", ["auto", "fixed"])
def test_assign_split_adds_column(method):
    table = make_table()
    kw = {"test_speakers": ["f3", "m3"], "val_speakers": ["m4"]} if method == "fixed" else {}
    out = splits.assign_split(table, method=method, seed=0, **kw)
    assert "split" not in table.columns  # input untouched
    assert set(out["split"]) == {"train", "val", "test"}
    splits.speaker_disjoint_check(out)
    if method == "fixed":
        assert sorted(out.loc[out["split"] == "test", "speaker"].unique()) == ["f3", "m3"]
        assert splits.split_from_table(out).val == ("m4",)


def test_auto_balances_gender_and_is_deterministic():
    table = make_table(n_female=4, n_male=4)
    a = splits.auto_speaker_split(table, seed=0)
    assert a == splits.auto_speaker_split(table, seed=0)
    for part in (a.test, a.val, a.train):
        assert {s[0] for s in part} == {"f", "m"}, a  # both genders everywhere
    assert (len(a.test), len(a.val), len(a.train)) == (2, 2, 4)
    choices = {splits.auto_speaker_split(table, seed=s).test for s in range(10)}
    assert len(choices) > 1  # the seed matters


def test_auto_with_one_gender_keeps_training_speakers():
    table = make_table(n_female=3, n_male=0)
    a = splits.auto_speaker_split(table, seed=0)
    assert len(a.train) == 1 and len(a.val) == 1 and len(a.test) == 1
    with pytest.raises(ValueError, match="at least 3 speakers"):
        splits.auto_speaker_split(make_table(n_female=1, n_male=1), seed=0)


def test_kfold_tests_each_speaker_once_and_stratifies():
    table = make_table(n_female=6, n_male=6)
    folds = splits.kfold_speaker_splits(table, k=3, seed=0)
    tested = [s for f in folds for s in f.test]
    assert sorted(tested) == sorted(set(table["speaker"]))
    for f in folds:
        assert sum(s.startswith("f") for s in f.test) == 2 and len(f.val) == 1
    vals = [f.val[0] for f in folds]
    assert len(set(vals)) == 3  # validation speakers rotate over folds
    assert folds == splits.kfold_speaker_splits(table, k=3, seed=0)
    with pytest.raises(ValueError, match="k=1 must be between 2"):
        splits.kfold_speaker_splits(table, k=1, seed=0)
    with pytest.raises(ValueError, match="k=13 must be between 2"):
        splits.kfold_speaker_splits(table, k=13, seed=0)


def test_loso_one_fold_per_speaker():
    table = make_table(n_female=3, n_male=2)
    folds = splits.loso_splits(table, n_val=2)
    assert [f.test for f in folds] == [(s,) for s in sorted(set(table["speaker"]))]
    assert all(len(f.val) == 2 and len(f.train) == 2 for f in folds)
    for f in folds:  # both genders in val, unless that would leave training without one
        both = f.test[0].startswith("f")
        assert ({s[0] for s in f.val} == {"f", "m"}) == both, f
        assert {s[0] for s in f.train} == {"f", "m"}, f
    with pytest.raises(ValueError, match="no speaker left for training"):
        splits.loso_splits(table, n_val=4)


def test_fixed_rejects_unknown_and_overlapping_speakers():
    table = make_table()
    with pytest.raises(ValueError, match=r"test_speakers: unknown speaker\(s\) \['x9'\]"):
        splits.fixed_speaker_split(table, test_speakers=["f1", "x9"], val_speakers=["m1"])
    with pytest.raises(ValueError, match=r"val_speakers: unknown speaker\(s\) \['zz'\]"):
        splits.assign_split(table, method="fixed", test_speakers=["f1"], val_speakers=["zz"])
    with pytest.raises(ValueError, match=r"\['f1'\] are in both"):
        splits.fixed_speaker_split(table, test_speakers=["f1"], val_speakers=["f1"])
    with pytest.raises(ValueError, match="non-empty test_speakers and val_speakers"):
        splits.assign_split(table, method="fixed", test_speakers=["f1"])
    with pytest.raises(ValueError, match="not the string"):
        splits.fixed_speaker_split(table, test_speakers="f1", val_speakers=["m1"])
    with pytest.raises(ValueError, match="leave no speaker for training"):
        small = make_table(n_female=1, n_male=1)
        splits.fixed_speaker_split(small, test_speakers=["f1"], val_speakers=["m1"])
    with pytest.raises(ValueError, match="unknown split method 'random'"):
        splits.assign_split(table, method="random")
    with pytest.raises(ValueError, match="chooses the speakers itself"):
        splits.assign_split(table, method="auto", test_speakers=["f1"])


def test_disjoint_check_catches_a_leak():
    table = make_table().assign(split="train")
    table.loc[table.index[0], "split"] = "test"  # one utterance of f1 leaks into test
    with pytest.raises(ValueError, match=r"speaker leak: 1 speaker.*f1: test, train"):
        splits.speaker_disjoint_check(table)
    with pytest.raises(ValueError, match="no 'split' column"):
        splits.speaker_disjoint_check(make_table())
    with pytest.raises(ValueError, match="split values must be"):
        splits.speaker_disjoint_check(make_table().assign(split="holdout"))


def test_speaker_ids_are_per_corpus_when_corpora_are_mixed():
    table = pd.concat([make_table(corpus="emodb"), make_table(corpus="ravdess")], ignore_index=True)
    keys = set(splits.speaker_key(table))
    assert "emodb/f1" in keys and "ravdess/f1" in keys and len(keys) == 20
    split = splits.fixed_speaker_split(table, test_speakers=["emodb/f1"], val_speakers=["ravdess/f1"])
    out = table.assign(split=split.assign(table))
    assert set(out.loc[(out["corpus"] == "ravdess") & (out["speaker"] == "f1"), "split"]) == {"val"}
    splits.speaker_disjoint_check(out)


def test_speakers_per_split_summary():
    out = splits.assign_split(make_table(n_female=4, n_male=4), seed=1)
    summary = splits.speakers_per_split(out).set_index("split")
    assert summary["n_speakers"].to_dict() == {"train": 4, "val": 2, "test": 2}
    assert summary["n_utterances"].sum() == len(out)
    assert (summary["n_female"] + summary["n_male"]).equals(summary["n_speakers"])
