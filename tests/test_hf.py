"""Tests for ser.models.transformer: tiny randomly initialised wav2vec2 / HuBERT / WavLM classifiers.

Nothing here downloads anything: backbones come from :func:`ser.models.transformer.tiny_config`, or
are written with ``save_pretrained`` to tmp_path and loaded back from that folder.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from ser.models import quantize, registry, transformer, window
from ser.models.bundle import load_bundle, save_bundle

N_LABELS = 4
SR = transformer.SAMPLE_RATE


def _waves(batch: int = 3, n: int = 3200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, n, generator=g)


def _tiny(model_type: str = "wav2vec2", *, seed: int = 0, **kw) -> transformer.HFAudioClassifier:
    torch.manual_seed(seed)
    return transformer.build_hf_classifier(n_labels=N_LABELS, config=transformer.tiny_config(model_type), **kw)


def _conv_params(model: transformer.HFAudioClassifier) -> list[torch.nn.Parameter]:
    return list(model.backbone.feature_extractor.parameters())


# --------------------------------------------------------------------------- forward / grads


@pytest.mark.parametrize(("model_type", "layer_pooling"),
                         [(t, "weighted") for t in transformer.MODEL_TYPES] + [("wav2vec2", "last")])
def test_forward_shape_and_gradients_reach_backbone(model_type: str, layer_pooling: str) -> None:
    model = _tiny(model_type, freeze_feature_encoder=False, layer_pooling=layer_pooling)
    model.train()
    logits = model(_waves())
    assert logits.shape == (3, N_LABELS)
    assert logits.dtype == torch.float32
    logits.logsumexp(dim=1).sum().backward()
    head_w = model.head[-1].weight
    assert head_w.grad is not None and head_w.grad.abs().sum() > 0
    first_layer = next(model.backbone.encoder.layers[0].parameters())
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
    conv = _conv_params(model)
    assert all(p.requires_grad for p in conv)
    assert conv[0].grad is not None and conv[0].grad.abs().sum() > 0


@pytest.mark.parametrize("model_type", transformer.MODEL_TYPES)
def test_frozen_feature_encoder_is_unchanged_by_an_optimizer_step(model_type: str) -> None:
    model = _tiny(model_type, freeze_feature_encoder=True)
    conv = _conv_params(model)
    assert conv and not any(p.requires_grad for p in conv)
    before_conv = [p.detach().clone() for p in conv]
    layer = model.backbone.encoder.layers[-1].feed_forward.output_dense.weight
    before_layer = layer.detach().clone()
    # as training.py does: AdamW over *all* parameters, with weight decay
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(_waves()), torch.tensor([0, 1, 2]))
    loss.backward()
    assert all(p.grad is None for p in conv)
    opt.step()
    assert all(torch.equal(a, p.detach()) for a, p in zip(before_conv, conv))
    assert not torch.equal(before_layer, layer.detach())  # the rest did train


def test_weighted_layer_pooling_weights_are_learnable_and_used() -> None:
    model = _tiny("wav2vec2", layer_pooling="weighted")
    n_states = model.config.num_hidden_layers + 1
    assert isinstance(model.layer_weights, torch.nn.Parameter)
    assert model.layer_weights.shape == (n_states,) and model.layer_weights.requires_grad
    probs = model.layer_weight_probs()
    assert torch.allclose(probs.sum(), torch.tensor(1.0))
    assert torch.allclose(probs, torch.full((n_states,), 1.0 / n_states))

    model.train()
    opt = torch.optim.SGD([model.layer_weights], lr=10.0)
    model(_waves()).pow(2).sum().backward()
    assert model.layer_weights.grad is not None and model.layer_weights.grad.abs().sum() > 0
    opt.step()
    probs = model.layer_weight_probs()
    assert torch.allclose(probs.sum(), torch.tensor(1.0), atol=1e-6)
    assert probs.max() - probs.min() > 1e-4  # no longer uniform

    # all weight on hidden state k: the embedding is the time-mean of that state
    model.eval()
    x = _waves()
    with torch.no_grad():
        states = model.backbone(transformer.normalize_waveform(x), output_hidden_states=True).hidden_states
        for k in (0, n_states - 1):
            model.layer_weights.copy_(torch.full((n_states,), -1e4))
            model.layer_weights[k] = 0.0
            assert torch.allclose(model.embed(x), states[k].mean(dim=1), atol=1e-5)


def test_last_layer_pooling_has_no_layer_weights() -> None:
    model = _tiny("hubert", layer_pooling="last")
    assert model.layer_weights is None
    with pytest.raises(ValueError, match="layer_pooling='last'"):
        model.layer_weight_probs()


# --------------------------------------------------------------------------- masking / normalisation


@pytest.mark.parametrize("model_type", transformer.MODEL_TYPES)
def test_padded_batch_matches_unpadded_items(model_type: str) -> None:
    model = _tiny(model_type).eval()
    lengths = [3200, 2500, 1601]
    items = [_waves(1, n, seed=i)[0] for i, n in enumerate(lengths)]
    batch = torch.zeros(len(items), max(lengths))
    mask = torch.zeros(len(items), max(lengths), dtype=torch.long)
    for i, w in enumerate(items):
        batch[i, :len(w)] = w
        mask[i, :len(w)] = 1
    with torch.no_grad():
        padded = model(batch, mask)
        single = torch.cat([model(w[None]) for w in items])
        unmasked = model(batch)
    torch.testing.assert_close(padded, single, atol=1e-4, rtol=1e-4)
    # without the mask the padded items differ (so the mask is what makes them equal)
    assert (unmasked[1:] - single[1:]).abs().max() > 1e-3


def test_normalize_waveform_matches_wav2vec2_feature_extractor() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    rng = np.random.default_rng(0)
    a = (0.3 * rng.standard_normal(1000) + 0.2).astype(np.float32)
    b = (0.05 * rng.standard_normal(600) - 0.1).astype(np.float32)
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True, sampling_rate=SR)
    ref = fe([a, b], sampling_rate=SR, padding=True, return_tensors="pt")
    out = transformer.normalize_waveform(torch.from_numpy(np.stack([a, np.pad(b, (0, 400))])),
                                ref["attention_mask"])
    torch.testing.assert_close(out, ref["input_values"].float(), atol=1e-5, rtol=1e-5)
    assert out[1, 600:].abs().max() == 0


def test_output_does_not_depend_on_input_gain() -> None:
    model = _tiny("wavlm").eval()
    x = _waves()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(8.0 * x), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("model_type", transformer.MODEL_TYPES)
def test_save_pretrained_then_load_from_local_folder(model_type: str, tmp_path) -> None:
    model = _tiny(model_type).eval()
    folder = tmp_path / f"tiny-{model_type}"
    model.backbone.save_pretrained(folder)
    loaded = transformer.build_hf_classifier(n_labels=N_LABELS, source=folder).eval()
    assert loaded.source == str(folder)
    assert loaded.config.model_type == model_type
    x = _waves()
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), model.embed(x), atol=0, rtol=0)
    # the head is new (random); copying it makes the whole classifier identical
    loaded.head.load_state_dict(model.head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


@pytest.mark.parametrize("model_type", transformer.MODEL_TYPES)
def test_arch_params_round_trip_reproduces_outputs(model_type: str) -> None:
    model = _tiny(model_type, layer_pooling="weighted", head_hidden=16, dropout=0.2,
                  freeze_feature_encoder=True)
    with torch.no_grad():
        model.layer_weights.copy_(torch.linspace(-1, 1, model.layer_weights.numel()))
    params = json.loads(json.dumps(hf_params := transformer.hf_arch_params(model)))  # JSON-serialisable
    assert params == hf_params == model.arch_params()
    assert params["config"]["model_type"] == model_type
    assert params["head_hidden"] == 16 and params["freeze_feature_encoder"] is True
    torch.manual_seed(123)  # a different random init: equality must come from the state dict
    rebuilt = transformer.hf_from_arch_params(params, n_labels=N_LABELS)
    assert not all(p.requires_grad for p in _conv_params(rebuilt))
    x = _waves()
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert (rebuilt(x) - model(x)).abs().max() > 1e-6
        rebuilt.load_state_dict(model.state_dict())
        torch.testing.assert_close(rebuilt(x), model(x), atol=0, rtol=0)


def test_bundle_round_trip_through_models_registry(tmp_path) -> None:
    if "hf" not in registry.ARCHITECTURES:
        pytest.skip("ser.models.bundle has no 'hf' architecture registered yet")
    model = _tiny("wav2vec2").eval()
    save_bundle(tmp_path / "b", model, labels=["a", "b", "c", "d"], sample_rate=SR,
                       window_s=0.25, features=window.features_config(), arch="hf",
                       arch_params=transformer.hf_arch_params(model), train_params={}, split={},
                       metrics={})
    bundle = load_bundle(tmp_path / "b")
    x = _waves(2, bundle.window_samples).numpy()
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(bundle.predict_proba(x), ref, atol=1e-6)


# --------------------------------------------------------------------------- bad inputs


def test_missing_hub_id_offline_raises_clear_error_without_network(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    attempts: list[object] = []

    def no_connect(self, address):  # noqa: ANN001
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    repo = "no-such-org/no-such-ser-model"
    with pytest.raises(FileNotFoundError, match=rf"{repo}.*huggingface-cli download {repo}"):
        transformer.build_hf_classifier(n_labels=N_LABELS, source=repo)
    assert attempts == []


def test_missing_or_empty_local_folder_raises(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        transformer.build_hf_classifier(n_labels=N_LABELS, source=tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        transformer.build_hf_classifier(n_labels=N_LABELS, source=tmp_path)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "exactly one of source"),
    ({"source": "x/y", "config": {"model_type": "wav2vec2"}}, "exactly one of source"),
    ({"config": {"model_type": "bert"}}, "model_type 'bert' is not supported"),
    ({"config": {"hidden_size": 32}}, "no 'model_type'"),
    ({"config": "wav2vec2"}, "must be a dict"),
])
def test_build_rejects_bad_sources(kwargs, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        transformer.build_hf_classifier(n_labels=N_LABELS, **kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layer_pooling": "max"}, "layer_pooling must be one of"),
    ({"pooling": "attention"}, "pooling must be one of"),
    ({"dropout": 1.5}, "dropout must be in"),
])
def test_build_rejects_bad_options(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny("wav2vec2", **kwargs)


def test_forward_rejects_bad_shapes() -> None:
    model = _tiny("wav2vec2")
    with pytest.raises(ValueError, match=r"expected waveforms \[B, T\]"):
        model(torch.zeros(4000))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(torch.zeros(2, 4000), torch.ones(2, 3000))


def test_from_arch_params_rejects_bad_params() -> None:
    params = transformer.hf_arch_params(_tiny("wav2vec2"))
    with pytest.raises(ValueError, match="take 16000 Hz audio"):
        transformer.hf_from_arch_params(params, n_labels=N_LABELS, sample_rate=8000)
    with pytest.raises(ValueError, match=r"unknown keys \['channels'\]"):
        transformer.hf_from_arch_params({**params, "channels": [8]}, n_labels=N_LABELS)
    with pytest.raises(ValueError, match="need 'config'"):
        transformer.hf_from_arch_params({"layer_pooling": "last"}, n_labels=N_LABELS)


# --------------------------------------------------------------------------- FLOPs


def test_flop_estimate_matches_torch_flop_counter() -> None:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel

    cfg = transformer.tiny_config("wav2vec2")
    # eager attention: torch's FLOP counter does not see the CPU SDPA kernel
    backbone = AutoModel.from_config(cfg, attn_implementation="eager")
    model = transformer.HFAudioClassifier(backbone, n_labels=N_LABELS, layer_pooling="last",
                                 head_hidden=None).eval()
    window_s = 0.5
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, int(window_s * SR)))
    counted = counter.get_total_flops()
    estimate = transformer.flops_breakdown(cfg, window_s=window_s)["total"]
    assert estimate == pytest.approx(counted, rel=0.05)
    per_s = transformer.estimate_flops_per_second_of_audio(cfg, window_s=window_s)
    assert per_s == pytest.approx(estimate / window_s)


def test_flop_estimate_for_base_sized_model_and_training_rule() -> None:
    cfg = transformer.base_sized_config("wav2vec2")
    b = transformer.flops_breakdown(cfg, window_s=3.0)
    assert b["frames"] == 149  # 20 ms frames, receptive field 25 ms
    fwd = transformer.estimate_flops_per_second_of_audio(cfg, window_s=3.0)
    assert 1.2e10 < fwd < 1.6e10  # ~95 M params x 2 x 50 frames/s + conv encoder
    frozen = transformer.estimate_flops_per_second_of_audio(cfg, window_s=3.0, training=True)
    full = transformer.estimate_flops_per_second_of_audio(cfg, window_s=3.0, training=True,
                                                 freeze_feature_encoder=False)
    assert full == pytest.approx(3 * fwd)
    assert frozen == pytest.approx(3 * fwd - 2 * b["feature_encoder"] / 3.0)


@pytest.mark.parametrize("model_type", transformer.MODEL_TYPES)
def test_int8_bundle_quantises_linears_and_stays_close(model_type: str, tmp_path) -> None:
    model = _tiny(model_type).eval()
    save_bundle(tmp_path / "b", model, labels=["a", "b", "c", "d"], sample_rate=SR,
                       window_s=0.25, features=window.features_config(), arch="hf",
                       arch_params=transformer.hf_arch_params(model), train_params={}, split={},
                       metrics={})
    ref_b = load_bundle(tmp_path / "b")
    q_b = load_bundle(tmp_path / "b", precision="int8")
    assert ref_b.heavy and q_b.heavy and q_b.preferred_batch_size == 4
    x = _waves(3, ref_b.window_samples).numpy()
    ref, got = ref_b.predict_proba(x), q_b.predict_proba(x)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(got - ref).max() < 0.05
    linears = {n: type(m) for n, m in q_b.model.named_modules() if type(m).__name__ == "Linear"}
    # WavLM's attention reads its projections' weight tensors itself: they stay float
    floats = {n for n in linears if model_type == "wavlm" and ".attention." in n}
    assert linears and all(("quantized" in t.__module__) == (n not in floats) for n, t in linears.items())
    assert any("feed_forward" in n for n in set(linears) - floats)
    assert (model_type == "wavlm") == bool(floats)


def test_quantize_for_cpu_leaves_the_model_unchanged() -> None:
    model = _tiny("hubert").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize.quantize_for_cpu(model, bf16_convs=True)
    assert isinstance(model.backbone.feature_extractor, torch.nn.Module)
    assert type(q.backbone.feature_extractor).__name__ == "_Bf16Autocast"
    assert type(model.backbone.feature_extractor).__name__ != "_Bf16Autocast"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = _waves(2, 4000)
    with torch.inference_mode():
        assert q(x).dtype == torch.float32 and q(x).shape == (2, model.n_labels)


def test_train_hf_bundle_from_a_local_save_pretrained_folder(tmp_path) -> None:
    """Issue 14 item 1: stage 02's `train(arch="hf")` fine-tunes a backbone read from a
    local folder, and the bundle it writes loads without that folder."""
    import shutil

    import pandas as pd
    import soundfile as sf

    from ser.train import loop

    pretrained = _tiny("wav2vec2", seed=3, freeze_feature_encoder=True)
    folder = tmp_path / "tiny-wav2vec2"
    pretrained.backbone.save_pretrained(folder)
    rng = np.random.default_rng(0)
    rows = []
    for s, split in enumerate(["train", "train", "val", "test"]):
        for lab, f0 in (("low", 140.0), ("high", 320.0)):
            for k in range(3):
                t = np.arange(int(0.4 * SR)) / SR
                y = 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.02 * k + 0.01 * s) * t)
                path = tmp_path / f"s{s}_{lab}_{k}.wav"
                sf.write(path, (y + 0.01 * rng.standard_normal(len(t))).astype(np.float32), SR)
                rows.append({"path": str(path), "speaker": f"s{s}", "label": lab, "split": split})
    out = loop.train(pd.DataFrame(rows), out_dir=tmp_path / "hf_bundle", labels=["high", "low"],
                     arch="hf", arch_params={"source": str(folder), "freeze_feature_encoder": True},
                     window_s=0.25, sample_rate=SR, epochs=1, batch_size=4, lr=1e-3, patience=1,
                     seed=0, device="cpu", augment=False, pitch_norm_hz=0.0, progress=False)
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"] == "hf" and meta["arch_params"]["config"]["model_type"] == "wav2vec2"
    shutil.rmtree(folder)  # the bundle carries its config and weights: the source is not needed
    bundle = load_bundle(out)
    # the frozen feature encoder is the pretrained one: the weights came from the folder
    for (name, a), b in zip(pretrained.backbone.feature_extractor.named_parameters(),
                            bundle.model.backbone.feature_extractor.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    proba = bundle.predict_proba(_waves(3, bundle.window_samples).numpy())
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
