"""Tests for ser.models.dimensional: arousal / dominance / valence bundles through inference and stats.

Nothing here downloads anything: the checkpoints are tiny randomly initialised models of
audEERING's architecture written with ``save_pretrained`` to a tmp folder, and the hub
is switched off (``HF_HUB_OFFLINE=1``, no socket may connect).
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest
import torch
from signals import voiced

from ser.data import schema
from ser.inference.files import predict_paths
from ser.inference.options import InferenceOptions
from ser.inference.protocol import output_columns
from ser.inference.stamp import model_stamp_path
from ser.inference.table import predict_table
from ser.models import dimensional
from ser.models.bundle import bundle_fingerprint, load_bundle
from ser.models.transformer import normalize_waveform
from ser.run import cli
from ser.signal import audio
from ser.stats import descriptors, names

SR = 16000
D_COLUMNS = ["d_arousal", "d_dominance", "d_valence"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No hub access in any test of this module."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def _tiny_model(seed: int = 0, config=None) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = dimensional.build_emotion_model(config or dimensional.tiny_dimensional_config()).eval()
    with torch.no_grad():  # spread the head's outputs, so that windows differ visibly
        model.classifier.out_proj.weight.mul_(50.0)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny EmotionModel saved with save_pretrained, and the model itself."""
    folder = tmp_path_factory.mktemp("tiny_dim")
    model = _tiny_model()
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def bundle_dir(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny_dim_bundle"
    dimensional.save_dimensional_bundle(checkpoint[0], out, window_s=0.5)
    return out


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("recs")
    audio.write_wav(d / "r1.wav", voiced(3.0), SR)
    audio.write_wav(d / "r2.wav", voiced(2.5, f0=260.0, seed=1), SR)
    return d


def _reference(model: torch.nn.Module, windows: np.ndarray) -> np.ndarray:
    """audEERING's recipe by hand: normalise each window, wav2vec2, mean over time, head."""
    with torch.no_grad():
        x = torch.from_numpy(windows)
        x = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-7)
        h = model.wav2vec2(x).last_hidden_state.mean(dim=1)
        head = model.classifier
        return head.out_proj(torch.tanh(head.dense(h))).numpy()


# --------------------------------------------------------------------------- the network


def test_module_tree_has_audeerings_parameter_names() -> None:
    model = _tiny_model()
    keys = set(model.state_dict())
    assert {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
            "classifier.out_proj.bias"} <= keys
    assert all(k.startswith(("wav2vec2.", "classifier.")) for k in keys)
    assert "wav2vec2.encoder.layers.0.attention.q_proj.weight" in keys
    assert model.classifier.out_proj.out_features == 3
    assert type(model).__name__ == "EmotionModel" and model.base_model_prefix == "wav2vec2"


def test_forward_is_mean_pooled_wav2vec2_then_dense_tanh_head() -> None:
    model = _tiny_model()
    x = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled, values = model(normalize_waveform(x))
    assert pooled.shape == (2, model.config.hidden_size) and values.shape == (2, 3)
    np.testing.assert_allclose(values.numpy(), _reference(model, x.numpy()), rtol=1e-5, atol=1e-6)


def test_load_dimensional_from_a_save_pretrained_folder(checkpoint) -> None:
    folder, model = checkpoint
    loaded = dimensional.load_dimensional(folder)
    assert not loaded.training
    x = 0.1 * torch.randn(3, 3200, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(normalize_waveform(x))[1], model(normalize_waveform(x))[1],
                                   atol=0, rtol=0)


# --------------------------------------------------------------------------- the bundle


