"""Tests for ser.signal.audio: reading, resampling, streaming blocks, writing, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ser.signal import audio

SR = 16000


def _tone(seconds: float, sr: int = SR, f: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.fixture
def wav(tmp_path):
    """A 2.5 s, 16 kHz PCM16 tone."""
    p = tmp_path / "tone.wav"
    sf.write(p, _tone(2.5), SR, subtype="PCM_16")
    return p


@pytest.mark.parametrize("subtype,atol", [("PCM_U8", 1 / 64), ("PCM_16", 1e-4),
                                          ("PCM_24", 1e-6), ("FLOAT", 0.0)])
def test_load_wav_subtypes(tmp_path, subtype, atol):
    y0 = _tone(0.5)
    p = tmp_path / f"{subtype}.wav"
    sf.write(p, y0, SR, subtype=subtype)
    y, sr = audio.load(p)
    assert sr == SR and y.dtype == np.float32 and y.shape == y0.shape
    np.testing.assert_allclose(y, y0, atol=atol + 1e-7)


@pytest.mark.parametrize("fmt,ext", [("FLAC", "flac"), ("OGG", "ogg")])
def test_load_compressed(tmp_path, fmt, ext):
    p = tmp_path / f"x.{ext}"
    sf.write(p, _tone(1.0), SR, format=fmt)
    y, sr = audio.load(p, sample_rate=SR)
    assert sr == SR and abs(len(y) - SR) <= 1
    assert 0.3 < np.sqrt(np.mean(y ** 2)) < 0.4  # rms of a 0.5 sine = 0.354


def test_stereo_is_mixed_and_resampled(tmp_path):
    left, right = _tone(1.0, 44100, amp=0.6), np.zeros(44100, np.float32)
    p = tmp_path / "st.wav"
    sf.write(p, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    y, sr = audio.load(p, sample_rate=SR)
    assert sr == SR and y.ndim == 1 and len(y) == SR
    assert np.abs(y).max() == pytest.approx(0.3, abs=0.01)  # mean of the two channels
    y2, _ = audio.load(p, mono=False)
    assert y2.shape == (2, 44100)


def test_info_reads_header(wav):
    assert audio.info(wav) == (2.5, SR, 1)
    assert audio.info_frames(wav) == (int(2.5 * SR), SR, 1)


def test_write_wav_roundtrip_and_clip(tmp_path):
    y = np.array([0.0, 0.5, -0.5, 2.0, -2.0], dtype=np.float32)
    p = audio.write_wav(tmp_path / "sub" / "o.wav", y, 8000)
    i = sf.info(p)
    assert (i.subtype, i.samplerate) == ("PCM_16", 8000)
    back, _ = audio.load(p)
    np.testing.assert_allclose(back, [0, 0.5, -0.5, 1, -1], atol=1e-4)
    assert not list(p.parent.glob(".*tmp"))  # no temp file left
    with pytest.raises(ValueError, match="NaN"):
        audio.write_wav(tmp_path / "bad.wav", np.array([0.0, np.nan]), 8000)


@pytest.mark.parametrize("sr_in", [SR, 22050, 44100])
def test_blocks_equal_whole_file(tmp_path, sr_in):
    rng = np.random.default_rng(0)
    p = tmp_path / "n.wav"
    sf.write(p, (0.1 * rng.standard_normal(int(3.3 * sr_in))).astype(np.float32), sr_in,
             subtype="FLOAT")
    whole, _ = audio.load(p, sample_rate=SR)
    blocks = list(audio.iter_blocks(p, sample_rate=SR, block_s=0.7, overlap_s=0.25))
    block_n, overlap_n = int(0.7 * SR), int(0.25 * SR)
    assert [s for s, _ in blocks] == list(range(0, len(whole), block_n))
    for s, b in blocks:
        assert len(b) == min(block_n + overlap_n, len(whole) - s)
        np.testing.assert_array_equal(b, whole[s:s + len(b)])
    np.testing.assert_array_equal(np.concatenate([b[:block_n] for _, b in blocks]), whole)


def test_silent_file_is_valid(tmp_path):
    p = tmp_path / "silent.wav"
    sf.write(p, np.zeros(SR, np.float32), SR, subtype="PCM_16")
    y, _ = audio.load(p)
    assert len(y) == SR and not y.any()


def test_fix_length():
    y = np.arange(5, dtype=np.float32)
    assert audio.fix_length(y, 3).tolist() == [0, 1, 2]
    assert audio.fix_length(y, 7).tolist() == [0, 1, 2, 3, 4, 0, 0]
    with pytest.raises(ValueError, match="n_samples"):
        audio.fix_length(y, -1)


# ----------------------------------------------------------------- bad input


def _bad_files(tmp_path):
    missing = tmp_path / "missing.wav"
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros(0, np.float32), SR, subtype="PCM_16")
    corrupt = tmp_path / "corrupt.wav"
    sf.write(corrupt, _tone(0.5), SR, subtype="PCM_16")
    corrupt.write_bytes(b"RIFX" + corrupt.read_bytes()[4:40])
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(SR // 10, np.nan, np.float32), SR, subtype="FLOAT")
    partial_nan = tmp_path / "partial_nan.wav"
    y = _tone(0.5)
    y[100] = np.inf
    sf.write(partial_nan, y, SR, subtype="FLOAT")
    return {
        "missing": (missing, "does not exist"),
        "empty": (empty, "empty"),
        "text": (text, "cannot read"),
        "header_only": (header_only, "no samples"),
        "corrupt": (corrupt, "cannot read"),
        "nan": (nan, "NaN or infinite"),
        "partial_nan": (partial_nan, "NaN or infinite"),
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "header_only", "corrupt",
                                  "nan", "partial_nan"])
def test_bad_files_raise_audio_error_naming_file(tmp_path, kind):
    path, msg = _bad_files(tmp_path)[kind]
    with pytest.raises(audio.AudioError, match=msg) as e:
        audio.load(path, sample_rate=SR)
    assert path.name in str(e.value)
    assert isinstance(e.value, ValueError)
    with pytest.raises(audio.AudioError, match=path.name):
        list(audio.iter_blocks(path, sample_rate=SR, block_s=1.0))


def test_bad_options(wav):
    with pytest.raises(ValueError, match="sample_rate"):
        audio.load(wav, sample_rate=0)
    with pytest.raises(ValueError, match="block_s"):
        list(audio.iter_blocks(wav, sample_rate=SR, block_s=0))
    with pytest.raises(ValueError, match="overlap_s"):
        list(audio.iter_blocks(wav, sample_rate=SR, block_s=1, overlap_s=-1))


def test_mp3_reads(tmp_path):
    p = tmp_path / "x.mp3"
    sf.write(p, _tone(1.0), SR, format="MP3")
    y, sr = audio.load(p, sample_rate=SR)
    assert sr == SR and abs(len(y) - SR) < 0.1 * SR  # MP3 adds encoder delay/padding
    assert 0.3 < np.sqrt(np.mean(y ** 2)) < 0.4


@pytest.mark.parametrize("name", ["talk.m4a", "talk.M4A", "talk.aac"])
def test_m4a_without_ffmpeg_fails_clearly(tmp_path, monkeypatch, name):
    p = tmp_path / name
    p.write_bytes(b"\0\0\0 ftypM4A " + bytes(200))
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)
    blocks = lambda q: list(audio.iter_blocks(q, sample_rate=SR, block_s=1))  # noqa: E731
    for fn in (audio.info_frames, audio.load, blocks):
        with pytest.raises(audio.AudioError, match=f"{name}.*needs ffmpeg on PATH"):
            fn(p)


def test_find_audio_files(tmp_path):
    d = tmp_path / "rec"
    for rel in ["b.wav", "a.FLAC", "sub/c.ogg", "sub/deep/d.mp3", "sub/e.m4a", "notes.txt",
                ".hidden/x.wav", "sub/.y.wav"]:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    single = tmp_path / "one.dat"
    single.write_bytes(b"x")
    files, problems = audio.find_audio_files([d, single, d / "b.wav", tmp_path / "nope.wav",
                                              tmp_path / "empty"])
    rel = [str(f.relative_to(tmp_path)) for f in files]
    assert rel == ["rec/a.FLAC", "rec/b.wav", "rec/sub/c.ogg", "rec/sub/deep/d.mp3", "rec/sub/e.m4a",
                   "one.dat"]  # sorted per folder; explicit files kept whatever the extension; no repeats
    reasons = {p.name: r for p, r in problems}
    assert "does not exist" in reasons["nope.wav"] and "no audio files" in reasons["empty"]
