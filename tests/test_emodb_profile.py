"""The EmoDB profile on the real corpus (integration; skipped when ../shared/data/emodb is absent).

Runs stage 01 through the pipeline API in temporary folders and checks the tables it
writes. Training and evaluation on EmoDB take minutes on a laptop CPU, so they are left
to `ser run --profile emodb --to 03_evaluate` and to benchmarks/.
"""

from __future__ import annotations

import pandas as pd
import pytest

from ser.core import paths
from ser.data import corpora, splits
from ser.run import params, pipeline

EMODB = paths.ROOT.parent / "shared" / "data" / "emodb"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (EMODB / "wav").is_dir(), reason=f"EmoDB not found at {EMODB}"),
]


def test_profile_points_at_the_corpus_and_names_declared_keys():
    p01 = params.load_stage_params("01_preprocess", profile="emodb")
    assert paths.resolve(p01["corpus_root"]) == (EMODB / "wav").resolve()
    assert p01["split_method"] == "fixed" and p01["manifest"] == "none"
    p02 = params.load_stage_params("02_train", profile="emodb")
    p03 = params.load_stage_params("03_evaluate", profile="emodb")
    assert p02["model_name"] == p03["model_name"] == "emodb_cnn"
    assert p02["labels"] == p01["labels"]


@pytest.fixture(scope="module")
def emodb_01(tmp_path_factory):
    root = tmp_path_factory.mktemp("emodb")
    mp = pytest.MonkeyPatch()
    mp.setenv("SER_DATA_DIR", str(root / "data"))
    mp.setenv("SER_RESULTS_DIR", str(root / "results"))
    try:
        record = pipeline.run(profile="emodb", to_stage="01_preprocess", render=False, progress=False)
        yield root / "results" / "tables", record
    finally:
        mp.undo()


def test_stage_01_reads_all_535_files_of_10_speakers(emodb_01):
    tables, record = emodb_01
    assert record["stages"][0]["status"] == "ok"
    utt = corpora.load_utterances(tables / "utterances.csv")
    excl = pd.read_csv(tables / "excluded_utterances.csv", dtype={"speaker": str})
    errors = pd.read_csv(tables / "preprocess_errors.csv")
    assert len(utt) + len(excl) == 535 and errors.empty
    assert set(utt["speaker"]) | set(excl["speaker"]) == {
        "03", "08", "09", "10", "11", "12", "13", "14", "15", "16"}
    # 4-class set: anger 127, happiness 71, neutral 79, sadness 62 (the corpus README)
    assert utt["label"].value_counts().to_dict() == {"angry": 127, "neutral": 79, "happy": 71, "sad": 62}
    assert excl["emotion"].value_counts().to_dict() == {"boredom": 81, "fear": 69, "disgust": 46}
    assert (utt["sample_rate"] == 16000).all() and (utt["corpus"] == "emodb").all()


def test_stage_01_split_is_the_named_speaker_disjoint_one(emodb_01):
    tables, _ = emodb_01
    utt = corpora.load_utterances(tables / "utterances.csv")
    splits.speaker_disjoint_check(utt)  # raises if a speaker is in two partitions
    by_split = utt.groupby("split")["speaker"].apply(lambda s: sorted(s.unique())).to_dict()
    assert by_split["test"] == ["03", "08"] and by_split["val"] == ["09", "10"]
    assert by_split["train"] == ["11", "12", "13", "14", "15", "16"]
    assert utt.groupby("speaker")["split"].nunique().max() == 1
