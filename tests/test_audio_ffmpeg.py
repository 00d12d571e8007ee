"""Tests for ser.signal.audio's ffmpeg decoder: M4A/AAC/MP4 (and MP3) streamed from an ffmpeg pipe.

ffmpeg comes from the ``imageio-ffmpeg`` wheel (a static binary, linked onto ``PATH`` as
``ffmpeg`` in a temp folder) or from ``PATH``; without either the module is skipped.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from bundle_double import BundleDouble
from signals import voiced

from ser.inference import recording
from ser.inference.options import InferenceOptions
from ser.signal import audio

SR = 16000


def _find_ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return shutil.which("ffmpeg")
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return shutil.which("ffmpeg")


FFMPEG = _find_ffmpeg()
pytestmark = pytest.mark.skipif(
    FFMPEG is None, reason="needs ffmpeg: pip install imageio-ffmpeg (ships a static ffmpeg) "
                           "or put ffmpeg on PATH")


@pytest.fixture(scope="module")
def ffmpeg_dir(tmp_path_factory):
    """A folder holding only ``ffmpeg`` (a link to the binary), to put first on PATH."""
    d = tmp_path_factory.mktemp("bin")
    (d / "ffmpeg").symlink_to(FFMPEG)
    return d


@pytest.fixture(autouse=True)
def ffmpeg_on_path(ffmpeg_dir, monkeypatch):
    monkeypatch.setenv("PATH", f"{ffmpeg_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


def _encode(src, dst, *args: str):
    """Encode ``src`` to ``dst`` with the given output options; returns ``dst``."""
    _ffmpeg("-i", src, *args, dst)
    return dst


def _tone(seconds: float, sr: int, f: float, amp: float) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.fixture(scope="module")
def stereo_m4a(tmp_path_factory):
    """2.5 s at 44.1 kHz, AAC stereo: 440 Hz at 0.6 on the left, silence on the right."""
    d = tmp_path_factory.mktemp("m4a")
    left = _tone(2.5, 44100, 440.0, 0.6)
    sf.write(d / "st.wav", np.stack([left, np.zeros_like(left)], axis=1), 44100, subtype="FLOAT")
    return _encode(d / "st.wav", d / "st.m4a", "-c:a", "aac", "-b:a", "128k")


@pytest.fixture(scope="module")
def speech_m4a(tmp_path_factory):
    """6 s of voiced bursts, 16 kHz mono, as WAV and as AAC: ``(wav, m4a)``."""
    d = tmp_path_factory.mktemp("speech")
    wav = audio.write_wav(d / "speech.wav", voiced(6.0), SR)
    return wav, _encode(wav, d / "speech.m4a", "-c:a", "aac", "-b:a", "96k")


# ------------------------------------------------------------------- decoding


@pytest.mark.parametrize("read_chunk", [4096, audio.READ_CHUNK])
def test_blocks_equal_whole_file(stereo_m4a, monkeypatch, read_chunk):
    monkeypatch.setattr(audio, "READ_CHUNK", read_chunk)  # many chunks, or the default
    whole, sr = audio.load(stereo_m4a, sample_rate=SR)
    blocks = list(audio.iter_blocks(stereo_m4a, sample_rate=SR, block_s=0.7, overlap_s=0.25))
    block_n, overlap_n = int(0.7 * SR), int(0.25 * SR)
    assert sr == SR and [s for s, _ in blocks] == list(range(0, len(whole), block_n))
    for s, b in blocks:
        assert len(b) == min(block_n + overlap_n, len(whole) - s)
        np.testing.assert_array_equal(b, whole[s:s + len(b)])
    np.testing.assert_array_equal(np.concatenate([b[:block_n] for _, b in blocks]), whole)


def test_info_matches_decoded_length(stereo_m4a):
    frames, sr, ch = audio.info_frames(stereo_m4a)
    assert (sr, ch) == (44100, 2)
    assert abs(frames - round(2.5 * sr)) <= 0.005 * sr + 1  # container duration, to the centisecond
    assert audio.info(stereo_m4a) == (frames / sr, sr, ch)
    native, _ = audio.load(stereo_m4a)
    assert len(native) == frames  # decoded stream trimmed/padded to the reported length
    resampled, _ = audio.load(stereo_m4a, sample_rate=SR)
    assert len(resampled) == audio.resampled_length(frames, orig_sr=sr, target_sr=SR)


def test_odd_file_names(stereo_m4a, tmp_path):
    odd = tmp_path / "-rec 1: care.m4a"  # a leading dash, a space, a colon (no protocol)
    shutil.copy(stereo_m4a, odd)
    np.testing.assert_array_equal(audio.load(odd)[0], audio.load(stereo_m4a)[0])


def test_stereo_is_averaged_like_soundfile(stereo_m4a):
    y2, sr = audio.load(stereo_m4a, mono=False)
    y, _ = audio.load(stereo_m4a)
    assert y2.shape == (2, len(y)) and sr == 44100
    np.testing.assert_allclose(y, y2.mean(axis=0, dtype=np.float32), atol=1e-7)
    mid = slice(sr // 2, 2 * sr)  # away from the codec's onset and tail
    assert np.abs(y2[0, mid]).max() == pytest.approx(0.6, abs=0.03)
    assert np.abs(y2[1, mid]).max() < 0.01
    assert np.abs(y[mid]).max() == pytest.approx(0.3, abs=0.02)  # mean of the channels, not the left


def test_resampled_to_16k_keeps_the_tone(stereo_m4a):
    y, sr = audio.load(stereo_m4a, sample_rate=SR)
    native, sr_in = audio.load(stereo_m4a)
    np.testing.assert_array_equal(y, audio.resample(native, orig_sr=sr_in, target_sr=SR))
    seg = y[SR // 2: SR // 2 + SR]  # 1 s: 1 Hz bins
    peak_hz = np.argmax(np.abs(np.fft.rfft(seg * np.hanning(len(seg)))))
    assert sr == SR and abs(peak_hz - 440) <= 1


def test_mp3_goes_through_ffmpeg_and_streams(tmp_path):
    # libsndfile returns wrong samples at read boundaries of VBR MP3: ffmpeg decodes MP3
    wav = audio.write_wav(tmp_path / "x.wav", voiced(5.0, sr=44100), 44100)
    mp3 = _encode(wav, tmp_path / "x.mp3", "-c:a", "libmp3lame", "-q:a", "4")
    whole, _ = audio.load(mp3, sample_rate=SR)
    blocks = list(audio.iter_blocks_n(mp3, sample_rate=SR, block_n=SR, overlap_n=0))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), whole)
    ref, _ = audio.load(wav, sample_rate=SR)
    n = min(len(ref), len(whole))
    assert abs(len(whole) - len(ref)) <= 0.005 * SR + 1
    assert np.corrcoef(ref[:n], whole[:n])[0, 1] > 0.99  # no MP3 delay left, no glitches


def test_no_container_duration_counts_the_samples(tmp_path):
    # raw ADTS AAC has no duration (ffmpeg estimates it from the bit rate): counted exactly
    wav = audio.write_wav(tmp_path / "x.wav", voiced(3.3), SR)
    aac = _encode(wav, tmp_path / "x.aac", "-c:a", "aac", "-f", "adts")
    frames, sr, _ = audio.info_frames(aac)
    y, _ = audio.load(aac)
    assert sr == SR and frames == len(y)
    assert 3.3 * SR <= frames <= 3.3 * SR + 3 * 1024  # the codec's priming and padding, not trimmed
    blocks = list(audio.iter_blocks_n(aac, sample_rate=SR, block_n=SR, overlap_n=0))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), y)


def test_video_slightly_longer_than_audio_is_zero_padded(tmp_path):
    wav = audio.write_wav(tmp_path / "a.wav", voiced(2.0), SR)
    mp4 = tmp_path / "v.mp4"
    _ffmpeg("-i", wav, "-f", "lavfi", "-i", "color=c=black:s=16x16:r=10:d=2.5",
            "-c:a", "aac", "-c:v", "mpeg4", mp4)
    frames, sr, _ = audio.info_frames(mp4)
    assert frames == round(2.5 * sr)  # the container's (video's) duration
    y, _ = audio.load(mp4)
    assert len(y) == frames and np.abs(y[round(2.1 * sr):]).max() == 0 and np.abs(y).max() > 0.1


# ------------------------------------------------------------------- bad input


def _blocks(p):
    return list(audio.iter_blocks(p, sample_rate=SR, block_s=1.0))


def test_corrupt_m4a_names_file_and_ffmpeg_error(tmp_path, stereo_m4a):
    bad = tmp_path / "corrupt.m4a"
    bad.write_bytes(stereo_m4a.read_bytes()[:3000])  # no moov atom
    for fn in (audio.info_frames, audio.load, _blocks):
        with pytest.raises(audio.AudioError, match=r"corrupt\.m4a with ffmpeg \(exit status \d+\).*moov"):
            fn(bad)


def test_truncated_m4a_is_rejected_not_padded(tmp_path):
    wav = audio.write_wav(tmp_path / "x.wav", voiced(10.0), SR)
    full = _encode(wav, tmp_path / "full.m4a", "-c:a", "aac", "-movflags", "+faststart")
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(full.read_bytes()[:full.stat().st_size * 6 // 10])  # header intact, data cut
    assert audio.info_frames(cut)[0] == audio.info_frames(full)[0]  # the header cannot tell
    for fn in (audio.load, _blocks):
        with pytest.raises(audio.AudioError, match=r"cut\.m4a: ffmpeg decodes only .* container reports 10\.00 s"):
            fn(cut)


def test_audio_much_shorter_than_video_is_rejected(tmp_path):
    wav = audio.write_wav(tmp_path / "a.wav", voiced(1.0), SR)
    mp4 = tmp_path / "v.mp4"
    _ffmpeg("-i", wav, "-f", "lavfi", "-i", "color=c=black:s=16x16:r=5:d=4",
            "-c:a", "aac", "-c:v", "mpeg4", mp4)
    with pytest.raises(audio.AudioError, match=r"v\.mp4: .*shorter than the video"):
        audio.load(mp4)


def test_no_audio_stream_has_no_samples(tmp_path):
    mp4 = tmp_path / "silent_film.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:r=5:d=1", "-c:v", "mpeg4", mp4)
    for fn in (audio.info_frames, audio.load, _blocks):
        with pytest.raises(audio.AudioError, match=r"silent_film\.mp4 contains no samples"):
            fn(mp4)


def test_nan_samples_are_found(tmp_path):
    y = np.full(SR, 0.1, np.float32)
    y[4000] = np.nan
    sf.write(tmp_path / "nan.wav", y, SR, subtype="FLOAT")
    m4a = _encode(tmp_path / "nan.wav", tmp_path / "nan.m4a", "-c:a", "pcm_f32le", "-f", "mov")
    for fn in (audio.load, _blocks):
        with pytest.raises(audio.AudioError, match=r"nan\.m4a contains NaN .*sample 4000"):
            fn(m4a)


def test_unreadable_mp3_without_ffmpeg_says_so(tmp_path, monkeypatch):
    p = tmp_path / "talk.mp3"
    p.write_bytes(b"not an mp3 at all " * 50)
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)
    for fn in (audio.info_frames, audio.load, _blocks):
        with pytest.raises(audio.AudioError, match=r"talk\.mp3.*needs ffmpeg on PATH"):
            fn(p)


# ------------------------------------------------------------------- the subprocess


def _ffmpeg_children(psutil) -> list:
    return [c for c in psutil.Process().children(recursive=True) if "ffmpeg" in c.name()]


def test_early_close_kills_and_reaps_ffmpeg(tmp_path):
    psutil = pytest.importorskip("psutil")
    long_wav = audio.write_wav(tmp_path / "long.wav", voiced(60.0), SR)
    m4a = _encode(long_wav, tmp_path / "long.m4a", "-c:a", "aac", "-b:a", "32k")
    gen = audio.iter_blocks_n(m4a, sample_rate=SR, block_n=SR, overlap_n=0)
    start, block = next(gen)
    assert start == 0 and len(block) == SR
    kids = _ffmpeg_children(psutil)
    assert len(kids) == 1 and kids[0].is_running()  # still decoding: blocked on the pipe
    gen.close()
    assert not psutil.pid_exists(kids[0].pid)  # killed and reaped: no zombie
    # a consumer that breaks out of a loop and drops the generator, too
    for _ in audio.iter_blocks_n(m4a, sample_rate=SR, block_n=SR, overlap_n=0):
        break
    gc.collect()
    assert _ffmpeg_children(psutil) == []
    _blocks(m4a)  # and one that reads to the end
    assert _ffmpeg_children(psutil) == []


def test_memory_does_not_grow_with_length(tmp_path):
    def peak_bytes(minutes: int) -> int:
        m4a = tmp_path / f"{minutes}min.m4a"
        _ffmpeg("-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=8000:duration={60 * minutes}",
                "-c:a", "aac", "-b:a", "16k", m4a)
        tracemalloc.start()
        try:
            n = 0
            for _, b in audio.iter_blocks_n(m4a, sample_rate=SR, block_n=30 * SR, overlap_n=3 * SR):
                n += min(len(b), 30 * SR)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert n == audio.resampled_length(audio.info_frames(m4a)[0], orig_sr=8000, target_sr=SR)
        return peak

    p5, p20 = peak_bytes(5), peak_bytes(20)
    whole20 = 20 * 60 * SR * 4  # the 20-min file as float32 at 16 kHz: 77 MB
    assert p20 < 1.1 * p5 + 2**20, (p5, p20)
    assert p20 < whole20 / 8, (p5, p20)


# ------------------------------------------------------------------- end to end


class _Bundle(BundleDouble):
    """Deterministic stand-in for a model bundle: softmax of window statistics."""

    labels = ("angry", "happy", "neutral")
    sample_rate = SR
    window_s = 1.0
    window_samples = SR

    def predict_proba(self, windows: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        z = np.stack([windows.mean(1) * 50, windows.std(1) * 10, np.abs(windows).max(1)], axis=1)
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_predict_recording_on_m4a_matches_wav(speech_m4a):
    wav, m4a = speech_m4a
    ref = recording.predict_recording(_Bundle(), wav, options=InferenceOptions(hop_s=0.5, f0_method="pyin"))
    got = recording.predict_recording(_Bundle(), m4a, options=InferenceOptions(hop_s=0.5, f0_method="pyin"))
    assert len(got) == len(ref) == 11
    np.testing.assert_array_equal(got["start_s"], ref["start_s"])
    labels = [f"p_{lab}" for lab in _Bundle.labels]
    np.testing.assert_allclose(got[labels], ref[labels], atol=0.02)  # AAC at 96 kb/s is close
    voiced_rows = ref["voiced_ratio"] > 0.3
    np.testing.assert_allclose(got.loc[voiced_rows, "f0_hz"], ref.loc[voiced_rows, "f0_hz"], rtol=0.03)
