"""Speech detection, speaker embeddings, diarization, caregiver identification and ``ser diarize``
on synthetic two-voice audio (ser.signal.vad, ser.models.speaker_encoder, ser.inference.diarization,
ser.inference.caregiver, ser.inference.der, ser.inference.diarize_files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ser.core.threads import torch_threads
from ser.data.synth import Voice, stream_rng, synthesize_utterance
from ser.inference import diarize_files
from ser.inference.caregiver import identify_caregivers, mark_caregiver
from ser.inference.der import diarization_error
from ser.inference.diarization import DiarizationOptions, diarize_recording, segment_embeddings
from ser.models.speaker_encoder import SpeakerEncoder
from ser.run.cli import main
from ser.signal import audio, vad

SR = 16000
WOMAN = Voice("w", gender="f", f0_base_hz=225.0, formant_scale=1.2, rate_factor=1.05)
MAN = Voice("m", gender="m", f0_base_hz=105.0, formant_scale=0.95, tilt=0.05, rate_factor=0.8,
            breathiness=1.5)


def conversation(seconds: float, *, seed: int, voices=(WOMAN, MAN), first_share: float = 0.5,
                 ) -> tuple[np.ndarray, list]:
    """Turns (1.5-3.5 s) with 0.3-1 s pauses, ``first_share`` of them by the first voice and
    each of the others taking turns; (audio, true turns)."""
    rng = stream_rng(seed, "conversation")
    y = np.zeros(int(seconds * SR), np.float32)
    t, k, turns = 0.5, 1, []
    while True:
        d = float(rng.uniform(1.5, 3.5))
        if t + d > seconds - 0.2:
            break
        v = voices[0] if rng.uniform() < first_share or len(voices) == 1 else voices[k]
        k = k % (len(voices) - 1) + 1 if len(voices) > 1 else 0
        u = synthesize_utterance(emotion="neutral", voice=v, rng=rng, sample_rate=SR, duration_s=d)
        a = int(t * SR)
        y[a:a + len(u)] += u
        turns.append((t, t + d, v.speaker))
        t += d + float(rng.uniform(0.3, 1.0))
    y += 3e-4 * rng.standard_normal(len(y)).astype(np.float32)
    return y, turns


@pytest.fixture(scope="module")
def encoder():
    return SpeakerEncoder()


@pytest.fixture(scope="module")
def two_voices(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    y, turns = conversation(40.0, seed=1)
    return audio.write_wav(d / "conv.wav", y, SR), turns


def test_encoder_mel_matches_resemblyzer(encoder):
    from resemblyzer.audio import wav_to_mel_spectrogram

    y = (np.random.default_rng(0).standard_normal(SR * 2) * 0.1).astype(np.float32)
    ours, theirs = encoder.mel(y), wav_to_mel_spectrogram(y)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6 * theirs.max())


def test_encoder_separates_voices_and_ignores_level(encoder):
    rng = stream_rng(0, "enc")
    w1, w2 = (synthesize_utterance(emotion="neutral", voice=WOMAN, rng=rng, sample_rate=SR, duration_s=2.0)
              for _ in range(2))
    m1 = synthesize_utterance(emotion="neutral", voice=MAN, rng=rng, sample_rate=SR, duration_s=2.0)
    e = encoder.embed_windows(np.concatenate([w1, w2, 0.1 * w2, m1]), SR,
                              starts_s=np.array([0.2, 2.2, 4.2, 6.2]), window_s=1.5)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[3] + 0.1      # same voice closer than the other voice
    assert e[1] @ e[2] > 0.99                    # a quieter copy embeds alike
    with pytest.raises(ValueError, match="16000 Hz"):
        encoder.embed_windows(w1, 8000, starts_s=np.array([0.0]), window_s=1.5)


@pytest.mark.parametrize("method", vad.VAD_METHODS)
def test_vad_finds_the_speech(two_voices, method):
    path, turns = two_voices
    y, _ = audio.load(path, sample_rate=SR)
    sp, fs = vad.speech_frames(y, SR, method=method)
    truth = vad.segments_to_frames(np.array([t[:2] for t in turns]), frame_s=fs, n_frames=len(sp))
    assert vad.frame_f1(sp, truth)["f1"] > 0.85
    assert not vad.speech_frames(np.zeros(SR * 5, np.float32), SR, method=method)[0].any()
    with pytest.raises(ValueError, match="vad must be one of"):
        vad.speech_frames(y, SR, method="energy")


def test_silero_streams_as_good_as_one_pass(two_voices, monkeypatch):
    # the network's state has a long memory, so parts read side by side differ from one pass
    # in some frames; against the truth they do as well
    path, turns = two_voices
    y, _ = audio.load(path, sample_rate=SR)
    parallel = vad.silero_probabilities(y, SR)
    assert vad.SILERO_MIN_PART * 0.032 * 3 < len(y) / SR  # several parts
    monkeypatch.setattr(vad, "SILERO_STREAMS", 1)
    single = vad.silero_probabilities(y, SR)
    assert parallel.shape == single.shape
    truth = vad.segments_to_frames(np.array([t[:2] for t in turns]), frame_s=0.032, n_frames=len(single))
    f1 = [vad.frame_f1(p >= 0.5, truth)["f1"] for p in (parallel, single)]
    assert f1[0] > f1[1] - 0.02 and np.mean((parallel >= 0.5) == (single >= 0.5)) > 0.95


def test_torch_threads_sets_and_restores_the_count():
    import torch

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):  # restored after an error too
        raise RuntimeError("x")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"), torch_threads(0):
        pass


def test_loading_silero_keeps_the_process_thread_count():
    # `import silero_vad` sets torch to one thread for the whole process; a fresh process shows it
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(2); from ser.signal import vad; vad.silero_model(); "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "2"


def test_silero_and_encoder_give_the_same_results_in_one_or_two_threads(two_voices, encoder, monkeypatch):
    # the thread count is a speed setting only: probabilities and embeddings agree, and the
    # process's own count is left as it was
    import torch

    y, _ = audio.load(two_voices[0], sample_rate=SR)
    torch.set_num_threads(2)
    starts = np.arange(0.0, 30.0, 1.0)
    p1 = vad.silero_probabilities(y, SR)
    e1 = encoder.embed_windows(y, SR, starts_s=starts, window_s=1.5)
    assert encoder.threads == 1 and torch.get_num_threads() == 2
    monkeypatch.setattr(vad, "SILERO_THREADS", 2)
    p2 = vad.silero_probabilities(y, SR)
    two = SpeakerEncoder(threads=2)
    e2 = two.embed_windows(y, SR, starts_s=starts, window_s=1.5)
    assert np.abs(p1 - p2).max() < 1e-4
    assert np.min(np.sum(e1 * e2, axis=1)) > 0.9999
    assert torch.get_num_threads() == 2
    for bad in ({"threads": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match="must be >= 1"):
            SpeakerEncoder(**bad)


def test_default_hop_embeds_one_window_per_second():
    opt = DiarizationOptions()
    assert (opt.window_s, opt.hop_s) == (1.5, 1.0)
    with pytest.raises(ValueError, match="hop_s"):
        DiarizationOptions(hop_s=2.0)


def test_speech_segments_bridge_drop_and_pad():
    sp = np.zeros(100, bool)
    sp[10:30] = sp[32:40] = True       # 2-frame gap: bridged
    sp[60:62] = True                   # too short: dropped
    seg = vad.speech_segments(sp, 0.01, min_speech_s=0.05, min_silence_s=0.05, pad_s=0.01)
    np.testing.assert_allclose(seg, [[0.09, 0.41]])


def test_der_of_known_errors():
    ref = [(0.0, 10.0, "a"), (10.0, 20.0, "b")]
    assert diarization_error(ref, [(0, 10, "x"), (10, 20, "y")], duration_s=20)["der"] == pytest.approx(0)
    # half of b's time given to a's speaker: 4.75 s confused of 19 s scored (collars at 0, 10, 20 s)
    e = diarization_error(ref, [(0, 15, "x"), (15, 20, "y")], duration_s=20, collar_s=0.25)
    assert e["confusion"] == pytest.approx(4.75 / 19.0, abs=0.002)
    e = diarization_error(ref, [(0, 10, "x")], duration_s=20, collar_s=0.0)
    assert e["missed"] == pytest.approx(0.5) and e["false_alarm"] == 0


def test_two_voices_diarized_into_two_speakers(two_voices, encoder):
    path, turns = two_voices
    r = diarize_recording(path, encoder=encoder)
    assert len(r.centroids) == 2 and r.flags == []
    hyp = list(zip(r.segments.start_s, r.segments.end_s, r.segments.speaker, strict=True))
    assert diarization_error(turns, hyp, duration_s=r.duration_s)["der"] < 0.15
    assert r.segments["confidence"].between(0, 1).all()
    # a fixed count of one gives one speaker, flagged
    one = diarize_recording(path, encoder=encoder, options=DiarizationOptions(num_speakers=1))
    assert list(one.centroids) == ["S1"] and one.flags == ["single_speaker"]


def test_streamed_blocks_give_the_same_turns(two_voices, encoder):
    whole = diarize_recording(two_voices[0], encoder=encoder)
    blocks = diarize_recording(two_voices[0], encoder=encoder, options=DiarizationOptions(block_s=15.0))
    assert len(blocks.centroids) == 2
    hyp = lambda r: list(zip(r.segments.start_s, r.segments.end_s, r.segments.speaker, strict=True))  # noqa: E731
    assert diarization_error(hyp(whole), hyp(blocks), duration_s=whole.duration_s, collar_s=0)["der"] < 0.05


def _whole_signal_silero(y, sr):
    """Silero probabilities as computed before the memory bound: every part's frames copied
    into one array (the reference the streamed gathering must equal)."""
    import torch

    n_frames = len(y) // vad.SILERO_FRAME_N
    streams = int(max(1, min(vad.SILERO_STREAMS, n_frames // vad.SILERO_MIN_PART)))
    per, ctx = -(-n_frames // streams), (vad.SILERO_CONTEXT if streams > 1 else 0)
    frames = np.zeros((ctx + streams * per, vad.SILERO_FRAME_N), dtype=np.float32)
    frames[ctx:ctx + n_frames] = y[: n_frames * vad.SILERO_FRAME_N].reshape(n_frames, -1)
    frames[:ctx] = frames[ctx:2 * ctx]
    chunks = torch.from_numpy(frames[np.arange(streams)[:, None] * per + np.arange(ctx + per)[None, :]])
    model, out = vad.silero_model(), np.empty((streams, ctx + per), dtype=np.float32)
    with torch.inference_mode(), torch_threads(vad.SILERO_THREADS):
        model.reset_states()
        for j in range(ctx + per):
            out[:, j] = model(chunks[:, j], vad.SILERO_SR).reshape(-1).numpy()
        model.reset_states()
    return out[:, ctx:].reshape(-1)[:n_frames]


def _whole_signal_embeddings(enc, y, sr, *, starts_s, window_s):
    """Embeddings as computed before the memory bound: one mel spectrogram and one running sum
    of squares over the whole signal."""
    import torch

    first = np.round(np.asarray(starts_s) / 0.01).astype(np.int64)
    n_win = int(round(window_s / 0.01))
    frames = enc.mel(y)[first[:, None] + np.arange(n_win)[None, :]]
    sq = np.concatenate(([0.0], np.cumsum(np.square(y, dtype=np.float64))))
    a = np.clip(first * 160, 0, len(y))
    b = np.clip(a + n_win * 160, 0, len(y))
    power = (sq[b] - sq[a]) / np.maximum(b - a, 1)
    gain2 = np.where(power > 1e-12, 10.0 ** -3 / np.maximum(power, 1e-12), 0.0).astype(np.float32)
    frames *= gain2[:, None, None]
    out = np.empty((len(first), 256), dtype=np.float32)
    with torch.inference_mode(), torch_threads(enc.threads):
        for k in range(0, len(frames), enc.batch_size):
            out[k:k + enc.batch_size] = enc.model(torch.from_numpy(np.ascontiguousarray(
                frames[k:k + enc.batch_size]))).numpy()
    out[gain2 == 0] = 0.0
    return np.nan_to_num(out)


def test_memory_bounded_streaming_gives_identical_turns(tmp_path, encoder, monkeypatch):
    # Silero's parts gathered step by step, the encoder's mel per stretch of windows and its
    # levels from a streamed running sum: exactly the values, and so the turns, of the
    # whole-signal computation, on a conversation three blocks long (block_s 15 s) with
    # silence between its halves (windows in separate stretches)
    y, _ = conversation(24.0, seed=5)
    y = np.concatenate([y, np.zeros(int(8.3 * SR), np.float32), conversation(16.0, seed=6)[0]])
    path = audio.write_wav(tmp_path / "long.wav", y, SR)
    np.testing.assert_array_equal(vad.silero_probabilities(y, SR), _whole_signal_silero(y, SR))
    starts = np.concatenate([np.arange(0.0, 20.0), np.arange(34.5, 45.5, 0.75), [2.0, 0.0]])
    small = SpeakerEncoder(batch_size=8)  # several batches, each over one or more stretches
    np.testing.assert_array_equal(small.embed_windows(y, SR, starts_s=starts, window_s=1.5),
                                  _whole_signal_embeddings(small, y, SR, starts_s=starts, window_s=1.5))
    opt = DiarizationOptions(block_s=15.0)
    streamed = diarize_recording(path, encoder=encoder, options=opt)
    monkeypatch.setattr(vad, "silero_probabilities", _whole_signal_silero)
    monkeypatch.setattr(encoder, "embed_windows", lambda *a, **k: _whole_signal_embeddings(encoder, *a, **k))
    whole = diarize_recording(path, encoder=encoder, options=opt)
    assert len(streamed.segments) > 10 and len(streamed.centroids) == 2
    pd.testing.assert_frame_equal(streamed.segments, whole.segments, check_exact=True)
    for k in whole.centroids:
        np.testing.assert_array_equal(streamed.centroids[k], whole.centroids[k])


def test_segment_embeddings_turns_from_cached_windows():
    """Re-clustering from saved speech frames and embeddings (no audio, no encoder): two voices
    alternating every 6 s give two speakers whose turns change within a window of the truth."""
    rng = np.random.default_rng(0)
    frame_s, hop, dur = 0.032, 0.75, 36.0
    speech = np.ones(int(dur / frame_s), bool)
    speech[int(17.9 / frame_s):int(18.1 / frame_s)] = False  # a pause
    starts = np.arange(0, dur - 1.5 + 1e-9, hop)
    truth = ((starts + 0.75) // 6 % 2).astype(int)  # speaker of each window's centre
    voices = np.linalg.qr(rng.standard_normal((256, 2)))[0].T
    emb = voices[truth] + 0.15 * rng.standard_normal((len(starts), 256))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    r = segment_embeddings(speech, starts, emb, frame_s=frame_s, duration_s=dur, options=DiarizationOptions())
    assert sorted(r.centroids) == ["S1", "S2"] and r.flags == []
    spk = r.segments.speaker.to_numpy()
    assert len(spk) == 6 and (spk[1:] != spk[:-1]).all()
    assert np.abs(r.segments.start_s.to_numpy()[1:] - [6, 12, 18.1, 24, 30]).max() < 0.8
    assert sum(r.speech_s.values()) == pytest.approx(speech.sum() * frame_s)
    quiet = segment_embeddings(np.zeros(10, bool), starts[:0], emb[:0], frame_s=frame_s, duration_s=dur,
                               options=DiarizationOptions())
    assert quiet.flags == ["no_speech"] and quiet.segments.empty


def test_one_voice_and_silence_are_flagged(tmp_path, encoder):
    y, _ = conversation(20.0, seed=2, voices=(WOMAN,))
    r = diarize_recording(audio.write_wav(tmp_path / "one.wav", y, SR), encoder=encoder)
    assert r.flags == ["single_speaker"] and list(r.centroids) == ["S1"]
    r = diarize_recording(audio.write_wav(tmp_path / "quiet.wav", np.zeros(SR * 5, np.float32), SR),
                          encoder=encoder)
    assert r.flags == ["no_speech"] and r.segments.empty


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def test_caregiver_is_the_shared_main_speaker():
    cg, pt, other = _unit([1, 0, 0, 0]), _unit([0, 1, 0, 0]), _unit([0, 0, 1, 0])
    near = lambda v: _unit(v + 0.1 * _unit([0, 0, 0, 1]))  # noqa: E731
    cents = {"a_control": {"S1": cg, "S2": pt}, "a_care": {"S1": near(cg), "S2": near(pt)},
             "b_control": {"S1": other}, "b_care": {"S1": pt},
             "c_control": {"S1": cg}, "d_control": {"S1": cg, "S2": pt}, "d_care": {"S1": cg, "S2": pt}}
    speech = {k: {"S1": 30.0, "S2": 5.0} for k in cents}
    speech["d_care"] = {"S1": 10.0, "S2": 9.0}
    of = {k: k.split("_")[0] for k in cents}
    t = identify_caregivers(cents, speech, of).set_index("recording")
    assert t.loc["a_control", "speaker"] == "S1" and t.loc["a_care", "status"] == "ok"
    assert t.loc["a_care", "similarity"] > 0.99
    assert (t.loc[["b_control", "b_care"], "status"] == "no_match").all()   # caregiver never speaks twice
    assert t.loc["c_control", "status"] == "single_recording"
    assert t.loc["d_care", "status"] == "ambiguous" and pd.isna(t.loc["d_care", "speaker"])
    assert t.loc["b_care", "reason"].startswith("no speaker recurs")
    # enrolment clip: the matching speaker, or a flag
    e = identify_caregivers({"b_care": {"S1": pt, "S2": other}}, {"b_care": {"S1": 1.0, "S2": 1.0}},
                            {"b_care": "b"}, enrolment={"b": near(other)})
    assert e.loc[0, "speaker"] == "S2" and e.loc[0, "method"] == "enrolment"
    e = identify_caregivers({"b_care": {"S1": pt}}, {"b_care": {"S1": 1.0}}, {"b_care": "b"},
                            enrolment={"b": cg})
    assert e.loc[0, "status"] == "no_match"
    segs = pd.DataFrame({"recording": ["a_care", "a_care", "b_care"], "speaker": ["S1", "S2", "S1"]})
    assert mark_caregiver(segs, t.reset_index())["is_caregiver"].tolist() == [True, False, pd.NA]
    with pytest.raises(ValueError, match="no caregiver given"):
        identify_caregivers(cents, speech, {})


def test_cli_writes_atomically_flags_failures_and_resumes(tmp_path, monkeypatch, encoder):
    monkeypatch.setattr(diarize_files, "default_encoder", lambda name="resemblyzer": encoder)
    d = tmp_path / "in"
    d.mkdir()
    for phase, seed in (("control", 3), ("care", 4)):
        audio.write_wav(d / f"p1_{phase}.wav", conversation(30.0, seed=seed, first_share=0.75)[0], SR)
    audio.write_wav(d / "short.wav", np.zeros(int(0.8 * SR), np.float32), SR)
    audio.write_wav(d / "silent.wav", np.zeros(SR * 4, np.float32), SR)
    (d / "map.csv").write_text("file,caregiver\np1_control.wav,p1\np1_care.wav,p1\n")
    out = tmp_path / "out" / "turns.csv"
    rc = main(["diarize", str(d), "-o", str(out), "--caregiver-of", str(d / "map.csv"), "--quiet"])
    assert rc == 1  # the short file failed
    paths = diarize_files.output_paths(out)
    assert all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in paths.values())  # no temp files
    segs = pd.read_csv(out)
    assert list(segs.columns) == ["recording", "start_s", "end_s", "speaker", "is_caregiver", "confidence"]
    summ = pd.read_csv(paths["summary"]).set_index("recording")
    fail = pd.read_csv(paths["failures"])
    assert fail["file"].str.endswith("short.wav").all() and len(fail) == 1
    assert "shorter than one speaker-embedding window" in fail.loc[0, "reason"]
    silent = summ.loc[str(d / "silent.wav")]
    assert silent["flags"] == "no_speech" and silent["caregiver_status"] == "no_caregiver_map"
    for phase in ("control", "care"):
        row = summ.loc[str(d / f"p1_{phase}.wav")]
        assert row["speakers"] == 2 and row["caregiver_status"] == "ok"
        mine = segs[segs["recording"] == str(d / f"p1_{phase}.wav")]
        # the woman speaks 3/4 of the turns here: the caregiver's speaker is the one with the most speech
        assert mine.loc[mine["is_caregiver"] == True, "speaker"].unique().tolist() == ["S1"]  # noqa: E712
    # resume: finished files are not diarized again, the failed one is retried
    calls = []
    real = diarize_files.diarize_recording
    monkeypatch.setattr(diarize_files, "diarize_recording",
                        lambda f, **kw: calls.append(f.name) or real(f, **kw))
    main(["diarize", str(d), "-o", str(out), "--caregiver-of", str(d / "map.csv"), "--quiet"])
    assert calls == ["short.wav"]
    pd.testing.assert_frame_equal(pd.read_csv(out), segs)
    # other options: refused
    assert main(["diarize", str(d), "-o", str(out), "--vad", "webrtc", "--quiet"]) == 2


def test_files_diarized_in_parallel_give_the_same_tables(tmp_path, monkeypatch, encoder):
    """--workers 2: two worker processes (spawned, each with its own encoder), the same turns,
    summary and failures as one process, in the same order; a file that fails is still named."""
    monkeypatch.setattr(diarize_files, "default_encoder", lambda name="resemblyzer": encoder)
    d = tmp_path / "in"
    d.mkdir()
    for i, seed in enumerate((5, 6, 7)):
        audio.write_wav(d / f"rec{i}.wav", conversation(12.0, seed=seed)[0], SR)
    audio.write_wav(d / "short.wav", np.zeros(int(0.8 * SR), np.float32), SR)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    assert main(["diarize", str(d), "-o", str(one), "--quiet"]) == 1
    assert main(["diarize", str(d), "-o", str(two), "--workers", "2", "--quiet"]) == 1
    for kind in ("segments", "summary", "failures"):
        a, b = (pd.read_csv(diarize_files.output_paths(p)[kind]) for p in (one, two))
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-3)
    assert pd.read_csv(diarize_files.output_paths(two)["failures"])["file"].str.endswith("short.wav").all()
    assert main(["diarize", str(d), "-o", str(tmp_path / "x.csv"), "--workers", "0", "--quiet"]) == 2
    with pytest.raises(ValueError, match="workers must be >= 1"):
        diarize_files.diarize_paths([d], workers=0)


def test_manifest_keys_by_recording_and_uses_enrolment_clips(tmp_path, encoder):
    for phase, seed in (("control", 5), ("care", 6)):
        audio.write_wav(tmp_path / f"a_{phase}.wav", conversation(24.0, seed=seed, first_share=0.6)[0], SR)
    audio.write_wav(tmp_path / "a_enrol.wav", conversation(8.0, seed=7, voices=(WOMAN,))[0], SR)
    rows = "recording,caregiver,level,phase,session,path,enrolment_path\n"
    (tmp_path / "manifest.csv").write_text(rows + "r1,a,expert,control,1,a_control.wav,a_enrol.wav\n"
                                           "r2,a,expert,care,1,a_care.wav,\n")
    out = tmp_path / "speakers.csv"
    res = diarize_files.diarize_manifest(tmp_path / "manifest.csv", output=out, encoder=encoder)
    assert res.summary["recording"].tolist() == ["r1", "r2"] and set(pd.read_csv(out)["recording"]) == {"r1", "r2"}
    t = res.caregivers.set_index("recording")
    assert (t["method"] == "enrolment").all() and (t["status"] == "ok").all()
    # the enrolled voice is the woman's: her speaker holds the turns overlapping her true speech most
    seg = res.segments[res.segments["recording"] == "r1"]
    assert seg.loc[seg["is_caregiver"] == True, "speaker"].unique().tolist() == [t.loc["r1", "speaker"]]  # noqa: E712
    woman = conversation(24.0, seed=5, first_share=0.6)[1]
    hyp = seg.assign(d=0.0)
    for a, b, who in woman:
        if who == "w":
            hyp["d"] += np.clip(np.minimum(hyp["end_s"], b) - np.maximum(hyp["start_s"], a), 0, None)
    assert hyp.groupby("speaker")["d"].sum().idxmax() == t.loc["r1", "speaker"]
    (tmp_path / "m2.csv").write_text(rows + "r1,a,expert,control,1,a_control.wav,a_enrol.wav\n"
                                     "r2,a,expert,care,1,a_care.wav,a_control.wav\n")
    with pytest.raises(ValueError, match="two enrolment clips"):
        diarize_files.diarize_manifest(tmp_path / "m2.csv", encoder=encoder)


def test_manifest_speaker_counts_per_recording_and_resume(tmp_path, encoder, monkeypatch):
    """A manifest's ``speakers`` column fixes that recording's count (1: her voice alone, never
    split in two); a resumed recording is diarized again when its count changed."""
    for phase, seed in (("control", 5), ("care", 6)):
        audio.write_wav(tmp_path / f"a_{phase}.wav", conversation(20.0, seed=seed, first_share=0.6)[0], SR)
    rows = "recording,caregiver,level,phase,session,path,speakers\n"
    (tmp_path / "m.csv").write_text(rows + "r1,a,expert,control,1,a_control.wav,1\nr2,a,expert,care,1,a_care.wav,\n")
    out = tmp_path / "speakers.csv"
    two = DiarizationOptions(num_speakers=2)
    res = diarize_files.diarize_manifest(tmp_path / "m.csv", output=out, encoder=encoder, options=two)
    s = res.summary.set_index("recording")
    assert s.loc["r1", "speakers"] == 1 and s.loc["r1", "flags"] == "single_speaker"
    assert s.loc["r2", "speakers"] == 2
    seen = []
    real = diarize_files.diarize_recording
    monkeypatch.setattr(diarize_files, "diarize_recording",
                        lambda f, *, options, encoder: seen.append((Path(f).name, options.num_speakers))
                        or real(f, options=options, encoder=encoder))
    diarize_files.diarize_manifest(tmp_path / "m.csv", output=out, encoder=encoder, options=two)
    assert seen == []  # nothing changed: all resumed
    (tmp_path / "m.csv").write_text(rows + "r1,a,expert,control,1,a_control.wav,2\nr2,a,expert,care,1,a_care.wav,\n")
    res = diarize_files.diarize_manifest(tmp_path / "m.csv", output=out, encoder=encoder, options=two)
    assert seen == [("a_control.wav", 2)] and res.summary.set_index("recording").loc["r1", "speakers"] == 2
    (tmp_path / "bad.csv").write_text(rows + "r1,a,expert,control,1,a_control.wav,9\n")
    with pytest.raises(ValueError, match=r"recording r1: speakers must be a whole number from 1 to 6.*'9'"):
        diarize_files.diarize_manifest(tmp_path / "bad.csv", encoder=encoder)
