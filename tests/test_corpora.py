"""Corpus readers, label maps and the recordings index, on tiny synthesised files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ser.core import paths
from ser.data import corpora, schema
from ser.data.labels import DEFAULT_LABEL_MAPS, resolve_label_map

SR = 16000
SHARED = paths.ROOT.parent / "shared" / "data"
EMODB = SHARED / "emodb" / "wav"
EMOVO = SHARED / "emovo" / "wav"
TUREV = SHARED / "turev" / "wav"


def write_wav(path: Path, *, seconds: float = 0.2, sr: int = SR) -> Path:
    """A 0.2 s tone (PCM16) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, subtype="PCM_16")
    return path


# (corpus, relative path, speaker, gender, emotion, label, text, intensity)
CASES = [
    ("emodb", "03a01Fa.wav", "03", "male", "happiness", "happy", "a01", None),
    ("emodb", "08b02Wb.wav", "08", "female", "anger", "angry", "b02", None),
    ("emodb", "16a05Lc.wav", "16", "female", "boredom", None, "a05", None),
    ("ravdess", "Actor_12/03-01-05-02-02-01-12.wav", "12", "female", "angry", "angry", "02", "strong"),
    ("ravdess", "Actor_01/03-02-04-01-01-02-01.wav", "01", "male", "sad", "sad", "01", "normal"),
    ("ravdess", "Actor_03/03-01-02-01-01-01-03.wav", "03", "male", "calm", None, "01", "normal"),
    ("cafe", "Colère/Faible/01-C-1-1.wav", "01", "male", "anger", "angry", "1", "low"),
    ("cafe", "Tristesse/Fort/04-T-2-6.wav", "04", "female", "sadness", "sad", "6", "high"),
    ("cafe", "Neutre/02-N-3.wav", "02", "female", "neutral", "neutral", "3", None),
    ("cafe", "Neutre/05-N-1-2.wav", "05", "male", "neutral", "neutral", "2", None),
    ("cafe", "Surprise/Fort/06-S-2-1.wav", "06", "female", "surprise", None, "1", "high"),
    ("cremad", "1001_DFA_ANG_XX.wav", "1001", "male", "anger", "angry", "DFA", None),
    ("cremad", "1002_IEO_HAP_HI.wav", "1002", "female", "happy", "happy", "IEO", "high"),
    ("cremad", "1091_TIE_FEA_LO.wav", "1091", "female", "fear", None, "TIE", "low"),
    ("cremad", "1001_MTI_SAD_MD.wav", "1001", "male", "sad", "sad", "MTI", "medium"),
    ("tess", "OAF_angry/OAF_back_angry.wav", "OAF", "female", "angry", "angry", "back", None),
    ("tess", "YAF_pleasant_surprised/YAF_dog_ps.wav", "YAF", "female", "pleasant_surprise", None,
     "dog", None),
    ("tess", "YAF_neutral/YAF_germ_Neutral.wav", "YAF", "female", "neutral", "neutral", "germ", None),
    ("savee", "ALL/DC_a01.wav", "DC", "male", "anger", "angry", "a01", None),
    ("savee", "ALL/KL_sa15.wav", "KL", "male", "sadness", "sad", "sa15", None),
    ("savee", "AudioData/JE/su03.wav", "JE", "male", "surprise", None, "su03", None),
    ("emovo", "f1/rab-f1-b1.wav", "f1", "female", "rabbia", "angry", "b1", None),
    ("emovo", "m3/gio-m3-l4.wav", "m3", "male", "gioia", "happy", "l4", None),
    ("emovo", "f2/neu-f2-n5.wav", "f2", "female", "neutrale", "neutral", "n5", None),
    ("emovo", "m1/tri-m1-d2.wav", "m1", "male", "tristezza", "sad", "d2", None),
    ("emovo", "m2/pau-m2-b3.wav", "m2", "male", "paura", None, "b3", None),
    ("emovo", "f3/dis-f3-n1.wav", "f3", "female", "disgusto", None, "n1", None),
    ("emovo", "sor-f3-l1.wav", "f3", "female", "sorpresa", None, "l1", None),
    ("turev", "Angry/1157_kz_acik.wav", "1157", None, "angry", "angry", "acik", None),
    ("turev", "Calm/7895_sk_beste.wav", "7895", None, "calm", "neutral", "beste", None),
    ("turev", "Happy/1234_mt_cay.wav", "1234", None, "happy", "happy", "cay", None),
    ("turev", "Sad/6783_hl_bugu.wav", "6783", None, "sad", "sad", "bugu", None),
    ("turev", "1984_sk_algi.wav", "1984", None, "calm", "neutral", "algi", None),
    ("folder", "happy/f7_001.wav", "f7", "female", "happy", "happy", None, None),
    ("folder", "Sadness/m2_x.wav", "m2", "male", "sadness", "sad", None, None),
    ("folder", "angry/spk9_001.wav", "spk9", None, "angry", "angry", None, None),
    ("demo", "neutral/m3_012.wav", "m3", "male", "neutral", "neutral", None, None),
]


