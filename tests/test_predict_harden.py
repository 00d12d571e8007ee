"""``ser predict`` never leaves a mess (issue 18 items 8-12): workers die with their parent,
SIGTERM ends a run like Ctrl-C, too-short and truncated files are reported, outputs are
checked before any work, a folder scan names what it skips, and a hand-edited bundle is
refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import signals
import soundfile as sf

from ser.inference import files as files_mod
from ser.inference.files import OutputPathError, predict_paths
from ser.inference.options import InferenceOptions
from ser.models import registry, window
from ser.models.bundle import load_bundle, save_bundle
from ser.run.cli import main
from ser.signal import audio
from ser.signal.wavheader import wav_truncation

SR = 16000
LABELS = ["angry", "happy", "neutral", "sad"]
ROOT = Path(__file__).resolve().parents[1]


def _chmod_denies() -> bool:
    """Whether chmod 000 stops this process from reading (not for root with its usual
    capabilities, which reads files whatever their permissions)."""
    if os.name != "posix":
        return False
    if os.geteuid() != 0:
        return True
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        os.chmod(f.name, 0)
        try:
            open(f.name, "rb").close()
        except PermissionError:
            return True
    return False


as_root = pytest.mark.skipif(not _chmod_denies(), reason="root reads files whatever their permissions")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained tiny small-CNN bundle with 1 s windows at 16 kHz."""
    d = tmp_path_factory.mktemp("model") / "tiny"
    net = registry.build_model("small_cnn", n_labels=len(LABELS), sample_rate=SR, channels=[4])
    save_bundle(d, net, labels=LABELS, sample_rate=SR, window_s=1.0, features=window.features_config(),
                arch="small_cnn", arch_params={"channels": [4]}, train_params={}, split={}, metrics={})
    return d


def _wav(path: Path, seconds: float, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signals.voiced(seconds, sr=SR, seed=seed), SR, subtype="PCM_16")
    return path


def _predict(*args) -> int:
    return main(["predict", *map(str, args), "--quiet", "--workers", "0"])


# ------------------------------------------------------------- item 9: short and truncated files


def test_a_file_shorter_than_the_window_is_too_short_unless_padded(model_dir, tmp_path, capsys):
    d = tmp_path / "in"
    _wav(d / "a.wav", 3.0)
    _wav(d / "click.wav", 0.1)
    out = tmp_path / "w.csv"
    assert _predict(model_dir, d, "-o", out) == 0
    summ = pd.read_csv(tmp_path / "w.summary.csv").set_index("file")
    row = summ.loc[str(d / "click.wav")]
    assert row["status"] == "too_short" and row["windows"] == 0 and pd.isna(row["p_sad"])
    assert row["duration_s"] == pytest.approx(0.1) and "shorter than the model's 1 s window" in row["error"]
    assert summ.loc[str(d / "a.wav"), "status"] == "ok"
    win = pd.read_csv(out)
    assert win["file"].unique().tolist() == [str(d / "a.wav")]  # no probabilities for the short file
    assert pd.read_csv(tmp_path / "w.failures.csv").empty
    err = capsys.readouterr().err
    assert "1 file(s) shorter than the model's window" in err and "click.wav" in err
    # --pad-short: one zero-padded window, as before
    assert _predict(model_dir, d, "-o", out, "--pad-short") == 0
    win = pd.read_csv(out)
    short = win[win["file"] == str(d / "click.wav")]
    assert len(short) == 1 and bool(short["padded"].iloc[0]) and short["p_sad"].notna().all()
    assert pd.read_csv(tmp_path / "w.summary.csv").set_index("file").loc[str(d / "click.wav"), "status"] == "ok"


