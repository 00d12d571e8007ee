"""The text channel per window: alignment, text emotion with a tiny random classifier mapped onto
the study's labels, fusion with the voice, caregiver words, and stats on any channel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from asr_doubles import build_tiny_text_classifier

from ser.data.labels import resolve_open_label_map
from ser.inference import words as tw
from ser.models.text_emotion import TextEmotionModel

LABELS = ("angry", "happy", "neutral", "sad")
VOCAB = ("bonjour", "madame", "je", "vais", "vous", "laver", "merci", "non", "arrête")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    folder = build_tiny_text_classifier(tmp_path_factory.mktemp("text") / "clf",
                                        labels=["joy", "anger", "sadness", "others", "surprise"], words=VOCAB)
    return folder


def _tables():
    words = pd.DataFrame({"recording": ["r1"] * 5 + ["r2"],
                          "start_s": [0.2, 0.8, 2.9, 3.5, 8.0, 0.5],
                          "end_s": [0.6, 1.2, 3.3, 3.9, 8.4, 0.9],
                          "word": ["bonjour", "madame", "je", "vais", "merci", "non"]})
    starts = np.array([0.0, 1.5, 3.0, 4.5, 6.0])
    win = pd.DataFrame({"recording": ["r1"] * 5 + ["r2", "r3"],
                        "start_s": [*starts, 0.0, 0.0], "end_s": [*(starts + 3.0), 3.0, 3.0]})
    return words, win


def test_window_words_by_midpoint_shared_by_overlapping_windows():
    words, win = _tables()
    per = tw.window_words(win, words)
    assert per == [["bonjour", "madame"], ["je", "vais"], ["je", "vais"], [], ["merci"], ["non"], []]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['word'\]"):
        tw.window_words(win, words.drop(columns="word"))


def test_open_label_map_uses_synonyms_and_overrides():
    m = resolve_open_label_map(["joy", "anger", "sadness", "others", "surprise"], labels=LABELS)
    assert m == {"joy": "happy", "anger": "angry", "sadness": "sad", "others": None, "surprise": None}
    m = resolve_open_label_map(["joy", "others"], labels=LABELS, overrides={"others": "neutral"})
    assert m["others"] == "neutral"
    with pytest.raises(ValueError, match="'calm' is not one of the classes"):
        resolve_open_label_map(["joy"], overrides={"calm": "neutral"})


def test_text_emotion_maps_classes_and_fills_windows(text_model):
    model = TextEmotionModel(text_model, labels=LABELS, label_map={"others": "neutral"})
    assert model.unmapped_labels == [] and model.class_map["surprise"] is None
    p = model.predict_proba(["bonjour madame", "non arrête", "merci"])
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.abs(p[0] - p[1]).max() > 1e-3  # the words matter
    # the mapped mass, renormalised: recompute from the raw softmax
    import torch
    enc = model.tokenizer(["bonjour madame"], return_tensors="pt")
    with torch.no_grad():
        raw = torch.softmax(model.model(**enc).logits, -1).numpy()[0]  # joy anger sadness others surprise
    want = np.array([raw[1], raw[0], raw[3], raw[2]]) / raw[:4].sum()
    np.testing.assert_allclose(p[0], want, rtol=1e-5)
    words, win = _tables()
    cols = tw.text_emotion_columns(win, words, model)
    assert list(cols.columns) == ["n_words", *(f"t_{lab}" for lab in LABELS)]
    assert list(cols["n_words"]) == [2, 2, 2, 0, 1, 1, 0]
    np.testing.assert_allclose(cols.iloc[0, 1:].to_numpy(float), p[0], rtol=1e-5)
    assert cols.iloc[3, 1:].isna().all() and cols.iloc[6, 1:].isna().all()
    no_neutral = TextEmotionModel(text_model, labels=LABELS)
    assert no_neutral.unmapped_labels == ["neutral"]
    assert (no_neutral.predict_proba(["merci"])[:, 2] == 0).all()
    with pytest.raises(ValueError, match="none of its classes"):
        TextEmotionModel(text_model, labels=["calm"])


def test_fusion_is_a_weighted_geometric_mean_with_acoustic_fallback():
    df = pd.DataFrame({"n_words": [3, 0], "p_a": [0.8, 0.6], "p_b": [0.2, 0.4],
                       "t_a": [0.2, np.nan], "t_b": [0.8, np.nan]})
    out = tw.fuse(df, labels=["a", "b"], text_weight=0.25)
    fa, fb = 0.8 ** 0.75 * 0.2 ** 0.25, 0.2 ** 0.75 * 0.8 ** 0.25
    np.testing.assert_allclose(out.loc[0, ["f_a", "f_b"]].to_numpy(float), [fa / (fa + fb), fb / (fa + fb)])
    np.testing.assert_allclose(out.loc[1, ["f_a", "f_b"]].to_numpy(float), [0.6, 0.4])
    assert list(out["fusion_source"]) == ["fused", "acoustic"]
    np.testing.assert_allclose(tw.fuse(df, labels=["a", "b"], text_weight=0.0).loc[0, "f_a"], 0.8)
    np.testing.assert_allclose(tw.fuse(df, labels=["a", "b"], text_weight=1.0).loc[0, "f_a"], 0.2, atol=1e-6)
    with pytest.raises(ValueError, match="text_weight must be in"):
        tw.fuse(df, labels=["a", "b"], text_weight=1.5)
    with pytest.raises(ValueError, match="run the text channel first"):
        tw.fuse(df.drop(columns="t_a"), labels=["a", "b"])


def test_caregiver_words_keep_only_her_turns():
    words, _ = _tables()
    turns = pd.DataFrame({"recording": ["r1", "r1", "r2"], "start_s": [0.0, 2.5, 0.0],
                          "end_s": [1.5, 4.0, 2.0], "is_caregiver": [True, False, False]})
    kept = tw.caregiver_words(words, turns)
    assert list(kept["word"]) == ["bonjour", "madame"]


def test_stats_select_an_emotion_channel():
    from ser.stats.descriptors import select_channel

    df = pd.DataFrame({"recording": ["r", "r"], "p_a": [0.8, 0.6], "p_b": [0.2, 0.4], "n_words": [2, 0],
                       "t_a": [0.1, np.nan], "t_b": [0.9, np.nan], "f_a": [0.5, 0.6], "f_b": [0.5, 0.4]})
    text = select_channel(df, channel="text")
    assert [c for c in text.columns if c[:2] in ("p_", "t_", "f_")] == ["p_a", "p_b"]
    np.testing.assert_allclose(text["p_a"], [0.1, np.nan])
    np.testing.assert_allclose(select_channel(df, channel="fused")["p_b"], [0.5, 0.4])
    np.testing.assert_allclose(select_channel(df)["p_a"], [0.8, 0.6])
    with pytest.raises(ValueError, match="no text channel columns"):
        select_channel(df.drop(columns=["t_a", "t_b"]), channel="text")
    with pytest.raises(ValueError, match="must be one of"):
        select_channel(df, channel="words")


def _site(tmp_path, body: str):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "index.html").write_text(f"<html><body>{body}</body></html>", encoding="utf-8")
    (site / "other.html").write_text("<p>Mean n_words per window: 2.4; t_happy 0.31</p>", encoding="utf-8")
    return site


def test_privacy_scan_fails_the_report_on_three_transcript_words(tmp_path):
    from ser.report import privacy

    folder = tmp_path / "data" / privacy.TRANSCRIPTS_SUBDIR
    folder.mkdir(parents=True)
    pd.DataFrame({"recording": ["p001_care"] * 4 + ["p002_care"] * 2, "start_s": [0.1, 0.5, 0.9, 1.3, 0.1, 0.4],
                  "end_s": [0.4, 0.8, 1.2, 1.6, 0.3, 0.6],
                  "word": ["Bonjour", "madame", "Dupont,", "levez-vous", "je", "vais"]}).to_csv(
        folder / "words.csv", index=False)
    pd.DataFrame({"recording": ["x"], "status": ["ok"]}).to_csv(folder / "words.summary.csv", index=False)
    tr = privacy.load_transcripts(folder)
    assert len(tr) == 6
    manifest = pd.DataFrame({"path": []})
    # two words, or words of two recordings run together, are not a transcript's sequence
    site = _site(tmp_path, "<p>She said <b>bonjour madame</b>. vais dupont levez</p>")
    privacy.check_site(site, manifest, transcripts=tr)
    assert (site / "index.html").is_file()
    site = _site(tmp_path, "<p>She said: \u00ab <em>Bonjour</em>, MADAME dupont \u00bb</p>")
    with pytest.raises(privacy.PrivacyError, match="index.html: a run of 3 words of a transcript") as err:
        privacy.check_site(site, manifest, transcripts=tr)
    assert "madame" not in str(err.value).lower()  # the message does not quote the words
    assert not (site / "index.html").exists() and (site / "other.html").is_file()
    assert privacy.transcript_ngrams(tr) >= {("bonjour", "madame", "dupont"), ("madame", "dupont", "levez")}
    assert privacy.load_transcripts(tmp_path / "none").empty


def test_off_switch_names_the_missing_model():
    assert tw.text_channel_off_reason(asr_model="openai/whisper-small", text_model="x/y") == ""
    reason = tw.text_channel_off_reason(asr_model="", text_model="x/y")
    assert "text channel" in reason and "asr_model is empty" in reason and "text_model" not in reason


def test_whole_path_tiny_whisper_words_to_fused_windows(tmp_path, text_model):
    from asr_doubles import build_tiny_whisper

    from ser.inference.transcribe import transcribe_paths
    from ser.models.asr import load_asr
    from ser.signal import audio

    wav = audio.write_wav(tmp_path / "p001_care.wav",
                          0.1 * np.random.default_rng(2).standard_normal(16_000 * 6).astype(np.float32), 16_000)
    asr = load_asr(build_tiny_whisper(tmp_path / "whisper"), backend="whisper", language="fr")
    words = transcribe_paths([wav], asr, asr_stamp={"model": "tiny"}, progress=False,
                             recording_ids={wav: "p001_care"}).words
    assert len(words) and set(words["recording"]) == {"p001_care"}
    starts = np.arange(0.0, 4.5, 1.5)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=len(starts))
    win = pd.DataFrame({"recording": "p001_care", "start_s": starts, "end_s": starts + 3.0,
                        **{f"p_{lab}": p[:, j] for j, lab in enumerate(LABELS)}})
    out = tw.add_text_channel(win, words, TextEmotionModel(text_model, labels=LABELS,
                                                            label_map={"others": "neutral"}), text_weight=0.5)
    assert list(out["n_words"]) == [len(w) for w in tw.window_words(win, words)]
    f = out[[f"f_{lab}" for lab in LABELS]].to_numpy()
    np.testing.assert_allclose(f.sum(1), 1.0)
    fused = out["fusion_source"].eq("fused").to_numpy()
    assert (fused == (out["n_words"] > 0).to_numpy()).all()
    np.testing.assert_allclose(f[~fused], p[~fused])
    with pytest.raises(ValueError, match="differ from the text model"):
        tw.add_text_channel(win.drop(columns="p_sad"), words, TextEmotionModel(text_model, labels=LABELS))