@pytest.fixture
def cremad_demographics(tmp_path: Path) -> Path:
    root = tmp_path / "cremad"
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"ActorID": ["1001", "1002", "1091"], "Age": ["51", "21", "29"],
                  "Sex": ["Male", "Female", "Female"]}).to_csv(root / "VideoDemographics.csv", index=False)
    return root


@pytest.mark.parametrize(("corpus", "rel", "speaker", "gender", "emotion", "label", "text",
                          "intensity"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_reader_parses_convention(tmp_path, cremad_demographics, corpus, rel, speaker, gender,
                                  emotion, label, text, intensity):
    root = tmp_path / corpus
    write_wav(root / rel)
    table, errors = corpora.read_corpus(corpus, root)
    assert errors.empty, errors.to_dict("records")
    assert list(table.columns) == list(corpora.TABLE_COLUMNS)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["path"] == str((root / rel).resolve())
    assert Path(row["path"]).is_absolute()
    assert (row["corpus"], row["speaker"], row["emotion"]) == (corpus, speaker, emotion)
    assert (row["gender"] if pd.notna(row["gender"]) else None) == gender
    assert (row["text"] if pd.notna(row["text"]) else None) == text
    assert (row["intensity"] if pd.notna(row["intensity"]) else None) == intensity
    if label is None:
        assert pd.isna(row["label"])
        assert row["dropped_reason"] == f"emotion {emotion!r} not in label set"
    else:
        assert row["label"] == label
        assert pd.isna(row["dropped_reason"])
    assert row["duration_s"] == pytest.approx(0.2, abs=1e-3)
    assert row["sample_rate"] == SR
    language = {"emodb": "de", "emovo": "it", "turev": "tr", "cafe": "fr"}.get(
        corpus, None if corpus in ("folder", "demo") else "en")
    assert (row["language"] if pd.notna(row["language"]) else None) == language


@pytest.mark.parametrize("corpus", ["emodb", "emovo", "ravdess", "cafe", "cremad", "tess", "savee",
                                    "turev", "folder"])
def test_bad_files_go_to_errors_never_dropped(tmp_path, corpus):
    good = {"emodb": "03a01Wa.wav", "ravdess": "03-01-05-01-01-01-01.wav", "cafe": "01-C-1-1.wav",
            "cremad": "1001_DFA_ANG_XX.wav", "tess": "OAF_back_angry.wav", "savee": "DC_a01.wav",
            "emovo": "rab-f1-b1.wav", "turev": "1157_kz_acik.wav", "folder": "f1_000.wav"}[corpus]
    sub = {"folder": "angry", "emovo": "f1", "turev": "Angry"}.get(corpus, "x")
    root = tmp_path / corpus
    src = write_wav(root / sub / good)
    data = src.read_bytes()
    stem, ext = good.rsplit(".", 1)
    # truncated inside the header → unreadable; header without samples → zero length
    trunc = {"emodb": "03a02Wa", "ravdess": "03-01-05-01-02-01-01", "cafe": "01-C-1-2",
             "cremad": "1001_IEO_ANG_XX", "tess": "OAF_dog_angry", "savee": "DC_a02",
             "emovo": "rab-f1-b2", "turev": "1157_kz_algi", "folder": "f1_001"}[corpus]
    empty = {"emodb": "03a03Wa", "ravdess": "03-01-05-02-01-01-01", "cafe": "01-C-1-3",
             "cremad": "1001_TIE_ANG_XX", "tess": "OAF_cat_angry", "savee": "DC_a03",
             "emovo": "rab-f1-b3", "turev": "1157_kz_bugu", "folder": "f1_002"}[corpus]
    (root / sub / f"{trunc}.wav").write_bytes(data[:20])
    (root / sub / f"{empty}.wav").write_bytes(data[:44])
    (root / sub / "notes.txt").write_text("hello")
    (root / sub / ".DS_Store").write_bytes(b"\0\0")
    (root / sub / "badname.wav").write_bytes(data)
    table, errors = corpora.read_corpus(corpus, root)
    assert len(table) == 1 and table["path"].iloc[0] == str(src)
    reasons = dict(zip(errors["path"].map(lambda p: Path(p).name), errors["reason"], strict=True))
    assert reasons["notes.txt"] == "not audio"
    assert reasons[".DS_Store"] == "not audio"
    assert reasons[f"{trunc}.wav"].startswith("unreadable audio")
    assert reasons[f"{empty}.wav"] == "zero length"
    assert reasons["badname.wav"].startswith("name does not match convention")
    assert "expected" in reasons["badname.wav"]
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    assert len(table) + len(errors) == n_files  # every file accounted for
    assert not any(str(root) in r for r in errors["reason"])  # reasons never carry paths
    with pytest.raises(ValueError, match="not audio|unreadable|zero length|does not match"):
        corpora.read_corpus(corpus, root, strict=True)


def test_error_reasons_are_specific(tmp_path):
    write_wav(tmp_path / "e" / "99a01Wa.wav")           # not an EmoDB speaker
    write_wav(tmp_path / "r" / "01-01-05-01-01-01-01.wav")  # audio-video modality
    write_wav(tmp_path / "c" / "01-C-1.wav")             # intensity missing for anger
    write_wav(tmp_path / "f" / "deep" / "angry" / "f1_0.wav")  # not directly in an emotion folder
    _, e = corpora.read_corpus("emodb", tmp_path / "e")
    assert "speaker '99' is not an EmoDB speaker" in e["reason"].iloc[0]
    _, e = corpora.read_corpus("ravdess", tmp_path / "r")
    assert "modality 01 is not audio-only" in e["reason"].iloc[0]
    _, e = corpora.read_corpus("cafe", tmp_path / "c")
    assert "needs an intensity" in e["reason"].iloc[0]
    _, e = corpora.read_corpus("folder", tmp_path / "f")
    assert "directly in an emotion folder" in e["reason"].iloc[0]


# (corpus, relative path, the reason given)
BAD_NAMES = [
    ("emovo", "f1/xyz-f1-b1.wav", "emotion code 'xyz' is not an EMOVO emotion"),
    ("emovo", "f4/rab-f4-b1.wav", "speaker 'f4' is not an EMOVO speaker"),
    ("emovo", "f1/rab-f1-b4.wav", "sentence 'b4' is not an EMOVO sentence"),
    ("emovo", "m1/rab-f1-b1.wav", "speaker 'f1' in the name but the file lies in speaker 'm1'"),
    ("emovo", "f1/rab_f1_b1.wav", "name does not match convention: expected EEE-SS-TT.wav"),
    ("turev", "Angry/1111_kz_acik.wav", "actor '1111' is not a TurEV-DB actor"),
    ("turev", "Angry/1157_xx_acik.wav", "emotion code 'xx' is not a TurEV-DB emotion"),
    ("turev", "Calm/1157_kz_acik.wav", "emotion code 'kz' (angry) but the file lies in the folder 'Calm'"),
    ("turev", "Angry/1157-kz-acik.wav", "name does not match convention: expected <Emotion>/AAAA_CC_word"),
]


@pytest.mark.parametrize(("corpus", "rel", "reason"), BAD_NAMES,
                         ids=[f"{c}:{r}" for c, r, _ in BAD_NAMES])
def test_emovo_turev_bad_names_say_why(tmp_path, corpus, rel, reason):
    write_wav(tmp_path / rel)
    table, errors = corpora.read_corpus(corpus, tmp_path)
    assert table.empty and len(errors) == 1
    assert reason in errors["reason"].iloc[0]
    assert errors["reason"].iloc[0].startswith("name does not match convention")


def test_emovo_and_turev_label_maps():
    emovo = resolve_label_map("emovo")
    assert emovo == {"rabbia": "angry", "gioia": "happy", "neutrale": "neutral", "tristezza": "sad",
                     "paura": None, "disgusto": None, "sorpresa": None}
    assert DEFAULT_LABEL_MAPS["emovo"]["sorpresa"] == "surprise"
    assert resolve_label_map("turev") == {"angry": "angry", "calm": "neutral", "happy": "happy",
                                          "sad": "sad"}
    # calm is neutral for TurEV-DB only; RAVDESS has both, and its calm stays out of the 4 classes
    assert resolve_label_map("ravdess")["calm"] is None
    assert resolve_label_map("turev", overrides={"turev": {"calm": None}})["calm"] is None
    # Italian folder names map in the open layouts too
    assert resolve_label_map("folder")["rabbia"] == "angry"
    assert resolve_label_map("folder")["neutro"] == "neutral"


def test_language_option(tmp_path):
    write_wav(tmp_path / "angry" / "f1_000.wav")
    t, _ = corpora.read_corpus("folder", tmp_path, language="pt")
    assert t["language"].tolist() == ["pt"]
    t, _ = corpora.read_corpus("demo", tmp_path)
    assert t["language"].isna().all()
    with pytest.raises(ValueError, match="ISO 639-1"):
        corpora.read_corpus("folder", tmp_path, language="Portuguese")
    write_wav(tmp_path / "e" / "03a01Wa.wav")
    assert corpora.read_corpus("emodb", tmp_path / "e", language="de")[0]["language"].tolist() == ["de"]
    with pytest.raises(ValueError, match="language='it' contradicts corpus 'emodb'.*'de'"):
        corpora.read_corpus("emodb", tmp_path / "e", language="it")
    assert set(corpora.LANGUAGES) == set(corpora.CORPORA) - {"folder", "demo"}


def test_ravdess_channels_filter(tmp_path):
    write_wav(tmp_path / "03-01-05-01-01-01-01.wav")
    write_wav(tmp_path / "03-02-05-01-01-01-01.wav")
    t, e = corpora.read_corpus("ravdess", tmp_path, channels=("speech",))
    assert len(t) == 1 and len(e) == 1 and "channel 02 is excluded" in e["reason"].iloc[0]
    with pytest.raises(ValueError, match="channels"):
        corpora.read_corpus("ravdess", tmp_path, channels=("speech", "whisper"))


def test_cremad_gender_na_without_demographics(tmp_path):
    write_wav(tmp_path / "1001_DFA_ANG_XX.wav")
    t, _ = corpora.read_corpus("cremad", tmp_path)
    assert t["gender"].isna().all()
    with pytest.raises(FileNotFoundError, match="demographics"):
        corpora.read_corpus("cremad", tmp_path, demographics=tmp_path / "nope.csv")


def test_folder_speaker_pattern(tmp_path):
    write_wav(tmp_path / "happy" / "sess1-F03-utt7.wav")
    t, e = corpora.read_corpus("folder", tmp_path,
                               speaker_pattern=r"-(?P<speaker>[FM]\d+)-utt(?P<text>\d+)$")
    assert e.empty and t["speaker"].iloc[0] == "F03" and t["gender"].iloc[0] == "female"
    assert t["text"].iloc[0] == "7"
    with pytest.raises(ValueError, match=r"named group \(\?P<speaker>"):
        corpora.read_corpus("folder", tmp_path, speaker_pattern=r"(\w+)_")
    with pytest.raises(ValueError, match="folder/demo layouts only"):
        corpora.read_corpus("emodb", tmp_path, speaker_pattern=r"(?P<speaker>\w+)")


def test_unmapped_emotion_is_kept_with_reason_and_strict_raises(tmp_path):
    write_wav(tmp_path / "excited" / "f1_000.wav")
    write_wav(tmp_path / "angry" / "f1_001.wav")
    t, e = corpora.read_corpus("folder", tmp_path)
    assert e.empty and len(t) == 2
    row = t[t["emotion"] == "excited"].iloc[0]
    assert pd.isna(row["label"])
    assert row["dropped_reason"] == "emotion 'excited' not in the label map of corpus 'folder'"
    with pytest.raises(ValueError, match="excited.*label_map"):
        corpora.read_corpus("folder", tmp_path, strict=True)
    per_emotion = corpora.emotion_summary(t).set_index("emotion")
    assert per_emotion.loc["angry", "label"] == "angry" and per_emotion.loc["angry", "n"] == 1
    assert pd.isna(per_emotion.loc["excited", "label"])
    summary = corpora.excluded_summary(t)
    assert summary.to_dict("records") == [{"corpus": "folder", "emotion": "excited", "dropped_reason":
                                           row["dropped_reason"], "n": 1}]


def test_label_maps_and_overrides(tmp_path):
    assert resolve_label_map("emodb")["boredom"] is None
    assert resolve_label_map("emodb")["anger"] == "angry"
    seven = resolve_label_map("emodb", labels=["angry", "boredom", "disgust", "fear", "happy",
                                                "neutral", "sad"])
    assert None not in seven.values() and len(set(seven.values())) == 7
    merged = resolve_label_map("ravdess", overrides={"ravdess": {"calm": "neutral"}})
    assert merged["calm"] == "neutral" and merged["surprised"] is None
    assert resolve_label_map("emodb", overrides={"emodb": {"anger": None}})["anger"] is None
    for corpus, emotions in DEFAULT_LABEL_MAPS.items():
        assert set(emotions.values()) <= {"angry", "happy", "neutral", "sad", "fear", "disgust",
                                          "surprise", "boredom", "calm"}, corpus
    with pytest.raises(ValueError, match="'furious' is not an emotion of ravdess"):
        resolve_label_map("ravdess", overrides={"ravdess": {"furious": "angry"}})
    with pytest.raises(ValueError, match="unknown corpus key"):
        resolve_label_map("emodb", overrides={"emodbb": {}})
    with pytest.raises(ValueError, match="duplicated label"):
        resolve_label_map("emodb", labels=["angry", "angry"])
    # the reader applies an explicit map
    write_wav(tmp_path / "03-01-02-01-01-01-03.wav")
    t, _ = corpora.read_corpus("ravdess", tmp_path, label_map=merged)
    assert t["label"].tolist() == ["neutral"]


def test_missing_root_names_folder_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.*run `ser demo-data` first"):
        corpora.read_corpus("demo", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"nope.*corpus_root"):
        corpora.read_corpus("emodb", tmp_path / "nope")
    for name in ("emovo", "turev"):
        with pytest.raises(FileNotFoundError, match=rf"nope does not exist \({name}\).*{name} audio"):
            corpora.read_corpus(name, tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown corpus 'iemocap'"):
        corpora.read_corpus("iemocap", tmp_path)


# ---------------------------------------------------------------- recordings manifest

def make_cohort(root: Path) -> Path:
    rows = []
    for cg, level in [("p001", "untrained"), ("p002", "expert"), ("p003", "beginner")]:
        for phase in ("care", "control"):
            write_wav(root / "audio" / f"{cg}_{phase}.wav", seconds=0.5)
            rows.append({"recording": f"{cg}_{phase}", "caregiver": cg, "level": level,
                         "phase": phase, "session": "1", "path": f"audio/{cg}_{phase}.wav"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_index_recordings_resolves_and_orders(tmp_path):
    rec, err = corpora.index_recordings(make_cohort(tmp_path))
    assert err.empty
    assert list(rec.columns) == list(schema.RECORDING_COLUMNS)
    assert rec["level"].tolist() == ["untrained"] * 2 + ["beginner"] * 2 + ["expert"] * 2
    assert rec["phase"].tolist() == ["control", "care"] * 3
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in rec["path"])
    assert rec["duration_s"].tolist() == pytest.approx([0.5] * 6, abs=1e-3)
    assert (rec["sample_rate"] == SR).all() and rec["session"].tolist() == ["1"] * 6


def test_index_recordings_carries_enrolment_clips_and_speaker_counts(tmp_path):
    """The optional manifest columns reach recordings.csv (stage 04's diarization reads them
    there): enrolment clips made absolute, speaker counts as numbers, a bad count left out."""
    manifest = make_cohort(tmp_path)
    man = pd.read_csv(manifest, dtype=str)
    man["enrolment_path"] = ["clips/p001.wav", "", "", "", "", ""]
    man["speakers"] = ["1", "", "2", "two", "0", ""]
    man.to_csv(manifest, index=False)
    rec, err = corpora.index_recordings(manifest)
    assert list(rec.columns) == list(schema.RECORDING_COLUMNS) + ["enrolment_path", "speakers"]
    by = rec.set_index("recording")
    assert by.loc[man.loc[0, "recording"], "enrolment_path"] == str((tmp_path / "clips" / "p001.wav").resolve())
    want = {r: {"1": 1, "2": 2, "": 0}[n] for r, n in zip(man["recording"], man["speakers"]) if n not in ("two", "0")}
    assert by["speakers"].fillna(0).astype(int).to_dict() == want
    assert len(err) == 2 and err["reason"].str.contains("speakers must be a whole number >= 1").all()
    assert "got 'two'" in " ".join(err["reason"]) and "got '0'" in " ".join(err["reason"])
    rec.to_csv(tmp_path / "recordings.csv", index=False)
    back = corpora.load_recordings(tmp_path / "recordings.csv")
    back = back.set_index("recording")
    assert back["enrolment_path"].fillna("").to_dict() == by["enrolment_path"].fillna("").to_dict()
    assert back["speakers"].fillna(0).astype(int).to_dict() == want


def test_cohort_summary_counts_levels_in_order(tmp_path):
    rec, _ = corpora.index_recordings(make_cohort(tmp_path))
    summary = corpora.cohort_summary(rec)
    assert summary.index.tolist() == ["untrained", "beginner", "intermediate", "expert"]
    assert summary["caregivers"].tolist() == [1, 1, 0, 1]
    assert summary["recordings"].tolist() == [2, 2, 0, 2]
    assert summary["control (min)"].tolist() == pytest.approx([0.5 / 60, 0.5 / 60, 0, 0.5 / 60])
    assert summary["care (min)"].sum() == pytest.approx(3 * 0.5 / 60)
    empty = corpora.cohort_summary(pd.DataFrame(columns=list(schema.RECORDING_COLUMNS)))
    assert empty["caregivers"].tolist() == [0, 0, 0, 0]


def test_index_recordings_bad_rows_become_errors(tmp_path):
    manifest = make_cohort(tmp_path)
    man = pd.read_csv(manifest, dtype=str)
    man.loc[[0, 1], "level"] = "novice"
    man.loc[3, "phase"] = "lunch"
    man.loc[4, "path"] = "audio/missing.wav"
    (tmp_path / "audio" / "p003_control.wav").write_bytes(b"RIFF")
    man.to_csv(manifest, index=False)
    rec, err = corpora.index_recordings(manifest)
    assert set(rec["recording"]) == {"p002_care"}
    reasons = " | ".join(err["reason"])
    assert "unknown level 'novice'" in reasons and "recording 'p001_care'" in reasons
    assert "unknown phase 'lunch'" in reasons
    assert "audio file not found" in reasons
    assert "unreadable audio" in reasons
    assert len(rec) + len(err) == len(man)


def test_index_recordings_caregiver_with_two_levels(tmp_path):
    manifest = make_cohort(tmp_path)
    man = pd.read_csv(manifest, dtype=str)
    man.loc[man["recording"] == "p002_care", "level"] = "beginner"
    man.to_csv(manifest, index=False)
    rec, err = corpora.index_recordings(manifest)
    assert "p002" not in set(rec["caregiver"])
    assert err["reason"].str.contains("caregiver 'p002' is listed under several levels").sum() == 2


def test_index_recordings_missing_column_and_file(tmp_path):
    manifest = make_cohort(tmp_path)
    pd.read_csv(manifest).drop(columns=["phase"]).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match=r"manifest\.csv: missing column\(s\) phase"):
        corpora.index_recordings(manifest)
    with pytest.raises(FileNotFoundError, match="nope.csv does not exist.*ser demo-data"):
        corpora.index_recordings(tmp_path / "nope.csv")


def test_load_utterances_keeps_ids_as_strings(tmp_path):
    write_wav(tmp_path / "c" / "03a01Wa.wav")
    t, _ = corpora.read_corpus("emodb", tmp_path / "c")
    t = t.drop(columns="dropped_reason").assign(split="train")
    t.to_csv(tmp_path / "utterances.csv", index=False)
    back = corpora.load_utterances(tmp_path / "utterances.csv")
    assert back["speaker"].tolist() == ["03"] and back["language"].tolist() == ["de"]
    assert pd.isna(back["intensity"].iloc[0]) and back["duration_s"].dtype == float
    t.drop(columns="split").to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(ValueError, match="missing column.*split"):
        corpora.load_utterances(tmp_path / "old.csv")
    with pytest.raises(FileNotFoundError, match="01_preprocess"):
        corpora.load_utterances(tmp_path / "none.csv")


@pytest.mark.integration
@pytest.mark.skipif(not EMODB.is_dir(), reason=f"EmoDB not found at {EMODB}")
def test_emodb_real_corpus():
    start = time.perf_counter()
    labels = ["angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"]
    table, errors = corpora.read_corpus("emodb", EMODB, label_map=resolve_label_map("emodb", labels=labels))
    assert time.perf_counter() - start < 10
    assert errors.empty and len(table) == 535
    assert table["speaker"].nunique() == 10
    letters = {"anger": "W", "boredom": "L", "neutral": "N", "happiness": "F", "fear": "A",
               "sadness": "T", "disgust": "E"}
    counts = table["emotion"].map(letters).value_counts().to_dict()
    assert counts == {"W": 127, "L": 81, "N": 79, "F": 71, "A": 69, "T": 62, "E": 46}
    assert table["label"].notna().all()
    assert table.groupby("gender")["speaker"].nunique().to_dict() == {"female": 5, "male": 5}
    assert (table["sample_rate"] == 16000).all()
    assert table["duration_s"].sum() / 3600 == pytest.approx(0.41, abs=0.01)
    four, _ = corpora.read_corpus("emodb", EMODB)  # default 4-class set
    assert four["label"].notna().sum() == 127 + 79 + 71 + 62


@pytest.mark.integration
@pytest.mark.skipif(not EMOVO.is_dir(), reason=f"EMOVO not found at {EMOVO}")
def test_emovo_real_corpus():
    labels = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    table, errors = corpora.read_corpus("emovo", EMOVO, label_map=resolve_label_map("emovo", labels=labels))
    # the reference copy's provenance.csv is the only other file, reported as such
    assert errors.to_dict("records") == [{"path": str(EMOVO / "provenance.csv"), "reason": "not audio"}]
    # README: 588 files, 6 actors (f1 f2 f3 female, m1 m2 m3 male), 14 sentences, 7 emotions x 84
    assert len(table) == 588 and table["label"].notna().all()
    assert table.groupby("speaker")["gender"].first().to_dict() == {
        "f1": "female", "f2": "female", "f3": "female", "m1": "male", "m2": "male", "m3": "male"}
    per_cell = table.groupby(["speaker", "emotion"]).size()
    assert len(per_cell) == 6 * 7 and (per_cell == 14).all()
    assert table["emotion"].value_counts().to_dict() == dict.fromkeys(
        ["disgusto", "gioia", "neutrale", "paura", "rabbia", "sorpresa", "tristezza"], 84)
    assert table["text"].nunique() == 14 and (table.groupby("text").size() == 42).all()
    assert (table["language"] == "it").all() and (table["sample_rate"] == 16000).all()
    assert table["duration_s"].sum() / 3600 == pytest.approx(0.51, abs=0.01)
    four, _ = corpora.read_corpus("emovo", EMOVO)  # default 4-class set
    assert four["label"].value_counts().to_dict() == {"angry": 84, "happy": 84, "neutral": 84, "sad": 84}


@pytest.mark.integration
@pytest.mark.skipif(not TUREV.is_dir(), reason=f"TurEV-DB not found at {TUREV}")
def test_turev_real_corpus():
    table, errors = corpora.read_corpus("turev", TUREV)  # default 4-class set, Calm → neutral
    assert errors.to_dict("records") == [{"path": str(TUREV / "provenance.csv"), "reason": "not audio"}]
    # README: 1,735 words of 6 actors (150-328 each); Angry 487, Calm 408, Happy 357, Sad 483
    assert len(table) == 1735 and table["label"].notna().all()
    assert table["emotion"].value_counts().to_dict() == {"angry": 487, "sad": 483, "calm": 408,
                                                         "happy": 357}
    assert table["label"].value_counts().to_dict() == {"angry": 487, "sad": 483, "neutral": 408,
                                                       "happy": 357}
    per_speaker = table.groupby("speaker").size().to_dict()
    assert sorted(per_speaker) == ["1157", "1234", "1358", "1984", "6783", "7895"]
    assert min(per_speaker.values()) == 150 and max(per_speaker.values()) == 328
    assert table["gender"].isna().all()  # the corpus does not publish its actors' sex
    assert (table["language"] == "tr").all() and (table["sample_rate"] == 16000).all()
    # the code in the name matches the folder (else the file would be an error)
    folder = table["path"].map(lambda p: Path(p).parent.name.lower())
    assert (folder == table["emotion"]).all()
    assert table["duration_s"].sum() / 3600 == pytest.approx(0.46, abs=0.01)
