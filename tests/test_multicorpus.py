"""Stage 01 over several corpora: one merged table, missing corpora skipped by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser.core import paths
from ser.data import corpora, corpus_issues, multicorpus, splits
from ser.run import params, pipeline

SR = 16000
SHARED = paths.ROOT.parent / "shared" / "data"

EMODB_SPEAKERS = ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]  # 5 m, 5 f
EMOVO_SPEAKERS = ["f1", "f2", "f3", "m1", "m2", "m3"]


def write_wav(path: Path, *, seconds: float = 0.2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR, subtype="PCM_16")


@pytest.fixture
def corpora_root(tmp_path: Path) -> Path:
    """``<root>/emodb`` (flat EmoDB names), ``<root>/emovo`` (speaker folders); no turev."""
    root = tmp_path / "corpora"
    for spk in EMODB_SPEAKERS:
        for letter in "WFNTL":  # anger happiness neutral sadness + boredom (dropped)
            write_wav(root / "emodb" / "wav" / f"{spk}a01{letter}a.wav")
    for spk in EMOVO_SPEAKERS:
        for code in ("rab", "gio", "neu", "tri", "pau"):  # + paura (fear, dropped)
            write_wav(root / "emovo" / spk / f"{code}-{spk}-b1.wav")
    (root / "emovo" / "README.txt").write_text("not audio")
    return root


def test_merges_corpora_and_reports_the_missing_one(corpora_root):
    table, errors, skipped = multicorpus.read_corpora(
        ["emodb", "emovo", "turev"], corpora_root=corpora_root)
    assert list(table.columns) == list(corpora.TABLE_COLUMNS)
    assert table.groupby("corpus").size().to_dict() == {"emodb": 50, "emovo": 30}
    assert table.groupby("corpus")["language"].first().to_dict() == {"emodb": "de", "emovo": "it"}
    labelled = table[table["label"].notna()]
    assert labelled.groupby("corpus").size().to_dict() == {"emodb": 40, "emovo": 24}
    assert set(table.loc[table["label"].isna(), "emotion"]) == {"boredom", "paura"}
    # the missing corpus is skipped by name with its folder, never silently
    assert skipped.to_dict("records") == [{
        "corpus": "turev", "root": str(corpora_root / "turev"),
        "reason": f"corpus folder {corpora_root / 'turev'} does not exist"}]
    assert errors.to_dict("records") == [{"corpus": "emovo", "path": str(corpora_root / "emovo" / "README.txt"),
                                          "reason": "not audio"}]
    # speaker ids keyed by corpus: unique across corpora, and speaker_key keeps them as they are
    assert set(table.loc[table["corpus"] == "emovo", "speaker"]) == {f"emovo/{s}" for s in EMOVO_SPEAKERS}
    assert table.groupby("speaker")["corpus"].nunique().max() == 1
    assert table["speaker"].nunique() == 16
    assert (splits.speaker_key(table) == table["speaker"]).all()
    counts = multicorpus.utterances_per_corpus(table, labels=["angry", "happy", "neutral", "sad"])
    assert counts.loc["emodb"].tolist() == [10, 10, 10, 10, 40]
    assert counts.loc["emovo"].tolist() == [6, 6, 6, 6, 24]
    assert counts.loc["total", "total"] == 64


def test_same_speaker_id_in_two_corpora_stays_two_people(tmp_path, corpora_root):
    folder = tmp_path / "mine"
    for spk in ("f1", "m1", "f2"):  # f1/m1/f2 are EMOVO speaker ids too
        for emo in ("angry", "sad"):
            write_wav(folder / emo / f"{spk}_001.wav")
    table, _, skipped = multicorpus.read_corpora(
        ["emovo", {"corpus": "folder", "root": str(folder)}], corpora_root=corpora_root)
    assert skipped.empty
    assert {"emovo/f1", "folder/f1"} <= set(table["speaker"])
    assert table["speaker"].nunique() == 6 + 3
    out = splits.assign_split(table[table["label"].notna()], seed=0)
    splits.speaker_disjoint_check(out)


def test_one_corpus_found_keeps_its_own_speaker_ids(corpora_root):
    table, _, skipped = multicorpus.read_corpora(["emovo", "turev"], corpora_root=corpora_root)
    assert set(table["speaker"]) == set(EMOVO_SPEAKERS) and list(skipped["corpus"]) == ["turev"]


def test_every_corpus_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none of the corpora.*emodb: corpus folder .*turev: corpus"):
        multicorpus.read_corpora(["emodb", "turev"], corpora_root=tmp_path)
    (tmp_path / "emovo").mkdir()
    (tmp_path / "emovo" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"emovo: no readable emovo audio .*1 file"):
        multicorpus.read_corpora(["emovo"], corpora_root=tmp_path)


@pytest.mark.parametrize("bad, match", [
    ("emodb", "must be a list"),
    ([], "empty"),
    (["emodb", "klingon"], r"corpora\[1\]: unknown corpus 'klingon'"),
    (["emodb", "emodb"], "listed twice"),
    ([{"name": "emodb"}], r"corpora\[0\]: an entry is \{corpus"),
    ([{"corpus": "emodb", "root": "x", "lang": "de"}], "got keys"),
    ([3], "expected a corpus name"),
])
def test_bad_corpora_parameter(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        multicorpus.corpus_specs(bad, corpora_root=tmp_path)


def test_specs_roots_relative_to_project_and_corpora_root_required(tmp_path):
    specs = multicorpus.corpus_specs(["emodb", {"corpus": "emovo", "root": "somewhere/emovo"}],
                                     corpora_root="../shared/data")
    assert specs[0].root == (paths.ROOT.parent / "shared" / "data" / "emodb").resolve()
    assert specs[1].root == paths.ROOT / "somewhere" / "emovo"
    with pytest.raises(ValueError, match="'emodb' has no root and corpora_root is empty"):
        multicorpus.corpus_specs(["emodb"], corpora_root="")


def test_label_map_overrides_apply_per_corpus(corpora_root):
    table, _, _ = multicorpus.read_corpora(
        ["emodb", "emovo"], corpora_root=corpora_root, labels=["angry", "neutral", "sad"],
        label_maps={"emodb": {"boredom": "neutral"}})
    emodb = table[table["corpus"] == "emodb"]
    assert set(emodb.loc[emodb["emotion"] == "boredom", "label"]) == {"neutral"}
    assert table.loc[table["emotion"] == "gioia", "label"].isna().all()  # happy not in labels
    with pytest.raises(ValueError, match="unknown corpus key"):
        multicorpus.read_corpora(["emodb"], corpora_root=corpora_root, label_maps={"nope": {}})


def test_splits_are_speaker_independent_across_corpora(corpora_root):
    table, _, _ = multicorpus.read_corpora(["emodb", "emovo"], corpora_root=corpora_root)
    kept = table[table["label"].notna()]
    out = splits.assign_split(kept, method="auto", seed=1)
    splits.speaker_disjoint_check(out)
    # every corpus gives test and validation speakers (20 % of its speakers, per gender)
    per = out.groupby(["corpus", "split"])["speaker"].nunique().unstack()
    assert per.loc["emodb"].to_dict() == {"test": 2, "train": 6, "val": 2}
    assert per.loc["emovo"].to_dict() == {"test": 1, "train": 4, "val": 1}
    emodb_test = out[(out["corpus"] == "emodb") & (out["split"] == "test")]
    assert set(emodb_test["gender"]) == {"female", "male"}
    # deterministic by seed
    again = splits.assign_split(kept, method="auto", seed=1)
    assert again["split"].tolist() == out["split"].tolist()
    # the other split methods on the merged table
    fixed = splits.assign_split(kept, method="fixed", test_speakers=["emodb/03", "emovo/f1"],
                                val_speakers=["emodb/08"])
    assert set(fixed.loc[fixed["split"] == "test", "speaker"]) == {"emodb/03", "emovo/f1"}
    for split in [*splits.kfold_speaker_splits(kept, k=4, seed=0), *splits.loso_splits(kept)]:
        splits.speaker_disjoint_check(kept.assign(split=split.assign(kept)))
    with pytest.raises(ValueError, match="unknown speaker"):
        splits.assign_split(kept, method="fixed", test_speakers=["03"], val_speakers=["emodb/08"])


def test_auto_split_names_a_corpus_with_too_few_speakers(tmp_path, corpora_root):
    folder = tmp_path / "two"
    for spk in ("f1", "m1"):
        write_wav(folder / "angry" / f"{spk}_1.wav")
    table, _, _ = multicorpus.read_corpora(["emodb", {"corpus": "folder", "root": str(folder)}],
                                           corpora_root=corpora_root)
    with pytest.raises(ValueError, match="corpus 'folder': a train/val/test split needs at least 3"):
        splits.auto_speaker_split(table[table["label"].notna()])


def test_profile_reads_every_shared_corpus():
    p01 = params.load_stage_params("01_preprocess", profile="multicorpus")
    assert p01["corpora"] == ["emodb", "emovo", "turev"]
    assert paths.resolve(p01["corpora_root"]) == SHARED.resolve()
    p02 = params.load_stage_params("02_train", profile="multicorpus")
    p03 = params.load_stage_params("03_evaluate", profile="multicorpus")
    assert p02["model_name"] == p03["model_name"] == "multicorpus_cnn"
    assert p02["labels"] == p01["labels"]
    assert params.load_stage_params("01_preprocess")["corpora"] == []  # default: one corpus


# ---- real corpora (integration; skipped when ../shared/data lacks them) -----------------

_REAL = ("emodb", "emovo", "turev")
real = pytest.mark.skipif(not all((SHARED / c).is_dir() for c in _REAL),
                          reason=f"EmoDB, EMOVO and TurEV-DB not all found under {SHARED}")
# 4-class counts from each corpus' README: EmoDB anger 127, happiness 71, neutral 79,
# sadness 62; EMOVO 84 per emotion; TurEV-DB Angry 487, Calm (→ neutral) 408, Happy 357, Sad 483.
REAL_COUNTS = {
    "emodb": {"angry": 127, "happy": 71, "neutral": 79, "sad": 62},
    "emovo": {"angry": 84, "happy": 84, "neutral": 84, "sad": 84},
    "turev": {"angry": 487, "happy": 357, "neutral": 408, "sad": 483},
}


@pytest.mark.integration
@real
def test_real_corpora_merged_with_a_missing_one():
    table, errors, skipped = multicorpus.read_corpora(["emodb", "emovo", "turev", "cafe"],
                                                      corpora_root=SHARED)
    assert list(skipped["corpus"]) == ["cafe"]
    kept = table[table["label"].notna()]
    counts = {c: g["label"].value_counts().to_dict() for c, g in kept.groupby("corpus")}
    assert counts == REAL_COUNTS
    assert table.groupby("corpus")["speaker"].nunique().to_dict() == {"emodb": 10, "emovo": 6, "turev": 6}
    assert set(errors["reason"]) == {"not audio"}  # README.md, provenance.csv


@pytest.mark.integration
@real
def test_multicorpus_profile_stage_01(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SER_RESULTS_DIR", str(tmp_path / "results"))
    record = pipeline.run(profile="multicorpus", to_stage="01_preprocess", render=False, progress=False)
    assert record["stages"][0]["status"] == "ok"
    utt = corpora.load_utterances(tmp_path / "results" / "tables" / "utterances.csv")
    counts = {c: g["label"].value_counts().to_dict() for c, g in utt.groupby("corpus")}
    assert counts == REAL_COUNTS
    splits.speaker_disjoint_check(utt)
    per = utt.groupby(["corpus", "split"])["speaker"].nunique().unstack()
    assert (per[["test", "val"]] >= 1).all().all()  # every corpus tested on unseen speakers
    prov = json.loads((tmp_path / "results" / "provenance" / "01_preprocess.json").read_text())
    assert prov["params"]["corpora"] == list(_REAL) and prov["skipped_corpora"] == []
    errs = pd.read_csv(tmp_path / "results" / "tables" / "preprocess_errors.csv")
    assert set(errs["source"]) <= set(_REAL)
    issues = pd.read_csv(tmp_path / "results" / "tables" / "corpus_issues.csv")
    outside = issues[issues["issue"] == "label_outside_set"].set_index("corpus")["n_files"].to_dict()
    assert outside == {"emodb": 196, "emovo": 252}  # boredom, disgust, fear; disgusto, paura, sorpresa


# ---- bad input: conflicting labels, shared speaker ids, too few speakers, unknown labels ----


LABELS4 = ["angry", "happy", "neutral", "sad"]


def _issues(corpora_list, corpora_root, **kw):
    labels = LABELS4
    table, _, _ = multicorpus.read_corpora(corpora_list, corpora_root=corpora_root, labels=labels, **kw)
    names = list(dict.fromkeys(table["corpus"]))
    maps = multicorpus.label_maps_used(names, labels=labels, label_maps=kw.get("label_maps"))
    return table, *corpus_issues.check_corpora(table, label_maps=maps, labels=labels)


def test_issues_table_counts_every_left_out_file(corpora_root):
    table, kept, issues = _issues(["emodb", "emovo"], corpora_root)
    assert list(issues.columns) == list(corpus_issues.ISSUE_COLUMNS)
    assert len(kept) == len(table)
    outside = issues[issues["issue"] == "label_outside_set"].set_index("corpus")
    assert outside["n_files"].to_dict() == {"emodb": 10, "emovo": 6}  # boredom x10 speakers, paura x6
    assert "boredom (10)" in outside.loc["emodb", "detail"]
    assert set(issues["issue"]) == {"label_outside_set"}


def test_unknown_label_shared_speaker_and_conflicting_label_are_named(tmp_path, corpora_root):
    folder = tmp_path / "mine"
    for spk in ("f1", "m1", "x9"):  # f1, m1: EMOVO speaker ids too
        for emo in ("angry", "sad", "grumpy"):  # grumpy: in no label map
            write_wav(folder / emo / f"{spk}_001.wav")
    table, kept, issues = _issues(["emovo", {"corpus": "folder", "root": str(folder)}], corpora_root,
                                  label_maps={"folder": {"sad": "neutral"}})
    by = {k: g.reset_index(drop=True) for k, g in issues.groupby("issue")}
    unknown = by["unknown_label"]
    assert unknown[["corpus", "n_files"]].to_dict("records") == [{"corpus": "folder", "n_files": 3}]
    assert "grumpy (3)" in unknown.loc[0, "detail"]
    shared = by["shared_speaker_id"]
    assert sorted(shared["detail"].str.extract(r"speaker id '(\w+)'")[0]) == ["f1", "m1"]
    assert (shared["corpus"] == "emovo, folder").all()
    assert shared.loc[0, "n_files"] == 5 + 3  # 5 EMOVO files + 3 folder files of that id
    assert "emovo/f1" in " ".join(shared["action"]) and "folder/f1" in " ".join(shared["action"])
    conflict = by["conflicting_label"]
    assert conflict["detail"].tolist() == ["emotion 'sad' becomes different labels (folder: neutral)"]
    assert len(kept) == len(table)  # nothing left out by these three
    msgs = corpus_issues.issue_messages(issues)
    assert len(msgs) == len(issues) and msgs[0].startswith("CONFLICTING_LABEL folder: emotion 'sad'")
    assert any(m.startswith("UNKNOWN_LABEL folder: 3 file(s)") for m in msgs)


def test_corpus_with_one_speaker_is_left_out_and_counted(tmp_path, corpora_root):
    folder = tmp_path / "solo"
    for emo in ("angry", "sad"):
        for k in range(3):
            write_wav(folder / emo / f"f1_{k:03d}.wav")
    table, kept, issues = _issues(["emodb", {"corpus": "folder", "root": str(folder)}], corpora_root)
    few = issues[issues["issue"] == "too_few_speakers"]
    assert few[["corpus", "n_files"]].to_dict("records") == [{"corpus": "folder", "n_files": 6}]
    assert "1 labelled speaker(s), fewer than 2" in few["detail"].iloc[0]
    assert few["action"].iloc[0] == "corpus left out of the merged table"
    assert set(kept["corpus"]) == {"emodb"} and len(kept) == len(table) - 6
    # alone, it is kept (the split then says what it needs)
    _, kept1, issues1 = _issues([{"corpus": "folder", "root": str(folder)}], corpora_root)
    assert len(kept1) == 6 and issues1["action"].iloc[0].startswith("kept")


def test_check_corpora_rejects_a_table_without_its_columns():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['emotion'"):
        corpus_issues.check_corpora(pd.DataFrame({"corpus": [], "speaker": [], "label": [],
                                                  "dropped_reason": []}), label_maps={}, labels=["a"])