def test_a_truncated_wav_is_reported_and_its_samples_used(model_dir, tmp_path, capsys):
    full = _wav(tmp_path / "full.wav", 4.0)
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:44 + 2 * SR * 2])  # 44-byte header + 2 s of 16-bit samples
    assert wav_truncation(full) is None
    assert wav_truncation(cut) == (4 * SR, 2 * SR)
    out = tmp_path / "w.csv"
    assert _predict(model_dir, cut, full, "-o", out) == 0
    summ = pd.read_csv(tmp_path / "w.summary.csv").set_index("file")
    row = summ.loc[str(cut)]
    assert row["status"] == "truncated" and row["duration_s"] == pytest.approx(2.0)
    assert f"{cut}: truncated: its header promises 64000 samples (4.00 s), the file holds 32000 (2.00 s)" \
        in row["error"]
    win = pd.read_csv(out)
    assert len(win[win["file"] == str(cut)]) == 3  # 2 s of audio, 1 s windows, 0.5 s hop
    assert summ.loc[str(full), "status"] == "ok"
    assert "truncated" in capsys.readouterr().err
    assert _predict(model_dir, cut, full, "-o", out) == 0  # a truncated file's windows are resumed
    assert len(pd.read_csv(out)) == len(win)


# ------------------------------------------------------------- item 10: outputs checked first


