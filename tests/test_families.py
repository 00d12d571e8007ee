"""Model families behind the registry: image backbones on log-mel (``hf_image``) and frozen
self-supervised embeddings + head (``ssl_frozen``), trained through ``train(arch=...)``.

Nothing downloads: backbones are tiny random models written with ``save_pretrained`` to
tmp_path and read back from there; each bundle must then load without that folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from ser.models import image, registry, ssl_frozen, transformer
from ser.models.bundle import load_bundle
from ser.train import embedding_cache, loop

SR = 16000
LABELS = ["high", "low"]


def _corpus(tmp_path: Path) -> pd.DataFrame:
    """Two classes (low vs high tones) over four speakers: train, train, val, test."""
    rng = np.random.default_rng(0)
    rows = []
    for s, split in enumerate(["train", "train", "val", "test"]):
        for lab, f0 in (("low", 140.0), ("high", 320.0)):
            for k in range(3):
                t = np.arange(int((0.5 + 0.1 * k) * SR)) / SR
                y = 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.02 * k + 0.01 * s) * t)
                path = tmp_path / f"s{s}_{lab}_{k}.wav"
                sf.write(path, (y + 0.01 * rng.standard_normal(len(t))).astype(np.float32), SR)
                rows.append({"path": str(path), "speaker": f"s{s}", "label": lab, "split": split})
    return pd.DataFrame(rows)


def _train(tmp_path: Path, arch: str, arch_params: dict, *, epochs: int = 2) -> Path:
    return loop.train(_corpus(tmp_path), out_dir=tmp_path / f"{arch}_bundle", labels=LABELS, arch=arch,
                      arch_params=arch_params, window_s=0.4, sample_rate=SR, epochs=epochs, batch_size=4,
                      lr=1e-2, patience=5, seed=0, device="cpu", augment=False, pitch_norm_hz=0.0,
                      progress=False, cache=False)


def _check_probabilities(bundle, n: int = 3) -> None:
    windows = 0.1 * np.random.default_rng(1).standard_normal((n, bundle.window_samples)).astype(np.float32)
    proba = bundle.predict_proba(windows)
    assert proba.shape == (n, len(LABELS)) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_registry_lists_every_family() -> None:
    assert {"small_cnn", "resnet", "crnn", "hf", "hf_image", "ssl_frozen"} <= set(registry.ARCHITECTURES)
    assert set(registry.TRANSFORMER_ARCHS) == {"hf", "ssl_frozen"}


# --------------------------------------------------------------------------- hf_image


@pytest.mark.parametrize("model_type", image.IMAGE_MODEL_TYPES)
def test_hf_image_trains_from_a_local_folder_and_loads_without_it(model_type: str, tmp_path) -> None:
    from transformers import AutoModel

    torch.manual_seed(0)
    folder = tmp_path / f"tiny-{model_type}"
    AutoModel.from_config(image.tiny_image_config(model_type)).save_pretrained(folder)
    out = _train(tmp_path, "hf_image", {"source": str(folder), "dropout": 0.1})
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"] == "hf_image"
    assert meta["arch_params"]["config"]["model_type"] == model_type
    assert meta["arch_params"]["pretrained_from"] == str(folder)
    assert len(pd.read_csv(out / "history.csv")) == 2
    shutil.rmtree(folder)  # the bundle carries the backbone config and weights
    bundle = load_bundle(out)
    _check_probabilities(bundle)
    signal = 0.1 * np.random.default_rng(2).standard_normal(3 * SR).astype(np.float32)
    starts = np.arange(0, 2 * SR, 1600)
    shared = bundle.predict_proba_starts(signal, starts)  # log-mel frames shared between windows
    stacked = bundle.predict_proba(np.stack([signal[s:s + bundle.window_samples] for s in starts]))
    np.testing.assert_allclose(shared, stacked, atol=1e-4)


def test_hf_image_body_reads_the_pretrained_weights(tmp_path) -> None:
    from transformers import AutoModel

    torch.manual_seed(1)
    saved = AutoModel.from_config(image.tiny_image_config("resnet"))
    saved.save_pretrained(tmp_path / "r")
    body = image.image_body(n_labels=3, source=str(tmp_path / "r"))
    for (name, a), b in zip(saved.state_dict().items(), body.backbone.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


def test_three_channel_backbone_sees_the_spectrogram_repeated() -> None:
    """An ImageNet-style 3-channel backbone equals a 1-channel one whose first convolution
    sums the three input filters: the one spectrogram channel is repeated, not altered."""
    torch.manual_seed(2)
    rgb = image.image_body(n_labels=2, config=image.tiny_image_config("resnet", num_channels=3)).eval()
    mono = image.image_body(n_labels=2, config=image.tiny_image_config("resnet", num_channels=1)).eval()
    state = rgb.state_dict()
    key = "backbone.embedder.embedder.convolution.weight"
    state[key] = state[key].sum(dim=1, keepdim=True)
    mono.load_state_dict(state)
    spec = torch.randn(2, 64, 40)
    torch.testing.assert_close(rgb(spec), mono(spec), atol=1e-5, rtol=1e-4)


def test_hf_image_backbone_name_gives_a_one_channel_random_backbone() -> None:
    model = registry.build_model("hf_image", n_labels=4, sample_rate=SR,
                                 backbone="convnext", config={"hidden_sizes": [8, 16], "depths": [1, 1],
                                                              "num_stages": 2})
    params = registry.resolved_arch_params(model, {})
    assert params["config"]["model_type"] == "convnext" and params["config"]["num_channels"] == 1
    rebuilt = registry.build_model("hf_image", n_labels=4, sample_rate=SR, **params)
    rebuilt.load_state_dict(model.state_dict())
    x = 0.1 * torch.randn(2, SR)
    torch.testing.assert_close(model.eval()(x), rebuilt.eval()(x))


@pytest.mark.parametrize(("params", "match"), [
    ({"source": "x", "backbone": "resnet"}, "not both"),
    ({"backbone": "vit"}, "not supported"),
    ({}, "name the backbone type"),
    ({"backbone": "resnet", "config": {"model_type": "convnext"}}, "backbone 'resnet' but config"),
])
def test_hf_image_rejects_bad_arch_params(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        registry.build_model("hf_image", n_labels=2, sample_rate=SR, **params)


def test_hf_image_missing_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        image.image_body(n_labels=2, source=str(tmp_path / "absent"))


# --------------------------------------------------------------------------- ssl_frozen


def _save_tiny_ssl(folder: Path, model_type: str = "wav2vec2", seed: int = 3) -> dict[str, torch.Tensor]:
    from transformers import AutoModel

    torch.manual_seed(seed)
    backbone = AutoModel.from_config(transformer.tiny_config(model_type))
    backbone.save_pretrained(folder)
    return {k: v.clone() for k, v in backbone.state_dict().items()}


@pytest.mark.parametrize("cache_windows", [2, 0])
def test_ssl_frozen_trains_only_the_head_and_loads_without_the_source(cache_windows: int, tmp_path) -> None:
    folder = tmp_path / "tiny-wav2vec2"
    pretrained = _save_tiny_ssl(folder)
    init = ssl_frozen.build_ssl_frozen(n_labels=2, source=str(folder), cache_windows=cache_windows)
    out = _train(tmp_path, "ssl_frozen", {"source": str(folder), "cache_windows": cache_windows,
                                          "head_hidden": 16})
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"] == "ssl_frozen" and meta["arch_params"]["cache_windows"] == cache_windows
    assert meta["arch_params"]["config"]["model_type"] == "wav2vec2"
    shutil.rmtree(folder)
    bundle = load_bundle(out)
    assert bundle.heavy and bundle.preferred_batch_size == 4
    # the backbone did not change in training: it is exactly the pretrained one
    trained = bundle.model.backbone.state_dict()
    for name, value in pretrained.items():
        torch.testing.assert_close(trained[name], value, atol=0, rtol=0, msg=name)
    # ... while the head and the layer weights did
    assert not torch.equal(bundle.model.head[-1].weight, init.head[-1].weight)
    assert not torch.equal(bundle.model.layer_weights, init.layer_weights)
    _check_probabilities(bundle)
    int8 = load_bundle(out, precision="int8")
    windows = 0.1 * np.random.default_rng(4).standard_normal((2, bundle.window_samples)).astype(np.float32)
    np.testing.assert_allclose(int8.predict_proba(windows), bundle.predict_proba(windows), atol=0.05)


def test_ssl_frozen_forward_on_cached_statistics_equals_forward_on_audio() -> None:
    torch.manual_seed(5)
    model = ssl_frozen.build_ssl_frozen(n_labels=3, config=transformer.tiny_config("hubert"))
    model.train()
    assert not model.backbone.training  # frozen backbone: always eval (no dropout, masking)
    with torch.no_grad():
        model.layer_weights.copy_(torch.randn(model.n_states))
    model.eval()
    x = 0.1 * torch.randn(3, 4000)
    stats = model.layer_stats(x)
    assert stats.shape == (3, model.n_states, model.stats_dim)
    torch.testing.assert_close(model(stats), model(x))
    assert all(not p.requires_grad for p in model.backbone.parameters())
    with pytest.raises(ValueError, match="layer statistics must be"):
        model(stats[:, :1])


def test_fixed_windows_are_centred_or_evenly_spaced() -> None:
    wave = np.arange(100, dtype=np.float32)
    np.testing.assert_array_equal(embedding_cache.fixed_windows(wave, 40, 1)[0], wave[30:70])
    three = embedding_cache.fixed_windows(wave, 40, 3)
    np.testing.assert_array_equal(three[:, 0], [0, 30, 60])
    short = embedding_cache.fixed_windows(wave[:10], 20, 2)
    assert short.shape == (2, 20) and short[0, 5] == 0 and short[0, 14] == 9
    with pytest.raises(ValueError, match="k >= 1"):
        embedding_cache.fixed_windows(wave, 40, 0)


def test_cached_dataset_draws_one_fixed_window_per_epoch() -> None:
    stats = torch.arange(4 * 3, dtype=torch.float32).reshape(4, 3, 1, 1).expand(4, 3, 2, 2).contiguous()
    ds = embedding_cache.CachedStatsDataset(stats, np.zeros(4), train=True, seed=0)
    drawn = {int(ds[(e, 1)][0][0, 0]) for e in range(30)}
    assert drawn == {3, 4, 5}  # utterance 1's three windows, all used over the epochs
    val = embedding_cache.CachedStatsDataset(stats, np.zeros(4), train=False, seed=0)
    assert int(val[(7, 2)][0][0, 0]) == 6


@pytest.mark.parametrize(("params", "match"), [
    ({"config": {"model_type": "wavlm"}, "bogus": 1}, "unknown keys"),
    ({"head_hidden": 8}, "need 'source'"),
    ({"config": {"model_type": "bert"}}, "not supported"),
])
def test_ssl_frozen_rejects_bad_arch_params(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        registry.build_model("ssl_frozen", n_labels=2, sample_rate=SR, **params)


def test_ssl_frozen_needs_16_khz() -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        registry.build_model("ssl_frozen", n_labels=2, sample_rate=8000,
                             config=transformer.tiny_config("wav2vec2").to_dict())