def test_bundle_written_and_loaded_through_load_bundle(checkpoint, bundle_dir) -> None:
    meta = json.loads((bundle_dir / "model.json").read_text(encoding="utf-8"))
    assert meta["family"] == "dimensional" and meta["dimensions"] == ["arousal", "dominance", "valence"]
    assert meta["sample_rate"] == 16000 and meta["window_s"] == 0.5 and meta["window_samples"] == 8000
    assert meta["source"] == str(checkpoint[0])
    assert (bundle_dir / "config.json").is_file() and (bundle_dir / "model.safetensors").is_file()

    b = load_bundle(bundle_dir)
    assert isinstance(b, dimensional.DimensionalBundle)
    assert b.labels == b.dimensions == ["arousal", "dominance", "valence"]
    assert output_columns(b) == D_COLUMNS and b.output_prefix == "d_"
    assert (b.sample_rate, b.window_samples, b.pitch_norm_hz, b.heavy) == (16000, 8000, 0.0, True)
    assert b.preferred_batch_size == 4

    windows = np.stack([voiced(0.5, seed=i, f0=150.0 + 60 * i) for i in range(5)])
    got = b.predict_dimensions(windows, batch_size=2)
    assert got.shape == (5, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference(checkpoint[1], windows), rtol=1e-5, atol=1e-6)
    assert np.ptp(got, axis=0).max() > 1e-3  # the windows give different values
    # per-window normalisation: the level of the recording does not matter
    np.testing.assert_allclose(b.predict_dimensions(4 * windows), got, rtol=1e-4, atol=1e-5)

    signal = voiced(2.0, seed=3)
    starts = np.array([0, 4000, 8000, 24000])
    view = np.stack([signal[s:s + 8000] for s in starts])
    np.testing.assert_allclose(b.predict_starts(signal, starts, batch_size=3),
                               b.predict_dimensions(view), rtol=1e-6, atol=1e-7)


def test_config_label_order_names_the_columns(tmp_path) -> None:
    cfg = dimensional.tiny_dimensional_config()
    cfg.id2label = {0: "valence", 1: "arousal", 2: "dominance"}
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    _tiny_model(config=cfg).save_pretrained(tmp_path / "ckpt")
    dimensional.save_dimensional_bundle(tmp_path / "ckpt", tmp_path / "b", window_s=0.5)
    b = load_bundle(tmp_path / "b")
    assert b.dimensions == ["valence", "arousal", "dominance"]
    assert output_columns(b) == ["d_valence", "d_arousal", "d_dominance"]


def test_fingerprint_covers_the_weights(checkpoint, tmp_path) -> None:
    for name, seed in (("a", 0), ("b", 1)):
        _tiny_model(seed).save_pretrained(tmp_path / f"ckpt_{name}")
        dimensional.save_dimensional_bundle(tmp_path / f"ckpt_{name}", tmp_path / name, window_s=0.5)
    assert bundle_fingerprint(tmp_path / "a") != bundle_fingerprint(tmp_path / "b")
    dimensional.save_dimensional_bundle(tmp_path / "ckpt_a", tmp_path / "a2", window_s=0.5)
    assert bundle_fingerprint(tmp_path / "a") == bundle_fingerprint(tmp_path / "a2")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_stays_close(bundle_dir, precision) -> None:
    ref_b = load_bundle(bundle_dir)
    b = load_bundle(bundle_dir, precision=precision)
    assert b.precision == precision
    windows = np.stack([voiced(0.5, seed=i) for i in range(3)])
    ref, got = ref_b.predict_dimensions(windows), b.predict_dimensions(windows)
    assert np.abs(got - ref).max() < 0.05 * max(1.0, np.abs(ref).max())
    if precision == "int8":
        linears = [type(m) for m in b.model.modules() if type(m).__name__ == "Linear"]
        assert linears and all("quantized" in t.__module__ for t in linears)


# --------------------------------------------------------------------------- inference


def _recordings(d) -> pd.DataFrame:
    return pd.DataFrame({"recording": ["p001_control", "p001_care"], "caregiver": ["p001", "p001"],
                         "level": ["expert", "expert"], "phase": ["control", "care"],
                         "session": [1, 1], "path": [str(d / "r1.wav"), str(d / "r2.wav")]})