@pytest.mark.parametrize("where", ["parent_is_a_file", "output_is_a_folder"])
def test_an_unwritable_output_is_refused_before_any_work(model_dir, tmp_path, monkeypatch, capsys, where):
    wav = _wav(tmp_path / "a.wav", 2.0)
    if where == "parent_is_a_file":
        (tmp_path / "notes.txt").write_text("a file")
        out, message = tmp_path / "notes.txt" / "w.csv", r"notes.txt is a file, not a folder"
    else:
        (tmp_path / "w.csv").mkdir()
        out, message = tmp_path / "w.csv", "it is a folder"

    def no_work(*a, **k):
        raise AssertionError("work started before the outputs were checked")

    monkeypatch.setattr(files_mod, "load_bundle", no_work)
    assert _predict(model_dir, wav, "-o", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    monkeypatch.setattr(audio, "find_audio_files", no_work)
    with pytest.raises(OutputPathError, match=message):
        predict_paths(load_bundle(model_dir), [wav], options=InferenceOptions(), output=out, progress=False)


@as_root
def test_an_output_in_a_folder_without_write_permission_is_refused(model_dir, tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav", 2.0)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert _predict(model_dir, wav, "-o", locked / "sub" / "w.csv") == 2
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err
    assert "permission denied for folder" in err and "Traceback" not in err


# ------------------------------------------------------------- item 11: what a folder scan skips


def test_a_folder_scan_names_every_entry_it_skips(model_dir, tmp_path):
    d = tmp_path / "in"
    _wav(d / "a.wav", 2.0)
    _wav(tmp_path / "elsewhere" / "b.wav", 2.0, seed=1)
    (d / "sub").mkdir()
    (d / "sub" / "loop").symlink_to(d)  # a symbolic link loop
    (d / "linked").symlink_to(tmp_path / "elsewhere")  # a linked folder is searched
    (d / "gone.wav").symlink_to(tmp_path / "missing.wav")  # a broken link
    (d / "gone_folder").symlink_to(tmp_path / "missing_folder")
    out = tmp_path / "w.csv"
    assert _predict(model_dir, d, "-o", out) == 1
    reasons = pd.read_csv(tmp_path / "w.failures.csv").set_index("file")["reason"].to_dict()
    assert "symbolic link loop" in reasons[str(d / "sub" / "loop")]
    assert "broken symbolic link" in reasons[str(d / "gone.wav")]
    assert "broken symbolic link" in reasons[str(d / "gone_folder")]
    assert len(reasons) == 3
    assert set(pd.read_csv(out)["file"]) == {str(d / "a.wav"), str(d / "linked" / "b.wav")}


@as_root
def test_unreadable_files_and_folders_say_permission_denied(model_dir, tmp_path):
    d = tmp_path / "in"
    _wav(d / "a.wav", 2.0)
    secret = _wav(d / "secret.wav", 2.0)
    _wav(d / "closed" / "c.wav", 2.0)
    given = _wav(tmp_path / "given.wav", 2.0)
    for p in (secret, given, d / "closed"):
        p.chmod(0)
    try:
        assert _predict(model_dir, d, given, "-o", tmp_path / "w.csv") == 1
    finally:
        for p in (secret, given, d / "closed"):
            p.chmod(0o755)
    reasons = pd.read_csv(tmp_path / "w.failures.csv").set_index("file")["reason"].to_dict()
    assert set(reasons) == {str(secret), str(given), str(d / "closed")}
    assert all("permission denied" in r for r in reasons.values())


# ------------------------------------------------------------- item 12: an edited bundle


def test_ser_predict_refuses_an_edited_bundle_and_takes_model_json(model_dir, tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav", 3.0)
    assert _predict(model_dir / "model.json", wav, "-o", tmp_path / "w.csv") == 0
    edited = tmp_path / "edited"
    shutil.copytree(model_dir, edited)
    meta = json.loads((edited / "model.json").read_text())
    meta["window_s"] = 5.0
    (edited / "model.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert _predict(edited, wav, "-o", tmp_path / "x.csv") == 2
    err = capsys.readouterr().err
    assert f"{edited / 'model.json'}: the bundle was modified after it was saved" in err
    assert "keys window_s changed" in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()
    del meta["integrity"], meta["window_s"]  # a bundle written before seals existed
    (edited / "model.json").write_text(json.dumps({**meta, "window_s": 1.0}))
    assert _predict(edited, wav, "-o", tmp_path / "x.csv") == 0
    err = capsys.readouterr().err
    assert "ser predict: warning: model bundle" in err and "written before bundles stored a fingerprint" in err


# ------------------------------------------------------------- item 8: signals and workers


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start(model_dir: Path, inputs: Path, out: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """``ser predict`` in a real process with 2 feature workers; returns it once they run.
    Its stderr goes to ``<out>.err`` (not a pipe, which a surviving worker would hold open)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(f"{out}.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ser.run.cli", "predict", str(model_dir),
                                 str(inputs), "-o", str(out), "--workers", "2", "--quiet"], env=env,
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children()
        if len(kids) >= 2:
            return proc, kids
        assert proc.poll() is None, Path(f"{out}.err").read_text()
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the feature workers never started")


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    first = _wav(d / "r0.wav", 90.0)
    for i in range(1, 16):
        shutil.copy(first, d / f"r{i}.wav")
    return d


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + SIGKILL semantics of Linux")
def test_workers_exit_when_ser_predict_is_killed(model_dir, long_dir, tmp_path):
    proc, workers = _start(model_dir, long_dir, tmp_path / "w.csv")
    proc.kill()  # SIGKILL: no handler, no finally clause runs in the parent
    proc.wait(timeout=30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_gone(w) for w in workers):
        time.sleep(0.05)
    left = [w.pid for w in workers if not _gone(w)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "feature workers outlived their parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_sigterm_ends_ser_predict_like_ctrl_c(model_dir, long_dir, tmp_path):
    out = tmp_path / "w.csv"
    summary = tmp_path / "w.summary.csv"
    proc, workers = _start(model_dir, long_dir, out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if summary.is_file() and (pd.read_csv(summary)["status"] == "ok").any():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    err = Path(f"{out}.err").read_text()
    assert proc.returncode == 143, err
    assert "ser predict: terminated (SIGTERM); finished files are in" in err and "Traceback" not in err
    done = pd.read_csv(summary)
    assert 1 <= (done["status"] == "ok").sum() < 16  # finished files kept, the run cut short
    win = pd.read_csv(out)
    assert set(win["file"]) == set(done.loc[done["status"] == "ok", "file"])
    time.sleep(0.5)
    assert all(_gone(w) for w in workers)
