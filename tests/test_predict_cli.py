"""Tests for ``ser predict`` (ser.inference.files.predict_cli / predict_paths): files and folders,
CSV/JSON outputs, failure table, resume after interruption, usage errors."""

from __future__ import annotations

import json
import math
import re
from io import StringIO

import numpy as np
import pandas as pd
import pytest
import signals
import soundfile as sf

from ser.inference import recording
from ser.inference.files import output_paths, predict_paths, summary_columns
from ser.inference.options import InferenceOptions, resolve_batch_size
from ser.inference.recording import window_columns
from ser.inference.workers import resolve_workers
from ser.models import registry, window
from ser.models.bundle import load_bundle, save_bundle
from ser.models.integrity import write_sealed_meta
from ser.run.cli import main
from ser.signal import audio

SR = 16000
LABELS = ["angry", "happy", "neutral", "sad"]
WINDOW_S = 2.0


def voiced(seconds: float, *, f0: float = 200.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    return signals.voiced(seconds, f0=f0, sr=sr, seed=seed, n_harmonics=19)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained, tiny small-CNN bundle (2 s windows at 16 kHz)."""
    d = tmp_path_factory.mktemp("model") / "tiny_cnn"
    net = registry.build_model("small_cnn", n_labels=len(LABELS), sample_rate=SR, channels=[4, 8])
    save_bundle(d, net, labels=LABELS, sample_rate=SR, window_s=WINDOW_S,
                       features=window.features_config(), arch="small_cnn",
                       arch_params={"channels": [4, 8]}, train_params={}, split={}, metrics={})
    return d


#: file -> (duration in s, native rate, channels)
GOOD = {
    "a.wav": (6.0, SR, 1),
    "sub/b.flac": (5.0, 44100, 2),
    "sub/c.ogg": (4.0, SR, 1),
    "sub/deep/d.mp3": (4.0, 22050, 1),
    "pcm24.wav": (4.0, 48000, 1),
    "pcm8.wav": (4.0, 8000, 1),
    "float.wav": (4.0, 22050, 2),
    "short.wav": (0.7, SR, 1),
}
SUBTYPES = {"pcm24.wav": "PCM_24", "pcm8.wav": "PCM_U8", "float.wav": "FLOAT", "a.wav": "PCM_16"}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    """Good files in every supported format, width, rate and channel count (plus a text file)."""
    d = tmp_path_factory.mktemp("audio")
    for i, (rel, (dur, sr, ch)) in enumerate(GOOD.items()):
        y = voiced(dur, f0=150 + 20 * i, sr=sr, seed=i)
        data = y if ch == 1 else np.stack([y, 0.5 * y], axis=1)
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(d / rel, data, sr, **({"subtype": SUBTYPES[rel]} if rel in SUBTYPES else {}))
    (d / "README.txt").write_text("not audio; folders only pick audio extensions\n")
    return d


def _run(*args) -> int:
    """``ser predict ARGS --quiet --pad-short`` (short.wav gets one padded window); returns the
    exit code."""
    return main(["predict", *map(str, args), "--quiet", "--pad-short"])


def _expected_windows(dur: float, hop: float = WINDOW_S / 2) -> int:
    return 1 if dur < WINDOW_S else int(math.floor((dur - WINDOW_S) / hop + 1e-9)) + 1


# ------------------------------------------------------------------- outputs


def test_directory_to_csv(model_dir, audio_dir, tmp_path, capsys):
    out = tmp_path / "res.csv"
    assert _run(model_dir, audio_dir, "-o", out) == 0
    win = pd.read_csv(out)
    summ = pd.read_csv(tmp_path / "res.summary.csv")
    fail = pd.read_csv(tmp_path / "res.failures.csv")
    p_cols = [f"p_{lab}" for lab in LABELS]
    assert list(win.columns) == ["file", *window_columns(LABELS)]
    assert list(summ.columns) == summary_columns(LABELS)
    assert fail.empty and list(fail.columns) == ["file", "reason"]
    # every good file, in sorted folder order, none of the text file
    files = sorted(str(audio_dir / rel) for rel in GOOD)
    assert summ["file"].tolist() == files and (summ["status"] == "ok").all()
    assert win["file"].unique().tolist() == files
    for rel, (dur, sr, ch) in GOOD.items():
        row = summ.set_index("file").loc[str(audio_dir / rel)]
        rows = win[win["file"] == str(audio_dir / rel)]
        assert row["duration_s"] == pytest.approx(dur, abs=0.06)  # MP3 adds a few ms of padding
        assert (row["sample_rate"], row["channels"]) == (sr, ch)
        assert row["windows"] == len(rows) == _expected_windows(row["duration_s"])
        # default hop is half the window; timestamps exact; padded only for the short file
        np.testing.assert_array_equal(rows["start_s"], np.arange(len(rows)) * 1.0)
        np.testing.assert_array_equal(rows["end_s"], rows["start_s"] + WINDOW_S)
        assert rows["padded"].tolist() == [rel == "short.wav"] * len(rows)
        means = rows[p_cols].mean()
        np.testing.assert_allclose(row[p_cols].astype(float), means, rtol=1e-12)
        assert row["dominant_emotion"] == LABELS[int(np.argmax(means))]
        assert (row["window_s"], row["hop_s"], row["model"]) == (2.0, 1.0, "tiny_cnn")
    np.testing.assert_allclose(win[p_cols].sum(axis=1), 1.0, atol=1e-5)
    voiced_rows = win[win["voiced_ratio"] > 0.3]
    assert len(voiced_rows) > 10 and voiced_rows["f0_hz"].between(120, 350).all()
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp file
    assert "8 file(s)" in capsys.readouterr().err


def test_json_matches_csv(model_dir, audio_dir, tmp_path):
    files = [audio_dir / "a.wav", audio_dir / "short.wav"]
    assert _run(model_dir, *files, "-o", tmp_path / "r.csv", "--hop", "0.5") == 0
    assert _run(model_dir, *files, "--format", "json", "-o", tmp_path / "r.json", "--hop", "0.5") == 0
    obj = json.loads((tmp_path / "r.json").read_text())
    assert set(obj) == {"windows", "summary", "failures"} and obj["failures"] == []
    win = pd.DataFrame(obj["windows"])
    csv = pd.read_csv(tmp_path / "r.csv")
    pd.testing.assert_frame_equal(win, csv, check_dtype=False)
    assert [s["file"] for s in obj["summary"]] == [str(f) for f in files]
    assert obj["summary"][1]["windows"] == 1 and obj["windows"][-1]["padded"] is True
    assert obj["summary"][0]["error"] is None  # NaN/None written as null, valid JSON
    assert np.allclose(np.diff(win.loc[win["file"] == str(files[0]), "start_s"]), 0.5)


def test_stdout_csv_and_json(model_dir, audio_dir, capsys):
    assert _run(model_dir, audio_dir / "a.wav") == 0
    cap = capsys.readouterr()
    win = pd.read_csv(StringIO(cap.out))
    assert len(win) == _expected_windows(6.0) and win["file"].eq(str(audio_dir / "a.wav")).all()
    assert "summary" in cap.err and "dominant_emotion" in cap.err
    assert _run(model_dir, audio_dir / "a.wav", "--format", "json") == 0
    obj = json.loads(capsys.readouterr().out)
    assert len(obj["windows"]) == len(win) and len(obj["summary"]) == 1


@pytest.mark.parametrize("output,expected", [
    ("out/res.csv", ("out/res.csv", "out/res.summary.csv", "out/res.failures.csv")),
    ("out/res.CSV", ("out/res.CSV", "out/res.summary.csv", "out/res.failures.csv")),
    ("out/res.tsv", ("out/res.tsv", "out/res.tsv.summary.csv", "out/res.tsv.failures.csv")),
])
def test_output_paths(output, expected):
    got = output_paths(output)
    assert tuple(str(p) for p in got.values()) == expected
    assert list(output_paths("x.json", fmt="json")) == ["windows"]


# ------------------------------------------------------------------- bad input


def _bad_files(d):
    d.mkdir()
    audio.write_wav(d / "good.wav", voiced(4.0), SR)
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "header_only.wav", np.zeros(0, np.float32), SR)
    (d / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage that is not audio")
    (d / "notes.wav").write_text("this is a text file with an audio name\n" * 10)
    sf.write(d / "silent.wav", np.zeros(3 * SR, np.float32), SR, subtype="PCM_16")
    sf.write(d / "nan.wav", np.full(SR, np.nan, np.float32), SR, subtype="FLOAT")
    (d / "phone.m4a").write_bytes(b"\0\0\0 ftypM4A " + bytes(64))
    return {
        "empty.wav": "empty",
        "header_only.wav": "no samples",
        "corrupt.wav": "cannot read",
        "notes.wav": "cannot read",
        "silent.wav": "digital silence",
        "nan.wav": "NaN",
        "phone.m4a": "M4A needs ffmpeg on PATH",
    }


def test_bad_files_go_to_failure_table(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)
    d = tmp_path / "batch"
    expected = _bad_files(d)
    out = tmp_path / "res.csv"
    assert _run(model_dir, d, tmp_path / "missing.wav", "-o", out) == 1
    fail = pd.read_csv(tmp_path / "res.failures.csv")
    reasons = dict(zip(fail["file"], fail["reason"], strict=True))
    assert set(reasons) == {str(d / n) for n in expected} | {str(tmp_path / "missing.wav")}
    for name, msg in expected.items():
        assert msg in reasons[str(d / name)] and name in reasons[str(d / name)]
    assert "does not exist" in reasons[str(tmp_path / "missing.wav")]
    # the good file is complete, and the summary lists every file with its status
    win = pd.read_csv(out)
    assert win["file"].unique().tolist() == [str(d / "good.wav")] and len(win) == 3
    summ = pd.read_csv(tmp_path / "res.summary.csv")
    assert summ.set_index("file")["status"].to_dict() == {
        **{str(d / n): "failed" for n in expected}, str(d / "good.wav"): "ok",
        str(tmp_path / "missing.wav"): "failed"}
    err = capsys.readouterr().err
    assert "8 file(s) failed" in err and "Traceback" not in err


@pytest.mark.parametrize("hop,match", [("0", "--hop must be a number of seconds > 0"),
                                       ("-1", "--hop must be a number of seconds > 0"),
                                       ("nan", "--hop must be a number of seconds > 0"),
                                       ("2.5", r"--hop must be at most the model's window \(2 s")])
def test_bad_hop_exits_2(model_dir, audio_dir, hop, match, capsys):
    assert _run(model_dir, audio_dir / "a.wav", "--hop", hop) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Traceback" not in err


def test_model_folder_without_model_json_exits_2(audio_dir, tmp_path, capsys):
    (tmp_path / "not_a_model").mkdir()
    assert _run(tmp_path / "not_a_model", audio_dir / "a.wav") == 2
    err = capsys.readouterr().err
    assert "model.json" in err and "not_a_model" in err and "Traceback" not in err


def test_resume_refuses_another_hop(model_dir, audio_dir, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert _run(model_dir, audio_dir / "a.wav", "-o", out) == 0
    assert _run(model_dir, audio_dir / "a.wav", "-o", out, "--hop", "0.5") == 2
    err = capsys.readouterr().err
    assert f"-o {out}" in err and "hop 1 s" in err and "--hop" in err


# ------------------------------------------------------------------- interruption and resume


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_resume_after_interruption(model_dir, audio_dir, tmp_path, monkeypatch, fmt):
    files = [audio_dir / "a.wav", audio_dir / "sub" / "c.ogg", audio_dir / "short.wav"]
    ref = tmp_path / f"ref.{fmt}"
    assert _run(model_dir, *files, "--format", fmt, "-o", ref) == 0

    real = recording.predict_file
    calls: list[str] = []
    out = tmp_path / f"res.{fmt}"

    def stop_at_second(bundle, path, **kw):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the second file
        return real(bundle, path, **kw)

    monkeypatch.setattr(recording, "predict_file", stop_at_second)
    assert _run(model_dir, *files, "--format", fmt, "-o", out) == 130
    done = (pd.read_csv(out)["file"] if fmt == "csv"
            else pd.DataFrame(json.loads(out.read_text())["windows"])["file"])
    assert done.unique().tolist() == [str(files[0])]  # the finished file was kept

    calls.clear()

    def count(bundle, path, **kw):
        calls.append(path.name)
        return real(bundle, path, **kw)

    monkeypatch.setattr(recording, "predict_file", count)
    assert _run(model_dir, *files, "--format", fmt, "-o", out) == 0
    assert calls == ["c.ogg", "short.wav"]  # the first file was not computed again
    for suffix in ([".csv", ".summary.csv", ".failures.csv"] if fmt == "csv" else [".json"]):
        a, b = (tmp_path / f"res{suffix}").read_text(), (tmp_path / f"ref{suffix}").read_text()
        assert a == b.replace("ref.", "res.")  # byte-identical to an uninterrupted run

    calls.clear()
    assert _run(model_dir, *files, "--format", fmt, "-o", out) == 0 and calls == []


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_resume_adds_uncertainty_to_an_output_written_before_it(model_dir, audio_dir, tmp_path,
                                                                 monkeypatch, fmt):
    """Windows written before emotion_entropy / emotion_top_p existed get them from their
    stored probabilities on resume; no file is computed again."""
    files = [audio_dir / "a.wav", audio_dir / "short.wav"]
    out = tmp_path / f"old.{fmt}"
    assert _run(model_dir, *files, "--format", fmt, "-o", out) == 0
    if fmt == "csv":
        ref = pd.read_csv(out)
        ref.drop(columns=["emotion_entropy", "emotion_top_p"]).to_csv(out, index=False)
    else:
        obj = json.loads(out.read_text())
        ref = pd.DataFrame(obj["windows"])
        for row in obj["windows"]:
            del row["emotion_entropy"], row["emotion_top_p"]
        out.write_text(json.dumps(obj))
    calls: list[str] = []
    real = recording.predict_file
    monkeypatch.setattr(recording, "predict_file",
                        lambda b, path, **kw: calls.append(path.name) or real(b, path, **kw))
    assert _run(model_dir, *files, "--format", fmt, "-o", out) == 0
    assert calls == []
    now = pd.read_csv(out) if fmt == "csv" else pd.DataFrame(json.loads(out.read_text())["windows"])
    assert list(now.columns) == ["file", *window_columns(LABELS)]
    pd.testing.assert_frame_equal(now, ref, check_exact=False, rtol=1e-12)
    top = now[[f"p_{lab}" for lab in LABELS]].max(axis=1)
    np.testing.assert_allclose(now["emotion_top_p"], top, rtol=0)


def test_outputs_written_as_files_finish(model_dir, audio_dir, tmp_path, monkeypatch):
    """With checkpoint_s=0 the output on disk holds every finished file while the next runs."""
    bundle = load_bundle(model_dir)
    out = tmp_path / "live.csv"
    seen: list[list[str]] = []
    real = recording.predict_file

    def spy(b, path, **kw):
        if out.exists():
            seen.append(pd.read_csv(out)["file"].unique().tolist())
        return real(b, path, **kw)

    files = [audio_dir / "a.wav", audio_dir / "short.wav", audio_dir / "sub" / "c.ogg"]
    monkeypatch.setattr(recording, "predict_file", spy)
    res = predict_paths(bundle, files, options=InferenceOptions(pad_short=True), output=out,
                        progress=False, checkpoint_s=0)
    assert seen == [[str(files[0])], [str(files[0]), str(files[1])]]
    assert res.summary["status"].eq("ok").all() and res.failures.empty


def test_failed_files_are_retried_on_resume(model_dir, tmp_path, monkeypatch):
    d = tmp_path / "in"
    d.mkdir()
    audio.write_wav(d / "a.wav", voiced(3.0), SR)
    (d / "b.m4a").write_bytes(b"\0\0\0 ftypM4A " + bytes(64))
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)
    out = tmp_path / "r.csv"
    assert _run(model_dir, d, "-o", out) == 1
    (d / "b.m4a").unlink()
    audio.write_wav(d / "b.wav", voiced(3.0, seed=3), SR)
    assert _run(model_dir, d, "-o", out) == 0  # the failure is gone; a.wav kept, b.wav added
    assert pd.read_csv(out)["file"].unique().tolist() == [str(d / "a.wav"), str(d / "b.wav")]
    assert pd.read_csv(tmp_path / "r.failures.csv").empty


def test_precision_is_recorded_and_a_resume_never_mixes_precisions(model_dir, audio_dir, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert _run(model_dir, audio_dir / "a.wav", "-o", out, "--precision", "int8") == 0
    summ = pd.read_csv(tmp_path / "p.summary.csv")
    assert summ["model"].tolist() == ["tiny_cnn@int8"]
    win = pd.read_csv(out)
    np.testing.assert_allclose(win.filter(regex="^p_").sum(axis=1), 1.0, atol=1e-5)
    assert _run(model_dir, audio_dir / "a.wav", "-o", out) == 2  # fp32 onto an int8 run
    assert "tiny_cnn@int8" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model_dir), str(audio_dir / "a.wav"), "--precision", "fp16"])
    assert exc.value.code == 2 and "--precision" in capsys.readouterr().err


def test_workers_auto_is_inline_for_heavy_models():
    assert resolve_workers(None, heavy_model=True) == 0
    assert resolve_workers(-1, heavy_model=True) == 0
    assert resolve_workers(2, heavy_model=True) == 2
    assert resolve_workers(None) == resolve_workers(-1) >= 1


def test_batch_size_default_is_the_models_preferred_size(model_dir):
    bundle = load_bundle(model_dir)
    assert not bundle.heavy and bundle.preferred_batch_size == 64
    assert resolve_batch_size(bundle, None) == 64
    assert resolve_batch_size(bundle, 5) == 5
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        resolve_batch_size(bundle, 0)


def test_resume_refuses_a_retrained_bundle_of_the_same_name(model_dir, audio_dir, tmp_path, capsys):
    import shutil

    import torch

    out = tmp_path / "s.csv"
    assert _run(model_dir, audio_dir / "a.wav", "-o", out) == 0
    assert (tmp_path / "s.model.json").is_file()
    assert _run(model_dir, audio_dir / "a.wav", "-o", out) == 0  # same bundle: resumes
    retrained = tmp_path / "m" / model_dir.name
    shutil.copytree(model_dir, retrained)
    state = torch.load(retrained / "model.pt", weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()},
               retrained / "model.pt")
    write_sealed_meta(retrained, json.loads((retrained / "model.json").read_text()))  # as a retrain
    capsys.readouterr()
    assert _run(retrained, audio_dir / "a.wav", "-o", out) == 2
    assert "another version of 'tiny_cnn'" in capsys.readouterr().err
    assert _run(retrained, audio_dir / "a.wav", "-o", out, "--no-resume") == 0


def test_vad_option_changes_speech_ratio_only_and_a_resume_never_mixes_detectors(
        model_dir, audio_dir, tmp_path, capsys):
    web, sil = tmp_path / "w.csv", tmp_path / "s.csv"
    assert _run(model_dir, audio_dir / "a.wav", "-o", web) == 0
    assert _run(model_dir, audio_dir / "a.wav", "-o", sil, "--vad", "silero") == 0
    w, s = pd.read_csv(web), pd.read_csv(sil)
    pd.testing.assert_frame_equal(w.drop(columns="speech_ratio"), s.drop(columns="speech_ratio"))
    assert s["speech_ratio"].between(0, 1).all() and not np.allclose(w["speech_ratio"], s["speech_ratio"])
    assert _run(model_dir, audio_dir / "a.wav", "-o", sil) == 2  # webrtc onto a silero run
    assert "--vad silero" in capsys.readouterr().err