def test_predict_table_writes_d_columns_and_resumes(bundle_dir, rec_dir, tmp_path) -> None:
    b = load_bundle(bundle_dir)
    opts = InferenceOptions(hop_s=0.25, workers=0)
    out, fail = tmp_path / "windows.csv", tmp_path / "failures.csv"
    w = predict_table(b, _recordings(rec_dir), options=opts, out_csv=out, failures_csv=fail,
                      progress=False)
    assert not [c for c in w.columns if c.startswith("p_")]
    assert list(w.columns[:len(schema.ID_COLUMNS) + 5]) == [*schema.ID_COLUMNS, "start_s", "end_s",
                                                            *D_COLUMNS]
    assert "speech_ratio" in w and "f0_hz" in w
    assert len(w) == (3.0 - 0.5) / 0.25 + 1 + (2.5 - 0.5) / 0.25 + 1
    # the window at 1.0 s of r1 is the model's output on those samples
    y = audio.load(rec_dir / "r1.wav", sample_rate=SR)[0]
    row = w[(w["recording"] == "p001_control") & np.isclose(w["start_s"], 1.0)]
    np.testing.assert_allclose(row[D_COLUMNS].to_numpy()[0],
                               b.predict_dimensions(y[None, 16000:24000])[0], rtol=1e-5, atol=1e-6)
    assert json.loads(model_stamp_path(out).read_text())["fingerprint"] == bundle_fingerprint(bundle_dir)

    calls: list[int] = []

    class Counting(dimensional.DimensionalBundle):
        def predict_starts(self, signal, starts, *, batch_size=4):
            calls.append(len(starts))
            return super().predict_starts(signal, starts, batch_size=batch_size)

    again = predict_table(Counting(b.model, b.meta, path=b.path), _recordings(rec_dir), options=opts,
                          out_csv=out, failures_csv=fail, progress=False)
    assert calls == []  # resumed: nothing recomputed
    pd.testing.assert_frame_equal(again.reset_index(drop=True),
                                  pd.read_csv(out, dtype={c: str for c in schema.ID_COLUMNS}))


def test_predict_paths_summarises_dimensions(bundle_dir, rec_dir, tmp_path) -> None:
    b = load_bundle(bundle_dir)
    out = tmp_path / "w.csv"
    res = predict_paths(b, [rec_dir], options=InferenceOptions(workers=0), output=out, progress=False)
    assert [c for c in res.windows.columns if c.startswith(("p_", "d_"))] == D_COLUMNS
    ok = res.summary[res.summary["status"] == "ok"]
    assert len(ok) == 2 and ok["dominant_emotion"].isna().all()
    for f, g in res.windows.groupby("file"):
        np.testing.assert_allclose(ok.loc[ok["file"] == f, D_COLUMNS].to_numpy()[0],
                                   g[D_COLUMNS].mean().to_numpy(), rtol=1e-9)
    again = predict_paths(b, [rec_dir], options=InferenceOptions(workers=0), output=out, progress=False)
    pd.testing.assert_frame_equal(again.windows, res.windows, check_exact=False, rtol=1e-12)
    assert pd.read_csv(tmp_path / "w.summary.csv").columns.tolist() == res.summary.columns.tolist()


# --------------------------------------------------------------------------- statistics


def _windows_table() -> pd.DataFrame:
    """Two recordings, four windows each; the windows with little speech have extreme values."""
    rows = []
    for rec, phase in (("p001_control", "control"), ("p001_care", "care")):
        for k in range(4):
            speech = 0.9 if k < 3 else 0.05
            rows.append({"recording": rec, "caregiver": "p001", "level": "expert", "phase": phase,
                         "start_s": k * 1.0, "end_s": k * 1.0 + 2.0,
                         "d_arousal": 0.4 + 0.1 * k if speech > 0.5 else 9.0,
                         "d_dominance": 0.5, "d_valence": 0.6 - 0.05 * k if speech > 0.5 else -9.0,
                         "f0_hz": 200.0 + k, "energy_db": -30.0, "speech_ratio": speech})
    return pd.DataFrame(rows)


