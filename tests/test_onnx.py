"""ONNX copies of model bundles (``ser export --onnx``, ``load_bundle(runtime="onnx")``,
``ser predict --runtime onnx``): probabilities within 1e-4 of PyTorch, stale copies refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import signals
import soundfile as sf
import torch

from ser.models import registry, transformer, window
from ser.models.bundle import bundle_fingerprint, load_bundle, save_bundle
from ser.models.integrity import write_sealed_meta
from ser.models.onnx_runtime import ONNX_FILE
from ser.run.cli import main

SR = 16000
LABELS = ["angry", "happy", "neutral", "sad"]
CNN_PARAMS = {"small_cnn": {"channels": [4, 8]}, "resnet": {"channels": [4, 8]},
              "crnn": {"channels": [4, 8], "hidden": 16},
              "crnn_transformer": {"channels": [4, 8], "hidden": 16, "encoder": "transformer", "heads": 2},
              "hf_image": {"backbone": "convnext",
                           "config": {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2}}}


def _windows(n: int, samples: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, samples))).astype(np.float32)


def _cnn_bundle(path, arch: str, *, window_s: float = 1.0):
    torch.manual_seed(0)
    net = registry.build_model(arch.split("_t")[0], n_labels=len(LABELS), sample_rate=SR,
                               **CNN_PARAMS[arch])
    net.train()
    with torch.no_grad():  # running statistics of the batch norms away from 0 / 1
        net(torch.from_numpy(_windows(8, int(window_s * SR), seed=1) * 3.0))
    save_bundle(path, net.eval(), labels=LABELS, sample_rate=SR, window_s=window_s,
                features=window.features_config(), arch=arch.split("_t")[0],
                arch_params=registry.resolved_arch_params(net, CNN_PARAMS[arch]),
                train_params={}, split={}, metrics={})
    return path


def _hf_bundle(path):
    torch.manual_seed(0)
    model = transformer.build_hf_classifier(n_labels=len(LABELS),
                                            config=transformer.tiny_config("wav2vec2")).eval()
    save_bundle(path, model, labels=LABELS, sample_rate=SR, window_s=0.25,
                features=window.features_config(), arch="hf",
                arch_params=transformer.hf_arch_params(model), train_params={}, split={}, metrics={})
    return path


@pytest.mark.parametrize("arch", sorted(CNN_PARAMS))
def test_cnn_onnx_copy_gives_the_same_probabilities(arch, tmp_path) -> None:
    folder = _cnn_bundle(tmp_path / arch, arch)
    fp = bundle_fingerprint(folder)
    assert main(["export", str(folder), "--onnx"]) == 0
    meta = json.loads((folder / "model.json").read_text())
    entry = meta["runtime"]["onnx"]
    assert entry["part"] == "body" and (folder / ONNX_FILE).is_file()
    assert bundle_fingerprint(folder) == fp  # the runtime is not part of what the bundle computes
    ref, onnx = load_bundle(folder), load_bundle(folder, runtime="onnx")
    assert onnx.runtime == "onnx" and type(onnx.model.body).__name__ == "OnnxNetwork"
    x = _windows(5, ref.window_samples)
    np.testing.assert_allclose(onnx.predict_proba(x), ref.predict_proba(x), atol=1e-4)
    np.testing.assert_allclose(onnx.predict_proba(x[:1]), ref.predict_proba(x[:1]), atol=1e-4)
    signal = _windows(1, 4 * ref.window_samples, seed=2)[0]
    starts = np.arange(0, 3 * ref.window_samples + 1, ref.window_samples // 2)
    np.testing.assert_allclose(onnx.predict_starts(signal, starts), ref.predict_starts(signal, starts),
                               atol=1e-4)


def test_hf_onnx_copy_gives_the_same_probabilities(tmp_path) -> None:
    folder = _hf_bundle(tmp_path / "hf")
    assert main(["export", str(folder), "--onnx"]) == 0
    assert json.loads((folder / "model.json").read_text())["runtime"]["onnx"]["part"] == "network"
    ref, onnx = load_bundle(folder), load_bundle(folder, runtime="onnx")
    assert type(onnx.model).__name__ == "OnnxNetwork"
    x = _windows(6, ref.window_samples)
    np.testing.assert_allclose(onnx.predict_proba(x, batch_size=4), ref.predict_proba(x), atol=1e-4)


def test_predict_runtime_onnx_matches_torch_row_for_row(tmp_path) -> None:
    folder = _cnn_bundle(tmp_path / "m", "small_cnn")
    assert main(["export", str(folder), "--onnx"]) == 0
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for i in range(2):
        sf.write(audio_dir / f"r{i}.wav", signals.voiced(4.0 + i, seed=i), SR, subtype="PCM_16")
    outs = {}
    for rt in ("torch", "onnx"):
        out = tmp_path / f"{rt}.csv"
        assert main(["predict", str(folder), str(audio_dir), "-o", str(out), "--workers", "0",
                     "--quiet", "--runtime", rt]) == 0
        outs[rt] = pd.read_csv(out)
    a, b = outs["torch"], outs["onnx"]
    p = [c for c in a.columns if c.startswith("p_")]
    assert len(a) == len(b) > 0 and list(a.columns) == list(b.columns)
    np.testing.assert_allclose(b[p].to_numpy(), a[p].to_numpy(), atol=1e-4)
    assert (a["file"] == b["file"]).all() and np.allclose(a["start_s"], b["start_s"])


def test_missing_or_stale_onnx_copy_is_refused(tmp_path, capsys) -> None:
    folder = _cnn_bundle(tmp_path / "m", "small_cnn")
    with pytest.raises(FileNotFoundError, match="ser export .* --onnx"):
        load_bundle(folder, runtime="onnx")
    assert main(["export", str(folder), "--onnx"]) == 0
    with pytest.raises(ValueError, match="fp32 on the CPU"):
        load_bundle(folder, runtime="onnx", precision="int8")
    (folder / ONNX_FILE).write_bytes((folder / ONNX_FILE).read_bytes() + b"\0")
    with pytest.raises(ValueError, match="changed after it was exported"):
        load_bundle(folder, runtime="onnx")
    # retrained in place: the copy was exported from other weights
    meta = json.loads((folder / "model.json").read_text())
    torch.manual_seed(5)
    net = registry.build_model("small_cnn", n_labels=4, sample_rate=SR, channels=[4, 8])
    save_bundle(folder, net.eval(), labels=LABELS, sample_rate=SR, window_s=1.0,
                features=window.features_config(), arch="small_cnn", arch_params=net.arch_params(),
                train_params={}, split={}, metrics={})
    new = json.loads((folder / "model.json").read_text())
    write_sealed_meta(folder, {**new, "runtime": meta["runtime"]}, update=True)
    with pytest.raises(ValueError, match="exported from other weights"):
        load_bundle(folder, runtime="onnx")
    assert main(["predict", str(folder), str(tmp_path), "--runtime", "onnx", "--quiet"]) == 2
    assert "export it again" in capsys.readouterr().err


def test_export_refuses_a_family_without_onnx(tmp_path, capsys) -> None:
    folder = tmp_path / "ens"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({
        "family": "ensemble", "arch": "ensemble", "labels": LABELS, "sample_rate": SR, "window_s": 1.0,
        "features": {}, "arch_params": {}, "members": []}))
    assert main(["export", str(folder), "--onnx"]) == 2
    assert "ONNX covers the architectures" in capsys.readouterr().err
