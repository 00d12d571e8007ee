"""Stage 04's text channel over the cohort (the library path of its notebook cells): tiny random
Whisper and text classifier, transcript under data/, windows.csv rewritten with the text
columns, resume, caregiver's words only with speaker turns, and the off switch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from asr_doubles import build_tiny_text_classifier, build_tiny_whisper

from ser.inference import words as tw
from ser.inference.text_channel import TextChannelOptions, add_text_channel_to_table
from ser.models.asr import load_asr
from ser.signal import audio
from ser.stats.descriptors import select_channel

LABELS = ("angry", "happy", "neutral", "sad")
RECS = ("p001_care", "p002_care", "p003_care")  # p003's file is missing: not transcribed


class CountingAsr:
    """The tiny Whisper, counting the blocks it is asked to transcribe."""

    def __init__(self, asr):
        self.asr, self.name, self.max_block_s, self.calls = asr, asr.name, asr.max_block_s, 0

    def words(self, y):
        self.calls += 1
        return self.asr.words(y)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    text = build_tiny_text_classifier(root / "clf", labels=["anger", "joy", "neutral", "sadness"],
                                      words=("bonjour", "madame", "je", "vais", "vous", "laver"))
    return build_tiny_whisper(root / "whisper"), text


def _cohort(tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for r in RECS:
        p = tmp_path / "audio" / f"{r}.wav"
        if r != "p003_care":
            audio.write_wav(p, 0.1 * rng.standard_normal(16_000 * 6).astype(np.float32), 16_000)
        paths.append(str(p))
    recordings = pd.DataFrame({"recording": list(RECS), "caregiver": ["p001", "p002", "p003"],
                               "level": "expert", "phase": "care", "path": paths})
    starts = np.arange(0.0, 4.0, 1.0)
    p = np.random.default_rng(0).dirichlet(np.ones(4), size=len(starts) * len(RECS))
    windows = pd.DataFrame({"recording": np.repeat(RECS, len(starts)), "caregiver": "p00x", "level": "expert",
                            "phase": "care", "start_s": np.tile(starts, len(RECS)),
                            "end_s": np.tile(starts + 3.0, len(RECS)),
                            **{f"p_{lab}": p[:, j] for j, lab in enumerate(LABELS)}, "speech_ratio": 0.9})
    csv = tmp_path / "results" / "windows.csv"
    csv.parent.mkdir(parents=True)
    windows.to_csv(csv, index=False)
    return recordings, windows, csv


def test_text_channel_of_stage_04_rewrites_windows_and_resumes(tmp_path, models):
    whisper, text = models
    recordings, before, csv = _cohort(tmp_path)
    options = TextChannelOptions(asr_model=str(whisper), language="fr", text_model=str(text),
                                 text_weight=0.5, device="cpu")
    transcript = tmp_path / "data" / "transcripts" / "words.csv"
    asr = CountingAsr(load_asr(whisper, language="fr"))
    res = add_text_channel_to_table(csv, recordings, options=options, transcripts_csv=transcript,
                                    asr=asr, progress=False)
    assert asr.calls == 2  # one 6 s block per readable recording
    out = pd.read_csv(csv, dtype={"recording": str})
    assert list(out.columns) == [*before.columns, "n_words", *(f"t_{lab}" for lab in LABELS),
                                 *(f"f_{lab}" for lab in LABELS), "fusion_source"]
    assert tw.text_columns(out.columns) == list(out.columns[len(before.columns):])
    words = pd.read_csv(transcript, dtype={"recording": str, "word": str}, keep_default_na=False)
    assert len(words) and set(words["recording"]) <= {"p001_care", "p002_care"}
    done = out["recording"].isin(["p001_care", "p002_care"]).to_numpy()
    assert list(out.loc[done, "n_words"]) == [len(w) for w in tw.window_words(before[done], words)]
    assert out.loc[~done, "n_words"].isna().all()  # not transcribed: unknown, not zero
    assert (out.loc[~done, "fusion_source"] == "acoustic").all()
    p = out[[f"p_{lab}" for lab in LABELS]].to_numpy()
    f = out[[f"f_{lab}" for lab in LABELS]].to_numpy()
    t = out[[f"t_{lab}" for lab in LABELS]].to_numpy()
    fused = out["fusion_source"].eq("fused").to_numpy()
    assert fused.any() and (fused == (out["n_words"].fillna(0) > 0).to_numpy()).all()
    np.testing.assert_allclose(t[fused].sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(f[~fused], p[~fused], rtol=1e-6)
    g = np.sqrt(p[fused] * t[fused])  # text_weight 0.5: geometric mean, renormalised
    np.testing.assert_allclose(f[fused], g / g.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    assert res.counts == {"recordings_transcribed": 2, "words": len(words), "words_counted": len(words),
                          "windows_with_words": int(fused.sum()), "windows": len(out)}
    assert len(res.failures) == 1 and not res.caregiver_only
    np.testing.assert_allclose(select_channel(out, channel="fused")["p_happy"], out["f_happy"])

    again = add_text_channel_to_table(csv, recordings, options=options, transcripts_csv=transcript,
                                      asr=asr, progress=False)
    assert asr.calls == 2  # both transcripts resumed; the missing file tried again and failed again
    pd.testing.assert_frame_equal(pd.read_csv(csv, dtype={"recording": str}), out)
    assert again.counts == res.counts


def test_only_the_caregivers_words_with_speaker_turns(tmp_path, models):
    whisper, text = models
    recordings, before, csv = _cohort(tmp_path)
    speakers = tmp_path / "results" / "speakers.csv"
    pd.DataFrame({"recording": ["p001_care", "p001_care", "p002_care"], "start_s": [0.0, 2.0, 0.0],
                  "end_s": [2.0, 6.0, 6.0], "speaker": ["S0", "S1", "S0"],
                  "is_caregiver": ["True", "False", ""], "confidence": 0.9}).to_csv(speakers, index=False)
    options = TextChannelOptions(asr_model=str(whisper), text_model=str(text), device="cpu")
    res = add_text_channel_to_table(csv, recordings, options=options, speakers_csv=speakers,
                                    transcripts_csv=tmp_path / "data" / "transcripts" / "words.csv",
                                    progress=False)
    assert res.caregiver_only
    out = res.windows
    words = pd.read_csv(tmp_path / "data" / "transcripts" / "words.csv", dtype={"recording": str})
    hers = words[(words["recording"] == "p001_care") & ((words["start_s"] + words["end_s"]) / 2 < 2.0)]
    assert res.counts["words_counted"] == len(hers) < len(words)
    r1 = (out["recording"] == "p001_care").to_numpy()
    assert list(out.loc[r1, "n_words"]) == [len(w) for w in tw.window_words(before[r1], hers)]
    assert out.loc[~r1, "n_words"].isna().all()  # p002: caregiver not identified; p003: not transcribed
    assert (out.loc[~r1, "fusion_source"] == "acoustic").all()
    # no speakers.csv: every voice
    res = add_text_channel_to_table(csv, recordings, options=options, speakers_csv=tmp_path / "none.csv",
                                    transcripts_csv=tmp_path / "data" / "transcripts" / "words.csv",
                                    progress=False)
    assert not res.caregiver_only and res.counts["words_counted"] == len(words)


def test_text_channel_refuses_missing_models_and_dimensional_tables(tmp_path, models):
    whisper, text = models
    recordings, before, csv = _cohort(tmp_path)
    off = TextChannelOptions(asr_model=str(whisper), text_model=" ")
    assert "text_model is empty" in off.off_reason and "asr_model" not in off.off_reason
    with pytest.raises(ValueError, match="text channel .* is off: no text-emotion model"):
        add_text_channel_to_table(csv, recordings, options=off, transcripts_csv=tmp_path / "w.csv")
    assert list(pd.read_csv(csv).columns) == list(before.columns)  # untouched
    dims = before.drop(columns=[f"p_{lab}" for lab in LABELS]).assign(d_arousal=0.5, d_valence=0.5)
    dims.to_csv(csv, index=False)
    with pytest.raises(ValueError, match="windows.csv has no emotion probabilities"):
        add_text_channel_to_table(csv, recordings, transcripts_csv=tmp_path / "w.csv",
                                  options=TextChannelOptions(asr_model=str(whisper), text_model=str(text)))
    with pytest.raises(FileNotFoundError, match="stage 04's window table"):
        add_text_channel_to_table(tmp_path / "nope.csv", recordings, transcripts_csv=tmp_path / "w.csv",
                                  options=TextChannelOptions(asr_model=str(whisper), text_model=str(text)))


@pytest.mark.parametrize("channel", ["text", "fused"])
def test_select_channel_without_text_columns_names_the_param_and_stage_04(channel):
    df = pd.DataFrame({"recording": ["r"], "p_a": [0.7], "p_b": [0.3]})
    with pytest.raises(ValueError, match=rf"windows.csv has no {channel} channel columns .*"
                                         r"params/04_inference.yaml.*channel: acoustic"):
        select_channel(df, channel=channel, source="windows.csv")
    with pytest.raises(ValueError, match=r"\(param channel\) must be one of acoustic, text, fused"):
        select_channel(df, channel="words")