def test_descriptors_analyse_d_columns_like_probabilities() -> None:
    w = _windows_table()
    feats = descriptors.default_features(w)
    assert feats == [*D_COLUMNS, "f0_hz", "energy_db"]
    d = descriptors.recording_descriptors(w, features=feats, stats=("mean", "max"), min_speech_ratio=0.2)
    ctrl = d[d["recording"] == "p001_control"].iloc[0]
    assert ctrl["d_arousal__mean"] == pytest.approx(0.5)  # the low-speech window (9.0) is left out
    assert ctrl["d_valence__max"] == pytest.approx(0.6)
    assert ctrl["n_emotion_windows"] == 3 and ctrl["n_windows"] == 4
    assert ctrl["f0_hz__max"] == pytest.approx(203.0)  # prosody keeps every window
    unmasked = descriptors.recording_descriptors(w, features=feats, stats=("mean",))
    assert unmasked.iloc[0]["d_arousal__mean"] > 2
    assert descriptors.key_descriptors(d) == ["d_arousal__mean", "d_dominance__mean",
                                              "d_valence__mean", "energy_db__mean", "speech_ratio"]
    binned = descriptors.time_binned(w, features=feats, time_bins=2, min_speech_ratio=0.2)
    last = binned[(binned["recording"] == "p001_control") & (binned["time_bin"] == 1)].iloc[0]
    assert last["d_arousal"] == pytest.approx(0.6) and last["n_emotion_windows"] == 1
    masked = descriptors.mask_low_speech(w, min_speech_ratio=0.2)
    assert masked.loc[w["speech_ratio"] < 0.2, D_COLUMNS].isna().all().all()


def test_names_and_units_of_d_columns() -> None:
    assert names.unit_of("d_arousal") == names.unit_of("d_valence__mean") == "model scale 0-1"
    assert names.unit_of("d_arousal__skew") == "unitless"
    assert names.pretty_name("d_arousal__mean") == "arousal, mean"
    assert names.axis_label("d_valence__median") == "valence, median (model scale 0-1)"
    d = descriptors.recording_descriptors(_windows_table(), features=["d_arousal"], stats=("mean",),
                                          min_speech_ratio=0.2)
    doc = names.describe_columns(d, min_speech_ratio=0.2).set_index("column")
    assert "arousal per window (dimensional model output" in doc.loc["d_arousal__mean", "meaning"]
    assert "speech_ratio >= 0.2" in doc.loc["d_arousal__mean", "meaning"]
    assert doc.loc["d_arousal__mean", "unit"] == "model scale 0-1"


# --------------------------------------------------------------------------- command and bad input


def test_export_dimensional_command(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "results" / "models" / "dim"
    assert cli.main(["export-dimensional", str(checkpoint[0]), str(out), "--window-s", "1.5"]) == 0
    assert json.loads((out / "model.json").read_text())["window_s"] == 1.5
    assert load_bundle(out).window_samples == 24000
    assert cli.main(["export-dimensional", str(tmp_path / "absent"), str(tmp_path / "x")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_missing_hub_id_offline_raises_without_network(monkeypatch) -> None:
    attempts: list[object] = []

    def no_connect(self, address):  # noqa: ANN001
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    with pytest.raises(FileNotFoundError, match=rf"{dimensional.HUB_ID}.*hf download {dimensional.HUB_ID}"):
        dimensional.load_dimensional(dimensional.HUB_ID)
    assert attempts == []


def test_rejects_checkpoints_of_another_form(tmp_path) -> None:
    from transformers import Wav2Vec2Model

    Wav2Vec2Model(dimensional.tiny_dimensional_config()).save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="lacks the weights .*classifier"):
        dimensional.load_dimensional(tmp_path / "plain")
    cfg = dimensional.tiny_dimensional_config()
    cfg.num_labels = 4
    with pytest.raises(ValueError, match="num_labels=4"):
        dimensional.build_emotion_model(cfg)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        dimensional.load_dimensional(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        dimensional.load_dimensional(tmp_path / "absent")


def test_bad_window_and_broken_bundle(checkpoint, bundle_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="window_s must be .* at least 0.0"):
        dimensional.save_dimensional_bundle(checkpoint[0], tmp_path / "short", window_s=0.0001)
    b = load_bundle(bundle_dir)
    with pytest.raises(ValueError, match=r"windows must be float \[n, 8000\]"):
        b.predict_dimensions(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="window starts must lie"):
        b.predict_starts(np.zeros(9000, np.float32), np.array([2000]))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((bundle_dir / "model.json").read_text())
    (broken / "config.json").write_text((bundle_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="lacks model.safetensors"):
        load_bundle(broken)
    with pytest.raises(ValueError, match="precision must be one of"):
        load_bundle(bundle_dir, precision="fp8")
