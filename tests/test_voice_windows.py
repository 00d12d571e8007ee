"""Whose voice is in each window (ser.inference.speakers) and stage 04 with speaker turns:
share columns, ``speaker="caregiver"`` silencing the other voices, the ``vad`` option."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from bundle_double import BundleDouble

from ser.data.synth import Voice, stream_rng, synthesize_utterance
from ser.inference import speakers
from ser.inference.options import InferenceOptions
from ser.inference.stamp import model_stamp_path
from ser.inference.table import predict_table
from ser.signal import audio

SR = 16000
WOMAN = Voice("w", gender="f", f0_base_hz=225.0, formant_scale=1.2, rate_factor=1.05)
MAN = Voice("m", gender="m", f0_base_hz=105.0, formant_scale=0.95, tilt=0.05, rate_factor=0.8,
            breathiness=1.5)


class LoudnessBundle(BundleDouble):
    """Stand-in model: softmax of window level statistics; records what it heard."""

    def __init__(self):
        self.labels = ["angry", "happy", "neutral"]
        self.sample_rate, self.window_s = SR, 2.0
        self.window_samples = int(self.window_s * SR)
        self.pitch_norm_hz = 0.0
        self.seen: list[np.ndarray] = []

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        self.seen.append(windows.copy())
        z = np.stack([windows.std(1) * 20, np.abs(windows).max(1) * 5, np.zeros(len(windows))], axis=1)
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)


def two_voice_recording(seconds: float, *, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Alternating turns of WOMAN (the caregiver) and MAN with pauses; (audio, true turns)."""
    rng = stream_rng(seed, "voice-windows")
    y = np.zeros(int(seconds * SR), np.float32)
    t, k, rows = 0.3, 0, []
    while True:
        d = float(rng.uniform(1.5, 3.0))
        if t + d > seconds - 0.1:
            break
        v = (WOMAN, MAN)[k % 2]
        u = synthesize_utterance(emotion="neutral", voice=v, rng=rng, sample_rate=SR, duration_s=d)
        a = int(t * SR)
        y[a:a + len(u)] += u
        rows.append({"start_s": t, "end_s": t + len(u) / SR, "speaker": v.speaker,
                     "is_caregiver": v is WOMAN, "confidence": 1.0})
        t += d + float(rng.uniform(0.2, 0.6))
        k += 1
    y += 3e-4 * rng.standard_normal(len(y)).astype(np.float32)
    return y, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("voices")
    recs, turns = [], []
    for i, (rec, phase) in enumerate([("p001_control", "control"), ("p001_care", "care")]):
        y, t = two_voice_recording(24.0, seed=i)
        audio.write_wav(d / f"{rec}.wav", y, SR)
        recs.append({"recording": rec, "caregiver": "p001", "level": "expert", "phase": phase,
                     "session": 1, "path": str(d / f"{rec}.wav")})
        turns.append(t.assign(recording=rec))
    return pd.DataFrame(recs), pd.concat(turns, ignore_index=True)


def _run(cohort, tmp_path, *, turns=None, **opts):
    recs, _ = cohort
    b = LoudnessBundle()
    df = predict_table(b, recs, options=InferenceOptions(hop_s=1.0, **opts), out_csv=tmp_path / "w.csv",
                       failures_csv=tmp_path / "f.csv", progress=False, turns=turns)
    return df, b


