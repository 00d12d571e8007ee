"""Every registered architecture on tiny inputs: shapes, options, bundle round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ser.models import registry, window
from ser.models.bundle import BUNDLE_FORMAT, bundle_arch_params, load_bundle, save_bundle
from ser.models.integrity import write_sealed_meta

SR, WINDOW_S = 8000, 0.5
FEATURES = {"n_mels": 24, "n_fft": 256, "hop_length": 80}
LABELS = ["angry", "happy", "neutral", "sad"]

#: Small versions of each log-mel architecture (name, arch_params).
LOG_MEL_ARCHS = [
    ("small_cnn", {"channels": [4, 8], "dropout": 0.1}),
    ("small_cnn", {"channels": [4, 8, 8], "pooled_blocks": 1}),
    ("small_cnn", {"channels": [4, 8], "pooled_blocks": -1}),
    ("resnet", {"channels": [4, 8], "blocks": [1, 2]}),
    ("crnn", {"channels": [4], "hidden": 8, "encoder": "gru", "layers": 2}),
    ("crnn", {"channels": [4, 8], "hidden": 8, "encoder": "transformer", "heads": 2, "pooling": "mean"}),
]


def _windows(n: int, length: int = int(SR * WINDOW_S), seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((n, length))).astype(np.float32)


def _build(arch: str, params: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return registry.build_model(arch, n_labels=len(LABELS), sample_rate=SR, features=FEATURES, **params)


def _save(path, model, arch, arch_params, **kw):
    return save_bundle(path, model, labels=LABELS, sample_rate=kw.get("sample_rate", SR),
                              window_s=WINDOW_S, features=window.features_config(**FEATURES), arch=arch,
                              arch_params=arch_params, train_params={}, split={}, metrics={})


@pytest.mark.parametrize("arch, params", LOG_MEL_ARCHS)
def test_forward_shapes_gradients_and_spec_hook(arch, params):
    model = _build(arch, params).train()
    x = torch.from_numpy(_windows(3))
    out = model(x)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(4.0 * x), model(x), atol=1e-4, rtol=1e-4)  # gain-independent
        assert not torch.allclose(model(x, spec_transform=torch.zeros_like), model(x))
        # any window length works (the bundle fixes one, the network does not)
        assert model(torch.from_numpy(_windows(2, length=3 * SR))).shape == (2, 4)


@pytest.mark.parametrize("arch, params", LOG_MEL_ARCHS)
def test_bundle_round_trip_stores_every_option_and_gives_identical_probabilities(arch, params, tmp_path):
    model = _build(arch, params, seed=1).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    stored = registry.resolved_arch_params(model, params)
    assert set(params) <= set(stored) and all(stored[k] == v for k, v in params.items() if k != "blocks")
    _save(tmp_path / "b", model, arch, stored)
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    assert meta["arch_params"] == stored and meta["format"] == BUNDLE_FORMAT
    bundle = load_bundle(tmp_path / "b")
    x = _windows(5)
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(bundle.predict_proba(x), expected, atol=1e-6)
    np.testing.assert_allclose(bundle.predict_proba(x, batch_size=2), expected, atol=1e-6)
    np.testing.assert_array_equal(load_bundle(tmp_path / "b").predict_proba(x), bundle.predict_proba(x))


def test_strided_small_cnn_is_much_cheaper_than_the_pooled_one():
    def macs(model):
        total = 0

        def hook(mod, _inp, out):
            nonlocal total
            total += out[0].numel() * mod.weight[0].numel()

        hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        with torch.no_grad():
            model(torch.zeros(1, 32000))
        for h in hooks:
            h.remove()
        return total

    torch.manual_seed(0)
    fast = registry.build_model("small_cnn", n_labels=4, sample_rate=16000)
    slow = registry.build_model("small_cnn", n_labels=4, sample_rate=16000, pooled_blocks=-1)
    assert registry.resolved_arch_params(fast, {})["pooled_blocks"] == 0
    assert macs(slow) > 3 * macs(fast)
    assert macs(fast) < 15e6  # multiply-adds per 2 s window at 16 kHz


def test_format_1_bundles_keep_their_pooled_small_cnn(tmp_path):
    params = {"channels": [4, 8], "dropout": 0.1}
    legacy = _build("small_cnn", {**params, "pooled_blocks": -1}).eval()
    # the state-dict layout of format 1: conv, bn, relu, pool per block; pool/dropout/head on the body
    assert {"body.blocks.0.weight", "body.blocks.4.weight", "body.blocks.5.running_mean", "body.head.weight",
            "body.head.bias"} <= set(legacy.state_dict())
    _save(tmp_path / "old", legacy, "small_cnn", params)  # as the first format wrote it
    meta_path = tmp_path / "old" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["format"] = 1
    write_sealed_meta(meta_path.parent, meta)
    x = _windows(3)
    with torch.inference_mode():
        expected = torch.softmax(legacy(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(load_bundle(tmp_path / "old").predict_proba(x), expected, atol=1e-6)
    assert bundle_arch_params(meta)["pooled_blocks"] == -1
    assert bundle_arch_params({**meta, "format": 2}).get("pooled_blocks") is None


@pytest.mark.parametrize("arch, params, match", [
    ("small_cnn", {"pooled_blocks": -2}, "pooled_blocks must be >= 0, or -1 for all"),
    ("small_cnn", {"channels": []}, "channels must list at least one"),
    ("small_cnn", {"freq_bins": 0}, "freq_bins must be >= 1"),
    ("resnet", {"channels": [4, 8], "blocks": [1]}, "one per stage"),
    ("resnet", {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ("crnn", {"encoder": "lstm"}, "encoder must be one of"),
    ("crnn", {"pooling": "max"}, "pooling must be one of"),
    ("crnn", {"hidden": 7}, "hidden must be even"),
    ("crnn", {"encoder": "transformer", "hidden": 10, "heads": 4}, "heads=4 must divide hidden=10"),
    ("crnn", {"rnn": "gru"}, "not accepted by arch 'crnn'"),
])
def test_bad_architecture_options_are_rejected(arch, params, match):
    with pytest.raises(ValueError, match=match):
        _build(arch, params)


def test_hf_arch_builds_a_waveform_model_from_a_stored_config(tmp_path):
    hf = pytest.importorskip("ser.models.transformer")
    torch.manual_seed(0)
    model = registry.build_model("hf", n_labels=4, sample_rate=16000,
                               config=hf.tiny_config("wav2vec2").to_dict(), head_hidden=None).eval()
    x = (0.1 * np.random.default_rng(0).standard_normal((2, 4000))).astype(np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x), spec_transform=torch.zeros_like)  # hook accepted, unused
        assert logits.shape == (2, 4)
    stored = registry.resolved_arch_params(model, {"source": "facebook/wav2vec2-base"})
    assert "source" not in stored and stored["config"]["model_type"] == "wav2vec2"
    _save(tmp_path / "hf", model, "hf", stored, sample_rate=16000)
    meta = json.loads((tmp_path / "hf" / "model.json").read_text())
    meta["window_s"] = 0.25
    write_sealed_meta(tmp_path / "hf", meta)
    bundle = load_bundle(tmp_path / "hf")
    np.testing.assert_allclose(bundle.predict_proba(x), torch.softmax(logits, dim=1).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="16000 Hz"):
        registry.build_model("hf", n_labels=4, sample_rate=8000, config=stored["config"])
