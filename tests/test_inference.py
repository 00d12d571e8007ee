"""Tests for ser.inference: window grid, one recording, a resumable table of recordings."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from bundle_double import BundleDouble
from signals import voiced

from ser.data import schema
from ser.inference import uncertainty, workers
from ser.inference.grid import window_starts
from ser.inference.options import InferenceOptions
from ser.inference.recording import TooShortError, predict_recording, window_columns
from ser.inference.stamp import model_stamp_path
from ser.inference.table import predict_table, public_failures
from ser.models import registry, window
from ser.signal import audio, features

SR = 16000


class FakeBundle(BundleDouble):
    """Deterministic stand-in for ser.models.bundle.Bundle: softmax of simple window statistics."""

    def __init__(self, *, window_s: float = 1.0, sample_rate: int = SR, fail_after: int | None = None):
        self.labels = ["angry", "happy", "neutral"]
        self.sample_rate = sample_rate
        self.window_s = window_s
        self.window_samples = int(round(window_s * sample_rate))
        self.pitch_norm_hz = 0.0
        self.calls = 0
        self.seen: list[np.ndarray] = []
        self.fail_after = fail_after

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        assert windows.dtype == np.float32 and windows.shape[1] == self.window_samples
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # simulates the user stopping the run
        self.seen.append(windows.copy())
        z = np.stack([windows.mean(1) * 50, windows.std(1) * 10, np.abs(windows).max(1)], axis=1)
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)




@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    """Three short recordings: 16 kHz PCM16, 22.05 kHz stereo float, and a corrupt file."""
    d = tmp_path_factory.mktemp("recs")
    audio.write_wav(d / "r1.wav", voiced(9.0), SR)
    y2 = voiced(7.0, f0=250.0, sr=22050, seed=1)
    sf.write(d / "r2.wav", np.stack([y2, 0.5 * y2], axis=1), 22050, subtype="FLOAT")
    (d / "r3.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    return d


def _table(d) -> pd.DataFrame:
    return pd.DataFrame({
        "recording": ["p001_control", "p001_care", "p002_control"],
        "caregiver": ["p001", "p001", "p002"],
        "level": ["expert", "expert", "beginner"],
        "phase": ["control", "care", "control"],
        "session": [1, 1, 1],
        "path": [str(d / "r1.wav"), str(d / "r2.wav"), str(d / "r3.wav")],
    })


# ------------------------------------------------------------------- window grid


def test_window_starts_exact_for_awkward_hop():
    starts = window_starts(100.0, window_s=3.0, hop_s=0.37)
    assert len(starts) == 263  # floor(97 / 0.37) + 1
    k = np.arange(263)
    np.testing.assert_array_equal(starts, [float(Fraction(37, 100) * i) for i in k])
    assert starts[100] == 37.0 and starts[262] == 96.94  # no float drift
    assert starts[-1] + 3.0 <= 100.0


@pytest.mark.parametrize("duration,window,hop,n", [
    (1.0, 0.7, 0.1, 4),     # (1 - 0.7) / 0.1 = 2.9999999999999996 in floats
    (10.0, 3.0, 0.1, 71),
    (10.0, 3.0, 3.0, 3),
    (3.0, 3.0, 1.0, 1),     # exactly one window
    (7.2, 2.4, 2.4, 3),
])
def test_window_counts(duration, window, hop, n):
    starts = window_starts(duration, window_s=window, hop_s=hop)
    assert len(starts) == n
    assert starts[-1] + window <= duration + 1e-12


def test_short_input_gives_one_window():
    np.testing.assert_array_equal(window_starts(1.2, window_s=3.0, hop_s=1.0), [0.0])


@pytest.mark.parametrize("hop", [0.0, -1.0, 3.5, float("nan"), float("inf")])
def test_bad_hop_is_rejected(hop):
    with pytest.raises(ValueError, match="hop_s"):
        window_starts(10.0, window_s=3.0, hop_s=hop)


@pytest.mark.parametrize("hop", [0.0, 1.5])
def test_bad_hop_in_predict(rec_dir, hop, tmp_path):
    with pytest.raises(ValueError, match="hop_s"):
        predict_recording(FakeBundle(), rec_dir / "r1.wav", options=InferenceOptions(hop_s=hop))
    with pytest.raises(ValueError, match="hop_s"):
        predict_table(FakeBundle(), _table(rec_dir), options=InferenceOptions(hop_s=hop),
                      out_csv=tmp_path / "w.csv", failures_csv=tmp_path / "f.csv")


# ------------------------------------------------------------------- one recording


def test_predict_recording_rows(rec_dir):
    b = FakeBundle()
    df = predict_recording(b, rec_dir / "r1.wav", options=InferenceOptions(hop_s=0.37))
    labels = [f"p_{lab}" for lab in b.labels]
    assert list(df.columns) == ["start_s", "end_s", *labels, "emotion_entropy", "emotion_top_p",
                                *features.FEATURE_COLUMNS, "padded"]
    assert len(df) == len(window_starts(9.0, window_s=1.0, hop_s=0.37)) == 22
    np.testing.assert_array_equal(df["start_s"], window_starts(9.0, window_s=1.0, hop_s=0.37))
    np.testing.assert_allclose(df["end_s"] - df["start_s"], 1.0, atol=1e-12)
    np.testing.assert_allclose(df[labels].sum(axis=1), 1.0, atol=1e-6)
    assert not df["padded"].any()
    # the windows the model saw are the file's samples at the reported times
    y, _ = audio.load(rec_dir / "r1.wav", sample_rate=SR)
    seen = np.concatenate(b.seen)
    for i in (0, 7, 21):
        s = int(round(df["start_s"].iloc[i] * SR))
        np.testing.assert_array_equal(seen[i], y[s:s + SR])
    # bursts every 2 s with 1.2 s on: F0 near 200 Hz, speech in ~60 % of the time
    assert df["f0_hz"].median() == pytest.approx(200, rel=0.1)
    assert df["speech_ratio"].mean() == pytest.approx(0.6, abs=0.1)


@pytest.mark.parametrize("name,hop", [("r1.wav", 0.37), ("r2.wav", 0.25)])
def test_blockwise_equals_whole_file(rec_dir, name, hop):
    b = FakeBundle()
    whole = predict_recording(b, rec_dir / name, options=InferenceOptions(hop_s=hop, block_s=600))
    blocks = predict_recording(b, rec_dir / name,
                               options=InferenceOptions(hop_s=hop, block_s=1.5, batch_size=3))
    pd.testing.assert_frame_equal(whole, blocks)


def test_feature_workers_do_not_change_the_result(rec_dir):
    b = FakeBundle()
    serial = predict_recording(b, rec_dir / "r1.wav", options=InferenceOptions(hop_s=0.5, block_s=2.0))
    timings: dict[str, float] = {}
    parallel = predict_recording(b, rec_dir / "r1.wav",
                                 options=InferenceOptions(hop_s=0.5, block_s=2.0, workers=2), timings=timings)
    pd.testing.assert_frame_equal(serial, parallel)
    assert {"decode_resample", "log_mel_cnn", "f0", "energy", "vad"} <= set(timings)


# ------------------------------------------------------------------- uncertainty per window


def test_emotion_uncertainty_on_known_vectors():
    probs = np.array([[0.25, 0.25, 0.25, 0.25],   # uniform: most uncertain
                      [1.0, 0.0, 0.0, 0.0],       # one-hot: certain
                      [0.5, 0.5, 0.0, 0.0],       # two of four: log 2 / log 4
                      [0.7, 0.1, 0.1, 0.1],
                      [np.nan, 0.5, 0.25, 0.25]])  # missing probability: unknown
    entropy, top_p = uncertainty.emotion_uncertainty(probs)
    h = -(0.7 * np.log(0.7) + 3 * 0.1 * np.log(0.1)) / np.log(4)
    np.testing.assert_allclose(entropy[:4], [1.0, 0.0, 0.5, h], atol=1e-12)
    np.testing.assert_allclose(top_p[:4], [0.25, 1.0, 0.5, 0.7], atol=1e-12)
    assert np.isnan(entropy[4]) and np.isnan(top_p[4])
    # normalised whatever the number of labels; one label is never uncertain
    e2, t2 = uncertainty.emotion_uncertainty(np.array([[0.5, 0.5], [0.9, 0.1]], dtype=np.float32))
    np.testing.assert_allclose(e2, [1.0, -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(2)],
                               rtol=1e-6)
    np.testing.assert_allclose(t2, [0.5, 0.9], rtol=1e-6)
    e1, t1 = uncertainty.emotion_uncertainty(np.ones((3, 1)))
    assert e1.tolist() == [0.0] * 3 and t1.tolist() == [1.0] * 3
    with pytest.raises(ValueError, match="n_windows, n_labels"):
        uncertainty.emotion_uncertainty(np.ones(4))


def test_window_table_has_the_uncertainty_of_its_probabilities(rec_dir):
    b = FakeBundle()
    df = predict_recording(b, rec_dir / "r1.wav", options=InferenceOptions(hop_s=0.5))
    cols = list(df.columns)
    labels = [f"p_{lab}" for lab in b.labels]
    assert cols[2:7] == [*labels, "emotion_entropy", "emotion_top_p"]  # right after p_<label>
    p = df[labels].to_numpy()
    expected = -(p * np.log(p)).sum(axis=1) / np.log(len(labels))
    np.testing.assert_allclose(df["emotion_entropy"], expected, rtol=1e-9)
    np.testing.assert_allclose(df["emotion_top_p"], p.max(axis=1), rtol=0)
    assert df["emotion_entropy"].between(0, 1).all()
    assert df["emotion_top_p"].between(1 / 3, 1).all()
    assert df["emotion_entropy"].std() > 0  # it varies with the windows


def test_optional_feature_columns(rec_dir):
    df = predict_recording(FakeBundle(), rec_dir / "r1.wav",
                           options=InferenceOptions(hop_s=1.0, voice_quality=True, egemaps=True))
    assert list(df.columns) == window_columns(FakeBundle().labels, voice_quality=True,
                                              egemaps=True)
    assert df.columns[-1] == "padded"
    voiced_rows = df["voiced_ratio"] > 0.3
    assert df.loc[voiced_rows, "hnr_db"].gt(5).all()
    assert df.loc[voiced_rows, "egemaps_F0semitoneFrom27.5Hz_sma3nz_mean"].between(30, 42).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"f0_method": "crepe"}, "f0_method"), ({"workers": -2}, "workers"),
    ({"batch_size": 0}, "batch_size"), ({"block_s": 0}, "block_s"),
    ({"voice_quality": "yes"}, "voice_quality"),
])
def test_bad_options_in_predict(rec_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_recording(FakeBundle(), rec_dir / "r1.wav", options=InferenceOptions(hop_s=0.5, **kwargs))


def test_short_file_is_one_padded_window(tmp_path):
    p = tmp_path / "short.wav"
    audio.write_wav(p, voiced(0.6), SR)
    with pytest.raises(TooShortError, match=r"short\.wav is 0\.60 s long, shorter than the model's 1 s window"):
        predict_recording(FakeBundle(), p, options=InferenceOptions(hop_s=0.5))
    df = predict_recording(FakeBundle(), p, options=InferenceOptions(hop_s=0.5, pad_short=True))
    assert len(df) == 1 and bool(df["padded"].iloc[0])
    assert (df["start_s"].iloc[0], df["end_s"].iloc[0]) == (0.0, 1.0)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_24", "FLOAT"])
def test_wav_widths_agree_with_pcm16(tmp_path, rec_dir, subtype):
    y, _ = audio.load(rec_dir / "r1.wav")
    p = tmp_path / f"{subtype}.wav"
    sf.write(p, y, SR, subtype=subtype)
    ref = predict_recording(FakeBundle(), rec_dir / "r1.wav", options=InferenceOptions(hop_s=1.0))
    got = predict_recording(FakeBundle(), p, options=InferenceOptions(hop_s=1.0))
    # 8-bit quantisation puts the pauses at -45 dBFS, within trim_db of the speech, so
    # webrtcvad's ~0.1 s hangover after each burst is not trimmed there
    f0_tol, speech_tol = {"PCM_U8": (0.05, 0.15), "PCM_24": (1e-3, 0.0),
                          "FLOAT": (1e-3, 0.0)}[subtype]
    np.testing.assert_allclose(got["f0_hz"], ref["f0_hz"], rtol=f0_tol)
    assert np.abs(got["speech_ratio"] - ref["speech_ratio"]).max() <= speech_tol
    np.testing.assert_allclose(got["energy_max_db"], ref["energy_max_db"], atol=0.5)


@pytest.mark.parametrize("level,match", [(0.0, "digital silence"), (3e-5, "silent .peak -90")])
def test_silent_file_is_rejected(tmp_path, level, match):
    p = tmp_path / "silent.wav"
    sf.write(p, np.full(3 * SR, level, np.float32), SR, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match=f"silent.wav.*{match}"):
        predict_recording(FakeBundle(), p, options=InferenceOptions(hop_s=1.0))


def test_silent_stretch_gives_nan_f0_and_no_speech(tmp_path):
    p = tmp_path / "pause.wav"
    audio.write_wav(p, np.concatenate([voiced(1.0), np.zeros(3 * SR, np.float32)]), SR)
    df = predict_recording(FakeBundle(), p, options=InferenceOptions(hop_s=1.0))
    assert len(df) == 4
    quiet = df[df["start_s"] >= 2.0]
    assert quiet["f0_hz"].isna().all() and (quiet["voiced_ratio"] == 0).all()
    assert (quiet["speech_ratio"] == 0).all()
    assert (quiet["energy_db"] == features.ENERGY_FLOOR_DB).all()


def test_corrupt_file_raises_audio_error(rec_dir):
    with pytest.raises(audio.AudioError, match="r3.wav"):
        predict_recording(FakeBundle(), rec_dir / "r3.wav", options=InferenceOptions(hop_s=0.5))


# ------------------------------------------------------------------- a table of recordings


def test_predict_table_records_failures_and_carries_on(rec_dir, tmp_path):
    out, fail = tmp_path / "windows.csv", tmp_path / "failures.csv"
    df = predict_table(FakeBundle(), _table(rec_dir), options=InferenceOptions(hop_s=0.5), out_csv=out,
                       failures_csv=fail, progress=False)
    assert list(df.columns[:6]) == ["recording", "caregiver", "level", "phase", "start_s", "end_s"]
    assert df["recording"].unique().tolist() == ["p001_control", "p001_care"]
    assert (df.groupby("recording").size() == pd.Series({"p001_care": 13, "p001_control": 17})).all()
    pd.testing.assert_frame_equal(pd.read_csv(out, dtype={"recording": str}), df, check_dtype=False)
    failures = pd.read_csv(fail)
    assert failures.columns.tolist() == ["recording", "path", "reason"]
    assert failures["recording"].tolist() == ["p002_control"]
    assert "AudioError" in failures["reason"].iloc[0] and "r3.wav" in failures["reason"].iloc[0]


def test_predict_table_lists_a_too_short_recording_unless_pad_short(tmp_path):
    audio.write_wav(tmp_path / "short.wav", voiced(0.4), SR)
    table = pd.DataFrame([{"recording": "p001_care", "caregiver": "p001", "level": "expert",
                           "phase": "care", "session": 1, "path": str(tmp_path / "short.wav")}])
    out, fail = tmp_path / "windows.csv", tmp_path / "failures.csv"
    df = predict_table(FakeBundle(), table, options=InferenceOptions(hop_s=0.5), out_csv=out,
                       failures_csv=fail, progress=False)
    assert df.empty
    reason = pd.read_csv(fail)["reason"].iloc[0]
    assert reason.startswith("TooShortError") and "shorter than the model's 1 s window" in reason
    df = predict_table(FakeBundle(), table, options=InferenceOptions(hop_s=0.5, pad_short=True),
                       out_csv=out, failures_csv=fail, progress=False)
    assert len(df) == 1 and bool(df["padded"].iloc[0]) and pd.read_csv(fail).empty


def test_predict_table_reports_a_truncated_wav_and_keeps_its_windows(tmp_path):
    audio.write_wav(tmp_path / "full.wav", voiced(4.0), SR)
    data = (tmp_path / "full.wav").read_bytes()
    assert data[36:40] == b"data"  # a plain 44-byte header: cut the file after 2 s of samples
    bytes_per_frame = (len(data) - 44) // (4 * SR)
    (tmp_path / "cut.wav").write_bytes(data[:44 + 2 * SR * bytes_per_frame])
    table = pd.DataFrame([{"recording": r, "caregiver": "p001", "level": "expert", "phase": ph,
                           "session": 1, "path": str(tmp_path / f)}
                          for r, ph, f in (("p001_control", "control", "full.wav"),
                                           ("p001_care", "care", "cut.wav"))])
    out, fail = tmp_path / "windows.csv", tmp_path / "failures.csv"
    df = predict_table(FakeBundle(), table, options=InferenceOptions(hop_s=0.5), out_csv=out,
                       failures_csv=fail, progress=False)
    assert set(df["recording"]) == {"p001_control", "p001_care"}  # the samples present are used
    assert df.loc[df["recording"] == "p001_care", "end_s"].max() <= 2.0 + 1e-9
    failures = pd.read_csv(fail)
    assert failures["recording"].tolist() == ["p001_care"]
    reason = failures["reason"].iloc[0]
    assert reason.startswith("truncated: cut.wav's header promises 64000 sample frames, the file holds 32000")
    assert public_failures(failures)["reason"].iloc[0].startswith("truncated: <audio file>'s header")
    again = predict_table(FakeBundle(), table, options=InferenceOptions(hop_s=0.5), out_csv=out,
                          failures_csv=fail, progress=False)  # resumed: the note stays
    pd.testing.assert_frame_equal(again, df)
    assert pd.read_csv(fail)["reason"].tolist() == [reason]


def test_predict_table_with_options_and_workers(rec_dir, tmp_path):
    table = _table(rec_dir).iloc[:2]
    df = predict_table(FakeBundle(), table,
                       options=InferenceOptions(hop_s=1.0, voice_quality=True, workers=2),
                       out_csv=tmp_path / "w.csv", failures_csv=tmp_path / "f.csv", progress=False)
    assert list(df.columns) == [*schema.ID_COLUMNS, *window_columns(
        FakeBundle().labels, voice_quality=True)]
    assert df["jitter_local"].notna().any()


def test_resume_after_interruption_has_no_duplicates(rec_dir, tmp_path):
    out, fail = tmp_path / "windows.csv", tmp_path / "failures.csv"
    table = _table(rec_dir).iloc[:2]
    full = predict_table(FakeBundle(), table, options=InferenceOptions(hop_s=0.5),
                         out_csv=tmp_path / "ref.csv", failures_csv=fail, progress=False)
    # first recording needs 1 model call (17 windows <= 4 * batch_size): stop during the second
    with pytest.raises(KeyboardInterrupt):
        predict_table(FakeBundle(fail_after=1), table, options=InferenceOptions(hop_s=0.5), out_csv=out,
                      failures_csv=fail, progress=False)
    partial = pd.read_csv(out)
    assert partial["recording"].unique().tolist() == ["p001_control"]
    b = FakeBundle()
    resumed = predict_table(b, table, options=InferenceOptions(hop_s=0.5), out_csv=out, failures_csv=fail,
                            progress=False)
    assert b.calls == 1  # only the missing recording was computed
    assert not resumed.duplicated(["recording", "start_s"]).any()
    pd.testing.assert_frame_equal(resumed, full)
    # a finished table resumes to itself without any model call
    b2 = FakeBundle()
    again = predict_table(b2, table, options=InferenceOptions(hop_s=0.5), out_csv=out, failures_csv=fail,
                          progress=False)
    assert b2.calls == 0
    pd.testing.assert_frame_equal(again, full)


def test_resume_adds_uncertainty_to_a_table_written_before_it(rec_dir, tmp_path, capsys):
    """A windows.csv of an earlier stage 04 (no uncertainty columns) is completed from its
    stored probabilities, not recomputed from the audio; other column changes are refused."""
    out, fail = tmp_path / "windows.csv", tmp_path / "failures.csv"
    table = _table(rec_dir).iloc[:2]
    kw = dict(options=InferenceOptions(hop_s=0.5), out_csv=out, failures_csv=fail, progress=False)
    full = predict_table(FakeBundle(), table, **kw)
    full.drop(columns=list(schema.UNCERTAINTY_COLUMNS)).to_csv(out, index=False)
    b = FakeBundle()
    resumed = predict_table(b, table, **kw)
    assert b.calls == 0
    assert "emotion_entropy, emotion_top_p computed from its stored probabilities" in \
        capsys.readouterr().err
    pd.testing.assert_frame_equal(resumed, full, check_exact=False, rtol=1e-12)
    assert list(pd.read_csv(out).columns) == list(full.columns)  # rewritten with them
    full.drop(columns=["emotion_top_p"]).to_csv(out, index=False)  # not an older layout
    with pytest.raises(ValueError, match="columns differ"):
        predict_table(FakeBundle(), table, **kw)


def test_resume_drops_the_text_channel_added_after_stage_04(rec_dir, tmp_path):
    """windows.csv with the text channel (n_words, t_, f_, fusion_source; added at the end of
    stage 04) resumes without a model call and comes back without those columns."""
    out, fail = tmp_path / "windows.csv", tmp_path / "failures.csv"
    table = _table(rec_dir).iloc[:2]
    kw = {"options": InferenceOptions(hop_s=0.5), "out_csv": out, "failures_csv": fail, "progress": False}
    full = predict_table(FakeBundle(), table, **kw)
    labels = FakeBundle().labels
    full.assign(n_words=1, **{f"t_{lab}": 0.25 for lab in labels}, **{f"f_{lab}": 0.25 for lab in labels},
                fusion_source="fused").to_csv(out, index=False)
    b = FakeBundle()
    resumed = predict_table(b, table, **kw)
    assert b.calls == 0
    pd.testing.assert_frame_equal(resumed, full)


def test_resume_refuses_other_hop_and_can_be_disabled(rec_dir, tmp_path):
    out, fail = tmp_path / "windows.csv", tmp_path / "failures.csv"
    table = _table(rec_dir).iloc[:1]
    predict_table(FakeBundle(), table, options=InferenceOptions(hop_s=0.5), out_csv=out, failures_csv=fail,
                  progress=False)
    with pytest.raises(ValueError, match="hop"):
        predict_table(FakeBundle(), table, options=InferenceOptions(hop_s=0.25), out_csv=out,
                      failures_csv=fail, progress=False)
    df = predict_table(FakeBundle(), table, options=InferenceOptions(hop_s=0.25), out_csv=out,
                       failures_csv=fail, resume=False, progress=False)
    assert np.allclose(np.diff(df["start_s"]), 0.25)


@pytest.mark.parametrize("change,match", [
    (lambda t: t.drop(columns=["level"]), "lacks columns"),
    (lambda t: pd.concat([t, t.iloc[:1]]), "duplicate recording"),
])
def test_bad_recordings_table(rec_dir, tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        predict_table(FakeBundle(), change(_table(rec_dir)), options=InferenceOptions(hop_s=0.5),
                      out_csv=tmp_path / "w.csv", failures_csv=tmp_path / "f.csv", progress=False)


def test_model_threads_limited_while_workers_run_then_restored(rec_dir):
    torch = pytest.importorskip("torch")

    class ThreadSpy(FakeBundle):
        def predict_proba(self, windows, *, batch_size=64):
            self.threads = torch.get_num_threads()
            return super().predict_proba(windows, batch_size=batch_size)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        b = ThreadSpy()
        predict_recording(b, rec_dir / "r1.wav", options=InferenceOptions(hop_s=1.0, workers=1))
        assert b.threads == max(1, min(2, workers._usable_cores() - 1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_model_error_with_feature_workers_is_the_error_reported(rec_dir):
    """A model failing while feature jobs are pending must surface as itself: the clean-up
    of pending jobs once cancelled an array instead of the future and raised AttributeError."""

    class Failing(FakeBundle):
        def predict_proba(self, windows, *, batch_size=64):
            raise ValueError("model failed on this block")

    with pytest.raises(ValueError, match="model failed on this block"):
        predict_recording(Failing(), rec_dir / "r1.wav",
                          options=InferenceOptions(hop_s=1.0, block_s=2.0, workers=1))


def test_resume_recomputes_when_the_model_bundle_changed(rec_dir, tmp_path):
    """A retrained bundle of the same name must not inherit the old bundle's windows."""
    from ser.models import bundle

    def save(seed: int) -> bundle.Bundle:
        torch = pytest.importorskip("torch")
        torch.manual_seed(seed)
        net = registry.build_model("small_cnn", n_labels=3, sample_rate=SR, channels=[4, 8])
        bundle.save_bundle(tmp_path / "demo_cnn", net, labels=["angry", "happy", "neutral"],
                           sample_rate=SR, window_s=1.0, features=window.features_config(),
                           arch="small_cnn", arch_params={"channels": [4, 8]}, train_params={},
                           split={}, metrics={})
        return bundle.load_bundle(tmp_path / "demo_cnn")

    out, fail = tmp_path / "windows.csv", tmp_path / "failures.csv"
    table = _table(rec_dir).iloc[:1]
    kw = dict(options=InferenceOptions(hop_s=0.5), out_csv=out, failures_csv=fail, progress=False)
    first = predict_table(save(0), table, **kw)
    stamp = json.loads(model_stamp_path(out).read_text())
    assert stamp["model"] == "demo_cnn" and len(stamp["fingerprint"]) == 64
    again = predict_table(save(0), table, **kw)  # same weights: reused as they are
    pd.testing.assert_frame_equal(again, first)
    retrained = save(1)
    fresh = predict_table(retrained, table, **{**kw, "out_csv": tmp_path / "ref.csv"})
    resumed = predict_table(retrained, table, **kw)
    pd.testing.assert_frame_equal(resumed, fresh)
    assert not np.allclose(resumed["p_angry"], first["p_angry"])
    assert json.loads(model_stamp_path(out).read_text())["fingerprint"] != stamp["fingerprint"]