def test_window_speaker_seconds_and_other_intervals():
    t = pd.DataFrame({"start_s": [0.5, 3.0, 6.0], "end_s": [2.5, 5.0, 8.0],
                      "is_caregiver": pd.array([True, False, True], dtype="boolean")})
    got = speakers.window_speaker_seconds(np.array([0.0, 2.0, 4.0, 8.5]), np.array([3.0, 5.0, 7.0, 9.0]), t)
    np.testing.assert_allclose(got["caregiver_speech_s"], [2.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(got["other_speech_s"], [0.0, 2.0, 1.0, 0.0])
    np.testing.assert_allclose(got["caregiver_share"], [1.0, 0.2, 0.5, np.nan])
    np.testing.assert_allclose(speakers.other_intervals(t), [[3.0, 5.0]])
    unknown = t.assign(is_caregiver=pd.array([None] * 3, dtype="boolean"))
    assert speakers.window_speaker_seconds(np.array([0.0]), np.array([3.0]), unknown).isna().all().all()
    with pytest.raises(ValueError, match="not identified"):
        speakers.other_intervals(unknown)


def test_silence_intervals_zero_inside_and_ramp_at_edges():
    y = np.ones(SR, np.float32)
    z = speakers.silence_intervals(y, SR, np.array([[0.5, 0.6]]), offset_s=0.25)
    assert np.all(z[int(0.25 * SR):int(0.35 * SR)] == 0)
    assert z[0] == 1 and z[-1] == 1
    ramp = z[int(0.25 * SR) - 160:int(0.25 * SR)]
    assert np.all(np.diff(ramp) <= 0) and ramp[0] > 0.99  # fades out, no step


def test_windows_carry_share_columns_and_all_mode_is_unchanged(cohort, tmp_path):
    recs, turns = cohort
    plain, _ = _run(cohort, tmp_path / "a")
    with_turns, _ = _run(cohort, tmp_path / "b", turns=turns)
    assert list(with_turns.columns) == [*plain.columns, *speakers.SPEAKER_COLUMNS]
    pd.testing.assert_frame_equal(with_turns[plain.columns], plain)  # same audio, same numbers
    w = with_turns
    assert (w["caregiver_speech_s"] + w["other_speech_s"] <= w["end_s"] - w["start_s"] + 1e-9).all()
    assert w["caregiver_share"].between(0, 1).all() and w["caregiver_share"].nunique() > 3
    # the share follows the truth: a window inside one of her turns is all hers
    first = turns[turns["recording"] == "p001_control"].iloc[0]
    inside = w[(w["recording"] == "p001_control") & (w["start_s"] >= first["start_s"])
               & (w["end_s"] <= first["end_s"])]
    assert len(inside) and (inside["caregiver_share"] == 1.0).all()
    assert not (tmp_path / "b" / "w.model.json").read_text().count("voice")  # default stamp


def test_caregiver_mode_hears_only_her_voice(cohort, tmp_path):
    recs, turns = cohort
    both, _ = _run(cohort, tmp_path / "a", turns=turns)
    mine, b = _run(cohort, tmp_path / "b", turns=turns, speaker="caregiver")
    assert len(mine) == len(both)
    mixed = both["other_speech_s"].gt(0.5) & both["caregiver_speech_s"].gt(0.5)
    # F0 moves to her voice (225 Hz) from the mix with his (105 Hz)
    assert both.loc[mixed, "f0_hz"].lt(160).sum() >= 3
    assert mine.loc[mixed, "f0_hz"].gt(180).all()
    others_only = both["caregiver_speech_s"].eq(0) & both["other_speech_s"].gt(1.0)
    assert others_only.any()
    assert mine.loc[others_only, "f0_hz"].isna().all()          # no pitch of his
    assert (mine.loc[others_only, "speech_ratio"] < both.loc[others_only, "speech_ratio"]).all()
    assert not np.allclose(mine.loc[mixed, "p_angry"], both.loc[mixed, "p_angry"])  # the model heard less
    # the model never heard his turns: the samples of the other speaker's turns were zero
    heard = np.concatenate([s.reshape(-1) for s in b.seen])
    assert (heard == 0).mean() > 0.1
    stamp = json.loads(model_stamp_path(tmp_path / "b" / "w.csv").read_text())
    assert stamp["voice"]["speaker"] == "caregiver" and set(stamp["voice"]["turns"]) == set(recs["recording"])


def test_caregiver_mode_needs_turns_and_an_identified_caregiver(cohort, tmp_path):
    recs, turns = cohort
    with pytest.raises(ValueError, match="needs the speaker turns"):
        _run(cohort, tmp_path / "a", speaker="caregiver")
    unknown = turns.assign(is_caregiver=np.where(turns["recording"] == "p001_care", None,
                                                 turns["is_caregiver"].astype(object)))
    df, _ = _run(cohort, tmp_path / "b", turns=unknown, speaker="caregiver")
    assert set(df["recording"]) == {"p001_control"}
    fail = pd.read_csv(tmp_path / "b" / "f.csv")
    assert fail["recording"].tolist() == ["p001_care"]
    assert "not identified" in fail["reason"].iloc[0]
    with pytest.raises(ValueError, match="speaker must be one of"):
        _run(cohort, tmp_path / "c", turns=turns, speaker="patient")


def test_resume_recomputes_when_speaker_mode_changes(cohort, tmp_path, capsys):
    recs, turns = cohort
    _run(cohort, tmp_path, turns=turns)
    again, b = _run(cohort, tmp_path, turns=turns)
    assert not b.seen  # resumed: nothing recomputed
    _, b = _run(cohort, tmp_path, turns=turns, speaker="caregiver")
    assert b.seen and "recomputing every recording" in capsys.readouterr().err
    _, b = _run(cohort, tmp_path, turns=turns, speaker="caregiver")
    assert not b.seen
    moved = turns.assign(end_s=np.where(turns["recording"] == "p001_care", turns["end_s"] - 0.2,
                                        turns["end_s"]))
    df, b = _run(cohort, tmp_path, turns=moved, speaker="caregiver")
    assert len(b.seen) and sum(len(s) for s in b.seen) == (df["recording"] == "p001_care").sum()


def test_silero_speech_ratio_option(cohort, tmp_path):
    web, _ = _run(cohort, tmp_path / "a")
    sil, _ = _run(cohort, tmp_path / "b", vad="silero")
    assert sil["speech_ratio"].between(0, 1).all()
    assert np.corrcoef(web["speech_ratio"], sil["speech_ratio"])[0, 1] > 0.6
    pd.testing.assert_series_equal(web["f0_hz"], sil["f0_hz"])
    with pytest.raises(ValueError, match="vad must be one of"):
        _run(cohort, tmp_path / "c", vad="energy")


def test_stage04_diarization_of_a_recordings_table_and_share_table(cohort, tmp_path, monkeypatch):
    from ser.inference import diarize_files
    from ser.inference.diarize_files import diarize_recordings

    recs, truth = cohort
    base = recs["path"].iloc[0].rsplit("/", 1)[0]
    rng = stream_rng(7, "enrolment")
    clip = np.concatenate([synthesize_utterance(emotion="neutral", voice=WOMAN, rng=rng, sample_rate=SR,
                                                duration_s=2.0) for _ in range(3)])
    audio.write_wav(tmp_path / "p001_enrol.wav", clip, SR)
    # paths relative to base_dir; both voices speak alike, so her enrolment clip tells them apart
    rel = recs.assign(path=[p.split("/")[-1] for p in recs["path"]],
                      enrolment_path=str(tmp_path / "p001_enrol.wav"))
    res = diarize_recordings(rel, base_dir=base, output=tmp_path / "speakers.csv", progress=False)
    assert set(res.segments["recording"]) == set(recs["recording"])
    assert (res.summary["caregiver_status"] == "ok").all()
    table = speakers.caregiver_share_table(recs, res.segments, res.summary)
    d = (truth["end_s"] - truth["start_s"]).to_numpy()
    true_share = d[truth["is_caregiver"].to_numpy(bool)].sum() / d.sum()
    assert table["caregiver_share"].sub(true_share).abs().max() < 0.15
    assert (table["caregiver_status"] == "ok").all()
    monkeypatch.setattr(diarize_files, "diarize_recording", lambda *a, **k: 1 / 0)
    again = diarize_recordings(rel, base_dir=base, output=tmp_path / "speakers.csv", progress=False)
    # resumed: no recording diarized again
    pd.testing.assert_frame_equal(again.segments, res.segments, check_exact=False, atol=1e-3)
    no_turns = speakers.caregiver_share_table(recs, res.segments.iloc[:0], None)
    assert no_turns["caregiver_share"].isna().all() and (no_turns["caregiver_status"] == "not_diarized").all()
    with pytest.raises(ValueError, match="needs columns"):
        diarize_recordings(rel.drop(columns="caregiver"), base_dir=base)


def test_stage04_diarization_workers_give_identical_speakers_tables(cohort, tmp_path):
    # stage 04's diarize_workers: recordings diarized in 2 spawned processes, the same files
    from ser.inference.diarize_files import diarize_recordings

    recs, _ = cohort
    base = recs["path"].iloc[0].rsplit("/", 1)[0]
    rel = recs.assign(path=[p.split("/")[-1] for p in recs["path"]])
    out = {w: tmp_path / f"w{w}" / "speakers.csv" for w in (1, 2)}
    for w, o in out.items():
        o.parent.mkdir()
        diarize_recordings(rel, base_dir=base, output=o, progress=False, workers=w)
    for suffix in ("speakers.csv", "speakers.summary.csv", "speakers.failures.csv"):
        assert (out[1].parent / suffix).read_bytes() == (out[2].parent / suffix).read_bytes(), suffix
    assert pd.read_csv(out[2])["recording"].nunique() == len(recs)


# --------------------------------------------------------- stages 05-07: min_caregiver_share


def _share_windows() -> pd.DataFrame:
    rows = []
    for cg, lv in (("p001", "expert"), ("p002", "beginner")):
        for ph in ("control", "care"):
            for k, share in enumerate([1.0, 0.8, 0.4, 0.1, np.nan, 0.9]):
                rows.append({"recording": f"{cg}_{ph}", "caregiver": cg, "level": lv, "phase": ph,
                             "start_s": float(k), "end_s": k + 2.0, "p_happy": 0.9 if share and share > 0.5 else 0.1,
                             "p_sad": 0.1 if share and share > 0.5 else 0.9, "f0_hz": 200.0,
                             "energy_db": -30.0, "speech_ratio": 0.1 if k == 5 else 0.8,
                             "emotion_top_p": 0.9, "caregiver_share": share})
    return pd.DataFrame(rows)


def test_min_caregiver_share_drops_windows_and_counts_them():
    from ser.stats import descriptors, names

    w = _share_windows()
    off = descriptors.emotion_window_share(w, min_speech_ratio=0.2, per_caregiver=True)
    assert "low_caregiver_share" not in off.columns and (off["emotion_windows"] == 5).all()
    on = descriptors.emotion_window_share(w, min_speech_ratio=0.2, per_caregiver=True, min_caregiver_share=0.5)
    # per recording: shares 1.0, 0.8 kept; 0.4, 0.1, empty left out; 0.9 has too little speech
    assert (on["emotion_windows"] == 2).all() and (on["low_caregiver_share"] == 3).all()
    assert (on["low_speech"] == 1).all()
    assert (on["emotion_windows"] + on["low_speech"] + on["low_caregiver_share"] + on["low_confidence"]
            == on["windows"]).all()
    desc = descriptors.recording_descriptors(w, features=["p_happy", "f0_hz"], stats=("mean",),
                                             min_speech_ratio=0.2, min_caregiver_share=0.5)
    assert (desc["p_happy__mean"] == 0.9).all()       # only windows of her voice
    assert (desc["n_low_caregiver_share_windows"] == 3).all() and (desc["f0_hz__mean"] == 200).all()
    assert "n_low_caregiver_share_windows" in names.describe_columns(desc)["column"].tolist()
    plain = descriptors.recording_descriptors(w, features=["p_happy"], stats=("mean",), min_speech_ratio=0.2)
    assert "n_low_caregiver_share_windows" not in plain and (plain["p_happy__mean"] < 0.9).all()
    binned = descriptors.time_binned(w, features=["p_happy"], time_bins=1, min_speech_ratio=0.2,
                                     min_caregiver_share=0.5)
    assert (binned["n_low_caregiver_share_windows"] == 3).all() and (binned["p_happy"] == 0.9).all()
    with pytest.raises(ValueError, match="caregiver_share column"):
        descriptors.emotion_window_mask(w.drop(columns="caregiver_share"), min_speech_ratio=0.2,
                                        min_caregiver_share=0.5)
    with pytest.raises(ValueError, match="min_caregiver_share"):
        descriptors.emotion_window_mask(w, min_speech_ratio=0.2, min_caregiver_share=1.5)
