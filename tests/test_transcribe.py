"""Transcription: blocks and seams (fake recogniser), a tiny random Whisper end to end, resume,
failure table and the ``ser transcribe`` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from asr_doubles import build_tiny_whisper, ramp_wav

from ser.inference import transcribe as tr
from ser.inference.files import ResumeError
from ser.models.asr import Word, load_asr, tokens_to_words
from ser.run.cli import main
from ser.signal import audio


class FakeAsr:
    """Hears fixed words at absolute times; reads the block's start from the ramp signal and
    returns the words overlapping the block, clipped to it, in block time."""

    name = "fake"
    max_block_s = 30.0

    def __init__(self, words: list[Word]) -> None:
        self.all = words
        self.block_lengths: list[float] = []

    def words(self, y: np.ndarray) -> list[Word]:
        t0 = round(float(y[0]) * 1000.0)
        t1 = t0 + len(y) / 16_000
        self.block_lengths.append(len(y) / 16_000)
        return [Word(max(w.start_s, t0) - t0, min(w.end_s, t1) - t0, w.word) for w in self.all
                if w.end_s > t0 and w.start_s < t1]


def _words(duration: float) -> list[Word]:
    rng = np.random.default_rng(3)
    out, t = [], 0.2
    while t < duration - 1.0:
        d = float(rng.uniform(0.2, 0.9))
        out.append(Word(round(t, 3), round(t + d, 3), f"w{len(out)}"))
        t += d + float(rng.uniform(0.05, 0.6))
    return out


def test_blocks_keep_every_word_once_across_seams(tmp_path):
    wav = ramp_wav(tmp_path / "long.wav", 70.0)
    truth = _words(70.0)
    fake = FakeAsr(truth)
    df, dur = tr.transcribe_recording(wav, fake, options=tr.TranscribeOptions(block_s=25.0, overlap_s=5.0))
    assert dur == pytest.approx(70.0)
    assert list(df["word"]) == [w.word for w in truth]  # none lost, none doubled at 25 s and 50 s
    np.testing.assert_allclose(df["start_s"], [w.start_s for w in truth], atol=1e-6)
    np.testing.assert_allclose(df["end_s"], [w.end_s for w in truth], atol=1e-6)
    assert max(fake.block_lengths) <= 30.0 + 1e-9 and len(fake.block_lengths) == 3


def test_seam_rule_without_overlap_splits_by_midpoint():
    ws = [Word(0.5, 1.0, "a"), Word(9.8, 10.4, "b"), Word(9.0, 10.6, "c")]
    kept = tr.seam_words(ws, block_start_s=10.0, block_s=10.0, overlap_s=0.0, first=False, last=False)
    assert [w.word for w in kept] == ["a", "c"] and kept[0].start_s == 10.5  # b's midpoint is past 10 s
    kept = tr.seam_words(ws, block_start_s=0.0, block_s=10.0, overlap_s=4.0, first=False, last=False)
    assert [w.word for w in kept] == ["b", "c"]  # a (0.75 s) lies before this block's seam at 2 s


def test_options_must_fit_the_backend():
    with pytest.raises(ValueError, match="longer than the fake backend"):
        tr.TranscribeOptions(block_s=28.0, overlap_s=5.0).check(FakeAsr([]))


def test_tokens_to_words_groups_byte_level_tokens():
    toks = ["<|sot|>", "Ġbon", "jour", "Ġmadame", "<|eot|>"]
    words = tokens_to_words(toks, np.array([0.0, 0.1, 0.3, 0.6, 1.2]),
                            special=[True, False, False, False, True],
                            to_text=lambda ts: "".join(ts).replace("Ġ", " "))
    assert words == [Word(0.1, 0.6, "bonjour"), Word(0.6, 1.2, "madame")]


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


def test_tiny_whisper_transcribes_blocks_resumes_and_lists_failures(tmp_path, tiny_whisper):
    rng = np.random.default_rng(0)
    audio.write_wav(tmp_path / "in" / "a.wav", 0.1 * rng.standard_normal(16_000 * 3).astype(np.float32), 16_000)
    audio.write_wav(tmp_path / "in" / "b.wav", 0.1 * rng.standard_normal(16_000 * 40).astype(np.float32), 16_000)
    (tmp_path / "in" / "broken.wav").write_bytes(b"RIFF not audio")
    asr = load_asr(tiny_whisper, backend="whisper", language="fr")
    out = tmp_path / "data" / "words.csv"
    stamp = {"model": str(tiny_whisper), "backend": "whisper", "language": "fr"}
    res = tr.transcribe_paths([tmp_path / "in"], asr, asr_stamp=stamp, output=out, progress=False)
    assert list(res.words.columns) == list(tr.TRANSCRIPT_COLUMNS)
    summ = res.summary.set_index("recording")
    a, b, broken = (str(tmp_path / "in" / n) for n in ("a.wav", "b.wav", "broken.wav"))
    assert summ.loc[a, "status"] == "ok" and summ.loc[b, "status"] == "ok"
    assert summ.loc[b, "duration_s"] == pytest.approx(40.0)
    assert list(res.failures["file"]) == [broken] and summ.loc[b, "words"] > 0
    for rec, dur in ((a, 3.0), (b, 40.0)):
        w = res.words[res.words["recording"] == rec]
        assert (w["start_s"] >= 0).all() and (w["end_s"] <= dur + 1e-6).all()
        assert (w["end_s"] >= w["start_s"]).all() and w["start_s"].is_monotonic_increasing
    written = pd.read_csv(out, keep_default_na=False, dtype={"word": str})
    assert len(written) == len(res.words)

    class Counting:
        name, max_block_s, calls = "whisper", 30.0, 0

        def words(self, y):
            Counting.calls += 1
            return []

    again = tr.transcribe_paths([tmp_path / "in"], Counting(), asr_stamp=stamp, output=out, progress=False)
    assert Counting.calls == 0  # a and b kept; broken tried again and failed before the model
    assert len(again.words) == len(res.words) and len(again.failures) == 1
    with pytest.raises(ResumeError, match="written with"):
        tr.transcribe_paths([tmp_path / "in"], asr, asr_stamp={**stamp, "language": "en"}, output=out,
                            progress=False)


def test_load_asr_names_the_problem(tmp_path, tiny_whisper):
    with pytest.raises(ValueError, match="does not know language 'de'"):
        load_asr(tiny_whisper, backend="whisper", language="de")
    with pytest.raises(ValueError, match="cannot load a Whisper model"):
        load_asr(tmp_path / "missing", backend="whisper")
    with pytest.raises(ValueError, match="backend must be one of"):
        load_asr(tiny_whisper, backend="vosk")


def test_cli_transcribes_without_printing_words(tmp_path, tiny_whisper, capsys):
    rng = np.random.default_rng(1)
    wav = audio.write_wav(tmp_path / "a.wav", 0.1 * rng.standard_normal(16_000 * 2).astype(np.float32), 16_000)
    out = tmp_path / "words.csv"
    assert main(["transcribe", str(tiny_whisper), str(wav), "-o", str(out), "--language", "fr", "--quiet"]) == 0
    words = pd.read_csv(out, keep_default_na=False, dtype={"word": str})
    err = capsys.readouterr().err
    assert "1 file(s)" in err
    assert all(w not in err for w in words["word"] if len(w) > 3)
    assert (tmp_path / "words.asr.json").is_file() and (tmp_path / "words.summary.csv").is_file()
    assert main(["transcribe", str(tiny_whisper), str(wav), "-o", str(tmp_path)]) == 2
    assert "it is a folder" in capsys.readouterr().err
    assert main(["transcribe", str(tiny_whisper), str(wav), "-o", str(tmp_path / "x.csv"),
                 "--block", "28"]) == 2


def test_pocketsphinx_is_english_only(tmp_path, capsys):
    wav = audio.write_wav(tmp_path / "a.wav", np.zeros(16_000, np.float32), 16_000)
    assert main(["transcribe", "default", str(wav), "-o", str(tmp_path / "w.csv"), "--backend", "pocketsphinx",
                 "--language", "fr"]) == 2
    assert "its bundled model is English" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a PocketSphinx model folder"):
        load_asr(tmp_path / "nowhere", backend="pocketsphinx")


def test_progress_with_recording_ids_names_ids_not_files(tmp_path, capsys):
    wav = ramp_wav(tmp_path / "p001_control_secret-name.wav", 5.0)
    (tmp_path / "p001_care_secret-name.wav").write_bytes(b"RIFF not audio")
    fake = FakeAsr(_words(5.0))
    stamp = {"model": "fake", "backend": "fake", "language": "fr"}
    ids = {wav: "p001_control", tmp_path / "p001_care_secret-name.wav": "p001_care"}
    tr.transcribe_paths([tmp_path / "p001_control_secret-name.wav", tmp_path / "p001_care_secret-name.wav"],
                        fake, asr_stamp=stamp, output=tmp_path / "words.csv", recording_ids=ids)
    err = capsys.readouterr().err
    assert "p001_control: ok" in err and "p001_care: failed (see the failure table)" in err
    assert "secret-name" not in err  # stage 04's notebook output never shows a file name or path
